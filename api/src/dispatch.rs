//! The dispatcher: releases bulk chunks to the workers **fairly across tenants**. A bulk job's
//! chunks are stored unreleased; each round, every tenant with waiting chunks may have at most
//! `GATEHOUSE_TENANT_MAX_IN_FLIGHT_CHUNKS × weight` chunks released and unfinished, all
//! tenants together at most `GATEHOUSE_MAX_IN_FLIGHT_CHUNKS`, and the free places go
//! round-robin (weighted): the next chunk of the tenant with the fewest in flight per unit of
//! weight first. A tenant's 20,000-item job therefore never stands between another tenant's
//! 200-item job and the workers — the queue ahead of it holds a few chunks, not a backlog.
//!
//! Durable like the outbox: a chunk is published with publisher confirms and only then
//! stamped `released_at`, in the transaction that selected it; a crash in between publishes it
//! again (the workers' chunk guard makes a duplicate harmless). One replica dispatches at a
//! time (a transaction-level advisory lock), so the bounds hold across replicas. A chunk
//! released but never claimed for `GATEHOUSE_RELEASE_TIMEOUT_SECS` (its message lost, e.g. a
//! queue purged by hand) is released again.

use std::{sync::Arc, time::Duration};

use futures_util::future::join_all;
use gatehouse_common::trace::TraceParent;
use gatehouse_common::{
    db::{self, Scope},
    job::Lane,
    queue::{Broker, ChunkMessage, QueueError, QueueMessage},
    types::{JobId, JobKind, TenantId},
};
use sqlx::PgPool;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::{relay::RelayError, state::AppState};

/// `pg_try_advisory_xact_lock` key of the dispatcher ("gh-disp").
const DISPATCH_LOCK: i64 = 0x0067_682d_6469_7370;

pub struct Dispatcher {
    pool: PgPool,
    broker: Arc<Broker>,
    notify: Arc<Notify>,
    poll: Duration,
    tenant_max_in_flight: i64,
    max_in_flight: i64,
    release_timeout: Duration,
    metrics_tenants: Vec<String>,
    config: Arc<gatehouse_common::config::Config>,
    quota_defaults: gatehouse_common::job::quota::QuotaDefaults,
}

struct Release {
    job_id: JobId,
    tenant_id: TenantId,
    chunk_index: i32,
    item_start: i32,
    item_end: i32,
    kind: String,
    traceparent: Option<String>,
}

impl Dispatcher {
    pub fn new(state: &AppState) -> Self {
        let capacity = &state.config.capacity;
        Self {
            pool: state.pool.clone(),
            broker: state.broker.clone(),
            notify: state.dispatch_notify.clone(),
            poll: capacity.dispatch_poll,
            tenant_max_in_flight: capacity.tenant_max_in_flight_chunks,
            max_in_flight: capacity.max_in_flight_chunks,
            release_timeout: capacity.release_timeout,
            metrics_tenants: capacity.metrics_tenants.clone(),
            config: state.config.clone(),
            quota_defaults: crate::capacity::admission(capacity).quota_defaults,
        }
    }

    pub async fn run(self, shutdown: CancellationToken) {
        let mut last_sweep = tokio::time::Instant::now();
        let mut last_gauge = tokio::time::Instant::now();
        loop {
            match self
                .dispatch_once()
                .instrument(tracing::info_span!("dispatch"))
                .await
            {
                Ok(n) if n > 0 => continue,
                Ok(_) => {}
                Err(error) => {
                    tracing::warn!(error = %error, "dispatcher failed; will retry");
                    metrics::counter!("gatehouse_dispatch_errors_total").increment(1);
                    self.broker.reset().await;
                }
            }
            if last_gauge.elapsed() > Duration::from_secs(2) {
                last_gauge = tokio::time::Instant::now();
                self.record_backlog().await;
                self.record_quotas().await;
            }
            if last_sweep.elapsed() > Duration::from_secs(30) {
                last_sweep = tokio::time::Instant::now();
                self.sweep().await;
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = self.notify.notified() => {}
                () = tokio::time::sleep(self.poll) => {}
            }
        }
    }

