//! `manifest.json` of a translation model (`docs/SEQ2SEQ_MANIFEST.md`).

use std::{collections::BTreeMap, path::Path};

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::model::ModelError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceUnknown {
    Drop,
    Keep,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Detokenize {
    JoinSpaces,
    Tokenizer,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StateKind {
    Recurrent,
    PastKeyValues,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Logits {
    LogProbs,
    Raw,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Tokenizers {
    pub source: String,
    pub target: String,
}

#[derive(Debug, Clone, Copy, Deserialize)]
pub struct Tokens {
    pub decoder_start: i64,
    pub eos: i64,
    pub pad: i64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct EncoderSpec {
    pub file: String,
    pub inputs: BTreeMap<String, Option<String>>,
    pub outputs: BTreeMap<String, Option<String>>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RecurrentSpec {
    pub initial: String,
    pub input: String,
    pub output: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct PastSpec {
    pub layers: usize,
    pub heads: usize,
    pub head_dim: usize,
    pub input_prefix: String,
    pub output_prefix: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct DecoderSpec {
    pub state: StateKind,
    pub file: String,
    #[serde(default)]
    pub with_past_file: Option<String>,
    #[serde(default)]
    pub merged_file: Option<String>,
    pub inputs: BTreeMap<String, Option<String>>,
    pub outputs: BTreeMap<String, Option<String>>,
    pub logits: Logits,
    #[serde(default)]
    pub recurrent: Option<RecurrentSpec>,
    #[serde(default)]
    pub past: Option<PastSpec>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct TranslationManifest {
    pub schema_version: u32,
    pub name: String,
    pub task: String,
    pub source_lang: String,
    pub target_lang: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub source: String,
    #[serde(default)]
    pub license: String,
    pub tokenizers: Tokenizers,
    pub source_unknown: SourceUnknown,
    pub append_eos_to_source: bool,
    pub detokenize: Detokenize,
    pub tokens: Tokens,
    pub max_source_tokens: usize,
    pub max_new_tokens: usize,
    pub encoder: EncoderSpec,
    pub decoder: DecoderSpec,
    pub files_sha256: BTreeMap<String, String>,
}

/// A named input or output the manifest may leave out (`null`).
pub fn name<'a>(map: &'a BTreeMap<String, Option<String>>, key: &str) -> Option<&'a str> {
    map.get(key).and_then(|v| v.as_deref())
}

impl TranslationManifest {
    pub fn load(dir: &Path) -> Result<Self, ModelError> {
        let path = dir.join("manifest.json");
        let raw = std::fs::read_to_string(&path).map_err(|e| ModelError::Missing {
            dir: dir.display().to_string(),
            message: format!("{}: {e}", path.display()),
        })?;
        let manifest: Self = serde_json::from_str(&raw).map_err(|e| ModelError::Manifest {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        let fail = |message: &str| ModelError::Manifest {
            path: path.display().to_string(),
            message: message.to_string(),
        };
        if manifest.schema_version != 1 || manifest.task != "translation" {
            return Err(fail("expected schema_version 1 and task `translation`"));
        }
        if name(&manifest.encoder.inputs, "input_ids").is_none()
            || name(&manifest.decoder.inputs, "input_ids").is_none()
            || name(&manifest.decoder.outputs, "logits").is_none()
        {
            return Err(fail(
                "encoder and decoder must name input_ids, and the decoder logits",
            ));
        }
        match manifest.decoder.state {
            StateKind::Recurrent if manifest.decoder.recurrent.is_none() => {
                return Err(fail("state `recurrent` needs decoder.recurrent"));
            }
            StateKind::PastKeyValues if manifest.decoder.past.is_none() => {
                return Err(fail("state `past_key_values` needs decoder.past"));
            }
            _ => {}
        }
        for (file, expected) in &manifest.files_sha256 {
            let bytes = std::fs::read(dir.join(file)).map_err(|e| ModelError::Missing {
                dir: dir.display().to_string(),
                message: format!("{file}: {e}"),
            })?;
            let found = hex::encode(Sha256::digest(&bytes));
            if !found.eq_ignore_ascii_case(expected) {
                return Err(ModelError::HashMismatch {
                    dir: dir.display().to_string(),
                    expected: format!("{file}: {expected}"),
                    found,
                });
            }
        }
        Ok(manifest)
    }

    /// The first 12 hex digits of a hash over the files' hashes, for result names.
    pub fn content_hash(&self) -> String {
        let mut hasher = Sha256::new();
        for (file, hash) in &self.files_sha256 {
            hasher.update(file.as_bytes());
            hasher.update(hash.as_bytes());
        }
        hex::encode(hasher.finalize())
    }
}
