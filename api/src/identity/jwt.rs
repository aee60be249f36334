//! JWT access tokens: issuance, verification (header checks, claims, error mapping), the JWKS
//! document and key rotation. The Ed25519 (`EdDSA`) signing keys and the cache of them every
//! replica keeps are in `identity::signing_keys`, their SQL in `store::signing_keys`.
//!
//! A rotation retires the previous keys at `now + jwt_ttl + KEY_REFRESH_INTERVAL + LEEWAY_SECS`:
//! a replica that has not yet seen the rotation may sign with the old key for up to a minute
//! more, and those tokens must live their whole lifetime too. An operator can revoke a key at
//! once by setting its `retired_at` to `now()` (every replica stops accepting it within a
//! minute).

use std::{fmt, sync::Arc, time::Duration};

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::Utc;
use gatehouse_common::{config::IdentityConfig, types::TenantId};
use jsonwebtoken::{Algorithm, Header, Validation, errors::ErrorKind};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;

pub use super::signing_keys::{ALGORITHM, KEY_REFRESH_INTERVAL};
use super::signing_keys::{KeyError, KeySet, Lookup, Refresh, SigningKeys};

/// Clock-skew allowance on `exp` and `nbf`, in seconds.
pub const LEEWAY_SECS: u64 = 5;
/// Longer tokens are rejected before any parsing.
const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// The claims of a Gatehouse access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub aud: String,
    /// `usr_…` or `key_…`.
    pub sub: String,
    /// `ten_…`; absent for platform operators.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tid: Option<String>,
    pub role: String,
    /// Space-separated scopes.
    pub scope: String,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    pub jti: String,
    /// When the user last proved who they are (OIDC's `auth_time`, Unix seconds): set by
    /// `POST /v1/auth/login`, absent on key tokens. Step-up operations need it recent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_time: Option<i64>,
}

impl Claims {
    /// The scopes, split on whitespace.
    pub fn scopes(&self) -> impl Iterator<Item = &str> {
        self.scope.split_ascii_whitespace()
    }

    /// The tenant (`verify` has already checked that `tid`, when present, parses).
    pub fn tenant_id(&self) -> Option<TenantId> {
        self.tid.as_deref().and_then(|t| t.parse().ok())
    }
}

/// An OAuth2 token response (`{"access_token", "token_type": "Bearer", "expires_in"}`).
#[derive(Clone, Serialize, utoipa::ToSchema)]
pub struct IssuedToken {
    pub access_token: String,
    pub token_type: &'static str,
    pub expires_in: u64,
}

impl fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedToken")
            .field("access_token", &"[redacted]")
            .field("token_type", &self.token_type)
            .field("expires_in", &self.expires_in)
            .finish()
    }
}

/// Why a token was refused (or could not be issued). Messages never contain the token.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("malformed token")]
    Malformed,
    #[error("unknown signing key")]
    UnknownKey,
    #[error("invalid token signature")]
    BadSignature,
    #[error("token expired")]
    Expired,
    #[error("token not yet valid")]
    NotYetValid,
    #[error("wrong token issuer")]
    WrongIssuer,
    #[error("wrong token audience")]
    WrongAudience,
    #[error("token algorithm not allowed")]
    Algorithm,
    #[error("signing key store unavailable")]
    Database(#[from] sqlx::Error),
    #[error("token service error: {0}")]
    Internal(String),
}

impl TokenError {
    /// True when the token itself is at fault (a 401), false for server-side failures.
    pub fn is_rejection(&self) -> bool {
        !matches!(self, Self::Database(_) | Self::Internal(_))
    }
}

impl From<KeyError> for TokenError {
    fn from(error: KeyError) -> Self {
        match error {
            KeyError::Database(e) => Self::Database(e),
            other @ (KeyError::Timeout | KeyError::Encode(_)) => Self::Internal(other.to_string()),
        }
    }
}

/// Issues and verifies access tokens. Cheap to clone (one shared key cache); `Send + Sync`.
#[derive(Clone)]
pub struct TokenService {
    inner: Arc<Inner>,
}

