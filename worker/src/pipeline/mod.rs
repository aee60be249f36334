//! Processing one chunk: claim it (one statement), run its items through the models for its
//! kind, and commit results, counters and the audit record (one statement). Errors know their
//! kind: transient ones are retried by the consumer; permanent ones (unreadable options or
//! policy) fail the chunk's items with the reason at once.

pub mod moderate;
pub mod segment;
pub mod translate;

use std::time::Instant;

use gatehouse_common::{
    db::error_class,
    job::{
        options::{JobOptions, ModerateTranslateOptions},
        result::{ChunkModel, CodecError, ItemError, StoredChained, StoredOutcome},
        store::{self, Applied, ChunkEnd, Claim, CompleteError, Completion},
    },
    moderation,
    queue::ChunkMessage,
    types::JobKind,
};
use serde_json::json;
use tracing::Instrument;

use crate::{
    batcher::ModelHandle,
    model::ModelError,
    policy::{PolicyCache, PolicyLoadError},
    translator::TranslatorHandle,
};

/// How a delivery ended, which decides ack / retry / dead-letter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Results committed.
    Done,
    /// Already processed (a redelivery): nothing written.
    Duplicate,
    /// Given up (attempts exhausted, or a permanent error): items failed with a reason; the
    /// message goes to the dead-letter queue.
    Dead,
}

/// Errors worth retrying: the next attempt may succeed.
#[derive(Debug, thiserror::Error)]
pub enum TransientError {
    /// Logged by class only: a database message can quote stored values.
    #[error("database error ({})", error_class(.0))]
    Database(sqlx::Error),
    #[error("model error")]
    Model(#[from] ModelError),
    /// `GATEHOUSE_CHUNK_DEADLINE_MS` passed since the delivery: abandoned before RabbitMQ's
    /// consumer timeout would close the channel (and every other delivery on it).
    #[error("chunk deadline exceeded (GATEHOUSE_CHUNK_DEADLINE_MS)")]
    Deadline,
}

impl From<sqlx::Error> for TransientError {
    fn from(e: sqlx::Error) -> Self {
        TransientError::Database(e)
    }
}

impl From<CompleteError> for TransientError {
    fn from(e: CompleteError) -> Self {
        match e {
            CompleteError::Database(e) => TransientError::Database(e),
            // Encoding our own results cannot fail for a reason a retry would fix, but it is
            // not the items' fault either: keep retrying until the attempts run out.
            CompleteError::Codec(e) => TransientError::Model(ModelError::Inference(e.to_string())),
        }
    }
}

impl From<CodecError> for TransientError {
    fn from(e: CodecError) -> Self {
        TransientError::Model(ModelError::Inference(e.to_string()))
    }
}

pub struct Pipeline {
    pub pool: sqlx::PgPool,
    /// Every moderation model; each item goes through all of them.
    pub moderation: Vec<ModelHandle>,
    pub policies: PolicyCache,
    /// `None` when no translation model is installed (the worker then takes no translate work).
    pub translation: Option<TranslatorHandle>,
    pub max_attempts: i32,
    /// `GATEHOUSE_WEBHOOK_PROGRESS_INTERVAL_SECS` (job.progress webhook events).
    pub progress_interval: std::time::Duration,
    /// `GATEHOUSE_DEFAULT_RETENTION_DAYS` (the job object of a webhook event shows its expiry).
    pub default_retention_days: i32,
}

/// What a chunk's items came out as, and the models that judged them.
struct Processed {
    outcomes: Vec<(i32, StoredOutcome)>,
    models: Vec<ChunkModel>,
    /// For the verdict metrics.
    policy: Option<std::sync::Arc<crate::policy::CompiledPolicy>>,
    /// `name@hash` list for the audit record.
    model_names: String,
}

/// A failed attempt the consumer retries, with the attempt number (0: not even claimed)
/// that picks its backoff tier.
#[derive(Debug, thiserror::Error)]
#[error("attempt {attempt}: {error}")]
pub struct Failure {
    pub attempt: i32,
    #[source]
    pub error: TransientError,
}

/// What an error means for the delivery — the error's kind decides, never the call site.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The next attempt may succeed: retry with backoff.
    Transient,
    /// No attempt can succeed: fail the items with the reason, dead-letter the message.
    Permanent,
}

