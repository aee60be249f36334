//! The OpenAPI description (`api/src/openapi/`): the committed `openapi.json` is what the code
//! generates; it lists exactly the router's routes, each public or protected as
//! `api/src/policy.rs` says; every problem `code` the code writes is in its catalogue; and the
//! api serves it at `/openapi.json` with the docs UI at `/docs`, assets embedded.

use std::collections::BTreeSet;

use axum::http::{Method, StatusCode};
use gatehouse_api::{openapi, policy, routes};
use serde_json::Value;

use crate::support::Harness;

const REGENERATE: &str = "make openapi";

fn spec() -> Value {
    serde_json::from_str(&openapi::json()).expect("the generated document is JSON")
}

/// (method, path) of every operation in the document.
fn operations(spec: &Value) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (path, item) in spec["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("path item").keys() {
            if ["get", "post", "put", "patch", "delete"].contains(&method.as_str()) {
                out.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    out
}

/// (method, path) of every route of the router, read from its `Debug` form (axum prints each
/// path with its `MethodRouter`, whose handled methods are `Some(..)`).
fn router_routes() -> BTreeSet<(String, String)> {
    let debug = format!("{:?}", routes::router(1024));
    let mut out = BTreeSet::new();
    // `node: Node { paths: {RouteId(0): "/v1/files", …}` names the paths; each `RouteId(n):
    // MethodRouter(MethodRouter { get: …, head: …, … })` in `routes` names the methods.
    let paths = section(&debug, "node: Node { paths: {");
    let mut by_id = std::collections::BTreeMap::new();
    for entry in paths.split("RouteId(").skip(1) {
        let (id, rest) = entry.split_once("): \"").expect("route id and path");
        let path = rest.split('"').next().expect("path");
        by_id.insert(id.to_string(), path.to_string());
    }
    let endpoints = section(&debug, "routes: {");
    for entry in endpoints.split("RouteId(").skip(1) {
        let (id, rest) = entry.split_once(')').expect("route id");
        let path = by_id
            .get(id)
            .unwrap_or_else(|| panic!("route {id} has no path"));
        for method in ["get", "post", "put", "patch", "delete"] {
            let field = format!("{method}: ");
            let handled = rest
                .split(&field)
                .nth(1)
                .is_some_and(|v| !v.starts_with("None"));
            // `head` is served by `get`; only the methods a route was given count.
            // The web console's static files and its menu rules are not API
            // (`routes/console.rs`; its own tests in `tests/console.rs`).
            if handled && !path.starts_with("/console") {
                out.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    assert!(
        out.len() > 50,
        "could not read the routes from the router's Debug output (axum changed it?): {out:?}"
    );
    out
}

/// The text of `debug` from `start` to its matching `}`.
fn section<'a>(debug: &'a str, start: &str) -> &'a str {
    let from = debug
        .find(start)
        .unwrap_or_else(|| panic!("`{start}` not in the router's Debug output"))
        + start.len();
    let mut depth = 1;
    for (i, c) in debug[from..].char_indices() {
        match c {
            '{' | '(' | '[' => depth += 1,
            '}' | ')' | ']' => {
                depth -= 1;
                if depth == 0 {
                    return &debug[from..from + i];
                }
            }
            _ => {}
        }
    }
    &debug[from..]
}

#[test]
fn the_committed_openapi_json_is_what_the_code_generates() {
    let committed =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../openapi.json"))
            .expect("openapi.json at the repository root");
    let generated = openapi::json();
    if committed != generated {
        let line = committed
            .lines()
            .zip(generated.lines())
            .position(|(a, b)| a != b)
            .map_or_else(|| "the end".to_string(), |n| format!("line {}", n + 1));
        panic!(
            "openapi.json is stale (first difference at {line}); regenerate it with `{REGENERATE}`"
        );
    }
}

#[test]
fn every_route_is_described_and_nothing_else() {
    let spec = spec();
    assert_eq!(spec["openapi"], "3.1.0");
    let described = operations(&spec);
    let routed = router_routes();
    let missing: Vec<_> = routed.difference(&described).collect();
    let extra: Vec<_> = described.difference(&routed).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "routes without an operation (add #[utoipa::path] and list it in api/src/openapi/mod.rs): {missing:?}\noperations without a route: {extra:?}"
    );

    // Each route is public or has its rule, and the document says which.
    let protected: BTreeSet<(String, String)> = policy::ROUTES
        .iter()
        .map(|(m, p, _)| (m.to_string(), p.to_string()))
        .collect();
    let public: BTreeSet<(String, String)> = policy::PUBLIC_ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    assert!(protected.is_disjoint(&public));
    let classified: BTreeSet<_> = protected.union(&public).cloned().collect();
    assert_eq!(
        classified, routed,
        "policy::ROUTES + policy::PUBLIC_ROUTES must be exactly the router's routes"
    );
    for (method, path) in &routed {
        let op = &spec["paths"][path][method.to_lowercase()];
        let secured = op["security"].as_array().is_some_and(|s| !s.is_empty());
        assert_eq!(
            secured,
            protected.contains(&(method.clone(), path.clone())),
            "{method} {path}: security"
        );
        if secured {
            assert!(op["responses"]["401"].is_object(), "{method} {path}: 401");
            assert!(op["responses"]["403"].is_object(), "{method} {path}: 403");
        }
        assert!(
            op["operationId"].as_str().is_some_and(|id| !id.is_empty()),
            "{method} {path}: operationId"
        );
        let has_success = op["responses"]
            .as_object()
            .is_some_and(|r| r.keys().any(|s| s.starts_with('2')));
        assert!(has_success, "{method} {path}: a 2xx response");
        for name in path
            .split('/')
            .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        {
            let declared = op["parameters"].as_array().is_some_and(|ps| {
                ps.iter()
                    .any(|p| p["name"] == name && p["in"] == "path" && p["required"] == true)
            });
            assert!(declared, "{method} {path}: path parameter {name}");
        }
    }
    let ids: Vec<&str> = routed
        .iter()
        .filter_map(|(m, p)| spec["paths"][p][m.to_lowercase()]["operationId"].as_str())
        .collect();
    let unique: BTreeSet<&str> = ids.iter().copied().collect();
    assert_eq!(ids.len(), unique.len(), "operationIds are unique");

    let schemes = &spec["components"]["securitySchemes"];
    assert_eq!(schemes["bearer_jwt"]["scheme"], "bearer");
    assert_eq!(schemes["bearer_jwt"]["bearerFormat"], "JWT");
    assert_eq!(schemes["api_key"]["scheme"], "bearer");
}

/// Every file under `dir` ending in `.rs`.
fn rust_files(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The string literal right after each `marker` (whitespace and newlines allowed between).
fn literals_after(text: &str, marker: &str, out: &mut BTreeSet<String>) {
    for piece in text.split(marker).skip(1) {
        let piece = piece.trim_start();
        if let Some(rest) = piece.strip_prefix('"') {
            let literal: String = rest.chars().take_while(|c| *c != '"').collect();
            if !literal.is_empty() && literal.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
                out.insert(literal);
            }
        }
    }
}

#[test]
fn every_problem_code_is_in_the_catalogue() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = Vec::new();
    rust_files(&root.join("api/src"), &mut files);
    rust_files(&root.join("common/src"), &mut files);
    let mut written = BTreeSet::new();
    for file in &files {
        let text = std::fs::read_to_string(file).expect("source");
        for marker in ["ApiError::invalid(", "ApiError::bad_request(", "code: "] {
            literals_after(&text, marker, &mut written);
        }
    }
    // The README's error table: every code in backticks in a `| 4xx |` / `| 5xx |` row.
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README");
    // (a row whose first cell is an HTTP status: not the CLI's exit-code table).
    for row in readme.lines().filter(|l| {
        l.split('|').nth(1).is_some_and(|cell| {
            let cell = cell.trim();
            cell.len() == 3
                && (cell.starts_with('4') || cell.starts_with('5'))
                && cell.chars().all(|c| c.is_ascii_digit())
        })
    }) {
        let code_cell = row.split('|').nth(2).unwrap_or("");
        for (i, piece) in code_cell.split('`').enumerate() {
            if i % 2 == 1 {
                written.insert(piece.to_string());
            }
        }
    }
    // Codes of other kinds written with `code: "…"` (item and line errors, not problems).
    let not_problems = ["x", "line_too_long", "invalid_utf8"];
    let catalogue: BTreeSet<&str> = openapi::problems::CODES.iter().map(|(c, ..)| *c).collect();
    let missing: Vec<&String> = written
        .iter()
        .filter(|c| !catalogue.contains(c.as_str()) && !not_problems.contains(&c.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "problem codes missing from api/src/openapi/problems.rs CODES: {missing:?}"
    );
    let described = spec()["components"]["schemas"]["Problem"]["description"]
        .as_str()
        .expect("Problem description")
        .to_string();
    for code in catalogue {
        assert!(
            described.contains(&format!("`{code}`")),
            "{code} in the Problem schema"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_description_and_its_ui_are_served_without_credentials() {
    let h = Harness::new(&[], false).await;
    let reply = h.call(Method::GET, "/openapi.json", None, None).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply.content_type().starts_with("application/json"));
    assert_eq!(reply.json(), spec());

    let page = h.call(Method::GET, "/docs", None, None).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.content_type().starts_with("text/html"));
    let html = String::from_utf8_lossy(&page.body).to_string();
    // Every script and stylesheet the page loads is one of ours (no CDN).
    for attr in ["src=\"", "href=\""] {
        for piece in html.split(attr).skip(1) {
            let url = piece.split('"').next().unwrap_or("");
            assert!(url.starts_with("/docs/"), "the page loads {url}");
            let asset = h.call(Method::GET, url, None, None).await;
            assert_eq!(asset.status, StatusCode::OK, "{url}");
            assert!(asset.body.len() > 100, "{url}");
        }
    }
    let init = h.call(Method::GET, "/docs/init.js", None, None).await;
    let init = String::from_utf8_lossy(&init.body).to_string();
    assert!(init.contains("\"/openapi.json\"") && init.contains("validatorUrl: null"));
    let bundle = h
        .call(Method::GET, "/docs/swagger-ui-bundle.js", None, None)
        .await;
    assert!(bundle.content_type().starts_with("text/javascript"));
    assert!(bundle.body.len() > 1_000_000, "the bundle is embedded");

    let unknown = h.call(Method::GET, "/docs/nope.js", None, None).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert_eq!(unknown.content_type(), "application/problem+json");
    h.teardown().await;
}

/// Found by `make fuzz-api`: nested objects given as arrays (serde reads a struct from a
/// sequence of its fields) were accepted — `{"rate_limits": [null, null]}` removed a key's
/// limits. The description says object; so does the api now.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nested_objects_sent_as_arrays_are_refused() {
    let h = Harness::new(&[], false).await;
    let tenant = h.tenant_id().await;
    crate::support::new_user(
        &h.state,
        Some(tenant),
        "ada",
        gatehouse_common::types::Role::Admin,
    )
    .await;
    let admin = h.login(Some("acme"), "ada").await;
    let key = h
        .call(
            Method::POST,
            "/v1/keys",
            Some(&admin),
            Some(serde_json::json!({"name": "k", "scopes": ["moderate"]})),
        )
        .await;
    assert_eq!(key.status, StatusCode::CREATED);
    let id = key.json()["id"].as_str().expect("key id").to_string();
    let cases = [
        (
            Method::PATCH,
            format!("/v1/keys/{id}"),
            serde_json::json!({"rate_limits": [null, null]}),
            "rate_limits",
        ),
        (
            Method::POST,
            "/v1/keys".to_string(),
            serde_json::json!({"name": "k2", "scopes": ["moderate"], "rate_limits": [5, 5]}),
            "rate_limits",
        ),
        (
            Method::POST,
            "/v1/jobs".to_string(),
            serde_json::json!({"kind": "moderate", "items": [["a1", "text"]]}),
            "items[0]",
        ),
        (
            Method::POST,
            "/v1/jobs".to_string(),
            serde_json::json!({"kind": "moderate", "items": [{"text": "x"}], "webhook": ["ep_x"]}),
            "webhook",
        ),
    ];
    for (method, uri, body, field) in cases {
        let reply = h
            .call(method.clone(), &uri, Some(&admin), Some(body.clone()))
            .await;
        assert_eq!(
            reply.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{method} {uri} {body}"
        );
        let problem = reply.json();
        assert_eq!(problem["code"], "invalid_body", "{problem}");
        assert_eq!(problem["field"], field, "{problem}");
    }
    // Objects still work, and errors inside them keep their path.
    let ok = h
        .call(
            Method::PATCH,
            &format!("/v1/keys/{id}"),
            Some(&admin),
            Some(serde_json::json!({"rate_limits": {"requests_per_minute": 10}})),
        )
        .await;
    assert_eq!(
        ok.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&ok.body)
    );
    assert_eq!(ok.json()["rate_limits"]["requests_per_minute"], 10);
    let inner = h
        .call(
            Method::PATCH,
            &format!("/v1/keys/{id}"),
            Some(&admin),
            Some(serde_json::json!({"rate_limits": {"requests_per_minute": "ten"}})),
        )
        .await;
    assert_eq!(inner.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(inner.json()["field"], "rate_limits.requests_per_minute");
    h.teardown().await;
}
