//! The hash chain: numbers without gaps under concurrent writers on several "replicas"
//! (pools), signed checkpoints anyone can check, and every kind of tampering — an edited,
//! deleted or reordered record, a deleted tail, a consistently rewritten chain — found by
//! `GET /v1/audit/verify` and `gatehouse-api admin audit verify`.

use axum::http::Method;
use base64::{Engine as _, engine::general_purpose::STANDARD};
use ed25519_dalek::{Signature, Verifier as _, VerifyingKey};
use gatehouse_api::audit::checkpoints;
use gatehouse_common::{
    audit::{self, Action},
    db::{self, Scope},
    types::{Role, TenantId},
};

use crate::support::{Harness, new_tenant, new_user};

/// Where a chain must break and why (`None`: intact).
type Expected = Option<(i64, &'static [&'static str])>;

/// `n` records of `tenant`, written as the owner.
async fn records(h: &Harness, tenant: TenantId, n: i64) {
    sqlx::query(
        "INSERT INTO audit_events (tenant_id, actor, action, details)
         SELECT $1, 'test', 'key.changed', jsonb_build_object('i', i) FROM generate_series(1, $2) i",
    )
    .bind(tenant.0)
    .bind(n)
    .execute(&h.env.pool)
    .await
    .expect("records");
}

