//! Every bad input gets problem+json with the right status, and nothing is stored.

use axum::{
    body::Body,
    http::{Method, Request, StatusCode},
};
use serde_json::{Value, json};

use crate::support::{Harness, Reply};

fn problem(reply: &Reply, status: StatusCode, code: &str) {
    assert_eq!(
        reply.status,
        status,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    assert_eq!(reply.content_type(), "application/problem+json");
    let body = reply.json();
    assert_eq!(body["status"], status.as_u16());
    assert_eq!(body["code"], code);
    assert!(body["type"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(body["detail"].as_str().is_some_and(|d| !d.is_empty()));
}

fn raw(key: &str, content_type: &str, body: impl Into<Body>) -> Request<Body> {
    Request::builder()
        .method(Method::POST)
        .uri("/v1/jobs")
        .header("authorization", format!("Bearer {key}"))
        .header("content-type", content_type)
        .body(body.into())
        .expect("request")
}

fn job(items: Value) -> Value {
    json!({"kind": "moderate", "items": items})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_problem_json_and_stores_nothing() {
    let h = Harness::new(
        &[
            ("GATEHOUSE_MAX_TEXT_CHARS", "50"),
            ("GATEHOUSE_MAX_ITEMS_PER_JOB", "5"),
            ("GATEHOUSE_MAX_BODY_BYTES", "4096"),
        ],
        false,
    )
    .await;
    let key = h.key.clone();
    let post = |body: Value| h.call(Method::POST, "/v1/jobs", Some(&key), Some(body));

    problem(
        &h.send(raw(&key, "application/json", "{\"kind\": ")).await,
        StatusCode::BAD_REQUEST,
        "invalid_json",
    );
    // (Lone surrogates such as `"\ud800"` are not bad input: they are read as U+FFFD; see
    // moderation.rs.)
    problem(
        &h.send(raw(
            &key,
            "text/plain",
            job(json!([{"text": "hi"}])).to_string(),
        ))
        .await,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    );
    let reply = post(json!({"kind": "summarize", "items": [{"text": "hi"}]})).await;
    problem(&reply, StatusCode::UNPROCESSABLE_ENTITY, "unknown_kind");
    assert_eq!(reply.json()["field"], "kind");
    assert!(
        reply.json()["detail"]
            .as_str()
            .is_some_and(|d| d.contains("moderate"))
    );
    problem(
        &post(json!({"items": [{"text": "hi"}]})).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_body",
    );
    problem(
        &post(json!({"kind": "moderate"})).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "no_items",
    );
    problem(
        &post(job(json!([]))).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "no_items",
    );
    problem(
        &post(job(json!([{"custom_id": "x"}]))).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_body",
    );
    for empty in ["", "   \n\t "] {
        let reply = post(job(json!([{"text": "fine"}, {"text": empty}]))).await;
        problem(&reply, StatusCode::UNPROCESSABLE_ENTITY, "empty_text");
        assert_eq!(reply.json()["field"], "items[1].text");
    }
    let reply = post(job(json!([{"text": "x".repeat(51)}]))).await;
    problem(&reply, StatusCode::UNPROCESSABLE_ENTITY, "text_too_long");
    assert_eq!(reply.json()["field"], "items[0].text");
    // 50 characters (multi-byte) is within the limit.
    let ok = post(job(json!([{"text": "é".repeat(50)}]))).await;
    assert_eq!(ok.status, StatusCode::ACCEPTED);
    problem(
        &post(job(json!([{"text": "nul \u{0} inside"}]))).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_text",
    );
    let six: Vec<Value> = (0..6).map(|i| json!({"text": format!("t{i}")})).collect();
    problem(
        &post(job(json!(six))).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "too_many_items",
    );
    let big = job(json!([{"text": "y".repeat(5000)}]));
    problem(
        &post(big).await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
    );

    // Credentials.
    let body = Some(job(json!([{"text": "hi"}])));
    let reply = h.call(Method::POST, "/v1/jobs", None, body.clone()).await;
    problem(&reply, StatusCode::UNAUTHORIZED, "unauthorized");
    assert_eq!(
        reply.headers.get("www-authenticate").map(|v| v.as_bytes()),
        Some(&b"Bearer"[..])
    );
    let (prefix, _) = key.rsplit_once('_').expect("key shape");
    let wrong_secret = format!("{prefix}_{}", "0".repeat(64));
    for bad in [wrong_secret.as_str(), "ghk_garbage", "not-a-key"] {
        let reply = h
            .call(Method::POST, "/v1/jobs", Some(bad), body.clone())
            .await;
        problem(&reply, StatusCode::UNAUTHORIZED, "unauthorized");
        assert!(
            !String::from_utf8_lossy(&reply.body).contains(bad),
            "a secret was echoed"
        );
    }
    problem(
        &h.call(Method::GET, "/v1/nothing-here", Some(&key), None)
            .await,
        StatusCode::NOT_FOUND,
        "not_found",
    );

    // Only the one valid submission was stored.
    assert_eq!(h.scalar("SELECT count(*) FROM jobs").await, 1);
    assert_eq!(h.scalar("SELECT count(*) FROM job_items").await, 1);
    h.teardown().await;
}
