//! Processing one chunk: claim it, run its items through the model for its kind, and commit
//! results, counters and the audit record together.

pub mod moderate;
pub mod segment;
pub mod translate;

use std::time::Instant;

use gatehouse_common::{queue::ChunkMessage, types::JobKind};
use serde_json::json;

use crate::{
    batcher::ModelHandle,
    model::ModelError,
    policy::{PolicyCache, PolicyLoadError},
    store::{self, ChunkEnd, ItemOutcome},
    translator::TranslatorHandle,
};

/// How a delivery ended, which decides ack / retry / dead-letter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Results committed.
    Done,
    /// Already processed (a redelivery): nothing written.
    Duplicate,
    /// Too many attempts: items failed with a reason; the message goes to the dead queue.
    Dead,
}

/// Errors worth retrying: the next attempt may succeed.
#[derive(Debug, thiserror::Error)]
pub enum TransientError {
    #[error("database error")]
    Database(#[from] sqlx::Error),
    #[error("model error")]
    Model(#[from] ModelError),
    #[error("policy error")]
    Policy(#[from] PolicyLoadError),
}

pub struct Pipeline {
    pub pool: sqlx::PgPool,
    /// Every moderation model; each item goes through all of them.
    pub moderation: Vec<ModelHandle>,
    pub policies: PolicyCache,
    /// `None` when no translation model is installed (the worker then takes no translate work).
    pub translation: Option<TranslatorHandle>,
    pub max_attempts: i32,
}

impl Pipeline {
    pub async fn process(&self, chunk: &ChunkMessage) -> Result<Outcome, TransientError> {
        let Some(claim) = store::claim(&self.pool, chunk).await? else {
            return Ok(Outcome::Duplicate);
        };
        if claim.attempts > self.max_attempts {
            return self.give_up(chunk, claim.attempts).await;
        }
        let started = Instant::now();
        let items = store::pending_items(&self.pool, chunk).await?;
        let (outcomes, model) = match chunk.kind {
            JobKind::Moderate => self.moderate(chunk, &items).await?,
            JobKind::Translate => {
                let handle = self.translation.as_ref().ok_or_else(|| {
                    ModelError::Load("no translation model on this worker".into())
                })?;
                let raw = store::job_options(&self.pool, chunk).await?;
                let options: translate::TranslateOptions = match serde_json::from_value(raw) {
                    Ok(o) => o,
                    Err(e) => {
                        // A job the api accepted always has options; fail its items rather than loop.
                        let error = json!({"code": "invalid_options", "message": e.to_string()});
                        let outcomes = items
                            .iter()
                            .map(|(i, _)| (*i, ItemOutcome::Failed(error.clone())))
                            .collect();
                        return self
                            .finish(chunk, outcomes, "none".into(), claim.attempts, started)
                            .await;
                    }
                };
                let texts: Vec<&str> = items.iter().map(|(_, t)| t.as_str()).collect();
                let results = translate::items(handle, &options, &texts).await;
                let outcomes: Vec<(i32, ItemOutcome)> =
                    items.iter().map(|(i, _)| *i).zip(results).collect();
                let models: Vec<&str> = handle.pairs().iter().map(|p| p.model.as_str()).collect();
                (outcomes, models.join(","))
            }
        };
        self.finish(chunk, outcomes, model, claim.attempts, started)
            .await
    }

    /// Runs every moderation model over the chunk's texts (concurrently: each has its own
    /// thread) and judges each item under the job's policy.
    async fn moderate(
        &self,
        chunk: &ChunkMessage,
        items: &[(i32, String)],
    ) -> Result<(Vec<(i32, ItemOutcome)>, String), TransientError> {
        let policy = self.policies.for_chunk(&self.pool, chunk).await?;
        let texts: Vec<String> = items.iter().map(|(_, t)| t.clone()).collect();
        let runs = self
            .moderation
            .iter()
            .map(|model| model.classify(texts.clone()));
        let per_model = futures_util::future::try_join_all(runs).await?;
        let infos: Vec<&crate::model::ModelInfo> =
            self.moderation.iter().map(ModelHandle::info).collect();
        let outcomes = items
            .iter()
            .enumerate()
            .map(|(i, (index, text))| {
                let models: Vec<_> = infos
                    .iter()
                    .zip(&per_model)
                    .filter_map(|(info, scores)| scores.get(i).map(|s| (*info, s)))
                    .collect();
                let result = moderate::verdict(text, &models, &policy);
                let value = serde_json::to_value(result).unwrap_or_default();
                (*index, ItemOutcome::Succeeded(value))
            })
            .collect();
        let names: Vec<String> = infos.iter().map(|i| i.reference()).collect();
        Ok((outcomes, names.join(",")))
    }

    async fn finish(
        &self,
        chunk: &ChunkMessage,
        outcomes: Vec<(i32, ItemOutcome)>,
        model: String,
        attempt: i32,
        started: Instant,
    ) -> Result<Outcome, TransientError> {
        let audit = json!({
            "model": model,
            "items": outcomes.len(),
            "item_start": chunk.item_start,
            "item_end": chunk.item_end,
            "attempt": attempt,
            "duration_ms": started.elapsed().as_millis() as u64,
        });
        let applied =
            store::complete_chunk(&self.pool, chunk, &outcomes, ChunkEnd::Done, audit).await?;
        metrics::histogram!("gatehouse_worker_chunk_seconds", "kind" => chunk.kind.as_str())
            .record(started.elapsed().as_secs_f64());
        match applied {
            Some(applied) => {
                record_items(chunk.kind, applied.succeeded, applied.failed);
                if chunk.kind == JobKind::Moderate {
                    record_verdicts(&outcomes);
                }
                Ok(Outcome::Done)
            }
            None => Ok(Outcome::Duplicate),
        }
    }

    /// Marks the chunk's pending items failed with the reason and ends the chunk as dead.
    async fn give_up(
        &self,
        chunk: &ChunkMessage,
        attempts: i32,
    ) -> Result<Outcome, TransientError> {
        let last = store::last_error(&self.pool, chunk).await?;
        let message = format!(
            "gave up after {} attempts{}",
            attempts - 1,
            last.map(|e| format!(": {e}")).unwrap_or_default()
        );
        let items = store::pending_items(&self.pool, chunk).await?;
        let outcomes: Vec<(i32, ItemOutcome)> = items
            .iter()
            .map(|(index, _)| {
                let error = json!({"code": "attempts_exhausted", "message": message});
                (*index, ItemOutcome::Failed(error))
            })
            .collect();
        let audit = json!({"items": outcomes.len(), "reason": message, "attempts": attempts - 1});
        match store::complete_chunk(&self.pool, chunk, &outcomes, ChunkEnd::Dead, audit).await? {
            Some(applied) => {
                record_items(chunk.kind, applied.succeeded, applied.failed);
                Ok(Outcome::Dead)
            }
            None => Ok(Outcome::Duplicate),
        }
    }
}

/// Verdict counters, from committed results only (a redelivery counts nothing twice).
fn record_verdicts(outcomes: &[(i32, ItemOutcome)]) {
    for (_, outcome) in outcomes {
        let ItemOutcome::Succeeded(result) = outcome else {
            continue;
        };
        let level = result["level"].as_str().unwrap_or("unknown").to_string();
        metrics::counter!("gatehouse_moderation_verdicts_total", "level" => level).increment(1);
        for category in result["categories"].as_array().into_iter().flatten() {
            let category = category.as_str().unwrap_or("unknown").to_string();
            metrics::counter!("gatehouse_moderation_flags_total", "category" => category)
                .increment(1);
        }
    }
}

fn record_items(kind: JobKind, succeeded: i32, failed: i32) {
    metrics::counter!("gatehouse_worker_items_total", "kind" => kind.as_str(), "status" => "succeeded")
        .increment(u64::try_from(succeeded).unwrap_or(0));
    metrics::counter!("gatehouse_worker_items_total", "kind" => kind.as_str(), "status" => "failed")
        .increment(u64::try_from(failed).unwrap_or(0));
}
