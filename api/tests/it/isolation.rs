//! Isolation in depth: the services run as a role that owns nothing and cannot bypass
//! row-level security, so even a query with no tenant filter sees one tenant's rows.

use axum::http::{Method, StatusCode};
use gatehouse_common::db::{self, Scope};
use serde_json::json;

use crate::support::{Harness, new_tenant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unfiltered_query_cannot_read_or_change_another_tenants_rows() {
    let h = Harness::new(&[], false).await;
    let acme = h.tenant_id().await;
    let (globex, globex_key) = new_tenant(&h.state, "globex").await;
    h.submit(&["one".into(), "two".into()]).await;
    let body = json!({"kind": "moderate", "items": [{"text": "three"}]});
    let reply = h
        .call(Method::POST, "/v1/jobs", Some(&globex_key), Some(body))
        .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED);
    let app = &h.env.app_pool;

    // The application role: not the owner of any table, no BYPASSRLS, no superuser.
    let (user, bypass, superuser): (String, bool, bool) = sqlx::query_as(
        "SELECT current_user::text, rolbypassrls, rolsuper FROM pg_roles WHERE rolname = current_user",
    )
    .fetch_one(app)
    .await
    .expect("role");
    assert_eq!(user, "gatehouse_app");
    assert!(!bypass && !superuser);
    let owned: i64 =
        sqlx::query_scalar("SELECT count(*) FROM pg_tables WHERE tableowner = current_user")
            .fetch_one(app)
            .await
            .expect("owned");
    assert_eq!(owned, 0);

    // No scope: nothing at all.
    for table in [
        "tenants",
        "api_keys",
        "jobs",
        "job_items",
        "job_chunks",
        "job_results",
        "audit_events",
    ] {
        let n: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
            .fetch_one(app)
            .await
            .expect(table);
        assert_eq!(n, 0, "{table} is readable without a tenant");
    }

    // acme's scope: unfiltered reads see acme only.
    let mut tx = db::begin(app, Scope::Tenant(acme)).await.expect("tx");
    for (table, expected) in [
        ("tenants", 1),
        ("api_keys", 1),
        ("jobs", 1),
        ("job_items", 2),
        ("job_chunks", 1),
    ] {
        let n: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
            .fetch_one(&mut *tx)
            .await
            .expect(table);
        assert_eq!(n, expected, "{table} under acme's scope");
    }
    // Unfiltered writes change acme's rows only.
    let changed = sqlx::query("UPDATE jobs SET status = 'cancelled'")
        .execute(&mut *tx)
        .await
        .expect("update")
        .rows_affected();
    assert_eq!(changed, 1);
    let deleted = sqlx::query("DELETE FROM job_items")
        .execute(&mut *tx)
        .await
        .expect("delete")
        .rows_affected();
    assert_eq!(deleted, 2);
    tx.rollback().await.expect("rollback");

    // Writing a row for another tenant is refused.
    let mut tx = db::begin(app, Scope::Tenant(acme)).await.expect("tx");
    let forged = sqlx::query("UPDATE api_keys SET tenant_id = $1")
        .bind(globex)
        .execute(&mut *tx)
        .await;
    let code = forged
        .expect_err("moving a key to globex")
        .as_database_error()
        .and_then(|e| e.code())
        .map(|c| c.to_string());
    assert_eq!(
        code.as_deref(),
        Some("42501"),
        "row-level security violation"
    );
    tx.rollback().await.expect("rollback");

    // globex's rows were never touched (checked as the owner).
    let status: String = sqlx::query_scalar("SELECT status FROM jobs WHERE tenant_id = $1")
        .bind(globex)
        .fetch_one(&h.env.pool)
        .await
        .expect("globex job");
    assert_eq!(status, "queued");
    // The platform scope (authentication, operators) sees both.
    let mut tx = db::begin(app, Scope::Platform).await.expect("tx");
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs")
        .fetch_one(&mut *tx)
        .await
        .expect("jobs");
    assert_eq!(n, 2);
    tx.rollback().await.expect("rollback");
    h.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_connection_can_be_encrypted() {
    let env = gatehouse_common::testkit::TestEnv::new(&[]).await;
    let mut config = env.config.clone();
    config.database_url = format!("{}?sslmode=require", config.database_url);
    // The services' pool negotiates TLS ...
    let app = db::connect(&config)
        .await
        .expect("TLS connection (sslmode=require)");
    let one: i32 = sqlx::query_scalar("SELECT 1")
        .fetch_one(&app)
        .await
        .expect("query over TLS");
    assert_eq!(one, 1);
    app.close().await;
    // ... and pg_stat_ssl (visible to the session's own user, before any role switch) says so.
    let pool = db::connect_owner(&config)
        .await
        .expect("TLS connection (sslmode=require)");
    let (ssl, version): (bool, Option<String>) =
        sqlx::query_as("SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .fetch_one(&pool)
            .await
            .expect("pg_stat_ssl");
    assert!(ssl, "the connection is not encrypted");
    assert!(version.is_some_and(|v| v.starts_with("TLS")));
    pool.close().await;
    env.teardown().await;
}
