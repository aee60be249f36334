//! Key hygiene: old keys are `rotation_due`, counted, and announced once by a
//! `key.rotation_due` webhook event.

use axum::http::{Method, StatusCode};
use gatehouse_api::store::key_rotation;
use gatehouse_common::types::Role;
use serde_json::json;

use crate::support::{Harness, new_user};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_keys_are_due_counted_and_announced_once() {
    let h = Harness::new(&[("GATEHOUSE_KEY_ROTATION_REMINDER_DAYS", "30")], false).await;
    let acme = h.tenant_id().await;
    new_user(&h.state, Some(acme), "alice", Role::Admin).await;
    let admin = h.login(Some("acme"), "alice").await;
    sqlx::query("UPDATE tenants SET scopes = '{moderate,webhooks}'")
        .execute(&h.env.pool)
        .await
        .expect("scopes");
    // An endpoint that takes the event (the filter vocabulary knows it).
    let ep = h
        .call(
            Method::POST,
            "/v1/webhooks/endpoints",
            Some(&admin),
            Some(
                json!({"url": "https://hooks.example.com/k", "event_types": ["key.rotation_due"]}),
            ),
        )
        .await;
    assert_eq!(
        ep.status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&ep.body)
    );
    let fresh = h
        .call(
            Method::POST,
            "/v1/keys",
            Some(&admin),
            Some(json!({"name": "fresh", "scopes": ["moderate"]})),
        )
        .await
        .json();
    // The harness key is 40 days old.
    sqlx::query("UPDATE api_keys SET created_at = now() - interval '40 days' WHERE name = 'test'")
        .execute(&h.env.pool)
        .await
        .expect("age the key");

    let listed = h
        .call(Method::GET, "/v1/keys", Some(&admin), None)
        .await
        .json();
    for k in listed["data"].as_array().expect("keys") {
        assert_eq!(k["rotation_due"], k["name"] == "test", "{k}");
    }
    assert_eq!(
        fresh["rotation_due"],
        serde_json::Value::Null,
        "only listed keys say it"
    );

    let (due, sent) = key_rotation::remind(&h.state.pool, h.state.clock.now(), 30)
        .await
        .expect("remind");
    assert_eq!((due, sent), (1, 1));
    let (due, sent) = key_rotation::remind(&h.state.pool, h.state.clock.now(), 30)
        .await
        .expect("remind");
    assert_eq!((due, sent), (1, 0), "once per key");
    assert_eq!(
        h.scalar("SELECT count(*) FROM webhook_messages WHERE event_type = 'key.rotation_due'")
            .await,
        1
    );
    assert_eq!(h.scalar("SELECT count(*) FROM audit_events WHERE action = 'key.rotation_due' AND target_type = 'key'").await, 1);
    let metrics = h.call(Method::GET, "/metrics", None, None).await;
    assert!(String::from_utf8_lossy(&metrics.body).contains("gatehouse_api_keys_rotation_due 1"));

    // Rotating starts the clock again.
    let id: uuid::Uuid = sqlx::query_scalar("SELECT key_id FROM api_keys WHERE name = 'test'")
        .fetch_one(&h.env.pool)
        .await
        .expect("key");
    let rotated = h
        .call(
            Method::POST,
            &format!("/v1/keys/key_{}/rotate", id.simple()),
            Some(&admin),
            None,
        )
        .await;
    assert!(rotated.status.is_success(), "{}", rotated.status);
    let listed = h
        .call(Method::GET, "/v1/keys", Some(&admin), None)
        .await
        .json();
    assert!(
        listed["data"]
            .as_array()
            .expect("keys")
            .iter()
            .all(|k| k["rotation_due"] == false)
    );
    h.teardown().await;
}
