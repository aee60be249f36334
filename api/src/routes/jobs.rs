//! `POST /v1/jobs` (a JSON body with `items` or an `input_file_id`, or an NDJSON body with the
//! kind and options in the query string), `GET /v1/jobs`, `GET /v1/jobs/{id}`,
//! `POST /v1/jobs/{id}/share`, `GET /v1/examples`. Results and refused lines are
//! `job_results.rs`; cancel and retry `job_actions.rs`.

use axum::{
    Json, Router,
    extract::{FromRequest, FromRequestParts, Path, Request, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use gatehouse_common::{
    job::{
        Lane,
        options::{JobOptions, TranslateOptions},
        store::{self, ItemSource, NewItem, NewJob, OnInvalid, SubmitError, Submitted},
    },
    types::{FileId, JobId, JobKind, TenantId},
};
use serde::Deserialize;

use super::{Page, PageQuery, job_actions::view};
use crate::{
    auth::Principal,
    capacity,
    error::ApiError,
    extract::{ApiJson, ApiQuery},
    ingest, policy,
    state::AppState,
    store::{files, jobs},
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/jobs", post(create).get(list))
        .route("/v1/jobs/{id}", get(show))
        .route("/v1/jobs/{id}/share", post(share))
        .route("/v1/examples", get(examples))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateJob {
    /// `moderate`, `translate` or `moderate_translate` (or give `pipeline`).
    #[serde(default)]
    pub kind: Option<String>,
    /// The steps, as an alternative to `kind`: `["moderate"]`, `["translate"]` or
    /// `["moderate", "translate"]` (= `moderate_translate`).
    #[serde(default)]
    pub pipeline: Option<Vec<String>>,
    #[serde(
        default,
        deserialize_with = "gatehouse_common::objects::optional_objects"
    )]
    pub items: Option<Vec<ItemIn>>,
    /// A file uploaded with `POST /v1/files`: one item (or OpenAI batch request) per line.
    #[serde(default)]
    pub input_file_id: Option<String>,
    #[serde(default)]
    pub options: Option<serde_json::Value>,
    /// For file and NDJSON inputs: `reject` (default: nothing stored if a line is bad) or
    /// `skip` (good lines run, bad ones listed by `GET /v1/jobs/{id}/errors`).
    #[serde(default)]
    pub on_invalid: OnInvalid,
    /// Validate and price the job without storing anything.
    #[serde(default)]
    pub dry_run: bool,
    /// `{"endpoint_id": "ep_…"}`: this job's webhook events go to that endpoint only.
    #[serde(
        default,
        deserialize_with = "gatehouse_common::objects::optional_object"
    )]
    pub webhook: Option<JobWebhook>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JobWebhook {
    pub endpoint_id: String,
}

/// `POST /v1/jobs?kind=…` with an NDJSON body: the kind and options come from the query.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct NdjsonQuery {
    kind: String,
    #[serde(default)]
    source_lang: Option<String>,
    #[serde(default)]
    target_lang: Option<String>,
    /// `moderate_translate`: the worst level still translated.
    #[serde(default)]
    max_level: Option<String>,
    /// The job's webhook endpoint (`ep_…`), as `"webhook": {"endpoint_id"}` in JSON.
    #[serde(default)]
    webhook_endpoint_id: Option<String>,
    #[serde(default)]
    on_invalid: OnInvalid,
}

fn parse_kind(raw: &str) -> Result<JobKind, ApiError> {
    raw.parse().map_err(|_| {
        let supported: Vec<&str> = JobKind::ALL.iter().map(|k| k.as_str()).collect();
        ApiError::invalid(
            "unknown_kind",
            "kind",
            format!("unknown kind `{raw}`; supported: {}", supported.join(", ")),
        )
    })
}

