//! JWT access tokens: Ed25519 (`EdDSA`) signing keys kept in Postgres, issuance, verification,
//! the JWKS document and key rotation.
//!
//! Keys (`signing_keys`): `private_key_der` is the PKCS#8 v2 DER document of the Ed25519 key
//! (RFC 8410, what `ed25519_dalek::SigningKey::to_pkcs8_der` writes and what jsonwebtoken's
//! rust_crypto backend parses with `SigningKey::from_pkcs8_der` behind
//! `EncodingKey::from_ed_der`); `public_key` is the raw 32-byte public key, which is what
//! `DecodingKey::from_ed_der` wants with that backend (it reads the first 32 bytes as the point,
//! so an SPKI document would be wrong) and what the JWK `x` carries. The kid is
//! `k_` + the first 16 hex digits of SHA-256(public key).
//!
//! Every replica caches the key set. The newest key with no `retired_at` signs; every key whose
//! `retired_at` is null or in the future verifies. The cache is reloaded when it is older than
//! [`KEY_REFRESH_INTERVAL`] (so another replica's rotation is used for signing within a minute)
//! and, at most once a second, when a token names an unknown kid. A rotation retires the previous
//! keys at `now + jwt_ttl + KEY_REFRESH_INTERVAL + LEEWAY_SECS`: a replica that has not yet seen
//! the rotation may sign with the old key for up to a minute more, and those tokens must live
//! their whole lifetime too. An operator can revoke a key at once by setting its `retired_at` to
//! `now()` (every replica stops accepting it within a minute).

use std::{
    fmt,
    sync::{Arc, PoisonError, RwLock},
    time::{Duration, Instant},
};

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, Utc};
use ed25519_dalek::{
    SigningKey, VerifyingKey,
    pkcs8::{DecodePrivateKey as _, EncodePrivateKey as _},
};
use gatehouse_common::{config::IdentityConfig, types::TenantId};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, errors::ErrorKind};
use rand::RngCore as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use sqlx::PgPool;

/// The only accepted (and issued) JWS algorithm.
pub const ALGORITHM: &str = "EdDSA";
/// Clock-skew allowance on `exp` and `nbf`, in seconds.
pub const LEEWAY_SECS: u64 = 5;
/// A cached key set older than this is reloaded before it is used.
pub const KEY_REFRESH_INTERVAL: Duration = Duration::from_secs(60);
/// Reloads caused by an unknown kid (or retried after a failure) happen at most this often.
const RELOAD_MIN_GAP: Duration = Duration::from_secs(1);
/// A reload on the verification path gives up after this long and keeps the cached keys.
const VERIFY_PATH_LOAD_TIMEOUT: Duration = Duration::from_secs(2);
/// Longer tokens are rejected before any parsing.
const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// `pg_advisory_xact_lock` key serialising key creation and rotation across replicas.
const KEY_LOCK: i64 = 0x6768_6a77_746b_6579; // "ghjwtkey"

const LOAD_SQL: &str = "SELECT kid, algorithm, \
     CASE WHEN retired_at IS NULL THEN private_key_der END AS private_key_der, \
     public_key, created_at, retired_at \
     FROM signing_keys WHERE retired_at IS NULL OR retired_at > now() \
     ORDER BY created_at DESC, kid DESC";

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
#[derive(Clone, Serialize)]
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

/// Issues and verifies access tokens. Cheap to clone (one shared key cache); `Send + Sync`.
#[derive(Clone)]
pub struct TokenService {
    inner: Arc<Inner>,
}

struct Inner {
    source: KeySource,
    issuer: String,
    audience: String,
    ttl: Duration,
    validation: Validation,
    keys: RwLock<Arc<KeySet>>,
    /// Serialises reloads; holds the time of the last reload attempt.
    reload: tokio::sync::Mutex<Option<Instant>>,
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

#[derive(Clone, Copy, Debug)]
enum Refresh {
    /// Reload if the cache is older than `KEY_REFRESH_INTERVAL`; `wait`: queue behind a reload
    /// in progress instead of going on with the cached keys.
    IfStale { wait: bool },
    /// A token named a kid we do not know: reload unless a reload happened under a second ago.
    UnknownKid,
    /// Reload now (after this replica changed the keys).
    Force,
}

enum Lookup {
    Usable(DecodingKey),
    Retired,
    Missing,
}

impl TokenService {
    /// Loads the keys, creating the first Ed25519 key if no key is active (serialised across
    /// replicas with an advisory lock, so concurrent start-ups create exactly one).
    pub async fn new(pool: PgPool, cfg: &IdentityConfig) -> Result<Self, TokenError> {
        Self::with_source(KeySource::Db(pool), cfg).await
    }

