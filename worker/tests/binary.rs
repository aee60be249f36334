//! The `gatehouse-worker` binary: clear start-up errors, and SIGTERM stops it cleanly.

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use gatehouse_common::testkit::TestEnv;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn worker() -> Command {
    Command::new(env!("CARGO_BIN_EXE_gatehouse-worker"))
}

#[test]
fn a_wrong_value_names_its_variable() {
    let out = worker()
        .env("GATEHOUSE_WORKER_LISTEN", "nope")
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("GATEHOUSE_WORKER_LISTEN"));
}

#[test]
fn a_missing_onnx_runtime_says_how_to_get_it() {
    let out = worker()
        .env("ORT_DYLIB_PATH", "/nonexistent/libonnxruntime.so")
        .output()
        .expect("run");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("/nonexistent/libonnxruntime.so"),
        "{stderr}"
    );
    assert!(
        stderr.contains("make models") && stderr.contains("ORT_DYLIB_PATH"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unmigrated_database_is_refused() {
    let env = TestEnv::new(&[]).await;
    sqlx::query("DROP TABLE _sqlx_migrations")
        .execute(&env.pool)
        .await
        .expect("forget migrations");
    let out = worker()
        .env("GATEHOUSE_DATABASE_URL", &env.config.database_url)
        .env("GATEHOUSE_MODELS_DIR", &env.config.models_dir)
        .env("ORT_DYLIB_PATH", &env.config.ort_dylib_path)
        .env("GATEHOUSE_WORKER_LISTEN", "127.0.0.1:0")
        .output()
        .expect("run");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("gatehouse-api migrate"), "{stderr}");
    env.teardown().await;
}

async fn get(addr: &str, path: &str) -> Option<String> {
    let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).await.ok()?;
    Some(text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_the_worker_cleanly() {
    let env = TestEnv::new(&[]).await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let listen = format!("127.0.0.1:{port}");
    let cfg = &env.config;
    let mut child = worker()
        .env("GATEHOUSE_DATABASE_URL", &cfg.database_url)
        .env("GATEHOUSE_AMQP_URL", &cfg.amqp_url)
        .env("GATEHOUSE_QUEUE_PREFIX", &cfg.queue_prefix)
        .env("GATEHOUSE_WORKER_LISTEN", &listen)
        .env("GATEHOUSE_MODELS_DIR", &cfg.models_dir)
        .env("ORT_DYLIB_PATH", &cfg.ort_dylib_path)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn worker");

    let started = Instant::now();
    loop {
        if let Some(reply) = get(&listen, "/healthz").await
            && reply.starts_with("HTTP/1.0 200")
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "worker never became healthy"
        );
        assert!(
            child.try_wait().expect("poll").is_none(),
            "worker exited early"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let metrics = get(&listen, "/metrics").await.expect("metrics");
    assert!(metrics.starts_with("HTTP/1.0 200"));
    // The consumer declared this test's queues.
    let conn = gatehouse_common::queue::connect(&cfg.amqp_url, "test")
        .await
        .expect("amqp");
    let channel = conn.create_channel().await.expect("channel");
    let mut declared = false;
    for _ in 0..100 {
        let probe = conn.create_channel().await.expect("channel");
        if probe
            .queue_declare(
                env.topology()
                    .work_queue(gatehouse_common::types::JobKind::Moderate)
                    .into(),
                lapin::options::QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                lapin::types::FieldTable::default(),
            )
            .await
            .is_ok()
        {
            declared = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(declared, "work queue was not declared");
    drop(channel);
    let _ = conn.close(200, "bye".into()).await;

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let stopped = Instant::now();
    let exit = loop {
        if let Some(exit) = child.try_wait().expect("poll") {
            break exit;
        }
        assert!(
            stopped.elapsed() < Duration::from_secs(30),
            "worker ignored SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        use std::io::Read;
        let _ = pipe.read_to_string(&mut stderr);
    }
    assert!(exit.success(), "exit {exit:?}: {stderr}");
    assert!(stderr.contains("worker stopped"), "{stderr}");
    env.teardown().await;
}

/// With `GATEHOUSE_OTLP_ENDPOINT`, a chunk's spans leave the worker binary as
/// `gatehouse-worker`, in the trace of the message's `traceparent`, flushed on SIGTERM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_binary_exports_a_chunks_spans() {
    use gatehouse_common::{
        job::Lane,
        queue::{Broker, ChunkMessage, QueueMessage},
        testkit::otlp::OtlpReceiver,
        trace::TraceParent,
        types::{JobId, JobKind, TenantId},
    };
    let receiver = OtlpReceiver::start().await;
    let env = TestEnv::new(&[]).await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let listen = format!("127.0.0.1:{port}");
    let cfg = &env.config;
    let mut child = worker()
        .env("GATEHOUSE_DATABASE_URL", &cfg.database_url)
        .env("GATEHOUSE_AMQP_URL", &cfg.amqp_url)
        .env("GATEHOUSE_QUEUE_PREFIX", &cfg.queue_prefix)
        .env("GATEHOUSE_WORKER_LISTEN", &listen)
        .env("GATEHOUSE_MODELS_DIR", &cfg.models_dir)
        .env("ORT_DYLIB_PATH", &cfg.ort_dylib_path)
        .env("GATEHOUSE_MODERATION_MODELS", "toxic-bilstm")
        .env("GATEHOUSE_OTLP_ENDPOINT", &receiver.endpoint)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn worker");
    let started = Instant::now();
    loop {
        if let Some(reply) = get(&listen, "/healthz").await
            && reply.starts_with("HTTP/1.0 200")
        {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "never healthy");
        assert!(child.try_wait().expect("poll").is_none(), "exited early");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A chunk of a job that does not exist: the worker claims nothing and acks, which is
    // enough for its `chunk` and `claim` spans.
    let parent = TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        .expect("valid");
    let message = QueueMessage::ChunkV1(ChunkMessage {
        job_id: JobId::new(),
        tenant_id: TenantId::new(),
        kind: JobKind::Moderate,
        chunk_index: 0,
        item_start: 0,
        item_end: 1,
        lane: Lane::Bulk,
    });
    let broker = Broker::new(&cfg.amqp_url, "otlp-test", env.topology());
    broker
        .publisher()
        .await
        .expect("publisher")
        .publish(
            &env.topology().jobs_exchange(),
            &message.routing_key(),
            &serde_json::to_vec(&message).expect("encode"),
            parent.to_headers(),
        )
        .await
        .expect("publish");
    broker.close().await;
    // The consumer may still be declaring its queues: wait for the chunk's span.
    // Spans wait in the batch processor (5 s) unless the process flushes on exit.
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline && !receiver.spans().iter().any(|s| s.name == "chunk") {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let stopped = Instant::now();
    let exit = loop {
        if let Some(exit) = child.try_wait().expect("poll") {
            break exit;
        }
        assert!(
            stopped.elapsed() < Duration::from_secs(30),
            "ignored SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        use std::io::Read;
        let _ = pipe.read_to_string(&mut stderr);
    }
    assert!(exit.success(), "exit {exit:?}: {stderr}");
    let spans = receiver.spans();
    let chunk = spans
        .iter()
        .find(|s| s.name == "chunk")
        .unwrap_or_else(|| panic!("no chunk span: {spans:#?}\n{stderr}"));
    assert_eq!(chunk.service, "gatehouse-worker");
    assert_eq!(chunk.trace_id, parent.trace_id_hex());
    assert_eq!(chunk.parent_span_id, parent.span_id_hex());
    assert!(
        spans
            .iter()
            .any(|s| s.name == "claim" && s.parent_span_id == chunk.span_id),
        "{spans:#?}"
    );
    assert!(receiver.rejected().is_empty(), "{:?}", receiver.rejected());
    env.teardown().await;
}
