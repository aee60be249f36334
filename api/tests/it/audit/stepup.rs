//! Step-up: each sensitive operation needs a login within five minutes or the password in
//! `Gatehouse-Confirm-Password`; otherwise `401 reauthentication_required`.

use axum::http::{Method, StatusCode};
use gatehouse_common::types::{Role, TenantId};
use serde_json::{Value, json};

use super::call_with;
use crate::support::{Harness, PASSWORD, Reply, new_key, new_user};

const HEADER: &str = "gatehouse-confirm-password";

fn key_id(key: &str) -> String {
    let hex = key
        .strip_prefix("ghk_")
        .and_then(|rest| rest.split('_').next())
        .expect("key shape");
    format!("key_{hex}")
}

async fn endpoint(h: &Harness, tenant: TenantId) -> String {
    use gatehouse_api::store::webhook_endpoints as store;
    let (endpoint, _) = store::create(
        &h.state.pool,
        store::NewEndpoint {
            tenant,
            url: "https://hooks.example.com/in",
            description: "",
            event_types: &[],
            enabled: true,
            headers: json!({}),
            rate_limit_per_sec: None,
            max_endpoints: 1000,
        },
        &gatehouse_common::webhook::secret::SecretBox::new(None),
        store::Actor {
            name: "test",
            client_ip: None,
        },
    )
    .await
    .expect("endpoint");
    endpoint.endpoint_id.to_string()
}

/// A fresh target for attempt `n` of `op`.
async fn target(h: &Harness, acme: TenantId, op: &Op, n: usize) -> String {
    match op.name {
        "delete user" | "change role" => {
            let id = new_user(&h.state, Some(acme), &format!("u{n}"), Role::Reviewer).await;
            format!("/v1/users/{id}")
        }
        "revoke key" => format!(
            "/v1/keys/{}",
            key_id(&new_key(&h.state, acme, &["moderate"]).await)
        ),
        "disable tenant" => {
            let (t, _) = crate::support::new_tenant(&h.state, &format!("t{n}")).await;
            format!("/v1/tenants/{t}")
        }
        "export audit" => "/v1/audit/export?format=ndjson".to_string(),
        _ => format!("/v1/webhooks/endpoints/{}/secret", endpoint(h, acme).await),
    }
}

/// One sensitive operation: who does it, and a fresh request for it each time.
struct Op {
    name: &'static str,
    operator: bool,
    method: Method,
    body: Option<Value>,
}

fn assert_reauth(reply: &Reply, what: &str) {
    assert_eq!(
        reply.status,
        StatusCode::UNAUTHORIZED,
        "{what}: {}",
        String::from_utf8_lossy(&reply.body)
    );
    assert_eq!(reply.json()["code"], "reauthentication_required", "{what}");
    let challenge = reply
        .headers
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    assert!(
        challenge.contains("insufficient_user_authentication"),
        "{what}: {challenge}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_sensitive_operation_needs_a_fresh_login_or_the_password() {
    let h = Harness::new(&[], false).await;
    let acme = h.tenant_id().await;
    new_user(&h.state, Some(acme), "alice", Role::Admin).await;
    new_user(&h.state, None, "root", Role::Superadmin).await;
    let ops = [
        Op {
            name: "delete user",
            operator: false,
            method: Method::DELETE,
            body: None,
        },
        Op {
            name: "change role",
            operator: false,
            method: Method::PATCH,
            body: Some(json!({"role": "guest"})),
        },
        Op {
            name: "revoke key",
            operator: false,
            method: Method::DELETE,
            body: None,
        },
        Op {
            name: "disable tenant",
            operator: true,
            method: Method::PATCH,
            body: Some(json!({"enabled": false})),
        },
        Op {
            name: "export audit",
            operator: false,
            method: Method::GET,
            body: None,
        },
        Op {
            name: "read webhook secret",
            operator: false,
            method: Method::GET,
            body: None,
        },
    ];
    // Fresh logins pass.
    let admin = h.login(Some("acme"), "alice").await;
    let operator = h.login(None, "root").await;
    for (i, op) in ops.iter().enumerate() {
        let bearer = if op.operator { &operator } else { &admin };
        let uri = target(&h, acme, op, i).await;
        let reply = call_with(&h, op.method.clone(), &uri, bearer, &[], op.body.clone()).await;
        assert!(
            reply.status.is_success(),
            "{} fresh: {} {}",
            op.name,
            reply.status,
            String::from_utf8_lossy(&reply.body)
        );
    }

    // Six minutes later the same tokens (still valid) are not fresh enough.
    h.state
        .clock
        .set(chrono::Utc::now() + chrono::Duration::minutes(6));
    for (i, op) in ops.iter().enumerate() {
        let bearer = if op.operator { &operator } else { &admin };
        let uri = target(&h, acme, op, 100 + i).await;
        let stale = call_with(&h, op.method.clone(), &uri, bearer, &[], op.body.clone()).await;
        assert_reauth(&stale, op.name);
        let wrong = call_with(
            &h,
            op.method.clone(),
            &uri,
            bearer,
            &[(HEADER, "not the password")],
            op.body.clone(),
        )
        .await;
        assert_reauth(&wrong, op.name);
        let confirmed = call_with(
            &h,
            op.method.clone(),
            &uri,
            bearer,
            &[(HEADER, PASSWORD)],
            op.body.clone(),
        )
        .await;
        assert!(
            confirmed.status.is_success(),
            "{} with the password: {} {}",
            op.name,
            confirmed.status,
            String::from_utf8_lossy(&confirmed.body)
        );
    }
    // The refusals are in the audit trail (denied, 401), the password never is.
    let refused = h
        .scalar("SELECT count(*) FROM audit_events WHERE outcome = 'denied' AND status = 401 AND actor LIKE 'usr_%'")
        .await;
    assert!(refused >= 12, "{refused} denied step-ups recorded");
    let leaked = h
        .scalar(&format!("SELECT count(*) FROM audit_events WHERE details::text LIKE '%{PASSWORD}%' OR coalesce(user_agent, '') LIKE '%{PASSWORD}%'"))
        .await;
    assert_eq!(leaked, 0);
    // A changed role that is not a role change (enabling) needs no step-up.
    let id = new_user(&h.state, Some(acme), "enable-me", Role::Reviewer).await;
    let reply = call_with(
        &h,
        Method::PATCH,
        &format!("/v1/users/{id}"),
        &admin,
        &[],
        Some(json!({"enabled": true})),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    h.teardown().await;
}
