//! What a job item comes out as. Every type here is serialised *and* deserialised by the same
//! definition: the worker stores results, the api renders and reads them, and nobody indexes
//! a `serde_json::Value` by string keys.
//!
//! Moderation results are stored compactly ([`StoredModeration`]: the models' raw scores per
//! window and the rule hits, ~100 bytes in `job_results.result`) and rendered on read into the
//! full [`ModerationResult`] with the chunk's models and the job's policy version
//! (`moderation::verdict`). Translation results are stored as they are.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::options::Lang;
use crate::moderation::{Category, Level};

/// A model as results name it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelRef {
    pub name: String,
    pub sha256: String,
    /// `<name>@<first 12 hex digits of sha256>`.
    #[serde(rename = "ref")]
    pub reference: String,
}

impl ModelRef {
    pub fn new(name: &str, sha256: &str) -> Self {
        let prefix: String = sha256.chars().take(12).collect();
        Self {
            name: name.to_string(),
            sha256: sha256.to_string(),
            reference: format!("{name}@{prefix}"),
        }
    }
}

/// A moderation model as a chunk was judged by it: its reference and its label order (which
/// is how its stored scores are read). Stored once per chunk (`job_chunks.models`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkModel {
    #[serde(flatten)]
    pub model: ModelRef,
    pub labels: Vec<String>,
}

/// A deterministic detector's match, in original character offsets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RuleHit {
    /// A PII rule (`email`, `cn_mobile`, ...).
    Pii { rule: String, start: u32, end: u32 },
    /// The tenant blocklist: `term` indexes the blocklist of the job's policy version.
    Blocklist { term: u32, start: u32, end: u32 },
}

/// What the worker stores for one moderated item: the inputs of the verdict, not the verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredModeration {
    /// Per model (in the chunk's model order), per window, one probability per label.
    pub scores: Vec<Vec<Vec<f32>>>,
    pub rules: Vec<RuleHit>,
}

/// Which detector fired, as a result lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "detector", rename_all = "snake_case")]
pub enum Signal {
    Model {
        model: String,
        label: String,
        category: Category,
        score: f64,
    },
    Pii {
        rule: String,
        category: Category,
        level: Level,
        start: u32,
        end: u32,
    },
    Blocklist {
        term: String,
        category: Category,
        level: Level,
        start: u32,
        end: u32,
    },
}

/// The policy version a result was judged by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyRef {
    pub version: i32,
}

/// One category's score in one model window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CategoryScore {
    pub category: Category,
    pub score: f64,
}

/// The top categories of one model window (long texts are several windows).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WindowExplanation {
    pub model: String,
    pub window: usize,
    pub top: Vec<CategoryScore>,
}

/// The signal that set the result's level.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecidedBy {
    pub category: Category,
    pub level: Level,
    /// `model`, `pii` or `blocklist`.
    pub detector: String,
    /// The model (for `model`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The model window whose score decided (for `model`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<usize>,
    /// The model's own label that decided (for `model`; e.g. `insult` for a toxicity model).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// The deciding score (for `model`) and the policy threshold it reached for `level`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
    /// The PII rule or blocklist term (for rules).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// Index of the deciding entry in the result's `signals`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<usize>,
}

/// Why a flagged result is flagged: what decided, and the top category scores of the
/// windows that scored highest (at most a few per model, the deciding window always among
/// them, in model then window order; `ModerationResult::windows` says how many there were).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Explanation {
    pub decided_by: DecidedBy,
    pub windows: Vec<WindowExplanation>,
}

