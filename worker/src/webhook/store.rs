//! The delivery loop's SQL: claiming due deliveries (`FOR UPDATE SKIP LOCKED`, a lease, the
//! endpoints' rate limits), recording an attempt's outcome (fenced by the claim counter),
//! disabling an endpoint (`endpoint.disabled` message + audit record), and the backlog gauges.

use std::time::Duration;

use chrono::{DateTime, Utc};
use gatehouse_common::{
    audit::{self, Action},
    db::{self, Scope},
    types::{AttemptId, EndpointId, MessageId, TenantId},
};
use sqlx::PgPool;

/// A delivery this worker holds until `lease` ends.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub message_id: MessageId,
    pub endpoint_id: EndpointId,
    pub tenant_id: TenantId,
    /// This attempt's number (1-based).
    pub attempt: i32,
    pub step: i32,
    /// The fencing token: only this claim may record the outcome.
    pub claims: i32,
    pub payload: serde_json::Value,
    pub message_created_at: DateTime<Utc>,
    pub url: String,
    pub headers: serde_json::Value,
    pub secret: Vec<u8>,
    /// The previous secret while a rotation's overlap lasts.
    pub previous_secret: Option<Vec<u8>>,
}

/// What one claim round found.
pub struct Round {
    pub claimed: Vec<Claimed>,
    /// When the next pending delivery is due (to sleep until then).
    pub next_due: Option<DateTime<Utc>>,
}

struct DueRow {
    message_id: MessageId,
    endpoint_id: EndpointId,
    tenant_id: TenantId,
    attempts: i32,
    step: i32,
    claims: i32,
    payload: serde_json::Value,
    message_created_at: DateTime<Utc>,
    url: String,
    headers: serde_json::Value,
    enabled: bool,
    rate_limit_per_sec: Option<i32>,
    secret: Vec<u8>,
    previous_secret: Option<Vec<u8>>,
}

