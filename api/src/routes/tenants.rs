//! Platform operators manage tenants: `POST /v1/tenants`, `GET /v1/tenants`,
//! `PATCH /v1/tenants/{id}`. Disabling a tenant stops its keys, users and tokens at once.

use axum::{
    Json, Router,
    extract::{Path, State},
    http::StatusCode,
    routing::{get, patch},
};
use gatehouse_common::job::quota::{self, QuotaSettings};
use gatehouse_common::{
    db::Scope,
    types::{SCOPES, TenantId},
};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::{Page, PageQuery, check_scopes};
use crate::{
    auth::Principal,
    error::ApiError,
    extract::{ApiJson, ApiQuery, Line},
    policy,
    ratelimit::RateSettings,
    state::AppState,
    store::tenants::{self, NewTenant, Tenant, TenantChanges},
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/tenants", get(list).post(create))
        .route("/v1/tenants/{id}", patch(update))
        .route("/v1/tenant", get(own).patch(update_own))
}

/// A tenant admin's view of its own tenant.
#[utoipa::path(
    get, path = "/v1/tenant", tag = "admin", operation_id = "getOwnTenant",
    responses((status = 200, description = "The caller's tenant", body = TenantView)),
)]
async fn own(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Json<TenantView>, ApiError> {
    principal.require(&policy::TENANT_SETTINGS)?;
    tenants::get(&state.pool, principal.tenant()?)
        .await?
        .map(|t| Json(view(&state, t)))
        .ok_or(ApiError::NotFound)
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct UpdateOwnTenant {
    #[serde(default)]
    name: Option<Line<200>>,
    #[serde(default)]
    ip_allowlist: Option<Vec<String>>,
    /// Days job texts and results are kept, 1–3650.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 3650)]
    retention_days: Option<i32>,
}

/// 1–3650 days.
fn check_retention(days: Option<i32>) -> Result<(), ApiError> {
    match days {
        Some(d) if !(1..=3650).contains(&d) => Err(ApiError::invalid(
            "invalid_retention",
            "retention_days",
            "retention_days must be between 1 and 3650",
        )),
        _ => Ok(()),
    }
}

/// A tenant admin changes its tenant's settings: name, IP allowlist and retention. Scopes,
/// quotas and the enabled flag stay with the platform operators.
#[utoipa::path(
    patch, path = "/v1/tenant", tag = "admin", operation_id = "updateOwnTenant",
    request_body = UpdateOwnTenant,
    responses((status = 200, description = "The tenant", body = TenantView)),
)]
async fn update_own(
    State(state): State<AppState>,
    principal: Principal,
    body: Result<ApiJson<UpdateOwnTenant>, ApiError>,
) -> Result<Json<TenantView>, ApiError> {
    principal.require(&policy::TENANT_SETTINGS)?;
    let ApiJson(body) = body?;
    let id = principal.tenant()?;
    check_retention(body.retention_days)?;
    let changes = TenantChanges {
        name: body.name.map(Line::into_inner),
        ip_allowlist: body
            .ip_allowlist
            .map(|list| parse_allowlist(&state, list))
            .transpose()?,
        retention_days: body.retention_days,
        ..TenantChanges::default()
    };
    tenants::update(
        &state.pool,
        id,
        &changes,
        &principal.actor(),
        Some(principal.client_ip),
        Scope::Tenant(id),
    )
    .await?
    .map(|t| Json(view(&state, t)))
    .ok_or(ApiError::NotFound)
}

fn all_scopes() -> Vec<String> {
    SCOPES.iter().map(|s| s.to_string()).collect()
}

