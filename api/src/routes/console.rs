//! The web console (`console/`, built by `scripts/build-console.sh`): static files from
//! `GATEHOUSE_CONSOLE_DIR` at `/console/…`, any other `/console/…` path answered with
//! `index.html` (the single-page app routes it), and `/console/rules.json`: which roles each
//! rule of [`crate::policy`] admits, so the console shows only what the server would allow —
//! the server stays the authority.
//!
//! Every console response carries a strict Content-Security-Policy (scripts, styles and
//! connections from this origin only, no inline script, no eval) and the usual hardening
//! headers.

use std::path::{Component, Path, PathBuf};

use axum::{
    Json, Router,
    extract::{Request, State},
    http::{HeaderValue, StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::get,
};
use serde_json::{Map, Value, json};

use crate::{error::ApiError, policy, state::AppState};

pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self' data: blob:; font-src 'self'; connect-src 'self'; \
     object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/console", get(index))
        .route("/console/", get(index))
        .route("/console/rules.json", get(rules))
        .route("/console/{*path}", get(file))
        .layer(middleware::from_fn(security_headers))
}

async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    for (name, value) in [
        ("content-security-policy", CONTENT_SECURITY_POLICY),
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        ("referrer-policy", "no-referrer"),
        ("cross-origin-opener-policy", "same-origin"),
        ("cross-origin-resource-policy", "same-origin"),
        (
            "permissions-policy",
            "camera=(), microphone=(), geolocation=(), payment=()",
        ),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

/// `{"rules": {"<rule>": ["<role>", …]}, "routes": [["GET", "/v1/…", "<rule>"], …]}`.
async fn rules() -> Json<Value> {
    let mut rules = Map::new();
    let mut routes = Vec::with_capacity(policy::ROUTES.len());
    for (method, path, rule) in policy::ROUTES {
        let roles: Vec<&str> = rule.roles.iter().map(|r| r.as_str()).collect();
        rules.insert(rule.name.to_string(), json!(roles));
        routes.push(json!([method, path, rule.name]));
    }
    Json(json!({ "rules": rules, "routes": routes }))
}

async fn index(State(state): State<AppState>) -> Result<Response, ApiError> {
    serve(&state.config.console_dir, Path::new("index.html")).await
}

async fn file(
    State(state): State<AppState>,
    axum::extract::Path(path): axum::extract::Path<String>,
) -> Result<Response, ApiError> {
    let dir = &state.config.console_dir;
    let Some(relative) = safe_relative(&path) else {
        return Err(ApiError::NotFound);
    };
    if tokio::fs::metadata(dir.join(&relative))
        .await
        .is_ok_and(|m| m.is_file())
    {
        return serve(dir, &relative).await;
    }
    // A missing asset is a 404 (a stale page asking for an old bundle must not get HTML);
    // any other path is a page of the app.
    if relative.starts_with("assets") || relative.extension().is_some() {
        return Err(ApiError::NotFound);
    }
    serve(dir, Path::new("index.html")).await
}

/// `path` as plain components below the console directory (no `..`, no root, no prefix).
fn safe_relative(path: &str) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for component in Path::new(path).components() {
        match component {
            Component::Normal(part) => out.push(part),
            Component::CurDir => {}
            _ => return None,
        }
    }
    Some(out)
}

async fn serve(dir: &Path, relative: &Path) -> Result<Response, ApiError> {
    let full = dir.join(relative);
    let bytes = match tokio::fs::read(&full).await {
        Ok(bytes) => bytes,
        Err(e)
            if e.kind() == std::io::ErrorKind::NotFound && relative == Path::new("index.html") =>
        {
            return Ok(not_built(dir));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(ApiError::NotFound),
        Err(e) => {
            return Err(ApiError::Internal(format!(
                "reading {}: {e}",
                full.display()
            )));
        }
    };
    // Built assets have content hashes in their names: cache them for good; the page itself
    // is revalidated so a new build is picked up at once.
    let cache = if relative.starts_with("assets") {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    Ok((
        [
            (header::CONTENT_TYPE, content_type(relative)),
            (header::CACHE_CONTROL, cache),
        ],
        bytes,
    )
        .into_response())
}

fn not_built(dir: &Path) -> Response {
    let detail = format!(
        "the console is not built: run `bash scripts/build-console.sh` (or `make demo`), or point \
         GATEHOUSE_CONSOLE_DIR at a built console (now {})",
        dir.display()
    );
    let body = json!({
        "type": "about:blank",
        "title": "Service Unavailable",
        "status": 503,
        "code": "console_not_built",
        "detail": detail,
    });
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(header::CONTENT_TYPE, "application/problem+json")],
        body.to_string(),
    )
        .into_response()
}

fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()).unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" | "map" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "woff2" => "font/woff2",
        "txt" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_components_are_served() {
        assert_eq!(
            safe_relative("assets/app.js"),
            Some(PathBuf::from("assets/app.js"))
        );
        assert_eq!(
            safe_relative("./index.html"),
            Some(PathBuf::from("index.html"))
        );
        assert_eq!(safe_relative("../Cargo.toml"), None);
        assert_eq!(safe_relative("assets/../../x"), None);
        assert_eq!(safe_relative("/etc/passwd"), None);
    }
}
