//! Deliveries to a real receiver with the real worker: signatures (checked by the official
//! `standardwebhooks` package) and rotation overlap, the payload, exactly one event per job
//! transition, per-event filters, a job naming its endpoint, and the rate limit.

use std::time::Duration;

use axum::http::{Method, StatusCode};
use gatehouse_common::{
    job::store::{self, ChunkEnd, Completion},
    queue::{ChunkMessage, QueueMessage},
};
use serde_json::json;

use super::{
    Receiver, admin, create_endpoint, eventually, job_events, settings,
    verify_with_standardwebhooks,
};
use crate::support::{BENIGN, Harness};

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deliveries_are_signed_per_standard_webhooks_and_rotation_overlaps() {
    let h = Harness::new(&settings(&[]), true).await;
    let admin = admin(&h).await;
    let receiver = Receiver::start().await;
    let endpoint = create_endpoint(
        &h,
        &admin,
        json!({"url": receiver.url("/hooks"), "headers": {"X-Receiver-Token": "t0ken"}}),
    )
    .await;
    let id = endpoint["id"].as_str().expect("id").to_string();
    let old_secret = endpoint["secret"].as_str().expect("secret").to_string();
    let worker = h.start_worker().await;

    let job = h.submit(&[BENIGN.to_string()]).await;
    let done = h.wait_done(&job, WAIT).await;
    let got = receiver.wait_for(1, WAIT).await;
    let first = &got[0];
    assert_eq!(first.path, "/hooks");
    assert_eq!(first.header("content-type"), "application/json");
    assert_eq!(first.header("x-receiver-token"), "t0ken");
    let events = job_events(&h, &job).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(first.header("webhook-id"), events[0].0);
    assert!(first.header("webhook-signature").starts_with("v1,"));
    let sent_at: i64 = first
        .header("webhook-timestamp")
        .parse()
        .expect("unix seconds");
    assert!((chrono::Utc::now().timestamp() - sent_at).abs() < 60);
    // The payload: type, timestamp, and the job object exactly as GET /v1/jobs/{id} shows it.
    let payload = first.json();
    assert_eq!(payload["type"], "job.completed");
    assert!(
        payload["timestamp"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z'))
    );
    assert_eq!(payload["data"], done, "webhook data vs GET /v1/jobs/{job}");

    // Verified by the official package; another secret does not verify.
    let other = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    assert_eq!(
        verify_with_standardwebhooks(&[(&old_secret, first), (other, first)]),
        [true, false]
    );

    // Rotation: both secrets sign during the overlap (two signatures in the header).
    let rotated = h
        .call(
            Method::POST,
            &format!("/v1/webhooks/endpoints/{id}/secret/rotate"),
            Some(&admin),
            None,
        )
        .await
        .json();
    let new_secret = rotated["secret"].as_str().expect("new secret").to_string();
    let test = h
        .call(
            Method::POST,
            &format!("/v1/webhooks/endpoints/{id}/test"),
            Some(&admin),
            Some(json!({"event_type": "job.failed"})),
        )
        .await;
    assert_eq!(test.status, StatusCode::ACCEPTED);
    let got = receiver.wait_for(2, WAIT).await;
    let second = &got[1];
    assert_eq!(second.json()["type"], "job.failed");
    assert_eq!(second.header("webhook-signature").split(' ').count(), 2);
    assert_eq!(
        verify_with_standardwebhooks(&[(&old_secret, second), (&new_secret, second)]),
        [true, true]
    );
    // After the overlap only the new secret signs.
    sqlx::query("UPDATE webhook_endpoints SET previous_valid_until = now() - interval '1 second'")
        .execute(&h.env.pool)
        .await
        .expect("end the overlap");
    h.call(
        Method::POST,
        &format!("/v1/webhooks/endpoints/{id}/test"),
        Some(&admin),
        None,
    )
    .await;
    let got = receiver.wait_for(3, WAIT).await;
    let third = &got[2];
    assert_eq!(third.header("webhook-signature").split(' ').count(), 1);
    assert_eq!(
        verify_with_standardwebhooks(&[(&old_secret, third), (&new_secret, third)]),
        [false, true]
    );

    // Visible: the message, its delivery and its attempt.
    let messages = h
        .call(
            Method::GET,
            "/v1/webhooks/messages?event_type=job.completed",
            Some(&admin),
            None,
        )
        .await
        .json();
    // Newest first: the test event (job.completed by default), then the job's.
    assert_eq!(messages["data"][0]["test"], true);
    let message = &messages["data"][1];
    assert_eq!(message["id"], events[0].0.as_str());
    assert_eq!(message["job_id"], job.as_str());
    assert_eq!(message["deliveries"][0]["status"], "succeeded");
    assert_eq!(message["payload"], payload);
    let attempts = h
        .call(
            Method::GET,
            &format!("/v1/webhooks/messages/{}/attempts", events[0].0),
            Some(&admin),
            None,
        )
        .await
        .json();
    let attempt = &attempts["data"][0];
    assert_eq!(
        (attempt["attempt"].clone(), attempt["status_code"].clone()),
        (json!(1), json!(200))
    );
    assert_eq!(attempt["outcome"], "succeeded");
    assert_eq!(attempt["response"], "ok");
    assert!(attempt["duration_ms"].as_i64().is_some());
    let metrics = h.state.metrics.render();
    assert!(
        metrics.contains("gatehouse_webhook_attempts_total"),
        "{metrics}"
    );
    worker.stop().await;
    receiver.stop();
    h.teardown().await;
}

/// A chunk completed twice at once (a redelivery racing the first delivery) records one event.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_redelivered_chunk_creates_no_second_event() {
    let h = Harness::new(&settings(&[]), false).await;
    let admin = admin(&h).await;
    create_endpoint(&h, &admin, json!({"url": "http://127.0.0.1:9/"})).await;
    let job = h.submit(&[BENIGN.to_string()]).await;
    let payload = h.chunk_messages().await.remove(0);
    let QueueMessage::ChunkV1(chunk) = serde_json::from_value(payload).expect("message");
    let complete = |chunk: ChunkMessage| {
        let pool = h.env.app_pool.clone();
        async move {
            let outcomes = vec![(
                0,
                gatehouse_common::job::result::StoredOutcome::Moderated(
                    gatehouse_common::job::result::StoredModeration {
                        scores: vec![],
                        rules: vec![],
                    },
                ),
            )];
            store::complete(
                &pool,
                Completion {
                    chunk: &chunk,
                    outcomes: &outcomes,
                    end: ChunkEnd::Done,
                    models: &[],
                    actor: "worker:test",
                    audit: json!({}),
                    progress_interval: Duration::ZERO,
                    default_retention_days: 30,
                },
            )
            .await
            .expect("complete")
        }
    };
    let (a, b) = tokio::join!(
        tokio::spawn(complete(chunk.clone())),
        tokio::spawn(complete(chunk.clone()))
    );
    let applied = [a.expect("task"), b.expect("task")];
    assert_eq!(applied.iter().filter(|a| a.is_some()).count(), 1);
    // And once more, later (a redelivery after the ack was lost).
    assert!(complete(chunk).await.is_none());
    let events = job_events(&h, &job).await;
    assert_eq!(
        events.iter().map(|e| e.1.as_str()).collect::<Vec<_>>(),
        ["job.completed"]
    );
    assert_eq!(h.scalar("SELECT count(*) FROM webhook_deliveries").await, 1);
    h.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn filters_pick_event_types_and_a_job_may_name_its_endpoint() {
    let h = Harness::new(
        &settings(&[
            ("GATEHOUSE_CHUNK_ITEMS", "1"),
            ("GATEHOUSE_WEBHOOK_PROGRESS_INTERVAL_SECS", "0"),
        ]),
        true,
    )
    .await;
    let admin = admin(&h).await;
    let (failed_only, default, progress, named) = (
        Receiver::start().await,
        Receiver::start().await,
        Receiver::start().await,
        Receiver::start().await,
    );
    create_endpoint(
        &h,
        &admin,
        json!({"url": failed_only.url("/"), "event_types": ["job.failed"]}),
    )
    .await;
    create_endpoint(&h, &admin, json!({"url": default.url("/")})).await;
    create_endpoint(
        &h,
        &admin,
        json!({"url": progress.url("/"), "event_types": ["job.progress"]}),
    )
    .await;
    let named_endpoint = create_endpoint(&h, &admin, json!({"url": named.url("/")})).await;
    let worker = h.start_worker().await;

    // Three chunks: progress after the first two, completed after the last.
    let texts: Vec<String> = (0..3).map(|i| format!("{BENIGN} {i}")).collect();
    let job = h.submit(&texts).await;
    h.wait_done(&job, WAIT).await;
    let got = default.wait_for(1, WAIT).await;
    assert_eq!(got[0].json()["type"], "job.completed");
    let got = progress.wait_for(1, WAIT).await;
    assert!(got.iter().all(|r| r.json()["type"] == "job.progress"));
    let events = job_events(&h, &job).await;
    let progress_events = events.iter().filter(|e| e.1 == "job.progress").count();
    assert!((1..=2).contains(&progress_events), "{events:?}");
    assert_eq!(events.iter().filter(|e| e.1 == "job.completed").count(), 1);
    named.wait_for(1, WAIT).await;

    // A job naming an endpoint notifies that one only.
    let reply = h
        .call(
            Method::POST,
            "/v1/jobs",
            Some(&h.key),
            Some(json!({"kind": "moderate", "items": [{"text": BENIGN}], "webhook": {"endpoint_id": named_endpoint["id"]}})),
        )
        .await;
    let second = reply.json()["id"].as_str().expect("job").to_string();
    h.wait_done(&second, WAIT).await;
    let got = named.wait_for(2, WAIT).await;
    assert_eq!(got[1].json()["data"]["id"], second.as_str());
    eventually(
        &h,
        "SELECT count(*) FROM webhook_deliveries WHERE status = 'pending'",
        0,
        WAIT,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        default.received().len(),
        1,
        "the default endpoint got the named job's event"
    );
    assert!(failed_only.received().is_empty());
    assert!(progress.received().len() <= 2);
    worker.stop().await;
    h.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_rate_limit_spaces_deliveries() {
    let h = Harness::new(&settings(&[]), false).await;
    let admin = admin(&h).await;
    let receiver = Receiver::start().await;
    let endpoint = create_endpoint(
        &h,
        &admin,
        json!({"url": receiver.url("/"), "rate_limit_per_sec": 4}),
    )
    .await;
    let id = endpoint["id"].as_str().expect("id").to_string();
    for _ in 0..6 {
        let reply = h
            .call(
                Method::POST,
                &format!("/v1/webhooks/endpoints/{id}/test"),
                Some(&admin),
                None,
            )
            .await;
        assert_eq!(reply.status, StatusCode::ACCEPTED);
    }
    let worker = h.start_worker().await;
    let got = receiver.wait_for(6, WAIT).await;
    // 4 per second: sent 250 ms apart, so six span 1.25 s at the sender; at the receiver,
    // network and scheduling jitter may shift one arrival (the first opens the connection).
    // Without the limit all six arrive within a few milliseconds.
    let span = got[5].at - got[0].at;
    assert!(
        span >= Duration::from_millis(1000),
        "six deliveries in {span:?}"
    );
    for pair in got.windows(2) {
        assert!(
            pair[1].at - pair[0].at >= Duration::from_millis(100),
            "{:?}",
            pair[1].at - pair[0].at
        );
    }
    worker.stop().await;
    h.teardown().await;
}
