//! The official `openai` Python client (pinned in scripts/requirements.txt) against a real
//! Gatehouse: the api on a TCP port, the outbox relay and dispatcher, a worker with both
//! moderation models (and the translation model).

use std::{path::PathBuf, process::Command, time::Duration};

use serde_json::Value;

use crate::support::{GUARD_MODELS, Harness, new_key};

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// Serves the harness's app on a TCP port and runs `script` against it with `key`; returns
/// the script's last stdout line (its JSON summary).
async fn run_script(h: &Harness, script: &str, key: &str, timeout: Duration) -> Value {
    let python = repo_root().join(".cache/venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run `bash scripts/python-env.sh` (or `make test`)",
        python.display()
    );
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

    let script = repo_root().join(script);
    let base_url = format!("http://{addr}/v1");
    let key = key.to_string();
    let output = tokio::time::timeout(
        timeout,
        tokio::task::spawn_blocking(move || {
            Command::new(python)
                .arg(script)
                .args(["--base-url", &base_url, "--api-key", &key])
                .env("OPENAI_LOG", "")
                .output()
        }),
    )
    .await
    .expect("script finished in time")
    .expect("join")
    .expect("run python");
    stop.cancel();
    server.abort();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "script failed:\nstdout: {stdout}\nstderr: {stderr}"
    );
    serde_json::from_str(stdout.lines().last().unwrap_or_default()).expect("summary line")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_openai_client_parses_our_moderations() {
    let h = Harness::new(&[GUARD_MODELS], true).await;
    let worker = h.start_worker().await;
    let line = run_script(
        &h,
        "api/tests/openai_interop.py",
        &h.key,
        Duration::from_secs(180),
    )
    .await;
    assert_eq!(line["ok"], true);
    assert_eq!(line["results"][0]["violence"], true);
    assert_eq!(line["results"][1]["harassment"], true);
    assert_eq!(line["results"][2]["flagged"], false);
    worker.stop().await;
    h.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_openai_client_runs_a_batch_end_to_end() {
    let h = Harness::new(&[GUARD_MODELS], true).await;
    let tenant = h.tenant_id().await;
    sqlx::query("UPDATE tenants SET scopes = '{moderate,translate}' WHERE tenant_id = $1")
        .bind(tenant)
        .execute(&h.env.pool)
        .await
        .expect("grant translate");
    let key = new_key(&h.state, tenant, &["moderate", "translate"]).await;
    let worker = h.start_worker().await;
    let line = run_script(
        &h,
        "api/tests/openai_batches.py",
        &key,
        Duration::from_secs(300),
    )
    .await;
    assert_eq!(line["ok"], true);
    assert_eq!(line["flagged"]["threat"], serde_json::json!([true]));
    assert_eq!(line["translated"]["t0"], "I don't know.");
    worker.stop().await;
    h.teardown().await;
}
