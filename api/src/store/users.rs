//! `users`: tenant members (admin, reviewer, guest) and platform operators (superadmin, no
//! tenant). Passwords arrive here already hashed (argon2id, off the async runtime).

use gatehouse_common::audit::Action;
use std::net::IpAddr;

use chrono::{DateTime, Utc};
use gatehouse_common::db::{self, Scope};
use gatehouse_common::types::{Role, TenantId, UserId};
use ipnet::IpNet;
use serde::Serialize;
use sqlx::PgPool;

use super::audit::{self, Event};

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct User {
    pub id: UserId,
    pub tenant_id: Option<TenantId>,
    pub username: String,
    pub role: Role,
    pub enabled: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

struct UserRow {
    user_id: UserId,
    tenant_id: Option<TenantId>,
    username: String,
    role: String,
    enabled: bool,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl TryFrom<UserRow> for User {
    type Error = sqlx::Error;
    fn try_from(r: UserRow) -> Result<Self, Self::Error> {
        Ok(User {
            id: r.user_id,
            tenant_id: r.tenant_id,
            username: r.username,
            role: r
                .role
                .parse()
                .map_err(|e: String| sqlx::Error::Decode(e.into()))?,
            enabled: r.enabled,
            created_at: r.created_at,
            updated_at: r.updated_at,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error("a user with this username already exists")]
    Duplicate,
    #[error("the last admin of a tenant cannot be removed, disabled or demoted")]
    LastAdmin,
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

fn map_unique(e: sqlx::Error) -> UserError {
    if e.as_database_error()
        .is_some_and(|d| d.is_unique_violation())
    {
        UserError::Duplicate
    } else {
        UserError::Database(e)
    }
}

pub struct Actor<'a> {
    pub name: &'a str,
    pub client_ip: Option<IpAddr>,
}

pub async fn create(
    pool: &PgPool,
    tenant: Option<TenantId>,
    username: &str,
    password_hash: &str,
    role: Role,
    actor: Actor<'_>,
) -> Result<User, UserError> {
    let scope = tenant.map_or(Scope::Platform, Scope::Tenant);
    let mut tx = db::begin(pool, scope).await?;
    let row = sqlx::query_as!(
        UserRow,
        r#"
        INSERT INTO users (user_id, tenant_id, username, password_hash, role)
        VALUES ($1, $2, $3, $4, $5)
        RETURNING user_id AS "user_id: UserId", tenant_id AS "tenant_id: TenantId", username,
                  role, enabled, created_at, updated_at
        "#,
        UserId::new().0,
        tenant.map(|t| t.0),
        username,
        password_hash,
        role.as_str(),
    )
    .fetch_one(&mut *tx)
    .await
    .map_err(map_unique)?;
    let user = User::try_from(row)?;
    audit::record(
        &mut tx,
        Event {
            tenant,
            actor: actor.name,
            action: Action::UserCreated,
            client_ip: actor.client_ip,
            details: serde_json::json!({ "user_id": user.id, "username": username, "role": role }),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(user)
}

pub async fn list(
    pool: &PgPool,
    tenant: TenantId,
    after: Option<UserId>,
    limit: i64,
) -> Result<Vec<User>, sqlx::Error> {
    let mut tx = db::begin(pool, Scope::Tenant(tenant)).await?;
    let rows = sqlx::query_as!(
        UserRow,
        r#"
        SELECT user_id AS "user_id: UserId", tenant_id AS "tenant_id: TenantId", username, role,
               enabled, created_at, updated_at
        FROM users
        WHERE tenant_id = $1 AND ($2::uuid IS NULL OR user_id > $2)
        ORDER BY user_id LIMIT $3
        "#,
        tenant.0,
        after.map(|u| u.0),
        limit,
    )
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    rows.into_iter().map(User::try_from).collect()
}

pub async fn get(pool: &PgPool, tenant: TenantId, id: UserId) -> Result<Option<User>, sqlx::Error> {
    let mut tx = db::begin(pool, Scope::Tenant(tenant)).await?;
    let row = sqlx::query_as!(
        UserRow,
        r#"
        SELECT user_id AS "user_id: UserId", tenant_id AS "tenant_id: TenantId", username, role,
               enabled, created_at, updated_at
        FROM users WHERE tenant_id = $1 AND user_id = $2
        "#,
        tenant.0,
        id.0,
    )
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;
    row.map(User::try_from).transpose()
}

#[derive(Debug, Default)]
pub struct Changes {
    pub role: Option<Role>,
    pub enabled: Option<bool>,
    pub password_hash: Option<String>,
}

/// Applies `changes` to a user of `tenant`. Refuses to leave the tenant without an enabled
/// admin (the tenant's admins are locked first, so two concurrent demotions cannot both pass).
pub async fn update(
    pool: &PgPool,
    tenant: TenantId,
    id: UserId,
    changes: Changes,
    actor: Actor<'_>,
) -> Result<Option<User>, UserError> {
    let mut tx = db::begin(pool, Scope::Tenant(tenant)).await?;
    let admins = enabled_admins(&mut tx, tenant).await?;
    let Some(before) = get_in(&mut tx, tenant, id).await? else {
        return Ok(None);
    };
    let stays_admin = changes.role.unwrap_or(before.role) == Role::Admin
        && changes.enabled.unwrap_or(before.enabled);
    if admins == [id] && !stays_admin {
        return Err(UserError::LastAdmin);
    }
    let row = sqlx::query_as!(
        UserRow,
        r#"
        UPDATE users SET
            role = coalesce($3, role),
            enabled = coalesce($4, enabled),
            password_hash = coalesce($5, password_hash),
            updated_at = now()
        WHERE tenant_id = $1 AND user_id = $2
        RETURNING user_id AS "user_id: UserId", tenant_id AS "tenant_id: TenantId", username,
                  role, enabled, created_at, updated_at
        "#,
        tenant.0,
        id.0,
        changes.role.map(Role::as_str),
        changes.enabled,
        changes.password_hash.as_deref(),
    )
    .fetch_one(&mut *tx)
    .await?;
    let after = User::try_from(row)?;
    let mut events = Vec::new();
    if after.role != before.role {
        events.push((
            Action::UserRoleChanged,
            serde_json::json!({ "from": before.role, "to": after.role }),
        ));
    }
    if after.enabled != before.enabled {
        let action = if after.enabled {
            Action::UserEnabled
        } else {
            Action::UserDisabled
        };
        events.push((action, serde_json::json!({})));
    }
    if changes.password_hash.is_some() {
        events.push((Action::UserPasswordChanged, serde_json::json!({})));
    }
    for (action, mut details) in events {
        details["user_id"] = serde_json::json!(id);
        audit::record(
            &mut tx,
            Event {
                tenant: Some(tenant),
                actor: actor.name,
                action,
                client_ip: actor.client_ip,
                details,
            },
        )
        .await?;
    }
    tx.commit().await?;
    Ok(Some(after))
}

/// Deletes a user of `tenant`, unless it is the tenant's last enabled admin.
pub async fn delete(
    pool: &PgPool,
    tenant: TenantId,
    id: UserId,
    actor: Actor<'_>,
) -> Result<bool, UserError> {
    let mut tx = db::begin(pool, Scope::Tenant(tenant)).await?;
    let admins = enabled_admins(&mut tx, tenant).await?;
    if admins == [id] {
        return Err(UserError::LastAdmin);
    }
    let deleted = sqlx::query!(
        "DELETE FROM users WHERE tenant_id = $1 AND user_id = $2",
        tenant.0,
        id.0,
    )
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;
    if deleted {
        audit::record(
            &mut tx,
            Event {
                tenant: Some(tenant),
                actor: actor.name,
                action: Action::UserDeleted,
                client_ip: actor.client_ip,
                details: serde_json::json!({ "user_id": id }),
            },
        )
        .await?;
    }
    tx.commit().await?;
    Ok(deleted)
}

/// The tenant's enabled admins, locked (in a fixed order) for the rest of the transaction.
async fn enabled_admins(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    tenant: TenantId,
) -> Result<Vec<UserId>, sqlx::Error> {
    sqlx::query_scalar!(
        r#"
        SELECT user_id AS "user_id: UserId" FROM users
        WHERE tenant_id = $1 AND role = 'admin' AND enabled ORDER BY user_id FOR UPDATE
        "#,
        tenant.0,
    )
    .fetch_all(&mut **tx)
    .await
}

async fn get_in(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    tenant: TenantId,
    id: UserId,
) -> Result<Option<User>, sqlx::Error> {
    let row = sqlx::query_as!(
        UserRow,
        r#"
        SELECT user_id AS "user_id: UserId", tenant_id AS "tenant_id: TenantId", username, role,
               enabled, created_at, updated_at
        FROM users WHERE tenant_id = $1 AND user_id = $2 FOR UPDATE
        "#,
        tenant.0,
        id.0,
    )
    .fetch_optional(&mut **tx)
    .await?;
    row.map(User::try_from).transpose()
}

/// What login needs: the user (if any) with its hash, for `tenant_slug` (`None`: operators).
pub struct LoginCandidate {
    pub user: User,
    pub password_hash: String,
    pub usable: bool,
}

struct LoginRow {
    user: UserRow,
    password_hash: String,
    usable: bool,
}

pub async fn find_for_login(
    pool: &PgPool,
    tenant_slug: Option<&str>,
    username: &str,
) -> Result<Option<LoginCandidate>, sqlx::Error> {
    // Platform scope: the tenant is known only by its slug until this look-up.
    let mut tx = db::begin(pool, Scope::Platform).await?;
    let row: Option<LoginRow> = match tenant_slug {
        Some(slug) => sqlx::query!(
            r#"
            SELECT u.user_id AS "user_id: UserId", u.tenant_id AS "tenant_id: TenantId",
                   u.username, u.role, u.enabled, u.created_at, u.updated_at, u.password_hash,
                   (u.enabled AND t.enabled) AS "usable!"
            FROM users u JOIN tenants t ON t.tenant_id = u.tenant_id
            WHERE t.slug = $1 AND lower(u.username) = lower($2)
            "#,
            slug,
            username,
        )
        .fetch_optional(&mut *tx)
        .await?
        .map(|r| LoginRow {
            user: UserRow {
                user_id: r.user_id,
                tenant_id: r.tenant_id,
                username: r.username,
                role: r.role,
                enabled: r.enabled,
                created_at: r.created_at,
                updated_at: r.updated_at,
            },
            password_hash: r.password_hash,
            usable: r.usable,
        }),
        None => sqlx::query!(
            r#"
            SELECT user_id AS "user_id: UserId", tenant_id AS "tenant_id: TenantId", username,
                   role, enabled, created_at, updated_at, password_hash, enabled AS usable
            FROM users WHERE tenant_id IS NULL AND lower(username) = lower($1)
            "#,
            username,
        )
        .fetch_optional(&mut *tx)
        .await?
        .map(|r| LoginRow {
            user: UserRow {
                user_id: r.user_id,
                tenant_id: r.tenant_id,
                username: r.username,
                role: r.role,
                enabled: r.enabled,
                created_at: r.created_at,
                updated_at: r.updated_at,
            },
            password_hash: r.password_hash,
            usable: r.usable,
        }),
    };
    tx.commit().await?;
    row.map(|r| {
        Ok(LoginCandidate {
            user: User::try_from(r.user)?,
            password_hash: r.password_hash,
            usable: r.usable,
        })
    })
    .transpose()
}

/// A user behind a token, if still usable (enabled, tenant enabled), with its current role.
pub struct LiveUser {
    pub user_id: UserId,
    pub tenant_id: Option<TenantId>,
    pub role: Role,
    pub tenant_scopes: Vec<String>,
    pub ip_allowlist: Vec<IpNet>,
    /// The tenant's rate-limit settings (JSON; `{}` for operators).
    pub tenant_rate_limits: serde_json::Value,
}

pub async fn live(pool: &PgPool, id: UserId) -> Result<Option<LiveUser>, sqlx::Error> {
    let mut tx = db::begin(pool, Scope::Platform).await?;
    let row = sqlx::query!(
        r#"
        SELECT u.tenant_id AS "tenant_id: TenantId", u.role,
               t.scopes AS "scopes?", t.ip_allowlist AS "ip_allowlist?",
               t.rate_limits AS "rate_limits?"
        FROM users u LEFT JOIN tenants t ON t.tenant_id = u.tenant_id
        WHERE u.user_id = $1 AND u.enabled AND (u.tenant_id IS NULL OR t.enabled)
        "#,
        id.0,
    )
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;
    row.map(|r| {
        Ok(LiveUser {
            user_id: id,
            tenant_id: r.tenant_id,
            role: r
                .role
                .parse()
                .map_err(|e: String| sqlx::Error::Decode(e.into()))?,
            tenant_scopes: r.scopes.unwrap_or_default(),
            ip_allowlist: r.ip_allowlist.unwrap_or_default(),
            tenant_rate_limits: r.rate_limits.unwrap_or_else(|| serde_json::json!({})),
        })
    })
    .transpose()
}

/// A user's name, in its tenant's scope (or the platform scope for operators).
pub async fn username(
    pool: &PgPool,
    tenant: Option<TenantId>,
    id: UserId,
) -> Result<Option<String>, sqlx::Error> {
    let mut tx = db::begin(pool, tenant.map_or(Scope::Platform, Scope::Tenant)).await?;
    let name = sqlx::query_scalar!("SELECT username FROM users WHERE user_id = $1", id.0)
        .fetch_optional(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(name)
}

/// What a re-entered password is checked against: the hash, and the names the login
/// throttle counts failures under.
pub struct Credentials {
    pub password_hash: String,
    pub username: String,
    pub tenant_slug: Option<String>,
}

pub async fn credentials(pool: &PgPool, id: UserId) -> Result<Option<Credentials>, sqlx::Error> {
    let mut tx = db::begin(pool, Scope::Platform).await?;
    let row = sqlx::query!(
        r#"
        SELECT u.password_hash, u.username, t.slug AS "slug?"
        FROM users u LEFT JOIN tenants t ON t.tenant_id = u.tenant_id
        WHERE u.user_id = $1
        "#,
        id.0,
    )
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(row.map(|r| Credentials {
        password_hash: r.password_hash,
        username: r.username,
        tenant_slug: r.slug,
    }))
}
