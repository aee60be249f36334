//! The Gatehouse worker: consumes chunk messages, batches items across messages onto the
//! model thread, and commits results, counters and audit records before acking.

pub mod batcher;
pub mod consumer;
pub mod detect;
pub mod http;
pub mod model;
pub mod pipeline;
pub mod policy;
mod punctuation;
pub mod translator;
pub mod webhook;

use std::sync::Arc;

use gatehouse_common::{config::Config, queue::Topology};
use sqlx::PgPool;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::{
    batcher::{BatchLimits, ModelHandle},
    consumer::Consumer,
    model::{Classifier, ModelError, OnnxClassifier, init_runtime},
    pipeline::Pipeline,
    policy::PolicyCache,
};

/// Loads ONNX Runtime and every moderation model the config names, each on its own thread.
pub fn load_moderation_models(config: &Config) -> Result<Vec<ModelHandle>, ModelError> {
    let env = init_runtime(&config.ort_dylib_path)?;
    let limits = BatchLimits {
        max_items: config.batch_max_items,
        max_tokens: config.batch_max_tokens,
        max_wait: config.batch_max_wait,
    };
    config
        .moderation_models
        .iter()
        .map(|name| {
            let dir = config.models_dir.join(name);
            let model = OnnxClassifier::load(&env, &dir, config.ort_intra_threads)?;
            let encoder = Arc::new(model.encoder().clone());
            // A second session serves the sync lane, so a sync request never queues behind
            // a bulk batch (GATEHOUSE_SYNC_LANE_SESSIONS=false saves its memory).
            let sync: Option<Box<dyn Classifier>> = if config.sync_lane_sessions {
                Some(Box::new(OnnxClassifier::load(
                    &env,
                    &dir,
                    config.ort_intra_threads,
                )?))
            } else {
                None
            };
            tracing::info!(model = %model.info().reference(), dir = %dir.display(), sync_session = sync.is_some(), "moderation model loaded");
            ModelHandle::spawn(Box::new(model), sync, encoder, limits)
                .map_err(|e| ModelError::Load(format!("cannot start the model thread: {e}")))
        })
        .collect()
}

/// The models a worker serves.
#[derive(Clone)]
pub struct Models {
    pub moderation: Vec<ModelHandle>,
    /// Every translation model found in `GATEHOUSE_MODELS_DIR` (`None`: no translate work).
    pub translation: Option<translator::TranslatorHandle>,
}

/// Loads ONNX Runtime, the moderation model and every installed translation model.
pub fn load_models(config: &Config) -> Result<Models, ModelError> {
    let moderation = load_moderation_models(config)?;
    let env = init_runtime(&config.ort_dylib_path)?;
    let translation = translator::TranslatorHandle::load(
        &env,
        &config.models_dir,
        &config.translation_models,
        config.ort_intra_threads,
    )?;
    if translation.is_none() {
        tracing::warn!(dir = %config.models_dir.display(), "no translation model installed; translate jobs are not consumed");
    }
    Ok(Models {
        moderation,
        translation,
    })
}

/// A running consumer. `stop` is the SIGTERM path; `kill` simulates a crash.
pub struct WorkerHandle {
    shutdown: CancellationToken,
    kill: CancellationToken,
    task: JoinHandle<()>,
}

impl WorkerHandle {
    /// Stop consuming, finish and ack in-flight chunks, exit.
    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = self.task.await;
    }

    /// Drop everything in flight without acking (the broker redelivers it).
    pub async fn kill(self) {
        self.kill.cancel();
        let _ = self.task.await;
    }

    pub async fn wait(self) {
        let _ = self.task.await;
    }
}

/// Starts consuming (and delivering webhooks); `shutdown` is the process-wide token.
pub fn start(
    config: Config,
    pool: PgPool,
    models: Models,
    shutdown: CancellationToken,
) -> WorkerHandle {
    let kill = CancellationToken::new();
    let consumer = Consumer {
        topology: Topology::from_config(&config),
        pipeline: Arc::new(Pipeline {
            pool,
            moderation: models.moderation,
            policies: PolicyCache::default(),
            translation: models.translation,
            max_attempts: config.max_attempts,
            progress_interval: config.webhooks.progress_interval,
            default_retention_days: config.capacity.default_retention_days,
        }),
        config,
    };
    // The webhook delivery role runs beside the consumer, under the same tokens.
    let deliverer = if consumer.config.webhooks.delivery {
        match webhook::Deliverer::new(&consumer.config, consumer.pipeline.pool.clone()) {
            Ok(deliverer) => Some(deliverer),
            Err(error) => {
                tracing::error!(%error, "cannot build the webhook client; webhooks are not delivered by this worker");
                None
            }
        }
    } else {
        None
    };
    let (hook_shutdown, hook_kill) = (shutdown.clone(), kill.clone());
    let consumer_task = consumer.run(shutdown.clone(), kill.clone());
    let task = tokio::spawn(async move {
        let hooks = deliverer.map(|d| tokio::spawn(d.run(hook_shutdown, hook_kill)));
        consumer_task.await;
        if let Some(hooks) = hooks {
            let _ = hooks.await;
        }
    });
    WorkerHandle {
        shutdown,
        kill,
        task,
    }
}
