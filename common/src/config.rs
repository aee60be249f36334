//! The only place that reads the environment. Every variable is listed with its default in
//! `.env.example`; a wrong value fails start-up with a message naming the variable.

use std::{net::SocketAddr, path::PathBuf, str::FromStr, time::Duration};

#[derive(Debug, thiserror::Error)]
#[error("invalid value for {var}: {message}")]
pub struct ConfigError {
    pub var: &'static str,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

impl FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            other => Err(format!("expected `text` or `json`, got `{other}`")),
        }
    }
}

/// The moderation models a worker runs when `GATEHOUSE_MODERATION_MODELS` is unset: the
/// multilingual Qwen3Guard-style classifier and the English toxicity model.
pub const DEFAULT_MODERATION_MODELS: [&str; 2] = ["guard-e5-small", "toxic-bilstm"];

/// Limits enforced by the api on every submission.
#[derive(Debug, Clone)]
pub struct Limits {
    /// `GATEHOUSE_MAX_BODY_BYTES`: largest accepted request body.
    pub max_body_bytes: usize,
    /// `GATEHOUSE_MAX_ITEMS_PER_JOB`: most items in one job.
    pub max_items_per_job: usize,
    /// `GATEHOUSE_MAX_TEXT_CHARS`: longest item text, in Unicode scalar values.
    pub max_text_chars: usize,
    /// `GATEHOUSE_MAX_CUSTOM_ID_CHARS`: longest `custom_id`.
    pub max_custom_id_chars: usize,
    /// `GATEHOUSE_MAX_MODERATION_INPUTS`: most strings in one `POST /v1/moderations`.
    pub max_moderation_inputs: usize,
    /// `GATEHOUSE_MAX_BLOCKLIST_TERMS`: most blocklist terms in one tenant policy.
    pub max_blocklist_terms: usize,
    /// `GATEHOUSE_MAX_BLOCKLIST_TERM_CHARS`: longest blocklist term.
    pub max_blocklist_term_chars: usize,
    /// `GATEHOUSE_MAX_IP_ALLOWLIST_ENTRIES`: most entries in a tenant's IP allowlist.
    pub max_ip_allowlist_entries: usize,
    /// `GATEHOUSE_MAX_FILE_BYTES`: largest file upload or NDJSON job body.
    pub max_file_bytes: u64,
    /// `GATEHOUSE_MAX_FILE_LINES`: most lines in one file or NDJSON body.
    pub max_file_lines: usize,
    /// `GATEHOUSE_MAX_LINE_BYTES`: longest line of a file or NDJSON body.
    pub max_line_bytes: usize,
}

/// Capacity between tenants: quota defaults, backlog bounds, sync admission.
#[derive(Debug, Clone)]
pub struct CapacityConfig {
    /// `GATEHOUSE_DEFAULT_DAILY_ITEMS`: a tenant's daily items unless set (empty: unlimited).
    pub default_daily_items: Option<i64>,
    /// `GATEHOUSE_DEFAULT_DAILY_CHARACTERS`: daily characters unless set (empty: unlimited).
    pub default_daily_characters: Option<i64>,
    /// `GATEHOUSE_TENANT_MAX_BACKLOG_ITEMS`: one tenant's bulk items not yet processed.
    pub tenant_max_backlog_items: Option<i64>,
    /// `GATEHOUSE_MAX_BACKLOG_ITEMS`: all tenants' bulk items not yet processed.
    pub max_backlog_items: Option<i64>,
    /// `GATEHOUSE_BACKLOG_RETRY_AFTER_SECS`: `Retry-After` when a backlog bound refuses.
    pub backlog_retry_after_secs: u64,
    /// `GATEHOUSE_MAX_SYNC_WAITERS`: sync requests one api replica waits on at once.
    pub max_sync_waiters: usize,
    /// `GATEHOUSE_TENANT_MAX_IN_FLIGHT_CHUNKS`: bulk chunks of one tenant (weight 1) released to
    /// the workers and not yet done.
    pub tenant_max_in_flight_chunks: i64,
    /// `GATEHOUSE_MAX_IN_FLIGHT_CHUNKS`: bulk chunks of all tenants released and not yet done.
    pub max_in_flight_chunks: i64,
    /// `GATEHOUSE_DISPATCH_POLL_MS`: how often the dispatcher looks for chunks to release (it is
    /// also woken by submissions and finished chunks).
    pub dispatch_poll: Duration,
    /// `GATEHOUSE_RELEASE_TIMEOUT_SECS`: a released chunk never claimed this long is released
    /// again (its message was lost).
    pub release_timeout: Duration,
    /// `GATEHOUSE_METRICS_TENANTS`: tenant slugs whose quota use is exported with a `tenant`
    /// label (at most 50; empty: none, labels stay bounded).
    pub metrics_tenants: Vec<String>,
    /// `GATEHOUSE_DEFAULT_RETENTION_DAYS`: days a job's texts, results and files are kept
    /// unless the tenant sets its own.
    pub default_retention_days: i32,
    /// `GATEHOUSE_PURGE_INTERVAL_SECS`: how often expired jobs and files are purged.
    pub purge_interval: Duration,
}

/// Rate limits (Redis; `api/src/ratelimit.rs`).
#[derive(Debug, Clone)]
pub struct RateLimitConfig {
    /// `GATEHOUSE_REDIS_URL`.
    pub redis_url: String,
    /// `GATEHOUSE_REDIS_PREFIX`: prefix of every Redis key (one per deployment; tests: one each).
    pub redis_prefix: String,
    /// `GATEHOUSE_RATE_LIMIT_FAIL_OPEN`: let requests through when Redis is unreachable.
    pub fail_open: bool,
    /// `GATEHOUSE_DEFAULT_REQUESTS_PER_MINUTE` / `..._ITEMS_PER_MINUTE`: per tenant unless set.
    pub default_tenant_requests_per_minute: Option<i64>,
    pub default_tenant_items_per_minute: Option<i64>,
    /// `GATEHOUSE_DEFAULT_KEY_REQUESTS_PER_MINUTE` / `..._ITEMS_PER_MINUTE`: per API key unless set.
    pub default_key_requests_per_minute: Option<i64>,
    pub default_key_items_per_minute: Option<i64>,
}

