//! `audit_events`: one helper so every identity event has the same shape (actor, tenant,
//! client IP, time, outcome).

use std::net::IpAddr;

use gatehouse_common::types::TenantId;
use sqlx::{Postgres, Transaction};

pub struct Event<'a> {
    pub tenant: Option<TenantId>,
    pub actor: &'a str,
    pub action: &'static str,
    pub client_ip: Option<IpAddr>,
    pub details: serde_json::Value,
}

pub async fn record(
    tx: &mut Transaction<'_, Postgres>,
    event: Event<'_>,
) -> Result<(), sqlx::Error> {
    record_outcome(tx, event, "success").await
}

pub async fn record_outcome(
    tx: &mut Transaction<'_, Postgres>,
    event: Event<'_>,
    outcome: &'static str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        r"
        INSERT INTO audit_events (tenant_id, actor, action, client_ip, outcome, details)
        VALUES ($1, $2, $3, $4, $5, $6)
        ",
    )
    .bind(event.tenant)
    .bind(event.actor)
    .bind(event.action)
    .bind(event.client_ip.map(ipnet::IpNet::from))
    .bind(outcome)
    .bind(event.details)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// One audit record as the API shows it.
#[derive(Debug, serde::Serialize, sqlx::FromRow)]
pub struct AuditRecord {
    #[serde(rename = "id")]
    pub audit_id: i64,
    pub actor: String,
    pub action: String,
    pub outcome: String,
    pub client_ip: Option<ipnet::IpNet>,
    pub job_id: Option<gatehouse_common::types::JobId>,
    pub chunk_index: Option<i32>,
    pub details: serde_json::Value,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

/// The tenant's audit records, newest first, before the cursor.
pub async fn list(
    pool: &sqlx::PgPool,
    tenant: TenantId,
    before: Option<i64>,
    limit: i64,
) -> Result<Vec<AuditRecord>, sqlx::Error> {
    let mut tx =
        gatehouse_common::db::begin(pool, gatehouse_common::db::Scope::Tenant(tenant)).await?;
    let records = sqlx::query_as(
        r"
        SELECT audit_id, actor, action, outcome, client_ip, job_id, chunk_index, details, created_at
        FROM audit_events
        WHERE tenant_id = $1 AND ($2::int8 IS NULL OR audit_id < $2)
        ORDER BY audit_id DESC
        LIMIT $3
        ",
    )
    .bind(tenant)
    .bind(before)
    .bind(limit)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(records)
}
