//! Every state-changing call and security-relevant read leaves one record with its request's
//! context; denied attempts are recorded too, at a bounded rate.

use axum::http::{Method, StatusCode};
use gatehouse_common::types::Role;
use serde_json::{Value, json};

use super::call_with;
use crate::support::{Harness, new_tenant, new_user};

async fn rows(h: &Harness, sql: &str) -> Vec<Value> {
    sqlx::query_scalar::<_, Value>(&format!("SELECT to_jsonb(a) FROM ({sql}) a"))
        .fetch_all(&h.env.pool)
        .await
        .expect(sql)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_carry_the_request_context_and_denials_are_recorded() {
    let h = Harness::new(&[], false).await;
    let acme = h.tenant_id().await;
    new_user(&h.state, Some(acme), "alice", Role::Admin).await;
    new_user(&h.state, Some(acme), "bob", Role::Reviewer).await;
    let (globex, _) = new_tenant(&h.state, "globex").await;
    new_user(&h.state, Some(globex), "oscar", Role::Admin).await;
    let admin = h.login(Some("acme"), "alice").await;
    let reviewer = h.login(Some("acme"), "bob").await;
    let other = h.login(Some("globex"), "oscar").await;
    let headers = [
        ("user-agent", "audit-test/1.0"),
        ("x-request-id", "req-key-1"),
    ];

    // A domain record (written in the change's transaction) gets the request's context.
    let created = call_with(
        &h,
        Method::POST,
        "/v1/keys",
        &admin,
        &headers,
        Some(json!({"name": "ci", "scopes": ["moderate"]})),
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED);
    let key = created.json();
    let rec = rows(
        &h,
        "SELECT * FROM audit_events WHERE request_id = 'req-key-1'",
    )
    .await;
    assert_eq!(rec.len(), 1, "one record per call: {rec:?}");
    let r = &rec[0];
    assert_eq!(r["action"], "key.created");
    assert_eq!(r["actor_kind"], "user");
    assert!(r["actor"].as_str().unwrap_or_default().starts_with("usr_"));
    assert_eq!(r["user_agent"], "audit-test/1.0");
    assert_eq!(r["client_ip"], "127.0.0.1");
    assert_eq!(r["target_type"], "key");
    assert_eq!(r["target_id"], key["id"]);
    assert_eq!(r["outcome"], "success");
    assert_eq!(r["tenant_id"], json!(acme.0));
    // Never the secret.
    let secret = key["key"]
        .as_str()
        .or(key["secret"].as_str())
        .unwrap_or("ghk_");
    assert_eq!(
        h.scalar(&format!(
            "SELECT count(*) FROM audit_events WHERE details::text LIKE '%{}%'",
            &secret[secret.len().saturating_sub(20)..]
        ))
        .await,
        0
    );

    // A call without a domain record gets the layer's: a result download, with its target.
    let job = h.submit(&["hello".to_string()]).await;
    let read = call_with(
        &h,
        Method::GET,
        &format!("/v1/jobs/{job}/results"),
        &h.key,
        &[("x-request-id", "req-results")],
        None,
    )
    .await;
    assert!(
        read.status.is_success() || read.status == StatusCode::CONFLICT,
        "{}",
        read.status
    );
    let rec = rows(
        &h,
        "SELECT * FROM audit_events WHERE request_id = 'req-results'",
    )
    .await;
    assert_eq!(rec.len(), 1, "{rec:?}");
    assert_eq!(rec[0]["action"], "job.results_read");
    assert_eq!(rec[0]["actor_kind"], "api_key");
    assert_eq!(rec[0]["target_type"], "job");
    assert_eq!(rec[0]["target_id"], json!(job));

    // 404 on another tenant's job: denied, in the caller's tenant's chain, with the target.
    let peek = call_with(
        &h,
        Method::GET,
        &format!("/v1/jobs/{job}"),
        &other,
        &[("x-request-id", "req-peek")],
        None,
    )
    .await;
    assert_eq!(peek.status, StatusCode::NOT_FOUND);
    let rec = rows(
        &h,
        "SELECT * FROM audit_events WHERE request_id = 'req-peek'",
    )
    .await;
    assert_eq!(rec.len(), 1, "{rec:?}");
    assert_eq!(rec[0]["action"], "access.denied");
    assert_eq!(rec[0]["outcome"], "denied");
    assert_eq!(rec[0]["status"], 404);
    assert_eq!(rec[0]["tenant_id"], json!(globex.0));
    assert_eq!(rec[0]["target_id"], json!(job));

    // 403: a reviewer creating a key.
    let forbidden = call_with(
        &h,
        Method::POST,
        "/v1/keys",
        &reviewer,
        &[("x-request-id", "req-403")],
        Some(json!({"name": "x", "scopes": ["moderate"]})),
    )
    .await;
    assert_eq!(forbidden.status, StatusCode::FORBIDDEN);
    let rec = rows(
        &h,
        "SELECT * FROM audit_events WHERE request_id = 'req-403'",
    )
    .await;
    assert_eq!(
        (
            rec[0]["action"].clone(),
            rec[0]["outcome"].clone(),
            rec[0]["status"].clone()
        ),
        (json!("key.created"), json!("denied"), json!(403))
    );

    // 401: no credentials, in the platform's chain, anonymous.
    let anonymous = h
        .call(
            Method::POST,
            "/v1/jobs",
            None,
            Some(json!({"kind": "moderate", "items": []})),
        )
        .await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    let rec = rows(
        &h,
        "SELECT * FROM audit_events WHERE status = 401 AND actor = 'anonymous'",
    )
    .await;
    assert_eq!(rec.len(), 1, "{rec:?}");
    assert_eq!(rec[0]["actor_kind"], "anonymous");
    assert_eq!(rec[0]["tenant_id"], Value::Null);

    // An error (422): recorded with its status.
    let bad = call_with(
        &h,
        Method::POST,
        "/v1/keys",
        &admin,
        &[("x-request-id", "req-422")],
        Some(json!({"name": "x", "scopes": ["no-such-scope"]})),
    )
    .await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
    let rec = rows(
        &h,
        "SELECT * FROM audit_events WHERE request_id = 'req-422'",
    )
    .await;
    assert_eq!(
        (rec[0]["outcome"].clone(), rec[0]["status"].clone()),
        (json!("error"), json!(422))
    );

    // A password set through the API never reaches the trail.
    let made = call_with(
        &h,
        Method::POST,
        "/v1/users",
        &admin,
        &[],
        Some(json!({"username": "carol", "password": "very secret password 42", "role": "guest"})),
    )
    .await;
    assert!(made.status.is_success(), "{}", made.status);
    assert_eq!(
        h.scalar(
            "SELECT count(*) FROM audit_events WHERE details::text LIKE '%very secret password%'"
        )
        .await,
        0
    );

    // Reads that are not security-relevant leave nothing.
    let before = h.scalar("SELECT count(*) FROM audit_events").await;
    assert_eq!(
        h.call(Method::GET, "/v1/keys", Some(&admin), None)
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(h.scalar("SELECT count(*) FROM audit_events").await, before);
    h.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denied_attempts_are_recorded_at_a_bounded_rate() {
    let h = Harness::new(&[("GATEHOUSE_AUDIT_DENIED_PER_MINUTE", "5")], false).await;
    for _ in 0..30 {
        let reply = h
            .call(Method::GET, "/v1/jobs", Some("ghk_nope_nope"), None)
            .await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(
        h.scalar(
            "SELECT count(*) FROM audit_events WHERE outcome = 'denied' AND tenant_id IS NULL"
        )
        .await,
        5
    );
    let metrics = h.call(Method::GET, "/metrics", None, None).await;
    assert!(
        String::from_utf8_lossy(&metrics.body).contains("gatehouse_api_audit_suppressed_total")
    );
    h.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_moderation_writes_one_request_record() {
    let h = Harness::new(&[("GATEHOUSE_SYNC_WAIT_MS", "0")], false).await;
    let reply = call_with(
        &h,
        Method::POST,
        "/v1/moderations",
        &h.key,
        &[("x-request-id", "req-sync")],
        Some(json!({"input": "hello"})),
    )
    .await;
    assert!(
        reply.status.is_success(),
        "{} {}",
        reply.status,
        String::from_utf8_lossy(&reply.body)
    );
    assert_eq!(
        h.scalar("SELECT count(*) FROM audit_events WHERE request_id = 'req-sync'")
            .await,
        1
    );
    assert_eq!(
        h.scalar("SELECT count(*) FROM audit_events WHERE request_id = 'req-sync' AND action = 'job.created' AND target_type = 'job'").await,
        1
    );
    h.teardown().await;
}