/// What one HTTP connection may cost an api replica (`api/src/server.rs`).
#[derive(Debug, Clone, Copy)]
pub struct ServerLimits {
    /// `GATEHOUSE_HEADER_READ_TIMEOUT_SECS`: a new connection's first request head must be
    /// complete this long after the connection opened.
    pub header_read_timeout: Duration,
    /// `GATEHOUSE_IDLE_TIMEOUT_SECS`: a kept-alive connection waiting this long for its next
    /// request, or a response write stalled this long (the client stopped reading), is closed.
    pub idle_timeout: Duration,
    /// `GATEHOUSE_BODY_READ_TIMEOUT_SECS`: the grace period of a request body; after it the
    /// body must have averaged `body_min_bytes_per_sec` or it is cut (408).
    pub body_read_timeout: Duration,
    /// `GATEHOUSE_BODY_MIN_BYTES_PER_SEC`: the slowest average body rate accepted past the grace.
    pub body_min_bytes_per_sec: u64,
    /// `GATEHOUSE_MAX_CONNECTIONS`: concurrent connections per replica; more get 503.
    pub max_connections: usize,
    /// `GATEHOUSE_MAX_HEADER_BYTES`: the largest request head (request line + headers).
    pub max_header_bytes: usize,
}

/// Identity: tokens, keys, logins, network rules.
#[derive(Clone)]
pub struct IdentityConfig {
    /// `GATEHOUSE_JWT_ISSUER`: the `iss` of issued tokens (and the only one accepted).
    pub jwt_issuer: String,
    /// `GATEHOUSE_JWT_AUDIENCE`: the `aud` of issued tokens (and the only one accepted).
    pub jwt_audience: String,
    /// `GATEHOUSE_JWT_TTL_SECS`: token lifetime, at most 24 h.
    pub jwt_ttl: Duration,
    /// `GATEHOUSE_KEY_ROTATION_GRACE_SECS`: how long a rotated key's old secret stays valid.
    pub key_rotation_grace: Duration,
    /// `GATEHOUSE_LOGIN_MAX_FAILURES`: failures per user or per IP before a lockout.
    pub login_max_failures: i32,
    /// `GATEHOUSE_LOGIN_LOCKOUT_SECS`: the lockout (and the window failures are counted in).
    pub login_lockout: Duration,
    /// `GATEHOUSE_LOGIN_USER_BACKOFF_AFTER`: failures of one account (from any address) after
    /// which every further attempt waits an exponential backoff.
    pub login_user_backoff_after: i32,
    /// `GATEHOUSE_LOGIN_USER_BACKOFF_MAX_SECS`: the longest such wait.
    pub login_user_backoff_max: Duration,
    /// `GATEHOUSE_LOGIN_USER_WINDOW_SECS`: how long an account's failures are remembered.
    pub login_user_window: Duration,
    /// `GATEHOUSE_LOGIN_KNOWN_ADDRESS_DAYS`: an address a user logged in from stays exempt
    /// from the account backoff this long (0: no exemption).
    pub login_known_address_ttl: Duration,
    /// `GATEHOUSE_TRUSTED_PROXIES`: comma-separated CIDRs whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<String>,
    /// `GATEHOUSE_CORS_ORIGINS`: comma-separated origins allowed by CORS (empty: none).
    pub cors_origins: Vec<String>,
    /// `GATEHOUSE_KEY_DERIVATION_SECRET`: server secret from which idempotent key rotations
    /// derive their new secret (same value on every replica). Empty: a random one per process.
    pub key_derivation_secret: Vec<u8>,
}

/// Outbound webhooks (`common::webhook`, the worker's `webhook` module, `docs/SECURITY.md`).
#[derive(Clone)]
pub struct WebhookConfig {
    /// `GATEHOUSE_WEBHOOK_SECRET_KEY`: 32 bytes (base64) that encrypt the endpoints' signing
    /// secrets at rest with AES-256-GCM, the same on every api and worker. `None` (empty):
    /// secrets are stored unencrypted, under row-level security only (a warning at start-up).
    pub secret_key: Option<[u8; 32]>,
    /// `GATEHOUSE_WEBHOOK_ALLOW_CIDRS`: networks deliveries may connect to although they are
    /// loopback, private, link-local, ... (empty: none).
    pub allow_cidrs: Vec<ipnet::IpNet>,
    /// `GATEHOUSE_WEBHOOK_ALLOW_HTTP`: accept `http://` endpoint URLs (default: `https` only).
    pub allow_http: bool,
    /// `GATEHOUSE_WEBHOOK_RETRY_SCHEDULE_SECS`: the waits before the 2nd, 3rd, ... attempt; a
    /// delivery that failed them all is `exhausted`.
    pub retry_schedule: Vec<Duration>,
    /// `GATEHOUSE_WEBHOOK_RETRY_JITTER_PERCENT`: each wait is drawn from ± this share (0–50).
    pub retry_jitter_percent: u32,
    /// `GATEHOUSE_WEBHOOK_RETRY_AFTER_MAX_SECS`: the longest `Retry-After` (429/503) honoured.
    pub retry_after_max: Duration,
    /// `GATEHOUSE_WEBHOOK_TIMEOUT_MS`: one attempt, connection to the end of the response.
    pub timeout: Duration,
    /// `GATEHOUSE_WEBHOOK_RESPONSE_MAX_BYTES`: how much of a response body is read and kept.
    pub response_max_bytes: usize,
    /// `GATEHOUSE_WEBHOOK_DISABLE_AFTER_SECS`: an endpoint whose every attempt failed for this
    /// long is disabled.
    pub disable_after: Duration,
    /// `GATEHOUSE_WEBHOOK_PROGRESS_INTERVAL_SECS`: a running job's `job.progress` event at most
    /// this often (0: on every finished chunk).
    pub progress_interval: Duration,
    /// `GATEHOUSE_WEBHOOK_ROTATION_OVERLAP_SECS`: after a secret rotation the previous secret
    /// keeps signing (a second signature) this long.
    pub rotation_overlap: Duration,
    /// `GATEHOUSE_WEBHOOK_CONCURRENCY`: attempts one worker makes at once.
    pub concurrency: usize,
    /// `GATEHOUSE_WEBHOOK_LEASE_SECS`: a claimed delivery whose worker died is claimed again
    /// after this long (greater than the attempt timeout).
    pub lease: Duration,
    /// `GATEHOUSE_WEBHOOK_POLL_MS`: how often the delivery loop looks for due deliveries when
    /// no notification woke it (retries come due by time).
    pub poll: Duration,
    /// `GATEHOUSE_WEBHOOK_MAX_ENDPOINTS`: endpoints per tenant.
    pub max_endpoints: i64,
    /// `GATEHOUSE_WEBHOOK_RECOVER_MAX_MESSAGES`: most deliveries one `recover` re-sends.
    pub recover_max_messages: i64,
    /// `GATEHOUSE_WEBHOOK_DELIVERY`: this worker runs the delivery loop.
    pub delivery: bool,
}

