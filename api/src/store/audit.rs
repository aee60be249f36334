//! `audit_events`: one helper so every identity event has the same shape (actor, tenant,
//! client IP, time, outcome).

use std::net::IpAddr;

use gatehouse_common::types::TenantId;
use sqlx::{Postgres, Transaction};

pub struct Event<'a> {
    pub tenant: Option<TenantId>,
    pub actor: &'a str,
    pub action: &'static str,
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
    sqlx::query(
        r"
        INSERT INTO audit_events (tenant_id, actor, action, client_ip, outcome, details)
        VALUES ($1, $2, $3, $4, $5, $6)
        ",
    )
    .bind(event.tenant)
    .bind(event.actor)
    .bind(event.action)
    .bind(event.client_ip.map(ipnet::IpNet::from))
    .bind(outcome)
    .bind(event.details)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
