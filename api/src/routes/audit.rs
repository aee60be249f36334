//! The audit trail over HTTP: `GET /v1/audit` (filters, newest first, cursor pages),
//! `GET /v1/audit/export` (NDJSON or CSV, streamed a page at a time; step-up; itself
//! audited), `GET /v1/audit/checkpoints` (the signed heads to keep) and `GET /v1/audit/verify`
//! (walks the chain). Tenant admins read their tenant's; operators name any tenant with
//! `?tenant=ten_…`.

use axum::{
    Json, Router,
    body::Body,
    extract::State,
    http::{HeaderValue, header},
    response::Response,
    routing::get,
};
use futures_util::stream;
use gatehouse_common::{
    audit::{self as common_audit, Action},
    db::{self, Scope},
    types::{Role, TenantId},
};
use serde::Deserialize;

use super::{Page, PageQuery};
use crate::{
    audit::{chain, checkpoints},
    auth::Principal,
    error::ApiError,
    extract::ApiQuery,
    policy,
    state::AppState,
    store::audit::{self, AuditRecord, Filter},
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/audit", get(list))
        .route("/v1/audit/export", get(export))
        .route("/v1/audit/checkpoints", get(list_checkpoints))
        .route("/v1/audit/verify", get(verify))
}

/// Records per page of the export stream.
const EXPORT_PAGE: i64 = 500;

/// The query of every audit route: `tenant` (operators: the tenant to read; tenant
/// principals: their own, or omitted), the page, the export's `format`, and the filters
/// (`from`/`to` RFC 3339, `action` and `outcome` checked).
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct FilterQuery {
    /// Operators: the tenant whose trail to read (`ten_…`); others: their own (or omitted).
    tenant: Option<String>,
    /// Records per page.
    #[param(minimum = 1)]
    limit: Option<i64>,
    /// The cursor: `next_after` of the previous page.
    after: Option<String>,
    /// The export's format: `ndjson` (default) or `csv`.
    format: Option<String>,
    /// From this time (RFC 3339), inclusive.
    from: Option<chrono::DateTime<chrono::Utc>>,
    to: Option<chrono::DateTime<chrono::Utc>>,
    actor: Option<String>,
    action: Option<String>,
    target_type: Option<String>,
    target_id: Option<String>,
    outcome: Option<String>,
}

impl FilterQuery {
    /// `limit` and `after` are refused when out of range on every audit route, also where
    /// they are not used (the export streams everything; verify walks the whole chain).
    fn check_page(&self) -> Result<(), ApiError> {
        let page = PageQuery {
            limit: self.limit,
            after: self.after.clone(),
        };
        page.limit()?;
        page.after::<i64>()?;
        Ok(())
    }

    fn check(&self) -> Result<Filter, ApiError> {
        if let Some(action) = &self.action {
            action
                .parse::<Action>()
                .map_err(|e| ApiError::invalid("invalid_action", "action", e))?;
        }
        if let Some(outcome) = &self.outcome
            && !["success", "denied", "error", "failure", "throttled"].contains(&outcome.as_str())
        {
            return Err(ApiError::invalid(
                "invalid_outcome",
                "outcome",
                "outcome must be success, denied, error, failure or throttled",
            ));
        }
        if let (Some(from), Some(to)) = (self.from, self.to)
            && from > to
        {
            return Err(ApiError::invalid(
                "invalid_range",
                "to",
                "`to` is before `from`",
            ));
        }
        Ok(Filter {
            from: self.from,
            to: self.to,
            actor: self.actor.clone(),
            action: self.action.clone(),
            target_type: self.target_type.clone(),
            target_id: self.target_id.clone(),
            outcome: self.outcome.clone(),
        })
    }
}

