//! `api_keys`: secrets are generated here, shown once, and stored only as SHA-256.
//!
//! Wire format: `ghk_<key id hex>_<secret hex>`. The `ghk_` prefix lets secret scanners find
//! leaked keys; the id lets us look the row up without scanning hashes; the secret is 256
//! random bits compared in constant time.

use chrono::{DateTime, Utc};
use gatehouse_common::types::{KeyId, TenantId};
use rand::RngCore;
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use subtle::ConstantTimeEq;
use uuid::Uuid;

pub const KEY_PREFIX: &str = "ghk_";

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct ApiKey {
    #[serde(rename = "id")]
    pub key_id: KeyId,
    pub tenant_id: TenantId,
    pub name: String,
    pub created_at: DateTime<Utc>,
}

fn sha256(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

pub async fn create(
    pool: &PgPool,
    tenant: TenantId,
    name: &str,
    actor: &str,
) -> Result<(ApiKey, String), sqlx::Error> {
    let key_id = KeyId::new();
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let secret = hex::encode(bytes);
    let token = format!("{KEY_PREFIX}{}_{secret}", key_id.0.simple());
    let mut tx = pool.begin().await?;
    let key: ApiKey = sqlx::query_as(
        r"
        INSERT INTO api_keys (key_id, tenant_id, name, secret_sha256) VALUES ($1, $2, $3, $4)
        RETURNING key_id, tenant_id, name, created_at
        ",
    )
    .bind(key_id)
    .bind(tenant)
    .bind(name)
    .bind(sha256(&secret).as_slice())
    .fetch_one(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO audit_events (tenant_id, actor, action, details) VALUES ($1, $2, 'key.created', $3)",
    )
    .bind(tenant)
    .bind(actor)
    .bind(serde_json::json!({ "key_id": key_id.to_string(), "name": name }))
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok((key, token))
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

/// The tenant and key a bearer token belongs to, if it is a live key of an enabled tenant.
pub async fn verify(pool: &PgPool, token: &str) -> Result<Option<(TenantId, KeyId)>, sqlx::Error> {
    let Some((key_id, secret)) = parse(token) else {
        return Ok(None);
    };
    let row: Option<(TenantId, Vec<u8>)> = sqlx::query_as(
        r"
        SELECT k.tenant_id, k.secret_sha256 FROM api_keys k
        JOIN tenants t ON t.tenant_id = k.tenant_id
        WHERE k.key_id = $1 AND k.revoked_at IS NULL AND t.enabled
        ",
    )
    .bind(key_id)
    .fetch_optional(pool)
    .await?;
    let presented = sha256(secret);
    // Compare against a dummy when the key is unknown so both paths cost the same.
    let (tenant, stored) = match row {
        Some((tenant, stored)) => (Some(tenant), stored),
        None => (None, vec![0u8; 32]),
    };
    let equal: bool = presented.as_slice().ct_eq(stored.as_slice()).into();
    match tenant {
        Some(tenant) if equal => {
            sqlx::query(
                "UPDATE api_keys SET last_used_at = now() WHERE key_id = $1 AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute')",
            )
            .bind(key_id)
            .execute(pool)
            .await?;
            Ok(Some((tenant, key_id)))
        }
        _ => Ok(None),
    }
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
