//! What can be done to a job after it was submitted: `POST /v1/jobs/{id}/cancel` (pending
//! chunks skipped, finished results kept, `cancelling` while in-flight chunks finish, quota
//! refunded for what never ran) and `POST /v1/jobs/{id}/retry` (a child job of the failed
//! items, same custom ids, `parent_job_id` set).

use axum::{
    Json, Router,
    extract::{Path, State},
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::post,
};
use gatehouse_common::{
    job::{
        Lane,
        options::JobOptions,
        store::{self, Cancelled, ItemSource, NewJob, OnInvalid, Submitted},
    },
    types::{EndpointId, JobId, JobKind},
};

use crate::{
    auth::Principal,
    capacity,
    error::ApiError,
    policy,
    state::AppState,
    store::jobs::{self, Job, View},
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/jobs/{id}/cancel", post(cancel))
        .route("/v1/jobs/{id}/retry", post(retry))
}

/// How job objects are rendered now (the clock, the default retention).
pub fn view(state: &AppState) -> View {
    View {
        now: state.clock.now(),
        default_retention_days: state.config.capacity.default_retention_days,
    }
}

fn parse_id(raw: &str) -> Result<JobId, ApiError> {
    raw.parse().map_err(|_| ApiError::NotFound)
}

/// The job, if this principal may manage it (its owner, or an admin).
async fn managed(state: &AppState, principal: &Principal, id: JobId) -> Result<Job, ApiError> {
    let actor = principal.actor();
    jobs::get(
        &state.pool,
        principal.tenant()?,
        id,
        principal.job_management(&actor),
        view(state),
    )
    .await?
    .ok_or(ApiError::NotFound)
}

#[utoipa::path(
    post, path = "/v1/jobs/{id}/cancel", tag = "jobs", operation_id = "cancelJob",
    responses(
        (status = 200, description = "The job, `cancelling` or `cancelled`", body = Job),
        (status = 409, description = "Conflicts with the current state", content_type = "application/problem+json", body = crate::openapi::Problem),
    ),
)]
async fn cancel(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<Job>, ApiError> {
    principal.require(&policy::JOBS_SUBMIT)?;
    let id = parse_id(&id)?;
    managed(&state, &principal, id).await?;
    let tenant = principal.tenant()?;
    match store::cancel(
        &state.pool,
        tenant,
        id,
        &principal.actor(),
        Some(principal.client_ip),
        state.config.capacity.default_retention_days,
    )
    .await?
    {
        None => return Err(ApiError::NotFound),
        Some(Cancelled::Finished(_)) => {
            return Err(ApiError::Conflict {
                code: "job_finished",
                detail: "the job has already finished; there is nothing to cancel".into(),
            });
        }
        Some(Cancelled::Done(_)) => {
            metrics::counter!("gatehouse_api_jobs_cancelled_total").increment(1);
        }
    }
    managed(&state, &principal, id).await.map(Json)
}

#[utoipa::path(
    post, path = "/v1/jobs/{id}/retry", tag = "jobs", operation_id = "retryJob",
    responses(
        (status = 202, description = "The child job of the failed items", body = Job),
        (status = 409, description = "Conflicts with the current state", content_type = "application/problem+json", body = crate::openapi::Problem),
    ),
)]
async fn retry(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    principal.require(&policy::JOBS_SUBMIT)?;
    let id = parse_id(&id)?;
    let parent = managed(&state, &principal, id).await?;
    principal.require_kind(parent.kind)?;
    if !parent.status.is_terminal() {
        return Err(ApiError::Conflict {
            code: "job_not_finished",
            detail: "only a finished job can be retried".into(),
        });
    }
    if parent.expired {
        return Err(ApiError::Gone {
            code: "expired",
            detail: "the job's items were deleted by retention".into(),
        });
    }
    let tenant = principal.tenant()?;
    let items = jobs::failed_items(&state.pool, tenant, id).await?;
    if items.is_empty() {
        return Err(ApiError::Conflict {
            code: "nothing_to_retry",
            detail: "the job has no failed items".into(),
        });
    }
    let (options, webhook_endpoint) = stored_options(&state, tenant, id, parent.kind).await?;
    principal.consume_items(&state, items.len()).await?;
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
            items: ItemSource::Items(&items),
            on_invalid: OnInvalid::Reject,
            max_items: state.config.limits.max_items_per_job,
            chunk_items: state.config.chunk_items,
            input_file: None,
            parent_job: Some(id),
            lane: Lane::Bulk,
            now: state.clock.now(),
            admission: &admission,
            webhook_endpoint,
        },
    )
    .await
    .map_err(|e| capacity::submit_error(&state, e))?;
    let Submitted::Created(child) = submitted else {
        return Err(ApiError::Internal("unexpected replay".into()));
    };
    state.dispatch_notify.notify_one();
    let child = managed(&state, &principal, child.id).await?;
    let mut response = (StatusCode::ACCEPTED, Json(&child)).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("/v1/jobs/{}", child.id)) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    Ok(response)
}

/// The options a job was submitted with, and its webhook endpoint (a retry inherits both).
async fn stored_options(
    state: &AppState,
    tenant: gatehouse_common::types::TenantId,
    id: JobId,
    kind: JobKind,
) -> Result<(JobOptions, Option<EndpointId>), ApiError> {
    let mut tx =
        gatehouse_common::db::begin(&state.pool, gatehouse_common::db::Scope::Tenant(tenant))
            .await?;
    let row = sqlx::query!(
        r#"SELECT options, webhook_endpoint_id AS "endpoint: EndpointId" FROM jobs WHERE job_id = $1"#,
        id.0
    )
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    let options = JobOptions::parse(kind, Some(row.options))
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok((options, row.endpoint))
}
