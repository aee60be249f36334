//! Delivery under faults (issue 16): quorum queues with a delivery limit and dead-lettering,
//! exponential backoff through the delay queues, permanent errors never retried, the chunk
//! deadline, and the migration of an older deployment's classic queues. Real RabbitMQ, each
//! test under its own queue prefix.

use std::{collections::BTreeSet, time::Duration};

use gatehouse_common::queue::{self, Publisher, migrate};
use lapin::{
    ExchangeKind,
    options::{
        BasicGetOptions, BasicNackOptions, ExchangeDeclareOptions, QueueBindOptions,
        QueueDeclareOptions,
    },
    types::{AMQPValue, FieldTable},
};
use serde_json::json;

use crate::support::{BENIGN, Harness, work_queue};

fn texts(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{BENIGN} #{i}")).collect()
}

async fn channel(h: &Harness) -> (lapin::Connection, lapin::Channel) {
    let conn = queue::connect(&h.env.config.amqp_url, "test")
        .await
        .expect("amqp");
    let channel = conn.create_channel().await.expect("channel");
    (conn, channel)
}

/// Declaring `name` as a classic queue fails iff it exists with other arguments.
async fn is_not_classic(h: &Harness, name: &str) -> bool {
    let (conn, ch) = channel(h).await;
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("classic".into()),
    );
    let refused = ch
        .queue_declare(name.into(), QueueDeclareOptions::durable(), args)
        .await
        .is_err();
    let _ = conn.close(200, "bye".into()).await;
    refused
}