/// Claims up to `limit` due deliveries for `lease` (their `next_attempt_at` moves to the end of
/// the lease, so a worker that dies leaves them due again then). Deliveries of disabled
/// endpoints are failed; those over their endpoint's rate limit are moved to their slot.
pub async fn claim(pool: &PgPool, limit: i64, lease: Duration) -> Result<Round, sqlx::Error> {
    let mut tx = db::begin(pool, Scope::Platform).await?;
    let due = sqlx::query_as!(
        DueRow,
        r#"
        SELECT d.message_id AS "message_id: MessageId", d.endpoint_id AS "endpoint_id: EndpointId",
               d.tenant_id AS "tenant_id: TenantId", d.attempts, d.step, d.claims, m.payload,
               m.created_at AS message_created_at, e.url, e.headers, e.enabled,
               e.rate_limit_per_sec, e.secret,
               CASE WHEN e.previous_valid_until > now() THEN e.previous_secret END AS previous_secret
        FROM webhook_deliveries d
        JOIN webhook_messages m ON m.message_id = d.message_id
        JOIN webhook_endpoints e ON e.endpoint_id = d.endpoint_id
        WHERE d.status = 'pending' AND d.next_attempt_at <= now()
        ORDER BY d.next_attempt_at
        LIMIT $1
        FOR UPDATE OF d SKIP LOCKED
        "#,
        limit,
    )
    .fetch_all(&mut *tx)
    .await?;

    let (disabled, enabled): (Vec<DueRow>, Vec<DueRow>) = due.into_iter().partition(|d| !d.enabled);
    if !disabled.is_empty() {
        let messages: Vec<_> = disabled.iter().map(|d| d.message_id.0).collect();
        let endpoints: Vec<_> = disabled.iter().map(|d| d.endpoint_id.0).collect();
        sqlx::query!(
            r#"
            UPDATE webhook_deliveries d SET status = 'failed', last_error = 'endpoint disabled',
                                            updated_at = now()
            FROM UNNEST($1::uuid[], $2::uuid[]) AS u(m, e)
            WHERE d.message_id = u.m AND d.endpoint_id = u.e
            "#,
            &messages,
            &endpoints,
        )
        .execute(&mut *tx)
        .await?;
        metrics::counter!("gatehouse_webhook_deliveries_total", "outcome" => "failed")
            .increment(disabled.len() as u64);
    }

    let (allowed, deferred) = rate_limit(&mut tx, enabled).await?;
    if !deferred.is_empty() {
        let messages: Vec<_> = deferred.iter().map(|(d, _)| d.message_id.0).collect();
        let endpoints: Vec<_> = deferred.iter().map(|(d, _)| d.endpoint_id.0).collect();
        let slots: Vec<_> = deferred.iter().map(|(_, at)| *at).collect();
        sqlx::query!(
            r#"
            UPDATE webhook_deliveries d SET next_attempt_at = u.at
            FROM UNNEST($1::uuid[], $2::uuid[], $3::timestamptz[]) AS u(m, e, at)
            WHERE d.message_id = u.m AND d.endpoint_id = u.e
            "#,
            &messages,
            &endpoints,
            &slots,
        )
        .execute(&mut *tx)
        .await?;
    }
    let messages: Vec<_> = allowed.iter().map(|d| d.message_id.0).collect();
    let endpoints: Vec<_> = allowed.iter().map(|d| d.endpoint_id.0).collect();
    sqlx::query!(
        r#"
        UPDATE webhook_deliveries d SET next_attempt_at = now() + make_interval(secs => $3),
                                        claims = claims + 1, updated_at = now()
        FROM UNNEST($1::uuid[], $2::uuid[]) AS u(m, e)
        WHERE d.message_id = u.m AND d.endpoint_id = u.e
        "#,
        &messages,
        &endpoints,
        lease.as_secs_f64(),
    )
    .execute(&mut *tx)
    .await?;
    let next_due = sqlx::query_scalar!(
        "SELECT min(next_attempt_at) FROM webhook_deliveries WHERE status = 'pending'"
    )
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    let claimed = allowed
        .into_iter()
        .map(|d| Claimed {
            message_id: d.message_id,
            endpoint_id: d.endpoint_id,
            tenant_id: d.tenant_id,
            attempt: d.attempts + 1,
            step: d.step,
            claims: d.claims + 1,
            payload: d.payload,
            message_created_at: d.message_created_at,
            url: d.url,
            headers: d.headers,
            secret: d.secret,
            previous_secret: d.previous_secret,
        })
        .collect();
    Ok(Round { claimed, next_due })
}

/// Per rate-limited endpoint, deliveries are spaced `1 / rate` apart on every worker: the
/// endpoint's `rate_next_at` is the earliest time of its next delivery. Those not allowed
/// now come back with the time of their slot.
async fn rate_limit(
    tx: &mut sqlx::PgConnection,
    due: Vec<DueRow>,
) -> Result<(Vec<DueRow>, Vec<(DueRow, DateTime<Utc>)>), sqlx::Error> {
    let mut limited: Vec<uuid::Uuid> = due
        .iter()
        .filter(|d| d.rate_limit_per_sec.is_some())
        .map(|d| d.endpoint_id.0)
        .collect();
    limited.sort_unstable();
    limited.dedup();
    if limited.is_empty() {
        return Ok((due, Vec::new()));
    }
    let rows = sqlx::query!(
        r#"
        SELECT endpoint_id, greatest(coalesce(rate_next_at, now()), now()) AS "next!"
        FROM webhook_endpoints WHERE endpoint_id = ANY($1)
        ORDER BY endpoint_id
        FOR UPDATE
        "#,
        &limited,
    )
    .fetch_all(&mut *tx)
    .await?;
    let mut next: std::collections::HashMap<uuid::Uuid, (DateTime<Utc>, DateTime<Utc>)> = rows
        .into_iter()
        .map(|r| (r.endpoint_id, (r.next, r.next)))
        .collect();
    let now = Utc::now();
    let mut allowed = Vec::new();
    let mut deferred = Vec::new();
    for d in due {
        let (Some(rate), Some((free, slot))) =
            (d.rate_limit_per_sec, next.get_mut(&d.endpoint_id.0))
        else {
            allowed.push(d);
            continue;
        };
        let spacing = chrono::Duration::microseconds(1_000_000 / i64::from(rate.max(1)));
        if *free <= now {
            *free += spacing;
            *slot = (*slot).max(*free);
            allowed.push(d);
        } else {
            deferred.push((d, *slot));
            *slot += spacing;
        }
    }
    let ids: Vec<uuid::Uuid> = next.keys().copied().collect();
    let frees: Vec<DateTime<Utc>> = ids
        .iter()
        .filter_map(|id| next.get(id).map(|n| n.0))
        .collect();
    sqlx::query!(
        r#"
        UPDATE webhook_endpoints e SET rate_next_at = u.at
        FROM UNNEST($1::uuid[], $2::timestamptz[]) AS u(id, at)
        WHERE e.endpoint_id = u.id
        "#,
        &ids,
        &frees,
    )
    .execute(&mut *tx)
    .await?;
    Ok((allowed, deferred))
}