async fn owner(h: &Harness, sql: &str, tenant: TenantId) {
    let sql = format!(
        "ALTER TABLE audit_events DISABLE TRIGGER audit_events_append_only; {sql}; \
         ALTER TABLE audit_events ENABLE TRIGGER audit_events_append_only"
    );
    sqlx::raw_sql(&sql.replace("$T", &format!("'{}'", tenant.0)))
        .execute(&h.env.pool)
        .await
        .expect("tamper");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_on_several_replicas_get_gapless_numbers() {
    let h = Harness::new(&[], false).await;
    let tenant = h.tenant_id().await;
    let replica_b = sqlx::postgres::PgPoolOptions::new()
        .max_connections(5)
        .after_connect(|conn, _| {
            Box::pin(async move {
                sqlx::query("SET ROLE gatehouse_app").execute(conn).await?;
                Ok(())
            })
        })
        .connect(&h.env.config.database_url)
        .await
        .expect("second pool");
    let before = h.scalar("SELECT count(*) FROM audit_events").await;
    let mut tasks = Vec::new();
    for i in 0..40 {
        let pool = if i % 2 == 0 {
            h.env.app_pool.clone()
        } else {
            replica_b.clone()
        };
        tasks.push(tokio::spawn(async move {
            let mut tx = db::begin(&pool, Scope::Tenant(tenant))
                .await
                .expect("begin");
            audit::insert(
                &mut tx,
                audit::Record::new(Some(tenant), "key_concurrent", Action::KeyChanged),
            )
            .await
            .expect("insert");
            tx.commit().await.expect("commit");
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    let (n, min, max): (i64, i64, i64) = sqlx::query_as(
        "SELECT count(*), min(seq), max(seq) FROM audit_events WHERE tenant_id = $1",
    )
    .bind(tenant.0)
    .fetch_one(&h.env.pool)
    .await
    .expect("seqs");
    assert_eq!(n, before + 40);
    assert_eq!((min, max), (1, n), "numbers 1..n without gaps");
    let report = gatehouse_api::audit::chain::verify(&h.state.pool, Some(tenant))
        .await
        .expect("verify");
    assert!(report.ok, "{report:?}");
    assert_eq!(report.records as i64, n);
    replica_b.close().await;
    h.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_are_signed_and_every_tampering_is_detected() {
    let h = Harness::new(&[], false).await;
    // One tenant (and admin) per kind of tampering, plus one left intact.
    let kinds = ["intact", "edit", "delete", "reorder", "tail", "rewrite"];
    let mut tenants = Vec::new();
    for kind in kinds {
        let (tenant, _) = new_tenant(&h.state, kind).await;
        new_user(&h.state, Some(tenant), "admin", Role::Admin).await;
        records(&h, tenant, 5).await;
        let token = h.login(Some(kind), "admin").await;
        tenants.push((kind, tenant, token));
    }
    let written =
        checkpoints::checkpoint_heads(&h.state.pool, &h.state.audit.signer, h.state.clock.now())
            .await
            .expect("checkpoints");
    assert!(written.unwrap_or(0) >= kinds.len() as u64);

    // Checkpoints verify with any Ed25519 library: the signed message and key are given.
    let (_, _, token) = &tenants[0];
    let reply = h
        .call(Method::GET, "/v1/audit/checkpoints", Some(token), None)
        .await;
    assert_eq!(
        reply.status,
        200,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    let list = reply.json();
    let cp = &list["data"][0];
    let public: [u8; 32] = STANDARD
        .decode(cp["public_key"].as_str().expect("key"))
        .expect("b64")
        .try_into()
        .expect("32 bytes");
    let sig = STANDARD
        .decode(cp["signature"].as_str().expect("sig"))
        .expect("b64");
    let message = cp["message"].as_str().expect("message");
    VerifyingKey::from_bytes(&public)
        .expect("key")
        .verify(
            message.as_bytes(),
            &Signature::from_slice(&sig).expect("sig"),
        )
        .expect("the checkpoint's signature verifies");
    assert!(message.contains(&format!(
        "head: {}",
        cp["head_hash"].as_str().expect("hash")
    )));

    // Records after the checkpoint, so that only the tail one goes past it.
    for (_, tenant, _) in &tenants {
        records(&h, *tenant, 2).await;
    }
    let find = |kind: &str| tenants.iter().find(|t| t.0 == kind).expect("tenant").1;
    owner(
        &h,
        "UPDATE audit_events SET details = '{\"i\": 99}' WHERE tenant_id = $T AND seq = 3",
        find("edit"),
    )
    .await;
    owner(
        &h,
        "DELETE FROM audit_events WHERE tenant_id = $T AND seq = 2",
        find("delete"),
    )
    .await;
    owner(
        &h,
        "UPDATE audit_events SET seq = -1 WHERE tenant_id = $T AND seq = 2; \
         UPDATE audit_events SET seq = 2 WHERE tenant_id = $T AND seq = 3; \
         UPDATE audit_events SET seq = 3 WHERE tenant_id = $T AND seq = -1",
        find("reorder"),
    )
    .await;
    // Each chain: 1 tenant.created, 2 key.created, 3 user.created, 4–8 the records, 9
    // login.succeeded (the checkpoint), 10–11 after it. Deleting from record 5 on leaves a
    // shorter, internally valid chain.
    owner(
        &h,
        "DELETE FROM audit_events WHERE tenant_id = $T AND seq >= 5",
        find("tail"),
    )
    .await;
    // Edit record 2 and recompute every hash after it, heads included: only a checkpoint
    // the tenant holds can tell.
    owner(
        &h,
        "ALTER TABLE audit_events DISABLE TRIGGER audit_events_chain; \
         DO $$ DECLARE r audit_events; prev bytea; BEGIN \
           SELECT hash INTO prev FROM audit_events WHERE tenant_id = $T AND seq = 1; \
           UPDATE audit_events SET details = '{\"forged\": true}' WHERE tenant_id = $T AND seq = 2; \
           FOR r IN SELECT * FROM audit_events WHERE tenant_id = $T AND seq >= 2 ORDER BY seq LOOP \
             r.prev_hash := prev; r.hash := gatehouse_audit_hash(prev, r); \
             UPDATE audit_events SET prev_hash = r.prev_hash, hash = r.hash WHERE audit_id = r.audit_id; \
             prev := r.hash; END LOOP; \
           UPDATE audit_chain_heads SET hash = prev WHERE chain_id = $T; END $$; \
         ALTER TABLE audit_events ENABLE TRIGGER audit_events_chain",
        find("rewrite"),
    )
    .await;

    let expect: &[(&str, Expected)] = &[
        ("intact", None),
        ("edit", Some((3, &["hash_mismatch"]))),
        ("delete", Some((2, &["gap"]))),
        (
            "reorder",
            Some((2, &["prev_hash_mismatch", "hash_mismatch"])),
        ),
        ("tail", Some((5, &["truncated"]))),
        ("rewrite", Some((9, &["checkpoint_mismatch"]))),
    ];
    for (kind, tenant, token) in &tenants {
        let report = super::verify(&h, token).await;
        let want = expect.iter().find(|e| e.0 == *kind).expect("case").1;
        match want {
            None => assert_eq!(report["ok"], true, "{kind}: {report}"),
            Some((seq, reasons)) => {
                assert_eq!(report["ok"], false, "{kind}: {report}");
                assert_eq!(report["broken"]["seq"], seq, "{kind}: {report}");
                let reason = report["broken"]["reason"].as_str().unwrap_or_default();
                assert!(reasons.contains(&reason), "{kind}: {report}");
            }
        }
        // The CLI walks the same chain (as the schema owner) and fails on a broken one.
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_gatehouse-api"))
            .args(["admin", "audit", "verify", "--tenant", &tenant.to_string()])
            .env("GATEHOUSE_DATABASE_URL", &h.env.config.database_url)
            .output()
            .expect("run the CLI");
        assert_eq!(
            out.status.success(),
            want.is_none(),
            "{kind}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let printed: serde_json::Value =
            serde_json::from_slice(out.stdout.trim_ascii()).expect("one JSON object");
        assert_eq!(printed["chains"][0]["broken"], report["broken"], "{kind}");
    }
    h.teardown().await;
}
