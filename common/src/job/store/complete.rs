use sqlx::PgPool;

use crate::{
    audit::Action,
    db::{self, CHUNK_DONE_CHANNEL, JOB_DONE_CHANNEL, Scope},
    job::result::{ChunkModel, CodecError, ItemError, StoredOutcome},
    queue::ChunkMessage,
    types::JobStatus,
};

/// How a chunk ended: processed, or given up after too many attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkEnd {
    Done,
    Dead,
}

impl ChunkEnd {
    fn status(self) -> &'static str {
        match self {
            ChunkEnd::Done => "done",
            ChunkEnd::Dead => "dead",
        }
    }

    fn outcome(self) -> &'static str {
        match self {
            ChunkEnd::Done => "success",
            ChunkEnd::Dead => "dead_lettered",
        }
    }
}

/// A chunk's results, ready to commit.
pub struct Completion<'a> {
    pub chunk: &'a ChunkMessage,
    /// `(item index, outcome)`.
    pub outcomes: &'a [(i32, StoredOutcome)],
    pub end: ChunkEnd,
    /// The models that judged the chunk (moderation), stored with it.
    pub models: &'a [ChunkModel],
    /// The audit actor (`worker:<host>:<pid>`).
    pub actor: &'a str,
    pub audit: serde_json::Value,
    /// `GATEHOUSE_WEBHOOK_PROGRESS_INTERVAL_SECS`: a running job's `job.progress` webhook
    /// event at most this often.
    pub progress_interval: std::time::Duration,
    /// `GATEHOUSE_DEFAULT_RETENTION_DAYS`, for the job object of a webhook event.
    pub default_retention_days: i32,
}

/// What one committed chunk changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    pub succeeded: i32,
    pub failed: i32,
    pub job_status: JobStatus,
}

#[derive(Debug, thiserror::Error)]
pub enum CompleteError {
    #[error("database error")]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Codec(#[from] CodecError),
}

struct CompleteRow {
    flipped: i64,
    succeeded: i32,
    failed: i32,
    job_status: Option<String>,
    /// The webhook event this statement's transition raised, if an enabled endpoint takes it.
    event_type: Option<String>,
}

