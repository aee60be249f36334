//! The standing sweep (issue 9): every body route × {non-object JSON, NUL in each string
//! field, over-long strings, huge lists, unknown fields}, and every route × {a wrong method,
//! a bad query}. Whatever the answer, it is never a 5xx, and every error is problem+json
//! with a `code`. The route list is `policy::ROUTES`: a route added there without an example
//! body here fails the test.

use std::collections::{BTreeMap, BTreeSet};

use axum::{
    body::Body,
    http::{Method, Request, StatusCode},
};
use gatehouse_api::policy::ROUTES;
use gatehouse_common::types::Role;
use serde_json::{Value, json};

use crate::support::{Harness, PASSWORD, Reply, new_key, new_tenant, new_user};

/// Who calls a route in the sweep.
#[derive(Clone, Copy)]
enum Caller {
    Key,
    Admin,
    Operator,
    Nobody,
}

struct Tokens {
    key: String,
    admin: String,
    operator: String,
}

impl Tokens {
    fn bearer(&self, caller: Caller) -> Option<&str> {
        match caller {
            Caller::Key => Some(&self.key),
            Caller::Admin => Some(&self.admin),
            Caller::Operator => Some(&self.operator),
            Caller::Nobody => None,
        }
    }
}

/// Routes whose bodies are admin settings: an unknown field there must be refused.
const STRICT: &[&str] = &[
    "/v1/keys",
    "/v1/keys/{id}",
    "/v1/users",
    "/v1/users/{id}",
    "/v1/tenant",
    "/v1/tenants",
    "/v1/tenants/{id}",
    "/v1/moderation/policy",
    "/v1/jobs",
    "/v1/jobs/{id}/share",
    "/v1/translations",
    "/v1/auth/login",
    "/v1/webhooks/endpoints",
    "/v1/webhooks/endpoints/{id}",
    "/v1/webhooks/endpoints/{id}/recover",
    "/v1/webhooks/endpoints/{id}/test",
];

/// POST/PUT/PATCH routes that take no body.
/// Routes that take no JSON body (`POST /v1/files` is multipart: `files.rs` covers it).
const BODILESS: &[&str] = &[
    "/v1/auth/token",
    "/v1/keys/{id}/rotate",
    "/v1/jobs/{id}/cancel",
    "/v1/jobs/{id}/retry",
    "/v1/batches/{id}/cancel",
    "/v1/files",
    "/v1/webhooks/endpoints/{id}/secret/rotate",
    "/v1/webhooks/messages/{id}/retry",
];

