//! The AMQP side of the worker: consume with a bounded prefetch, hand each delivery to the
//! pipeline, and ack only after its results are committed. Transient failures are
//! republished to a delay queue picked by the attempt (exponential backoff, jittered TTL);
//! permanent ones, exhausted chunks and unreadable messages are rejected into the
//! dead-letter queue. Nothing is dropped silently.

use std::{sync::Arc, time::Duration};

use futures_util::StreamExt;
use gatehouse_common::{
    config::Config,
    job::Lane,
    queue::{self, Publisher, QueueError, QueueMessage, Topology},
    trace::{self, TraceParent},
    types::JobKind,
};
use lapin::{
    message::Delivery,
    options::{
        BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions,
        BasicQosOptions, BasicRejectOptions,
    },
    types::FieldTable,
};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::pipeline::{Outcome, Pipeline};

pub struct Consumer {
    pub config: Config,
    pub topology: Topology,
    pub pipeline: Arc<Pipeline>,
}

impl Consumer {
    /// Consumes until `shutdown` (graceful: finish in-flight chunks, ack, exit) or `kill`
    /// (abrupt: drop in-flight work unacked, as a crash would). Reconnects on broker errors.
    pub async fn run(self, shutdown: CancellationToken, kill: CancellationToken) {
        let this = Arc::new(self);
        let mut backoff = Duration::from_millis(200);
        loop {
            match this.session(&shutdown, &kill).await {
                Ok(()) => return,
                Err(error) => {
                    tracing::warn!(error = %error_chain(&error), "consumer session ended; reconnecting");
                    metrics::counter!("gatehouse_worker_reconnects_total").increment(1);
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = kill.cancelled() => return,
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(10));
        }
    }

    async fn session(
        self: &Arc<Self>,
        shutdown: &CancellationToken,
        kill: &CancellationToken,
    ) -> Result<(), QueueError> {
        let conn = queue::connect(&self.config.amqp_url, "gatehouse-worker").await?;
        let channel = conn
            .create_channel()
            .await
            .map_err(amqp("open consumer channel"))?;
        self.topology.declare(&channel).await?;
        let publisher = Publisher::new(&conn).await?;
        channel
            .basic_qos(self.config.worker_prefetch, BasicQosOptions::default())
            .await
            .map_err(amqp("set prefetch"))?;
        let mut kinds = vec![JobKind::Moderate];
        if self.pipeline.translation.is_some() {
            kinds.push(JobKind::Translate);
            kinds.push(JobKind::ModerateTranslate);
        }
        // The sync lane has a channel (and prefetch) of its own: its messages are delivered at
        // once, however many bulk chunks this worker already holds.
        let sync_channel = conn
            .create_channel()
            .await
            .map_err(amqp("open sync consumer channel"))?;
        sync_channel
            .basic_qos(self.config.worker_sync_prefetch, BasicQosOptions::default())
            .await
            .map_err(amqp("set sync prefetch"))?;
        let mut tags = Vec::new();
        let mut streams = Vec::new();
        for kind in kinds {
            for (lane, channel, prefetch) in [
                (Lane::Bulk, &channel, self.config.worker_prefetch),
                (Lane::Sync, &sync_channel, self.config.worker_sync_prefetch),
            ] {
                let queue = self.topology.lane_queue(kind, lane);
                let tag = format!(
                    "gatehouse-worker-{}-{}-{}",
                    kind.as_str(),
                    lane.as_str(),
                    uuid::Uuid::now_v7().simple()
                );
                let consumer = channel
                    .basic_consume(
                        queue.as_str().into(),
                        tag.clone().into(),
                        BasicConsumeOptions::default(),
                        FieldTable::default(),
                    )
                    .await
                    .map_err(amqp("consume"))?;
                tracing::info!(%queue, prefetch, "consuming");
                tags.push((channel.clone(), tag));
                streams.push(consumer);
            }
        }
        let mut deliveries = futures_util::stream::select_all(streams);

        let mut in_flight = JoinSet::new();
        loop {
            tokio::select! {
                () = kill.cancelled() => {
                    in_flight.abort_all();
                    let _ = conn.close(320, "killed".into()).await;
                    return Ok(());
                }
                () = shutdown.cancelled() => break,
                Some(_) = in_flight.join_next(), if !in_flight.is_empty() => {}
                next = deliveries.next() => match next {
                    Some(Ok(delivery)) => {
                        let this = self.clone();
                        let publisher = publisher.clone();
                        // RabbitMQ's consumer timeout runs from the delivery, prefetch wait
                        // included: so does the chunk's deadline.
                        let deadline = tokio::time::Instant::now() + self.config.delivery.chunk_deadline;
                        in_flight.spawn(async move { this.handle(&publisher, delivery, deadline).await });
                    }
                    Some(Err(error)) => return Err(QueueError::Amqp { context: "receive", source: error }),
                    None => return Err(QueueError::Closed),
                },
            }
        }

        tracing::info!(
            in_flight = in_flight.len(),
            "stopping intake; finishing in-flight chunks"
        );
        for (channel, tag) in tags {
            let _ = channel
                .basic_cancel(tag.into(), BasicCancelOptions::default())
                .await;
        }
        let drained = tokio::time::timeout(self.config.shutdown_timeout, async {
            while in_flight.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                "shutdown timeout: unfinished chunks stay unacked and will be redelivered"
            );
            in_flight.abort_all();
        }
        let _ = channel.close(200, "shutdown".into()).await;
        let _ = sync_channel.close(200, "shutdown".into()).await;
        let _ = conn.close(200, "shutdown".into()).await;
        Ok(())
    }

    async fn handle(
        &self,
        publisher: &Publisher,
        delivery: Delivery,
        deadline: tokio::time::Instant,
    ) {
        let message: QueueMessage = match serde_json::from_slice(&delivery.data) {
            Ok(message) => message,
            Err(error) => {
                tracing::error!(%error, "unreadable message; dead-lettering it");
                count("unreadable");
                reject(&delivery).await;
                return;
            }
        };
        let QueueMessage::ChunkV1(chunk) = &message;
        // The api's trace context from the AMQP headers: this chunk's span is its child.
        let parent = TraceParent::from_headers(delivery.properties.headers().as_ref());
        let span = tracing::info_span!(
            "chunk",
            job_id = %chunk.job_id,
            tenant_id = %chunk.tenant_id,
            chunk = chunk.chunk_index,
            trace_id = tracing::field::Empty,
            span_id = tracing::field::Empty,
            parent_span_id = parent.map(|p| p.span_id_hex()).unwrap_or_default(),
        );
        let context = trace::join(&span, parent);
        span.record("trace_id", context.trace_id_hex());
        span.record("span_id", context.span_id_hex());
        trace::scope(
            context,
            self.settle(publisher, &delivery, &message, deadline)
                .instrument(span),
        )
        .await;
    }

    /// Processes the chunk and acks, retries or dead-letters its delivery.
    async fn settle(
        &self,
        publisher: &Publisher,
        delivery: &Delivery,
        message: &QueueMessage,
        deadline: tokio::time::Instant,
    ) {
        let QueueMessage::ChunkV1(chunk) = message;
        match self.pipeline.process(chunk, deadline).await {
            Ok(Outcome::Done) => {
                count("done");
                ack(delivery).await;
            }
            Ok(Outcome::Duplicate) => {
                tracing::info!("chunk already processed; acking the redelivery");
                count("duplicate");
                ack(delivery).await;
            }
            Ok(Outcome::Dead) => {
                tracing::error!(
                    "chunk exhausted its attempts; items failed and message dead-lettered"
                );
                count("dead");
                reject(delivery).await;
            }
            Err(failure) => {
                let reason = error_chain(&failure.error);
                // Exponential backoff: the attempt picks the delay queue, jitter the TTL.
                let tier = self.topology.retry_tier(failure.attempt);
                let ttl = tier.jittered();
                tracing::warn!(error = %reason, attempt = failure.attempt, retry_in_ms = ttl.as_millis() as u64, "transient failure; scheduling a retry");
                count("retried");
                metrics::counter!("gatehouse_worker_retries_total", "queue" => tier.label())
                    .increment(1);
                let _ =
                    gatehouse_common::job::store::record_error(&self.pipeline.pool, chunk, &reason)
                        .await;
                // Only the trace context travels on (not the broker's x-death history).
                let headers = trace::current().map(|t| t.to_headers()).unwrap_or_default();
                let retried = publisher
                    .publish_expiring(
                        &tier.name,
                        &message.routing_key(),
                        &delivery.data,
                        headers,
                        Some(ttl),
                    )
                    .await;
                match retried {
                    Ok(()) => ack(delivery).await,
                    Err(error) => {
                        tracing::warn!(error = %error_chain(&error), "retry publish failed; requeueing");
                        tokio::time::sleep(self.config.retry_delay).await;
                        let _ = delivery
                            .nack(BasicNackOptions {
                                multiple: false,
                                requeue: true,
                            })
                            .await;
                    }
                }
            }
        }
    }
}

fn count(outcome: &'static str) {
    metrics::counter!("gatehouse_worker_messages_total", "outcome" => outcome).increment(1);
}

async fn ack(delivery: &Delivery) {
    if let Err(error) = delivery.ack(BasicAckOptions::default()).await {
        // The broker will redeliver; the chunk guard makes that harmless.
        tracing::warn!(%error, "ack failed");
    }
}

async fn reject(delivery: &Delivery) {
    if let Err(error) = delivery.reject(BasicRejectOptions { requeue: false }).await {
        tracing::warn!(%error, "reject failed");
    }
}

fn amqp(context: &'static str) -> impl FnOnce(lapin::Error) -> QueueError {
    move |source| QueueError::Amqp { context, source }
}

/// An error with its sources, `a: b: c`.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}
