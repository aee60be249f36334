//! The lifecycle SQL of a job, in one place: [`submit`] (the api's two submission paths),
//! [`claim`] (a worker takes a chunk: attempts, items, options and policy in one statement)
//! and [`complete`] (results, chunk, counters, audit record and the done notification in one
//! statement). Exactly-once effects live in `complete`: the chunk row flips from `pending`
//! once, and only the statement that flips it writes anything.

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use sqlx::PgPool;

use super::{
    options::JobOptions,
    result::{ChunkModel, CodecError, ItemError, StoredOutcome},
};
use crate::{
    audit::Action,
    db::{self, JOB_DONE_CHANNEL, Scope},
    queue::{ChunkMessage, QueueMessage},
    types::{JobId, JobKind, JobStatus, KeyId, TenantId},
};

/// A job row as the api shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRecord {
    pub id: JobId,
    pub kind: JobKind,
    pub status: JobStatus,
    pub shared: bool,
    pub total: i32,
    pub succeeded: i32,
    pub failed: i32,
    pub created_at: DateTime<Utc>,
    pub completed_at: Option<DateTime<Utc>>,
}

#[derive(sqlx::FromRow)]
struct JobRow {
    job_id: JobId,
    kind: String,
    status: String,
    shared: bool,
    total: i32,
    succeeded: i32,
    failed: i32,
    created_at: DateTime<Utc>,
    completed_at: Option<DateTime<Utc>>,
}

/// The columns of [`JobRecord`], for queries that return jobs.
pub const JOB_COLUMNS: &str =
    "job_id, kind, status, shared, total, succeeded, failed, created_at, completed_at";

impl JobRecord {
    /// Reads a row selected with [`JOB_COLUMNS`].
    pub fn from_row(row: &sqlx::postgres::PgRow) -> Result<Self, sqlx::Error> {
        use sqlx::FromRow;
        JobRow::from_row(row)?.try_into()
    }
}

impl TryFrom<JobRow> for JobRecord {
    type Error = sqlx::Error;
    fn try_from(row: JobRow) -> Result<Self, Self::Error> {
        let decode = |e: String| sqlx::Error::Decode(e.into());
        Ok(JobRecord {
            id: row.job_id,
            kind: row.kind.parse().map_err(decode)?,
            status: row.status.parse().map_err(decode)?,
            shared: row.shared,
            total: row.total,
            succeeded: row.succeeded,
            failed: row.failed,
            created_at: row.created_at,
            completed_at: row.completed_at,
        })
    }
}

/// One item as submitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewItem {
    pub custom_id: Option<String>,
    pub text: String,
}

/// A validated submission.
pub struct NewJob<'a> {
    pub tenant_id: TenantId,
    pub key_id: Option<KeyId>,
    /// `key_…` or `usr_…`: the principal (owner, idempotency scope, audit actor).
    pub actor: &'a str,
    pub client_ip: Option<std::net::IpAddr>,
    pub options: &'a JobOptions,
    pub idempotency_key: Option<&'a str>,
    pub items: &'a [NewItem],
    /// Items per chunk (queue message).
    pub chunk_items: usize,
}

pub enum Submitted {
    Created(JobRecord),
    /// This principal already sent this `Idempotency-Key` with the same request.
    Replayed(JobRecord),
    /// This principal already sent this `Idempotency-Key` with a different request.
    KeyReused(JobId),
}

/// SHA-256 of the request as validated (kind, options, custom ids, texts), to tell a replay
/// from a different request under the same idempotency key.
pub fn request_hash(options: &JobOptions, items: &[NewItem]) -> Vec<u8> {
    let mut hash = Sha256::new();
    let mut field = |bytes: &[u8]| {
        hash.update((bytes.len() as u64).to_le_bytes());
        hash.update(bytes);
    };
    field(options.kind().as_str().as_bytes());
    field(options.to_json().to_string().as_bytes());
    for item in items {
        match &item.custom_id {
            Some(id) => field(id.as_bytes()),
            None => field(b"\xff"),
        }
        field(item.text.as_bytes());
    }
    hash.finalize().to_vec()
}

