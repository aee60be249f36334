//! Issuing and verifying access tokens with keys in a real Postgres (a fresh database per
//! test): the claims and header of an issued token, and the refusal of forged, tampered,
//! expired, mis-addressed and malformed tokens (`alg: none`, algorithm confusion, foreign
//! keys). The key cache's own tests (reloads, retirement, JWKS) are unit tests in
//! `api/src/identity/signing_keys/tests.rs`; `jwt.rs` here covers replicas and rotation.

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, Utc};
use ed25519_dalek::{Signer as _, SigningKey, pkcs8::DecodePrivateKey as _};
use gatehouse_api::identity::jwt::{TokenError, TokenService};
use gatehouse_common::{testkit::TestEnv, types::TenantId};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

/// `jwt::MAX_TOKEN_BYTES`: longer tokens are refused before any parsing.
const MAX_TOKEN_BYTES: usize = 8 * 1024;

const CONFIG: [(&str, &str); 3] = [
    ("GATEHOUSE_JWT_ISSUER", "https://gatehouse.test"),
    ("GATEHOUSE_JWT_AUDIENCE", "gatehouse-api"),
    ("GATEHOUSE_JWT_TTL_SECS", "900"),
];

#[derive(sqlx::FromRow)]
struct KeyRow {
    kid: String,
    private_key_der: Vec<u8>,
    public_key: Vec<u8>,
    retired_at: Option<DateTime<Utc>>,
}

async fn key_rows(env: &TestEnv) -> Vec<KeyRow> {
    sqlx::query_as(
        "SELECT kid, private_key_der, public_key, retired_at FROM signing_keys ORDER BY created_at",
    )
    .fetch_all(&env.pool)
    .await
    .expect("read signing_keys")
}

/// A database, a service over it, and its signing key's kid.
async fn fixture() -> (TestEnv, TokenService, String) {
    let env = TestEnv::new(&CONFIG).await;
    let svc = TokenService::new(env.app_pool.clone(), &env.config.identity)
        .await
        .expect("service");
    let kid = key_rows(&env).await.remove(0).kid;
    (env, svc, kid)
}

async fn signing_key(env: &TestEnv, kid: &str) -> SigningKey {
    let rows = key_rows(env).await;
    let row = rows.iter().find(|r| r.kid == kid).expect("row");
    SigningKey::from_pkcs8_der(&row.private_key_der).expect("pkcs8")
}

