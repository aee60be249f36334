//! `api_keys`: secrets are generated here, shown once, and stored only as SHA-256.
//!
//! Wire format: `ghk_<key id hex>_<secret hex>`. The `ghk_` prefix lets secret scanners find
//! leaked keys; the id lets us look the row up without scanning hashes; the secret is 256
//! random bits (so a fast hash is the right tool, unlike passwords) compared in constant time.
//! A rotation gives the same key id a new secret; the previous one keeps working until
//! `previous_valid_until` (`GATEHOUSE_KEY_ROTATION_GRACE_SECS`).

use chrono::{DateTime, Utc};
use gatehouse_common::audit::Action;
use gatehouse_common::db::{self, Scope};
use gatehouse_common::types::{KeyId, TenantId};
use ipnet::IpNet;
use rand::RngCore;
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::{PgPool, Postgres, Transaction};
use subtle::ConstantTimeEq;
use uuid::Uuid;

pub const KEY_PREFIX: &str = "ghk_";

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ApiKey {
    #[serde(rename = "id")]
    pub key_id: KeyId,
    pub tenant_id: TenantId,
    pub name: String,
    pub scopes: Vec<String>,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub rotated_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    /// Per-key rate limits (`ratelimit::RateSettings`: absent = the default, `null` = none).
    pub rate_limits: serde_json::Value,
}

fn sha256(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

fn new_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

fn derive_secret(
    derivation_secret: &[u8],
    key_id: KeyId,
    idempotency_key: &str,
) -> Result<String, sqlx::Error> {
    use hmac::{Hmac, Mac};
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(derivation_secret)
        .map_err(|e| sqlx::Error::Protocol(e.to_string()))?;
    mac.update(key_id.0.as_bytes());
    mac.update(b"\0");
    mac.update(idempotency_key.as_bytes());
    Ok(hex::encode(mac.finalize().into_bytes()))
}

fn token(key_id: KeyId, secret: &str) -> String {
    format!("{KEY_PREFIX}{}_{secret}", key_id.0.simple())
}

pub struct NewKey<'a> {
    pub tenant: TenantId,
    pub name: &'a str,
    pub scopes: &'a [String],
    pub expires_at: Option<DateTime<Utc>>,
    pub actor: &'a str,
    pub client_ip: Option<std::net::IpAddr>,
}

/// Creates a key; returns it with its bearer token (shown once).
pub async fn create(pool: &PgPool, new: NewKey<'_>) -> Result<(ApiKey, String), sqlx::Error> {
    let key_id = KeyId::new();
    let secret = new_secret();
    let secret_sha256 = sha256(&secret);
    let mut tx = db::begin(pool, Scope::Tenant(new.tenant)).await?;
    let key = sqlx::query_as!(
        ApiKey,
        r#"
        INSERT INTO api_keys (key_id, tenant_id, name, secret_sha256, scopes, expires_at, created_by)
        VALUES ($1, $2, $3, $4, $5, $6, $7)
        RETURNING key_id AS "key_id: KeyId", tenant_id AS "tenant_id: TenantId", name, scopes,
                  created_by, created_at, expires_at, last_used_at, rotated_at, revoked_at, rate_limits
        "#,
        key_id.0,
        new.tenant.0,
        new.name,
        secret_sha256.as_slice(),
        new.scopes,
        new.expires_at,
        new.actor,
    )
    .fetch_one(&mut *tx)
    .await?;
    super::audit::record(
        &mut tx,
        super::audit::Event {
            tenant: Some(new.tenant),
            actor: new.actor,
            action: Action::KeyCreated,
            client_ip: new.client_ip,
            details: serde_json::json!({ "key_id": key_id.to_string(), "name": new.name, "scopes": new.scopes }),
        },
    )
    .await?;
    tx.commit().await?;
    Ok((key, token(key_id, &secret)))
}

pub async fn list(
    pool: &PgPool,
    tenant: TenantId,
    after: Option<KeyId>,
    limit: i64,
) -> Result<Vec<ApiKey>, sqlx::Error> {
    let mut tx = db::begin(pool, Scope::Tenant(tenant)).await?;
    let keys = sqlx::query_as!(
        ApiKey,
        r#"
        SELECT key_id AS "key_id: KeyId", tenant_id AS "tenant_id: TenantId", name, scopes,
               created_by, created_at, expires_at, last_used_at, rotated_at, revoked_at, rate_limits
        FROM api_keys
        WHERE tenant_id = $1 AND ($2::uuid IS NULL OR key_id > $2)
        ORDER BY key_id
        LIMIT $3
        "#,
        tenant.0,
        after.map(|k| k.0),
        limit,
    )
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(keys)
}

