//! OTLP span export (`GATEHOUSE_OTLP_ENDPOINT`, issue 16) against a real OTLP/HTTP receiver:
//! a job's spans — api request, relay, worker chunk and below — arrive as one trace, the one
//! the client's `traceparent` named; the `gatehouse-api` binary exports under its service
//! name with the configured headers and flushes on SIGTERM; with the variable unset nothing
//! is exported. Its own test binary: the export installs the process-wide subscriber.

#[allow(dead_code)]
#[path = "it/support.rs"]
mod support;

use std::{
    collections::HashSet,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use axum::{
    body::Body,
    http::{Method, Request, StatusCode},
};
use gatehouse_common::{
    telemetry,
    testkit::{
        TestEnv,
        otlp::{OtlpReceiver, ReceivedSpan},
    },
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";

fn named<'a>(spans: &'a [ReceivedSpan], name: &str) -> Vec<&'a ReceivedSpan> {
    spans.iter().filter(|s| s.name == name).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jobs_spans_reach_the_collector_as_one_trace() {
    let receiver = OtlpReceiver::start().await;
    let h = support::Harness::new(&[("GATEHOUSE_OTLP_ENDPOINT", &receiver.endpoint)], true).await;
    let telemetry =
        telemetry::init_tracing(&h.env.config, "gatehouse-api").expect("build the exporter");
    assert!(telemetry.exporting());
    let worker = h.start_worker().await;

    let body = serde_json::json!({"kind": "moderate", "items": [
        {"custom_id": "a", "text": "have a lovely day"},
        {"custom_id": "b", "text": "you are an idiot"},
    ]});
    let request = Request::builder()
        .method(Method::POST)
        .uri("/v1/jobs")
        .header("authorization", format!("Bearer {}", h.key))
        .header("content-type", "application/json")
        .header("traceparent", format!("00-{TRACE_ID}-{CLIENT_SPAN}-01"))
        .body(Body::from(serde_json::to_vec(&body).expect("encode")))
        .expect("request");
    let reply = h.send(request).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED);
    let id = reply.json()["id"].as_str().expect("id").to_string();
    let job = h.wait_done(&id, Duration::from_secs(60)).await;
    assert_eq!(job["status"], "completed", "{job}");
    worker.stop().await;
    // Graceful shutdown flushes what the batch processor still holds.
    telemetry.shutdown().await;

    let spans = receiver
        .wait_for(Duration::from_secs(10), |spans| {
            ["request", "chunk", "store"]
                .iter()
                .all(|n| spans.iter().any(|s| &s.name == n && s.trace_id == TRACE_ID))
        })
        .await;
    assert!(receiver.rejected().is_empty(), "{:?}", receiver.rejected());
    let mine: Vec<ReceivedSpan> = spans
        .iter()
        .filter(|s| s.trace_id == TRACE_ID)
        .cloned()
        .collect();
    let names: HashSet<&str> = mine.iter().map(|s| s.name.as_str()).collect();
    for name in [
        "request",
        "chunk",
        "claim",
        "queue_wait",
        "inference",
        "batch",
        "store",
    ] {
        assert!(
            names.contains(name),
            "no `{name}` span in the trace: {names:?}"
        );
    }
    assert!(mine.iter().all(|s| s.service == "gatehouse-api"));

    // The intake span is the child of the client's span; the job stored the intake span.
    let posts: Vec<&ReceivedSpan> = named(&mine, "request")
        .into_iter()
        .filter(|s| s.attribute("method") == Some("POST"))
        .collect();
    let [intake] = posts.as_slice() else {
        panic!("one POST request span: {posts:#?}")
    };
    assert_eq!(intake.parent_span_id, CLIENT_SPAN);
    assert_eq!(intake.attribute("trace_id"), Some(TRACE_ID));
    let stored: Option<String> = sqlx::query_scalar("SELECT traceparent FROM jobs")
        .fetch_one(&h.env.pool)
        .await
        .expect("job");
    assert_eq!(
        stored.as_deref(),
        Some(format!("00-{TRACE_ID}-{}-01", intake.span_id).as_str())
    );

    // request → relay (or the dispatcher's publish) → chunk: the AMQP header named the
    // exported span.
    let hops: Vec<&ReceivedSpan> = mine
        .iter()
        .filter(|s| s.name == "relay" || s.name == "publish")
        .collect();
    assert!(!hops.is_empty(), "no relay/publish span: {names:?}");
    assert!(hops.iter().all(|s| s.parent_span_id == intake.span_id));
    let chunks = named(&mine, "chunk");
    for chunk in &chunks {
        assert!(
            hops.iter().any(|hop| hop.span_id == chunk.parent_span_id),
            "chunk's parent is not a relay/publish span: {chunk:#?}"
        );
        assert_eq!(chunk.attribute("span_id"), Some(chunk.span_id.as_str()));
    }
    // Below the chunk: claim, store and queue_wait are its children; inference is under
    // claim's sibling path and the batch under an inference.
    let chunk_ids: HashSet<&str> = chunks.iter().map(|c| c.span_id.as_str()).collect();
    for name in ["claim", "store", "queue_wait"] {
        for span in named(&mine, name) {
            assert!(
                chunk_ids.contains(span.parent_span_id.as_str()),
                "`{name}` is not under a chunk: {span:#?}"
            );
        }
    }
    let inference_ids: HashSet<&str> = named(&mine, "inference")
        .iter()
        .map(|s| s.span_id.as_str())
        .collect();
    for batch in named(&mine, "batch") {
        assert!(
            inference_ids.contains(batch.parent_span_id.as_str()),
            "batch is not under an inference span: {batch:#?}"
        );
    }
    h.teardown().await;
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// `gatehouse-api serve` on this test's database and queues, with `extra` variables.
fn serve(env: &TestEnv, listen: &str, extra: &[(&str, &str)]) -> Child {
    let cfg = &env.config;
    Command::new(env!("CARGO_BIN_EXE_gatehouse-api"))
        .arg("serve")
        .env_remove("GATEHOUSE_OTLP_ENDPOINT")
        .env_remove("GATEHOUSE_OTLP_HEADERS")
        .env("GATEHOUSE_DATABASE_URL", &cfg.database_url)
        .env("GATEHOUSE_AMQP_URL", &cfg.amqp_url)
        .env("GATEHOUSE_QUEUE_PREFIX", &cfg.queue_prefix)
        .env("GATEHOUSE_API_LISTEN", listen)
        .envs(extra.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn gatehouse-api")
}

async fn get(addr: &str, path: &str, traceparent: &str) -> Option<String> {
    let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    stream
        .write_all(
            format!("GET {path} HTTP/1.0\r\nHost: x\r\ntraceparent: {traceparent}\r\n\r\n")
                .as_bytes(),
        )
        .await
        .ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).await.ok()?;
    Some(text)
}

/// Waits for `/healthz`, sends one traced request, then SIGTERM; returns stderr.
async fn one_request_then_sigterm(mut child: Child, listen: &str, traceparent: &str) -> String {
    let started = Instant::now();
    loop {
        if let Some(reply) = get(listen, "/healthz", traceparent).await
            && reply.starts_with("HTTP/1.0 200")
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "api never answered"
        );
        assert!(
            child.try_wait().expect("poll").is_none(),
            "api exited early"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
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
            "api ignored SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        use std::io::Read;
        let _ = pipe.read_to_string(&mut stderr);
    }
    assert!(exit.success(), "exit {exit:?}: {stderr}");
    assert!(stderr.contains("api stopped"), "{stderr}");
    stderr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_binary_exports_under_its_name_and_flushes_on_sigterm() {
    let receiver = OtlpReceiver::start().await;
    let env = TestEnv::new(&[]).await;
    let listen = format!("127.0.0.1:{}", free_port());
    let trace_id = "0af7651916cd43dd8448eb211c80319c";
    let child = serve(
        &env,
        &listen,
        &[
            ("GATEHOUSE_OTLP_ENDPOINT", &receiver.endpoint),
            ("GATEHOUSE_OTLP_HEADERS", "authorization=Bearer otlp-s3cret"),
        ],
    );
    let stderr = one_request_then_sigterm(
        child,
        &listen,
        &format!("00-{trace_id}-b7ad6b7169203331-01"),
    )
    .await;
    // The flush on SIGTERM delivered the request span: nothing waits for a batch timer.
    let spans = receiver.spans();
    let request = spans
        .iter()
        .find(|s| s.name == "request" && s.trace_id == trace_id)
        .unwrap_or_else(|| panic!("no request span: {spans:#?}"));
    assert_eq!(request.service, "gatehouse-api");
    assert_eq!(request.parent_span_id, "b7ad6b7169203331");
    assert!(receiver.rejected().is_empty(), "{:?}", receiver.rejected());
    assert!(
        receiver.headers().iter().all(|h| h
            .iter()
            .any(|(k, v)| k == "authorization" && v == "Bearer otlp-s3cret")
            && h.iter()
                .any(|(k, v)| k == "content-type" && v == "application/x-protobuf")),
        "{:?}",
        receiver.headers()
    );
    // The header's value is a secret: never in the logs.
    assert!(!stderr.contains("otlp-s3cret"), "{stderr}");
    assert!(stderr.contains("exporting spans over OTLP"), "{stderr}");
    env.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_endpoint_unset_nothing_is_exported() {
    let receiver = OtlpReceiver::start().await;
    let env = TestEnv::new(&[]).await;
    let listen = format!("127.0.0.1:{}", free_port());
    // The SDK's own variable would point a default-built exporter at the receiver: ours
    // builds none, so it stays unused.
    let child = serve(
        &env,
        &listen,
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", &receiver.endpoint)],
    );
    let stderr = one_request_then_sigterm(
        child,
        &listen,
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    )
    .await;
    assert_eq!(receiver.requests(), 0, "{:?}", receiver.spans());
    assert!(!stderr.contains("OTLP"), "{stderr}");
    env.teardown().await;
}

#[test]
fn a_bad_endpoint_stops_start_up_naming_the_variable() {
    let out = Command::new(env!("CARGO_BIN_EXE_gatehouse-api"))
        .arg("serve")
        .env("GATEHOUSE_OTLP_ENDPOINT", "collector:4318")
        .output()
        .expect("run");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("GATEHOUSE_OTLP_ENDPOINT"), "{stderr}");
}
