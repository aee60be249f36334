//! `GET /healthz` (process alive), `GET /readyz` (Postgres and RabbitMQ reachable),
//! `GET /metrics` (Prometheus text).

use axum::{Json, Router, extract::State, http::StatusCode, routing::get};
use serde_json::{Value, json};

use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/healthz",
            get(|| async { Json(json!({ "status": "ok" })) }),
        )
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
}

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

async fn metrics(State(state): State<AppState>) -> String {
    state.metrics.render()
}
