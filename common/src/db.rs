//! Postgres: the pool, the embedded migrations, and creating the database on first run.

use std::{str::FromStr, time::Duration};

use sqlx::{
    ConnectOptions, Connection, PgPool,
    postgres::{PgConnectOptions, PgConnection, PgPoolOptions},
};

use crate::config::Config;

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

#[derive(Debug, thiserror::Error)]
pub enum DbSetupError {
    #[error("GATEHOUSE_DATABASE_URL is not a valid Postgres URL")]
    Url(#[source] sqlx::Error),
    #[error("cannot reach Postgres")]
    Connect(#[source] sqlx::Error),
    #[error("cannot create database `{0}`")]
    Create(String, #[source] sqlx::Error),
    #[error("migrations failed")]
    Migrate(#[source] sqlx::migrate::MigrateError),
    #[error(
        "the database is not migrated to this version (missing migration {0}; 0 = the application role is missing): run `gatehouse-api migrate`"
    )]
    NotMigrated(i64),
    #[error("cannot read the migration state")]
    Check(#[source] sqlx::Error),
}

/// The services' pool. Every connection switches to `GATEHOUSE_DATABASE_ROLE` (default
/// `gatehouse_app`), which owns no table and cannot bypass row-level security, so queries run
/// under the tenant policies whatever user the URL logs in as. In production, log in as that
/// role directly (then nothing can `RESET ROLE` back to the owner).
pub async fn connect(cfg: &Config) -> Result<PgPool, DbSetupError> {
    let options = PgConnectOptions::from_str(&cfg.database_url).map_err(DbSetupError::Url)?;
    let role = cfg.database_role.clone();
    let mut pool = PgPoolOptions::new()
        .max_connections(cfg.database_max_connections)
        .acquire_timeout(Duration::from_secs(10));
    if !role.is_empty() {
        let set_role = format!("SET ROLE \"{}\"", role.replace('"', "\"\""));
        pool = pool.after_connect(move |conn, _meta| {
            let set_role = set_role.clone();
            Box::pin(async move {
                sqlx::query(&set_role).execute(conn).await?;
                Ok(())
            })
        });
    }
    match pool.connect_with(options).await {
        Ok(pool) => Ok(pool),
        // The role is created by the migrations.
        Err(sqlx::Error::Database(e))
            if e.code().as_deref() == Some("22023") || e.code().as_deref() == Some("42704") =>
        {
            Err(DbSetupError::NotMigrated(0))
        }
        Err(e) => Err(DbSetupError::Connect(e)),
    }
}

/// A pool as the URL's own user (the schema owner): migrations and bootstrap commands only.
pub async fn connect_owner(cfg: &Config) -> Result<PgPool, DbSetupError> {
    let options = PgConnectOptions::from_str(&cfg.database_url).map_err(DbSetupError::Url)?;
    PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(options)
        .await
        .map_err(DbSetupError::Connect)
}

/// `NOTIFY` channel on which workers announce finished jobs (payload: the job's uuid).
pub const JOB_DONE_CHANNEL: &str = "gatehouse_job_done";

/// `NOTIFY` channel on which workers announce each finished chunk: the dispatcher releases the
/// next ones at once instead of at its next poll.
pub const CHUNK_DONE_CHANNEL: &str = "gatehouse_chunk_done";

/// Whose rows a transaction may touch (row-level security).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// One tenant's rows.
    Tenant(crate::types::TenantId),
    /// Every tenant's: authentication look-ups, operator routes, system work.
    Platform,
}

/// Begins a transaction limited to `scope`, in one round trip: `BEGIN` and the scope's
/// setting travel as one simple query (the tenant id is a formatted UUID, never client text).
pub async fn begin(
    pool: &PgPool,
    scope: Scope,
) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, sqlx::Error> {
    begin_planned(pool, scope, "").await
}

/// [`begin`] for keyset pages (`WHERE key > $after ORDER BY key LIMIT $n`) over a big table:
/// bitmap scans are off for the transaction. Row-level security's filter makes the planner
/// estimate a handful of rows, so it prefers a bitmap scan of *every* row after the cursor
/// plus a sort over walking the primary key and stopping at the limit — 250 ms instead of
/// 2 ms for a page of a 100,000-item job (measured on `GET /v1/jobs/{id}/results`).
pub async fn begin_keyset(
    pool: &PgPool,
    scope: Scope,
) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, sqlx::Error> {
    begin_planned(pool, scope, "; SET LOCAL enable_bitmapscan = off").await
}

/// [`begin`] for statements that look up a bounded key range by primary key (a chunk's items
/// and their results, in the worker's claim): only index scans in nested loops. A connection's
/// cached *generic* plan is costed with the statistics of when it was made: made while a job's
/// `job_results` still looked empty, it scanned every result of the job once per item — a
/// claim grew from 1 ms to 8 s over one 20,000-item job (found in the statement log of
/// `make loadtest` with the fast model). These settings make that plan impossible.
pub async fn begin_point_lookups(
    pool: &PgPool,
    scope: Scope,
) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, sqlx::Error> {
    begin_planned(
        pool,
        scope,
        "; SET LOCAL enable_seqscan = off; SET LOCAL enable_hashjoin = off; \
         SET LOCAL enable_mergejoin = off; SET LOCAL enable_bitmapscan = off",
    )
    .await
}

/// `BEGIN`, the scope and `settings` (constant `SET LOCAL`s, never client text) in one
/// simple query.
async fn begin_planned(
    pool: &PgPool,
    scope: Scope,
    settings: &'static str,
) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, sqlx::Error> {
    let statement = match scope {
        Scope::Tenant(tenant) => format!(
            "BEGIN; SELECT set_config('gatehouse.tenant_id', '{}', true){settings}",
            tenant.0.hyphenated()
        ),
        Scope::Platform => {
            format!("BEGIN; SELECT set_config('gatehouse.platform', 'on', true){settings}")
        }
    };
    // The request's trace context (the default of `jobs.traceparent`); formatted from
    // validated bytes, never client text.
    let statement = match crate::trace::current() {
        Some(context) => {
            format!("{statement}; SELECT set_config('gatehouse.traceparent', '{context}', true)")
        }
        None => statement,
    };
    pool.begin_with(statement).await
}

/// Creates the database named in the URL when it does not exist yet.
pub async fn ensure_database(database_url: &str) -> Result<(), DbSetupError> {
    let options = PgConnectOptions::from_str(database_url).map_err(DbSetupError::Url)?;
    let name = options.get_database().unwrap_or("postgres").to_string();
    let mut admin: PgConnection = options
        .clone()
        .database("postgres")
        .connect()
        .await
        .map_err(DbSetupError::Connect)?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(&name)
            .fetch_one(&mut admin)
            .await
            .map_err(DbSetupError::Connect)?;
    if !exists {
        let quoted = format!("\"{}\"", name.replace('"', "\"\""));
        let created = sqlx::query(&format!("CREATE DATABASE {quoted}"))
            .execute(&mut admin)
            .await;
        // Two processes may race to create it; losing that race is fine.
        if let Err(error) = created {
            let duplicate = error
                .as_database_error()
                .and_then(|e| e.code())
                .is_some_and(|code| code == "42P04");
            if !duplicate {
                return Err(DbSetupError::Create(name, error));
            }
        }
    }
    let _ = admin.close().await;
    Ok(())
}

pub async fn migrate(pool: &PgPool) -> Result<(), DbSetupError> {
    MIGRATOR.run(pool).await.map_err(DbSetupError::Migrate)
}

/// Fails unless every migration this binary knows has been applied, so a process never runs
/// against a schema it does not understand.
pub async fn check_migrated(pool: &PgPool) -> Result<(), DbSetupError> {
    let applied: Vec<i64> = match sqlx::query_scalar(
        "SELECT version FROM _sqlx_migrations WHERE success ORDER BY version",
    )
    .fetch_all(pool)
    .await
    {
        Ok(versions) => versions,
        // No migrations table (or no grant on it yet): nothing was applied for this role.
        Err(sqlx::Error::Database(e))
            if matches!(e.code().as_deref(), Some("42P01") | Some("42501")) =>
        {
            Vec::new()
        }
        Err(e) => return Err(DbSetupError::Check(e)),
    };
    match MIGRATOR.iter().find(|m| !applied.contains(&m.version)) {
        Some(missing) => Err(DbSetupError::NotMigrated(missing.version)),
        None => Ok(()),
    }
}

/// A database error's class, safe to log: SQLSTATE, constraint and table, never the message
/// or detail (Postgres quotes the offending value there, which may be a tenant's data).
pub fn error_class(error: &sqlx::Error) -> String {
    match error.as_database_error() {
        Some(db) => format!(
            "sqlstate={} constraint={} table={}",
            db.code().as_deref().unwrap_or("?"),
            db.constraint().unwrap_or("-"),
            db.table().unwrap_or("-"),
        ),
        None => match error {
            sqlx::Error::PoolTimedOut => "pool timed out".into(),
            sqlx::Error::PoolClosed => "pool closed".into(),
            sqlx::Error::Io(_) => "io error".into(),
            sqlx::Error::Tls(_) => "tls error".into(),
            sqlx::Error::Protocol(_) => "protocol error".into(),
            sqlx::Error::RowNotFound => "row not found".into(),
            sqlx::Error::ColumnDecode { index, .. } => format!("column decode ({index})"),
            sqlx::Error::Decode(_) => "decode error".into(),
            _ => "database error".into(),
        },
    }
}
