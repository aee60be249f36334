//! `files` and `file_parts`: uploads stored in 1 MiB parts as they stream in (one part in
//! memory at a time), and the virtual output files of batches (rendered from results).

use chrono::{DateTime, Utc};
use futures_util::{Stream, StreamExt};
use gatehouse_common::{
    db::{self, Scope},
    types::{FileId, JobId, TenantId},
};
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::PgPool;

use super::jobs::Visibility;

/// Bytes per stored part.
pub const PART_BYTES: usize = 1024 * 1024;

/// A file as the OpenAI Files API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct File {
    pub id: FileId,
    pub object: &'static str,
    pub bytes: i64,
    /// Unix seconds, as OpenAI.
    pub created_at: i64,
    pub filename: String,
    pub purpose: String,
    pub status: &'static str,
    pub status_details: Option<String>,
    /// Lines (Gatehouse extension).
    pub lines: i32,
    /// `upload`, `batch_output` or `batch_error` (Gatehouse extension).
    pub kind: String,
    #[serde(skip)]
    pub source_job_id: Option<JobId>,
    #[serde(skip)]
    pub created: DateTime<Utc>,
}

struct FileRow {
    file_id: FileId,
    bytes: i64,
    created_at: DateTime<Utc>,
    filename: String,
    purpose: String,
    lines: i32,
    kind: String,
    source_job_id: Option<JobId>,
}

impl From<FileRow> for File {
    fn from(r: FileRow) -> Self {
        File {
            id: r.file_id,
            object: "file",
            bytes: r.bytes,
            created_at: r.created_at.timestamp(),
            filename: r.filename,
            purpose: r.purpose,
            status: "processed",
            status_details: None,
            lines: r.lines,
            kind: r.kind,
            source_job_id: r.source_job_id,
            created: r.created_at,
        }
    }
}

/// Why an upload stopped.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error("database error")]
    Database(#[from] sqlx::Error),
    #[error("the file is larger than {0} bytes")]
    TooLarge(u64),
    #[error("the file has more than {0} lines")]
    TooManyLines(usize),
    #[error("the upload stream failed: {0}")]
    Stream(String),
}

/// Limits of one upload.
#[derive(Debug, Clone, Copy)]
pub struct UploadLimits {
    pub max_bytes: u64,
    pub max_lines: usize,
}

/// An upload in progress: the row exists (inside its transaction) and parts are written as
/// bytes arrive; nothing is visible until [`Upload::finish`] commits.
pub struct Upload {
    tx: sqlx::Transaction<'static, sqlx::Postgres>,
    pub id: FileId,
    tenant: TenantId,
    buf: Vec<u8>,
    part_no: i32,
    bytes: u64,
    newlines: usize,
    last_byte: Option<u8>,
    hash: Sha256,
    limits: UploadLimits,
}

impl Upload {
    pub async fn begin(
        pool: &PgPool,
        tenant: TenantId,
        filename: &str,
        created_by: &str,
        limits: UploadLimits,
    ) -> Result<Self, sqlx::Error> {
        let mut tx = db::begin(pool, Scope::Tenant(tenant)).await?;
        let id = FileId::new();
        sqlx::query!(
            r"
            INSERT INTO files (file_id, tenant_id, purpose, filename, created_by)
            VALUES ($1, $2, '', $3, $4)
            ",
            id.0,
            tenant.0,
            filename,
            created_by
        )
        .execute(&mut *tx)
        .await?;
        Ok(Self {
            tx,
            id,
            tenant,
            buf: Vec::with_capacity(PART_BYTES),
            part_no: 0,
            bytes: 0,
            newlines: 0,
            last_byte: None,
            hash: Sha256::new(),
            limits,
        })
    }

