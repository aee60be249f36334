//! The audit trail in the api: one layer records every request that changes state or reads
//! something sensitive ([`routes::AUDITED`]) and every denied attempt, the chain is verified
//! by [`chain`], its heads are signed by [`checkpoints`], old records are purged by
//! [`retention`]. Domain records (`key.created`, `user.deleted`, …) are written by the store
//! functions in the transaction of the change they describe; the layer's [`scope`] gives them
//! the request's context, and the layer writes a record of its own only when the handler
//! wrote none (a success without a domain record, a denial, an error).
//!
//! Denied and failed requests are recorded at most `GATEHOUSE_AUDIT_DENIED_PER_MINUTE` times
//! per client address per minute on each replica ([`limiter::DeniedLimiter`]); the rest are
//! counted in `gatehouse_api_audit_suppressed_total`, so a flood cannot fill the table.
//!
//! [`scope`]: gatehouse_common::audit::context::scope

pub mod background;
pub mod chain;
pub mod checkpoints;
pub mod limiter;
pub mod retention;
pub mod routes;
pub mod signing;

use std::sync::Arc;

use axum::{
    extract::{FromRequestParts, MatchedPath, Request, State},
    middleware::Next,
    response::Response,
};
use gatehouse_common::{
    audit::{self, Action, ActorKind, Context, context},
    db::{self, Scope},
};

use crate::{network::ClientIp, state::AppState};

/// The audit trail's shared parts.
pub struct Audit {
    pub limiter: limiter::DeniedLimiter,
    pub signer: signing::CheckpointSigner,
}

impl Audit {
    pub fn new(state_pool: &sqlx::PgPool, config: &gatehouse_common::config::AuditConfig) -> Self {
        Self {
            limiter: limiter::DeniedLimiter::new(config.denied_per_minute),
            signer: signing::CheckpointSigner::new(state_pool.clone()),
        }
    }
}

/// Longest user agent kept.
const MAX_USER_AGENT: usize = 200;

/// The middleware (installed with `Router::layer`, so the matched route is known).
pub async fn layer(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let Some(route) = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
    else {
        return next.run(request).await;
    };
    let method = request.method().as_str().to_owned();
    let entry = routes::lookup(&method, &route);
    let (mut parts, body) = request.into_parts();
    let ClientIp(client_ip) = match ClientIp::from_request_parts(&mut parts, &state).await {
        Ok(ip) => ip,
        Err(never) => match never {},
    };
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.chars().take(MAX_USER_AGENT).collect::<String>())
    };
    let ctx = Context {
        request_id: header("x-request-id"),
        user_agent: header("user-agent"),
        client_ip: Some(client_ip),
        target: routes::target(&route, parts.uri.path(), entry.and_then(|e| e.1)),
        ..Context::default()
    };
    let request = Request::from_parts(parts, body);
    let (response, ctx) = context::scope(ctx, next.run(request)).await;
    let status = response.status();
    let denied = matches!(status.as_u16(), 401 | 403 | 404);
    let (action, outcome) = match entry {
        Some((action, _)) if status.is_success() || status.is_redirection() => {
            if ctx.recorded {
                return response;
            }
            (action, "success")
        }
        _ if ctx.recorded_failure || status.is_success() || status.is_redirection() => {
            return response;
        }
        Some((action, _)) => (action, if denied { "denied" } else { "error" }),
        // Reads that are not audited: only their denials (another tenant's id, no
        // credentials) are.
        None if denied => (Action::AccessDenied, "denied"),
        None => return response,
    };
    if outcome != "success" && !state.audit.limiter.allow(client_ip) {
        metrics::counter!("gatehouse_api_audit_suppressed_total").increment(1);
        return response;
    }
    // An `Idempotency-Key` replay changed nothing: recorded, and said so.
    let replayed = response.headers().contains_key("idempotent-replayed");
    if let Err(error) = write(
        &state,
        &ctx,
        Written {
            action,
            outcome,
            status: status.as_u16(),
            replayed,
        },
        &method,
        &route,
    )
    .await
    {
        metrics::counter!("gatehouse_api_audit_write_failures_total").increment(1);
        tracing::error!(error = %db::error_class(&error), %action, "cannot write the audit record");
    }
    response
}

/// What the layer records of one request.
struct Written {
    action: Action,
    outcome: &'static str,
    status: u16,
    /// The response replayed an earlier request (`idempotent-replayed`).
    replayed: bool,
}

async fn write(
    state: &AppState,
    ctx: &Context,
    written: Written,
    method: &str,
    route: &str,
) -> Result<(), sqlx::Error> {
    let Written {
        action,
        outcome,
        status,
        replayed,
    } = written;
    let mut details = serde_json::json!({"method": method, "route": route});
    if replayed {
        details["idempotent_replay"] = serde_json::Value::Bool(true);
    }
    let actor = ctx.actor.clone().unwrap_or_else(|| "anonymous".to_string());
    let scope = ctx.tenant.map_or(Scope::Platform, Scope::Tenant);
    let mut tx = db::begin(&state.pool, scope).await?;
    let inner = async {
        audit::insert(
            &mut tx,
            audit::Record {
                outcome,
                status: (outcome != "success").then_some(status),
                details,
                ..audit::Record::new(ctx.tenant, &actor, action)
            },
        )
        .await
    };
    // The record is written outside the request's scope: give it the context explicitly.
    let (result, _) = context::scope(
        Context {
            actor_kind: ctx.actor_kind.or(Some(ActorKind::Anonymous)),
            actor: Some(actor.clone()),
            ..ctx.clone()
        },
        inner,
    )
    .await;
    result?;
    tx.commit().await
}

/// The shared parts, for [`AppState`].
pub fn shared(pool: &sqlx::PgPool, config: &gatehouse_common::config::AuditConfig) -> Arc<Audit> {
    Arc::new(Audit::new(pool, config))
}
