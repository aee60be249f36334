//! A text classifier on ONNX Runtime: `tokenizers` for ids, the manifest for padding,
//! truncation and activation.

use std::path::Path;

use ort::{
    environment::Environment,
    session::{Session, builder::GraphOptimizationLevel},
    value::TensorRef,
};
use tokenizers::Tokenizer;

use super::{
    Classifier, ModelError, ModelInfo,
    manifest::{Activation, LongText, Manifest, PadTo, PaddingSide},
};

pub struct OnnxClassifier {
    info: ModelInfo,
    manifest: Manifest,
    encoder: TextEncoder,
    session: Session,
}

/// Text → token-id windows, as the manifest says. Cheap to clone and usable from any thread,
/// so tokenization happens off the model thread.
#[derive(Clone)]
pub struct TextEncoder {
    tokenizer: Tokenizer,
    unk_id: Option<u32>,
    max_length: usize,
    truncation: PaddingSide,
    padding: PaddingSide,
    pad_to: PadTo,
    long_text: LongText,
    pad_id: i64,
    prefix: String,
    /// Ids of `prefix` alone (trailing spaces trimmed), repeated at the head of every window.
    prefix_ids: Vec<i64>,
    bos: Option<i64>,
    eos: Option<i64>,
}

impl TextEncoder {
    fn new(tokenizer: Tokenizer, manifest: &Manifest) -> Result<Self, ModelError> {
        let unk_id = match (&manifest.unk_token, manifest.drop_unknown_tokens) {
            (Some(token), true) => Some(tokenizer.token_to_id(token).ok_or_else(|| {
                ModelError::Load(format!("unk_token `{token}` is not in the vocabulary"))
            })?),
            _ => None,
        };
        let mut encoder = Self {
            tokenizer,
            unk_id,
            max_length: manifest.max_length,
            truncation: manifest.truncation_side,
            padding: manifest.padding_side,
            pad_to: manifest.pad_to,
            long_text: manifest.long_text,
            pad_id: manifest.pad_token_id,
            prefix: manifest.prefix.clone(),
            prefix_ids: Vec::new(),
            bos: manifest.bos_token_id,
            eos: manifest.eos_token_id,
        };
        let trimmed = manifest.prefix.trim_end();
        if !trimmed.is_empty() {
            encoder.prefix_ids = encoder.ids(trimmed)?;
            if encoder.prefix_ids.len() + 1 >= encoder.content_len() {
                return Err(ModelError::Load(
                    "the prefix leaves no room in the window".into(),
                ));
            }
        }
        Ok(encoder)
    }

    pub fn pad_id(&self) -> i64 {
        self.pad_id
    }

    pub fn padding_side(&self) -> PaddingSide {
        self.padding
    }

    pub fn pad_to(&self) -> PadTo {
        self.pad_to
    }

    pub fn max_length(&self) -> usize {
        self.max_length
    }

    fn ids(&self, text: &str) -> Result<Vec<i64>, ModelError> {
        // Only the ids are needed: `encode_fast` skips the offsets `encode` tracks (same ids).
        let encoding = self
            .tokenizer
            .encode_fast(text, false)
            .map_err(|e| ModelError::Tokenize(e.to_string()))?;
        Ok(encoding
            .get_ids()
            .iter()
            .filter(|id| Some(**id) != self.unk_id)
            .map(|id| i64::from(*id))
            .collect())
    }

    /// Room for tokens in one window, besides bos/eos.
    fn content_len(&self) -> usize {
        self.max_length - usize::from(self.bos.is_some()) - usize::from(self.eos.is_some())
    }

    fn wrap(&self, content: &[i64]) -> Vec<i64> {
        let mut window = Vec::with_capacity(content.len() + 2);
        window.extend(self.bos);
        window.extend_from_slice(content);
        window.extend(self.eos);
        window
    }