/// Stores the job, its items, its chunks, one outbox message per chunk and its audit record,
/// atomically; or finds the job an idempotent replay refers to.
pub async fn submit(pool: &PgPool, new: NewJob<'_>) -> Result<Submitted, sqlx::Error> {
    let total = i32::try_from(new.items.len()).map_err(|e| sqlx::Error::Protocol(e.to_string()))?;
    let kind = new.options.kind();
    let job_id = JobId::new();
    let request_sha256 = new
        .idempotency_key
        .map(|_| request_hash(new.options, new.items));
    let mut tx = db::begin(pool, Scope::Tenant(new.tenant_id)).await?;
    let row = sqlx::query_as!(
        JobRow,
        r#"
        INSERT INTO jobs (job_id, tenant_id, key_id, kind, total, idempotency_key, created_by,
                          options, policy_version, request_sha256)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8,
                (SELECT coalesce(max(version), 0) FROM moderation_policies WHERE tenant_id = $2),
                $9)
        ON CONFLICT (tenant_id, created_by, idempotency_key) WHERE idempotency_key IS NOT NULL
        DO NOTHING
        RETURNING job_id AS "job_id: JobId", kind, status, shared, total, succeeded, failed,
                  created_at, completed_at
        "#,
        job_id.0,
        new.tenant_id.0,
        new.key_id.map(|k| k.0),
        kind.as_str(),
        total,
        new.idempotency_key,
        new.actor,
        new.options.to_json(),
        request_sha256.as_deref(),
    )
    .fetch_optional(&mut *tx)
    .await?;
    let Some(row) = row else {
        let replay = sqlx::query!(
            r#"
            SELECT job_id AS "job_id: JobId", kind, status, shared, total, succeeded, failed,
                   created_at, completed_at, request_sha256
            FROM jobs WHERE tenant_id = $1 AND created_by = $2 AND idempotency_key = $3
            "#,
            new.tenant_id.0,
            new.actor,
            new.idempotency_key.unwrap_or_default(),
        )
        .fetch_one(&mut *tx)
        .await?;
        let job = JobRow {
            job_id: replay.job_id,
            kind: replay.kind,
            status: replay.status,
            shared: replay.shared,
            total: replay.total,
            succeeded: replay.succeeded,
            failed: replay.failed,
            created_at: replay.created_at,
            completed_at: replay.completed_at,
        };
        tx.commit().await?;
        if replay.request_sha256 != request_sha256 {
            return Ok(Submitted::KeyReused(job.job_id));
        }
        return Ok(Submitted::Replayed(job.try_into()?));
    };

    let indexes: Vec<i32> = (0..total).collect();
    let custom_ids: Vec<Option<&str>> = new.items.iter().map(|i| i.custom_id.as_deref()).collect();
    let texts: Vec<&str> = new.items.iter().map(|i| i.text.as_str()).collect();
    sqlx::query!(
        r"
        INSERT INTO job_items (job_id, tenant_id, item_index, custom_id, input)
        SELECT $1, $2, * FROM UNNEST($3::int4[], $4::text[], $5::text[])
        ",
        job_id.0,
        new.tenant_id.0,
        &indexes,
        &custom_ids as _,
        &texts as _,
    )
    .execute(&mut *tx)
    .await?;

    let chunk = i32::try_from(new.chunk_items.max(1)).unwrap_or(i32::MAX);
    let mut chunk_indexes = Vec::new();
    let mut starts = Vec::new();
    let mut ends = Vec::new();
    let mut payloads = Vec::new();
    let mut start = 0;
    while start < total {
        let end = start.saturating_add(chunk).min(total);
        let index = i32::try_from(chunk_indexes.len()).unwrap_or(i32::MAX);
        let message = QueueMessage::ChunkV1(ChunkMessage {
            job_id,
            tenant_id: new.tenant_id,
            kind,
            chunk_index: index,
            item_start: start,
            item_end: end,
        });
        payloads.push(
            message
                .to_json()
                .map_err(|e| sqlx::Error::Protocol(e.to_string()))?,
        );
        chunk_indexes.push(index);
        starts.push(start);
        ends.push(end);
        start = end;
    }
    sqlx::query!(
        r"
        INSERT INTO job_chunks (job_id, tenant_id, chunk_index, item_start, item_end)
        SELECT $1, $2, * FROM UNNEST($3::int4[], $4::int4[], $5::int4[])
        ",
        job_id.0,
        new.tenant_id.0,
        &chunk_indexes,
        &starts,
        &ends,
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query!(
        "INSERT INTO outbox (routing_key, payload) SELECT $1, * FROM UNNEST($2::jsonb[])",
        kind.as_str(),
        &payloads,
    )
    .execute(&mut *tx)
    .await?;
    crate::audit::insert(
        &mut tx,
        crate::audit::Record {
            client_ip: new.client_ip,
            job_id: Some(job_id),
            details: serde_json::json!({
                "kind": kind, "items": total, "chunks": chunk_indexes.len()
            }),
            ..crate::audit::Record::new(Some(new.tenant_id), new.actor, Action::JobCreated)
        },
    )
    .await?;
    tx.commit().await?;
    Ok(Submitted::Created(row.try_into()?))
}

/// A chunk a worker has taken: its attempt counter already bumped (and committed, so a
/// worker that crashes on a poison message still counts towards the bound), with everything
/// needed to process it.
#[derive(Debug, Clone)]
pub struct Claim {
    pub attempts: i32,
    /// The previous attempt's error, if it failed.
    pub last_error: Option<String>,
    /// The job's options; `Err` (permanent: retrying cannot help) when the stored options do
    /// not parse.
    pub options: Result<JobOptions, String>,
    /// The moderation policy version the job was accepted under (0 = built-in default).
    pub policy_version: i32,
    /// That version's policy, unless it is 0 or the caller said it has it cached.
    pub policy: Option<serde_json::Value>,
    /// `(index, text)` of the chunk's items without a result, in order.
    pub items: Vec<(i32, String)>,
}

struct ClaimRow {
    attempts: i32,
    last_error: Option<String>,
    kind: String,
    options: serde_json::Value,
    policy_version: i32,
    policy: Option<serde_json::Value>,
    indexes: Vec<i32>,
    texts: Vec<String>,
}

