//! The audit trail's one writer: every action name in one enum, and one `INSERT` that the
//! api and the worker both call (the worker's per-chunk record is written by the lifecycle
//! statement in `job::store`, with the same names). The database chains every record into
//! its tenant's hash chain as it is inserted (migration `20261203000020_audit_trail.sql`).

pub mod context;

use std::net::IpAddr;

use sqlx::PgConnection;

pub use self::context::{ActorKind, Context, Target};
use crate::types::{JobId, TenantId};

/// Every action an audit record can name. `docs/AUDIT.md` lists them for people (a test
/// checks the table against [`Action::ALL`]).
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
    TokenIssued,
    FileUploaded,
    FileDeleted,
    FileContentRead,
    JobResultsRead,
    JobErrorsRead,
    UserChanged,
    WebhookEndpointTested,
    AuditExported,
    AuditPurged,
    AccessDenied,
    KeyRotationDue,
}

impl Action {
    pub const ALL: [Action; 42] = [
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
        Action::TokenIssued,
        Action::FileUploaded,
        Action::FileDeleted,
        Action::FileContentRead,
        Action::JobResultsRead,
        Action::JobErrorsRead,
        Action::UserChanged,
        Action::WebhookEndpointTested,
        Action::AuditExported,
        Action::AuditPurged,
        Action::AccessDenied,
        Action::KeyRotationDue,
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
            Action::TokenIssued => "token.issued",
            Action::FileUploaded => "file.uploaded",
            Action::FileDeleted => "file.deleted",
            Action::FileContentRead => "file.content_read",
            Action::JobResultsRead => "job.results_read",
            Action::JobErrorsRead => "job.errors_read",
            Action::UserChanged => "user.changed",
            Action::WebhookEndpointTested => "webhook_endpoint.tested",
            Action::AuditExported => "audit.exported",
            Action::AuditPurged => "audit.purged",
            Action::AccessDenied => "access.denied",
            Action::KeyRotationDue => "key.rotation_due",
        }
    }
}

impl std::str::FromStr for Action {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Action::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| format!("unknown audit action `{s}`"))
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
    /// `success`, `denied`, `error`; identity events also `failure` and `throttled`.
    pub outcome: &'a str,
    /// The HTTP status of a request's record (denied and error outcomes).
    pub status: Option<u16>,
    pub client_ip: Option<IpAddr>,
    pub job_id: Option<JobId>,
    pub chunk_index: Option<i32>,
    /// What the record is about (default: the job, else the request route's `{id}`).
    pub target: Option<Target>,
    /// Small facts only: never a secret, a password or a text body.
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
            status: None,
            client_ip: None,
            job_id: None,
            chunk_index: None,
            target: None,
            details: serde_json::json!({}),
        }
    }
}

/// Writes `record` in the caller's transaction (its tenant scope must allow the row). Inside a
/// request's [`context::scope`], the request's id, client IP, user agent, actor kind and
/// target fill what the record leaves open.
pub async fn insert(conn: &mut PgConnection, record: Record<'_>) -> Result<(), sqlx::Error> {
    let ctx = context::current().unwrap_or_default();
    let actor_kind = match (&ctx.actor, ctx.actor_kind) {
        (Some(actor), Some(kind)) if actor == record.actor => kind,
        _ => ActorKind::of_actor(record.actor),
    };
    let target = record
        .target
        .clone()
        .or_else(|| {
            record.job_id.map(|j| Target {
                kind: "job",
                id: j.to_string(),
            })
        })
        .or_else(|| ctx.target.clone());
    sqlx::query!(
        r"
        INSERT INTO audit_events
            (tenant_id, actor, actor_kind, action, outcome, status, client_ip, user_agent,
             request_id, target_type, target_id, job_id, chunk_index, details)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
        ON CONFLICT DO NOTHING
        ",
        record.tenant.map(|t| t.0),
        record.actor,
        actor_kind.as_str(),
        record.action.as_str(),
        record.outcome,
        record.status.map(|s| s as i16),
        record.client_ip.or(ctx.client_ip).map(ipnet_from),
        ctx.user_agent.as_deref(),
        ctx.request_id.as_deref(),
        target.as_ref().map(|t| t.kind),
        target.as_ref().map(|t| t.id.as_str()),
        record.job_id.map(|j| j.0),
        record.chunk_index,
        record.details,
    )
    .execute(conn)
    .await?;
    let failure = record.outcome != "success";
    context::update(|c| {
        c.recorded = true;
        c.recorded_failure |= failure;
    });
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
        for a in Action::ALL {
            assert_eq!(a.as_str().parse::<Action>(), Ok(a));
        }
    }

    /// `docs/AUDIT.md`'s action table lists exactly [`Action::ALL`].
    #[test]
    fn the_docs_table_lists_every_action() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/AUDIT.md");
        let doc = std::fs::read_to_string(path).expect("docs/AUDIT.md");
        let section = doc
            .split("## Actions")
            .nth(1)
            .expect("an `## Actions` section")
            .split("\n## ")
            .next()
            .unwrap_or_default();
        let mut documented: Vec<&str> = section
            .lines()
            .filter_map(|l| l.strip_prefix("| `"))
            .filter_map(|l| l.split('`').next())
            .collect();
        documented.sort_unstable();
        let mut actual: Vec<&str> = Action::ALL.iter().map(|a| a.as_str()).collect();
        actual.sort_unstable();
        assert_eq!(
            documented, actual,
            "docs/AUDIT.md `## Actions` vs Action::ALL"
        );
    }
}
