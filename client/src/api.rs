//! HTTP to the Gatehouse API: the bearer on every request, problem+json errors turned into
//! [`CliError::Api`], and retries of what is safe to repeat (reads, and submissions carrying
//! an `Idempotency-Key`) on network errors, 5xx, `429` and `503`, honouring `Retry-After`.

use std::{future::Future, time::Duration};

use reqwest::{Method, RequestBuilder, Response, StatusCode, header};
use serde::{Serialize, de::DeserializeOwned};

use crate::{
    config::Target,
    error::{CliError, Problem, Result},
};

/// How often a safe request is tried in all.
const ATTEMPTS: u32 = 4;
/// The longest wait between two tries, whatever `Retry-After` says.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
    base: String,
    bearer: Option<String>,
}

impl Api {
    pub fn new(target: Target) -> Result<Self> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("gatehouse-cli/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(10))
            // A stalled response (not a slow one: results downloads can take long).
            .read_timeout(Duration::from_secs(120))
            .build()
            .map_err(|e| CliError::Usage(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self {
            http,
            base: target.url,
            bearer: target.bearer,
        })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    pub fn has_bearer(&self) -> bool {
        self.bearer.is_some()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A request to `path` with the bearer, if any.
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let builder = self.http.request(method, self.url(path));
        match &self.bearer {
            Some(bearer) => builder.bearer_auth(bearer),
            None => builder,
        }
    }

    /// Sends once: a success response, or the error it is.
    pub async fn send(&self, builder: RequestBuilder) -> Result<Response> {
        let response = builder.send().await.map_err(|source| CliError::Network {
            url: self.base.clone(),
            source,
        })?;
        if response.status().is_success() {
            Ok(response)
        } else {
            Err(problem(response).await)
        }
    }

    /// `GET path` as JSON, retried while the failure is transient.
    pub async fn get_json<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        let response = retrying(|| self.send(self.request(Method::GET, path))).await?;
        self.decode(response).await
    }

    /// `POST path` with a JSON body: the status and the body, decoded. Retried only when
    /// `idempotency_key` makes repeating it harmless.
    pub async fn post_json<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
        idempotency_key: Option<&str>,
    ) -> Result<(StatusCode, T)> {
        let build = || {
            let builder = self.request(Method::POST, path).json(body);
            match idempotency_key {
                Some(key) => builder.header("Idempotency-Key", key),
                None => builder,
            }
        };
        let response = if idempotency_key.is_some() {
            retrying(|| self.send(build())).await?
        } else {
            self.send(build()).await?
        };
        let status = response.status();
        Ok((status, self.decode(response).await?))
    }

    pub async fn decode<T: DeserializeOwned>(&self, response: Response) -> Result<T> {
        let url = response.url().to_string();
        let bytes = response.bytes().await.map_err(|source| CliError::Network {
            url: url.clone(),
            source,
        })?;
        serde_json::from_slice(&bytes).map_err(|e| CliError::Protocol {
            url,
            detail: format!("not the JSON expected ({e})"),
        })
    }
}

/// Runs `attempt` until it succeeds, fails for good, or [`ATTEMPTS`] tries are spent.
pub async fn retrying<T, F, Fut>(mut attempt: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let mut tries = 1;
    loop {
        match attempt().await {
            Err(error) if tries < ATTEMPTS => match error.retry_after() {
                Some(wait) => {
                    tokio::time::sleep(wait.min(MAX_BACKOFF) * tries).await;
                    tries += 1;
                }
                None => return Err(error),
            },
            other => return other,
        }
    }
}

/// The error an unsuccessful response stands for: its problem+json body, or (from a proxy, say)
/// whatever text it had.
async fn problem(response: Response) -> CliError {
    let status = response.status();
    let retry_after = response
        .headers()
        .get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let body = response.bytes().await.unwrap_or_default();
    let problem = serde_json::from_slice::<Problem>(&body)
        .ok()
        .filter(|p| !p.code.is_empty() || !p.detail.is_empty())
        .unwrap_or_else(|| Problem {
            title: status.canonical_reason().unwrap_or("").to_string(),
            status: status.as_u16(),
            detail: String::from_utf8_lossy(&body).chars().take(300).collect(),
            ..Problem::default()
        });
    CliError::Api {
        status,
        problem: Box::new(problem),
        retry_after,
    }
}
