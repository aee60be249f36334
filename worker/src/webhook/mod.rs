//! The delivery role (in every `gatehouse-worker`, unless `GATEHOUSE_WEBHOOK_DELIVERY=false`):
//! a loop that claims due deliveries from Postgres and sends them, at most
//! `GATEHOUSE_WEBHOOK_CONCURRENCY` at a time. It is woken by `LISTEN gatehouse_webhook` (every
//! new message notifies it in the transaction that wrote it), so a first attempt starts at
//! once; it also wakes when the next retry is due and every `GATEHOUSE_WEBHOOK_POLL_MS`. All
//! state is in Postgres: a restart of any process, or of RabbitMQ (not involved), loses
//! nothing, and a worker that dies mid-delivery leaves its claims to expire after
//! `GATEHOUSE_WEBHOOK_LEASE_SECS`, when another worker sends them again (the same
//! `webhook-id`: receivers dedupe).

pub mod retry;
pub mod send;
pub mod store;

use std::{sync::Arc, time::Duration};

use chrono::Utc;
use gatehouse_common::{
    config::{Config, WebhookConfig},
    webhook::{
        NOTIFY_CHANNEL,
        secret::{SecretBox, SigningSecret},
        ssrf::AddressPolicy,
    },
};
use sqlx::{PgPool, postgres::PgListener};
use tokio::{sync::Semaphore, task::JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use self::{
    retry::Schedule,
    send::{Outcome, Request, Sender},
    store::{Claimed, Finished},
};

/// How often the backlog gauges are refreshed.
const GAUGE_EVERY: Duration = Duration::from_secs(15);

pub struct Deliverer {
    pool: PgPool,
    config: WebhookConfig,
    shutdown_timeout: Duration,
    sender: Arc<Sender>,
    secrets: SecretBox,
    schedule: Schedule,
    actor: String,
}

impl Deliverer {
    pub fn new(config: &Config, pool: PgPool) -> Result<Self, reqwest::Error> {
        let hooks = config.webhooks.clone();
        let policy = AddressPolicy::new(hooks.allow_cidrs.clone(), hooks.allow_http);
        let sender = Sender::new(policy, hooks.timeout, hooks.response_max_bytes)?;
        if hooks.secret_key.is_none() {
            tracing::warn!(
                "GATEHOUSE_WEBHOOK_SECRET_KEY is not set: webhook signing secrets are stored unencrypted (row-level security only)"
            );
        }
        Ok(Self {
            pool,
            secrets: SecretBox::new(hooks.secret_key),
            schedule: Schedule {
                waits: hooks.retry_schedule.clone(),
                jitter_percent: hooks.retry_jitter_percent,
                retry_after_max: hooks.retry_after_max,
            },
            config: hooks,
            shutdown_timeout: config.shutdown_timeout,
            sender: Arc::new(sender),
            actor: crate::pipeline::worker_actor(),
        })
    }

    /// Delivers until `shutdown` (stop claiming, let in-flight attempts finish within the
    /// shutdown timeout) or `kill` (drop everything, as a crash would).
    pub async fn run(self, shutdown: CancellationToken, kill: CancellationToken) {
        let this = Arc::new(self);
        let permits = Arc::new(Semaphore::new(this.config.concurrency));
        let mut in_flight = JoinSet::new();
        let mut listener = None;
        let mut next_gauges = tokio::time::Instant::now();
        tracing::info!(
            concurrency = this.config.concurrency,
            "webhook delivery loop started"
        );
        loop {
            if listener.is_none() {
                listener = this.listen().await;
            }
            if tokio::time::Instant::now() >= next_gauges {
                this.gauges().await;
                next_gauges = tokio::time::Instant::now() + GAUGE_EVERY;
            }
            let free = permits.available_permits();
            let mut wait = this.config.poll;
            if free > 0 {
                match store::claim(&this.pool, free as i64, this.config.lease).await {
                    Ok(round) => {
                        let full = round.claimed.len() == free;
                        for claimed in round.claimed {
                            let Ok(permit) = permits.clone().try_acquire_owned() else {
                                break;
                            };
                            let this = this.clone();
                            let span = tracing::info_span!("webhook", tenant_id = %claimed.tenant_id, message_id = %claimed.message_id, endpoint_id = %claimed.endpoint_id, attempt = claimed.attempt);
                            in_flight.spawn(
                                async move {
                                    this.deliver(claimed).await;
                                    drop(permit);
                                }
                                .instrument(span),
                            );
                        }
                        if full {
                            wait = Duration::ZERO;
                        } else if let Some(due) = round.next_due {
                            let until = (due - Utc::now()).to_std().unwrap_or(Duration::ZERO);
                            wait = wait.min(until);
                        }
                    }
                    Err(error) => {
                        tracing::warn!(error = %gatehouse_common::db::error_class(&error), "claiming webhook deliveries failed");
                    }
                }
            }
            tokio::select! {
                () = kill.cancelled() => {
                    in_flight.abort_all();
                    return;
                }
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(wait) => {}
                Some(_) = in_flight.join_next(), if !in_flight.is_empty() => {}
                notified = recv(&mut listener) => {
                    if notified.is_err() {
                        listener = None;
                    }
                }
            }
        }
        let drained = tokio::time::timeout(this.shutdown_timeout, async {
            while in_flight.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                "shutdown timeout: unfinished webhook attempts are sent again after their lease"
            );
            in_flight.abort_all();
        }
    }

    async fn listen(&self) -> Option<PgListener> {
        let mut listener = match PgListener::connect_with(&self.pool).await {
            Ok(l) => l,
            Err(error) => {
                tracing::warn!(error = %gatehouse_common::db::error_class(&error), "cannot listen for webhook messages; polling");
                return None;
            }
        };
        match listener.listen(NOTIFY_CHANNEL).await {
            Ok(()) => Some(listener),
            Err(error) => {
                tracing::warn!(error = %gatehouse_common::db::error_class(&error), "cannot listen for webhook messages; polling");
                None
            }
        }
    }

    async fn gauges(&self) {
        match store::backlog(&self.pool).await {
            Ok((retrying, disabled)) => {
                metrics::gauge!("gatehouse_webhook_retry_backlog").set(retrying as f64);
                metrics::gauge!("gatehouse_webhook_disabled_endpoints").set(disabled as f64);
            }
            Err(error) => {
                tracing::warn!(error = %gatehouse_common::db::error_class(&error), "webhook backlog query failed");
            }
        }
    }

    /// Sends one claimed delivery and records how it went.
    async fn deliver(&self, claimed: Claimed) {
        let body = serde_json::to_vec(&claimed.payload).unwrap_or_default();
        let message_id = claimed.message_id.to_string();
        let timestamp = Utc::now().timestamp();
        let attempted = match self.signature(&claimed, &message_id, timestamp, &body) {
            Ok(signature) => {
                self.sender
                    .send(Request {
                        url: &claimed.url,
                        message_id: &message_id,
                        body: &body,
                        signature,
                        timestamp,
                        headers: &claimed.headers,
                    })
                    .await
            }
            Err(error) => send::Attempted {
                outcome: Outcome::Failed,
                duration: Duration::ZERO,
                status: None,
                response: None,
                error: Some(error),
                retry_after: None,
            },
        };
        metrics::counter!("gatehouse_webhook_attempts_total", "outcome" => attempted.outcome.as_str())
            .increment(1);
        metrics::histogram!("gatehouse_webhook_attempt_seconds")
            .record(attempted.duration.as_secs_f64());
        let succeeded = attempted.outcome == Outcome::Succeeded;
        let gone = attempted.outcome == Outcome::Gone;
        let next_wait = if succeeded || gone {
            None
        } else {
            self.schedule.next_wait(claimed.step, attempted.retry_after)
        };
        let finished = Finished {
            claimed: &claimed,
            outcome: attempted.outcome.as_str(),
            succeeded,
            status_code: attempted.status.map(i32::from),
            duration_ms: i32::try_from(attempted.duration.as_millis()).unwrap_or(i32::MAX),
            response: attempted.response,
            error: attempted.error.clone(),
            next_wait,
            gone,
            disable_after: self.config.disable_after,
            actor: &self.actor,
        };
        match store::finish(&self.pool, finished).await {
            Ok(recorded) => {
                if let Some(status) = recorded.status.as_deref()
                    && status != "pending"
                {
                    metrics::counter!("gatehouse_webhook_deliveries_total", "outcome" => match status {
                        "succeeded" => "succeeded",
                        "exhausted" => "exhausted",
                        _ => "failed",
                    })
                    .increment(1);
                }
                if succeeded && claimed.attempt == 1 {
                    let lag = (Utc::now() - claimed.message_created_at)
                        .to_std()
                        .unwrap_or(Duration::ZERO);
                    metrics::histogram!("gatehouse_webhook_delivery_lag_seconds")
                        .record(lag.as_secs_f64());
                }
                if let Some(reason) = recorded.disabled {
                    let why = if gone { "gone" } else { "failing" };
                    metrics::counter!("gatehouse_webhook_endpoints_disabled_total", "reason" => why)
                        .increment(1);
                    tracing::warn!(%reason, "webhook endpoint disabled");
                }
                if !succeeded {
                    tracing::info!(error = attempted.error.as_deref().unwrap_or(""), retry_in = ?next_wait, "webhook attempt failed");
                }
            }
            Err(error) => {
                tracing::warn!(error = %gatehouse_common::db::error_class(&error), "recording a webhook attempt failed; it is sent again after its lease");
            }
        }
    }

    /// `v1,<current>` and, during a rotation's overlap, ` v1,<previous>`.
    fn signature(
        &self,
        claimed: &Claimed,
        message_id: &str,
        timestamp: i64,
        body: &[u8],
    ) -> Result<String, String> {
        let open = |sealed: &[u8]| -> Result<SigningSecret, String> {
            self.secrets
                .open(claimed.endpoint_id, sealed)
                .map_err(|e| e.to_string())
        };
        let mut signature = open(&claimed.secret)?.sign(message_id, timestamp, body);
        if let Some(previous) = &claimed.previous_secret {
            signature.push(' ');
            signature.push_str(&open(previous)?.sign(message_id, timestamp, body));
        }
        Ok(signature)
    }
}

/// The next notification (and any others already buffered: one claim round serves them
/// all), or never when there is no listener (then the poll wakes us).
async fn recv(listener: &mut Option<PgListener>) -> Result<(), sqlx::Error> {
    match listener {
        Some(l) => {
            l.recv().await?;
            while l.next_buffered().is_some() {}
            Ok(())
        }
        None => std::future::pending().await,
    }
}
