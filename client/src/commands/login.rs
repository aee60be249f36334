//! `gatehouse login` (a password login's token, or an API key, checked with `GET /v1/me` and
//! saved to the config file), `logout`, `whoami`.

use std::io::{BufRead, IsTerminal};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::Ctx;
use crate::{
    api::Api,
    cli::Login,
    config::{self, Saved, Target},
    error::{CliError, Result},
    output,
};

/// `POST /v1/auth/login`'s answer (OAuth2 token response).
#[derive(Deserialize)]
struct IssuedToken {
    access_token: String,
    expires_in: i64,
}

/// The parts of `GET /v1/me` a person is shown.
#[derive(Deserialize)]
struct Me {
    subject: String,
    role: String,
    #[serde(default)]
    tenant: Option<MeTenant>,
    #[serde(default)]
    scopes: Vec<String>,
}

#[derive(Deserialize)]
struct MeTenant {
    slug: String,
}

#[derive(Serialize)]
struct LoggedIn<'a> {
    url: &'a str,
    config: String,
    expires_at: Option<DateTime<Utc>>,
    me: Value,
}

/// A secret from standard input (its first line) when asked to or when it is not a terminal,
/// else prompted without echo.
fn read_secret(prompt: &str, from_stdin: bool) -> Result<String> {
    let secret = if from_stdin || !std::io::stdin().is_terminal() {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .map_err(|e| CliError::io("reading standard input", e))?;
        line.trim_end_matches(['\r', '\n']).to_string()
    } else {
        rpassword::prompt_password(prompt).map_err(|e| CliError::io("reading the prompt", e))?
    };
    if secret.is_empty() {
        return Err(CliError::Usage(format!(
            "no {} given",
            prompt.trim_end_matches(": ")
        )));
    }
    Ok(secret)
}

async fn me(url: &str, bearer: &str) -> Result<Value> {
    Api::new(Target {
        url: url.to_string(),
        bearer: Some(bearer.to_string()),
    })?
    .get_json("/v1/me")
    .await
}

pub async fn login(ctx: &Ctx, args: Login) -> Result<()> {
    let url = ctx.api.base().to_string();
    let mut saved = Saved {
        url: Some(url.clone()),
        ..Saved::default()
    };
    let me = if args.with_api_key {
        let key = match &ctx.api_key {
            Some(key) => key.clone(),
            None => read_secret("API key: ", false)?,
        };
        let me = me(&url, &key).await?;
        saved.api_key = Some(key);
        me
    } else {
        let username = args
            .username
            .ok_or_else(|| CliError::Usage("--username is required".to_string()))?;
        let password = read_secret("Password: ", args.password_stdin)?;
        let mut body = serde_json::json!({"username": username, "password": password});
        if let Some(tenant) = &args.tenant {
            body["tenant"] = Value::String(tenant.clone());
        }
        let (_, issued): (_, IssuedToken) =
            ctx.api.post_json("/v1/auth/login", &body, None).await?;
        let me = me(&url, &issued.access_token).await?;
        saved.token = Some(issued.access_token);
        saved.token_expires_at = Some(Utc::now() + chrono::Duration::seconds(issued.expires_in));
        saved.tenant = args.tenant;
        saved.username = Some(username);
        me
    };
    config::save(&ctx.config_path, &saved)?;
    if ctx.json {
        output::json(&LoggedIn {
            url: &url,
            config: ctx.config_path.display().to_string(),
            expires_at: saved.token_expires_at,
            me,
        });
        return Ok(());
    }
    let who: Me = serde_json::from_value(me).map_err(|e| CliError::Protocol {
        url: url.clone(),
        detail: format!("GET /v1/me: {e}"),
    })?;
    let tenant = who
        .tenant
        .map(|t| format!(", tenant {}", t.slug))
        .unwrap_or_default();
    let name = match &saved.username {
        Some(user) => format!("{user} ({}, ", who.subject),
        None => format!("{} (", who.subject),
    };
    println!("Logged in to {url} as {name}{}{tenant}).", who.role);
    if let Some(at) = saved.token_expires_at {
        println!(
            "The token expires at {}; log in again then.",
            at.format("%Y-%m-%d %H:%M:%S UTC")
        );
    }
    println!("Saved to {}.", ctx.config_path.display());
    Ok(())
}

pub fn logout(ctx: &Ctx) -> Result<()> {
    let saved = Saved {
        url: ctx.saved.url.clone(),
        ..Saved::default()
    };
    config::save(&ctx.config_path, &saved)?;
    if ctx.json {
        output::json(&serde_json::json!({"logged_out": true, "config": ctx.config_path}));
    } else {
        println!(
            "Forgot the saved credentials ({}).",
            ctx.config_path.display()
        );
    }
    Ok(())
}

pub async fn whoami(ctx: &Ctx) -> Result<()> {
    let value: Value = ctx.authed()?.get_json("/v1/me").await?;
    if ctx.json {
        output::json(&value);
        return Ok(());
    }
    let who: Me = serde_json::from_value(value).map_err(|e| CliError::Protocol {
        url: ctx.api.base().to_string(),
        detail: format!("GET /v1/me: {e}"),
    })?;
    let tenant = who
        .tenant
        .map(|t| format!("  tenant {}", t.slug))
        .unwrap_or_default();
    println!(
        "{}  role {}{tenant}  scopes {}",
        who.subject,
        who.role,
        if who.scopes.is_empty() {
            "-".to_string()
        } else {
            who.scopes.join(",")
        }
    );
    println!("  api {}", ctx.api.base());
    Ok(())
}
