//! `webhook_endpoints`: a tenant's webhook endpoints and their signing secrets (sealed by
//! `gatehouse_common::webhook::secret::SecretBox`; the plain secret leaves this module only
//! in the creation, rotation and admin read responses).

use chrono::{DateTime, Utc};
use gatehouse_common::{
    audit::Action,
    db::{self, Scope},
    types::{EndpointId, TenantId},
    webhook::secret::{SecretBox, SecretError, SigningSecret},
};
use serde::Serialize;
use sqlx::PgPool;

use super::audit::{Event, record};

/// An endpoint as the API shows it (never its secret).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Endpoint {
    #[serde(rename = "id")]
    pub endpoint_id: EndpointId,
    pub url: String,
    pub description: String,
    /// Empty: every event type except the opt-in ones (`job.progress`).
    pub event_types: Vec<String>,
    pub enabled: bool,
    pub disabled_reason: Option<String>,
    pub disabled_at: Option<DateTime<Utc>>,
    pub headers: serde_json::Value,
    pub rate_limit_per_sec: Option<i32>,
    /// Set during a rotation's overlap: until then the previous secret signs too.
    pub previous_secret_valid_until: Option<DateTime<Utc>>,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A validated new endpoint.
pub struct NewEndpoint<'a> {
    pub tenant: TenantId,
    pub url: &'a str,
    pub description: &'a str,
    pub event_types: &'a [String],
    pub enabled: bool,
    pub headers: serde_json::Value,
    pub rate_limit_per_sec: Option<i32>,
    /// `GATEHOUSE_WEBHOOK_MAX_ENDPOINTS`.
    pub max_endpoints: i64,
}

/// Who changes something, for the audit record.
#[derive(Clone, Copy)]
pub struct Actor<'a> {
    pub name: &'a str,
    pub client_ip: Option<std::net::IpAddr>,
}

