//! Cancelling a job: in one statement, every chunk not yet taken by a worker is cancelled
//! (its items counted as cancelled and their quota refunded), and the job becomes
//! `cancelling` while taken chunks finish — their results are kept — or `cancelled` at once
//! when none is in flight. A worker that later receives a cancelled chunk's message finds it
//! not pending and acks it; a chunk a worker claims at the same moment is either claimed
//! first (and processed) or cancelled first (and skipped): both updates lock the chunk row.

use sqlx::PgPool;

use super::{JobRecord, JobRow};
use crate::{
    audit::{self, Action},
    db::{self, JOB_DONE_CHANNEL, Scope},
    types::{JobId, TenantId},
    webhook::EventType,
};

/// What a cancel found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cancelled {
    /// The job is now `cancelling` or `cancelled` (or already was).
    Done(JobRecord),
    /// The job had already finished (`completed` / `failed`): nothing to cancel.
    Finished(JobRecord),
}

/// Cancels `job` of `tenant` (`None`: no such job for this tenant).
pub async fn cancel(
    pool: &PgPool,
    tenant: TenantId,
    job: JobId,
    actor: &str,
    client_ip: Option<std::net::IpAddr>,
    default_retention_days: i32,
) -> Result<Option<Cancelled>, sqlx::Error> {
    let mut tx = db::begin(pool, Scope::Tenant(tenant)).await?;
    let status = sqlx::query_scalar!(
        "SELECT status FROM jobs WHERE job_id = $1 AND tenant_id = $2 FOR UPDATE",
        job.0,
        tenant.0
    )
    .fetch_optional(&mut *tx)
    .await?;
    let Some(status) = status else {
        return Ok(None);
    };
    if matches!(status.as_str(), "queued" | "running") {
        let row = sqlx::query!(
            r#"
            WITH skipped AS (
                UPDATE job_chunks SET status = 'cancelled', completed_at = now()
                WHERE job_id = $1 AND status = 'pending' AND attempts = 0
                RETURNING item_start, item_end
            ), counted AS (
                SELECT coalesce(sum(item_end - item_start), 0)::int4 AS n FROM skipped
            ), chars AS (
                SELECT coalesce(sum(char_length(i.input)), 0)::int8 AS c
                FROM skipped s
                JOIN job_items i ON i.job_id = $1
                     AND i.item_index >= s.item_start AND i.item_index < s.item_end
            ), job AS (
                UPDATE jobs j SET
                    cancelled = j.cancelled + counted.n,
                    cancelled_at = now(),
                    status = CASE WHEN j.succeeded + j.failed + j.cancelled + counted.n >= j.total
                                  THEN 'cancelled' ELSE 'cancelling' END,
                    completed_at = CASE
                        WHEN j.succeeded + j.failed + j.cancelled + counted.n >= j.total
                        THEN now() ELSE j.completed_at END
                FROM counted
                WHERE j.job_id = $1
                RETURNING j.status, j.tenant_id, j.quota_day, j.kind
            ), refunded AS (
                UPDATE quota_usage q SET
                    items = greatest(q.items - counted.n, 0),
                    characters = greatest(q.characters - chars.c, 0)
                FROM counted, chars, job
                WHERE counted.n > 0 AND q.tenant_id = job.tenant_id
                  AND q.day = job.quota_day AND q.kind = job.kind
            ), notified AS (
                SELECT pg_notify($2, $1::text) FROM job WHERE job.status = 'cancelled'
            )
            SELECT (SELECT n FROM counted) AS "skipped!", (SELECT status FROM job) AS "status!"
            FROM (SELECT count(*) FROM notified) AS n
            "#,
            job.0,
            JOB_DONE_CHANNEL,
        )
        .fetch_one(&mut *tx)
        .await?;
        audit::insert(
            &mut tx,
            audit::Record {
                client_ip,
                job_id: Some(job),
                details: serde_json::json!({
                    "cancelled_items": row.skipped, "status": row.status,
                }),
                ..audit::Record::new(Some(tenant), actor, Action::JobCancelled)
            },
        )
        .await?;
        // Cancelled at once (nothing in flight): the webhook event now; otherwise `complete`
        // of the last in-flight chunk raises it.
        if row.status == "cancelled" {
            let view = crate::job::view::View {
                now: chrono::Utc::now(),
                default_retention_days,
            };
            crate::webhook::record_job_event(&mut tx, job, EventType::JobCancelled, view).await?;
        }
    }
    let record: JobRecord = sqlx::query_as!(
        JobRow,
        r#"
        SELECT job_id AS "job_id: JobId", kind, status, shared, total, succeeded, failed,
               created_at, completed_at, cancelled, started_at,
               parent_job_id AS "parent_job_id: JobId", invalid_lines, purged_at
        FROM jobs WHERE job_id = $1
        "#,
        job.0
    )
    .fetch_one(&mut *tx)
    .await?
    .try_into()?;
    tx.commit().await?;
    Ok(Some(match status.as_str() {
        "completed" | "failed" => Cancelled::Finished(record),
        _ => Cancelled::Done(record),
    }))
}