    async fn with_source(source: KeySource, cfg: &IdentityConfig) -> Result<Self, TokenError> {
        if let Some(kid) = source.ensure_signing_key().await? {
            tracing::info!(%kid, "created the first JWT signing key");
        }
        let keys = KeySet::from_rows(source.load().await?, Utc::now());
        if keys.signer.is_none() {
            tracing::error!("no usable JWT signing key: tokens cannot be issued until a rotation");
        }
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
                source,
                issuer: cfg.jwt_issuer.clone(),
                audience: cfg.jwt_audience.clone(),
                ttl: cfg.jwt_ttl,
                validation,
                keys: RwLock::new(Arc::new(keys)),
                reload: tokio::sync::Mutex::new(None),
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
            if let Some(kid) = self.inner.source.ensure_signing_key().await? {
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
        let (kid, retired) = self.inner.source.rotate(grace).await?;
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

    fn retirement_grace(&self) -> Duration {
        self.inner.ttl + KEY_REFRESH_INTERVAL + Duration::from_secs(LEEWAY_SECS)
    }

    fn snapshot(&self) -> Arc<KeySet> {
        Arc::clone(
            &self
                .inner
                .keys
                .read()
                .unwrap_or_else(PoisonError::into_inner),
        )
    }

    fn install(&self, keys: KeySet) {
        *self
            .inner
            .keys
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Arc::new(keys);
    }

    async fn refresh(&self, why: Refresh) -> Result<(), TokenError> {
        let inner = &self.inner;
        let stale = || self.snapshot().loaded_at.elapsed() >= KEY_REFRESH_INTERVAL;
        let mut last = match why {
            Refresh::IfStale { wait } => {
                if !stale() {
                    return Ok(());
                }
                if wait {
                    inner.reload.lock().await
                } else {
                    match inner.reload.try_lock() {
                        Ok(guard) => guard,
                        Err(_) => return Ok(()), // someone else is reloading
                    }
                }
            }
            Refresh::UnknownKid | Refresh::Force => inner.reload.lock().await,
        };
        let recent = last.is_some_and(|at| at.elapsed() < RELOAD_MIN_GAP);
        let due = match why {
            Refresh::IfStale { .. } => stale() && !recent,
            Refresh::UnknownKid => !recent,
            Refresh::Force => true,
        };
        if !due {
            return Ok(());
        }
        *last = Some(Instant::now());
        let rows = match why {
            Refresh::IfStale { wait: false } | Refresh::UnknownKid => {
                tokio::time::timeout(VERIFY_PATH_LOAD_TIMEOUT, inner.source.load())
                    .await
                    .map_err(|_| {
                        TokenError::Internal("loading the signing keys timed out".into())
                    })??
            }
            Refresh::IfStale { wait: true } | Refresh::Force => inner.source.load().await?,
        };
        self.install(KeySet::from_rows(rows, Utc::now()));
        Ok(())
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

/// `k_` + the first 16 hex digits of SHA-256(raw public key).
fn kid_for(public_key: &[u8]) -> String {
    let digest = Sha256::digest(public_key);
    format!("k_{}", hex::encode(&digest[..8]))
}

/// A freshly generated key, ready to insert.
struct NewKey {
    kid: String,
    private_key_der: Vec<u8>,
    public_key: [u8; 32],
}

fn generate_key() -> Result<NewKey, TokenError> {
    let mut seed = [0u8; 32];
    rand::rng().fill_bytes(&mut seed);
    let signing = SigningKey::from_bytes(&seed);
    seed.fill(0);
    let der = signing
        .to_pkcs8_der()
        .map_err(|e| TokenError::Internal(format!("cannot encode the signing key: {e}")))?;
    let public_key = signing.verifying_key().to_bytes();
    Ok(NewKey {
        kid: kid_for(&public_key),
        private_key_der: der.as_bytes().to_vec(),
        public_key,
    })
}

/// One row of `signing_keys` as loaded (the private key only for keys that are not retiring).
#[derive(Clone, sqlx::FromRow)]
struct KeyRow {
    kid: String,
    algorithm: String,
    private_key_der: Option<Vec<u8>>,
    public_key: Vec<u8>,
    created_at: DateTime<Utc>,
    retired_at: Option<DateTime<Utc>>,
}

#[derive(Clone)]
struct VerifyKey {
    kid: String,
    public: [u8; 32],
    decoding: DecodingKey,
    retired_at: Option<DateTime<Utc>>,
}

impl VerifyKey {
    fn usable_at(&self, now: DateTime<Utc>) -> bool {
        self.retired_at.is_none_or(|at| at > now)
    }
}

#[derive(Clone)]
struct SignKey {
    kid: String,
    encoding: EncodingKey,
}

/// The in-memory key cache, built from rows.
#[derive(Clone)]
struct KeySet {
    /// Newest first.
    verify: Vec<VerifyKey>,
    /// The newest key without `retired_at` whose private key is readable.
    signer: Option<SignKey>,
    loaded_at: Instant,
}

impl KeySet {
    /// Rows that are retired at `now`, not `EdDSA`, or unreadable are left out (logged).
    fn from_rows(mut rows: Vec<KeyRow>, now: DateTime<Utc>) -> Self {
        rows.sort_by(|a, b| {
            b.created_at
                .cmp(&a.created_at)
                .then_with(|| b.kid.cmp(&a.kid))
        });
        let mut verify = Vec::with_capacity(rows.len());
        let mut signer = None;
        for row in rows {
            if row.retired_at.is_some_and(|at| at <= now) {
                continue;
            }
            if row.algorithm != ALGORITHM {
                tracing::error!(kid = %row.kid, algorithm = %row.algorithm, "ignoring a signing key with an unsupported algorithm");
                continue;
            }
            let Some(public) = <[u8; 32]>::try_from(row.public_key.as_slice())
                .ok()
                .filter(|p| VerifyingKey::from_bytes(p).is_ok())
            else {
                tracing::error!(kid = %row.kid, "ignoring a signing key with an invalid public key");
                continue;
            };
            if signer.is_none()
                && row.retired_at.is_none()
                && let Some(der) = &row.private_key_der
            {
                match SigningKey::from_pkcs8_der(der) {
                    Ok(key) if key.verifying_key().to_bytes() == public => {
                        signer = Some(SignKey {
                            kid: row.kid.clone(),
                            encoding: EncodingKey::from_ed_der(der),
                        });
                    }
                    _ => tracing::error!(
                        kid = %row.kid,
                        "the private key of a signing key is unreadable or does not match its public key; not signing with it"
                    ),
                }
            }
            verify.push(VerifyKey {
                decoding: DecodingKey::from_ed_der(&public),
                kid: row.kid,
                public,
                retired_at: row.retired_at,
            });
        }
        Self {
            verify,
            signer,
            loaded_at: Instant::now(),
        }
    }

    fn lookup(&self, kid: &str, now: DateTime<Utc>) -> Lookup {
        match self.verify.iter().find(|k| k.kid == kid) {
            Some(key) if key.usable_at(now) => Lookup::Usable(key.decoding.clone()),
            Some(_) => Lookup::Retired,
            None => Lookup::Missing,
        }
    }
}

/// Where the keys live: Postgres, or (unit tests) a shared in-memory table.
enum KeySource {
    Db(PgPool),
    #[cfg(test)]
    Memory(Arc<memory::Store>),
}

impl KeySource {
    async fn load(&self) -> Result<Vec<KeyRow>, TokenError> {
        match self {
            Self::Db(pool) => Ok(sqlx::query_as::<_, KeyRow>(LOAD_SQL)
                .fetch_all(pool)
                .await?),
            #[cfg(test)]
            Self::Memory(store) => Ok(store.load()),
        }
    }

    /// Creates a key if none is active; returns its kid.
    async fn ensure_signing_key(&self) -> Result<Option<String>, TokenError> {
        match self {
            Self::Db(pool) => {
                let mut tx = pool.begin().await?;
                sqlx::query("SELECT pg_advisory_xact_lock($1)")
                    .bind(KEY_LOCK)
                    .execute(&mut *tx)
                    .await?;
                let active: bool = sqlx::query_scalar(
                    "SELECT EXISTS (SELECT 1 FROM signing_keys WHERE retired_at IS NULL)",
                )
                .fetch_one(&mut *tx)
                .await?;
                if active {
                    tx.rollback().await?;
                    return Ok(None);
                }
                let key = generate_key()?;
                insert_key(&mut tx, &key).await?;
                tx.commit().await?;
                Ok(Some(key.kid))
            }
            #[cfg(test)]
            Self::Memory(store) => store.ensure(),
        }
    }

    /// Inserts a new key and retires the others at `now + grace` unless they retire sooner;
    /// returns the new kid and how many keys were (re)scheduled for retirement.
    async fn rotate(&self, grace: Duration) -> Result<(String, u64), TokenError> {
        match self {
            Self::Db(pool) => {
                let mut tx = pool.begin().await?;
                sqlx::query("SELECT pg_advisory_xact_lock($1)")
                    .bind(KEY_LOCK)
                    .execute(&mut *tx)
                    .await?;
                let key = generate_key()?;
                insert_key(&mut tx, &key).await?;
                let retired = sqlx::query(
                    "UPDATE signing_keys SET retired_at = u.until \
                     FROM (SELECT clock_timestamp() + make_interval(secs => $2) AS until) AS u \
                     WHERE signing_keys.kid <> $1 \
                       AND (signing_keys.retired_at IS NULL OR signing_keys.retired_at > u.until)",
                )
                .bind(&key.kid)
                .bind(grace.as_secs_f64())
                .execute(&mut *tx)
                .await?
                .rows_affected();
                tx.commit().await?;
                Ok((key.kid, retired))
            }
            #[cfg(test)]
            Self::Memory(store) => store.rotate(grace),
        }
    }
}

async fn insert_key(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    key: &NewKey,
) -> Result<(), TokenError> {
    sqlx::query(
        "INSERT INTO signing_keys (kid, algorithm, private_key_der, public_key, created_at) \
         VALUES ($1, $2, $3, $4, clock_timestamp())",
    )
    .bind(&key.kid)
    .bind(ALGORITHM)
    .bind(&key.private_key_der)
    .bind(&key.public_key[..])
    .execute(&mut **tx)
    .await?;
    Ok(())
}

#[cfg(test)]
impl TokenService {
    /// A service over an in-memory key table with one fresh key, for unit tests elsewhere in
    /// the crate that need tokens without a database.
    pub(crate) async fn in_memory(cfg: &IdentityConfig) -> Result<Self, TokenError> {
        Self::with_source(KeySource::Memory(Arc::default()), cfg).await
    }
}

#[cfg(test)]
mod memory {
    //! The `signing_keys` table in memory, with the same semantics as the SQL above.

    use std::sync::{
        Mutex, MutexGuard, PoisonError,
        atomic::{AtomicUsize, Ordering},
    };

    use super::*;

    #[derive(Default)]
    pub(super) struct Store {
        pub(super) rows: Mutex<Vec<KeyRow>>,
        pub(super) loads: AtomicUsize,
    }

    impl Store {
        pub(super) fn rows(&self) -> MutexGuard<'_, Vec<KeyRow>> {
            self.rows.lock().unwrap_or_else(PoisonError::into_inner)
        }

        pub(super) fn load(&self) -> Vec<KeyRow> {
            self.loads.fetch_add(1, Ordering::SeqCst);
            let now = Utc::now();
            self.rows()
                .iter()
                .filter(|r| r.retired_at.is_none_or(|at| at > now))
                .cloned()
                .map(|mut r| {
                    if r.retired_at.is_some() {
                        r.private_key_der = None;
                    }
                    r
                })
                .collect()
        }

        pub(super) fn ensure(&self) -> Result<Option<String>, TokenError> {
            let mut rows = self.rows();
            if rows.iter().any(|r| r.retired_at.is_none()) {
                return Ok(None);
            }
            let key = generate_key()?;
            let kid = key.kid.clone();
            rows.push(row_of(key));
            Ok(Some(kid))
        }

        pub(super) fn rotate(&self, grace: Duration) -> Result<(String, u64), TokenError> {
            let mut rows = self.rows();
            let key = generate_key()?;
            let kid = key.kid.clone();
            let until = Utc::now()
                + chrono::Duration::from_std(grace)
                    .map_err(|_| TokenError::Internal("grace out of range".into()))?;
            let mut retired = 0;
            for row in rows.iter_mut() {
                if row.retired_at.is_none_or(|at| at > until) {
                    row.retired_at = Some(until);
                    retired += 1;
                }
            }
            rows.push(row_of(key));
            Ok((kid, retired))
        }
    }

    pub(super) fn row_of(key: NewKey) -> KeyRow {
        KeyRow {
            kid: key.kid,
            algorithm: ALGORITHM.to_string(),
            private_key_der: Some(key.private_key_der),
            public_key: key.public_key.to_vec(),
            created_at: Utc::now(),
            retired_at: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use ed25519_dalek::Signer as _;
    use gatehouse_common::config::Config;
    use serde_json::{Value, json};

    use super::*;

    fn config() -> IdentityConfig {
        let vars = [
            ("GATEHOUSE_JWT_ISSUER", "https://gatehouse.test"),
            ("GATEHOUSE_JWT_AUDIENCE", "gatehouse-api"),
            ("GATEHOUSE_JWT_TTL_SECS", "900"),
        ];
        Config::from_lookup(|k| {
            vars.iter()
                .find(|(name, _)| *name == k)
                .map(|(_, v)| (*v).to_string())
        })
        .expect("valid test config")
        .identity
    }

    async fn service(store: &Arc<memory::Store>) -> TokenService {
        TokenService::with_source(KeySource::Memory(Arc::clone(store)), &config())
            .await
            .expect("service")
    }

    fn kid_of(token: &str) -> String {
        jsonwebtoken::decode_header(token)
            .expect("header")
            .kid
            .expect("kid")
    }

    fn signing_key(store: &memory::Store, kid: &str) -> SigningKey {
        let rows = store.rows();
        let row = rows.iter().find(|r| r.kid == kid).expect("row");
        SigningKey::from_pkcs8_der(row.private_key_der.as_deref().expect("der")).expect("pkcs8")
    }

    fn public_key(store: &memory::Store, kid: &str) -> Vec<u8> {
        let rows = store.rows();
        rows.iter()
            .find(|r| r.kid == kid)
            .expect("row")
            .public_key
            .clone()
    }

    fn b64(bytes: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// Builds `header.claims.signature` with an arbitrary signer.
    fn forge(header: &Value, claims: &Value, sign: impl Fn(&[u8]) -> Vec<u8>) -> String {
        let message = format!(
            "{}.{}",
            b64(&serde_json::to_vec(header).expect("json")),
            b64(&serde_json::to_vec(claims).expect("json"))
        );
        let signature = b64(&sign(message.as_bytes()));
        format!("{message}.{signature}")
    }

    fn ed_signed(key: &SigningKey, kid: &str, claims: &Value) -> String {
        forge(
            &json!({"alg": "EdDSA", "typ": "JWT", "kid": kid}),
            claims,
            |m| key.sign(m).to_bytes().to_vec(),
        )
    }

    fn good_claims() -> Value {
        let now = Utc::now().timestamp();
        json!({
            "iss": "https://gatehouse.test",
            "aud": "gatehouse-api",
            "sub": "usr_0190f0f0f0f0f0f0f0f0f0f0f0f0f0f0",
            "tid": TenantId::new().to_string(),
            "role": "admin",
            "scope": "moderate jobs:read",
            "iat": now,
            "nbf": now,
            "exp": now + 600,
            "jti": uuid::Uuid::now_v7().to_string(),
        })
    }

    /// Makes the service's cache look older than `KEY_REFRESH_INTERVAL`, with no recent reload.
    async fn age(svc: &TokenService) {
        let mut aged = (*svc.snapshot()).clone();
        aged.loaded_at = Instant::now()
            .checked_sub(KEY_REFRESH_INTERVAL + Duration::from_secs(1))
            .expect("instant");
        svc.install(aged);
        *svc.inner.reload.lock().await = None;
    }

    /// A service plus its store and its signing key's kid.
    async fn fixture() -> (Arc<memory::Store>, TokenService, String) {
        let store = Arc::new(memory::Store::default());
        let svc = service(&store).await;
        let kid = store.rows()[0].kid.clone();
        (store, svc, kid)
    }

    #[test]
    fn pkcs8_der_and_raw_public_key_round_trip_through_jsonwebtoken() {
        let key = generate_key().expect("key");
        // The stored DER is a PKCS#8 document ed25519-dalek reads back to the same key.
        let parsed = SigningKey::from_pkcs8_der(&key.private_key_der).expect("pkcs8");
        assert_eq!(parsed.verifying_key().to_bytes(), key.public_key);
        assert_eq!(key.public_key.len(), 32);

        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(key.kid.clone());
        let claims = json!({"sub": "x", "exp": Utc::now().timestamp() + 60});
        let token = jsonwebtoken::encode(
            &header,
            &claims,
            &EncodingKey::from_ed_der(&key.private_key_der),
        )
        .expect("sign with PKCS#8 DER");
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.validate_aud = false;
        for decoding in [
            DecodingKey::from_ed_der(&key.public_key),
            DecodingKey::from_ed_components(&b64(&key.public_key)).expect("x"),
        ] {
            let data = jsonwebtoken::decode::<Value>(&token, &decoding, &validation)
                .expect("verify with the raw public key");
            assert_eq!(data.claims["sub"], "x");
            assert_eq!(data.header.kid.as_deref(), Some(key.kid.as_str()));
        }
        // Someone else's key does not verify it.
        let other = generate_key().expect("key");
        let err = jsonwebtoken::decode::<Value>(
            &token,
            &DecodingKey::from_ed_der(&other.public_key),
            &validation,
        )
        .expect_err("wrong key");
        assert_eq!(err.kind(), &ErrorKind::InvalidSignature);
    }

    #[test]
    fn kid_is_k_and_16_hex_of_the_public_key_hash() {
        let key = generate_key().expect("key");
        assert_eq!(key.kid.len(), 18);
        assert!(key.kid.starts_with("k_"));
        assert!(key.kid[2..].chars().all(|c| c.is_ascii_hexdigit()));
        let digest = Sha256::digest(key.public_key);
        assert_eq!(key.kid, format!("k_{}", hex::encode(&digest[..8])));
    }

    #[tokio::test]
    async fn issued_token_verifies_with_the_expected_claims_and_header() {
        let (store, svc, kid) = fixture().await;
        assert_eq!(store.rows().len(), 1, "the first key is created");
        let tenant = TenantId::new();
        let scopes = vec!["moderate".to_string(), "jobs:read".to_string()];
        let issued = svc
            .issue("usr_abc", Some(tenant), "admin", &scopes)
            .await
            .expect("issue");
        assert_eq!(issued.token_type, "Bearer");
        assert_eq!(issued.expires_in, 900);
        let body = serde_json::to_value(&issued).expect("json");
        assert_eq!(
            body.as_object().expect("object").keys().collect::<Vec<_>>(),
            ["access_token", "token_type", "expires_in"]
        );
        assert!(!format!("{issued:?}").contains(&issued.access_token));

        let header = jsonwebtoken::decode_header(&issued.access_token).expect("header");
        assert_eq!(header.alg, Algorithm::EdDSA);
        assert_eq!(header.kid.as_deref(), Some(kid.as_str()));

        let claims = svc.verify(&issued.access_token).await.expect("verify");
        assert_eq!(claims.iss, "https://gatehouse.test");
        assert_eq!(claims.aud, "gatehouse-api");
        assert_eq!(claims.sub, "usr_abc");
        assert_eq!(claims.tid, Some(tenant.to_string()));
        assert_eq!(claims.tenant_id(), Some(tenant));
        assert_eq!(claims.role, "admin");
        assert_eq!(claims.scope, "moderate jobs:read");
        assert_eq!(
            claims.scopes().collect::<Vec<_>>(),
            ["moderate", "jobs:read"]
        );
        assert_eq!(claims.iat, claims.nbf);
        assert_eq!(claims.exp, claims.iat + 900);
        assert!((claims.iat - Utc::now().timestamp()).abs() <= 2);
        let jti = uuid::Uuid::parse_str(&claims.jti).expect("uuid jti");
        assert_eq!(jti.get_version_num(), 7);

        // An operator token has no tid at all.
        let op = svc
            .issue("usr_op", None, "superadmin", &[])
            .await
            .expect("issue");
        let claims = svc.verify(&op.access_token).await.expect("verify");
        assert_eq!(claims.tid, None);
        assert_eq!(claims.scope, "");
        let raw: Value = jsonwebtoken::dangerous::insecure_decode::<Value>(&op.access_token)
            .expect("decode")
            .claims;
        assert!(raw.get("tid").is_none());
    }

    #[tokio::test]
    async fn issue_rejects_scopes_that_would_corrupt_the_scope_claim() {
        let (_store, svc, _kid) = fixture().await;
        for bad in ["", "a b", "tab\tbed"] {
            let err = svc
                .issue("usr_x", None, "admin", &[bad.to_string()])
                .await
                .expect_err("bad scope");
            assert!(matches!(err, TokenError::Internal(_)), "{err:?}");
        }
    }

    #[tokio::test]
    async fn alg_none_is_rejected() {
        let (_store, svc, kid) = fixture().await;
        for alg in ["none", "None", "NONE"] {
            let token = forge(
                &json!({"alg": alg, "typ": "JWT", "kid": kid}),
                &good_claims(),
                |_| Vec::new(),
            );
            assert!(token.ends_with('.'));
            let err = svc.verify(&token).await.expect_err("alg none");
            assert!(matches!(err, TokenError::Algorithm), "{alg}: {err:?}");
        }
        let no_alg = forge(&json!({"kid": kid}), &good_claims(), |_| Vec::new());
        assert!(matches!(
            svc.verify(&no_alg).await,
            Err(TokenError::Algorithm)
        ));
    }

    #[tokio::test]
    async fn hs256_signed_with_the_public_key_is_rejected() {
        let (store, svc, kid) = fixture().await;
        let public = public_key(&store, &kid);
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(kid.clone());
        // The raw key bytes, and the JWK `x` string, as HMAC secrets.
        for secret in [public.clone(), b64(&public).into_bytes()] {
            let token =
                jsonwebtoken::encode(&header, &good_claims(), &EncodingKey::from_secret(&secret))
                    .expect("hs256");
            let err = svc.verify(&token).await.expect_err("algorithm confusion");
            assert!(matches!(err, TokenError::Algorithm), "{err:?}");
        }
    }

    #[tokio::test]
    async fn rs256_and_every_other_algorithm_is_rejected() {
        let (store, svc, kid) = fixture().await;
        let key = signing_key(&store, &kid);
        for alg in [
            "RS256", "RS384", "RS512", "PS256", "ES256", "ES384", "HS256", "HS384", "HS512",
            "Ed25519", "eddsa", "EdDSA ",
        ] {
            // Even with a valid Ed25519 signature over the message.
            let token = forge(
                &json!({"alg": alg, "typ": "JWT", "kid": kid}),
                &good_claims(),
                |m| key.sign(m).to_bytes().to_vec(),
            );
            let err = svc.verify(&token).await.expect_err(alg);
            assert!(matches!(err, TokenError::Algorithm), "{alg}: {err:?}");
        }
        let token = forge(&json!({"alg": 256, "kid": kid}), &good_claims(), |m| {
            key.sign(m).to_bytes().to_vec()
        });
        assert!(matches!(
            svc.verify(&token).await,
            Err(TokenError::Algorithm)
        ));
    }

    #[tokio::test]
    async fn a_correctly_forged_eddsa_token_verifies() {
        // The baseline of the negative tests below: the forging helper itself is right.
        let (store, svc, kid) = fixture().await;
        let token = ed_signed(&signing_key(&store, &kid), &kid, &good_claims());
        svc.verify(&token).await.expect("valid token");
    }

    #[tokio::test]
    async fn tampered_payload_or_signature_is_a_bad_signature() {
        let (_store, svc, _kid) = fixture().await;
        let issued = svc
            .issue("usr_guest", None, "guest", &[])
            .await
            .expect("issue");
        let parts: Vec<&str> = issued.access_token.split('.').collect();
        let mut claims: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).expect("b64")).expect("json");
        claims["role"] = json!("superadmin");
        let tampered = format!(
            "{}.{}.{}",
            parts[0],
            b64(&serde_json::to_vec(&claims).expect("json")),
            parts[2]
        );
        assert!(matches!(
            svc.verify(&tampered).await,
            Err(TokenError::BadSignature)
        ));

        let mut signature = URL_SAFE_NO_PAD.decode(parts[2]).expect("b64");
        signature[0] ^= 1;
        let flipped = format!("{}.{}.{}", parts[0], parts[1], b64(&signature));
        assert!(matches!(
            svc.verify(&flipped).await,
            Err(TokenError::BadSignature)
        ));
        let truncated = format!("{}.{}.{}", parts[0], parts[1], b64(&signature[..10]));
        assert!(matches!(
            svc.verify(&truncated).await,
            Err(TokenError::BadSignature)
        ));
    }

    #[tokio::test]
    async fn signature_by_another_ed25519_key_under_our_kid_is_a_bad_signature() {
        let (_store, svc, kid) = fixture().await;
        let stranger = SigningKey::from_bytes(&[7u8; 32]);
        let token = ed_signed(&stranger, &kid, &good_claims());
        assert!(matches!(
            svc.verify(&token).await,
            Err(TokenError::BadSignature)
        ));
    }

    #[tokio::test]
    async fn expired_token_is_rejected_with_a_five_second_leeway() {
        let (store, svc, kid) = fixture().await;
        let key = signing_key(&store, &kid);
        let now = Utc::now().timestamp();
        let mut claims = good_claims();
        claims["iat"] = json!(now - 1000);
        claims["nbf"] = json!(now - 1000);
        claims["exp"] = json!(now - 10);
        let token = ed_signed(&key, &kid, &claims);
        assert!(matches!(svc.verify(&token).await, Err(TokenError::Expired)));
        // Within the leeway.
        claims["exp"] = json!(now - 2);
        let token = ed_signed(&key, &kid, &claims);
        svc.verify(&token).await.expect("within leeway");
    }

    #[tokio::test]
    async fn token_from_the_future_is_not_yet_valid() {
        let (store, svc, kid) = fixture().await;
        let key = signing_key(&store, &kid);
        let now = Utc::now().timestamp();
        let mut claims = good_claims();
        claims["nbf"] = json!(now + 60);
        claims["exp"] = json!(now + 600);
        let token = ed_signed(&key, &kid, &claims);
        assert!(matches!(
            svc.verify(&token).await,
            Err(TokenError::NotYetValid)
        ));
        claims["nbf"] = json!(now + 2);
        let token = ed_signed(&key, &kid, &claims);
        svc.verify(&token).await.expect("within leeway");
    }

    #[tokio::test]
    async fn wrong_issuer_or_audience_is_rejected() {
        let (store, svc, kid) = fixture().await;
        let key = signing_key(&store, &kid);
        let mut claims = good_claims();
        claims["iss"] = json!("https://evil.test");
        assert!(matches!(
            svc.verify(&ed_signed(&key, &kid, &claims)).await,
            Err(TokenError::WrongIssuer)
        ));
        let mut claims = good_claims();
        claims["aud"] = json!("some-other-api");
        assert!(matches!(
            svc.verify(&ed_signed(&key, &kid, &claims)).await,
            Err(TokenError::WrongAudience)
        ));
    }

    #[tokio::test]
    async fn missing_required_claims_are_malformed() {
        let (store, svc, kid) = fixture().await;
        let key = signing_key(&store, &kid);
        for claim in [
            "iss", "aud", "sub", "role", "scope", "iat", "nbf", "exp", "jti",
        ] {
            let mut claims = good_claims();
            claims.as_object_mut().expect("object").remove(claim);
            let err = svc
                .verify(&ed_signed(&key, &kid, &claims))
                .await
                .expect_err(claim);
            assert!(matches!(err, TokenError::Malformed), "{claim}: {err:?}");
        }
        // Wrong types and a tid that is not a tenant id.
        for (claim, value) in [
            ("exp", json!("soon")),
            ("aud", json!(["gatehouse-api"])),
            ("tid", json!("tenant-1")),
        ] {
            let mut claims = good_claims();
            claims[claim] = value;
            let err = svc
                .verify(&ed_signed(&key, &kid, &claims))
                .await
                .expect_err(claim);
            assert!(matches!(err, TokenError::Malformed), "{claim}: {err:?}");
        }
    }

    #[tokio::test]
    async fn malformed_tokens_and_headers_are_rejected() {
        let (store, svc, kid) = fixture().await;
        let key = signing_key(&store, &kid);
        let valid = ed_signed(&key, &kid, &good_claims());
        let long = "a".repeat(MAX_TOKEN_BYTES + 1);
        for token in [
            "",
            "abc",
            "a.b",
            "a.b.c.d",
            "!!!.b.c",
            &format!("{valid}.extra"),
            &format!("{}.e30.", b64(b"not json")),
            &long,
        ] {
            let err = svc.verify(token).await.expect_err("malformed");
            assert!(matches!(err, TokenError::Malformed), "{err:?}");
        }
        // A critical header extension we cannot understand.
        let crit = forge(
            &json!({"alg": "EdDSA", "kid": kid, "crit": ["exp"], "exp": 1}),
            &good_claims(),
            |m| key.sign(m).to_bytes().to_vec(),
        );
        assert!(matches!(
            svc.verify(&crit).await,
            Err(TokenError::Malformed)
        ));
        // No kid names no key.
        let no_kid = forge(&json!({"alg": "EdDSA"}), &good_claims(), |m| {
            key.sign(m).to_bytes().to_vec()
        });
        assert!(matches!(
            svc.verify(&no_kid).await,
            Err(TokenError::UnknownKey)
        ));
    }

    #[tokio::test]
    async fn unknown_kid_reloads_at_most_once_a_second_then_fails() {
        let (store, svc, kid) = fixture().await;
        let key = signing_key(&store, &kid);
        let loads = || store.loads.load(Ordering::SeqCst);
        let before = loads();
        let token = ed_signed(&key, "k_0000000000000000", &good_claims());
        assert!(matches!(
            svc.verify(&token).await,
            Err(TokenError::UnknownKey)
        ));
        assert_eq!(loads(), before + 1, "one reload");
        for _ in 0..5 {
            assert!(matches!(
                svc.verify(&token).await,
                Err(TokenError::UnknownKey)
            ));
        }
        assert_eq!(loads(), before + 1, "no more reloads within a second");
        tokio::time::sleep(RELOAD_MIN_GAP + Duration::from_millis(100)).await;
        assert!(matches!(
            svc.verify(&token).await,
            Err(TokenError::UnknownKey)
        ));
        assert_eq!(loads(), before + 2, "one more reload after a second");
    }

    #[tokio::test]
    async fn another_replicas_rotation_is_picked_up_by_verify_and_by_issue() {
        let store = Arc::new(memory::Store::default());
        let a = service(&store).await;
        let b = service(&store).await;
        assert_eq!(store.rows().len(), 1, "the second replica reuses the key");
        let old = b.issue("usr_1", None, "admin", &[]).await.expect("issue");

        let new_kid = a.rotate().await.expect("rotate");
        let fresh = a.issue("usr_1", None, "admin", &[]).await.expect("issue");
        assert_eq!(
            kid_of(&fresh.access_token),
            new_kid,
            "the rotating replica signs at once"
        );

        // B has never seen the new kid: it reloads once and accepts the token.
        b.verify(&fresh.access_token).await.expect("picked up");
        b.verify(&old.access_token)
            .await
            .expect("old key still verifies");

        // C's cache is older than a minute: issue reloads and signs with the new key.
        let c = service(&store).await;
        let third = a.rotate().await.expect("rotate");
        age(&c).await;
        let token = c.issue("usr_1", None, "admin", &[]).await.expect("issue");
        assert_eq!(kid_of(&token.access_token), third);
    }

    #[tokio::test]
    async fn rotated_key_verifies_until_retired_then_fails() {
        let (store, svc, first) = fixture().await;
        let old = svc.issue("usr_1", None, "admin", &[]).await.expect("issue");
        assert_eq!(kid_of(&old.access_token), first);

        let second = svc.rotate().await.expect("rotate");
        assert_ne!(second, first);
        {
            let rows = store.rows();
            let retired_at = rows
                .iter()
                .find(|r| r.kid == first)
                .and_then(|r| r.retired_at)
                .expect("scheduled for retirement");
            let expected =
                Utc::now() + chrono::Duration::from_std(svc.retirement_grace()).expect("grace");
            assert!((expected - retired_at).num_seconds().abs() <= 2);
            assert_eq!(svc.retirement_grace(), Duration::from_secs(900 + 60 + 5));
        }
        svc.verify(&old.access_token)
            .await
            .expect("rotated but not yet retired");

        // The retirement time passes (here: an operator revokes the key).
        store
            .rows()
            .iter_mut()
            .find(|r| r.kid == first)
            .expect("row")
            .retired_at = Some(Utc::now() - chrono::Duration::seconds(1));
        // The cache still holds the old key with a future retirement, so age it to reload.
        age(&svc).await;
        assert!(matches!(
            svc.verify(&old.access_token).await,
            Err(TokenError::UnknownKey)
        ));
    }

    #[tokio::test]
    async fn a_cached_key_stops_verifying_when_its_retirement_passes() {
        let (store, svc, kid) = fixture().await;
        let key = signing_key(&store, &kid);
        let token = ed_signed(&key, &kid, &good_claims());
        // A cache loaded an hour ago, when the key was still to retire a second ago.
        let mut rows = store.rows().clone();
        rows[0].retired_at = Some(Utc::now() - chrono::Duration::seconds(1));
        let keys = KeySet::from_rows(rows, Utc::now() - chrono::Duration::hours(1));
        assert_eq!(keys.verify.len(), 1);
        svc.install(keys);
        let loads = store.loads.load(Ordering::SeqCst);
        assert!(matches!(
            svc.verify(&token).await,
            Err(TokenError::UnknownKey)
        ));
        assert_eq!(
            store.loads.load(Ordering::SeqCst),
            loads,
            "a retired kid does not trigger a reload"
        );
    }

    #[tokio::test]
    async fn rotation_never_postpones_an_earlier_retirement() {
        let (store, svc, first) = fixture().await;
        let soon = Utc::now() + chrono::Duration::seconds(30);
        svc.rotate().await.expect("rotate");
        store
            .rows()
            .iter_mut()
            .find(|r| r.kid == first)
            .expect("row")
            .retired_at = Some(soon);
        let second = svc.rotate().await.expect("rotate");
        let rows = store.rows();
        assert_eq!(
            rows.iter()
                .find(|r| r.kid == first)
                .expect("row")
                .retired_at,
            Some(soon)
        );
        assert_eq!(
            rows.iter().filter(|r| r.retired_at.is_none()).count(),
            1,
            "only the newest key is active"
        );
        assert!(
            rows.iter()
                .any(|r| r.kid == second && r.retired_at.is_none())
        );
    }

    #[tokio::test]
    async fn jwks_lists_every_key_that_still_verifies() {
        let (store, svc, first) = fixture().await;
        let second = svc.rotate().await.expect("rotate");
        let jwks = svc.jwks().await;
        let keys = jwks["keys"].as_array().expect("keys");
        assert_eq!(keys.len(), 2);
        assert_eq!(keys[0]["kid"], second.as_str(), "newest first");
        assert_eq!(keys[1]["kid"], first.as_str());
        for jwk in keys {
            let kid = jwk["kid"].as_str().expect("kid");
            assert_eq!(
                jwk,
                &json!({
                    "kty": "OKP",
                    "crv": "Ed25519",
                    "x": b64(&public_key(&store, kid)),
                    "kid": kid,
                    "alg": "EdDSA",
                    "use": "sig",
                })
            );
            // A client can verify our tokens with it.
            let parsed: jsonwebtoken::jwk::Jwk = serde_json::from_value(jwk.clone()).expect("jwk");
            DecodingKey::from_jwk(&parsed).expect("decoding key");
        }
        // A retired key is not published.
        let mut rows = store.rows().clone();
        rows.iter_mut()
            .find(|r| r.kid == first)
            .expect("row")
            .retired_at = Some(Utc::now() - chrono::Duration::seconds(1));
        let mut keys = KeySet::from_rows(rows, Utc::now() - chrono::Duration::hours(1));
        keys.loaded_at = Instant::now();
        svc.install(keys);
        let jwks = svc.jwks().await;
        let kids: Vec<&str> = jwks["keys"]
            .as_array()
            .expect("keys")
            .iter()
            .map(|k| k["kid"].as_str().expect("kid"))
            .collect();
        assert_eq!(kids, [second.as_str()]);
    }

    #[tokio::test]
    async fn issue_creates_a_key_when_every_key_was_retired() {
        let (store, svc, first) = fixture().await;
        store.rows()[0].retired_at = Some(Utc::now() - chrono::Duration::seconds(1));
        age(&svc).await;
        let token = svc.issue("usr_1", None, "admin", &[]).await.expect("issue");
        let kid = kid_of(&token.access_token);
        assert_ne!(kid, first);
        svc.verify(&token.access_token).await.expect("verify");
    }

    #[test]
    fn key_set_skips_unusable_rows() {
        let good = memory::row_of(generate_key().expect("key"));
        let mut wrong_alg = memory::row_of(generate_key().expect("key"));
        wrong_alg.algorithm = "RS256".into();
        let mut short_public = memory::row_of(generate_key().expect("key"));
        short_public.public_key.truncate(31);
        // Newest, active, but its private key belongs to another public key: verifies only.
        let mut mismatched = memory::row_of(generate_key().expect("key"));
        mismatched.private_key_der = good.private_key_der.clone();
        mismatched.created_at = good.created_at + chrono::Duration::seconds(10);
        let keys = KeySet::from_rows(
            vec![good.clone(), wrong_alg, short_public, mismatched.clone()],
            Utc::now(),
        );
        let kids: Vec<&str> = keys.verify.iter().map(|k| k.kid.as_str()).collect();
        assert_eq!(kids, [mismatched.kid.as_str(), good.kid.as_str()]);
        assert_eq!(
            keys.signer.as_ref().map(|s| s.kid.as_str()),
            Some(good.kid.as_str())
        );
    }

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

    #[tokio::test]
    async fn service_is_send_sync_clone_and_debug_hides_keys() {
        fn assert_send_sync<T: Send + Sync + Clone>() {}
        assert_send_sync::<TokenService>();
        let (store, svc, kid) = fixture().await;
        let text = format!("{svc:?}");
        assert!(text.contains(&kid));
        let der = store.rows()[0].private_key_der.clone().expect("der");
        assert!(!text.contains(&b64(&der)));
        let other = svc.clone();
        let token = other
            .issue("usr_1", None, "admin", &[])
            .await
            .expect("issue");
        svc.verify(&token.access_token).await.expect("shared cache");
        let _ = TokenService::in_memory(&config()).await.expect("in memory");
    }
}