struct Inner {
    keys: SigningKeys,
    issuer: String,
    audience: String,
    ttl: Duration,
    validation: Validation,
}

impl fmt::Debug for TokenService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keys = self.snapshot();
        f.debug_struct("TokenService")
            .field("issuer", &self.inner.issuer)
            .field("audience", &self.inner.audience)
            .field("ttl", &self.inner.ttl)
            .field("signing_kid", &keys.signer.as_ref().map(|s| &s.kid))
            .field(
                "verifying_kids",
                &keys.verify.iter().map(|k| &k.kid).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl TokenService {
    /// Loads the keys, creating the first Ed25519 key if no key is active (serialised across
    /// replicas with an advisory lock, so concurrent start-ups create exactly one).
    pub async fn new(pool: PgPool, cfg: &IdentityConfig) -> Result<Self, TokenError> {
        let keys = SigningKeys::open(pool).await?;
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.leeway = LEEWAY_SECS;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.validate_aud = true;
        validation.set_issuer(&[&cfg.jwt_issuer]);
        validation.set_audience(&[&cfg.jwt_audience]);
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        Ok(Self {
            inner: Arc::new(Inner {
                keys,
                issuer: cfg.jwt_issuer.clone(),
                audience: cfg.jwt_audience.clone(),
                ttl: cfg.jwt_ttl,
                validation,
            }),
        })
    }

    /// Signs a token with the newest active key: header `{"alg":"EdDSA","kid"}`, `jti` a UUIDv7,
    /// `iat = nbf = now`, `exp = now + jwt_ttl`.
    pub async fn issue(
        &self,
        subject: &str,
        tenant: Option<TenantId>,
        role: &str,
        scopes: &[String],
    ) -> Result<IssuedToken, TokenError> {
        self.issue_authenticated(subject, tenant, role, scopes, None)
            .await
    }

    /// [`TokenService::issue`] with an `auth_time` claim (a login: the user just proved who
    /// they are).
    pub async fn issue_authenticated(
        &self,
        subject: &str,
        tenant: Option<TenantId>,
        role: &str,
        scopes: &[String],
        auth_time: Option<i64>,
    ) -> Result<IssuedToken, TokenError> {
        if subject.is_empty() || role.is_empty() {
            return Err(TokenError::Internal(
                "a token needs a subject and a role".into(),
            ));
        }
        if scopes
            .iter()
            .any(|s| s.is_empty() || s.chars().any(char::is_whitespace))
        {
            return Err(TokenError::Internal(
                "a scope is empty or contains whitespace".into(),
            ));
        }
        if let Err(error) = self.refresh(Refresh::IfStale { wait: true }).await {
            tracing::warn!(%error, "cannot reload the JWT signing keys; signing with the cached key");
        }
        let mut keys = self.snapshot();
        if keys.signer.is_none() {
            // Every key was retired behind our back (or the active one is unusable).
            if let Some(kid) = self.inner.keys.ensure_signing_key().await? {
                tracing::info!(%kid, "created a JWT signing key (none was active)");
            }
            self.refresh(Refresh::Force).await?;
            keys = self.snapshot();
        }
        let signer = keys
            .signer
            .as_ref()
            .ok_or_else(|| TokenError::Internal("no usable signing key".into()))?;

        let ttl = self.inner.ttl.as_secs();
        let ttl_i64 = i64::try_from(ttl)
            .map_err(|_| TokenError::Internal("token lifetime out of range".into()))?;
        let now = Utc::now().timestamp();
        let claims = Claims {
            iss: self.inner.issuer.clone(),
            aud: self.inner.audience.clone(),
            sub: subject.to_owned(),
            tid: tenant.map(|t| t.to_string()),
            role: role.to_owned(),
            scope: scopes.join(" "),
            iat: now,
            nbf: now,
            exp: now + ttl_i64,
            jti: uuid::Uuid::now_v7().to_string(),
            auth_time,
        };
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(signer.kid.clone());
        let access_token = jsonwebtoken::encode(&header, &claims, &signer.encoding)
            .map_err(|e| TokenError::Internal(format!("cannot sign the token: {:?}", e.kind())))?;
        Ok(IssuedToken {
            access_token,
            token_type: "Bearer",
            expires_in: ttl,
        })
    }

    /// Verifies a token: `alg` must be `EdDSA`, `kid` a key that is not retired, the signature
    /// valid, `exp`/`nbf` respected (with [`LEEWAY_SECS`]), `iss`/`aud` the configured ones and
    /// every claim present.
    pub async fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        let kid = check_header(token)?;
        if let Err(error) = self.refresh(Refresh::IfStale { wait: false }).await {
            tracing::warn!(%error, "cannot reload the JWT signing keys; using the cached keys");
        }
        let key = match self.snapshot().lookup(&kid, Utc::now()) {
            Lookup::Usable(key) => key,
            Lookup::Retired => return Err(TokenError::UnknownKey),
            Lookup::Missing => {
                // Perhaps another replica rotated: look once more (at most once a second).
                if let Err(error) = self.refresh(Refresh::UnknownKid).await {
                    tracing::warn!(%error, "cannot reload the JWT signing keys");
                }
                match self.snapshot().lookup(&kid, Utc::now()) {
                    Lookup::Usable(key) => key,
                    Lookup::Retired | Lookup::Missing => return Err(TokenError::UnknownKey),
                }
            }
        };
        let data = jsonwebtoken::decode::<Claims>(token, &key, &self.inner.validation)
            .map_err(map_jwt_error)?;
        let claims = data.claims;
        if let Some(tid) = &claims.tid {
            tid.parse::<TenantId>().map_err(|_| TokenError::Malformed)?;
        }
        Ok(claims)
    }

    /// `{"keys": [{"kty":"OKP","crv":"Ed25519","x","kid","alg":"EdDSA","use":"sig"}, …]}` for
    /// every key that still verifies, newest first.
    pub async fn jwks(&self) -> serde_json::Value {
        if let Err(error) = self.refresh(Refresh::IfStale { wait: false }).await {
            tracing::warn!(%error, "cannot reload the JWT signing keys; serving the cached keys");
        }
        let now = Utc::now();
        let keys: Vec<serde_json::Value> = self
            .snapshot()
            .verify
            .iter()
            .filter(|k| k.usable_at(now))
            .map(|k| {
                serde_json::json!({
                    "kty": "OKP",
                    "crv": "Ed25519",
                    "x": URL_SAFE_NO_PAD.encode(k.public),
                    "kid": k.kid,
                    "alg": ALGORITHM,
                    "use": "sig",
                })
            })
            .collect();
        serde_json::json!({ "keys": keys })
    }

    /// Creates a key that becomes the signing key at once; the previous keys keep verifying
    /// until `now + jwt_ttl + KEY_REFRESH_INTERVAL + LEEWAY_SECS` (or an earlier `retired_at`
    /// they already had). Returns the new kid.
    pub async fn rotate(&self) -> Result<String, TokenError> {
        let grace = self.retirement_grace();
        let (kid, retired) = self.inner.keys.rotate(grace).await?;
        tracing::info!(
            %kid,
            retired_keys = retired,
            grace_secs = grace.as_secs(),
            "rotated the JWT signing key"
        );
        if let Err(error) = self.refresh(Refresh::Force).await {
            tracing::warn!(%error, "rotated the JWT signing key but cannot reload the keys yet");
        }
        Ok(kid)
    }

    pub(crate) fn retirement_grace(&self) -> Duration {
        self.inner.ttl + KEY_REFRESH_INTERVAL + Duration::from_secs(LEEWAY_SECS)
    }

    fn snapshot(&self) -> Arc<KeySet> {
        self.inner.keys.snapshot()
    }

    async fn refresh(&self, why: Refresh) -> Result<(), TokenError> {
        Ok(self.inner.keys.refresh(why).await?)
    }

    /// The key cache, for the signing-key tests.
    #[cfg(test)]
    pub(crate) fn signing_keys(&self) -> &SigningKeys {
        &self.inner.keys
    }
}

