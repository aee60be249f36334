//! Authorization in one place: every route names the rule it needs, and every rule is here.
//! `docs/AUTHORIZATION.md` is the same table for people; the `authorization` integration test
//! checks every cell of it.

use gatehouse_common::types::Role;

use crate::{
    auth::{Principal, Via},
    error::ApiError,
    store::jobs::Visibility,
};

/// Who may use a route: the roles, and whether only an API key itself (not a token) will do.
#[derive(Debug)]
pub struct Rule {
    pub name: &'static str,
    pub roles: &'static [Role],
    pub api_key_only: bool,
}

use Role::{Admin, Guest, Reviewer, Service, Superadmin};

/// Submit jobs; the job kind's scope is needed too.
pub const JOBS_SUBMIT: Rule = Rule {
    name: "jobs.submit",
    roles: &[Admin, Reviewer, Service],
    api_key_only: false,
};
/// Read jobs and results: admins any of the tenant's, reviewers and keys their own and the
/// shared ones, guests the shared ones.
pub const JOBS_READ: Rule = Rule {
    name: "jobs.read",
    roles: &[Admin, Reviewer, Guest, Service],
    api_key_only: false,
};
/// Share a job with the tenant: its owner, or an admin.
pub const JOBS_SHARE: Rule = Rule {
    name: "jobs.share",
    roles: &[Admin, Reviewer, Service],
    api_key_only: false,
};
/// Example inputs for the console.
pub const EXAMPLES: Rule = Rule {
    name: "examples",
    roles: &[Admin, Reviewer, Guest, Service],
    api_key_only: false,
};
/// Exchange an API key for a short-lived token.
pub const TOKEN_EXCHANGE: Rule = Rule {
    name: "auth.token",
    // An admin key is a key too (admin users log in instead: `api_key_only`).
    roles: &[Service, Admin],
    api_key_only: true,
};
/// Who am I.
pub const ME: Rule = Rule {
    name: "me",
    roles: &[Superadmin, Admin, Reviewer, Guest, Service],
    api_key_only: false,
};
/// The tenant's API keys.
pub const KEYS_MANAGE: Rule = Rule {
    name: "keys.manage",
    roles: &[Admin],
    api_key_only: false,
};
/// The tenant's users.
pub const USERS_MANAGE: Rule = Rule {
    name: "users.manage",
    roles: &[Admin],
    api_key_only: false,
};
/// The audit trail (records, export, checkpoints, verification): tenant admins their
/// tenant's, operators any tenant's (`?tenant=`). The export also needs step-up.
pub const AUDIT_READ: Rule = Rule {
    name: "audit.read",
    roles: &[Superadmin, Admin],
    api_key_only: false,
};
/// The tenant's own settings (name, IP allowlist).
pub const TENANT_SETTINGS: Rule = Rule {
    name: "tenant.settings",
    roles: &[Admin],
    api_key_only: false,
};
/// Read the tenant's moderation policy and its history.
pub const MODERATION_POLICY_READ: Rule = Rule {
    name: "moderation_policy.read",
    roles: &[Admin, Reviewer, Service],
    api_key_only: false,
};
/// Change the tenant's moderation policy.
pub const MODERATION_POLICY_MANAGE: Rule = Rule {
    name: "moderation_policy.manage",
    roles: &[Admin],
    api_key_only: false,
};
/// Usage and quota state: tenant admins their tenant's, operators any tenant's.
pub const USAGE_READ: Rule = Rule {
    name: "usage.read",
    roles: &[Superadmin, Admin],
    api_key_only: false,
};
/// Upload and delete the tenant's files (inputs for jobs and batches).
pub const FILES_WRITE: Rule = Rule {
    name: "files.write",
    roles: &[Admin, Reviewer, Service],
    api_key_only: false,
};
/// List and download the tenant's files (uploads, batch output and error files).
pub const FILES_READ: Rule = Rule {
    name: "files.read",
    roles: &[Admin, Reviewer, Service],
    api_key_only: false,
};
/// The tenant's webhook endpoints, messages and attempts: admins, and keys (or their tokens)
/// holding the `webhooks` scope ([`Principal::require_webhooks`]).
pub const WEBHOOKS_MANAGE: Rule = Rule {
    name: "webhooks.manage",
    roles: &[Admin, Service],
    api_key_only: false,
};
/// Reading an endpoint's signing secret back (creation and rotation return it once to their
/// caller).
pub const WEBHOOK_SECRET_READ: Rule = Rule {
    name: "webhooks.secret_read",
    roles: &[Admin],
    api_key_only: false,
};
/// Tenants (platform operators).
pub const TENANTS_MANAGE: Rule = Rule {
    name: "tenants.manage",
    roles: &[Superadmin],
    api_key_only: false,
};

