//! Audit retention: records older than the tenant's `audit_retention_days` (default
//! `GATEHOUSE_AUDIT_RETENTION_DAYS`, never below 90) are deleted — by the one SECURITY
//! DEFINER function allowed to, `gatehouse_audit_purge` — after a signed `anchor`
//! checkpoint of the last deleted record is written in the same transaction. The chain then
//! verifies from the anchor (its hash is the first remaining record's `prev_hash`), and an
//! `audit.purged` record names what went. The platform's own chain is not purged.

use chrono::{DateTime, Duration, SubsecRound as _, Utc};
use gatehouse_common::{
    audit::{self, Action},
    config::MIN_AUDIT_RETENTION_DAYS,
    db::{self, Scope},
    types::TenantId,
};
use sqlx::PgPool;

use super::{
    checkpoints,
    signing::{CheckpointSigner, SignError, Statement},
};

/// What one tenant's purge removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditPurged {
    pub tenant: TenantId,
    pub through_seq: i64,
    pub removed: i64,
    pub anchor: i64,
}

/// Purges every tenant's expired audit records at `now`.
pub async fn purge_expired(
    pool: &PgPool,
    signer: &CheckpointSigner,
    now: DateTime<Utc>,
    default_days: i32,
) -> Result<Vec<AuditPurged>, SignError> {
    let mut tx = db::begin(pool, Scope::Platform).await?;
    let tenants = sqlx::query!(
        r#"SELECT tenant_id AS "tenant_id: TenantId", audit_retention_days FROM tenants"#
    )
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    let mut purged = Vec::new();
    for t in tenants {
        let days = t
            .audit_retention_days
            .unwrap_or(default_days)
            .max(MIN_AUDIT_RETENTION_DAYS);
        let cutoff = now - Duration::days(i64::from(days));
        if let Some(p) = purge_tenant(pool, signer, t.tenant_id, cutoff, now).await? {
            purged.push(p);
        }
    }
    Ok(purged)
}

async fn purge_tenant(
    pool: &PgPool,
    signer: &CheckpointSigner,
    tenant: TenantId,
    cutoff: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<Option<AuditPurged>, SignError> {
    let mut tx = db::begin(pool, Scope::Tenant(tenant)).await?;
    // The last record such that it and every record before it are older than the cutoff.
    let last = sqlx::query!(
        r#"
        SELECT a.seq, a.hash FROM audit_events a
        WHERE a.tenant_id = $1 AND a.created_at < $2
          AND a.seq < coalesce((SELECT min(n.seq) FROM audit_events n
                                WHERE n.tenant_id = $1 AND n.created_at >= $2), 9223372036854775807)
        ORDER BY a.seq DESC LIMIT 1
        "#,
        tenant.0,
        cutoff,
    )
    .fetch_optional(&mut *tx)
    .await?;
    let Some(last) = last else {
        return Ok(None);
    };
    let statement = Statement {
        tenant: Some(tenant),
        seq: last.seq,
        head: Some(last.hash),
        kind: "anchor",
        at: now.trunc_subsecs(0),
    };
    let anchor = checkpoints::insert(&mut tx, signer, &statement).await?;
    let removed = sqlx::query_scalar!(
        r#"SELECT gatehouse_audit_purge($1, $2) AS "removed!""#,
        tenant.0,
        last.seq,
    )
    .fetch_one(&mut *tx)
    .await?;
    audit::insert(
        &mut tx,
        audit::Record {
            details: serde_json::json!({
                "through_seq": last.seq, "removed": removed, "anchor_checkpoint": anchor,
            }),
            ..audit::Record::new(Some(tenant), "system:retention", Action::AuditPurged)
        },
    )
    .await?;
    tx.commit().await?;
    metrics::counter!("gatehouse_api_audit_purged_records_total").increment(removed as u64);
    Ok(Some(AuditPurged {
        tenant,
        through_seq: last.seq,
        removed,
        anchor,
    }))
}
