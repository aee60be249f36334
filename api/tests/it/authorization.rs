//! `docs/AUTHORIZATION.md`, cell by cell: every principal sends a real request to every route
//! of the "Routes" table, and the outcome is checked against the matrix below, written out
//! here independently of `api/src/policy.rs`. Then the "own jobs" rule (a job the principal
//! may not see is a 404, never a 403) and the scope rule.

use std::cell::Cell;

use axum::http::{Method, StatusCode};
use gatehouse_common::types::{Role, TenantId, UserId};
use serde_json::{Value, json};

use crate::support::{Harness, PASSWORD, Reply, new_key, new_tenant, new_user};

/// The columns of the table, in its order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Who {
    Operator,
    Admin,
    Reviewer,
    Guest,
    Key,
    KeyToken,
    Anonymous,
}

const COLUMNS: [Who; 7] = [
    Who::Operator,
    Who::Admin,
    Who::Reviewer,
    Who::Guest,
    Who::Key,
    Who::KeyToken,
    Who::Anonymous,
];

/// A cell: ✅ allowed, ⛔ 403, 🔒 401.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// ✅ — neither 401 nor 403 (with the bodies sent here: a 2xx).
    Allowed,
    /// ⛔ — 403, `application/problem+json`.
    Forbidden,
    /// 🔒 — 401 with a `WWW-Authenticate: Bearer…` challenge.
    Unauthenticated,
}

/// Short names so the matrix reads like the markdown table.
const Y: Expect = Expect::Allowed;
const F: Expect = Expect::Forbidden;
const U: Expect = Expect::Unauthenticated;

/// Every route of the table, each one separately.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Healthz,
    Readyz,
    Metrics,
    OpenApiJson,
    DocsPage,
    DocsAsset,
    Jwks,
    Login,
    Token,
    Me,
    SubmitJob,
    ListJobs,
    ShareJob,
    Examples,
    ShowJob,
    JobResults,
    CreateKey,
    ListKeys,
    RotateKey,
    RevokeKey,
    CreateUser,
    ListUsers,
    UpdateUser,
    DeleteUser,
    CreateTenant,
    ListTenants,
    UpdateTenant,
    ReadAudit,
    ExportAudit,
    AuditCheckpoints,
    VerifyAudit,
    ShowOwnTenant,
    UpdateOwnTenant,
    ShowPolicy,
    PolicyHistory,
    PolicyVersion,
    ReplacePolicy,
    UpdatePolicy,
    ReadUsage,
    ChangeKey,
    JobErrors,
    CancelJob,
    RetryJob,
    UploadFile,
    ListFiles,
    ShowFile,
    FileContent,
    DeleteFile,
    CreateBatch,
    ListBatches,
    ShowBatch,
    CancelBatch,
    CreateEndpoint,
    ListEndpoints,
    ShowEndpoint,
    UpdateEndpoint,
    DeleteEndpoint,
    ReadEndpointSecret,
    RotateEndpointSecret,
    RecoverEndpoint,
    TestEndpoint,
    ListMessages,
    ShowMessage,
    MessageAttempts,
    RetryMessage,
}

use Route::*;

/// The "Routes" table of `docs/AUTHORIZATION.md`, row by row, in its column order:
/// operator, admin, reviewer, guest, key, key token, anonymous.
#[rustfmt::skip]
/// Routes in the table: every protected and public route of the api (the console's static
/// files aside).
const ROUTE_COUNT: usize = 65;

