//! The outbox relay: publishes committed-but-unpublished outbox rows with publisher confirms,
//! then stamps them. Woken right after each submission, and on a poll interval for anything
//! a crash left behind. Rows are locked with `SKIP LOCKED`, so any number of api replicas
//! can relay side by side. A row published but not stamped (crash in between) is published
//! again: the worker's chunk guard makes that harmless.

use std::{sync::Arc, time::Duration};

use futures_util::future::join_all;
use gatehouse_common::queue::{Broker, QueueError};
use gatehouse_common::trace::TraceParent;
use sqlx::PgPool;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::state::AppState;

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("database error")]
    Database(#[from] sqlx::Error),
    #[error("broker error")]
    Queue(#[from] QueueError),
}

pub struct Relay {
    pool: PgPool,
    broker: Arc<Broker>,
    notify: Arc<Notify>,
    poll: Duration,
    batch: i64,
    throttle: Arc<crate::identity::throttle::LoginThrottle>,
}

impl Relay {
    pub fn new(state: &AppState) -> Self {
        Self {
            pool: state.pool.clone(),
            broker: state.broker.clone(),
            notify: state.outbox_notify.clone(),
            poll: state.config.outbox_poll,
            batch: state.config.outbox_batch,
            throttle: state.throttle.clone(),
        }
    }

    pub async fn run(self, shutdown: CancellationToken) {
        let mut last_cleanup = tokio::time::Instant::now();
        loop {
            match self.drain_once().await {
                Ok(n) if n as i64 >= self.batch => continue,
                Ok(_) => {}
                Err(error) => {
                    tracing::warn!(?error, "outbox relay failed; will retry");
                    metrics::counter!("gatehouse_outbox_errors_total").increment(1);
                    self.broker.reset().await;
                }
            }
            self.record_backlog().await;
            if last_cleanup.elapsed() > Duration::from_secs(3600) {
                last_cleanup = tokio::time::Instant::now();
                let _ = sqlx::query!(
                    "DELETE FROM outbox WHERE published_at < now() - interval '7 days'"
                )
                .execute(&self.pool)
                .await;
                // Login counters whose window and lock are over would restart at zero anyway.
                let _ = self.throttle.purge_stale().await;
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = self.notify.notified() => {}
                () = tokio::time::sleep(self.poll) => {}
            }
        }
    }

    /// `gatehouse_outbox_pending_messages` and `gatehouse_outbox_oldest_pending_seconds`: a
    /// growing backlog means the broker is unreachable or the relay is stuck.
    async fn record_backlog(&self) {
        let backlog = sqlx::query!(
            r#"
            SELECT count(*) AS "pending!",
                   coalesce(extract(epoch FROM now() - min(created_at))::float8, 0) AS "oldest!"
            FROM outbox WHERE published_at IS NULL
            "#
        )
        .fetch_one(&self.pool)
        .await;
        if let Ok(row) = backlog {
            let (pending, oldest) = (row.pending, row.oldest);
            metrics::gauge!("gatehouse_outbox_pending_messages").set(pending as f64);
            metrics::gauge!("gatehouse_outbox_oldest_pending_seconds").set(oldest);
        }
    }

    /// Publishes one batch of pending rows; returns how many were published.
    pub async fn drain_once(&self) -> Result<usize, RelayError> {
        let mut tx =
            gatehouse_common::db::begin(&self.pool, gatehouse_common::db::Scope::Platform).await?;
        // Each message carries its job's trace context (`jobs.traceparent`) in its headers.
        let rows: Vec<(i64, String, serde_json::Value, Option<String>)> = sqlx::query!(
            r"
            SELECT o.outbox_id, o.routing_key, o.payload,
                   (SELECT j.traceparent FROM jobs j
                    WHERE j.job_id = substr(o.payload->>'job_id', 5)::uuid) AS traceparent
            FROM outbox o
            WHERE o.published_at IS NULL
            ORDER BY o.outbox_id
            LIMIT $1
            FOR UPDATE SKIP LOCKED
            ",
            self.batch,
        )
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .map(|r| (r.outbox_id, r.routing_key, r.payload, r.traceparent))
        .collect();
        if rows.is_empty() {
            tx.commit().await?;
            return Ok(0);
        }
        let publisher = self.broker.publisher().await?;
        let exchange = self.broker.topology().jobs_exchange();
        let sends = rows.iter().map(|(_, routing_key, payload, traceparent)| {
            let publisher = publisher.clone();
            let exchange = exchange.clone();
            // The message carries the relay span's context (a child of the job's).
            let span = tracing::info_span!("relay", trace_id = tracing::field::Empty);
            let context = traceparent
                .as_deref()
                .and_then(TraceParent::parse)
                .map(|job| gatehouse_common::trace::join(&span, Some(job)));
            if let Some(t) = &context {
                span.record("trace_id", t.trace_id_hex());
            }
            async move {
                let body = serde_json::to_vec(payload).map_err(QueueError::Encode)?;
                let headers = context.map(|t| t.to_headers()).unwrap_or_default();
                publisher
                    .publish(&exchange, routing_key, &body, headers)
                    .await
            }
            .instrument(span)
        });
        let outcomes = join_all(sends).await;
        let mut published = Vec::new();
        let mut failure = None;
        for ((id, _, _, _), outcome) in rows.iter().zip(outcomes) {
            match outcome {
                Ok(()) => published.push(*id),
                Err(error) => failure = Some(error),
            }
        }
        sqlx::query!(
            "UPDATE outbox SET published_at = now(), attempts = attempts + 1 WHERE outbox_id = ANY($1)",
            &published,
        )
        .execute(&mut *tx)
        .await?;
        if let Some(error) = &failure {
            let ids: Vec<i64> = rows.iter().map(|r| r.0).collect();
            sqlx::query!(
                "UPDATE outbox SET attempts = attempts + 1, last_error = $2 WHERE published_at IS NULL AND outbox_id = ANY($1)",
                &ids,
                error.to_string(),
            )
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        metrics::counter!("gatehouse_outbox_published_total").increment(published.len() as u64);
        match failure {
            Some(error) => Err(error.into()),
            None => Ok(published.len()),
        }
    }
}
