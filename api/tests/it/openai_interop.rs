//! The official `openai` Python client (pinned in scripts/requirements.txt) against a real
//! Gatehouse: the api on a TCP port, the outbox relay, a worker with both moderation models.

use std::{path::PathBuf, process::Command, time::Duration};

use crate::support::{GUARD_MODELS, Harness};

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_openai_client_parses_our_moderations() {
    let python = repo_root().join(".cache/venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run `bash scripts/python-env.sh` (or `make test`)",
        python.display()
    );
    let h = Harness::new(&[GUARD_MODELS], true).await;
    let worker = h.start_worker().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    let app = gatehouse_api::app(h.state.clone());
    let limits = h.state.config.server;
    let stop = tokio_util::sync::CancellationToken::new();
    let server = tokio::spawn(gatehouse_api::server::serve(
        listener,
        app,
        limits,
        stop.clone(),
    ));

    let script = repo_root().join("api/tests/openai_interop.py");
    let base_url = format!("http://{addr}/v1");
    let key = h.key.clone();
    let output = tokio::time::timeout(
        Duration::from_secs(180),
        tokio::task::spawn_blocking(move || {
            Command::new(python)
                .arg(script)
                .args(["--base-url", &base_url, "--api-key", &key])
                .env("OPENAI_LOG", "")
                .output()
        }),
    )
    .await
    .expect("interop script finished in time")
    .expect("join")
    .expect("run python");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "interop failed:\nstdout: {stdout}\nstderr: {stderr}"
    );
    let line: serde_json::Value =
        serde_json::from_str(stdout.lines().last().unwrap_or_default()).expect("summary line");
    assert_eq!(line["ok"], true);
    assert_eq!(line["results"][0]["violence"], true);
    assert_eq!(line["results"][1]["harassment"], true);
    assert_eq!(line["results"][2]["flagged"], false);

    server.abort();
    worker.stop().await;
    h.teardown().await;
}
