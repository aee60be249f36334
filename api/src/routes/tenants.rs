//! Platform operators manage tenants: `POST /v1/tenants`, `GET /v1/tenants`,
//! `PATCH /v1/tenants/{id}`. Disabling a tenant stops its keys, users and tokens at once.

use axum::{
    Json, Router,
    extract::{Path, State},
    http::StatusCode,
    routing::{get, patch},
};
use gatehouse_common::{
    db::Scope,
    types::{SCOPES, TenantId},
};
use ipnet::IpNet;
use serde::Deserialize;

use super::{Page, PageQuery, check_scopes};
use crate::{
    auth::Principal,
    error::ApiError,
    extract::{ApiJson, ApiQuery, Line},
    policy,
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
async fn own(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Json<Tenant>, ApiError> {
    principal.require(&policy::TENANT_SETTINGS)?;
    tenants::get(&state.pool, principal.tenant()?)
        .await?
        .map(Json)
        .ok_or(ApiError::NotFound)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateOwnTenant {
    #[serde(default)]
    name: Option<Line<200>>,
    #[serde(default)]
    ip_allowlist: Option<Vec<String>>,
}

/// A tenant admin changes its tenant's settings: name and IP allowlist. Scopes and the enabled
/// flag stay with the platform operators.
async fn update_own(
    State(state): State<AppState>,
    principal: Principal,
    body: Result<ApiJson<UpdateOwnTenant>, ApiError>,
) -> Result<Json<Tenant>, ApiError> {
    principal.require(&policy::TENANT_SETTINGS)?;
    let ApiJson(body) = body?;
    let id = principal.tenant()?;
    let changes = TenantChanges {
        name: body.name.map(Line::into_inner),
        ip_allowlist: body
            .ip_allowlist
            .map(|list| parse_allowlist(&state, list))
            .transpose()?,
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
    .map(Json)
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

#[derive(Deserialize)]
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

async fn create(
    State(state): State<AppState>,
    principal: Principal,
    body: Result<ApiJson<CreateTenant>, ApiError>,
) -> Result<(StatusCode, Json<Tenant>), ApiError> {
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
        Ok(tenant) => Ok((StatusCode::CREATED, Json(tenant))),
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

async fn list(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(page): ApiQuery<PageQuery>,
) -> Result<Json<Page<Tenant>>, ApiError> {
    principal.require(&policy::TENANTS_MANAGE)?;
    let limit = page.limit()?;
    let tenants = tenants::list(&state.pool, page.after::<TenantId>()?, limit).await?;
    Ok(Json(Page::new(tenants, limit, |t| t.tenant_id.to_string())))
}

#[derive(Deserialize)]
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
}

async fn update(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    body: Result<ApiJson<UpdateTenant>, ApiError>,
) -> Result<Json<Tenant>, ApiError> {
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
    let changes = TenantChanges {
        name: body.name.map(Line::into_inner),
        enabled: body.enabled,
        scopes,
        ip_allowlist: body
            .ip_allowlist
            .map(|list| parse_allowlist(&state, list))
            .transpose()?,
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
    .map(Json)
    .ok_or(ApiError::NotFound)
}
