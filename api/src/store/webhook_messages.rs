//! `webhook_messages`, `webhook_deliveries`, `webhook_attempts` as the api reads them, and the
//! recovery actions (retry a message, recover an endpoint, send a test event). The delivery
//! itself is the worker's (`worker/src/webhook/`).

use chrono::{DateTime, Utc};
use gatehouse_common::{
    audit::Action,
    db::{self, Scope},
    job::view::{Counts, Job},
    types::{AttemptId, EndpointId, JobId, JobKind, JobStatus, MessageId, TenantId},
    webhook::{EventType, NOTIFY_CHANNEL},
};
use serde::Serialize;
use sqlx::PgPool;

use super::{audit::record, webhook_endpoints::Actor};

/// One message (event) with where it stands per endpoint.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Message {
    pub id: MessageId,
    pub event_type: String,
    /// The one endpoint it was for (a job that named one, a test event); `null`: every
    /// subscribed endpoint.
    pub endpoint_id: Option<EndpointId>,
    pub job_id: Option<JobId>,
    pub test: bool,
    /// The exact body sent.
    pub payload: serde_json::Value,
    pub created_at: DateTime<Utc>,
    pub deliveries: Vec<Delivery>,
}

#[derive(Debug, Clone, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Delivery {
    pub endpoint_id: EndpointId,
    /// `pending`, `succeeded`, `failed` (stopped: endpoint disabled), `exhausted`.
    pub status: String,
    pub attempts: i32,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub last_attempt_at: Option<DateTime<Utc>>,
    pub last_status_code: Option<i32>,
    pub last_error: Option<String>,
}

struct MessageRow {
    id: MessageId,
    event_type: String,
    endpoint_id: Option<EndpointId>,
    job_id: Option<JobId>,
    test: bool,
    payload: serde_json::Value,
    created_at: DateTime<Utc>,
    deliveries: serde_json::Value,
}

impl MessageRow {
    fn into_message(self) -> Result<Message, sqlx::Error> {
        let deliveries = serde_json::from_value(self.deliveries)
            .map_err(|e| sqlx::Error::Decode(format!("deliveries: {e}").into()))?;
        Ok(Message {
            id: self.id,
            event_type: self.event_type,
            endpoint_id: self.endpoint_id,
            job_id: self.job_id,
            test: self.test,
            payload: self.payload,
            created_at: self.created_at,
            deliveries,
        })
    }
}

/// Which messages to list.
pub struct MessageFilter {
    pub event_type: Option<String>,
    /// Messages delivered (or being delivered) to this endpoint.
    pub endpoint: Option<EndpointId>,
    /// Messages with a delivery in this status.
    pub status: Option<String>,
    /// Older than this message (newest first).
    pub before: Option<MessageId>,
    pub limit: i64,
}

/// The tenant's messages, newest first.
pub async fn list(
    pool: &PgPool,
    tenant: TenantId,
    filter: &MessageFilter,
) -> Result<Vec<Message>, sqlx::Error> {
    let mut tx = db::begin(pool, Scope::Tenant(tenant)).await?;
    let rows = sqlx::query_as!(
        MessageRow,
        r#"
        SELECT m.message_id AS "id: MessageId", m.event_type,
               m.endpoint_id AS "endpoint_id: EndpointId", m.job_id AS "job_id: JobId", m.test,
               m.payload, m.created_at,
               coalesce((SELECT jsonb_agg(jsonb_build_object(
                            'endpoint_id', 'ep_' || replace(d.endpoint_id::text, '-', ''),
                            'status', d.status, 'attempts', d.attempts,
                            'next_attempt_at', CASE WHEN d.status = 'pending'
                                                    THEN d.next_attempt_at END,
                            'last_attempt_at', d.last_attempt_at,
                            'last_status_code', d.last_status_code,
                            'last_error', d.last_error) ORDER BY d.endpoint_id)
                         FROM webhook_deliveries d WHERE d.message_id = m.message_id),
                        '[]'::jsonb) AS "deliveries!"
        FROM webhook_messages m
        WHERE m.tenant_id = $1
          AND ($2::uuid IS NULL OR m.message_id < $2)
          AND ($3::text IS NULL OR m.event_type = $3)
          AND ($4::uuid IS NULL OR EXISTS (SELECT 1 FROM webhook_deliveries d
                                          WHERE d.message_id = m.message_id
                                            AND d.endpoint_id = $4))
          AND ($5::text IS NULL OR EXISTS (SELECT 1 FROM webhook_deliveries d
                                          WHERE d.message_id = m.message_id
                                            AND ($4::uuid IS NULL OR d.endpoint_id = $4)
                                            AND d.status = $5))
        ORDER BY m.message_id DESC
        LIMIT $6
        "#,
        tenant.0,
        filter.before.map(|m| m.0),
        filter.event_type,
        filter.endpoint.map(|e| e.0),
        filter.status,
        filter.limit,
    )
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    rows.into_iter().map(MessageRow::into_message).collect()
}