impl PolicyLoadError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            PolicyLoadError::Database(_) => ErrorKind::Transient,
            PolicyLoadError::Invalid { .. } => ErrorKind::Permanent,
        }
    }
}

impl Pipeline {
    /// Claims and processes one chunk. Work after the claim is abandoned at `deadline` (a
    /// transient failure: retried), so no delivery outlives RabbitMQ's consumer timeout.
    pub async fn process(
        &self,
        chunk: &ChunkMessage,
        deadline: tokio::time::Instant,
    ) -> Result<Outcome, Failure> {
        let cached = self.policies.cached_versions(chunk.tenant_id);
        let claim = store::claim(&self.pool, chunk, &cached)
            .instrument(tracing::info_span!("claim"))
            .await
            .map_err(|e| Failure {
                attempt: 0,
                error: e.into(),
            })?;
        let Some(claim) = claim else {
            return Ok(Outcome::Duplicate);
        };
        let attempt = claim.attempts;
        if claim.attempts > self.max_attempts {
            // Not under the deadline: giving up must always be possible.
            let reason = format!(
                "gave up after {} attempts{}",
                claim.attempts - 1,
                claim
                    .last_error
                    .as_deref()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default()
            );
            return self
                .give_up(chunk, &claim, ItemError::new("attempts_exhausted", reason))
                .await
                .map_err(|error| Failure { attempt, error });
        }
        match tokio::time::timeout_at(deadline, self.run(chunk, &claim)).await {
            Ok(result) => result.map_err(|error| Failure { attempt, error }),
            Err(_) => {
                metrics::counter!("gatehouse_worker_chunk_deadline_exceeded_total").increment(1);
                Err(Failure {
                    attempt,
                    error: TransientError::Deadline,
                })
            }
        }
    }

    async fn run(&self, chunk: &ChunkMessage, claim: &Claim) -> Result<Outcome, TransientError> {
        if claim.started_job {
            metrics::histogram!("gatehouse_queue_wait_seconds", "lane" => chunk.lane.as_str())
                .record(claim.waited.as_secs_f64());
        }
        // Queue wait (accepted → claimed), on the chunk's span.
        tracing::info!(
            queue_wait_ms = claim.waited.as_millis() as u64,
            attempt = claim.attempts,
            items = claim.items.len(),
            "claimed"
        );
        // …and as a span of its own in the OTLP export.
        gatehouse_common::trace::record_elapsed("queue_wait", claim.waited);
        let started = Instant::now();
        let options = match &claim.options {
            Ok(options) => options.clone(),
            Err(message) => {
                let error = ItemError::new("invalid_options", message.clone());
                return self.give_up(chunk, claim, error).await;
            }
        };
        let processed = match options {
            JobOptions::Moderate(_) => match self.moderate(chunk, claim).await {
                Ok(p) => p,
                Err(Step::Permanent(error)) => return self.give_up(chunk, claim, error).await,
                Err(Step::Transient(e)) => return Err(e),
            },
            JobOptions::Translate(options) => {
                let handle = self.translator()?;
                let texts: Vec<&str> = claim.items.iter().map(|(_, t)| t.as_str()).collect();
                let results = translate::items(handle, &options, &texts)
                    .instrument(tracing::info_span!(
                        "inference",
                        items = texts.len(),
                        translate = true
                    ))
                    .await;
                Processed {
                    outcomes: claim.items.iter().map(|(i, _)| *i).zip(results).collect(),
                    models: Vec::new(),
                    policy: None,
                    model_names: translator_names(handle),
                }
            }
            JobOptions::ModerateTranslate(options) => {
                let handle = self.translator()?;
                let moderated = match self.moderate(chunk, claim).await {
                    Ok(p) => p,
                    Err(Step::Permanent(error)) => return self.give_up(chunk, claim, error).await,
                    Err(Step::Transient(e)) => return Err(e),
                };
                chain(handle, &options, claim, moderated).await
            }
        };
        let audit = json!({
            "trace_id": gatehouse_common::trace::current().map(|t| t.trace_id_hex()),
            "model": processed.model_names,
            "items": processed.outcomes.len(),
            "item_start": chunk.item_start,
            "item_end": chunk.item_end,
            "attempt": claim.attempts,
            "duration_ms": started.elapsed().as_millis() as u64,
        });
        let store_span = tracing::info_span!("store", items = processed.outcomes.len());
        let applied = store::complete(
            &self.pool,
            Completion {
                chunk,
                outcomes: &processed.outcomes,
                end: ChunkEnd::Done,
                models: &processed.models,
                actor: &worker_actor(),
                audit,
                progress_interval: self.progress_interval,
                default_retention_days: self.default_retention_days,
            },
        )
        .instrument(store_span)
        .await?;
        metrics::histogram!("gatehouse_worker_chunk_seconds", "kind" => chunk.kind.as_str())
            .record(started.elapsed().as_secs_f64());
        match applied {
            Some(applied) => {
                record_items(chunk.kind, applied);
                if let Some(policy) = &processed.policy {
                    record_verdicts(&processed.models, &processed.outcomes, policy);
                }
                Ok(Outcome::Done)
            }
            None => Ok(Outcome::Duplicate),
        }
    }

