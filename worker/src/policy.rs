//! Tenant moderation policies as the worker applies them: loaded once per (tenant, version)
//! — versions never change — with the blocklist compiled into one automaton, and kept in a
//! small in-memory cache shared by every chunk.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use gatehouse_common::{moderation::Policy, queue::ChunkMessage, types::TenantId};
use sqlx::PgPool;

use crate::{detect::Blocklist, store};

/// A policy ready to apply.
pub struct CompiledPolicy {
    pub policy: Policy,
    pub blocklist: Blocklist,
}

#[derive(Debug, thiserror::Error)]
pub enum PolicyLoadError {
    #[error("database error")]
    Database(#[from] sqlx::Error),
    #[error("stored policy version {version} is unreadable: {message}")]
    Invalid { version: i32, message: String },
}

/// Most (tenant, version) entries kept; the cache is simply emptied when full (entries are
/// cheap to rebuild and versions of a busy tenant are few).
const CAPACITY: usize = 1024;

type Entries = HashMap<(TenantId, i32), Arc<CompiledPolicy>>;

#[derive(Default, Clone)]
pub struct PolicyCache {
    entries: Arc<Mutex<Entries>>,
}

impl PolicyCache {
    /// The policy `chunk`'s job was accepted under.
    pub async fn for_chunk(
        &self,
        pool: &PgPool,
        chunk: &ChunkMessage,
    ) -> Result<Arc<CompiledPolicy>, PolicyLoadError> {
        let (version, stored) = store::job_policy(pool, chunk).await?;
        let key = (chunk.tenant_id, version);
        if let Some(hit) = self.get(&key) {
            return Ok(hit);
        }
        let policy = match stored {
            None if version == 0 => Policy::default(),
            None => {
                return Err(PolicyLoadError::Invalid {
                    version,
                    message: "the version is missing".into(),
                });
            }
            Some(raw) => {
                serde_json::from_value::<Policy>(raw).map_err(|e| PolicyLoadError::Invalid {
                    version,
                    message: e.to_string(),
                })?
            }
        };
        let compiled = tokio::task::spawn_blocking(move || {
            Blocklist::new(&policy.blocklist).map(|blocklist| CompiledPolicy { policy, blocklist })
        })
        .await
        .map_err(|e| PolicyLoadError::Invalid {
            version,
            message: e.to_string(),
        })?
        .map_err(|e| PolicyLoadError::Invalid {
            version,
            message: e.to_string(),
        })?;
        let compiled = Arc::new(compiled);
        if let Ok(mut entries) = self.entries.lock() {
            if entries.len() >= CAPACITY {
                entries.clear();
            }
            entries.insert(key, compiled.clone());
        }
        Ok(compiled)
    }

    fn get(&self, key: &(TenantId, i32)) -> Option<Arc<CompiledPolicy>> {
        self.entries.lock().ok()?.get(key).cloned()
    }
}