/// The tenant whose trail is read: the principal's own, or (operators) the one named.
fn trail_tenant(principal: &Principal, named: Option<&str>) -> Result<TenantId, ApiError> {
    let named = named
        .map(|t| t.parse::<TenantId>().map_err(|_| ApiError::NotFound))
        .transpose()?;
    match (principal.role, principal.tenant_id, named) {
        (Role::Superadmin, _, Some(t)) => Ok(t),
        (Role::Superadmin, _, None) => Err(ApiError::invalid(
            "tenant_required",
            "tenant",
            "operators name the tenant: `?tenant=ten_…`",
        )),
        (_, Some(own), Some(t)) if t != own => Err(ApiError::NotFound),
        (_, Some(own), _) => Ok(own),
        (_, None, _) => principal.tenant(),
    }
}

#[utoipa::path(
    get, path = "/v1/audit", tag = "admin", operation_id = "listAudit",
    params(FilterQuery),
    responses(
        (status = 200, description = "The tenant's audit records, newest first", body = Page<AuditRecord>),
        (status = 404, description = "`tenant` names another (or no) tenant", content_type = "application/problem+json", body = crate::openapi::Problem),
    ),
)]
async fn list(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(query): ApiQuery<FilterQuery>,
) -> Result<Json<Page<AuditRecord>>, ApiError> {
    principal.require(&policy::AUDIT_READ)?;
    let tenant = trail_tenant(&principal, query.tenant.as_deref())?;
    let filter = query.check()?;
    let page = PageQuery {
        limit: query.limit,
        after: query.after,
    };
    let limit = page.limit()?;
    let records = audit::page(
        &state.pool,
        tenant,
        &filter,
        page.after::<i64>()?,
        true,
        limit,
    )
    .await?;
    Ok(Json(Page::new(records, limit, |r| r.audit_id.to_string())))
}

const CSV_HEADER: [&str; 19] = [
    "id",
    "seq",
    "created_at",
    "actor",
    "actor_kind",
    "action",
    "outcome",
    "status",
    "target_type",
    "target_id",
    "client_ip",
    "user_agent",
    "request_id",
    "job_id",
    "chunk_index",
    "details",
    "prev_hash",
    "hash",
    "tenant_id",
];

fn csv_row(
    w: &mut csv::Writer<Vec<u8>>,
    r: &AuditRecord,
    tenant: TenantId,
) -> Result<(), csv::Error> {
    let opt = |v: Option<String>| v.unwrap_or_default();
    w.write_record([
        r.audit_id.to_string(),
        r.seq.to_string(),
        r.created_at.to_rfc3339(),
        r.actor.clone(),
        r.actor_kind.clone(),
        r.action.clone(),
        r.outcome.clone(),
        opt(r.status.map(|s| s.to_string())),
        opt(r.target_type.clone()),
        opt(r.target_id.clone()),
        opt(r.client_ip.map(|ip| ip.addr().to_string())),
        opt(r.user_agent.clone()),
        opt(r.request_id.clone()),
        opt(r.job_id.map(|j| j.to_string())),
        opt(r.chunk_index.map(|c| c.to_string())),
        r.details.to_string(),
        opt(r.prev_hash.clone()),
        r.hash.clone(),
        tenant.to_string(),
    ])
}

