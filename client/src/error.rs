//! The client's one error type and the exit codes it maps to (documented in the README's
//! "Clients" section and in `gatehouse --help`).

use std::time::Duration;

use gatehouse_common::job::view::Job;
use serde::{Deserialize, Serialize};

/// Exit codes, stable for scripts.
pub mod exit {
    pub const OK: u8 = 0;
    /// Bad arguments, unreadable input file, not logged in, config file problems.
    pub const USAGE: u8 = 1;
    /// The API refused the request (a 4xx problem: validation, auth, quota, not found).
    pub const API: u8 = 2;
    /// The server failed (5xx) or could not be reached (connection, timeout, broken stream).
    pub const SERVER: u8 = 3;
    /// The job ended `failed` or `cancelled`, or some of its items failed.
    pub const JOB_FAILED: u8 = 4;
    /// `moderate --exit-code`: at least one text was flagged.
    pub const FLAGGED: u8 = 5;
}

/// An RFC 9457 problem as the API sends it (`application/problem+json`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Problem {
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default)]
    pub title: String,
    #[serde(default)]
    pub status: u16,
    #[serde(default)]
    pub code: String,
    #[serde(default)]
    pub detail: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Extension members: which limit, what remains, the first line errors, ...
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Usage(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{status}: {}", .problem.detail)]
    Api {
        status: reqwest::StatusCode,
        problem: Box<Problem>,
        retry_after: Option<Duration>,
    },
    #[error("cannot reach {url}: {source}")]
    Network {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("unexpected answer from {url}: {detail}")]
    Protocol { url: String, detail: String },
    #[error("job {} ended {}", .0.id, .0.status.as_str())]
    JobFailed(Box<Job>),
    #[error("{0} of the texts could not be processed")]
    ItemsFailed(usize),
    #[error("flagged")]
    Flagged,
}

impl CliError {
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }

    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Usage(_) | Self::Io { .. } => exit::USAGE,
            Self::Api { status, .. } if status.is_server_error() => exit::SERVER,
            Self::Api { .. } => exit::API,
            Self::Network { .. } | Self::Protocol { .. } => exit::SERVER,
            Self::JobFailed(_) | Self::ItemsFailed(_) => exit::JOB_FAILED,
            Self::Flagged => exit::FLAGGED,
        }
    }

    /// Worth another try: the network, a 5xx, `429` or `503` (with its `Retry-After`).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Network { .. } => Some(Duration::from_millis(500)),
            Self::Api {
                status,
                retry_after,
                ..
            } if status.is_server_error() || *status == reqwest::StatusCode::TOO_MANY_REQUESTS => {
                Some(retry_after.unwrap_or(Duration::from_secs(1)))
            }
            _ => None,
        }
    }

    /// How a person reads it: the status, the problem's code and detail, its field and
    /// extension members, and a hint where there is an obvious next step.
    pub fn human(&self) -> String {
        let Self::Api {
            status,
            problem,
            retry_after,
        } = self
        else {
            return format!("error: {self}");
        };
        let mut out = format!("error: {status}");
        if !problem.code.is_empty() {
            out.push_str(&format!(" [{}]", problem.code));
        }
        if !problem.detail.is_empty() {
            out.push_str(&format!(": {}", problem.detail));
        }
        if let Some(field) = &problem.field {
            out.push_str(&format!("\n  field: {field}"));
        }
        for (name, value) in &problem.extra {
            match value {
                serde_json::Value::Array(entries) => {
                    out.push_str(&format!("\n  {name}:"));
                    for entry in entries.iter().take(10) {
                        out.push_str(&format!("\n    - {}", compact(entry)));
                    }
                    if entries.len() > 10 {
                        out.push_str(&format!("\n    … {} more", entries.len() - 10));
                    }
                }
                other => out.push_str(&format!("\n  {name}: {}", compact(other))),
            }
        }
        if let Some(wait) = retry_after {
            out.push_str(&format!("\n  retry after: {} s", wait.as_secs()));
        }
        if *status == reqwest::StatusCode::UNAUTHORIZED {
            out.push_str("\n  hint: run `gatehouse login`, or set GATEHOUSE_API_KEY");
        }
        out
    }
}

/// A JSON value on one line; strings without their quotes.
fn compact(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Object(map) => map
            .iter()
            .map(|(k, v)| format!("{k}: {}", compact(v)))
            .collect::<Vec<_>>()
            .join(", "),
        other => other.to_string(),
    }
}

pub type Result<T, E = CliError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_problem_reads_as_status_code_detail_field_and_members() {
        let problem: Problem = serde_json::from_value(serde_json::json!({
            "type": "https://gatehouse.invalid/problems/quota-exceeded",
            "title": "Too Many Requests",
            "status": 429,
            "code": "quota_exceeded",
            "detail": "the daily_items quota would be exceeded",
            "field": "items",
            "limit": 100,
            "errors": [{"line": 2, "code": "missing_text"}],
        }))
        .expect("problem");
        let error = CliError::Api {
            status: reqwest::StatusCode::TOO_MANY_REQUESTS,
            problem: Box::new(problem),
            retry_after: Some(Duration::from_secs(30)),
        };
        assert_eq!(
            error.human(),
            "error: 429 Too Many Requests [quota_exceeded]: the daily_items quota would be exceeded\n  \
             field: items\n  limit: 100\n  errors:\n    - line: 2, code: missing_text\n  retry after: 30 s"
        );
        assert_eq!(error.exit_code(), exit::API);
        assert_eq!(error.retry_after(), Some(Duration::from_secs(30)));
    }
}
