//! A tenant's webhook endpoints: `POST/GET /v1/webhooks/endpoints`,
//! `GET/PATCH/DELETE /v1/webhooks/endpoints/{id}`, `GET …/{id}/secret` (admins),
//! `POST …/{id}/secret/rotate`, `POST …/{id}/recover`, `POST …/{id}/test`. Tenant admins, and
//! keys with the `webhooks` scope, manage them; another tenant's endpoint is a 404.

use std::collections::BTreeMap;

use axum::{
    Json, Router,
    extract::{Path, State},
    http::StatusCode,
    routing::{get, post},
};
use chrono::{DateTime, Utc};
use gatehouse_common::{
    types::{EndpointId, TenantId},
    webhook::{EventType, secret::SecretBox, ssrf::AddressPolicy},
};
use serde::{Deserialize, Deserializer};
use serde_json::{Value, json};

use super::{Page, PageQuery};
use crate::{
    auth::Principal,
    error::ApiError,
    extract::{ApiJson, ApiQuery, Line, Prose},
    policy,
    state::AppState,
    store::{
        webhook_endpoints::{self as store, Actor, Changes, Endpoint, EndpointError, NewEndpoint},
        webhook_messages,
    },
};

/// Most custom headers per endpoint, and the longest header value.
pub const MAX_HEADERS: usize = 20;
pub const MAX_HEADER_VALUE_CHARS: usize = 1000;
/// Most entries in `event_types`.
pub const MAX_EVENT_TYPES: usize = 32;
/// The per-endpoint rate limit's range (deliveries per second).
pub const MAX_RATE_LIMIT_PER_SEC: i32 = 10_000;

/// Headers an endpoint may not set: the signature's, and the ones that frame the request.
const RESERVED_HEADERS: &[&str] = &[
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "content-type",
    "content-length",
    "content-encoding",
    "transfer-encoding",
    "host",
    "connection",
    "keep-alive",
    "upgrade",
    "te",
    "trailer",
    "expect",
    "proxy-authorization",
    "proxy-connection",
];

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/webhooks/endpoints", post(create).get(list))
        .route(
            "/v1/webhooks/endpoints/{id}",
            get(show).patch(change).delete(remove),
        )
        .route("/v1/webhooks/endpoints/{id}/secret", get(secret))
        .route("/v1/webhooks/endpoints/{id}/secret/rotate", post(rotate))
        .route("/v1/webhooks/endpoints/{id}/recover", post(recover))
        .route("/v1/webhooks/endpoints/{id}/test", post(test))
}

