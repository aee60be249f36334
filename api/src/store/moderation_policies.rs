//! `moderation_policies`: a tenant's policy versions, append-only. No row means version 0,
//! the built-in default.

use chrono::{DateTime, Utc};
use gatehouse_common::audit::Action;
use gatehouse_common::{
    db::{self, Scope},
    moderation::Policy,
    types::TenantId,
};
use serde::Serialize;
use sqlx::{PgPool, types::Json};

use super::audit::{self, Event};

/// A stored policy version as the API shows it.
#[derive(Debug, Serialize)]
pub struct PolicyVersion {
    #[serde(flatten)]
    pub policy: Policy,
    /// `null` for the built-in default (version 0).
    pub created_by: Option<String>,
    pub created_at: Option<DateTime<Utc>>,
}

/// One line of the version history.
#[derive(Debug, Serialize)]
pub struct VersionSummary {
    pub version: i32,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
}

struct Row {
    policy: Json<Policy>,
    created_by: String,
    created_at: DateTime<Utc>,
}

impl From<Row> for PolicyVersion {
    fn from(row: Row) -> Self {
        Self {
            policy: row.policy.0,
            created_by: Some(row.created_by),
            created_at: Some(row.created_at),
        }
    }
}

fn default_version() -> PolicyVersion {
    PolicyVersion {
        policy: Policy::default(),
        created_by: None,
        created_at: None,
    }
}

/// The tenant's current policy (the default when it never changed one).
pub async fn current(pool: &PgPool, tenant: TenantId) -> Result<PolicyVersion, sqlx::Error> {
    let mut tx = db::begin(pool, Scope::Tenant(tenant)).await?;
    let row = sqlx::query_as!(
        Row,
        r#"
        SELECT policy AS "policy: Json<Policy>", created_by, created_at FROM moderation_policies
        WHERE tenant_id = $1 ORDER BY version DESC LIMIT 1
        "#,
        tenant.0,
    )
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(row.map_or_else(default_version, PolicyVersion::from))
}

/// One version, if it exists (version 0 always does).
pub async fn version(
    pool: &PgPool,
    tenant: TenantId,
    version: i32,
) -> Result<Option<PolicyVersion>, sqlx::Error> {
    if version == 0 {
        return Ok(Some(default_version()));
    }
    let mut tx = db::begin(pool, Scope::Tenant(tenant)).await?;
    let row = sqlx::query_as!(
        Row,
        r#"
        SELECT policy AS "policy: Json<Policy>", created_by, created_at FROM moderation_policies
        WHERE tenant_id = $1 AND version = $2
        "#,
        tenant.0,
        version,
    )
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(row.map(PolicyVersion::from))
}

/// Every stored version, newest first.
pub async fn history(pool: &PgPool, tenant: TenantId) -> Result<Vec<VersionSummary>, sqlx::Error> {
    let mut tx = db::begin(pool, Scope::Tenant(tenant)).await?;
    let rows = sqlx::query_as!(
        VersionSummary,
        r"
        SELECT version, created_by, created_at FROM moderation_policies
        WHERE tenant_id = $1 ORDER BY version DESC
        ",
        tenant.0,
    )
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(rows)
}

/// Stores a new version built by `change` from the current policy, with an audit record, in
/// one transaction. Concurrent changes of one tenant are serialised on its tenant row, so
/// each builds on the version before it. `change` refusing the input aborts with its error.
pub async fn change<E>(
    pool: &PgPool,
    tenant: TenantId,
    actor: &str,
    client_ip: std::net::IpAddr,
    change: impl FnOnce(&Policy) -> Result<Policy, E>,
) -> Result<Result<PolicyVersion, E>, sqlx::Error> {
    let mut tx = db::begin(pool, Scope::Tenant(tenant)).await?;
    sqlx::query!(
        r#"SELECT 1 AS "locked" FROM tenants WHERE tenant_id = $1 FOR UPDATE"#,
        tenant.0,
    )
    .fetch_optional(&mut *tx)
    .await?;
    let latest = sqlx::query_scalar!(
        r#"
        SELECT policy AS "policy: Json<Policy>" FROM moderation_policies
        WHERE tenant_id = $1 ORDER BY version DESC LIMIT 1
        "#,
        tenant.0,
    )
    .fetch_optional(&mut *tx)
    .await?;
    let current = latest.map(|p| p.0).unwrap_or_default();
    let mut next = match change(&current) {
        Ok(next) => next,
        Err(e) => return Ok(Err(e)),
    };
    next.version = current.version + 1;
    let row = sqlx::query_as!(
        Row,
        r#"
        INSERT INTO moderation_policies (tenant_id, version, policy, created_by)
        VALUES ($1, $2, $3, $4)
        RETURNING policy AS "policy: Json<Policy>", created_by, created_at
        "#,
        tenant.0,
        next.version,
        Json(&next) as _,
        actor,
    )
    .fetch_one(&mut *tx)
    .await?;
    audit::record(
        &mut tx,
        Event {
            tenant: Some(tenant),
            actor,
            action: Action::ModerationPolicyChanged,
            client_ip: Some(client_ip),
            details: serde_json::json!({
                "version": next.version,
                "previous_version": current.version,
                "blocklist_terms": next.blocklist.len(),
            }),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(Ok(row.into()))
}
