//! Accepting a job: one transaction that checks the idempotency key, takes the tenant's
//! lock, refuses what the backlog bound or a quota would not allow, reserves the quota, and
//! stores the job, its items and its chunks (sync chunks also get their outbox messages; bulk
//! chunks wait for the dispatcher).

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use sqlx::PgPool;

use super::{JobRecord, JobRow};
use crate::{
    audit::{self, Action},
    db::{self, Scope},
    job::{
        Lane,
        options::JobOptions,
        quota::{self, Cost, DayUsage, QuotaDefaults, QuotaExceeded, QuotaSettings, QuotaState},
    },
    queue::{ChunkMessage, QueueMessage, routing_key},
    types::{JobId, KeyId, TenantId},
};

/// One item as submitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewItem {
    pub custom_id: Option<String>,
    pub text: String,
}

/// What intake allows, from the configuration.
#[derive(Debug, Clone, Copy, Default)]
pub struct Admission {
    pub quota_defaults: QuotaDefaults,
    /// `GATEHOUSE_TENANT_MAX_BACKLOG_ITEMS`: bulk items of one tenant not yet processed.
    pub tenant_max_backlog_items: Option<i64>,
    /// `GATEHOUSE_MAX_BACKLOG_ITEMS`: bulk items of all tenants not yet processed.
    pub max_backlog_items: Option<i64>,
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
    pub lane: Lane,
    /// The clock (quota days are UTC days of this instant).
    pub now: DateTime<Utc>,
    pub admission: &'a Admission,
}

pub enum Submitted {
    Created(JobRecord),
    /// This principal already sent this `Idempotency-Key` with the same request.
    Replayed(JobRecord),
    /// This principal already sent this `Idempotency-Key` with a different request.
    KeyReused(JobId),
}

