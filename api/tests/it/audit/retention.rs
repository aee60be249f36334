//! Audit retention: at least 90 days; the purge anchors the chain's new start with a signed
//! checkpoint, so it still verifies.

use axum::http::Method;
use gatehouse_api::retention::Purger;
use gatehouse_common::types::{Role, TenantId};
use serde_json::json;

use crate::support::{Harness, new_user};

/// A tenant created straight in the database (so its chain starts with the old records).
async fn bare_tenant(h: &Harness, slug: &str, audit_days: Option<i32>) -> TenantId {
    let id = uuid::Uuid::new_v4();
    sqlx::query(
        "INSERT INTO tenants (tenant_id, name, slug, audit_retention_days) VALUES ($1, $2, $2, $3)",
    )
    .bind(id)
    .bind(slug)
    .bind(audit_days)
    .execute(&h.env.pool)
    .await
    .expect("tenant");
    let tenant = TenantId(id);
    sqlx::query(
        "INSERT INTO audit_events (tenant_id, actor, action, created_at)
         SELECT $1, 'test', 'key.changed', now() - make_interval(days => 200 - i) FROM generate_series(1, 5) i",
    )
    .bind(id)
    .execute(&h.env.pool)
    .await
    .expect("old records");
    tenant
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_records_are_purged_behind_an_anchor_and_the_chain_still_verifies() {
    let h = Harness::new(&[], false).await;
    let old = bare_tenant(&h, "old", None).await;
    let kept = bare_tenant(&h, "kept", Some(365)).await;
    new_user(&h.state, Some(old), "admin", Role::Admin).await;
    new_user(&h.state, None, "root", Role::Superadmin).await;

    let purged = Purger::new(&h.state)
        .purge_audit_now()
        .await
        .expect("purge");
    let mine: Vec<_> = purged.iter().filter(|p| p.tenant == old).collect();
    assert_eq!(mine.len(), 1, "{purged:?}");
    assert_eq!((mine[0].through_seq, mine[0].removed), (5, 5));
    assert!(
        purged.iter().all(|p| p.tenant != kept),
        "365 days keeps 200-day-old records"
    );
    assert_eq!(
        h.scalar(&format!(
            "SELECT count(*) FROM audit_events WHERE tenant_id = '{}' AND seq <= 5",
            old.0
        ))
        .await,
        0
    );
    assert_eq!(
        h.scalar(&format!("SELECT count(*) FROM audit_checkpoints WHERE tenant_id = '{}' AND kind = 'anchor' AND seq = 5", old.0)).await,
        1
    );
    let token = h.login(Some("old"), "admin").await;
    let report = super::verify(&h, &token).await;
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["first_seq"], 6, "{report}");
    let log = h
        .call(
            Method::GET,
            "/v1/audit?action=audit.purged",
            Some(&token),
            None,
        )
        .await
        .json();
    assert_eq!(log["data"][0]["details"]["removed"], 5);
    // A second round finds nothing more.
    let again = Purger::new(&h.state)
        .purge_audit_now()
        .await
        .expect("purge");
    assert!(again.iter().all(|p| p.tenant != old));

    // Never below 90 days.
    let operator = h.login(None, "root").await;
    let reply = h
        .call(
            Method::PATCH,
            &format!("/v1/tenants/{old}"),
            Some(&operator),
            Some(json!({"audit_retention_days": 30})),
        )
        .await;
    assert_eq!(reply.status, 422);
    let reply = h
        .call(
            Method::PATCH,
            &format!("/v1/tenants/{old}"),
            Some(&operator),
            Some(json!({"audit_retention_days": 120})),
        )
        .await;
    assert_eq!(
        reply.status,
        200,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    assert_eq!(reply.json()["audit_retention_days"], 120);
    let cfg = gatehouse_common::config::Config::from_lookup(|k| {
        (k == "GATEHOUSE_AUDIT_RETENTION_DAYS").then(|| "30".to_string())
    });
    assert_eq!(
        cfg.expect_err("30 days").var,
        "GATEHOUSE_AUDIT_RETENTION_DAYS"
    );
    h.teardown().await;
}
