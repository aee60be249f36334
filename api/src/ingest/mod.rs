//! Streamed inputs: request bodies (NDJSON) and stored files, read line by line into the
//! items of a job with bounded memory, every bad line reported with its number, field and
//! reason.

pub mod lines;
pub mod parse;

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::{StreamExt, stream::BoxStream};
use gatehouse_common::{
    config::Limits,
    db::{self, Scope},
    job::store::{LineError, Parsed},
    types::{FileId, JobKind, TenantId},
};
use sqlx::PgPool;

use crate::error::ApiError;

pub use parse::{LineContext, check_item};

/// Where a stream's own failure is kept, so the handler can answer it properly (a body cut
/// by the read deadline is a 408, one over the size limit a 413) instead of a database error.
#[derive(Clone, Default)]
pub struct Failure(Arc<Mutex<Option<ApiError>>>);

impl Failure {
    pub fn set(&self, error: ApiError) {
        if let Ok(mut slot) = self.0.lock()
            && slot.is_none()
        {
            *slot = Some(error);
        }
    }

    pub fn take(&self) -> Option<ApiError> {
        self.0.lock().ok().and_then(|mut s| s.take())
    }
}

/// A stream failure as the submit path sees it (the real reason is in the [`Failure`]).
fn aborted() -> sqlx::Error {
    sqlx::Error::Protocol("the input stream failed".into())
}

/// A request body as bytes, at most `max_bytes` (else the [`Failure`] holds a 413).
pub fn body_bytes(
    body: axum::body::Body,
    max_bytes: u64,
    failure: Failure,
) -> BoxStream<'static, Result<Bytes, sqlx::Error>> {
    let mut seen: u64 = 0;
    body.into_data_stream()
        .map(move |chunk| match chunk {
            Ok(bytes) => {
                seen += bytes.len() as u64;
                if seen > max_bytes {
                    failure.set(ApiError::PayloadTooLarge {
                        detail: format!(
                            "the body is larger than GATEHOUSE_MAX_FILE_BYTES ({max_bytes}) allows"
                        ),
                    });
                    Err(aborted())
                } else {
                    Ok(bytes)
                }
            }
            Err(error) => {
                failure.set(crate::extract::body_error(
                    axum::http::StatusCode::BAD_REQUEST,
                    &error,
                ));
                Err(aborted())
            }
        })
        .boxed()
}

/// A stored file's bytes, part by part (one part in memory at a time).
pub fn file_bytes(
    pool: PgPool,
    tenant: TenantId,
    file: FileId,
) -> BoxStream<'static, Result<Bytes, sqlx::Error>> {
    futures_util::stream::unfold(Some(0i32), move |next| {
        let pool = pool.clone();
        async move {
            let part_no = next?;
            let part = async {
                let mut tx = db::begin(&pool, Scope::Tenant(tenant)).await?;
                let data = sqlx::query_scalar!(
                    "SELECT data FROM file_parts WHERE file_id = $1 AND part_no = $2",
                    file.0,
                    part_no
                )
                .fetch_optional(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok::<_, sqlx::Error>(data)
            }
            .await;
            match part {
                Ok(Some(data)) => Some((Ok(Bytes::from(data)), Some(part_no + 1))),
                Ok(None) => None,
                Err(e) => Some((Err(e), None)),
            }
        }
    })
    .boxed()
}

/// The items of a `kind` input, line by line; the first line errors beyond what the caller
/// keeps are still counted.
pub fn items(
    bytes: BoxStream<'static, Result<Bytes, sqlx::Error>>,
    limits: Limits,
    kind: JobKind,
    max_line_bytes: usize,
    max_lines: usize,
    failure: Failure,
) -> BoxStream<'static, Result<Parsed, sqlx::Error>> {
    let mut context = LineContext::default();
    lines::split(bytes, max_line_bytes)
        .flat_map(move |line| {
            let parsed: Vec<Result<Parsed, sqlx::Error>> = match line {
                Err(e) => vec![Err(e)],
                Ok(lines::Line::Text(no, _)) | Ok(lines::Line::Bad(no, _))
                    if no as usize > max_lines =>
                {
                    failure.set(ApiError::invalid(
                        "too_many_lines",
                        "file",
                        format!("more than {max_lines} lines (GATEHOUSE_MAX_FILE_LINES)"),
                    ));
                    vec![Err(aborted())]
                }
                Ok(lines::Line::Text(no, text)) => {
                    parse::line(&limits, kind, no, &text, &mut context)
                        .into_iter()
                        .map(Ok)
                        .collect()
                }
                Ok(lines::Line::Bad(no, reason)) => vec![Ok(Parsed::Invalid(LineError {
                    line: no,
                    field: None,
                    code: reason.code().into(),
                    message: reason.message().into(),
                }))],
            };
            futures_util::stream::iter(parsed)
        })
        .boxed()
}