/// Writes a chunk's results, flips the chunk, bumps the job's counters (finishing the job
/// when it was the last), refunds the quota of the items that failed, writes the chunk's
/// audit record and notifies waiters of a finished job — one statement, one round trip. When
/// that statement raised a webhook event (`job.completed` / `job.failed` / `job.cancelled`
/// when it finished the job, a due `job.progress`) that an enabled endpoint takes, the event
/// is recorded in the same transaction ([`crate::webhook::record_job_event`]: two more
/// statements, only then). `None`: the chunk was already finished (a redelivery or a
/// concurrent duplicate); nothing was written.
pub async fn complete(
    pool: &PgPool,
    done: Completion<'_>,
) -> Result<Option<Applied>, CompleteError> {
    let n = done.outcomes.len();
    let mut indexes = Vec::with_capacity(n);
    let mut statuses = Vec::with_capacity(n);
    let mut results: Vec<Option<Vec<u8>>> = Vec::with_capacity(n);
    let mut errors: Vec<Option<serde_json::Value>> = Vec::with_capacity(n);
    for (index, outcome) in done.outcomes {
        indexes.push(*index);
        match outcome {
            StoredOutcome::Failed(error) => {
                statuses.push("failed");
                results.push(None);
                errors.push(Some(item_error_json(error)));
            }
            ok => {
                statuses.push("succeeded");
                results.push(ok.encode()?);
                errors.push(None);
            }
        }
    }
    let models =
        serde_json::to_value(done.models).map_err(|e| CodecError::Encode(e.to_string()))?;
    let chunk = done.chunk;
    // Keyed look-ups only (the refund joins the written items by key): see the claim.
    let mut tx = db::begin_point_lookups(pool, Scope::Tenant(chunk.tenant_id)).await?;
    let row = sqlx::query_as!(
        CompleteRow,
        r#"
        WITH flipped AS (
            UPDATE job_chunks SET status = $3, completed_at = now(), models = $4
            WHERE job_id = $1 AND chunk_index = $2 AND status = 'pending'
            RETURNING chunk_index
        ), written AS (
            INSERT INTO job_results (job_id, item_index, tenant_id, chunk_index, status, result, error)
            SELECT $1, u.idx, $5, $2, u.status, u.result, u.error
            FROM UNNEST($6::int4[], $7::text[], $8::bytea[], $9::jsonb[])
                 AS u(idx, status, result, error)
            WHERE EXISTS (SELECT 1 FROM flipped)
            ON CONFLICT DO NOTHING
            RETURNING status, item_index
        ), counts AS (
            SELECT (count(*) FILTER (WHERE status = 'succeeded'))::int4 AS ok,
                   (count(*) FILTER (WHERE status = 'failed'))::int4 AS bad
            FROM written
        ), job AS (
            UPDATE jobs j SET
                succeeded = j.succeeded + counts.ok,
                failed = j.failed + counts.bad,
                status = CASE
                    WHEN j.status = 'cancelled' THEN j.status
                    WHEN j.succeeded + j.failed + j.cancelled + counts.ok + counts.bad >= j.total
                        THEN CASE
                            WHEN j.status = 'cancelling' THEN 'cancelled'
                            WHEN j.succeeded + counts.ok = 0 THEN 'failed'
                            ELSE 'completed' END
                    WHEN j.status = 'cancelling' THEN j.status
                    ELSE 'running' END,
                completed_at = CASE
                    WHEN j.succeeded + j.failed + j.cancelled + counts.ok + counts.bad >= j.total
                        THEN now()
                    ELSE j.completed_at END,
                -- webhooks: a running job's progress event is due (at most every $16 s).
                last_progress_event_at = CASE
                    WHEN j.status = 'running' AND counts.ok + counts.bad > 0
                     AND j.succeeded + j.failed + j.cancelled + counts.ok + counts.bad < j.total
                     AND (j.last_progress_event_at IS NULL
                          OR j.last_progress_event_at <= now() - make_interval(secs => $16))
                    THEN now() ELSE j.last_progress_event_at END
            FROM counts
            WHERE j.job_id = $1 AND EXISTS (SELECT 1 FROM flipped)
            RETURNING j.status, j.tenant_id, j.total, j.succeeded, j.failed, j.cancelled,
                      j.webhook_endpoint_id, j.last_progress_event_at,
                      counts.ok + counts.bad AS added
        ), event AS (
            -- The webhook event of this transition: the job's end when *this* statement's
            -- counts crossed its total (concurrent chunks cannot both see that), a progress
            -- event when one is due — if an enabled endpoint takes it.
            SELECT e.event_type FROM job CROSS JOIN LATERAL (SELECT CASE
                WHEN job.status IN ('completed', 'failed', 'cancelled')
                     AND job.succeeded + job.failed + job.cancelled - job.added < job.total
                    THEN 'job.' || job.status
                WHEN job.status = 'running' AND job.added > 0
                     AND job.last_progress_event_at = now()
                    THEN 'job.progress'
                END AS event_type) e
            WHERE e.event_type IS NOT NULL
              AND gatehouse_webhook_wanted(job.tenant_id, job.webhook_endpoint_id, e.event_type)
        ), refunds AS (
            SELECT count(*)::int8 AS n, coalesce(sum(char_length(i.input)), 0)::int8 AS chars
            FROM written w JOIN job_items i ON i.job_id = $1 AND i.item_index = w.item_index
            WHERE w.status = 'failed'
        ), refunded AS (
            UPDATE quota_usage q SET
                items = greatest(q.items - r.n, 0),
                characters = greatest(q.characters - r.chars, 0),
                failed_items = q.failed_items + r.n
            FROM refunds r, jobs j
            WHERE r.n > 0 AND j.job_id = $1 AND q.tenant_id = j.tenant_id
              AND q.day = j.quota_day AND q.kind = j.kind
        ), audit AS (
            INSERT INTO audit_events (tenant_id, actor, action, job_id, chunk_index, outcome,
                                      details, target_type, target_id)
            SELECT $5, $10, $11, $1, $2, $12, $13, 'job', 'job_' || replace($1::text, '-', '')
            FROM flipped
            ON CONFLICT DO NOTHING
        ), notified AS (
            SELECT pg_notify($14, $1::text) FROM job
            WHERE job.status IN ('completed', 'failed', 'cancelled')
            UNION ALL
            SELECT pg_notify($15, '') FROM flipped
        )
        SELECT (SELECT count(*) FROM flipped) AS "flipped!", counts.ok AS "succeeded!",
               counts.bad AS "failed!", (SELECT status FROM job) AS job_status,
               (SELECT event_type FROM event) AS event_type
        FROM counts
        WHERE (SELECT count(*) FROM notified) >= 0
        "#,
        chunk.job_id.0,
        chunk.chunk_index,
        done.end.status(),
        models,
        chunk.tenant_id.0,
        &indexes,
        &statuses as _,
        &results as _,
        &errors as _,
        done.actor,
        Action::JobChunkProcessed.as_str(),
        done.end.outcome(),
        done.audit,
        JOB_DONE_CHANNEL,
        CHUNK_DONE_CHANNEL,
        done.progress_interval.as_secs_f64(),
    )
    .fetch_one(&mut *tx)
    .await?;
    if let Some(event) = row.event_type.as_deref().and_then(|e| e.parse().ok()) {
        let view = crate::job::view::View {
            now: chrono::Utc::now(),
            default_retention_days: done.default_retention_days,
        };
        crate::webhook::record_job_event(&mut tx, chunk.job_id, event, view).await?;
    }
    tx.commit().await?;
    if row.flipped == 0 {
        return Ok(None);
    }
    let job_status = row
        .job_status
        .as_deref()
        .and_then(|s| s.parse().ok())
        .unwrap_or(JobStatus::Running);
    Ok(Some(Applied {
        succeeded: row.succeeded,
        failed: row.failed,
        job_status,
    }))
}

fn item_error_json(error: &ItemError) -> serde_json::Value {
    serde_json::to_value(error).unwrap_or_else(|_| serde_json::json!({"code": "unknown"}))
}