/// `GET /v1/audit/export?from=&to=&format=ndjson|csv` (+ the list's filters), oldest first.
#[utoipa::path(
    get, path = "/v1/audit/export", tag = "admin", operation_id = "exportAudit",
    params(FilterQuery),
    responses(
        (status = 200, description = "The matching records, oldest first, streamed (step-up required; the export is itself audited)",
        content(
            (AuditRecord = "application/x-ndjson"),
            (String = "text/csv"),
        )),
        (status = 404, description = "`tenant` names another (or no) tenant", content_type = "application/problem+json", body = crate::openapi::Problem),
    ),
)]
async fn export(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(query): ApiQuery<FilterQuery>,
) -> Result<Response, ApiError> {
    principal.require(&policy::AUDIT_READ)?;
    let tenant = trail_tenant(&principal, query.tenant.as_deref())?;
    query.check_page()?;
    let csv = match query.format.as_deref() {
        None | Some("ndjson") => false,
        Some("csv") => true,
        Some(_) => {
            return Err(ApiError::invalid(
                "invalid_format",
                "format",
                "format must be `ndjson` or `csv`",
            ));
        }
    };
    let filter = query.check()?;
    principal.require_fresh_auth(&state, "audit.export").await?;
    // The export is itself audited, before the first byte leaves.
    let mut tx = db::begin(&state.pool, Scope::Tenant(tenant)).await?;
    common_audit::insert(
        &mut tx,
        common_audit::Record {
            details: serde_json::json!({
                "from": filter.from, "to": filter.to, "format": if csv { "csv" } else { "ndjson" },
                "action": filter.action, "actor": filter.actor, "outcome": filter.outcome,
            }),
            ..common_audit::Record::new(Some(tenant), &principal.actor(), Action::AuditExported)
        },
    )
    .await?;
    tx.commit().await?;
    let pool = state.pool.clone();
    let pages = stream::try_unfold((Some(0_i64), true), move |(cursor, first)| {
        let pool = pool.clone();
        let filter = filter.clone();
        async move {
            let Some(after) = cursor else {
                return Ok::<_, sqlx::Error>(None);
            };
            let records =
                audit::page(&pool, tenant, &filter, Some(after), false, EXPORT_PAGE).await?;
            let fail = |e: String| sqlx::Error::Protocol(e);
            let mut buf = Vec::with_capacity(records.len() * 512);
            if csv {
                let mut w = csv::WriterBuilder::new()
                    .has_headers(false)
                    .from_writer(Vec::new());
                if first {
                    w.write_record(CSV_HEADER)
                        .map_err(|e| fail(e.to_string()))?;
                }
                for r in &records {
                    csv_row(&mut w, r, tenant).map_err(|e| fail(e.to_string()))?;
                }
                buf = w.into_inner().map_err(|e| fail(e.to_string()))?;
            } else {
                for r in &records {
                    serde_json::to_writer(&mut buf, r).map_err(|e| fail(e.to_string()))?;
                    buf.push(b'\n');
                }
            }
            if records.is_empty() && buf.is_empty() {
                return Ok(None);
            }
            let next = (records.len() as i64 == EXPORT_PAGE)
                .then(|| records.last().map(|r| r.audit_id))
                .flatten();
            Ok(Some((buf, (next, false))))
        }
    });
    let mut response = Response::new(Body::from_stream(pages));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(if csv {
            "text/csv; charset=utf-8"
        } else {
            "application/x-ndjson"
        }),
    );
    Ok(response)
}

#[utoipa::path(
    get, path = "/v1/audit/checkpoints", tag = "admin", operation_id = "listAuditCheckpoints",
    params(FilterQuery),
    responses(
        (status = 200, description = "The chain's signed checkpoints (Ed25519), newest first", body = Page<checkpoints::CheckpointView>),
        (status = 404, description = "`tenant` names another (or no) tenant", content_type = "application/problem+json", body = crate::openapi::Problem),
    ),
)]
async fn list_checkpoints(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(query): ApiQuery<FilterQuery>,
) -> Result<Json<Page<checkpoints::CheckpointView>>, ApiError> {
    principal.require(&policy::AUDIT_READ)?;
    let tenant = trail_tenant(&principal, query.tenant.as_deref())?;
    let page = PageQuery {
        limit: query.limit,
        after: query.after,
    };
    let limit = page.limit()?;
    let rows = checkpoints::list(&state.pool, tenant, page.after::<i64>()?, limit).await?;
    Ok(Json(Page::new(rows, limit, |c| c.id.to_string())))
}

#[utoipa::path(
    get, path = "/v1/audit/verify", tag = "admin", operation_id = "verifyAudit",
    params(FilterQuery),
    responses(
        (status = 200, description = "The walk of the tenant's hash chain: the first broken record, if any", body = chain::Report),
        (status = 404, description = "`tenant` names another (or no) tenant", content_type = "application/problem+json", body = crate::openapi::Problem),
    ),
)]
async fn verify(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(query): ApiQuery<FilterQuery>,
) -> Result<Json<chain::Report>, ApiError> {
    principal.require(&policy::AUDIT_READ)?;
    let tenant = trail_tenant(&principal, query.tenant.as_deref())?;
    query.check_page()?;
    Ok(Json(chain::verify(&state.pool, Some(tenant)).await?))
}