const MATRIX: &[(&[Route], [Expect; 7])] = &[
    //                                                 oper adm rev guest key ktok anon
    (&[Healthz, Readyz, Metrics], [Y, Y, Y, Y, Y, Y, Y]),
    (&[OpenApiJson, DocsPage, DocsAsset], [Y, Y, Y, Y, Y, Y, Y]),
    (&[Jwks], [Y, Y, Y, Y, Y, Y, Y]),
    (&[Login], [Y, Y, Y, Y, Y, Y, Y]),
    (&[Token], [F, F, F, F, Y, F, U]),
    (&[Me], [Y, Y, Y, Y, Y, Y, U]),
    (&[SubmitJob], [F, Y, Y, F, Y, Y, U]),
    (
        &[ListJobs, ShowJob, JobResults, JobErrors],
        [F, Y, Y, Y, Y, Y, U],
    ),
    (&[ShareJob, CancelJob, RetryJob], [F, Y, Y, F, Y, Y, U]),
    (&[UploadFile, DeleteFile], [F, Y, Y, F, Y, Y, U]),
    (&[ListFiles, ShowFile, FileContent], [F, Y, Y, F, Y, Y, U]),
    (&[CreateBatch, CancelBatch], [F, Y, Y, F, Y, Y, U]),
    (&[ListBatches, ShowBatch], [F, Y, Y, Y, Y, Y, U]),
    (&[Examples], [F, Y, Y, Y, Y, Y, U]),
    (&[CreateKey, ListKeys], [F, Y, F, F, F, F, U]),
    (&[RotateKey, RevokeKey, ChangeKey], [F, Y, F, F, F, F, U]),
    (&[CreateUser, ListUsers], [F, Y, F, F, F, F, U]),
    (&[UpdateUser, DeleteUser], [F, Y, F, F, F, F, U]),
    (
        &[ReadAudit, ExportAudit, AuditCheckpoints, VerifyAudit],
        [Y, Y, F, F, F, F, U],
    ),
    (&[ShowOwnTenant, UpdateOwnTenant], [F, Y, F, F, F, F, U]),
    (
        &[ShowPolicy, PolicyHistory, PolicyVersion],
        [F, Y, Y, F, Y, Y, U],
    ),
    (&[ReplacePolicy, UpdatePolicy], [F, Y, F, F, F, F, U]),
    (
        &[CreateTenant, ListTenants, UpdateTenant],
        [Y, F, F, F, F, F, U],
    ),
    (&[ReadUsage], [Y, Y, F, F, F, F, U]),
    (
        &[
            CreateEndpoint,
            ListEndpoints,
            ShowEndpoint,
            UpdateEndpoint,
            DeleteEndpoint,
            RotateEndpointSecret,
            RecoverEndpoint,
            TestEndpoint,
        ],
        [F, Y, F, F, Y, Y, U],
    ),
    (&[ReadEndpointSecret], [F, Y, F, F, F, F, U]),
    (
        &[ListMessages, ShowMessage, MessageAttempts, RetryMessage],
        [F, Y, F, F, Y, Y, U],
    ),
];

/// One request: method, path, JSON body (or a multipart upload).
struct Req {
    method: Method,
    uri: String,
    body: Option<Value>,
    upload: Option<Vec<u8>>,
}

impl Req {
    fn new(method: Method, uri: impl Into<String>, body: Option<Value>) -> Self {
        Self {
            method,
            uri: uri.into(),
            body,
            upload: None,
        }
    }

    fn describe(&self) -> String {
        format!("{} {}", self.method, self.uri)
    }
}

/// The `key_…` id of an API key (`ghk_<id hex>_<secret hex>`).
fn key_id(key: &str) -> String {
    let hex = key
        .strip_prefix("ghk_")
        .and_then(|rest| rest.split('_').next())
        .expect("key shape ghk_<id>_<secret>");
    format!("key_{hex}")
}

/// Everything the requests need: the principals' bearers, their jobs, and throwaway targets.
struct World {
    h: Harness,
    acme: TenantId,
    /// Bearer per column, in [`COLUMNS`] order (`None` for anonymous).
    bearers: [Option<String>; 7],
    /// A job submitted by the reviewer.
    reviewer_job: String,
    /// A job submitted by the key.
    key_job: String,
    /// A user every `PATCH /v1/users/{id}` re-enables (idempotent).
    patch_user: UserId,
    /// A tenant every `PATCH /v1/tenants/{id}` renames (never acme).
    patch_tenant: TenantId,
    /// A file and a batch of the reviewer's and of the key's.
    reviewer_file: String,
    key_file: String,
    reviewer_batch: String,
    key_batch: String,
    /// A webhook endpoint of acme (`ep_…`) and a message sent to it (`msg_…`).
    endpoint: String,
    message: String,
    /// For unique names.
    seq: Cell<u32>,
}

impl World {
    fn bearer(&self, who: Who) -> Option<&str> {
        let i = COLUMNS.iter().position(|c| *c == who).expect("column");
        self.bearers[i].as_deref()
    }

    fn unique(&self, what: &str) -> String {
        let n = self.seq.get() + 1;
        self.seq.set(n);
        format!("{what}-{n}-{}", uuid::Uuid::new_v4().simple())
    }

    /// The job `who` reads in the matrix: its own where it has one (the admin reads the
    /// reviewer's, to show "any of the tenant's"); the key's for everyone else.
    fn job_for(&self, who: Who) -> &str {
        match who {
            Who::Admin | Who::Reviewer => &self.reviewer_job,
            _ => &self.key_job,
        }
    }

    /// The file (and batch) `who` reads: like [`World::job_for`] (guests read the key's
    /// batch, whose job is shared).
    fn file_for(&self, who: Who) -> &str {
        match who {
            Who::Admin | Who::Reviewer => &self.reviewer_file,
            _ => &self.key_file,
        }
    }

    fn batch_for(&self, who: Who) -> &str {
        match who {
            Who::Admin | Who::Reviewer => &self.reviewer_batch,
            _ => &self.key_batch,
        }
    }

    /// The bearer that owns what `who` manages (the admin manages the reviewer's).
    fn owner_bearer(&self, who: Who) -> Option<&str> {
        // Principals that may not manage anything get the key's (their cells are ⛔ / 🔒,
        // whatever the target).
        match who {
            Who::Admin | Who::Reviewer => self.bearer(Who::Reviewer),
            _ => self.bearer(Who::Key),
        }
    }

