//! Logging, the optional OTLP span export, and the one place that builds the Prometheus
//! exporter and its buckets.

use std::{sync::OnceLock, time::Duration};

pub use metrics_exporter_prometheus::PrometheusHandle;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
use opentelemetry::{KeyValue, trace::TracerProvider as _};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::{
    Resource,
    trace::{SdkTracer, SdkTracerProvider, span_processor_with_async_runtime::BatchSpanProcessor},
};
use tracing::Level;
use tracing_subscriber::{EnvFilter, Layer, filter::Targets, fmt, prelude::*};

use crate::config::{Config, LogFormat, OtlpConfig};

/// What [`init_tracing`] started; [`Telemetry::shutdown`] flushes the spans still buffered.
#[must_use = "call `shutdown` before the process exits, or buffered spans are lost"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

/// The OTLP exporter could not be built (a clear start-up error).
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error(
        "cannot build the OTLP span exporter for GATEHOUSE_OTLP_ENDPOINT={endpoint}: {message}"
    )]
    Exporter { endpoint: String, message: String },
    #[error("the OTLP span exporter needs a tokio runtime")]
    NoRuntime,
}

/// How long [`Telemetry::shutdown`] waits for the last export.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// The crates whose spans are exported (their dependencies' spans and events are not).
const EXPORTED_TARGETS: [&str; 3] = ["gatehouse_api", "gatehouse_worker", "gatehouse_common"];

impl Telemetry {
    /// Whether spans are exported over OTLP (`GATEHOUSE_OTLP_ENDPOINT` is set).
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// Exports the buffered spans and stops the exporter (at most [`SHUTDOWN_TIMEOUT`]); spans
    /// that end later are dropped. Call it on graceful shutdown, after the work has stopped.
    pub async fn shutdown(self) {
        let Some(provider) = self.provider else {
            return;
        };
        // The SDK blocks its caller until the batch task (on this runtime) has exported, so
        // wait on a blocking thread, never on a runtime worker.
        let task = tokio::task::spawn_blocking(move || provider.shutdown());
        match tokio::time::timeout(SHUTDOWN_TIMEOUT, task).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(error))) => tracing::warn!(%error, "OTLP exporter shutdown failed"),
            Ok(Err(error)) => tracing::warn!(%error, "OTLP exporter shutdown panicked"),
            Err(_) => tracing::warn!(
                timeout_secs = SHUTDOWN_TIMEOUT.as_secs(),
                "OTLP exporter did not flush in time; buffered spans are lost"
            ),
        }
    }
}

/// Installs the global `tracing` subscriber: logs (text or JSON, filter from `GATEHOUSE_LOG`)
/// and, when `GATEHOUSE_OTLP_ENDPOINT` is set, span export over OTLP/HTTP with `service.name`
/// = `service` (`gatehouse-api`, `gatehouse-worker`). Logs go to stderr: stdout belongs to
/// command output (the admin commands print JSON). Call it inside the tokio runtime: the
/// exporter's batch task runs there.
pub fn init_tracing(cfg: &Config, service: &'static str) -> Result<Telemetry, TelemetryError> {
    let filter = EnvFilter::try_new(&cfg.log_filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = match cfg.log_format {
        LogFormat::Json => fmt::layer()
            .json()
            .with_current_span(true)
            .with_writer(std::io::stderr)
            .with_filter(filter)
            .boxed(),
        LogFormat::Text => fmt::layer()
            .with_writer(std::io::stderr)
            .with_filter(filter)
            .boxed(),
    };
    // A second initialisation (tests) keeps the first subscriber and builds no exporter.
    if tracing::dispatcher::has_been_set() {
        return Ok(Telemetry { provider: None });
    }
    let provider = tracer_provider(&cfg.otlp, service)?;
    // The export has its own filter: our crates' spans (and the events in them) at info and
    // above, whatever `GATEHOUSE_LOG` keeps in the logs.
    let tracer = provider
        .as_ref()
        .map(|provider| provider.tracer("gatehouse"));
    let export = tracer.clone().map(|tracer| {
        tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_threads(false)
            .with_filter(
                Targets::new().with_targets(EXPORTED_TARGETS.map(|target| (target, Level::INFO))),
            )
    });
    let installed = tracing_subscriber::registry()
        .with(logs)
        .with(export)
        .try_init()
        .is_ok();
    if installed && let Some(tracer) = tracer {
        let _ = TRACER.set(tracer);
    }
    if installed && let Some(url) = &cfg.otlp.traces_url {
        tracing::info!(
            endpoint = %crate::config::redact_url(url.as_str()),
            service,
            "exporting spans over OTLP/HTTP"
        );
    }
    let provider = match provider {
        Some(provider) if !installed => {
            // Lost a race with another initialisation: stop the unused exporter off the
            // runtime's workers (its shutdown blocks).
            tokio::task::spawn_blocking(move || provider.shutdown());
            None
        }
        provider => provider,
    };
    Ok(Telemetry { provider })
}

static TRACER: OnceLock<SdkTracer> = OnceLock::new();

/// The exporting tracer, when [`init_tracing`] installed one (for spans measured after the
/// fact, [`crate::trace::record_elapsed`]).
pub(crate) fn tracer() -> Option<&'static SdkTracer> {
    TRACER.get()
}

/// The OTLP tracer provider for `otlp` (`None` when no endpoint is set: nothing is built):
/// protobuf over HTTP with reqwest, a batch span processor on the current tokio runtime.
pub fn tracer_provider(
    otlp: &OtlpConfig,
    service: &'static str,
) -> Result<Option<SdkTracerProvider>, TelemetryError> {
    let Some(url) = &otlp.traces_url else {
        return Ok(None);
    };
    if tokio::runtime::Handle::try_current().is_err() {
        return Err(TelemetryError::NoRuntime);
    }
    let failed = |message: String| TelemetryError::Exporter {
        endpoint: crate::config::redact_url(url.as_str()),
        message,
    };
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| failed(e.to_string()))?;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(url.as_str())
        .with_timeout(Duration::from_secs(10))
        .with_http_client(client)
        .with_headers(otlp.headers.iter().cloned().collect())
        .build()
        .map_err(|e| failed(e.to_string()))?;
    let processor =
        BatchSpanProcessor::builder(exporter, opentelemetry_sdk::runtime::Tokio).build();
    let resource = Resource::builder()
        .with_service_name(service)
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .build();
    Ok(Some(
        SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_resource(resource)
            .build(),
    ))
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