/// Checks the shape and the JOSE header before any key is looked up; returns the kid.
fn check_header(token: &str) -> Result<String, TokenError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(TokenError::Malformed);
    }
    let mut parts = token.split('.');
    let (Some(header), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed);
    };
    let raw = URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| TokenError::Malformed)?;
    let header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&raw).map_err(|_| TokenError::Malformed)?;
    match header.get("alg") {
        Some(serde_json::Value::String(alg)) if alg == ALGORITHM => {}
        _ => return Err(TokenError::Algorithm),
    }
    if header.contains_key("crit") {
        // No header extension is understood, so none may be critical (RFC 7515 §4.1.11).
        return Err(TokenError::Malformed);
    }
    match header.get("kid") {
        Some(serde_json::Value::String(kid)) if !kid.is_empty() => Ok(kid.clone()),
        _ => Err(TokenError::UnknownKey),
    }
}

fn map_jwt_error(error: jsonwebtoken::errors::Error) -> TokenError {
    match error.kind() {
        ErrorKind::InvalidSignature => TokenError::BadSignature,
        ErrorKind::ExpiredSignature => TokenError::Expired,
        ErrorKind::ImmatureSignature => TokenError::NotYetValid,
        ErrorKind::InvalidIssuer => TokenError::WrongIssuer,
        ErrorKind::InvalidAudience => TokenError::WrongAudience,
        ErrorKind::InvalidAlgorithm
        | ErrorKind::MissingAlgorithm
        | ErrorKind::InvalidAlgorithmName
        | ErrorKind::UnsupportedAlgorithm => TokenError::Algorithm,
        ErrorKind::InvalidToken
        | ErrorKind::Base64(_)
        | ErrorKind::Json(_)
        | ErrorKind::Utf8(_)
        | ErrorKind::MissingRequiredClaim(_)
        | ErrorKind::InvalidClaimFormat(_)
        | ErrorKind::InvalidSubject => TokenError::Malformed,
        other => TokenError::Internal(format!("cannot verify the token: {other:?}")),
    }
}

