//! The worker's own small HTTP surface on `GATEHOUSE_WORKER_LISTEN`: health and metrics.

use axum::{Router, extract::State, http::StatusCode, routing::get};
use gatehouse_common::telemetry::PrometheusHandle;
use sqlx::PgPool;

#[derive(Clone)]
struct HttpState {
    pool: PgPool,
    metrics: PrometheusHandle,
}

pub fn router(pool: PgPool, metrics: PrometheusHandle) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(render))
        .with_state(HttpState { pool, metrics })
}

async fn readyz(State(state): State<HttpState>) -> (StatusCode, &'static str) {
    match sqlx::query("SELECT 1").execute(&state.pool).await {
        Ok(_) => (StatusCode::OK, "ready"),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "database unreachable"),
    }
}

async fn render(State(state): State<HttpState>) -> String {
    state.metrics.render()
}
