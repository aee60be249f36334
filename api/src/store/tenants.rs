//! `tenants`.

use chrono::{DateTime, Utc};
use gatehouse_common::types::TenantId;
use serde::Serialize;
use sqlx::PgPool;

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Tenant {
    #[serde(rename = "id")]
    pub tenant_id: TenantId,
    pub slug: String,
    pub name: String,
    pub enabled: bool,
    pub scopes: Vec<String>,
    pub created_at: DateTime<Utc>,
}

/// `Acme Corp.` → `acme-corp`: lowercase ASCII letters and digits joined by single dashes.
pub fn slugify(name: &str) -> String {
    let mut slug = String::new();
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            slug.push(c.to_ascii_lowercase());
        } else if !slug.is_empty() && !slug.ends_with('-') {
            slug.push('-');
        }
    }
    let slug = slug.trim_end_matches('-');
    slug.chars()
        .take(63)
        .collect::<String>()
        .trim_end_matches('-')
        .to_string()
}

pub async fn create(
    pool: &PgPool,
    name: &str,
    slug: &str,
    actor: &str,
) -> Result<Tenant, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let tenant: Tenant = sqlx::query_as(
        r"
        INSERT INTO tenants (tenant_id, name, slug) VALUES ($1, $2, $3)
        RETURNING tenant_id, slug, name, enabled, scopes, created_at
        ",
    )
    .bind(TenantId::new())
    .bind(name)
    .bind(slug)
    .fetch_one(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO audit_events (tenant_id, actor, action, details) VALUES ($1, $2, 'tenant.created', $3)",
    )
    .bind(tenant.tenant_id)
    .bind(actor)
    .bind(serde_json::json!({ "name": name, "slug": slug }))
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(tenant)
}

pub async fn exists(pool: &PgPool, id: TenantId) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM tenants WHERE tenant_id = $1)")
        .bind(id)
        .fetch_one(pool)
        .await
}

#[cfg(test)]
mod tests {
    use super::slugify;

    #[test]
    fn slugs_are_lowercase_dashed_ascii() {
        assert_eq!(slugify("Acme Corp."), "acme-corp");
        assert_eq!(slugify("  --Globex__Intl 2026 "), "globex-intl-2026");
        assert_eq!(slugify("日本"), "");
    }
}
