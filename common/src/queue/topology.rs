//! Exchange and queue names, all derived from one prefix, and their declaration.
//!
//! ```text
//! <p>.jobs (direct) --moderate--> <p>.moderate --(reject)--> <p>.dead (fanout) --> <p>.dead
//!        ^
//!        +-- (TTL expiry) <p>.retry (queue) <-- <p>.retry (fanout) <-- transient failures
//! ```

use lapin::{
    Channel, ExchangeKind,
    options::{
        ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions,
        QueueDeleteOptions,
    },
    types::{AMQPValue, FieldTable},
};

use super::QueueError;
use crate::{job::Lane, types::JobKind};

#[derive(Debug, Clone)]
pub struct Topology {
    prefix: String,
}

impl Topology {
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
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

    /// Fanout exchange in front of the retry queue; messages keep their routing key (the
    /// job kind), so when their TTL expires they dead-letter back to the right work queue.
    pub fn retry_exchange(&self) -> String {
        format!("{}.retry", self.prefix)
    }

    /// Delay queue: messages wait out its TTL, then dead-letter back to the jobs exchange.
    pub fn retry_queue(&self) -> String {
        format!("{}.retry", self.prefix)
    }

    pub fn dead_exchange(&self) -> String {
        format!("{}.dead", self.prefix)
    }

    pub fn dead_queue(&self) -> String {
        format!("{}.dead", self.prefix)
    }

    /// Declares everything (idempotent). `retry_delay_ms` is the retry queue's TTL.
    pub async fn declare(&self, channel: &Channel, retry_delay_ms: u64) -> Result<(), QueueError> {
        let dead_letter_to = |exchange: String| {
            let mut args = FieldTable::default();
            args.insert(
                "x-dead-letter-exchange".into(),
                AMQPValue::LongString(exchange.into()),
            );
            args
        };
        exchange(channel, &self.jobs_exchange(), ExchangeKind::Direct).await?;

        exchange(channel, &self.dead_exchange(), ExchangeKind::Fanout).await?;
        bound_queue(
            channel,
            &self.dead_queue(),
            FieldTable::default(),
            &self.dead_exchange(),
            "",
        )
        .await?;

        for kind in JobKind::ALL {
            for lane in Lane::ALL {
                let args = dead_letter_to(self.dead_exchange());
                bound_queue(
                    channel,
                    &self.lane_queue(kind, lane),
                    args,
                    &self.jobs_exchange(),
                    &super::routing_key(kind, lane),
                )
                .await?;
            }
        }

        let mut retry_args = dead_letter_to(self.jobs_exchange());
        retry_args.insert(
            "x-message-ttl".into(),
            AMQPValue::LongLongInt(i64::try_from(retry_delay_ms).unwrap_or(i64::MAX)),
        );
        exchange(channel, &self.retry_exchange(), ExchangeKind::Fanout).await?;
        bound_queue(
            channel,
            &self.retry_queue(),
            retry_args,
            &self.retry_exchange(),
            "",
        )
        .await
    }

    /// Deletes everything this topology declared (tests and teardown).
    pub async fn delete(&self, channel: &Channel) -> Result<(), QueueError> {
        let mut queues: Vec<String> = JobKind::ALL
            .iter()
            .flat_map(|k| Lane::ALL.map(|l| self.lane_queue(*k, l)))
            .collect();
        queues.push(self.retry_queue());
        queues.push(self.dead_queue());
        for queue in queues {
            channel
                .queue_delete(queue.into(), QueueDeleteOptions::default())
                .await
                .map_err(QueueError::amqp("delete queue"))?;
        }
        for exchange in [
            self.jobs_exchange(),
            self.dead_exchange(),
            self.retry_exchange(),
        ] {
            channel
                .exchange_delete(exchange.into(), ExchangeDeleteOptions::default())
                .await
                .map_err(QueueError::amqp("delete exchange"))?;
        }
        Ok(())
    }
}

async fn exchange(channel: &Channel, name: &str, kind: ExchangeKind) -> Result<(), QueueError> {
    let options = ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    };
    channel
        .exchange_declare(name.into(), kind, options, FieldTable::default())
        .await
        .map_err(QueueError::amqp("declare exchange"))
}

/// A durable queue with `args`, bound to `exchange` with `routing_key`.
async fn bound_queue(
    channel: &Channel,
    name: &str,
    args: FieldTable,
    exchange: &str,
    routing_key: &str,
) -> Result<(), QueueError> {
    channel
        .queue_declare(name.into(), QueueDeclareOptions::durable(), args)
        .await
        .map_err(QueueError::amqp("declare queue"))?;
    channel
        .queue_bind(
            name.into(),
            exchange.into(),
            routing_key.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(QueueError::amqp("bind queue"))
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
        assert_eq!(t.retry_queue(), "t123.retry");
        assert_eq!(t.dead_queue(), "t123.dead");
    }
}