/// The kind of a JSON submission: `kind`, or the steps of `pipeline`.
fn body_kind(kind: Option<&str>, pipeline: Option<&[String]>) -> Result<JobKind, ApiError> {
    match (kind, pipeline) {
        (Some(kind), None) => parse_kind(kind),
        (None, Some(steps)) => {
            let steps: Vec<&str> = steps.iter().map(String::as_str).collect();
            match steps.as_slice() {
                ["moderate"] => Ok(JobKind::Moderate),
                ["translate"] => Ok(JobKind::Translate),
                ["moderate", "translate"] => Ok(JobKind::ModerateTranslate),
                _ => Err(ApiError::invalid(
                    "invalid_pipeline",
                    "pipeline",
                    "pipeline must be [\"moderate\"], [\"translate\"] or [\"moderate\", \"translate\"]",
                )),
            }
        }
        (Some(_), Some(_)) => Err(ApiError::invalid(
            "invalid_body",
            "pipeline",
            "send either `kind` or `pipeline`, not both",
        )),
        (None, None) => Err(ApiError::invalid(
            "invalid_body",
            "kind",
            "`kind` is required (moderate, translate or moderate_translate)",
        )),
    }
}

fn is_ndjson(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .is_some_and(|v| v == "application/x-ndjson" || v == "application/jsonl")
}

/// Where a submission's items come from.
enum Input {
    Items(Vec<NewItem>),
    File(FileId),
    Body(axum::body::Body),
}

#[utoipa::path(
    post, path = "/v1/jobs", tag = "jobs", operation_id = "createJob",
    params(
        NdjsonQuery,
        ("Idempotency-Key" = Option<String>, Header, description = "Retries with the same key return the original job (200)"),
    ),
    request_body(
        description = "A JSON submission (`items` or `input_file_id`), or NDJSON lines (one item or OpenAI batch request per line) with `?kind=`",
        content(
            (CreateJob = "application/json"),
            (String = "application/x-ndjson"),
        ),
    ),
    responses(
        (status = 202, description = "Accepted: the job is stored (`Location` names it)", body = jobs::Job,
            headers(("Location" = String, description = "`/v1/jobs/{id}`"))),
        (status = 200, description = "A replay of an `Idempotency-Key` (`Idempotent-Replayed: true`), or a dry run", content(
            (jobs::Job = "application/json"),
        )),
    ),
)]
async fn create(
    State(state): State<AppState>,
    principal: Principal,
    request: Request,
) -> Result<Response, ApiError> {
    principal.require(&policy::JOBS_SUBMIT)?;
    let tenant_id = principal.tenant()?;
    let (mut parts, body) = request.into_parts();
    let idempotency_key = idempotency_key(&parts.headers)?.map(str::to_string);
    if is_ndjson(&parts.headers) {
        let ApiQuery(query) =
            ApiQuery::<NdjsonQuery>::from_request_parts(&mut parts, &state).await?;
        let kind = parse_kind(&query.kind)?;
        principal.require_kind(kind)?;
        let mut raw = serde_json::Map::new();
        if let Some(s) = query.source_lang {
            raw.insert("source_lang".into(), serde_json::Value::String(s));
        }
        if let Some(t) = query.target_lang {
            raw.insert("target_lang".into(), serde_json::Value::String(t));
        }
        if let Some(l) = query.max_level {
            raw.insert("max_level".into(), serde_json::Value::String(l));
        }
        let raw = (!raw.is_empty()).then_some(serde_json::Value::Object(raw));
        let options = job_options(&state, kind, raw)?;
        let webhook = match &query.webhook_endpoint_id {
            Some(raw) => {
                Some(super::webhook_endpoints::job_endpoint(&state, tenant_id, raw).await?)
            }
            None => None,
        };
        return submit(
            &state,
            &principal,
            tenant_id,
            Submission {
                options,
                input: Input::Body(body),
                on_invalid: query.on_invalid,
                idempotency_key: idempotency_key.as_deref(),
                webhook,
            },
        )
        .await;
    }
    let request = Request::from_parts(parts, body);
    let ApiJson(body) = ApiJson::<CreateJob>::from_request(request, &state).await?;
    let kind = body_kind(body.kind.as_deref(), body.pipeline.as_deref())?;
    principal.require_kind(kind)?;
    let options = job_options(&state, kind, body.options)?;
    let input = match (body.items, body.input_file_id) {
        (Some(items), None) => Input::Items(validate_items(&state, items)?),
        (None, Some(raw)) => {
            let id: FileId = raw
                .parse()
                .map_err(|_| ApiError::invalid("unknown_file", "input_file_id", "no such file"))?;
            let file = files::get(
                &state.pool,
                tenant_id,
                id,
                principal.job_management(&principal.actor()),
            )
            .await?
            .filter(|f| f.kind == "upload")
            .ok_or_else(|| ApiError::invalid("unknown_file", "input_file_id", "no such file"))?;
            Input::File(file.id)
        }
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid(
                "invalid_body",
                "input_file_id",
                "send either `items` or `input_file_id`, not both",
            ));
        }
        (None, None) => {
            return Err(ApiError::invalid(
                "no_items",
                "items",
                "`items` must hold at least one item (or send `input_file_id`)",
            ));
        }
    };
    if body.dry_run {
        let Input::Items(items) = &input else {
            return Err(ApiError::invalid(
                "invalid_body",
                "dry_run",
                "dry runs price `items` sent in the body",
            ));
        };
        return dry_run(&state, tenant_id, kind, items).await;
    }
    let webhook = match &body.webhook {
        Some(hook) => Some(
            super::webhook_endpoints::job_endpoint(&state, tenant_id, &hook.endpoint_id).await?,
        ),
        None => None,
    };
    submit(
        &state,
        &principal,
        tenant_id,
        Submission {
            options,
            input,
            on_invalid: body.on_invalid,
            idempotency_key: idempotency_key.as_deref(),
            webhook,
        },
    )
    .await
}

