//! `manifest.json`: what a model directory holds and how to feed it, so another model can be
//! dropped in without code changes.

use std::{collections::BTreeMap, path::Path};

use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::ModelError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaddingSide {
    Left,
    Right,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    Sigmoid,
    Softmax,
    None,
}

/// How a batch is padded: every row to `max_length` (fixed-shape graphs), or to the longest
/// row of the batch (dynamic graphs; texts are sorted by length first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PadTo {
    #[default]
    MaxLength,
    Longest,
}

/// What happens to a text longer than the model's window: cut to `max_length`, or split into
/// windows that are all scored (the verdict takes the worst window).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LongText {
    #[default]
    Truncate,
    Chunk,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ManifestFiles {
    pub model: String,
    pub tokenizer: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Manifest {
    pub schema_version: u32,
    pub name: String,
    pub task: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub source: String,
    #[serde(default)]
    pub license: String,
    pub labels: Vec<String>,
    pub activation: Activation,
    pub threshold: f32,
    pub max_length: usize,
    pub padding_side: PaddingSide,
    pub truncation_side: PaddingSide,
    pub pad_token_id: i64,
    #[serde(default)]
    pub unk_token: Option<String>,
    #[serde(default)]
    pub drop_unknown_tokens: bool,
    #[serde(default)]
    pub pad_to: PadTo,
    #[serde(default)]
    pub long_text: LongText,
    /// Prepended to every text before tokenization (e5 models want `query: `).
    #[serde(default)]
    pub prefix: String,
    /// Wrapped around every window (`<s> … </s>`) when set; counted in `max_length`.
    #[serde(default)]
    pub bos_token_id: Option<i64>,
    #[serde(default)]
    pub eos_token_id: Option<i64>,
    /// Logical input → graph input name (`input_ids`, optionally `attention_mask`).
    pub inputs: BTreeMap<String, String>,
    pub output: String,
    pub files: ManifestFiles,
    pub sha256: String,
}

impl Manifest {
    pub const FILE: &'static str = "manifest.json";

    /// Reads and checks `dir/manifest.json`, and verifies the files against its hash.
    pub fn load(dir: &Path) -> Result<Self, ModelError> {
        let path = dir.join(Self::FILE);
        let raw = std::fs::read_to_string(&path).map_err(|e| ModelError::Missing {
            dir: dir.display().to_string(),
            message: format!("{}: {e}", path.display()),
        })?;
        let manifest: Manifest = serde_json::from_str(&raw).map_err(|e| ModelError::Manifest {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        manifest.check(&path)?;
        let found = manifest.content_hash(dir)?;
        if !found.eq_ignore_ascii_case(&manifest.sha256) {
            return Err(ModelError::HashMismatch {
                dir: dir.display().to_string(),
                expected: manifest.sha256.clone(),
                found,
            });
        }
        Ok(manifest)
    }

    fn check(&self, path: &Path) -> Result<(), ModelError> {
        let fail = |message: &str| ModelError::Manifest {
            path: path.display().to_string(),
            message: message.to_string(),
        };
        if self.schema_version != 1 {
            return Err(fail("unsupported schema_version (expected 1)"));
        }
        if self.task != "text-classification" {
            return Err(fail("task must be `text-classification`"));
        }
        if self.labels.is_empty() {
            return Err(fail("labels must not be empty"));
        }
        if self.max_length == 0 {
            return Err(fail("max_length must be > 0"));
        }
        if !(0.0..=1.0).contains(&self.threshold) {
            return Err(fail("threshold must be within [0, 1]"));
        }
        if !self.inputs.contains_key("input_ids") {
            return Err(fail("inputs must name `input_ids`"));
        }
        let specials =
            usize::from(self.bos_token_id.is_some()) + usize::from(self.eos_token_id.is_some());
        if self.max_length <= specials + 1 {
            return Err(fail(
                "max_length must leave room for tokens besides bos/eos",
            ));
        }
        if self.drop_unknown_tokens && self.unk_token.is_none() {
            return Err(fail("drop_unknown_tokens needs unk_token"));
        }
        Ok(())
    }

    /// SHA-256 of the model file's bytes followed by the tokenizer file's bytes.
    pub fn content_hash(&self, dir: &Path) -> Result<String, ModelError> {
        let mut hasher = Sha256::new();
        for file in [&self.files.model, &self.files.tokenizer] {
            let bytes = std::fs::read(dir.join(file)).map_err(|e| ModelError::Missing {
                dir: dir.display().to_string(),
                message: format!("{file}: {e}"),
            })?;
            hasher.update(&bytes);
        }
        Ok(hex::encode(hasher.finalize()))
    }
}
