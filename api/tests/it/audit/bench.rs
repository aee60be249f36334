//! The audit trail's cost (`loadtest/audit.sh` runs this; ignored by `make test`): the sync
//! moderation path and a 10,000-item job, with and without auditing, alternating in one run
//! against the same in-process api, worker, Postgres and RabbitMQ.
//!
//! "Without" is obtained in the database, honestly: a `BEFORE INSERT` trigger named to fire
//! first (`audit_events_0_bench_off`) returns NULL, so no audit row, no chain trigger, no head
//! lock and no index maintenance happen — every audit write the code issues is discarded at the
//! table. What remains of auditing in "without" is only the Rust side (building records, the
//! task-local context) and the statement text, which is well under the noise.

use std::time::{Duration, Instant};

use axum::http::Method;
use serde_json::json;

use super::call_with;
use crate::support::Harness;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn set_auditing(h: &Harness, on: bool) {
    let sql = if on {
        "DROP TRIGGER IF EXISTS audit_events_0_bench_off ON audit_events"
    } else {
        "CREATE OR REPLACE FUNCTION gatehouse_bench_discard() RETURNS trigger LANGUAGE plpgsql AS
           $$ BEGIN RETURN NULL; END $$;
         CREATE OR REPLACE TRIGGER audit_events_0_bench_off BEFORE INSERT ON audit_events
           FOR EACH ROW EXECUTE FUNCTION gatehouse_bench_discard()"
    };
    sqlx::raw_sql(sql)
        .execute(&h.env.pool)
        .await
        .expect("toggle auditing");
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn min(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::INFINITY, f64::min)
}

/// Both modes' samples, and the estimates reported: the median of the pairwise ratios (each
/// pair measured back to back, so slow drift of the shared machine cancels), and the ratio of
/// the fastest samples (the least disturbed by other load).
fn summary(with: &[f64], without: &[f64]) -> serde_json::Value {
    let ratios: Vec<f64> = with.iter().zip(without).map(|(a, b)| a / b).collect();
    json!({
        "median_with": median(with.to_vec()), "median_without": median(without.to_vec()),
        "min_with": min(with), "min_without": min(without),
        "ratio_median_of_pairs": median(ratios.clone()),
        "ratio_of_minimums": min(with) / min(without),
        "pairs": ratios.len(),
        "samples": {"with": with, "without": without},
    })
}

async fn sync_block(h: &Harness, n: usize, tag: usize) -> f64 {
    let started = Instant::now();
    for i in 0..n {
        let reply = call_with(
            h,
            Method::POST,
            "/v1/moderations",
            &h.key,
            &[],
            Some(json!({"input": format!("request {i} of block {tag}: you are so kind")})),
        )
        .await;
        assert_eq!(
            reply.status,
            200,
            "{}",
            String::from_utf8_lossy(&reply.body)
        );
    }
    started.elapsed().as_secs_f64() * 1000.0 / n as f64
}

/// Milliseconds per audit record written by a loop of `n` inserts inside one transaction
/// (discarded at the table when auditing is off): the records' own cost — row, indexes,
/// chain trigger, head update — without commits, whose flush dominates and is shared with the
/// change the record describes. An upper bound: the head row gets `n` versions in one
/// transaction, where production updates it once per transaction.
async fn audit_write_ms(h: &Harness, n: usize) -> f64 {
    let tenant = h.tenant_id().await;
    let started = Instant::now();
    sqlx::query(
        "DO $$ BEGIN FOR i IN 1..$N LOOP
           INSERT INTO audit_events (tenant_id, actor, action, details, target_type, target_id)
           VALUES ('$T', 'key_bench', 'key.changed', '{\"bench\": true}', 'key', 'key_bench');
         END LOOP; END $$"
            .replace("$N", &n.to_string())
            .replace("$T", &tenant.0.to_string())
            .as_str(),
    )
    .execute(&h.env.pool)
    .await
    .expect("audit writes");
    started.elapsed().as_secs_f64() * 1000.0 / n as f64
}

