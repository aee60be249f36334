//! `POST /v1/auth/token`, `POST /v1/auth/login`, `GET /.well-known/jwks.json`, `GET /v1/me`.

use axum::{
    Json, Router,
    extract::State,
    routing::{get, post},
};
use gatehouse_common::{
    db::{self, Scope},
    types::Role,
};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{
    auth::{Principal, Subject, Via},
    error::ApiError,
    extract::{ApiJson, Line},
    identity::{jwt::IssuedToken, password, throttle},
    network::ClientIp,
    policy,
    state::AppState,
    store::{audit, tenants, users},
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/auth/token", post(token))
        .route("/v1/auth/login", post(login))
        .route("/.well-known/jwks.json", get(jwks))
        .route("/v1/me", get(me))
}

/// An API key (the bearer itself, not a token) for a short-lived JWT with the key's scopes.
#[utoipa::path(
    post, path = "/v1/auth/token", tag = "auth", operation_id = "exchangeToken",
    responses((status = 200, description = "A short-lived JWT with the key's scopes (OAuth2 token response)", body = IssuedToken)),
)]
async fn token(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Json<IssuedToken>, ApiError> {
    principal.require(&policy::TOKEN_EXCHANGE)?;
    let issued = state
        .tokens
        .issue(
            &principal.actor(),
            principal.tenant_id,
            Role::Service.as_str(),
            &principal.scopes,
        )
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(Json(issued))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct Login {
    /// The tenant's slug; omitted (or empty) for platform operators.
    #[serde(default)]
    tenant: Option<String>,
    username: Line<100>,
    password: String,
}

const BAD_LOGIN: &str = "invalid tenant, username or password";
/// Longest password accepted (argon2 input; the policy asks for at least 12 characters).
const MAX_PASSWORD_BYTES: usize = 1024;

fn throttled(retry_after: std::time::Duration) -> ApiError {
    ApiError::too_many(
        "too many login attempts; try again later",
        retry_after.as_secs_f64().ceil() as u64,
    )
}

/// Username and password for a JWT. Every attempt is reserved with the throttle before the
/// password is verified (see `identity/throttle.rs`); failures never say whether the tenant
/// or the user exists. A malformed body counts against the client's address too.
#[utoipa::path(
    post, path = "/v1/auth/login", tag = "auth", operation_id = "login",
    request_body = Login,
    responses(
        (status = 200, description = "A JWT for the user", body = IssuedToken),
        (status = 401, description = "Unknown tenant or user, or a wrong password (never which)", content_type = "application/problem+json", body = crate::openapi::Problem),
    ),
)]
async fn login(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    body: Result<ApiJson<Login>, ApiError>,
) -> Result<Json<IssuedToken>, ApiError> {
    let body = match body.and_then(|ApiJson(body)| check_login_shape(body)) {
        Ok(body) => body,
        Err(error) => {
            let attempt = throttle::Attempt::address_only(ip);
            if let throttle::Reservation::Refused { retry_after, .. } =
                state.throttle.reserve(&attempt).await?
            {
                return Err(throttled(retry_after));
            }
            return Err(error);
        }
    };
    let slug = body.tenant.as_deref();
    let username = body.username.as_str();
    let attempt = throttle::Attempt::new(slug, username, ip);
    if let throttle::Reservation::Refused { retry_after, .. } =
        state.throttle.reserve(&attempt).await?
    {
        record_login(&state, None, username, ip, "throttled").await?;
        return Err(throttled(retry_after));
    }
    let candidate = users::find_for_login(&state.pool, slug, username).await?;
    let hash = candidate.as_ref().map(|c| c.password_hash.clone());
    let matches = password::verify(body.password, hash)
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let user = match candidate {
        Some(c) if matches && c.usable => c.user,
        other => {
            // The reservation already counted this failure.
            record_login(
                &state,
                other.and_then(|c| c.user.tenant_id),
                username,
                ip,
                "failure",
            )
            .await?;
            metrics::counter!("gatehouse_api_login_failures_total").increment(1);
            return Err(ApiError::Unauthorized {
                detail: BAD_LOGIN,
                invalid_token: false,
            });
        }
    };
    state.throttle.succeeded(&attempt).await?;
    record_login(&state, user.tenant_id, username, ip, "success").await?;
    let scopes = match (user.role, user.tenant_id) {
        (Role::Admin | Role::Reviewer, Some(tenant)) => tenants::get(&state.pool, tenant)
            .await?
            .map(|t| t.scopes)
            .unwrap_or_default(),
        _ => Vec::new(),
    };
    let issued = state
        .tokens
        .issue_authenticated(
            &user.id.to_string(),
            user.tenant_id,
            user.role.as_str(),
            &scopes,
            Some(state.clock.now().timestamp()),
        )
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(Json(issued))
}