impl std::fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("secret_key", &self.secret_key.map(|_| "***"))
            .field("allow_cidrs", &self.allow_cidrs)
            .field("allow_http", &self.allow_http)
            .field("retry_schedule", &self.retry_schedule)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl WebhookConfig {
    fn from_env(env: &Env<'_>) -> Result<Self, ConfigError> {
        let secret_key = {
            let raw: String = env.get("GATEHOUSE_WEBHOOK_SECRET_KEY", String::new())?;
            if raw.is_empty() {
                None
            } else {
                use base64::Engine;
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(raw.trim())
                    .ok()
                    .and_then(|b| <[u8; 32]>::try_from(b).ok())
                    .ok_or(ConfigError {
                        var: "GATEHOUSE_WEBHOOK_SECRET_KEY",
                        message: "must be 32 bytes in base64 (`openssl rand -base64 32`)".into(),
                    })?;
                Some(bytes)
            }
        };
        let allow_cidrs = env
            .list("GATEHOUSE_WEBHOOK_ALLOW_CIDRS")?
            .iter()
            .map(|raw| {
                raw.parse::<ipnet::IpNet>()
                    .or_else(|_| raw.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                    .map(|net| net.trunc())
                    .map_err(|_| ConfigError {
                        var: "GATEHOUSE_WEBHOOK_ALLOW_CIDRS",
                        message: format!("`{raw}` is not a CIDR or an address"),
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let schedule_raw = env.list("GATEHOUSE_WEBHOOK_RETRY_SCHEDULE_SECS")?;
        let retry_schedule = if schedule_raw.is_empty() {
            DEFAULT_WEBHOOK_RETRY_SCHEDULE_SECS
                .iter()
                .map(|s| Duration::from_secs(*s))
                .collect()
        } else {
            schedule_raw
                .iter()
                .map(|raw| {
                    raw.parse::<f64>()
                        .ok()
                        .filter(|s| s.is_finite() && *s > 0.0 && *s <= 30.0 * 86_400.0)
                        .map(Duration::from_secs_f64)
                        .ok_or(ConfigError {
                            var: "GATEHOUSE_WEBHOOK_RETRY_SCHEDULE_SECS",
                            message: format!(
                                "`{raw}`: each wait must be a number of seconds in (0, 2592000]"
                            ),
                        })
                })
                .collect::<Result<Vec<_>, _>>()?
        };
        if retry_schedule.len() > 50 {
            return Err(ConfigError {
                var: "GATEHOUSE_WEBHOOK_RETRY_SCHEDULE_SECS",
                message: "at most 50 retries".into(),
            });
        }
        let retry_jitter_percent: u32 = env.get("GATEHOUSE_WEBHOOK_RETRY_JITTER_PERCENT", 20)?;
        if retry_jitter_percent > 50 {
            return Err(ConfigError {
                var: "GATEHOUSE_WEBHOOK_RETRY_JITTER_PERCENT",
                message: "must be between 0 and 50".into(),
            });
        }
        let timeout = Duration::from_millis(env.positive("GATEHOUSE_WEBHOOK_TIMEOUT_MS", 15_000)?);
        let lease = Duration::from_secs(env.positive("GATEHOUSE_WEBHOOK_LEASE_SECS", 60)?);
        if lease <= timeout {
            return Err(ConfigError {
                var: "GATEHOUSE_WEBHOOK_LEASE_SECS",
                message: "must be longer than GATEHOUSE_WEBHOOK_TIMEOUT_MS".into(),
            });
        }
        Ok(Self {
            secret_key,
            allow_cidrs,
            allow_http: env.get("GATEHOUSE_WEBHOOK_ALLOW_HTTP", false)?,
            retry_schedule,
            retry_jitter_percent,
            retry_after_max: Duration::from_secs(
                env.positive("GATEHOUSE_WEBHOOK_RETRY_AFTER_MAX_SECS", 3600)?,
            ),
            timeout,
            response_max_bytes: env.positive("GATEHOUSE_WEBHOOK_RESPONSE_MAX_BYTES", 4096)?,
            disable_after: Duration::from_secs(
                env.positive("GATEHOUSE_WEBHOOK_DISABLE_AFTER_SECS", 5 * 86_400)?,
            ),
            progress_interval: Duration::from_secs(
                env.get("GATEHOUSE_WEBHOOK_PROGRESS_INTERVAL_SECS", 10)?,
            ),
            rotation_overlap: Duration::from_secs(
                env.get("GATEHOUSE_WEBHOOK_ROTATION_OVERLAP_SECS", 86_400)?,
            ),
            concurrency: env.positive("GATEHOUSE_WEBHOOK_CONCURRENCY", 32)?,
            lease,
            poll: Duration::from_millis(env.positive("GATEHOUSE_WEBHOOK_POLL_MS", 1000)?),
            max_endpoints: env.positive("GATEHOUSE_WEBHOOK_MAX_ENDPOINTS", 50)?,
            recover_max_messages: env.positive("GATEHOUSE_WEBHOOK_RECOVER_MAX_MESSAGES", 10_000)?,
            delivery: env.get("GATEHOUSE_WEBHOOK_DELIVERY", true)?,
        })
    }
}

/// The default retry schedule, Svix's: 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h.
pub const DEFAULT_WEBHOOK_RETRY_SCHEDULE_SECS: [u64; 7] =
    [5, 300, 1800, 7200, 18_000, 36_000, 36_000];

#[derive(Clone)]
pub struct Config {
    pub database_url: String,
    pub database_max_connections: u32,
    /// `GATEHOUSE_DATABASE_ROLE`: the role the services switch to (empty: the login role).
    pub database_role: String,
    pub amqp_url: String,
    pub queue_prefix: String,
    pub api_listen: SocketAddr,
    pub worker_listen: SocketAddr,
    pub models_dir: PathBuf,
    pub ort_dylib_path: PathBuf,
    /// `GATEHOUSE_MODERATION_MODELS`: moderation model directories the worker runs, all on
    /// every item (the singular `GATEHOUSE_MODERATION_MODEL` is read when the list is unset).
    pub moderation_models: Vec<String>,
    /// `GATEHOUSE_TRANSLATION_MODELS`: translation model directories to serve, in order of
    /// preference (empty: every one installed).
    pub translation_models: Vec<String>,
    pub limits: Limits,
    pub server: ServerLimits,
    pub capacity: CapacityConfig,
    pub rate_limits: RateLimitConfig,
    /// `GATEHOUSE_CHUNK_ITEMS`: items per queue message.
    pub chunk_items: usize,
    /// `GATEHOUSE_SYNC_WAIT_MS`: how long the sync endpoints wait before answering 202.
    pub sync_wait: Duration,
    pub outbox_poll: Duration,
    pub outbox_batch: i64,
    pub worker_prefetch: u16,
    /// `GATEHOUSE_WORKER_SYNC_PREFETCH`: unacked sync-lane messages a worker holds at once.
    pub worker_sync_prefetch: u16,
    /// `GATEHOUSE_SYNC_LANE_SESSIONS`: a second session of each moderation model for the sync
    /// lane (bulk batches then never delay a sync request).
    pub sync_lane_sessions: bool,
    pub batch_max_items: usize,
    /// `GATEHOUSE_BATCH_MAX_TOKENS`: most tokens (padded length × rows) in one model batch.
    pub batch_max_tokens: usize,
    pub batch_max_wait: Duration,
    pub max_attempts: i32,
    pub retry_delay: Duration,
    pub ort_intra_threads: usize,
    pub shutdown_timeout: Duration,
    pub log_format: LogFormat,
    pub log_filter: String,
    /// Optional OTLP/HTTP span export (`GATEHOUSE_OTLP_ENDPOINT`, off when unset).
    pub otlp: OtlpConfig,
    pub identity: IdentityConfig,
    pub webhooks: WebhookConfig,
    /// `GATEHOUSE_CONSOLE_DIR`: the built web console (`scripts/build-console.sh`), served at
    /// `/console`.
    pub console_dir: PathBuf,
    pub audit: AuditConfig,
    /// Delivery under faults (issue 16): quorum queues, backoff, chunk deadline.
    pub delivery: DeliveryConfig,
}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Builds the configuration from any lookup (tests pass a map).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let env = Env(&lookup);
        let queue_prefix: String = env.get("GATEHOUSE_QUEUE_PREFIX", "gatehouse".to_string())?;
        if queue_prefix.is_empty()
            || !queue_prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        {
            return Err(ConfigError {
                var: "GATEHOUSE_QUEUE_PREFIX",
                message: "must be non-empty and use only ASCII letters, digits, '.', '_' or '-'"
                    .into(),
            });
        }
        let cfg = Self {
            database_url: env.get(
                "GATEHOUSE_DATABASE_URL",
                "postgres://postgres@127.0.0.1:5432/gatehouse".to_string(),
            )?,
            database_max_connections: env.positive("GATEHOUSE_DATABASE_MAX_CONNECTIONS", 10)?,
            database_role: env.get("GATEHOUSE_DATABASE_ROLE", "gatehouse_app".to_string())?,
            amqp_url: env.get(
                "GATEHOUSE_AMQP_URL",
                "amqp://guest:guest@127.0.0.1:5672/%2f".to_string(),
            )?,
            queue_prefix: queue_prefix.clone(),
            api_listen: env.get(
                "GATEHOUSE_API_LISTEN",
                SocketAddr::from(([127, 0, 0, 1], 8080)),
            )?,
            worker_listen: env.get(
                "GATEHOUSE_WORKER_LISTEN",
                SocketAddr::from(([127, 0, 0, 1], 9091)),
            )?,
            models_dir: env.get("GATEHOUSE_MODELS_DIR", PathBuf::from("models"))?,
            ort_dylib_path: env.get(
                "ORT_DYLIB_PATH",
                PathBuf::from(".cache/onnxruntime/libonnxruntime.so.1.31.1"),
            )?,
            moderation_models: {
                let list = env.list("GATEHOUSE_MODERATION_MODELS")?;
                if !list.is_empty() {
                    list
                } else if let Some(one) = lookup("GATEHOUSE_MODERATION_MODEL") {
                    vec![one]
                } else {
                    DEFAULT_MODERATION_MODELS
                        .iter()
                        .map(|m| m.to_string())
                        .collect()
                }
            },
            translation_models: env.list("GATEHOUSE_TRANSLATION_MODELS")?,
            limits: Limits {
                max_body_bytes: env.positive("GATEHOUSE_MAX_BODY_BYTES", 16 * 1024 * 1024)?,
                max_items_per_job: env.positive("GATEHOUSE_MAX_ITEMS_PER_JOB", 100_000)?,
                max_text_chars: env.positive("GATEHOUSE_MAX_TEXT_CHARS", 20_000)?,
                max_custom_id_chars: env.positive("GATEHOUSE_MAX_CUSTOM_ID_CHARS", 256)?,
                max_moderation_inputs: env.positive("GATEHOUSE_MAX_MODERATION_INPUTS", 1000)?,
                max_blocklist_terms: env.positive("GATEHOUSE_MAX_BLOCKLIST_TERMS", 20_000)?,
                max_blocklist_term_chars: env
                    .positive("GATEHOUSE_MAX_BLOCKLIST_TERM_CHARS", 100)?,
                max_ip_allowlist_entries: env
                    .positive("GATEHOUSE_MAX_IP_ALLOWLIST_ENTRIES", 256)?,
                max_file_bytes: env.positive("GATEHOUSE_MAX_FILE_BYTES", 256 * 1024 * 1024)?,
                max_file_lines: env.positive("GATEHOUSE_MAX_FILE_LINES", 200_000)?,
                max_line_bytes: env.positive("GATEHOUSE_MAX_LINE_BYTES", 256 * 1024)?,
            },
            server: ServerLimits {
                header_read_timeout: Duration::from_secs(
                    env.positive("GATEHOUSE_HEADER_READ_TIMEOUT_SECS", 10)?,
                ),
                idle_timeout: Duration::from_secs(env.positive("GATEHOUSE_IDLE_TIMEOUT_SECS", 30)?),
                body_read_timeout: Duration::from_secs(
                    env.positive("GATEHOUSE_BODY_READ_TIMEOUT_SECS", 30)?,
                ),
                body_min_bytes_per_sec: env.positive("GATEHOUSE_BODY_MIN_BYTES_PER_SEC", 4096)?,
                max_connections: env.positive("GATEHOUSE_MAX_CONNECTIONS", 1024)?,
                max_header_bytes: env.positive("GATEHOUSE_MAX_HEADER_BYTES", 32 * 1024)?,
            },
            capacity: CapacityConfig {
                default_daily_items: env.optional("GATEHOUSE_DEFAULT_DAILY_ITEMS")?,
                default_daily_characters: env.optional("GATEHOUSE_DEFAULT_DAILY_CHARACTERS")?,
                tenant_max_backlog_items: Some(
                    env.positive("GATEHOUSE_TENANT_MAX_BACKLOG_ITEMS", 1_000_000)?,
                ),
                max_backlog_items: Some(env.positive("GATEHOUSE_MAX_BACKLOG_ITEMS", 5_000_000)?),
                backlog_retry_after_secs: env.positive("GATEHOUSE_BACKLOG_RETRY_AFTER_SECS", 30)?,
                max_sync_waiters: env.positive("GATEHOUSE_MAX_SYNC_WAITERS", 256)?,
                tenant_max_in_flight_chunks: env
                    .positive("GATEHOUSE_TENANT_MAX_IN_FLIGHT_CHUNKS", 4)?,
                max_in_flight_chunks: env.positive("GATEHOUSE_MAX_IN_FLIGHT_CHUNKS", 32)?,
                dispatch_poll: Duration::from_millis(
                    env.positive("GATEHOUSE_DISPATCH_POLL_MS", 250)?,
                ),
                release_timeout: Duration::from_secs(
                    env.positive("GATEHOUSE_RELEASE_TIMEOUT_SECS", 600)?,
                ),
                metrics_tenants: {
                    let list = env.list("GATEHOUSE_METRICS_TENANTS")?;
                    if list.len() > 50 {
                        return Err(ConfigError {
                            var: "GATEHOUSE_METRICS_TENANTS",
                            message: "at most 50 tenants (labels must stay bounded)".into(),
                        });
                    }
                    list
                },
                default_retention_days: env.positive("GATEHOUSE_DEFAULT_RETENTION_DAYS", 30)?,
                purge_interval: Duration::from_secs(
                    env.positive("GATEHOUSE_PURGE_INTERVAL_SECS", 3600)?,
                ),
            },
            rate_limits: RateLimitConfig {
                redis_url: env.get("GATEHOUSE_REDIS_URL", "redis://127.0.0.1:6379".to_string())?,
                redis_prefix: env.get("GATEHOUSE_REDIS_PREFIX", queue_prefix.clone())?,
                fail_open: env.get("GATEHOUSE_RATE_LIMIT_FAIL_OPEN", true)?,
                default_tenant_requests_per_minute: env
                    .optional("GATEHOUSE_DEFAULT_REQUESTS_PER_MINUTE")?,
                default_tenant_items_per_minute: env
                    .optional("GATEHOUSE_DEFAULT_ITEMS_PER_MINUTE")?,
                default_key_requests_per_minute: env
                    .optional("GATEHOUSE_DEFAULT_KEY_REQUESTS_PER_MINUTE")?,
                default_key_items_per_minute: env
                    .optional("GATEHOUSE_DEFAULT_KEY_ITEMS_PER_MINUTE")?,
            },
            chunk_items: env.positive("GATEHOUSE_CHUNK_ITEMS", 100)?,
            sync_wait: Duration::from_millis(env.get("GATEHOUSE_SYNC_WAIT_MS", 10_000)?),
            outbox_poll: Duration::from_millis(env.positive("GATEHOUSE_OUTBOX_POLL_MS", 1000)?),
            outbox_batch: env.positive("GATEHOUSE_OUTBOX_BATCH", 200)?,
            worker_prefetch: env.positive("GATEHOUSE_WORKER_PREFETCH", 8)?,
            worker_sync_prefetch: env.positive("GATEHOUSE_WORKER_SYNC_PREFETCH", 16)?,
            sync_lane_sessions: env.get("GATEHOUSE_SYNC_LANE_SESSIONS", true)?,
            batch_max_items: env.positive("GATEHOUSE_BATCH_MAX_ITEMS", 64)?,
            batch_max_tokens: env.positive("GATEHOUSE_BATCH_MAX_TOKENS", 8192)?,
            batch_max_wait: Duration::from_millis(env.get("GATEHOUSE_BATCH_MAX_WAIT_MS", 5)?),
            max_attempts: env.positive("GATEHOUSE_MAX_ATTEMPTS", 5)?,
            retry_delay: Duration::from_millis(env.positive("GATEHOUSE_RETRY_DELAY_MS", 2000)?),
            ort_intra_threads: env.get("GATEHOUSE_ORT_INTRA_THREADS", 0)?,
            shutdown_timeout: Duration::from_secs(
                env.positive("GATEHOUSE_SHUTDOWN_TIMEOUT_SECS", 30)?,
            ),
            log_format: env.get("GATEHOUSE_LOG_FORMAT", LogFormat::Text)?,
            log_filter: env.get("GATEHOUSE_LOG", "info".to_string())?,
            otlp: OtlpConfig::from_env(&env)?,
            identity: IdentityConfig {
                jwt_issuer: env.get("GATEHOUSE_JWT_ISSUER", "gatehouse".to_string())?,
                jwt_audience: env.get("GATEHOUSE_JWT_AUDIENCE", "gatehouse-api".to_string())?,
                jwt_ttl: Duration::from_secs(env.positive("GATEHOUSE_JWT_TTL_SECS", 900u64)?),
                key_rotation_grace: Duration::from_secs(
                    env.get("GATEHOUSE_KEY_ROTATION_GRACE_SECS", 86_400u64)?,
                ),
                login_max_failures: env.positive("GATEHOUSE_LOGIN_MAX_FAILURES", 5)?,
                login_lockout: Duration::from_secs(
                    env.positive("GATEHOUSE_LOGIN_LOCKOUT_SECS", 300u64)?,
                ),
                login_user_backoff_after: env.positive("GATEHOUSE_LOGIN_USER_BACKOFF_AFTER", 10)?,
                login_user_backoff_max: Duration::from_secs(
                    env.positive("GATEHOUSE_LOGIN_USER_BACKOFF_MAX_SECS", 60u64)?,
                ),
                login_user_window: Duration::from_secs(
                    env.positive("GATEHOUSE_LOGIN_USER_WINDOW_SECS", 3600u64)?,
                ),
                login_known_address_ttl: Duration::from_secs(
                    env.get("GATEHOUSE_LOGIN_KNOWN_ADDRESS_DAYS", 30u64)? * 86_400,
                ),
                trusted_proxies: env.list("GATEHOUSE_TRUSTED_PROXIES")?,
                cors_origins: env.list("GATEHOUSE_CORS_ORIGINS")?,
                key_derivation_secret: {
                    let raw: String = env.get("GATEHOUSE_KEY_DERIVATION_SECRET", String::new())?;
                    if raw.is_empty() {
                        let mut bytes = vec![0u8; 32];
                        rand::RngCore::fill_bytes(&mut rand::rng(), &mut bytes);
                        bytes
                    } else if raw.len() < 32 {
                        return Err(ConfigError {
                            var: "GATEHOUSE_KEY_DERIVATION_SECRET",
                            message: "must be at least 32 characters".into(),
                        });
                    } else {
                        raw.into_bytes()
                    }
                },
            },
            webhooks: WebhookConfig::from_env(&env)?,
            console_dir: env.get("GATEHOUSE_CONSOLE_DIR", PathBuf::from("console/dist"))?,
            audit: AuditConfig::from_env(&env)?,
            delivery: DeliveryConfig::from_env(&env)?,
        };
        if i64::from(cfg.delivery.queue_delivery_limit) <= i64::from(cfg.max_attempts) {
            return Err(ConfigError {
                var: "GATEHOUSE_QUEUE_DELIVERY_LIMIT",
                message: "must be greater than GATEHOUSE_MAX_ATTEMPTS (the worker gives up first)"
                    .into(),
            });
        }
        if cfg.identity.jwt_ttl > Duration::from_secs(24 * 3600) {
            return Err(ConfigError {
                var: "GATEHOUSE_JWT_TTL_SECS",
                message: "must be at most 86400 (24 h)".into(),
            });
        }
        Ok(cfg)
    }
}

/// `scheme://user:***@host…`: URLs may carry passwords; nothing prints them.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}{user}:***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_string(),
    }
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("database_url", &redact_url(&self.database_url))
            .field("amqp_url", &redact_url(&self.amqp_url))
            .field("queue_prefix", &self.queue_prefix)
            .field("api_listen", &self.api_listen)
            .field("worker_listen", &self.worker_listen)
            .field("models_dir", &self.models_dir)
            .field("ort_dylib_path", &self.ort_dylib_path)
            .field("moderation_models", &self.moderation_models)
            .field("limits", &self.limits)
            .field("identity", &self.identity)
            .field("webhooks", &self.webhooks)
            .field("otlp", &self.otlp)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for IdentityConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdentityConfig")
            .field("jwt_issuer", &self.jwt_issuer)
            .field("jwt_audience", &self.jwt_audience)
            .field("jwt_ttl", &self.jwt_ttl)
            .field("trusted_proxies", &self.trusted_proxies)
            .field("cors_origins", &self.cors_origins)
            .finish_non_exhaustive()
    }
}

