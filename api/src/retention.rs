//! The retention purge loop (every replica runs it; the advisory lock in
//! `gatehouse_common::job::store::purge_expired` lets one work at a time): every
//! `GATEHOUSE_PURGE_INTERVAL_SECS`, rounds of expired jobs and files until none is left.

use std::time::Duration;

use gatehouse_common::{clock::Clock, job::store};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::state::AppState;

/// Jobs (and files) per round: one transaction each.
const ROUND: i64 = 20;

pub struct Purger {
    pool: PgPool,
    clock: Clock,
    interval: Duration,
    default_days: i32,
    audit: std::sync::Arc<crate::audit::Audit>,
    audit_days: i32,
}

impl Purger {
    pub fn new(state: &AppState) -> Self {
        Self {
            pool: state.pool.clone(),
            clock: state.clock.clone(),
            interval: state.config.capacity.purge_interval,
            default_days: state.config.capacity.default_retention_days,
            audit: state.audit.clone(),
            audit_days: state.config.audit.retention_days,
        }
    }

    /// Purges everything expired now; returns the totals.
    pub async fn purge_now(&self) -> Result<store::Purged, sqlx::Error> {
        let mut total = store::Purged::default();
        loop {
            let round = store::purge_expired(
                &self.pool,
                self.clock.now(),
                self.default_days,
                ROUND,
                "system:retention",
            )
            .await?;
            total.jobs += round.jobs;
            total.items += round.items;
            total.files += round.files;
            total.skipped |= round.skipped;
            if round.skipped || (round.jobs < ROUND as u64 && round.files < ROUND as u64) {
                break;
            }
        }
        if total.jobs + total.files > 0 {
            metrics::counter!("gatehouse_api_retention_purged_jobs_total").increment(total.jobs);
            metrics::counter!("gatehouse_api_retention_purged_files_total").increment(total.files);
            tracing::info!(
                jobs = total.jobs,
                items = total.items,
                files = total.files,
                "retention purge"
            );
        }
        Ok(total)
    }

    /// Purges the audit records past every tenant's audit retention (each purge anchored by
    /// a signed checkpoint, see `crate::audit::retention`).
    pub async fn purge_audit_now(
        &self,
    ) -> Result<Vec<crate::audit::retention::AuditPurged>, crate::audit::signing::SignError> {
        crate::audit::retention::purge_expired(
            &self.pool,
            &self.audit.signer,
            self.clock.now(),
            self.audit_days,
        )
        .await
    }

    pub async fn run(self, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(self.interval) => {}
            }
            if let Err(error) = self.purge_now().await {
                tracing::warn!(
                    error = %gatehouse_common::db::error_class(&error),
                    "retention purge failed; will retry"
                );
            }
            if let Err(error) = self.purge_audit_now().await {
                tracing::warn!(%error, "audit retention purge failed; will retry");
            }
        }
    }
}