/// A moderation verdict in the Qwen3Guard taxonomy, as the api serves it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModerationResult {
    pub flagged: bool,
    pub level: Level,
    /// Enabled categories at `controversial` or worse, in taxonomy order.
    pub categories: Vec<Category>,
    pub category_levels: BTreeMap<Category, Level>,
    /// Every category's score in [0, 1] (raised to its level's threshold where a rule matched).
    pub scores: BTreeMap<Category, f64>,
    /// Which detectors fired.
    pub signals: Vec<Signal>,
    /// The English toxicity model's own labels, when it ran.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub toxicity: BTreeMap<String, f64>,
    pub models: Vec<ModelRef>,
    pub policy: PolicyRef,
    /// Most model windows the text needed (the worst window counts).
    pub windows: usize,
    /// Flagged results only: which signal decided and the top scores of each window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub explanation: Option<Explanation>,
}

/// One translated sentence (or passed-through symbol run) and its source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Segment {
    pub source: String,
    pub text: String,
}

/// A translation of one item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TranslationResult {
    pub text: String,
    pub source_lang: Lang,
    pub target_lang: Lang,
    /// The model that translated; `None` when the text already was in the target language.
    pub model: Option<String>,
    pub segments: Vec<Segment>,
}

/// Why an item failed: a stable code and a human message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ItemError {
    pub code: String,
    pub message: String,
}

impl ItemError {
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            code: code.into(),
            message: message.into(),
        }
    }
}

/// A chained item as stored: its moderation, and its translation or why it has none.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredChained {
    pub moderation: StoredModeration,
    pub translation: Option<TranslationResult>,
    pub not_translated_reason: Option<String>,
}

/// A chained item (`moderate_translate`) as the api serves it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChainedResult {
    pub moderation: ModerationResult,
    pub translated: bool,
    pub translation: Option<TranslationResult>,
    /// Why it was not translated (its level above the job's `max_level`, or a failure).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_translated_reason: Option<String>,
}

/// What a worker stores for one item: one `job_results` row.
#[derive(Debug, Clone, PartialEq)]
pub enum StoredOutcome {
    Moderated(StoredModeration),
    Translated(TranslationResult),
    Chained(StoredChained),
    Failed(ItemError),
}

/// An item's result as the api serves it (`result` of a results line).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ItemResult {
    Moderation(Box<ModerationResult>),
    Chained(Box<ChainedResult>),
    Translation(TranslationResult),
    /// A result stored by a version before the compact encoding, as it was.
    Legacy(serde_json::Value),
}

impl ItemResult {
    /// The full result of a stored success: moderation verdicts are computed from the
    /// stored scores with the chunk's `models` and the job's `policy`.
    pub fn render(
        stored: StoredOutcome,
        models: &[ChunkModel],
        policy: &crate::moderation::Policy,
    ) -> Option<ItemResult> {
        match stored {
            StoredOutcome::Moderated(m) => Some(ItemResult::Moderation(Box::new(
                crate::moderation::verdict(models, &m, policy),
            ))),
            StoredOutcome::Translated(t) => Some(ItemResult::Translation(t)),
            StoredOutcome::Chained(c) => Some(ItemResult::Chained(Box::new(ChainedResult {
                moderation: crate::moderation::verdict(models, &c.moderation, policy),
                translated: c.translation.is_some(),
                translation: c.translation,
                not_translated_reason: c.not_translated_reason,
            }))),
            StoredOutcome::Failed(_) => None,
        }
    }

    pub fn as_moderation(&self) -> Option<&ModerationResult> {
        match self {
            ItemResult::Moderation(m) => Some(m),
            _ => None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("result encoding failed: {0}")]
    Encode(String),
    #[error("stored result is unreadable: {0}")]
    Decode(String),
}

/// The on-disk tag of `job_results.result` (first byte), then the postcard body.
const MODERATION_V1: u8 = 1;
const TRANSLATION_V1: u8 = 2;
const CHAINED_V1: u8 = 3;

impl StoredOutcome {
    /// `job_results.result` for a success (`None` for a failure).
    pub fn encode(&self) -> Result<Option<Vec<u8>>, CodecError> {
        let (tag, body) = match self {
            StoredOutcome::Moderated(m) => (MODERATION_V1, postcard::to_allocvec(m)),
            StoredOutcome::Translated(t) => (TRANSLATION_V1, postcard::to_allocvec(t)),
            StoredOutcome::Chained(c) => (CHAINED_V1, postcard::to_allocvec(c)),
            StoredOutcome::Failed(_) => return Ok(None),
        };
        let body = body.map_err(|e| CodecError::Encode(e.to_string()))?;
        let mut out = Vec::with_capacity(body.len() + 1);
        out.push(tag);
        out.extend_from_slice(&body);
        Ok(Some(out))
    }