    /// Releases what the bounds allow, fairly; returns how many chunks went out.
    pub async fn dispatch_once(&self) -> Result<usize, RelayError> {
        let mut tx = db::begin(&self.pool, Scope::Platform).await?;
        let mine: bool = sqlx::query_scalar!(
            r#"SELECT pg_try_advisory_xact_lock($1) AS "locked!""#,
            DISPATCH_LOCK
        )
        .fetch_one(&mut *tx)
        .await?;
        if !mine {
            tx.commit().await?;
            return Ok(0);
        }
        let picked = sqlx::query_as!(
            Release,
            r#"
            WITH flight AS (
                SELECT tenant_id, count(*)::int8 AS n FROM job_chunks
                WHERE released_at IS NOT NULL AND status = 'pending'
                GROUP BY tenant_id
            ), waiting AS (
                SELECT DISTINCT tenant_id FROM job_chunks
                WHERE released_at IS NULL AND status = 'pending'
            ), places AS (
                SELECT w.tenant_id, t.weight, coalesce(f.n, 0) AS in_flight,
                       greatest($1::int8 * t.weight - coalesce(f.n, 0), 0) AS room
                FROM waiting w
                JOIN tenants t ON t.tenant_id = w.tenant_id
                LEFT JOIN flight f ON f.tenant_id = w.tenant_id
            )
            SELECT c.job_id AS "job_id!: JobId", c.tenant_id AS "tenant_id!: TenantId",
                   c.chunk_index AS "chunk_index!", c.item_start AS "item_start!",
                   c.item_end AS "item_end!", j.kind AS "kind!", j.traceparent
            FROM places p
            CROSS JOIN LATERAL (
                SELECT x.job_id, x.tenant_id, x.chunk_index, x.item_start, x.item_end,
                       row_number() OVER (ORDER BY x.job_id, x.chunk_index) AS rn
                FROM job_chunks x
                WHERE x.tenant_id = p.tenant_id AND x.released_at IS NULL AND x.status = 'pending'
                ORDER BY x.job_id, x.chunk_index
                LIMIT p.room
            ) c
            JOIN jobs j ON j.job_id = c.job_id
            ORDER BY (p.in_flight + c.rn)::float8 / p.weight, c.job_id, c.chunk_index
            LIMIT greatest($2::int8 - (SELECT coalesce(sum(n), 0)::int8 FROM flight), 0)
            "#,
            self.tenant_max_in_flight,
            self.max_in_flight,
        )
        .fetch_all(&mut *tx)
        .await?;
        if picked.is_empty() {
            tx.commit().await?;
            return Ok(0);
        }
        let publisher = self.broker.publisher().await?;
        let exchange = self.broker.topology().jobs_exchange();
        let sends = picked.iter().map(|c| {
            let publisher = publisher.clone();
            let exchange = exchange.clone();
            async move {
                let kind: JobKind = c.kind.parse().map_err(|_| QueueError::Unroutable)?;
                let message = QueueMessage::ChunkV1(ChunkMessage {
                    job_id: c.job_id,
                    tenant_id: c.tenant_id,
                    kind,
                    chunk_index: c.chunk_index,
                    item_start: c.item_start,
                    item_end: c.item_end,
                    lane: Lane::Bulk,
                });
                let body = serde_json::to_vec(&message).map_err(QueueError::Encode)?;
                // The submission's trace travels with every chunk of the job: the message
                // carries the publish span's context (a child of the job's).
                let span = tracing::info_span!("publish", job_id = %c.job_id, chunk = c.chunk_index, trace_id = tracing::field::Empty);
                let context = c
                    .traceparent
                    .as_deref()
                    .and_then(TraceParent::parse)
                    .map(|job| gatehouse_common::trace::join(&span, Some(job)));
                if let Some(t) = &context {
                    span.record("trace_id", t.trace_id_hex());
                }
                let headers = context.map(|t| t.to_headers()).unwrap_or_default();
                publisher
                    .publish(&exchange, &message.routing_key(), &body, headers)
                    .instrument(span)
                    .await
            }
        });
        let outcomes = join_all(sends).await;
        gatehouse_common::fault::point(
            &self.config,
            gatehouse_common::fault::DISPATCH_AFTER_PUBLISH,
        );
        let mut jobs = Vec::new();
        let mut chunks = Vec::new();
        let mut failure = None;
        for (c, outcome) in picked.iter().zip(outcomes) {
            match outcome {
                Ok(()) => {
                    jobs.push(c.job_id.0);
                    chunks.push(c.chunk_index);
                }
                Err(error) => failure = Some(error),
            }
        }
        sqlx::query!(
            r"
            UPDATE job_chunks c SET released_at = now()
            FROM UNNEST($1::uuid[], $2::int4[]) AS u(job_id, chunk_index)
            WHERE c.job_id = u.job_id AND c.chunk_index = u.chunk_index
            ",
            &jobs,
            &chunks,
        )
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        metrics::counter!("gatehouse_dispatch_released_total").increment(chunks.len() as u64);
        match failure {
            Some(error) => Err(error.into()),
            None => Ok(chunks.len()),
        }
    }

