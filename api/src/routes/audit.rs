//! `GET /v1/audit`: a tenant admin reads the tenant's audit records, newest first.

use axum::{Json, Router, extract::State, routing::get};

use super::{Page, PageQuery};
use crate::{
    auth::Principal,
    error::ApiError,
    extract::ApiQuery,
    policy,
    state::AppState,
    store::audit::{self, AuditRecord},
};

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/audit", get(list))
}

#[utoipa::path(
    get, path = "/v1/audit", tag = "admin", operation_id = "listAudit",
    params(PageQuery),
    responses((status = 200, description = "The tenant's audit records, newest first", body = Page<AuditRecord>)),
)]
async fn list(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(page): ApiQuery<PageQuery>,
) -> Result<Json<Page<AuditRecord>>, ApiError> {
    principal.require(&policy::AUDIT_READ)?;
    let limit = page.limit()?;
    let records = audit::list(
        &state.pool,
        principal.tenant()?,
        page.after::<i64>()?,
        limit,
    )
    .await?;
    Ok(Json(Page::new(records, limit, |r| r.audit_id.to_string())))
}