    /// The model inputs for one text: one window (truncated) or, for `long_text: chunk`, as
    /// many windows as the text needs, each starting with the prefix. Windows are unpadded
    /// unless the model pads to `max_length`.
    pub fn windows(&self, text: &str) -> Result<Vec<Vec<i64>>, ModelError> {
        let ids = self.ids(&format!("{}{text}", self.prefix))?;
        let room = self.content_len();
        let windows = match self.long_text {
            LongText::Truncate => {
                let kept = if ids.len() > room {
                    match self.truncation {
                        PaddingSide::Left => &ids[ids.len() - room..],
                        PaddingSide::Right => &ids[..room],
                    }
                } else {
                    &ids[..]
                };
                vec![self.wrap(kept)]
            }
            LongText::Chunk => {
                // The joint encoding starts with the prefix's ids when the prefix tokenizes
                // on its own; later windows repeat them so every window reads as a query.
                let head = if ids.starts_with(&self.prefix_ids) {
                    self.prefix_ids.len()
                } else {
                    0
                };
                let (prefix, body) = ids.split_at(head);
                let step = room - prefix.len();
                if body.is_empty() {
                    vec![self.wrap(prefix)]
                } else {
                    body.chunks(step)
                        .map(|part| {
                            let mut content = prefix.to_vec();
                            content.extend_from_slice(part);
                            self.wrap(&content)
                        })
                        .collect()
                }
            }
        };
        Ok(match self.pad_to {
            PadTo::MaxLength => windows
                .into_iter()
                .map(|w| {
                    fit(
                        &w,
                        self.max_length,
                        self.truncation,
                        self.padding,
                        self.pad_id,
                    )
                })
                .collect(),
            PadTo::Longest => windows,
        })
    }
}

impl OnnxClassifier {
    /// Loads the model directory `dir` (manifest, ONNX graph, tokenizer).
    pub fn load(env: &Environment, dir: &Path, intra_threads: usize) -> Result<Self, ModelError> {
        let manifest = Manifest::load(dir)?;
        let tokenizer = Tokenizer::from_file(dir.join(&manifest.files.tokenizer))
            .map_err(|e| ModelError::Load(format!("tokenizer: {e}")))?;
        let encoder = TextEncoder::new(tokenizer, &manifest)?;
        let mut builder = Session::builder(env)
            .map_err(|e| ModelError::Load(e.to_string()))?
            .with_optimization_level(GraphOptimizationLevel::Level3)
            .map_err(|e| ModelError::Load(e.to_string()))?
            // Idle intra-op threads spinning for work steal CPU from Postgres, RabbitMQ and
            // the async side on small machines (measured in loadtest/: faster without).
            .with_intra_op_spinning(false)
            .map_err(|e| ModelError::Load(e.to_string()))?;
        if intra_threads > 0 {
            builder = builder
                .with_intra_threads(intra_threads)
                .map_err(|e| ModelError::Load(e.to_string()))?;
        }
        let session = builder
            .commit_from_file(dir.join(&manifest.files.model))
            .map_err(|e| ModelError::Load(e.to_string()))?;
        for name in manifest.inputs.values() {
            if !session.inputs().iter().any(|i| i.name() == name) {
                return Err(ModelError::Load(format!("graph has no input `{name}`")));
            }
        }
        if !session
            .outputs()
            .iter()
            .any(|o| o.name() == manifest.output)
        {
            return Err(ModelError::Load(format!(
                "graph has no output `{}`",
                manifest.output
            )));
        }
        let info = ModelInfo {
            name: manifest.name.clone(),
            content_hash: manifest.sha256.to_ascii_lowercase(),
            labels: manifest.labels.clone(),
            threshold: manifest.threshold,
        };
        Ok(Self {
            info,
            manifest,
            encoder,
            session,
        })
    }

    pub fn encoder(&self) -> &TextEncoder {
        &self.encoder
    }

    /// Token ids of one text's first window, padded as the manifest says (for checks).
    pub fn encode(&self, text: &str) -> Result<Vec<i64>, ModelError> {
        let window = self
            .encoder
            .windows(text)?
            .into_iter()
            .next()
            .unwrap_or_default();
        Ok(window)
    }

    /// Probabilities for whole texts: every window scored, the worst (highest) per label kept.
    pub fn classify(&mut self, texts: &[String]) -> Result<Vec<Vec<f32>>, ModelError> {
        let mut out = Vec::with_capacity(texts.len());
        for text in texts {
            let windows = self.encoder.windows(text)?;
            let refs: Vec<&[i64]> = windows.iter().map(Vec::as_slice).collect();
            let scores = self.run(&refs)?;
            out.push(worst(&scores));
        }
        Ok(out)
    }
}

/// Per label, the highest probability over a text's windows.
pub fn worst(windows: &[Vec<f32>]) -> Vec<f32> {
    let mut out: Vec<f32> = Vec::new();
    for row in windows {
        if out.is_empty() {
            out = row.clone();
        } else {
            for (o, p) in out.iter_mut().zip(row) {
                *o = o.max(*p);
            }
        }
    }
    out
}