async fn public_key(env: &TestEnv, kid: &str) -> Vec<u8> {
    let rows = key_rows(env).await;
    rows.iter()
        .find(|r| r.kid == kid)
        .expect("row")
        .public_key
        .clone()
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Builds `header.claims.signature` with an arbitrary signer.
fn forge(header: &Value, claims: &Value, sign: impl Fn(&[u8]) -> Vec<u8>) -> String {
    let message = format!(
        "{}.{}",
        b64(&serde_json::to_vec(header).expect("json")),
        b64(&serde_json::to_vec(claims).expect("json"))
    );
    let signature = b64(&sign(message.as_bytes()));
    format!("{message}.{signature}")
}

fn ed_signed(key: &SigningKey, kid: &str, claims: &Value) -> String {
    forge(
        &json!({"alg": "EdDSA", "typ": "JWT", "kid": kid}),
        claims,
        |m| key.sign(m).to_bytes().to_vec(),
    )
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

#[tokio::test]
async fn issued_token_verifies_with_the_expected_claims_and_header() {
    let (env, svc, kid) = fixture().await;
    assert_eq!(key_rows(&env).await.len(), 1, "the first key is created");
    let tenant = TenantId::new();
    let scopes = vec!["moderate".to_string(), "jobs:read".to_string()];
    let issued = svc
        .issue("usr_abc", Some(tenant), "admin", &scopes)
        .await
        .expect("issue");
    assert_eq!(issued.token_type, "Bearer");
    assert_eq!(issued.expires_in, 900);
    let body = serde_json::to_value(&issued).expect("json");
    assert_eq!(
        body.as_object().expect("object").keys().collect::<Vec<_>>(),
        ["access_token", "token_type", "expires_in"]
    );
    assert!(!format!("{issued:?}").contains(&issued.access_token));

    let header = jsonwebtoken::decode_header(&issued.access_token).expect("header");
    assert_eq!(header.alg, Algorithm::EdDSA);
    assert_eq!(header.kid.as_deref(), Some(kid.as_str()));

    let claims = svc.verify(&issued.access_token).await.expect("verify");
    assert_eq!(claims.iss, "https://gatehouse.test");
    assert_eq!(claims.aud, "gatehouse-api");
    assert_eq!(claims.sub, "usr_abc");
    assert_eq!(claims.tid, Some(tenant.to_string()));
    assert_eq!(claims.tenant_id(), Some(tenant));
    assert_eq!(claims.role, "admin");
    assert_eq!(claims.scope, "moderate jobs:read");
    assert_eq!(
        claims.scopes().collect::<Vec<_>>(),
        ["moderate", "jobs:read"]
    );
    assert_eq!(claims.iat, claims.nbf);
    assert_eq!(claims.exp, claims.iat + 900);
    assert!((claims.iat - Utc::now().timestamp()).abs() <= 2);
    let jti = uuid::Uuid::parse_str(&claims.jti).expect("uuid jti");
    assert_eq!(jti.get_version_num(), 7);

    // An operator token has no tid at all.
    let op = svc
        .issue("usr_op", None, "superadmin", &[])
        .await
        .expect("issue");
    let claims = svc.verify(&op.access_token).await.expect("verify");
    assert_eq!(claims.tid, None);
    assert_eq!(claims.scope, "");
    let raw: Value = jsonwebtoken::dangerous::insecure_decode::<Value>(&op.access_token)
        .expect("decode")
        .claims;
    assert!(raw.get("tid").is_none());
    env.teardown().await;
}

#[tokio::test]
async fn issue_rejects_scopes_that_would_corrupt_the_scope_claim() {
    let (env, svc, _kid) = fixture().await;
    for bad in ["", "a b", "tab\tbed"] {
        let err = svc
            .issue("usr_x", None, "admin", &[bad.to_string()])
            .await
            .expect_err("bad scope");
        assert!(matches!(err, TokenError::Internal(_)), "{err:?}");
    }
    env.teardown().await;
}

#[tokio::test]
async fn alg_none_is_rejected() {
    let (env, svc, kid) = fixture().await;
    for alg in ["none", "None", "NONE"] {
        let token = forge(
            &json!({"alg": alg, "typ": "JWT", "kid": kid}),
            &good_claims(),
            |_| Vec::new(),
        );
        assert!(token.ends_with('.'));
        let err = svc.verify(&token).await.expect_err("alg none");
        assert!(matches!(err, TokenError::Algorithm), "{alg}: {err:?}");
    }
    let no_alg = forge(&json!({"kid": kid}), &good_claims(), |_| Vec::new());
    assert!(matches!(
        svc.verify(&no_alg).await,
        Err(TokenError::Algorithm)
    ));
    env.teardown().await;
}

#[tokio::test]
async fn hs256_signed_with_the_public_key_is_rejected() {
    let (env, svc, kid) = fixture().await;
    let public = public_key(&env, &kid).await;
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(kid.clone());
    // The raw key bytes, and the JWK `x` string, as HMAC secrets.
    for secret in [public.clone(), b64(&public).into_bytes()] {
        let token =
            jsonwebtoken::encode(&header, &good_claims(), &EncodingKey::from_secret(&secret))
                .expect("hs256");
        let err = svc.verify(&token).await.expect_err("algorithm confusion");
        assert!(matches!(err, TokenError::Algorithm), "{err:?}");
    }
    env.teardown().await;
}

#[tokio::test]
async fn rs256_and_every_other_algorithm_is_rejected() {
    let (env, svc, kid) = fixture().await;
    let key = signing_key(&env, &kid).await;
    for alg in [
        "RS256", "RS384", "RS512", "PS256", "ES256", "ES384", "HS256", "HS384", "HS512", "Ed25519",
        "eddsa", "EdDSA ",
    ] {
        // Even with a valid Ed25519 signature over the message.
        let token = forge(
            &json!({"alg": alg, "typ": "JWT", "kid": kid}),
            &good_claims(),
            |m| key.sign(m).to_bytes().to_vec(),
        );
        let err = svc.verify(&token).await.expect_err(alg);
        assert!(matches!(err, TokenError::Algorithm), "{alg}: {err:?}");
    }
    let token = forge(&json!({"alg": 256, "kid": kid}), &good_claims(), |m| {
        key.sign(m).to_bytes().to_vec()
    });
    assert!(matches!(
        svc.verify(&token).await,
        Err(TokenError::Algorithm)
    ));
    env.teardown().await;
}

#[tokio::test]
async fn a_correctly_forged_eddsa_token_verifies() {
    // The baseline of the negative tests below: the forging helper itself is right.
    let (env, svc, kid) = fixture().await;
    let token = ed_signed(&signing_key(&env, &kid).await, &kid, &good_claims());
    svc.verify(&token).await.expect("valid token");
    env.teardown().await;
}

#[tokio::test]
async fn tampered_payload_or_signature_is_a_bad_signature() {
    let (env, svc, _kid) = fixture().await;
    let issued = svc
        .issue("usr_guest", None, "guest", &[])
        .await
        .expect("issue");
    let parts: Vec<&str> = issued.access_token.split('.').collect();
    let mut claims: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).expect("b64")).expect("json");
    claims["role"] = json!("superadmin");
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        b64(&serde_json::to_vec(&claims).expect("json")),
        parts[2]
    );
    assert!(matches!(
        svc.verify(&tampered).await,
        Err(TokenError::BadSignature)
    ));

    let mut signature = URL_SAFE_NO_PAD.decode(parts[2]).expect("b64");
    signature[0] ^= 1;
    let flipped = format!("{}.{}.{}", parts[0], parts[1], b64(&signature));
    assert!(matches!(
        svc.verify(&flipped).await,
        Err(TokenError::BadSignature)
    ));
    let truncated = format!("{}.{}.{}", parts[0], parts[1], b64(&signature[..10]));
    assert!(matches!(
        svc.verify(&truncated).await,
        Err(TokenError::BadSignature)
    ));
    env.teardown().await;
}