/// Revokes a live key of `tenant`; `None` when there is no such live key.
pub async fn revoke(
    pool: &PgPool,
    tenant: TenantId,
    key_id: KeyId,
    actor: &str,
    client_ip: Option<std::net::IpAddr>,
) -> Result<Option<ApiKey>, sqlx::Error> {
    let mut tx = db::begin(pool, Scope::Tenant(tenant)).await?;
    let key = sqlx::query_as!(
        ApiKey,
        r#"
        UPDATE api_keys SET revoked_at = now(), previous_secret_sha256 = NULL, previous_valid_until = NULL
        WHERE tenant_id = $1 AND key_id = $2 AND revoked_at IS NULL
        RETURNING key_id AS "key_id: KeyId", tenant_id AS "tenant_id: TenantId", name, scopes,
                  created_by, created_at, expires_at, last_used_at, rotated_at, revoked_at, rate_limits
        "#,
        tenant.0,
        key_id.0,
    )
    .fetch_optional(&mut *tx)
    .await?;
    if key.is_some() {
        audit_key(
            &mut tx,
            tenant,
            actor,
            Action::KeyRevoked,
            key_id,
            client_ip,
        )
        .await?;
    }
    tx.commit().await?;
    Ok(key)
}

/// Gives the key a new secret; the old one stays valid for `grace`. With an idempotency key,
/// the new secret is derived as HMAC-SHA256(`derivation_secret`, key id ‖ idempotency key), so
/// a repeated request returns the same token while the database still holds only hashes.
#[allow(clippy::too_many_arguments)]
pub async fn rotate(
    pool: &PgPool,
    tenant: TenantId,
    key_id: KeyId,
    grace: std::time::Duration,
    idempotency_key: Option<&str>,
    derivation_secret: &[u8],
    actor: &str,
    client_ip: Option<std::net::IpAddr>,
) -> Result<Option<(ApiKey, String)>, sqlx::Error> {
    let mut tx = db::begin(pool, Scope::Tenant(tenant)).await?;
    let current = sqlx::query_as!(
        ApiKey,
        r#"
        SELECT key_id AS "key_id: KeyId", tenant_id AS "tenant_id: TenantId", name, scopes,
               created_by, created_at, expires_at, last_used_at, rotated_at, revoked_at, rate_limits
        FROM api_keys WHERE tenant_id = $1 AND key_id = $2 AND revoked_at IS NULL FOR UPDATE
        "#,
        tenant.0,
        key_id.0,
    )
    .fetch_optional(&mut *tx)
    .await?;
    let Some(current) = current else {
        return Ok(None);
    };
    let secret = match idempotency_key {
        Some(idem) => {
            // Replays derive the same secret; only its hash is stored, to recognise them.
            let secret = derive_secret(derivation_secret, key_id, idem)?;
            let secret_sha256 = sha256(&secret);
            let seen = sqlx::query_scalar!(
                "SELECT secret_sha256 FROM key_rotations WHERE key_id = $1 AND idempotency_key = $2",
                key_id.0,
                idem,
            )
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(stored) = seen {
                let same: bool = secret_sha256.as_slice().ct_eq(stored.as_slice()).into();
                if same {
                    super::audit::record(
                        &mut tx,
                        super::audit::Event {
                            tenant: Some(tenant),
                            actor,
                            action: Action::KeyRotated,
                            client_ip,
                            details: serde_json::json!({
                                "key_id": key_id.to_string(), "idempotent_replay": true,
                            }),
                        },
                    )
                    .await?;
                }
                tx.commit().await?;
                // A different derivation secret (misconfigured replicas) cannot replay.
                return Ok(same.then(|| (current, token(key_id, &secret))));
            }
            sqlx::query!(
                "INSERT INTO key_rotations (key_id, tenant_id, idempotency_key, secret_sha256) VALUES ($1, $2, $3, $4)",
                key_id.0,
                tenant.0,
                idem,
                secret_sha256.as_slice(),
            )
            .execute(&mut *tx)
            .await?;
            secret
        }
        None => new_secret(),
    };
    let grace_secs = i64::try_from(grace.as_secs()).unwrap_or(i64::MAX);
    let secret_sha256 = sha256(&secret);
    let key = sqlx::query_as!(
        ApiKey,
        r#"
        UPDATE api_keys SET
            previous_secret_sha256 = secret_sha256,
            previous_valid_until = now() + make_interval(secs => $3),
            secret_sha256 = $4,
            rotated_at = now(),
            rotation_reminded_at = NULL
        WHERE tenant_id = $1 AND key_id = $2
        RETURNING key_id AS "key_id: KeyId", tenant_id AS "tenant_id: TenantId", name, scopes,
                  created_by, created_at, expires_at, last_used_at, rotated_at, revoked_at, rate_limits
        "#,
        tenant.0,
        key_id.0,
        grace_secs as f64,
        secret_sha256.as_slice(),
    )
    .fetch_one(&mut *tx)
    .await?;
    audit_key(
        &mut tx,
        tenant,
        actor,
        Action::KeyRotated,
        key_id,
        client_ip,
    )
    .await?;
    tx.commit().await?;
    Ok(Some((key, token(key_id, &secret))))
}

