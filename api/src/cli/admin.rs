//! `gatehouse-api admin …`: bootstrap administration. Each command prints one JSON object on
//! stdout so scripts can use it; errors go to stderr through `main`.

use anyhow::{Context, bail};
use gatehouse_common::{
    config::Config,
    db,
    types::{Role, TenantId},
};

use super::{
    AdminCommand, AuditCommand, KeyCommand, OperatorCommand, SigningKeyCommand, TenantCommand,
    UserCommand,
};
use crate::{
    identity::{jwt::TokenService, password},
    store::{
        keys::{self, NewKey},
        tenants::{self, NewTenant},
        users,
    },
};

/// Bootstrap commands run as the URL's own user (the schema owner), like `migrate`.
pub async fn run(config: Config, command: AdminCommand) -> anyhow::Result<()> {
    if let AdminCommand::Queues {
        command: super::QueuesCommand::Migrate,
    } = &command
    {
        return migrate_queues(&config).await;
    }
    let pool = db::connect_owner(&config).await?;
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
            let new = NewTenant {
                name,
                slug: &slug,
                scopes: None,
                ip_allowlist: &[],
            };
            match tenants::create(&pool, new, "cli", None).await {
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
        AdminCommand::Tenant {
            command: TenantCommand::List { limit, after },
        } => {
            let after = after
                .map(|a| a.parse::<TenantId>())
                .transpose()
                .context("--after must be a tenant id")?;
            let limit = limit.clamp(1, 1000);
            let page = tenants::list(&pool, after, limit).await?;
            let next = if page.len() as i64 == limit {
                page.last().map(|t| t.tenant_id.to_string())
            } else {
                None
            };
            serde_json::json!({ "data": page, "next_after": next })
        }
        AdminCommand::Tenant {
            command:
                TenantCommand::Update {
                    tenant,
                    name,
                    enabled,
                    scopes,
                    ip_allowlist,
                    daily_items,
                    daily_characters,
                    requests_per_minute,
                    items_per_minute,
                    weight,
                    retention_days,
                },
        } => {
            let tenant = tenant_arg(&pool, &tenant).await?;
            let mut quotas = serde_json::Map::new();
            if let Some(l) = daily_items {
                quotas.insert("daily_items".into(), serde_json::json!(l.0));
            }
            if let Some(l) = daily_characters {
                quotas.insert("daily_characters".into(), serde_json::json!(l.0));
            }
            let mut rates = serde_json::Map::new();
            if let Some(l) = requests_per_minute {
                if l.0 == Some(0) {
                    bail!("--requests-per-minute must be at least 1 (or `unlimited`)");
                }
                rates.insert("requests_per_minute".into(), serde_json::json!(l.0));
            }
            if let Some(l) = items_per_minute {
                if l.0 == Some(0) {
                    bail!("--items-per-minute must be at least 1 (or `unlimited`)");
                }
                rates.insert("items_per_minute".into(), serde_json::json!(l.0));
            }
            if let Some(bad) = scopes
                .iter()
                .flatten()
                .find(|s| !gatehouse_common::types::SCOPES.contains(&s.as_str()))
            {
                bail!("--scopes: unknown scope `{bad}`");
            }
            let ip_allowlist = ip_allowlist.map(|list| parse_cidrs(&list)).transpose()?;
            let changes = tenants::TenantChanges {
                name,
                enabled,
                scopes,
                ip_allowlist,
                quotas: (!quotas.is_empty()).then_some(serde_json::Value::Object(quotas)),
                rate_limits: (!rates.is_empty()).then_some(serde_json::Value::Object(rates)),
                weight,
                retention_days,
                audit_retention_days: None,
            };
            let scope = gatehouse_common::db::Scope::Platform;
            serde_json::to_value(
                tenants::update(&pool, tenant, &changes, "cli", None, scope).await?,
            )?
        }
        AdminCommand::Key {
            command:
                KeyCommand::Create {
                    tenant,
                    name,
                    scopes,
                },
        } => {
            let tenant = tenant_arg(&pool, &tenant).await?;
            let granted = tenants::get(&pool, tenant)
                .await?
                .map(|t| t.scopes)
                .unwrap_or_default();
            let scopes = if scopes.is_empty() {
                granted.clone()
            } else {
                scopes
            };
            if let Some(bad) = scopes.iter().find(|s| !granted.contains(s)) {
                bail!(
                    "--scopes: `{bad}` is not granted to the tenant (granted: {})",
                    granted.join(", ")
                );
            }
            let new = NewKey {
                tenant,
                name: &name,
                scopes: &scopes,
                expires_at: None,
                actor: "cli",
                client_ip: None,
            };
            let (key, secret) = keys::create(&pool, new).await?;
            let mut value = serde_json::to_value(key)?;
            value["key"] = serde_json::Value::String(secret);
            value
        }
        AdminCommand::User {
            command:
                UserCommand::Create {
                    tenant,
                    username,
                    role,
                },
        } => {
            let tenant = tenant_arg(&pool, &tenant).await?;
            let role: Role = match role.parse() {
                Ok(role @ (Role::Admin | Role::Reviewer | Role::Guest)) => role,
                _ => bail!("--role must be admin, reviewer or guest"),
            };
            let hash = read_password().await?;
            let actor = users::Actor {
                name: "cli",
                client_ip: None,
            };
            serde_json::to_value(
                users::create(&pool, Some(tenant), username.trim(), &hash, role, actor).await?,
            )?
        }
        AdminCommand::Operator {
            command: OperatorCommand::Create { username },
        } => {
            let hash = read_password().await?;
            let actor = users::Actor {
                name: "cli",
                client_ip: None,
            };
            serde_json::to_value(
                users::create(&pool, None, username.trim(), &hash, Role::Superadmin, actor).await?,
            )?
        }
        AdminCommand::SigningKey {
            command: SigningKeyCommand::Rotate,
        } => {
            let tokens = TokenService::new(pool.clone(), &config.identity).await?;
            serde_json::json!({ "kid": tokens.rotate().await? })
        }
        AdminCommand::Audit {
            command: AuditCommand::Verify { tenant },
        } => {
            let chains = match tenant {
                Some(raw) => vec![Some(tenant_arg(&pool, &raw).await?)],
                None => crate::audit::chain::chains(&pool).await?,
            };
            let mut reports = Vec::with_capacity(chains.len());
            for chain in chains {
                reports.push(crate::audit::chain::verify(&pool, chain).await?);
            }
            let ok = reports.iter().all(|r| r.ok);
            let output = serde_json::json!({ "ok": ok, "chains": reports });
            if !ok {
                println!("{}", serde_json::to_string(&output)?);
                bail!("the audit chain is broken (see `broken` above)");
            }
            output
        }
        AdminCommand::Queues { .. } => bail!("queue commands need no database"),
    };
    println!("{}", serde_json::to_string(&output)?);
    Ok(())
}

