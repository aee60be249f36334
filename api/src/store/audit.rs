//! `audit_events` as the api writes and reads them. Writing goes through the one insert in
//! `gatehouse_common::audit` (typed actions); this module keeps the identity events' shape
//! (actor, tenant, client IP, outcome) and the tenant's audit feed.

use std::net::IpAddr;

use gatehouse_common::{
    audit::{self, Action},
    types::TenantId,
};
use sqlx::{Postgres, Transaction};

pub struct Event<'a> {
    pub tenant: Option<TenantId>,
    pub actor: &'a str,
    pub action: Action,
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
    audit::insert(
        tx,
        audit::Record {
            outcome,
            client_ip: event.client_ip,
            details: event.details,
            ..audit::Record::new(event.tenant, event.actor, event.action)
        },
    )
    .await
}

/// One audit record as the API shows it.
#[derive(Debug, serde::Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct AuditRecord {
    #[serde(rename = "id")]
    pub audit_id: i64,
    pub actor: String,
    pub action: String,
    pub outcome: String,
    #[schema(value_type = Option<String>)]
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
