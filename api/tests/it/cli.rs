//! The `gatehouse-api` binary: `migrate` creates the database, the admin commands print one
//! JSON object that scripts can use, and the key they print works.

use std::process::{Command, Output};

use gatehouse_api::store::keys;
use gatehouse_common::testkit::TestEnv;
use sqlx::{Connection, postgres::PgConnection};

fn run(env: &[(&str, String)], args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gatehouse-api"))
        .args(args)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .expect("run gatehouse-api")
}

fn run_with_stdin(env: &[(&str, String)], args: &[&str], stdin: &str) -> Output {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_gatehouse-api"))
        .args(args)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn gatehouse-api");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write password");
    child.wait_with_output().expect("wait")
}

fn json(output: &Output) -> serde_json::Value {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        stdout.lines().count(),
        1,
        "exactly one line on stdout: {stdout}"
    );
    serde_json::from_str(stdout.trim()).expect("one JSON object")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_creates_the_database_and_admin_commands_print_json() {
    // TestEnv only to get a server URL and cleanup; the CLI gets a database that does not exist.
    let env = TestEnv::new(&[]).await;
    let url = format!("{}_cli", env.config.database_url);
    let vars = vec![("GATEHOUSE_DATABASE_URL", url.clone())];

    let migrate = run(&vars, &["migrate"]);
    assert!(
        migrate.status.success(),
        "{}",
        String::from_utf8_lossy(&migrate.stderr)
    );
    // Twice is fine.
    assert!(run(&vars, &["migrate"]).status.success());

    let tenant = json(&run(
        &vars,
        &["admin", "tenant", "create", "--name", "Acme Corp"],
    ));
    let tenant_id = tenant["id"].as_str().expect("id");
    assert!(tenant_id.starts_with("ten_"));
    assert_eq!(tenant["name"], "Acme Corp");
    assert_eq!(tenant["slug"], "acme-corp");

    let key = json(&run(
        &vars,
        &["admin", "key", "create", "--tenant", tenant_id],
    ));
    assert!(key["id"].as_str().expect("id").starts_with("key_"));
    assert_eq!(key["tenant_id"], tenant_id);
    let secret = key["key"].as_str().expect("key");
    assert!(secret.starts_with("ghk_"));

    let mut conn = PgConnection::connect(&url)
        .await
        .expect("the CLI created the database");
    let stored: Vec<u8> = sqlx::query_scalar("SELECT secret_sha256 FROM api_keys")
        .fetch_one(&mut conn)
        .await
        .expect("one key");
    assert!(!stored.is_empty() && !String::from_utf8_lossy(&stored).contains(secret));
    let pool = sqlx::PgPool::connect(&url).await.expect("pool");
    let verified = keys::verify(&pool, secret).await.expect("verify");
    assert_eq!(
        verified.map(|k| k.tenant_id.to_string()),
        Some(tenant_id.to_string())
    );
    pool.close().await;

    // Users and operators: the password comes from standard input and is policy-checked.
    let user = json(&run_with_stdin(
        &vars,
        &[
            "admin",
            "user",
            "create",
            "--tenant",
            tenant_id,
            "--username",
            "alice",
            "--role",
            "admin",
        ],
        "a long admin passphrase\n",
    ));
    assert!(user["id"].as_str().expect("id").starts_with("usr_"));
    assert_eq!(user["role"], "admin");
    assert_eq!(user["tenant_id"], tenant_id);
    let operator = json(&run_with_stdin(
        &vars,
        &["admin", "operator", "create", "--username", "root"],
        "a long operator passphrase\n",
    ));
    assert_eq!(operator["role"], "superadmin");
    assert!(operator["tenant_id"].is_null());
    let weak = run_with_stdin(
        &vars,
        &["admin", "operator", "create", "--username", "weak"],
        "short\n",
    );
    assert!(!weak.status.success());
    assert!(String::from_utf8_lossy(&weak.stderr).contains("12"));
    let hash: String =
        sqlx::query_scalar("SELECT password_hash FROM users WHERE username = 'root'")
            .fetch_one(&mut conn)
            .await
            .expect("operator");
    assert!(hash.starts_with("$argon2id$"));
    // Tenants are listed and updated (disabled) from the CLI too.
    let listed = json(&run(&vars, &["admin", "tenant", "list"]));
    assert_eq!(listed["data"][0]["id"], tenant_id);
    let updated = json(&run(
        &vars,
        &[
            "admin",
            "tenant",
            "update",
            "--tenant",
            tenant_id,
            "--enabled",
            "false",
            "--ip-allowlist",
            "10.0.0.0/8,192.0.2.7",
        ],
    ));
    assert_eq!(updated["enabled"], false);
    assert_eq!(
        updated["ip_allowlist"],
        serde_json::json!(["10.0.0.0/8", "192.0.2.7/32"])
    );
    // Quotas, rate limits and the weight are operator settings on the CLI too.
    let limited = json(&run(
        &vars,
        &[
            "admin",
            "tenant",
            "update",
            "--tenant",
            tenant_id,
            "--daily-items",
            "5000",
            "--daily-characters",
            "unlimited",
            "--requests-per-minute",
            "600",
            "--items-per-minute",
            "20000",
            "--weight",
            "2",
        ],
    ));
    assert_eq!(limited["quotas"]["daily_items"], 5000);
    assert!(limited["quotas"]["daily_characters"].is_null());
    assert_eq!(limited["rate_limits"]["requests_per_minute"], 600);
    assert_eq!(limited["rate_limits"]["items_per_minute"], 20000);
    assert_eq!(limited["weight"], 2);
    let bad_limit = run(
        &vars,
        &[
            "admin",
            "tenant",
            "update",
            "--tenant",
            tenant_id,
            "--daily-items",
            "-3",
        ],
    );
    assert!(!bad_limit.status.success());
    let bad_scope = run(
        &vars,
        &[
            "admin", "tenant", "update", "--tenant", tenant_id, "--scopes", "root",
        ],
    );
    assert!(!bad_scope.status.success());
    // Signing keys rotate from the CLI.
    let first = json(&run(&vars, &["admin", "signing-key", "rotate"]));
    let second = json(&run(&vars, &["admin", "signing-key", "rotate"]));
    assert_ne!(first["kid"], second["kid"]);
    let _ = conn.close().await;

    let bad = run(&vars, &["admin", "key", "create", "--tenant", "ten_nope"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--tenant"));
    assert!(bad.stdout.is_empty());

    let wrong = run(
        &[("GATEHOUSE_API_LISTEN", "not-an-address".to_string())],
        &["serve"],
    );
    assert!(!wrong.status.success());
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("GATEHOUSE_API_LISTEN"));

    env.drop_database(&format!("{}_cli", env.db_name)).await;
    env.teardown().await;
}
