//! `jobs`, `job_items`, `job_chunks` and `outbox`: a submission is one transaction.

use chrono::{DateTime, Utc};
use gatehouse_common::db::{self, Scope};
use gatehouse_common::{
    queue::{ChunkMessage, QueueMessage},
    types::{JobId, JobKind, JobStatus, KeyId, TenantId},
};
use serde::Serialize;
use sqlx::PgPool;

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct Counts {
    pub total: i32,
    pub succeeded: i32,
    pub failed: i32,
}

/// The job object of the public API.
#[derive(Debug, Clone, Serialize)]
pub struct Job {
    pub id: JobId,
    pub kind: JobKind,
    pub status: JobStatus,
    /// Shared with the whole tenant (guests may read it).
    pub shared: bool,
    pub counts: Counts,
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

impl TryFrom<JobRow> for Job {
    type Error = sqlx::Error;
    fn try_from(row: JobRow) -> Result<Self, Self::Error> {
        let decode = |e: String| sqlx::Error::Decode(e.into());
        Ok(Job {
            id: row.job_id,
            kind: row.kind.parse().map_err(decode)?,
            status: row.status.parse().map_err(decode)?,
            shared: row.shared,
            counts: Counts {
                total: row.total,
                succeeded: row.succeeded,
                failed: row.failed,
            },
            created_at: row.created_at,
            completed_at: row.completed_at,
        })
    }
}

const JOB_COLUMNS: &str =
    "job_id, kind, status, shared, total, succeeded, failed, created_at, completed_at";

/// Which of a tenant's jobs a principal may see.
#[derive(Debug, Clone, Copy)]
pub enum Visibility<'a> {
    /// Every job of the tenant (admins).
    All,
    /// Jobs submitted by this principal, and shared ones (reviewers, keys).
    OwnOrShared(&'a str),
    /// Shared jobs only (guests).
    Shared,
}

impl Visibility<'_> {
    fn owner(&self) -> Option<&str> {
        match self {
            Visibility::OwnOrShared(owner) => Some(owner),
            _ => None,
        }
    }

    fn restricted(&self) -> bool {
        !matches!(self, Visibility::All)
    }
}

/// SQL: visible when unrestricted, shared, or submitted by the owner (`$owner`, `$restricted`).
fn visible(owner: usize, restricted: usize) -> String {
    format!("(NOT ${restricted}::bool OR shared OR created_by = ${owner}::text)")
}

pub struct NewJob<'a> {
    pub tenant_id: TenantId,
    pub key_id: Option<KeyId>,
    pub actor: String,
    pub kind: JobKind,
    pub idempotency_key: Option<&'a str>,
    pub custom_ids: Vec<Option<String>>,
    pub texts: Vec<String>,
    pub options: serde_json::Value,
    pub chunk_items: usize,
}

pub enum Inserted {
    Created(Job),
    /// This principal already sent this `Idempotency-Key` with the same request.
    Replayed(Job),
    /// This principal already sent this `Idempotency-Key` with a different request.
    KeyReused(JobId),
}

/// SHA-256 of the request as validated (kind, options, custom ids, texts), to tell a replay
/// from a different request under the same idempotency key.
fn request_hash(new: &NewJob<'_>) -> Vec<u8> {
    use sha2::{Digest, Sha256};
    let mut hash = Sha256::new();
    let mut field = |bytes: &[u8]| {
        hash.update((bytes.len() as u64).to_le_bytes());
        hash.update(bytes);
    };
    field(new.kind.as_str().as_bytes());
    field(new.options.to_string().as_bytes());
    for (id, text) in new.custom_ids.iter().zip(&new.texts) {
        match id {
            Some(id) => field(id.as_bytes()),
            None => field(b"\xff"),
        }
        field(text.as_bytes());
    }
    hash.finalize().to_vec()
}

