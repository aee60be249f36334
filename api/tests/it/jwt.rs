//! JWT signing keys in Postgres: concurrent start-ups create exactly one key, the stored
//! encoding is PKCS#8 DER + raw public key, tokens verify on another replica, a rotation is
//! picked up by a replica that has never seen the new kid, retirement is never postponed, and
//! a retired key stops verifying and leaves the JWKS.

use std::time::Duration;

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, Utc};
use ed25519_dalek::{SigningKey, pkcs8::DecodePrivateKey as _};
use gatehouse_api::identity::jwt::{KEY_REFRESH_INTERVAL, LEEWAY_SECS, TokenError, TokenService};
use gatehouse_common::{testkit::TestEnv, types::TenantId};
use sha2::{Digest as _, Sha256};
use sqlx::PgPool;

#[derive(sqlx::FromRow)]
struct KeyRow {
    kid: String,
    algorithm: String,
    private_key_der: Vec<u8>,
    public_key: Vec<u8>,
    retired_at: Option<DateTime<Utc>>,
}

async fn key_rows(pool: &PgPool) -> Vec<KeyRow> {
    sqlx::query_as(
        "SELECT kid, algorithm, private_key_der, public_key, retired_at \
         FROM signing_keys ORDER BY created_at",
    )
    .fetch_all(pool)
    .await
    .expect("read signing_keys")
}

fn row<'a>(rows: &'a [KeyRow], kid: &str) -> &'a KeyRow {
    rows.iter().find(|r| r.kid == kid).expect("key row")
}

fn kid_of(token: &str) -> String {
    jsonwebtoken::decode_header(token)
        .expect("header")
        .kid
        .expect("kid")
}

