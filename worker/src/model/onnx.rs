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
    manifest::{Activation, Manifest, PaddingSide},
};

pub struct OnnxClassifier {
    info: ModelInfo,
    manifest: Manifest,
    tokenizer: Tokenizer,
    session: Session,
    unk_id: Option<u32>,
}

impl OnnxClassifier {
    /// Loads the model directory `dir` (manifest, ONNX graph, tokenizer).
    pub fn load(env: &Environment, dir: &Path, intra_threads: usize) -> Result<Self, ModelError> {
        let manifest = Manifest::load(dir)?;
        let tokenizer = Tokenizer::from_file(dir.join(&manifest.files.tokenizer))
            .map_err(|e| ModelError::Load(format!("tokenizer: {e}")))?;
        let unk_id = match (&manifest.unk_token, manifest.drop_unknown_tokens) {
            (Some(token), true) => Some(tokenizer.token_to_id(token).ok_or_else(|| {
                ModelError::Load(format!("unk_token `{token}` is not in the vocabulary"))
            })?),
            _ => None,
        };
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
            tokenizer,
            session,
            unk_id,
        })
    }

    /// Token ids for one text, truncated and padded as the manifest says.
    pub fn encode(&self, text: &str) -> Result<Vec<i64>, ModelError> {
        let encoding = self
            .tokenizer
            .encode(text, false)
            .map_err(|e| ModelError::Tokenize(e.to_string()))?;
        let ids: Vec<i64> = encoding
            .get_ids()
            .iter()
            .filter(|id| Some(**id) != self.unk_id)
            .map(|id| i64::from(*id))
            .collect();
        Ok(fit(
            &ids,
            self.manifest.max_length,
            self.manifest.truncation_side,
            self.manifest.padding_side,
            self.manifest.pad_token_id,
        ))
    }
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

    fn classify(&mut self, texts: &[String]) -> Result<Vec<Vec<f32>>, ModelError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let len = self.manifest.max_length;
        let mut ids = Vec::with_capacity(texts.len() * len);
        for text in texts {
            ids.extend(self.encode(text)?);
        }
        let shape = [texts.len(), len];
        let mask: Vec<i64> = ids
            .iter()
            .map(|id| i64::from(*id != self.manifest.pad_token_id))
            .collect();
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
            || data.len() != texts.len() * width
        {
            return Err(ModelError::Inference(format!(
                "unexpected output shape {:?} for {} texts and {} labels",
                &**out_shape,
                texts.len(),
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
