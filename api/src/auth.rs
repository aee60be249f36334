//! Who is calling. `Principal` is an extractor: a handler that takes one is authenticated.
//!
//! The bearer is either an API key (`ghk_…`) or a JWT issued by `/v1/auth/token` or
//! `/v1/auth/login`. A JWT's signature and claims are checked statelessly, then its subject
//! (key or user) is looked up: a revoked or expired key, a disabled or deleted user, or a
//! disabled tenant stops every token derived from it on the very next request, on every api
//! replica — no per-process cache to wait out. The user's *current* role applies, not the one
//! in the token. Finally the tenant's IP allowlist is enforced.

use std::{net::IpAddr, sync::Arc};

use axum::{extract::FromRequestParts, http::request::Parts};
use gatehouse_common::{
    audit::{ActorKind, context},
    types::{ADMIN_SCOPE, KeyId, Role, TenantId, UserId},
};
use ipnet::IpNet;

use crate::{
    error::ApiError,
    identity::jwt::Claims,
    network::{self, ClientIp},
    ratelimit,
    state::AppState,
    store::{keys, users},
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subject {
    Key(KeyId),
    User(UserId),
}

impl std::fmt::Display for Subject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Subject::Key(id) => id.fmt(f),
            Subject::User(id) => id.fmt(f),
        }
    }
}

/// How the principal proved itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    ApiKey,
    Token,
}

#[derive(Debug, Clone)]
pub struct Principal {
    pub subject: Subject,
    /// `None` for platform operators.
    pub tenant_id: Option<TenantId>,
    pub role: Role,
    /// Job kinds this principal may submit.
    pub scopes: Vec<String>,
    pub via: Via,
    pub client_ip: IpAddr,
    /// The rate limits in force for this principal (tenant, and key for API keys).
    pub limits: Arc<ratelimit::Limits>,
    /// Where this request's rate-limit standings go (its response headers).
    pub slot: Option<ratelimit::Slot>,
    /// The token's `auth_time` (login tokens only): see `identity::stepup`.
    pub auth_time: Option<i64>,
    /// The password re-entered in the `Gatehouse-Confirm-Password` header, if sent.
    pub confirm_password: Option<crate::identity::stepup::ConfirmPassword>,
}

impl Principal {
    /// The audit actor: `key_…` or `usr_…`.
    pub fn actor(&self) -> String {
        self.subject.to_string()
    }

    /// The tenant of a tenant-bound principal (operators have none: 403 on tenant routes).
    pub fn tenant(&self) -> Result<TenantId, ApiError> {
        self.tenant_id.ok_or(ApiError::Forbidden {
            detail: "this route belongs to a tenant; platform operators have none".into(),
        })
    }

    pub fn key_id(&self) -> Option<KeyId> {
        match self.subject {
            Subject::Key(id) => Some(id),
            Subject::User(_) => None,
        }
    }

    /// Counts `n` submitted items against the items-per-minute limits (429 past one).
    pub async fn consume_items(&self, state: &AppState, n: usize) -> Result<(), ApiError> {
        state
            .rate_limiter
            .check(self.slot.as_ref(), &self.limits.items, n as i64)
            .await
    }

    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }

    /// Who this principal is, by kind, for the audit trail.
    pub fn actor_kind(&self) -> ActorKind {
        match (self.subject, self.role) {
            (Subject::Key(_), _) => ActorKind::ApiKey,
            (Subject::User(_), Role::Superadmin) => ActorKind::Operator,
            (Subject::User(_), _) => ActorKind::User,
        }
    }
}

const MISSING: &str = "missing credentials: send `Authorization: Bearer <api key or token>`";
const INVALID: &str = "invalid, expired or revoked credentials";

fn invalid() -> ApiError {
    metrics::counter!("gatehouse_api_auth_failures_total").increment(1);
    ApiError::Unauthorized {
        detail: INVALID,
        invalid_token: true,
    }
}

/// The bearer token of a request, if it has a well-formed `Authorization: Bearer …`.
pub fn bearer(parts: &Parts) -> Result<&str, ApiError> {
    let header =
        parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .ok_or(ApiError::Unauthorized {
                detail: MISSING,
                invalid_token: false,
            })?;
    let value = header.to_str().map_err(|_| invalid())?;
    let (scheme, token) = value.split_once(' ').ok_or_else(invalid)?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(invalid());
    }
    Ok(token.trim())
}

