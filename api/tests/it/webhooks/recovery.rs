//! When receivers fail: down then up, `Retry-After`, 410 Gone, failing for the configured
//! time, a worker killed mid-delivery, and the manual recovery routes.

use std::time::Duration;

use axum::http::{Method, StatusCode};
use serde_json::json;

use super::{Answer, Receiver, admin, create_endpoint, eventually, job_events, settings};
use crate::support::{BENIGN, Harness};

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_receiver_down_then_up_gets_the_message_once() {
    let h = Harness::new(&settings(&[]), true).await;
    let admin = admin(&h).await;
    // A port nobody listens on yet.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    create_endpoint(&h, &admin, json!({"url": format!("http://{addr}/in")})).await;
    let worker = h.start_worker().await;
    let job = h.submit(&[BENIGN.to_string()]).await;
    h.wait_done(&job, WAIT).await;
    eventually(
        &h,
        "SELECT count(*) FROM webhook_attempts WHERE outcome = 'failed'",
        1,
        WAIT,
    )
    .await;
    let error: String = sqlx::query_scalar("SELECT error FROM webhook_attempts")
        .fetch_one(&h.env.pool)
        .await
        .expect("attempt");
    assert!(error.contains("connection"), "{error}");
    // Up again, on the same port: the retry (1 s later) delivers it.
    let receiver = Receiver::on(tokio::net::TcpListener::bind(addr).await.expect("rebind")).await;
    let got = receiver.wait_for(1, WAIT).await;
    eventually(
        &h,
        "SELECT count(*) FROM webhook_deliveries WHERE status = 'succeeded'",
        1,
        WAIT,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(receiver.received().len(), 1, "delivered exactly once");
    assert_eq!(got[0].header("webhook-id"), job_events(&h, &job).await[0].0);
    let attempts: Vec<(i32, String)> =
        sqlx::query_as("SELECT attempt, outcome FROM webhook_attempts ORDER BY attempt")
            .fetch_all(&h.env.pool)
            .await
            .expect("attempts");
    assert_eq!(attempts, [(1, "failed".into()), (2, "succeeded".into())]);
    worker.stop().await;
    h.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retry_after_is_honoured_on_429_and_503() {
    let h = Harness::new(&settings(&[]), false).await;
    let admin = admin(&h).await;
    let receiver = Receiver::start().await;
    receiver.script([
        Answer::status(429)
            .header("retry-after", "3")
            .body("slow down"),
        Answer::status(503).header("retry-after", "2"),
    ]);
    let endpoint = create_endpoint(&h, &admin, json!({"url": receiver.url("/")})).await;
    let id = endpoint["id"].as_str().expect("id").to_string();
    let worker = h.start_worker().await;
    let sent = h
        .call(
            Method::POST,
            &format!("/v1/webhooks/endpoints/{id}/test"),
            Some(&admin),
            None,
        )
        .await
        .json();
    let got = receiver.wait_for(3, WAIT).await;
    // The schedule says 1 s; the receiver asked for 3 s, then 2 s.
    assert!(
        got[1].at - got[0].at >= Duration::from_millis(2900),
        "{:?}",
        got[1].at - got[0].at
    );
    assert!(
        got[2].at - got[1].at >= Duration::from_millis(1900),
        "{:?}",
        got[2].at - got[1].at
    );
    eventually(
        &h,
        "SELECT count(*) FROM webhook_deliveries WHERE status = 'succeeded'",
        1,
        WAIT,
    )
    .await;
    let attempts = h
        .call(
            Method::GET,
            &format!(
                "/v1/webhooks/messages/{}/attempts",
                sent["id"].as_str().expect("id")
            ),
            Some(&admin),
            None,
        )
        .await
        .json();
    let oldest = &attempts["data"][2];
    assert_eq!(oldest["status_code"], 429);
    assert_eq!(oldest["response"], "slow down");
    assert!(oldest["next_attempt_at"].is_string(), "{oldest}");
    worker.stop().await;
    h.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_410_disables_the_endpoint_and_records_endpoint_disabled() {
    let h = Harness::new(&settings(&[]), false).await;
    let admin = admin(&h).await;
    let gone = Receiver::start().await;
    gone.script([Answer::status(410)]);
    let watcher = Receiver::start().await;
    let endpoint = create_endpoint(&h, &admin, json!({"url": gone.url("/")})).await;
    let id = endpoint["id"].as_str().expect("id").to_string();
    create_endpoint(
        &h,
        &admin,
        json!({"url": watcher.url("/"), "event_types": ["endpoint.disabled"]}),
    )
    .await;
    let worker = h.start_worker().await;
    h.call(
        Method::POST,
        &format!("/v1/webhooks/endpoints/{id}/test"),
        Some(&admin),
        None,
    )
    .await;
    let got = watcher.wait_for(1, WAIT).await;
    let event = got[0].json();
    assert_eq!(event["type"], "endpoint.disabled");
    assert_eq!(event["data"]["id"], id.as_str());
    let shown = h
        .call(
            Method::GET,
            &format!("/v1/webhooks/endpoints/{id}"),
            Some(&admin),
            None,
        )
        .await
        .json();
    assert_eq!(shown["enabled"], false);
    assert!(
        shown["disabled_reason"]
            .as_str()
            .unwrap_or("")
            .contains("410"),
        "{shown}"
    );
    assert_eq!(gone.received().len(), 1, "no retry after 410");
    assert_eq!(
        h.scalar("SELECT count(*) FROM audit_events WHERE action = 'webhook_endpoint.disabled'")
            .await,
        1
    );
    let listed = h
        .call(
            Method::GET,
            "/v1/webhooks/messages?event_type=endpoint.disabled",
            Some(&admin),
            None,
        )
        .await
        .json();
    assert_eq!(listed["data"].as_array().map(Vec::len), Some(1));
    // A disabled endpoint gets nothing, and cannot be tested until re-enabled.
    let reply = h
        .call(
            Method::POST,
            &format!("/v1/webhooks/endpoints/{id}/test"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(reply.status, StatusCode::CONFLICT);
    worker.stop().await;
    h.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_endpoint_failing_for_the_configured_time_is_disabled() {
    let h = Harness::new(
        &settings(&[
            ("GATEHOUSE_WEBHOOK_DISABLE_AFTER_SECS", "2"),
            ("GATEHOUSE_WEBHOOK_RETRY_SCHEDULE_SECS", "1,1,1,1,1,1"),
        ]),
        false,
    )
    .await;
    let admin = admin(&h).await;
    let receiver = Receiver::start().await;
    receiver.script((0..10).map(|_| Answer::status(500)));
    let endpoint = create_endpoint(&h, &admin, json!({"url": receiver.url("/")})).await;
    let id = endpoint["id"].as_str().expect("id").to_string();
    let worker = h.start_worker().await;
    h.call(
        Method::POST,
        &format!("/v1/webhooks/endpoints/{id}/test"),
        Some(&admin),
        None,
    )
    .await;
    eventually(
        &h,
        "SELECT count(*) FROM webhook_endpoints WHERE NOT enabled",
        1,
        WAIT,
    )
    .await;
    let reason: String = sqlx::query_scalar("SELECT disabled_reason FROM webhook_endpoints")
        .fetch_one(&h.env.pool)
        .await
        .expect("reason");
    assert!(reason.contains("every attempt failed since"), "{reason}");
    let attempts = receiver.received().len();
    assert!((3..=5).contains(&attempts), "{attempts} attempts in ~2 s");
    assert_eq!(
        h.scalar("SELECT count(*) FROM webhook_deliveries WHERE status = 'failed'")
            .await,
        1
    );
    assert_eq!(
        h.scalar("SELECT count(*) FROM webhook_messages WHERE event_type = 'endpoint.disabled'")
            .await,
        1
    );
    worker.stop().await;
    h.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_killed_mid_delivery_leaves_it_to_the_next() {
    let h = Harness::new(&settings(&[]), false).await;
    let admin = admin(&h).await;
    let receiver = Receiver::start().await;
    // The first attempt hangs (the worker is killed meanwhile); the next one is answered.
    receiver.script([Answer::status(200).delayed(Duration::from_secs(10))]);
    let endpoint = create_endpoint(&h, &admin, json!({"url": receiver.url("/")})).await;
    let id = endpoint["id"].as_str().expect("id").to_string();
    let worker = h.start_worker().await;
    h.call(
        Method::POST,
        &format!("/v1/webhooks/endpoints/{id}/test"),
        Some(&admin),
        None,
    )
    .await;
    receiver.wait_for(1, WAIT).await;
    worker.kill().await;
    assert_eq!(h.scalar("SELECT count(*) FROM webhook_attempts").await, 0);
    let second = h.start_worker().await;
    // Sent again once the lease (4 s) ran out, with the same webhook-id.
    let got = receiver.wait_for(2, WAIT).await;
    assert_eq!(got[0].header("webhook-id"), got[1].header("webhook-id"));
    assert!(
        got[1].at - got[0].at >= Duration::from_secs(3),
        "{:?}",
        got[1].at - got[0].at
    );
    eventually(
        &h,
        "SELECT count(*) FROM webhook_deliveries WHERE status = 'succeeded'",
        1,
        WAIT,
    )
    .await;
    second.stop().await;
    h.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exhausted_messages_are_recovered_and_retried_on_request() {
    let h = Harness::new(
        &settings(&[("GATEHOUSE_WEBHOOK_RETRY_SCHEDULE_SECS", "0.2")]),
        false,
    )
    .await;
    let admin = admin(&h).await;
    let receiver = Receiver::start().await;
    receiver.script([Answer::status(500), Answer::status(502)]);
    let endpoint = create_endpoint(&h, &admin, json!({"url": receiver.url("/")})).await;
    let id = endpoint["id"].as_str().expect("id").to_string();
    let worker = h.start_worker().await;
    let since = chrono::Utc::now() - chrono::Duration::seconds(5);
    let sent = h
        .call(
            Method::POST,
            &format!("/v1/webhooks/endpoints/{id}/test"),
            Some(&admin),
            None,
        )
        .await
        .json();
    let message = sent["id"].as_str().expect("id").to_string();
    eventually(
        &h,
        "SELECT count(*) FROM webhook_deliveries WHERE status = 'exhausted'",
        1,
        WAIT,
    )
    .await;
    assert_eq!(receiver.received().len(), 2);
    let shown = h
        .call(
            Method::GET,
            &format!("/v1/webhooks/messages/{message}"),
            Some(&admin),
            None,
        )
        .await
        .json();
    assert_eq!(shown["deliveries"][0]["status"], "exhausted");
    assert_eq!(shown["deliveries"][0]["last_status_code"], 502);

    // Recover since a time: sent again (now answered 200).
    let reply = h
        .call(
            Method::POST,
            &format!("/v1/webhooks/endpoints/{id}/recover"),
            Some(&admin),
            Some(json!({"since": since})),
        )
        .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.json());
    assert_eq!(reply.json(), json!({"recovered": 1, "more": false}));
    receiver.wait_for(3, WAIT).await;
    eventually(
        &h,
        "SELECT count(*) FROM webhook_deliveries WHERE status = 'succeeded'",
        1,
        WAIT,
    )
    .await;
    // A future `since` is refused; a retry re-sends even a delivered message.
    let reply = h
        .call(
            Method::POST,
            &format!("/v1/webhooks/endpoints/{id}/recover"),
            Some(&admin),
            Some(json!({"since": "2999-01-01T00:00:00Z"})),
        )
        .await;
    assert_eq!(reply.json()["field"], "since");
    let reply = h
        .call(
            Method::POST,
            &format!("/v1/webhooks/messages/{message}/retry"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(reply.json(), json!({"retried": 1}));
    let got = receiver.wait_for(4, WAIT).await;
    assert_eq!(got[3].header("webhook-id"), message);
    assert_eq!(
        h.scalar("SELECT count(*) FROM audit_events WHERE action IN ('webhook_endpoint.recovered', 'webhook_message.retried') AND outcome = 'success'").await,
        2
    );
    worker.stop().await;
    h.teardown().await;
}
