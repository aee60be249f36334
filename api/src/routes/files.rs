//! Files, as OpenAI's Files API: `POST /v1/files` (multipart `file` + `purpose`, streamed to
//! Postgres in 1 MiB parts: memory stays bounded whatever the size), `GET /v1/files`,
//! `GET /v1/files/{id}`, `GET /v1/files/{id}/content`, `DELETE /v1/files/{id}`. A batch's
//! `output_file_id` / `error_file_id` are files too, rendered from its results on read (so
//! they can be read while the batch runs).

use axum::{
    Json, Router,
    body::Body,
    extract::{DefaultBodyLimit, Multipart, Path, State},
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use gatehouse_common::types::FileId;
use serde_json::json;

use super::PageQuery;
use crate::{
    auth::Principal,
    error::ApiError,
    extract::ApiQuery,
    ingest, policy,
    state::AppState,
    store::files::{self, UploadError, UploadLimits},
};

/// The purposes a file may be uploaded for (OpenAI's `batch`, and Gatehouse's `jobs`).
const PURPOSES: [&str; 3] = ["batch", "jobs", "user_data"];

pub fn router(max_file_bytes: u64) -> Router<AppState> {
    // Multipart framing on top of the file itself.
    let limit = usize::try_from(max_file_bytes)
        .unwrap_or(usize::MAX)
        .saturating_add(1024 * 1024);
    Router::new()
        .route(
            "/v1/files",
            get(list).post(upload).layer(DefaultBodyLimit::max(limit)),
        )
        .route("/v1/files/{id}", get(show).delete(remove))
        .route("/v1/files/{id}/content", get(content))
}

fn multipart_error(error: axum::extract::multipart::MultipartError) -> ApiError {
    if error.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return ApiError::PayloadTooLarge {
            detail: "the upload is larger than GATEHOUSE_MAX_FILE_BYTES allows".into(),
        };
    }
    ApiError::bad_request(
        "invalid_multipart",
        format!("the multipart body cannot be read: {error}"),
    )
}

fn upload_error(error: UploadError) -> ApiError {
    match error {
        UploadError::Database(e) => ApiError::Database(e),
        UploadError::TooLarge(max) => ApiError::PayloadTooLarge {
            detail: format!("the file is larger than {max} bytes (GATEHOUSE_MAX_FILE_BYTES)"),
        },
        UploadError::TooManyLines(max) => ApiError::invalid(
            "too_many_lines",
            "file",
            format!("the file has more than {max} lines (GATEHOUSE_MAX_FILE_LINES)"),
        ),
        UploadError::Stream(e) => {
            if e.contains("arrived too slowly") {
                ApiError::RequestTimeout
            } else if e.contains("length limit") || e.contains("too large") {
                ApiError::PayloadTooLarge {
                    detail: "the upload is larger than GATEHOUSE_MAX_FILE_BYTES allows".into(),
                }
            } else {
                ApiError::bad_request("invalid_multipart", "the upload could not be read")
            }
        }
    }
}

/// `POST /v1/files`: multipart with `file` (the content) and `purpose`.
#[utoipa::path(
    post, path = "/v1/files", tag = "files", operation_id = "uploadFile",
    request_body(content = crate::openapi::FileUpload, content_type = "multipart/form-data"),
    responses((status = 200, description = "The stored file (as OpenAI's Files API: 200)", body = files::File)),
)]
async fn upload(
    State(state): State<AppState>,
    principal: Principal,
    mut multipart: Multipart,
) -> Result<(StatusCode, Json<files::File>), ApiError> {
    principal.require(&policy::FILES_WRITE)?;
    let tenant = principal.tenant()?;
    let limits = UploadLimits {
        max_bytes: state.config.limits.max_file_bytes,
        max_lines: state.config.limits.max_file_lines,
    };
    let mut purpose: Option<String> = None;
    let mut pending: Option<files::Upload> = None;
    while let Some(mut field) = multipart.next_field().await.map_err(multipart_error)? {
        match field.name() {
            Some("purpose") => {
                let value = field.text().await.map_err(multipart_error)?;
                let value = value.trim().to_string();
                if !PURPOSES.contains(&value.as_str()) {
                    return Err(ApiError::invalid(
                        "invalid_purpose",
                        "purpose",
                        format!("purpose must be one of {}", PURPOSES.join(", ")),
                    ));
                }
                purpose = Some(value);
            }
            Some("file") => {
                if pending.is_some() {
                    return Err(ApiError::invalid(
                        "duplicate_file",
                        "file",
                        "send one `file` part",
                    ));
                }
                let filename = field
                    .file_name()
                    .map(str::to_string)
                    .unwrap_or_else(|| "upload.jsonl".into());
                gatehouse_common::text::check(&filename, gatehouse_common::text::Rule::line(255))
                    .map_err(|e| {
                    ApiError::invalid(e.code(), "file.filename", format!("filename {e}"))
                })?;
                let mut upload = files::Upload::begin(
                    &state.pool,
                    tenant,
                    &filename,
                    &principal.actor(),
                    limits,
                )
                .await?;
                while let Some(chunk) = field.chunk().await.map_err(multipart_error)? {
                    upload.write(&chunk).await.map_err(upload_error)?;
                }
                pending = Some(upload);
            }
            _ => {
                // Unknown parts are drained and ignored (OpenAI clients may add some).
                while field.chunk().await.map_err(multipart_error)?.is_some() {}
            }
        }
    }
    let Some(upload) = pending else {
        return Err(ApiError::invalid(
            "missing_file",
            "file",
            "a `file` part is required",
        ));
    };
    let Some(purpose) = purpose else {
        return Err(ApiError::invalid(
            "missing_purpose",
            "purpose",
            "a `purpose` part is required",
        ));
    };
    let file = upload.finish(&purpose).await.map_err(upload_error)?;
    metrics::counter!("gatehouse_api_file_bytes_total").increment(file.bytes.max(0) as u64);
    tracing::info!(file_id = %file.id, bytes = file.bytes, lines = file.lines, "file stored");
    Ok((StatusCode::OK, Json(file)))
}