/// The audit trail (`api::audit`, `docs/AUDIT.md`).
#[derive(Debug, Clone)]
pub struct AuditConfig {
    /// `GATEHOUSE_AUDIT_RETENTION_DAYS`: how long audit records are kept when the tenant sets
    /// nothing (default and minimum 90).
    pub retention_days: i32,
    /// `GATEHOUSE_AUDIT_CHECKPOINT_INTERVAL_SECS`: how often each chain's head is signed.
    pub checkpoint_interval: Duration,
    /// `GATEHOUSE_AUDIT_DENIED_PER_MINUTE`: denied or failed requests recorded per client
    /// address per minute and replica (the rest are counted, not stored).
    pub denied_per_minute: u32,
    /// `GATEHOUSE_KEY_ROTATION_REMINDER_DAYS`: keys older than this are `rotation_due`.
    pub key_rotation_reminder_days: i64,
}

/// The shortest audit retention anyone may configure, in days.
pub const MIN_AUDIT_RETENTION_DAYS: i32 = 90;

impl AuditConfig {
    fn from_env(env: &Env<'_>) -> Result<Self, ConfigError> {
        let retention_days = env.positive("GATEHOUSE_AUDIT_RETENTION_DAYS", 90)?;
        if !(MIN_AUDIT_RETENTION_DAYS..=36_500).contains(&retention_days) {
            return Err(ConfigError {
                var: "GATEHOUSE_AUDIT_RETENTION_DAYS",
                message: format!("must be between {MIN_AUDIT_RETENTION_DAYS} and 36500"),
            });
        }
        Ok(Self {
            retention_days,
            checkpoint_interval: Duration::from_secs(
                env.positive("GATEHOUSE_AUDIT_CHECKPOINT_INTERVAL_SECS", 3600)?,
            ),
            denied_per_minute: env.positive("GATEHOUSE_AUDIT_DENIED_PER_MINUTE", 60)?,
            key_rotation_reminder_days: env.positive("GATEHOUSE_KEY_ROTATION_REMINDER_DAYS", 30)?,
        })
    }
}

