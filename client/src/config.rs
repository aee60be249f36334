//! Where the client finds the API and its credentials: the `--url` / `--api-key` flags (or
//! `GATEHOUSE_URL` / `GATEHOUSE_API_KEY`, which clap reads for those flags in `cli.rs`), then
//! the config file `gatehouse login` writes: `--config`, else
//! `$XDG_CONFIG_HOME/gatehouse/config.toml`, else `~/.config/gatehouse/config.toml`, mode 0600.

use std::{
    io::Write,
    path::{Path, PathBuf},
};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{CliError, Result};

pub const DEFAULT_URL: &str = "http://127.0.0.1:8080";

/// The config file's contents.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Saved {
    /// The API's base URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// An API key (`gatehouse login --api-key`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
    /// A token from a password login, and when it expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_expires_at: Option<DateTime<Utc>>,
    /// Who logged in (shown by `gatehouse whoami` errors and `login`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
}

/// The config file: `explicit`, else under `$XDG_CONFIG_HOME`, else under `$HOME/.config`.
pub fn path(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(path) = explicit {
        return Ok(path.to_path_buf());
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .map(|home| PathBuf::from(home).join(".config"))
        })
        .ok_or_else(|| {
            CliError::Usage(
                "neither XDG_CONFIG_HOME nor HOME is set: pass --config PATH".to_string(),
            )
        })?;
    Ok(base.join("gatehouse").join("config.toml"))
}

/// The saved settings; none when the file does not exist.
pub fn load(path: &Path) -> Result<Saved> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Saved::default()),
        Err(e) => return Err(CliError::io(format!("reading {}", path.display()), e)),
    };
    toml::from_str(&text).map_err(|e| {
        CliError::Usage(format!(
            "{} is not a valid config file: {e}",
            path.display()
        ))
    })
}

/// Writes `saved` to `path` (its directory made if needed), readable by the owner only: a
/// temporary file with mode 0600 renamed over the old one, so no reader sees half a file.
pub fn save(path: &Path, saved: &Saved) -> Result<()> {
    let text = toml::to_string(saved)
        .map_err(|e| CliError::Usage(format!("cannot encode the config file: {e}")))?;
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    create_private_dir(dir)?;
    let tmp = dir.join(format!(".config.toml.{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&tmp)?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        CliError::io(format!("writing {}", path.display()), e)
    })
}

fn create_private_dir(dir: &Path) -> Result<()> {
    if dir.as_os_str().is_empty() || dir.exists() {
        return Ok(());
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
        .create(dir)
        .map_err(|e| CliError::io(format!("creating {}", dir.display()), e))
}

/// What a command talks to and as whom.
#[derive(Debug, Clone)]
pub struct Target {
    pub url: String,
    pub bearer: Option<String>,
}

/// Resolves the URL and the bearer: flag/env first, then the config file. A saved token past
/// its expiry is refused here with the way out, rather than sent for a 401.
pub fn resolve(
    url: Option<&str>,
    api_key: Option<&str>,
    saved: &Saved,
    now: DateTime<Utc>,
) -> Result<Target> {
    let url = url
        .filter(|u| !u.is_empty())
        .or(saved.url.as_deref())
        .unwrap_or(DEFAULT_URL)
        .trim_end_matches('/')
        .to_string();
    let bearer = match (
        api_key.filter(|k| !k.is_empty()),
        &saved.api_key,
        &saved.token,
    ) {
        (Some(key), _, _) => Some(key.to_string()),
        (None, Some(key), _) => Some(key.clone()),
        (None, None, Some(token)) => {
            if let Some(expiry) = saved.token_expires_at.filter(|at| *at <= now) {
                return Err(CliError::Usage(format!(
                    "the saved login token expired at {expiry}: run `gatehouse login` again \
                     (or set GATEHOUSE_API_KEY)"
                )));
            }
            Some(token.clone())
        }
        (None, None, None) => None,
    };
    Ok(Target { url, bearer })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_over_the_file_and_an_expired_token_is_refused() {
        let now = Utc::now();
        let saved = Saved {
            url: Some("http://saved:1/".into()),
            token: Some("tok".into()),
            token_expires_at: Some(now - chrono::Duration::seconds(1)),
            ..Saved::default()
        };
        let flagged = resolve(Some("http://flag:2"), Some("ghk_x"), &saved, now).expect("ok");
        assert_eq!(flagged.url, "http://flag:2");
        assert_eq!(flagged.bearer.as_deref(), Some("ghk_x"));
        let err = resolve(None, None, &saved, now).expect_err("expired");
        assert!(err.to_string().contains("gatehouse login"), "{err}");
        let fresh = Saved {
            token_expires_at: Some(now + chrono::Duration::seconds(60)),
            ..saved
        };
        let target = resolve(None, None, &fresh, now).expect("fresh");
        assert_eq!(target.url, "http://saved:1");
        assert_eq!(target.bearer.as_deref(), Some("tok"));
        let nothing = resolve(None, None, &Saved::default(), now).expect("defaults");
        assert_eq!(nothing.url, DEFAULT_URL);
        assert!(nothing.bearer.is_none());
    }
}