/// One attempt's outcome, as recorded.
pub struct Finished<'a> {
    pub claimed: &'a Claimed,
    pub outcome: &'static str,
    pub succeeded: bool,
    pub status_code: Option<i32>,
    pub duration_ms: i32,
    pub response: Option<String>,
    pub error: Option<String>,
    /// `None`: no further attempt (succeeded, exhausted, or the endpoint is gone).
    pub next_wait: Option<Duration>,
    /// 410 Gone: disable the endpoint.
    pub gone: bool,
    /// `GATEHOUSE_WEBHOOK_DISABLE_AFTER_SECS`.
    pub disable_after: Duration,
    pub actor: &'a str,
}

/// What recording changed.
#[derive(Debug, Default)]
pub struct Recorded {
    /// The delivery's new status (`None`: another claim superseded this one).
    pub status: Option<String>,
    /// Why the endpoint was disabled now, if it was.
    pub disabled: Option<String>,
}

/// Writes the attempt row, moves the delivery on (if this claim still holds it), keeps the
/// endpoint's failure clock, and disables the endpoint on a 410 or after failing for
/// `disable_after`.
pub async fn finish(pool: &PgPool, done: Finished<'_>) -> Result<Recorded, sqlx::Error> {
    let c = done.claimed;
    let mut tx = db::begin(pool, Scope::Tenant(c.tenant_id)).await?;
    let next_secs = done.next_wait.map(|w| w.as_secs_f64());
    let status = if done.succeeded {
        "succeeded"
    } else if done.gone {
        "failed"
    } else if next_secs.is_some() {
        "pending"
    } else {
        "exhausted"
    };
    sqlx::query!(
        r#"
        INSERT INTO webhook_attempts (attempt_id, message_id, endpoint_id, tenant_id, attempt, url,
                                      outcome, status_code, duration_ms, response, error,
                                      next_attempt_at)
        SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11,
               CASE WHEN $12 = 'pending' THEN now() + make_interval(secs => $13) END
        -- The endpoint may have been deleted meanwhile (with its deliveries).
        WHERE EXISTS (SELECT 1 FROM webhook_deliveries WHERE message_id = $2 AND endpoint_id = $3)
        "#,
        AttemptId::new().0,
        c.message_id.0,
        c.endpoint_id.0,
        c.tenant_id.0,
        c.attempt,
        c.url,
        done.outcome,
        done.status_code,
        done.duration_ms,
        done.response,
        done.error,
        status,
        next_secs.unwrap_or(0.0),
    )
    .execute(&mut *tx)
    .await?;
    let moved = sqlx::query_scalar!(
        r#"
        UPDATE webhook_deliveries SET
            status = $4, attempts = attempts + 1, step = step + 1,
            next_attempt_at = CASE WHEN $4 = 'pending' THEN now() + make_interval(secs => $5)
                                   ELSE next_attempt_at END,
            last_attempt_at = now(), last_status_code = $6, last_error = $7, updated_at = now()
        WHERE message_id = $1 AND endpoint_id = $2 AND claims = $3
        RETURNING status
        "#,
        c.message_id.0,
        c.endpoint_id.0,
        c.claims,
        status,
        next_secs.unwrap_or(0.0),
        done.status_code,
        done.error,
    )
    .fetch_optional(&mut *tx)
    .await?;
    let failing_since = sqlx::query_scalar!(
        r#"
        UPDATE webhook_endpoints SET
            failing_since = CASE WHEN $2 THEN NULL ELSE coalesce(failing_since, now()) END
        WHERE endpoint_id = $1
        RETURNING failing_since
        "#,
        c.endpoint_id.0,
        done.succeeded,
    )
    .fetch_optional(&mut *tx)
    .await?
    .flatten();
    let disable_after =
        chrono::Duration::from_std(done.disable_after).unwrap_or(chrono::Duration::MAX);
    let reason = if done.gone {
        Some("the endpoint answered 410 Gone".to_string())
    } else {
        failing_since
            .filter(|since| Utc::now() - *since >= disable_after)
            .map(|since| format!("every attempt failed since {}", since.to_rfc3339()))
    };
    let disabled = match reason {
        Some(reason) => disable(&mut tx, c.tenant_id, c.endpoint_id, &reason, done.actor)
            .await?
            .then_some(reason),
        None => None,
    };
    tx.commit().await?;
    Ok(Recorded {
        status: moved,
        disabled,
    })
}