fn parse_id(raw: &str) -> Result<FileId, ApiError> {
    raw.parse().map_err(|_| ApiError::NotFound)
}

#[utoipa::path(
    get, path = "/v1/files", tag = "files", operation_id = "listFiles",
    params(PageQuery),
    responses((status = 200, description = "The caller's files, newest first", body = crate::openapi::FileList)),
)]
async fn list(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(page): ApiQuery<PageQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    principal.require(&policy::FILES_READ)?;
    let limit = page.limit()?;
    let actor = principal.actor();
    let list = files::list(
        &state.pool,
        principal.tenant()?,
        principal.job_management(&actor),
        page.after::<FileId>()?,
        limit,
    )
    .await?;
    let has_more = list.len() as i64 == limit;
    let next = if has_more {
        list.last().map(|f| f.id.to_string())
    } else {
        None
    };
    Ok(Json(json!({
        "object": "list",
        "data": list,
        "has_more": has_more,
        "next_after": next,
    })))
}

#[utoipa::path(
    get, path = "/v1/files/{id}", tag = "files", operation_id = "getFile",
    responses((status = 200, description = "The file", body = files::File)),
)]
async fn show(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<files::File>, ApiError> {
    principal.require(&policy::FILES_READ)?;
    let actor = principal.actor();
    files::get(
        &state.pool,
        principal.tenant()?,
        parse_id(&id)?,
        principal.job_management(&actor),
    )
    .await?
    .map(Json)
    .ok_or(ApiError::NotFound)
}

#[utoipa::path(
    delete, path = "/v1/files/{id}", tag = "files", operation_id = "deleteFile",
    responses((status = 200, description = "Deleted", body = crate::openapi::DeletedFile)),
)]
async fn remove(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    principal.require(&policy::FILES_WRITE)?;
    let id = parse_id(&id)?;
    let actor = principal.actor();
    if files::delete(
        &state.pool,
        principal.tenant()?,
        id,
        principal.job_management(&actor),
    )
    .await?
    {
        Ok(Json(json!({"id": id, "object": "file", "deleted": true})))
    } else {
        Err(ApiError::NotFound)
    }
}

/// The file's bytes: stored parts for uploads; for a batch's output or error file, its
/// results in OpenAI's batch output format, as far as they exist now.
#[utoipa::path(
    get, path = "/v1/files/{id}/content", tag = "files", operation_id = "fileContent",
    responses(
        (status = 200, description = "The file's lines (a batch's output or error file: its lines so far)", content(
            (String = "application/jsonl"),
        )),
        (status = 410, description = "Removed by retention (`expired`)", content_type = "application/problem+json", body = crate::openapi::Problem),
    ),
)]
async fn content(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    principal.require(&policy::FILES_READ)?;
    let tenant = principal.tenant()?;
    let actor = principal.actor();
    let file = files::get(
        &state.pool,
        tenant,
        parse_id(&id)?,
        principal.job_management(&actor),
    )
    .await?
    .ok_or(ApiError::NotFound)?;
    let body = match (file.kind.as_str(), file.source_job_id) {
        ("upload", _) => Body::from_stream(ingest::file_bytes(state.pool.clone(), tenant, file.id)),
        (kind, Some(job)) => {
            super::batches::output_body(&state, tenant, job, kind == "batch_error").await?
        }
        _ => return Err(ApiError::NotFound),
    };
    let mut response = Response::new(body);
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/jsonl"),
    );
    Ok(response.into_response())
}
