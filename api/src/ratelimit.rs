//! Rate limits per tenant and per API key: requests per minute and items per minute, counted
//! in Redis so every api replica shares one count (one Lua script per check: all limits of a
//! request are checked and counted atomically, all-or-nothing).
//!
//! Windows are fixed minutes (`<prefix>:rl:<scope>:<id>:<limit>:<minute>`), which makes the
//! count exact and the reset time plain. Every authenticated response carries the IETF
//! `RateLimit-Policy` / `RateLimit` fields for the limits in force; a refusal is `429
//! rate_limited` naming the limit, with `Retry-After`. If Redis cannot be reached the check
//! fails open (`GATEHOUSE_RATE_LIMIT_FAIL_OPEN`, default) — capacity stays protected by the
//! quotas, backlog bounds and admission control, which live in Postgres — and
//! `gatehouse_ratelimit_store_errors_total` counts it.
//!
//! Why Redis and not Postgres: this check runs on every request, its counters are worthless
//! after a minute, and it must not add a write transaction to each read. Quotas, which must
//! commit or roll back with the job they reserve for, are in Postgres.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    extract::Request,
    http::HeaderValue,
    middleware::Next,
    response::{IntoResponse, Response},
};
use gatehouse_common::config::RateLimitConfig;
use redis::aio::ConnectionManager;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, json};
use tokio::sync::OnceCell;

use crate::error::ApiError;

/// A limit's settings as stored (`tenants.rate_limits`, `api_keys.rate_limits`): a key present
/// = set (`null` = unlimited), absent = the operator's default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RateSettings {
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub requests_per_minute: Option<Option<i64>>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub items_per_minute: Option<Option<i64>>,
}

fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

impl RateSettings {
    pub fn from_json(raw: &serde_json::Value) -> Self {
        serde_json::from_value(raw.clone()).unwrap_or_default()
    }

    /// `self` with `change`'s keys laid over it.
    pub fn merged(&self, change: &RateSettings) -> RateSettings {
        RateSettings {
            requests_per_minute: change.requests_per_minute.or(self.requests_per_minute),
            items_per_minute: change.items_per_minute.or(self.items_per_minute),
        }
    }

    /// The effective `(requests, items)` per minute over `defaults`.
    pub fn effective(&self, defaults: (Option<i64>, Option<i64>)) -> (Option<i64>, Option<i64>) {
        (
            self.requests_per_minute.unwrap_or(defaults.0),
            self.items_per_minute.unwrap_or(defaults.1),
        )
    }

    pub fn validate(&self, prefix: &str) -> Result<(), ApiError> {
        for (name, value) in [
            ("requests_per_minute", self.requests_per_minute),
            ("items_per_minute", self.items_per_minute),
        ] {
            if let Some(Some(n)) = value
                && n < 1
            {
                return Err(ApiError::invalid(
                    "invalid_rate_limit",
                    format!("{prefix}.{name}"),
                    "must be a positive integer or null (unlimited)",
                ));
            }
        }
        Ok(())
    }
}

