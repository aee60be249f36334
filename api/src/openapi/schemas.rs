//! Schemas of the responses that handlers build as `serde_json::Value` (a few fields around a
//! typed object). They only describe; the handlers stay the one place that writes the JSON,
//! and `make fuzz-api` (Schemathesis) checks every response against these.

#![allow(dead_code)]

use chrono::NaiveDate;
use gatehouse_common::types::{FileId, JobKind, Role, TenantId};
use serde_json::Value;
use utoipa::ToSchema;

use crate::{
    routes::batches::Batch,
    store::{files::File, keys::ApiKey, webhook_endpoints::Endpoint},
};

/// `GET /healthz`.
#[derive(ToSchema)]
pub struct Health {
    /// Always `ok`.
    pub status: String,
}

/// `GET /readyz`.
#[derive(ToSchema)]
pub struct Readiness {
    /// `ready` or `not_ready`.
    pub status: String,
    pub checks: ReadinessChecks,
}

#[derive(ToSchema)]
pub struct ReadinessChecks {
    /// `ok` or `unreachable`.
    pub postgres: String,
    /// `ok` or `unreachable`.
    pub rabbitmq: String,
}

/// `GET /.well-known/jwks.json`: the public keys that verify tokens (RFC 7517).
#[derive(ToSchema)]
pub struct Jwks {
    pub keys: Vec<Value>,
}

/// `GET /v1/me`.
#[derive(ToSchema)]
pub struct Me {
    /// `usr_…` or `key_…`.
    pub subject: String,
    /// `user` or `api_key`.
    pub kind: String,
    pub username: Option<String>,
    pub tenant: Option<MeTenant>,
    pub role: Role,
    pub scopes: Vec<String>,
    /// `api_key` (the key itself) or `token` (a JWT).
    pub via: String,
}

#[derive(ToSchema)]
pub struct MeTenant {
    pub id: TenantId,
    pub slug: String,
    pub name: String,
}

/// `GET /v1/examples`: example inputs per job kind.
#[derive(ToSchema)]
pub struct Examples {
    /// Items for a `moderate` job (`{"custom_id", "text"}`).
    pub moderate: Vec<Value>,
}

/// `POST /v1/jobs` with `dry_run: true`: what the job would cost, nothing stored.
#[derive(ToSchema)]
pub struct DryRun {
    pub dry_run: bool,
    pub kind: JobKind,
    /// `{"items", "characters"}`.
    pub cost: Value,
    /// The quotas that apply, with their use today.
    pub quotas: Vec<Value>,
    pub would_be_accepted: bool,
    /// The quota it would exceed.
    pub exceeds: Option<String>,
}

/// An API key with its secret (`POST /v1/keys`, `POST /v1/keys/{id}/rotate`): shown once.
#[derive(ToSchema)]
pub struct ApiKeyWithSecret {
    #[schema(inline)]
    #[serde(flatten)]
    pub api_key: ApiKey,
    /// `ghk_<key id>_<secret>`.
    pub key: String,
    /// Rotation only: how long the previous secret stays valid.
    pub previous_secret_valid_for_secs: Option<u64>,
}

/// `GET /v1/files`.
#[derive(ToSchema)]
pub struct FileList {
    /// `list`.
    pub object: String,
    pub data: Vec<File>,
    pub has_more: bool,
    pub next_after: Option<FileId>,
}

/// `DELETE /v1/files/{id}`.
#[derive(ToSchema)]
pub struct DeletedFile {
    pub id: FileId,
    /// `file`.
    pub object: String,
    pub deleted: bool,
}

/// `GET /v1/batches`.
#[derive(ToSchema)]
pub struct BatchList {
    /// `list`.
    pub object: String,
    pub data: Vec<Batch>,
    pub first_id: Option<String>,
    pub last_id: Option<String>,
    pub has_more: bool,
}

/// `GET /v1/moderation/policy/versions`.
#[derive(ToSchema)]
pub struct PolicyHistory {
    /// `{"version", "created_by", "created_at"}`, newest first.
    pub data: Vec<Value>,
}

/// `GET /v1/usage`.
#[derive(ToSchema)]
pub struct Usage {
    /// `day`.
    pub granularity: String,
    /// `UTC`.
    pub timezone: String,
    pub from: NaiveDate,
    pub to: NaiveDate,
    /// `null`: every tenant (operators).
    pub tenant: Option<TenantId>,
    /// One row per day and kind: `day`, `tenant`, `kind`, `items`, `characters`, `jobs`,
    /// `failed_items`.
    pub data: Vec<Value>,
    /// One tenant: its quotas and their use today.
    pub quotas: Option<Vec<Value>>,
}

/// A new endpoint with its signing secret (`POST /v1/webhooks/endpoints`): shown once.
#[derive(ToSchema)]
pub struct EndpointWithSecret {
    #[schema(inline)]
    #[serde(flatten)]
    pub endpoint: Endpoint,
    /// `whsec_…`.
    pub secret: String,
}

/// `GET /v1/webhooks/endpoints/{id}/secret`.
#[derive(ToSchema)]
pub struct EndpointSecret {
    /// `whsec_…`.
    pub secret: String,
}

/// `POST /v1/webhooks/endpoints/{id}/recover`.
#[derive(ToSchema)]
pub struct Recovered {
    /// How many messages were queued again.
    pub recovered: i64,
    /// Whether more were left (over `GATEHOUSE_WEBHOOK_RECOVER_MAX_MESSAGES`; call again).
    pub more: bool,
}

/// `POST /v1/webhooks/messages/{id}/retry`.
#[derive(ToSchema)]
pub struct Retried {
    /// The deliveries queued again.
    pub retried: i64,
}

/// `POST /v1/moderations`: OpenAI's moderation object.
#[derive(ToSchema)]
pub struct Moderation {
    /// `modr_…`.
    pub id: String,
    pub model: String,
    pub results: Vec<Value>,
}

/// `POST /v1/translations` with `texts`: one result (or `{"error"}`) per text, in order.
#[derive(ToSchema)]
pub struct Translations {
    pub results: Vec<Value>,
}

/// `POST /v1/translations` with one `text`: its translation (`translated`, `segments`, …);
/// with `texts`: `{"results": [...]}`.
#[derive(ToSchema)]
#[schema(as = TranslationReply)]
pub struct TranslationReply(pub Value);

/// A moderation policy version (`version`, `thresholds`, `blocklist`, …, `created_by`,
/// `created_at`; docs/MODERATION.md).
#[derive(ToSchema)]
#[schema(as = PolicyVersion)]
pub struct PolicyDoc(pub Value);

/// `POST /v1/files`: a multipart form.
#[derive(ToSchema)]
pub struct FileUpload {
    /// The content (JSONL: one item or OpenAI batch request per line).
    #[schema(value_type = String, format = Binary)]
    pub file: Vec<u8>,
    /// `batch`, `jobs` or `user_data`.
    #[schema(pattern = "^(batch|jobs|user_data)$")]
    pub purpose: String,
}

/// The `Problem` component ([`super::problems::problem_schema`]), for annotations that name
/// it as a body.
pub struct Problem;

impl utoipa::PartialSchema for Problem {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        super::problems::problem_schema().into()
    }
}

impl ToSchema for Problem {}