fn examples() -> Vec<(&'static str, &'static str, Caller, Value)> {
    vec![
        (
            "POST",
            "/v1/jobs",
            Caller::Key,
            json!({"kind": "moderate", "items": [{"custom_id": "a", "text": "hello there"}]}),
        ),
        (
            "POST",
            "/v1/translations",
            Caller::Key,
            json!({"text": "你好", "source_lang": "zh", "target_lang": "en"}),
        ),
        (
            "POST",
            "/v1/moderations",
            Caller::Key,
            json!({"input": ["hello", "world"], "model": "omni-moderation-latest"}),
        ),
        (
            "POST",
            "/v1/batches",
            Caller::Key,
            json!({
                "input_file_id": "file_00000000000000000000000000000000",
                "endpoint": "/v1/moderations",
                "completion_window": "24h",
                "metadata": {"team": "sweep"}
            }),
        ),
        (
            "POST",
            "/v1/jobs/{id}/share",
            Caller::Key,
            json!({"shared": true}),
        ),
        (
            "POST",
            "/v1/keys",
            Caller::Admin,
            json!({"name": "sweep", "scopes": ["moderate"], "expires_at": "2031-01-01T00:00:00Z"}),
        ),
        (
            "PATCH",
            "/v1/keys/{id}",
            Caller::Admin,
            json!({"rate_limits": {"requests_per_minute": 1000, "items_per_minute": null}}),
        ),
        (
            "POST",
            "/v1/users",
            Caller::Admin,
            json!({"username": "sweeper", "password": PASSWORD, "role": "guest"}),
        ),
        (
            "PATCH",
            "/v1/users/{id}",
            Caller::Admin,
            json!({"role": "reviewer", "enabled": true, "password": PASSWORD}),
        ),
        (
            "PUT",
            "/v1/moderation/policy",
            Caller::Admin,
            json!({
                "thresholds": {"violent": {"controversial": 0.4, "unsafe": 0.9}},
                "enabled_categories": ["violent", "pii"],
                "pii_rule_level": "unsafe",
                "blocklist": [{"term": "foo", "category": "jailbreak", "level": "unsafe"}]
            }),
        ),
        (
            "PATCH",
            "/v1/moderation/policy",
            Caller::Admin,
            json!({"blocklist": [{"term": "bar", "category": "pii"}], "enabled_categories": ["pii"]}),
        ),
        (
            "PATCH",
            "/v1/tenant",
            Caller::Admin,
            json!({"name": "Acme", "ip_allowlist": ["0.0.0.0/0", "::/0"]}),
        ),
        (
            "POST",
            "/v1/tenants",
            Caller::Operator,
            json!({"name": "Swept", "slug": "swept", "scopes": ["moderate"], "ip_allowlist": ["0.0.0.0/0"]}),
        ),
        (
            "PATCH",
            "/v1/tenants/{id}",
            Caller::Operator,
            json!({"name": "Target", "scopes": ["moderate"], "ip_allowlist": ["0.0.0.0/0"], "enabled": true}),
        ),
        (
            "POST",
            "/v1/webhooks/endpoints",
            Caller::Admin,
            json!({"url": "https://hooks.example.com/in", "description": "sweep",
                   "event_types": ["job.completed"], "headers": {"X-Sweep": "1"},
                   "rate_limit_per_sec": 5, "enabled": true}),
        ),
        (
            "PATCH",
            "/v1/webhooks/endpoints/{id}",
            Caller::Admin,
            json!({"url": "https://hooks.example.com/other", "description": "swept",
                   "event_types": ["job.failed"], "headers": {"X-Sweep": "2"},
                   "rate_limit_per_sec": null, "enabled": true}),
        ),
        (
            "POST",
            "/v1/webhooks/endpoints/{id}/recover",
            Caller::Admin,
            json!({"since": "2026-01-01T00:00:00Z"}),
        ),
        (
            "POST",
            "/v1/webhooks/endpoints/{id}/test",
            Caller::Admin,
            json!({"event_type": "job.completed"}),
        ),
        (
            "POST",
            "/v1/auth/login",
            Caller::Nobody,
            json!({"tenant": "acme", "username": "ada", "password": PASSWORD}),
        ),
    ]
}

/// Every string leaf and every array of `value`, as JSON pointers.
fn leaves(value: &Value, at: String, strings: &mut Vec<String>, arrays: &mut Vec<String>) {
    match value {
        Value::String(_) => strings.push(at),
        Value::Array(items) => {
            arrays.push(at.clone());
            for (i, item) in items.iter().enumerate() {
                leaves(item, format!("{at}/{i}"), strings, arrays);
            }
        }
        Value::Object(map) => {
            for (k, v) in map {
                leaves(v, format!("{at}/{k}"), strings, arrays);
            }
        }
        _ => {}
    }
}

fn with(value: &Value, pointer: &str, replacement: Value) -> Value {
    let mut out = value.clone();
    if let Some(slot) = out.pointer_mut(pointer) {
        *slot = replacement;
    }
    out
}

async fn raw(
    h: &Harness,
    method: &str,
    uri: &str,
    bearer: Option<&str>,
    body: Option<Vec<u8>>,
) -> Reply {
    let mut builder = Request::builder()
        .method(Method::from_bytes(method.as_bytes()).expect("method"))
        .uri(uri);
    if let Some(bearer) = bearer {
        builder = builder.header("authorization", format!("Bearer {bearer}"));
    }
    let body = match body {
        Some(bytes) => {
            builder = builder.header("content-type", "application/json");
            Body::from(bytes)
        }
        None => Body::empty(),
    };
    h.send(builder.body(body).expect("request")).await
}

