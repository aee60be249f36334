//! The job object of the public API (`GET /v1/jobs/{id}`, webhook payloads' `data`): one
//! definition, rendered from a `jobs` row (joined with its tenant's retention) at a given
//! time, so the api and the webhook events show the same thing.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::types::{JobId, JobKind, JobStatus};

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct Counts {
    pub total: i32,
    pub succeeded: i32,
    pub failed: i32,
    pub cancelled: i32,
}

/// The job object of the public API.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Job {
    pub id: JobId,
    pub kind: JobKind,
    pub status: JobStatus,
    /// Shared with the whole tenant (guests may read it).
    pub shared: bool,
    pub counts: Counts,
    /// Finished items (succeeded, failed or cancelled) over all, 0 to 1.
    #[schema(minimum = 0.0, maximum = 1.0)]
    pub progress: f64,
    /// While running: the items left at the rate measured since it started.
    pub eta_seconds: Option<i64>,
    /// While queued or running: unfinished items of the tenant's earlier jobs in the same lane
    /// (what is ahead of it in the tenant's fair share).
    pub queue_position: Option<i64>,
    /// The job this one retries (`POST /v1/jobs/{id}/retry`).
    pub parent_job_id: Option<JobId>,
    /// Input lines refused with `on_invalid: skip` (`GET /v1/jobs/{id}/errors`).
    pub invalid_lines: i32,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    /// When retention deletes its texts and results (the job and its counts stay).
    pub expires_at: DateTime<Utc>,
    /// Whether that has happened (results are then `410 Gone`).
    pub expired: bool,
}

/// A `jobs` row (with its tenant's retention and its queue position) as [`load`] and the
/// api's job queries select it.
pub struct JobRow {
    pub job_id: JobId,
    pub kind: String,
    pub status: String,
    pub shared: bool,
    pub total: i32,
    pub succeeded: i32,
    pub failed: i32,
    pub cancelled: i32,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    pub parent_job_id: Option<JobId>,
    pub invalid_lines: i32,
    pub purged_at: Option<DateTime<Utc>>,
    pub retention_days: Option<i32>,
    pub queue_position: Option<i64>,
}

/// What turning rows into job objects needs: the time and the default retention.
#[derive(Debug, Clone, Copy)]
pub struct View {
    pub now: DateTime<Utc>,
    pub default_retention_days: i32,
}

impl JobRow {
    pub fn into_job(self, view: View) -> Result<Job, sqlx::Error> {
        let decode = |e: String| sqlx::Error::Decode(e.into());
        let status: JobStatus = self.status.parse().map_err(decode)?;
        let done = self.succeeded + self.failed + self.cancelled;
        let progress = if self.total > 0 {
            (f64::from(done) / f64::from(self.total) * 1e4).round() / 1e4
        } else {
            0.0
        };
        let eta_seconds = match (status, self.started_at) {
            (JobStatus::Running | JobStatus::Cancelling, Some(started)) if done > 0 => {
                let elapsed = (view.now - started).num_milliseconds().max(1) as f64 / 1000.0;
                let rate = f64::from(done) / elapsed;
                Some((f64::from(self.total - done) / rate).ceil() as i64)
            }
            _ => None,
        };
        let retention = self.retention_days.unwrap_or(view.default_retention_days);
        Ok(Job {
            id: self.job_id,
            kind: self.kind.parse().map_err(decode)?,
            status,
            shared: self.shared,
            counts: Counts {
                total: self.total,
                succeeded: self.succeeded,
                failed: self.failed,
                cancelled: self.cancelled,
            },
            progress,
            eta_seconds,
            queue_position: self.queue_position,
            parent_job_id: self.parent_job_id,
            invalid_lines: self.invalid_lines,
            created_at: self.created_at,
            started_at: self.started_at,
            completed_at: self.completed_at,
            expires_at: self.created_at + Duration::days(i64::from(retention)),
            expired: self.purged_at.is_some(),
        })
    }
}

/// The job as the API shows it, read in the caller's transaction (scoped to its tenant): what
/// `GET /v1/jobs/{id}` answers, without the visibility rules (the caller decides those).
pub async fn load(
    conn: &mut sqlx::PgConnection,
    id: JobId,
    view: View,
) -> Result<Option<Job>, sqlx::Error> {
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
        WHERE j.job_id = $1
        "#,
        id.0,
    )
    .fetch_optional(conn)
    .await?;
    row.map(|r| r.into_job(view)).transpose()
}
