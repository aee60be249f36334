//! OpenAI's Batch API over Gatehouse jobs: `POST /v1/batches` (`input_file_id`, `endpoint`,
//! `completion_window`, `metadata`), `GET /v1/batches/{id}`, `GET /v1/batches`,
//! `POST /v1/batches/{id}/cancel`. A batch is a job from its input file; its `output_file_id`
//! and `error_file_id` are rendered from the job's results in OpenAI's batch output format —
//! readable while the batch runs (partial results), with no "finalizing" wait. Endpoints:
//! `/v1/moderations` and, a Gatehouse extension, `/v1/translations` (lines' `body`:
//! `{"text", "source_lang", "target_lang"}`, one pair per batch).

use axum::{
    Json, Router,
    body::Body,
    extract::{Path, State},
    routing::{get, post},
};
use chrono::{DateTime, Duration, Utc};
use futures_util::StreamExt;
use gatehouse_common::{
    db::{self, Scope},
    job::{
        Lane,
        options::{JobOptions, ModerateOptions, TranslateOptions},
        result::ItemResult,
        store::{self, ItemSource, NewJob, OnInvalid, Refusal, SubmitError, Submitted},
    },
    types::{BatchId, FileId, JobId, JobKind, JobStatus, TenantId},
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::PageQuery;
use crate::{
    auth::Principal,
    capacity,
    error::ApiError,
    extract::{ApiJson, ApiQuery},
    ingest, openai, policy,
    state::AppState,
    store::{files, jobs, results::ResultsReader},
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/batches", post(create).get(list))
        .route("/v1/batches/{id}", get(show))
        .route("/v1/batches/{id}/cancel", post(cancel))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
struct CreateBatch {
    input_file_id: String,
    endpoint: String,
    completion_window: String,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    metadata: Option<Map<String, Value>>,
}

/// An OpenAI batch object.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Batch {
    id: BatchId,
    object: &'static str,
    endpoint: String,
    errors: Option<Value>,
    input_file_id: FileId,
    completion_window: String,
    status: &'static str,
    output_file_id: Option<FileId>,
    error_file_id: Option<FileId>,
    created_at: i64,
    in_progress_at: Option<i64>,
    expires_at: i64,
    finalizing_at: Option<i64>,
    completed_at: Option<i64>,
    failed_at: Option<i64>,
    expired_at: Option<i64>,
    cancelling_at: Option<i64>,
    cancelled_at: Option<i64>,
    request_counts: RequestCounts,
    metadata: Option<Value>,
    /// The Gatehouse job behind it (extension).
    job_id: Option<JobId>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct RequestCounts {
    total: i64,
    completed: i64,
    failed: i64,
}

struct BatchRow {
    batch_id: BatchId,
    job_id: Option<JobId>,
    endpoint: String,
    completion_window: String,
    metadata: Option<Value>,
    input_file_id: FileId,
    output_file_id: Option<FileId>,
    error_file_id: Option<FileId>,
    errors: Option<Value>,
    created_at: DateTime<Utc>,
    status: Option<String>,
    started_at: Option<DateTime<Utc>>,
    completed_at: Option<DateTime<Utc>>,
    cancelled_at: Option<DateTime<Utc>>,
    purged_at: Option<DateTime<Utc>>,
    lines_total: Option<i64>,
    lines_done: Option<i64>,
    lines_failed: Option<i64>,
}

fn ts(t: Option<DateTime<Utc>>) -> Option<i64> {
    t.map(|t| t.timestamp())
}

impl From<BatchRow> for Batch {
    fn from(r: BatchRow) -> Self {
        let job_status: Option<JobStatus> = r.status.as_deref().and_then(|s| s.parse().ok());
        let status = match (&r.errors, job_status, r.purged_at) {
            (Some(_), _, _) => "failed",
            (_, _, Some(_)) => "expired",
            (_, Some(JobStatus::Queued | JobStatus::Running), _) => "in_progress",
            (_, Some(JobStatus::Completed | JobStatus::Failed), _) => "completed",
            (_, Some(JobStatus::Cancelling), _) => "cancelling",
            (_, Some(JobStatus::Cancelled), _) => "cancelled",
            (_, None, _) => "failed",
        };
        let done = matches!(status, "completed");
        Batch {
            id: r.batch_id,
            object: "batch",
            endpoint: r.endpoint,
            errors: r.errors,
            input_file_id: r.input_file_id,
            completion_window: r.completion_window,
            status,
            output_file_id: r.output_file_id,
            error_file_id: r.error_file_id,
            created_at: r.created_at.timestamp(),
            in_progress_at: ts(r.started_at).or(Some(r.created_at.timestamp())),
            expires_at: (r.created_at + Duration::hours(24)).timestamp(),
            finalizing_at: if done { ts(r.completed_at) } else { None },
            completed_at: if done { ts(r.completed_at) } else { None },
            failed_at: if status == "failed" {
                Some(r.created_at.timestamp())
            } else {
                None
            },
            expired_at: ts(r.purged_at),
            cancelling_at: ts(r.cancelled_at),
            cancelled_at: if status == "cancelled" {
                ts(r.completed_at)
            } else {
                None
            },
            request_counts: RequestCounts {
                total: r.lines_total.unwrap_or(0),
                completed: r.lines_done.unwrap_or(0),
                failed: r.lines_failed.unwrap_or(0),
            },
            metadata: r.metadata,
            job_id: r.job_id,
        }
    }
}

/// Batches of `tenant` the caller may see (as its jobs: its own and shared ones, admins all).
async fn load(
    state: &AppState,
    tenant: TenantId,
    visibility: jobs::Visibility<'_>,
    id: Option<BatchId>,
    before: Option<BatchId>,
    limit: i64,
) -> Result<Vec<Batch>, sqlx::Error> {
    let mut tx = db::begin(&state.pool, Scope::Tenant(tenant)).await?;
    // Request counts are per input line (a moderation line may hold several inputs).
    let rows = sqlx::query_as!(
        BatchRow,
        r#"
        SELECT b.batch_id AS "batch_id: BatchId", b.job_id AS "job_id: JobId", b.endpoint,
               b.completion_window, b.metadata, b.input_file_id AS "input_file_id: FileId",
               b.output_file_id AS "output_file_id: FileId",
               b.error_file_id AS "error_file_id: FileId", b.errors, b.created_at,
               j.status AS "status?", j.started_at AS "started_at?",
               j.completed_at AS "completed_at?", j.cancelled_at AS "cancelled_at?",
               j.purged_at AS "purged_at?",
               l.total AS "lines_total?", l.done AS "lines_done?", l.failed AS "lines_failed?"
        FROM batches b
        LEFT JOIN jobs j ON j.job_id = b.job_id
        LEFT JOIN LATERAL (
            -- One item per line: the job's own counts.
            SELECT j.input_lines::int8 AS total, j.succeeded::int8 AS done,
                   j.failed::int8 AS failed
            WHERE j.input_lines = j.total
            UNION ALL
            SELECT count(*)::int8 AS total,
                   (count(*) FILTER (WHERE g.items = g.ok))::int8 AS done,
                   (count(*) FILTER (WHERE g.bad > 0 AND g.items = g.ok + g.bad))::int8 AS failed
            FROM (
                SELECT count(*) AS items,
                       count(r.item_index) FILTER (WHERE r.status = 'succeeded') AS ok,
                       count(r.item_index) FILTER (WHERE r.status = 'failed') AS bad
                FROM job_items i
                LEFT JOIN job_results r ON r.job_id = i.job_id AND r.item_index = i.item_index
                WHERE i.job_id = b.job_id AND j.input_lines IS DISTINCT FROM j.total
                GROUP BY i.line_no
            ) g
            HAVING j.input_lines IS DISTINCT FROM j.total
        ) l ON true
        WHERE b.tenant_id = $1 AND ($2::uuid IS NULL OR b.batch_id = $2)
          AND ($3::uuid IS NULL OR b.batch_id < $3)
          AND (NOT $6::bool OR b.created_by = $5::text OR ($7::bool AND coalesce(j.shared, false)))
        ORDER BY b.batch_id DESC
        LIMIT $4
        "#,
        tenant.0,
        id.map(|i| i.0),
        before.map(|b| b.0),
        limit,
        visibility.owner(),
        visibility.restricted(),
        visibility.shared(),
    )
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(rows.into_iter().map(Batch::from).collect())
}

/// The translation pair of an OpenAI translation batch: that of its first valid line.
async fn first_pair(
    state: &AppState,
    tenant: TenantId,
    file: FileId,
) -> Result<Option<TranslateOptions>, ApiError> {
    // The parser keeps the first line's pair; read until a line was accepted.
    let mut context = ingest::LineContext::default();
    let mut lines = ingest::lines::split(
        ingest::file_bytes(state.pool.clone(), tenant, file),
        state.config.limits.max_line_bytes,
    );
    while let Some(line) = lines.next().await {
        if let Ok(ingest::lines::Line::Text(no, text)) = line {
            let parsed = ingest::parse::line(
                &state.config.limits,
                JobKind::Translate,
                no,
                &text,
                &mut context,
            );
            if context.translate.is_some() {
                drop(parsed);
                break;
            }
        }
    }
    Ok(context.translate)
}

#[utoipa::path(
    post, path = "/v1/batches", tag = "batches", operation_id = "createBatch",
    request_body = CreateBatch,
    responses((status = 200, description = "The batch (OpenAI's batch object)", body = Batch)),
)]
async fn create(
    State(state): State<AppState>,
    principal: Principal,
    body: Result<ApiJson<CreateBatch>, ApiError>,
) -> Result<Json<Batch>, ApiError> {
    principal.require(&policy::JOBS_SUBMIT)?;
    let ApiJson(body) = body?;
    let tenant = principal.tenant()?;
    let kind = ingest::parse::endpoint_kind(&body.endpoint).ok_or_else(|| {
        ApiError::invalid(
            "invalid_endpoint",
            "endpoint",
            "endpoint must be /v1/moderations or /v1/translations",
        )
    })?;
    principal.require_kind(kind)?;
    if body.completion_window != "24h" {
        return Err(ApiError::invalid(
            "invalid_completion_window",
            "completion_window",
            "completion_window must be 24h",
        ));
    }
    if let Some(metadata) = &body.metadata {
        if metadata.len() > 16 {
            return Err(ApiError::invalid(
                "invalid_metadata",
                "metadata",
                "at most 16 keys",
            ));
        }
        for (k, v) in metadata {
            let ok = k.chars().count() <= 64
                && !k.contains('\0')
                && v.as_str()
                    .is_some_and(|v| v.chars().count() <= 512 && !v.contains('\0'));
            if !ok {
                return Err(ApiError::invalid(
                    "invalid_metadata",
                    format!("metadata.{k}"),
                    "metadata keys are at most 64 characters, values strings of at most 512",
                ));
            }
        }
    }
    let file_id: FileId = body
        .input_file_id
        .parse()
        .map_err(|_| ApiError::invalid("unknown_file", "input_file_id", "no such file"))?;
    let file = files::get(
        &state.pool,
        tenant,
        file_id,
        principal.job_management(&principal.actor()),
    )
    .await?
    .filter(|f| f.kind == "upload")
    .ok_or_else(|| ApiError::invalid("unknown_file", "input_file_id", "no such file"))?;
    let options = match kind {
        JobKind::Moderate => JobOptions::Moderate(ModerateOptions::default()),
        JobKind::Translate => match first_pair(&state, tenant, file.id).await? {
            Some(pair) => JobOptions::Translate(pair),
            None => JobOptions::Translate(TranslateOptions {
                source_lang: Default::default(),
                target_lang: gatehouse_common::job::options::Lang::En,
            }),
        },
        // No batch endpoint names a chained job (`POST /v1/jobs` runs those).
        JobKind::ModerateTranslate => {
            return Err(ApiError::invalid(
                "invalid_endpoint",
                "endpoint",
                "endpoint must be /v1/moderations or /v1/translations",
            ));
        }
    };
    if let Some(pair) = options.translation() {
        super::jobs::check_installed(&state, pair)?;
    }
    let failure = ingest::Failure::default();
    let items = ingest::items(
        ingest::file_bytes(state.pool.clone(), tenant, file.id),
        state.config.limits.clone(),
        kind,
        state.config.limits.max_line_bytes,
        state.config.limits.max_file_lines,
        failure.clone(),
    );
    let actor = principal.actor();
    let admission = capacity::admission(&state.config.capacity);
    let submitted = store::submit(
        &state.pool,
        NewJob {
            tenant_id: tenant,
            key_id: principal.key_id(),
            actor: &actor,
            client_ip: Some(principal.client_ip),
            options: &options,
            idempotency_key: None,
            items: ItemSource::Stream(items),
            on_invalid: OnInvalid::Reject,
            max_items: state.config.limits.max_items_per_job,
            chunk_items: state.config.chunk_items,
            input_file: Some(file.id.0),
            parent_job: None,
            lane: Lane::Bulk,
            now: state.clock.now(),
            admission: &admission,
            webhook_endpoint: None,
        },
    )
    .await;
    if let Some(error) = failure.take() {
        return Err(error);
    }
    let batch_id = BatchId::new();
    let mut tx = db::begin(&state.pool, Scope::Tenant(tenant)).await?;
    let job = match submitted {
        Ok(Submitted::Created(job)) => Some(job),
        Ok(_) => return Err(ApiError::Internal("unexpected replay".into())),
        // Validation failures are a failed batch, as OpenAI reports them.
        Err(SubmitError::Refused(Refusal::InvalidLines { errors, .. })) => {
            let data: Vec<Value> = errors
                .iter()
                .map(|e| {
                    json!({"code": e.code, "message": e.message, "param": e.field, "line": e.line})
                })
                .collect();
            let errors = json!({"object": "list", "data": data});
            insert_batch(
                &mut tx,
                batch_id,
                tenant,
                None,
                &body,
                file.id,
                None,
                None,
                Some(errors),
                &actor,
            )
            .await?;
            None
        }
        Err(SubmitError::Refused(Refusal::NoItems { .. })) => {
            let errors = json!({"object": "list", "data": [
                {"code": "empty_file", "message": "the input file holds no request", "param": "input_file_id", "line": null}
            ]});
            insert_batch(
                &mut tx,
                batch_id,
                tenant,
                None,
                &body,
                file.id,
                None,
                None,
                Some(errors),
                &actor,
            )
            .await?;
            None
        }
        Err(e) => return Err(capacity::submit_error(&state, e)),
    };
    if let Some(job) = &job {
        let output = files::create_virtual(
            &mut tx,
            tenant,
            "batch_output",
            &format!("{batch_id}_output.jsonl"),
            job.id,
            &actor,
        )
        .await?;
        let errors = files::create_virtual(
            &mut tx,
            tenant,
            "batch_error",
            &format!("{batch_id}_error.jsonl"),
            job.id,
            &actor,
        )
        .await?;
        insert_batch(
            &mut tx,
            batch_id,
            tenant,
            Some(job.id),
            &body,
            file.id,
            Some(output),
            Some(errors),
            None,
            &actor,
        )
        .await?;
    }
    tx.commit().await?;
    if job.is_some() {
        // (The job and its batch commit separately: this point is after both.)
        gatehouse_common::fault::point(&state.config, gatehouse_common::fault::API_AFTER_COMMIT);
        state.dispatch_notify.notify_one();
    }
    let mut found = load(
        &state,
        tenant,
        principal.job_visibility(&actor),
        Some(batch_id),
        None,
        1,
    )
    .await?;
    found.pop().map(Json).ok_or(ApiError::NotFound)
}