async fn declare_topology(h: &Harness) {
    let (conn, ch) = channel(h).await;
    h.topology().declare(&ch).await.expect("declare");
    let _ = conn.close(200, "bye".into()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_queues_are_quorum_and_dead_letter_a_message_past_its_delivery_limit() {
    let h = Harness::new(
        &[
            ("GATEHOUSE_QUEUE_DELIVERY_LIMIT", "2"),
            ("GATEHOUSE_MAX_ATTEMPTS", "1"),
        ],
        false,
    )
    .await;
    declare_topology(&h).await;
    let t = h.topology();
    for name in t.work_queues().iter().chain([&t.dead_queue()]) {
        assert!(is_not_classic(&h, name).await, "{name} is a classic queue");
    }
    for tier in t.retry_tiers() {
        assert!(is_not_classic(&h, &tier.name).await, "{}", tier.name);
    }

    // A message requeued past the limit (as crashes would) lands in <p>.dead, not nowhere.
    let (conn, ch) = channel(&h).await;
    let publisher = Publisher::new(&conn).await.expect("publisher");
    publisher
        .publish(
            &t.jobs_exchange(),
            "moderate",
            b"{\"poison\":true}",
            FieldTable::default(),
        )
        .await
        .expect("publish");
    let mut deliveries = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while h.queue_depth(&t.dead_queue()).await == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never dead-lettered"
        );
        if let Some(got) = ch
            .basic_get(work_queue(&h).as_str().into(), BasicGetOptions::default())
            .await
            .expect("get")
        {
            deliveries += 1;
            got.delivery
                .nack(BasicNackOptions {
                    requeue: true,
                    multiple: false,
                })
                .await
                .expect("nack");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(h.queue_depth(&work_queue(&h)).await, 0);
    assert!(
        deliveries >= 2,
        "dead-lettered after {deliveries} deliveries"
    );
    let _ = conn.close(200, "bye".into()).await;
    h.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transient_failure_backs_off_through_longer_delay_queues_then_gives_up() {
    let h = Harness::new(
        &[
            ("GATEHOUSE_RETRY_DELAY_MS", "300"),
            ("GATEHOUSE_RETRY_TIERS", "2"),
            ("GATEHOUSE_MAX_ATTEMPTS", "3"),
            ("GATEHOUSE_CHUNK_ITEMS", "10"),
        ],
        true,
    )
    .await;
    // A real transient fault: Postgres refuses every succeeded result (failures still go in).
    sqlx::query(
        "ALTER TABLE job_results ADD CONSTRAINT chaos_no_success CHECK (status <> 'succeeded') NOT VALID",
    )
    .execute(&h.env.pool)
    .await
    .expect("constraint");
    let worker = h.start_worker().await;
    let id = h.submit(&texts(10)).await;
    let tiers = h.topology().retry_tiers();
    assert_eq!(
        tiers[0].name,
        format!("{}.retry.300ms", h.topology().prefix())
    );
    assert_eq!(
        tiers[1].name,
        format!("{}.retry.1200ms", h.topology().prefix())
    );
    let mut seen = BTreeSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while h.job(&id).await["status"] != "failed" {
        assert!(tokio::time::Instant::now() < deadline, "never gave up");
        for tier in &tiers {
            if h.queue_depth(&tier.name).await > 0 {
                seen.insert(tier.name.clone());
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Attempt 1 failed → the 300 ms queue; attempts 2 and 3 → the 1.2 s queue; the 4th claim
    // gives up.
    assert_eq!(
        seen,
        tiers
            .iter()
            .map(|t| t.name.clone())
            .collect::<BTreeSet<_>>()
    );
    assert_eq!(
        h.scalar("SELECT max(attempts)::int8 FROM job_chunks").await,
        4
    );
    let lines = h.results(&id).await;
    assert_eq!(lines.len(), 10);
    let error = &lines[0]["error"];
    assert_eq!(error["code"], "attempts_exhausted", "{error}");
    assert!(
        error["message"]
            .as_str()
            .is_some_and(|m| m.contains("gave up after 3 attempts") && m.contains("database")),
        "{error}"
    );
    // Given up = rejected into the dead-letter queue, nothing left anywhere else.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while h.queue_depth(&h.topology().dead_queue()).await != 1 {
        assert!(tokio::time::Instant::now() < deadline, "not dead-lettered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for tier in &tiers {
        assert_eq!(h.queue_depth(&tier.name).await, 0);
    }
    worker.stop().await;
    h.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permanent_error_fails_the_items_at_once_and_is_never_retried() {
    let h = Harness::new(&[("GATEHOUSE_CHUNK_ITEMS", "10")], false).await;
    let id = h.submit(&texts(10)).await;
    // The job's stored policy version is unreadable (PolicyLoadError::Invalid).
    let tenant = h.tenant_id().await;
    sqlx::query(
        "INSERT INTO moderation_policies (tenant_id, version, policy, created_by) VALUES ($1, 7, '\"garbage\"', 'test')",
    )
    .bind(tenant.0)
    .execute(&h.env.pool)
    .await
    .expect("policy");
    sqlx::query("UPDATE jobs SET policy_version = 7")
        .execute(&h.env.pool)
        .await
        .expect("version");
    let mut h = h;
    h.start_relay();
    let worker = h.start_worker().await;
    let job = h.wait_done(&id, Duration::from_secs(60)).await;
    assert_eq!(job["status"], "failed", "{job}");
    assert_eq!(
        h.scalar("SELECT max(attempts)::int8 FROM job_chunks").await,
        1
    );
    // (Read from the table: the api cannot render results under an unreadable policy.)
    assert_eq!(
        h.scalar("SELECT count(*) FROM job_results WHERE error->>'code' = 'invalid_policy'")
            .await,
        10
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while h.queue_depth(&h.topology().dead_queue()).await != 1 {
        assert!(tokio::time::Instant::now() < deadline, "not dead-lettered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for tier in h.topology().retry_tiers() {
        assert_eq!(h.queue_depth(&tier.name).await, 0);
    }
    worker.stop().await;
    h.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_past_its_deadline_is_abandoned_before_the_consumer_timeout_and_retried() {
    // A 1 ms deadline: every attempt is abandoned, retried, and the chunk finally given up.
    let h = Harness::new(
        &[
            ("GATEHOUSE_CHUNK_DEADLINE_MS", "1"),
            ("GATEHOUSE_MAX_ATTEMPTS", "2"),
            ("GATEHOUSE_RETRY_DELAY_MS", "100"),
            ("GATEHOUSE_RETRY_TIERS", "1"),
            ("GATEHOUSE_CHUNK_ITEMS", "10"),
        ],
        true,
    )
    .await;
    let worker = h.start_worker().await;
    let id = h.submit(&texts(10)).await;
    let job = h.wait_done(&id, Duration::from_secs(60)).await;
    assert_eq!(job["status"], "failed", "{job}");
    let lines = h.results(&id).await;
    let error = &lines[0]["error"];
    assert_eq!(error["code"], "attempts_exhausted");
    assert!(
        error["message"]
            .as_str()
            .is_some_and(|m| m.contains("chunk deadline exceeded")),
        "{error}"
    );
    worker.stop().await;
    h.teardown().await;
}

/// The topology of a deployment from before the quorum queues (classic queues, one retry
/// queue), as its code declared it.
async fn declare_classic_topology(h: &Harness) {
    let t = h.topology();
    let p = t.prefix().to_string();
    let (conn, ch) = channel(h).await;
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    };
    for (name, kind) in [
        (format!("{p}.jobs"), ExchangeKind::Direct),
        (format!("{p}.dead"), ExchangeKind::Fanout),
        (format!("{p}.retry"), ExchangeKind::Fanout),
    ] {
        ch.exchange_declare(name.as_str().into(), kind, durable, FieldTable::default())
            .await
            .expect("exchange");
    }
    let dlx = |to: String| {
        let mut args = FieldTable::default();
        args.insert(
            "x-dead-letter-exchange".into(),
            AMQPValue::LongString(to.into()),
        );
        args
    };
    let mut queues = vec![(
        format!("{p}.dead"),
        FieldTable::default(),
        format!("{p}.dead"),
        String::new(),
    )];
    for key in [
        "moderate",
        "moderate.sync",
        "translate",
        "translate.sync",
        "moderate_translate",
        "moderate_translate.sync",
    ] {
        queues.push((
            format!("{p}.{key}"),
            dlx(format!("{p}.dead")),
            format!("{p}.jobs"),
            key.to_string(),
        ));
    }
    let mut retry = dlx(format!("{p}.jobs"));
    retry.insert("x-message-ttl".into(), AMQPValue::LongLongInt(3_600_000));
    queues.push((
        format!("{p}.retry"),
        retry,
        format!("{p}.retry"),
        String::new(),
    ));
    for (name, args, exchange, key) in queues {
        ch.queue_declare(name.as_str().into(), QueueDeclareOptions::durable(), args)
            .await
            .expect("classic queue");
        ch.queue_bind(
            name.as_str().into(),
            exchange.as_str().into(),
            key.as_str().into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("bind");
    }
    let _ = conn.close(200, "bye".into()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_queues_migrate_moves_classic_queues_to_quorum_without_losing_a_message() {
    let h = Harness::new(&[("GATEHOUSE_CHUNK_ITEMS", "10")], false).await;
    declare_classic_topology(&h).await;
    let p = h.topology().prefix().to_string();
    // The new code refuses the old queues (406): the migration is needed.
    let (conn, ch) = channel(&h).await;
    assert!(h.topology().declare(&ch).await.is_err());
    let _ = conn.close(200, "bye".into()).await;

    // An older deployment's messages: 3 chunks waiting, 2 in the old retry queue, 1 dead letter.
    let id = h.submit(&texts(50)).await;
    let messages = h.chunk_messages().await;
    assert_eq!(messages.len(), 5);
    let (conn, _) = channel(&h).await;
    let publisher = Publisher::new(&conn).await.expect("publisher");
    for (i, message) in messages.iter().enumerate() {
        let exchange = if i < 3 {
            format!("{p}.jobs")
        } else {
            format!("{p}.retry")
        };
        publisher
            .publish(
                &exchange,
                "moderate",
                &serde_json::to_vec(message).expect("json"),
                FieldTable::default(),
            )
            .await
            .expect("publish");
    }
    publisher
        .publish(
            &format!("{p}.dead"),
            "",
            b"{\"old\":\"dead letter\"}",
            FieldTable::default(),
        )
        .await
        .expect("publish dead");
    sqlx::query("UPDATE job_chunks SET released_at = now()")
        .execute(&h.env.pool)
        .await
        .expect("released");

    let report = migrate::migrate(&conn, &h.topology())
        .await
        .expect("migrate");
    let by_queue = |name: &str| report.iter().find(|r| r.queue == name).cloned();
    let moderate = by_queue(&format!("{p}.moderate")).expect("moderate");
    assert_eq!((moderate.action, moderate.messages), ("migrated", 3));
    let dead = by_queue(&format!("{p}.dead")).expect("dead");
    assert_eq!((dead.action, dead.messages), ("migrated", 1));
    let old_retry = by_queue(&format!("{p}.retry")).expect("old retry");
    assert_eq!((old_retry.action, old_retry.messages), ("removed", 2));
    assert_eq!(h.queue_depth(&format!("{p}.moderate")).await, 5);
    assert_eq!(h.queue_depth(&format!("{p}.dead")).await, 1);
    assert!(is_not_classic(&h, &format!("{p}.moderate")).await);
    assert!(is_not_classic(&h, &format!("{p}.dead")).await);

    // On a broker with nothing declared yet it only declares.
    let fresh = gatehouse_common::queue::Topology::new(format!("{p}_fresh"));
    let report_fresh = migrate::migrate(&conn, &fresh).await.expect("fresh");
    assert!(
        report_fresh.iter().all(|r| r.action == "current"),
        "{report_fresh:?}"
    );
    let (fresh_conn, fresh_ch) = channel(&h).await;
    fresh.delete(&fresh_ch).await.expect("delete fresh");
    let _ = fresh_conn.close(200, "bye".into()).await;

    // Idempotent: a second run finds everything current.
    let again = migrate::migrate(&conn, &h.topology())
        .await
        .expect("migrate again");
    assert!(again.iter().all(|r| r.action == "current"), "{again:?}");
    let _ = conn.close(200, "bye".into()).await;

    // The new workers take the carried-over chunks: the job completes, exactly once.
    let worker = h.start_worker().await;
    let job = h.wait_done(&id, Duration::from_secs(60)).await;
    assert_eq!(
        job["counts"],
        json!({"total": 50, "succeeded": 50, "failed": 0, "cancelled": 0})
    );
    assert_eq!(
        h.scalar("SELECT count(*) FROM audit_events WHERE action = 'job.chunk.processed'")
            .await,
        5
    );
    worker.stop().await;
    h.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_traceparent_set_at_intake_reaches_the_worker_through_the_amqp_headers() {
    use axum::{body::Body, http::Request};
    let mut h = Harness::new(&[("GATEHOUSE_CHUNK_ITEMS", "10")], false).await;
    let client = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let items: Vec<_> = texts(20).into_iter().map(|t| json!({"text": t})).collect();
    let request = Request::builder()
        .method("POST")
        .uri("/v1/jobs")
        .header("authorization", format!("Bearer {}", h.key))
        .header("content-type", "application/json")
        .header("traceparent", client)
        .body(Body::from(
            serde_json::to_vec(&json!({"kind": "moderate", "items": items})).expect("json"),
        ))
        .expect("request");
    let reply = h.send(request).await;
    assert_eq!(reply.status, axum::http::StatusCode::ACCEPTED);
    let id = reply.json()["id"].as_str().expect("id").to_string();

    // Stored with the job: the same trace, the api's intake span as the parent.
    let stored: String = sqlx::query_scalar("SELECT traceparent FROM jobs")
        .fetch_one(&h.env.pool)
        .await
        .expect("traceparent");
    let stored = gatehouse_common::trace::TraceParent::parse(&stored).expect("valid");
    assert_eq!(stored.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_ne!(stored.span_id_hex(), "00f067aa0ba902b7");

    // In the AMQP headers of the chunk messages the dispatcher (or relay) publishes.
    declare_topology(&h).await;
    h.start_relay();
    let (conn, ch) = channel(&h).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let got = loop {
        if let Some(got) = ch
            .basic_get(work_queue(&h).as_str().into(), BasicGetOptions::default())
            .await
            .expect("get")
        {
            break got;
        }
        assert!(tokio::time::Instant::now() < deadline, "nothing published");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let header = gatehouse_common::trace::TraceParent::from_headers(
        got.delivery.properties.headers().as_ref(),
    );
    // The same trace; the parent is the publishing (`publish`/`relay`) span, a child of the
    // intake span (with OTLP export on, the exported span's own id).
    let header = header.expect("a traceparent header");
    assert_eq!(header.trace_id, stored.trace_id);
    assert_eq!(header.flags, stored.flags);
    assert_ne!(header.parent_id, stored.parent_id);
    got.delivery
        .nack(BasicNackOptions {
            requeue: true,
            multiple: false,
        })
        .await
        .expect("requeue");
    let _ = conn.close(200, "bye".into()).await;

    // The worker's chunk records carry the trace.
    let worker = h.start_worker().await;
    h.wait_done(&id, Duration::from_secs(60)).await;
    assert_eq!(
        h.scalar(
            "SELECT count(*) FROM audit_events WHERE action = 'job.chunk.processed' \
             AND details->>'trace_id' = '4bf92f3577b34da6a3ce929d0e0e4736'"
        )
        .await,
        2
    );
    worker.stop().await;
    h.teardown().await;
}