/// Stores the job, its items, its chunks and one outbox message per chunk, atomically.
pub async fn insert(pool: &PgPool, new: NewJob<'_>) -> Result<Inserted, sqlx::Error> {
    let total = i32::try_from(new.texts.len()).map_err(|e| sqlx::Error::Protocol(e.to_string()))?;
    let job_id = JobId::new();
    let request_sha256 = new.idempotency_key.map(|_| request_hash(&new));
    let mut tx = db::begin(pool, Scope::Tenant(new.tenant_id)).await?;
    let row: Option<JobRow> = sqlx::query_as(&format!(
        r"
        INSERT INTO jobs (job_id, tenant_id, key_id, kind, total, idempotency_key, created_by,
                          options, policy_version, request_sha256)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8,
                (SELECT coalesce(max(version), 0) FROM moderation_policies WHERE tenant_id = $2),
                $9)
        ON CONFLICT (tenant_id, created_by, idempotency_key) WHERE idempotency_key IS NOT NULL
        DO NOTHING
        RETURNING {JOB_COLUMNS}
        "
    ))
    .bind(job_id)
    .bind(new.tenant_id)
    .bind(new.key_id)
    .bind(new.kind.as_str())
    .bind(total)
    .bind(new.idempotency_key)
    .bind(&new.actor)
    .bind(&new.options)
    .bind(&request_sha256)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(row) = row else {
        let key = new.idempotency_key.unwrap_or_default();
        let (existing, hash): (JobRow, Option<Vec<u8>>) = {
            #[derive(sqlx::FromRow)]
            struct Replay {
                #[sqlx(flatten)]
                job: JobRow,
                request_sha256: Option<Vec<u8>>,
            }
            let replay: Replay = sqlx::query_as(&format!(
                "SELECT {JOB_COLUMNS}, request_sha256 FROM jobs
                 WHERE tenant_id = $1 AND created_by = $2 AND idempotency_key = $3"
            ))
            .bind(new.tenant_id)
            .bind(&new.actor)
            .bind(key)
            .fetch_one(&mut *tx)
            .await?;
            (replay.job, replay.request_sha256)
        };
        tx.commit().await?;
        if hash != request_sha256 {
            return Ok(Inserted::KeyReused(existing.job_id));
        }
        return Ok(Inserted::Replayed(existing.try_into()?));
    };

    let indexes: Vec<i32> = (0..total).collect();
    sqlx::query(
        r"
        INSERT INTO job_items (job_id, tenant_id, item_index, custom_id, input)
        SELECT $1, $5, * FROM UNNEST($2::int4[], $3::text[], $4::text[])
        ",
    )
    .bind(job_id)
    .bind(&indexes)
    .bind(&new.custom_ids)
    .bind(&new.texts)
    .bind(new.tenant_id)
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
            kind: new.kind,
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
    sqlx::query(
        r"
        INSERT INTO job_chunks (job_id, tenant_id, chunk_index, item_start, item_end)
        SELECT $1, $5, * FROM UNNEST($2::int4[], $3::int4[], $4::int4[])
        ",
    )
    .bind(job_id)
    .bind(&chunk_indexes)
    .bind(&starts)
    .bind(&ends)
    .bind(new.tenant_id)
    .execute(&mut *tx)
    .await?;
    sqlx::query("INSERT INTO outbox (routing_key, payload) SELECT $1, * FROM UNNEST($2::jsonb[])")
        .bind(new.kind.as_str())
        .bind(&payloads)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        r"
        INSERT INTO audit_events (tenant_id, actor, action, job_id, details)
        VALUES ($1, $2, 'job.created', $3, $4)
        ",
    )
    .bind(new.tenant_id)
    .bind(&new.actor)
    .bind(job_id)
    .bind(serde_json::json!({ "kind": new.kind, "items": total, "chunks": chunk_indexes.len() }))
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Inserted::Created(row.try_into()?))
}