    /// A finished job of `who`'s (see [`World::owner_bearer`]) with one failed item.
    async fn failed_job(&self, who: Who) -> String {
        let bearer = self.owner_bearer(who).unwrap_or_default().to_string();
        let id = submit(&self.h, &bearer).await;
        let uuid = uuid::Uuid::parse_str(id.trim_start_matches("job_")).expect("uuid");
        sqlx::query(
            "WITH r AS (INSERT INTO job_results (job_id, item_index, tenant_id, chunk_index, status, error)
                        SELECT job_id, 0, tenant_id, 0, 'failed', '{\"code\": \"x\", \"message\": \"x\"}'
                        FROM jobs WHERE job_id = $1)
             UPDATE jobs SET status = 'completed', failed = 1, completed_at = now() WHERE job_id = $1",
        )
        .bind(uuid)
        .execute(&self.h.env.pool)
        .await
        .expect("fail the job");
        sqlx::query("UPDATE job_chunks SET status = 'done' WHERE job_id = $1")
            .bind(uuid)
            .execute(&self.h.env.pool)
            .await
            .expect("finish the chunk");
        id
    }

    /// A sensible request for `route` by `who`; mutating routes get fresh throwaway targets.
    async fn request(&self, route: Route, who: Who) -> Req {
        match route {
            Healthz => Req::new(Method::GET, "/healthz", None),
            Readyz => Req::new(Method::GET, "/readyz", None),
            Metrics => Req::new(Method::GET, "/metrics", None),
            OpenApiJson => Req::new(Method::GET, "/openapi.json", None),
            DocsPage => Req::new(Method::GET, "/docs", None),
            DocsAsset => Req::new(Method::GET, "/docs/swagger-ui.css", None),
            Jwks => Req::new(Method::GET, "/.well-known/jwks.json", None),
            Login => Req::new(
                Method::POST,
                "/v1/auth/login",
                Some(json!({"tenant": "acme", "username": "gina", "password": PASSWORD})),
            ),
            Token => Req::new(Method::POST, "/v1/auth/token", None),
            Me => Req::new(Method::GET, "/v1/me", None),
            SubmitJob => Req::new(
                Method::POST,
                "/v1/jobs",
                Some(json!({"kind": "moderate", "items": [{"text": "hi"}]})),
            ),
            ListJobs => Req::new(Method::GET, "/v1/jobs", None),
            ShareJob => Req::new(
                Method::POST,
                format!("/v1/jobs/{}/share", self.job_for(who)),
                Some(json!({"shared": true})),
            ),
            Examples => Req::new(Method::GET, "/v1/examples", None),
            // Operators name the tenant; admins may (their own).
            ReadAudit => Req::new(Method::GET, format!("/v1/audit?tenant={}", self.acme), None),
            ExportAudit => Req::new(
                Method::GET,
                format!("/v1/audit/export?tenant={}&format=csv", self.acme),
                None,
            ),
            AuditCheckpoints => Req::new(
                Method::GET,
                format!("/v1/audit/checkpoints?tenant={}", self.acme),
                None,
            ),
            VerifyAudit => Req::new(
                Method::GET,
                format!("/v1/audit/verify?tenant={}", self.acme),
                None,
            ),
            ShowOwnTenant => Req::new(Method::GET, "/v1/tenant", None),
            ShowPolicy => Req::new(Method::GET, "/v1/moderation/policy", None),
            PolicyHistory => Req::new(Method::GET, "/v1/moderation/policy/versions", None),
            PolicyVersion => Req::new(Method::GET, "/v1/moderation/policy/versions/0", None),
            ReplacePolicy => Req::new(Method::PUT, "/v1/moderation/policy", Some(json!({}))),
            UpdatePolicy => Req::new(
                Method::PATCH,
                "/v1/moderation/policy",
                Some(json!({"pii_rule_level": "unsafe"})),
            ),
            UpdateOwnTenant => Req::new(
                Method::PATCH,
                "/v1/tenant",
                Some(json!({"name": self.unique("Acme")})),
            ),
            ShowJob => Req::new(Method::GET, format!("/v1/jobs/{}", self.job_for(who)), None),
            JobResults => Req::new(
                Method::GET,
                format!("/v1/jobs/{}/results", self.job_for(who)),
                None,
            ),
            CreateKey => Req::new(
                Method::POST,
                "/v1/keys",
                Some(json!({"name": self.unique("key"), "scopes": ["moderate"]})),
            ),
            ListKeys => Req::new(Method::GET, "/v1/keys", None),
            RotateKey => {
                let key = new_key(&self.h.state, self.acme, &["moderate"]).await;
                Req::new(
                    Method::POST,
                    format!("/v1/keys/{}/rotate", key_id(&key)),
                    None,
                )
            }
            RevokeKey => {
                let key = new_key(&self.h.state, self.acme, &["moderate"]).await;
                Req::new(Method::DELETE, format!("/v1/keys/{}", key_id(&key)), None)
            }
            CreateUser => Req::new(
                Method::POST,
                "/v1/users",
                Some(json!({
                    "username": self.unique("user"),
                    "password": "a long enough password",
                    "role": "reviewer",
                })),
            ),
            ListUsers => Req::new(Method::GET, "/v1/users", None),
            UpdateUser => Req::new(
                Method::PATCH,
                format!("/v1/users/{}", self.patch_user),
                Some(json!({"enabled": true})),
            ),
            DeleteUser => {
                let name = self.unique("doomed");
                let id = new_user(&self.h.state, Some(self.acme), &name, Role::Reviewer).await;
                Req::new(Method::DELETE, format!("/v1/users/{id}"), None)
            }
            CreateTenant => {
                let slug = self.unique("tenant");
                Req::new(
                    Method::POST,
                    "/v1/tenants",
                    Some(json!({"name": format!("Tenant {slug}"), "slug": slug})),
                )
            }
            ListTenants => Req::new(Method::GET, "/v1/tenants", None),
            ReadUsage => Req::new(Method::GET, "/v1/usage", None),
            ChangeKey => {
                let key = new_key(&self.h.state, self.acme, &["moderate"]).await;
                Req::new(
                    Method::PATCH,
                    format!("/v1/keys/{}", key_id(&key)),
                    Some(json!({"rate_limits": {"requests_per_minute": 1000}})),
                )
            }
            UpdateTenant => Req::new(
                Method::PATCH,
                format!("/v1/tenants/{}", self.patch_tenant),
                Some(json!({"name": self.unique("renamed")})),
            ),
            JobErrors => Req::new(
                Method::GET,
                format!("/v1/jobs/{}/errors", self.job_for(who)),
                None,
            ),
            CancelJob => {
                let bearer = self.owner_bearer(who).unwrap_or_default().to_string();
                let id = submit(&self.h, &bearer).await;
                Req::new(Method::POST, format!("/v1/jobs/{id}/cancel"), None)
            }
            RetryJob => {
                let id = self.failed_job(who).await;
                Req::new(Method::POST, format!("/v1/jobs/{id}/retry"), None)
            }
            UploadFile => Req {
                upload: Some(b"{\"text\": \"hi\"}\n".to_vec()),
                ..Req::new(Method::POST, "/v1/files", None)
            },
            ListFiles => Req::new(Method::GET, "/v1/files", None),
            ShowFile => Req::new(
                Method::GET,
                format!("/v1/files/{}", self.file_for(who)),
                None,
            ),
            FileContent => Req::new(
                Method::GET,
                format!("/v1/files/{}/content", self.file_for(who)),
                None,
            ),
            DeleteFile => {
                let bearer = self.owner_bearer(who).unwrap_or_default().to_string();
                let id = upload_file(&self.h, &bearer).await;
                Req::new(Method::DELETE, format!("/v1/files/{id}"), None)
            }
            CreateBatch => Req::new(
                Method::POST,
                "/v1/batches",
                Some(json!({
                    "input_file_id": self.file_for(who),
                    "endpoint": "/v1/moderations",
                    "completion_window": "24h",
                })),
            ),
            ListBatches => Req::new(Method::GET, "/v1/batches", None),
            ShowBatch => Req::new(
                Method::GET,
                format!("/v1/batches/{}", self.batch_for(who)),
                None,
            ),
            CancelBatch => {
                let bearer = self.owner_bearer(who).unwrap_or_default().to_string();
                let file = upload_file(&self.h, &bearer).await;
                let batch = create_batch(&self.h, &bearer, &file).await;
                Req::new(Method::POST, format!("/v1/batches/{batch}/cancel"), None)
            }
            CreateEndpoint => Req::new(
                Method::POST,
                "/v1/webhooks/endpoints",
                Some(json!({"url": format!("https://{}.example.com/hook", self.unique("h"))})),
            ),
            ListEndpoints => Req::new(Method::GET, "/v1/webhooks/endpoints", None),
            ShowEndpoint => Req::new(
                Method::GET,
                format!("/v1/webhooks/endpoints/{}", self.endpoint),
                None,
            ),
            UpdateEndpoint => Req::new(
                Method::PATCH,
                format!("/v1/webhooks/endpoints/{}", self.endpoint),
                Some(json!({"description": self.unique("d")})),
            ),
            DeleteEndpoint => {
                let doomed = endpoint(&self.h, self.acme).await;
                Req::new(
                    Method::DELETE,
                    format!("/v1/webhooks/endpoints/{doomed}"),
                    None,
                )
            }
            ReadEndpointSecret => Req::new(
                Method::GET,
                format!("/v1/webhooks/endpoints/{}/secret", self.endpoint),
                None,
            ),
            RotateEndpointSecret => Req::new(
                Method::POST,
                format!("/v1/webhooks/endpoints/{}/secret/rotate", self.endpoint),
                None,
            ),
            RecoverEndpoint => Req::new(
                Method::POST,
                format!("/v1/webhooks/endpoints/{}/recover", self.endpoint),
                Some(json!({"since": "2026-01-01T00:00:00Z"})),
            ),
            TestEndpoint => Req::new(
                Method::POST,
                format!("/v1/webhooks/endpoints/{}/test", self.endpoint),
                None,
            ),
            ListMessages => Req::new(Method::GET, "/v1/webhooks/messages", None),
            ShowMessage => Req::new(
                Method::GET,
                format!("/v1/webhooks/messages/{}", self.message),
                None,
            ),
            MessageAttempts => Req::new(
                Method::GET,
                format!("/v1/webhooks/messages/{}/attempts", self.message),
                None,
            ),
            RetryMessage => Req::new(
                Method::POST,
                format!("/v1/webhooks/messages/{}/retry", self.message),
                None,
            ),
        }
    }

    /// The same request aimed at an id that does not exist, for routes that take one: a 403
    /// must not depend on the id.
    fn with_unknown_id(route: Route) -> Option<Req> {
        const NONE: &str = "00000000000000000000000000000000";
        Some(match route {
            ShowJob => Req::new(Method::GET, format!("/v1/jobs/job_{NONE}"), None),
            ShareJob => Req::new(
                Method::POST,
                format!("/v1/jobs/job_{NONE}/share"),
                Some(json!({"shared": true})),
            ),
            JobResults => Req::new(Method::GET, format!("/v1/jobs/job_{NONE}/results"), None),
            RotateKey => Req::new(Method::POST, format!("/v1/keys/key_{NONE}/rotate"), None),
            RevokeKey => Req::new(Method::DELETE, format!("/v1/keys/key_{NONE}"), None),
            ChangeKey => Req::new(
                Method::PATCH,
                format!("/v1/keys/key_{NONE}"),
                Some(json!({"rate_limits": {}})),
            ),
            UpdateUser => Req::new(
                Method::PATCH,
                format!("/v1/users/usr_{NONE}"),
                Some(json!({"enabled": true})),
            ),
            DeleteUser => Req::new(Method::DELETE, format!("/v1/users/usr_{NONE}"), None),
            UpdateTenant => Req::new(
                Method::PATCH,
                format!("/v1/tenants/ten_{NONE}"),
                Some(json!({"name": "x"})),
            ),
            JobErrors => Req::new(Method::GET, format!("/v1/jobs/job_{NONE}/errors"), None),
            CancelJob => Req::new(Method::POST, format!("/v1/jobs/job_{NONE}/cancel"), None),
            RetryJob => Req::new(Method::POST, format!("/v1/jobs/job_{NONE}/retry"), None),
            ShowFile => Req::new(Method::GET, format!("/v1/files/file_{NONE}"), None),
            FileContent => Req::new(Method::GET, format!("/v1/files/file_{NONE}/content"), None),
            DeleteFile => Req::new(Method::DELETE, format!("/v1/files/file_{NONE}"), None),
            ShowBatch => Req::new(Method::GET, format!("/v1/batches/batch_{NONE}"), None),
            CancelBatch => Req::new(
                Method::POST,
                format!("/v1/batches/batch_{NONE}/cancel"),
                None,
            ),
            ShowEndpoint => Req::new(
                Method::GET,
                format!("/v1/webhooks/endpoints/ep_{NONE}"),
                None,
            ),
            UpdateEndpoint => Req::new(
                Method::PATCH,
                format!("/v1/webhooks/endpoints/ep_{NONE}"),
                Some(json!({"description": "x"})),
            ),
            DeleteEndpoint => Req::new(
                Method::DELETE,
                format!("/v1/webhooks/endpoints/ep_{NONE}"),
                None,
            ),
            ReadEndpointSecret => Req::new(
                Method::GET,
                format!("/v1/webhooks/endpoints/ep_{NONE}/secret"),
                None,
            ),
            RotateEndpointSecret => Req::new(
                Method::POST,
                format!("/v1/webhooks/endpoints/ep_{NONE}/secret/rotate"),
                None,
            ),
            RecoverEndpoint => Req::new(
                Method::POST,
                format!("/v1/webhooks/endpoints/ep_{NONE}/recover"),
                Some(json!({"since": "2026-01-01T00:00:00Z"})),
            ),
            TestEndpoint => Req::new(
                Method::POST,
                format!("/v1/webhooks/endpoints/ep_{NONE}/test"),
                None,
            ),
            ShowMessage => Req::new(
                Method::GET,
                format!("/v1/webhooks/messages/msg_{NONE}"),
                None,
            ),
            MessageAttempts => Req::new(
                Method::GET,
                format!("/v1/webhooks/messages/msg_{NONE}/attempts"),
                None,
            ),
            RetryMessage => Req::new(
                Method::POST,
                format!("/v1/webhooks/messages/msg_{NONE}/retry"),
                None,
            ),
            _ => return None,
        })
    }

    async fn send(&self, req: Req, who: Who) -> Reply {
        if let Some(content) = req.upload {
            return crate::bulk::upload_as(&self.h, self.bearer(who), &content, "jobs").await;
        }
        self.h
            .call(req.method, &req.uri, self.bearer(who), req.body)
            .await
    }
}

