//! The worker's Postgres writes. The exactly-once effect lives here: a chunk's row flips from
//! `pending` exactly once, under a row lock, in the same transaction that writes its items'
//! results, bumps the job's counters and writes the chunk's audit record. A redelivered
//! message finds the chunk already flipped and writes nothing.

use gatehouse_common::{
    db::{self, Scope},
    queue::ChunkMessage,
    types::JobStatus,
};
use serde_json::Value;
use sqlx::PgPool;

/// A chunk claimed for processing (its attempt counter already bumped and committed, so a
/// worker that crashes on a poison message still counts towards the bound).
#[derive(Debug, Clone, Copy)]
pub struct Claim {
    pub attempts: i32,
}

/// Bumps the attempt counter of a pending chunk and marks its job running.
/// `None`: the chunk is already done (a redelivery) or unknown.
pub async fn claim(pool: &PgPool, chunk: &ChunkMessage) -> Result<Option<Claim>, sqlx::Error> {
    let mut tx = db::begin(pool, Scope::Tenant(chunk.tenant_id)).await?;
    let attempts: Option<i32> = sqlx::query_scalar(
        r"
        WITH claimed AS (
            UPDATE job_chunks SET attempts = attempts + 1, last_attempt_at = now()
            WHERE job_id = $1 AND chunk_index = $2 AND status = 'pending'
            RETURNING attempts
        ), started AS (
            UPDATE jobs SET status = 'running', started_at = coalesce(started_at, now())
            WHERE job_id = $1 AND status = 'queued' AND EXISTS (SELECT 1 FROM claimed)
        )
        SELECT attempts FROM claimed
        ",
    )
    .bind(chunk.job_id)
    .bind(chunk.chunk_index)
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(attempts.map(|attempts| Claim { attempts }))
}

/// The chunk's items still pending, in order: `(index, text)`.
pub async fn pending_items(
    pool: &PgPool,
    chunk: &ChunkMessage,
) -> Result<Vec<(i32, String)>, sqlx::Error> {
    let mut tx = db::begin(pool, Scope::Tenant(chunk.tenant_id)).await?;
    let items = sqlx::query_as(
        r"
        SELECT item_index, input FROM job_items
        WHERE job_id = $1 AND item_index >= $2 AND item_index < $3 AND status = 'pending'
        ORDER BY item_index
        ",
    )
    .bind(chunk.job_id)
    .bind(chunk.item_start)
    .bind(chunk.item_end)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(items)
}

/// The job's options (`{}` when none).
pub async fn job_options(pool: &PgPool, chunk: &ChunkMessage) -> Result<Value, sqlx::Error> {
    let mut tx = db::begin(pool, Scope::Tenant(chunk.tenant_id)).await?;
    let options: Option<Value> = sqlx::query_scalar("SELECT options FROM jobs WHERE job_id = $1")
        .bind(chunk.job_id)
        .fetch_optional(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(options.unwrap_or_else(|| Value::Object(Default::default())))
}

/// The moderation policy the job was accepted under: its version (0 = the built-in default)
/// and, for a stored version, the policy itself.
pub async fn job_policy(
    pool: &PgPool,
    chunk: &ChunkMessage,
) -> Result<(i32, Option<Value>), sqlx::Error> {
    let mut tx = db::begin(pool, Scope::Tenant(chunk.tenant_id)).await?;
    let row: Option<(i32, Option<Value>)> = sqlx::query_as(
        r"
        SELECT j.policy_version, p.policy
        FROM jobs j
        LEFT JOIN moderation_policies p
               ON p.tenant_id = j.tenant_id AND p.version = j.policy_version
        WHERE j.job_id = $1
        ",
    )
    .bind(chunk.job_id)
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(row.unwrap_or((0, None)))
}

/// Keeps the last transient error on the chunk, for operators.
pub async fn record_error(
    pool: &PgPool,
    chunk: &ChunkMessage,
    error: &str,
) -> Result<(), sqlx::Error> {
    let mut tx = db::begin(pool, Scope::Tenant(chunk.tenant_id)).await?;
    sqlx::query("UPDATE job_chunks SET last_error = $3 WHERE job_id = $1 AND chunk_index = $2")
        .bind(chunk.job_id)
        .bind(chunk.chunk_index)
        .bind(error)
        .execute(&mut *tx)
        .await?;
    tx.commit().await
}

pub async fn last_error(
    pool: &PgPool,
    chunk: &ChunkMessage,
) -> Result<Option<String>, sqlx::Error> {
    let mut tx = db::begin(pool, Scope::Tenant(chunk.tenant_id)).await?;
    let error: Option<Option<String>> = sqlx::query_scalar(
        "SELECT last_error FROM job_chunks WHERE job_id = $1 AND chunk_index = $2",
    )
    .bind(chunk.job_id)
    .bind(chunk.chunk_index)
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(error.flatten())
}

/// One item's outcome: a result or an error object.
#[derive(Debug, Clone)]
pub enum ItemOutcome {
    Succeeded(Value),
    Failed(Value),
}

/// How the chunk ended: `done` (processed) or `dead` (given up after too many attempts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkEnd {
    Done,
    Dead,
}

