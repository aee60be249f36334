//! `GET /v1/audit`: a tenant admin reads the tenant's audit records, newest first.

use axum::{
    Json, Router,
    extract::{Query, State},
    routing::get,
};

use super::{Page, PageQuery};
use crate::{
    auth::Principal,
    error::ApiError,
    policy,
    state::AppState,
    store::audit::{self, AuditRecord},
};

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/audit", get(list))
}

async fn list(
    State(state): State<AppState>,
    principal: Principal,
    Query(page): Query<PageQuery>,
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
