//! The application role can only insert and read audit records; a trigger refuses changes
//! for every role, the owner included.

use crate::support::Harness;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_app_role_cannot_update_delete_or_truncate_and_the_trigger_refuses_the_owner() {
    let h = Harness::new(&[], false).await;
    h.submit(&["hello".to_string()]).await;
    let before = h.scalar("SELECT count(*) FROM audit_events").await;
    assert!(before > 0);

    // As gatehouse_app (the services' pool switches to it), every tenant visible.
    for sql in [
        "UPDATE audit_events SET actor = 'evil'",
        "DELETE FROM audit_events",
        "TRUNCATE audit_events",
        "UPDATE audit_checkpoints SET seq = 0",
        "DELETE FROM audit_chain_heads",
        "UPDATE audit_chain_heads SET seq = 0",
    ] {
        let mut tx = h.env.app_pool.begin().await.expect("begin");
        sqlx::query("SELECT set_config('gatehouse.platform', 'on', true)")
            .execute(&mut *tx)
            .await
            .expect("platform");
        let role: String = sqlx::query_scalar("SELECT current_user::text")
            .fetch_one(&mut *tx)
            .await
            .expect("role");
        assert_eq!(role, "gatehouse_app");
        let err = sqlx::query(sql).execute(&mut *tx).await.expect_err(sql);
        let code = err
            .as_database_error()
            .and_then(|e| e.code())
            .unwrap_or_default();
        assert_eq!(code, "42501", "{sql}: {err}");
    }
    // Even the app cannot fake the purge switch: it still lacks DELETE.
    let mut tx = h.env.app_pool.begin().await.expect("begin");
    sqlx::query("SELECT set_config('gatehouse.audit_purge', 'on', true), set_config('gatehouse.platform', 'on', true)")
        .execute(&mut *tx)
        .await
        .expect("settings");
    assert!(
        sqlx::query("DELETE FROM audit_events")
            .execute(&mut *tx)
            .await
            .is_err()
    );
    drop(tx);
    // Nor purge anything younger than 90 days through the function.
    let mut tx = h.env.app_pool.begin().await.expect("begin");
    sqlx::query("SELECT set_config('gatehouse.platform', 'on', true)")
        .execute(&mut *tx)
        .await
        .expect("platform");
    let tenant = h.tenant_id().await;
    assert!(
        sqlx::query("SELECT gatehouse_audit_purge($1, 1)")
            .bind(tenant.0)
            .execute(&mut *tx)
            .await
            .is_err()
    );
    drop(tx);

    // The owner is refused by the trigger (tampering needs disabling it: see the chain tests).
    for sql in [
        "UPDATE audit_events SET actor = 'evil'",
        "DELETE FROM audit_events",
        "TRUNCATE audit_events",
    ] {
        let err = sqlx::query(sql).execute(&h.env.pool).await.expect_err(sql);
        assert!(err.to_string().contains("append-only"), "{sql}: {err}");
    }
    assert_eq!(h.scalar("SELECT count(*) FROM audit_events").await, before);
    h.teardown().await;
}