/// The tenant slug (empty = none) and the password length, beyond what the types check.
fn check_login_shape(mut body: Login) -> Result<Login, ApiError> {
    body.tenant = body.tenant.filter(|t| !t.trim().is_empty());
    if let Some(tenant) = &body.tenant {
        gatehouse_common::text::check(tenant, gatehouse_common::text::Rule::line(63))
            .map_err(|e| ApiError::invalid(e.code(), "tenant", format!("tenant {e}")))?;
    }
    if body.password.len() > MAX_PASSWORD_BYTES || body.password.contains('\0') {
        return Err(ApiError::invalid(
            "invalid_credentials_shape",
            "password",
            "password must be at most 1024 bytes without NUL",
        ));
    }
    Ok(body)
}

async fn record_login(
    state: &AppState,
    tenant: Option<gatehouse_common::types::TenantId>,
    username: &str,
    ip: std::net::IpAddr,
    outcome: &'static str,
) -> Result<(), ApiError> {
    let scope = tenant.map_or(Scope::Platform, Scope::Tenant);
    let mut tx = db::begin(&state.pool, scope).await?;
    let action = if outcome == "success" {
        gatehouse_common::audit::Action::LoginSucceeded
    } else {
        gatehouse_common::audit::Action::LoginFailed
    };
    audit::record_outcome(
        &mut tx,
        audit::Event {
            tenant,
            actor: &format!("login:{}", username.chars().take(100).collect::<String>()),
            action,
            client_ip: Some(ip),
            details: json!({}),
        },
        outcome,
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

#[utoipa::path(
    get, path = "/.well-known/jwks.json", tag = "auth", operation_id = "jwks",
    responses((status = 200, description = "The public keys that verify tokens", body = crate::openapi::Jwks)),
)]
async fn jwks(State(state): State<AppState>) -> Json<Value> {
    Json(state.tokens.jwks().await)
}

/// Who am I: subject, tenant, role, scopes.
#[utoipa::path(
    get, path = "/v1/me", tag = "auth", operation_id = "me",
    responses((status = 200, description = "The caller: subject, tenant, role, scopes", body = crate::openapi::Me)),
)]
async fn me(State(state): State<AppState>, principal: Principal) -> Result<Json<Value>, ApiError> {
    principal.require(&policy::ME)?;
    let tenant = match principal.tenant_id {
        Some(id) => tenants::get(&state.pool, id)
            .await?
            .map(|t| json!({ "id": t.tenant_id, "slug": t.slug, "name": t.name })),
        None => None,
    };
    let username = match principal.subject {
        Subject::User(id) => users::username(&state.pool, principal.tenant_id, id).await?,
        Subject::Key(_) => None,
    };
    Ok(Json(json!({
        "subject": principal.actor(),
        "kind": if matches!(principal.subject, Subject::Key(_)) { "api_key" } else { "user" },
        "username": username,
        "tenant": tenant,
        "role": principal.role,
        "scopes": principal.scopes,
        "via": if principal.via == Via::ApiKey { "api_key" } else { "token" },
    })))
}