#[allow(clippy::too_many_arguments)]
async fn insert_batch(
    tx: &mut sqlx::PgConnection,
    batch: BatchId,
    tenant: TenantId,
    job: Option<JobId>,
    body: &CreateBatch,
    input: FileId,
    output: Option<FileId>,
    errors_file: Option<FileId>,
    errors: Option<Value>,
    actor: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        r"
        INSERT INTO batches (batch_id, tenant_id, job_id, endpoint, completion_window, metadata,
                             input_file_id, output_file_id, error_file_id, errors, created_by)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
        ",
        batch.0,
        tenant.0,
        job.map(|j| j.0),
        body.endpoint,
        body.completion_window,
        body.metadata.clone().map(Value::Object),
        input.0,
        output.map(|f| f.0),
        errors_file.map(|f| f.0),
        errors,
        actor,
    )
    .execute(tx)
    .await?;
    Ok(())
}

fn parse_id(raw: &str) -> Result<BatchId, ApiError> {
    raw.parse().map_err(|_| ApiError::NotFound)
}

#[utoipa::path(
    get, path = "/v1/batches/{id}", tag = "batches", operation_id = "getBatch",
    responses((status = 200, description = "The batch", body = Batch)),
)]
async fn show(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<Batch>, ApiError> {
    principal.require(&policy::JOBS_READ)?;
    let actor = principal.actor();
    let visible = principal.job_visibility(&actor);
    let mut found = load(
        &state,
        principal.tenant()?,
        visible,
        Some(parse_id(&id)?),
        None,
        1,
    )
    .await?;
    found.pop().map(Json).ok_or(ApiError::NotFound)
}

#[utoipa::path(
    get, path = "/v1/batches", tag = "batches", operation_id = "listBatches",
    params(PageQuery),
    responses((status = 200, description = "The batches the caller may see, newest first", body = crate::openapi::BatchList)),
)]
async fn list(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(page): ApiQuery<PageQuery>,
) -> Result<Json<Value>, ApiError> {
    principal.require(&policy::JOBS_READ)?;
    let limit = page.limit()?;
    let actor = principal.actor();
    let batches = load(
        &state,
        principal.tenant()?,
        principal.job_visibility(&actor),
        None,
        page.after::<BatchId>()?,
        limit,
    )
    .await?;
    let has_more = batches.len() as i64 == limit;
    let first = batches.first().map(|b| b.id.to_string());
    let last = batches.last().map(|b| b.id.to_string());
    Ok(Json(json!({
        "object": "list",
        "data": batches,
        "first_id": first,
        "last_id": last,
        "has_more": has_more,
    })))
}