/// The public routes: no credential needed (everything else is in [`ROUTES`]).
pub const PUBLIC_ROUTES: &[(&str, &str)] = &[
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("GET", "/.well-known/jwks.json"),
    ("POST", "/v1/auth/login"),
    ("GET", "/openapi.json"),
    ("GET", "/docs"),
    ("GET", "/docs/{file}"),
];

/// Every protected route and its rule (public routes: [`PUBLIC_ROUTES`]).
pub const ROUTES: &[(&str, &str, &Rule)] = &[
    ("POST", "/v1/jobs", &JOBS_SUBMIT),
    ("POST", "/v1/translations", &JOBS_SUBMIT),
    ("POST", "/v1/moderations", &JOBS_SUBMIT),
    ("GET", "/v1/jobs", &JOBS_READ),
    ("GET", "/v1/jobs/{id}", &JOBS_READ),
    ("GET", "/v1/jobs/{id}/results", &JOBS_READ),
    ("POST", "/v1/jobs/{id}/share", &JOBS_SHARE),
    ("GET", "/v1/jobs/{id}/errors", &JOBS_READ),
    ("POST", "/v1/jobs/{id}/cancel", &JOBS_SUBMIT),
    ("POST", "/v1/jobs/{id}/retry", &JOBS_SUBMIT),
    ("POST", "/v1/files", &FILES_WRITE),
    ("GET", "/v1/files", &FILES_READ),
    ("GET", "/v1/files/{id}", &FILES_READ),
    ("GET", "/v1/files/{id}/content", &FILES_READ),
    ("DELETE", "/v1/files/{id}", &FILES_WRITE),
    ("POST", "/v1/batches", &JOBS_SUBMIT),
    ("GET", "/v1/batches", &JOBS_READ),
    ("GET", "/v1/batches/{id}", &JOBS_READ),
    ("POST", "/v1/batches/{id}/cancel", &JOBS_SUBMIT),
    ("GET", "/v1/examples", &EXAMPLES),
    ("POST", "/v1/auth/token", &TOKEN_EXCHANGE),
    ("GET", "/v1/me", &ME),
    ("POST", "/v1/keys", &KEYS_MANAGE),
    ("GET", "/v1/keys", &KEYS_MANAGE),
    ("POST", "/v1/keys/{id}/rotate", &KEYS_MANAGE),
    ("DELETE", "/v1/keys/{id}", &KEYS_MANAGE),
    ("PATCH", "/v1/keys/{id}", &KEYS_MANAGE),
    ("POST", "/v1/users", &USERS_MANAGE),
    ("GET", "/v1/users", &USERS_MANAGE),
    ("PATCH", "/v1/users/{id}", &USERS_MANAGE),
    ("DELETE", "/v1/users/{id}", &USERS_MANAGE),
    ("GET", "/v1/audit", &AUDIT_READ),
    ("GET", "/v1/audit/export", &AUDIT_READ),
    ("GET", "/v1/audit/checkpoints", &AUDIT_READ),
    ("GET", "/v1/audit/verify", &AUDIT_READ),
    ("GET", "/v1/moderation/policy", &MODERATION_POLICY_READ),
    (
        "GET",
        "/v1/moderation/policy/versions",
        &MODERATION_POLICY_READ,
    ),
    (
        "GET",
        "/v1/moderation/policy/versions/{version}",
        &MODERATION_POLICY_READ,
    ),
    ("PUT", "/v1/moderation/policy", &MODERATION_POLICY_MANAGE),
    ("PATCH", "/v1/moderation/policy", &MODERATION_POLICY_MANAGE),
    ("GET", "/v1/tenant", &TENANT_SETTINGS),
    ("PATCH", "/v1/tenant", &TENANT_SETTINGS),
    ("POST", "/v1/tenants", &TENANTS_MANAGE),
    ("GET", "/v1/tenants", &TENANTS_MANAGE),
    ("PATCH", "/v1/tenants/{id}", &TENANTS_MANAGE),
    ("GET", "/v1/usage", &USAGE_READ),
    ("POST", "/v1/webhooks/endpoints", &WEBHOOKS_MANAGE),
    ("GET", "/v1/webhooks/endpoints", &WEBHOOKS_MANAGE),
    ("GET", "/v1/webhooks/endpoints/{id}", &WEBHOOKS_MANAGE),
    ("PATCH", "/v1/webhooks/endpoints/{id}", &WEBHOOKS_MANAGE),
    ("DELETE", "/v1/webhooks/endpoints/{id}", &WEBHOOKS_MANAGE),
    (
        "GET",
        "/v1/webhooks/endpoints/{id}/secret",
        &WEBHOOK_SECRET_READ,
    ),
    (
        "POST",
        "/v1/webhooks/endpoints/{id}/secret/rotate",
        &WEBHOOKS_MANAGE,
    ),
    (
        "POST",
        "/v1/webhooks/endpoints/{id}/recover",
        &WEBHOOKS_MANAGE,
    ),
    ("POST", "/v1/webhooks/endpoints/{id}/test", &WEBHOOKS_MANAGE),
    ("GET", "/v1/webhooks/messages", &WEBHOOKS_MANAGE),
    ("GET", "/v1/webhooks/messages/{id}", &WEBHOOKS_MANAGE),
    (
        "GET",
        "/v1/webhooks/messages/{id}/attempts",
        &WEBHOOKS_MANAGE,
    ),
    ("POST", "/v1/webhooks/messages/{id}/retry", &WEBHOOKS_MANAGE),
];