#[tokio::test]
async fn signature_by_another_ed25519_key_under_our_kid_is_a_bad_signature() {
    let (env, svc, kid) = fixture().await;
    let stranger = SigningKey::from_bytes(&[7u8; 32]);
    let token = ed_signed(&stranger, &kid, &good_claims());
    assert!(matches!(
        svc.verify(&token).await,
        Err(TokenError::BadSignature)
    ));
    env.teardown().await;
}

#[tokio::test]
async fn expired_token_is_rejected_with_a_five_second_leeway() {
    let (env, svc, kid) = fixture().await;
    let key = signing_key(&env, &kid).await;
    let now = Utc::now().timestamp();
    let mut claims = good_claims();
    claims["iat"] = json!(now - 1000);
    claims["nbf"] = json!(now - 1000);
    claims["exp"] = json!(now - 10);
    let token = ed_signed(&key, &kid, &claims);
    assert!(matches!(svc.verify(&token).await, Err(TokenError::Expired)));
    // Within the leeway.
    claims["exp"] = json!(now - 2);
    let token = ed_signed(&key, &kid, &claims);
    svc.verify(&token).await.expect("within leeway");
    env.teardown().await;
}

#[tokio::test]
async fn token_from_the_future_is_not_yet_valid() {
    let (env, svc, kid) = fixture().await;
    let key = signing_key(&env, &kid).await;
    let now = Utc::now().timestamp();
    let mut claims = good_claims();
    claims["nbf"] = json!(now + 60);
    claims["exp"] = json!(now + 600);
    let token = ed_signed(&key, &kid, &claims);
    assert!(matches!(
        svc.verify(&token).await,
        Err(TokenError::NotYetValid)
    ));
    claims["nbf"] = json!(now + 2);
    let token = ed_signed(&key, &kid, &claims);
    svc.verify(&token).await.expect("within leeway");
    env.teardown().await;
}

#[tokio::test]
async fn wrong_issuer_or_audience_is_rejected() {
    let (env, svc, kid) = fixture().await;
    let key = signing_key(&env, &kid).await;
    let mut claims = good_claims();
    claims["iss"] = json!("https://evil.test");
    assert!(matches!(
        svc.verify(&ed_signed(&key, &kid, &claims)).await,
        Err(TokenError::WrongIssuer)
    ));
    let mut claims = good_claims();
    claims["aud"] = json!("some-other-api");
    assert!(matches!(
        svc.verify(&ed_signed(&key, &kid, &claims)).await,
        Err(TokenError::WrongAudience)
    ));
    env.teardown().await;
}

