//! Per-request span (with the request id) and the request metrics.

use std::time::Instant;

use axum::{
    extract::{MatchedPath, Request},
    middleware::Next,
    response::Response,
};
use gatehouse_common::trace::{self, TraceParent};
use tracing::Span;

/// The intake (`request`) span; with the OTLP export on, its exported span is a child of the
/// client's `traceparent` (set here, before the span is first entered).
pub fn span(request: &Request) -> Span {
    let request_id = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let span = tracing::info_span!("request", method = %request.method(), path = %request.uri().path(), request_id, trace_id = tracing::field::Empty);
    if let Some(parent) = client_traceparent(request) {
        trace::set_parent(&span, parent);
    }
    span
}

fn client_traceparent(request: &Request) -> Option<TraceParent> {
    request
        .headers()
        .get(trace::HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(TraceParent::parse)
}

/// The intake span's W3C trace context: a child of the client's `traceparent`, or a new
/// trace (the exported span's own ids when spans go to OTLP). The handler runs inside it
/// (`gatehouse_common::trace::current()`), so a job submitted here stores it and its chunk
/// messages carry it to the worker.
pub async fn trace_context(request: Request, next: Next) -> Response {
    let span = Span::current();
    let context = trace::of_span(&span).unwrap_or_else(|| {
        client_traceparent(&request)
            .map(|parent| parent.child())
            .unwrap_or_else(TraceParent::new_root)
    });
    span.record("trace_id", context.trace_id_hex());
    trace::scope(context, next.run(request)).await
}

/// `gatehouse_api_requests_total{method,route,status}` and
/// `gatehouse_api_request_duration_seconds{method,route}`; `route` is the matched pattern,
/// never the raw path, so labels stay bounded.
pub async fn record(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let method = request.method().as_str().to_string();
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("gatehouse_api_requests_total", "method" => method.clone(), "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("gatehouse_api_request_duration_seconds", "method" => method, "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}