    /// Adds bytes (writing full parts as they fill).
    pub async fn write(&mut self, mut data: &[u8]) -> Result<(), UploadError> {
        self.bytes += data.len() as u64;
        if self.bytes > self.limits.max_bytes {
            return Err(UploadError::TooLarge(self.limits.max_bytes));
        }
        self.newlines += data.iter().filter(|b| **b == b'\n').count();
        if self.newlines > self.limits.max_lines {
            return Err(UploadError::TooManyLines(self.limits.max_lines));
        }
        if let Some(last) = data.last() {
            self.last_byte = Some(*last);
        }
        self.hash.update(data);
        while !data.is_empty() {
            let room = PART_BYTES - self.buf.len();
            let take = room.min(data.len());
            self.buf.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.buf.len() == PART_BYTES {
                self.flush().await?;
            }
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), sqlx::Error> {
        if self.buf.is_empty() {
            return Ok(());
        }
        sqlx::query!(
            "INSERT INTO file_parts (file_id, part_no, tenant_id, data) VALUES ($1, $2, $3, $4)",
            self.id.0,
            self.part_no,
            self.tenant.0,
            &self.buf
        )
        .execute(&mut *self.tx)
        .await?;
        self.part_no += 1;
        self.buf.clear();
        Ok(())
    }

    /// Writes the last part, sets the purpose and commits.
    pub async fn finish(mut self, purpose: &str) -> Result<File, UploadError> {
        self.flush().await?;
        let lines = self.newlines + usize::from(self.last_byte.is_some_and(|b| b != b'\n'));
        if lines > self.limits.max_lines {
            return Err(UploadError::TooManyLines(self.limits.max_lines));
        }
        let sha = self.hash.finalize().to_vec();
        let row = sqlx::query_as!(
            FileRow,
            r#"
            UPDATE files SET purpose = $2, bytes = $3, lines = $4, sha256 = $5
            WHERE file_id = $1
            RETURNING file_id AS "file_id: FileId", bytes, created_at, filename, purpose, lines,
                      kind, source_job_id AS "source_job_id: JobId"
            "#,
            self.id.0,
            purpose,
            self.bytes as i64,
            i32::try_from(lines).unwrap_or(i32::MAX),
            &sha
        )
        .fetch_one(&mut *self.tx)
        .await?;
        self.tx.commit().await?;
        Ok(row.into())
    }
}

/// Streams `body` into a new file.
pub async fn upload<S, E>(
    pool: &PgPool,
    tenant: TenantId,
    filename: &str,
    purpose: &str,
    created_by: &str,
    limits: UploadLimits,
    mut body: S,
) -> Result<File, UploadError>
where
    S: Stream<Item = Result<bytes::Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let mut upload = Upload::begin(pool, tenant, filename, created_by, limits).await?;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| UploadError::Stream(e.to_string()))?;
        upload.write(&chunk).await?;
    }
    upload.finish(purpose).await
}

/// A batch's output or error file (rendered from `job`'s results on read).
pub async fn create_virtual(
    tx: &mut sqlx::PgConnection,
    tenant: TenantId,
    kind: &str,
    filename: &str,
    job: JobId,
    created_by: &str,
) -> Result<FileId, sqlx::Error> {
    let id = FileId::new();
    sqlx::query!(
        r"
        INSERT INTO files (file_id, tenant_id, purpose, filename, kind, source_job_id, created_by)
        VALUES ($1, $2, 'batch_output', $3, $4, $5, $6)
        ",
        id.0,
        tenant.0,
        filename,
        kind,
        job.0,
        created_by
    )
    .execute(tx)
    .await?;
    Ok(id)
}

/// The tenant's file (`None`: unknown, another tenant's, deleted, or not the caller's: files
/// are their uploader's, and admins see all of the tenant's).
pub async fn get(
    pool: &PgPool,
    tenant: TenantId,
    id: FileId,
    visibility: Visibility<'_>,
) -> Result<Option<File>, sqlx::Error> {
    let mut tx = db::begin(pool, Scope::Tenant(tenant)).await?;
    let row = sqlx::query_as!(
        FileRow,
        r#"
        SELECT file_id AS "file_id: FileId", bytes, created_at, filename, purpose, lines, kind,
               source_job_id AS "source_job_id: JobId"
        FROM files WHERE file_id = $1 AND tenant_id = $2 AND deleted_at IS NULL
          AND (NOT $4::bool OR created_by = $3::text)
        "#,
        id.0,
        tenant.0,
        visibility.owner(),
        visibility.restricted(),
    )
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(row.map(File::from))
}

/// The tenant's files, newest first, before the cursor.
pub async fn list(
    pool: &PgPool,
    tenant: TenantId,
    visibility: Visibility<'_>,
    before: Option<FileId>,
    limit: i64,
) -> Result<Vec<File>, sqlx::Error> {
    let mut tx = db::begin(pool, Scope::Tenant(tenant)).await?;
    let rows = sqlx::query_as!(
        FileRow,
        r#"
        SELECT file_id AS "file_id: FileId", bytes, created_at, filename, purpose, lines, kind,
               source_job_id AS "source_job_id: JobId"
        FROM files
        WHERE tenant_id = $1 AND deleted_at IS NULL AND ($2::uuid IS NULL OR file_id < $2)
          AND (NOT $5::bool OR created_by = $4::text)
        ORDER BY file_id DESC LIMIT $3
        "#,
        tenant.0,
        before.map(|f| f.0),
        limit,
        visibility.owner(),
        visibility.restricted(),
    )
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(rows.into_iter().map(File::from).collect())
}

/// Deletes a file's contents (the row stays, marked deleted). `false`: not the tenant's.
pub async fn delete(
    pool: &PgPool,
    tenant: TenantId,
    id: FileId,
    visibility: Visibility<'_>,
) -> Result<bool, sqlx::Error> {
    let mut tx = db::begin(pool, Scope::Tenant(tenant)).await?;
    let deleted = sqlx::query!(
        r"
        UPDATE files SET deleted_at = now()
        WHERE file_id = $1 AND tenant_id = $2 AND deleted_at IS NULL AND kind = 'upload'
          AND (NOT $4::bool OR created_by = $3::text)
        ",
        id.0,
        tenant.0,
        visibility.owner(),
        visibility.restricted(),
    )
    .execute(&mut *tx)
    .await?
    .rows_affected()
        > 0;
    if deleted {
        sqlx::query!("DELETE FROM file_parts WHERE file_id = $1", id.0)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(deleted)
}
