//! Reading jobs and their results for the api; sharing. Submitting is
//! `gatehouse_common::job::store::submit` (the lifecycle SQL lives there, beside claim and
//! complete); results are stored compactly and rendered here on read.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use gatehouse_common::{
    audit::{self, Action},
    db::{self, Scope},
    job::{
        ItemStatus,
        result::{ChunkModel, ItemError, ItemResult, StoredOutcome},
        store::JobRecord,
    },
    moderation::Policy,
    types::{JobId, JobKind, JobStatus, TenantId},
};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct Counts {
    pub total: i32,
    pub succeeded: i32,
    pub failed: i32,
}

/// The job object of the public API.
#[derive(Debug, Clone, Serialize, Deserialize)]
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

impl From<JobRecord> for Job {
    fn from(r: JobRecord) -> Self {
        Job {
            id: r.id,
            kind: r.kind,
            status: r.status,
            shared: r.shared,
            counts: Counts {
                total: r.total,
                succeeded: r.succeeded,
                failed: r.failed,
            },
            created_at: r.created_at,
            completed_at: r.completed_at,
        }
    }
}

/// A job row as the queries below select it (the columns of `JobRecord`).
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
        }
        .into())
    }
}

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

/// The job if it belongs to `tenant` (another tenant's job does not exist for the caller)
/// and `visibility` lets the caller see it.
pub async fn get(
    pool: &PgPool,
    tenant: TenantId,
    id: JobId,
    visibility: Visibility<'_>,
) -> Result<Option<Job>, sqlx::Error> {
    let mut tx = db::begin(pool, Scope::Tenant(tenant)).await?;
    // Visible when unrestricted, shared, or submitted by the owner.
    let row = sqlx::query_as!(
        JobRow,
        r#"
        SELECT job_id AS "job_id: JobId", kind, status, shared, total, succeeded, failed,
               created_at, completed_at
        FROM jobs WHERE job_id = $1 AND tenant_id = $2
          AND (NOT $4::bool OR shared OR created_by = $3::text)
        "#,
        id.0,
        tenant.0,
        visibility.owner(),
        visibility.restricted(),
    )
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;
    row.map(Job::try_from).transpose()
}

/// One line of the results stream.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ResultLine {
    pub index: i32,
    pub custom_id: Option<String>,
    pub status: ItemStatus,
    pub result: Option<ItemResult>,
    pub error: Option<ItemError>,
}

struct StoredLine {
    item_index: i32,
    custom_id: Option<String>,
    status: String,
    chunk_index: i32,
    result: Option<Vec<u8>>,
    legacy_result: Option<serde_json::Value>,
    error: Option<serde_json::Value>,
}

/// What rendering a job's results needs: its policy version and the models of its chunks
/// (loaded as pages need them).
pub struct ResultsReader {
    pool: PgPool,
    tenant: TenantId,
    job: JobId,
    policy: Policy,
    models: HashMap<i32, Vec<ChunkModel>>,
}

impl ResultsReader {
    pub async fn new(pool: &PgPool, tenant: TenantId, job: JobId) -> Result<Self, sqlx::Error> {
        let mut tx = db::begin(pool, Scope::Tenant(tenant)).await?;
        let row = sqlx::query!(
            r#"
            SELECT j.policy_version, p.policy AS "policy?" FROM jobs j
            LEFT JOIN moderation_policies p
                   ON p.tenant_id = j.tenant_id AND p.version = j.policy_version
            WHERE j.job_id = $1
            "#,
            job.0,
        )
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        let policy = match row.and_then(|r| r.policy) {
            Some(raw) => serde_json::from_value(raw)
                .map_err(|e| sqlx::Error::Decode(format!("stored policy: {e}").into()))?,
            _ => Policy::default(),
        };
        Ok(Self {
            pool: pool.clone(),
            tenant,
            job,
            policy,
            models: HashMap::new(),
        })
    }

