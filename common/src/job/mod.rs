//! The job contract both services share: per-kind options ([`options`]), the results items
//! come out as ([`result`]), item and chunk states, and the lifecycle SQL ([`store`]:
//! submit, claim, complete). The api's submission paths and the worker's consumer call these;
//! nothing else writes jobs, items, chunks or results.

pub mod options;
pub mod quota;
pub mod result;
pub mod store;
pub mod view;

pub use crate::types::{JobKind, JobStatus};

use serde::{Deserialize, Serialize};

/// Where one item stands. `pending` is the absence of a `job_results` row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ItemStatus {
    Pending,
    Succeeded,
    Failed,
}

impl ItemStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ItemStatus::Pending => "pending",
            ItemStatus::Succeeded => "succeeded",
            ItemStatus::Failed => "failed",
        }
    }
}

impl std::str::FromStr for ItemStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [
            ItemStatus::Pending,
            ItemStatus::Succeeded,
            ItemStatus::Failed,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
        .ok_or_else(|| format!("unknown item status `{s}`"))
    }
}

/// Where one chunk (queue message) stands: it flips from `pending` exactly once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChunkStatus {
    Pending,
    Done,
    Dead,
}

/// Which lane a job travels in: `sync` (the synchronous endpoints: published at once to the
/// priority queues, never behind bulk work) or `bulk` (released to the workers fairly across
/// tenants by the dispatcher).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Lane {
    Sync,
    #[default]
    Bulk,
}

impl Lane {
    pub const ALL: [Lane; 2] = [Lane::Sync, Lane::Bulk];

    pub fn as_str(self) -> &'static str {
        match self {
            Lane::Sync => "sync",
            Lane::Bulk => "bulk",
        }
    }
}