/// CIDRs or bare addresses (`10.0.0.0/8`, `203.0.113.7`), at most
/// `GATEHOUSE_MAX_IP_ALLOWLIST_ENTRIES`, de-duplicated (after normalisation) in order.
fn parse_allowlist(state: &AppState, raw: Vec<String>) -> Result<Vec<IpNet>, ApiError> {
    let max = state.config.limits.max_ip_allowlist_entries;
    if raw.len() > max {
        return Err(ApiError::invalid(
            "too_many_entries",
            "ip_allowlist",
            format!(
                "{} entries; at most {max} (GATEHOUSE_MAX_IP_ALLOWLIST_ENTRIES)",
                raw.len()
            ),
        ));
    }
    let mut nets: Vec<IpNet> = Vec::with_capacity(raw.len());
    for (i, entry) in raw.iter().enumerate() {
        let net = entry
            .trim()
            .parse::<IpNet>()
            .or_else(|_| entry.trim().parse::<std::net::IpAddr>().map(IpNet::from))
            .map_err(|_| {
                ApiError::invalid(
                    "invalid_cidr",
                    format!("ip_allowlist[{i}]"),
                    "not a CIDR or IP address",
                )
            })?
            .trunc();
        if !nets.contains(&net) {
            nets.push(net);
        }
    }
    Ok(nets)
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct CreateTenant {
    name: Line<200>,
    #[serde(default)]
    slug: Option<Line<63>>,
    #[serde(default)]
    scopes: Option<Vec<String>>,
    #[serde(default)]
    ip_allowlist: Vec<String>,
}

#[utoipa::path(
    post, path = "/v1/tenants", tag = "admin", operation_id = "createTenant",
    request_body = CreateTenant,
    responses(
        (status = 201, description = "The tenant", body = TenantView),
        (status = 409, description = "Conflicts with the current state", content_type = "application/problem+json", body = crate::openapi::Problem),
    ),
)]
async fn create(
    State(state): State<AppState>,
    principal: Principal,
    body: Result<ApiJson<CreateTenant>, ApiError>,
) -> Result<(StatusCode, Json<TenantView>), ApiError> {
    principal.require(&policy::TENANTS_MANAGE)?;
    let ApiJson(body) = body?;
    let name = body.name.as_str();
    let slug = body
        .slug
        .map(Line::into_inner)
        .unwrap_or_else(|| tenants::slugify(name));
    if slug.is_empty() || slug != tenants::slugify(&slug) {
        return Err(ApiError::invalid(
            "invalid_slug",
            "slug",
            "slug must be lowercase letters, digits and single dashes",
        ));
    }
    let scopes = body
        .scopes
        .map(|s| super::bounded_set("scopes", s, super::MAX_SCOPES))
        .transpose()?;
    if let Some(scopes) = &scopes {
        check_scopes("scopes", scopes, &all_scopes())?;
    }
    let allowlist = parse_allowlist(&state, body.ip_allowlist)?;
    let created = tenants::create(
        &state.pool,
        NewTenant {
            name,
            slug: &slug,
            scopes: scopes.as_deref(),
            ip_allowlist: &allowlist,
        },
        &principal.actor(),
        Some(principal.client_ip),
    )
    .await;
    match created {
        Ok(tenant) => Ok((StatusCode::CREATED, Json(view(&state, tenant)))),
        Err(e)
            if e.as_database_error()
                .is_some_and(|d| d.is_unique_violation()) =>
        {
            Err(ApiError::Conflict {
                code: "duplicate_slug",
                detail: format!("a tenant with slug `{slug}` already exists"),
            })
        }
        Err(e) => Err(e.into()),
    }
}

#[utoipa::path(
    get, path = "/v1/tenants", tag = "admin", operation_id = "listTenants",
    params(PageQuery),
    responses((status = 200, description = "Every tenant", body = Page<TenantView>)),
)]
async fn list(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(page): ApiQuery<PageQuery>,
) -> Result<Json<Page<TenantView>>, ApiError> {
    principal.require(&policy::TENANTS_MANAGE)?;
    let limit = page.limit()?;
    let tenants = tenants::list(&state.pool, page.after::<TenantId>()?, limit).await?;
    let views = tenants.into_iter().map(|t| view(&state, t)).collect();
    Ok(Json(Page::new(views, limit, |t: &TenantView| {
        t.tenant.tenant_id.to_string()
    })))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct UpdateTenant {
    #[serde(default)]
    name: Option<Line<200>>,
    #[serde(default)]
    enabled: Option<bool>,
    #[serde(default)]
    scopes: Option<Vec<String>>,
    #[serde(default)]
    ip_allowlist: Option<Vec<String>>,
    /// `{"daily_items": N, "daily_characters": N, "per_kind": {...}}`; `null` = unlimited.
    #[serde(
        default,
        deserialize_with = "gatehouse_common::objects::optional_object"
    )]
    quotas: Option<QuotaSettings>,
    /// `{"requests_per_minute": N, "items_per_minute": N}`; `null` = unlimited.
    #[serde(
        default,
        deserialize_with = "gatehouse_common::objects::optional_object"
    )]
    rate_limits: Option<RateSettings>,
    /// Share of the workers against other tenants, 1–100 (default 1).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 100)]
    weight: Option<i32>,
    /// Days job texts and results are kept, 1–3650 (default `GATEHOUSE_DEFAULT_RETENTION_DAYS`).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 3650)]
    retention_days: Option<i32>,
    /// Days audit records are kept, 90–36500 (default `GATEHOUSE_AUDIT_RETENTION_DAYS`);
    /// operators only.
    #[serde(default)]
    audit_retention_days: Option<i32>,
}