/// Disables the endpoint (if still enabled): its pending deliveries fail, an
/// `endpoint.disabled` message is recorded (and fanned out to the tenant's other endpoints
/// that take it), and an audit record written. `false`: it was already disabled.
async fn disable(
    tx: &mut sqlx::PgConnection,
    tenant: TenantId,
    endpoint: EndpointId,
    reason: &str,
    actor: &str,
) -> Result<bool, sqlx::Error> {
    let url = sqlx::query_scalar!(
        r#"
        UPDATE webhook_endpoints SET enabled = false, disabled_reason = $2, disabled_at = now(),
                                     updated_at = now()
        WHERE endpoint_id = $1 AND enabled
        RETURNING url
        "#,
        endpoint.0,
        reason,
    )
    .fetch_optional(&mut *tx)
    .await?;
    let Some(url) = url else { return Ok(false) };
    sqlx::query!(
        r#"
        UPDATE webhook_deliveries SET status = 'failed', last_error = 'endpoint disabled',
                                      updated_at = now()
        WHERE endpoint_id = $1 AND status = 'pending'
        "#,
        endpoint.0,
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query!(
        r#"
        INSERT INTO webhook_messages (message_id, tenant_id, event_type, payload)
        VALUES ($1, $2, 'endpoint.disabled', gatehouse_webhook_payload('endpoint.disabled', now(),
                jsonb_build_object('id', $3::text, 'url', $4::text, 'enabled', false,
                                   'disabled_reason', $5::text,
                                   'disabled_at', gatehouse_webhook_time(now()))))
        "#,
        MessageId::new().0,
        tenant.0,
        endpoint.to_string(),
        url,
        reason,
    )
    .execute(&mut *tx)
    .await?;
    audit::insert(
        tx,
        audit::Record {
            details: serde_json::json!({ "endpoint_id": endpoint, "reason": reason }),
            ..audit::Record::new(Some(tenant), actor, Action::WebhookEndpointDisabled)
        },
    )
    .await?;
    Ok(true)
}

/// Deliveries waiting for a retry, and disabled endpoints, over all tenants (the gauges).
pub async fn backlog(pool: &PgPool) -> Result<(i64, i64), sqlx::Error> {
    let mut tx = db::begin(pool, Scope::Platform).await?;
    let row = sqlx::query!(
        r#"
        SELECT (SELECT count(*) FROM webhook_deliveries
                WHERE status = 'pending' AND attempts > 0) AS "retrying!",
               (SELECT count(*) FROM webhook_endpoints WHERE NOT enabled) AS "disabled!"
        "#
    )
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok((row.retrying, row.disabled))
}
