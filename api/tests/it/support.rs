//! The harness: a private environment, the app driven in-process, a worker on demand.

use std::time::Duration;

use axum::{
    Router,
    body::Body,
    http::{HeaderMap, Method, Request, StatusCode},
};
use gatehouse_api::{AppState, app, store};
use gatehouse_common::{
    queue::{self, Topology},
    telemetry,
    testkit::TestEnv,
    types::{JobKind, TenantId},
};
use gatehouse_worker::WorkerHandle;
use http_body_util::BodyExt;
use lapin::{options::QueueDeclareOptions, types::FieldTable};
use serde_json::Value;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

pub struct Harness {
    pub env: TestEnv,
    pub state: AppState,
    pub app: Router,
    pub key: String,
    relay: Option<(CancellationToken, JoinHandle<()>)>,
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: bytes::Bytes,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn content_type(&self) -> &str {
        self.headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

impl Harness {
    /// A fresh environment with a tenant and key; the outbox relay runs when `relay`.
    pub async fn new(overrides: &[(&str, &str)], relay: bool) -> Self {
        // Delivery mechanics are tested with the small English model alone (fast); the
        // moderation tests ask for the multilingual classifier too (`GUARD_MODELS`).
        let mut vars = vec![
            ("GATEHOUSE_ORT_INTRA_THREADS", "1"),
            ("GATEHOUSE_MODERATION_MODELS", "toxic-bilstm"),
        ];
        vars.extend_from_slice(overrides);
        let env = TestEnv::new(&vars).await;
        let state = AppState::new(
            env.app_pool.clone(),
            env.config.clone(),
            telemetry::metrics_handle(),
        )
        .await
        .expect("app state");
        let (_, key) = new_tenant(&state, "acme").await;
        let mut harness = Self {
            app: app(state.clone()),
            env,
            state,
            key,
            relay: None,
        };
        if relay {
            harness.start_relay();
        }
        harness
    }

    pub fn start_relay(&mut self) {
        let token = CancellationToken::new();
        let task = gatehouse_api::background::spawn(&self.state, token.clone());
        self.relay = Some((token, task));
    }

    pub async fn start_worker(&self) -> WorkerHandle {
        let models = gatehouse_worker::load_models(&self.env.config)
            .expect("models and ONNX Runtime (run `make models`)");
        gatehouse_worker::start(
            self.env.config.clone(),
            self.env.app_pool.clone(),
            models,
            CancellationToken::new(),
        )
    }

    pub fn topology(&self) -> Topology {
        self.env.topology()
    }

    pub async fn call(
        &self,
        method: Method,
        uri: &str,
        key: Option<&str>,
        body: Option<Value>,
    ) -> Reply {
        let mut builder = Request::builder().method(method).uri(uri);
        if let Some(key) = key {
            builder = builder.header("authorization", format!("Bearer {key}"));
        }
        let body = match body {
            Some(json) => {
                builder = builder.header("content-type", "application/json");
                Body::from(serde_json::to_vec(&json).expect("encode"))
            }
            None => Body::empty(),
        };
        self.send(builder.body(body).expect("request")).await
    }

    pub async fn send(&self, request: Request<Body>) -> Reply {
        send(&self.app, request).await
    }

    pub async fn submit(&self, texts: &[String]) -> String {
        let items: Vec<Value> = texts
            .iter()
            .enumerate()
            .map(|(i, t)| serde_json::json!({"custom_id": format!("c{i}"), "text": t}))
            .collect();
        let reply = self
            .call(
                Method::POST,
                "/v1/jobs",
                Some(&self.key),
                Some(serde_json::json!({"kind": "moderate", "items": items})),
            )
            .await;
        assert_eq!(
            reply.status,
            StatusCode::ACCEPTED,
            "{}",
            String::from_utf8_lossy(&reply.body)
        );
        reply.json()["id"].as_str().expect("job id").to_string()
    }

    pub async fn job(&self, id: &str) -> Value {
        self.job_as(id, &self.key).await
    }

    /// The job as seen by the principal behind `bearer`.
    pub async fn job_as(&self, id: &str, bearer: &str) -> Value {
        let reply = self
            .call(Method::GET, &format!("/v1/jobs/{id}"), Some(bearer), None)
            .await;
        assert_eq!(reply.status, StatusCode::OK);
        reply.json()
    }

    /// Polls until the job reaches a terminal status.
    pub async fn wait_done(&self, id: &str, timeout: Duration) -> Value {
        self.wait_done_as(id, &self.key, timeout).await
    }

    /// Polls, as `bearer`, until the job reaches a terminal status.
    pub async fn wait_done_as(&self, id: &str, bearer: &str, timeout: Duration) -> Value {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let job = self.job_as(id, bearer).await;
            if ["completed", "failed", "cancelled"].contains(&job["status"].as_str().unwrap_or(""))
            {
                return job;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "job did not finish in time: {job}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn results(&self, id: &str) -> Vec<Value> {
        self.results_as(id, &self.key).await
    }

    /// The results as seen by the principal behind `bearer`.
    pub async fn results_as(&self, id: &str, bearer: &str) -> Vec<Value> {
        let reply = self
            .call(
                Method::GET,
                &format!("/v1/jobs/{id}/results"),
                Some(bearer),
                None,
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.content_type(), "application/x-ndjson");
        std::str::from_utf8(&reply.body)
            .expect("utf-8")
            .lines()
            .map(|l| serde_json::from_str(l).expect("ndjson line"))
            .collect()
    }

    /// Ready messages in one of this test's queues; 0 while it is not declared yet (a worker
    /// declares the topology as it starts, after `start_worker` returns).
    pub async fn queue_depth(&self, name: &str) -> u32 {
        let conn = queue::connect(&self.env.config.amqp_url, "gatehouse-test")
            .await
            .expect("amqp");
        let channel = conn.create_channel().await.expect("channel");
        let declared = channel
            .queue_declare(
                name.into(),
                QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await;
        let _ = conn.close(200, "bye".into()).await;
        match declared {
            Ok(q) => q.message_count(),
            Err(e) if e.to_string().contains("NOT_FOUND") => 0,
            Err(e) => panic!("queue {name}: {e}"),
        }
    }

    pub async fn scalar(&self, sql: &str) -> i64 {
        sqlx::query_scalar(sql)
            .fetch_one(&self.env.pool)
            .await
            .expect(sql)
    }

    pub async fn teardown(mut self) {
        if let Some((token, task)) = self.relay.take() {
            token.cancel();
            let _ = task.await;
        }
        self.state.broker.close().await;
        self.env.teardown().await;
    }
}

/// Drives `app` in-process with one request.
pub async fn send(app: &Router, request: Request<Body>) -> Reply {
    let response = app.clone().oneshot(request).await.expect("infallible");
    let status = response.status();
    let headers = response.headers().clone();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    Reply {
        status,
        headers,
        body,
    }
}

/// A tenant and a key, the way the admin CLI makes them.
pub async fn new_tenant(state: &AppState, name: &str) -> (TenantId, String) {
    let new = store::tenants::NewTenant {
        name,
        slug: name,
        scopes: None,
        ip_allowlist: &[],
    };
    let tenant = store::tenants::create(&state.pool, new, "test", None)
        .await
        .expect("tenant");
    let key = new_key(state, tenant.tenant_id, &["moderate"]).await;
    (tenant.tenant_id, key)
}

/// Another key of `tenant` with `scopes`.
pub async fn new_key(state: &AppState, tenant: TenantId, scopes: &[&str]) -> String {
    let scopes: Vec<String> = scopes.iter().map(|s| s.to_string()).collect();
    let new = store::keys::NewKey {
        tenant,
        name: "test",
        scopes: &scopes,
        expires_at: None,
        actor: "test",
        client_ip: None,
    };
    store::keys::create(&state.pool, new).await.expect("key").1
}

pub fn work_queue(h: &Harness) -> String {
    h.topology().work_queue(JobKind::Moderate)
}

/// Both moderation models, as a worker runs by default.
pub const GUARD_MODELS: (&str, &str) =
    ("GATEHOUSE_MODERATION_MODELS", "guard-e5-small,toxic-bilstm");

pub const REFERENCE: &str = "You are so dumb and stupid!";
pub const BENIGN: &str = "Have a nice day :)";

pub const PASSWORD: &str = "correct horse battery staple";

/// A user of `tenant` (or an operator when `None`) with [`PASSWORD`].
pub async fn new_user(
    state: &AppState,
    tenant: Option<TenantId>,
    username: &str,
    role: gatehouse_common::types::Role,
) -> gatehouse_common::types::UserId {
    let hash = gatehouse_api::identity::password::hash(PASSWORD.to_string())
        .await
        .expect("hash");
    let actor = store::users::Actor {
        name: "test",
        client_ip: None,
    };
    store::users::create(&state.pool, tenant, username, &hash, role, actor)
        .await
        .expect("user")
        .id
}

impl Harness {
    /// `POST /v1/auth/login`; returns the access token.
    pub async fn login(&self, tenant_slug: Option<&str>, username: &str) -> String {
        let mut body = serde_json::json!({"username": username, "password": PASSWORD});
        if let Some(slug) = tenant_slug {
            body["tenant"] = serde_json::json!(slug);
        }
        let reply = self
            .call(Method::POST, "/v1/auth/login", None, Some(body))
            .await;
        assert_eq!(
            reply.status,
            StatusCode::OK,
            "{}",
            String::from_utf8_lossy(&reply.body)
        );
        reply.json()["access_token"]
            .as_str()
            .expect("token")
            .to_string()
    }

    /// `POST /v1/auth/token` with an API key; returns the access token.
    pub async fn exchange(&self, key: &str) -> String {
        let reply = self
            .call(Method::POST, "/v1/auth/token", Some(key), None)
            .await;
        assert_eq!(
            reply.status,
            StatusCode::OK,
            "{}",
            String::from_utf8_lossy(&reply.body)
        );
        reply.json()["access_token"]
            .as_str()
            .expect("token")
            .to_string()
    }

    /// The tenant created by [`Harness::new`] (slug `acme`).
    pub async fn tenant_id(&self) -> TenantId {
        let id: uuid::Uuid =
            sqlx::query_scalar("SELECT tenant_id FROM tenants WHERE slug = 'acme'")
                .fetch_one(&self.env.pool)
                .await
                .expect("acme");
        TenantId(id)
    }
}

impl Harness {
    /// Every chunk of every job as its queue message (bulk lane), as the dispatcher sends them.
    pub async fn chunk_messages(&self) -> Vec<Value> {
        let rows: Vec<(uuid::Uuid, uuid::Uuid, i32, i32, i32, String)> = sqlx::query_as(
            "SELECT c.job_id, c.tenant_id, c.chunk_index, c.item_start, c.item_end, j.kind
             FROM job_chunks c JOIN jobs j USING (job_id) ORDER BY c.job_id, c.chunk_index",
        )
        .fetch_all(&self.env.pool)
        .await
        .expect("chunks");
        rows.into_iter()
            .map(|(job, tenant, index, start, end, kind)| {
                serde_json::json!({
                    "type": "chunk.v1",
                    "job_id": gatehouse_common::types::JobId(job),
                    "tenant_id": TenantId(tenant),
                    "kind": kind,
                    "chunk_index": index,
                    "item_start": start,
                    "item_end": end,
                    "lane": "bulk",
                })
            })
            .collect()
    }
}
