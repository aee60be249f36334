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

/// `bearer` does `op` (a tenant operation) on a fresh target; returns the reply.
async fn attempt(h: &Harness, acme: TenantId, op: &Op, n: usize, bearer: &str) -> Reply {
    let uri = target(h, acme, op, n).await;
    call_with(h, op.method.clone(), &uri, bearer, &[], op.body.clone()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_keys_act_as_admins_without_step_up_once_the_operator_grants_the_scope() {
    let h = Harness::new(&[], false).await;
    let acme = h.tenant_id().await;
    new_user(&h.state, Some(acme), "alice", Role::Admin).await;
    new_user(&h.state, None, "root", Role::Superadmin).await;
    let admin = h.login(Some("acme"), "alice").await;
    let operator = h.login(None, "root").await;
    let admin_key_body = json!({"name": "ops automation", "scopes": ["admin", "moderate"]});

    // Not granted to the tenant (no tenant grants `admin` unless an operator says so).
    let reply = call_with(
        &h,
        Method::POST,
        "/v1/keys",
        &admin,
        &[],
        Some(admin_key_body.clone()),
    )
    .await;
    assert_eq!(
        reply.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    assert_eq!(reply.json()["code"], "invalid_scope");
    let uri = format!("/v1/tenants/{acme}");
    let grant = |scopes: Value| {
        call_with(
            &h,
            Method::PATCH,
            &uri,
            &operator,
            &[],
            Some(json!({"scopes": scopes})),
        )
    };
    assert_eq!(
        grant(json!(["moderate", "webhooks", "admin"])).await.status,
        StatusCode::OK
    );

    // Minting an admin key is itself a step-up operation.
    h.state
        .clock
        .set(chrono::Utc::now() + chrono::Duration::minutes(6));
    let stale = call_with(
        &h,
        Method::POST,
        "/v1/keys",
        &admin,
        &[],
        Some(admin_key_body.clone()),
    )
    .await;
    assert_reauth(&stale, "grant admin key");
    let created = call_with(
        &h,
        Method::POST,
        "/v1/keys",
        &admin,
        &[(HEADER, PASSWORD)],
        Some(admin_key_body),
    )
    .await;
    assert_eq!(
        created.status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&created.body)
    );
    let admin_key = created.json()["key"].as_str().expect("secret").to_string();
    // An ordinary key of the same tenant (no `admin`) is a service, as before.
    let service_key = new_key(&h.state, acme, &["moderate", "webhooks"]).await;

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
    // Six minutes after any login: the admin key needs no step-up for any of them (nor its
    // exchanged token); the service key is not allowed at all.
    let token = h
        .call(Method::POST, "/v1/auth/token", Some(&admin_key), None)
        .await;
    assert_eq!(
        token.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&token.body)
    );
    let key_token = token.json()["access_token"]
        .as_str()
        .expect("token")
        .to_string();
    for (i, op) in ops.iter().enumerate() {
        for (who, bearer) in [("admin key", &admin_key), ("its token", &key_token)] {
            let reply = attempt(
                &h,
                acme,
                op,
                200 + 10 * i + usize::from(who == "its token"),
                bearer,
            )
            .await;
            assert!(
                reply.status.is_success(),
                "{} by the {who}: {} {}",
                op.name,
                reply.status,
                String::from_utf8_lossy(&reply.body)
            );
        }
        let reply = attempt(&h, acme, op, 300 + i, &service_key).await;
        assert_eq!(
            reply.status,
            StatusCode::FORBIDDEN,
            "{} by a service key",
            op.name
        );
    }
    // An admin key is still a tenant credential: operator routes stay closed.
    let reply = call_with(&h, Method::GET, "/v1/tenants", &admin_key, &[], None).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    // The trail names the key as the actor of those operations.
    let by_key = h
        .scalar("SELECT count(*) FROM audit_events WHERE actor_kind = 'api_key' AND outcome = 'success' AND action IN ('user.deleted', 'user.role_changed', 'key.revoked', 'audit.exported', 'webhook_endpoint.secret_read')")
        .await;
    assert!(by_key >= 10, "{by_key} admin-key operations recorded");

    // Withdrawn from the tenant, the scope stops counting on the next request.
    assert_eq!(
        grant(json!(["moderate", "webhooks"])).await.status,
        StatusCode::OK
    );
    let reply = attempt(&h, acme, &ops[0], 400, &admin_key).await;
    assert_eq!(
        reply.status,
        StatusCode::FORBIDDEN,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    h.teardown().await;
}