fn header<'a>(reply: &'a Reply, name: &str) -> &'a str {
    reply
        .headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// `None` when `reply` is what `expect` says; otherwise why not.
fn mismatch(reply: &Reply, expect: Expect) -> Option<String> {
    let body = || {
        String::from_utf8_lossy(&reply.body)
            .chars()
            .take(300)
            .collect::<String>()
    };
    match expect {
        Expect::Allowed => {
            if reply.status == StatusCode::UNAUTHORIZED || reply.status == StatusCode::FORBIDDEN {
                Some(format!("expected ✅, got {}: {}", reply.status, body()))
            } else if !reply.status.is_success() {
                Some(format!(
                    "✅ and authorized, but {} (bad fixture or body?): {}",
                    reply.status,
                    body()
                ))
            } else {
                None
            }
        }
        Expect::Forbidden => {
            if reply.status != StatusCode::FORBIDDEN {
                Some(format!("expected ⛔ 403, got {}: {}", reply.status, body()))
            } else if reply.content_type() != "application/problem+json" {
                Some(format!("403 with content-type `{}`", reply.content_type()))
            } else {
                None
            }
        }
        Expect::Unauthenticated => {
            let challenge = header(reply, "www-authenticate");
            if reply.status != StatusCode::UNAUTHORIZED {
                Some(format!("expected 🔒 401, got {}: {}", reply.status, body()))
            } else if !challenge.starts_with("Bearer") {
                Some(format!("401 with WWW-Authenticate `{challenge}`"))
            } else {
                None
            }
        }
    }
}

