//! RabbitMQ: message types, topology (names from `GATEHOUSE_QUEUE_PREFIX`), and a publisher
//! that waits for publisher confirms.

mod broker;
mod message;
pub mod migrate;
mod topology;

pub use broker::{Broker, Publisher, connect};
pub use message::{ChunkMessage, QueueMessage, routing_key};
pub use topology::{QueueSpec, RetryTier, Topology};

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("RabbitMQ operation failed: {context}")]
    Amqp {
        context: &'static str,
        #[source]
        source: lapin::Error,
    },
    #[error("the broker refused the message (nack)")]
    Nacked,
    #[error("the message was returned as unroutable (is the topology declared?)")]
    Unroutable,
    #[error("timed out talking to RabbitMQ")]
    Timeout,
    #[error("the consumer was closed by the broker")]
    Closed,
    #[error("queue {queue} has {consumers} consumer(s): stop the workers first")]
    InUse { queue: String, consumers: u32 },
    #[error("message encoding failed")]
    Encode(#[source] serde_json::Error),
}

impl QueueError {
    pub(crate) fn amqp(context: &'static str) -> impl FnOnce(lapin::Error) -> Self {
        move |source| QueueError::Amqp { context, source }
    }
}