#[utoipa::path(
    post, path = "/v1/batches/{id}/cancel", tag = "batches", operation_id = "cancelBatch",
    responses((status = 200, description = "The batch, `cancelling` or `cancelled`", body = Batch)),
)]
async fn cancel(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<Batch>, ApiError> {
    principal.require(&policy::JOBS_SUBMIT)?;
    let tenant = principal.tenant()?;
    let id = parse_id(&id)?;
    let actor = principal.actor();
    let batch = load(
        &state,
        tenant,
        principal.job_management(&actor),
        Some(id),
        None,
        1,
    )
    .await?
    .pop()
    .ok_or(ApiError::NotFound)?;
    if let Some(job) = batch.job_id {
        // The principal must be able to manage the job behind the batch.
        let actor = principal.actor();
        let visible = jobs::get(
            &state.pool,
            tenant,
            job,
            principal.job_management(&actor),
            super::job_actions::view(&state),
        )
        .await?;
        if visible.is_none() {
            return Err(ApiError::NotFound);
        }
        store::cancel(
            &state.pool,
            tenant,
            job,
            &actor,
            Some(principal.client_ip),
            state.config.capacity.default_retention_days,
        )
        .await?;
    }
    let mut found = load(
        &state,
        tenant,
        principal.job_management(&actor),
        Some(id),
        None,
        1,
    )
    .await?;
    found.pop().map(Json).ok_or(ApiError::NotFound)
}

/// The OpenAI batch output (or error) file of `job`, as far as its lines are finished: one
/// line per input line whose every item has a result — succeeded lines in the output file,
/// lines with a failed item in the error file.
pub async fn output_body(
    state: &AppState,
    tenant: TenantId,
    job: JobId,
    errors: bool,
) -> Result<Body, ApiError> {
    let mut tx = db::begin(&state.pool, Scope::Tenant(tenant)).await?;
    let purged = sqlx::query_scalar!("SELECT purged_at FROM jobs WHERE job_id = $1", job.0)
        .fetch_optional(&mut *tx)
        .await?
        .flatten();
    tx.commit().await?;
    if let Some(purged) = purged {
        return Err(ApiError::Gone {
            code: "expired",
            detail: format!(
                "the batch's results were deleted by retention on {}",
                purged.date_naive()
            ),
        });
    }
    let reader = ResultsReader::new(&state.pool, tenant, job).await?;
    let job_hex = job.0.simple().to_string();
    const PAGE: i64 = 1000;
    // State: the reader, the cursor, the group of items of the line being read.
    let stream = futures_util::stream::try_unfold(
        (
            reader,
            Some(-1),
            Vec::<crate::store::results::ItemState>::new(),
        ),
        move |(mut reader, cursor, mut carry)| {
            let job_hex = job_hex.clone();
            async move {
                let Some(after) = cursor else {
                    return Ok::<_, sqlx::Error>(None);
                };
                let items = reader.items(after, PAGE).await?;
                let full = items.len() as i64 == PAGE;
                let next = items.last().map(|i| i.index);
                carry.extend(items);
                let mut buf = Vec::new();
                // Emit every complete line group except a trailing one that may continue.
                let mut start = 0;
                while start < carry.len() {
                    let line = carry[start].line_no;
                    let mut end = start + 1;
                    while end < carry.len() && carry[end].line_no == line && line.is_some() {
                        end += 1;
                    }
                    if end == carry.len() && full {
                        break;
                    }
                    write_line(&mut buf, &carry[start..end], &job_hex, errors);
                    start = end;
                }
                let rest = carry.split_off(start);
                Ok(Some((buf, (reader, if full { next } else { None }, rest))))
            }
        },
    );
    Ok(Body::from_stream(stream))
}

fn write_line(
    buf: &mut Vec<u8>,
    group: &[crate::store::results::ItemState],
    job_hex: &str,
    errors: bool,
) {
    if group.iter().any(|i| i.result.is_none()) {
        return;
    }
    let failed = group
        .iter()
        .filter_map(|i| i.result.as_ref())
        .find_map(|r| r.error.clone());
    if failed.is_some() != errors {
        return;
    }
    let first = &group[0];
    let line = first.line_no.unwrap_or(first.index + 1);
    let request_id = format!("req_{job_hex}_{line}");
    let response = match failed {
        Some(error) => json!({
            "status_code": 500,
            "request_id": request_id,
            "body": {"error": {"message": error.message, "type": "server_error", "code": error.code}},
        }),
        None => {
            let results: Vec<&ItemResult> = group
                .iter()
                .filter_map(|i| i.result.as_ref().and_then(|r| r.result.as_ref()))
                .collect();
            let body = match results.first() {
                Some(ItemResult::Translation(t)) => serde_json::to_value(t).unwrap_or(Value::Null),
                _ => {
                    let mut model = String::new();
                    let out: Vec<Value> = results
                        .iter()
                        .filter_map(|r| r.as_moderation())
                        .map(|m| {
                            if model.is_empty() {
                                model = m
                                    .models
                                    .iter()
                                    .map(|m| m.reference.as_str())
                                    .collect::<Vec<_>>()
                                    .join("+");
                            }
                            serde_json::to_value(openai::result(m.clone())).unwrap_or(Value::Null)
                        })
                        .collect();
                    json!({"id": format!("modr_{job_hex}_{line}"), "model": model, "results": out})
                }
            };
            json!({"status_code": 200, "request_id": request_id, "body": body})
        }
    };
    let entry = json!({
        "id": format!("batch_req_{job_hex}_{line}"),
        "custom_id": first.custom_id,
        "response": response,
        "error": null,
    });
    if serde_json::to_writer(&mut *buf, &entry).is_ok() {
        buf.push(b'\n');
    }
}
