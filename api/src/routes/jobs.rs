//! `POST /v1/jobs`, `GET /v1/jobs/{id}`, `GET /v1/jobs/{id}/results`.

use axum::{
    Json, Router,
    body::Body,
    extract::{Path, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use futures_util::stream;
use gatehouse_common::types::{JobId, JobKind};
use serde::Deserialize;

use super::{Page, PageQuery};
use crate::{
    auth::Principal,
    capacity,
    error::ApiError,
    extract::{ApiJson, ApiQuery},
    policy,
    state::AppState,
    store::jobs,
};
use gatehouse_common::job::{
    Lane,
    options::{JobOptions, TranslateOptions},
    store::{self, NewItem, NewJob, Submitted},
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/jobs", post(create).get(list))
        .route("/v1/jobs/{id}", get(show))
        .route("/v1/jobs/{id}/results", get(results))
        .route("/v1/jobs/{id}/share", post(share))
        .route("/v1/examples", get(examples))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateJob {
    pub kind: String,
    #[serde(default)]
    pub items: Option<Vec<ItemIn>>,
    #[serde(default)]
    pub options: Option<serde_json::Value>,
    /// Validate and price the job without storing anything.
    #[serde(default)]
    pub dry_run: bool,
}

/// A job kind's options from the request, checked (for translation) against the installed
/// models.
pub(crate) fn job_options(
    state: &AppState,
    kind: JobKind,
    raw: Option<serde_json::Value>,
) -> Result<JobOptions, ApiError> {
    if kind == JobKind::Translate && raw.is_none() {
        return Err(ApiError::invalid(
            "missing_options",
            "options",
            "a translate job needs `options` with `target_lang` (and `source_lang`, default `auto`)",
        ));
    }
    let options = JobOptions::parse(kind, raw).map_err(|e| {
        let code = if e.field.ends_with("_lang") || e.field.ends_with("_lang.") {
            "invalid_language"
        } else {
            "invalid_options"
        };
        ApiError::invalid(code, e.field.clone(), e.to_string())
    })?;
    if let Some(translation) = options.translation() {
        check_installed(state, translation)?;
    }
    Ok(options)
}

/// 422 `unsupported_language_pair` unless an installed model translates the pair.
fn check_installed(state: &AppState, options: TranslateOptions) -> Result<(), ApiError> {
    let target = options.target_lang.as_str();
    let source = options.source_lang.as_str();
    let pairs = &state.translation_pairs;
    let supported = pairs.iter().any(|p| {
        p.target_lang == target
            && (options.source_lang.fixed().is_none() || p.source_lang == source)
    });
    if supported {
        return Ok(());
    }
    let listed: Vec<String> = pairs
        .iter()
        .map(|p| format!("{}→{}", p.source_lang, p.target_lang))
        .collect();
    let listed = if listed.is_empty() {
        "none".to_string()
    } else {
        listed.join(", ")
    };
    Err(ApiError::invalid(
        "unsupported_language_pair",
        "options",
        format!("no installed model translates {source} to {target}; supported pairs: {listed}"),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ItemIn {
    #[serde(default)]
    pub custom_id: Option<String>,
    pub text: String,
}

const IDEMPOTENCY_KEY: &str = "idempotency-key";

async fn create(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
    body: Result<ApiJson<CreateJob>, ApiError>,
) -> Result<Response, ApiError> {
    principal.require(&policy::JOBS_SUBMIT)?;
    let ApiJson(body) = body?;
    let tenant_id = principal.tenant()?;
    let kind: JobKind = body.kind.parse().map_err(|_| {
        let supported: Vec<&str> = JobKind::ALL.iter().map(|k| k.as_str()).collect();
        ApiError::invalid(
            "unknown_kind",
            "kind",
            format!(
                "unknown kind `{}`; supported: {}",
                body.kind,
                supported.join(", ")
            ),
        )
    })?;
    principal.require_scope(kind.as_str())?;
    let options = job_options(&state, kind, body.options)?;
    let idempotency_key = idempotency_key(&headers)?;
    let items = validate_items(&state, body.items.unwrap_or_default())?;
    let count = items.len();
    if body.dry_run {
        return dry_run(&state, tenant_id, kind, &items).await;
    }
    principal.consume_items(&state, count).await?;
    let actor = principal.actor();
    let admission = capacity::admission(&state.config.capacity);
    let submitted = store::submit(
        &state.pool,
        NewJob {
            tenant_id,
            key_id: principal.key_id(),
            actor: &actor,
            client_ip: Some(principal.client_ip),
            options: &options,
            idempotency_key,
            items: &items,
            chunk_items: state.config.chunk_items,
            lane: Lane::Bulk,
            now: state.clock.now(),
            admission: &admission,
        },
    )
    .await
    .map_err(|e| capacity::submit_error(&state, e))?;
    match submitted {
        Submitted::Created(job) => {
            let job = jobs::Job::from(job);
            state.dispatch_notify.notify_one();
            metrics::counter!("gatehouse_api_jobs_submitted_total", "kind" => kind.as_str())
                .increment(1);
            metrics::counter!("gatehouse_api_items_submitted_total", "kind" => kind.as_str())
                .increment(count as u64);
            tracing::info!(%tenant_id, job_id = %job.id, items = count, "job accepted");
            let location = format!("/v1/jobs/{}", job.id);
            let mut response = (StatusCode::ACCEPTED, Json(job)).into_response();
            if let Ok(value) = HeaderValue::from_str(&location) {
                response.headers_mut().insert(header::LOCATION, value);
            }
            Ok(response)
        }
        Submitted::KeyReused(existing) => Err(ApiError::invalid(
            "idempotency_key_reused",
            "Idempotency-Key",
            format!(
                "this Idempotency-Key was already used for a different request (job {existing}); use a new key for a new request"
            ),
        )),
        Submitted::Replayed(job) => {
            let mut response = (StatusCode::OK, Json(jobs::Job::from(job))).into_response();
            response
                .headers_mut()
                .insert("idempotent-replayed", HeaderValue::from_static("true"));
            Ok(response)
        }
    }
}

/// `dry_run: true`: the submission validated, what it would cost and which quotas it would use
/// — nothing stored, nothing reserved.
async fn dry_run(
    state: &AppState,
    tenant: gatehouse_common::types::TenantId,
    kind: JobKind,
    items: &[NewItem],
) -> Result<Response, ApiError> {
    let cost = store::submit_cost(items);
    let defaults = capacity::admission(&state.config.capacity).quota_defaults;
    let (quotas, fits) =
        store::quote(&state.pool, tenant, kind, cost, state.clock.now(), defaults).await?;
    let applies: Vec<_> = quotas
        .into_iter()
        .filter(|q| q.quota.kind.is_none_or(|k| k == kind))
        .collect();
    let refused = fits.err().map(|e| e.state.quota.name);
    Ok(Json(serde_json::json!({
        "dry_run": true,
        "kind": kind,
        "cost": cost,
        "quotas": applies,
        "would_be_accepted": refused.is_none(),
        "exceeds": refused,
    }))
    .into_response())
}

/// The `Idempotency-Key` header, if present and well-formed.
pub fn idempotency_key(headers: &HeaderMap) -> Result<Option<&str>, ApiError> {
    headers
        .get(IDEMPOTENCY_KEY)
        .map(|v| {
            v.to_str()
                .ok()
                .filter(|k| !k.is_empty() && k.len() <= 255)
                .ok_or_else(|| {
                    ApiError::bad_request(
                        "invalid_idempotency_key",
                        "Idempotency-Key must be 1 to 255 visible ASCII characters",
                    )
                })
        })
        .transpose()
}

/// The job if this principal may see it: admins any of their tenant's, others their own.
async fn visible_job(
    state: &AppState,
    principal: &Principal,
    id: &str,
) -> Result<jobs::Job, ApiError> {
    principal.require(&policy::JOBS_READ)?;
    let id = parse_id(id)?;
    let actor = principal.actor();
    jobs::get(
        &state.pool,
        principal.tenant()?,
        id,
        principal.job_visibility(&actor),
    )
    .await?
    .ok_or(ApiError::NotFound)
}

/// Checks every limit.
pub(crate) fn validate_items(
    state: &AppState,
    items: Vec<ItemIn>,
) -> Result<Vec<NewItem>, ApiError> {
    let limits = &state.config.limits;
    if items.is_empty() {
        return Err(ApiError::invalid(
            "no_items",
            "items",
            "`items` must hold at least one item",
        ));
    }
    if items.len() > limits.max_items_per_job {
        return Err(ApiError::invalid(
            "too_many_items",
            "items",
            format!(
                "{} items; at most {} per job (GATEHOUSE_MAX_ITEMS_PER_JOB)",
                items.len(),
                limits.max_items_per_job
            ),
        ));
    }
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        if item.text.trim().is_empty() {
            return Err(ApiError::invalid(
                "empty_text",
                format!("items[{i}].text"),
                format!("items[{i}].text is empty"),
            ));
        }
        let chars = item.text.chars().count();
        if chars > limits.max_text_chars {
            return Err(ApiError::invalid(
                "text_too_long",
                format!("items[{i}].text"),
                format!(
                    "items[{i}].text has {chars} characters; at most {} (GATEHOUSE_MAX_TEXT_CHARS)",
                    limits.max_text_chars
                ),
            ));
        }
        if item.text.contains('\0') {
            return Err(ApiError::invalid(
                "invalid_text",
                format!("items[{i}].text"),
                format!("items[{i}].text contains a NUL character"),
            ));
        }
        if let Some(id) = &item.custom_id
            && (id.chars().count() > limits.max_custom_id_chars || id.contains('\0'))
        {
            return Err(ApiError::invalid(
                "invalid_custom_id",
                format!("items[{i}].custom_id"),
                format!(
                    "items[{i}].custom_id must be at most {} characters without NUL (GATEHOUSE_MAX_CUSTOM_ID_CHARS)",
                    limits.max_custom_id_chars
                ),
            ));
        }
        out.push(NewItem {
            custom_id: item.custom_id,
            text: item.text,
        });
    }
    Ok(out)
}

/// `GET /v1/jobs`: newest first; admins see every job of the tenant, others their own.
async fn list(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(page): ApiQuery<PageQuery>,
) -> Result<Json<Page<jobs::Job>>, ApiError> {
    principal.require(&policy::JOBS_READ)?;
    let limit = page.limit()?;
    let actor = principal.actor();
    let list = jobs::list(
        &state.pool,
        principal.tenant()?,
        principal.job_visibility(&actor),
        page.after::<JobId>()?,
        limit,
    )
    .await?;
    Ok(Json(Page::new(list, limit, |j| j.id.to_string())))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Share {
    shared: bool,
}

/// `POST /v1/jobs/{id}/share` `{"shared": true|false}`: its owner or an admin shares a job with
/// the tenant (guests read shared jobs only).
async fn share(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    body: Result<ApiJson<Share>, ApiError>,
) -> Result<Json<jobs::Job>, ApiError> {
    principal.require(&policy::JOBS_SHARE)?;
    let ApiJson(body) = body?;
    let id = parse_id(&id)?;
    let actor = principal.actor();
    jobs::set_shared(
        &state.pool,
        principal.tenant()?,
        id,
        body.shared,
        principal.job_management(&actor),
        &actor,
        Some(principal.client_ip),
    )
    .await?
    .map(Json)
    .ok_or(ApiError::NotFound)
}

/// Example inputs per job kind, for the console and for trying the api.
const MODERATION_EXAMPLES: &str = include_str!("../../../samples/moderation.json");

async fn examples(principal: Principal) -> Result<Json<serde_json::Value>, ApiError> {
    principal.require(&policy::EXAMPLES)?;
    let moderate: serde_json::Value = serde_json::from_str(MODERATION_EXAMPLES)
        .map_err(|e| ApiError::Internal(format!("bundled examples: {e}")))?;
    Ok(Json(serde_json::json!({ "moderate": moderate["items"] })))
}

fn parse_id(raw: &str) -> Result<JobId, ApiError> {
    raw.parse().map_err(|_| ApiError::NotFound)
}

async fn show(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<jobs::Job>, ApiError> {
    visible_job(&state, &principal, &id).await.map(Json)
}

const RESULTS_PAGE: i64 = 1000;

/// NDJSON, one line per finished item in submission order. While the job runs, the stream
/// holds the items finished so far (the `X-Gatehouse-Job-Status` header says which).
async fn results(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let job = visible_job(&state, &principal, &id).await?;
    let id = job.id;
    let tenant = principal.tenant()?;
    let reader = jobs::ResultsReader::new(&state.pool, tenant, id).await?;
    let pages = stream::try_unfold((reader, Some(-1)), move |(mut reader, cursor)| async move {
        let Some(after) = cursor else {
            return Ok::<_, sqlx::Error>(None);
        };
        let lines = reader.page(after, RESULTS_PAGE).await?;
        if lines.is_empty() {
            return Ok(None);
        }
        let last = lines.last().map(|l| l.index);
        let full = lines.len() as i64 == RESULTS_PAGE;
        let mut buf = Vec::with_capacity(lines.len() * 256);
        for line in &lines {
            serde_json::to_writer(&mut buf, line)
                .map_err(|e| sqlx::Error::Protocol(e.to_string()))?;
            buf.push(b'\n');
        }
        Ok(Some((buf, (reader, if full { last } else { None }))))
    });
    let mut response = Response::new(Body::from_stream(pages));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    headers.insert(
        "x-gatehouse-job-status",
        HeaderValue::from_static(job.status.as_str()),
    );
    Ok(response)
}