impl Principal {
    /// 403 unless the rule admits this principal.
    pub fn require(&self, rule: &Rule) -> Result<(), ApiError> {
        if !rule.roles.contains(&self.role) || (rule.api_key_only && self.via != Via::ApiKey) {
            metrics::counter!("gatehouse_api_forbidden_total", "rule" => rule.name).increment(1);
            return Err(ApiError::Forbidden {
                detail: format!("`{}` is not allowed for this credential", rule.name),
            });
        }
        Ok(())
    }

    /// [`WEBHOOKS_MANAGE`], plus the `webhooks` scope for keys and their tokens.
    pub fn require_webhooks(&self) -> Result<(), ApiError> {
        self.require(&WEBHOOKS_MANAGE)?;
        if self.role == Service {
            self.require_scope("webhooks")?;
        }
        Ok(())
    }

    /// 403 unless the principal holds `scope`.
    pub fn require_scope(&self, scope: &str) -> Result<(), ApiError> {
        if self.has_scope(scope) {
            Ok(())
        } else {
            Err(ApiError::Forbidden {
                detail: format!("this credential lacks the `{scope}` scope"),
            })
        }
    }

    /// 403 unless the principal holds every scope a `kind` job needs (a chained
    /// `moderate_translate` job needs both `moderate` and `translate`).
    pub fn require_kind(&self, kind: gatehouse_common::types::JobKind) -> Result<(), ApiError> {
        kind.scopes()
            .iter()
            .try_for_each(|scope| self.require_scope(scope))
    }

    /// Which of its tenant's jobs this principal may read; `actor` is [`Principal::actor`].
    pub fn job_visibility<'a>(&self, actor: &'a str) -> Visibility<'a> {
        match self.role {
            Admin => Visibility::All,
            Guest => Visibility::Shared,
            _ => Visibility::OwnOrShared(actor),
        }
    }

    /// Which jobs (and files, batches) this principal may manage — share, cancel, retry,
    /// delete: admins any of the tenant's, others their own (a job shared with them is
    /// readable, not theirs to change).
    pub fn job_management<'a>(&self, actor: &'a str) -> Visibility<'a> {
        match self.role {
            Admin => Visibility::All,
            _ => Visibility::Own(actor),
        }
    }
}