async fn job_run(h: &Harness, texts: &[String]) -> f64 {
    let started = Instant::now();
    let id = h.submit(texts).await;
    let job = h.wait_done(&id, Duration::from_secs(1800)).await;
    assert_eq!(job["status"], "completed");
    started.elapsed().as_secs_f64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: bash loadtest/audit.sh"]
async fn audit_overhead_benchmark() {
    let pairs = env_usize("AUDIT_BENCH_PAIRS", 5);
    let block = env_usize("AUDIT_BENCH_SYNC_BLOCK", 40);
    let job_items = env_usize("AUDIT_BENCH_ITEMS", 10_000);
    let mut h = Harness::new(&[], false).await;
    h.start_relay();
    let _worker = h.start_worker().await;
    let texts: Vec<String> = (0..job_items)
        .map(|i| format!("message {i}: thanks for the quick reply, see you tomorrow"))
        .collect();
    // Warm-up, both paths: models loaded, connections open, caches and plans warm.
    sync_block(&h, 20, 0).await;
    job_run(&h, &texts).await;
    let (mut sync_with, mut sync_without) = (Vec::new(), Vec::new());
    let (mut job_with, mut job_without) = (Vec::new(), Vec::new());
    let (mut write_with, mut write_without) = (Vec::new(), Vec::new());
    for pair in 0..pairs {
        for first in [pair % 2 == 0, pair % 2 == 1] {
            set_auditing(&h, first).await;
            let ms = audit_write_ms(&h, 1000).await;
            if first {
                write_with.push(ms)
            } else {
                write_without.push(ms)
            }
        }
        // Each pair back to back; which mode goes first alternates.
        for first in [pair % 2 == 0, pair % 2 == 1] {
            set_auditing(&h, first).await;
            let ms = sync_block(&h, block, pair).await;
            if first {
                sync_with.push(ms)
            } else {
                sync_without.push(ms)
            }
        }
        for first in [pair % 2 == 0, pair % 2 == 1] {
            set_auditing(&h, first).await;
            let secs = job_run(&h, &texts).await;
            if first {
                job_with.push(secs)
            } else {
                job_without.push(secs)
            }
        }
    }
    set_auditing(&h, true).await;
    let records = h.scalar("SELECT count(*) FROM audit_events").await;
    // Records each path writes with auditing on (counted, not assumed).
    let per_sync = h
        .scalar("SELECT count(*) FROM audit_events a JOIN jobs j ON j.job_id = a.job_id WHERE j.total = 1")
        .await as f64
        / h.scalar("SELECT count(DISTINCT a.job_id) FROM audit_events a JOIN jobs j ON j.job_id = a.job_id WHERE j.total = 1").await.max(1) as f64;
    let per_job = h
        .scalar(&format!("SELECT count(*) FROM audit_events a JOIN jobs j ON j.job_id = a.job_id WHERE j.total = {job_items}"))
        .await as f64
        / h.scalar(&format!("SELECT count(DISTINCT a.job_id) FROM audit_events a JOIN jobs j ON j.job_id = a.job_id WHERE j.total = {job_items}")).await.max(1) as f64;
    let marginal_ms = median(write_with.clone()) - median(write_without.clone());
    let sync_ms = median(sync_without.clone());
    let job_ms = median(job_without.clone()) * 1000.0;
    let report = json!({
        "pairs": pairs,
        "sync_requests_per_block": block,
        "job_items": job_items,
        "audit_records_written": records,
        "sync_ms_per_request": summary(&sync_with, &sync_without),
        "job_seconds": summary(&job_with, &job_without),
        "audit_write_ms_per_tx": summary(&write_with, &write_without),
        "derived": {
            "marginal_ms_per_record": marginal_ms,
            "records_per_sync_request": per_sync,
            "records_per_job": per_job,
            "sync_overhead_fraction": per_sync * marginal_ms / sync_ms,
            "job_overhead_fraction": per_job * marginal_ms / job_ms,
        },
    });
    println!("AUDIT_BENCH {report}");
    h.teardown().await;
}