impl FromRequestParts<AppState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let ClientIp(client_ip) = ClientIp::from_request_parts(parts, state)
            .await
            .map_err(|_| ApiError::Internal("client address unavailable".into()))?;
        let token = bearer(parts)?;
        let (mut principal, allowlist) = if token.starts_with(keys::KEY_PREFIX) {
            let key = keys::verify(&state.pool, token)
                .await?
                .ok_or_else(invalid)?;
            from_key(state, key, Via::ApiKey, None, client_ip)
        } else {
            let claims = state.tokens.verify(token).await.map_err(|error| {
                tracing::debug!(%error, "token rejected");
                invalid()
            })?;
            let (mut principal, allowlist) = from_claims(state, &claims, client_ip).await?;
            principal.auth_time = claims.auth_time;
            (principal, allowlist)
        };
        principal.confirm_password = crate::identity::stepup::ConfirmPassword::from_headers(parts);
        context::update(|c| {
            c.actor = Some(principal.actor());
            c.actor_kind = Some(principal.actor_kind());
            c.tenant = principal.tenant_id;
        });
        if !network::allowed(client_ip, &allowlist) {
            metrics::counter!("gatehouse_api_ip_denied_total").increment(1);
            return Err(ApiError::Forbidden {
                detail: format!("requests from {client_ip} are not allowed for this tenant"),
            });
        }
        // Every authenticated request counts against the requests-per-minute limits.
        principal.slot = parts.extensions.get::<ratelimit::Slot>().cloned();
        state
            .rate_limiter
            .check(principal.slot.as_ref(), &principal.limits.requests, 1)
            .await?;
        Ok(principal)
    }
}

fn from_key(
    state: &AppState,
    key: keys::LiveKey,
    via: Via,
    token_scopes: Option<&str>,
    client_ip: IpAddr,
) -> (Principal, Vec<IpNet>) {
    let scopes = match token_scopes {
        // A token carries at most the scopes it was issued with, and never more than the key
        // and its tenant grant now.
        Some(granted) => {
            let granted: Vec<&str> = granted.split_whitespace().collect();
            key.scopes
                .into_iter()
                .filter(|s| granted.contains(&s.as_str()))
                .collect()
        }
        None => key.scopes,
    };
    let limits = ratelimit::Limits::of(
        &state.rate_limiter.config,
        &key.tenant_id.to_string(),
        ratelimit::RateSettings::from_json(&key.tenant_rate_limits),
        Some((
            &key.key_id.to_string(),
            ratelimit::RateSettings::from_json(&key.rate_limits),
        )),
    );
    (
        Principal {
            subject: Subject::Key(key.key_id),
            tenant_id: Some(key.tenant_id),
            // A key holding the `admin` scope (granted to its tenant by an operator) acts as
            // an admin of its tenant; every other key is a service.
            role: if scopes.iter().any(|s| s == ADMIN_SCOPE) {
                Role::Admin
            } else {
                Role::Service
            },
            scopes,
            via,
            client_ip,
            limits: Arc::new(limits),
            slot: None,
            auth_time: None,
            confirm_password: None,
        },
        key.ip_allowlist,
    )
}

async fn from_claims(
    state: &AppState,
    claims: &Claims,
    client_ip: IpAddr,
) -> Result<(Principal, Vec<IpNet>), ApiError> {
    if let Ok(key_id) = claims.sub.parse::<KeyId>() {
        let key = keys::live(&state.pool, key_id).await?.ok_or_else(invalid)?;
        if claims.tid.as_deref() != Some(key.tenant_id.to_string().as_str()) {
            return Err(invalid());
        }
        return Ok(from_key(
            state,
            key,
            Via::Token,
            Some(&claims.scope),
            client_ip,
        ));
    }
    let user_id: UserId = claims.sub.parse().map_err(|_| invalid())?;
    let user = users::live(&state.pool, user_id)
        .await?
        .ok_or_else(invalid)?;
    if claims.tid != user.tenant_id.map(|t| t.to_string()) {
        return Err(invalid());
    }
    let scopes = match user.role {
        Role::Admin | Role::Reviewer => user.tenant_scopes,
        _ => Vec::new(),
    };
    let limits = match user.tenant_id {
        Some(tenant) => ratelimit::Limits::of(
            &state.rate_limiter.config,
            &tenant.to_string(),
            ratelimit::RateSettings::from_json(&user.tenant_rate_limits),
            None,
        ),
        None => ratelimit::Limits::default(),
    };
    Ok((
        Principal {
            subject: Subject::User(user.user_id),
            tenant_id: user.tenant_id,
            role: user.role,
            scopes,
            via: Via::Token,
            client_ip,
            limits: Arc::new(limits),
            slot: None,
            auth_time: None,
            confirm_password: None,
        },
        user.ip_allowlist,
    ))
}