async fn audit_key(
    tx: &mut Transaction<'_, Postgres>,
    tenant: TenantId,
    actor: &str,
    action: Action,
    key_id: KeyId,
    client_ip: Option<std::net::IpAddr>,
) -> Result<(), sqlx::Error> {
    super::audit::record(
        tx,
        super::audit::Event {
            tenant: Some(tenant),
            actor,
            action,
            client_ip,
            details: serde_json::json!({ "key_id": key_id.to_string() }),
        },
    )
    .await
}

/// A live key and what its tenant allows.
#[derive(Debug, Clone)]
pub struct LiveKey {
    pub key_id: KeyId,
    pub tenant_id: TenantId,
    /// The key's scopes that its tenant still grants.
    pub scopes: Vec<String>,
    pub ip_allowlist: Vec<IpNet>,
    /// The key's and its tenant's rate-limit settings (JSON; `ratelimit::RateSettings`).
    pub rate_limits: serde_json::Value,
    pub tenant_rate_limits: serde_json::Value,
}

struct KeyRow {
    tenant_id: TenantId,
    secret_sha256: Vec<u8>,
    previous_secret_sha256: Option<Vec<u8>>,
    previous_valid: bool,
    scopes: Vec<String>,
    ip_allowlist: Vec<IpNet>,
    rate_limits: serde_json::Value,
    tenant_rate_limits: serde_json::Value,
}

/// The live key row of `key_id` with its tenant's grants (`None`: revoked, expired, disabled
/// tenant, or unknown).
async fn live_row(
    conn: &mut sqlx::PgConnection,
    key_id: KeyId,
) -> Result<Option<KeyRow>, sqlx::Error> {
    sqlx::query_as!(
        KeyRow,
        r#"
        SELECT k.tenant_id AS "tenant_id: TenantId", k.secret_sha256, k.previous_secret_sha256,
               coalesce(k.previous_valid_until > now(), false) AS "previous_valid!",
               ARRAY(SELECT unnest(k.scopes) INTERSECT SELECT unnest(t.scopes)) AS "scopes!",
               t.ip_allowlist, k.rate_limits, t.rate_limits AS tenant_rate_limits
        FROM api_keys k JOIN tenants t ON t.tenant_id = k.tenant_id
        WHERE k.key_id = $1 AND k.revoked_at IS NULL AND t.enabled
          AND (k.expires_at IS NULL OR k.expires_at > now())
        "#,
        key_id.0,
    )
    .fetch_optional(conn)
    .await
}

