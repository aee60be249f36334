//! Identity end to end: tokens and their revocation across replicas, JWT attacks, login
//! throttling, users and roles, key rotation, tenants, network rules, audit.

use axum::http::{Method, StatusCode};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use gatehouse_api::{AppState, app};
use gatehouse_common::{telemetry, types::Role};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use crate::support::{Harness, PASSWORD, Reply, new_key, new_tenant, new_user};

fn unauthorized(reply: &Reply, what: &str) {
    assert_eq!(
        reply.status,
        StatusCode::UNAUTHORIZED,
        "{what}: {}",
        String::from_utf8_lossy(&reply.body)
    );
    let challenge = reply
        .headers
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    assert!(challenge.starts_with("Bearer"), "{what}: {challenge}");
    assert_eq!(reply.content_type(), "application/problem+json", "{what}");
}

fn invalid_token(reply: &Reply, what: &str) {
    unauthorized(reply, what);
    let challenge = reply
        .headers
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    assert!(challenge.contains("invalid_token"), "{what}: {challenge}");
}

fn key_id(key: &str) -> String {
    let id = key
        .trim_start_matches("ghk_")
        .split('_')
        .next()
        .expect("key shape");
    format!("key_{id}")
}

/// A second api replica on the same database.
async fn replica(h: &Harness) -> Harness2 {
    let state = AppState::new(
        h.env.app_pool.clone(),
        h.env.config.clone(),
        telemetry::metrics_handle(),
    )
    .await
    .expect("state");
    Harness2 { app: app(state) }
}

struct Harness2 {
    app: axum::Router,
}

impl Harness2 {
    async fn me(&self, bearer: &str) -> Reply {
        let request = axum::http::Request::builder()
            .uri("/v1/me")
            .header("authorization", format!("Bearer {bearer}"))
            .body(axum::body::Body::empty())
            .expect("request");
        crate::support::send(&self.app, request).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_work_and_die_with_their_key_user_or_tenant_on_every_replica() {
    let h = Harness::new(&[], false).await;
    let other = replica(&h).await;
    let tenant = h.tenant_id().await;
    new_user(&h.state, Some(tenant), "alice", Role::Admin).await;
    new_user(&h.state, Some(tenant), "bob", Role::Reviewer).await;
    new_user(&h.state, None, "root", Role::Superadmin).await;
    let admin = h.login(Some("acme"), "alice").await;
    let reviewer = h.login(Some("acme"), "bob").await;
    let operator = h.login(None, "root").await;

    // A key's token: OAuth2 shape, works on the other replica, names its key.
    let reply = h
        .call(Method::POST, "/v1/auth/token", Some(&h.key), None)
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    let body = reply.json();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 900);
    let key_token = body["access_token"].as_str().expect("token").to_string();
    let me = other.me(&key_token).await;
    assert_eq!(me.status, StatusCode::OK);
    assert_eq!(me.json()["subject"], key_id(&h.key));
    assert_eq!(me.json()["via"], "token");
    assert_eq!(me.json()["role"], "service");
    assert_eq!(me.json()["scopes"], json!(["moderate"]));
    // The token's claims are what the issue asks for, and its kid is published.
    let (header, claims) = decode_unverified(&key_token);
    for claim in [
        "iss", "aud", "sub", "tid", "role", "scope", "iat", "exp", "jti",
    ] {
        assert!(
            claims.get(claim).is_some(),
            "claim {claim} missing: {claims}"
        );
    }
    assert_eq!(header["alg"], "EdDSA");
    let jwks = h
        .call(Method::GET, "/.well-known/jwks.json", None, None)
        .await
        .json();
    assert!(
        jwks["keys"]
            .as_array()
            .expect("keys")
            .iter()
            .any(|k| k["kid"] == header["kid"] && k["crv"] == "Ed25519")
    );
    // A token cannot be exchanged for another token.
    let reply = h
        .call(Method::POST, "/v1/auth/token", Some(&key_token), None)
        .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);

