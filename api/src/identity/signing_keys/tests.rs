//! The key set and the cache, against a real Postgres (a fresh database per test). The tests
//! that only use the public token API are in `api/tests/it/jwt_tokens.rs`; these need the
//! cache's insides (its age, its load count, a hand-built key set).

use std::sync::atomic::Ordering;

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use ed25519_dalek::Signer as _;
use gatehouse_common::{testkit::TestEnv, types::TenantId};
use jsonwebtoken::{Algorithm, Header, Validation, errors::ErrorKind};
use serde_json::{Value, json};

use super::*;
use crate::identity::jwt::{TokenError, TokenService};

const CONFIG: [(&str, &str); 3] = [
    ("GATEHOUSE_JWT_ISSUER", "https://gatehouse.test"),
    ("GATEHOUSE_JWT_AUDIENCE", "gatehouse-api"),
    ("GATEHOUSE_JWT_TTL_SECS", "900"),
];

async fn service(env: &TestEnv) -> TokenService {
    TokenService::new(env.app_pool.clone(), &env.config.identity)
        .await
        .expect("service")
}

/// A database, a service over it, and its signing key's kid.
async fn fixture() -> (TestEnv, TokenService, String) {
    let env = TestEnv::new(&CONFIG).await;
    let svc = service(&env).await;
    let kid = sqlx::query_scalar("SELECT kid FROM signing_keys")
        .fetch_one(&env.pool)
        .await
        .expect("the first key");
    (env, svc, kid)
}

async fn key_count(env: &TestEnv) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM signing_keys")
        .fetch_one(&env.pool)
        .await
        .expect("count keys")
}

async fn retired_at(env: &TestEnv, kid: &str) -> Option<DateTime<Utc>> {
    sqlx::query_scalar("SELECT retired_at FROM signing_keys WHERE kid = $1")
        .bind(kid)
        .fetch_one(&env.pool)
        .await
        .expect("key row")
}

async fn retire_now(env: &TestEnv, kid: &str) {
    sqlx::query("UPDATE signing_keys SET retired_at = now() - interval '1 second' WHERE kid = $1")
        .bind(kid)
        .execute(&env.pool)
        .await
        .expect("retire");
}

async fn signing_key(env: &TestEnv, kid: &str) -> SigningKey {
    let der: Vec<u8> =
        sqlx::query_scalar("SELECT private_key_der FROM signing_keys WHERE kid = $1")
            .bind(kid)
            .fetch_one(&env.pool)
            .await
            .expect("key row");
    SigningKey::from_pkcs8_der(&der).expect("pkcs8")
}

async fn public_key(env: &TestEnv, kid: &str) -> Vec<u8> {
    sqlx::query_scalar("SELECT public_key FROM signing_keys WHERE kid = $1")
        .bind(kid)
        .fetch_one(&env.pool)
        .await
        .expect("key row")
}

