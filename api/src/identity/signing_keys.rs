//! The JWT signing keys: generation, and the key set every replica caches (its SQL is in
//! `store::signing_keys`).
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
//! and, at most once a second, when a token names an unknown kid. The token service decides the
//! retirement grace of a rotation (see `jwt::TokenService::rotate`).

use std::{
    sync::{Arc, PoisonError, RwLock},
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use ed25519_dalek::{
    SigningKey, VerifyingKey,
    pkcs8::{DecodePrivateKey as _, EncodePrivateKey as _},
};
use jsonwebtoken::{DecodingKey, EncodingKey};
use rand::RngCore as _;
use sha2::{Digest as _, Sha256};
use sqlx::PgPool;

use crate::store::signing_keys::{self as store, KeyRow, NewSigningKey};

/// The only accepted (and issued) JWS algorithm, and the only key algorithm stored.
pub const ALGORITHM: &str = "EdDSA";
/// A cached key set older than this is reloaded before it is used.
pub const KEY_REFRESH_INTERVAL: Duration = Duration::from_secs(60);
/// Reloads caused by an unknown kid (or retried after a failure) happen at most this often.
pub(crate) const RELOAD_MIN_GAP: Duration = Duration::from_secs(1);
/// A reload on the verification path gives up after this long and keeps the cached keys.
const VERIFY_PATH_LOAD_TIMEOUT: Duration = Duration::from_secs(2);

/// Why the key store failed. The token service maps it onto `TokenError`.
#[derive(Debug, thiserror::Error)]
pub(crate) enum KeyError {
    #[error("signing key store unavailable")]
    Database(#[from] sqlx::Error),
    #[error("loading the signing keys timed out")]
    Timeout,
    #[error("cannot encode the signing key: {0}")]
    Encode(String),
}

/// `k_` + the first 16 hex digits of SHA-256(raw public key).
fn kid_for(public_key: &[u8]) -> String {
    let digest = Sha256::digest(public_key);
    format!("k_{}", hex::encode(&digest[..8]))
}

fn generate_key() -> Result<NewSigningKey, KeyError> {
    let mut seed = [0u8; 32];
    rand::rng().fill_bytes(&mut seed);
    let signing = SigningKey::from_bytes(&seed);
    seed.fill(0);
    let der = signing
        .to_pkcs8_der()
        .map_err(|e| KeyError::Encode(e.to_string()))?;
    let public_key = signing.verifying_key().to_bytes();
    Ok(NewSigningKey {
        kid: kid_for(&public_key),
        algorithm: ALGORITHM,
        private_key_der: der.as_bytes().to_vec(),
        public_key,
    })
}

/// A key that verifies (until `retired_at`, when it has one).
#[derive(Clone)]
pub(crate) struct VerifyKey {
    pub(crate) kid: String,
    pub(crate) public: [u8; 32],
    pub(crate) decoding: DecodingKey,
    pub(crate) retired_at: Option<DateTime<Utc>>,
}

impl VerifyKey {
    pub(crate) fn usable_at(&self, now: DateTime<Utc>) -> bool {
        self.retired_at.is_none_or(|at| at > now)
    }
}

/// The key that signs.
#[derive(Clone)]
pub(crate) struct SignKey {
    pub(crate) kid: String,
    pub(crate) encoding: EncodingKey,
}

/// The in-memory key cache, built from rows.
#[derive(Clone)]
pub(crate) struct KeySet {
    /// Newest first.
    pub(crate) verify: Vec<VerifyKey>,
    /// The newest key without `retired_at` whose private key is readable.
    pub(crate) signer: Option<SignKey>,
    pub(crate) loaded_at: Instant,
}

/// What a kid names in a key set.
pub(crate) enum Lookup {
    Usable(DecodingKey),
    Retired,
    Missing,
}

impl KeySet {
    /// Rows that are retired at `now`, not `EdDSA`, or unreadable are left out (logged).
    pub(crate) fn from_rows(mut rows: Vec<KeyRow>, now: DateTime<Utc>) -> Self {
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

    pub(crate) fn lookup(&self, kid: &str, now: DateTime<Utc>) -> Lookup {
        match self.verify.iter().find(|k| k.kid == kid) {
            Some(key) if key.usable_at(now) => Lookup::Usable(key.decoding.clone()),
            Some(_) => Lookup::Retired,
            None => Lookup::Missing,
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub(crate) enum Refresh {
    /// Reload if the cache is older than `KEY_REFRESH_INTERVAL`; `wait`: queue behind a reload
    /// in progress instead of going on with the cached keys.
    IfStale { wait: bool },
    /// A token named a kid we do not know: reload unless a reload happened under a second ago.
    UnknownKid,
    /// Reload now (after this replica changed the keys).
    Force,
}

/// The signing keys in Postgres and this replica's cache of them. `Send + Sync`.
pub(crate) struct SigningKeys {
    pool: PgPool,
    keys: RwLock<Arc<KeySet>>,
    /// Serialises reloads; holds the time of the last reload attempt.
    reload: tokio::sync::Mutex<Option<Instant>>,
    /// How many times the keys were read from the database.
    #[cfg(test)]
    loads: std::sync::atomic::AtomicUsize,
}

impl SigningKeys {
    /// Loads the keys, creating the first Ed25519 key if no key is active (serialised across
    /// replicas with an advisory lock, so concurrent start-ups create exactly one).
    pub(crate) async fn open(pool: PgPool) -> Result<Self, KeyError> {
        let this = Self {
            pool,
            keys: RwLock::new(Arc::new(KeySet::from_rows(Vec::new(), Utc::now()))),
            reload: tokio::sync::Mutex::new(None),
            #[cfg(test)]
            loads: std::sync::atomic::AtomicUsize::new(0),
        };
        if let Some(kid) = this.ensure_signing_key().await? {
            tracing::info!(%kid, "created the first JWT signing key");
        }
        let keys = KeySet::from_rows(this.load().await?, Utc::now());
        if keys.signer.is_none() {
            tracing::error!("no usable JWT signing key: tokens cannot be issued until a rotation");
        }
        this.install(keys);
        Ok(this)
    }

    /// The cached keys.
    pub(crate) fn snapshot(&self) -> Arc<KeySet> {
        Arc::clone(&self.keys.read().unwrap_or_else(PoisonError::into_inner))
    }

    fn install(&self, keys: KeySet) {
        *self.keys.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(keys);
    }

    async fn load(&self) -> Result<Vec<KeyRow>, KeyError> {
        #[cfg(test)]
        self.loads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(store::load_active(&self.pool).await?)
    }

    /// Creates a key if none is active; returns its kid.
    pub(crate) async fn ensure_signing_key(&self) -> Result<Option<String>, KeyError> {
        let key = generate_key()?;
        Ok(store::insert_if_none_active(&self.pool, &key)
            .await?
            .then_some(key.kid))
    }

    /// Inserts a new key and retires the others at `now + grace` unless they retire sooner;
    /// returns the new kid and how many keys were (re)scheduled for retirement.
    pub(crate) async fn rotate(&self, grace: Duration) -> Result<(String, u64), KeyError> {
        let key = generate_key()?;
        let retired = store::rotate(&self.pool, &key, grace).await?;
        Ok((key.kid, retired))
    }

    pub(crate) async fn refresh(&self, why: Refresh) -> Result<(), KeyError> {
        let stale = || self.snapshot().loaded_at.elapsed() >= KEY_REFRESH_INTERVAL;
        let mut last = match why {
            Refresh::IfStale { wait } => {
                if !stale() {
                    return Ok(());
                }
                if wait {
                    self.reload.lock().await
                } else {
                    match self.reload.try_lock() {
                        Ok(guard) => guard,
                        Err(_) => return Ok(()), // someone else is reloading
                    }
                }
            }
            Refresh::UnknownKid | Refresh::Force => self.reload.lock().await,
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
                tokio::time::timeout(VERIFY_PATH_LOAD_TIMEOUT, self.load())
                    .await
                    .map_err(|_| KeyError::Timeout)??
            }
            Refresh::IfStale { wait: true } | Refresh::Force => self.load().await?,
        };
        self.install(KeySet::from_rows(rows, Utc::now()));
        Ok(())
    }
}

#[cfg(test)]
mod tests;
