//! The audit trail's periodic work, run by every replica (advisory locks and conditional
//! updates let one do each piece): every `GATEHOUSE_AUDIT_CHECKPOINT_INTERVAL_SECS`, sign
//! the chains' heads and send the key rotation reminders. (The audit purge runs in the
//! retention loop, `crate::retention`.)

use std::{sync::Arc, time::Duration};

use gatehouse_common::clock::Clock;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use super::{Audit, checkpoints};
use crate::state::AppState;

pub struct AuditRounds {
    pool: PgPool,
    audit: Arc<Audit>,
    clock: Clock,
    interval: Duration,
    reminder_days: i64,
}

impl AuditRounds {
    pub fn new(state: &AppState) -> Self {
        Self {
            pool: state.pool.clone(),
            audit: state.audit.clone(),
            clock: state.clock.clone(),
            interval: state.config.audit.checkpoint_interval,
            reminder_days: state.config.audit.key_rotation_reminder_days,
        }
    }

    /// One round now.
    pub async fn round(&self) {
        let now = self.clock.now();
        if let Err(error) = checkpoints::checkpoint_heads(&self.pool, &self.audit.signer, now).await
        {
            tracing::warn!(%error, "audit checkpoint round failed; will retry");
        }
        if let Err(error) =
            crate::store::key_rotation::remind(&self.pool, now, self.reminder_days).await
        {
            tracing::warn!(
                error = %gatehouse_common::db::error_class(&error),
                "key rotation reminders failed; will retry"
            );
        }
    }

    pub async fn run(self, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(self.interval) => {}
            }
            self.round().await;
        }
    }
}