impl Actor<'_> {
    pub(crate) fn event(
        &self,
        tenant: TenantId,
        action: Action,
        details: serde_json::Value,
    ) -> Event<'_> {
        Event {
            tenant: Some(tenant),
            actor: self.name,
            action,
            client_ip: self.client_ip,
            details,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    #[error("database error")]
    Database(#[from] sqlx::Error),
    #[error("the tenant already has {0} endpoints (GATEHOUSE_WEBHOOK_MAX_ENDPOINTS)")]
    TooMany(i64),
    #[error(transparent)]
    Secret(#[from] SecretError),
}

/// Creates an endpoint with a new secret (returned once, here).
pub async fn create(
    pool: &PgPool,
    new: NewEndpoint<'_>,
    secrets: &SecretBox,
    actor: Actor<'_>,
) -> Result<(Endpoint, SigningSecret), EndpointError> {
    let id = EndpointId::new();
    let secret = SigningSecret::generate();
    let mut tx = db::begin(pool, Scope::Tenant(new.tenant)).await?;
    // The bound is exact: creations of one tenant are serialised on its row.
    sqlx::query!(
        "SELECT 1 AS locked FROM tenants WHERE tenant_id = $1 FOR NO KEY UPDATE",
        new.tenant.0
    )
    .fetch_optional(&mut *tx)
    .await?;
    let count = sqlx::query_scalar!(
        r#"SELECT count(*) AS "n!" FROM webhook_endpoints WHERE tenant_id = $1"#,
        new.tenant.0
    )
    .fetch_one(&mut *tx)
    .await?;
    if count >= new.max_endpoints {
        return Err(EndpointError::TooMany(count));
    }
    let endpoint = sqlx::query_as!(
        Endpoint,
        r#"
        INSERT INTO webhook_endpoints (endpoint_id, tenant_id, url, description, event_types,
                                       enabled, headers, rate_limit_per_sec, secret, created_by,
                                       disabled_reason, disabled_at)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10,
                CASE WHEN $6 THEN NULL ELSE 'disabled at creation' END,
                CASE WHEN $6 THEN NULL ELSE now() END)
        RETURNING endpoint_id AS "endpoint_id: EndpointId", url, description, event_types,
                  enabled, disabled_reason, disabled_at, headers, rate_limit_per_sec,
                  previous_valid_until AS previous_secret_valid_until, created_by, created_at,
                  updated_at
        "#,
        id.0,
        new.tenant.0,
        new.url,
        new.description,
        new.event_types,
        new.enabled,
        new.headers,
        new.rate_limit_per_sec,
        secrets.seal(id, &secret),
        actor.name,
    )
    .fetch_one(&mut *tx)
    .await?;
    let details = serde_json::json!({
        "endpoint_id": id, "url": new.url, "event_types": new.event_types,
        "encrypted": secrets.encrypts(),
    });
    record(
        &mut tx,
        actor.event(new.tenant, Action::WebhookEndpointCreated, details),
    )
    .await?;
    tx.commit().await?;
    Ok((endpoint, secret))
}

pub async fn list(
    pool: &PgPool,
    tenant: TenantId,
    after: Option<EndpointId>,
    limit: i64,
) -> Result<Vec<Endpoint>, sqlx::Error> {
    let mut tx = db::begin(pool, Scope::Tenant(tenant)).await?;
    let endpoints = sqlx::query_as!(
        Endpoint,
        r#"
        SELECT endpoint_id AS "endpoint_id: EndpointId", url, description, event_types,
               enabled, disabled_reason, disabled_at, headers, rate_limit_per_sec,
               previous_valid_until AS previous_secret_valid_until, created_by, created_at,
               updated_at
        FROM webhook_endpoints
        WHERE tenant_id = $1 AND ($2::uuid IS NULL OR endpoint_id > $2)
        ORDER BY endpoint_id
        LIMIT $3
        "#,
        tenant.0,
        after.map(|a| a.0),
        limit,
    )
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(endpoints)
}

/// The endpoint if it is `tenant`'s (another tenant's does not exist for the caller).
pub async fn get(
    pool: &PgPool,
    tenant: TenantId,
    id: EndpointId,
) -> Result<Option<Endpoint>, sqlx::Error> {
    let mut tx = db::begin(pool, Scope::Tenant(tenant)).await?;
    let endpoint = sqlx::query_as!(
        Endpoint,
        r#"
        SELECT endpoint_id AS "endpoint_id: EndpointId", url, description, event_types,
               enabled, disabled_reason, disabled_at, headers, rate_limit_per_sec,
               previous_valid_until AS previous_secret_valid_until, created_by, created_at,
               updated_at
        FROM webhook_endpoints WHERE tenant_id = $1 AND endpoint_id = $2
        "#,
        tenant.0,
        id.0,
    )
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(endpoint)
}

/// What a `PATCH` changes (`None`: unchanged).
#[derive(Default)]
pub struct Changes<'a> {
    pub url: Option<&'a str>,
    pub description: Option<&'a str>,
    pub event_types: Option<&'a [String]>,
    pub enabled: Option<bool>,
    pub headers: Option<serde_json::Value>,
    /// `Some(None)`: no limit.
    pub rate_limit_per_sec: Option<Option<i32>>,
}

/// Applies `changes`. Re-enabling clears the disabled reason and the failure clock.
pub async fn update(
    pool: &PgPool,
    tenant: TenantId,
    id: EndpointId,
    changes: Changes<'_>,
    actor: Actor<'_>,
) -> Result<Option<Endpoint>, sqlx::Error> {
    let mut tx = db::begin(pool, Scope::Tenant(tenant)).await?;
    let reason = format!("disabled by {}", actor.name);
    let endpoint = sqlx::query_as!(
        Endpoint,
        r#"
        UPDATE webhook_endpoints SET
            url = coalesce($3, url),
            description = coalesce($4, description),
            event_types = coalesce($5, event_types),
            headers = coalesce($6, headers),
            rate_limit_per_sec = CASE WHEN $7 THEN $8 ELSE rate_limit_per_sec END,
            rate_next_at = CASE WHEN $7 THEN NULL ELSE rate_next_at END,
            enabled = coalesce($9, enabled),
            disabled_reason = CASE WHEN $9 IS TRUE THEN NULL
                                   WHEN $9 IS FALSE AND enabled THEN $10
                                   ELSE disabled_reason END,
            disabled_at = CASE WHEN $9 IS TRUE THEN NULL
                               WHEN $9 IS FALSE AND enabled THEN now()
                               ELSE disabled_at END,
            failing_since = CASE WHEN $9 IS TRUE THEN NULL ELSE failing_since END,
            updated_at = now()
        WHERE tenant_id = $1 AND endpoint_id = $2
        RETURNING endpoint_id AS "endpoint_id: EndpointId", url, description, event_types,
                  enabled, disabled_reason, disabled_at, headers, rate_limit_per_sec,
                  previous_valid_until AS previous_secret_valid_until, created_by, created_at,
                  updated_at
        "#,
        tenant.0,
        id.0,
        changes.url,
        changes.description,
        changes.event_types,
        changes.headers.clone(),
        changes.rate_limit_per_sec.is_some(),
        changes.rate_limit_per_sec.flatten(),
        changes.enabled,
        reason,
    )
    .fetch_optional(&mut *tx)
    .await?;
    if endpoint.is_some() {
        let details = serde_json::json!({
            "endpoint_id": id, "url": changes.url, "event_types": changes.event_types,
            "enabled": changes.enabled,
            "headers": changes.headers.as_ref().and_then(|h| h.as_object()).map(|h| h.keys().collect::<Vec<_>>()),
            "rate_limit_per_sec": changes.rate_limit_per_sec,
        });
        record(
            &mut tx,
            actor.event(tenant, Action::WebhookEndpointChanged, details),
        )
        .await?;
    }
    tx.commit().await?;
    Ok(endpoint)
}

