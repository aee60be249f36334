//! The audit trail's one writer: every action name in one enum, and one `INSERT` that the
//! api and the worker both call (the worker's per-chunk record is written by the lifecycle
//! statement in `job::store`, with the same names).

use std::net::IpAddr;

use sqlx::PgConnection;

use crate::types::{JobId, TenantId};

/// Every action an audit record can name. `docs/ARCHITECTURE.md` lists them for people.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    TenantCreated,
    TenantChanged,
    KeyCreated,
    KeyRotated,
    KeyRevoked,
    KeyChanged,
    UserCreated,
    UserRoleChanged,
    UserDisabled,
    UserEnabled,
    UserDeleted,
    UserPasswordChanged,
    LoginSucceeded,
    LoginFailed,
    JobCreated,
    JobChunkProcessed,
    JobShared,
    JobUnshared,
    JobCancelled,
    JobRetried,
    RetentionPurged,
    ModerationPolicyChanged,
    WebhookEndpointCreated,
    WebhookEndpointChanged,
    WebhookEndpointDeleted,
    WebhookEndpointDisabled,
    WebhookEndpointRecovered,
    WebhookSecretRead,
    WebhookSecretRotated,
    WebhookMessageRetried,
}

impl Action {
    pub const ALL: [Action; 30] = [
        Action::TenantCreated,
        Action::TenantChanged,
        Action::KeyCreated,
        Action::KeyRotated,
        Action::KeyRevoked,
        Action::KeyChanged,
        Action::UserCreated,
        Action::UserRoleChanged,
        Action::UserDisabled,
        Action::UserEnabled,
        Action::UserDeleted,
        Action::UserPasswordChanged,
        Action::LoginSucceeded,
        Action::LoginFailed,
        Action::JobCreated,
        Action::JobChunkProcessed,
        Action::JobShared,
        Action::JobUnshared,
        Action::JobCancelled,
        Action::JobRetried,
        Action::RetentionPurged,
        Action::ModerationPolicyChanged,
        Action::WebhookEndpointCreated,
        Action::WebhookEndpointChanged,
        Action::WebhookEndpointDeleted,
        Action::WebhookEndpointDisabled,
        Action::WebhookEndpointRecovered,
        Action::WebhookSecretRead,
        Action::WebhookSecretRotated,
        Action::WebhookMessageRetried,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Action::TenantCreated => "tenant.created",
            Action::TenantChanged => "tenant.changed",
            Action::KeyCreated => "key.created",
            Action::KeyRotated => "key.rotated",
            Action::KeyRevoked => "key.revoked",
            Action::KeyChanged => "key.changed",
            Action::UserCreated => "user.created",
            Action::UserRoleChanged => "user.role_changed",
            Action::UserDisabled => "user.disabled",
            Action::UserEnabled => "user.enabled",
            Action::UserDeleted => "user.deleted",
            Action::UserPasswordChanged => "user.password_changed",
            Action::LoginSucceeded => "login.succeeded",
            Action::LoginFailed => "login.failed",
            Action::JobCreated => "job.created",
            Action::JobChunkProcessed => "job.chunk.processed",
            Action::JobShared => "job.shared",
            Action::JobUnshared => "job.unshared",
            Action::JobCancelled => "job.cancelled",
            Action::JobRetried => "job.retried",
            Action::RetentionPurged => "retention.purged",
            Action::ModerationPolicyChanged => "moderation_policy.changed",
            Action::WebhookEndpointCreated => "webhook_endpoint.created",
            Action::WebhookEndpointChanged => "webhook_endpoint.changed",
            Action::WebhookEndpointDeleted => "webhook_endpoint.deleted",
            Action::WebhookEndpointDisabled => "webhook_endpoint.disabled",
            Action::WebhookEndpointRecovered => "webhook_endpoint.recovered",
            Action::WebhookSecretRead => "webhook_endpoint.secret_read",
            Action::WebhookSecretRotated => "webhook_endpoint.secret_rotated",
            Action::WebhookMessageRetried => "webhook_message.retried",
        }
    }
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One audit record to write.
#[derive(Debug, Clone)]
pub struct Record<'a> {
    pub tenant: Option<TenantId>,
    pub actor: &'a str,
    pub action: Action,
    /// `success`, `failure`, `throttled`, `dead_lettered`, ...
    pub outcome: &'a str,
    pub client_ip: Option<IpAddr>,
    pub job_id: Option<JobId>,
    pub chunk_index: Option<i32>,
    pub details: serde_json::Value,
}

impl<'a> Record<'a> {
    /// A successful `action` by `actor` with no job attached.
    pub fn new(tenant: Option<TenantId>, actor: &'a str, action: Action) -> Self {
        Self {
            tenant,
            actor,
            action,
            outcome: "success",
            client_ip: None,
            job_id: None,
            chunk_index: None,
            details: serde_json::json!({}),
        }
    }
}

/// Writes `record` in the caller's transaction (its tenant scope must allow the row).
pub async fn insert(conn: &mut PgConnection, record: Record<'_>) -> Result<(), sqlx::Error> {
    sqlx::query!(
        r"
        INSERT INTO audit_events
            (tenant_id, actor, action, outcome, client_ip, job_id, chunk_index, details)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
        ON CONFLICT DO NOTHING
        ",
        record.tenant.map(|t| t.0),
        record.actor,
        record.action.as_str(),
        record.outcome,
        record.client_ip.map(ipnet_from),
        record.job_id.map(|j| j.0),
        record.chunk_index,
        record.details,
    )
    .execute(conn)
    .await?;
    Ok(())
}

fn ipnet_from(ip: IpAddr) -> sqlx::types::ipnet::IpNet {
    sqlx::types::ipnet::IpNet::from(ip)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn action_names_are_unique_and_dotted() {
        let mut names: Vec<&str> = Action::ALL.iter().map(|a| a.as_str()).collect();
        assert!(names.iter().all(|n| n.contains('.')));
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Action::ALL.len());
    }
}
