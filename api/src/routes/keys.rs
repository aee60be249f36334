//! Tenant admins manage their tenant's API keys: `POST /v1/keys`, `GET /v1/keys`,
//! `POST /v1/keys/{id}/rotate`, `DELETE /v1/keys/{id}` (revoke).

use axum::{
    Json, Router,
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    routing::{delete, get, post},
};
use chrono::{DateTime, Utc};
use gatehouse_common::types::{ADMIN_SCOPE, KeyId};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Page, PageQuery, check_scopes};
use crate::{
    auth::Principal,
    error::ApiError,
    extract::{ApiJson, ApiQuery, Line},
    policy,
    ratelimit::RateSettings,
    state::AppState,
    store::{
        keys::{self, ApiKey, NewKey},
        tenants,
    },
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/keys", get(list).post(create))
        .route("/v1/keys/{id}/rotate", post(rotate))
        .route("/v1/keys/{id}", delete(revoke).patch(change))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct CreateKey {
    name: Line<100>,
    /// Among `moderate`, `translate`, `webhooks`, `admin` — only those the tenant grants.
    /// `admin` makes the key an admin of its tenant, exempt from step-up; creating such a key
    /// needs a fresh login (or `Gatehouse-Confirm-Password`).
    scopes: Vec<String>,
    #[serde(default)]
    expires_at: Option<DateTime<Utc>>,
    /// Per-key limits: `{"requests_per_minute": N, "items_per_minute": N}` (`null`: none).
    #[serde(
        default,
        deserialize_with = "gatehouse_common::objects::optional_object"
    )]
    rate_limits: Option<RateSettings>,
}

fn with_secret(key: &ApiKey, token: String) -> Value {
    let mut value = serde_json::to_value(key).unwrap_or_default();
    value["key"] = Value::String(token);
    value
}

#[utoipa::path(
    post, path = "/v1/keys", tag = "admin", operation_id = "createKey",
    request_body = CreateKey,
    responses((status = 201, description = "The key, with its secret (shown once)", body = crate::openapi::ApiKeyWithSecret)),
)]
async fn create(
    State(state): State<AppState>,
    principal: Principal,
    body: Result<ApiJson<CreateKey>, ApiError>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    principal.require(&policy::KEYS_MANAGE)?;
    let ApiJson(body) = body?;
    let tenant = principal.tenant()?;
    if let Some(limits) = &body.rate_limits {
        limits.validate("rate_limits")?;
    }
    let name = body.name.as_str();
    let scopes = super::bounded_set("scopes", body.scopes, super::MAX_SCOPES)?;
    if scopes.is_empty() {
        return Err(ApiError::invalid(
            "invalid_scope",
            "scopes",
            "a key needs at least one scope",
        ));
    }
    let granted = tenants::get(&state.pool, tenant)
        .await?
        .map(|t| t.scopes)
        .unwrap_or_default();
    check_scopes("scopes", &scopes, &granted)?;
    if scopes.iter().any(|s| s == ADMIN_SCOPE) {
        // Minting an admin credential is a role change in all but name.
        principal
            .require_fresh_auth(&state, "key.grant_admin")
            .await?;
    }
    if body.expires_at.is_some_and(|t| t <= Utc::now()) {
        return Err(ApiError::invalid(
            "invalid_expiry",
            "expires_at",
            "expires_at must be in the future",
        ));
    }
    let (key, token) = keys::create(
        &state.pool,
        NewKey {
            tenant,
            name,
            scopes: &scopes,
            expires_at: body.expires_at,
            actor: &principal.actor(),
            client_ip: Some(principal.client_ip),
        },
    )
    .await?;
    let key = match body.rate_limits {
        Some(limits) => keys::set_rate_limits(
            &state.pool,
            tenant,
            key.key_id,
            serde_json::to_value(limits).unwrap_or_default(),
            &principal.actor(),
            Some(principal.client_ip),
        )
        .await?
        .unwrap_or(key),
        None => key,
    };
    Ok((StatusCode::CREATED, Json(with_secret(&key, token))))
}