/// Deletes the endpoint with its deliveries and attempts (messages stay in the history).
pub async fn delete(
    pool: &PgPool,
    tenant: TenantId,
    id: EndpointId,
    actor: Actor<'_>,
) -> Result<bool, sqlx::Error> {
    let mut tx = db::begin(pool, Scope::Tenant(tenant)).await?;
    let deleted = sqlx::query!(
        "DELETE FROM webhook_endpoints WHERE tenant_id = $1 AND endpoint_id = $2",
        tenant.0,
        id.0
    )
    .execute(&mut *tx)
    .await?
    .rows_affected()
        > 0;
    if deleted {
        let details = serde_json::json!({ "endpoint_id": id });
        record(
            &mut tx,
            actor.event(tenant, Action::WebhookEndpointDeleted, details),
        )
        .await?;
    }
    tx.commit().await?;
    Ok(deleted)
}

/// The current secret (admins), audited.
pub async fn secret(
    pool: &PgPool,
    tenant: TenantId,
    id: EndpointId,
    secrets: &SecretBox,
    actor: Actor<'_>,
) -> Result<Option<SigningSecret>, EndpointError> {
    let mut tx = db::begin(pool, Scope::Tenant(tenant)).await?;
    let sealed = sqlx::query_scalar!(
        "SELECT secret FROM webhook_endpoints WHERE tenant_id = $1 AND endpoint_id = $2",
        tenant.0,
        id.0
    )
    .fetch_optional(&mut *tx)
    .await?;
    let Some(sealed) = sealed else {
        return Ok(None);
    };
    let secret = secrets.open(id, &sealed)?;
    let details = serde_json::json!({ "endpoint_id": id });
    record(
        &mut tx,
        actor.event(tenant, Action::WebhookSecretRead, details),
    )
    .await?;
    tx.commit().await?;
    Ok(Some(secret))
}

/// A new secret; the current one keeps signing (as a second signature) for `overlap`.
pub async fn rotate(
    pool: &PgPool,
    tenant: TenantId,
    id: EndpointId,
    overlap: std::time::Duration,
    secrets: &SecretBox,
    actor: Actor<'_>,
) -> Result<Option<(Endpoint, SigningSecret)>, EndpointError> {
    let secret = SigningSecret::generate();
    let mut tx = db::begin(pool, Scope::Tenant(tenant)).await?;
    let endpoint = sqlx::query_as!(
        Endpoint,
        r#"
        UPDATE webhook_endpoints SET
            previous_secret = secret,
            previous_valid_until = now() + make_interval(secs => $3),
            secret = $4,
            updated_at = now()
        WHERE tenant_id = $1 AND endpoint_id = $2
        RETURNING endpoint_id AS "endpoint_id: EndpointId", url, description, event_types,
                  enabled, disabled_reason, disabled_at, headers, rate_limit_per_sec,
                  previous_valid_until AS previous_secret_valid_until, created_by, created_at,
                  updated_at
        "#,
        tenant.0,
        id.0,
        overlap.as_secs_f64(),
        secrets.seal(id, &secret),
    )
    .fetch_optional(&mut *tx)
    .await?;
    let Some(endpoint) = endpoint else {
        return Ok(None);
    };
    let details = serde_json::json!({
        "endpoint_id": id, "previous_valid_until": endpoint.previous_secret_valid_until,
    });
    record(
        &mut tx,
        actor.event(tenant, Action::WebhookSecretRotated, details),
    )
    .await?;
    tx.commit().await?;
    Ok(Some((endpoint, secret)))
}