/// A validated submission, waiting to be stored.
struct Submission<'a> {
    options: JobOptions,
    input: Input,
    on_invalid: OnInvalid,
    idempotency_key: Option<&'a str>,
    webhook: Option<gatehouse_common::types::EndpointId>,
}

/// Stores a job from `input`: items in memory are counted against the items-per-minute
/// limit first; streamed inputs (files, NDJSON) after they were read.
async fn submit(
    state: &AppState,
    principal: &Principal,
    tenant_id: TenantId,
    submission: Submission<'_>,
) -> Result<Response, ApiError> {
    let Submission {
        options,
        mut input,
        on_invalid,
        idempotency_key,
        webhook,
    } = submission;
    let kind = options.kind();
    if let Input::Items(items) = &input {
        principal.consume_items(state, items.len()).await?;
    }
    let failure = ingest::Failure::default();
    let limits = state.config.limits.clone();
    let line_bytes = limits.max_line_bytes;
    let max_lines = limits.max_file_lines;
    let input_file = match &input {
        Input::File(f) => Some(f.0),
        _ => None,
    };
    let source = match &mut input {
        Input::Items(items) => ItemSource::Items(items.as_slice()),
        Input::File(file) => ItemSource::Stream(ingest::items(
            ingest::file_bytes(state.pool.clone(), tenant_id, *file),
            limits,
            kind,
            line_bytes,
            max_lines,
            failure.clone(),
        )),
        Input::Body(body) => ItemSource::Stream(ingest::items(
            ingest::body_bytes(
                std::mem::replace(body, axum::body::Body::empty()),
                state.config.limits.max_file_bytes,
                failure.clone(),
            ),
            limits,
            kind,
            line_bytes,
            max_lines,
            failure.clone(),
        )),
    };
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
            items: source,
            on_invalid,
            max_items: state.config.limits.max_items_per_job,
            chunk_items: state.config.chunk_items,
            input_file,
            parent_job: None,
            lane: Lane::Bulk,
            now: state.clock.now(),
            admission: &admission,
            webhook_endpoint: webhook,
        },
    )
    .await;
    answer(state, principal, tenant_id, kind, submitted, failure).await
}

/// The response to a submission: 202 with the job, 200 for a replay, or the refusal.
async fn answer(
    state: &AppState,
    principal: &Principal,
    tenant_id: TenantId,
    kind: JobKind,
    submitted: Result<Submitted, SubmitError>,
    failure: ingest::Failure,
) -> Result<Response, ApiError> {
    if let Some(error) = failure.take() {
        return Err(error);
    }
    let submitted = match submitted {
        Ok(s) => s,
        Err(e) => return Err(capacity::submit_error(state, e)),
    };
    let actor = principal.actor();
    let visible = principal.job_visibility(&actor);
    match submitted {
        Submitted::Created(job) => {
            gatehouse_common::fault::point(
                &state.config,
                gatehouse_common::fault::API_AFTER_COMMIT,
            );
            state.dispatch_notify.notify_one();
            let count = job.total;
            metrics::counter!("gatehouse_api_jobs_submitted_total", "kind" => kind.as_str())
                .increment(1);
            metrics::counter!("gatehouse_api_items_submitted_total", "kind" => kind.as_str())
                .increment(u64::try_from(count).unwrap_or(0));
            tracing::info!(%tenant_id, job_id = %job.id, items = count, "job accepted");
            let location = format!("/v1/jobs/{}", job.id);
            let job = jobs::get(&state.pool, tenant_id, job.id, visible, view(state))
                .await?
                .ok_or(ApiError::NotFound)?;
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
            let job = jobs::get(&state.pool, tenant_id, job.id, visible, view(state))
                .await?
                .ok_or(ApiError::NotFound)?;
            let mut response = (StatusCode::OK, Json(job)).into_response();
            response
                .headers_mut()
                .insert("idempotent-replayed", HeaderValue::from_static("true"));
            Ok(response)
        }
    }
}