/// Lays `rate_limits` (JSON object) over a key's settings; `None` when the key is not the
/// tenant's.
pub async fn set_rate_limits(
    pool: &PgPool,
    tenant: TenantId,
    key_id: KeyId,
    rate_limits: serde_json::Value,
    actor: &str,
    client_ip: Option<std::net::IpAddr>,
) -> Result<Option<ApiKey>, sqlx::Error> {
    let mut tx = db::begin(pool, Scope::Tenant(tenant)).await?;
    let key = sqlx::query_as!(
        ApiKey,
        r#"
        UPDATE api_keys SET rate_limits = rate_limits || $3
        WHERE key_id = $1 AND tenant_id = $2
        RETURNING key_id AS "key_id: KeyId", tenant_id AS "tenant_id: TenantId", name, scopes,
                  created_by, created_at, expires_at, last_used_at, rotated_at, revoked_at,
                  rate_limits
        "#,
        key_id.0,
        tenant.0,
        rate_limits.clone(),
    )
    .fetch_optional(&mut *tx)
    .await?;
    if key.is_some() {
        super::audit::record(
            &mut tx,
            super::audit::Event {
                tenant: Some(tenant),
                actor,
                action: Action::KeyChanged,
                client_ip,
                details: serde_json::json!({ "key_id": key_id, "rate_limits": rate_limits }),
            },
        )
        .await?;
    }
    tx.commit().await?;
    Ok(key)
}

/// Splits `ghk_<id>_<secret>`; `None` when the shape is wrong.
fn parse(token: &str) -> Option<(KeyId, &str)> {
    let rest = token.strip_prefix(KEY_PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    if id.len() != 32 || secret.len() != 64 {
        return None;
    }
    Some((KeyId(Uuid::try_parse(id).ok()?), secret))
}

/// The live key a bearer token belongs to: not revoked, not expired, tenant enabled, and the
/// secret equal (in constant time) to the current one or, during a rotation's grace period,
/// the previous one.
pub async fn verify(pool: &PgPool, token: &str) -> Result<Option<LiveKey>, sqlx::Error> {
    let Some((key_id, secret)) = parse(token) else {
        return Ok(None);
    };
    // Platform scope: the key's tenant is what we are about to learn.
    let mut tx = db::begin(pool, Scope::Platform).await?;
    let row = live_row(&mut tx, key_id).await?;
    let presented = sha256(secret);
    // Compare against a dummy when the key is unknown so both paths cost the same.
    let dummy = [0u8; 32];
    let (current, previous) = match &row {
        Some(r) => (
            r.secret_sha256.as_slice(),
            r.previous_secret_sha256
                .as_deref()
                .filter(|_| r.previous_valid)
                .unwrap_or(&dummy),
        ),
        None => (&dummy[..], &dummy[..]),
    };
    let matches_current: bool = presented.as_slice().ct_eq(current).into();
    let matches_previous: bool = presented.as_slice().ct_eq(previous).into();
    match row {
        Some(r) if matches_current || (matches_previous && r.previous_valid) => {
            sqlx::query!(
                "UPDATE api_keys SET last_used_at = now() WHERE key_id = $1 AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute')",
                key_id.0,
            )
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(Some(LiveKey {
                key_id,
                tenant_id: r.tenant_id,
                scopes: r.scopes,
                ip_allowlist: r.ip_allowlist,
                rate_limits: r.rate_limits,
                tenant_rate_limits: r.tenant_rate_limits,
            }))
        }
        _ => Ok(None),
    }
}

/// The key behind a token derived from it, if it is still live (revocation, expiry and a
/// disabled tenant take effect on the next request, on every replica).
pub async fn live(pool: &PgPool, key_id: KeyId) -> Result<Option<LiveKey>, sqlx::Error> {
    let mut tx = db::begin(pool, Scope::Platform).await?;
    let row = live_row(&mut tx, key_id).await?;
    tx.commit().await?;
    Ok(row.map(|r| LiveKey {
        key_id,
        tenant_id: r.tenant_id,
        scopes: r.scopes,
        ip_allowlist: r.ip_allowlist,
        rate_limits: r.rate_limits,
        tenant_rate_limits: r.tenant_rate_limits,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_parse_only_in_their_exact_shape() {
        let id = KeyId::new();
        let secret = "ab".repeat(32);
        let token = format!("ghk_{}_{secret}", id.0.simple());
        assert_eq!(parse(&token), Some((id, secret.as_str())));
        assert_eq!(parse(&token[..token.len() - 1]), None);
        assert_eq!(parse(&token.replacen("ghk_", "ghx_", 1)), None);
        assert_eq!(parse("ghk_"), None);
        assert_eq!(parse(""), None);
    }
}
