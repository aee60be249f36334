//! Models: a small synchronous backend trait, the manifest that describes a model directory,
//! and the ONNX Runtime implementation. Models are owned by one OS thread (see `batcher`).

mod manifest;
mod onnx;
mod runtime;
pub mod seq2seq;

pub use manifest::{LongText, Manifest, PadTo, PaddingSide};
pub use onnx::{OnnxClassifier, TextEncoder, worst};
pub use runtime::init_runtime;

/// What results name: `<name>@<first 12 hex digits of the content hash>`.
#[derive(Debug, Clone)]
pub struct ModelInfo {
    pub name: String,
    pub content_hash: String,
    pub labels: Vec<String>,
    pub threshold: f32,
}

impl ModelInfo {
    pub fn reference(&self) -> String {
        let prefix: String = self.content_hash.chars().take(12).collect();
        format!("{}@{}", self.name, prefix)
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum ModelError {
    #[error(
        "ONNX Runtime library not found at `{path}`: run `make models` (or `scripts/fetch-onnxruntime.sh`), or point ORT_DYLIB_PATH at libonnxruntime.so.1.31.x"
    )]
    RuntimeMissing { path: String },
    #[error("cannot load ONNX Runtime from `{path}`: {message}")]
    Runtime { path: String, message: String },
    #[error(
        "model directory `{dir}` is missing or incomplete ({message}): run `make models` or set GATEHOUSE_MODELS_DIR"
    )]
    Missing { dir: String, message: String },
    #[error("invalid model manifest `{path}`: {message}")]
    Manifest { path: String, message: String },
    #[error(
        "model files in `{dir}` do not match the manifest's sha256 (expected {expected}, found {found}): rebuild with `make models`"
    )]
    HashMismatch {
        dir: String,
        expected: String,
        found: String,
    },
    #[error("cannot load model: {0}")]
    Load(String),
    #[error("tokenization failed: {0}")]
    Tokenize(String),
    #[error("inference failed: {0}")]
    Inference(String),
    #[error("the model thread has stopped")]
    Stopped,
}

/// A text classifier on token windows: rows of ids in (unpadded; the classifier pads the batch
/// to its longest row), one probability per label out. Synchronous on purpose: it runs on the
/// model thread, never on the async runtime.
pub trait Classifier: Send + 'static {
    fn info(&self) -> &ModelInfo;
    fn run(&mut self, batch: &[&[i64]]) -> Result<Vec<Vec<f32>>, ModelError>;
}
