//! What was sent where: `GET /v1/webhooks/messages` (newest first; `?event_type=`,
//! `?endpoint_id=`, `?status=`), `GET /v1/webhooks/messages/{id}`,
//! `GET /v1/webhooks/messages/{id}/attempts`, `POST /v1/webhooks/messages/{id}/retry`
//! (`?endpoint_id=` to re-send to one endpoint only).

use axum::{
    Json, Router,
    extract::{Path, State},
    http::StatusCode,
    routing::{get, post},
};
use gatehouse_common::{
    types::{AttemptId, EndpointId, MessageId},
    webhook::EventType,
};
use serde::Deserialize;
use serde_json::{Value, json};

use super::Page;
use crate::{
    auth::Principal,
    error::ApiError,
    extract::ApiQuery,
    state::AppState,
    store::{
        webhook_endpoints::Actor,
        webhook_messages::{self as store, Attempt, Message, MessageFilter},
    },
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/webhooks/messages", get(list))
        .route("/v1/webhooks/messages/{id}", get(show))
        .route("/v1/webhooks/messages/{id}/attempts", get(attempts))
        .route("/v1/webhooks/messages/{id}/retry", post(retry))
}

const DELIVERY_STATUSES: [&str; 4] = ["pending", "succeeded", "failed", "exhausted"];

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    /// Page size, 1–200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    limit: Option<i64>,
    /// The last id of the previous page (its `next_after`).
    #[param(value_type = Option<MessageId>)]
    after: Option<String>,
    /// Only events of this type (`job.completed`, …).
    event_type: Option<String>,
    /// Only events for this endpoint.
    #[param(value_type = Option<EndpointId>)]
    endpoint_id: Option<String>,
    /// Only events with a delivery in this state.
    #[param(value_type = Option<String>, pattern = "^(pending|succeeded|failed|exhausted)$")]
    status: Option<String>,
}

fn parse_id(raw: &str) -> Result<MessageId, ApiError> {
    raw.parse().map_err(|_| ApiError::NotFound)
}

fn query_id<T: std::str::FromStr>(field: &str, raw: Option<&str>) -> Result<Option<T>, ApiError> {
    raw.map(|raw| {
        raw.parse().map_err(|_| {
            ApiError::bad_request(
                "invalid_query",
                format!("query parameter `{field}`: not an id"),
            )
            .with_field(Some(field.to_string()))
        })
    })
    .transpose()
}

#[utoipa::path(
    get, path = "/v1/webhooks/messages", tag = "webhooks", operation_id = "listMessages",
    params(ListQuery),
    responses((status = 200, description = "Events, newest first, with their deliveries", body = Page<Message>)),
)]
async fn list(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<Page<Message>>, ApiError> {
    principal.require_webhooks()?;
    let page = super::PageQuery {
        limit: query.limit,
        after: query.after,
    };
    let limit = page.limit()?;
    if let Some(t) = &query.event_type {
        t.parse::<EventType>().map_err(|e| {
            ApiError::bad_request("invalid_query", e).with_field(Some("event_type".into()))
        })?;
    }
    if let Some(s) = &query.status
        && !DELIVERY_STATUSES.contains(&s.as_str())
    {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!("status is one of {}", DELIVERY_STATUSES.join(", ")),
        )
        .with_field(Some("status".into())));
    }
    let filter = MessageFilter {
        event_type: query.event_type,
        endpoint: query_id::<EndpointId>("endpoint_id", query.endpoint_id.as_deref())?,
        status: query.status,
        before: page.after::<MessageId>()?,
        limit,
    };
    let messages = store::list(&state.pool, principal.tenant()?, &filter).await?;
    Ok(Json(Page::new(messages, limit, |m| m.id.to_string())))
}

#[utoipa::path(
    get, path = "/v1/webhooks/messages/{id}", tag = "webhooks", operation_id = "getMessage",
    responses((status = 200, description = "The event", body = Message)),
)]
async fn show(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<Message>, ApiError> {
    principal.require_webhooks()?;
    store::get(&state.pool, principal.tenant()?, parse_id(&id)?)
        .await?
        .map(Json)
        .ok_or(ApiError::NotFound)
}

/// Status code, duration, the start of the response and the next retry of every attempt,
/// newest first.
#[utoipa::path(
    get, path = "/v1/webhooks/messages/{id}/attempts", tag = "webhooks", operation_id = "messageAttempts",
    params(super::PageQuery),
    responses((status = 200, description = "Its delivery attempts, newest first", body = Page<Attempt>)),
)]
async fn attempts(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    ApiQuery(page): ApiQuery<super::PageQuery>,
) -> Result<Json<Page<Attempt>>, ApiError> {
    principal.require_webhooks()?;
    let limit = page.limit()?;
    let attempts = store::attempts(
        &state.pool,
        principal.tenant()?,
        parse_id(&id)?,
        page.after::<AttemptId>()?,
        limit,
    )
    .await?
    .ok_or(ApiError::NotFound)?;
    Ok(Json(Page::new(attempts, limit, |a| a.id.to_string())))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct RetryQuery {
    /// Only the delivery to this endpoint.
    #[param(value_type = Option<EndpointId>)]
    endpoint_id: Option<String>,
}

/// Sends the message again now, with a fresh retry schedule, to its enabled endpoints.
#[utoipa::path(
    post, path = "/v1/webhooks/messages/{id}/retry", tag = "webhooks", operation_id = "retryMessage",
    params(RetryQuery),
    responses((status = 202, description = "Deliveries queued again", body = crate::openapi::Retried)),
)]
async fn retry(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    ApiQuery(query): ApiQuery<RetryQuery>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    principal.require_webhooks()?;
    let endpoint = query_id::<EndpointId>("endpoint_id", query.endpoint_id.as_deref())?;
    let name = principal.actor();
    let retried = store::retry(
        &state.pool,
        principal.tenant()?,
        parse_id(&id)?,
        endpoint,
        Actor {
            name: &name,
            client_ip: Some(principal.client_ip),
        },
    )
    .await?
    .ok_or(ApiError::NotFound)?;
    Ok((StatusCode::ACCEPTED, Json(json!({ "retried": retried }))))
}
