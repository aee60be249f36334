//! `GET /healthz` (process alive), `GET /readyz` (Postgres and RabbitMQ reachable),
//! `GET /metrics` (Prometheus text).

use axum::{Json, Router, extract::State, http::StatusCode, routing::get};
use serde_json::{Value, json};

use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
}

#[utoipa::path(
    get, path = "/healthz", tag = "health", operation_id = "healthz",
    responses((status = 200, description = "The process is alive", body = crate::openapi::Health)),
)]
async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

#[utoipa::path(
    get, path = "/readyz", tag = "health", operation_id = "readyz",
    responses(
        (status = 200, description = "Postgres and RabbitMQ reachable", body = crate::openapi::Readiness),
        (status = 503, description = "One of them is not (`checks` says which)", body = crate::openapi::Readiness),
    ),
)]
async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let database = sqlx::query!(r#"SELECT 1 AS "one""#)
        .fetch_one(&state.pool)
        .await
        .is_ok();
    let broker = state.broker.publisher().await.is_ok();
    let status = if database && broker {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let word = |ok: bool| if ok { "ok" } else { "unreachable" };
    (
        status,
        Json(json!({
            "status": if status == StatusCode::OK { "ready" } else { "not_ready" },
            "checks": { "postgres": word(database), "rabbitmq": word(broker) },
        })),
    )
}

#[utoipa::path(
    get, path = "/metrics", tag = "health", operation_id = "metrics",
    responses((status = 200, description = "Prometheus text exposition", content_type = "text/plain", body = String)),
)]
async fn metrics(State(state): State<AppState>) -> String {
    state.metrics.render()
}