async fn tenant_arg(pool: &sqlx::PgPool, raw: &str) -> anyhow::Result<TenantId> {
    let tenant: TenantId = raw
        .parse()
        .context("--tenant must be a tenant id (`ten_…`)")?;
    if !tenants::exists(pool, tenant).await? {
        bail!("no tenant {tenant}");
    }
    Ok(tenant)
}

/// The first line of standard input, checked against the password policy and hashed.
async fn read_password() -> anyhow::Result<String> {
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .context("cannot read the password from standard input")?;
    let password = line.trim_end_matches(['\r', '\n']).to_string();
    password::check_policy(&password).map_err(anyhow::Error::msg)?;
    Ok(password::hash(password).await?)
}

fn parse_cidrs(list: &[String]) -> anyhow::Result<Vec<ipnet::IpNet>> {
    list.iter()
        .filter(|e| !e.is_empty())
        .map(|e| {
            e.parse::<ipnet::IpNet>()
                .or_else(|_| e.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| anyhow::anyhow!("--ip-allowlist: `{e}` is not a CIDR or IP address"))
        })
        .collect()
}

/// `admin queues migrate`: classic → quorum queues (`common/src/queue/migrate.rs`).
async fn migrate_queues(config: &Config) -> anyhow::Result<()> {
    let topology = gatehouse_common::queue::Topology::from_config(config);
    let conn = gatehouse_common::queue::connect(&config.amqp_url, "gatehouse-admin")
        .await
        .context("connect to RabbitMQ")?;
    let report = gatehouse_common::queue::migrate::migrate(&conn, &topology).await;
    let _ = conn.close(200, "done".into()).await;
    let report = report.context("migrate the queues")?;
    println!("{}", serde_json::json!({ "queues": report }));
    Ok(())
}