/// A job kind's options from the request, checked (for translation) against the installed
/// models.
pub(crate) fn job_options(
    state: &AppState,
    kind: JobKind,
    raw: Option<serde_json::Value>,
) -> Result<JobOptions, ApiError> {
    if kind.needs_translation() && raw.is_none() {
        return Err(ApiError::invalid(
            "missing_options",
            "options",
            format!(
                "a {kind} job needs `options` with `target_lang` (and `source_lang`, default `auto`)"
            ),
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
pub(crate) fn check_installed(state: &AppState, options: TranslateOptions) -> Result<(), ApiError> {
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

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ItemIn {
    #[serde(default)]
    pub custom_id: Option<String>,
    pub text: String,
}

const IDEMPOTENCY_KEY: &str = "idempotency-key";

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
pub(crate) async fn visible_job(
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
        view(state),
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
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            ingest::check_item(limits, &format!("items[{i}]"), item.custom_id, item.text)
                .map_err(|(field, code, detail)| ApiError::invalid(code, field, detail))
        })
        .collect()
}

/// `GET /v1/jobs`: newest first; admins see every job of the tenant, others their own.
#[utoipa::path(
    get, path = "/v1/jobs", tag = "jobs", operation_id = "listJobs",
    params(PageQuery),
    responses((status = 200, description = "The jobs the caller may see, newest first", body = Page<jobs::Job>)),
)]
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
        view(&state),
    )
    .await?;
    Ok(Json(Page::new(list, limit, |j| j.id.to_string())))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct Share {
    shared: bool,
}

/// `POST /v1/jobs/{id}/share` `{"shared": true|false}`: its owner or an admin shares a job with
/// the tenant (guests read shared jobs only).
#[utoipa::path(
    post, path = "/v1/jobs/{id}/share", tag = "jobs", operation_id = "shareJob",
    request_body = Share,
    responses((status = 200, description = "The job, shared or not", body = jobs::Job)),
)]
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
    let tenant = principal.tenant()?;
    let shared = jobs::set_shared(
        &state.pool,
        tenant,
        id,
        body.shared,
        principal.job_management(&actor),
        &actor,
        Some(principal.client_ip),
    )
    .await?;
    if !shared {
        return Err(ApiError::NotFound);
    }
    jobs::get(
        &state.pool,
        tenant,
        id,
        principal.job_visibility(&actor),
        view(&state),
    )
    .await?
    .map(Json)
    .ok_or(ApiError::NotFound)
}

/// Example inputs per job kind, for the console and for trying the api.
const MODERATION_EXAMPLES: &str = include_str!("../../../samples/moderation.json");

#[utoipa::path(
    get, path = "/v1/examples", tag = "jobs", operation_id = "examples",
    responses((status = 200, description = "Example inputs per kind", body = crate::openapi::Examples)),
)]
async fn examples(principal: Principal) -> Result<Json<serde_json::Value>, ApiError> {
    principal.require(&policy::EXAMPLES)?;
    let moderate: serde_json::Value = serde_json::from_str(MODERATION_EXAMPLES)
        .map_err(|e| ApiError::Internal(format!("bundled examples: {e}")))?;
    Ok(Json(serde_json::json!({ "moderate": moderate["items"] })))
}

fn parse_id(raw: &str) -> Result<JobId, ApiError> {
    raw.parse().map_err(|_| ApiError::NotFound)
}

#[utoipa::path(
    get, path = "/v1/jobs/{id}", tag = "jobs", operation_id = "getJob",
    responses((status = 200, description = "The job", body = jobs::Job)),
)]
async fn show(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<jobs::Job>, ApiError> {
    visible_job(&state, &principal, &id).await.map(Json)
}
