//! Retention: a finished job older than its tenant's `retention_days` (default
//! `GATEHOUSE_DEFAULT_RETENTION_DAYS`) loses its texts, results and refused lines; its row,
//! counts and audit trail stay, `purged_at` set (its results then answer `410 expired`).
//! Uploaded files older than the retention lose their bytes the same way. One process purges
//! at a time (a transaction-level advisory lock); each round is one transaction over a
//! bounded number of jobs, so a crash loses nothing but the round.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use crate::{
    audit::{self, Action},
    db::{self, Scope},
    types::{FileId, JobId, TenantId},
};

/// `pg_try_advisory_xact_lock` key of the purge ("gh-purg").
const PURGE_LOCK: i64 = 0x0067_682d_7075_7267;

/// What one round removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Purged {
    pub jobs: u64,
    pub items: u64,
    pub files: u64,
    /// Another process held the purge lock: nothing was done.
    pub skipped: bool,
}

/// One round at `now`: at most `max_jobs` expired jobs and `max_jobs` expired files.
pub async fn purge_expired(
    pool: &PgPool,
    now: DateTime<Utc>,
    default_days: i32,
    max_jobs: i64,
    actor: &str,
) -> Result<Purged, sqlx::Error> {
    let mut tx = db::begin(pool, Scope::Platform).await?;
    let locked = sqlx::query_scalar!(
        r#"SELECT pg_try_advisory_xact_lock($1) AS "l!""#,
        PURGE_LOCK
    )
    .fetch_one(&mut *tx)
    .await?;
    if !locked {
        tx.rollback().await?;
        return Ok(Purged {
            skipped: true,
            ..Purged::default()
        });
    }
    let jobs = sqlx::query!(
        r#"
        UPDATE jobs j SET purged_at = $1
        FROM (
            SELECT j.job_id FROM jobs j JOIN tenants t ON t.tenant_id = j.tenant_id
            WHERE j.purged_at IS NULL AND j.status IN ('completed', 'failed', 'cancelled')
              AND j.created_at + make_interval(days => coalesce(t.retention_days, $2)) <= $1
            ORDER BY j.created_at
            LIMIT $3
            FOR UPDATE OF j SKIP LOCKED
        ) expired
        WHERE j.job_id = expired.job_id
        RETURNING j.job_id AS "job_id: JobId", j.tenant_id AS "tenant_id: TenantId"
        "#,
        now,
        default_days,
        max_jobs,
    )
    .fetch_all(&mut *tx)
    .await?;
    let ids: Vec<uuid::Uuid> = jobs.iter().map(|j| j.job_id.0).collect();
    let mut items = 0;
    if !ids.is_empty() {
        sqlx::query!("DELETE FROM job_results WHERE job_id = ANY($1)", &ids)
            .execute(&mut *tx)
            .await?;
        sqlx::query!("DELETE FROM job_line_errors WHERE job_id = ANY($1)", &ids)
            .execute(&mut *tx)
            .await?;
        items = sqlx::query!("DELETE FROM job_items WHERE job_id = ANY($1)", &ids)
            .execute(&mut *tx)
            .await?
            .rows_affected();
    }
    let files = sqlx::query!(
        r#"
        UPDATE files f SET deleted_at = $1
        FROM (
            SELECT f.file_id FROM files f JOIN tenants t ON t.tenant_id = f.tenant_id
            WHERE f.deleted_at IS NULL AND f.kind = 'upload'
              AND f.created_at + make_interval(days => coalesce(t.retention_days, $2)) <= $1
            ORDER BY f.created_at
            LIMIT $3
            FOR UPDATE OF f SKIP LOCKED
        ) expired
        WHERE f.file_id = expired.file_id
        RETURNING f.file_id AS "file_id: FileId", f.tenant_id AS "tenant_id: TenantId"
        "#,
        now,
        default_days,
        max_jobs,
    )
    .fetch_all(&mut *tx)
    .await?;
    let file_ids: Vec<uuid::Uuid> = files.iter().map(|f| f.file_id.0).collect();
    if !file_ids.is_empty() {
        sqlx::query!("DELETE FROM file_parts WHERE file_id = ANY($1)", &file_ids)
            .execute(&mut *tx)
            .await?;
    }
    // One audit record per tenant touched.
    let mut tenants: std::collections::HashMap<TenantId, (Vec<String>, Vec<String>)> =
        Default::default();
    for j in &jobs {
        tenants
            .entry(j.tenant_id)
            .or_default()
            .0
            .push(j.job_id.to_string());
    }
    for f in &files {
        tenants
            .entry(f.tenant_id)
            .or_default()
            .1
            .push(f.file_id.to_string());
    }
    for (tenant, (jobs, files)) in tenants {
        audit::insert(
            &mut tx,
            audit::Record {
                details: serde_json::json!({"jobs": jobs, "files": files}),
                ..audit::Record::new(Some(tenant), actor, Action::RetentionPurged)
            },
        )
        .await?;
    }
    tx.commit().await?;
    Ok(Purged {
        jobs: ids.len() as u64,
        items,
        files: file_ids.len() as u64,
        skipped: false,
    })
}
