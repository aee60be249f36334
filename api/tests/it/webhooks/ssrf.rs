//! The address rules at connect time: a name resolving to loopback and a literal loopback URL
//! (written behind the api's back) are refused and recorded as attempts; redirects are never
//! followed.

use std::time::Duration;

use axum::http::{Method, StatusCode};
use serde_json::json;

use super::{Answer, Receiver, admin, create_endpoint, eventually, settings};
use crate::support::Harness;

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn internal_addresses_are_refused_at_connect_time() {
    // http allowed, no CIDR allowed: loopback is refused.
    let h = Harness::new(
        &settings(&[
            ("GATEHOUSE_WEBHOOK_ALLOW_CIDRS", ""),
            ("GATEHOUSE_WEBHOOK_RETRY_SCHEDULE_SECS", "0.2"),
        ]),
        false,
    )
    .await;
    let admin = admin(&h).await;
    let receiver = Receiver::start().await;
    let port = receiver.addr.port();
    // Registration refuses literal internal addresses…
    for url in [
        format!("http://127.0.0.1:{port}/"),
        format!("http://[::1]:{port}/"),
        "http://169.254.169.254/latest/meta-data/".to_string(),
        "http://10.0.0.7/".to_string(),
        "http://[::ffff:127.0.0.1]/".to_string(),
    ] {
        let reply = h
            .call(
                Method::POST,
                "/v1/webhooks/endpoints",
                Some(&admin),
                Some(json!({"url": url})),
            )
            .await;
        assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY, "{url}");
        assert_eq!(reply.json()["code"], "url_refused", "{url}");
    }
    // …but a name is only known at connect time: `localhost` is refused then.
    let by_name = create_endpoint(
        &h,
        &admin,
        json!({"url": format!("http://localhost:{port}/")}),
    )
    .await;
    // And a literal address that got in behind the api's back is refused by the worker too.
    let literal =
        create_endpoint(&h, &admin, json!({"url": "http://hooks.example.invalid/"})).await;
    sqlx::query("UPDATE webhook_endpoints SET url = $1 WHERE endpoint_id = $2")
        .bind(format!("http://127.0.0.1:{port}/"))
        .bind(
            literal["id"]
                .as_str()
                .expect("id")
                .parse::<gatehouse_common::types::EndpointId>()
                .expect("id")
                .0,
        )
        .execute(&h.env.pool)
        .await
        .expect("sneak a literal in");
    let worker = h.start_worker().await;
    for endpoint in [&by_name, &literal] {
        let id = endpoint["id"].as_str().expect("id");
        let reply = h
            .call(
                Method::POST,
                &format!("/v1/webhooks/endpoints/{id}/test"),
                Some(&admin),
                None,
            )
            .await;
        assert_eq!(reply.status, StatusCode::ACCEPTED);
    }
    eventually(
        &h,
        "SELECT count(*) FROM webhook_deliveries WHERE status = 'exhausted'",
        2,
        WAIT,
    )
    .await;
    let errors: Vec<(String, String)> =
        sqlx::query_as("SELECT outcome, error FROM webhook_attempts ORDER BY created_at")
            .fetch_all(&h.env.pool)
            .await
            .expect("attempts");
    assert_eq!(errors.len(), 4, "{errors:?}");
    for (outcome, error) in &errors {
        assert_eq!(outcome, "refused", "{error}");
        assert!(error.contains("loopback"), "{error}");
    }
    assert!(
        receiver.received().is_empty(),
        "a refused address was contacted"
    );
    worker.stop().await;
    h.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redirects_are_not_followed() {
    let h = Harness::new(
        &settings(&[("GATEHOUSE_WEBHOOK_RETRY_SCHEDULE_SECS", "0.2")]),
        false,
    )
    .await;
    let admin = admin(&h).await;
    let target = Receiver::start().await;
    let redirecting = Receiver::start().await;
    redirecting.script([
        Answer::status(302).header("location", target.url("/elsewhere")),
        Answer::status(307).header("location", target.url("/elsewhere")),
    ]);
    let endpoint = create_endpoint(&h, &admin, json!({"url": redirecting.url("/")})).await;
    let worker = h.start_worker().await;
    let id = endpoint["id"].as_str().expect("id");
    h.call(
        Method::POST,
        &format!("/v1/webhooks/endpoints/{id}/test"),
        Some(&admin),
        None,
    )
    .await;
    eventually(
        &h,
        "SELECT count(*) FROM webhook_deliveries WHERE status = 'exhausted'",
        1,
        WAIT,
    )
    .await;
    assert_eq!(redirecting.received().len(), 2);
    assert!(target.received().is_empty(), "a redirect was followed");
    let error: String =
        sqlx::query_scalar("SELECT error FROM webhook_attempts WHERE status_code = 302")
            .fetch_one(&h.env.pool)
            .await
            .expect("attempt");
    assert!(error.contains("redirects are not followed"), "{error}");
    worker.stop().await;
    h.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_urls_need_the_operators_permission() {
    let h = Harness::new(&[], false).await;
    let admin = admin(&h).await;
    let reply = h
        .call(
            Method::POST,
            "/v1/webhooks/endpoints",
            Some(&admin),
            Some(json!({"url": "http://hooks.example.com/"})),
        )
        .await;
    assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(reply.json()["code"], "url_scheme_refused");
    h.teardown().await;
}
