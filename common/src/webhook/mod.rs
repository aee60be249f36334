//! Outbound webhooks, the parts both services share: event types and their filter rule,
//! recording an event in the caller's transaction (the outbox: [`record_job_event`]), the
//! endpoints' signing secrets ([`secret`]) and the address rules deliveries obey ([`ssrf`]).
//! Messages are fanned out to deliveries by a trigger on `webhook_messages`
//! (`migrations/20261203000010_webhooks.sql`), in the same transaction; the worker's delivery
//! loop (`worker/src/webhook/`) sends them.

pub mod secret;
pub mod ssrf;

use sqlx::PgConnection;

use crate::{
    job::view::View,
    types::{JobId, MessageId},
};

/// `NOTIFY` channel on which every new message (and a manual retry) wakes the delivery loops.
pub const NOTIFY_CHANNEL: &str = "gatehouse_webhook";

/// Every event type a message can have. Names are the contract (`type` in the payload, the
/// endpoints' `event_types` filter).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    JobCompleted,
    JobFailed,
    JobCancelled,
    /// Opt-in: only endpoints that list it receive it.
    JobProgress,
    EndpointDisabled,
    /// An API key is older than `GATEHOUSE_KEY_ROTATION_REMINDER_DAYS` (once per key secret).
    KeyRotationDue,
}

impl EventType {
    pub const ALL: [EventType; 6] = [
        EventType::JobCompleted,
        EventType::JobFailed,
        EventType::JobCancelled,
        EventType::JobProgress,
        EventType::EndpointDisabled,
        EventType::KeyRotationDue,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            EventType::JobCompleted => "job.completed",
            EventType::JobFailed => "job.failed",
            EventType::JobCancelled => "job.cancelled",
            EventType::JobProgress => "job.progress",
            EventType::EndpointDisabled => "endpoint.disabled",
            EventType::KeyRotationDue => "key.rotation_due",
        }
    }

    /// Sent only to endpoints whose filter names it (an empty filter means every other type).
    /// The SQL side is `gatehouse_webhook_subscribes`.
    pub const fn opt_in(self) -> bool {
        matches!(self, EventType::JobProgress)
    }

    /// Whether an endpoint with `filter` receives this type.
    pub fn subscribed(self, filter: &[String]) -> bool {
        if filter.is_empty() {
            !self.opt_in()
        } else {
            filter.iter().any(|t| t == self.as_str())
        }
    }
}

impl std::str::FromStr for EventType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        EventType::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| {
                let known: Vec<&str> = EventType::ALL.iter().map(|t| t.as_str()).collect();
                format!("unknown event type `{s}` (known: {})", known.join(", "))
            })
    }
}

impl std::fmt::Display for EventType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Records `event` about `job` as it is now, in the caller's transaction (which must be the
/// one that changed the job, and scoped to its tenant): the cancel path calls this with
/// [`EventType::JobCancelled`], `job::store::complete` with the end or progress event its
/// statement raised. The payload's `data` is the job object exactly as `GET /v1/jobs/{id}`
/// renders it ([`crate::job::view`]), at `view.now`. Nothing is stored when no enabled
/// endpoint of the tenant takes the event.
pub async fn record_job_event(
    conn: &mut PgConnection,
    job: JobId,
    event: EventType,
    view: View,
) -> Result<Option<MessageId>, sqlx::Error> {
    let Some(data) = crate::job::view::load(conn, job, view).await? else {
        return Ok(None);
    };
    let data = serde_json::to_value(&data).map_err(|e| sqlx::Error::Protocol(e.to_string()))?;
    let id = MessageId::new();
    let inserted = sqlx::query_scalar!(
        r#"
        INSERT INTO webhook_messages (message_id, tenant_id, event_type, endpoint_id, job_id, payload)
        SELECT $1, j.tenant_id, $3, j.webhook_endpoint_id, j.job_id,
               gatehouse_webhook_payload($3, now(), $4)
        FROM jobs j
        WHERE j.job_id = $2 AND gatehouse_webhook_wanted(j.tenant_id, j.webhook_endpoint_id, $3)
        ON CONFLICT DO NOTHING
        RETURNING message_id AS "id: MessageId"
        "#,
        id.0,
        job.0,
        event.as_str(),
        data,
    )
    .fetch_optional(conn)
    .await?;
    Ok(inserted)
}

/// Records a tenant-wide event (no job) with `data` as the payload's `data`, in the caller's
/// transaction, if an enabled endpoint of the tenant takes it.
pub async fn record_tenant_event(
    conn: &mut PgConnection,
    tenant: crate::types::TenantId,
    event: EventType,
    data: serde_json::Value,
) -> Result<Option<MessageId>, sqlx::Error> {
    let id = MessageId::new();
    sqlx::query_scalar!(
        r#"
        INSERT INTO webhook_messages (message_id, tenant_id, event_type, payload)
        SELECT $1, $2, $3, gatehouse_webhook_payload($3, now(), $4)
        WHERE gatehouse_webhook_wanted($2, NULL, $3)
        RETURNING message_id AS "id: MessageId"
        "#,
        id.0,
        tenant.0,
        event.as_str(),
        data,
    )
    .fetch_optional(conn)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_take_listed_types_or_all_but_the_opt_in_ones() {
        let none: Vec<String> = Vec::new();
        assert!(EventType::JobCompleted.subscribed(&none));
        assert!(EventType::EndpointDisabled.subscribed(&none));
        assert!(!EventType::JobProgress.subscribed(&none));
        let progress = vec!["job.progress".to_string()];
        assert!(EventType::JobProgress.subscribed(&progress));
        assert!(!EventType::JobCompleted.subscribed(&progress));
        for t in EventType::ALL {
            assert_eq!(t.as_str().parse::<EventType>(), Ok(t));
        }
        assert!("job.done".parse::<EventType>().is_err());
    }
}
