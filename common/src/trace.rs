//! W3C trace context (`traceparent`, <https://www.w3.org/TR/trace-context/>) carried from the
//! api to the worker: a client's `traceparent` (or a new trace) becomes the api's intake span
//! context, is stored with the job (`jobs.traceparent`), travels in the AMQP headers of every
//! chunk message (dispatcher, relay, retries), and becomes the parent of the worker's chunk
//! span and part of its audit record. Within a process the current context is a task-local
//! ([`scope`]); [`crate::db::begin`] hands it to Postgres (`gatehouse.traceparent`), which is
//! the default of `jobs.traceparent`, so every submission path records it without being told.

use std::{fmt, future::Future};

use lapin::types::{AMQPValue, FieldTable};

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
}
