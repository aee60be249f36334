//! `audit_events` as the api writes and reads them. Writing goes through the one insert in
//! `gatehouse_common::audit` (typed actions); this module keeps the identity events' shape
//! (actor, tenant, client IP, outcome) and the tenant's audit feed.

use std::net::IpAddr;

use gatehouse_common::{
    audit::{self, Action},
    types::TenantId,
};
use sqlx::{Postgres, Transaction};

pub struct Event<'a> {
    pub tenant: Option<TenantId>,
    pub actor: &'a str,
    pub action: Action,
    pub client_ip: Option<IpAddr>,
    pub details: serde_json::Value,
}

pub async fn record(
    tx: &mut Transaction<'_, Postgres>,
    event: Event<'_>,
) -> Result<(), sqlx::Error> {
    record_outcome(tx, event, "success").await
}

pub async fn record_outcome(
    tx: &mut Transaction<'_, Postgres>,
    event: Event<'_>,
    outcome: &'static str,
) -> Result<(), sqlx::Error> {
    let target = target_of(&event);
    audit::insert(
        tx,
        audit::Record {
            outcome,
            client_ip: event.client_ip,
            target,
            details: event.details,
            ..audit::Record::new(event.tenant, event.actor, event.action)
        },
    )
    .await
}

/// What an identity or settings event is about: the object its details name (a created key,
/// user or endpoint has no id in its route), or the tenant for tenant events.
fn target_of(event: &Event<'_>) -> Option<audit::Target> {
    const KEYS: [(&str, &str); 3] = [
        ("key_id", "key"),
        ("user_id", "user"),
        ("endpoint_id", "webhook_endpoint"),
    ];
    let named = KEYS.iter().find_map(|(field, kind)| {
        event
            .details
            .get(*field)
            .and_then(|v| v.as_str())
            .map(|id| audit::Target {
                kind,
                id: id.to_string(),
            })
    });
    named.or_else(|| match event.action {
        Action::TenantCreated | Action::TenantChanged => event.tenant.map(|t| audit::Target {
            kind: "tenant",
            id: t.to_string(),
        }),
        _ => None,
    })
}

/// One audit record as the API (and the export) shows it.
#[derive(Debug, serde::Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct AuditRecord {
    #[serde(rename = "id")]
    pub audit_id: i64,
    /// Position in the tenant's hash chain (1, 2, 3, … without gaps).
    pub seq: i64,
    pub actor: String,
    pub actor_kind: String,
    pub action: String,
    pub outcome: String,
    /// The HTTP status of a denied or failed request.
    pub status: Option<i16>,
    pub target_type: Option<String>,
    pub target_id: Option<String>,
    #[schema(value_type = Option<String>)]
    pub client_ip: Option<ipnet::IpNet>,
    pub user_agent: Option<String>,
    pub request_id: Option<String>,
    pub job_id: Option<gatehouse_common::types::JobId>,
    pub chunk_index: Option<i32>,
    pub details: serde_json::Value,
    pub created_at: chrono::DateTime<chrono::Utc>,
    /// Hex SHA-256 of the previous record (`null` for the chain's first).
    pub prev_hash: Option<String>,
    /// Hex SHA-256(previous hash ‖ canonical content).
    pub hash: String,
}

/// `GET /v1/audit` and `…/export` filters; every one optional.
#[derive(Debug, Default, Clone, serde::Deserialize)]
pub struct Filter {
    pub from: Option<chrono::DateTime<chrono::Utc>>,
    pub to: Option<chrono::DateTime<chrono::Utc>>,
    pub actor: Option<String>,
    pub action: Option<String>,
    pub target_type: Option<String>,
    pub target_id: Option<String>,
    pub outcome: Option<String>,
}

const COLUMNS: &str = r"
    SELECT audit_id, seq, actor, actor_kind, action, outcome, status, target_type, target_id,
           client_ip, user_agent, request_id, job_id, chunk_index, details, created_at,
           encode(prev_hash, 'hex') AS prev_hash, encode(hash, 'hex') AS hash
    FROM audit_events
    WHERE tenant_id = $1
      AND ($2::timestamptz IS NULL OR created_at >= $2)
      AND ($3::timestamptz IS NULL OR created_at < $3)
      AND ($4::text IS NULL OR actor = $4)
      AND ($5::text IS NULL OR action = $5)
      AND ($6::text IS NULL OR target_type = $6)
      AND ($7::text IS NULL OR target_id = $7)
      AND ($8::text IS NULL OR outcome = $8)";

/// A page of the tenant's records matching `filter`: newest first before `cursor`
/// (`descending`), or oldest first after it (the export).
pub async fn page(
    pool: &sqlx::PgPool,
    tenant: TenantId,
    filter: &Filter,
    cursor: Option<i64>,
    descending: bool,
    limit: i64,
) -> Result<Vec<AuditRecord>, sqlx::Error> {
    let mut tx =
        gatehouse_common::db::begin(pool, gatehouse_common::db::Scope::Tenant(tenant)).await?;
    let sql = if descending {
        format!(
            "{COLUMNS} AND ($9::int8 IS NULL OR audit_id < $9) ORDER BY audit_id DESC LIMIT $10"
        )
    } else {
        format!("{COLUMNS} AND ($9::int8 IS NULL OR audit_id > $9) ORDER BY audit_id LIMIT $10")
    };
    let records = sqlx::query_as(&sql)
        .bind(tenant)
        .bind(filter.from)
        .bind(filter.to)
        .bind(filter.actor.as_deref())
        .bind(filter.action.as_deref())
        .bind(filter.target_type.as_deref())
        .bind(filter.target_id.as_deref())
        .bind(filter.outcome.as_deref())
        .bind(cursor)
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(records)
}