/// A key as `GET /v1/keys` lists it: `rotation_due` when its secret is older than
/// `GATEHOUSE_KEY_ROTATION_REMINDER_DAYS`.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct ListedKey {
    #[serde(flatten)]
    key: ApiKey,
    rotation_due: bool,
}

#[utoipa::path(
    get, path = "/v1/keys", tag = "admin", operation_id = "listKeys",
    params(PageQuery),
    responses((status = 200, description = "The tenant's keys", body = Page<ListedKey>)),
)]
async fn list(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(page): ApiQuery<PageQuery>,
) -> Result<Json<Page<ListedKey>>, ApiError> {
    principal.require(&policy::KEYS_MANAGE)?;
    let limit = page.limit()?;
    let keys = keys::list(
        &state.pool,
        principal.tenant()?,
        page.after::<KeyId>()?,
        limit,
    )
    .await?;
    let now = state.clock.now();
    let days = state.config.audit.key_rotation_reminder_days;
    let keys = keys
        .into_iter()
        .map(|key| ListedKey {
            rotation_due: crate::store::key_rotation::due(&key, now, days),
            key,
        })
        .collect();
    Ok(Json(Page::new(keys, limit, |k| k.key.key_id.to_string())))
}

#[utoipa::path(
    post, path = "/v1/keys/{id}/rotate", tag = "admin", operation_id = "rotateKey",
    params(("Idempotency-Key" = Option<String>, Header, description = "A repeat with the same key returns the same secret")),
    responses((status = 200, description = "The key with its new secret", body = crate::openapi::ApiKeyWithSecret)),
)]
async fn rotate(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    principal.require(&policy::KEYS_MANAGE)?;
    let key_id: KeyId = id.parse().map_err(|_| ApiError::NotFound)?;
    let idempotency_key = super::jobs::idempotency_key(&headers)?;
    let identity = &state.config.identity;
    let (key, token) = keys::rotate(
        &state.pool,
        principal.tenant()?,
        key_id,
        identity.key_rotation_grace,
        idempotency_key,
        &identity.key_derivation_secret,
        &principal.actor(),
        Some(principal.client_ip),
    )
    .await?
    .ok_or(ApiError::NotFound)?;
    let mut value = with_secret(&key, token);
    value["previous_secret_valid_for_secs"] = json!(identity.key_rotation_grace.as_secs());
    Ok(Json(value))
}

#[utoipa::path(
    delete, path = "/v1/keys/{id}", tag = "admin", operation_id = "revokeKey",
    responses((status = 200, description = "The revoked key", body = ApiKey)),
)]
async fn revoke(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<ApiKey>, ApiError> {
    principal.require(&policy::KEYS_MANAGE)?;
    principal.require_fresh_auth(&state, "key.revoke").await?;
    let key_id: KeyId = id.parse().map_err(|_| ApiError::NotFound)?;
    keys::revoke(
        &state.pool,
        principal.tenant()?,
        key_id,
        &principal.actor(),
        Some(principal.client_ip),
    )
    .await?
    .map(Json)
    .ok_or(ApiError::NotFound)
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct ChangeKey {
    #[serde(deserialize_with = "gatehouse_common::objects::object")]
    rate_limits: RateSettings,
}

/// `PATCH /v1/keys/{id}` `{"rate_limits": {...}}`: a tenant admin sets a key's own limits.
#[utoipa::path(
    patch, path = "/v1/keys/{id}", tag = "admin", operation_id = "updateKey",
    request_body = ChangeKey,
    responses((status = 200, description = "The key", body = ApiKey)),
)]
async fn change(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    body: Result<ApiJson<ChangeKey>, ApiError>,
) -> Result<Json<ApiKey>, ApiError> {
    principal.require(&policy::KEYS_MANAGE)?;
    let ApiJson(body) = body?;
    let key_id: KeyId = id.parse().map_err(|_| ApiError::NotFound)?;
    body.rate_limits.validate("rate_limits")?;
    keys::set_rate_limits(
        &state.pool,
        principal.tenant()?,
        key_id,
        serde_json::to_value(body.rate_limits).unwrap_or_default(),
        &principal.actor(),
        Some(principal.client_ip),
    )
    .await?
    .map(Json)
    .ok_or(ApiError::NotFound)
}
