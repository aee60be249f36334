//! One error type for the api boundary, rendered as RFC 9457 `application/problem+json`.
//! 5xx details are logged, never returned; logged database errors carry their class
//! (SQLSTATE, constraint, table), never the message, which can quote submitted values.
//!
//! [`problem_layer`] turns the few error responses that do not come from [`ApiError`]
//! (axum's 405, rejections of extractors we do not wrap) into the same shape, so every
//! error the api returns is problem+json with a `code`.

use axum::{
    Json,
    body::Body,
    extract::Request,
    http::{HeaderValue, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use serde::Serialize;
use serde_json::{Map, Value};

pub const PROBLEM_JSON: &str = "application/problem+json";

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{detail}")]
    BadRequest {
        code: &'static str,
        detail: String,
        field: Option<String>,
    },
    #[error("{detail}")]
    Unprocessable {
        code: &'static str,
        detail: String,
        field: Option<String>,
    },
    #[error("{detail}")]
    PayloadTooLarge { detail: String },
    #[error("{detail}")]
    UnsupportedMediaType { detail: String },
    #[error("{detail}")]
    Unauthorized {
        detail: &'static str,
        /// A credential was presented but is not valid (`error="invalid_token"`).
        invalid_token: bool,
    },
    /// A sensitive operation without a fresh authentication (`identity::stepup`).
    #[error(
        "this operation needs a fresh authentication: log in again (within 5 minutes) or \
         re-enter your password in the `Gatehouse-Confirm-Password` header"
    )]
    ReauthenticationRequired,
    #[error("{detail}")]
    Forbidden { detail: String },
    #[error("not found")]
    NotFound,
    #[error("the request body did not arrive in time")]
    RequestTimeout,
    #[error("{detail}")]
    Conflict { code: &'static str, detail: String },
    #[error("{detail}")]
    Gone { code: &'static str, detail: String },
    /// Invalid input lines (`on_invalid: reject`): the first ones, and how many in all.
    #[error("{total} invalid lines")]
    InvalidLines {
        errors: Vec<gatehouse_common::job::store::LineError>,
        total: usize,
    },
    #[error("{detail}")]
    TooManyRequests {
        code: &'static str,
        detail: String,
        retry_after_secs: u64,
        /// Extension members of the problem body (which limit, its value, ...).
        extra: Map<String, Value>,
    },
    #[error("{detail}")]
    Overloaded {
        code: &'static str,
        detail: String,
        retry_after_secs: u64,
        extra: Map<String, Value>,
    },
    #[error("service unavailable: {0}")]
    Unavailable(&'static str),
    #[error("database error")]
    Database(#[from] sqlx::Error),
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    pub fn invalid(
        code: &'static str,
        field: impl Into<String>,
        detail: impl Into<String>,
    ) -> Self {
        ApiError::Unprocessable {
            code,
            detail: detail.into(),
            field: Some(field.into()),
        }
    }

    pub fn bad_request(code: &'static str, detail: impl Into<String>) -> Self {
        ApiError::BadRequest {
            code,
            detail: detail.into(),
            field: None,
        }
    }

    /// 429 with `Retry-After` and nothing else.
    pub fn too_many(detail: impl Into<String>, retry_after_secs: u64) -> Self {
        ApiError::TooManyRequests {
            code: "too_many_requests",
            detail: detail.into(),
            retry_after_secs,
            extra: Map::new(),
        }
    }

    /// The same error naming `field` (400 and 422 only).
    pub fn with_field(self, field: Option<String>) -> Self {
        match self {
            ApiError::BadRequest { code, detail, .. } => ApiError::BadRequest {
                code,
                detail,
                field,
            },
            ApiError::Unprocessable { code, detail, .. } => ApiError::Unprocessable {
                code,
                detail,
                field,
            },
            other => other,
        }
    }

    pub fn status_code(&self) -> StatusCode {
        match self {
            ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::Unprocessable { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType { .. } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Unauthorized { .. } | ApiError::ReauthenticationRequired => {
                StatusCode::UNAUTHORIZED
            }
            ApiError::Forbidden { .. } => StatusCode::FORBIDDEN,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            ApiError::Conflict { .. } => StatusCode::CONFLICT,
            ApiError::Gone { .. } => StatusCode::GONE,
            ApiError::InvalidLines { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_) | ApiError::Overloaded { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::Database(e) if client_data_error(e).is_some() => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            ApiError::Database(_) | ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest { code, .. }
            | ApiError::Unprocessable { code, .. }
            | ApiError::Conflict { code, .. }
            | ApiError::Gone { code, .. }
            | ApiError::TooManyRequests { code, .. }
            | ApiError::Overloaded { code, .. } => code,
            ApiError::Forbidden { .. } => "forbidden",
            ApiError::PayloadTooLarge { .. } => "payload_too_large",
            ApiError::UnsupportedMediaType { .. } => "unsupported_media_type",
            ApiError::Unauthorized { .. } => "unauthorized",
            ApiError::ReauthenticationRequired => "reauthentication_required",
            ApiError::NotFound => "not_found",
            ApiError::InvalidLines { .. } => "invalid_lines",
            ApiError::RequestTimeout => "request_timeout",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Database(e) if client_data_error(e).is_some() => "invalid_value",
            ApiError::Database(_) | ApiError::Internal(_) => "internal",
        }
    }
}

/// SQLSTATE classes that mean "the value the client sent cannot be stored" rather than "the
/// server is broken": data exceptions (class 22: NUL bytes, untranslatable characters, values
/// too long) and program limits (54000: an index row too large). Validation refuses these
/// before they reach Postgres; this is the net under it, so such a value is a 422, not a 500.
fn client_data_error(error: &sqlx::Error) -> Option<String> {
    let code = error.as_database_error()?.code()?.into_owned();
    (code.starts_with("22") || code == "54000").then_some(code)
}

pub use gatehouse_common::db::error_class as db_error_class;

#[derive(Serialize)]
struct Problem<'a> {
    #[serde(rename = "type")]
    kind: String,
    title: &'a str,
    status: u16,
    code: &'a str,
    detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
    #[serde(flatten)]
    extra: Map<String, Value>,
}

fn problem_response(
    status: StatusCode,
    code: &str,
    detail: String,
    field: Option<&str>,
    extra: Map<String, Value>,
) -> Response {
    let body = Problem {
        kind: format!(
            "https://gatehouse.invalid/problems/{}",
            code.replace('_', "-")
        ),
        title: status.canonical_reason().unwrap_or("Error"),
        status: status.as_u16(),
        code,
        detail,
        field,
        extra,
    };
    let mut response = (status, Json(body)).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    response
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status_code();
        let detail = match &self {
            ApiError::Database(e) => match client_data_error(e) {
                Some(code) => {
                    tracing::warn!(sqlstate = %code, "a value could not be stored");
                    "a value in the request cannot be stored (it holds a character or size \
                     the database refuses)"
                        .to_string()
                }
                None => {
                    tracing::error!(error = %db_error_class(e), "request failed: database error");
                    "internal error; it has been logged".to_string()
                }
            },
            ApiError::Internal(what) => {
                tracing::error!(error = %what, "request failed");
                "internal error; it has been logged".to_string()
            }
            ApiError::Unavailable(what) => {
                tracing::warn!(dependency = %what, "request failed: unavailable");
                format!("{what} is unavailable; retry later")
            }
            _ => self.to_string(),
        };
        let field = match &self {
            ApiError::Unprocessable { field, .. } | ApiError::BadRequest { field, .. } => {
                field.as_deref()
            }
            _ => None,
        };
        let extra = match &self {
            ApiError::TooManyRequests { extra, .. } | ApiError::Overloaded { extra, .. } => {
                extra.clone()
            }
            ApiError::InvalidLines { errors, total } => {
                let mut extra = Map::new();
                extra.insert("invalid_lines".into(), Value::from(*total as u64));
                extra.insert(
                    "errors".into(),
                    serde_json::to_value(errors).unwrap_or(Value::Null),
                );
                extra
            }
            _ => Map::new(),
        };
        let mut response = problem_response(status, self.code(), detail, field, extra);
        match &self {
            ApiError::Unauthorized { invalid_token, .. } => {
                let challenge = if *invalid_token {
                    r#"Bearer error="invalid_token""#
                } else {
                    "Bearer"
                };
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(challenge),
                );
            }
            // RFC 9470 (OAuth 2.0 step-up authentication).
            ApiError::ReauthenticationRequired => {
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(
                        r#"Bearer error="insufficient_user_authentication", max_age="300""#,
                    ),
                );
            }
            ApiError::TooManyRequests {
                retry_after_secs, ..
            }
            | ApiError::Overloaded {
                retry_after_secs, ..
            } => {
                if let Ok(value) = HeaderValue::from_str(&retry_after_secs.max(&1).to_string()) {
                    response.headers_mut().insert(header::RETRY_AFTER, value);
                }
            }
            ApiError::Unavailable(_) => {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            }
            _ => {}
        }
        response
    }
}

/// The code of an error response that did not come from [`ApiError`].
fn code_for(status: StatusCode) -> &'static str {
    match status {
        StatusCode::BAD_REQUEST => "bad_request",
        StatusCode::UNAUTHORIZED => "unauthorized",
        StatusCode::FORBIDDEN => "forbidden",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::NOT_ACCEPTABLE => "not_acceptable",
        StatusCode::REQUEST_TIMEOUT => "request_timeout",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::URI_TOO_LONG => "uri_too_long",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::UNPROCESSABLE_ENTITY => "invalid_body",
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => "headers_too_large",
        StatusCode::TOO_MANY_REQUESTS => "too_many_requests",
        StatusCode::SERVICE_UNAVAILABLE => "unavailable",
        s if s.is_server_error() => "internal",
        _ => "error",
    }
}

