//! `quota_usage`: what tenants used per UTC day and kind.

use chrono::NaiveDate;
use gatehouse_common::{
    db::{self, Scope},
    types::TenantId,
};
use serde::Serialize;
use sqlx::PgPool;

/// One day of one kind (of one tenant).
#[derive(Debug, Clone, Serialize)]
pub struct UsageRow {
    pub day: NaiveDate,
    pub tenant: TenantId,
    pub kind: String,
    /// Items accepted that did not fail (failed and cancelled ones are refunded).
    pub items: i64,
    pub characters: i64,
    pub jobs: i32,
    pub failed_items: i64,
}

/// Usage between `from` and `to` (inclusive), for one tenant or (operators) all.
pub async fn between(
    pool: &PgPool,
    tenant: Option<TenantId>,
    from: NaiveDate,
    to: NaiveDate,
) -> Result<Vec<UsageRow>, sqlx::Error> {
    let scope = tenant.map_or(Scope::Platform, Scope::Tenant);
    let mut tx = db::begin(pool, scope).await?;
    let rows = sqlx::query_as!(
        UsageRow,
        r#"
        SELECT day, tenant_id AS "tenant: TenantId", kind, items, characters, jobs, failed_items
        FROM quota_usage
        WHERE ($1::uuid IS NULL OR tenant_id = $1) AND day BETWEEN $2 AND $3
        ORDER BY day, tenant_id, kind
        "#,
        tenant.map(|t| t.0),
        from,
        to,
    )
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(rows)
}
