//! W3C trace context (`traceparent`, <https://www.w3.org/TR/trace-context/>) carried from the
//! api to the worker: a client's `traceparent` (or a new trace) becomes the api's intake span
//! context, is stored with the job (`jobs.traceparent`), travels in the AMQP headers of every
//! chunk message (dispatcher, relay, retries), and becomes the parent of the worker's chunk
//! span and part of its audit record. Within a process the current context is a task-local
//! ([`scope`]); [`crate::db::begin`] hands it to Postgres (`gatehouse.traceparent`), which is
//! the default of `jobs.traceparent`, so every submission path records it without being told.
//!
//! When spans are exported over OTLP (`GATEHOUSE_OTLP_ENDPOINT`, [`crate::telemetry`]), the
//! exported span *is* the context: [`join`] makes a span the child of the incoming context
//! and returns the span's own OpenTelemetry ids, so the `traceparent` that crosses the queue
//! names a span the collector has, and a job's spans (api request → relay or dispatcher
//! publish → worker chunk and below) form one trace. Without the export the ids are made
//! here ([`TraceParent::child`], [`TraceParent::new_root`]) exactly as before.

use std::{fmt, future::Future};

use lapin::types::{AMQPValue, FieldTable};
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The header name, in HTTP and in AMQP.
pub const HEADER: &str = "traceparent";

/// `00-<trace-id>-<parent-id>-<flags>`, validated: lowercase hex only, ids not all zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: [u8; 16],
    pub parent_id: [u8; 8],
    pub flags: u8,
}

impl TraceParent {
    /// Parses a `traceparent` value (version 00; higher versions read as 00, per the spec).
    pub fn parse(value: &str) -> Option<Self> {
        let parts: Vec<&str> = value.trim().split('-').collect();
        if parts.len() < 4 || parts[0].len() != 2 || parts[0] == "ff" || !is_hex(parts[0]) {
            return None;
        }
        if parts[0] == "00" && parts.len() != 4 {
            return None;
        }
        let trace_id: [u8; 16] = decode(parts[1])?;
        let parent_id: [u8; 8] = decode(parts[2])?;
        let [flags]: [u8; 1] = decode(parts[3])?;
        if trace_id == [0; 16] || parent_id == [0; 8] {
            return None;
        }
        Some(Self {
            trace_id,
            parent_id,
            flags,
        })
    }

    /// A new trace (sampled), for a request that brought none.
    pub fn new_root() -> Self {
        Self {
            trace_id: rand::random::<u128>().max(1).to_be_bytes(),
            parent_id: new_span_id(),
            flags: 1,
        }
    }

    /// The context of a new span under this one: same trace, a fresh span id.
    pub fn child(&self) -> Self {
        Self {
            parent_id: new_span_id(),
            ..*self
        }
    }

    pub fn trace_id_hex(&self) -> String {
        hex::encode(self.trace_id)
    }

    pub fn span_id_hex(&self) -> String {
        hex::encode(self.parent_id)
    }

    /// AMQP headers carrying this context.
    pub fn to_headers(&self) -> FieldTable {
        let mut headers = FieldTable::default();
        headers.insert(
            HEADER.into(),
            AMQPValue::LongString(self.to_string().into()),
        );
        headers
    }

    /// The context in a message's headers, if any (and well-formed).
    pub fn from_headers(headers: Option<&FieldTable>) -> Option<Self> {
        match headers?.inner().get(HEADER)? {
            AMQPValue::LongString(value) => Self::parse(&String::from_utf8_lossy(value.as_bytes())),
            AMQPValue::ShortString(value) => Self::parse(value.as_str()),
            _ => None,
        }
    }
}

/// Makes `span` (created, not yet entered) the child of `parent` — or a new trace's root —
/// and returns the context it propagates. With the OTLP export on, that is the exported
/// span's own trace id and span id; otherwise [`TraceParent::child`] of `parent` (or
/// [`TraceParent::new_root`]).
pub fn join(span: &tracing::Span, parent: Option<TraceParent>) -> TraceParent {
    if let Some(parent) = parent {
        set_parent(span, parent);
    }
    of_span(span).unwrap_or_else(|| parent.map_or_else(TraceParent::new_root, |p| p.child()))
}

/// Sets `parent` (a remote context) as the parent of `span`'s exported span; a no-op when
/// nothing is exported. Call it before the span is first entered.
pub fn set_parent(span: &tracing::Span, parent: TraceParent) {
    let remote = SpanContext::new(
        TraceId::from_bytes(parent.trace_id),
        SpanId::from_bytes(parent.parent_id),
        TraceFlags::new(parent.flags),
        true,
        TraceState::default(),
    );
    // Errors only say that nothing is exported (no layer, span disabled) or it is too late.
    let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(remote));
}