#[tokio::test]
async fn missing_required_claims_are_malformed() {
    let (env, svc, kid) = fixture().await;
    let key = signing_key(&env, &kid).await;
    for claim in [
        "iss", "aud", "sub", "role", "scope", "iat", "nbf", "exp", "jti",
    ] {
        let mut claims = good_claims();
        claims.as_object_mut().expect("object").remove(claim);
        let err = svc
            .verify(&ed_signed(&key, &kid, &claims))
            .await
            .expect_err(claim);
        assert!(matches!(err, TokenError::Malformed), "{claim}: {err:?}");
    }
    // Wrong types and a tid that is not a tenant id.
    for (claim, value) in [
        ("exp", json!("soon")),
        ("aud", json!(["gatehouse-api"])),
        ("tid", json!("tenant-1")),
    ] {
        let mut claims = good_claims();
        claims[claim] = value;
        let err = svc
            .verify(&ed_signed(&key, &kid, &claims))
            .await
            .expect_err(claim);
        assert!(matches!(err, TokenError::Malformed), "{claim}: {err:?}");
    }
    env.teardown().await;
}

#[tokio::test]
async fn malformed_tokens_and_headers_are_rejected() {
    let (env, svc, kid) = fixture().await;
    let key = signing_key(&env, &kid).await;
    let valid = ed_signed(&key, &kid, &good_claims());
    let long = "a".repeat(MAX_TOKEN_BYTES + 1);
    for token in [
        "",
        "abc",
        "a.b",
        "a.b.c.d",
        "!!!.b.c",
        &format!("{valid}.extra"),
        &format!("{}.e30.", b64(b"not json")),
        &long,
    ] {
        let err = svc.verify(token).await.expect_err("malformed");
        assert!(matches!(err, TokenError::Malformed), "{err:?}");
    }
    // A critical header extension we cannot understand.
    let crit = forge(
        &json!({"alg": "EdDSA", "kid": kid, "crit": ["exp"], "exp": 1}),
        &good_claims(),
        |m| key.sign(m).to_bytes().to_vec(),
    );
    assert!(matches!(
        svc.verify(&crit).await,
        Err(TokenError::Malformed)
    ));
    // No kid names no key.
    let no_kid = forge(&json!({"alg": "EdDSA"}), &good_claims(), |m| {
        key.sign(m).to_bytes().to_vec()
    });
    assert!(matches!(
        svc.verify(&no_kid).await,
        Err(TokenError::UnknownKey)
    ));
    env.teardown().await;
}

#[tokio::test]
async fn rotation_never_postpones_an_earlier_retirement() {
    let (env, svc, first) = fixture().await;
    svc.rotate().await.expect("rotate");
    // Stored (and read back) by Postgres, so the comparison below is at its precision.
    let soon: DateTime<Utc> = sqlx::query_scalar(
        "UPDATE signing_keys SET retired_at = now() + interval '30 seconds' \
         WHERE kid = $1 RETURNING retired_at",
    )
    .bind(&first)
    .fetch_one(&env.pool)
    .await
    .expect("retire soon");
    let second = svc.rotate().await.expect("rotate");
    let rows = key_rows(&env).await;
    assert_eq!(
        rows.iter()
            .find(|r| r.kid == first)
            .expect("row")
            .retired_at,
        Some(soon)
    );
    assert_eq!(
        rows.iter().filter(|r| r.retired_at.is_none()).count(),
        1,
        "only the newest key is active"
    );
    assert!(
        rows.iter()
            .any(|r| r.kid == second && r.retired_at.is_none())
    );
    env.teardown().await;
}

#[tokio::test]
async fn service_is_send_sync_clone_and_debug_hides_keys() {
    fn assert_send_sync<T: Send + Sync + Clone>() {}
    assert_send_sync::<TokenService>();
    let (env, svc, kid) = fixture().await;
    let text = format!("{svc:?}");
    assert!(text.contains(&kid));
    let der = key_rows(&env).await[0].private_key_der.clone();
    assert!(!text.contains(&b64(&der)));
    let other = svc.clone();
    let token = other
        .issue("usr_1", None, "admin", &[])
        .await
        .expect("issue");
    svc.verify(&token.access_token).await.expect("shared cache");
    env.teardown().await;
}
