//! Regression tests for the independent probe's findings (issue 9), one per class: strings
//! that reached Postgres unvalidated, the login-throttle race, idempotency across principals,
//! non-object and lax bodies, errors that were not problem+json, and database errors whose
//! log line quoted the request.

use axum::{
    body::Body,
    http::{Method, Request, StatusCode},
};
use futures_util::future::join_all;
use gatehouse_common::types::Role;
use serde_json::{Value, json};

use crate::support::{Harness, PASSWORD, Reply, new_key, new_user};

fn assert_problem(reply: &Reply, status: StatusCode, code: &str) {
    assert_eq!(
        reply.status,
        status,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    assert_eq!(reply.content_type(), "application/problem+json");
    assert_eq!(reply.json()["code"], code, "{}", reply.json());
}

/// An admin token and an operator token for `h`'s tenant.
async fn admin_and_operator(h: &Harness) -> (String, String) {
    let tenant = h.tenant_id().await;
    new_user(&h.state, Some(tenant), "ada", Role::Admin).await;
    new_user(&h.state, None, "root", Role::Superadmin).await;
    (
        h.login(Some("acme"), "ada").await,
        h.login(None, "root").await,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_free_text_field_refuses_nul_and_overlong_values_by_name() {
    let h = Harness::new(&[], false).await;
    let (admin, root) = admin_and_operator(&h).await;
    let tenant = h.tenant_id().await;
    let nul = "bad\u{0}name";
    let cases: Vec<(Method, String, Option<&str>, Value, &str)> = vec![
        (
            Method::POST,
            "/v1/auth/login".into(),
            None,
            json!({"tenant": nul, "username": "ada", "password": PASSWORD}),
            "tenant",
        ),
        (
            Method::POST,
            "/v1/auth/login".into(),
            None,
            json!({"tenant": "acme", "username": nul, "password": PASSWORD}),
            "username",
        ),
        (
            Method::POST,
            "/v1/keys".into(),
            Some(&admin),
            json!({"name": nul, "scopes": ["moderate"]}),
            "name",
        ),
        (
            Method::PATCH,
            "/v1/tenant".into(),
            Some(&admin),
            json!({"name": nul}),
            "name",
        ),
        (
            Method::POST,
            "/v1/tenants".into(),
            Some(&root),
            json!({"name": nul}),
            "name",
        ),
        (
            Method::PATCH,
            format!("/v1/tenants/{tenant}"),
            Some(&root),
            json!({"name": nul}),
            "name",
        ),
        (
            Method::PUT,
            "/v1/moderation/policy".into(),
            Some(&admin),
            json!({"blocklist": [{"term": nul, "category": "jailbreak"}]}),
            "blocklist[0].term",
        ),
        (
            Method::PATCH,
            "/v1/moderation/policy".into(),
            Some(&admin),
            json!({"blocklist": [{"term": "ok", "category": "pii"}, {"term": "x\u{0}", "category": "pii"}]}),
            "blocklist[1].term",
        ),
        (
            Method::POST,
            "/v1/users".into(),
            Some(&admin),
            json!({"username": "tab\there", "password": PASSWORD, "role": "guest"}),
            "username",
        ),
        (
            Method::POST,
            "/v1/auth/login".into(),
            None,
            json!({"tenant": "t".repeat(9000), "username": "ada", "password": PASSWORD}),
            "tenant",
        ),
        (
            Method::POST,
            "/v1/keys".into(),
            Some(&admin),
            json!({"name": "k".repeat(101), "scopes": ["moderate"]}),
            "name",
        ),
    ];
    for (method, uri, bearer, body, field) in cases {
        let reply = h
            .call(method.clone(), &uri, bearer, Some(body.clone()))
            .await;
        assert_eq!(
            reply.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{method} {uri} {body}: {}",
            String::from_utf8_lossy(&reply.body)
        );
        assert_eq!(reply.content_type(), "application/problem+json");
        let problem = reply.json();
        assert!(
            problem["field"]
                .as_str()
                .is_some_and(|f| f.starts_with(field)),
            "{method} {uri}: {problem}"
        );
    }
    // The malformed logins counted against the address (the 9,000-character tenant too).
    let counted: i32 =
        sqlx::query_scalar("SELECT failures FROM login_failures WHERE subject = 'ip:127.0.0.1'")
            .fetch_one(&h.env.pool)
            .await
            .expect("address counter");
    assert!(counted >= 3, "{counted}");
    h.teardown().await;
}

async fn login_status(h: &Harness, password: &str) -> StatusCode {
    let body = json!({"tenant": "acme", "username": "victim", "password": password});
    h.call(Method::POST, "/v1/auth/login", None, Some(body))
        .await
        .status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn simultaneous_guesses_cannot_outrun_the_login_throttle() {
    let h = Harness::new(&[("GATEHOUSE_LOGIN_MAX_FAILURES", "5")], false).await;
    let tenant = h.tenant_id().await;
    new_user(&h.state, Some(tenant), "victim", Role::Reviewer).await;
    let h = std::sync::Arc::new(h);
    // 30 wrong passwords at once: exactly 5 are verified (401), the rest refused (429).
    let statuses = join_all((0..30).map(|i| {
        let h = h.clone();
        tokio::spawn(async move { login_status(&h, &format!("wrong password {i:02}")).await })
    }))
    .await;
    let statuses: Vec<StatusCode> = statuses.into_iter().map(|s| s.expect("task")).collect();
    let unauthorized = statuses
        .iter()
        .filter(|s| **s == StatusCode::UNAUTHORIZED)
        .count();
    let throttled = statuses
        .iter()
        .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert_eq!((unauthorized, throttled), (5, 25), "{statuses:?}");
    // Now locked: even the right password is refused from this address.
    assert_eq!(
        login_status(&h, PASSWORD).await,
        StatusCode::TOO_MANY_REQUESTS
    );
    let Ok(h) = std::sync::Arc::try_unwrap(h) else {
        panic!("harness still shared")
    };
    h.teardown().await;

    // The right password among 30 simultaneous guesses: still only 5 verifications in all.
    let h = Harness::new(&[("GATEHOUSE_LOGIN_MAX_FAILURES", "5")], false).await;
    let tenant = h.tenant_id().await;
    new_user(&h.state, Some(tenant), "victim", Role::Reviewer).await;
    let h = std::sync::Arc::new(h);
    let statuses = join_all((0..30).map(|i| {
        let h = h.clone();
        tokio::spawn(async move {
            let password = if i == 17 {
                PASSWORD.to_string()
            } else {
                format!("wrong password {i:02}")
            };
            login_status(&h, &password).await
        })
    }))
    .await;
    let verified = statuses
        .into_iter()
        .map(|s| s.expect("task"))
        .filter(|s| matches!(*s, StatusCode::OK | StatusCode::UNAUTHORIZED))
        .count();
    assert!(verified <= 5, "{verified} attempts were verified");
    let Ok(h) = std::sync::Arc::try_unwrap(h) else {
        panic!("harness still shared")
    };
    h.teardown().await;
}

async fn submit_with_key(h: &Harness, key: &str, idem: &str, text: &str) -> Reply {
    let request = Request::builder()
        .method(Method::POST)
        .uri("/v1/jobs")
        .header("authorization", format!("Bearer {key}"))
        .header("content-type", "application/json")
        .header("idempotency-key", idem)
        .body(Body::from(
            json!({"kind": "moderate", "items": [{"text": text}]}).to_string(),
        ))
        .expect("request");
    h.send(request).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_keys_belong_to_their_principal_and_their_request() {
    let h = Harness::new(&[], false).await;
    let tenant = h.tenant_id().await;
    let other = new_key(&h.state, tenant, &["moderate"]).await;

    let first = submit_with_key(&h, &h.key, "k1", "first text").await;
    assert_eq!(first.status, StatusCode::ACCEPTED);
    let first_id = first.json()["id"].clone();

    // Another key of the same tenant with the same header gets its own job, which it can read.
    let mine = submit_with_key(&h, &other, "k1", "another text").await;
    assert_eq!(mine.status, StatusCode::ACCEPTED);
    let mine_id = mine.json()["id"].as_str().expect("id").to_string();
    assert_ne!(first_id, mine_id);
    let read = h
        .call(
            Method::GET,
            &format!("/v1/jobs/{mine_id}"),
            Some(&other),
            None,
        )
        .await;
    assert_eq!(read.status, StatusCode::OK);

    // The same principal, the same request: the original job.
    let replay = submit_with_key(&h, &h.key, "k1", "first text").await;
    assert_eq!(replay.status, StatusCode::OK);
    assert_eq!(replay.headers["idempotent-replayed"], "true");
    assert_eq!(replay.json()["id"], first_id);

    // The same principal, a different request: refused, nothing stored.
    let reused = submit_with_key(&h, &h.key, "k1", "a different text").await;
    assert_problem(
        &reused,
        StatusCode::UNPROCESSABLE_ENTITY,
        "idempotency_key_reused",
    );
    assert_eq!(h.scalar("SELECT count(*) FROM jobs").await, 2);
    h.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_must_be_objects_without_unknown_fields_and_lists_are_bounded() {
    let h = Harness::new(&[], false).await;
    let (admin, root) = admin_and_operator(&h).await;
    let tenant = h.tenant_id().await;
    let bob = new_user(&h.state, Some(tenant), "bob", Role::Reviewer).await;

    for (method, uri, bearer) in [
        (Method::PATCH, format!("/v1/users/{bob}"), &admin),
        (Method::PUT, "/v1/moderation/policy".to_string(), &admin),
        (Method::PATCH, "/v1/tenant".to_string(), &admin),
        (Method::PATCH, format!("/v1/tenants/{tenant}"), &root),
    ] {
        for body in [json!(["guest"]), json!([]), json!("x"), json!(7)] {
            let reply = h
                .call(method.clone(), &uri, Some(bearer), Some(body.clone()))
                .await;
            assert_problem(&reply, StatusCode::UNPROCESSABLE_ENTITY, "invalid_body");
        }
    }
    let role: String = sqlx::query_scalar("SELECT role FROM users WHERE username = 'bob'")
        .fetch_one(&h.env.pool)
        .await
        .expect("bob");
    assert_eq!(role, "reviewer", "a positional body changed the role");
    assert_eq!(
        h.scalar("SELECT count(*) FROM moderation_policies").await,
        0
    );

    // A typo is refused, naming the field, instead of silently doing nothing.
    let reply = h
        .call(
            Method::PATCH,
            &format!("/v1/users/{bob}"),
            Some(&admin),
            Some(json!({"rol": "guest"})),
        )
        .await;
    assert_problem(&reply, StatusCode::UNPROCESSABLE_ENTITY, "invalid_body");
    assert_eq!(reply.json()["field"], "rol");

    // Lists: bounded, and duplicates stored once.
    let dupes: Vec<&str> = vec!["moderate"; 50_001];
    let reply = h
        .call(
            Method::PATCH,
            &format!("/v1/tenants/{tenant}"),
            Some(&root),
            Some(json!({"scopes": dupes})),
        )
        .await;
    assert_problem(&reply, StatusCode::UNPROCESSABLE_ENTITY, "too_many_entries");
    let many: Vec<String> = (0..50_001)
        .map(|i| format!("10.{}.{}.{}", i / 65536, (i / 256) % 256, i % 256))
        .collect();
    let reply = h
        .call(
            Method::PATCH,
            "/v1/tenant",
            Some(&admin),
            Some(json!({"ip_allowlist": many})),
        )
        .await;
    assert_problem(&reply, StatusCode::UNPROCESSABLE_ENTITY, "too_many_entries");
    let reply = h
        .call(
            Method::PATCH,
            &format!("/v1/tenants/{tenant}"),
            Some(&root),
            Some(json!({
                "scopes": ["moderate", "translate", "moderate"],
                "ip_allowlist": ["10.0.0.0/8", "10.1.2.3/8", "127.0.0.1"]
            })),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.json());
    assert_eq!(reply.json()["scopes"], json!(["moderate", "translate"]));
    assert_eq!(
        reply.json()["ip_allowlist"],
        json!(["10.0.0.0/8", "127.0.0.1/32"])
    );
    h.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_and_method_errors_are_problem_json() {
    let h = Harness::new(&[], false).await;
    for query in [
        "limit=abc",
        "limit=1&limit=2",
        "limit=99999999999999999999999",
    ] {
        let reply = h
            .call(
                Method::GET,
                &format!("/v1/jobs?{query}"),
                Some(&h.key),
                None,
            )
            .await;
        assert_problem(&reply, StatusCode::BAD_REQUEST, "invalid_query");
    }
    let reply = h.call(Method::DELETE, "/v1/jobs", Some(&h.key), None).await;
    assert_problem(&reply, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
    let allow = reply.headers["allow"].to_str().expect("ascii");
    assert!(allow.contains("GET") && allow.contains("POST"), "{allow}");
    let reply = h.call(Method::PUT, "/healthz", None, None).await;
    assert_problem(&reply, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
    let reply = h.call(Method::GET, "/no/such/route", None, None).await;
    assert_problem(&reply, StatusCode::NOT_FOUND, "not_found");
    h.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logged_database_errors_name_their_class_not_the_values() {
    let h = Harness::new(&[], false).await;
    let secret = "secret-term-4711";
    let error = sqlx::query("INSERT INTO tenants (tenant_id, name, slug) VALUES ($1, $2, 'acme')")
        .bind(uuid::Uuid::now_v7())
        .bind(secret)
        .execute(&h.env.pool)
        .await
        .expect_err("duplicate slug");
    // The raw error quotes the row; what the api logs does not.
    let class = gatehouse_api::error::db_error_class(&error);
    assert!(class.contains("sqlstate=23505"), "{class}");
    assert!(class.contains("tenants_slug_key"), "{class}");
    assert!(
        !class.contains(secret) && !class.contains("acme"),
        "{class}"
    );
    // A NUL that slipped past validation would be a 422, not a 500.
    let error = sqlx::query("SELECT $1::text")
        .bind("a\u{0}b")
        .execute(&h.env.pool)
        .await
        .expect_err("NUL");
    let api = gatehouse_api::error::ApiError::Database(error);
    assert_eq!(api.status_code(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(api.code(), "invalid_value");
    h.teardown().await;
}