    /// Runs every moderation model over the chunk's texts (concurrently: each has its own
    /// thread) and stores each item's scores and rule hits.
    async fn moderate(&self, chunk: &ChunkMessage, claim: &Claim) -> Result<Processed, Step> {
        let policy = self
            .policies
            .compiled(
                &self.pool,
                chunk.tenant_id,
                claim.policy_version,
                claim.policy.clone(),
            )
            .await
            .map_err(|e| match (e.kind(), e) {
                (ErrorKind::Transient, PolicyLoadError::Database(db)) => Step::Transient(db.into()),
                (_, e) => Step::Permanent(ItemError::new("invalid_policy", e.to_string())),
            })?;
        let texts: Vec<String> = claim.items.iter().map(|(_, t)| t.clone()).collect();
        let runs = self
            .moderation
            .iter()
            .map(|model| model.classify_in(texts.clone(), chunk.lane));
        let per_model = futures_util::future::try_join_all(runs)
            .instrument(tracing::info_span!(
                "inference",
                items = texts.len(),
                models = self.moderation.len()
            ))
            .await
            .map_err(|e| Step::Transient(e.into()))?;
        let models: Vec<ChunkModel> = self
            .moderation
            .iter()
            .map(|m| moderate::chunk_model(m.info()))
            .collect();
        let outcomes = claim
            .items
            .iter()
            .enumerate()
            .map(|(i, (index, text))| {
                let scores: Vec<_> = per_model.iter().filter_map(|s| s.get(i)).collect();
                let rules = moderate::rule_hits(text, &policy);
                (
                    *index,
                    StoredOutcome::Moderated(moderate::stored(&scores, rules)),
                )
            })
            .collect();
        let names: Vec<&str> = models.iter().map(|m| m.model.reference.as_str()).collect();
        Ok(Processed {
            outcomes,
            model_names: names.join(","),
            models,
            policy: Some(policy),
        })
    }

    fn translator(&self) -> Result<&TranslatorHandle, ModelError> {
        self.translation
            .as_ref()
            .ok_or_else(|| ModelError::Load("no translation model on this worker".into()))
    }

    /// Fails the chunk's pending items with `error`, ends the chunk as dead (its message then
    /// goes to the dead-letter queue).
    async fn give_up(
        &self,
        chunk: &ChunkMessage,
        claim: &Claim,
        error: ItemError,
    ) -> Result<Outcome, TransientError> {
        let outcomes: Vec<(i32, StoredOutcome)> = claim
            .items
            .iter()
            .map(|(index, _)| (*index, StoredOutcome::Failed(error.clone())))
            .collect();
        let audit = json!({
            "items": outcomes.len(),
            "reason": error.message,
            "code": error.code,
            "attempts": claim.attempts,
        });
        let applied = store::complete(
            &self.pool,
            Completion {
                chunk,
                outcomes: &outcomes,
                end: ChunkEnd::Dead,
                models: &[],
                actor: &worker_actor(),
                audit,
                progress_interval: self.progress_interval,
                default_retention_days: self.default_retention_days,
            },
        )
        .await?;
        match applied {
            Some(applied) => {
                record_items(chunk.kind, applied);
                Ok(Outcome::Dead)
            }
            None => Ok(Outcome::Duplicate),
        }
    }
}

fn translator_names(handle: &TranslatorHandle) -> String {
    let models: Vec<&str> = handle.pairs().iter().map(|p| p.model.as_str()).collect();
    models.join(",")
}

