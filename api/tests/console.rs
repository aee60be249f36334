//! The web console: how the api serves it (files, SPA fallback, CSP, the rules), and the
//! browser suite (`console/tests/`, Debian's Chromium driven by playwright-core) against this
//! test's own api on a TCP port, the outbox relay, a worker (the small English moderation
//! model, which keeps this test light beside the others; PII and blocklist rules; the
//! translation model), its own database and queues.
//!
//! Its own test binary: cargo runs test binaries one after another, so Chromium never
//! competes for the CPU with the timing-sensitive tests of `tests/it/` (durability, sync
//! waits) on a small machine.

use std::{path::PathBuf, process::Command, time::Duration};

use axum::http::{Method, StatusCode};
use gatehouse_common::{testkit::workspace_root, types::Role};

#[path = "it/support.rs"]
#[allow(dead_code)] // the harness of tests/it/, of which this binary uses a part
mod support;

use support::{Harness, PASSWORD, new_user};

/// A console directory with an index page and one asset.
fn fake_console(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("gh_console_{name}_{}", std::process::id()));
    std::fs::create_dir_all(dir.join("assets")).expect("mkdir");
    std::fs::write(
        dir.join("index.html"),
        "<!doctype html><title>console</title>",
    )
    .expect("write");
    std::fs::write(dir.join("assets/app-1234.js"), "console.log(1)").expect("write");
    dir
}