    /// A stored success back from `job_results.result`.
    pub fn decode(bytes: &[u8]) -> Result<StoredOutcome, CodecError> {
        let (tag, body) = bytes
            .split_first()
            .ok_or_else(|| CodecError::Decode("empty".into()))?;
        let decode = |e: postcard::Error| CodecError::Decode(e.to_string());
        match *tag {
            MODERATION_V1 => Ok(StoredOutcome::Moderated(
                postcard::from_bytes(body).map_err(decode)?,
            )),
            TRANSLATION_V1 => Ok(StoredOutcome::Translated(
                postcard::from_bytes(body).map_err(decode)?,
            )),
            CHAINED_V1 => Ok(StoredOutcome::Chained(
                postcard::from_bytes(body).map_err(decode)?,
            )),
            other => Err(CodecError::Decode(format!("unknown result tag {other}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_outcomes_round_trip_compactly() {
        let stored = StoredOutcome::Moderated(StoredModeration {
            scores: vec![
                vec![vec![0.01; 9]],
                vec![vec![0.5, 0.1, 0.2, 0.0, 0.9, 0.0]],
            ],
            rules: vec![RuleHit::Pii {
                rule: "email".into(),
                start: 3,
                end: 20,
            }],
        });
        let bytes = stored.encode().expect("encode").expect("bytes");
        assert!(bytes.len() < 100, "{} bytes", bytes.len());
        assert_eq!(StoredOutcome::decode(&bytes).expect("decode"), stored);
        let t = StoredOutcome::Translated(TranslationResult {
            text: "Hello".into(),
            source_lang: Lang::Zh,
            target_lang: Lang::En,
            model: Some("cn2en-gru@abc".into()),
            segments: vec![Segment {
                source: "你好".into(),
                text: "Hello".into(),
            }],
        });
        let bytes = t.encode().expect("encode").expect("bytes");
        assert_eq!(StoredOutcome::decode(&bytes).expect("decode"), t);
        assert!(StoredOutcome::decode(&[9, 1, 2]).is_err());
        assert!(
            StoredOutcome::Failed(ItemError::new("x", "y"))
                .encode()
                .expect("none")
                .is_none()
        );
    }

    #[test]
    fn results_deserialize_what_they_serialize() {
        let json = serde_json::json!({
            "flagged": true, "level": "unsafe", "categories": ["pii"],
            "category_levels": {"pii": "unsafe"}, "scores": {"pii": 1.0},
            "signals": [{"detector": "pii", "rule": "email", "category": "pii", "level": "unsafe", "start": 0, "end": 5}],
            "models": [{"name": "m", "sha256": "ab", "ref": "m@ab"}],
            "policy": {"version": 2}, "windows": 1
        });
        let typed: ModerationResult = serde_json::from_value(json.clone()).expect("typed");
        assert_eq!(serde_json::to_value(&typed).expect("json"), json);
    }
}

/// One line of a job's results stream (`GET /v1/jobs/{id}/results`, NDJSON): what the api
/// writes and the `gatehouse` client reads.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ResultLine {
    pub index: i32,
    pub custom_id: Option<String>,
    pub status: super::ItemStatus,
    /// The item's result (moderation, translation or both; see the README).
    #[schema(value_type = Option<Object>)]
    pub result: Option<ItemResult>,
    pub error: Option<ItemError>,
}
