//! Who is calling. `Principal` is an extractor: a handler that takes one is authenticated.
//!
//! Today the only credential is an API key (`Authorization: Bearer ghk_…`). The identity
//! slice adds JWTs, users, roles and scopes behind the same extractor: `Credential` grows a
//! variant, handlers keep taking a `Principal`.

use axum::{extract::FromRequestParts, http::request::Parts};
use gatehouse_common::types::{KeyId, TenantId};

use crate::{error::ApiError, state::AppState, store::keys};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential {
    ApiKey(KeyId),
}

#[derive(Debug, Clone, Copy)]
pub struct Principal {
    pub tenant_id: TenantId,
    pub credential: Credential,
}

impl Principal {
    /// The audit actor string: `key:key_…`.
    pub fn actor(&self) -> String {
        match self.credential {
            Credential::ApiKey(id) => format!("key:{id}"),
        }
    }

    pub fn key_id(&self) -> Option<KeyId> {
        match self.credential {
            Credential::ApiKey(id) => Some(id),
        }
    }
}

const MISSING: &str = "missing credentials: send `Authorization: Bearer <api key>`";
const INVALID: &str = "invalid credentials";

impl FromRequestParts<AppState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .ok_or(ApiError::Unauthorized { detail: MISSING })?;
        let value = header
            .to_str()
            .map_err(|_| ApiError::Unauthorized { detail: INVALID })?;
        let (scheme, token) = value
            .split_once(' ')
            .ok_or(ApiError::Unauthorized { detail: INVALID })?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(ApiError::Unauthorized { detail: INVALID });
        }
        match keys::verify(&state.pool, token.trim()).await? {
            Some((tenant_id, key_id)) => Ok(Principal {
                tenant_id,
                credential: Credential::ApiKey(key_id),
            }),
            None => {
                metrics::counter!("gatehouse_api_auth_failures_total").increment(1);
                Err(ApiError::Unauthorized { detail: INVALID })
            }
        }
    }
}
