//! `tenants`.

use chrono::{DateTime, Utc};
use gatehouse_common::types::TenantId;
use serde::Serialize;
use sqlx::PgPool;

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Tenant {
    #[serde(rename = "id")]
    pub tenant_id: TenantId,
    pub name: String,
    pub enabled: bool,
    pub created_at: DateTime<Utc>,
}

pub async fn create(pool: &PgPool, name: &str, actor: &str) -> Result<Tenant, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let tenant: Tenant = sqlx::query_as(
        r"
        INSERT INTO tenants (tenant_id, name) VALUES ($1, $2)
        RETURNING tenant_id, name, enabled, created_at
        ",
    )
    .bind(TenantId::new())
    .bind(name)
    .fetch_one(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO audit_events (tenant_id, actor, action, details) VALUES ($1, $2, 'tenant.created', $3)",
    )
    .bind(tenant.tenant_id)
    .bind(actor)
    .bind(serde_json::json!({ "name": name }))
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