/// Claims a pending chunk in one statement: bumps its attempts, marks the job running, and
/// returns its pending items, the job's options and (unless `cached_policies` holds its
/// version) the job's policy. `None`: the chunk is already done (a redelivery) or unknown.
pub async fn claim(
    pool: &PgPool,
    chunk: &ChunkMessage,
    cached_policies: &[i32],
) -> Result<Option<Claim>, sqlx::Error> {
    let mut tx = db::begin(pool, Scope::Tenant(chunk.tenant_id)).await?;
    let row = sqlx::query_as!(
        ClaimRow,
        r#"
        WITH claimed AS (
            UPDATE job_chunks SET attempts = attempts + 1, last_attempt_at = now()
            WHERE job_id = $1 AND chunk_index = $2 AND status = 'pending'
            RETURNING attempts, last_error, item_start, item_end
        ), started AS (
            UPDATE jobs SET status = 'running', started_at = coalesce(started_at, now())
            WHERE job_id = $1 AND status = 'queued' AND EXISTS (SELECT 1 FROM claimed)
        )
        SELECT c.attempts AS "attempts!", c.last_error, j.kind, j.options, j.policy_version,
               CASE WHEN j.policy_version = 0 OR j.policy_version = ANY($3) THEN NULL
                    ELSE (SELECT p.policy FROM moderation_policies p
                          WHERE p.tenant_id = j.tenant_id AND p.version = j.policy_version)
               END AS policy,
               ARRAY(SELECT i.item_index FROM job_items i
                     WHERE i.job_id = $1 AND i.item_index >= c.item_start
                       AND i.item_index < c.item_end
                       AND NOT EXISTS (SELECT 1 FROM job_results r
                                       WHERE r.job_id = $1 AND r.item_index = i.item_index)
                     ORDER BY i.item_index) AS "indexes!",
               ARRAY(SELECT i.input FROM job_items i
                     WHERE i.job_id = $1 AND i.item_index >= c.item_start
                       AND i.item_index < c.item_end
                       AND NOT EXISTS (SELECT 1 FROM job_results r
                                       WHERE r.job_id = $1 AND r.item_index = i.item_index)
                     ORDER BY i.item_index) AS "texts!"
        FROM claimed c JOIN jobs j ON j.job_id = $1
        "#,
        chunk.job_id.0,
        chunk.chunk_index,
        cached_policies,
    )
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;
    let Some(row) = row else { return Ok(None) };
    let options = row
        .kind
        .parse::<JobKind>()
        .and_then(|kind| JobOptions::parse(kind, Some(row.options)).map_err(|e| e.to_string()));
    Ok(Some(Claim {
        attempts: row.attempts,
        last_error: row.last_error,
        options,
        policy_version: row.policy_version,
        policy: row.policy,
        items: row.indexes.into_iter().zip(row.texts).collect(),
    }))
}

/// Keeps the last transient error on the chunk, for operators and the give-up message.
pub async fn record_error(
    pool: &PgPool,
    chunk: &ChunkMessage,
    error: &str,
) -> Result<(), sqlx::Error> {
    let mut tx = db::begin(pool, Scope::Tenant(chunk.tenant_id)).await?;
    sqlx::query!(
        "UPDATE job_chunks SET last_error = $3 WHERE job_id = $1 AND chunk_index = $2",
        chunk.job_id.0,
        chunk.chunk_index,
        error,
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

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
}

/// Writes a chunk's results, flips the chunk, bumps the job's counters (finishing the job
/// when it was the last), writes the chunk's audit record and notifies waiters of a finished
/// job — one statement, one round trip. `None`: the chunk was already finished (a redelivery
/// or a concurrent duplicate); nothing was written.
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
    let mut tx = db::begin(pool, Scope::Tenant(chunk.tenant_id)).await?;
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
            RETURNING status
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
                    WHEN j.succeeded + j.failed + counts.ok + counts.bad >= j.total
                        THEN CASE WHEN j.succeeded + counts.ok = 0 THEN 'failed' ELSE 'completed' END
                    ELSE 'running' END,
                completed_at = CASE
                    WHEN j.succeeded + j.failed + counts.ok + counts.bad >= j.total THEN now()
                    ELSE j.completed_at END
            FROM counts
            WHERE j.job_id = $1 AND EXISTS (SELECT 1 FROM flipped)
            RETURNING j.status
        ), audit AS (
            INSERT INTO audit_events (tenant_id, actor, action, job_id, chunk_index, outcome, details)
            SELECT $5, $10, $11, $1, $2, $12, $13 FROM flipped
            ON CONFLICT DO NOTHING
        ), notified AS (
            SELECT pg_notify($14, $1::text) FROM job WHERE job.status IN ('completed', 'failed')
        )
        SELECT (SELECT count(*) FROM flipped) AS "flipped!", counts.ok AS "succeeded!",
               counts.bad AS "failed!", (SELECT status FROM job) AS job_status
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
    )
    .fetch_one(&mut *tx)
    .await?;
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
