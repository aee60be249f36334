//! The whole path: submit, process, poll, download; tenant isolation; idempotency.

use std::time::Duration;

use axum::http::{Method, StatusCode};
use serde_json::json;

use crate::support::{BENIGN, Harness, REFERENCE, new_tenant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_item_job_completes_with_results_in_order() {
    let h = Harness::new(&[], true).await;
    let worker = h.start_worker().await;
    let n = 1200;
    let texts: Vec<String> = (0..n)
        .map(|i| match i % 3 {
            0 => REFERENCE.to_string(),
            1 => BENIGN.to_string(),
            _ => format!("Comment number {i} about the weather"),
        })
        .collect();
    let id = h.submit(&texts).await;
    let job = h.wait_done(&id, Duration::from_secs(120)).await;
    assert_eq!(job["status"], "completed");
    assert_eq!(
        job["counts"],
        json!({"total": n, "succeeded": n, "failed": 0, "cancelled": 0})
    );
    assert!(job["completed_at"].is_string());

    let lines = h.results(&id).await;
    assert_eq!(lines.len(), n);
    for (i, line) in lines.iter().enumerate() {
        assert_eq!(line["index"], i);
        assert_eq!(line["custom_id"], format!("c{i}"));
        assert_eq!(line["status"], "succeeded");
        assert!(line["error"].is_null());
        let result = &line["result"];
        assert!(
            result["models"][0]["ref"]
                .as_str()
                .expect("model")
                .starts_with("toxic-bilstm@")
        );
        assert_eq!(result["policy"], json!({"version": 0}));
        match i % 3 {
            0 => {
                assert_eq!(result["flagged"], true);
                assert_eq!(result["level"], "unsafe");
                // toxic, obscene and insult all land on Qwen3Guard's "unethical acts".
                assert_eq!(result["categories"], json!(["unethical_acts"]));
                let toxic = result["toxicity"]["toxic"].as_f64().expect("score");
                assert!((toxic - 0.989).abs() < 1e-3, "toxic {toxic}");
            }
            1 => {
                assert_eq!(result["flagged"], false);
                assert_eq!(result["level"], "safe");
                assert_eq!(result["categories"], json!([]));
            }
            _ => {
                assert_eq!(result["scores"].as_object().expect("scores").len(), 9);
                assert_eq!(result["toxicity"].as_object().expect("toxicity").len(), 6);
            }
        }
    }
    // One audit record per processed chunk (100 items per chunk by default), one for the job.
    let audits = h
        .scalar("SELECT count(*) FROM audit_events WHERE action = 'job.chunk.processed'")
        .await;
    assert_eq!(audits, 12);
    assert_eq!(
        h.scalar("SELECT count(*) FROM audit_events WHERE action = 'job.created'")
            .await,
        1
    );
    worker.stop().await;
    h.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_tenants_job_is_a_404() {
    let h = Harness::new(&[], true).await;
    let worker = h.start_worker().await;
    let id = h.submit(&[REFERENCE.to_string()]).await;
    h.wait_done(&id, Duration::from_secs(60)).await;
    let (_, other_key) = new_tenant(&h.state, "globex").await;
    for uri in [format!("/v1/jobs/{id}"), format!("/v1/jobs/{id}/results")] {
        let reply = h.call(Method::GET, &uri, Some(&other_key), None).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{uri}");
        assert_eq!(reply.content_type(), "application/problem+json");
        assert!(!String::from_utf8_lossy(&reply.body).contains(REFERENCE));
        // The owner still sees it.
        assert_eq!(
            h.call(Method::GET, &uri, Some(&h.key), None).await.status,
            StatusCode::OK
        );
    }
    // Unknown and malformed ids are 404 too.
    for uri in [
        "/v1/jobs/job_0000000000000000000000000000000a",
        "/v1/jobs/nope",
    ] {
        assert_eq!(
            h.call(Method::GET, uri, Some(&h.key), None).await.status,
            StatusCode::NOT_FOUND
        );
    }
    worker.stop().await;
    h.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_key_replays_the_same_job() {
    let h = Harness::new(&[], false).await;
    let body = json!({"kind": "moderate", "items": [{"text": "hello"}]});
    let mut ids = Vec::new();
    for expected in [StatusCode::ACCEPTED, StatusCode::OK] {
        let request = axum::http::Request::builder()
            .method(Method::POST)
            .uri("/v1/jobs")
            .header("authorization", format!("Bearer {}", h.key))
            .header("content-type", "application/json")
            .header("idempotency-key", "order-42")
            .body(axum::body::Body::from(body.to_string()))
            .expect("request");
        let reply = h.send(request).await;
        assert_eq!(reply.status, expected);
        ids.push(reply.json()["id"].clone());
    }
    assert_eq!(ids[0], ids[1]);
    assert_eq!(h.scalar("SELECT count(*) FROM jobs").await, 1);
    assert_eq!(h.scalar("SELECT count(*) FROM job_chunks").await, 1);
    h.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_and_metrics() {
    let h = Harness::new(&[], false).await;
    let reply = h.call(Method::GET, "/healthz", None, None).await;
    assert_eq!(reply.status, StatusCode::OK);
    let reply = h.call(Method::GET, "/readyz", None, None).await;
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    assert_eq!(
        reply.json()["checks"],
        json!({"postgres": "ok", "rabbitmq": "ok"})
    );
    let reply = h.call(Method::GET, "/metrics", None, None).await;
    assert_eq!(reply.status, StatusCode::OK);
    let text = String::from_utf8_lossy(&reply.body);
    assert!(text.contains("gatehouse_api_requests_total"), "{text}");
    assert!(text.contains("route=\"/readyz\""), "{text}");
    h.teardown().await;

    // An unreachable broker makes the api not ready (but still alive).
    let h = Harness::new(
        &[("GATEHOUSE_AMQP_URL", "amqp://guest:guest@127.0.0.1:1/%2f")],
        false,
    )
    .await;
    let reply = h.call(Method::GET, "/readyz", None, None).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.json()["checks"]["rabbitmq"], "unreachable");
    assert_eq!(
        h.call(Method::GET, "/healthz", None, None).await.status,
        StatusCode::OK
    );
    h.teardown().await;
}