fn yes() -> bool {
    true
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct CreateEndpoint {
    url: Line<2048>,
    #[serde(default)]
    description: Option<Prose<1000>>,
    #[serde(default)]
    event_types: Vec<String>,
    #[serde(default = "yes")]
    enabled: bool,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    rate_limit_per_sec: Option<i32>,
}

/// A present field, even `null` (`Some(None)`), against an absent one (`None`).
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct ChangeEndpoint {
    #[serde(default)]
    url: Option<Line<2048>>,
    #[serde(default)]
    description: Option<Prose<1000>>,
    #[serde(default)]
    event_types: Option<Vec<String>>,
    #[serde(default)]
    enabled: Option<bool>,
    #[serde(default)]
    headers: Option<BTreeMap<String, String>>,
    #[serde(default, deserialize_with = "present")]
    rate_limit_per_sec: Option<Option<i32>>,
}

fn secrets(state: &AppState) -> SecretBox {
    SecretBox::new(state.config.webhooks.secret_key)
}

fn address_policy(state: &AppState) -> AddressPolicy {
    let hooks = &state.config.webhooks;
    AddressPolicy::new(hooks.allow_cidrs.clone(), hooks.allow_http)
}

fn actor(principal: &Principal) -> (String, Option<std::net::IpAddr>) {
    (principal.actor(), Some(principal.client_ip))
}

fn check_url(state: &AppState, url: &str) -> Result<(), ApiError> {
    address_policy(state)
        .check_url(url)
        .map(|_| ())
        .map_err(|refusal| {
            let code = match refusal.code() {
                "address_refused" => "url_refused",
                "scheme_refused" => "url_scheme_refused",
                _ => "invalid_url",
            };
            ApiError::invalid(code, "url", refusal.to_string())
        })
}

fn check_event_types(list: Vec<String>) -> Result<Vec<String>, ApiError> {
    let list = super::bounded_set("event_types", list, MAX_EVENT_TYPES)?;
    for (i, t) in list.iter().enumerate() {
        t.parse::<EventType>()
            .map_err(|e| ApiError::invalid("invalid_event_type", format!("event_types[{i}]"), e))?;
    }
    Ok(list)
}

fn check_headers(headers: BTreeMap<String, String>) -> Result<Value, ApiError> {
    if headers.len() > MAX_HEADERS {
        return Err(ApiError::invalid(
            "too_many_entries",
            "headers",
            format!(
                "headers has {} entries; at most {MAX_HEADERS}",
                headers.len()
            ),
        ));
    }
    let mut out = serde_json::Map::new();
    for (name, value) in headers {
        let field = format!("headers.{name}");
        let lower = name.to_ascii_lowercase();
        if axum::http::HeaderName::from_bytes(name.as_bytes()).is_err() {
            return Err(ApiError::invalid(
                "invalid_header",
                field,
                "not a valid HTTP header name",
            ));
        }
        if RESERVED_HEADERS.contains(&lower.as_str()) || lower.starts_with("webhook-") {
            return Err(ApiError::invalid(
                "invalid_header",
                field,
                format!("`{name}` is set by Gatehouse and cannot be overridden"),
            ));
        }
        if value.chars().count() > MAX_HEADER_VALUE_CHARS
            || value.chars().any(|c| c.is_control() || !c.is_ascii())
            || axum::http::HeaderValue::from_str(&value).is_err()
        {
            return Err(ApiError::invalid(
                "invalid_header",
                field,
                format!(
                    "a header value is visible ASCII, at most {MAX_HEADER_VALUE_CHARS} characters"
                ),
            ));
        }
        out.insert(name, Value::String(value));
    }
    Ok(Value::Object(out))
}

fn check_rate_limit(limit: Option<i32>) -> Result<Option<i32>, ApiError> {
    match limit {
        Some(n) if !(1..=MAX_RATE_LIMIT_PER_SEC).contains(&n) => Err(ApiError::invalid(
            "invalid_rate_limit",
            "rate_limit_per_sec",
            format!("rate_limit_per_sec must be between 1 and {MAX_RATE_LIMIT_PER_SEC}"),
        )),
        other => Ok(other),
    }
}

fn parse_id(raw: &str) -> Result<EndpointId, ApiError> {
    raw.parse().map_err(|_| ApiError::NotFound)
}

fn with_secret(endpoint: &Endpoint, secret: String) -> Value {
    let mut value = serde_json::to_value(endpoint).unwrap_or_default();
    value["secret"] = Value::String(secret);
    value
}

fn endpoint_error(error: EndpointError) -> ApiError {
    match error {
        EndpointError::Database(e) => ApiError::Database(e),
        EndpointError::TooMany(n) => ApiError::Conflict {
            code: "too_many_endpoints",
            detail: format!(
                "the tenant already has {n} webhook endpoints (GATEHOUSE_WEBHOOK_MAX_ENDPOINTS)"
            ),
        },
        EndpointError::Secret(e) => ApiError::Internal(e.to_string()),
    }
}

#[utoipa::path(
    post, path = "/v1/webhooks/endpoints", tag = "webhooks", operation_id = "createEndpoint",
    request_body = CreateEndpoint,
    responses(
        (status = 201, description = "The endpoint, with its signing secret (shown once)", body = crate::openapi::EndpointWithSecret),
        (status = 409, description = "Conflicts with the current state", content_type = "application/problem+json", body = crate::openapi::Problem),
    ),
)]
async fn create(
    State(state): State<AppState>,
    principal: Principal,
    body: Result<ApiJson<CreateEndpoint>, ApiError>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    principal.require_webhooks()?;
    let ApiJson(body) = body?;
    let tenant = principal.tenant()?;
    check_url(&state, &body.url)?;
    let event_types = check_event_types(body.event_types)?;
    let headers = check_headers(body.headers)?;
    let rate_limit_per_sec = check_rate_limit(body.rate_limit_per_sec)?;
    let (name, client_ip) = actor(&principal);
    let (endpoint, secret) = store::create(
        &state.pool,
        NewEndpoint {
            tenant,
            url: &body.url,
            description: body.description.as_ref().map_or("", |d| d.as_str()),
            event_types: &event_types,
            enabled: body.enabled,
            headers,
            rate_limit_per_sec,
            max_endpoints: state.config.webhooks.max_endpoints,
        },
        &secrets(&state),
        Actor {
            name: &name,
            client_ip,
        },
    )
    .await
    .map_err(endpoint_error)?;
    Ok((
        StatusCode::CREATED,
        Json(with_secret(&endpoint, secret.to_whsec())),
    ))
}