// ---- Delivery under faults (issue 16) ----

/// Span export over OTLP/HTTP (protobuf), off unless `GATEHOUSE_OTLP_ENDPOINT` is set.
#[derive(Clone, Default)]
pub struct OtlpConfig {
    /// `GATEHOUSE_OTLP_ENDPOINT`: the collector's OTLP/HTTP base URL (`http://collector:4318`);
    /// spans are POSTed to `<endpoint>/v1/traces` (a URL that already ends in `/v1/traces` is
    /// used as it is). `None`: no exporter is built and nothing leaves the process.
    pub traces_url: Option<url::Url>,
    /// `GATEHOUSE_OTLP_HEADERS`: `name=value` pairs, comma-separated, sent with every export
    /// (a collector's or vendor's auth header). Values are taken literally; never logged.
    pub headers: Vec<(String, String)>,
}

impl std::fmt::Debug for OtlpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.headers.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("OtlpConfig")
            .field(
                "traces_url",
                &self.traces_url.as_ref().map(|u| redact_url(u.as_str())),
            )
            .field("header_names", &names)
            .finish()
    }
}

impl OtlpConfig {
    fn from_env(env: &Env<'_>) -> Result<Self, ConfigError> {
        const ENDPOINT: &str = "GATEHOUSE_OTLP_ENDPOINT";
        const HEADERS: &str = "GATEHOUSE_OTLP_HEADERS";
        let raw: String = env.get(ENDPOINT, String::new())?;
        let traces_url = if raw.is_empty() {
            None
        } else {
            let invalid = |message: String| ConfigError {
                var: ENDPOINT,
                message,
            };
            let mut url = url::Url::parse(&raw)
                .map_err(|e| invalid(format!("`{}`: {e}", redact_url(&raw))))?;
            if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
                return Err(invalid(format!(
                    "`{}`: expected an http:// or https:// URL with a host, e.g. \
                     http://127.0.0.1:4318",
                    redact_url(&raw)
                )));
            }
            if url.query().is_some() || url.fragment().is_some() {
                return Err(invalid("must have no query or fragment".into()));
            }
            if !url.path().ends_with("/v1/traces") {
                let path = format!("{}/v1/traces", url.path().trim_end_matches('/'));
                url.set_path(&path);
            }
            Some(url)
        };
        let mut headers = Vec::new();
        for pair in env.list(HEADERS)? {
            let invalid = |message: &str| ConfigError {
                var: HEADERS,
                message: message.into(),
            };
            // The value is never echoed: it is usually a secret.
            let (name, value) = pair
                .split_once('=')
                .ok_or_else(|| invalid("expected `name=value` pairs separated by commas"))?;
            let (name, value) = (name.trim(), value.trim());
            if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() || name.is_empty()
            {
                return Err(ConfigError {
                    var: HEADERS,
                    message: format!("`{name}` is not a valid header name"),
                });
            }
            if reqwest::header::HeaderValue::from_str(value).is_err() {
                return Err(ConfigError {
                    var: HEADERS,
                    message: format!("the value of `{name}` is not a valid header value"),
                });
            }
            headers.push((name.to_ascii_lowercase(), value.to_string()));
        }
        if !headers.is_empty() && traces_url.is_none() {
            return Err(ConfigError {
                var: HEADERS,
                message: "is set but GATEHOUSE_OTLP_ENDPOINT is not (nothing is exported)".into(),
            });
        }
        Ok(Self {
            traces_url,
            headers,
        })
    }
}

