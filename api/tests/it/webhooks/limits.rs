//! The configurable limits of a delivery (timeout, response bytes kept, recovery size) and
//! `job.cancelled` through `common::webhook::record_job_event`, as the cancel path records it.

use std::time::Duration;

use axum::http::Method;
use gatehouse_common::{
    db::{self, Scope},
    types::JobId,
    webhook::{self, EventType},
};
use serde_json::json;

use super::{Answer, Receiver, admin, create_endpoint, eventually, settings};
use crate::support::{BENIGN, Harness};

const WAIT: Duration = Duration::from_secs(30);

/// `(attempt, status_code, response, error, duration_ms)`.
type AttemptRow = (i32, Option<i32>, Option<String>, Option<String>, i32);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn attempts_time_out_and_keep_only_the_start_of_the_response() {
    let h = Harness::new(
        &settings(&[
            ("GATEHOUSE_WEBHOOK_TIMEOUT_MS", "800"),
            ("GATEHOUSE_WEBHOOK_LEASE_SECS", "2"),
            ("GATEHOUSE_WEBHOOK_RESPONSE_MAX_BYTES", "64"),
            ("GATEHOUSE_WEBHOOK_RETRY_SCHEDULE_SECS", "0.2,0.2"),
        ]),
        false,
    )
    .await;
    let admin = admin(&h).await;
    let receiver = Receiver::start().await;
    receiver.script([
        Answer::status(200).delayed(Duration::from_secs(3)),
        Answer::status(500).body("x".repeat(10_000)),
    ]);
    let endpoint = create_endpoint(&h, &admin, json!({"url": receiver.url("/")})).await;
    let worker = h.start_worker().await;
    let id = endpoint["id"].as_str().expect("id");
    h.call(
        Method::POST,
        &format!("/v1/webhooks/endpoints/{id}/test"),
        Some(&admin),
        None,
    )
    .await;
    eventually(
        &h,
        "SELECT count(*) FROM webhook_deliveries WHERE status = 'succeeded'",
        1,
        WAIT,
    )
    .await;
    let attempts: Vec<AttemptRow> = sqlx::query_as(
        "SELECT attempt, status_code, response, error, duration_ms FROM webhook_attempts ORDER BY attempt",
    )
    .fetch_all(&h.env.pool)
    .await
    .expect("attempts");
    assert_eq!(attempts.len(), 3, "{attempts:?}");
    let (_, status, _, error, duration_ms) = &attempts[0];
    assert_eq!(*status, None);
    assert!(
        error.as_deref().unwrap_or("").contains("timeout"),
        "{error:?}"
    );
    assert!((700..2500).contains(duration_ms), "{duration_ms} ms");
    let (_, status, response, _, _) = &attempts[1];
    assert_eq!(*status, Some(500));
    assert_eq!(response.as_deref().map(str::len), Some(64));
    assert_eq!(attempts[2].1, Some(200));
    worker.stop().await;
    h.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_recovery_resends_at_most_the_configured_number() {
    let h = Harness::new(
        &settings(&[
            ("GATEHOUSE_WEBHOOK_RETRY_SCHEDULE_SECS", "0.1"),
            ("GATEHOUSE_WEBHOOK_RECOVER_MAX_MESSAGES", "1"),
        ]),
        false,
    )
    .await;
    let admin = admin(&h).await;
    let receiver = Receiver::start().await;
    receiver.script((0..4).map(|_| Answer::status(500)));
    let endpoint = create_endpoint(&h, &admin, json!({"url": receiver.url("/")})).await;
    let id = endpoint["id"].as_str().expect("id");
    let since = chrono::Utc::now() - chrono::Duration::seconds(5);
    for _ in 0..2 {
        h.call(
            Method::POST,
            &format!("/v1/webhooks/endpoints/{id}/test"),
            Some(&admin),
            None,
        )
        .await;
    }
    let worker = h.start_worker().await;
    eventually(
        &h,
        "SELECT count(*) FROM webhook_deliveries WHERE status = 'exhausted'",
        2,
        WAIT,
    )
    .await;
    let uri = format!("/v1/webhooks/endpoints/{id}/recover");
    let first = h
        .call(
            Method::POST,
            &uri,
            Some(&admin),
            Some(json!({"since": since})),
        )
        .await;
    assert_eq!(first.json(), json!({"recovered": 1, "more": true}));
    let second = h
        .call(
            Method::POST,
            &uri,
            Some(&admin),
            Some(json!({"since": since})),
        )
        .await;
    assert_eq!(second.json(), json!({"recovered": 1, "more": false}));
    eventually(
        &h,
        "SELECT count(*) FROM webhook_deliveries WHERE status = 'succeeded'",
        2,
        WAIT,
    )
    .await;
    worker.stop().await;
    h.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_cancel_path_records_job_cancelled_in_its_transaction() {
    let h = Harness::new(&settings(&[]), false).await;
    let admin = admin(&h).await;
    let receiver = Receiver::start().await;
    let completed_only = Receiver::start().await;
    create_endpoint(
        &h,
        &admin,
        json!({"url": receiver.url("/"), "event_types": ["job.cancelled"]}),
    )
    .await;
    create_endpoint(
        &h,
        &admin,
        json!({"url": completed_only.url("/"), "event_types": ["job.completed"]}),
    )
    .await;
    let job = h.submit(&[BENIGN.to_string()]).await;
    let job_id: JobId = job.parse().expect("job id");
    let tenant = h.tenant_id().await;

    // As the cancel path will: change the job and record the event in one transaction.
    let mut tx = db::begin(&h.env.app_pool, Scope::Tenant(tenant))
        .await
        .expect("begin");
    sqlx::query("UPDATE jobs SET status = 'cancelled', completed_at = now() WHERE job_id = $1")
        .bind(job_id.0)
        .execute(&mut *tx)
        .await
        .expect("cancel");
    let message = webhook::record_job_event(&mut tx, job_id, EventType::JobCancelled, view())
        .await
        .expect("record")
        .expect("a subscribed endpoint");
    // An event no endpoint takes is not stored.
    let mut other = db::begin(&h.env.app_pool, Scope::Tenant(tenant))
        .await
        .expect("begin");
    assert!(
        webhook::record_job_event(&mut other, job_id, EventType::JobProgress, view())
            .await
            .expect("record")
            .is_none(),
        "nobody takes job.progress"
    );
    other.rollback().await.expect("rollback");
    tx.commit().await.expect("commit");

    let worker = h.start_worker().await;
    let got = receiver.wait_for(1, WAIT).await;
    assert_eq!(got[0].header("webhook-id"), message.to_string());
    let payload = got[0].json();
    assert_eq!(payload["type"], "job.cancelled");
    assert_eq!(payload["data"], h.job(&job).await);
    assert_eq!(payload["data"]["status"], "cancelled");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(completed_only.received().is_empty());
    assert_eq!(h.scalar("SELECT count(*) FROM webhook_messages").await, 1);
    worker.stop().await;
    h.teardown().await;
}

/// The job view the api renders with (the harness's default retention).
fn view() -> gatehouse_common::job::view::View {
    gatehouse_common::job::view::View {
        now: chrono::Utc::now(),
        default_retention_days: 30,
    }
}
