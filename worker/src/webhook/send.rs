//! One HTTP attempt: a signed `POST` of the message's payload, with the address rules checked
//! at connect time (a resolver that drops refused addresses, and a check of literal-IP hosts),
//! no redirects followed, no proxy, a timeout, and a bounded read of the response.

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use gatehouse_common::webhook::ssrf::{AddressPolicy, Refusal};
use reqwest::{
    dns::{Addrs, Name, Resolve, Resolving},
    header::{HeaderMap, HeaderName, HeaderValue},
};

use super::retry::parse_retry_after;

/// Resolves names, then keeps only the addresses the policy allows: the check happens for
/// the very addresses the connection will use.
struct GuardedResolver {
    policy: Arc<AddressPolicy>,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy.clone();
        Box::pin(async move {
            let host = name.as_str().to_string();
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let mut refused = Vec::new();
            let mut allowed = Vec::new();
            for addr in found {
                match policy.check(addr.ip()) {
                    Ok(()) => allowed.push(addr),
                    Err(refusal) => refused.push(refusal.to_string()),
                }
            }
            if allowed.is_empty() {
                let reason = if refused.is_empty() {
                    "no address".to_string()
                } else {
                    refused.join("; ")
                };
                let refusal: Box<dyn std::error::Error + Send + Sync> =
                    Box::new(Refusal::Resolved { host, reason });
                return Err(refusal);
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

/// What to send.
pub struct Request<'a> {
    pub url: &'a str,
    pub message_id: &'a str,
    pub body: &'a [u8],
    /// `v1,…` signatures, space-separated (two during a rotation's overlap).
    pub signature: String,
    pub timestamp: i64,
    /// The endpoint's own headers.
    pub headers: &'a serde_json::Value,
}

/// How one attempt went.
#[derive(Debug)]
pub struct Attempted {
    pub outcome: Outcome,
    pub duration: Duration,
    pub status: Option<u16>,
    /// The start of the response body (lossy UTF-8).
    pub response: Option<String>,
    pub error: Option<String>,
    pub retry_after: Option<Duration>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A 2xx.
    Succeeded,
    /// Any other answer, a timeout, a connection failure.
    Failed,
    /// 410 Gone: the receiver says the endpoint is no more.
    Gone,
    /// Not sent: the address rules or the scheme.
    Refused,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Succeeded => "succeeded",
            Outcome::Failed | Outcome::Gone => "failed",
            Outcome::Refused => "refused",
        }
    }
}

pub struct Sender {
    client: reqwest::Client,
    policy: Arc<AddressPolicy>,
    max_response_bytes: usize,
}

impl Sender {
    pub fn new(
        policy: AddressPolicy,
        timeout: Duration,
        max_response_bytes: usize,
    ) -> Result<Self, reqwest::Error> {
        let policy = Arc::new(policy);
        let client = reqwest::Client::builder()
            .dns_resolver(Arc::new(GuardedResolver {
                policy: policy.clone(),
            }))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .pool_idle_timeout(Duration::from_secs(30))
            .user_agent(concat!("Gatehouse-Webhooks/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            client,
            policy,
            max_response_bytes,
        })
    }

    pub async fn send(&self, request: Request<'_>) -> Attempted {
        let started = Instant::now();
        let refused = |error: String| Attempted {
            outcome: Outcome::Refused,
            duration: started.elapsed(),
            status: None,
            response: None,
            error: Some(error),
            retry_after: None,
        };
        // Scheme and literal-IP hosts (the resolver sees only names).
        if let Err(refusal) = self.policy.check_url(request.url) {
            return refused(refusal.to_string());
        }
        let headers = match headers(&request) {
            Ok(headers) => headers,
            Err(error) => return refused(error),
        };
        let sent = self
            .client
            .post(request.url)
            .headers(headers)
            .body(request.body.to_vec())
            .send()
            .await;
        let mut response = match sent {
            Ok(response) => response,
            Err(error) => {
                if let Some(refusal) = find_refusal(&error) {
                    return refused(refusal.to_string());
                }
                return Attempted {
                    outcome: Outcome::Failed,
                    duration: started.elapsed(),
                    status: None,
                    response: None,
                    error: Some(describe(&error)),
                    retry_after: None,
                };
            }
        };
        let status = response.status();
        let retry_after = if status.as_u16() == 429 || status.as_u16() == 503 {
            response
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| parse_retry_after(v, chrono::Utc::now()))
        } else {
            None
        };
        // Bounded read: the first bytes only; the rest is never read.
        let mut body = Vec::new();
        let mut read_error = None;
        while body.len() < self.max_response_bytes {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    let room = self.max_response_bytes - body.len();
                    body.extend_from_slice(&chunk[..chunk.len().min(room)]);
                }
                Ok(None) => break,
                Err(error) => {
                    read_error = Some(describe(&error));
                    break;
                }
            }
        }
        let outcome = if status.is_success() {
            Outcome::Succeeded
        } else if status.as_u16() == 410 {
            Outcome::Gone
        } else {
            Outcome::Failed
        };
        let error = match outcome {
            Outcome::Succeeded => None,
            _ if status.is_redirection() => Some(format!(
                "HTTP {status}: redirects are not followed (register the final URL)"
            )),
            _ => Some(format!("HTTP {status}")),
        };
        Attempted {
            outcome,
            duration: started.elapsed(),
            status: Some(status.as_u16()),
            response: (!body.is_empty()).then(|| String::from_utf8_lossy(&body).into_owned()),
            error: error.or(read_error),
            retry_after,
        }
    }
}

fn headers(request: &Request<'_>) -> Result<HeaderMap, String> {
    let mut map = HeaderMap::new();
    if let Some(custom) = request.headers.as_object() {
        for (name, value) in custom {
            let (Ok(name), Some(Ok(value))) = (
                HeaderName::from_bytes(name.as_bytes()),
                value.as_str().map(HeaderValue::from_str),
            ) else {
                return Err(format!("the endpoint's header `{name}` is invalid"));
            };
            map.insert(name, value);
        }
    }
    let value = |s: &str| HeaderValue::from_str(s).map_err(|e| e.to_string());
    map.insert("content-type", HeaderValue::from_static("application/json"));
    map.insert("webhook-id", value(request.message_id)?);
    map.insert("webhook-timestamp", value(&request.timestamp.to_string())?);
    map.insert("webhook-signature", value(&request.signature)?);
    Ok(map)
}

/// The refusal of the guarded resolver, if that is why the request failed.
fn find_refusal(error: &reqwest::Error) -> Option<&Refusal> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if let Some(refusal) = e.downcast_ref::<Refusal>() {
            return Some(refusal);
        }
        source = e.source();
    }
    None
}

/// An error and its causes on one line (`error sending request: connection refused`).
fn describe(error: &reqwest::Error) -> String {
    let kind = if error.is_timeout() {
        "timeout"
    } else if error.is_connect() {
        "connection failed"
    } else if error.is_body() || error.is_decode() {
        "reading the response failed"
    } else {
        "request failed"
    };
    let mut causes = Vec::new();
    let mut source = std::error::Error::source(error);
    while let Some(e) = source {
        let text = e.to_string();
        if !causes.contains(&text) {
            causes.push(text);
        }
        source = e.source();
    }
    if causes.is_empty() {
        kind.to_string()
    } else {
        format!("{kind}: {}", causes.join(": "))
    }
}
