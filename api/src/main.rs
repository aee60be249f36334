use anyhow::{Context, bail};
use clap::Parser;
use gatehouse_api::{
    AppState,
    cli::{AdminCommand, Cli, Command, KeyCommand, TenantCommand},
    relay::Relay,
    store::{keys, tenants},
};
use gatehouse_common::{config::Config, db, shutdown, telemetry, types::TenantId};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = Config::from_env()?;
    telemetry::init_tracing(&config);
    match cli.command {
        Command::Serve => serve(config).await,
        Command::Migrate => {
            db::ensure_database(&config.database_url).await?;
            let pool = db::connect(&config).await?;
            db::migrate(&pool).await?;
            eprintln!("migrations applied");
            Ok(())
        }
        Command::Admin { command } => admin(config, command).await,
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let metrics = telemetry::metrics_handle();
    let shutdown = shutdown::on_signal();
    let pool = db::connect(&config).await?;
    db::check_migrated(&pool).await?;
    let listen = config.api_listen;
    let state = AppState::new(pool, config, metrics);
    let relay = tokio::spawn(Relay::new(&state).run(shutdown.clone()));
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on GATEHOUSE_API_LISTEN={listen}"))?;
    tracing::info!(addr = %listener.local_addr()?, "api listening");
    let broker = state.broker.clone();
    let token = shutdown.clone();
    axum::serve(listener, gatehouse_api::app(state))
        .with_graceful_shutdown(async move { token.cancelled().await })
        .await?;
    shutdown.cancel();
    let _ = relay.await;
    broker.close().await;
    tracing::info!("api stopped");
    Ok(())
}

async fn admin(config: Config, command: AdminCommand) -> anyhow::Result<()> {
    let pool = db::connect(&config).await?;
    db::check_migrated(&pool).await?;
    let output = match command {
        AdminCommand::Tenant {
            command: TenantCommand::Create { name, slug },
        } => {
            let name = name.trim();
            if name.is_empty() || name.chars().count() > 200 {
                bail!("--name must be 1 to 200 characters");
            }
            let slug = slug.unwrap_or_else(|| tenants::slugify(name));
            if slug.is_empty() || slug != tenants::slugify(&slug) {
                bail!("--slug must be lowercase letters, digits and single dashes (got `{slug}`)");
            }
            match tenants::create(&pool, name, &slug, "cli").await {
                Ok(tenant) => serde_json::to_value(tenant)?,
                Err(e)
                    if e.as_database_error()
                        .is_some_and(|d| d.is_unique_violation()) =>
                {
                    bail!("a tenant with slug `{slug}` already exists (choose another with --slug)")
                }
                Err(e) => return Err(e.into()),
            }
        }
        AdminCommand::Key {
            command: KeyCommand::Create { tenant, name },
        } => {
            let tenant: TenantId = tenant
                .parse()
                .context("--tenant must be a tenant id (`ten_…`)")?;
            if !tenants::exists(&pool, tenant).await? {
                bail!("no tenant {tenant}");
            }
            let (key, secret) = keys::create(&pool, tenant, &name, "cli").await?;
            let mut value = serde_json::to_value(key)?;
            value["key"] = serde_json::Value::String(secret);
            value
        }
    };
    println!("{}", serde_json::to_string(&output)?);
    Ok(())
}