/// Why intake said no (nothing was stored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    Quota(QuotaExceeded),
    /// The tenant's unprocessed bulk items would pass its bound.
    TenantBacklog {
        limit: i64,
        backlog: i64,
    },
    /// All tenants' unprocessed bulk items would pass the replica-wide bound.
    Backlog {
        limit: i64,
        backlog: i64,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error("database error")]
    Database(#[from] sqlx::Error),
    #[error("refused: {0:?}")]
    Refused(Refusal),
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

/// What `items` cost: items and characters (Unicode scalar values, what translation is billed
/// by).
pub fn cost(items: &[NewItem]) -> Cost {
    Cost {
        items: items.len() as i64,
        characters: items.iter().map(|i| i.text.chars().count() as i64).sum(),
    }
}

/// A replay of this principal's idempotency key, if any.
async fn replay(
    conn: &mut sqlx::PgConnection,
    new: &NewJob<'_>,
    request_sha256: &Option<Vec<u8>>,
) -> Result<Option<Submitted>, sqlx::Error> {
    let Some(key) = new.idempotency_key else {
        return Ok(None);
    };
    let found = sqlx::query!(
        r#"
        SELECT job_id AS "job_id: JobId", kind, status, shared, total, succeeded, failed,
               created_at, completed_at, request_sha256
        FROM jobs WHERE tenant_id = $1 AND created_by = $2 AND idempotency_key = $3
        "#,
        new.tenant_id.0,
        new.actor,
        key,
    )
    .fetch_optional(conn)
    .await?;
    let Some(found) = found else { return Ok(None) };
    if &found.request_sha256 != request_sha256 {
        return Ok(Some(Submitted::KeyReused(found.job_id)));
    }
    let job = JobRow {
        job_id: found.job_id,
        kind: found.kind,
        status: found.status,
        shared: found.shared,
        total: found.total,
        succeeded: found.succeeded,
        failed: found.failed,
        created_at: found.created_at,
        completed_at: found.completed_at,
    };
    Ok(Some(Submitted::Replayed(job.try_into()?)))
}

/// The tenant's quota settings, locking its row for the rest of the transaction: intake of
/// one tenant is serialised, so its quota and backlog checks are exact on any replica count.
async fn lock_tenant(
    conn: &mut sqlx::PgConnection,
    tenant: TenantId,
) -> Result<QuotaSettings, sqlx::Error> {
    let raw = sqlx::query_scalar!(
        "SELECT quotas FROM tenants WHERE tenant_id = $1 FOR NO KEY UPDATE",
        tenant.0
    )
    .fetch_one(conn)
    .await?;
    serde_json::from_value(raw)
        .map_err(|e| sqlx::Error::Decode(format!("tenant quotas: {e}").into()))
}

async fn day_usage(
    conn: &mut sqlx::PgConnection,
    tenant: TenantId,
    day: chrono::NaiveDate,
) -> Result<DayUsage, sqlx::Error> {
    let rows = sqlx::query!(
        "SELECT kind, items, characters FROM quota_usage WHERE tenant_id = $1 AND day = $2",
        tenant.0,
        day
    )
    .fetch_all(conn)
    .await?;
    let mut usage = DayUsage::default();
    for row in rows {
        if let Ok(kind) = row.kind.parse() {
            usage.by_kind.insert(kind, (row.items, row.characters));
        }
    }
    Ok(usage)
}

/// The tenant's quotas today, and whether `cost` of `kind` fits (a dry run: nothing is
/// stored or reserved).
pub async fn quote(
    pool: &PgPool,
    tenant: TenantId,
    kind: crate::types::JobKind,
    cost: Cost,
    now: DateTime<Utc>,
    defaults: QuotaDefaults,
) -> Result<(Vec<QuotaState>, Result<(), QuotaExceeded>), sqlx::Error> {
    let mut tx = db::begin(pool, Scope::Tenant(tenant)).await?;
    let settings: QuotaSettings = serde_json::from_value(
        sqlx::query_scalar!("SELECT quotas FROM tenants WHERE tenant_id = $1", tenant.0)
            .fetch_one(&mut *tx)
            .await?,
    )
    .map_err(|e| sqlx::Error::Decode(format!("tenant quotas: {e}").into()))?;
    let (day, resets_at) = quota::day_of(now);
    let usage = day_usage(&mut tx, tenant, day).await?;
    tx.commit().await?;
    let quotas = quota::effective(&settings, defaults);
    let fits = quota::check(&quotas, &usage, kind, cost, resets_at);
    Ok((quota::states(&quotas, &usage, resets_at), fits))
}

/// Stores the job (see the module docs) or finds the job an idempotent replay refers to.
pub async fn submit(pool: &PgPool, new: NewJob<'_>) -> Result<Submitted, SubmitError> {
    let total = i32::try_from(new.items.len()).map_err(|e| sqlx::Error::Protocol(e.to_string()))?;
    let kind = new.options.kind();
    let job_id = JobId::new();
    let request_sha256 = new
        .idempotency_key
        .map(|_| request_hash(new.options, new.items));
    let cost = cost(new.items);
    let (day, resets_at) = quota::day_of(new.now);

    let mut tx = db::begin(pool, Scope::Tenant(new.tenant_id)).await?;
    if let Some(replayed) = replay(&mut tx, &new, &request_sha256).await? {
        tx.commit().await?;
        return Ok(replayed);
    }
    let settings = lock_tenant(&mut tx, new.tenant_id).await?;
    let admission = new.admission;
    if new.lane == Lane::Bulk {
        if let Some(limit) = admission.tenant_max_backlog_items {
            let backlog = sqlx::query_scalar!(
                r#"
                SELECT coalesce(sum(total - succeeded - failed), 0)::int8 AS "backlog!"
                FROM jobs
                WHERE tenant_id = $1 AND status IN ('queued', 'running') AND lane = 'bulk'
                "#,
                new.tenant_id.0
            )
            .fetch_one(&mut *tx)
            .await?;
            if backlog + cost.items > limit {
                return Err(SubmitError::Refused(Refusal::TenantBacklog {
                    limit,
                    backlog,
                }));
            }
        }
        if let Some(limit) = admission.max_backlog_items {
            let backlog = sqlx::query_scalar!(r#"SELECT gatehouse_bulk_backlog() AS "b!""#)
                .fetch_one(&mut *tx)
                .await?;
            if backlog + cost.items > limit {
                return Err(SubmitError::Refused(Refusal::Backlog { limit, backlog }));
            }
        }
    }
    let quotas = quota::effective(&settings, admission.quota_defaults);
    if quotas.iter().any(|q| q.limit.is_some()) {
        let usage = day_usage(&mut tx, new.tenant_id, day).await?;
        quota::check(&quotas, &usage, kind, cost, resets_at)
            .map_err(|e| SubmitError::Refused(Refusal::Quota(e)))?;
    }

    let row = sqlx::query_as!(
        JobRow,
        r#"
        INSERT INTO jobs (job_id, tenant_id, key_id, kind, total, idempotency_key, created_by,
                          options, policy_version, request_sha256, lane, quota_day, characters)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8,
                (SELECT coalesce(max(version), 0) FROM moderation_policies WHERE tenant_id = $2),
                $9, $10, $11, $12)
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
        new.lane.as_str(),
        day,
        cost.characters,
    )
    .fetch_optional(&mut *tx)
    .await?;
    let Some(row) = row else {
        // The same key raced in from another request and won: this one reserved nothing.
        tx.rollback().await?;
        let mut tx = db::begin(pool, Scope::Tenant(new.tenant_id)).await?;
        let replayed = replay(&mut tx, &new, &request_sha256).await?;
        tx.commit().await?;
        return replayed.ok_or_else(|| {
            SubmitError::Database(sqlx::Error::Protocol("idempotent replay vanished".into()))
        });
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
        if new.lane == Lane::Sync {
            let message = QueueMessage::ChunkV1(ChunkMessage {
                job_id,
                tenant_id: new.tenant_id,
                kind,
                chunk_index: index,
                item_start: start,
                item_end: end,
                lane: Lane::Sync,
            });
            payloads.push(
                message
                    .to_json()
                    .map_err(|e| sqlx::Error::Protocol(e.to_string()))?,
            );
        }
        chunk_indexes.push(index);
        starts.push(start);
        ends.push(end);
        start = end;
    }
    // Sync chunks are released at once (their outbox rows publish them); bulk chunks wait
    // for the dispatcher.
    sqlx::query!(
        r"
        INSERT INTO job_chunks (job_id, tenant_id, chunk_index, item_start, item_end, released_at)
        SELECT $1, $2, c, s, e, CASE WHEN $6 THEN now() END
        FROM UNNEST($3::int4[], $4::int4[], $5::int4[]) AS u(c, s, e)
        ",
        job_id.0,
        new.tenant_id.0,
        &chunk_indexes,
        &starts,
        &ends,
        new.lane == Lane::Sync,
    )
    .execute(&mut *tx)
    .await?;
    if !payloads.is_empty() {
        sqlx::query!(
            "INSERT INTO outbox (routing_key, payload) SELECT $1, * FROM UNNEST($2::jsonb[])",
            routing_key(kind, new.lane),
            &payloads,
        )
        .execute(&mut *tx)
        .await?;
    }
    sqlx::query!(
        r"
        INSERT INTO quota_usage (tenant_id, day, kind, items, characters, jobs)
        VALUES ($1, $2, $3, $4, $5, 1)
        ON CONFLICT (tenant_id, day, kind) DO UPDATE SET
            items = quota_usage.items + EXCLUDED.items,
            characters = quota_usage.characters + EXCLUDED.characters,
            jobs = quota_usage.jobs + 1
        ",
        new.tenant_id.0,
        day,
        kind.as_str(),
        cost.items,
        cost.characters,
    )
    .execute(&mut *tx)
    .await?;
    audit::insert(
        &mut tx,
        audit::Record {
            client_ip: new.client_ip,
            job_id: Some(job_id),
            details: serde_json::json!({
                "kind": kind, "items": total, "characters": cost.characters,
                "chunks": chunk_indexes.len(), "lane": new.lane.as_str(),
            }),
            ..audit::Record::new(Some(new.tenant_id), new.actor, Action::JobCreated)
        },
    )
    .await?;
    tx.commit().await?;
    Ok(Submitted::Created(row.try_into()?))
}
