//! Every route, one module per resource, merged here. Each handler names its rule from
//! `crate::policy`.

pub mod audit;
pub mod auth;
pub mod batches;
pub mod console;
pub mod docs;
pub mod files;
pub mod health;
pub mod job_actions;
pub mod job_results;
pub mod jobs;
pub mod keys;
pub mod moderation_policy;
pub mod moderations;
pub mod sync;
pub mod tenants;
pub mod translations;
pub mod usage;
pub mod users;
pub mod webhook_endpoints;
pub mod webhook_messages;

use axum::Router;
use serde::{Deserialize, Serialize};

use crate::{error::ApiError, state::AppState};

pub fn router(max_file_bytes: u64) -> Router<AppState> {
    Router::new()
        .merge(files::router(max_file_bytes))
        .merge(batches::router())
        .merge(job_actions::router())
        .merge(job_results::router())
        .merge(health::router())
        .merge(auth::router())
        .merge(jobs::router())
        .merge(keys::router())
        .merge(users::router())
        .merge(tenants::router())
        .merge(audit::router())
        .merge(translations::router())
        .merge(moderations::router())
        .merge(moderation_policy::router())
        .merge(usage::router())
        .merge(webhook_endpoints::router())
        .merge(webhook_messages::router())
        .merge(console::router())
        .merge(docs::router())
}

/// `?limit=&after=`: keyset pagination over time-ordered ids.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Page size, 1–200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<i64>,
    /// The last id of the previous page (its `next_after`).
    pub after: Option<String>,
}

pub const DEFAULT_PAGE: i64 = 50;
pub const MAX_PAGE: i64 = 200;

impl PageQuery {
    pub fn limit(&self) -> Result<i64, ApiError> {
        match self.limit {
            None => Ok(DEFAULT_PAGE),
            Some(n) if (1..=MAX_PAGE).contains(&n) => Ok(n),
            Some(_) => Err(ApiError::invalid(
                "invalid_limit",
                "limit",
                format!("limit must be between 1 and {MAX_PAGE}"),
            )),
        }
    }

    /// The cursor, parsed as the listed resource's id.
    pub fn after<T: std::str::FromStr>(&self) -> Result<Option<T>, ApiError> {
        self.after
            .as_deref()
            .map(|raw| {
                raw.parse()
                    .map_err(|_| ApiError::invalid("invalid_cursor", "after", "unknown cursor"))
            })
            .transpose()
    }
}

/// `{"data": [...], "next_after": "<id>" | null}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Page<T> {
    pub data: Vec<T>,
    pub next_after: Option<String>,
}

impl<T> Page<T> {
    pub fn new(data: Vec<T>, limit: i64, id: impl Fn(&T) -> String) -> Self {
        let next_after = if data.len() as i64 == limit {
            data.last().map(&id)
        } else {
            None
        };
        Self { data, next_after }
    }
}

/// Most entries a `scopes` list may hold (there are far fewer scopes; this only bounds the
/// work a hostile list can cause before it is refused).
pub const MAX_SCOPES: usize = 32;

/// A list field as a set: at most `max` entries (422 `too_many_entries` otherwise), each
/// entry trimmed, duplicates dropped, first-seen order kept.
pub fn bounded_set(field: &str, list: Vec<String>, max: usize) -> Result<Vec<String>, ApiError> {
    if list.len() > max {
        return Err(ApiError::invalid(
            "too_many_entries",
            field,
            format!("{field} has {} entries; at most {max}", list.len()),
        ));
    }
    let mut out: Vec<String> = Vec::with_capacity(list.len());
    for entry in list {
        let entry = entry.trim().to_string();
        if !out.contains(&entry) {
            out.push(entry);
        }
    }
    Ok(out)
}

/// Scopes must be known and, for keys, granted to the tenant.
pub fn check_scopes(field: &str, scopes: &[String], allowed: &[String]) -> Result<(), ApiError> {
    for (i, scope) in scopes.iter().enumerate() {
        if !gatehouse_common::types::SCOPES.contains(&scope.as_str()) || !allowed.contains(scope) {
            return Err(ApiError::invalid(
                "invalid_scope",
                format!("{field}[{i}]"),
                format!(
                    "scope `{scope}` is unknown or not granted (allowed: {})",
                    allowed.join(", ")
                ),
            ));
        }
    }
    Ok(())
}