#[utoipa::path(
    get, path = "/v1/webhooks/endpoints", tag = "webhooks", operation_id = "listEndpoints",
    params(PageQuery),
    responses((status = 200, description = "The tenant's endpoints", body = Page<Endpoint>)),
)]
async fn list(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(page): ApiQuery<PageQuery>,
) -> Result<Json<Page<Endpoint>>, ApiError> {
    principal.require_webhooks()?;
    let limit = page.limit()?;
    let endpoints = store::list(&state.pool, principal.tenant()?, page.after()?, limit).await?;
    Ok(Json(Page::new(endpoints, limit, |e| {
        e.endpoint_id.to_string()
    })))
}

#[utoipa::path(
    get, path = "/v1/webhooks/endpoints/{id}", tag = "webhooks", operation_id = "getEndpoint",
    responses((status = 200, description = "The endpoint", body = Endpoint)),
)]
async fn show(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<Endpoint>, ApiError> {
    principal.require_webhooks()?;
    store::get(&state.pool, principal.tenant()?, parse_id(&id)?)
        .await?
        .map(Json)
        .ok_or(ApiError::NotFound)
}

#[utoipa::path(
    patch, path = "/v1/webhooks/endpoints/{id}", tag = "webhooks", operation_id = "updateEndpoint",
    request_body = ChangeEndpoint,
    responses((status = 200, description = "The endpoint", body = Endpoint)),
)]
async fn change(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    body: Result<ApiJson<ChangeEndpoint>, ApiError>,
) -> Result<Json<Endpoint>, ApiError> {
    principal.require_webhooks()?;
    let ApiJson(body) = body?;
    let id = parse_id(&id)?;
    if let Some(url) = &body.url {
        check_url(&state, url)?;
    }
    let event_types = body.event_types.map(check_event_types).transpose()?;
    let headers = body.headers.map(check_headers).transpose()?;
    let rate_limit_per_sec = body.rate_limit_per_sec.map(check_rate_limit).transpose()?;
    let (name, client_ip) = actor(&principal);
    store::update(
        &state.pool,
        principal.tenant()?,
        id,
        Changes {
            url: body.url.as_deref(),
            description: body.description.as_ref().map(|d| d.as_str()),
            event_types: event_types.as_deref(),
            enabled: body.enabled,
            headers,
            rate_limit_per_sec,
        },
        Actor {
            name: &name,
            client_ip,
        },
    )
    .await?
    .map(Json)
    .ok_or(ApiError::NotFound)
}

#[utoipa::path(
    delete, path = "/v1/webhooks/endpoints/{id}", tag = "webhooks", operation_id = "deleteEndpoint",
    responses((status = 204, description = "Deleted")),
)]
async fn remove(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    principal.require_webhooks()?;
    let (name, client_ip) = actor(&principal);
    let deleted = store::delete(
        &state.pool,
        principal.tenant()?,
        parse_id(&id)?,
        Actor {
            name: &name,
            client_ip,
        },
    )
    .await?;
    if deleted {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound)
    }
}

/// `GET …/secret` → `{"secret": "whsec_…"}` (admins; audited).
#[utoipa::path(
    get, path = "/v1/webhooks/endpoints/{id}/secret", tag = "webhooks", operation_id = "getEndpointSecret",
    responses((status = 200, description = "The signing secret", body = crate::openapi::EndpointSecret)),
)]
async fn secret(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    principal.require(&policy::WEBHOOK_SECRET_READ)?;
    principal.tenant()?;
    principal
        .require_fresh_auth(&state, "webhook.secret_read")
        .await?;
    let (name, client_ip) = actor(&principal);
    let secret = store::secret(
        &state.pool,
        principal.tenant()?,
        parse_id(&id)?,
        &secrets(&state),
        Actor {
            name: &name,
            client_ip,
        },
    )
    .await
    .map_err(endpoint_error)?
    .ok_or(ApiError::NotFound)?;
    Ok(Json(json!({ "secret": secret.to_whsec() })))
}

