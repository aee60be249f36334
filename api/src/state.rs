//! What every handler can reach.

use std::sync::Arc;

use gatehouse_common::{config::Config, queue::Broker, telemetry::PrometheusHandle};
use sqlx::PgPool;
use tokio::sync::Notify;

#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    pub config: Arc<Config>,
    pub broker: Arc<Broker>,
    /// Wakes the outbox relay right after a job commits.
    pub outbox_notify: Arc<Notify>,
    pub metrics: PrometheusHandle,
}

impl AppState {
    pub fn new(pool: PgPool, config: Config, metrics: PrometheusHandle) -> Self {
        let topology = gatehouse_common::queue::Topology::new(&config.queue_prefix);
        let retry_ms = u64::try_from(config.retry_delay.as_millis()).unwrap_or(u64::MAX);
        let broker = Broker::new(&config.amqp_url, "gatehouse-api", topology, retry_ms);
        Self {
            pool,
            config: Arc::new(config),
            broker: Arc::new(broker),
            outbox_notify: Arc::new(Notify::new()),
            metrics,
        }
    }
}
