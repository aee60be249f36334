//! Tenant moderation policies as the worker applies them: loaded once per (tenant, version)
//! — versions never change — with the blocklist compiled into one automaton, and kept in a
//! small in-memory cache shared by every chunk.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use gatehouse_common::{moderation::Policy, types::TenantId};
use sqlx::PgPool;

use crate::detect::Blocklist;

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
    /// The versions of `tenant`'s policy already compiled here: the claim need not send them.
    pub fn cached_versions(&self, tenant: TenantId) -> Vec<i32> {
        self.entries
            .lock()
            .map(|entries| {
                entries
                    .keys()
                    .filter(|(t, _)| *t == tenant)
                    .map(|(_, v)| *v)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// `tenant`'s policy `version`, compiled. `stored` is what the claim returned (`None` when
    /// the version is 0 or was cached); if the cache lost it meanwhile, it is read again.
    pub async fn compiled(
        &self,
        pool: &PgPool,
        tenant: TenantId,
        version: i32,
        stored: Option<serde_json::Value>,
    ) -> Result<Arc<CompiledPolicy>, PolicyLoadError> {
        let key = (tenant, version);
        if let Some(hit) = self.get(&key) {
            return Ok(hit);
        }
        let stored = match stored {
            Some(raw) => Some(raw),
            None if version == 0 => None,
            None => load(pool, tenant, version).await?,
        };
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

/// One stored policy version (the claim sends it unless it was cached).
async fn load(
    pool: &PgPool,
    tenant: TenantId,
    version: i32,
) -> Result<Option<serde_json::Value>, sqlx::Error> {
    let mut tx =
        gatehouse_common::db::begin(pool, gatehouse_common::db::Scope::Tenant(tenant)).await?;
    let policy = sqlx::query_scalar!(
        "SELECT policy FROM moderation_policies WHERE tenant_id = $1 AND version = $2",
        tenant.0,
        version,
    )
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(policy)
}
