//! `tenants`.

use chrono::{DateTime, Utc};
use gatehouse_common::audit::Action;
use gatehouse_common::db::{self, Scope};
use gatehouse_common::types::TenantId;
use serde::Serialize;
use sqlx::PgPool;

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Tenant {
    #[serde(rename = "id")]
    pub tenant_id: TenantId,
    pub slug: String,
    pub name: String,
    pub enabled: bool,
    pub scopes: Vec<String>,
    #[schema(value_type = Vec<String>)]
    pub ip_allowlist: Vec<ipnet::IpNet>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Quota settings the operator set (`common::job::quota::QuotaSettings`; a key absent =
    /// the deployment's default, `null` = unlimited).
    pub quotas: serde_json::Value,
    /// Rate-limit settings (`ratelimit::RateSettings`, same convention).
    pub rate_limits: serde_json::Value,
    /// Share of the workers relative to other tenants (fair scheduling), 1–100.
    pub weight: i32,
    /// Days a job's texts and results are kept (`null`: `GATEHOUSE_DEFAULT_RETENTION_DAYS`).
    pub retention_days: Option<i32>,
    /// Days audit records are kept (`null`: `GATEHOUSE_AUDIT_RETENTION_DAYS`; never below 90).
    pub audit_retention_days: Option<i32>,
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

pub struct NewTenant<'a> {
    pub name: &'a str,
    pub slug: &'a str,
    /// `None`: the default (`moderate`).
    pub scopes: Option<&'a [String]>,
    pub ip_allowlist: &'a [ipnet::IpNet],
}

pub async fn create(
    pool: &PgPool,
    new: NewTenant<'_>,
    actor: &str,
    client_ip: Option<std::net::IpAddr>,
) -> Result<Tenant, sqlx::Error> {
    let (name, slug) = (new.name, new.slug);
    let mut tx = db::begin(pool, Scope::Platform).await?;
    let tenant = sqlx::query_as!(
        Tenant,
        r#"
        INSERT INTO tenants (tenant_id, name, slug, scopes, ip_allowlist)
        VALUES ($1, $2, $3, coalesce($4, '{moderate}'::text[]), $5)
        RETURNING tenant_id AS "tenant_id: TenantId", slug, name, enabled, scopes, ip_allowlist,
                  created_at, updated_at, quotas, rate_limits, weight, retention_days,
               audit_retention_days
        "#,
        TenantId::new().0,
        name,
        slug,
        new.scopes,
        new.ip_allowlist,
    )
    .fetch_one(&mut *tx)
    .await?;
    super::audit::record(
        &mut tx,
        super::audit::Event {
            tenant: Some(tenant.tenant_id),
            actor,
            action: Action::TenantCreated,
            client_ip,
            details: serde_json::json!({ "name": name, "slug": slug }),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(tenant)
}

pub async fn exists(pool: &PgPool, id: TenantId) -> Result<bool, sqlx::Error> {
    Ok(get(pool, id).await?.is_some())
}

pub async fn list(
    pool: &PgPool,
    after: Option<TenantId>,
    limit: i64,
) -> Result<Vec<Tenant>, sqlx::Error> {
    let mut tx = db::begin(pool, Scope::Platform).await?;
    let tenants = sqlx::query_as!(
        Tenant,
        r#"
        SELECT tenant_id AS "tenant_id: TenantId", slug, name, enabled, scopes, ip_allowlist,
               created_at, updated_at, quotas, rate_limits, weight, retention_days,
               audit_retention_days
        FROM tenants WHERE ($1::uuid IS NULL OR tenant_id > $1) ORDER BY tenant_id LIMIT $2
        "#,
        after.map(|t| t.0),
        limit,
    )
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(tenants)
}

/// One tenant, seen from inside it (its own row is visible under its own scope).
pub async fn get(pool: &PgPool, id: TenantId) -> Result<Option<Tenant>, sqlx::Error> {
    let mut tx = db::begin(pool, Scope::Tenant(id)).await?;
    let tenant = sqlx::query_as!(
        Tenant,
        r#"
        SELECT tenant_id AS "tenant_id: TenantId", slug, name, enabled, scopes, ip_allowlist,
               created_at, updated_at, quotas, rate_limits, weight, retention_days,
               audit_retention_days
        FROM tenants WHERE tenant_id = $1
        "#,
        id.0,
    )
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(tenant)
}

#[derive(Debug, Default, serde::Serialize)]
pub struct TenantChanges {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scopes: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip_allowlist: Option<Vec<ipnet::IpNet>>,
    /// Laid over the stored settings key by key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quotas: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_limits: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weight: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retention_days: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audit_retention_days: Option<i32>,
}

/// Applies `changes`; keys keep only the scopes the tenant still grants (checked at use).
/// Operators change any tenant (`Scope::Platform`); a tenant admin only its own.
pub async fn update(
    pool: &PgPool,
    id: TenantId,
    changes: &TenantChanges,
    actor: &str,
    client_ip: Option<std::net::IpAddr>,
    scope: Scope,
) -> Result<Option<Tenant>, sqlx::Error> {
    let mut tx = db::begin(pool, scope).await?;
    let tenant = sqlx::query_as!(
        Tenant,
        r#"
        UPDATE tenants SET
            name = coalesce($2, name),
            enabled = coalesce($3, enabled),
            scopes = coalesce($4, scopes),
            ip_allowlist = coalesce($5, ip_allowlist),
            quotas = CASE WHEN $6::jsonb IS NULL THEN quotas ELSE quotas || $6::jsonb END,
            rate_limits = CASE WHEN $7::jsonb IS NULL THEN rate_limits
                               ELSE rate_limits || $7::jsonb END,
            weight = coalesce($8, weight),
            retention_days = coalesce($9, retention_days),
            audit_retention_days = coalesce($10, audit_retention_days),
            updated_at = now()
        WHERE tenant_id = $1
        RETURNING tenant_id AS "tenant_id: TenantId", slug, name, enabled, scopes, ip_allowlist,
                  created_at, updated_at, quotas, rate_limits, weight, retention_days,
               audit_retention_days
        "#,
        id.0,
        changes.name.as_deref(),
        changes.enabled,
        changes.scopes.as_deref(),
        changes.ip_allowlist.as_deref(),
        changes.quotas.clone(),
        changes.rate_limits.clone(),
        changes.weight,
        changes.retention_days,
        changes.audit_retention_days,
    )
    .fetch_optional(&mut *tx)
    .await?;
    if tenant.is_some() {
        super::audit::record(
            &mut tx,
            super::audit::Event {
                tenant: Some(id),
                actor,
                action: Action::TenantChanged,
                client_ip,
                details: serde_json::to_value(changes).unwrap_or_default(),
            },
        )
        .await?;
    }
    tx.commit().await?;
    Ok(tenant)
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