/// Builds acme's principals, an operator, and the jobs and targets the requests need.
async fn world() -> World {
    let h = Harness::new(&[], false).await;
    let acme = h.tenant_id().await;
    new_user(&h.state, None, "root", Role::Superadmin).await;
    new_user(&h.state, Some(acme), "alice", Role::Admin).await;
    new_user(&h.state, Some(acme), "bob", Role::Reviewer).await;
    new_user(&h.state, Some(acme), "gina", Role::Guest).await;
    let operator = h.login(None, "root").await;
    let admin = h.login(Some("acme"), "alice").await;
    let reviewer = h.login(Some("acme"), "bob").await;
    let guest = h.login(Some("acme"), "gina").await;
    // The key may manage webhooks (the `webhooks` scope, granted to acme).
    sqlx::query("UPDATE tenants SET scopes = '{moderate,webhooks}' WHERE tenant_id = $1")
        .bind(acme.0)
        .execute(&h.env.pool)
        .await
        .expect("grant webhooks");
    sqlx::query("UPDATE api_keys SET scopes = '{moderate,webhooks}'")
        .execute(&h.env.pool)
        .await
        .expect("scope the key");
    let key_token = h.exchange(&h.key).await;
    let bearers = [
        Some(operator),
        Some(admin),
        Some(reviewer.clone()),
        Some(guest),
        Some(h.key.clone()),
        Some(key_token),
        None,
    ];
    let reviewer_job = submit(&h, &reviewer).await;
    let key_job = h.submit(&["hello".to_string()]).await;
    // Guests read shared jobs only: the key shares its job with the tenant.
    let shared = h
        .call(
            Method::POST,
            &format!("/v1/jobs/{key_job}/share"),
            Some(&h.key),
            Some(json!({"shared": true})),
        )
        .await;
    assert_eq!(shared.status, StatusCode::OK, "share the key's job");
    let patch_user = new_user(&h.state, Some(acme), "patched", Role::Reviewer).await;
    let (patch_tenant, _) = new_tenant(&h.state, "renamed-tenant").await;
    let reviewer_file = upload_file(&h, &reviewer).await;
    let key_file = upload_file(&h, &h.key).await;
    let reviewer_batch = create_batch(&h, &reviewer, &reviewer_file).await;
    let key_batch = create_batch(&h, &h.key, &key_file).await;
    // Guests read batches of shared jobs: the key shares its batch's job.
    let batch = h
        .call(
            Method::GET,
            &format!("/v1/batches/{key_batch}"),
            Some(&h.key),
            None,
        )
        .await
        .json();
    let batch_job = batch["job_id"].as_str().expect("batch job").to_string();
    let shared = h
        .call(
            Method::POST,
            &format!("/v1/jobs/{batch_job}/share"),
            Some(&h.key),
            Some(json!({"shared": true})),
        )
        .await;
    assert_eq!(shared.status, StatusCode::OK, "share the key's batch job");
    let endpoint = endpoint(&h, acme).await;
    let message = h
        .call(
            Method::POST,
            &format!("/v1/webhooks/endpoints/{endpoint}/test"),
            Some(&h.key),
            None,
        )
        .await
        .json()["id"]
        .as_str()
        .expect("message id")
        .to_string();
    World {
        h,
        acme,
        bearers,
        reviewer_job,
        key_job,
        patch_user,
        patch_tenant,
        reviewer_file,
        key_file,
        reviewer_batch,
        key_batch,
        endpoint,
        message,
        seq: Cell::new(0),
    }
}

