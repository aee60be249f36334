//! A tenant's moderation policy: `GET /v1/moderation/policy` (current), `PUT` (replace: unsent
//! fields take their defaults), `PATCH` (merge into the current one), and the history under
//! `/v1/moderation/policy/versions`. Every change is a new version; results name the version
//! they were judged by.

use axum::{
    Json, Router,
    extract::{Path, State},
    routing::get,
};
use gatehouse_common::moderation::{Policy, PolicyChange, PolicyError, PolicyLimits};
use serde_json::{Value, json};

use crate::{
    auth::Principal,
    error::ApiError,
    extract::ApiJson,
    policy,
    state::AppState,
    store::moderation_policies::{self, PolicyVersion},
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/v1/moderation/policy",
            get(current).put(replace).patch(merge),
        )
        .route("/v1/moderation/policy/versions", get(history))
        .route("/v1/moderation/policy/versions/{version}", get(version))
}

#[utoipa::path(
    get, path = "/v1/moderation/policy", tag = "moderation policy", operation_id = "getPolicy",
    responses((status = 200, description = "The policy in force", body = crate::openapi::PolicyDoc)),
)]
async fn current(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Json<PolicyVersion>, ApiError> {
    principal.require(&policy::MODERATION_POLICY_READ)?;
    let tenant = principal.tenant()?;
    Ok(Json(
        moderation_policies::current(&state.pool, tenant).await?,
    ))
}

#[utoipa::path(
    get, path = "/v1/moderation/policy/versions", tag = "moderation policy", operation_id = "policyVersions",
    responses((status = 200, description = "Every stored version, newest first", body = crate::openapi::PolicyHistory)),
)]
async fn history(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Json<Value>, ApiError> {
    principal.require(&policy::MODERATION_POLICY_READ)?;
    let tenant = principal.tenant()?;
    let versions = moderation_policies::history(&state.pool, tenant).await?;
    Ok(Json(json!({ "data": versions })))
}

#[utoipa::path(
    get, path = "/v1/moderation/policy/versions/{version}", tag = "moderation policy", operation_id = "getPolicyVersion",
    responses((status = 200, description = "That version", body = crate::openapi::PolicyDoc)),
)]
async fn version(
    State(state): State<AppState>,
    principal: Principal,
    Path(raw): Path<String>,
) -> Result<Json<PolicyVersion>, ApiError> {
    principal.require(&policy::MODERATION_POLICY_READ)?;
    let tenant = principal.tenant()?;
    let Ok(number) = raw.parse::<i32>() else {
        return Err(ApiError::NotFound);
    };
    moderation_policies::version(&state.pool, tenant, number)
        .await?
        .map(Json)
        .ok_or(ApiError::NotFound)
}

/// `PUT`: the policy becomes exactly the body, with defaults for what it leaves out.
#[utoipa::path(
    put, path = "/v1/moderation/policy", tag = "moderation policy", operation_id = "replacePolicy",
    request_body(content = Object, description = "The whole policy: `thresholds`, `blocklist`, … (docs/MODERATION.md)"),
    responses((status = 200, description = "The new version", body = crate::openapi::PolicyDoc)),
)]
async fn replace(
    State(state): State<AppState>,
    principal: Principal,
    body: Result<ApiJson<PolicyChange>, ApiError>,
) -> Result<Json<PolicyVersion>, ApiError> {
    save(state, principal, body, false).await
}

/// `PATCH`: only the fields sent change (thresholds merge per category).
#[utoipa::path(
    patch, path = "/v1/moderation/policy", tag = "moderation policy", operation_id = "updatePolicy",
    request_body(content = Object, description = "The parts of the policy to change (docs/MODERATION.md)"),
    responses((status = 200, description = "The new version", body = crate::openapi::PolicyDoc)),
)]
async fn merge(
    State(state): State<AppState>,
    principal: Principal,
    body: Result<ApiJson<PolicyChange>, ApiError>,
) -> Result<Json<PolicyVersion>, ApiError> {
    save(state, principal, body, true).await
}

async fn save(
    state: AppState,
    principal: Principal,
    body: Result<ApiJson<PolicyChange>, ApiError>,
    merge: bool,
) -> Result<Json<PolicyVersion>, ApiError> {
    principal.require(&policy::MODERATION_POLICY_MANAGE)?;
    let ApiJson(change) = body?;
    let tenant = principal.tenant()?;
    let limits = PolicyLimits {
        max_blocklist_terms: state.config.limits.max_blocklist_terms,
        max_term_chars: state.config.limits.max_blocklist_term_chars,
    };
    let saved = moderation_policies::change(
        &state.pool,
        tenant,
        &principal.actor(),
        principal.client_ip,
        |current| {
            let base = if merge {
                current.clone()
            } else {
                Policy::default()
            };
            change.apply(&base, limits)
        },
    )
    .await?;
    match saved {
        Ok(version) => {
            metrics::counter!("gatehouse_api_policy_changes_total").increment(1);
            Ok(Json(version))
        }
        Err(PolicyError { field, message }) => Err(ApiError::invalid(
            "invalid_policy",
            field.clone(),
            format!("{field}: {message}"),
        )),
    }
}