/// A problem+json response for `status` (used for errors that arise outside the router,
/// e.g. by the connection guard in `server.rs`).
pub fn plain_problem(status: StatusCode, detail: impl Into<String>) -> Response {
    problem_response(status, code_for(status), detail.into(), None, Map::new())
}

/// Middleware: an error response that is not problem+json yet (axum's 405, a rejection of an
/// extractor that is not ours) gets a problem+json body with a `code`, keeping its status
/// and headers (`Allow` on 405).
pub async fn problem_layer(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    // Ours (problem+json) or a deliberate JSON body (`/readyz`'s 503 lists its checks).
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .is_some_and(|v| v == "application/json" || v.ends_with("+json"));
    if is_json {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    // The original body is plain text from axum (or empty); keep a short version as detail.
    let text = axum::body::to_bytes(body, 4096).await.unwrap_or_default();
    let detail = match std::str::from_utf8(&text).map(str::trim) {
        Ok(t) if !t.is_empty() && status.is_client_error() => t.to_string(),
        _ => match status {
            StatusCode::METHOD_NOT_ALLOWED => {
                let allowed = parts
                    .headers
                    .get(header::ALLOW)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                format!("this route does not accept that method (allowed: {allowed})")
            }
            s => s.canonical_reason().unwrap_or("error").to_string(),
        },
    };
    let rebuilt = plain_problem(status, detail);
    let (new_parts, new_body) = rebuilt.into_parts();
    parts
        .headers
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    parts.headers.remove(header::CONTENT_LENGTH);
    if let Some(len) = new_parts.headers.get(header::CONTENT_LENGTH) {
        parts.headers.insert(header::CONTENT_LENGTH, len.clone());
    }
    Response::from_parts(parts, Body::new(new_body))
}
