//! Step-up authentication for sensitive operations (deleting a user, changing a role,
//! revoking a key, disabling a tenant, exporting the audit log, reading a webhook secret):
//! the caller must have logged in within [`REAUTH_WINDOW_SECS`] (the token's `auth_time`) or
//! re-enter the password in the [`CONFIRM_PASSWORD_HEADER`] header; otherwise
//! `401 reauthentication_required`. API keys holding the explicit [`ADMIN_SCOPE`] (and the
//! tokens exchanged from them) are exempt: a key is itself a long-lived secret with no login
//! to repeat. No key holds that scope unless an operator grants it to the tenant and an admin,
//! with a fresh login, creates such a key (`docs/AUDIT.md`).
//!
//! A wrong re-entered password counts against the login throttle like a failed login, so the
//! header cannot be used to guess passwords faster than `POST /v1/auth/login` can.

use std::fmt;

use axum::http::request::Parts;

use crate::{
    auth::{Principal, Subject},
    error::ApiError,
    identity::{password, throttle},
    state::AppState,
    store::users,
};

/// How recent a login must be for a step-up operation, in seconds.
pub const REAUTH_WINDOW_SECS: i64 = 300;
/// The header that carries the re-entered password.
pub const CONFIRM_PASSWORD_HEADER: &str = "gatehouse-confirm-password";
pub use gatehouse_common::types::ADMIN_SCOPE;

/// A re-entered password; never printed.
#[derive(Clone)]
pub struct ConfirmPassword(String);

impl fmt::Debug for ConfirmPassword {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ConfirmPassword([redacted])")
    }
}

impl ConfirmPassword {
    pub fn from_headers(parts: &Parts) -> Option<Self> {
        parts
            .headers
            .get(CONFIRM_PASSWORD_HEADER)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty() && v.len() <= 1024)
            .map(|v| Self(v.to_string()))
    }
}

/// Why a principal needs no further proof, if it does not.
pub fn exempt_or_fresh(principal: &Principal, now: i64) -> bool {
    if matches!(principal.subject, Subject::Key(_)) && principal.has_scope(ADMIN_SCOPE) {
        return true;
    }
    matches!(principal.auth_time, Some(t) if t <= now + 5 && now - t <= REAUTH_WINDOW_SECS)
}

impl Principal {
    /// `401 reauthentication_required` unless the principal logged in within the last five
    /// minutes, re-entered its password in [`CONFIRM_PASSWORD_HEADER`], or is an exempt key.
    pub async fn require_fresh_auth(
        &self,
        state: &AppState,
        operation: &'static str,
    ) -> Result<(), ApiError> {
        if exempt_or_fresh(self, state.clock.now().timestamp()) {
            return Ok(());
        }
        let (Subject::User(user), Some(given)) = (self.subject, &self.confirm_password) else {
            return Err(refused(operation));
        };
        let Some(creds) = users::credentials(&state.pool, user).await? else {
            return Err(refused(operation));
        };
        let attempt = throttle::Attempt::new(
            creds.tenant_slug.as_deref(),
            &creds.username,
            self.client_ip,
        );
        if let throttle::Reservation::Refused { retry_after, .. } =
            state.throttle.reserve(&attempt).await?
        {
            return Err(ApiError::too_many(
                "too many password attempts; try again later",
                retry_after.as_secs_f64().ceil() as u64,
            ));
        }
        let ok = password::verify(given.0.clone(), Some(creds.password_hash))
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        if !ok {
            return Err(refused(operation));
        }
        state.throttle.succeeded(&attempt).await?;
        Ok(())
    }
}

fn refused(operation: &'static str) -> ApiError {
    metrics::counter!("gatehouse_api_reauthentication_required_total", "operation" => operation)
        .increment(1);
    ApiError::ReauthenticationRequired
}