/// What applies to one principal: `(policy name, scope id, limit per minute)` for requests
/// and for items.
#[derive(Debug, Clone, Default)]
pub struct Limits {
    pub requests: Vec<(&'static str, String, i64)>,
    pub items: Vec<(&'static str, String, i64)>,
}

impl Limits {
    /// The limits of a key (`key` is `None` for users) and its tenant.
    pub fn of(
        config: &RateLimitConfig,
        tenant: &str,
        tenant_settings: RateSettings,
        key: Option<(&str, RateSettings)>,
    ) -> Self {
        let mut out = Limits::default();
        let (rpm, ipm) = tenant_settings.effective((
            config.default_tenant_requests_per_minute,
            config.default_tenant_items_per_minute,
        ));
        if let Some(q) = rpm {
            out.requests.push(("tenant-rpm", tenant.to_string(), q));
        }
        if let Some(q) = ipm {
            out.items.push(("tenant-ipm", tenant.to_string(), q));
        }
        if let Some((key, settings)) = key {
            let (rpm, ipm) = settings.effective((
                config.default_key_requests_per_minute,
                config.default_key_items_per_minute,
            ));
            if let Some(q) = rpm {
                out.requests.push(("key-rpm", key.to_string(), q));
            }
            if let Some(q) = ipm {
                out.items.push(("key-ipm", key.to_string(), q));
            }
        }
        out
    }

    pub fn is_empty(&self) -> bool {
        self.requests.is_empty() && self.items.is_empty()
    }
}

/// One limit's state after a check, for the response headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Standing {
    pub name: &'static str,
    pub quota: i64,
    pub remaining: i64,
    pub reset_secs: u64,
}

/// The limits a response reports, filled in while the request is handled.
#[derive(Debug, Clone, Default)]
pub struct Slot(Arc<Mutex<Vec<Standing>>>);

impl Slot {
    fn record(&self, standings: Vec<Standing>) {
        if let Ok(mut slot) = self.0.lock() {
            for s in standings {
                match slot.iter_mut().find(|x| x.name == s.name) {
                    Some(existing) => *existing = s,
                    None => slot.push(s),
                }
            }
        }
    }