/// A webhook endpoint of `tenant` (its `ep_…` id), the way the api creates them.
async fn endpoint(h: &Harness, tenant: TenantId) -> String {
    let (endpoint, _) = gatehouse_api::store::webhook_endpoints::create(
        &h.state.pool,
        gatehouse_api::store::webhook_endpoints::NewEndpoint {
            tenant,
            url: "https://hooks.example.com/in",
            description: "",
            event_types: &[],
            enabled: true,
            headers: json!({}),
            rate_limit_per_sec: None,
            max_endpoints: 1000,
        },
        &gatehouse_common::webhook::secret::SecretBox::new(None),
        gatehouse_api::store::webhook_endpoints::Actor {
            name: "test",
            client_ip: None,
        },
    )
    .await
    .expect("endpoint");
    endpoint.endpoint_id.to_string()
}

/// `POST /v1/files` (one item line) as `bearer`; the file id.
async fn upload_file(h: &Harness, bearer: &str) -> String {
    let reply = crate::bulk::upload_as(h, Some(bearer), b"{\"text\": \"hi\"}\n", "batch").await;
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "upload: {}",
        String::from_utf8_lossy(&reply.body)
    );
    reply.json()["id"].as_str().expect("file id").to_string()
}

/// `POST /v1/batches` of `file` as `bearer`; the batch id.
async fn create_batch(h: &Harness, bearer: &str, file: &str) -> String {
    let reply = h
        .call(
            Method::POST,
            "/v1/batches",
            Some(bearer),
            Some(json!({"input_file_id": file, "endpoint": "/v1/moderations", "completion_window": "24h"})),
        )
        .await;
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "batch: {}",
        String::from_utf8_lossy(&reply.body)
    );
    reply.json()["id"].as_str().expect("batch id").to_string()
}

