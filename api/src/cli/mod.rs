//! `gatehouse-api` commands: `serve`, `migrate`, and the bootstrap admin commands that print
//! one JSON object on stdout so scripts can use them. The clap types are here; `serve.rs` and
//! `admin.rs` run them. `main.rs` only parses, sets up telemetry and dispatches.

pub mod admin;
pub mod serve;

use clap::{Parser, Subcommand};
use gatehouse_common::{config::Config, db};

/// `gatehouse-api migrate`: creates the database if needed and applies the migrations, as the
/// URL's own user (the schema owner).
pub async fn migrate(config: Config) -> anyhow::Result<()> {
    db::ensure_database(&config.database_url).await?;
    let pool = db::connect_owner(&config).await?;
    db::migrate(&pool).await?;
    eprintln!("migrations applied");
    Ok(())
}

#[derive(Debug, Parser)]
#[command(
    name = "gatehouse-api",
    version,
    about = "Gatehouse ingress: HTTP api and admin commands"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the HTTP api (and run the outbox relay) on GATEHOUSE_API_LISTEN.
    Serve,
    /// Create the database if needed and apply the migrations.
    Migrate,
    /// Print the OpenAPI 3.1 description (`openapi.json`; needs no configuration).
    Openapi,
    /// Bootstrap administration.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Tenants.
    Tenant {
        #[command(subcommand)]
        command: TenantCommand,
    },
    /// API keys.
    Key {
        #[command(subcommand)]
        command: KeyCommand,
    },
    /// Users of a tenant (the password is read from standard input).
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Platform operators: superadmin users bound to no tenant (password from standard input).
    Operator {
        #[command(subcommand)]
        command: OperatorCommand,
    },
    /// JWT signing keys.
    SigningKey {
        #[command(subcommand)]
        command: SigningKeyCommand,
    },
    /// The audit trail.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// RabbitMQ queues.
    Queues {
        #[command(subcommand)]
        command: QueuesCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Walk the hash chain of one tenant (or of every chain, the platform's included) and
    /// report the first broken record; exits non-zero when one is broken.
    Verify {
        /// `ten_…`; omitted: every chain.
        #[arg(long)]
        tenant: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum QueuesCommand {
    /// Move the classic queues of an older deployment to the quorum topology (stop the
    /// workers first; idempotent, resumable). Prints what happened to each queue.
    Migrate,
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a user; prints `{"id": "usr_…", "tenant_id", "username", "role", …}`.
    Create {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        username: String,
        /// `admin`, `reviewer` or `guest`.
        #[arg(long)]
        role: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum OperatorCommand {
    /// Create a platform operator; prints `{"id": "usr_…", "username", "role": "superadmin", …}`.
    Create {
        #[arg(long)]
        username: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum SigningKeyCommand {
    /// Start signing with a new key; older keys verify until their tokens expire.
    Rotate,
}

#[derive(Debug, Subcommand)]
pub enum TenantCommand {
    /// Create a tenant; prints `{"id": "ten_…", "slug", "name", "enabled", "scopes", "created_at"}`.
    Create {
        #[arg(long)]
        name: String,
        /// Unique short name used at login; derived from the name when omitted.
        #[arg(long)]
        slug: Option<String>,
    },
    /// List tenants; prints `{"data": [...], "next_after"}`.
    List {
        #[arg(long, default_value_t = 100)]
        limit: i64,
        #[arg(long)]
        after: Option<String>,
    },
    /// Rename, disable or enable a tenant, or change its scopes or IP allowlist; prints it.
    Update {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        name: Option<String>,
        /// `false` disables the tenant: its keys, users and tokens stop at once.
        #[arg(long)]
        enabled: Option<bool>,
        /// Comma-separated scopes.
        #[arg(long, value_delimiter = ',')]
        scopes: Option<Vec<String>>,
        /// Comma-separated CIDRs; an empty value clears the allowlist.
        #[arg(long, value_delimiter = ',')]
        ip_allowlist: Option<Vec<String>>,
        /// Items per UTC day, all kinds together (a number, or `unlimited`).
        #[arg(long, value_parser = parse_limit)]
        daily_items: Option<Limit>,
        /// Characters per UTC day, all kinds together (a number, or `unlimited`).
        #[arg(long, value_parser = parse_limit)]
        daily_characters: Option<Limit>,
        /// Requests per minute for the whole tenant (a number, or `unlimited`).
        #[arg(long, value_parser = parse_limit)]
        requests_per_minute: Option<Limit>,
        /// Items per minute for the whole tenant (a number, or `unlimited`).
        #[arg(long, value_parser = parse_limit)]
        items_per_minute: Option<Limit>,
        /// Share of the workers against other tenants (1–100).
        #[arg(long, value_parser = clap::value_parser!(i32).range(1..=100))]
        weight: Option<i32>,
        /// Days job texts and results are kept (1–3650).
        #[arg(long, value_parser = clap::value_parser!(i32).range(1..=3650))]
        retention_days: Option<i32>,
    },
}

/// A limit on the command line: a number, or `unlimited`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit(pub Option<i64>);

fn parse_limit(raw: &str) -> Result<Limit, String> {
    if raw.eq_ignore_ascii_case("unlimited") || raw.eq_ignore_ascii_case("null") {
        return Ok(Limit(None));
    }
    match raw.parse::<i64>() {
        Ok(n) if n >= 0 => Ok(Limit(Some(n))),
        _ => Err(format!(
            "`{raw}`: expected a non-negative number or `unlimited`"
        )),
    }
}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Create an API key; prints `{"id": "key_…", "key": "<secret>", …}`. The secret is
    /// shown only this once.
    Create {
        #[arg(long)]
        tenant: String,
        #[arg(long, default_value = "")]
        name: String,
        /// Comma-separated scopes; default: every scope the tenant grants.
        #[arg(long, value_delimiter = ',')]
        scopes: Vec<String>,
    },
}
