//! Outbound webhooks (issue 12): the endpoint API (`api.rs`), deliveries to a real receiver on
//! 127.0.0.1 with the real worker (`delivery.rs`, `recovery.rs`, `limits.rs`), and the address
//! rules (`ssrf.rs`). Signatures are verified with the official `standardwebhooks` Python package.

mod api;
mod delivery;
mod limits;
mod recovery;
mod ssrf;

use std::{
    collections::{BTreeMap, VecDeque},
    net::SocketAddr,
    path::PathBuf,
    process::Command,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    Router,
    body::Bytes,
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
};
use gatehouse_common::types::Role;
use serde_json::{Value, json};
use tokio::{net::TcpListener, sync::Notify, task::JoinHandle};

use crate::support::{Harness, new_key, new_user};

/// A delivery test's settings: loopback allowed, http allowed, a short retry schedule, quick
/// polling, secrets encrypted at rest.
pub const FAST: &[(&str, &str)] = &[
    ("GATEHOUSE_WEBHOOK_ALLOW_HTTP", "true"),
    ("GATEHOUSE_WEBHOOK_ALLOW_CIDRS", "127.0.0.1/32"),
    ("GATEHOUSE_WEBHOOK_RETRY_SCHEDULE_SECS", "1,1,1"),
    ("GATEHOUSE_WEBHOOK_RETRY_JITTER_PERCENT", "10"),
    ("GATEHOUSE_WEBHOOK_POLL_MS", "100"),
    ("GATEHOUSE_WEBHOOK_TIMEOUT_MS", "3000"),
    ("GATEHOUSE_WEBHOOK_LEASE_SECS", "4"),
    (
        "GATEHOUSE_WEBHOOK_SECRET_KEY",
        "q83vEjRWeJq83vEjRWeJq83vEjRWeJq83vEjRWeJq80=",
    ),
];

/// `FAST` with `extra` laid over it.
pub fn settings<'a>(extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut all: Vec<(&str, &str)> = FAST.to_vec();
    for (k, v) in extra {
        all.retain(|(key, _)| key != k);
        all.push((k, v));
    }
    all
}

/// One scripted answer of the receiver.
#[derive(Clone, Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub delay: Duration,
    pub body: String,
}

impl Answer {
    pub fn status(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
            delay: Duration::ZERO,
            body: String::new(),
        }
    }

    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    pub fn delayed(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    pub fn body(mut self, body: impl Into<String>) -> Self {
        self.body = body.into();
        self
    }
}

/// One request the receiver got.
#[derive(Clone, Debug)]
pub struct Received {
    pub at: Instant,
    pub path: String,
    pub headers: BTreeMap<String, String>,
    pub body: String,
}

impl Received {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).expect("a JSON body")
    }

    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).map(String::as_str).unwrap_or("")
    }
}

#[derive(Default)]
struct Inbox {
    received: Mutex<Vec<Received>>,
    script: Mutex<VecDeque<Answer>>,
    arrived: Notify,
}

/// A webhook receiver on 127.0.0.1: records every request, answers from its script (then 200).
pub struct Receiver {
    pub addr: SocketAddr,
    inbox: Arc<Inbox>,
    task: JoinHandle<()>,
}

impl Receiver {
    pub async fn start() -> Self {
        Self::on(TcpListener::bind("127.0.0.1:0").await.expect("bind")).await
    }

    pub async fn on(listener: TcpListener) -> Self {
        let addr = listener.local_addr().expect("address");
        let inbox = Arc::new(Inbox::default());
        let shared = inbox.clone();
        let app = Router::new().fallback(
            move |uri: axum::http::Uri, headers: HeaderMap, body: Bytes| {
                let inbox = shared.clone();
                async move { answer(&inbox, uri.path().to_string(), headers, body).await }
            },
        );
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, inbox, task }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn script(&self, answers: impl IntoIterator<Item = Answer>) {
        self.inbox.script.lock().expect("lock").extend(answers);
    }

    pub fn received(&self) -> Vec<Received> {
        self.inbox.received.lock().expect("lock").clone()
    }

