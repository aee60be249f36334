//! `GET /v1/usage?from=&to=&granularity=day[&tenant=]`: items, characters, jobs and failed items
//! per UTC day and kind, with the tenant's quotas today. Tenant admins see their tenant;
//! operators any tenant (`tenant=ten_…`) or all of them.

use axum::{Json, Router, extract::State, routing::get};
use chrono::{Days, NaiveDate};
use gatehouse_common::{
    job::{quota, store},
    types::{JobKind, TenantId},
};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{
    auth::Principal,
    capacity,
    error::ApiError,
    extract::ApiQuery,
    policy,
    state::AppState,
    store::{tenants, usage},
};

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/usage", get(report))
}

/// Longest period one request may cover.
const MAX_DAYS: u64 = 366;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct UsageQuery {
    #[serde(default)]
    from: Option<NaiveDate>,
    #[serde(default)]
    to: Option<NaiveDate>,
    #[serde(default)]
    granularity: Option<String>,
    #[serde(default)]
    tenant: Option<String>,
}

#[utoipa::path(
    get, path = "/v1/usage", tag = "admin", operation_id = "usage",
    params(UsageQuery),
    responses(
        (status = 200, description = "Usage per UTC day and kind", body = crate::openapi::Usage),
        (status = 404, description = "`tenant` names another (or no) tenant", content_type = "application/problem+json", body = crate::openapi::Problem),
    ),
)]
async fn report(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(query): ApiQuery<UsageQuery>,
) -> Result<Json<Value>, ApiError> {
    principal.require(&policy::USAGE_READ)?;
    if query.granularity.as_deref().is_some_and(|g| g != "day") {
        return Err(ApiError::invalid(
            "invalid_granularity",
            "granularity",
            "granularity must be `day` (usage is counted per UTC day)",
        ));
    }
    let now = state.clock.now();
    let today = now.date_naive();
    let to = query.to.unwrap_or(today);
    let from = query
        .from
        .unwrap_or_else(|| to.checked_sub_days(Days::new(29)).unwrap_or(to));
    if from > to {
        return Err(ApiError::invalid(
            "invalid_range",
            "from",
            "`from` is after `to`",
        ));
    }
    if (to - from).num_days() as u64 >= MAX_DAYS {
        return Err(ApiError::invalid(
            "invalid_range",
            "from",
            format!("at most {MAX_DAYS} days per request"),
        ));
    }
    let tenant: Option<TenantId> = match (principal.tenant_id, query.tenant.as_deref()) {
        // Tenant principals: their own tenant (naming another one is a 404, as everywhere).
        (Some(own), None) => Some(own),
        (Some(own), Some(raw)) => match raw.parse::<TenantId>() {
            Ok(t) if t == own => Some(own),
            _ => return Err(ApiError::NotFound),
        },
        // Operators: one tenant, or all.
        (None, Some(raw)) => Some(raw.parse().map_err(|_| ApiError::NotFound)?),
        (None, None) => None,
    };
    if let Some(t) = tenant
        && principal.tenant_id.is_none()
        && !tenants::exists(&state.pool, t).await?
    {
        return Err(ApiError::NotFound);
    }
    let rows = usage::between(&state.pool, tenant, from, to).await?;
    let mut body = json!({
        "granularity": "day",
        "timezone": "UTC",
        "from": from,
        "to": to,
        "tenant": tenant,
        "data": rows,
    });
    if let Some(t) = tenant {
        let defaults = capacity::admission(&state.config.capacity).quota_defaults;
        let (states, _) = store::quote(
            &state.pool,
            t,
            JobKind::Moderate,
            quota::Cost {
                items: 0,
                characters: 0,
            },
            now,
            defaults,
        )
        .await?;
        body["quotas"] = serde_json::to_value(states).unwrap_or(Value::Null);
    }
    Ok(Json(body))
}
