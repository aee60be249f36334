//! `signing_keys`: the JWT signing keys (see `identity::signing_keys` for the encoding and the
//! cache every replica keeps). Creating the first key and rotating are serialised across
//! replicas with a transaction-scoped advisory lock, so concurrent start-ups create exactly one
//! key and concurrent rotations do not interleave.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::{PgPool, Postgres, Transaction};

/// `pg_advisory_xact_lock` key serialising key creation and rotation across replicas.
const KEY_LOCK: i64 = 0x6768_6a77_746b_6579; // "ghjwtkey"

/// One row of `signing_keys` as loaded. No `Debug`: it holds a private key.
#[derive(Clone)]
pub struct KeyRow {
    pub kid: String,
    pub algorithm: String,
    pub private_key_der: Option<Vec<u8>>,
    pub public_key: Vec<u8>,
    pub created_at: DateTime<Utc>,
    pub retired_at: Option<DateTime<Utc>>,
}

/// A freshly generated key, ready to insert.
pub struct NewSigningKey {
    pub kid: String,
    pub algorithm: &'static str,
    pub private_key_der: Vec<u8>,
    pub public_key: [u8; 32],
}

/// The keys whose `retired_at` is null or in the future (every key that still verifies),
/// newest first; the private key only of keys that are not retiring (a key with a
/// `retired_at` never signs again).
pub async fn load_active(pool: &PgPool) -> Result<Vec<KeyRow>, sqlx::Error> {
    sqlx::query_as!(
        KeyRow,
        r#"
        SELECT kid, algorithm,
               CASE WHEN retired_at IS NULL THEN private_key_der END AS "private_key_der?",
               public_key, created_at, retired_at
        FROM signing_keys WHERE retired_at IS NULL OR retired_at > now()
        ORDER BY created_at DESC, kid DESC
        "#
    )
    .fetch_all(pool)
    .await
}

/// Inserts `key` unless some key is active (has no `retired_at`); true when it was inserted.
pub async fn insert_if_none_active(
    pool: &PgPool,
    key: &NewSigningKey,
) -> Result<bool, sqlx::Error> {
    let mut tx = pool.begin().await?;
    lock(&mut tx).await?;
    let active = sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM signing_keys WHERE retired_at IS NULL) AS "active!""#
    )
    .fetch_one(&mut *tx)
    .await?;
    if active {
        tx.rollback().await?;
        return Ok(false);
    }
    insert(&mut tx, key).await?;
    tx.commit().await?;
    Ok(true)
}

/// Inserts `key` and retires the others at `now + grace` unless they retire sooner; returns
/// how many keys were (re)scheduled for retirement.
pub async fn rotate(
    pool: &PgPool,
    key: &NewSigningKey,
    grace: Duration,
) -> Result<u64, sqlx::Error> {
    let mut tx = pool.begin().await?;
    lock(&mut tx).await?;
    insert(&mut tx, key).await?;
    let retired = sqlx::query!(
        "UPDATE signing_keys SET retired_at = u.until \
         FROM (SELECT clock_timestamp() + make_interval(secs => $2) AS until) AS u \
         WHERE signing_keys.kid <> $1 \
           AND (signing_keys.retired_at IS NULL OR signing_keys.retired_at > u.until)",
        key.kid,
        grace.as_secs_f64(),
    )
    .execute(&mut *tx)
    .await?
    .rows_affected();
    tx.commit().await?;
    Ok(retired)
}

async fn lock(tx: &mut Transaction<'_, Postgres>) -> Result<(), sqlx::Error> {
    sqlx::query!("SELECT pg_advisory_xact_lock($1)", KEY_LOCK)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

async fn insert(
    tx: &mut Transaction<'_, Postgres>,
    key: &NewSigningKey,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "INSERT INTO signing_keys (kid, algorithm, private_key_der, public_key, created_at) \
         VALUES ($1, $2, $3, $4, clock_timestamp())",
        key.kid,
        key.algorithm,
        key.private_key_der,
        &key.public_key[..],
    )
    .execute(&mut **tx)
    .await?;
    Ok(())
}