/// `POST …/secret/rotate`: a new secret (in the response); the previous one keeps signing for
/// `GATEHOUSE_WEBHOOK_ROTATION_OVERLAP_SECS`.
#[utoipa::path(
    post, path = "/v1/webhooks/endpoints/{id}/secret/rotate", tag = "webhooks", operation_id = "rotateEndpointSecret",
    responses((status = 200, description = "The endpoint with its new secret", body = crate::openapi::EndpointWithSecret)),
)]
async fn rotate(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    principal.require_webhooks()?;
    let (name, client_ip) = actor(&principal);
    let (endpoint, secret) = store::rotate(
        &state.pool,
        principal.tenant()?,
        parse_id(&id)?,
        state.config.webhooks.rotation_overlap,
        &secrets(&state),
        Actor {
            name: &name,
            client_ip,
        },
    )
    .await
    .map_err(endpoint_error)?
    .ok_or(ApiError::NotFound)?;
    Ok(Json(with_secret(&endpoint, secret.to_whsec())))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct Recover {
    since: DateTime<Utc>,
}

/// `POST …/recover {"since"}`: re-send the endpoint's failed and exhausted messages created
/// since then (at most `GATEHOUSE_WEBHOOK_RECOVER_MAX_MESSAGES`, oldest first).
#[utoipa::path(
    post, path = "/v1/webhooks/endpoints/{id}/recover", tag = "webhooks", operation_id = "recoverEndpoint",
    request_body = Recover,
    responses(
        (status = 202, description = "Failed and exhausted messages queued again", body = crate::openapi::Recovered),
        (status = 409, description = "Conflicts with the current state", content_type = "application/problem+json", body = crate::openapi::Problem),
    ),
)]
async fn recover(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    body: Result<ApiJson<Recover>, ApiError>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    principal.require_webhooks()?;
    let ApiJson(body) = body?;
    let tenant = principal.tenant()?;
    let endpoint = enabled_endpoint(&state, tenant, &id).await?;
    if body.since > Utc::now() {
        return Err(ApiError::invalid(
            "invalid_since",
            "since",
            "since must not be in the future",
        ));
    }
    let (name, client_ip) = actor(&principal);
    let max = state.config.webhooks.recover_max_messages;
    let (recovered, more) = webhook_messages::recover(
        &state.pool,
        tenant,
        endpoint.endpoint_id,
        body.since,
        max,
        Actor {
            name: &name,
            client_ip,
        },
    )
    .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "recovered": recovered, "more": more })),
    ))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct TestEvent {
    #[serde(default)]
    event_type: Option<String>,
}

/// `POST …/test` (`{"event_type"}` optional, default `job.completed`): an example event sent
/// to this endpoint whatever its filter says.
#[utoipa::path(
    post, path = "/v1/webhooks/endpoints/{id}/test", tag = "webhooks", operation_id = "testEndpoint",
    request_body(content = Option<TestEvent>, description = "Optional: `{\"event_type\"}` (default `job.completed`)"),
    responses(
        (status = 202, description = "The example message, queued", body = webhook_messages::Message),
        (status = 409, description = "Conflicts with the current state", content_type = "application/problem+json", body = crate::openapi::Problem),
    ),
)]
async fn test(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    body: Result<Option<ApiJson<TestEvent>>, ApiError>,
) -> Result<(StatusCode, Json<webhook_messages::Message>), ApiError> {
    principal.require_webhooks()?;
    let body = body?.map(|b| b.0);
    let tenant = principal.tenant()?;
    let event_type = match body.and_then(|b| b.event_type) {
        None => EventType::JobCompleted,
        Some(raw) => raw
            .parse()
            .map_err(|e| ApiError::invalid("invalid_event_type", "event_type", e))?,
    };
    let endpoint = enabled_endpoint(&state, tenant, &id).await?;
    let message =
        webhook_messages::send_test(&state.pool, tenant, endpoint.endpoint_id, event_type)
            .await?
            .ok_or(ApiError::NotFound)?;
    Ok((StatusCode::ACCEPTED, Json(message)))
}

/// The tenant's endpoint `raw`: 404 if unknown, 409 if disabled.
async fn enabled_endpoint(
    state: &AppState,
    tenant: TenantId,
    raw: &str,
) -> Result<Endpoint, ApiError> {
    let endpoint = store::get(&state.pool, tenant, parse_id(raw)?)
        .await?
        .ok_or(ApiError::NotFound)?;
    if !endpoint.enabled {
        return Err(ApiError::Conflict {
            code: "endpoint_disabled",
            detail: "the endpoint is disabled; enable it first (PATCH {\"enabled\": true})".into(),
        });
    }
    Ok(endpoint)
}

/// `"webhook": {"endpoint_id"}` of a job submission: one of the tenant's endpoints (422
/// otherwise, never revealing another tenant's).
pub(crate) async fn job_endpoint(
    state: &AppState,
    tenant: TenantId,
    raw: &str,
) -> Result<EndpointId, ApiError> {
    let unknown = || {
        ApiError::invalid(
            "unknown_endpoint",
            "webhook.endpoint_id",
            "no webhook endpoint of this tenant has this id",
        )
    };
    let id: EndpointId = raw.parse().map_err(|_| unknown())?;
    store::get(&state.pool, tenant, id)
        .await?
        .map(|e| e.endpoint_id)
        .ok_or_else(unknown)
}