    // Revoking the key on replica A stops the key and its token on replica B at once.
    let reply = h
        .call(
            Method::DELETE,
            &format!("/v1/keys/{}", key_id(&h.key)),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    invalid_token(&other.me(&key_token).await, "token of a revoked key");
    invalid_token(&other.me(&h.key).await, "revoked key");

    // Disabling a user stops the user's token.
    assert_eq!(other.me(&reviewer).await.status, StatusCode::OK);
    let bob = other.me(&reviewer).await.json()["subject"]
        .as_str()
        .expect("id")
        .to_string();
    let reply = h
        .call(
            Method::PATCH,
            &format!("/v1/users/{bob}"),
            Some(&admin),
            Some(json!({"enabled": false})),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    invalid_token(&other.me(&reviewer).await, "token of a disabled user");

    // A demoted admin loses admin rights with the same token (the current role applies).
    new_user(&h.state, Some(tenant), "carol", Role::Admin).await;
    let carol = h.login(Some("acme"), "carol").await;
    let carol_id = other.me(&carol).await.json()["subject"]
        .as_str()
        .expect("id")
        .to_string();
    let reply = h
        .call(
            Method::PATCH,
            &format!("/v1/users/{carol_id}"),
            Some(&admin),
            Some(json!({"role": "guest"})),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(other.me(&carol).await.json()["role"], "guest");
    assert_eq!(
        h.call(Method::GET, "/v1/keys", Some(&carol), None)
            .await
            .status,
        StatusCode::FORBIDDEN
    );

    // Disabling the tenant stops its admin's token and its remaining keys.
    let fresh_key = new_key(&h.state, tenant, &["moderate"]).await;
    assert_eq!(other.me(&fresh_key).await.status, StatusCode::OK);
    let reply = h
        .call(
            Method::PATCH,
            &format!("/v1/tenants/{tenant}"),
            Some(&operator),
            Some(json!({"enabled": false})),
        )
        .await;
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    invalid_token(
        &other.me(&admin).await,
        "token of a disabled tenant's admin",
    );
    invalid_token(&other.me(&fresh_key).await, "key of a disabled tenant");
    let reply = h
        .call(
            Method::POST,
            "/v1/auth/login",
            None,
            Some(json!({"tenant": "acme", "username": "alice", "password": PASSWORD})),
        )
        .await;
    unauthorized(&reply, "login into a disabled tenant");
    // The operator is bound to no tenant and keeps working.
    let me = other.me(&operator).await;
    assert_eq!(me.status, StatusCode::OK);
    assert_eq!(me.json()["username"], "root");
    assert_eq!(me.json()["role"], "superadmin");
    assert!(me.json()["tenant"].is_null());
    h.teardown().await;
}

fn decode_unverified(token: &str) -> (Value, Value) {
    let mut parts = token.split('.');
    let mut next = || -> Value {
        let raw = URL_SAFE_NO_PAD
            .decode(parts.next().expect("part"))
            .expect("base64url");
        serde_json::from_slice(&raw).expect("json")
    };
    (next(), next())
}

fn b64(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).expect("json"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_and_invalid_tokens_are_rejected() {
    let h = Harness::new(&[], false).await;
    let good = h.exchange(&h.key).await;
    assert_eq!(
        h.call(Method::GET, "/v1/me", Some(&good), None)
            .await
            .status,
        StatusCode::OK
    );
    let (header, claims) = decode_unverified(&good);
    let kid = header["kid"].as_str().expect("kid").to_string();
    let (der, public): (Vec<u8>, Vec<u8>) =
        sqlx::query_as("SELECT private_key_der, public_key FROM signing_keys WHERE kid = $1")
            .bind(&kid)
            .fetch_one(&h.env.pool)
            .await
            .expect("signing key");
    let sign = |header: Header, claims: &Value| {
        jsonwebtoken::encode(&header, claims, &EncodingKey::from_ed_der(&der)).expect("sign")
    };
    let mut eddsa = Header::new(Algorithm::EdDSA);
    eddsa.kid = Some(kid.clone());
    // Sanity: our own forging helper makes tokens the server accepts.
    assert_eq!(
        h.call(
            Method::GET,
            "/v1/me",
            Some(&sign(eddsa.clone(), &claims)),
            None
        )
        .await
        .status,
        StatusCode::OK
    );

    let now = chrono::Utc::now().timestamp();
    let with = |field: &str, value: Value| {
        let mut c = claims.clone();
        c[field] = value;
        c
    };
    let mut hs256 = Header::new(Algorithm::HS256);
    hs256.kid = Some(kid.clone());
    let confusion =
        jsonwebtoken::encode(&hs256, &claims, &EncodingKey::from_secret(&public)).expect("hs256");
    let mut unknown = eddsa.clone();
    unknown.kid = Some("k_0000000000000000".into());
    let sig = good.rsplit('.').next().expect("signature");
    let cases: Vec<(&str, String)> = vec![
        (
            "alg none",
            format!(
                "{}.{}.",
                b64(&json!({"alg": "none", "typ": "JWT", "kid": kid})),
                b64(&claims)
            ),
        ),
        ("HS256 signed with the public key", confusion),
        (
            "expired",
            sign(eddsa.clone(), &with("exp", json!(now - 60))),
        ),
        (
            "not yet valid",
            sign(eddsa.clone(), &with("nbf", json!(now + 3600))),
        ),
        (
            "wrong audience",
            sign(eddsa.clone(), &with("aud", json!("someone-else"))),
        ),
        (
            "wrong issuer",
            sign(eddsa.clone(), &with("iss", json!("evil"))),
        ),
        ("unknown kid", sign(unknown, &claims)),
        (
            "tampered payload",
            format!(
                "{}.{}.{sig}",
                b64(&header),
                b64(&with("role", json!("admin")))
            ),
        ),
        (
            "another tenant in tid",
            sign(
                eddsa.clone(),
                &with(
                    "tid",
                    json!(gatehouse_common::types::TenantId::new().to_string()),
                ),
            ),
        ),
        ("garbage", "a.b.c".into()),
    ];
    for (what, token) in cases {
        invalid_token(
            &h.call(Method::GET, "/v1/me", Some(&token), None).await,
            what,
        );
    }
    h.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_are_throttled_and_never_say_who_exists() {
    let h = Harness::new(
        &[
            ("GATEHOUSE_LOGIN_MAX_FAILURES", "3"),
            ("GATEHOUSE_LOGIN_LOCKOUT_SECS", "60"),
        ],
        false,
    )
    .await;
    let tenant = h.tenant_id().await;
    new_user(&h.state, Some(tenant), "dave", Role::Reviewer).await;
    new_user(&h.state, Some(tenant), "erin", Role::Reviewer).await;
    let login = |tenant: &str, user: &str, password: &str| json!({"tenant": tenant, "username": user, "password": password});
    let mut details = Vec::new();
    for body in [
        login("acme", "dave", "wrong password!!"),
        login("acme", "nobody", PASSWORD),
        login("no-such-tenant", "dave", PASSWORD),
    ] {
        let reply = h
            .call(Method::POST, "/v1/auth/login", None, Some(body))
            .await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
        details.push(reply.json()["detail"].clone());
    }
    assert!(
        details.windows(2).all(|w| w[0] == w[1]),
        "messages differ: {details:?}"
    );

    // Two more failures lock dave out, even with the right password.
    for _ in 0..2 {
        let reply = h
            .call(
                Method::POST,
                "/v1/auth/login",
                None,
                Some(login("acme", "dave", "still wrong!!")),
            )
            .await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    }
    let reply = h
        .call(
            Method::POST,
            "/v1/auth/login",
            None,
            Some(login("acme", "dave", PASSWORD)),
        )
        .await;
    assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = reply.headers["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!((1..=60).contains(&retry));
    // Another user from the same address is not locked (the per-IP limit is looser).
    assert_eq!(h.login(Some("acme"), "erin").await.split('.').count(), 3);

    let failed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_events WHERE action = 'login.failed' AND client_ip = '127.0.0.1'",
    )
    .fetch_one(&h.env.pool)
    .await
    .expect("audit");
    assert!(failed >= 5, "{failed}");
    let succeeded: i64 =
        sqlx::query_scalar("SELECT count(*) FROM audit_events WHERE action = 'login.succeeded'")
            .fetch_one(&h.env.pool)
            .await
            .expect("audit");
    assert_eq!(succeeded, 1);
    h.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_manage_users_and_the_last_admin_stays() {
    let h = Harness::new(&[], false).await;
    let tenant = h.tenant_id().await;
    let alice_id = new_user(&h.state, Some(tenant), "alice", Role::Admin).await;
    let admin = h.login(Some("acme"), "alice").await;
    let create = |username: &str, password: &str, role: &str| json!({"username": username, "password": password, "role": role});

    let reply = h
        .call(
            Method::POST,
            "/v1/users",
            Some(&admin),
            Some(create("frank", PASSWORD, "reviewer")),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED);
    let frank = reply.json();
    assert_eq!(frank["role"], "reviewer");
    assert!(
        frank.get("password_hash").is_none() && !reply.body.windows(8).any(|w| w == b"$argon2i")
    );
    let stored: String =
        sqlx::query_scalar("SELECT password_hash FROM users WHERE username = 'frank'")
            .fetch_one(&h.env.pool)
            .await
            .expect("hash");
    assert!(stored.starts_with("$argon2id$"));
    for (body, status, code) in [
        (
            create("Frank", PASSWORD, "guest"),
            StatusCode::CONFLICT,
            "duplicate_username",
        ),
        (
            create("gina", "short", "guest"),
            StatusCode::UNPROCESSABLE_ENTITY,
            "weak_password",
        ),
        (
            create("gina", PASSWORD, "superadmin"),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_role",
        ),
    ] {
        let reply = h
            .call(Method::POST, "/v1/users", Some(&admin), Some(body))
            .await;
        assert_eq!(reply.status, status);
        assert_eq!(reply.json()["code"], code);
    }

    // Pagination.
    let page = h
        .call(Method::GET, "/v1/users?limit=1", Some(&admin), None)
        .await
        .json();
    assert_eq!(page["data"].as_array().expect("data").len(), 1);
    let after = page["next_after"].as_str().expect("cursor");
    let rest = h
        .call(
            Method::GET,
            &format!("/v1/users?limit=10&after={after}"),
            Some(&admin),
            None,
        )
        .await
        .json();
    assert_eq!(rest["data"].as_array().expect("data").len(), 1);
    assert!(rest["next_after"].is_null());

    // Role change is audited; the reviewer's new role applies.
    let frank_id = frank["id"].as_str().expect("id");
    let reply = h
        .call(
            Method::PATCH,
            &format!("/v1/users/{frank_id}"),
            Some(&admin),
            Some(json!({"role": "guest"})),
        )
        .await;
    assert_eq!(reply.json()["role"], "guest");
    let audited: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_events WHERE action = 'user.role_changed' AND client_ip IS NOT NULL")
        .fetch_one(&h.env.pool)
        .await
        .expect("audit");
    assert_eq!(audited, 1);

    // The last admin can be neither demoted, disabled nor deleted.
    let me = format!("/v1/users/{alice_id}");
    for body in [json!({"role": "reviewer"}), json!({"enabled": false})] {
        let reply = h.call(Method::PATCH, &me, Some(&admin), Some(body)).await;
        assert_eq!(reply.status, StatusCode::CONFLICT);
        assert_eq!(reply.json()["code"], "last_admin");
    }
    assert_eq!(
        h.call(Method::DELETE, &me, Some(&admin), None).await.status,
        StatusCode::CONFLICT
    );
    // With a second admin it can.
    let reply = h
        .call(
            Method::PATCH,
            &format!("/v1/users/{frank_id}"),
            Some(&admin),
            Some(json!({"role": "admin"})),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        h.call(
            Method::PATCH,
            &me,
            Some(&admin),
            Some(json!({"role": "reviewer"}))
        )
        .await
        .status,
        StatusCode::OK
    );
    // Alice is a reviewer now: she cannot manage users (nor give herself back the role).
    assert_eq!(
        h.call(
            Method::PATCH,
            &me,
            Some(&admin),
            Some(json!({"role": "admin"}))
        )
        .await
        .status,
        StatusCode::FORBIDDEN
    );
    // Another tenant's user is a 404 for this tenant's admin.
    let (globex, _) = new_tenant(&h.state, "globex").await;
    let stranger = new_user(&h.state, Some(globex), "stranger", Role::Reviewer).await;
    let frank_token = h.login(Some("acme"), "frank").await;
    let reply = h
        .call(
            Method::PATCH,
            &format!("/v1/users/{stranger}"),
            Some(&frank_token),
            Some(json!({"enabled": false})),
        )
        .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(
        h.call(
            Method::DELETE,
            &format!("/v1/users/{stranger}"),
            Some(&frank_token),
            None
        )
        .await
        .status,
        StatusCode::NOT_FOUND
    );
    h.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_scoped_rotated_with_grace_and_idempotent() {
    let h = Harness::new(&[], false).await;
    let tenant = h.tenant_id().await;
    new_user(&h.state, Some(tenant), "alice", Role::Admin).await;
    let admin = h.login(Some("acme"), "alice").await;

    let reply = h
        .call(
            Method::POST,
            "/v1/keys",
            Some(&admin),
            Some(json!({"name": "ci", "scopes": ["moderate"]})),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED);
    let created = reply.json();
    let original = created["key"].as_str().expect("secret").to_string();
    assert!(original.starts_with("ghk_"));
    assert_eq!(
        created["created_by"],
        h.call(Method::GET, "/v1/me", Some(&admin), None)
            .await
            .json()["subject"]
    );
    let id = created["id"].as_str().expect("id").to_string();
    // The tenant does not grant `translate`; unknown scopes and past expiries are refused.
    for (body, code) in [
        (
            json!({"name": "x", "scopes": ["translate"]}),
            "invalid_scope",
        ),
        (json!({"name": "x", "scopes": ["root"]}), "invalid_scope"),
        (json!({"name": "x", "scopes": []}), "invalid_scope"),
        (
            json!({"name": "x", "scopes": ["moderate"], "expires_at": "2001-01-01T00:00:00Z"}),
            "invalid_expiry",
        ),
    ] {
        let reply = h
            .call(Method::POST, "/v1/keys", Some(&admin), Some(body))
            .await;
        assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(reply.json()["code"], code);
    }
    // The secret is shown once: listing never returns it.
    let listed = h.call(Method::GET, "/v1/keys", Some(&admin), None).await;
    assert!(!String::from_utf8_lossy(&listed.body).contains(&original[40..]));
    assert_eq!(listed.json()["data"].as_array().expect("data").len(), 2);

    let rotate = |idem: &'static str| {
        let request = axum::http::Request::builder()
            .method(Method::POST)
            .uri(format!("/v1/keys/{id}/rotate"))
            .header("authorization", format!("Bearer {admin}"))
            .header("idempotency-key", idem)
            .body(axum::body::Body::empty())
            .expect("request");
        h.send(request)
    };
    let first = rotate("rot-1").await;
    assert_eq!(
        first.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&first.body)
    );
    let rotated = first.json()["key"].as_str().expect("secret").to_string();
    assert_ne!(rotated, original);
    assert_eq!(
        rotate("rot-1").await.json()["key"],
        rotated.as_str(),
        "a replay returns the same result"
    );
    // Both secrets work during the grace period, for the same key id.
    for secret in [&original, &rotated] {
        let me = h.call(Method::GET, "/v1/me", Some(secret), None).await;
        assert_eq!(me.status, StatusCode::OK);
        assert_eq!(me.json()["subject"], id.as_str());
    }
    // The database holds hashes only.
    let leaked: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM api_keys k, key_rotations r WHERE position($1 in k::text) > 0 OR position($1 in r::text) > 0",
    )
    .bind(&rotated[37..])
    .fetch_one(&h.env.pool)
    .await
    .expect("scan");
    assert_eq!(leaked, 0);
    // A second rotation replaces the grace secret: the original stops working.
    let second = rotate("rot-2").await.json()["key"]
        .as_str()
        .expect("secret")
        .to_string();
    invalid_token(
        &h.call(Method::GET, "/v1/me", Some(&original), None).await,
        "secret two rotations old",
    );
    assert_eq!(
        h.call(Method::GET, "/v1/me", Some(&rotated), None)
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        h.call(Method::GET, "/v1/me", Some(&second), None)
            .await
            .status,
        StatusCode::OK
    );
    // The grace period ends.
    sqlx::query("UPDATE api_keys SET previous_valid_until = now() - interval '1 second'")
        .execute(&h.env.pool)
        .await
        .expect("expire grace");
    invalid_token(
        &h.call(Method::GET, "/v1/me", Some(&rotated), None).await,
        "secret after the grace period",
    );
    // An expired key stops.
    sqlx::query("UPDATE api_keys SET expires_at = now() - interval '1 second' WHERE key_id = $1")
        .bind(
            id.trim_start_matches("key_")
                .parse::<uuid::Uuid>()
                .expect("uuid"),
        )
        .execute(&h.env.pool)
        .await
        .expect("expire key");
    invalid_token(
        &h.call(Method::GET, "/v1/me", Some(&second), None).await,
        "expired key",
    );
    // Another tenant's key cannot be rotated or revoked from here.
    let (_, foreign) = new_tenant(&h.state, "globex").await;
    let foreign_id = key_id(&foreign);
    assert_eq!(
        h.call(
            Method::DELETE,
            &format!("/v1/keys/{foreign_id}"),
            Some(&admin),
            None
        )
        .await
        .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        h.call(Method::GET, "/v1/me", Some(&foreign), None)
            .await
            .status,
        StatusCode::OK
    );

    let actions: Vec<String> = sqlx::query_scalar(
        "SELECT action FROM audit_events WHERE action LIKE 'key.%' AND outcome = 'success' ORDER BY audit_id",
    )
    .fetch_all(&h.env.pool)
    .await
    .expect("audit");
    // Two rotations and the idempotent replay of the first (recorded as such).
    assert_eq!(actions.iter().filter(|a| *a == "key.rotated").count(), 3);
    assert_eq!(
        h.scalar("SELECT count(*) FROM audit_events WHERE action = 'key.rotated' AND details->>'idempotent_replay' = 'true'").await,
        1
    );
    assert!(actions.contains(&"key.created".to_string()));
    h.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_manage_tenants_and_allowlists_hold() {
    let h = Harness::new(&[], false).await;
    new_user(&h.state, None, "root", Role::Superadmin).await;
    let operator = h.login(None, "root").await;
    let reply = h
        .call(
            Method::POST,
            "/v1/tenants",
            Some(&operator),
            Some(json!({"name": "Initech Corp", "scopes": ["moderate", "translate"]})),
        )
        .await;
    assert_eq!(
        reply.status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    assert_eq!(reply.json()["slug"], "initech-corp");
    let dup = h
        .call(
            Method::POST,
            "/v1/tenants",
            Some(&operator),
            Some(json!({"name": "x", "slug": "initech-corp"})),
        )
        .await;
    assert_eq!(dup.status, StatusCode::CONFLICT);
    let bad = h
        .call(
            Method::POST,
            "/v1/tenants",
            Some(&operator),
            Some(json!({"name": "x", "ip_allowlist": ["10.0.0.0/33"]})),
        )
        .await;
    assert_eq!(bad.json()["field"], "ip_allowlist[0]");
    let page = h
        .call(Method::GET, "/v1/tenants?limit=1", Some(&operator), None)
        .await
        .json();
    assert!(page["next_after"].is_string());

    // acme only accepts 10.0.0.0/8: requests from 127.0.0.1 are refused, and a spoofed
    // X-Forwarded-For from an untrusted peer changes nothing.
    let tenant = h.tenant_id().await;
    let reply = h
        .call(
            Method::PATCH,
            &format!("/v1/tenants/{tenant}"),
            Some(&operator),
            Some(json!({"ip_allowlist": ["10.0.0.0/8"]})),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    let reply = h.call(Method::GET, "/v1/me", Some(&h.key), None).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    let spoofed = axum::http::Request::builder()
        .uri("/v1/me")
        .header("authorization", format!("Bearer {}", h.key))
        .header("x-forwarded-for", "10.1.2.3")
        .body(axum::body::Body::empty())
        .expect("request");
    assert_eq!(h.send(spoofed).await.status, StatusCode::FORBIDDEN);
    // The operator has no tenant, hence no allowlist.
    assert_eq!(
        h.call(Method::GET, "/v1/me", Some(&operator), None)
            .await
            .status,
        StatusCode::OK
    );
    h.teardown().await;

    // Behind a trusted proxy, X-Forwarded-For names the client.
    let h = Harness::new(&[("GATEHOUSE_TRUSTED_PROXIES", "127.0.0.1/32")], false).await;
    let tenant = h.tenant_id().await;
    sqlx::query("UPDATE tenants SET ip_allowlist = '{10.0.0.0/8}' WHERE tenant_id = $1")
        .bind(tenant)
        .execute(&h.env.pool)
        .await
        .expect("allowlist");
    for (forwarded, status) in [
        ("10.1.2.3", StatusCode::OK),
        ("192.168.1.1", StatusCode::FORBIDDEN),
        ("10.9.9.9, 127.0.0.1", StatusCode::OK),
    ] {
        let request = axum::http::Request::builder()
            .uri("/v1/me")
            .header("authorization", format!("Bearer {}", h.key))
            .header("x-forwarded-for", forwarded)
            .body(axum::body::Body::empty())
            .expect("request");
        assert_eq!(h.send(request).await.status, status, "{forwarded}");
    }
    h.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_audit_and_tenant_settings() {
    let h = Harness::new(&[], false).await;
    let tenant = h.tenant_id().await;
    new_user(&h.state, Some(tenant), "alice", Role::Admin).await;
    new_user(&h.state, Some(tenant), "bob", Role::Reviewer).await;
    let admin = h.login(Some("acme"), "alice").await;
    let reviewer = h.login(Some("acme"), "bob").await;
    let body = json!({"kind": "moderate", "items": [{"text": "hello"}]});
    let mine = h
        .call(
            Method::POST,
            "/v1/jobs",
            Some(&reviewer),
            Some(body.clone()),
        )
        .await
        .json()["id"]
        .clone();
    let keys_job = h
        .call(Method::POST, "/v1/jobs", Some(&h.key), Some(body))
        .await
        .json()["id"]
        .clone();

    let ids = |reply: Reply| -> Vec<Value> {
        reply.json()["data"]
            .as_array()
            .expect("data")
            .iter()
            .map(|j| j["id"].clone())
            .collect()
    };
    // Reviewers see their own history; admins see the tenant's, newest first.
    assert_eq!(
        ids(h.call(Method::GET, "/v1/jobs", Some(&reviewer), None).await),
        vec![mine.clone()]
    );
    assert_eq!(
        ids(h.call(Method::GET, "/v1/jobs", Some(&admin), None).await),
        vec![keys_job.clone(), mine.clone()]
    );
    let first = h
        .call(Method::GET, "/v1/jobs?limit=1", Some(&admin), None)
        .await
        .json();
    let next = first["next_after"].as_str().expect("cursor");
    assert_eq!(
        ids(h
            .call(
                Method::GET,
                &format!("/v1/jobs?limit=1&after={next}"),
                Some(&admin),
                None
            )
            .await),
        vec![mine]
    );

    // Admins read the tenant's audit trail, identity events included; nothing of another tenant.
    let (_, other_key) = new_tenant(&h.state, "globex").await;
    assert_eq!(
        h.call(Method::GET, "/v1/me", Some(&other_key), None)
            .await
            .status,
        StatusCode::OK
    );
    let audit = h
        .call(Method::GET, "/v1/audit?limit=200", Some(&admin), None)
        .await
        .json();
    let actions: Vec<&str> = audit["data"]
        .as_array()
        .expect("data")
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    assert!(
        actions.contains(&"job.created")
            && actions.contains(&"login.succeeded")
            && actions.contains(&"user.created"),
        "{actions:?}"
    );
    assert!(
        !actions.contains(&"tenant.created")
            || audit["data"]
                .as_array()
                .expect("data")
                .iter()
                .all(|e| e["details"]["slug"] != "globex")
    );

    // Admins change their own tenant's name and allowlist, not its scopes.
    let reply = h
        .call(
            Method::PATCH,
            "/v1/tenant",
            Some(&admin),
            Some(json!({"name": "Acme Renamed", "ip_allowlist": ["127.0.0.0/8"]})),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json()["name"], "Acme Renamed");
    assert_eq!(reply.json()["ip_allowlist"], json!(["127.0.0.0/8"]));
    let before = h
        .call(Method::GET, "/v1/tenant", Some(&admin), None)
        .await
        .json()["scopes"]
        .clone();
    h.call(
        Method::PATCH,
        "/v1/tenant",
        Some(&admin),
        Some(json!({"scopes": ["moderate", "translate"]})),
    )
    .await;
    assert_eq!(
        h.call(Method::GET, "/v1/tenant", Some(&admin), None)
            .await
            .json()["scopes"],
        before
    );
    h.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guests_read_shared_results_and_examples_only() {
    let h = Harness::new(&[], false).await;
    let tenant = h.tenant_id().await;
    new_user(&h.state, Some(tenant), "bob", Role::Reviewer).await;
    new_user(&h.state, Some(tenant), "gus", Role::Guest).await;
    new_user(&h.state, Some(tenant), "rita", Role::Reviewer).await;
    let (bob, gus, rita) = (
        h.login(Some("acme"), "bob").await,
        h.login(Some("acme"), "gus").await,
        h.login(Some("acme"), "rita").await,
    );
    let body = json!({"kind": "moderate", "items": [{"text": "hello"}]});
    let job = h
        .call(Method::POST, "/v1/jobs", Some(&bob), Some(body.clone()))
        .await
        .json()["id"]
        .as_str()
        .expect("id")
        .to_string();
    // Guests cannot submit, and do not see unshared jobs.
    assert_eq!(
        h.call(Method::POST, "/v1/jobs", Some(&gus), Some(body))
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        h.call(Method::GET, &format!("/v1/jobs/{job}"), Some(&gus), None)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    // Another reviewer cannot share bob's job (it does not exist for her).
    let share = |shared: bool| json!({"shared": shared});
    let uri = format!("/v1/jobs/{job}/share");
    assert_eq!(
        h.call(Method::POST, &uri, Some(&rita), Some(share(true)))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    // Bob shares it: the guest and the other reviewer can read it and its results.
    let reply = h
        .call(Method::POST, &uri, Some(&bob), Some(share(true)))
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json()["shared"], true);
    for token in [&gus, &rita] {
        assert_eq!(
            h.call(Method::GET, &format!("/v1/jobs/{job}"), Some(token), None)
                .await
                .status,
            StatusCode::OK
        );
        assert_eq!(
            h.call(
                Method::GET,
                &format!("/v1/jobs/{job}/results"),
                Some(token),
                None
            )
            .await
            .status,
            StatusCode::OK
        );
    }
    let listed = h
        .call(Method::GET, "/v1/jobs", Some(&gus), None)
        .await
        .json();
    assert_eq!(listed["data"].as_array().expect("data").len(), 1);
    // Guests cannot share; unsharing hides it again.
    assert_eq!(
        h.call(Method::POST, &uri, Some(&gus), Some(share(false)))
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        h.call(Method::POST, &uri, Some(&bob), Some(share(false)))
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        h.call(Method::GET, &format!("/v1/jobs/{job}"), Some(&gus), None)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    // A principal without the right gets 403 whatever it sends, even a body that is not JSON.
    for uri in ["/v1/keys", "/v1/users", "/v1/tenants", "/v1/jobs"] {
        let request = axum::http::Request::builder()
            .method(Method::POST)
            .uri(uri)
            .header("authorization", format!("Bearer {gus}"))
            .header("content-type", "application/json")
            .body(axum::body::Body::from("{not json"))
            .expect("request");
        assert_eq!(h.send(request).await.status, StatusCode::FORBIDDEN, "{uri}");
    }
    // Examples are there for everyone in the tenant.
    let examples = h.call(Method::GET, "/v1/examples", Some(&gus), None).await;
    assert_eq!(examples.status, StatusCode::OK);
    assert!(
        examples.json()["moderate"]
            .as_array()
            .is_some_and(|items| items.len() >= 10 && items[0]["text"].is_string())
    );
    let shared_audit: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_events WHERE action IN ('job.shared', 'job.unshared') AND outcome = 'success'",
    )
    .fetch_one(&h.env.pool)
    .await
    .expect("audit");
    assert_eq!(shared_audit, 2);
    h.teardown().await;
}