fn kid_of(token: &str) -> String {
    jsonwebtoken::decode_header(token)
        .expect("header")
        .kid
        .expect("kid")
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// `header.claims.signature`, signed EdDSA with `key` under `kid`.
fn ed_signed(key: &SigningKey, kid: &str, claims: &Value) -> String {
    let header = json!({"alg": "EdDSA", "typ": "JWT", "kid": kid});
    let message = format!(
        "{}.{}",
        b64(&serde_json::to_vec(&header).expect("json")),
        b64(&serde_json::to_vec(claims).expect("json"))
    );
    let signature = b64(&key.sign(message.as_bytes()).to_bytes());
    format!("{message}.{signature}")
}

fn good_claims() -> Value {
    let now = Utc::now().timestamp();
    json!({
        "iss": "https://gatehouse.test",
        "aud": "gatehouse-api",
        "sub": "usr_0190f0f0f0f0f0f0f0f0f0f0f0f0f0f0",
        "tid": TenantId::new().to_string(),
        "role": "admin",
        "scope": "moderate jobs:read",
        "iat": now,
        "nbf": now,
        "exp": now + 600,
        "jti": uuid::Uuid::now_v7().to_string(),
    })
}

/// Makes the service's cache look older than `KEY_REFRESH_INTERVAL`, with no recent reload.
async fn age(svc: &TokenService) {
    let keys = svc.signing_keys();
    let mut aged = (*keys.snapshot()).clone();
    aged.loaded_at = Instant::now()
        .checked_sub(KEY_REFRESH_INTERVAL + Duration::from_secs(1))
        .expect("instant");
    keys.install(aged);
    *keys.reload.lock().await = None;
}

fn loads(svc: &TokenService) -> usize {
    svc.signing_keys().loads.load(Ordering::SeqCst)
}

fn row_of(key: NewSigningKey) -> KeyRow {
    KeyRow {
        kid: key.kid,
        algorithm: key.algorithm.to_string(),
        private_key_der: Some(key.private_key_der),
        public_key: key.public_key.to_vec(),
        created_at: Utc::now(),
        retired_at: None,
    }
}

#[test]
fn pkcs8_der_and_raw_public_key_round_trip_through_jsonwebtoken() {
    let key = generate_key().expect("key");
    // The stored DER is a PKCS#8 document ed25519-dalek reads back to the same key.
    let parsed = SigningKey::from_pkcs8_der(&key.private_key_der).expect("pkcs8");
    assert_eq!(parsed.verifying_key().to_bytes(), key.public_key);
    assert_eq!(key.public_key.len(), 32);

    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(key.kid.clone());
    let claims = json!({"sub": "x", "exp": Utc::now().timestamp() + 60});
    let token = jsonwebtoken::encode(
        &header,
        &claims,
        &EncodingKey::from_ed_der(&key.private_key_der),
    )
    .expect("sign with PKCS#8 DER");
    let mut validation = Validation::new(Algorithm::EdDSA);
    validation.validate_aud = false;
    for decoding in [
        DecodingKey::from_ed_der(&key.public_key),
        DecodingKey::from_ed_components(&b64(&key.public_key)).expect("x"),
    ] {
        let data = jsonwebtoken::decode::<Value>(&token, &decoding, &validation)
            .expect("verify with the raw public key");
        assert_eq!(data.claims["sub"], "x");
        assert_eq!(data.header.kid.as_deref(), Some(key.kid.as_str()));
    }
    // Someone else's key does not verify it.
    let other = generate_key().expect("key");
    let err = jsonwebtoken::decode::<Value>(
        &token,
        &DecodingKey::from_ed_der(&other.public_key),
        &validation,
    )
    .expect_err("wrong key");
    assert_eq!(err.kind(), &ErrorKind::InvalidSignature);
}

#[test]
fn kid_is_k_and_16_hex_of_the_public_key_hash() {
    let key = generate_key().expect("key");
    assert_eq!(key.kid.len(), 18);
    assert!(key.kid.starts_with("k_"));
    assert!(key.kid[2..].chars().all(|c| c.is_ascii_hexdigit()));
    let digest = Sha256::digest(key.public_key);
    assert_eq!(key.kid, format!("k_{}", hex::encode(&digest[..8])));
}

#[test]
fn key_set_skips_unusable_rows() {
    let good = row_of(generate_key().expect("key"));
    let mut wrong_alg = row_of(generate_key().expect("key"));
    wrong_alg.algorithm = "RS256".into();
    let mut short_public = row_of(generate_key().expect("key"));
    short_public.public_key.truncate(31);
    // Newest, active, but its private key belongs to another public key: verifies only.
    let mut mismatched = row_of(generate_key().expect("key"));
    mismatched.private_key_der = good.private_key_der.clone();
    mismatched.created_at = good.created_at + chrono::Duration::seconds(10);
    let keys = KeySet::from_rows(
        vec![good.clone(), wrong_alg, short_public, mismatched.clone()],
        Utc::now(),
    );
    let kids: Vec<&str> = keys.verify.iter().map(|k| k.kid.as_str()).collect();
    assert_eq!(kids, [mismatched.kid.as_str(), good.kid.as_str()]);
    assert_eq!(
        keys.signer.as_ref().map(|s| s.kid.as_str()),
        Some(good.kid.as_str())
    );
}

#[tokio::test]
async fn unknown_kid_reloads_at_most_once_a_second_then_fails() {
    let (env, svc, kid) = fixture().await;
    let key = signing_key(&env, &kid).await;
    let before = loads(&svc);
    let token = ed_signed(&key, "k_0000000000000000", &good_claims());
    assert!(matches!(
        svc.verify(&token).await,
        Err(TokenError::UnknownKey)
    ));
    assert_eq!(loads(&svc), before + 1, "one reload");
    for _ in 0..5 {
        assert!(matches!(
            svc.verify(&token).await,
            Err(TokenError::UnknownKey)
        ));
    }
    assert_eq!(loads(&svc), before + 1, "no more reloads within a second");
    tokio::time::sleep(RELOAD_MIN_GAP + Duration::from_millis(100)).await;
    assert!(matches!(
        svc.verify(&token).await,
        Err(TokenError::UnknownKey)
    ));
    assert_eq!(loads(&svc), before + 2, "one more reload after a second");
    env.teardown().await;
}

#[tokio::test]
async fn another_replicas_rotation_is_picked_up_by_verify_and_by_issue() {
    let env = TestEnv::new(&CONFIG).await;
    let a = service(&env).await;
    let b = service(&env).await;
    assert_eq!(
        key_count(&env).await,
        1,
        "the second replica reuses the key"
    );
    let old = b.issue("usr_1", None, "admin", &[]).await.expect("issue");

    let new_kid = a.rotate().await.expect("rotate");
    let fresh = a.issue("usr_1", None, "admin", &[]).await.expect("issue");
    assert_eq!(
        kid_of(&fresh.access_token),
        new_kid,
        "the rotating replica signs at once"
    );

    // B has never seen the new kid: it reloads once and accepts the token.
    b.verify(&fresh.access_token).await.expect("picked up");
    b.verify(&old.access_token)
        .await
        .expect("old key still verifies");

    // C's cache is older than a minute: issue reloads and signs with the new key.
    let c = service(&env).await;
    let third = a.rotate().await.expect("rotate");
    age(&c).await;
    let token = c.issue("usr_1", None, "admin", &[]).await.expect("issue");
    assert_eq!(kid_of(&token.access_token), third);
    env.teardown().await;
}

#[tokio::test]
async fn rotated_key_verifies_until_retired_then_fails() {
    let (env, svc, first) = fixture().await;
    let old = svc.issue("usr_1", None, "admin", &[]).await.expect("issue");
    assert_eq!(kid_of(&old.access_token), first);

    let second = svc.rotate().await.expect("rotate");
    assert_ne!(second, first);
    let retires = retired_at(&env, &first)
        .await
        .expect("scheduled for retirement");
    let expected = Utc::now() + chrono::Duration::from_std(svc.retirement_grace()).expect("grace");
    assert!((expected - retires).num_seconds().abs() <= 2);
    assert_eq!(svc.retirement_grace(), Duration::from_secs(900 + 60 + 5));
    svc.verify(&old.access_token)
        .await
        .expect("rotated but not yet retired");

    // The retirement time passes (here: an operator revokes the key).
    retire_now(&env, &first).await;
    // The cache still holds the old key with a future retirement, so age it to reload.
    age(&svc).await;
    assert!(matches!(
        svc.verify(&old.access_token).await,
        Err(TokenError::UnknownKey)
    ));
    env.teardown().await;
}

#[tokio::test]
async fn a_cached_key_stops_verifying_when_its_retirement_passes() {
    let (env, svc, kid) = fixture().await;
    let key = signing_key(&env, &kid).await;
    let token = ed_signed(&key, &kid, &good_claims());
    // A cache loaded an hour ago, when the key was still to retire a second ago.
    let mut rows = store::load_active(&env.pool).await.expect("load");
    rows[0].retired_at = Some(Utc::now() - chrono::Duration::seconds(1));
    let keys = KeySet::from_rows(rows, Utc::now() - chrono::Duration::hours(1));
    assert_eq!(keys.verify.len(), 1);
    svc.signing_keys().install(keys);
    let before = loads(&svc);
    assert!(matches!(
        svc.verify(&token).await,
        Err(TokenError::UnknownKey)
    ));
    assert_eq!(
        loads(&svc),
        before,
        "a retired kid does not trigger a reload"
    );
    env.teardown().await;
}

#[tokio::test]
async fn jwks_lists_every_key_that_still_verifies() {
    let (env, svc, first) = fixture().await;
    let second = svc.rotate().await.expect("rotate");
    let jwks = svc.jwks().await;
    let keys = jwks["keys"].as_array().expect("keys");
    assert_eq!(keys.len(), 2);
    assert_eq!(keys[0]["kid"], second.as_str(), "newest first");
    assert_eq!(keys[1]["kid"], first.as_str());
    for jwk in keys {
        let kid = jwk["kid"].as_str().expect("kid");
        assert_eq!(
            jwk,
            &json!({
                "kty": "OKP",
                "crv": "Ed25519",
                "x": b64(&public_key(&env, kid).await),
                "kid": kid,
                "alg": "EdDSA",
                "use": "sig",
            })
        );
        // A client can verify our tokens with it.
        let parsed: jsonwebtoken::jwk::Jwk = serde_json::from_value(jwk.clone()).expect("jwk");
        DecodingKey::from_jwk(&parsed).expect("decoding key");
    }
    // A retired key is not published.
    let mut rows = store::load_active(&env.pool).await.expect("load");
    rows.iter_mut()
        .find(|r| r.kid == first)
        .expect("row")
        .retired_at = Some(Utc::now() - chrono::Duration::seconds(1));
    let mut keys = KeySet::from_rows(rows, Utc::now() - chrono::Duration::hours(1));
    keys.loaded_at = Instant::now();
    svc.signing_keys().install(keys);
    let jwks = svc.jwks().await;
    let kids: Vec<&str> = jwks["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .map(|k| k["kid"].as_str().expect("kid"))
        .collect();
    assert_eq!(kids, [second.as_str()]);
    env.teardown().await;
}

#[tokio::test]
async fn issue_creates_a_key_when_every_key_was_retired() {
    let (env, svc, first) = fixture().await;
    retire_now(&env, &first).await;
    age(&svc).await;
    let token = svc.issue("usr_1", None, "admin", &[]).await.expect("issue");
    let kid = kid_of(&token.access_token);
    assert_ne!(kid, first);
    svc.verify(&token.access_token).await.expect("verify");
    env.teardown().await;
}
