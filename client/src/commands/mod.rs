//! One module per command family; [`run`] dispatches.

mod jobs;
mod login;
mod results;
mod texts;

use std::path::PathBuf;

use crate::{
    api::Api,
    cli::{Cli, Command},
    config::{self, Saved},
    error::{CliError, Result},
};

/// What every command gets: the API (with its bearer), the output mode, the config file.
pub struct Ctx {
    pub api: Api,
    pub json: bool,
    pub config_path: PathBuf,
    pub saved: Saved,
    /// `--api-key` / `GATEHOUSE_API_KEY`, as given.
    pub api_key: Option<String>,
}

impl Ctx {
    /// The API, refusing to go on without credentials.
    pub fn authed(&self) -> Result<&Api> {
        if self.api.has_bearer() {
            Ok(&self.api)
        } else {
            Err(CliError::Usage(
                "not logged in: run `gatehouse login`, or set GATEHOUSE_API_KEY".to_string(),
            ))
        }
    }
}

pub async fn run(cli: Cli) -> Result<()> {
    let g = cli.global;
    let config_path = config::path(g.config.as_deref())?;
    let saved = config::load(&config_path)?;
    let target = config::resolve(
        g.url.as_deref(),
        g.api_key.as_deref(),
        &saved,
        chrono::Utc::now(),
    );
    // `login` and `logout` must work with an expired saved token.
    let target = match (&cli.command, target) {
        (Command::Login(_) | Command::Logout, Err(_)) => config::Target {
            url: g
                .url
                .clone()
                .or_else(|| saved.url.clone())
                .unwrap_or_else(|| config::DEFAULT_URL.to_string()),
            bearer: None,
        },
        (_, target) => target?,
    };
    let ctx = Ctx {
        api: Api::new(target)?,
        json: g.json,
        config_path,
        saved,
        api_key: g.api_key,
    };
    match cli.command {
        Command::Login(args) => login::login(&ctx, args).await,
        Command::Logout => login::logout(&ctx),
        Command::Whoami => login::whoami(&ctx).await,
        Command::Moderate(args) => texts::moderate(&ctx, args).await,
        Command::Translate(args) => texts::translate(&ctx, args).await,
        Command::Jobs(command) => jobs::run(&ctx, command).await,
    }
}