/// Retry backoff, the quorum queues' delivery limit, the chunk deadline and the test-only
/// fault injection.
#[derive(Debug, Clone)]
pub struct DeliveryConfig {
    /// The delay queues' TTLs: `GATEHOUSE_RETRY_DELAY_MS` × 4^k for k < `GATEHOUSE_RETRY_TIERS`.
    pub retry_delays: Vec<Duration>,
    /// `GATEHOUSE_QUEUE_DELIVERY_LIMIT`: the work queues' `x-delivery-limit` (redeliveries of
    /// one message — crashes, requeues — before the broker dead-letters it).
    pub queue_delivery_limit: u32,
    /// `GATEHOUSE_CHUNK_DEADLINE_MS`: a chunk not finished this long after its delivery is
    /// abandoned as a transient failure (retried), well before RabbitMQ's `consumer_timeout`.
    pub chunk_deadline: Duration,
    /// `GATEHOUSE_FAULT_INJECT`: **test-only** crash points (see `common/src/fault.rs`).
    pub fault_inject: Vec<String>,
}

impl DeliveryConfig {
    fn from_env(env: &Env<'_>) -> Result<Self, ConfigError> {
        let base: u64 = env.positive("GATEHOUSE_RETRY_DELAY_MS", 2000)?;
        let tiers: u32 = env.positive("GATEHOUSE_RETRY_TIERS", 4)?;
        if tiers > 8 {
            return Err(ConfigError {
                var: "GATEHOUSE_RETRY_TIERS",
                message: "must be at most 8".into(),
            });
        }
        let retry_delays = (0..tiers)
            .map(|k| Duration::from_millis(base.saturating_mul(4u64.pow(k))))
            .collect();
        let fault_inject = env.list("GATEHOUSE_FAULT_INJECT")?;
        if let Some(unknown) = fault_inject
            .iter()
            .find(|p| !crate::fault::POINTS.contains(&p.as_str()))
        {
            return Err(ConfigError {
                var: "GATEHOUSE_FAULT_INJECT",
                message: format!(
                    "unknown point `{unknown}` (test-only; one of {})",
                    crate::fault::POINTS.join(", ")
                ),
            });
        }
        Ok(Self {
            retry_delays,
            queue_delivery_limit: env.positive("GATEHOUSE_QUEUE_DELIVERY_LIMIT", 20)?,
            chunk_deadline: Duration::from_millis(
                env.positive("GATEHOUSE_CHUNK_DEADLINE_MS", 900_000)?,
            ),
            fault_inject,
        })
    }
}

