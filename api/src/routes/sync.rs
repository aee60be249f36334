//! The synchronous endpoints' shared path (`POST /v1/translations`, `POST /v1/moderations`):
//! store the texts as an ordinary job, so they go through the same queue and workers, then
//! wait — on the workers' `NOTIFY`, not a sleep loop — up to `GATEHOUSE_SYNC_WAIT_MS`.

use axum::{
    Json,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use gatehouse_common::{
    job::{
        Lane,
        options::JobOptions,
        result::{ItemError, ItemResult},
        store::{self, ItemSource, NewItem, NewJob, OnInvalid, Submitted},
    },
    types::JobId,
};

use crate::{
    auth::Principal,
    capacity,
    error::ApiError,
    routes::job_actions::view,
    state::AppState,
    store::{
        jobs::{self, Visibility},
        results::ResultsReader,
    },
};

pub enum Waited {
    /// The job finished in time: its id and each item's result or error, in order.
    Done {
        job: JobId,
        results: Vec<Result<ItemResult, ItemError>>,
    },
    /// Still running at the bound: `202` with the job and its `Location`.
    Pending(Response),
}

/// Submits `items` as a job with `options` and waits for it.
pub async fn submit_and_wait(
    state: &AppState,
    principal: &Principal,
    options: JobOptions,
    items: Vec<NewItem>,
) -> Result<Waited, ApiError> {
    let tenant = principal.tenant()?;
    let kind = options.kind();
    // Admission control: a bounded number of waiters per replica, the rest 503 at once.
    let _place = capacity::admit_sync(state)?;
    principal.consume_items(state, items.len()).await?;
    // Subscribe before the job exists, so its notification cannot be missed.
    let mut done = state.waiter.subscribe();
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
            parent_job: None,
            lane: Lane::Sync,
            now: state.clock.now(),
            admission: &admission,
            webhook_endpoint: None,
        },
    )
    .await
    .map_err(|e| capacity::submit_error(state, e))?;
    let Submitted::Created(job) = submitted else {
        return Err(ApiError::Internal("unexpected idempotent replay".into()));
    };
    state.outbox_notify.notify_one();
    metrics::counter!("gatehouse_api_jobs_submitted_total", "kind" => kind.as_str()).increment(1);

    let deadline = tokio::time::Instant::now() + state.config.sync_wait;
    let visibility = Visibility::OwnOrShared(&actor);
    loop {
        let current = jobs::get(&state.pool, tenant, job.id, visibility, view(state))
            .await?
            .ok_or(ApiError::NotFound)?;
        if current.status.is_terminal() {
            break;
        }
        tokio::select! {
            received = done.recv() => match received {
                Ok(id) if id != job.id.0 => continue,
                // Our job, or notifications were missed (lagged): look again.
                _ => {}
            },
            () = tokio::time::sleep_until(deadline) => {
                let mut response = (StatusCode::ACCEPTED, Json(current)).into_response();
                if let Ok(location) = HeaderValue::from_str(&format!("/v1/jobs/{}", job.id)) {
                    response.headers_mut().insert(header::LOCATION, location);
                }
                return Ok(Waited::Pending(response));
            }
        }
    }

    let mut reader = ResultsReader::new(&state.pool, tenant, job.id).await?;
    let lines = reader.page(-1, i64::MAX, None).await?;
    let results = lines
        .into_iter()
        .map(|line| match (line.result, line.error) {
            (Some(result), _) => Ok(result),
            (None, Some(error)) => Err(error),
            (None, None) => Err(ItemError::new("no_result", "the item has no result")),
        })
        .collect();
    Ok(Waited::Done {
        job: job.id,
        results,
    })
}

/// A sync endpoint names its texts differently from `POST /v1/jobs`: `items[0].text` reads as
/// `single` (e.g. `text`, `input`) for a one-text request, `items[i].text` as `many[i]`.
pub fn rename_item_field(error: ApiError, single: bool, one: &str, many: &str) -> ApiError {
    let rename = |s: String| {
        if single {
            s.replace("items[0].text", one)
        } else {
            s.replace("items[", &format!("{many}["))
                .replace("].text", "]")
        }
    };
    match error {
        ApiError::Unprocessable {
            code,
            detail,
            field: Some(field),
        } => ApiError::Unprocessable {
            code,
            detail: rename(detail),
            field: Some(rename(field)),
        },
        other => other,
    }
}