/// The exported span's context of `span`, when spans are exported (`None` otherwise).
pub fn of_span(span: &tracing::Span) -> Option<TraceParent> {
    let context = span.context();
    let span_context = context.span().span_context().clone();
    span_context.is_valid().then(|| TraceParent {
        trace_id: span_context.trace_id().to_bytes(),
        parent_id: span_context.span_id().to_bytes(),
        flags: span_context.trace_flags().to_u8(),
    })
}

/// Exports a span `name` that ends now and lasted `elapsed`, as a child of the current span:
/// a wait measured after the fact (the worker's `queue_wait`: job accepted → chunk claimed).
/// A no-op without the OTLP export.
pub fn record_elapsed(name: &'static str, elapsed: std::time::Duration) {
    use opentelemetry::trace::{Span as _, Tracer as _};
    let Some(tracer) = crate::telemetry::tracer() else {
        return;
    };
    let parent = tracing::Span::current().context();
    if !parent.span().span_context().is_valid() {
        return;
    }
    let now = std::time::SystemTime::now();
    let start = now.checked_sub(elapsed).unwrap_or(now);
    let mut span =
        tracer.build_with_context(tracer.span_builder(name).with_start_time(start), &parent);
    span.end_with_timestamp(now);
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "00-{}-{}-{:02x}",
            hex::encode(self.trace_id),
            hex::encode(self.parent_id),
            self.flags
        )
    }
}

fn new_span_id() -> [u8; 8] {
    rand::random::<u64>().max(1).to_be_bytes()
}

fn is_hex(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn decode<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != 2 * N || !is_hex(s) {
        return None;
    }
    hex::decode(s).ok()?.try_into().ok()
}

tokio::task_local! {
    static CURRENT: TraceParent;
}

/// Runs `future` with `context` as the current trace context.
pub async fn scope<F: Future>(context: TraceParent, future: F) -> F::Output {
    CURRENT.scope(context, future).await
}

/// The current trace context, if the task runs inside [`scope`].
pub fn current() -> Option<TraceParent> {
    CURRENT.try_with(|c| *c).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_formats_the_spec_example() {
        let raw = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let tp = TraceParent::parse(raw).expect("valid");
        assert_eq!(tp.to_string(), raw);
        assert_eq!(tp.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        let child = tp.child();
        assert_eq!(child.trace_id, tp.trace_id);
        assert_ne!(child.parent_id, tp.parent_id);
        let back = TraceParent::from_headers(Some(&child.to_headers())).expect("header");
        assert_eq!(back, child);
    }

    #[test]
    fn rejects_malformed_values() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01'; DROP TABLE jobs; --",
        ] {
            assert_eq!(TraceParent::parse(bad), None, "{bad}");
        }
        // A future version with more fields reads as version 00.
        assert!(
            TraceParent::parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-xyz")
                .is_some()
        );
    }

    #[test]
    fn without_the_export_join_makes_the_ids_here() {
        let parent = TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
            .expect("valid");
        let span = tracing::info_span!("test");
        assert_eq!(of_span(&span), None);
        let joined = join(&span, Some(parent));
        assert_eq!(joined.trace_id, parent.trace_id);
        assert_ne!(joined.parent_id, parent.parent_id);
        let root = join(&span, None);
        assert_ne!(root.trace_id, parent.trace_id);
    }

    #[test]
    fn with_the_export_join_returns_the_exported_ids() {
        use opentelemetry::trace::TracerProvider as _;
        use tracing_subscriber::prelude::*;
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        tracing::subscriber::with_default(subscriber, || {
            let parent =
                TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
                    .expect("valid");
            let span = tracing::info_span!("request");
            let joined = join(&span, Some(parent));
            assert_eq!(joined.trace_id, parent.trace_id, "same trace");
            assert_eq!(joined.flags, 1);
            assert_eq!(of_span(&span), Some(joined), "the exported span's own ids");
            // A child span inherits the trace through tracing's own parent.
            let child = span.in_scope(|| tracing::info_span!("store"));
            let child_context = of_span(&child).expect("exported");
            assert_eq!(child_context.trace_id, parent.trace_id);
            assert_ne!(child_context.parent_id, joined.parent_id);
            // Without a parent: a new trace, still the exported span's ids.
            let root = tracing::info_span!("relay");
            let root_context = join(&root, None);
            assert_ne!(root_context.trace_id, parent.trace_id);
            assert_eq!(of_span(&root), Some(root_context));
        });
    }
}
