//! What every handler can reach.

use std::sync::Arc;

use gatehouse_common::{config::Config, queue::Broker, telemetry::PrometheusHandle};
use sqlx::PgPool;
use tokio::sync::Notify;

use crate::{
    identity::{
        jwt::{TokenError, TokenService},
        throttle::LoginThrottle,
    },
    network::{self, TrustedProxies},
};

#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    pub config: Arc<Config>,
    pub broker: Arc<Broker>,
    /// Wakes the outbox relay right after a job commits.
    pub outbox_notify: Arc<Notify>,
    pub metrics: PrometheusHandle,
    pub tokens: Arc<TokenService>,
    pub throttle: Arc<LoginThrottle>,
    pub trusted_proxies: Arc<TrustedProxies>,
    /// Installed translation models (from their manifests), for validating translate jobs.
    pub translation_pairs: Arc<Vec<gatehouse_common::models::TranslationPair>>,
    /// Wakes requests waiting for a job (sync endpoints).
    pub waiter: crate::waiter::JobWaiter,
    /// The time (quota days, resets); tests move it.
    pub clock: gatehouse_common::clock::Clock,
    /// Places for sync requests waiting on their job (`GATEHOUSE_MAX_SYNC_WAITERS`).
    pub sync_waiters: Arc<tokio::sync::Semaphore>,
    /// Wakes the dispatcher (a bulk job was accepted).
    pub dispatch_notify: Arc<Notify>,
    pub rate_limiter: Arc<crate::ratelimit::RateLimiter>,
    /// The audit trail's denial limiter and checkpoint signer.
    pub audit: Arc<crate::audit::Audit>,
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{0}")]
    Config(String),
    #[error("cannot load the token signing keys")]
    Tokens(#[source] TokenError),
}

impl AppState {
    pub async fn new(
        pool: PgPool,
        config: Config,
        metrics: PrometheusHandle,
    ) -> Result<Self, StateError> {
        let identity = &config.identity;
        let trusted_proxies =
            TrustedProxies::parse(&identity.trusted_proxies).map_err(StateError::Config)?;
        network::cors_layer(&identity.cors_origins).map_err(StateError::Config)?;
        let tokens = TokenService::new(pool.clone(), identity)
            .await
            .map_err(StateError::Tokens)?;
        let throttle = LoginThrottle::new(pool.clone(), identity);
        let topology = gatehouse_common::queue::Topology::from_config(&config);
        let broker = Broker::new(&config.amqp_url, "gatehouse-api", topology);
        let translation_pairs = gatehouse_common::models::translation_pairs(
            &config.models_dir,
            &config.translation_models,
        );
        let dispatch_notify = Arc::new(Notify::new());
        let waiter =
            crate::waiter::JobWaiter::start(config.database_url.clone(), dispatch_notify.clone());
        let sync_waiters = Arc::new(tokio::sync::Semaphore::new(
            config.capacity.max_sync_waiters,
        ));
        let rate_limiter = Arc::new(crate::ratelimit::RateLimiter::new(&config.rate_limits));
        let audit = crate::audit::shared(&pool, &config.audit);
        Ok(Self {
            pool,
            config: Arc::new(config),
            broker: Arc::new(broker),
            outbox_notify: Arc::new(Notify::new()),
            metrics,
            tokens: Arc::new(tokens),
            throttle: Arc::new(throttle),
            trusted_proxies: Arc::new(trusted_proxies),
            translation_pairs: Arc::new(translation_pairs),
            waiter,
            clock: gatehouse_common::clock::Clock::system(),
            sync_waiters,
            dispatch_notify,
            rate_limiter,
            audit,
        })
    }
}
