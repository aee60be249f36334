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
use crate::types::JobKind;

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

    /// The work queue of one job kind: `<prefix>.moderate`.
    pub fn work_queue(&self, kind: JobKind) -> String {
        format!("{}.{}", self.prefix, kind.as_str())
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
        let durable_exchange = ExchangeDeclareOptions {
            durable: true,
            ..ExchangeDeclareOptions::default()
        };
        channel
            .exchange_declare(
                self.jobs_exchange().into(),
                ExchangeKind::Direct,
                durable_exchange,
                FieldTable::default(),
            )
            .await
            .map_err(QueueError::amqp("declare jobs exchange"))?;
        channel
            .exchange_declare(
                self.dead_exchange().into(),
                ExchangeKind::Fanout,
                durable_exchange,
                FieldTable::default(),
            )
            .await
            .map_err(QueueError::amqp("declare dead-letter exchange"))?;
        channel
            .queue_declare(
                self.dead_queue().into(),
                QueueDeclareOptions::durable(),
                FieldTable::default(),
            )
            .await
            .map_err(QueueError::amqp("declare dead-letter queue"))?;
        channel
            .queue_bind(
                self.dead_queue().into(),
                self.dead_exchange().into(),
                "".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(QueueError::amqp("bind dead-letter queue"))?;

        for kind in JobKind::ALL {
            let mut args = FieldTable::default();
            args.insert(
                "x-dead-letter-exchange".into(),
                AMQPValue::LongString(self.dead_exchange().into()),
            );
            channel
                .queue_declare(
                    self.work_queue(kind).into(),
                    QueueDeclareOptions::durable(),
                    args,
                )
                .await
                .map_err(QueueError::amqp("declare work queue"))?;
            channel
                .queue_bind(
                    self.work_queue(kind).into(),
                    self.jobs_exchange().into(),
                    kind.as_str().into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
                .map_err(QueueError::amqp("bind work queue"))?;
        }

        let mut retry_args = FieldTable::default();
        retry_args.insert(
            "x-dead-letter-exchange".into(),
            AMQPValue::LongString(self.jobs_exchange().into()),
        );
        retry_args.insert(
            "x-message-ttl".into(),
            AMQPValue::LongLongInt(i64::try_from(retry_delay_ms).unwrap_or(i64::MAX)),
        );
        channel
            .queue_declare(
                self.retry_queue().into(),
                QueueDeclareOptions::durable(),
                retry_args,
            )
            .await
            .map_err(QueueError::amqp("declare retry queue"))?;
        channel
            .exchange_declare(
                self.retry_exchange().into(),
                ExchangeKind::Fanout,
                durable_exchange,
                FieldTable::default(),
            )
            .await
            .map_err(QueueError::amqp("declare retry exchange"))?;
        channel
            .queue_bind(
                self.retry_queue().into(),
                self.retry_exchange().into(),
                "".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(QueueError::amqp("bind retry queue"))?;
        Ok(())
    }

    /// Deletes everything this topology declared (tests and teardown).
    pub async fn delete(&self, channel: &Channel) -> Result<(), QueueError> {
        let mut queues: Vec<String> = JobKind::ALL.iter().map(|k| self.work_queue(*k)).collect();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_carries_the_prefix() {
        let t = Topology::new("t123");
        assert_eq!(t.jobs_exchange(), "t123.jobs");
        assert_eq!(t.work_queue(JobKind::Moderate), "t123.moderate");
        assert_eq!(t.retry_queue(), "t123.retry");
        assert_eq!(t.dead_queue(), "t123.dead");
    }
}