/// The second step of a chained job: items whose verdict (with the job's policy) is at most
/// `max_level` are translated; the others keep their moderation and say why they were not.
/// A failed translation fails the item (so `retry` runs it again).
async fn chain(
    handle: &TranslatorHandle,
    options: &ModerateTranslateOptions,
    claim: &Claim,
    moderated: Processed,
) -> Processed {
    let policy = moderated
        .policy
        .clone()
        .map(|p| p.policy.clone())
        .unwrap_or_default();
    let texts: std::collections::HashMap<i32, &str> =
        claim.items.iter().map(|(i, t)| (*i, t.as_str())).collect();
    let mut eligible: Vec<usize> = Vec::new();
    let mut reasons: Vec<Option<String>> = Vec::with_capacity(moderated.outcomes.len());
    for (n, (_, outcome)) in moderated.outcomes.iter().enumerate() {
        let reason = match outcome {
            StoredOutcome::Moderated(stored) => {
                let level = moderation::verdict(&moderated.models, stored, &policy).level;
                if level <= options.max_level {
                    eligible.push(n);
                    None
                } else {
                    Some(format!(
                        "moderated {}, above the job's max_level ({})",
                        level.as_str(),
                        options.max_level.as_str()
                    ))
                }
            }
            _ => None,
        };
        reasons.push(reason);
    }
    let eligible_texts: Vec<&str> = eligible
        .iter()
        .map(|n| texts.get(&moderated.outcomes[*n].0).copied().unwrap_or(""))
        .collect();
    let translated = translate::items(handle, &options.translate(), &eligible_texts)
        .instrument(tracing::info_span!(
            "inference",
            items = eligible_texts.len(),
            translate = true
        ))
        .await;
    let mut translations: Vec<Option<StoredOutcome>> =
        (0..moderated.outcomes.len()).map(|_| None).collect();
    for (n, outcome) in eligible.into_iter().zip(translated) {
        translations[n] = Some(outcome);
    }
    let outcomes = moderated
        .outcomes
        .into_iter()
        .zip(translations)
        .zip(reasons)
        .map(|(((index, outcome), translation), reason)| {
            let StoredOutcome::Moderated(moderation) = outcome else {
                return (index, outcome);
            };
            let chained = match translation {
                Some(StoredOutcome::Translated(t)) => StoredOutcome::Chained(StoredChained {
                    moderation,
                    translation: Some(t),
                    not_translated_reason: None,
                }),
                Some(StoredOutcome::Failed(error)) => StoredOutcome::Failed(error),
                _ => StoredOutcome::Chained(StoredChained {
                    moderation,
                    translation: None,
                    not_translated_reason: reason,
                }),
            };
            (index, chained)
        })
        .collect();
    Processed {
        outcomes,
        model_names: format!("{},{}", moderated.model_names, translator_names(handle)),
        models: moderated.models,
        policy: moderated.policy,
    }
}

/// A step's failure: retry it, or fail the items for good.
enum Step {
    Transient(TransientError),
    Permanent(ItemError),
}

/// Verdict counters, from committed results only (a redelivery counts nothing twice).
fn record_verdicts(
    models: &[ChunkModel],
    outcomes: &[(i32, StoredOutcome)],
    policy: &crate::policy::CompiledPolicy,
) {
    for (_, outcome) in outcomes {
        let item = match outcome {
            StoredOutcome::Moderated(item) => item,
            StoredOutcome::Chained(chained) => &chained.moderation,
            _ => continue,
        };
        let verdict = moderation::verdict(models, item, &policy.policy);
        metrics::counter!("gatehouse_moderation_verdicts_total", "level" => verdict.level.as_str())
            .increment(1);
        for category in verdict.categories {
            metrics::counter!("gatehouse_moderation_flags_total", "category" => category.as_str())
                .increment(1);
        }
    }
}

fn record_items(kind: JobKind, applied: Applied) {
    metrics::counter!("gatehouse_worker_items_total", "kind" => kind.as_str(), "status" => "succeeded")
        .increment(u64::try_from(applied.succeeded).unwrap_or(0));
    metrics::counter!("gatehouse_worker_items_total", "kind" => kind.as_str(), "status" => "failed")
        .increment(u64::try_from(applied.failed).unwrap_or(0));
}

/// The audit actor of this process: `worker:<host>:<pid>`.
pub fn worker_actor() -> String {
    static ID: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    ID.get_or_init(|| {
        let host = std::fs::read_to_string("/etc/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "unknown".into());
        format!("worker:{host}:{}", std::process::id())
    })
    .clone()
}
