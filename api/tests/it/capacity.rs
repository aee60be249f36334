//! Capacity between tenants (issue 11): quotas exact across replicas, refunds, the day
//! boundary, rate-limit headers and refusals, backlog bounds, dry runs, usage, the sync lane
//! during a big job, admission control and the dispatcher's fairness.

use std::time::Duration;

use axum::{
    Router,
    body::Body,
    http::{Method, Request, StatusCode},
};
use chrono::{TimeZone, Utc};
use futures_util::future::join_all;
use gatehouse_api::{AppState, app, dispatch::Dispatcher};
use gatehouse_common::{
    job::{
        result::{ItemError, StoredOutcome},
        store::{self, ChunkEnd, Completion},
    },
    queue::QueueMessage,
    telemetry,
    types::{Role, TenantId},
};
use serde_json::{Value, json};

use crate::support::{Harness, Reply, new_key, new_tenant, new_user, send};

fn job(n: usize) -> Value {
    let items: Vec<Value> = (0..n)
        .map(|i| json!({"text": format!("item number {i}")}))
        .collect();
    json!({"kind": "moderate", "items": items})
}

async fn post(app: &Router, key: &str, uri: &str, body: &Value) -> Reply {
    let request = Request::builder()
        .method(Method::POST)
        .uri(uri)
        .header("authorization", format!("Bearer {key}"))
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .expect("request");
    send(app, request).await
}

