//! Capacity between tenants, on the api's side: how intake refusals read (quota, backlog),
//! and admission control of the sync endpoints (a bounded number of waiters per replica).
//! Rate limits are `ratelimit.rs`; the fair release of bulk chunks is `dispatch.rs`.

use gatehouse_common::{
    config::CapacityConfig,
    job::{
        quota::QuotaDefaults,
        store::{Admission, Refusal, SubmitError},
    },
};
use serde_json::{Map, Value, json};

use crate::{error::ApiError, state::AppState};

/// What intake allows, from the configuration.
pub fn admission(config: &CapacityConfig) -> Admission {
    Admission {
        quota_defaults: QuotaDefaults {
            daily_items: config.default_daily_items,
            daily_characters: config.default_daily_characters,
        },
        tenant_max_backlog_items: config.tenant_max_backlog_items,
        max_backlog_items: config.max_backlog_items,
    }
}

/// A failed submission as the client sees it: `429 quota_exceeded` (which quota, its limit,
/// what remains, when it resets), `429 backlog_full` (the tenant's backlog), `503 overloaded`
/// (all tenants' backlog) — each with `Retry-After`.
pub fn submit_error(state: &AppState, error: SubmitError) -> ApiError {
    match error {
        SubmitError::Database(e) => ApiError::Database(e),
        SubmitError::Refused(Refusal::InvalidLines { errors, total }) => {
            ApiError::InvalidLines { errors, total }
        }
        SubmitError::Refused(Refusal::NoItems { invalid }) => ApiError::invalid(
            "no_items",
            "items",
            format!("the input holds no valid item ({invalid} invalid lines)"),
        ),
        SubmitError::Refused(Refusal::TooManyItems { max }) => ApiError::invalid(
            "too_many_items",
            "items",
            format!("more than {max} items (GATEHOUSE_MAX_ITEMS_PER_JOB)"),
        ),
        SubmitError::Refused(Refusal::Quota(exceeded)) => {
            let q = &exceeded.state;
            let retry = (q.resets_at - state.clock.now()).num_seconds().max(1) as u64;
            metrics::counter!("gatehouse_api_quota_rejections_total", "quota" => q.quota.name.clone())
                .increment(1);
            let mut extra = Map::new();
            extra.insert("quota".into(), json!(q.quota.name));
            if let Some(kind) = q.quota.kind {
                extra.insert("kind".into(), json!(kind));
            }
            extra.insert("limit".into(), json!(q.quota.limit));
            extra.insert("used".into(), json!(q.used));
            extra.insert("remaining".into(), json!(q.remaining));
            extra.insert("requested".into(), json!(exceeded.requested));
            extra.insert("resets_at".into(), json!(q.resets_at));
            ApiError::TooManyRequests {
                code: "quota_exceeded",
                detail: format!(
                    "this job needs {} {} but the tenant's {} quota has {} of {} left today (UTC); it resets at {}",
                    exceeded.requested,
                    match q.quota.counts {
                        gatehouse_common::job::quota::Measure::Items => "items",
                        gatehouse_common::job::quota::Measure::Characters => "characters",
                    },
                    q.quota.name,
                    q.remaining.unwrap_or(0),
                    q.quota.limit.unwrap_or(0),
                    q.resets_at.to_rfc3339(),
                ),
                retry_after_secs: retry,
                extra,
            }
        }
        SubmitError::Refused(Refusal::TenantBacklog { limit, backlog }) => {
            metrics::counter!("gatehouse_api_backlog_rejections_total", "scope" => "tenant")
                .increment(1);
            ApiError::TooManyRequests {
                code: "backlog_full",
                detail: format!(
                    "the tenant already has {backlog} items waiting (at most {limit}, GATEHOUSE_TENANT_MAX_BACKLOG_ITEMS); retry when some have been processed"
                ),
                retry_after_secs: state.config.capacity.backlog_retry_after_secs,
                extra: backlog_extra("tenant", limit, backlog),
            }
        }
        SubmitError::Refused(Refusal::Backlog { limit, backlog }) => {
            metrics::counter!("gatehouse_api_backlog_rejections_total", "scope" => "total")
                .increment(1);
            ApiError::Overloaded {
                code: "overloaded",
                detail: format!(
                    "{backlog} items are waiting across all tenants (at most {limit}, GATEHOUSE_MAX_BACKLOG_ITEMS); retry later"
                ),
                retry_after_secs: state.config.capacity.backlog_retry_after_secs,
                extra: backlog_extra("total", limit, backlog),
            }
        }
    }
}

fn backlog_extra(scope: &str, limit: i64, backlog: i64) -> Map<String, Value> {
    let mut extra = Map::new();
    extra.insert("scope".into(), json!(scope));
    extra.insert("limit".into(), json!(limit));
    extra.insert("backlog".into(), json!(backlog));
    extra
}

/// A place among this replica's sync waiters, or `503` when they are all taken
/// (admission control: answering at once beats queueing without bound).
pub fn admit_sync(state: &AppState) -> Result<tokio::sync::OwnedSemaphorePermit, ApiError> {
    state.sync_waiters.clone().try_acquire_owned().map_err(|_| {
        metrics::counter!("gatehouse_api_sync_rejections_total").increment(1);
        ApiError::Overloaded {
            code: "overloaded",
            detail: format!(
                "this replica is already waiting on {} synchronous requests (GATEHOUSE_MAX_SYNC_WAITERS); retry shortly or submit a job",
                state.config.capacity.max_sync_waiters
            ),
            retry_after_secs: 1,
            extra: Map::new(),
        }
    })
}
