//! Reading jobs for the api, sharing, and the inputs of a retry. Submitting and cancelling
//! are `gatehouse_common::job::store` (the lifecycle SQL lives there, beside claim and
//! complete); results are read and rendered in `store/results.rs`.

use gatehouse_common::{
    audit::{self, Action},
    db::{self, Scope},
    job::store::NewItem,
    types::{JobId, TenantId},
};
use sqlx::PgPool;

pub use gatehouse_common::job::view::{Counts, Job, JobRow, View};

/// Which of a tenant's jobs a principal may see.
#[derive(Debug, Clone, Copy)]
pub enum Visibility<'a> {
    /// Every job of the tenant (admins).
    All,
    /// Jobs submitted by this principal, and shared ones (reviewers, keys).
    OwnOrShared(&'a str),
    /// Jobs submitted by this principal only (what non-admins may manage).
    Own(&'a str),
    /// Shared jobs only (guests).
    Shared,
}

impl Visibility<'_> {
    pub(crate) fn owner(&self) -> Option<&str> {
        match self {
            Visibility::OwnOrShared(owner) | Visibility::Own(owner) => Some(owner),
            _ => None,
        }
    }

    /// Whether shared jobs are included.
    pub(crate) fn shared(&self) -> bool {
        matches!(self, Visibility::OwnOrShared(_) | Visibility::Shared)
    }

    pub(crate) fn restricted(&self) -> bool {
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
    view: View,
) -> Result<Option<Job>, sqlx::Error> {
    let mut tx = db::begin(pool, Scope::Tenant(tenant)).await?;
    // Visible when unrestricted, shared, or submitted by the owner.
    let row = sqlx::query_as!(
        JobRow,
        r#"
        SELECT j.job_id AS "job_id: JobId", j.kind, j.status, j.shared, j.total, j.succeeded,
               j.failed, j.cancelled, j.created_at, j.started_at, j.completed_at,
               j.parent_job_id AS "parent_job_id: JobId", j.invalid_lines, j.purged_at,
               t.retention_days,
               CASE WHEN j.status IN ('queued', 'running') THEN
                   (SELECT coalesce(sum(o.total - o.succeeded - o.failed - o.cancelled), 0)::int8
                    FROM jobs o
                    WHERE o.tenant_id = j.tenant_id AND o.lane = j.lane
                      AND o.status IN ('queued', 'running') AND o.job_id < j.job_id)
               END AS queue_position
        FROM jobs j JOIN tenants t ON t.tenant_id = j.tenant_id
        WHERE j.job_id = $1 AND j.tenant_id = $2
          AND (NOT $4::bool OR ($5::bool AND j.shared) OR j.created_by = $3::text)
        "#,
        id.0,
        tenant.0,
        visibility.owner(),
        visibility.restricted(),
        visibility.shared(),
    )
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;
    row.map(|r| r.into_job(view)).transpose()
}

/// The tenant's jobs the caller may see, newest first, after the cursor.
pub async fn list(
    pool: &PgPool,
    tenant: TenantId,
    visibility: Visibility<'_>,
    before: Option<JobId>,
    limit: i64,
    view: View,
) -> Result<Vec<Job>, sqlx::Error> {
    let mut tx = db::begin(pool, Scope::Tenant(tenant)).await?;
    // Visible when unrestricted, shared, or submitted by the owner (as in `get`).
    let rows = sqlx::query_as!(
        JobRow,
        r#"
        SELECT j.job_id AS "job_id: JobId", j.kind, j.status, j.shared, j.total, j.succeeded,
               j.failed, j.cancelled, j.created_at, j.started_at, j.completed_at,
               j.parent_job_id AS "parent_job_id: JobId", j.invalid_lines, j.purged_at,
               t.retention_days,
               CASE WHEN j.status IN ('queued', 'running') THEN
                   (SELECT coalesce(sum(o.total - o.succeeded - o.failed - o.cancelled), 0)::int8
                    FROM jobs o
                    WHERE o.tenant_id = j.tenant_id AND o.lane = j.lane
                      AND o.status IN ('queued', 'running') AND o.job_id < j.job_id)
               END AS queue_position
        FROM jobs j JOIN tenants t ON t.tenant_id = j.tenant_id
        WHERE j.tenant_id = $1
          AND (NOT $3::bool OR ($6::bool AND j.shared) OR j.created_by = $2::text)
          AND ($4::uuid IS NULL OR j.job_id < $4)
        ORDER BY j.job_id DESC
        LIMIT $5
        "#,
        tenant.0,
        visibility.owner(),
        visibility.restricted(),
        before.map(|j| j.0),
        limit,
        visibility.shared(),
    )
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    rows.into_iter().map(|r| r.into_job(view)).collect()
}

/// Shares (or unshares) a job with its tenant, if `visibility` lets the caller manage it.
/// `true` when it did.
pub async fn set_shared(
    pool: &PgPool,
    tenant: TenantId,
    id: JobId,
    shared: bool,
    manage: Visibility<'_>,
    actor: &str,
    client_ip: Option<std::net::IpAddr>,
) -> Result<bool, sqlx::Error> {
    let mut tx = db::begin(pool, Scope::Tenant(tenant)).await?;
    let changed = sqlx::query!(
        r"
        UPDATE jobs SET shared = $3
        WHERE job_id = $1 AND tenant_id = $2 AND (NOT $5 OR created_by = $4)
        ",
        id.0,
        tenant.0,
        shared,
        manage.owner(),
        manage.restricted(),
    )
    .execute(&mut *tx)
    .await?
    .rows_affected()
        > 0;
    if changed {
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
    Ok(changed)
}

/// The failed items of a job, in order, as the items of its retry (same custom ids).
pub async fn failed_items(
    pool: &PgPool,
    tenant: TenantId,
    job: JobId,
) -> Result<Vec<NewItem>, sqlx::Error> {
    let mut tx = db::begin(pool, Scope::Tenant(tenant)).await?;
    let rows = sqlx::query!(
        r"
        SELECT i.custom_id, i.input, i.line_no
        FROM job_results r
        JOIN job_items i ON i.job_id = r.job_id AND i.item_index = r.item_index
        WHERE r.job_id = $1 AND r.status = 'failed'
        ORDER BY r.item_index
        ",
        job.0
    )
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(rows
        .into_iter()
        .map(|r| NewItem {
            custom_id: r.custom_id,
            text: r.input,
            line_no: r.line_no,
        })
        .collect())
}