pub async fn get(
    pool: &PgPool,
    tenant: TenantId,
    id: MessageId,
) -> Result<Option<Message>, sqlx::Error> {
    let mut tx = db::begin(pool, Scope::Tenant(tenant)).await?;
    let row = sqlx::query_as!(
        MessageRow,
        r#"
        SELECT m.message_id AS "id: MessageId", m.event_type,
               m.endpoint_id AS "endpoint_id: EndpointId", m.job_id AS "job_id: JobId", m.test,
               m.payload, m.created_at,
               coalesce((SELECT jsonb_agg(jsonb_build_object(
                            'endpoint_id', 'ep_' || replace(d.endpoint_id::text, '-', ''),
                            'status', d.status, 'attempts', d.attempts,
                            'next_attempt_at', CASE WHEN d.status = 'pending'
                                                    THEN d.next_attempt_at END,
                            'last_attempt_at', d.last_attempt_at,
                            'last_status_code', d.last_status_code,
                            'last_error', d.last_error) ORDER BY d.endpoint_id)
                         FROM webhook_deliveries d WHERE d.message_id = m.message_id),
                        '[]'::jsonb) AS "deliveries!"
        FROM webhook_messages m
        WHERE m.tenant_id = $1 AND m.message_id = $2
        "#,
        tenant.0,
        id.0,
    )
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;
    row.map(MessageRow::into_message).transpose()
}

/// One HTTP attempt.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Attempt {
    pub id: AttemptId,
    pub message_id: MessageId,
    pub endpoint_id: EndpointId,
    /// 1, 2, … per delivery.
    pub attempt: i32,
    pub url: String,
    /// `succeeded`, `failed`, `refused` (not sent: the address rules).
    pub outcome: String,
    pub status_code: Option<i32>,
    pub duration_ms: i32,
    /// The start of the response body (`GATEHOUSE_WEBHOOK_RESPONSE_MAX_BYTES`).
    pub response: Option<String>,
    pub error: Option<String>,
    /// When the next attempt is due (`null`: none).
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

/// A message's attempts, newest first; `None` when the message is not the tenant's.
pub async fn attempts(
    pool: &PgPool,
    tenant: TenantId,
    message: MessageId,
    before: Option<AttemptId>,
    limit: i64,
) -> Result<Option<Vec<Attempt>>, sqlx::Error> {
    let mut tx = db::begin(pool, Scope::Tenant(tenant)).await?;
    let exists = sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM webhook_messages WHERE tenant_id = $1 AND message_id = $2) AS "e!""#,
        tenant.0,
        message.0
    )
    .fetch_one(&mut *tx)
    .await?;
    if !exists {
        return Ok(None);
    }
    let rows = sqlx::query_as!(
        Attempt,
        r#"
        SELECT attempt_id AS "id: AttemptId", message_id AS "message_id: MessageId",
               endpoint_id AS "endpoint_id: EndpointId", attempt, url, outcome, status_code,
               duration_ms, response, error, next_attempt_at, created_at
        FROM webhook_attempts
        WHERE tenant_id = $1 AND message_id = $2 AND ($3::uuid IS NULL OR attempt_id < $3)
        ORDER BY attempt_id DESC
        LIMIT $4
        "#,
        tenant.0,
        message.0,
        before.map(|a| a.0),
        limit,
    )
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Some(rows))
}

/// Sends `message` again to its endpoints (or to `endpoint` only) that are enabled, now and
/// with a fresh retry schedule; `None` when the message is not the tenant's. (A delivery being
/// attempted at this moment may then be sent twice: receivers dedupe by `webhook-id`.)
pub async fn retry(
    pool: &PgPool,
    tenant: TenantId,
    message: MessageId,
    endpoint: Option<EndpointId>,
    actor: Actor<'_>,
) -> Result<Option<u64>, sqlx::Error> {
    let mut tx = db::begin(pool, Scope::Tenant(tenant)).await?;
    let exists = sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM webhook_messages WHERE tenant_id = $1 AND message_id = $2) AS "e!""#,
        tenant.0,
        message.0
    )
    .fetch_one(&mut *tx)
    .await?;
    if !exists {
        return Ok(None);
    }
    let n = sqlx::query!(
        r#"
        UPDATE webhook_deliveries d SET status = 'pending', step = 0, next_attempt_at = now(),
                                        updated_at = now()
        FROM webhook_endpoints e
        WHERE d.tenant_id = $1 AND d.message_id = $2 AND ($3::uuid IS NULL OR d.endpoint_id = $3)
          AND e.endpoint_id = d.endpoint_id AND e.enabled
        "#,
        tenant.0,
        message.0,
        endpoint.map(|e| e.0),
    )
    .execute(&mut *tx)
    .await?
    .rows_affected();
    notify(&mut tx).await?;
    let details =
        serde_json::json!({ "message_id": message, "endpoint_id": endpoint, "deliveries": n });
    record(
        &mut tx,
        actor.event(tenant, Action::WebhookMessageRetried, details),
    )
    .await?;
    tx.commit().await?;
    Ok(Some(n))
}

