//! At-least-once delivery with exactly-once effects: crashes, redeliveries, poison messages.

use std::time::Duration;

use gatehouse_common::queue::{self, Publisher};
use lapin::types::FieldTable;
use serde_json::json;

use crate::support::{BENIGN, Harness, REFERENCE, work_queue};

fn texts(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            if i % 2 == 0 {
                REFERENCE.to_string()
            } else {
                format!("{BENIGN} #{i}")
            }
        })
        .collect()
}

/// A job of `n` items in chunks of 20 and a worker that has finished a few of them: small
/// chunks and batches so a kill or a stop lands in the middle of the job.
async fn mid_job(n: usize) -> (Harness, String, gatehouse_worker::WorkerHandle) {
    let h = Harness::new(
        &[
            ("GATEHOUSE_CHUNK_ITEMS", "20"),
            ("GATEHOUSE_BATCH_MAX_ITEMS", "4"),
            ("GATEHOUSE_WORKER_PREFETCH", "4"),
        ],
        true,
    )
    .await;
    let id = h.submit(&texts(n)).await;
    let worker = h.start_worker().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while h
        .scalar("SELECT count(*) FROM job_chunks WHERE status = 'done'")
        .await
        < 3
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "worker made no progress"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    (h, id, worker)
}

async fn assert_exactly_once(h: &Harness, id: &str, n: usize, chunks: i64) {
    let job = h.job(id).await;
    assert_eq!(job["status"], "completed");
    assert_eq!(
        job["counts"],
        json!({"total": n, "succeeded": n, "failed": 0, "cancelled": 0})
    );
    let lines = h.results(id).await;
    assert_eq!(lines.len(), n);
    assert!(
        lines
            .iter()
            .enumerate()
            .all(|(i, l)| l["index"] == i && l["status"] == "succeeded")
    );
    assert_eq!(
        h.scalar("SELECT count(*) FROM job_results WHERE status = 'succeeded'")
            .await,
        n as i64
    );
    assert_eq!(
        h.scalar("SELECT count(*) FROM audit_events WHERE action = 'job.chunk.processed'")
            .await,
        chunks
    );
    assert_eq!(
        h.scalar("SELECT count(*) FROM job_chunks WHERE status = 'done'")
            .await,
        chunks
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_job_leaves_every_item_processed_exactly_once() {
    let n = 2000;
    let (h, id, first) = mid_job(n).await;
    first.kill().await;
    let at_kill = h.job(&id).await;
    let processed = at_kill["counts"]["succeeded"].as_i64().expect("count");
    assert!(
        processed > 0 && processed < n as i64,
        "kill did not land mid-job: {at_kill}"
    );

    let second = h.start_worker().await;
    h.wait_done(&id, Duration::from_secs(120)).await;
    assert_exactly_once(&h, &id, n, 100).await;

    // Redeliver every chunk message again: nothing may change.
    let conn = queue::connect(&h.env.config.amqp_url, "test")
        .await
        .expect("amqp");
    let publisher = Publisher::new(&conn).await.expect("publisher");
    let payloads = h.chunk_messages().await;
    for payload in &payloads {
        publisher
            .publish(
                &h.topology().jobs_exchange(),
                "moderate",
                &serde_json::to_vec(payload).expect("json"),
                FieldTable::default(),
            )
            .await
            .expect("publish duplicate");
    }
    let _ = conn.close(200, "bye".into()).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while h.queue_depth(&work_queue(&h)).await > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "duplicates were not consumed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    second.stop().await; // graceful: finishes and acks whatever is in flight
    assert_eq!(h.queue_depth(&work_queue(&h)).await, 0);
    assert_exactly_once(&h, &id, n, 100).await;
    h.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_stop_mid_job_finishes_in_flight_chunks_and_loses_nothing() {
    let n = 2000;
    let (h, id, first) = mid_job(n).await;
    first.stop().await;
    // Whatever was taken was finished; everything else released is back on the queue,
    // untouched (the rest was never released: the dispatcher holds it back).
    let pending = h
        .scalar(
            "SELECT count(*) FROM job_chunks WHERE status = 'pending' AND released_at IS NOT NULL",
        )
        .await;
    assert!(pending > 0, "the stop did not land mid-job");
    assert_eq!(
        h.scalar("SELECT count(*) FROM job_chunks WHERE status = 'pending' AND attempts > 0")
            .await,
        0
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    // (The dispatcher may still top the released chunks up to the tenant's bound.)
    while i64::from(h.queue_depth(&work_queue(&h)).await)
        != h.scalar(
            "SELECT count(*) FROM job_chunks WHERE status = 'pending' AND released_at IS NOT NULL",
        )
        .await
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "unfinished chunks were not requeued"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let second = h.start_worker().await;
    h.wait_done(&id, Duration::from_secs(120)).await;
    assert_exactly_once(&h, &id, n, 100).await;
    assert_eq!(
        h.scalar("SELECT max(attempts)::int8 FROM job_chunks").await,
        1
    );
    second.stop().await;
    h.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dispatcher_releases_what_a_crash_between_commit_and_publish_left_behind() {
    // No background tasks: the api commits the job, then "crashes" before releasing it.
    let mut h = Harness::new(&[("GATEHOUSE_CHUNK_ITEMS", "50")], false).await;
    let worker = h.start_worker().await;
    let id = h.submit(&texts(120)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(h.job(&id).await["status"], "queued");
    assert_eq!(
        h.scalar("SELECT count(*) FROM job_chunks WHERE released_at IS NULL")
            .await,
        3
    );
    assert_eq!(h.queue_depth(&work_queue(&h)).await, 0);

    // A restarted api (its dispatcher) finds the chunks and releases them.
    h.start_relay();
    h.wait_done(&id, Duration::from_secs(60)).await;
    assert_exactly_once(&h, &id, 120, 3).await;
    assert_eq!(
        h.scalar("SELECT count(*) FROM job_chunks WHERE released_at IS NULL")
            .await,
        0
    );
    worker.stop().await;
    h.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_publishes_sync_messages_a_crash_left_behind() {
    // A sync-lane job committed with its outbox rows, then the api "crashed" before publishing.
    let mut h = Harness::new(&[("GATEHOUSE_CHUNK_ITEMS", "50")], false).await;
    let worker = h.start_worker().await;
    let tenant = h.tenant_id().await;
    let items: Vec<_> = texts(120)
        .into_iter()
        .map(|text| gatehouse_common::job::store::NewItem::new(None, text))
        .collect();
    let options = gatehouse_common::job::options::JobOptions::Moderate(Default::default());
    let submitted = gatehouse_common::job::store::submit(
        &h.env.app_pool,
        gatehouse_common::job::store::NewJob {
            tenant_id: tenant,
            key_id: None,
            actor: "test",
            client_ip: None,
            options: &options,
            idempotency_key: None,
            items: gatehouse_common::job::store::ItemSource::Items(&items),
            on_invalid: Default::default(),
            max_items: 1000,
            chunk_items: 50,
            input_file: None,
            parent_job: None,
            lane: gatehouse_common::job::Lane::Sync,
            now: chrono::Utc::now(),
            admission: &Default::default(),
            webhook_endpoint: None,
        },
    )
    .await
    .expect("submit");
    let gatehouse_common::job::store::Submitted::Created(job) = submitted else {
        panic!("not created")
    };
    assert_eq!(
        h.scalar("SELECT count(*) FROM outbox WHERE published_at IS NULL")
            .await,
        3
    );
    h.start_relay();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while h
        .scalar(&format!(
            "SELECT count(*) FROM jobs WHERE job_id = '{}' AND status = 'completed'",
            job.id.0
        ))
        .await
        == 0
    {
        assert!(tokio::time::Instant::now() < deadline, "sync job not done");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(h.scalar("SELECT count(*) FROM job_results").await, 120);
    assert_eq!(
        h.scalar("SELECT count(*) FROM job_chunks WHERE status = 'done'")
            .await,
        3
    );
    assert_eq!(
        h.scalar("SELECT count(*) FROM outbox WHERE published_at IS NULL")
            .await,
        0
    );
    worker.stop().await;
    h.teardown().await;
}
