//! Key hygiene: keys whose secret is older than `GATEHOUSE_KEY_ROTATION_REMINDER_DAYS` are
//! `rotation_due` (in `GET /v1/keys`, counted in `gatehouse_api_keys_rotation_due`), and each
//! gets one `key.rotation_due` webhook event and audit record (`api_keys.rotation_reminded_at`;
//! a rotation starts the clock again).

use chrono::{DateTime, Duration, Utc};
use gatehouse_common::{
    audit::{self, Action},
    db::{self, Scope},
    types::{KeyId, TenantId},
    webhook::{self, EventType},
};
use sqlx::PgPool;

use super::keys::ApiKey;

/// Whether `key` is due for rotation at `now`.
pub fn due(key: &ApiKey, now: DateTime<Utc>, days: i64) -> bool {
    key.revoked_at.is_none()
        && key.expires_at.is_none_or(|e| e > now)
        && key.rotated_at.unwrap_or(key.created_at) <= now - Duration::days(days)
}

/// One round: reminds every due key not yet reminded; returns (keys due, reminders sent).
pub async fn remind(
    pool: &PgPool,
    now: DateTime<Utc>,
    days: i64,
) -> Result<(i64, u64), sqlx::Error> {
    let mut tx = db::begin(pool, Scope::Platform).await?;
    let cutoff = now - Duration::days(days);
    let reminded = sqlx::query!(
        r#"
        UPDATE api_keys SET rotation_reminded_at = $1
        WHERE revoked_at IS NULL AND rotation_reminded_at IS NULL
          AND (expires_at IS NULL OR expires_at > $1)
          AND coalesce(rotated_at, created_at) <= $2
        RETURNING key_id AS "key_id: KeyId", tenant_id AS "tenant_id: TenantId", name,
                  created_at, rotated_at
        "#,
        now,
        cutoff,
    )
    .fetch_all(&mut *tx)
    .await?;
    for key in &reminded {
        let data = serde_json::json!({
            "id": key.key_id,
            "name": key.name,
            "created_at": key.created_at,
            "rotated_at": key.rotated_at,
            "rotation_due": true,
            "reminder_days": days,
        });
        webhook::record_tenant_event(&mut tx, key.tenant_id, EventType::KeyRotationDue, data)
            .await?;
        audit::insert(
            &mut tx,
            audit::Record {
                target: Some(audit::Target {
                    kind: "key",
                    id: key.key_id.to_string(),
                }),
                details: serde_json::json!({ "reminder_days": days }),
                ..audit::Record::new(
                    Some(key.tenant_id),
                    "system:key_hygiene",
                    Action::KeyRotationDue,
                )
            },
        )
        .await?;
    }
    let due = sqlx::query_scalar!(
        r#"
        SELECT count(*) AS "n!" FROM api_keys
        WHERE revoked_at IS NULL AND (expires_at IS NULL OR expires_at > $1)
          AND coalesce(rotated_at, created_at) <= $2
        "#,
        now,
        cutoff,
    )
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    metrics::gauge!("gatehouse_api_keys_rotation_due").set(due as f64);
    Ok((due, reminded.len() as u64))
}