async fn get(h: &Harness, uri: &str) -> support::Reply {
    h.call(Method::GET, uri, None, None).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_is_served_with_a_strict_csp_and_a_page_fallback() {
    let dir = fake_console("serve");
    let h = Harness::new(
        &[("GATEHOUSE_CONSOLE_DIR", dir.to_str().expect("utf-8 path"))],
        false,
    )
    .await;
    for uri in [
        "/console",
        "/console/",
        "/console/jobs/job_123",
        "/console/admin/keys",
    ] {
        let reply = get(&h, uri).await;
        assert_eq!(reply.status, StatusCode::OK, "{uri}");
        assert_eq!(reply.content_type(), "text/html; charset=utf-8", "{uri}");
        assert!(reply.body.starts_with(b"<!doctype html>"), "{uri}");
        let csp = reply.headers["content-security-policy"]
            .to_str()
            .expect("ascii");
        assert!(csp.contains("default-src 'self'"), "{csp}");
        assert!(csp.contains("script-src 'self'"), "{csp}");
        assert!(
            !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
            "{csp}"
        );
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        assert_eq!(reply.headers["x-content-type-options"], "nosniff");
        assert_eq!(reply.headers["x-frame-options"], "DENY");
        assert_eq!(reply.headers["referrer-policy"], "no-referrer");
        assert_eq!(reply.headers["cache-control"], "no-cache");
    }
    let asset = get(&h, "/console/assets/app-1234.js").await;
    assert_eq!(asset.status, StatusCode::OK);
    assert_eq!(asset.content_type(), "text/javascript; charset=utf-8");
    assert!(
        asset.headers["cache-control"]
            .to_str()
            .expect("ascii")
            .contains("immutable")
    );
    // A missing asset is a 404, not the page; nothing outside the directory is reachable.
    for uri in [
        "/console/assets/gone-9999.js",
        "/console/favicon.ico",
        "/console/..%2f..%2fCargo.toml",
        "/console/assets/..%2f..%2f..%2fetc%2fpasswd",
    ] {
        let reply = get(&h, uri).await;
        assert!(
            reply.status == StatusCode::NOT_FOUND || reply.content_type().starts_with("text/html"),
            "{uri}: {}",
            reply.status
        );
        assert!(
            !String::from_utf8_lossy(&reply.body).contains("[workspace]")
                && !String::from_utf8_lossy(&reply.body).contains("root:"),
            "{uri} escaped the console directory"
        );
    }
    assert_eq!(
        get(&h, "/console/assets/gone-9999.js").await.status,
        StatusCode::NOT_FOUND
    );
    // The api's own routes are untouched by the console.
    assert_eq!(get(&h, "/v1/me").await.status, StatusCode::UNAUTHORIZED);
    h.teardown().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unbuilt_console_says_how_to_build_it() {
    let dir = std::env::temp_dir().join(format!("gh_console_missing_{}", std::process::id()));
    let h = Harness::new(
        &[("GATEHOUSE_CONSOLE_DIR", dir.to_str().expect("utf-8 path"))],
        false,
    )
    .await;
    let reply = get(&h, "/console/moderate").await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    let body = reply.json();
    assert_eq!(body["code"], "console_not_built");
    assert!(
        body["detail"]
            .as_str()
            .expect("detail")
            .contains("scripts/build-console.sh")
    );
    h.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_consoles_rules_are_the_servers_policy() {
    let h = Harness::new(&[], false).await;
    let reply = get(&h, "/console/rules.json").await;
    assert_eq!(reply.status, StatusCode::OK);
    let body = reply.json();
    for (method, path, rule) in gatehouse_api::policy::ROUTES {
        let roles: Vec<&str> = rule.roles.iter().map(|r| r.as_str()).collect();
        assert_eq!(
            body["rules"][rule.name],
            serde_json::json!(roles),
            "{method} {path}"
        );
    }
    assert_eq!(
        body["routes"].as_array().expect("routes").len(),
        gatehouse_api::policy::ROUTES.len()
    );
    assert_eq!(body["rules"]["keys.manage"], serde_json::json!(["admin"]));
    h.teardown().await;
}

/// The browser suite, `node --test console/tests/`, against a whole Gatehouse.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_works_in_a_real_browser() {
    let root = workspace_root();
    let console = root.join("console");
    let dist = console.join("dist");
    assert!(
        dist.join("index.html").exists() && console.join("node_modules/playwright-core").exists(),
        "the console is not built: run `bash scripts/build-console.sh` (or `make test`)"
    );
    let chromium = std::env::var("GATEHOUSE_CHROMIUM").unwrap_or("/usr/bin/chromium".into());
    assert!(
        PathBuf::from(&chromium).exists(),
        "{chromium} is missing: run `bash scripts/browser-env.sh` (or `make test`)"
    );

    let h = Harness::new(
        &[("GATEHOUSE_CONSOLE_DIR", dist.to_str().expect("utf-8 path"))],
        true,
    )
    .await;
    let tenant = h.tenant_id().await;
    sqlx::query("UPDATE tenants SET scopes = '{moderate,translate,webhooks}' WHERE tenant_id = $1")
        .bind(tenant)
        .execute(&h.env.pool)
        .await
        .expect("grant scopes");
    for (name, role) in [
        ("admin", Role::Admin),
        ("reviewer", Role::Reviewer),
        ("guest", Role::Guest),
    ] {
        new_user(&h.state, Some(tenant), name, role).await;
    }
    new_user(&h.state, None, "root", Role::Superadmin).await;
    let worker = h.start_worker().await;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    let stop = tokio_util::sync::CancellationToken::new();
    let server = tokio::spawn(gatehouse_api::server::serve(
        listener,
        gatehouse_api::app(h.state.clone()),
        h.state.config.server,
        stop.clone(),
    ));

    let url = format!("http://{addr}/console/");
    let shots = std::env::var("CONSOLE_SCREENSHOTS_DIR").ok();
    let output = tokio::time::timeout(
        Duration::from_secs(300),
        tokio::task::spawn_blocking(move || {
            let mut cmd = Command::new("node");
            cmd.args(["--test", "--test-concurrency=1", "tests/"])
                .current_dir(&console)
                .env("CONSOLE_URL", &url)
                .env("CONSOLE_TENANT", "acme")
                .env("CONSOLE_PASSWORD", PASSWORD)
                .env("CHROMIUM", &chromium);
            if let Some(dir) = shots {
                cmd.env("CONSOLE_SCREENSHOTS_DIR", dir);
            }
            cmd.output()
        }),
    )
    .await
    .expect("browser suite finished in time")
    .expect("join")
    .expect("run node (Node.js 18 or newer)");
    stop.cancel();
    server.abort();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "browser suite failed:\n{stdout}\n{stderr}"
    );
    // It ran (and was not skipped for want of the variables).
    let count = |what: &str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(what))
            .and_then(|n| n.trim().parse::<u32>().ok())
            .unwrap_or(0)
    };
    assert_eq!(count("# skipped "), 0, "{stdout}");
    assert!(count("# pass ") >= 10, "{stdout}");
    worker.stop().await;
    h.teardown().await;
}