    fn take(&self) -> Vec<Standing> {
        self.0
            .lock()
            .map(|mut s| std::mem::take(&mut *s))
            .unwrap_or_default()
    }
}

/// Checks and counts `n` against every limit of the list in one script: returns
/// `{1, remaining..., ttl...}` when all fit (and counts them), `{0, index, ttl}` when limit
/// `index` (1-based) would be passed (and counts nothing).
const SCRIPT: &str = r"
local n = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local count = #KEYS
for i = 1, count do
    local used = tonumber(redis.call('GET', KEYS[i]) or '0')
    if used + n > tonumber(ARGV[2 + i]) then
        local ttl = redis.call('TTL', KEYS[i])
        if ttl < 0 then ttl = window end
        return {0, i, ttl}
    end
end
local out = {1}
local ttls = {}
for i = 1, count do
    local used = redis.call('INCRBY', KEYS[i], n)
    if used == n then redis.call('EXPIRE', KEYS[i], window) end
    out[#out + 1] = tonumber(ARGV[2 + i]) - used
    local ttl = redis.call('TTL', KEYS[i])
    if ttl < 0 then ttl = window end
    ttls[#ttls + 1] = ttl
end
for i = 1, count do out[#out + 1] = ttls[i] end
return out
";

const WINDOW_SECS: u64 = 60;

pub struct RateLimiter {
    url: String,
    prefix: String,
    fail_open: bool,
    conn: OnceCell<ConnectionManager>,
    script: redis::Script,
    pub config: RateLimitConfig,
}

impl RateLimiter {
    pub fn new(config: &RateLimitConfig) -> Self {
        Self {
            url: config.redis_url.clone(),
            prefix: config.redis_prefix.clone(),
            fail_open: config.fail_open,
            conn: OnceCell::new(),
            script: redis::Script::new(SCRIPT),
            config: config.clone(),
        }
    }

    async fn connection(&self) -> Result<ConnectionManager, redis::RedisError> {
        self.conn
            .get_or_try_init(|| async {
                let client = redis::Client::open(self.url.as_str())?;
                ConnectionManager::new(client).await
            })
            .await
            .cloned()
    }

    /// Counts `n` against `limits`; refuses with `429 rate_limited` when one would be passed.
    pub async fn check(
        &self,
        slot: Option<&Slot>,
        limits: &[(&'static str, String, i64)],
        n: i64,
    ) -> Result<(), ApiError> {
        if limits.is_empty() || n <= 0 {
            return Ok(());
        }
        let minute = chrono::Utc::now()
            .timestamp()
            .div_euclid(WINDOW_SECS as i64);
        let mut invocation = self.script.prepare_invoke();
        invocation.arg(n).arg(WINDOW_SECS + 1);
        for (name, id, _) in limits {
            invocation.key(format!("{}:rl:{name}:{id}:{minute}", self.prefix));
        }
        for (_, _, q) in limits {
            invocation.arg(*q);
        }
        let answer: Result<Vec<i64>, String> = async {
            let mut conn = tokio::time::timeout(Duration::from_secs(2), self.connection())
                .await
                .map_err(|_| "connect timed out".to_string())?
                .map_err(|e| e.to_string())?;
            tokio::time::timeout(
                Duration::from_millis(500),
                invocation.invoke_async(&mut conn),
            )
            .await
            .map_err(|_| "timed out".to_string())?
            .map_err(|e| e.to_string())
        }
        .await;
        let answer = match answer {
            Ok(answer) => answer,
            Err(error) => {
                metrics::counter!("gatehouse_ratelimit_store_errors_total").increment(1);
                tracing::warn!(%error, fail_open = self.fail_open, "rate-limit store unavailable");
                return if self.fail_open {
                    Ok(())
                } else {
                    Err(ApiError::Unavailable("the rate-limit store"))
                };
            }
        };
        match answer.first() {
            Some(1) => {
                let count = limits.len();
                let standings = limits
                    .iter()
                    .enumerate()
                    .map(|(i, (name, _, q))| Standing {
                        name,
                        quota: *q,
                        remaining: answer.get(1 + i).copied().unwrap_or(0).max(0),
                        reset_secs: answer.get(1 + count + i).copied().unwrap_or(60).max(0) as u64,
                    })
                    .collect();
                if let Some(slot) = slot {
                    slot.record(standings);
                }
                Ok(())
            }
            _ => {
                let index = answer.get(1).copied().unwrap_or(1).max(1) as usize - 1;
                let ttl = answer.get(2).copied().unwrap_or(60).max(1) as u64;
                let (name, _, quota) = &limits[index.min(limits.len() - 1)];
                metrics::counter!("gatehouse_api_rate_limited_total", "limit" => *name)
                    .increment(1);
                if let Some(slot) = slot {
                    slot.record(vec![Standing {
                        name,
                        quota: *quota,
                        remaining: 0,
                        reset_secs: ttl,
                    }]);
                }
                let mut extra = Map::new();
                extra.insert("limit".into(), json!(name));
                extra.insert("quota".into(), json!(quota));
                extra.insert("window_secs".into(), json!(WINDOW_SECS));
                extra.insert("requested".into(), json!(n));
                Err(ApiError::TooManyRequests {
                    code: "rate_limited",
                    detail: format!(
                        "the `{name}` limit ({quota} per minute) would be passed; retry in {ttl} s"
                    ),
                    retry_after_secs: ttl,
                    extra,
                })
            }
        }
    }
}

/// Middleware: gives each request a [`Slot`] and writes what it collected as the
/// `RateLimit-Policy` and `RateLimit` fields (draft-ietf-httpapi-ratelimit-headers).
pub async fn headers(mut request: Request, next: Next) -> Response {
    let slot = Slot::default();
    request.extensions_mut().insert(slot.clone());
    let mut response = next.run(request).await.into_response();
    let standings = slot.take();
    if standings.is_empty() {
        return response;
    }
    let policy: Vec<String> = standings
        .iter()
        .map(|s| format!("\"{}\";q={};w={WINDOW_SECS}", s.name, s.quota))
        .collect();
    let state: Vec<String> = standings
        .iter()
        .map(|s| format!("\"{}\";r={};t={}", s.name, s.remaining, s.reset_secs))
        .collect();
    let headers = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&policy.join(", ")) {
        headers.insert("ratelimit-policy", v);
    }
    if let Ok(v) = HeaderValue::from_str(&state.join(", ")) {
        headers.insert("ratelimit", v);
    }
    response
}