/// The job if it belongs to `tenant` (another tenant's job does not exist for the caller)
/// and `visibility` lets the caller see it.
pub async fn get(
    pool: &PgPool,
    tenant: TenantId,
    id: JobId,
    visibility: Visibility<'_>,
) -> Result<Option<Job>, sqlx::Error> {
    let mut tx = db::begin(pool, Scope::Tenant(tenant)).await?;
    let row: Option<JobRow> = sqlx::query_as(&format!(
        "SELECT {JOB_COLUMNS} FROM jobs WHERE job_id = $1 AND tenant_id = $2 AND {}",
        visible(3, 4)
    ))
    .bind(id)
    .bind(tenant)
    .bind(visibility.owner())
    .bind(visibility.restricted())
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;
    row.map(Job::try_from).transpose()
}

/// One line of the results stream.
#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct ResultLine {
    pub index: i32,
    pub custom_id: Option<String>,
    pub status: String,
    pub result: Option<serde_json::Value>,
    pub error: Option<serde_json::Value>,
}

/// Finished items after `after` (exclusive), in submission order.
pub async fn results_page(
    pool: &PgPool,
    tenant: TenantId,
    job: JobId,
    after: i32,
    limit: i64,
) -> Result<Vec<ResultLine>, sqlx::Error> {
    let mut tx = db::begin(pool, Scope::Tenant(tenant)).await?;
    let lines = sqlx::query_as(
        r"
        SELECT item_index AS index, custom_id, status, result, error FROM job_items
        WHERE job_id = $1 AND item_index > $2 AND status <> 'pending'
        ORDER BY item_index
        LIMIT $3
        ",
    )
    .bind(job)
    .bind(after)
    .bind(limit)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(lines)
}

/// The tenant's jobs the caller may see, newest first, after the cursor.
pub async fn list(
    pool: &PgPool,
    tenant: TenantId,
    visibility: Visibility<'_>,
    before: Option<JobId>,
    limit: i64,
) -> Result<Vec<Job>, sqlx::Error> {
    let mut tx = db::begin(pool, Scope::Tenant(tenant)).await?;
    let rows: Vec<JobRow> = sqlx::query_as(&format!(
        r"
        SELECT {JOB_COLUMNS} FROM jobs
        WHERE tenant_id = $1 AND {}
          AND ($4::uuid IS NULL OR job_id < $4)
        ORDER BY job_id DESC
        LIMIT $5
        ",
        visible(2, 3)
    ))
    .bind(tenant)
    .bind(visibility.owner())
    .bind(visibility.restricted())
    .bind(before)
    .bind(limit)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    rows.into_iter().map(Job::try_from).collect()
}

/// Shares (or unshares) a job with its tenant, if `visibility` lets the caller manage it.
pub async fn set_shared(
    pool: &PgPool,
    tenant: TenantId,
    id: JobId,
    shared: bool,
    manage: Visibility<'_>,
    actor: &str,
    client_ip: Option<std::net::IpAddr>,
) -> Result<Option<Job>, sqlx::Error> {
    let mut tx = db::begin(pool, Scope::Tenant(tenant)).await?;
    let row: Option<JobRow> = sqlx::query_as(&format!(
        r"
        UPDATE jobs SET shared = $3
        WHERE job_id = $1 AND tenant_id = $2 AND (NOT $5 OR created_by = $4)
        RETURNING {JOB_COLUMNS}
        "
    ))
    .bind(id)
    .bind(tenant)
    .bind(shared)
    .bind(manage.owner())
    .bind(manage.restricted())
    .fetch_optional(&mut *tx)
    .await?;
    if row.is_some() {
        super::audit::record(
            &mut tx,
            super::audit::Event {
                tenant: Some(tenant),
                actor,
                action: if shared { "job.shared" } else { "job.unshared" },
                client_ip,
                details: serde_json::json!({ "job_id": id }),
            },
        )
        .await?;
    }
    tx.commit().await?;
    row.map(Job::try_from).transpose()
}
