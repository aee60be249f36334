//! A model-agnostic encoder–decoder engine: encoder once, then a decoder step loop whose
//! carried state the manifest declares (a recurrent hidden state, or transformer past
//! key/values as exported by Hugging Face Optimum), greedy or beam search, batched across
//! sentences with right padding and masks, stopping per sequence at EOS.

mod decode;
pub mod detokenize;
pub mod manifest;
mod step;

use std::path::Path;

use ort::{environment::Environment, session::Session};
use tokenizers::Tokenizer;

pub use decode::{Cache, DecodeOptions};
pub use manifest::TranslationManifest;
use manifest::{Detokenize, SourceUnknown};

use super::ModelError;

pub struct Translator {
    manifest: TranslationManifest,
    source: Tokenizer,
    target: Tokenizer,
    source_unk: Option<u32>,
    encoder: Session,
    decoder: Session,
    with_past: Option<Session>,
    merged: Option<Session>,
    reference: String,
}

fn session(env: &Environment, path: &Path, threads: usize) -> Result<Session, ModelError> {
    let load = |e: &dyn std::fmt::Display| ModelError::Load(format!("{}: {e}", path.display()));
    let mut builder = Session::builder(env).map_err(|e| load(&e))?;
    builder = builder
        .with_intra_op_spinning(false)
        .map_err(|e| load(&e))?;
    if threads > 0 {
        builder = builder.with_intra_threads(threads).map_err(|e| load(&e))?;
    }
    builder.commit_from_file(path).map_err(|e| load(&e))
}

fn tokenizer(path: &Path) -> Result<Tokenizer, ModelError> {
    Tokenizer::from_file(path).map_err(|e| ModelError::Load(format!("{}: {e}", path.display())))
}

impl Translator {
    /// Loads a translation model directory (see `docs/SEQ2SEQ_MANIFEST.md`).
    pub fn load(env: &Environment, dir: &Path, threads: usize) -> Result<Self, ModelError> {
        let manifest = TranslationManifest::load(dir)?;
        let source = tokenizer(&dir.join(&manifest.tokenizers.source))?;
        let target = tokenizer(&dir.join(&manifest.tokenizers.target))?;
        let source_unk = match manifest.source_unknown {
            SourceUnknown::Drop => source
                .token_to_id("<unk>")
                .or_else(|| source.token_to_id("[UNK]")),
            SourceUnknown::Keep => None,
        };
        let open = |file: &str| session(env, &dir.join(file), threads);
        let encoder = open(&manifest.encoder.file)?;
        let decoder = open(&manifest.decoder.file)?;
        let with_past = manifest
            .decoder
            .with_past_file
            .as_deref()
            .map(open)
            .transpose()?;
        let merged = manifest
            .decoder
            .merged_file
            .as_deref()
            .map(open)
            .transpose()?;
        let hash: String = manifest.content_hash().chars().take(12).collect();
        let reference = format!("{}@{hash}", manifest.name);
        Ok(Self {
            manifest,
            source,
            target,
            source_unk,
            encoder,
            decoder,
            with_past,
            merged,
            reference,
        })
    }

    pub fn manifest(&self) -> &TranslationManifest {
        &self.manifest
    }

    /// `<name>@<hash prefix>`, as results name the model.
    pub fn reference(&self) -> &str {
        &self.reference
    }

    /// Source token ids: tokenized, unknown tokens dropped when the manifest says so,
    /// truncated to `max_source_tokens`, EOS appended when the manifest says so.
    pub fn encode_source(&self, text: &str) -> Result<Vec<i64>, ModelError> {
        let encoding = self
            .source
            .encode(text, true)
            .map_err(|e| ModelError::Tokenize(e.to_string()))?;
        let eos = self.manifest.tokens.eos;
        let mut ids: Vec<i64> = encoding
            .get_ids()
            .iter()
            .filter(|id| Some(**id) != self.source_unk)
            .map(|id| i64::from(*id))
            .collect();
        let room = self
            .manifest
            .max_source_tokens
            .saturating_sub(usize::from(self.manifest.append_eos_to_source));
        if ids.len() > room {
            // Keep a trailing EOS the tokenizer may have added.
            let ends_with_eos = ids.last() == Some(&eos);
            ids.truncate(room);
            if ends_with_eos
                && !self.manifest.append_eos_to_source
                && let Some(last) = ids.last_mut()
            {
                *last = eos;
            }
        }
        if self.manifest.append_eos_to_source {
            ids.push(eos);
        }
        Ok(ids)
    }

    /// Whether a source sequence holds nothing the model knows (only EOS or nothing).
    pub fn is_empty_source(&self, ids: &[i64]) -> bool {
        ids.iter()
            .all(|id| *id == self.manifest.tokens.eos || *id == self.manifest.tokens.pad)
    }

    /// Target ids (without decoder start and EOS) to the text a client gets: [`Self::detokenize`],
    /// and for `join_spaces` models the spacing tidied and sentence starts capitalised
    /// ([`detokenize::detokenize_spaced`]).
    pub fn output_text(&self, ids: &[i64]) -> Result<String, ModelError> {
        let text = self.detokenize(ids)?;
        Ok(match self.manifest.detokenize {
            Detokenize::JoinSpaces => detokenize::detokenize_spaced(&text, true),
            Detokenize::Tokenizer => text,
        })
    }

    /// Target ids (without decoder start and EOS) to text, as the model produced it (the
    /// reference outputs compare this).
    pub fn detokenize(&self, ids: &[i64]) -> Result<String, ModelError> {
        match self.manifest.detokenize {
            Detokenize::JoinSpaces => {
                let tokens: Vec<String> = ids
                    .iter()
                    .map(|id| {
                        u32::try_from(*id)
                            .ok()
                            .and_then(|id| self.target.id_to_token(id))
                            .unwrap_or_default()
                    })
                    .collect();
                Ok(tokens.join(" "))
            }
            Detokenize::Tokenizer => {
                let ids: Vec<u32> = ids
                    .iter()
                    .filter_map(|id| u32::try_from(*id).ok())
                    .collect();
                self.target
                    .decode(&ids, true)
                    .map_err(|e| ModelError::Tokenize(e.to_string()))
            }
        }
    }
}
