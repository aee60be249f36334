//! The checkpoint signing key: Ed25519, in `audit_signing_keys`, separate from the JWT keys.
//!
//! Why not reuse the JWT keys: those rotate (and retire) on the token lifetime's scale and are
//! trusted by every JWKS consumer as *token* signers; a checkpoint must stay verifiable for the
//! whole audit retention (years), and a signature over a checkpoint must never be mistaken for
//! a token nor vice versa. So the audit key has its own table, id (`ak_…`) and lifetime, and
//! every signed message starts with a domain tag ([`MESSAGE_TAG`]).
//!
//! The signed message is plain text (any Ed25519 library can check it):
//! ```text
//! gatehouse-audit-checkpoint-v1
//! chain: ten_…            (or `platform`)
//! seq: 42
//! head: <hex SHA-256 of record 42>   (or `none` for an empty chain)
//! kind: periodic          (or `anchor`)
//! at: 1764763200          (Unix seconds)
//! ```

use chrono::{DateTime, Utc};
use ed25519_dalek::{
    Signature, Signer as _, SigningKey, Verifier as _, VerifyingKey,
    pkcs8::{DecodePrivateKey as _, EncodePrivateKey as _},
};
use gatehouse_common::{
    db::{self, Scope},
    types::TenantId,
};
use rand::RngCore as _;
use sha2::{Digest as _, Sha256};
use sqlx::PgPool;
use tokio::sync::OnceCell;

pub const MESSAGE_TAG: &str = "gatehouse-audit-checkpoint-v1";
/// `pg_advisory_xact_lock` key for creating the first key ("gh-audk").
const KEY_LOCK: i64 = 0x0067_682d_6175_646b;

/// What a checkpoint says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    pub tenant: Option<TenantId>,
    pub seq: i64,
    pub head: Option<Vec<u8>>,
    pub kind: &'static str,
    pub at: DateTime<Utc>,
}

impl Statement {
    /// The exact bytes signed.
    pub fn message(&self) -> String {
        format!(
            "{MESSAGE_TAG}\nchain: {}\nseq: {}\nhead: {}\nkind: {}\nat: {}\n",
            self.tenant
                .map_or_else(|| "platform".to_string(), |t| t.to_string()),
            self.seq,
            self.head
                .as_deref()
                .map_or_else(|| "none".into(), hex::encode),
            self.kind,
            self.at.timestamp(),
        )
    }
}

/// The newest audit key, loaded (or created) once per process.
pub struct CheckpointSigner {
    pool: PgPool,
    key: OnceCell<(String, SigningKey)>,
}

#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("audit key store unavailable")]
    Database(#[from] sqlx::Error),
    #[error("audit signing key unusable: {0}")]
    Key(String),
}

/// `ak_` + the first 16 hex digits of SHA-256(public key).
pub fn key_id(public: &[u8]) -> String {
    format!("ak_{}", hex::encode(&Sha256::digest(public)[..8]))
}

impl CheckpointSigner {
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            key: OnceCell::new(),
        }
    }

    /// Signs `statement`: the key id and the 64-byte signature.
    pub async fn sign(&self, statement: &Statement) -> Result<(String, Vec<u8>), SignError> {
        let (id, key) = self
            .key
            .get_or_try_init(|| load_or_create(&self.pool))
            .await?;
        let signature = key.sign(statement.message().as_bytes());
        Ok((id.clone(), signature.to_bytes().to_vec()))
    }
}

async fn load_or_create(pool: &PgPool) -> Result<(String, SigningKey), SignError> {
    let mut tx = db::begin(pool, Scope::Platform).await?;
    sqlx::query!("SELECT pg_advisory_xact_lock($1)", KEY_LOCK)
        .execute(&mut *tx)
        .await?;
    let row = sqlx::query!(
        "SELECT key_id, private_key_der FROM audit_signing_keys
         ORDER BY created_at DESC, key_id DESC LIMIT 1"
    )
    .fetch_optional(&mut *tx)
    .await?;
    let key = match row {
        Some(row) => {
            let key = SigningKey::from_pkcs8_der(&row.private_key_der)
                .map_err(|e| SignError::Key(e.to_string()))?;
            (row.key_id, key)
        }
        None => {
            let mut seed = [0u8; 32];
            rand::rng().fill_bytes(&mut seed);
            let key = SigningKey::from_bytes(&seed);
            seed.fill(0);
            let der = key
                .to_pkcs8_der()
                .map_err(|e| SignError::Key(e.to_string()))?;
            let public = key.verifying_key().to_bytes();
            let id = key_id(&public);
            sqlx::query!(
                "INSERT INTO audit_signing_keys (key_id, private_key_der, public_key)
                 VALUES ($1, $2, $3)",
                id,
                der.as_bytes(),
                &public[..],
            )
            .execute(&mut *tx)
            .await?;
            tracing::info!(key_id = %id, "created the audit checkpoint signing key");
            (id, key)
        }
    };
    tx.commit().await?;
    Ok(key)
}

/// Every audit public key by id (they are few: one per rotation).
pub async fn public_keys(
    tx: &mut sqlx::PgConnection,
) -> Result<Vec<(String, Vec<u8>)>, sqlx::Error> {
    let rows =
        sqlx::query!("SELECT key_id, public_key FROM audit_signing_keys ORDER BY created_at")
            .fetch_all(tx)
            .await?;
    Ok(rows.into_iter().map(|r| (r.key_id, r.public_key)).collect())
}

/// Whether `signature` by the key `public` covers `statement`.
pub fn verify(statement: &Statement, public: &[u8], signature: &[u8]) -> bool {
    let Ok(public) = <[u8; 32]>::try_from(public) else {
        return false;
    };
    let Ok(signature) = Signature::from_slice(signature) else {
        return false;
    };
    VerifyingKey::from_bytes(&public)
        .map(|k| k.verify(statement.message().as_bytes(), &signature).is_ok())
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_covers_every_field() {
        let key = SigningKey::from_bytes(&[7u8; 32]);
        let statement = Statement {
            tenant: None,
            seq: 3,
            head: Some(vec![1, 2, 3]),
            kind: "periodic",
            at: DateTime::from_timestamp(1_764_763_200, 0).expect("time"),
        };
        let sig = key.sign(statement.message().as_bytes()).to_bytes();
        let public = key.verifying_key().to_bytes();
        assert!(verify(&statement, &public, &sig));
        let moved = Statement {
            seq: 4,
            ..statement.clone()
        };
        assert!(!verify(&moved, &public, &sig));
        assert!(
            statement.message().starts_with(
                "gatehouse-audit-checkpoint-v1\nchain: platform\nseq: 3\nhead: 010203\n"
            )
        );
    }
}