    /// Waits until at least `n` requests arrived (panics after `timeout`).
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let got = self.received();
            if got.len() >= n {
                return got;
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            assert!(
                !left.is_zero(),
                "the receiver got {} of {n} requests in {timeout:?}: {got:?}",
                got.len()
            );
            let _ = tokio::time::timeout(
                left.min(Duration::from_millis(200)),
                self.inbox.arrived.notified(),
            )
            .await;
        }
    }

    pub fn stop(self) {
        self.task.abort();
    }
}

async fn answer(inbox: &Inbox, path: String, headers: HeaderMap, body: Bytes) -> Response {
    let headers = headers
        .iter()
        .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    inbox.received.lock().expect("lock").push(Received {
        at: Instant::now(),
        path,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    });
    inbox.arrived.notify_waiters();
    let scripted = inbox.script.lock().expect("lock").pop_front();
    let Some(a) = scripted else {
        return (StatusCode::OK, "ok").into_response();
    };
    if !a.delay.is_zero() {
        tokio::time::sleep(a.delay).await;
    }
    let mut response = (StatusCode::from_u16(a.status).expect("status"), a.body).into_response();
    for (name, value) in a.headers {
        response
            .headers_mut()
            .insert(name, value.parse().expect("header value"));
    }
    response
}

/// A tenant admin of acme (`alice`), logged in.
pub async fn admin(h: &Harness) -> String {
    let acme = h.tenant_id().await;
    new_user(&h.state, Some(acme), "alice", Role::Admin).await;
    h.login(Some("acme"), "alice").await
}

/// A key of acme holding the `webhooks` scope (the tenant is granted it).
pub async fn webhooks_key(h: &Harness) -> String {
    let acme = h.tenant_id().await;
    sqlx::query("UPDATE tenants SET scopes = '{moderate,webhooks}' WHERE tenant_id = $1")
        .bind(acme.0)
        .execute(&h.env.pool)
        .await
        .expect("grant webhooks");
    new_key(&h.state, acme, &["moderate", "webhooks"]).await
}

/// `POST /v1/webhooks/endpoints` as `bearer`: the endpoint (with its `secret`).
pub async fn create_endpoint(h: &Harness, bearer: &str, body: Value) -> Value {
    let reply = h
        .call(
            axum::http::Method::POST,
            "/v1/webhooks/endpoints",
            Some(bearer),
            Some(body),
        )
        .await;
    assert_eq!(
        reply.status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    reply.json()
}

/// The message ids of a job's webhook events, by type.
pub async fn job_events(h: &Harness, job: &str) -> Vec<(String, String)> {
    let id: gatehouse_common::types::JobId = job.parse().expect("job id");
    sqlx::query_as::<_, (uuid::Uuid, String)>(
        "SELECT message_id, event_type FROM webhook_messages WHERE job_id = $1 ORDER BY message_id",
    )
    .bind(id.0)
    .fetch_all(&h.env.pool)
    .await
    .expect("messages")
    .into_iter()
    .map(|(m, t)| (gatehouse_common::types::MessageId(m).to_string(), t))
    .collect()
}

/// Waits until `sql` (a count) reaches `want`.
pub async fn eventually(h: &Harness, sql: &str, want: i64, timeout: Duration) {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let got = h.scalar(sql).await;
        if got == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "`{sql}` is {got}, not {want}, after {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// Verifies each `(secret, request)` with the official `standardwebhooks` package
/// (`Webhook(secret).verify(body, headers)`): whether it verified.
pub fn verify_with_standardwebhooks(cases: &[(&str, &Received)]) -> Vec<bool> {
    let python = repo_root().join(".cache/venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run `bash scripts/python-env.sh` (or `make test`)",
        python.display()
    );
    let input: Vec<Value> = cases
        .iter()
        .map(|(secret, r)| json!({"secret": secret, "body": r.body, "headers": r.headers}))
        .collect();
    let dir = std::env::temp_dir().join(format!("gh-webhook-verify-{}", uuid::Uuid::new_v4()));
    std::fs::write(&dir, serde_json::to_vec(&input).expect("encode")).expect("write cases");
    let output = Command::new(python)
        .arg(repo_root().join("api/tests/webhook_verify.py"))
        .arg(&dir)
        .output()
        .expect("run python");
    let _ = std::fs::remove_file(&dir);
    assert!(
        output.status.success(),
        "verify script failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let results: Vec<Value> =
        serde_json::from_slice(&output.stdout).expect("the script prints a JSON list");
    results.iter().map(|r| r["verified"] == true).collect()
}
