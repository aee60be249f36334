use anyhow::Context;
use gatehouse_common::{config::Config, db, shutdown, telemetry};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::from_env()?;
    let telemetry = telemetry::init_tracing(&config, "gatehouse-worker")?;
    let result = run(config).await;
    // Exports the spans still buffered (OTLP), success or not.
    telemetry.shutdown().await;
    result
}

async fn run(config: Config) -> anyhow::Result<()> {
    let metrics = telemetry::metrics_handle();
    let shutdown = shutdown::on_signal();

    let models = gatehouse_worker::load_models(&config)?;
    let pool = db::connect(&config).await?;
    db::check_migrated(&pool).await?;

    let listener = tokio::net::TcpListener::bind(config.worker_listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on GATEHOUSE_WORKER_LISTEN={}",
                config.worker_listen
            )
        })?;
    tracing::info!(addr = %listener.local_addr()?, "worker health and metrics listening");
    let http_shutdown = shutdown.clone();
    let router = gatehouse_worker::http::router(pool.clone(), metrics);
    let http = tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(async move { http_shutdown.cancelled().await })
            .await
    });

    gatehouse_worker::start(config, pool, models, shutdown.clone())
        .wait()
        .await;
    shutdown.cancel();
    let _ = http.await;
    tracing::info!("worker stopped");
    Ok(())
}
