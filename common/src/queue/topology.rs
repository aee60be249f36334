//! Exchange and queue names, all derived from one prefix, and their declaration.
//!
//! ```text
//! <p>.jobs (direct) --moderate--> <p>.moderate (quorum) --(reject / delivery limit)--> <p>.dead
//!        ^                                                                   (fanout → quorum)
//!        +-- (TTL expiry) <p>.retry.2s | .8s | .32s | .128s  <-- transient failures, by attempt
//! ```
//!
//! Every queue is a quorum queue (replicated, and the only durable kind RabbitMQ 4 keeps).
//! The work queues carry an explicit `x-delivery-limit` and dead-letter at-least-once to
//! `<p>.dead`: RabbitMQ 4 would otherwise drop a message redelivered 20 times. A queue's type
//! cannot change in place; `migrate.rs` moves an existing deployment's classic queues.

use std::time::Duration;

use lapin::{
    Channel, ExchangeKind,
    options::{
        ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions,
        QueueDeleteOptions,
    },
    types::{AMQPValue, FieldTable},
};

use super::QueueError;
use crate::{config::Config, job::Lane, types::JobKind};

#[derive(Debug, Clone)]
pub struct Topology {
    prefix: String,
    /// TTLs of the delay queues, shortest first (never empty).
    retry_delays: Vec<Duration>,
    delivery_limit: u32,
}

/// One delay queue: its exchange/queue name and TTL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryTier {
    pub name: String,
    pub delay: Duration,
}

impl RetryTier {
    /// `2s`: the name's last part (a bounded metric label).
    pub fn label(&self) -> String {
        delay_label(self.delay)
    }

    /// The per-message TTL a retry is published with: uniform in [delay/2, delay] (equal
    /// jitter), so chunks that failed together do not come back together. The queue's own
    /// TTL (`delay`) bounds it; a message behind a longer-lived one waits for it (TTLs expire
    /// at the head), so the jitter only ever shortens a wait, never lengthens it past `delay`.
    pub fn jittered(&self) -> Duration {
        let half = self.delay / 2;
        let spread = u64::try_from(half.as_millis()).unwrap_or(u64::MAX);
        half + Duration::from_millis(rand::random_range(0..=spread))
    }
}

