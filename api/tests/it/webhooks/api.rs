//! The endpoint API: who may manage endpoints and read secrets, validation naming the field,
//! the per-tenant bound, secrets sealed at rest, audit records, and another tenant's
//! endpoints and messages being 404.

use axum::http::{Method, StatusCode};
use serde_json::json;

use super::{admin, create_endpoint, webhooks_key};
use crate::support::{Harness, new_tenant, new_user};

fn problem(reply: &crate::support::Reply) -> (StatusCode, String, String) {
    let body = reply.json();
    (
        reply.status,
        body["code"].as_str().unwrap_or("").to_string(),
        body["field"].as_str().unwrap_or("").to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_and_scoped_keys_manage_endpoints_only_admins_read_secrets() {
    let h = Harness::new(
        &super::settings(&[("GATEHOUSE_WEBHOOK_MAX_ENDPOINTS", "3")]),
        false,
    )
    .await;
    let admin = admin(&h).await;
    let key = webhooks_key(&h).await;
    let key_token = h.exchange(&key).await;

    let created = create_endpoint(
        &h,
        &key,
        json!({"url": "https://hooks.example.com/in", "description": "ci", "event_types": ["job.completed", "job.progress"],
               "headers": {"X-Tenant-Token": "abc"}, "rate_limit_per_sec": 5}),
    )
    .await;
    let id = created["id"].as_str().expect("id").to_string();
    assert!(id.starts_with("ep_"), "{created}");
    let secret = created["secret"].as_str().expect("secret").to_string();
    assert!(secret.starts_with("whsec_"), "{created}");
    assert_eq!(
        created["event_types"],
        json!(["job.completed", "job.progress"])
    );
    assert_eq!(created["headers"], json!({"X-Tenant-Token": "abc"}));
    assert_eq!(created["rate_limit_per_sec"], 5);
    assert_eq!(created["enabled"], true);

    // Listing and reading never show the secret.
    for bearer in [&admin, &key, &key_token] {
        let reply = h
            .call(
                Method::GET,
                &format!("/v1/webhooks/endpoints/{id}"),
                Some(bearer),
                None,
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK);
        assert!(reply.json().get("secret").is_none());
        let list = h
            .call(Method::GET, "/v1/webhooks/endpoints", Some(bearer), None)
            .await;
        assert_eq!(list.json()["data"][0]["id"], id.as_str());
        assert!(!String::from_utf8_lossy(&list.body).contains("whsec_"));
    }
    // The secret: admins only, and it is the one returned at creation.
    let uri = format!("/v1/webhooks/endpoints/{id}/secret");
    for bearer in [&key, &key_token] {
        let reply = h.call(Method::GET, &uri, Some(bearer), None).await;
        assert_eq!(
            reply.status,
            StatusCode::FORBIDDEN,
            "a key reading the secret"
        );
    }
    let reply = h.call(Method::GET, &uri, Some(&admin), None).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json(), json!({"secret": secret}));

    // Sealed at rest: version 1 (AES-256-GCM), the key bytes nowhere in the row.
    let stored: Vec<u8> = sqlx::query_scalar("SELECT secret FROM webhook_endpoints")
        .fetch_one(&h.env.pool)
        .await
        .expect("row");
    assert_eq!(stored[0], 1);
    let raw = base64_decode(&secret[6..]);
    assert!(!stored.windows(raw.len()).any(|w| w == raw.as_slice()));

    // A key without the scope, reviewers and guests: 403.
    let acme = h.tenant_id().await;
    let plain_key = crate::support::new_key(&h.state, acme, &["moderate"]).await;
    new_user(
        &h.state,
        Some(acme),
        "rita",
        gatehouse_common::types::Role::Reviewer,
    )
    .await;
    let reviewer = h.login(Some("acme"), "rita").await;
    for bearer in [&plain_key, &reviewer] {
        let reply = h
            .call(Method::GET, "/v1/webhooks/endpoints", Some(bearer), None)
            .await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN);
    }

    // PATCH: change, null the rate limit, disable and re-enable.
    let uri = format!("/v1/webhooks/endpoints/{id}");
    let reply = h
        .call(
            Method::PATCH,
            &uri,
            Some(&admin),
            Some(json!({"rate_limit_per_sec": null, "enabled": false, "event_types": []})),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.json());
    let body = reply.json();
    assert_eq!(body["rate_limit_per_sec"], json!(null));
    assert_eq!(body["enabled"], false);
    assert!(
        body["disabled_reason"]
            .as_str()
            .unwrap_or("")
            .contains("usr_"),
        "{body}"
    );
    assert_eq!(body["event_types"], json!([]));
    let reply = h
        .call(
            Method::PATCH,
            &uri,
            Some(&key),
            Some(json!({"enabled": true})),
        )
        .await;
    assert_eq!(reply.json()["disabled_reason"], json!(null));

    // Rotation answers the new secret; the old one keeps signing for the overlap.
    let reply = h
        .call(
            Method::POST,
            &format!("{uri}/secret/rotate"),
            Some(&key),
            None,
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    let rotated = reply.json();
    assert_ne!(rotated["secret"], secret.as_str());
    assert!(
        rotated["previous_secret_valid_until"].is_string(),
        "{rotated}"
    );

    // The bound per tenant.
    create_endpoint(&h, &admin, json!({"url": "https://a.example.com/"})).await;
    create_endpoint(&h, &admin, json!({"url": "https://b.example.com/"})).await;
    let reply = h
        .call(
            Method::POST,
            "/v1/webhooks/endpoints",
            Some(&admin),
            Some(json!({"url": "https://c.example.com/"})),
        )
        .await;
    assert_eq!(problem(&reply).0, StatusCode::CONFLICT);
    assert_eq!(problem(&reply).1, "too_many_endpoints");

    // Audited: creation, change, secret read, rotation.
    let actions: Vec<String> = sqlx::query_scalar(
        "SELECT action FROM audit_events WHERE action LIKE 'webhook_endpoint.%' ORDER BY audit_id",
    )
    .fetch_all(&h.env.pool)
    .await
    .expect("audit");
    for want in [
        "webhook_endpoint.created",
        "webhook_endpoint.changed",
        "webhook_endpoint.secret_read",
        "webhook_endpoint.secret_rotated",
    ] {
        assert!(
            actions.iter().any(|a| a == want),
            "{want} not in {actions:?}"
        );
    }

    // DELETE, then 404.
    let reply = h.call(Method::DELETE, &uri, Some(&admin), None).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    let reply = h.call(Method::GET, &uri, Some(&admin), None).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    h.teardown().await;
}

fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .expect("base64")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_endpoints_are_refused_naming_the_field() {
    let h = Harness::new(&[], false).await;
    let admin = admin(&h).await;
    let cases = [
        (
            json!({"url": "http://hooks.example.com/"}),
            "url_scheme_refused",
            "url",
        ),
        (json!({"url": "https://127.0.0.1/"}), "url_refused", "url"),
        (
            json!({"url": "https://169.254.169.254/latest"}),
            "url_refused",
            "url",
        ),
        (json!({"url": "https://[fd00::1]/"}), "url_refused", "url"),
        (
            json!({"url": "https://user:pw@hooks.example.com/"}),
            "invalid_url",
            "url",
        ),
        (json!({"url": "not a url"}), "invalid_url", "url"),
        (
            json!({"url": "https://x.example.com/\u{0}"}),
            "invalid_text",
            "url",
        ),
        (
            json!({"url": "https://x.example.com/", "event_types": ["job.done"]}),
            "invalid_event_type",
            "event_types[0]",
        ),
        (
            json!({"url": "https://x.example.com/", "headers": {"Webhook-Id": "x"}}),
            "invalid_header",
            "headers.Webhook-Id",
        ),
        (
            json!({"url": "https://x.example.com/", "headers": {"Host": "x"}}),
            "invalid_header",
            "headers.Host",
        ),
        (
            json!({"url": "https://x.example.com/", "headers": {"X-A": "a\nb"}}),
            "invalid_header",
            "headers.X-A",
        ),
        (
            json!({"url": "https://x.example.com/", "headers": {"bad name": "x"}}),
            "invalid_header",
            "headers.bad name",
        ),
        (
            json!({"url": "https://x.example.com/", "rate_limit_per_sec": 0}),
            "invalid_rate_limit",
            "rate_limit_per_sec",
        ),
        (
            json!({"url": "https://x.example.com/", "rate_limit_per_sec": 10001}),
            "invalid_rate_limit",
            "rate_limit_per_sec",
        ),
        (
            json!({"url": "https://x.example.com/", "secret": "mine"}),
            "invalid_body",
            "secret",
        ),
    ];
    for (body, code, field) in cases {
        let reply = h
            .call(
                Method::POST,
                "/v1/webhooks/endpoints",
                Some(&admin),
                Some(body.clone()),
            )
            .await;
        assert_eq!(reply.content_type(), "application/problem+json", "{body}");
        let (status, got_code, got_field) = problem(&reply);
        assert_eq!(
            (status, got_code.as_str(), got_field.as_str()),
            (StatusCode::UNPROCESSABLE_ENTITY, code, field),
            "{body}: {}",
            reply.json()
        );
    }
    let many: serde_json::Map<String, serde_json::Value> =
        (0..21).map(|i| (format!("X-H{i}"), json!("v"))).collect();
    let reply = h
        .call(
            Method::POST,
            "/v1/webhooks/endpoints",
            Some(&admin),
            Some(json!({"url": "https://x.example.com/", "headers": many})),
        )
        .await;
    assert_eq!(problem(&reply).1, "too_many_entries");
    assert_eq!(h.scalar("SELECT count(*) FROM webhook_endpoints").await, 0);
    h.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_tenants_endpoints_and_messages_are_404() {
    let h = Harness::new(&[], false).await;
    let admin = admin(&h).await;
    let endpoint = create_endpoint(&h, &admin, json!({"url": "https://hooks.example.com/"})).await;
    let id = endpoint["id"].as_str().expect("id").to_string();
    let sent = h
        .call(
            Method::POST,
            &format!("/v1/webhooks/endpoints/{id}/test"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(sent.status, StatusCode::ACCEPTED, "{}", sent.json());
    let message = sent.json()["id"].as_str().expect("message id").to_string();
    assert!(message.starts_with("msg_"));

    let (globex, globex_key) = new_tenant(&h.state, "globex").await;
    new_user(
        &h.state,
        Some(globex),
        "oscar",
        gatehouse_common::types::Role::Admin,
    )
    .await;
    let other = h.login(Some("globex"), "oscar").await;
    let e = format!("/v1/webhooks/endpoints/{id}");
    let m = format!("/v1/webhooks/messages/{message}");
    let requests = [
        (Method::GET, e.clone(), None),
        (Method::PATCH, e.clone(), Some(json!({"enabled": false}))),
        (Method::GET, format!("{e}/secret"), None),
        (Method::POST, format!("{e}/secret/rotate"), None),
        (
            Method::POST,
            format!("{e}/recover"),
            Some(json!({"since": "2026-01-01T00:00:00Z"})),
        ),
        (Method::POST, format!("{e}/test"), None),
        (Method::DELETE, e.clone(), None),
        (Method::GET, m.clone(), None),
        (Method::GET, format!("{m}/attempts"), None),
        (Method::POST, format!("{m}/retry"), None),
    ];
    for (method, uri, body) in requests {
        let reply = h.call(method.clone(), &uri, Some(&other), body).await;
        assert_eq!(
            reply.status,
            StatusCode::NOT_FOUND,
            "{method} {uri} as globex's admin"
        );
        assert_eq!(reply.content_type(), "application/problem+json");
    }
    let list = h
        .call(Method::GET, "/v1/webhooks/messages", Some(&other), None)
        .await;
    assert_eq!(list.json()["data"], json!([]));
    // Nothing changed for acme.
    let reply = h.call(Method::GET, &e, Some(&admin), None).await;
    assert_eq!(reply.json()["enabled"], true);

    // A job may name only its own tenant's endpoint.
    for (bearer, endpoint_id) in [
        (&globex_key, id.as_str()),
        (&h.key, "ep_00000000000000000000000000000000"),
        (&h.key, "nope"),
    ] {
        let reply = h
            .call(
                Method::POST,
                "/v1/jobs",
                Some(bearer),
                Some(json!({"kind": "moderate", "items": [{"text": "hi"}], "webhook": {"endpoint_id": endpoint_id}})),
            )
            .await;
        let (status, code, field) = problem(&reply);
        assert_eq!(
            (status, code.as_str(), field.as_str()),
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                "unknown_endpoint",
                "webhook.endpoint_id"
            )
        );
    }
    let reply = h
        .call(
            Method::POST,
            "/v1/jobs",
            Some(&h.key),
            Some(json!({"kind": "moderate", "items": [{"text": "hi"}], "webhook": {"endpoint_id": id}})),
        )
        .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED);
    h.teardown().await;
}
