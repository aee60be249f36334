//! Logging and the one place that builds the Prometheus exporter and its buckets.

use std::sync::OnceLock;

pub use metrics_exporter_prometheus::PrometheusHandle;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
use tracing_subscriber::{EnvFilter, fmt, prelude::*};

use crate::config::{Config, LogFormat};

/// Installs the global `tracing` subscriber (text or JSON, filter from `GATEHOUSE_LOG`).
/// Logs go to stderr: stdout belongs to command output (the admin commands print JSON).
pub fn init_tracing(cfg: &Config) {
    let filter = EnvFilter::try_new(&cfg.log_filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(filter);
    let result = match cfg.log_format {
        LogFormat::Json => registry
            .with(
                fmt::layer()
                    .json()
                    .with_current_span(true)
                    .with_writer(std::io::stderr),
            )
            .try_init(),
        LogFormat::Text => registry
            .with(fmt::layer().with_writer(std::io::stderr))
            .try_init(),
    };
    // A second initialisation (tests) keeps the first subscriber.
    let _ = result;
}

const SECONDS_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
const SIZE_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];
/// Padded tokens per model batch (`GATEHOUSE_BATCH_MAX_TOKENS` defaults to 8192).
const TOKENS_BUCKETS: &[f64] = &[
    64.0, 256.0, 1024.0, 2048.0, 4096.0, 8192.0, 16384.0, 32768.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide Prometheus recorder once and returns its handle.
pub fn metrics_handle() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
                .and_then(|b| b.set_buckets_for_metric(Matcher::Suffix("_size".into()), SIZE_BUCKETS))
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Suffix("_batch_tokens".into()), TOKENS_BUCKETS)
                });
            match builder.and_then(|b| b.install_recorder()) {
                Ok(handle) => handle,
                Err(error) => {
                    tracing::warn!(%error, "cannot install the Prometheus recorder; metrics go nowhere");
                    PrometheusBuilder::new().build_recorder().handle()
                }
            }
        })
        .clone()
}
