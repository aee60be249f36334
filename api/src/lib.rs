//! The Gatehouse api: a thin ingress that authenticates tenants, validates submissions,
//! stores them durably with their outbox messages, and serves status and results.

pub mod audit;
pub mod auth;
pub mod background;
pub mod capacity;
pub mod cli;
pub mod dispatch;
pub mod error;
pub mod extract;
pub mod identity;
pub mod ingest;
pub mod network;
pub mod openai;
pub mod openapi;
pub mod policy;
pub mod ratelimit;
pub mod relay;
pub mod retention;
pub mod routes;
pub mod server;
pub mod state;
pub mod store;
mod telemetry;
pub mod waiter;

use axum::{Router, extract::DefaultBodyLimit, http::HeaderName, middleware};
use tower_http::{
    request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer},
    trace::TraceLayer,
};

use crate::error::ApiError;
pub use crate::state::AppState;

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// 405 with the `Allow` header axum computed (kept by the problem layer, which writes the
/// problem+json body).
async fn method_not_allowed() -> axum::http::StatusCode {
    axum::http::StatusCode::METHOD_NOT_ALLOWED
}

/// The whole HTTP application; tests drive it directly.
pub fn app(state: AppState) -> Router {
    let body_limit = state.config.limits.max_body_bytes;
    let cors = network::cors_layer(&state.config.identity.cors_origins)
        .ok()
        .flatten();
    let router = routes::router(state.config.limits.max_file_bytes)
        .fallback(|| async { ApiError::NotFound })
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), audit::layer))
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(network::layer((*state.trusted_proxies).clone()));
    let router = match cors {
        Some(cors) => router.layer(cors),
        None => router,
    };
    router
        .layer(middleware::from_fn(ratelimit::headers))
        .layer(middleware::from_fn(error::problem_layer))
        .layer(middleware::from_fn(telemetry::record))
        .layer(middleware::from_fn(telemetry::trace_context))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(TraceLayer::new_for_http().make_span_with(telemetry::span))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
        .with_state(state)
}