    /// Chunks released long ago and never claimed are released again (their message is gone).
    async fn sweep(&self) {
        let swept = async {
            let mut tx = db::begin(&self.pool, Scope::Platform).await?;
            // A claimed chunk whose last attempt is older than any retry delay plus the chunk
            // deadline has no message left either (the broker dead-lettered it past its
            // delivery limit, or it was purged): release it again too.
            let delivery = &self.config.delivery;
            let claimed_after = self.release_timeout
                + delivery.chunk_deadline
                + delivery
                    .retry_delays
                    .iter()
                    .max()
                    .copied()
                    .unwrap_or_default();
            let n = sqlx::query!(
                r"
                UPDATE job_chunks SET released_at = NULL
                WHERE status = 'pending' AND released_at < now() - $1::interval
                  AND (attempts = 0 OR last_attempt_at < now() - $2::interval)
                ",
                sqlx::postgres::types::PgInterval::try_from(self.release_timeout)
                    .unwrap_or_default(),
                sqlx::postgres::types::PgInterval::try_from(claimed_after).unwrap_or_default(),
            )
            .execute(&mut *tx)
            .await?
            .rows_affected();
            tx.commit().await?;
            Ok::<_, sqlx::Error>(n)
        }
        .await;
        match swept {
            Ok(0) => {}
            Ok(n) => {
                tracing::warn!(
                    chunks = n,
                    "released chunks were never claimed; releasing them again"
                );
                metrics::counter!("gatehouse_dispatch_rereleased_total").increment(n);
            }
            Err(error) => {
                tracing::warn!(error = %gatehouse_common::db::error_class(&error), "release sweep failed")
            }
        }
    }

    /// `gatehouse_backlog_items{lane}`: items accepted and not yet processed, per lane.
    async fn record_backlog(&self) {
        let rows = async {
            let mut tx = db::begin(&self.pool, Scope::Platform).await?;
            let rows = sqlx::query!(
                r#"
                SELECT lane AS "lane!", coalesce(sum(total - succeeded - failed), 0)::int8 AS "items!"
                FROM jobs WHERE status IN ('queued', 'running') GROUP BY lane
                "#
            )
            .fetch_all(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok::<_, sqlx::Error>(rows)
        }
        .await;
        if let Ok(rows) = rows {
            for lane in Lane::ALL {
                let items = rows
                    .iter()
                    .find(|r| r.lane == lane.as_str())
                    .map_or(0, |r| r.items);
                metrics::gauge!("gatehouse_backlog_items", "lane" => lane.as_str())
                    .set(items as f64);
            }
        }
    }
}

impl Dispatcher {
    /// `gatehouse_quota_used{tenant,quota}` and `gatehouse_quota_limit{tenant,quota}` for the
    /// tenants an operator listed in `GATEHOUSE_METRICS_TENANTS` (bounded labels).
    async fn record_quotas(&self) {
        if self.metrics_tenants.is_empty() {
            return;
        }
        let now = chrono::Utc::now();
        for slug in &self.metrics_tenants {
            let tenant = async {
                let mut tx = db::begin(&self.pool, Scope::Platform).await?;
                let id = sqlx::query_scalar!(
                    r#"SELECT tenant_id AS "id: TenantId" FROM tenants WHERE slug = $1"#,
                    slug
                )
                .fetch_optional(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok::<_, sqlx::Error>(id)
            }
            .await;
            let Ok(Some(tenant)) = tenant else { continue };
            let quote = gatehouse_common::job::store::quote(
                &self.pool,
                tenant,
                JobKind::Moderate,
                gatehouse_common::job::quota::Cost {
                    items: 0,
                    characters: 0,
                },
                now,
                self.quota_defaults,
            )
            .await;
            let Ok((states, _)) = quote else { continue };
            for state in states {
                let labels = [
                    ("tenant", slug.clone()),
                    ("quota", state.quota.name.clone()),
                ];
                metrics::gauge!("gatehouse_quota_used", &labels).set(state.used as f64);
                if let Some(limit) = state.quota.limit {
                    metrics::gauge!("gatehouse_quota_limit", &labels).set(limit as f64);
                }
            }
        }
    }
}