    /// Finished items after `after` (exclusive), in submission order.
    pub async fn page(&mut self, after: i32, limit: i64) -> Result<Vec<ResultLine>, sqlx::Error> {
        let mut tx = db::begin(&self.pool, Scope::Tenant(self.tenant)).await?;
        let lines = sqlx::query_as!(
            StoredLine,
            r"
            SELECT r.item_index, i.custom_id, r.status, r.chunk_index, r.result,
                   r.legacy_result, r.error
            FROM job_results r
            JOIN job_items i ON i.job_id = r.job_id AND i.item_index = r.item_index
            WHERE r.job_id = $1 AND r.item_index > $2
            ORDER BY r.item_index
            LIMIT $3
            ",
            self.job.0,
            after,
            limit,
        )
        .fetch_all(&mut *tx)
        .await?;
        let mut missing: Vec<i32> = lines
            .iter()
            .map(|l| l.chunk_index)
            .filter(|c| !self.models.contains_key(c))
            .collect();
        missing.dedup();
        if !missing.is_empty() {
            let rows = sqlx::query!(
                "SELECT chunk_index, models FROM job_chunks WHERE job_id = $1 AND chunk_index = ANY($2)",
                self.job.0,
                &missing,
            )
            .fetch_all(&mut *tx)
            .await?;
            for row in rows {
                let (chunk, models) = (row.chunk_index, row.models);
                let models = models
                    .map(serde_json::from_value::<Vec<ChunkModel>>)
                    .transpose()
                    .map_err(|e| sqlx::Error::Decode(format!("chunk models: {e}").into()))?
                    .unwrap_or_default();
                self.models.insert(chunk, models);
            }
        }
        tx.commit().await?;
        lines.into_iter().map(|l| self.render(l)).collect()
    }

    fn render(&self, line: StoredLine) -> Result<ResultLine, sqlx::Error> {
        let decode = |e: String| sqlx::Error::Decode(e.into());
        let status: ItemStatus = line.status.parse().map_err(decode)?;
        let result = match (line.result, line.legacy_result) {
            (Some(bytes), _) => {
                let stored = StoredOutcome::decode(&bytes).map_err(|e| decode(e.to_string()))?;
                let models = self
                    .models
                    .get(&line.chunk_index)
                    .map(Vec::as_slice)
                    .unwrap_or(&[]);
                ItemResult::render(stored, models, &self.policy)
            }
            (None, Some(legacy)) => Some(ItemResult::Legacy(legacy)),
            (None, None) => None,
        };
        let error = line
            .error
            .map(serde_json::from_value::<ItemError>)
            .transpose()
            .map_err(|e| decode(e.to_string()))?;
        Ok(ResultLine {
            index: line.item_index,
            custom_id: line.custom_id,
            status,
            result,
            error,
        })
    }
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
    // Visible when unrestricted, shared, or submitted by the owner (as in `get`).
    let rows = sqlx::query_as!(
        JobRow,
        r#"
        SELECT job_id AS "job_id: JobId", kind, status, shared, total, succeeded, failed,
               created_at, completed_at
        FROM jobs
        WHERE tenant_id = $1 AND (NOT $3::bool OR shared OR created_by = $2::text)
          AND ($4::uuid IS NULL OR job_id < $4)
        ORDER BY job_id DESC
        LIMIT $5
        "#,
        tenant.0,
        visibility.owner(),
        visibility.restricted(),
        before.map(|j| j.0),
        limit,
    )
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
    let row = sqlx::query_as!(
        JobRow,
        r#"
        UPDATE jobs SET shared = $3
        WHERE job_id = $1 AND tenant_id = $2 AND (NOT $5 OR created_by = $4)
        RETURNING job_id AS "job_id: JobId", kind, status, shared, total, succeeded, failed,
                  created_at, completed_at
        "#,
        id.0,
        tenant.0,
        shared,
        manage.owner(),
        manage.restricted(),
    )
    .fetch_optional(&mut *tx)
    .await?;
    if row.is_some() {
        let action = if shared {
            Action::JobShared
        } else {
            Action::JobUnshared
        };
        audit::insert(
            &mut tx,
            audit::Record {
                client_ip,
                job_id: Some(id),
                details: serde_json::json!({ "job_id": id }),
                ..audit::Record::new(Some(tenant), actor, action)
            },
        )
        .await?;
    }
    tx.commit().await?;
    row.map(Job::try_from).transpose()
}