/// Never a 5xx; every error is problem+json with a code.
fn check(reply: &Reply, what: &str) {
    assert!(
        !reply.status.is_server_error(),
        "{what}: {} {}",
        reply.status,
        String::from_utf8_lossy(&reply.body)
    );
    if reply.status.is_client_error() {
        assert_eq!(reply.content_type(), "application/problem+json", "{what}");
        let body: Value = serde_json::from_slice(&reply.body).expect("problem body");
        assert!(
            body["code"].as_str().is_some_and(|c| !c.is_empty()),
            "{what}: {body}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_body_method_or_query_gets_a_5xx_or_a_bare_error() {
    let h = Harness::new(&[("GATEHOUSE_SYNC_WAIT_MS", "20")], false).await;
    let tenant = h.tenant_id().await;
    sqlx::query("UPDATE tenants SET scopes = '{moderate,translate}' WHERE tenant_id = $1")
        .bind(tenant.0)
        .execute(&h.env.pool)
        .await
        .expect("scopes");
    let key = new_key(&h.state, tenant, &["moderate", "translate"]).await;
    new_user(&h.state, Some(tenant), "ada", Role::Admin).await;
    let bob = new_user(&h.state, Some(tenant), "bob", Role::Reviewer).await;
    new_user(&h.state, None, "root", Role::Superadmin).await;
    let (target, _) = new_tenant(&h.state, "target").await;
    let tokens = Tokens {
        key: key.clone(),
        admin: h.login(Some("acme"), "ada").await,
        operator: h.login(None, "root").await,
    };
    let job = h
        .call(
            Method::POST,
            "/v1/jobs",
            Some(&key),
            Some(json!({"kind": "moderate", "items": [{"text": "x"}]})),
        )
        .await
        .json()["id"]
        .as_str()
        .expect("job")
        .to_string();
    let key_id: uuid::Uuid = sqlx::query_scalar("SELECT key_id FROM api_keys LIMIT 1")
        .fetch_one(&h.env.pool)
        .await
        .expect("key id");
    let endpoint = h
        .call(
            Method::POST,
            "/v1/webhooks/endpoints",
            Some(&tokens.admin),
            Some(json!({"url": "https://hooks.example.com/sweep"})),
        )
        .await
        .json()["id"]
        .as_str()
        .expect("endpoint")
        .to_string();
    let message = h
        .call(
            Method::POST,
            &format!("/v1/webhooks/endpoints/{endpoint}/test"),
            Some(&tokens.admin),
            None,
        )
        .await
        .json()["id"]
        .as_str()
        .expect("message")
        .to_string();
    let ids: BTreeMap<&str, String> = BTreeMap::from([
        ("/v1/jobs/", job.clone()),
        ("/v1/users/", bob.to_string()),
        ("/v1/tenants/", target.to_string()),
        ("/v1/keys/", format!("key_{}", key_id.simple())),
        ("/v1/moderation/policy/versions/", "1".to_string()),
        ("/v1/webhooks/endpoints/", endpoint.clone()),
        ("/v1/webhooks/messages/", message.clone()),
    ]);
    let fill = |template: &str| -> String {
        for (prefix, id) in &ids {
            if let Some(rest) = template.strip_prefix(prefix) {
                let rest = rest.split_once('}').map_or(rest, |(_, r)| r);
                return format!("{prefix}{id}{rest}");
            }
        }
        template.to_string()
    };

    // Every route with a body has an example here.
    let examples = examples();
    for (method, path, _) in ROUTES {
        if matches!(*method, "POST" | "PUT" | "PATCH") && !BODILESS.contains(path) {
            assert!(
                examples.iter().any(|(m, p, _, _)| m == method && p == path),
                "no sweep example for {method} {path}"
            );
        }
    }

    for (method, path, caller, example) in &examples {
        let uri = fill(path);
        let bearer = tokens.bearer(*caller);
        for body in ["[]", "[\"guest\"]", "\"x\"", "7", "null", "true"] {
            let reply = raw(&h, method, &uri, bearer, Some(body.as_bytes().to_vec())).await;
            check(&reply, &format!("{method} {path} body {body}"));
            assert!(
                reply.status.is_client_error(),
                "{method} {path} accepted {body}"
            );
        }
        let mut strings = Vec::new();
        let mut arrays = Vec::new();
        leaves(example, String::new(), &mut strings, &mut arrays);
        for pointer in &strings {
            let nul = with(example, pointer, json!("sweep\u{0}value"));
            let reply = raw(&h, method, &uri, bearer, Some(nul.to_string().into_bytes())).await;
            check(&reply, &format!("{method} {path} NUL at {pointer}"));
            assert!(
                reply.status.is_client_error(),
                "{method} {path}: NUL at {pointer} was accepted ({})",
                reply.status
            );
            let long = with(example, pointer, json!("é".repeat(10_000)));
            let reply = raw(
                &h,
                method,
                &uri,
                bearer,
                Some(long.to_string().into_bytes()),
            )
            .await;
            check(&reply, &format!("{method} {path} long string at {pointer}"));
        }
        for pointer in &arrays {
            let first = example
                .pointer(pointer)
                .and_then(|a| a.get(0))
                .cloned()
                .unwrap_or(json!("x"));
            let huge = with(example, pointer, Value::Array(vec![first; 50_001]));
            let reply = raw(
                &h,
                method,
                &uri,
                bearer,
                Some(huge.to_string().into_bytes()),
            )
            .await;
            check(&reply, &format!("{method} {path} huge list at {pointer}"));
        }
        let mut unknown = example.clone();
        unknown["zz_unknown_field"] = json!(1);
        let reply = raw(
            &h,
            method,
            &uri,
            bearer,
            Some(unknown.to_string().into_bytes()),
        )
        .await;
        check(&reply, &format!("{method} {path} unknown field"));
        if STRICT.contains(path) {
            assert_eq!(
                reply.status,
                StatusCode::UNPROCESSABLE_ENTITY,
                "{method} {path} accepted an unknown field"
            );
        }
    }

    // Every route: a wrong method is a 405 problem with `Allow`; a bad query never a 5xx.
    let mut by_path: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (method, path, _) in ROUTES {
        by_path.entry(path).or_default().insert(method);
    }
    for (method, path) in [
        ("GET", "/healthz"),
        ("GET", "/readyz"),
        ("GET", "/metrics"),
        ("GET", "/.well-known/jwks.json"),
        ("POST", "/v1/auth/login"),
    ] {
        by_path.entry(path).or_default().insert(method);
    }
    for (path, methods) in &by_path {
        let uri = fill(path);
        let wrong = ["PUT", "DELETE", "PATCH", "POST", "GET"]
            .into_iter()
            .find(|m| !methods.contains(m))
            .expect("a method the route lacks");
        let reply = raw(&h, wrong, &uri, Some(&tokens.admin), None).await;
        check(&reply, &format!("{wrong} {path}"));
        assert_eq!(
            reply.status,
            StatusCode::METHOD_NOT_ALLOWED,
            "{wrong} {path}"
        );
        assert!(
            reply.headers.contains_key("allow"),
            "{wrong} {path}: no Allow"
        );
        if methods.contains("GET") {
            for query in [
                "limit=abc",
                "limit=1&limit=2",
                "limit=-5",
                "after=%ZZ",
                "limit=1e99",
            ] {
                let caller = if path.starts_with("/v1/tenants") {
                    &tokens.operator
                } else {
                    &tokens.admin
                };
                let reply = raw(&h, "GET", &format!("{uri}?{query}"), Some(caller), None).await;
                check(&reply, &format!("GET {path}?{query}"));
            }
        }
    }
    h.teardown().await;
}