/// What one committed chunk changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    pub succeeded: i32,
    pub failed: i32,
    pub job_status: JobStatus,
}

/// Writes the results of a chunk, its counters and its audit record in one transaction.
/// Returns `None` when the chunk was already finished (nothing is written).
pub async fn complete_chunk(
    pool: &PgPool,
    chunk: &ChunkMessage,
    outcomes: &[(i32, ItemOutcome)],
    end: ChunkEnd,
    audit: Value,
) -> Result<Option<Applied>, sqlx::Error> {
    let mut tx = db::begin(pool, Scope::Tenant(chunk.tenant_id)).await?;
    let status: Option<String> = sqlx::query_scalar(
        "SELECT status FROM job_chunks WHERE job_id = $1 AND chunk_index = $2 FOR UPDATE",
    )
    .bind(chunk.job_id)
    .bind(chunk.chunk_index)
    .fetch_optional(&mut *tx)
    .await?;
    if status.as_deref() != Some("pending") {
        tx.rollback().await?;
        return Ok(None);
    }

    let mut indexes = Vec::with_capacity(outcomes.len());
    let mut statuses = Vec::with_capacity(outcomes.len());
    let mut results: Vec<Option<Value>> = Vec::with_capacity(outcomes.len());
    let mut errors: Vec<Option<Value>> = Vec::with_capacity(outcomes.len());
    for (index, outcome) in outcomes {
        indexes.push(*index);
        match outcome {
            ItemOutcome::Succeeded(v) => {
                statuses.push("succeeded");
                results.push(Some(v.clone()));
                errors.push(None);
            }
            ItemOutcome::Failed(e) => {
                statuses.push("failed");
                results.push(None);
                errors.push(Some(e.clone()));
            }
        }
    }
    let written: Vec<String> = sqlx::query_scalar(
        r"
        UPDATE job_items AS i
        SET status = u.status, result = u.result, error = u.error, processed_at = now()
        FROM UNNEST($2::int4[], $3::text[], $4::jsonb[], $5::jsonb[]) AS u(idx, status, result, error)
        WHERE i.job_id = $1 AND i.item_index = u.idx AND i.status = 'pending'
        RETURNING i.status
        ",
    )
    .bind(chunk.job_id)
    .bind(&indexes)
    .bind(&statuses)
    .bind(&results)
    .bind(&errors)
    .fetch_all(&mut *tx)
    .await?;
    let succeeded =
        i32::try_from(written.iter().filter(|s| *s == "succeeded").count()).unwrap_or(i32::MAX);
    let failed = i32::try_from(written.len()).unwrap_or(i32::MAX) - succeeded;

    let end_status = match end {
        ChunkEnd::Done => "done",
        ChunkEnd::Dead => "dead",
    };
    sqlx::query(
        r"
        UPDATE job_chunks SET status = $3, completed_at = now()
        WHERE job_id = $1 AND chunk_index = $2
        ",
    )
    .bind(chunk.job_id)
    .bind(chunk.chunk_index)
    .bind(end_status)
    .execute(&mut *tx)
    .await?;

    let job_status: String = sqlx::query_scalar(
        r"
        UPDATE jobs SET
            succeeded = succeeded + $2,
            failed = failed + $3,
            status = CASE
                WHEN status = 'cancelled' THEN status
                WHEN succeeded + failed + $2 + $3 >= total
                    THEN CASE WHEN succeeded + $2 = 0 THEN 'failed' ELSE 'completed' END
                ELSE 'running' END,
            completed_at = CASE
                WHEN succeeded + failed + $2 + $3 >= total THEN now() ELSE completed_at END
        WHERE job_id = $1
        RETURNING status
        ",
    )
    .bind(chunk.job_id)
    .bind(succeeded)
    .bind(failed)
    .fetch_one(&mut *tx)
    .await?;
    if matches!(job_status.as_str(), "completed" | "failed") {
        // Delivered at commit: api replicas waiting on this job (sync endpoints) wake up.
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(gatehouse_common::db::JOB_DONE_CHANNEL)
            .bind(chunk.job_id.0.to_string())
            .execute(&mut *tx)
            .await?;
    }

    sqlx::query(
        r"
        INSERT INTO audit_events (tenant_id, actor, action, job_id, chunk_index, outcome, details)
        VALUES ($1, $2, 'job.chunk.processed', $3, $4, $5, $6)
        ON CONFLICT DO NOTHING
        ",
    )
    .bind(chunk.tenant_id)
    .bind(format!("worker:{}", worker_id()))
    .bind(chunk.job_id)
    .bind(chunk.chunk_index)
    .bind(if end == ChunkEnd::Done {
        "success"
    } else {
        "dead_lettered"
    })
    .bind(audit)
    .execute(&mut *tx)
    .await?;

    tx.commit().await?;
    Ok(Some(Applied {
        succeeded,
        failed,
        job_status: job_status.parse().unwrap_or(JobStatus::Running),
    }))
}

/// `hostname:pid`, recorded as the audit actor.
pub fn worker_id() -> &'static str {
    static ID: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    ID.get_or_init(|| {
        let host = std::fs::read_to_string("/etc/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "unknown".into());
        format!("{host}:{}", std::process::id())
    })
}
