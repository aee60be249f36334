//! Which requests the audit layer records, and under which action: every state-changing
//! route and every security-relevant read. A test checks that every `POST`/`PUT`/`PATCH`/
//! `DELETE` route of `policy::ROUTES` (and the public login) is here.

use gatehouse_common::audit::{Action, Target};

/// `(method, route pattern, action, target type of the route's `{id}`)`.
pub const AUDITED: &[(&str, &str, Action, Option<&str>)] = &[
    ("POST", "/v1/auth/login", Action::LoginFailed, None),
    ("POST", "/v1/auth/token", Action::TokenIssued, None),
    ("POST", "/v1/jobs", Action::JobCreated, None),
    ("POST", "/v1/translations", Action::JobCreated, None),
    ("POST", "/v1/moderations", Action::JobCreated, None),
    (
        "POST",
        "/v1/jobs/{id}/share",
        Action::JobShared,
        Some("job"),
    ),
    (
        "POST",
        "/v1/jobs/{id}/cancel",
        Action::JobCancelled,
        Some("job"),
    ),
    (
        "POST",
        "/v1/jobs/{id}/retry",
        Action::JobRetried,
        Some("job"),
    ),
    (
        "GET",
        "/v1/jobs/{id}/results",
        Action::JobResultsRead,
        Some("job"),
    ),
    (
        "GET",
        "/v1/jobs/{id}/errors",
        Action::JobErrorsRead,
        Some("job"),
    ),
    ("POST", "/v1/files", Action::FileUploaded, None),
    (
        "DELETE",
        "/v1/files/{id}",
        Action::FileDeleted,
        Some("file"),
    ),
    (
        "GET",
        "/v1/files/{id}/content",
        Action::FileContentRead,
        Some("file"),
    ),
    ("POST", "/v1/batches", Action::JobCreated, None),
    (
        "POST",
        "/v1/batches/{id}/cancel",
        Action::JobCancelled,
        Some("batch"),
    ),
    ("POST", "/v1/keys", Action::KeyCreated, None),
    (
        "POST",
        "/v1/keys/{id}/rotate",
        Action::KeyRotated,
        Some("key"),
    ),
    ("DELETE", "/v1/keys/{id}", Action::KeyRevoked, Some("key")),
    ("PATCH", "/v1/keys/{id}", Action::KeyChanged, Some("key")),
    ("POST", "/v1/users", Action::UserCreated, None),
    ("PATCH", "/v1/users/{id}", Action::UserChanged, Some("user")),
    (
        "DELETE",
        "/v1/users/{id}",
        Action::UserDeleted,
        Some("user"),
    ),
    ("GET", "/v1/audit/export", Action::AuditExported, None),
    (
        "PUT",
        "/v1/moderation/policy",
        Action::ModerationPolicyChanged,
        None,
    ),
    (
        "PATCH",
        "/v1/moderation/policy",
        Action::ModerationPolicyChanged,
        None,
    ),
    ("PATCH", "/v1/tenant", Action::TenantChanged, None),
    ("POST", "/v1/tenants", Action::TenantCreated, None),
    (
        "PATCH",
        "/v1/tenants/{id}",
        Action::TenantChanged,
        Some("tenant"),
    ),
    (
        "POST",
        "/v1/webhooks/endpoints",
        Action::WebhookEndpointCreated,
        None,
    ),
    (
        "PATCH",
        "/v1/webhooks/endpoints/{id}",
        Action::WebhookEndpointChanged,
        Some("webhook_endpoint"),
    ),
    (
        "DELETE",
        "/v1/webhooks/endpoints/{id}",
        Action::WebhookEndpointDeleted,
        Some("webhook_endpoint"),
    ),
    (
        "GET",
        "/v1/webhooks/endpoints/{id}/secret",
        Action::WebhookSecretRead,
        Some("webhook_endpoint"),
    ),
    (
        "POST",
        "/v1/webhooks/endpoints/{id}/secret/rotate",
        Action::WebhookSecretRotated,
        Some("webhook_endpoint"),
    ),
    (
        "POST",
        "/v1/webhooks/endpoints/{id}/recover",
        Action::WebhookEndpointRecovered,
        Some("webhook_endpoint"),
    ),
    (
        "POST",
        "/v1/webhooks/endpoints/{id}/test",
        Action::WebhookEndpointTested,
        Some("webhook_endpoint"),
    ),
    (
        "POST",
        "/v1/webhooks/messages/{id}/retry",
        Action::WebhookMessageRetried,
        Some("webhook_message"),
    ),
];

/// The audited entry of a request, if any.
pub fn lookup(method: &str, route: &str) -> Option<(Action, Option<&'static str>)> {
    AUDITED
        .iter()
        .find(|(m, r, _, _)| *m == method && *r == route)
        .map(|(_, _, action, target)| (*action, *target))
}

/// What a route's `{…}` segment names, for routes that are not audited on success (their
/// denied attempts still are).
fn target_kind_of(route: &str) -> Option<&'static str> {
    const PREFIXES: &[(&str, &str)] = &[
        ("/v1/jobs/", "job"),
        ("/v1/files/", "file"),
        ("/v1/batches/", "batch"),
        ("/v1/keys/", "key"),
        ("/v1/users/", "user"),
        ("/v1/tenants/", "tenant"),
        ("/v1/webhooks/endpoints/", "webhook_endpoint"),
        ("/v1/webhooks/messages/", "webhook_message"),
        (
            "/v1/moderation/policy/versions/",
            "moderation_policy_version",
        ),
    ];
    PREFIXES
        .iter()
        .find(|(p, _)| route.starts_with(p))
        .map(|(_, kind)| *kind)
}

/// The target a request names: its route's `{…}` segment, as sent (bounded, printable).
pub fn target(route: &str, path: &str, kind: Option<&'static str>) -> Option<Target> {
    let kind = kind.or_else(|| target_kind_of(route))?;
    let position = route.split('/').position(|s| s.starts_with('{'))?;
    let raw = path.split('/').nth(position)?;
    let id: String = raw
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(80)
        .collect();
    (!id.is_empty()).then_some(Target { kind, id })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_state_changing_route_is_audited() {
        for (method, route, _) in crate::policy::ROUTES {
            if *method != "GET" {
                assert!(
                    lookup(method, route).is_some(),
                    "{method} {route} is not in audit::routes::AUDITED"
                );
            }
        }
        for (method, route, _, _) in AUDITED {
            assert!(
                *route == "/v1/auth/login"
                    || crate::policy::ROUTES
                        .iter()
                        .any(|(m, r, _)| m == method && r == route),
                "{method} {route} is audited but not a route"
            );
        }
    }

    #[test]
    fn targets_come_from_the_routes_id_segment() {
        let t = target(
            "/v1/keys/{id}/rotate",
            "/v1/keys/key_ab/rotate",
            Some("key"),
        );
        assert_eq!(
            t.map(|t| (t.kind, t.id)),
            Some(("key", "key_ab".to_string()))
        );
        let t = target("/v1/jobs/{id}", "/v1/jobs/job_1", None);
        assert_eq!(t.map(|t| t.kind), Some("job"));
        assert!(target("/v1/jobs", "/v1/jobs", None).is_none());
    }
}
