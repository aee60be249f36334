//! Test isolation: every test gets its own Postgres database and its own queue prefix, so the
//! suite runs in parallel against the one real Postgres and RabbitMQ.

use std::{collections::HashMap, path::PathBuf};

use sqlx::{Connection, PgPool, postgres::PgConnection};

use crate::{config::Config, db, queue};

pub mod otlp;

/// The workspace root (tests run with the crate directory as cwd).
pub fn workspace_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}

fn base_url(var: &str, default: &str) -> String {
    std::env::var(var)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_string())
}

/// A private database and queue prefix; dropped explicitly with [`TestEnv::teardown`].
pub struct TestEnv {
    pub config: Config,
    /// As the schema owner (bypasses row-level security): migrations and test assertions.
    pub pool: PgPool,
    /// As the services connect (`gatehouse_app`, under row-level security).
    pub app_pool: PgPool,
    pub db_name: String,
    admin_url: String,
}

impl TestEnv {
    /// Creates the database, runs the migrations, and builds a `Config` pointing at it.
    /// `overrides` are extra `GATEHOUSE_*` variables.
    pub async fn new(overrides: &[(&str, &str)]) -> Self {
        let server = base_url(
            "GATEHOUSE_TEST_DATABASE_SERVER",
            "postgres://postgres@127.0.0.1:5432",
        );
        let amqp = base_url(
            "GATEHOUSE_AMQP_URL",
            "amqp://guest:guest@127.0.0.1:5672/%2f",
        );
        let suffix = uuid::Uuid::now_v7().simple().to_string();
        let db_name = format!("gh_test_{suffix}");
        let admin_url = format!("{server}/postgres");
        let mut admin = PgConnection::connect(&admin_url)
            .await
            .expect("Postgres must be reachable for the tests (run `make services`)");
        sqlx::query(&format!("CREATE DATABASE \"{db_name}\""))
            .execute(&mut admin)
            .await
            .expect("create test database");
        let _ = admin.close().await;

        let root = workspace_root();
        let mut vars: HashMap<String, String> = HashMap::from([
            (
                "GATEHOUSE_DATABASE_URL".into(),
                format!("{server}/{db_name}"),
            ),
            ("GATEHOUSE_AMQP_URL".into(), amqp),
            ("GATEHOUSE_QUEUE_PREFIX".into(), format!("gh_test_{suffix}")),
            ("GATEHOUSE_API_LISTEN".into(), "127.0.0.1:0".into()),
            ("GATEHOUSE_WORKER_LISTEN".into(), "127.0.0.1:0".into()),
            (
                "GATEHOUSE_MODELS_DIR".into(),
                root.join("models").display().to_string(),
            ),
            ("GATEHOUSE_OUTBOX_POLL_MS".into(), "200".into()),
            ("GATEHOUSE_RETRY_DELAY_MS".into(), "200".into()),
            ("GATEHOUSE_DATABASE_MAX_CONNECTIONS".into(), "5".into()),
        ]);
        if let Ok(models) = std::env::var("GATEHOUSE_MODELS_DIR") {
            vars.insert("GATEHOUSE_MODELS_DIR".into(), models);
        }
        let dylib = std::env::var("ORT_DYLIB_PATH").unwrap_or_else(|_| {
            root.join(".cache/onnxruntime/libonnxruntime.so.1.31.1")
                .display()
                .to_string()
        });
        vars.insert("ORT_DYLIB_PATH".into(), dylib);
        for (k, v) in overrides {
            vars.insert((*k).to_string(), (*v).to_string());
        }
        let config = Config::from_lookup(|k| vars.get(k).cloned()).expect("test config is valid");
        let pool = db::connect_owner(&config)
            .await
            .expect("connect test database");
        db::migrate(&pool).await.expect("migrate test database");
        let app_pool = db::connect(&config)
            .await
            .expect("connect as the application role");
        Self {
            config,
            pool,
            app_pool,
            db_name,
            admin_url,
        }
    }

    pub fn topology(&self) -> queue::Topology {
        queue::Topology::from_config(&self.config)
    }

    /// Drops the database and deletes the queues. Best effort: a failing test may skip it,
    /// and `make clean-test-data` removes leftovers.
    pub async fn teardown(self) {
        if let Ok(conn) = queue::connect(&self.config.amqp_url, "gatehouse-test-teardown").await {
            if let Ok(channel) = conn.create_channel().await {
                let _ = self.topology().delete(&channel).await;
            }
            let _ = conn.close(200, "bye".into()).await;
        }
        self.app_pool.close().await;
        self.pool.close().await;
        self.drop_database(&self.db_name).await;
    }

    /// Drops a database on this test's server (best effort).
    pub async fn drop_database(&self, name: &str) {
        if let Ok(mut admin) = PgConnection::connect(&self.admin_url).await {
            let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                .execute(&mut admin)
                .await;
            let _ = admin.close().await;
        }
    }
}