async fn set_tenant(h: &Harness, tenant: TenantId, patch: Value) {
    sqlx::query(
        "UPDATE tenants SET quotas = quotas || coalesce($2->'quotas', '{}'),
                            rate_limits = rate_limits || coalesce($2->'rate_limits', '{}'),
                            weight = coalesce(($2->>'weight')::int, weight)
         WHERE tenant_id = $1",
    )
    .bind(tenant.0)
    .bind(patch)
    .execute(&h.env.pool)
    .await
    .expect("tenant settings");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_quota_is_exact_under_concurrency_across_two_replicas() {
    let h = Harness::new(&[], false).await;
    let tenant = h.tenant_id().await;
    set_tenant(&h, tenant, json!({"quotas": {"daily_items": 1000}})).await;
    // A second api replica on the same database.
    let replica = AppState::new(
        h.env.app_pool.clone(),
        h.env.config.clone(),
        telemetry::metrics_handle(),
    )
    .await
    .expect("second replica");
    let apps = [h.app.clone(), app(replica)];
    assert_eq!(
        post(&apps[0], &h.key, "/v1/jobs", &job(900)).await.status,
        StatusCode::ACCEPTED
    );
    // 50 submissions of 10 items race for the last 100 items, split over both replicas.
    let replies = join_all((0..50).map(|i| {
        let app = apps[i % 2].clone();
        let key = h.key.clone();
        tokio::spawn(async move { post(&app, &key, "/v1/jobs", &job(10)).await })
    }))
    .await;
    let replies: Vec<Reply> = replies.into_iter().map(|r| r.expect("task")).collect();
    let accepted = replies
        .iter()
        .filter(|r| r.status == StatusCode::ACCEPTED)
        .count();
    assert_eq!(accepted, 10, "exactly the quota is accepted");
    let refused = replies
        .iter()
        .find(|r| r.status == StatusCode::TOO_MANY_REQUESTS)
        .expect("a refusal");
    assert_eq!(refused.content_type(), "application/problem+json");
    let body = refused.json();
    assert_eq!(body["code"], "quota_exceeded");
    assert_eq!(body["quota"], "daily_items");
    assert_eq!(body["limit"], 1000);
    assert_eq!(body["remaining"], 0);
    assert!(
        body["resets_at"]
            .as_str()
            .is_some_and(|t| t.ends_with("T00:00:00Z"))
    );
    let retry: i64 = refused.headers["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!((1..=86_400).contains(&retry));
    // Nothing of a refused submission was stored.
    assert_eq!(h.scalar("SELECT count(*) FROM jobs").await, 11);
    assert_eq!(
        h.scalar("SELECT sum(items)::int8 FROM quota_usage").await,
        1000
    );
    h.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_items_are_refunded_and_the_quota_resets_at_midnight_utc() {
    let h = Harness::new(&[], false).await;
    let tenant = h.tenant_id().await;
    set_tenant(
        &h,
        tenant,
        json!({"quotas": {"daily_items": 5, "daily_characters": null}}),
    )
    .await;
    let day = Utc
        .with_ymd_and_hms(2026, 12, 3, 23, 59, 0)
        .single()
        .expect("time");
    h.state.clock.set(day);
    let first = post(&h.app, &h.key, "/v1/jobs", &job(5)).await;
    assert_eq!(first.status, StatusCode::ACCEPTED);
    let refused = post(&h.app, &h.key, "/v1/jobs", &job(1)).await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);

    // Two of the five items fail: their quota comes back.
    let payload = h.chunk_messages().await.remove(0);
    let QueueMessage::ChunkV1(chunk) = serde_json::from_value(payload).expect("chunk");
    let claim = store::claim(&h.env.app_pool, &chunk, &[])
        .await
        .expect("claim")
        .expect("pending");
    let outcomes: Vec<(i32, StoredOutcome)> = claim
        .items
        .iter()
        .map(|(i, _)| {
            let outcome = if *i < 2 {
                StoredOutcome::Failed(ItemError::new("broken", "test"))
            } else {
                StoredOutcome::Moderated(gatehouse_common::job::result::StoredModeration {
                    scores: vec![],
                    rules: vec![],
                })
            };
            (*i, outcome)
        })
        .collect();
    store::complete(
        &h.env.app_pool,
        Completion {
            chunk: &chunk,
            outcomes: &outcomes,
            end: ChunkEnd::Done,
            models: &[],
            actor: "worker:test",
            audit: json!({}),
            progress_interval: std::time::Duration::from_secs(10),
            default_retention_days: 30,
        },
    )
    .await
    .expect("complete")
    .expect("applied");
    let usage: (i64, i64) =
        sqlx::query_as("SELECT items, failed_items FROM quota_usage WHERE day = '2026-12-03'")
            .fetch_one(&h.env.pool)
            .await
            .expect("usage");
    assert_eq!(usage, (3, 2));
    assert_eq!(
        post(&h.app, &h.key, "/v1/jobs", &job(2)).await.status,
        StatusCode::ACCEPTED,
        "the refunded items can be used again"
    );
    assert_eq!(
        post(&h.app, &h.key, "/v1/jobs", &job(1)).await.status,
        StatusCode::TOO_MANY_REQUESTS
    );

    // Past midnight UTC the quota is fresh; yesterday's use stays where it was.
    h.state.clock.set(
        Utc.with_ymd_and_hms(2026, 12, 4, 0, 0, 5)
            .single()
            .expect("time"),
    );
    assert_eq!(
        post(&h.app, &h.key, "/v1/jobs", &job(5)).await.status,
        StatusCode::ACCEPTED
    );
    assert_eq!(
        h.scalar("SELECT items FROM quota_usage WHERE day = '2026-12-04'")
            .await,
        5
    );
    assert_eq!(
        h.scalar("SELECT items FROM quota_usage WHERE day = '2026-12-03'")
            .await,
        5
    );
    h.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_answer_with_headers_and_name_the_limit_they_hit() {
    let h = Harness::new(&[], false).await;
    let tenant = h.tenant_id().await;
    set_tenant(
        &h,
        tenant,
        json!({"rate_limits": {"requests_per_minute": 4}}),
    )
    .await;
    let mut remaining = Vec::new();
    for _ in 0..4 {
        let reply = h.call(Method::GET, "/v1/jobs", Some(&h.key), None).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(
            reply.headers["ratelimit-policy"].to_str().expect("ascii"),
            "\"tenant-rpm\";q=4;w=60"
        );
        let state = reply.headers["ratelimit"]
            .to_str()
            .expect("ascii")
            .to_string();
        assert!(state.starts_with("\"tenant-rpm\";r="), "{state}");
        remaining.push(state);
    }
    assert!(remaining[3].contains(";r=0;"), "{remaining:?}");
    let refused = h.call(Method::GET, "/v1/jobs", Some(&h.key), None).await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(refused.json()["code"], "rate_limited");
    assert_eq!(refused.json()["limit"], "tenant-rpm");
    assert!(refused.headers.contains_key("retry-after"));
    assert!(refused.headers.contains_key("ratelimit"));

    // Per key, items per minute: another key of the tenant has its own budget.
    set_tenant(
        &h,
        tenant,
        json!({"rate_limits": {"requests_per_minute": null}}),
    )
    .await;
    let key = new_key(&h.state, tenant, &["moderate"]).await;
    let key_id: uuid::Uuid =
        sqlx::query_scalar("SELECT key_id FROM api_keys ORDER BY created_at DESC LIMIT 1")
            .fetch_one(&h.env.pool)
            .await
            .expect("key");
    sqlx::query("UPDATE api_keys SET rate_limits = '{\"items_per_minute\": 3}' WHERE key_id = $1")
        .bind(key_id)
        .execute(&h.env.pool)
        .await
        .expect("key limits");
    let ok = post(&h.app, &key, "/v1/jobs", &job(2)).await;
    assert_eq!(ok.status, StatusCode::ACCEPTED);
    assert!(
        ok.headers["ratelimit-policy"]
            .to_str()
            .expect("ascii")
            .contains("\"key-ipm\";q=3;w=60")
    );
    let over = post(&h.app, &key, "/v1/jobs", &job(2)).await;
    assert_eq!(over.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(over.json()["limit"], "key-ipm");
    assert_eq!(h.scalar("SELECT count(*) FROM jobs").await, 1);
    // The first key is not held back by the second's limit.
    assert_eq!(
        post(&h.app, &h.key, "/v1/jobs", &job(2)).await.status,
        StatusCode::ACCEPTED
    );
    h.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backlogs_are_bounded_and_dry_runs_store_nothing() {
    let h = Harness::new(
        &[
            ("GATEHOUSE_TENANT_MAX_BACKLOG_ITEMS", "50"),
            ("GATEHOUSE_MAX_BACKLOG_ITEMS", "80"),
            ("GATEHOUSE_BACKLOG_RETRY_AFTER_SECS", "7"),
        ],
        false,
    )
    .await;
    let tenant = h.tenant_id().await;
    set_tenant(&h, tenant, json!({"quotas": {"daily_items": 1000}})).await;
    let mut dry = job(40);
    dry["dry_run"] = json!(true);
    let priced = post(&h.app, &h.key, "/v1/jobs", &dry).await;
    assert_eq!(priced.status, StatusCode::OK);
    let body = priced.json();
    assert_eq!(body["cost"]["items"], 40);
    assert_eq!(body["cost"]["characters"], 40 * 13 + 30);
    assert_eq!(body["would_be_accepted"], true);
    assert_eq!(body["quotas"][0]["name"], "daily_items");
    assert_eq!(body["quotas"][0]["remaining"], 1000);
    assert_eq!(h.scalar("SELECT count(*) FROM jobs").await, 0);
    assert_eq!(h.scalar("SELECT count(*) FROM quota_usage").await, 0);

    assert_eq!(
        post(&h.app, &h.key, "/v1/jobs", &job(40)).await.status,
        StatusCode::ACCEPTED
    );
    let full = post(&h.app, &h.key, "/v1/jobs", &job(20)).await;
    assert_eq!(full.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(full.json()["code"], "backlog_full");
    assert_eq!(full.json()["backlog"], 40);
    assert_eq!(full.headers["retry-after"], "7");
    // Another tenant fits its own bound, until all tenants together pass theirs: 503.
    let (_, other) = new_tenant(&h.state, "globex").await;
    assert_eq!(
        post(&h.app, &other, "/v1/jobs", &job(30)).await.status,
        StatusCode::ACCEPTED
    );
    let overloaded = post(&h.app, &other, "/v1/jobs", &job(20)).await;
    assert_eq!(overloaded.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(overloaded.json()["code"], "overloaded");
    assert_eq!(overloaded.headers["retry-after"], "7");
    h.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_is_reported_per_day_and_kind_to_admins_and_operators() {
    let h = Harness::new(&[], false).await;
    let tenant = h.tenant_id().await;
    set_tenant(&h, tenant, json!({"quotas": {"daily_items": 100}})).await;
    new_user(&h.state, Some(tenant), "ada", Role::Admin).await;
    new_user(&h.state, None, "root", Role::Superadmin).await;
    let (globex, globex_key) = new_tenant(&h.state, "globex").await;
    post(&h.app, &h.key, "/v1/jobs", &job(3)).await;
    post(&h.app, &globex_key, "/v1/jobs", &job(4)).await;
    let admin = h.login(Some("acme"), "ada").await;
    let root = h.login(None, "root").await;

    let mine = h
        .call(Method::GET, "/v1/usage?granularity=day", Some(&admin), None)
        .await;
    assert_eq!(mine.status, StatusCode::OK);
    let body = mine.json();
    assert_eq!(body["timezone"], "UTC");
    assert_eq!(body["data"].as_array().map(Vec::len), Some(1));
    assert_eq!(body["data"][0]["items"], 3);
    assert_eq!(body["data"][0]["kind"], "moderate");
    assert_eq!(body["quotas"][0]["used"], 3);
    assert_eq!(body["quotas"][0]["remaining"], 97);
    // Another tenant's usage does not exist for an admin.
    let other = h
        .call(
            Method::GET,
            &format!("/v1/usage?tenant={globex}"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(other.status, StatusCode::NOT_FOUND);
    // Operators: everyone, or one tenant.
    let all = h.call(Method::GET, "/v1/usage", Some(&root), None).await;
    assert_eq!(all.json()["data"].as_array().map(Vec::len), Some(2));
    let one = h
        .call(
            Method::GET,
            &format!("/v1/usage?tenant={globex}"),
            Some(&root),
            None,
        )
        .await;
    assert_eq!(one.json()["data"][0]["items"], 4);
    // Keys and reviewers do not read usage; bad parameters are problems.
    assert_eq!(
        h.call(Method::GET, "/v1/usage", Some(&h.key), None)
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    let bad = h
        .call(
            Method::GET,
            "/v1/usage?granularity=hour",
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(bad.json()["code"], "invalid_granularity");
    // Operators set quotas, limits and weights on the tenant object.
    let tenant_view = h
        .call(
            Method::PATCH,
            &format!("/v1/tenants/{globex}"),
            Some(&root),
            Some(json!({
                "quotas": {"daily_items": 10, "daily_characters": null},
                "rate_limits": {"requests_per_minute": 600, "items_per_minute": null},
                "weight": 3
            })),
        )
        .await;
    assert_eq!(tenant_view.status, StatusCode::OK, "{}", tenant_view.json());
    let t = tenant_view.json();
    assert_eq!(t["quotas"]["daily_items"], 10);
    assert!(t["quotas"]["daily_characters"].is_null());
    assert_eq!(t["rate_limits"]["requests_per_minute"], 600);
    assert_eq!(t["weight"], 3);
    assert_eq!(t["effective"]["rate_limits"]["requests_per_minute"], 600);
    assert_eq!(t["effective"]["quotas"][0]["limit"], 10);
    let bad = h
        .call(
            Method::PATCH,
            &format!("/v1/tenants/{globex}"),
            Some(&root),
            Some(json!({"quotas": {"daily_items": -1}})),
        )
        .await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
    h.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dispatcher_releases_bulk_chunks_round_robin_by_weight() {
    let h = Harness::new(
        &[
            ("GATEHOUSE_CHUNK_ITEMS", "10"),
            ("GATEHOUSE_TENANT_MAX_IN_FLIGHT_CHUNKS", "4"),
            ("GATEHOUSE_MAX_IN_FLIGHT_CHUNKS", "6"),
        ],
        false,
    )
    .await;
    let a = h.tenant_id().await;
    let (b, b_key) = new_tenant(&h.state, "bravo").await;
    // A queues a big job first; B a small one after it.
    post(&h.app, &h.key, "/v1/jobs", &job(200)).await;
    post(&h.app, &b_key, "/v1/jobs", &job(60)).await;
    let dispatcher = Dispatcher::new(&h.state);
    assert_eq!(dispatcher.dispatch_once().await.expect("dispatch"), 6);
    let released = |tenant: TenantId| {
        let pool = h.env.pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM job_chunks WHERE tenant_id = $1 AND released_at IS NOT NULL",
            )
            .bind(tenant.0)
            .fetch_one(&pool)
            .await
            .expect("count")
        }
    };
    // Round robin: B is not behind A's 20 chunks; it gets its share at once.
    assert_eq!((released(a).await, released(b).await), (3, 3));
    // Nothing more until chunks finish (all places taken).
    assert_eq!(dispatcher.dispatch_once().await.expect("dispatch"), 0);
    // The messages are on the bulk queue in round-robin order.
    assert_eq!(h.queue_depth(&crate::support::work_queue(&h)).await, 6);

    // With weight 3, a tenant gets three turns for the other's one.
    sqlx::query("UPDATE job_chunks SET status = 'done' WHERE released_at IS NOT NULL")
        .execute(&h.env.pool)
        .await
        .expect("finish");
    set_tenant(&h, a, json!({"weight": 3})).await;
    let before = (released(a).await, released(b).await);
    assert_eq!(dispatcher.dispatch_once().await.expect("dispatch"), 6);
    let after = (released(a).await - before.0, released(b).await - before.1);
    assert!(after.0 >= 4 && after.1 >= 1, "weighted shares: {after:?}");
    h.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_call_during_a_big_job_gets_its_result_and_waiters_are_bounded() {
    let h = Harness::new(
        &[
            ("GATEHOUSE_SYNC_WAIT_MS", "20000"),
            ("GATEHOUSE_MAX_SYNC_WAITERS", "2"),
        ],
        true,
    )
    .await;
    let worker = h.start_worker().await;
    let big = post(&h.app, &h.key, "/v1/jobs", &job(6000)).await;
    assert_eq!(big.status, StatusCode::ACCEPTED);
    let big_id = big.json()["id"].as_str().expect("id").to_string();
    // Wait until the big job is being worked on.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while h.job(&big_id).await["status"] != "running" {
        assert!(
            tokio::time::Instant::now() < deadline,
            "big job never started"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let started = tokio::time::Instant::now();
    let reply = post(
        &h.app,
        &h.key,
        "/v1/moderations",
        &json!({"input": "You are so dumb and stupid!"}),
    )
    .await;
    let took = started.elapsed();
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "the sync call was not answered"
    );
    assert_eq!(reply.json()["results"][0]["flagged"], true);
    let big_now = h.job(&big_id).await;
    assert_eq!(
        big_now["status"], "running",
        "the big job had already finished"
    );
    assert!(took < Duration::from_secs(10), "{took:?}");

    // Admission control: with every place taken, the next sync call is 503 at once.
    let permits: Vec<_> = (0..2)
        .map(|_| {
            h.state
                .sync_waiters
                .clone()
                .try_acquire_owned()
                .expect("place")
        })
        .collect();
    let refused = post(
        &h.app,
        &h.key,
        "/v1/moderations",
        &json!({"input": "hello"}),
    )
    .await;
    assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(refused.json()["code"], "overloaded");
    drop(permits);
    worker.stop().await;
    h.teardown().await;
}