/// Re-sends the endpoint's failed and exhausted deliveries of messages created since `since`
/// (oldest first, at most `max`); the count, and whether more were left.
pub async fn recover(
    pool: &PgPool,
    tenant: TenantId,
    endpoint: EndpointId,
    since: DateTime<Utc>,
    max: i64,
    actor: Actor<'_>,
) -> Result<(i64, bool), sqlx::Error> {
    let mut tx = db::begin(pool, Scope::Tenant(tenant)).await?;
    let recovered = sqlx::query_scalar!(
        r#"
        WITH picked AS (
            SELECT d.message_id FROM webhook_deliveries d
            JOIN webhook_messages m ON m.message_id = d.message_id
            WHERE d.tenant_id = $1 AND d.endpoint_id = $2
              AND d.status IN ('failed', 'exhausted') AND m.created_at >= $3
            ORDER BY m.created_at, m.message_id
            LIMIT $4::int8 + 1
        ), limited AS (
            SELECT message_id FROM picked LIMIT $4
        ), updated AS (
            UPDATE webhook_deliveries d SET status = 'pending', step = 0,
                                            next_attempt_at = now(), updated_at = now()
            FROM limited l
            WHERE d.endpoint_id = $2 AND d.message_id = l.message_id
            RETURNING 1
        )
        SELECT ((SELECT count(*) FROM updated) * 2
                + CASE WHEN (SELECT count(*) FROM picked) > $4 THEN 1 ELSE 0 END) AS "packed!"
        "#,
        tenant.0,
        endpoint.0,
        since,
        max,
    )
    .fetch_one(&mut *tx)
    .await?;
    let (n, more) = (recovered / 2, recovered % 2 == 1);
    notify(&mut tx).await?;
    let details = serde_json::json!({
        "endpoint_id": endpoint, "since": since, "deliveries": n, "more": more,
    });
    record(
        &mut tx,
        actor.event(tenant, Action::WebhookEndpointRecovered, details),
    )
    .await?;
    tx.commit().await?;
    Ok((n, more))
}

/// The example job of a test event: two items, in the state the event describes.
fn example_job(event_type: EventType, now: DateTime<Utc>) -> Job {
    let (status, succeeded, failed, done) = match event_type {
        EventType::JobFailed => (JobStatus::Failed, 0, 2, true),
        EventType::JobCancelled => (JobStatus::Cancelled, 0, 0, true),
        EventType::JobProgress => (JobStatus::Running, 1, 0, false),
        _ => (JobStatus::Completed, 1, 1, true),
    };
    let cancelled = if status == JobStatus::Cancelled { 2 } else { 0 };
    Job {
        id: JobId::new(),
        kind: JobKind::Moderate,
        status,
        shared: false,
        counts: Counts {
            total: 2,
            succeeded,
            failed,
            cancelled,
        },
        progress: f64::from(succeeded + failed + cancelled) / 2.0,
        eta_seconds: (!done).then_some(1),
        queue_position: (!done).then_some(0),
        parent_job_id: None,
        invalid_lines: 0,
        created_at: now,
        started_at: Some(now),
        completed_at: done.then_some(now),
        expires_at: now + chrono::Duration::days(30),
        expired: false,
    }
}

/// A test event of `event_type` for `endpoint` (sent whatever its filter says), with an
/// example job as its data.
pub async fn send_test(
    pool: &PgPool,
    tenant: TenantId,
    endpoint: EndpointId,
    event_type: EventType,
) -> Result<Option<Message>, sqlx::Error> {
    let id = MessageId::new();
    let data = serde_json::to_value(example_job(event_type, Utc::now()))
        .map_err(|e| sqlx::Error::Protocol(e.to_string()))?;
    let mut tx = db::begin(pool, Scope::Tenant(tenant)).await?;
    let inserted = sqlx::query_scalar!(
        r#"
        INSERT INTO webhook_messages (message_id, tenant_id, event_type, endpoint_id, test, payload)
        SELECT $1, $2, $4, e.endpoint_id, true, gatehouse_webhook_payload($4, now(), $5)
        FROM webhook_endpoints e
        WHERE e.tenant_id = $2 AND e.endpoint_id = $3
        RETURNING message_id AS "id: MessageId"
        "#,
        id.0,
        tenant.0,
        endpoint.0,
        event_type.as_str(),
        data,
    )
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;
    match inserted {
        Some(id) => get(pool, tenant, id).await,
        None => Ok(None),
    }
}

async fn notify(tx: &mut sqlx::PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query!("SELECT pg_notify($1, '') AS notified", NOTIFY_CHANNEL)
        .fetch_one(tx)
        .await?;
    Ok(())
}