struct Env<'a>(&'a dyn Fn(&str) -> Option<String>);

impl Env<'_> {
    fn get<T>(&self, var: &'static str, default: T) -> Result<T, ConfigError>
    where
        T: FromStr,
        T::Err: std::fmt::Display,
    {
        match (self.0)(var) {
            None => Ok(default),
            Some(raw) if raw.trim().is_empty() => Ok(default),
            Some(raw) => raw.trim().parse().map_err(|e: T::Err| ConfigError {
                var,
                message: format!("`{raw}`: {e}"),
            }),
        }
    }

    /// A comma-separated list; blanks are dropped.
    fn list(&self, var: &'static str) -> Result<Vec<String>, ConfigError> {
        Ok(self
            .get(var, String::new())?
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect())
    }

    /// An optional non-negative number: unset or empty is `None` (unlimited).
    fn optional(&self, var: &'static str) -> Result<Option<i64>, ConfigError> {
        match (self.0)(var).map(|v| v.trim().to_string()) {
            None => Ok(None),
            Some(raw) if raw.is_empty() => Ok(None),
            Some(raw) => match raw.parse::<i64>() {
                Ok(n) if n >= 0 => Ok(Some(n)),
                _ => Err(ConfigError {
                    var,
                    message: format!(
                        "`{raw}`: expected a non-negative integer, or empty for unlimited"
                    ),
                }),
            },
        }
    }

    fn positive<T>(&self, var: &'static str, default: T) -> Result<T, ConfigError>
    where
        T: FromStr + PartialOrd + Default,
        T::Err: std::fmt::Display,
    {
        let value = self.get(var, default)?;
        if value <= T::default() {
            return Err(ConfigError {
                var,
                message: "must be greater than zero".into(),
            });
        }
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn with(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn defaults_match_the_documented_ones() {
        let cfg = with(&[]).expect("defaults are valid");
        assert_eq!(cfg.api_listen.to_string(), "127.0.0.1:8080");
        assert_eq!(cfg.worker_listen.to_string(), "127.0.0.1:9091");
        assert_eq!(cfg.queue_prefix, "gatehouse");
        assert_eq!(
            cfg.database_url,
            "postgres://postgres@127.0.0.1:5432/gatehouse"
        );
        assert_eq!(cfg.amqp_url, "amqp://guest:guest@127.0.0.1:5672/%2f");
    }

    /// Every variable this file reads is documented, with its default, in `.env.example`.
    #[test]
    fn every_variable_is_in_the_env_example() {
        let source = include_str!("config.rs");
        let example = include_str!("../../.env.example");
        let mut missing = Vec::new();
        for (i, _) in source.match_indices("\"GATEHOUSE_") {
            let name: String = source[i + 1..]
                .chars()
                .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            let documented = example
                .lines()
                .any(|l| l.trim_start_matches("# ").starts_with(&format!("{name}=")));
            if name.len() > "GATEHOUSE_".len() && !documented && !missing.contains(&name) {
                missing.push(name);
            }
        }
        assert!(missing.is_empty(), "not in .env.example: {missing:?}");
    }

    #[test]
    fn debug_output_hides_passwords() {
        let cfg = with(&[
            ("GATEHOUSE_DATABASE_URL", "postgres://app:s3cret@db:5432/gh"),
            ("GATEHOUSE_AMQP_URL", "amqp://gh:hunter2@mq:5672/%2f"),
        ])
        .expect("valid");
        let text = format!("{cfg:?}");
        assert!(
            !text.contains("s3cret") && !text.contains("hunter2"),
            "{text}"
        );
        assert!(text.contains("postgres://app:***@db:5432/gh"), "{text}");
        assert_eq!(redact_url("amqp://localhost/%2f"), "amqp://localhost/%2f");
    }

    #[test]
    fn a_wrong_value_names_its_variable() {
        let err = with(&[("GATEHOUSE_API_LISTEN", "not-an-address")]).unwrap_err();
        assert_eq!(err.var, "GATEHOUSE_API_LISTEN");
        assert!(err.to_string().contains("GATEHOUSE_API_LISTEN"));
        let err = with(&[("GATEHOUSE_MAX_ITEMS_PER_JOB", "0")]).unwrap_err();
        assert_eq!(err.var, "GATEHOUSE_MAX_ITEMS_PER_JOB");
        let err = with(&[("GATEHOUSE_QUEUE_PREFIX", "bad prefix!")]).unwrap_err();
        assert_eq!(err.var, "GATEHOUSE_QUEUE_PREFIX");
        let err = with(&[("GATEHOUSE_LOG_FORMAT", "xml")]).unwrap_err();
        assert_eq!(err.var, "GATEHOUSE_LOG_FORMAT");
        let err = with(&[("GATEHOUSE_JWT_TTL_SECS", "86401")]).unwrap_err();
        assert_eq!(err.var, "GATEHOUSE_JWT_TTL_SECS");
    }

    #[test]
    fn otlp_export_is_off_by_default_and_validated() {
        let cfg = with(&[]).expect("defaults");
        assert!(cfg.otlp.traces_url.is_none());
        assert!(cfg.otlp.headers.is_empty());
        for (raw, want) in [
            ("http://127.0.0.1:4318", "http://127.0.0.1:4318/v1/traces"),
            ("http://collector:4318/", "http://collector:4318/v1/traces"),
            (
                "https://otel.example/otlp",
                "https://otel.example/otlp/v1/traces",
            ),
            ("http://c:4318/v1/traces", "http://c:4318/v1/traces"),
        ] {
            let cfg = with(&[("GATEHOUSE_OTLP_ENDPOINT", raw)]).expect(raw);
            assert_eq!(cfg.otlp.traces_url.map(String::from).as_deref(), Some(want));
        }
        for bad in [
            "collector:4318",
            "ftp://c/x",
            "not a url",
            "http://c:4318/?a=b",
        ] {
            let err = with(&[("GATEHOUSE_OTLP_ENDPOINT", bad)]).unwrap_err();
            assert_eq!(err.var, "GATEHOUSE_OTLP_ENDPOINT", "{bad}");
        }
        let cfg = with(&[
            ("GATEHOUSE_OTLP_ENDPOINT", "http://c:4318"),
            (
                "GATEHOUSE_OTLP_HEADERS",
                "Authorization=Bearer s3cret, x-team = a=b",
            ),
        ])
        .expect("headers");
        assert_eq!(
            cfg.otlp.headers,
            vec![
                ("authorization".to_string(), "Bearer s3cret".to_string()),
                ("x-team".to_string(), "a=b".to_string()),
            ]
        );
        // Header values are secrets: neither Debug nor an error message shows them.
        assert!(!format!("{cfg:?}").contains("s3cret"));
        let err = with(&[
            ("GATEHOUSE_OTLP_ENDPOINT", "http://c:4318"),
            ("GATEHOUSE_OTLP_HEADERS", "bad name=s3cret"),
        ])
        .unwrap_err();
        assert_eq!(err.var, "GATEHOUSE_OTLP_HEADERS");
        assert!(!err.to_string().contains("s3cret"), "{err}");
        let err = with(&[("GATEHOUSE_OTLP_HEADERS", "authorization=x")]).unwrap_err();
        assert_eq!(err.var, "GATEHOUSE_OTLP_HEADERS");
    }

    #[test]
    fn webhook_settings_parse_and_refuse_nonsense() {
        let cfg = with(&[]).expect("defaults");
        let hooks = &cfg.webhooks;
        let schedule: Vec<u64> = hooks.retry_schedule.iter().map(|d| d.as_secs()).collect();
        assert_eq!(schedule, DEFAULT_WEBHOOK_RETRY_SCHEDULE_SECS);
        assert_eq!(hooks.timeout, Duration::from_secs(15));
        assert_eq!(hooks.disable_after, Duration::from_secs(5 * 86_400));
        assert!(!hooks.allow_http && hooks.allow_cidrs.is_empty() && hooks.secret_key.is_none());
        let cfg = with(&[
            ("GATEHOUSE_WEBHOOK_RETRY_SCHEDULE_SECS", "0.5, 2"),
            ("GATEHOUSE_WEBHOOK_ALLOW_CIDRS", "127.0.0.1, 10.1.2.3/8"),
            (
                "GATEHOUSE_WEBHOOK_SECRET_KEY",
                "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
            ),
        ])
        .expect("valid");
        assert_eq!(
            cfg.webhooks.retry_schedule,
            [Duration::from_millis(500), Duration::from_secs(2)]
        );
        let nets: Vec<String> = cfg
            .webhooks
            .allow_cidrs
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(nets, ["127.0.0.1/32", "10.0.0.0/8"]);
        assert_eq!(cfg.webhooks.secret_key.map(|k| k[31]), Some(31));
        assert!(!format!("{cfg:?}").contains("AAECAw"));
        for (var, value) in [
            ("GATEHOUSE_WEBHOOK_RETRY_SCHEDULE_SECS", "5,-1"),
            ("GATEHOUSE_WEBHOOK_ALLOW_CIDRS", "not-a-net"),
            ("GATEHOUSE_WEBHOOK_SECRET_KEY", "c2hvcnQ="),
            ("GATEHOUSE_WEBHOOK_RETRY_JITTER_PERCENT", "51"),
            ("GATEHOUSE_WEBHOOK_TIMEOUT_MS", "0"),
            ("GATEHOUSE_WEBHOOK_LEASE_SECS", "10"),
        ] {
            let mut pairs = vec![(var, value)];
            if var == "GATEHOUSE_WEBHOOK_LEASE_SECS" {
                pairs.push(("GATEHOUSE_WEBHOOK_TIMEOUT_MS", "15000"));
            }
            assert_eq!(with(&pairs).unwrap_err().var, var, "{value}");
        }
    }

    #[test]
    fn delivery_settings_have_defaults_and_are_checked() {
        let cfg = with(&[]).expect("defaults");
        let secs: Vec<u64> = cfg
            .delivery
            .retry_delays
            .iter()
            .map(Duration::as_secs)
            .collect();
        assert_eq!(secs, [2, 8, 32, 128]);
        assert_eq!(cfg.delivery.queue_delivery_limit, 20);
        assert_eq!(cfg.delivery.chunk_deadline, Duration::from_secs(900));
        assert!(cfg.delivery.fault_inject.is_empty());
        let cfg = with(&[
            ("GATEHOUSE_RETRY_DELAY_MS", "500"),
            ("GATEHOUSE_RETRY_TIERS", "2"),
            ("GATEHOUSE_FAULT_INJECT", "api-after-commit"),
        ])
        .expect("valid");
        assert_eq!(
            cfg.delivery.retry_delays,
            [Duration::from_millis(500), Duration::from_secs(2)]
        );
        assert_eq!(cfg.delivery.fault_inject, ["api-after-commit"]);
        for pairs in [
            vec![("GATEHOUSE_QUEUE_DELIVERY_LIMIT", "5")],
            vec![("GATEHOUSE_RETRY_TIERS", "9")],
            vec![("GATEHOUSE_FAULT_INJECT", "somewhere")],
            vec![("GATEHOUSE_CHUNK_DEADLINE_MS", "0")],
        ] {
            assert!(with(&pairs).is_err(), "{pairs:?}");
        }
    }
}
