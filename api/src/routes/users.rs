//! Tenant admins manage their tenant's users: `POST /v1/users`, `GET /v1/users`,
//! `PATCH /v1/users/{id}`, `DELETE /v1/users/{id}`.

use axum::{
    Json, Router,
    extract::{Path, State},
    http::StatusCode,
    routing::{get, patch},
};
use gatehouse_common::types::{Role, UserId};
use serde::Deserialize;

use super::{Page, PageQuery};
use crate::{
    auth::{Principal, Subject},
    error::ApiError,
    extract::{ApiJson, ApiQuery, Line},
    identity::password,
    policy,
    state::AppState,
    store::users::{self, Actor, Changes, User, UserError},
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/users", get(list).post(create))
        .route("/v1/users/{id}", patch(update).delete(remove))
}

impl From<UserError> for ApiError {
    fn from(e: UserError) -> Self {
        match e {
            UserError::Duplicate => ApiError::Conflict {
                code: "duplicate_username",
                detail: e.to_string(),
            },
            UserError::LastAdmin => ApiError::Conflict {
                code: "last_admin",
                detail: e.to_string(),
            },
            UserError::Database(e) => ApiError::Database(e),
        }
    }
}

/// A tenant role from the wire: `admin`, `reviewer` or `guest`.
fn tenant_role(field: &str, raw: &str) -> Result<Role, ApiError> {
    match raw.parse::<Role>() {
        Ok(role @ (Role::Admin | Role::Reviewer | Role::Guest)) => Ok(role),
        _ => Err(ApiError::invalid(
            "invalid_role",
            field,
            "role must be `admin`, `reviewer` or `guest`",
        )),
    }
}

async fn hashed(field: &str, password: String) -> Result<String, ApiError> {
    password::check_policy(&password)
        .map_err(|detail| ApiError::invalid("weak_password", field, detail))?;
    password::hash(password)
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct CreateUser {
    username: Line<100>,
    password: String,
    role: String,
}

#[utoipa::path(
    post, path = "/v1/users", tag = "admin", operation_id = "createUser",
    request_body = CreateUser,
    responses(
        (status = 201, description = "The user", body = User),
        (status = 409, description = "Conflicts with the current state", content_type = "application/problem+json", body = crate::openapi::Problem),
    ),
)]
async fn create(
    State(state): State<AppState>,
    principal: Principal,
    body: Result<ApiJson<CreateUser>, ApiError>,
) -> Result<(StatusCode, Json<User>), ApiError> {
    principal.require(&policy::USERS_MANAGE)?;
    let ApiJson(body) = body?;
    let tenant = principal.tenant()?;
    let username = body.username.as_str();
    let role = tenant_role("role", &body.role)?;
    let hash = hashed("password", body.password).await?;
    let actor = principal.actor();
    let user = users::create(
        &state.pool,
        Some(tenant),
        username,
        &hash,
        role,
        Actor {
            name: &actor,
            client_ip: Some(principal.client_ip),
        },
    )
    .await?;
    Ok((StatusCode::CREATED, Json(user)))
}

#[utoipa::path(
    get, path = "/v1/users", tag = "admin", operation_id = "listUsers",
    params(PageQuery),
    responses((status = 200, description = "The tenant's users", body = Page<User>)),
)]
async fn list(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(page): ApiQuery<PageQuery>,
) -> Result<Json<Page<User>>, ApiError> {
    principal.require(&policy::USERS_MANAGE)?;
    let limit = page.limit()?;
    let users = users::list(
        &state.pool,
        principal.tenant()?,
        page.after::<UserId>()?,
        limit,
    )
    .await?;
    Ok(Json(Page::new(users, limit, |u| u.id.to_string())))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct UpdateUser {
    #[serde(default)]
    role: Option<String>,
    #[serde(default)]
    enabled: Option<bool>,
    #[serde(default)]
    password: Option<String>,
}

#[utoipa::path(
    patch, path = "/v1/users/{id}", tag = "admin", operation_id = "updateUser",
    request_body = UpdateUser,
    responses(
        (status = 200, description = "The user", body = User),
        (status = 409, description = "Conflicts with the current state", content_type = "application/problem+json", body = crate::openapi::Problem),
    ),
)]
async fn update(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    body: Result<ApiJson<UpdateUser>, ApiError>,
) -> Result<Json<User>, ApiError> {
    principal.require(&policy::USERS_MANAGE)?;
    let ApiJson(body) = body?;
    let tenant = principal.tenant()?;
    let id: UserId = id.parse().map_err(|_| ApiError::NotFound)?;
    let role = body
        .role
        .as_deref()
        .map(|r| tenant_role("role", r))
        .transpose()?;
    if let (Some(role), Subject::User(me)) = (role, principal.subject)
        && me == id
        && role.rank() > principal.role.rank()
    {
        return Err(ApiError::Forbidden {
            detail: "you cannot raise your own role".into(),
        });
    }
    if role.is_some() {
        principal.require_fresh_auth(&state, "user.role").await?;
    }
    let password_hash = match body.password {
        Some(p) => Some(hashed("password", p).await?),
        None => None,
    };
    let actor = principal.actor();
    users::update(
        &state.pool,
        tenant,
        id,
        Changes {
            role,
            enabled: body.enabled,
            password_hash,
        },
        Actor {
            name: &actor,
            client_ip: Some(principal.client_ip),
        },
    )
    .await?
    .map(Json)
    .ok_or(ApiError::NotFound)
}

#[utoipa::path(
    delete, path = "/v1/users/{id}", tag = "admin", operation_id = "deleteUser",
    responses(
        (status = 204, description = "Deleted"),
        (status = 409, description = "Conflicts with the current state", content_type = "application/problem+json", body = crate::openapi::Problem),
    ),
)]
async fn remove(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    principal.require(&policy::USERS_MANAGE)?;
    let tenant = principal.tenant()?;
    principal.require_fresh_auth(&state, "user.delete").await?;
    let id: UserId = id.parse().map_err(|_| ApiError::NotFound)?;
    let actor = principal.actor();
    if users::delete(
        &state.pool,
        tenant,
        id,
        Actor {
            name: &actor,
            client_ip: Some(principal.client_ip),
        },
    )
    .await?
    {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound)
    }
}
