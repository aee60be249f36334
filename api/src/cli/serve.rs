//! `gatehouse-api serve`: the HTTP api and the outbox relay until a shutdown signal.

use anyhow::Context;
use gatehouse_common::{config::Config, db, shutdown, telemetry};

use crate::AppState;

/// Serves on `GATEHOUSE_API_LISTEN` (connecting as the application role) until SIGTERM/SIGINT,
/// then lets in-flight requests finish and stops the relay.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let metrics = telemetry::metrics_handle();
    let shutdown = shutdown::on_signal();
    let pool = db::connect(&config).await?;
    db::check_migrated(&pool).await?;
    let listen = config.api_listen;
    let state = AppState::new(pool, config, metrics).await?;
    let relay = crate::background::spawn(&state, shutdown.clone());
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on GATEHOUSE_API_LISTEN={listen}"))?;
    tracing::info!(addr = %listener.local_addr()?, "api listening");
    let broker = state.broker.clone();
    let limits = state.config.server;
    crate::server::serve(listener, crate::app(state), limits, shutdown.clone()).await?;
    shutdown.cancel();
    let _ = relay.await;
    broker.close().await;
    tracing::info!("api stopped");
    Ok(())
}
