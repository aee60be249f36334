//! The lifecycle SQL (`common::job::store`) against real Postgres: a claim brings items,
//! options and policy in one statement; a chunk completed twice at once is written once;
//! results are stored compactly and rendered to the same verdict the worker computed.

use gatehouse_common::{
    job::{
        options::{JobOptions, ModerateOptions},
        result::{ChunkModel, ModelRef, RuleHit, StoredModeration, StoredOutcome},
        store::{self, ChunkEnd, Completion},
    },
    moderation::{self, Category, Policy},
    queue::{ChunkMessage, QueueMessage},
};
use serde_json::json;

use crate::support::Harness;

async fn first_chunk(h: &Harness) -> ChunkMessage {
    let payload = h.chunk_messages().await.remove(0);
    let QueueMessage::ChunkV1(chunk) = serde_json::from_value(payload).expect("message");
    chunk
}

fn guard() -> ChunkModel {
    ChunkModel {
        model: ModelRef::new("guard", "0123456789abcdef"),
        labels: Category::ALL
            .iter()
            .map(|c| c.as_str().to_string())
            .collect(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn claim_and_complete_are_single_statements_with_exactly_once_effects() {
    let h = Harness::new(&[], false).await;
    let admin_change = json!({"blocklist": [{"term": "forbidden", "category": "jailbreak"}]});
    let tenant = h.tenant_id().await;
    sqlx::query(
        "INSERT INTO moderation_policies (tenant_id, version, policy, created_by) VALUES ($1, 1, $2, 'test')",
    )
    .bind(tenant.0)
    .bind(json!({
        "version": 1,
        "thresholds": Policy::default().thresholds,
        "enabled_categories": Category::ALL,
        "pii_rule_level": "unsafe",
        "blocklist": admin_change["blocklist"],
    }))
    .execute(&h.env.pool)
    .await
    .expect("policy v1");
    let id = h
        .submit(&["hello there".into(), "say forbidden".into()])
        .await;
    let chunk = first_chunk(&h).await;
    assert_eq!(chunk.job_id.to_string(), id);

    let claim = store::claim(&h.env.app_pool, &chunk, &[])
        .await
        .expect("claim")
        .expect("pending");
    assert_eq!(claim.attempts, 1);
    assert_eq!(claim.policy_version, 1);
    assert!(
        claim.policy.is_some(),
        "an uncached policy comes with the claim"
    );
    assert_eq!(
        claim.options,
        Ok(JobOptions::Moderate(ModerateOptions::default()))
    );
    assert_eq!(
        claim.items,
        vec![
            (0, "hello there".to_string()),
            (1, "say forbidden".to_string())
        ]
    );
    // A worker that has version 1 cached is not sent it again.
    let again = store::claim(&h.env.app_pool, &chunk, &[1])
        .await
        .expect("claim")
        .expect("still pending");
    assert_eq!(again.attempts, 2);
    assert!(again.policy.is_none());
    assert_eq!(h.job(&id).await["status"], "running");

    let mut hot = vec![0.0; 9];
    hot[8] = 0.3;
    let outcomes = vec![
        (
            0,
            StoredOutcome::Moderated(StoredModeration {
                scores: vec![vec![vec![0.01; 9]]],
                rules: Vec::new(),
            }),
        ),
        (
            1,
            StoredOutcome::Moderated(StoredModeration {
                scores: vec![vec![hot]],
                rules: vec![RuleHit::Blocklist {
                    term: 0,
                    start: 4,
                    end: 13,
                }],
            }),
        ),
    ];
    let models = vec![guard()];
    // The same chunk completed twice at once (a redelivery racing the first delivery).
    let complete = || {
        let pool = h.env.app_pool.clone();
        let chunk = chunk.clone();
        let outcomes = outcomes.clone();
        let models = models.clone();
        async move {
            store::complete(
                &pool,
                Completion {
                    chunk: &chunk,
                    outcomes: &outcomes,
                    end: ChunkEnd::Done,
                    models: &models,
                    actor: "worker:test",
                    audit: json!({}),
                    progress_interval: std::time::Duration::from_secs(10),
                    default_retention_days: 30,
                },
            )
            .await
            .expect("complete")
        }
    };
    let (a, b) = tokio::join!(tokio::spawn(complete()), tokio::spawn(complete()));
    let applied: Vec<_> = [a.expect("task"), b.expect("task")]
        .into_iter()
        .flatten()
        .collect();
    assert_eq!(applied.len(), 1, "exactly one completion applies");
    assert_eq!(applied[0].succeeded, 2);
    let job = h.job(&id).await;
    assert_eq!(job["status"], "completed");
    assert_eq!(
        job["counts"],
        json!({"total": 2, "succeeded": 2, "failed": 0, "cancelled": 0})
    );
    assert_eq!(
        h.scalar("SELECT count(*) FROM audit_events WHERE action = 'job.chunk.processed'")
            .await,
        1
    );
    // Stored compactly: the scores and the rule hit, not the rendered verdict.
    let bytes = h
        .scalar("SELECT max(octet_length(result))::int8 FROM job_results")
        .await;
    assert!(bytes < 100, "{bytes} bytes per stored result");
    // A late redelivery finds nothing to claim.
    assert!(
        store::claim(&h.env.app_pool, &chunk, &[])
            .await
            .expect("claim")
            .is_none()
    );

    // Rendered on read: the same verdict as computed from what was stored.
    let lines = h.results(&id).await;
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["result"]["level"], "safe");
    let flagged = &lines[1]["result"];
    assert_eq!(flagged["level"], "unsafe");
    assert_eq!(flagged["categories"], json!(["jailbreak"]));
    assert_eq!(flagged["signals"][0]["term"], "forbidden");
    assert_eq!(flagged["policy"]["version"], 1);
    assert_eq!(flagged["models"][0]["ref"], "guard@0123456789ab");
    assert_eq!(
        flagged["explanation"]["decided_by"]["detector"],
        "blocklist"
    );
    let policy: Policy = serde_json::from_value(
        sqlx::query_scalar::<_, serde_json::Value>("SELECT policy FROM moderation_policies")
            .fetch_one(&h.env.pool)
            .await
            .expect("policy"),
    )
    .expect("typed policy");
    let StoredOutcome::Moderated(item) = &outcomes[1].1 else {
        unreachable!()
    };
    let expected = serde_json::to_value(moderation::verdict(&models, item, &policy)).expect("json");
    assert_eq!(flagged, &expected);
    h.teardown().await;
}
