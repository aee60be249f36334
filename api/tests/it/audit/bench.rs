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
         CREATE TRIGGER audit_events_0_bench_off BEFORE INSERT ON audit_events
           FOR EACH ROW EXECUTE FUNCTION gatehouse_bench_discard()"
    };
    sqlx::raw_sql(sql)
        .execute(&h.env.pool)
        .await
        .expect("toggle auditing");
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: bash loadtest/audit.sh"]
async fn audit_overhead_benchmark() {
    let rounds = env_usize("AUDIT_BENCH_ROUNDS", 3);
    let sync_requests = env_usize("AUDIT_BENCH_SYNC", 200);
    let job_items = env_usize("AUDIT_BENCH_ITEMS", 10_000);
    let mut h = Harness::new(&[], false).await;
    h.start_relay();
    let _worker = h.start_worker().await;
    let texts: Vec<String> = (0..job_items)
        .map(|i| format!("message {i}: thanks for the quick reply, see you tomorrow"))
        .collect();
    // Warm-up: models loaded, connections open.
    for _ in 0..10 {
        call_with(
            &h,
            Method::POST,
            "/v1/moderations",
            &h.key,
            &[],
            Some(json!({"input": "warm up"})),
        )
        .await;
    }
    let mut sync = [Vec::new(), Vec::new()];
    let mut jobs = [Vec::new(), Vec::new()];
    for round in 0..rounds * 2 {
        // Alternate (with, without, without, with, …) so drift hits both alike.
        let on = matches!(round % 4, 0 | 3);
        set_auditing(&h, on).await;
        let m = usize::from(!on);
        let started = Instant::now();
        for i in 0..sync_requests {
            let reply = call_with(
                &h,
                Method::POST,
                "/v1/moderations",
                &h.key,
                &[],
                Some(json!({"input": format!("request {i} of round {round}: you are so kind")})),
            )
            .await;
            assert_eq!(
                reply.status,
                200,
                "{}",
                String::from_utf8_lossy(&reply.body)
            );
        }
        sync[m].push(started.elapsed().as_secs_f64() * 1000.0 / sync_requests as f64);
        let started = Instant::now();
        let id = h.submit(&texts).await;
        let job = h.wait_done(&id, Duration::from_secs(1800)).await;
        assert_eq!(job["status"], "completed");
        jobs[m].push(started.elapsed().as_secs_f64());
    }
    set_auditing(&h, true).await;
    let report = json!({
        "rounds_per_mode": rounds,
        "sync_requests_per_round": sync_requests,
        "job_items": job_items,
        "sync_ms_per_request": {"with": median(sync[0].clone()), "without": median(sync[1].clone()),
                                 "ratio": median(sync[0].clone()) / median(sync[1].clone()),
                                 "rounds": {"with": sync[0], "without": sync[1]}},
        "job_seconds": {"with": median(jobs[0].clone()), "without": median(jobs[1].clone()),
                         "ratio": median(jobs[0].clone()) / median(jobs[1].clone()),
                         "rounds": {"with": jobs[0], "without": jobs[1]}},
    });
    println!("AUDIT_BENCH {report}");
    h.teardown().await;
}
