use clap::Parser;
use gatehouse_api::cli::{self, Cli, Command};
use gatehouse_common::{config::Config, telemetry};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Command::Openapi = cli.command {
        print!("{}", gatehouse_api::openapi::json());
        return Ok(());
    }
    let config = Config::from_env()?;
    let telemetry = telemetry::init_tracing(&config, "gatehouse-api")?;
    let result = match cli.command {
        Command::Serve => cli::serve::run(config).await,
        Command::Migrate => cli::migrate(config).await,
        Command::Admin { command } => cli::admin::run(config, command).await,
        Command::Openapi => Ok(()),
    };
    // Exports the spans still buffered (OTLP), success or not.
    telemetry.shutdown().await;
    result
}