fn jwks_kids(jwks: &serde_json::Value) -> Vec<String> {
    jwks["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .map(|k| k["kid"].as_str().expect("kid").to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn signing_keys_are_created_once_rotate_across_replicas_and_retire() {
    let env = TestEnv::new(&[]).await;
    let cfg = env.config.identity.clone();

    // Eight replicas start at once: exactly one key is created.
    let starts: Vec<_> = (0..8)
        .map(|_| {
            let (pool, cfg) = (env.app_pool.clone(), cfg.clone());
            tokio::spawn(async move { TokenService::new(pool, &cfg).await })
        })
        .collect();
    let mut replicas = Vec::new();
    for start in starts {
        replicas.push(start.await.expect("join").expect("start"));
    }
    let rows = key_rows(&env.pool).await;
    assert_eq!(rows.len(), 1, "concurrent start-ups create one key");
    let first = rows[0].kid.clone();

    // Stored as PKCS#8 DER (private) and raw 32 bytes (public); kid = k_ + 16 hex of SHA-256.
    let stored = &rows[0];
    assert_eq!(stored.algorithm, "EdDSA");
    assert!(stored.retired_at.is_none());
    assert_eq!(stored.public_key.len(), 32);
    let private = SigningKey::from_pkcs8_der(&stored.private_key_der).expect("PKCS#8 DER");
    assert_eq!(
        private.verifying_key().to_bytes().as_slice(),
        stored.public_key.as_slice()
    );
    let digest = Sha256::digest(&stored.public_key);
    assert_eq!(first, format!("k_{}", hex::encode(&digest[..8])));

    // Issued on one replica, verified on another; the JWKS publishes the key.
    let (a, b) = (&replicas[0], &replicas[1]);
    let tenant = TenantId::new();
    let old = a
        .issue(
            "usr_alice",
            Some(tenant),
            "admin",
            &["moderate".to_string()],
        )
        .await
        .expect("issue")
        .access_token;
    assert_eq!(kid_of(&old), first);
    let claims = b.verify(&old).await.expect("verify on another replica");
    assert_eq!(claims.sub, "usr_alice");
    assert_eq!(claims.tenant_id(), Some(tenant));
    assert_eq!(claims.iss, cfg.jwt_issuer);
    assert_eq!(claims.aud, cfg.jwt_audience);
    let jwks = b.jwks().await;
    assert_eq!(jwks_kids(&jwks), vec![first.clone()]);
    assert_eq!(
        jwks["keys"][0]["x"],
        URL_SAFE_NO_PAD.encode(&stored.public_key).as_str()
    );

    // Rotate on A: the new key signs at once; the old one retires after the token lifetime
    // (plus the refresh interval and leeway).
    let grace = cfg.jwt_ttl + KEY_REFRESH_INTERVAL + Duration::from_secs(LEEWAY_SECS);
    let grace = chrono::Duration::from_std(grace).expect("grace");
    let before = Utc::now();
    let second = a.rotate().await.expect("rotate");
    let after = Utc::now();
    let rows = key_rows(&env.pool).await;
    assert_eq!(rows.len(), 2);
    assert!(row(&rows, &second).retired_at.is_none());
    let first_retires = row(&rows, &first).retired_at.expect("retirement scheduled");
    assert!(
        first_retires >= before + grace - chrono::Duration::seconds(1)
            && first_retires <= after + grace + chrono::Duration::seconds(1),
        "retired_at {first_retires} not ≈ now + {grace}"
    );
    let fresh = a
        .issue("usr_alice", Some(tenant), "admin", &[])
        .await
        .expect("issue")
        .access_token;
    assert_eq!(kid_of(&fresh), second);
    // B has never seen the new kid: it reloads and accepts it; the old token still verifies.
    b.verify(&fresh).await.expect("rotation picked up");
    b.verify(&old)
        .await
        .expect("rotated key verifies until retired");
    a.verify(&old)
        .await
        .expect("rotated key verifies until retired");
    assert_eq!(jwks_kids(&a.jwks().await), [second.clone(), first.clone()]);

    // A second rotation (on B) never postpones the first key's retirement.
    let third = b.rotate().await.expect("rotate");
    let rows = key_rows(&env.pool).await;
    assert_eq!(row(&rows, &first).retired_at, Some(first_retires));
    assert!(row(&rows, &second).retired_at.is_some());
    assert!(row(&rows, &third).retired_at.is_none());
    assert_eq!(rows.iter().filter(|r| r.retired_at.is_none()).count(), 1);

    // Once the first key is retired, its tokens fail and the JWKS drops it.
    sqlx::query("UPDATE signing_keys SET retired_at = now() - interval '1 second' WHERE kid = $1")
        .bind(&first)
        .execute(&env.pool)
        .await
        .expect("retire");
    let c = TokenService::new(env.app_pool.clone(), &cfg)
        .await
        .expect("start");
    assert_eq!(key_rows(&env.pool).await.len(), 3, "an active key exists");
    assert!(matches!(c.verify(&old).await, Err(TokenError::UnknownKey)));
    c.verify(&fresh).await.expect("second key still verifies");
    assert_eq!(jwks_kids(&c.jwks().await), [third.clone(), second.clone()]);
    let newest = c
        .issue("usr_bob", None, "superadmin", &[])
        .await
        .expect("issue")
        .access_token;
    assert_eq!(kid_of(&newest), third);

    // With every key retired, a start-up creates a new one.
    sqlx::query("UPDATE signing_keys SET retired_at = now() - interval '1 second'")
        .execute(&env.pool)
        .await
        .expect("retire all");
    let d = TokenService::new(env.app_pool.clone(), &cfg)
        .await
        .expect("start");
    let rows = key_rows(&env.pool).await;
    assert_eq!(rows.len(), 4);
    let active: Vec<&KeyRow> = rows.iter().filter(|r| r.retired_at.is_none()).collect();
    assert_eq!(active.len(), 1);
    let token = d
        .issue("usr_bob", None, "superadmin", &[])
        .await
        .expect("issue")
        .access_token;
    assert_eq!(kid_of(&token), active[0].kid);
    d.verify(&token).await.expect("verify");
    assert!(matches!(
        d.verify(&fresh).await,
        Err(TokenError::UnknownKey)
    ));

    env.teardown().await;
}