impl Topology {
    /// Names under `prefix` with the default backoff (2 s × 4^k, 4 tiers) and delivery limit 20.
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
            retry_delays: (0..4)
                .map(|k| Duration::from_millis(2000 * 4u64.pow(k)))
                .collect(),
            delivery_limit: 20,
        }
    }

    /// The topology a process runs with (`GATEHOUSE_QUEUE_PREFIX`, `GATEHOUSE_RETRY_*`,
    /// `GATEHOUSE_QUEUE_DELIVERY_LIMIT`).
    pub fn from_config(config: &Config) -> Self {
        let mut retry_delays = config.delivery.retry_delays.clone();
        if retry_delays.is_empty() {
            retry_delays.push(config.retry_delay);
        }
        Self {
            prefix: config.queue_prefix.clone(),
            retry_delays,
            delivery_limit: config.delivery.queue_delivery_limit,
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn delivery_limit(&self) -> u32 {
        self.delivery_limit
    }

    /// Direct exchange every job message goes to, routed by job kind.
    pub fn jobs_exchange(&self) -> String {
        format!("{}.jobs", self.prefix)
    }

    /// The bulk work queue of one job kind: `<prefix>.moderate`.
    pub fn work_queue(&self, kind: JobKind) -> String {
        format!("{}.{}", self.prefix, kind.as_str())
    }

    /// The work queue of one kind and lane: `<prefix>.moderate` or `<prefix>.moderate.sync`.
    pub fn lane_queue(&self, kind: JobKind, lane: Lane) -> String {
        format!("{}.{}", self.prefix, super::routing_key(kind, lane))
    }

    /// Every work queue (kinds × lanes).
    pub fn work_queues(&self) -> Vec<String> {
        JobKind::ALL
            .iter()
            .flat_map(|k| Lane::ALL.map(|l| self.lane_queue(*k, l)))
            .collect()
    }

    /// The delay queues, shortest first. Each is a fanout exchange and a queue of the same
    /// name (`<p>.retry.2s`); messages keep their routing key (the job kind), so when their
    /// TTL expires they dead-letter back to the right work queue.
    pub fn retry_tiers(&self) -> Vec<RetryTier> {
        self.retry_delays
            .iter()
            .map(|delay| RetryTier {
                name: format!("{}.retry.{}", self.prefix, delay_label(*delay)),
                delay: *delay,
            })
            .collect()
    }

    /// The delay queue for a chunk whose `attempt`-th attempt (1-based) just failed: the
    /// first tier after the first failure, the next after the second, the longest from then on.
    pub fn retry_tier(&self, attempt: i32) -> RetryTier {
        let tiers = self.retry_tiers();
        let index = usize::try_from(attempt.max(1) - 1)
            .unwrap_or(0)
            .min(tiers.len().saturating_sub(1));
        tiers[index].clone()
    }

    pub fn dead_exchange(&self) -> String {
        format!("{}.dead", self.prefix)
    }

    pub fn dead_queue(&self) -> String {
        format!("{}.dead", self.prefix)
    }

    /// The arguments a work queue is declared with.
    pub fn work_queue_args(&self) -> FieldTable {
        let mut args = quorum_args();
        args.insert(
            "x-delivery-limit".into(),
            AMQPValue::LongLongInt(i64::from(self.delivery_limit)),
        );
        dead_letter_to(&mut args, &self.dead_exchange());
        args
    }

    /// The arguments of a delay queue with TTL `delay`.
    pub fn retry_queue_args(&self, delay: Duration) -> FieldTable {
        let mut args = quorum_args();
        args.insert(
            "x-message-ttl".into(),
            AMQPValue::LongLongInt(i64::try_from(delay.as_millis()).unwrap_or(i64::MAX)),
        );
        dead_letter_to(&mut args, &self.jobs_exchange());
        args
    }

    /// Every queue with its arguments and (exchange, routing key) binding.
    pub fn queues(&self) -> Vec<QueueSpec> {
        let mut specs = vec![QueueSpec {
            name: self.dead_queue(),
            args: quorum_args(),
            exchange: self.dead_exchange(),
            routing_key: String::new(),
        }];
        for kind in JobKind::ALL {
            for lane in Lane::ALL {
                specs.push(QueueSpec {
                    name: self.lane_queue(kind, lane),
                    args: self.work_queue_args(),
                    exchange: self.jobs_exchange(),
                    routing_key: super::routing_key(kind, lane),
                });
            }
        }
        for tier in self.retry_tiers() {
            specs.push(QueueSpec {
                args: self.retry_queue_args(tier.delay),
                exchange: tier.name.clone(),
                name: tier.name,
                routing_key: String::new(),
            });
        }
        specs
    }

    /// Every exchange with its kind.
    pub fn exchanges(&self) -> Vec<(String, ExchangeKind)> {
        let mut exchanges = vec![
            (self.jobs_exchange(), ExchangeKind::Direct),
            (self.dead_exchange(), ExchangeKind::Fanout),
        ];
        exchanges.extend(
            self.retry_tiers()
                .into_iter()
                .map(|t| (t.name, ExchangeKind::Fanout)),
        );
        exchanges
    }

    /// Declares everything (idempotent). Fails with a channel error (406
    /// PRECONDITION_FAILED) when a queue of the same name exists with other arguments — a
    /// classic queue of an older deployment: run `gatehouse-api admin queues migrate`.
    pub async fn declare(&self, channel: &Channel) -> Result<(), QueueError> {
        for (name, kind) in self.exchanges() {
            exchange(channel, &name, kind).await?;
        }
        for spec in self.queues() {
            spec.declare(channel).await?;
        }
        Ok(())
    }

    /// Deletes everything this topology declared (tests and teardown).
    pub async fn delete(&self, channel: &Channel) -> Result<(), QueueError> {
        for spec in self.queues() {
            channel
                .queue_delete(spec.name.into(), QueueDeleteOptions::default())
                .await
                .map_err(QueueError::amqp("delete queue"))?;
        }
        for (exchange, _) in self.exchanges() {
            channel
                .exchange_delete(exchange.into(), ExchangeDeleteOptions::default())
                .await
                .map_err(QueueError::amqp("delete exchange"))?;
        }
        Ok(())
    }
}

/// `2s`, `128s`, or `200ms` when not whole seconds (tests).
fn delay_label(delay: Duration) -> String {
    let ms = delay.as_millis();
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// A quorum queue that dead-letters at-least-once (RabbitMQ ≥ 3.10: the dead-lettered
/// message leaves the queue only once the target confirmed it; needs `reject-publish`).
fn quorum_args() -> FieldTable {
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    args
}

fn dead_letter_to(args: &mut FieldTable, exchange: &str) {
    args.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString(exchange.into()),
    );
    args.insert(
        "x-dead-letter-strategy".into(),
        AMQPValue::LongString("at-least-once".into()),
    );
    args.insert(
        "x-overflow".into(),
        AMQPValue::LongString("reject-publish".into()),
    );
}

/// A queue of the topology: declared durable with `args`, bound to `exchange`.
#[derive(Debug, Clone)]
pub struct QueueSpec {
    pub name: String,
    pub args: FieldTable,
    pub exchange: String,
    pub routing_key: String,
}

impl QueueSpec {
    pub async fn declare(&self, channel: &Channel) -> Result<(), QueueError> {
        channel
            .queue_declare(
                self.name.as_str().into(),
                QueueDeclareOptions::durable(),
                self.args.clone(),
            )
            .await
            .map_err(QueueError::amqp(
                "declare queue (a 406 inequivalent arg: an older deployment's queue, run `gatehouse-api admin queues migrate`)",
            ))?;
        channel
            .queue_bind(
                self.name.as_str().into(),
                self.exchange.as_str().into(),
                self.routing_key.as_str().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(QueueError::amqp("bind queue"))
    }
}

pub(crate) async fn exchange(
    channel: &Channel,
    name: &str,
    kind: ExchangeKind,
) -> Result<(), QueueError> {
    let options = ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    };
    channel
        .exchange_declare(name.into(), kind, options, FieldTable::default())
        .await
        .map_err(QueueError::amqp("declare exchange"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_carries_the_prefix() {
        let t = Topology::new("t123");
        assert_eq!(t.jobs_exchange(), "t123.jobs");
        assert_eq!(t.work_queue(JobKind::Moderate), "t123.moderate");
        assert_eq!(
            t.lane_queue(JobKind::Moderate, Lane::Sync),
            "t123.moderate.sync"
        );
        assert_eq!(t.dead_queue(), "t123.dead");
        let names: Vec<String> = t.retry_tiers().into_iter().map(|t| t.name).collect();
        assert_eq!(
            names,
            [
                "t123.retry.2s",
                "t123.retry.8s",
                "t123.retry.32s",
                "t123.retry.128s"
            ]
        );
    }

    #[test]
    fn backoff_is_exponential_by_attempt_and_capped_at_the_longest_tier() {
        let t = Topology::new("t");
        let delays: Vec<u64> = (0..=6).map(|a| t.retry_tier(a).delay.as_secs()).collect();
        assert_eq!(delays, [2, 2, 8, 32, 128, 128, 128]);
        assert_eq!(delay_label(Duration::from_millis(200)), "200ms");
    }

    #[test]
    fn jitter_stays_within_half_the_delay_and_the_delay() {
        let tier = Topology::new("t").retry_tier(2);
        let samples: Vec<Duration> = (0..200).map(|_| tier.jittered()).collect();
        assert!(
            samples
                .iter()
                .all(|d| *d >= tier.delay / 2 && *d <= tier.delay)
        );
        let distinct: std::collections::HashSet<_> = samples.iter().collect();
        assert!(distinct.len() > 100, "jitter is not spread: {distinct:?}");
    }
}
