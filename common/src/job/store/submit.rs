//! Accepting a job: one transaction that checks the idempotency key, takes the tenant's
//! lock, refuses what the backlog bound or a quota would not allow, reserves the quota, and
//! stores the job, its items and its chunks (sync chunks also get their outbox messages; bulk
//! chunks wait for the dispatcher).

use chrono::{DateTime, Utc};
use futures_util::{StreamExt, stream::BoxStream};
use serde::{Deserialize, Serialize};
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
    /// The input line it came from (jobs from files and NDJSON bodies).
    pub line_no: Option<i32>,
}

impl NewItem {
    pub fn new(custom_id: Option<String>, text: String) -> Self {
        Self {
            custom_id,
            text,
            line_no: None,
        }
    }
}

/// A line of an input that was refused: where, which field, why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LineError {
    pub line: i32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    pub code: String,
    pub message: String,
}

/// One parsed input line: an item, or a refused line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    Item(NewItem),
    Invalid(LineError),
}

/// What to do with invalid lines: refuse the whole input (nothing stored, the first 100 line
/// errors in the answer) or run the good lines and list the bad ones.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnInvalid {
    #[default]
    Reject,
    Skip,
}

/// A job's items: validated in memory, or a stream parsed line by line (memory stays bounded
/// however large the input: items are inserted in batches as they arrive).
pub enum ItemSource<'a> {
    Items(&'a [NewItem]),
    Stream(BoxStream<'a, Result<Parsed, sqlx::Error>>),
}

/// Line errors kept in a refusal (`on_invalid: reject`).
pub const MAX_REPORTED_LINE_ERRORS: usize = 100;
/// Items inserted per statement while a stream is read.
const INSERT_BATCH: usize = 2000;

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
    pub items: ItemSource<'a>,
    pub on_invalid: OnInvalid,
    /// Most items accepted (`GATEHOUSE_MAX_ITEMS_PER_JOB`).
    pub max_items: usize,
    /// Items per chunk (queue message).
    pub chunk_items: usize,
    /// The file the items came from, the job this one retries.
    pub input_file: Option<uuid::Uuid>,
    pub parent_job: Option<JobId>,
    pub lane: Lane,
    /// The clock (quota days are UTC days of this instant).
    pub now: DateTime<Utc>,
    pub admission: &'a Admission,
    /// `"webhook": {"endpoint_id"}`: the one endpoint of the tenant this job's webhook events
    /// go to (`None`: every endpoint that takes them).
    pub webhook_endpoint: Option<crate::types::EndpointId>,
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
    /// More items than `max_items`.
    TooManyItems {
        max: usize,
    },
    /// Some lines were invalid and `on_invalid` is `reject`: the first
    /// [`MAX_REPORTED_LINE_ERRORS`] errors and how many there were.
    InvalidLines {
        errors: Vec<LineError>,
        total: usize,
    },
    /// Nothing to run (an empty input, or every line invalid).
    NoItems {
        invalid: usize,
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
/// from a different request under the same idempotency key; fed item by item.
pub struct RequestHash(Sha256);

impl RequestHash {
    pub fn new(options: &JobOptions) -> Self {
        let mut hash = Self(Sha256::new());
        hash.field(options.kind().as_str().as_bytes());
        hash.field(options.to_json().to_string().as_bytes());
        hash
    }

    fn field(&mut self, bytes: &[u8]) {
        self.0.update((bytes.len() as u64).to_le_bytes());
        self.0.update(bytes);
    }

    pub fn item(&mut self, item: &NewItem) {
        match &item.custom_id {
            Some(id) => self.field(id.as_bytes()),
            None => self.field(b"\xff"),
        }
        self.field(item.text.as_bytes());
    }

    pub fn finish(self) -> Vec<u8> {
        self.0.finalize().to_vec()
    }
}

/// [`RequestHash`] of a whole request.
pub fn request_hash(options: &JobOptions, items: &[NewItem]) -> Vec<u8> {
    let mut hash = RequestHash::new(options);
    for item in items {
        hash.item(item);
    }
    hash.finish()
}

/// What `items` cost: items and characters (Unicode scalar values, what translation is billed
/// by).
pub fn cost(items: &[NewItem]) -> Cost {
    Cost {
        items: items.len() as i64,
        characters: items.iter().map(|i| i.text.chars().count() as i64).sum(),
    }
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

/// The job with this principal's idempotency key, and its request hash.
async fn existing_key(
    conn: &mut sqlx::PgConnection,
    tenant: TenantId,
    actor: &str,
    key: Option<&str>,
) -> Result<Option<(JobRow, Option<Vec<u8>>)>, sqlx::Error> {
    let Some(key) = key else {
        return Ok(None);
    };
    let found = sqlx::query!(
        r#"
        SELECT job_id AS "job_id: JobId", kind, status, shared, total, succeeded, failed,
               created_at, completed_at, cancelled, started_at,
               parent_job_id AS "parent_job_id: JobId", invalid_lines, purged_at, request_sha256
        FROM jobs WHERE tenant_id = $1 AND created_by = $2 AND idempotency_key = $3
        "#,
        tenant.0,
        actor,
        key,
    )
    .fetch_optional(conn)
    .await?;
    Ok(found.map(|f| {
        (
            JobRow {
                job_id: f.job_id,
                kind: f.kind,
                status: f.status,
                shared: f.shared,
                total: f.total,
                succeeded: f.succeeded,
                failed: f.failed,
                created_at: f.created_at,
                completed_at: f.completed_at,
                cancelled: f.cancelled,
                started_at: f.started_at,
                parent_job_id: f.parent_job_id,
                invalid_lines: f.invalid_lines,
                purged_at: f.purged_at,
            },
            f.request_sha256,
        )
    }))
}

/// Items read so far, waiting for their insert.
struct Pending {
    indexes: Vec<i32>,
    custom_ids: Vec<Option<String>>,
    texts: Vec<String>,
    lines: Vec<Option<i32>>,
}

impl Pending {
    fn new() -> Self {
        Self {
            indexes: Vec::with_capacity(INSERT_BATCH),
            custom_ids: Vec::with_capacity(INSERT_BATCH),
            texts: Vec::with_capacity(INSERT_BATCH),
            lines: Vec::with_capacity(INSERT_BATCH),
        }
    }

    async fn flush(
        &mut self,
        conn: &mut sqlx::PgConnection,
        job: JobId,
        tenant: TenantId,
    ) -> Result<(), sqlx::Error> {
        if self.indexes.is_empty() {
            return Ok(());
        }
        sqlx::query!(
            r"
            INSERT INTO job_items (job_id, tenant_id, item_index, custom_id, input, line_no)
            SELECT $1, $2, * FROM UNNEST($3::int4[], $4::text[], $5::text[], $6::int4[])
            ",
            job.0,
            tenant.0,
            &self.indexes,
            &self.custom_ids as _,
            &self.texts,
            &self.lines as _,
        )
        .execute(&mut *conn)
        .await?;
        self.indexes.clear();
        self.custom_ids.clear();
        self.texts.clear();
        self.lines.clear();
        Ok(())
    }
}

async fn insert_line_errors(
    conn: &mut sqlx::PgConnection,
    job: JobId,
    tenant: TenantId,
    errors: &[LineError],
) -> Result<(), sqlx::Error> {
    if errors.is_empty() {
        return Ok(());
    }
    let lines: Vec<i32> = errors.iter().map(|e| e.line).collect();
    let fields: Vec<Option<String>> = errors.iter().map(|e| e.field.clone()).collect();
    let codes: Vec<String> = errors.iter().map(|e| e.code.clone()).collect();
    let messages: Vec<String> = errors.iter().map(|e| e.message.clone()).collect();
    sqlx::query!(
        r"
        INSERT INTO job_line_errors (job_id, tenant_id, line_no, field, code, message)
        SELECT $1, $2, * FROM UNNEST($3::int4[], $4::text[], $5::text[], $6::text[])
        ON CONFLICT DO NOTHING
        ",
        job.0,
        tenant.0,
        &lines,
        &fields as _,
        &codes,
        &messages,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Stores the job (see the module docs) or finds the job an idempotent replay refers to.
pub async fn submit(pool: &PgPool, new: NewJob<'_>) -> Result<Submitted, SubmitError> {
    let kind = new.options.kind();
    let job_id = JobId::new();
    let (day, resets_at) = quota::day_of(new.now);
    let mut hash = RequestHash::new(new.options);
    // A replay must name the same webhook endpoint too.
    if let Some(endpoint) = new.webhook_endpoint {
        hash.field(endpoint.0.as_bytes());
    }
    // The stream is not `Sync`: take it out, so no borrow of `new` lives across an await.
    let source = new.items;

    let mut tx = db::begin(pool, Scope::Tenant(new.tenant_id)).await?;
    let mut previous = existing_key(&mut tx, new.tenant_id, new.actor, new.idempotency_key).await?;
    let settings = lock_tenant(&mut tx, new.tenant_id).await?;
    if previous.is_none() {
        let inserted = sqlx::query!(
            r"
            INSERT INTO jobs (job_id, tenant_id, key_id, kind, total, idempotency_key, created_by,
                              options, policy_version, lane, quota_day, input_file_id,
                              parent_job_id, webhook_endpoint_id)
            VALUES ($1, $2, $3, $4, 1, $5, $6, $7,
                    (SELECT coalesce(max(version), 0) FROM moderation_policies WHERE tenant_id = $2),
                    $8, $9, $10, $11, $12)
            ",
            job_id.0,
            new.tenant_id.0,
            new.key_id.map(|k| k.0),
            kind.as_str(),
            new.idempotency_key,
            new.actor,
            new.options.to_json(),
            new.lane.as_str(),
            day,
            new.input_file,
            new.parent_job.map(|j| j.0),
            new.webhook_endpoint.map(|e| e.0),
        )
        .execute(&mut *tx)
        .await;
        match inserted {
            Ok(_) => {}
            // The same idempotency key raced in from another request and won: this request
            // is its replay (or a reuse), decided once the items are hashed.
            Err(e)
                if e.as_database_error()
                    .is_some_and(|d| d.is_unique_violation()) =>
            {
                tx.rollback().await?;
                tx = db::begin(pool, Scope::Tenant(new.tenant_id)).await?;
                previous =
                    existing_key(&mut tx, new.tenant_id, new.actor, new.idempotency_key).await?;
                if previous.is_none() {
                    return Err(SubmitError::Database(e));
                }
            }
            Err(e) => return Err(e.into()),
        }
    }

    // Read the items: insert them in batches (unless this is a replay: then only hash them).
    let mut pending = Pending::new();
    let mut total: i32 = 0;
    let mut characters: i64 = 0;
    let mut line_errors: Vec<LineError> = Vec::new();
    let mut invalid = 0usize;
    let mut too_many = false;
    // Distinct input lines among the items (a line's items arrive together).
    let mut input_lines: i32 = 0;
    let mut last_line: Option<i32> = None;
    let storing = previous.is_none();
    let mut items = match source {
        ItemSource::Items(items) => {
            futures_util::stream::iter(items.iter().cloned().map(|i| Ok(Parsed::Item(i)))).boxed()
        }
        ItemSource::Stream(stream) => stream,
    };
    while let Some(parsed) = items.next().await {
        match parsed? {
            Parsed::Item(item) => {
                if (total as usize) >= new.max_items {
                    too_many = true;
                    break;
                }
                hash.item(&item);
                characters += item.text.chars().count() as i64;
                if item.line_no.is_some() && item.line_no != last_line {
                    input_lines += 1;
                    last_line = item.line_no;
                }
                if storing && (invalid == 0 || new.on_invalid == OnInvalid::Skip) {
                    pending.indexes.push(total);
                    pending.custom_ids.push(item.custom_id);
                    pending.texts.push(item.text);
                    pending.lines.push(item.line_no);
                    if pending.indexes.len() >= INSERT_BATCH {
                        pending.flush(&mut tx, job_id, new.tenant_id).await?;
                    }
                }
                total += 1;
            }
            Parsed::Invalid(error) => {
                invalid += 1;
                match new.on_invalid {
                    OnInvalid::Reject => {
                        if line_errors.len() < MAX_REPORTED_LINE_ERRORS {
                            line_errors.push(error);
                        }
                    }
                    OnInvalid::Skip => {
                        line_errors.push(error);
                        if storing && line_errors.len() >= INSERT_BATCH {
                            insert_line_errors(&mut tx, job_id, new.tenant_id, &line_errors)
                                .await?;
                            line_errors.clear();
                        }
                    }
                }
            }
        }
    }
    drop(items);
    let refuse = |tx: sqlx::Transaction<'static, sqlx::Postgres>, refusal: Refusal| async move {
        tx.rollback().await?;
        Err::<Submitted, SubmitError>(SubmitError::Refused(refusal))
    };
    if too_many {
        return refuse(tx, Refusal::TooManyItems { max: new.max_items }).await;
    }
    if invalid > 0 && new.on_invalid == OnInvalid::Reject {
        return refuse(
            tx,
            Refusal::InvalidLines {
                errors: line_errors,
                total: invalid,
            },
        )
        .await;
    }
    if total == 0 {
        return refuse(tx, Refusal::NoItems { invalid }).await;
    }
    let request_sha256 = new.idempotency_key.map(|_| hash.finish());
    if let Some((job, previous_hash)) = previous {
        tx.commit().await?;
        if previous_hash != request_sha256 {
            return Ok(Submitted::KeyReused(job.job_id));
        }
        return Ok(Submitted::Replayed(job.try_into()?));
    }
    let cost = Cost {
        items: i64::from(total),
        characters,
    };
    let admission = new.admission;
    if new.lane == Lane::Bulk {
        if let Some(limit) = admission.tenant_max_backlog_items {
            let backlog = sqlx::query_scalar!(
                r#"
                SELECT coalesce(sum(total - succeeded - failed - cancelled), 0)::int8 AS "backlog!"
                FROM jobs
                WHERE tenant_id = $1 AND status IN ('queued', 'running') AND lane = 'bulk'
                  AND job_id <> $2
                "#,
                new.tenant_id.0,
                job_id.0
            )
            .fetch_one(&mut *tx)
            .await?;
            if backlog + cost.items > limit {
                return refuse(tx, Refusal::TenantBacklog { limit, backlog }).await;
            }
        }
        if let Some(limit) = admission.max_backlog_items {
            let backlog = sqlx::query_scalar!(r#"SELECT gatehouse_bulk_backlog() AS "b!""#)
                .fetch_one(&mut *tx)
                .await?
                - 1;
            if backlog + cost.items > limit {
                return refuse(tx, Refusal::Backlog { limit, backlog }).await;
            }
        }
    }
    let quotas = quota::effective(&settings, admission.quota_defaults);
    if quotas.iter().any(|q| q.limit.is_some()) {
        let usage = day_usage(&mut tx, new.tenant_id, day).await?;
        if let Err(e) = quota::check(&quotas, &usage, kind, cost, resets_at) {
            return refuse(tx, Refusal::Quota(e)).await;
        }
    }
    pending.flush(&mut tx, job_id, new.tenant_id).await?;
    if new.on_invalid == OnInvalid::Skip {
        insert_line_errors(&mut tx, job_id, new.tenant_id, &line_errors).await?;
    }

    let row = sqlx::query_as!(
        JobRow,
        r#"
        UPDATE jobs SET total = $2, characters = $3, invalid_lines = $4, request_sha256 = $5,
                        input_lines = $6
        WHERE job_id = $1
        RETURNING job_id AS "job_id: JobId", kind, status, shared, total, succeeded, failed,
                  created_at, completed_at, cancelled, started_at,
                  parent_job_id AS "parent_job_id: JobId", invalid_lines, purged_at
        "#,
        job_id.0,
        total,
        cost.characters,
        i32::try_from(invalid).unwrap_or(i32::MAX),
        request_sha256.as_deref(),
        (last_line.is_some()).then_some(input_lines),
    )
    .fetch_one(&mut *tx)
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
                "invalid_lines": invalid, "parent_job_id": new.parent_job,
            }),
            ..audit::Record::new(Some(new.tenant_id), new.actor, Action::JobCreated)
        },
    )
    .await?;
    if let Some(parent) = new.parent_job {
        audit::insert(
            &mut tx,
            audit::Record {
                client_ip: new.client_ip,
                job_id: Some(parent),
                details: serde_json::json!({"child_job_id": job_id, "items": total}),
                ..audit::Record::new(Some(new.tenant_id), new.actor, Action::JobRetried)
            },
        )
        .await?;
    }
    tx.commit().await?;
    Ok(Submitted::Created(row.try_into()?))
}

/// Compile-time guard: axum handlers need `submit`'s future to be `Send`.
#[allow(dead_code)]
fn submit_is_send(pool: &PgPool, new: NewJob<'static>) {
    fn is_send<T: Send>(_: &T) {}
    is_send(&submit(pool, new));
}
