//! The lifecycle SQL of a job, in one place: [`submit`] (the api's submission paths: quota
//! reservation, backpressure, items, chunks), [`claim`] (a worker takes a chunk: attempts,
//! items, options and policy in one statement) and [`complete`] (results, chunk, counters,
//! quota refunds, audit record and the done notification in one statement). Exactly-once
//! effects live in `complete`: the chunk row flips from `pending` once, and only the
//! statement that flips it writes anything. Bulk chunks are published by the api's
//! dispatcher (`api/src/dispatch.rs`), fairly across tenants.

mod cancel;
mod claim;
mod complete;
mod purge;
mod submit;

pub use cancel::{Cancelled, cancel};
pub use claim::{Claim, claim, record_error};
pub use complete::{Applied, ChunkEnd, CompleteError, Completion, complete};
pub use purge::{Purged, purge_expired};
pub use submit::{
    Admission, ItemSource, LineError, MAX_REPORTED_LINE_ERRORS, NewItem, NewJob, OnInvalid, Parsed,
    Refusal, RequestHash, SubmitError, Submitted, cost as submit_cost, quote, request_hash, submit,
};

use chrono::{DateTime, Utc};

use crate::types::{JobId, JobKind, JobStatus};

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
    pub cancelled: i32,
    pub started_at: Option<DateTime<Utc>>,
    pub parent_job_id: Option<JobId>,
    pub invalid_lines: i32,
    pub purged_at: Option<DateTime<Utc>>,
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
    cancelled: i32,
    started_at: Option<DateTime<Utc>>,
    parent_job_id: Option<JobId>,
    invalid_lines: i32,
    purged_at: Option<DateTime<Utc>>,
}

/// The columns of [`JobRecord`], for queries that return jobs.
pub const JOB_COLUMNS: &str = "job_id, kind, status, shared, total, succeeded, failed, \
    created_at, completed_at, cancelled, started_at, parent_job_id, invalid_lines, purged_at";

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
            cancelled: row.cancelled,
            started_at: row.started_at,
            parent_job_id: row.parent_job_id,
            invalid_lines: row.invalid_lines,
            purged_at: row.purged_at,
        })
    }
}