/// `POST /v1/jobs` as `bearer`; the job id.
async fn submit(h: &Harness, bearer: &str) -> String {
    let reply = h
        .call(
            Method::POST,
            "/v1/jobs",
            Some(bearer),
            Some(json!({"kind": "moderate", "items": [{"text": "hi"}]})),
        )
        .await;
    assert_eq!(
        reply.status,
        StatusCode::ACCEPTED,
        "submit: {}",
        String::from_utf8_lossy(&reply.body)
    );
    reply.json()["id"].as_str().expect("job id").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_cell_of_the_routes_table() {
    let w = world().await;

    // The matrix covers every route exactly once.
    let covered: Vec<Route> = MATRIX.iter().flat_map(|(r, _)| r.iter().copied()).collect();
    assert_eq!(covered.len(), ROUTE_COUNT, "every route of the table, once");

    let mut failures = Vec::new();
    let mut cells = 0;
    for (routes, row) in MATRIX {
        for &route in *routes {
            for (&who, &expect) in COLUMNS.iter().zip(row.iter()) {
                let req = w.request(route, who).await;
                let what = format!("{route:?} ({}) as {who:?}", req.describe());
                let reply = w.send(req, who).await;
                cells += 1;
                if let Some(why) = mismatch(&reply, expect) {
                    failures.push(format!("{what}: {why}"));
                }
                // A 403 depends only on the route and the principal, never on the id.
                if expect == Expect::Forbidden
                    && let Some(req) = World::with_unknown_id(route)
                {
                    let what = format!("{route:?} ({}) as {who:?}", req.describe());
                    let reply = w.send(req, who).await;
                    if let Some(why) = mismatch(&reply, expect) {
                        failures.push(format!("{what} (unknown id): {why}"));
                    }
                }
            }
        }
    }
    assert_eq!(cells, ROUTE_COUNT * 7);

    // The principals survived their own ✅ cells (throwaway targets only).
    for who in COLUMNS.iter().copied().filter(|w| *w != Who::Anonymous) {
        let reply = w.send(Req::new(Method::GET, "/v1/me", None), who).await;
        if reply.status != StatusCode::OK {
            failures.push(format!(
                "{who:?} no longer works after the matrix: {}",
                reply.status
            ));
        }
    }

    let World { h, .. } = w;
    h.teardown().await;
    assert!(
        failures.is_empty(),
        "{} of {cells} cells differ from docs/AUTHORIZATION.md:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_are_visible_to_their_owner_and_admins_and_404_to_everyone_else() {
    let h = Harness::new(&[], false).await;
    let acme = h.tenant_id().await;
    new_user(&h.state, Some(acme), "alice", Role::Admin).await;
    new_user(&h.state, Some(acme), "bob", Role::Reviewer).await;
    new_user(&h.state, Some(acme), "carol", Role::Reviewer).await;
    let (globex, globex_key) = new_tenant(&h.state, "globex").await;
    new_user(&h.state, Some(globex), "oscar", Role::Admin).await;

    let admin = h.login(Some("acme"), "alice").await;
    let reviewer = h.login(Some("acme"), "bob").await;
    let other_reviewer = h.login(Some("acme"), "carol").await;
    let key = h.key.clone();
    let key_token = h.exchange(&h.key).await;
    let other_admin = h.login(Some("globex"), "oscar").await;

    let by_reviewer = submit(&h, &reviewer).await;
    let by_other_reviewer = submit(&h, &other_reviewer).await;
    let by_key = h.submit(&["hello".to_string()]).await;
    let by_key_token = submit(&h, &key_token).await;

    const OK: StatusCode = StatusCode::OK;
    const NOT_FOUND: StatusCode = StatusCode::NOT_FOUND;
    let cases: &[(&str, &str, &str, &str, StatusCode)] = &[
        // (reader, bearer, job's submitter, job, status)
        ("admin", &admin, "reviewer", &by_reviewer, OK),
        ("admin", &admin, "other reviewer", &by_other_reviewer, OK),
        ("admin", &admin, "key", &by_key, OK),
        ("admin", &admin, "key token", &by_key_token, OK),
        ("reviewer", &reviewer, "reviewer", &by_reviewer, OK),
        ("reviewer", &reviewer, "key", &by_key, NOT_FOUND),
        (
            "reviewer",
            &reviewer,
            "other reviewer",
            &by_other_reviewer,
            NOT_FOUND,
        ),
        ("key", &key, "key", &by_key, OK),
        ("key", &key, "key token", &by_key_token, OK),
        ("key", &key, "reviewer", &by_reviewer, NOT_FOUND),
        ("key token", &key_token, "key", &by_key, OK),
        ("key token", &key_token, "key token", &by_key_token, OK),
        ("key token", &key_token, "reviewer", &by_reviewer, NOT_FOUND),
        (
            "other tenant's admin",
            &other_admin,
            "reviewer",
            &by_reviewer,
            NOT_FOUND,
        ),
        (
            "other tenant's admin",
            &other_admin,
            "other reviewer",
            &by_other_reviewer,
            NOT_FOUND,
        ),
        (
            "other tenant's admin",
            &other_admin,
            "key",
            &by_key,
            NOT_FOUND,
        ),
        (
            "other tenant's admin",
            &other_admin,
            "key token",
            &by_key_token,
            NOT_FOUND,
        ),
        (
            "other tenant's key",
            &globex_key,
            "reviewer",
            &by_reviewer,
            NOT_FOUND,
        ),
        ("other tenant's key", &globex_key, "key", &by_key, NOT_FOUND),
    ];

    let mut failures = Vec::new();
    for &(reader, bearer, submitter, job, want) in cases {
        for uri in [format!("/v1/jobs/{job}"), format!("/v1/jobs/{job}/results")] {
            let reply = h.call(Method::GET, &uri, Some(bearer), None).await;
            let what = format!("GET {uri} (submitted by the {submitter}) as the {reader}");
            if reply.status != want {
                failures.push(format!(
                    "{what}: expected {want}, got {}: {}",
                    reply.status,
                    String::from_utf8_lossy(&reply.body)
                ));
            } else if want == NOT_FOUND && reply.content_type() != "application/problem+json" {
                failures.push(format!("{what}: 404 as `{}`", reply.content_type()));
            }
        }
    }

    h.teardown().await;
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submitting_needs_the_kinds_scope() {
    let h = Harness::new(&[], false).await;
    let acme = h.tenant_id().await;
    // A key without `moderate`: its own scopes, and the token derived from it.
    let unscoped = new_key(&h.state, acme, &["translate"]).await;
    let unscoped_token = h.exchange(&unscoped).await;
    let body = json!({"kind": "moderate", "items": [{"text": "hi"}]});

    for (what, bearer) in [("key", &unscoped), ("key token", &unscoped_token)] {
        let reply = h
            .call(Method::POST, "/v1/jobs", Some(bearer), Some(body.clone()))
            .await;
        assert_eq!(
            reply.status,
            StatusCode::FORBIDDEN,
            "POST /v1/jobs (moderate) as a {what} without the `moderate` scope: {}",
            String::from_utf8_lossy(&reply.body)
        );
        assert_eq!(
            reply.content_type(),
            "application/problem+json",
            "POST /v1/jobs as a {what} without the `moderate` scope"
        );
    }

    // The same request with a key that holds the scope is accepted.
    let reply = h
        .call(Method::POST, "/v1/jobs", Some(&h.key), Some(body))
        .await;
    assert_eq!(
        reply.status,
        StatusCode::ACCEPTED,
        "POST /v1/jobs as a scoped key"
    );

    h.teardown().await;
}