/// Truncates to `len` (keeping the end when `truncation` is left, like Keras' "pre") and pads
/// to `len` with `pad` on the `padding` side.
pub(crate) fn fit(
    ids: &[i64],
    len: usize,
    truncation: PaddingSide,
    padding: PaddingSide,
    pad: i64,
) -> Vec<i64> {
    let kept = if ids.len() > len {
        match truncation {
            PaddingSide::Left => &ids[ids.len() - len..],
            PaddingSide::Right => &ids[..len],
        }
    } else {
        ids
    };
    let padding_len = len - kept.len();
    let mut out = Vec::with_capacity(len);
    if padding == PaddingSide::Left {
        out.resize(padding_len, pad);
    }
    out.extend_from_slice(kept);
    out.resize(len, pad);
    out
}

fn activate(activation: Activation, logits: &[f32]) -> Vec<f32> {
    match activation {
        Activation::None => logits.to_vec(),
        Activation::Sigmoid => logits.iter().map(|x| 1.0 / (1.0 + (-x).exp())).collect(),
        Activation::Softmax => {
            let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let exps: Vec<f32> = logits.iter().map(|x| (x - max).exp()).collect();
            let sum: f32 = exps.iter().sum();
            exps.iter().map(|e| e / sum).collect()
        }
    }
}

impl Classifier for OnnxClassifier {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn run(&mut self, batch: &[&[i64]]) -> Result<Vec<Vec<f32>>, ModelError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let len = batch.iter().map(|w| w.len()).max().unwrap_or(0).max(1);
        let pad = self.manifest.pad_token_id;
        let mut ids = Vec::with_capacity(batch.len() * len);
        let mut mask = Vec::with_capacity(batch.len() * len);
        for window in batch {
            let padded = fit(
                window,
                len,
                PaddingSide::Right,
                self.manifest.padding_side,
                pad,
            );
            let real = window.len().min(len);
            let offset = match self.manifest.padding_side {
                PaddingSide::Left => len - real,
                PaddingSide::Right => 0,
            };
            for (i, id) in padded.iter().enumerate() {
                // Padding added here is masked by position; a fixed-length model's own
                // padding (already in the window) by id, as before.
                let inside = i >= offset && i < offset + real;
                mask.push(i64::from(inside && *id != pad));
            }
            ids.extend(padded);
        }
        let shape = [batch.len(), len];
        let ids_tensor = TensorRef::from_array_view((shape, ids.as_slice()))
            .map_err(|e| ModelError::Inference(e.to_string()))?;
        let ids_name = self.manifest.inputs["input_ids"].clone();
        let mut inputs = ort::inputs![ids_name => ids_tensor];
        if let Some(mask_name) = self.manifest.inputs.get("attention_mask") {
            let mask_tensor = TensorRef::from_array_view((shape, mask.as_slice()))
                .map_err(|e| ModelError::Inference(e.to_string()))?;
            inputs.push((mask_name.clone().into(), mask_tensor.into()));
        }
        let outputs = self
            .session
            .run(inputs)
            .map_err(|e| ModelError::Inference(e.to_string()))?;
        let output = outputs
            .get(&self.manifest.output)
            .ok_or_else(|| ModelError::Inference("output missing".into()))?;
        let (out_shape, data) = output
            .try_extract_tensor::<f32>()
            .map_err(|e| ModelError::Inference(e.to_string()))?;
        let width = self.manifest.labels.len();
        if out_shape.len() != 2
            || out_shape[1] as usize != width
            || data.len() != batch.len() * width
        {
            return Err(ModelError::Inference(format!(
                "unexpected output shape {:?} for {} rows and {} labels",
                &**out_shape,
                batch.len(),
                width
            )));
        }
        Ok(data
            .chunks(width)
            .map(|row| activate(self.manifest.activation, row))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fit_pads_and_truncates_on_the_configured_side() {
        use PaddingSide::{Left, Right};
        assert_eq!(fit(&[1, 2, 3], 5, Left, Left, 0), vec![0, 0, 1, 2, 3]);
        assert_eq!(fit(&[1, 2, 3], 5, Left, Right, 0), vec![1, 2, 3, 0, 0]);
        assert_eq!(fit(&[1, 2, 3, 4, 5, 6], 4, Left, Left, 0), vec![3, 4, 5, 6]);
        assert_eq!(
            fit(&[1, 2, 3, 4, 5, 6], 4, Right, Left, 0),
            vec![1, 2, 3, 4]
        );
        assert_eq!(fit(&[], 3, Left, Left, 9), vec![9, 9, 9]);
    }

    #[test]
    fn activations() {
        let s = activate(Activation::Sigmoid, &[0.0, 100.0]);
        assert!((s[0] - 0.5).abs() < 1e-6 && (s[1] - 1.0).abs() < 1e-6);
        let p = activate(Activation::Softmax, &[1.0, 1.0]);
        assert!((p[0] - 0.5).abs() < 1e-6);
    }
}
