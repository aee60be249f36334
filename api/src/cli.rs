//! `gatehouse-api` commands: `serve`, `migrate`, and the bootstrap admin commands that print
//! one JSON object on stdout so scripts can use them.

use clap::{Parser, Subcommand};

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
    },
}