/// Audit retention is never below 90 days.
fn check_audit_retention(days: Option<i32>) -> Result<(), ApiError> {
    let min = gatehouse_common::config::MIN_AUDIT_RETENTION_DAYS;
    match days {
        Some(d) if !(min..=36_500).contains(&d) => Err(ApiError::invalid(
            "invalid_audit_retention",
            "audit_retention_days",
            format!("audit_retention_days must be between {min} and 36500"),
        )),
        _ => Ok(()),
    }
}

#[utoipa::path(
    patch, path = "/v1/tenants/{id}", tag = "admin", operation_id = "updateTenant",
    request_body = UpdateTenant,
    responses((status = 200, description = "The tenant", body = TenantView)),
)]
async fn update(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    body: Result<ApiJson<UpdateTenant>, ApiError>,
) -> Result<Json<TenantView>, ApiError> {
    principal.require(&policy::TENANTS_MANAGE)?;
    let ApiJson(body) = body?;
    let id: TenantId = id.parse().map_err(|_| ApiError::NotFound)?;
    let scopes = body
        .scopes
        .map(|s| super::bounded_set("scopes", s, super::MAX_SCOPES))
        .transpose()?;
    if let Some(scopes) = &scopes {
        check_scopes("scopes", scopes, &all_scopes())?;
    }
    if let Some(quotas) = &body.quotas {
        quotas
            .validate()
            .map_err(|(field, detail)| ApiError::invalid("invalid_quota", field, detail))?;
    }
    if let Some(limits) = &body.rate_limits {
        limits.validate("rate_limits")?;
    }
    if let Some(w) = body.weight
        && !(1..=100).contains(&w)
    {
        return Err(ApiError::invalid(
            "invalid_weight",
            "weight",
            "weight must be between 1 and 100",
        ));
    }
    check_retention(body.retention_days)?;
    check_audit_retention(body.audit_retention_days)?;
    if body.enabled == Some(false) {
        principal
            .require_fresh_auth(&state, "tenant.disable")
            .await?;
    }
    let changes = TenantChanges {
        name: body.name.map(Line::into_inner),
        enabled: body.enabled,
        scopes,
        ip_allowlist: body
            .ip_allowlist
            .map(|list| parse_allowlist(&state, list))
            .transpose()?,
        quotas: body
            .quotas
            .map(|q| serde_json::to_value(q).unwrap_or_default()),
        rate_limits: body
            .rate_limits
            .map(|r| serde_json::to_value(r).unwrap_or_default()),
        weight: body.weight,
        retention_days: body.retention_days,
        audit_retention_days: body.audit_retention_days,
    };
    tenants::update(
        &state.pool,
        id,
        &changes,
        &principal.actor(),
        Some(principal.client_ip),
        Scope::Platform,
    )
    .await?
    .map(|t| Json(view(&state, t)))
    .ok_or(ApiError::NotFound)
}

/// A tenant as the api shows it: the stored settings (`quotas`, `rate_limits`: what the
/// operator set; a key absent means the deployment's default) and what is in force.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TenantView {
    #[serde(flatten)]
    pub tenant: Tenant,
    pub effective: Effective,
}

/// The limits in force for a tenant (`null` = unlimited).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Effective {
    pub quotas: Vec<quota::Quota>,
    pub rate_limits: EffectiveRates,
    pub retention_days: i32,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EffectiveRates {
    pub requests_per_minute: Option<i64>,
    pub items_per_minute: Option<i64>,
}

pub fn view(state: &AppState, tenant: Tenant) -> TenantView {
    let settings: QuotaSettings = serde_json::from_value(tenant.quotas.clone()).unwrap_or_default();
    let quotas = quota::effective(
        &settings,
        crate::capacity::admission(&state.config.capacity).quota_defaults,
    );
    let rates = RateSettings::from_json(&tenant.rate_limits);
    let config = &state.config.rate_limits;
    let (requests_per_minute, items_per_minute) = rates.effective((
        config.default_tenant_requests_per_minute,
        config.default_tenant_items_per_minute,
    ));
    let retention_days = tenant
        .retention_days
        .unwrap_or(state.config.capacity.default_retention_days);
    TenantView {
        tenant,
        effective: Effective {
            retention_days,
            quotas,
            rate_limits: EffectiveRates {
                requests_per_minute,
                items_per_minute,
            },
        },
    }
}