#[cfg(test)]
mod tests {
    //! Verification against real keys is tested in `signing_keys::tests` (the key cache) and in
    //! the integration tests (`api/tests/it/jwt_tokens.rs`, `api/tests/it/jwt.rs`).

    use super::*;

    #[test]
    fn error_messages_are_short_and_never_echo_the_token() {
        let cases = [
            (TokenError::Malformed, "malformed token"),
            (TokenError::UnknownKey, "unknown signing key"),
            (TokenError::BadSignature, "invalid token signature"),
            (TokenError::Expired, "token expired"),
            (TokenError::NotYetValid, "token not yet valid"),
            (TokenError::WrongIssuer, "wrong token issuer"),
            (TokenError::WrongAudience, "wrong token audience"),
            (TokenError::Algorithm, "token algorithm not allowed"),
        ];
        for (err, text) in cases {
            assert_eq!(err.to_string(), text);
            assert!(err.is_rejection());
        }
        assert!(!TokenError::Database(sqlx::Error::PoolTimedOut).is_rejection());
        assert!(!TokenError::Internal("x".into()).is_rejection());
    }

    #[test]
    fn key_store_errors_map_onto_server_side_token_errors() {
        let timeout = TokenError::from(KeyError::Timeout);
        assert_eq!(
            timeout.to_string(),
            "token service error: loading the signing keys timed out"
        );
        assert!(!timeout.is_rejection());
        assert!(matches!(
            TokenError::from(KeyError::Database(sqlx::Error::PoolTimedOut)),
            TokenError::Database(_)
        ));
        let encode = TokenError::from(KeyError::Encode("bad".into()));
        assert_eq!(
            encode.to_string(),
            "token service error: cannot encode the signing key: bad"
        );
    }
}
