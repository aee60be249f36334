//! The translation models, owned by one OS thread fed by a channel (like the classifier's),
//! one `Translator` per installed language pair.

use std::{
    path::Path,
    sync::{Arc, mpsc},
    thread,
    time::Instant,
};

use gatehouse_common::models::translation_pairs;
use tokio::sync::oneshot;

use crate::model::{
    ModelError,
    seq2seq::{DecodeOptions, Translator},
};

/// An installed pair and the model serving it.
#[derive(Debug, Clone)]
pub struct Pair {
    pub source_lang: String,
    pub target_lang: String,
    /// `<name>@<hash prefix>`.
    pub model: String,
}

struct Request {
    pair: usize,
    segments: Vec<String>,
    reply: oneshot::Sender<Result<Vec<String>, ModelError>>,
}

#[derive(Clone)]
pub struct TranslatorHandle {
    tx: mpsc::Sender<Request>,
    pairs: Arc<Vec<Pair>>,
}

/// Sentences per decoder batch.
const BATCH: usize = 32;

impl TranslatorHandle {
    /// Loads the translation models under `models_dir` (`only`: those directories, in order of
    /// preference; empty: all), the first per pair; `None` if none.
    pub fn load(
        env: &ort::environment::Environment,
        models_dir: &Path,
        only: &[String],
        threads: usize,
    ) -> Result<Option<Self>, ModelError> {
        let mut translators = Vec::new();
        let mut pairs = Vec::new();
        for found in translation_pairs(models_dir, only) {
            if pairs.iter().any(|p: &Pair| {
                p.source_lang == found.source_lang && p.target_lang == found.target_lang
            }) {
                continue;
            }
            let translator = Translator::load(env, &models_dir.join(&found.model), threads)?;
            tracing::info!(model = %translator.reference(), pair = %format!("{}→{}", found.source_lang, found.target_lang), "translation model loaded");
            pairs.push(Pair {
                source_lang: found.source_lang,
                target_lang: found.target_lang,
                model: translator.reference().to_string(),
            });
            translators.push(translator);
        }
        if translators.is_empty() {
            return Ok(None);
        }
        let (tx, rx) = mpsc::channel::<Request>();
        thread::Builder::new()
            .name("translator".into())
            .spawn(move || run(translators, &rx))
            .map_err(|e| ModelError::Load(format!("cannot start the translation thread: {e}")))?;
        Ok(Some(Self {
            tx,
            pairs: Arc::new(pairs),
        }))
    }

    pub fn pairs(&self) -> &[Pair] {
        &self.pairs
    }

    pub fn pair(&self, source: &str, target: &str) -> Option<(usize, &Pair)> {
        self.pairs
            .iter()
            .enumerate()
            .find(|(_, p)| p.source_lang == source && p.target_lang == target)
    }

    /// Translates sentences with the pair's model; a sentence the model knows nothing of comes
    /// back unchanged.
    pub async fn translate(
        &self,
        pair: usize,
        segments: Vec<String>,
    ) -> Result<Vec<String>, ModelError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Request {
                pair,
                segments,
                reply,
            })
            .map_err(|_| ModelError::Stopped)?;
        rx.await.map_err(|_| ModelError::Stopped)?
    }
}

fn run(mut translators: Vec<Translator>, rx: &mpsc::Receiver<Request>) {
    while let Ok(request) = rx.recv() {
        let result = match translators.get_mut(request.pair) {
            Some(translator) => translate(translator, &request.segments),
            None => Err(ModelError::Inference("unknown language pair".into())),
        };
        let _ = request.reply.send(result);
    }
}

fn translate(translator: &mut Translator, segments: &[String]) -> Result<Vec<String>, ModelError> {
    let model = translator.manifest().name.clone();
    let mut out: Vec<String> = segments.to_vec();
    let mut todo: Vec<(usize, Vec<i64>)> = Vec::new();
    for (i, segment) in segments.iter().enumerate() {
        let ids = translator.encode_source(segment)?;
        // Nothing the model knows (emoji, symbols, another script): pass it through.
        if !translator.is_empty_source(&ids) {
            todo.push((i, ids));
        }
    }
    for batch in todo.chunks(BATCH) {
        let sources: Vec<Vec<i64>> = batch.iter().map(|(_, ids)| ids.clone()).collect();
        let started = Instant::now();
        let generated = translator.generate(&sources, DecodeOptions::default())?;
        metrics::histogram!("gatehouse_translate_decode_seconds", "model" => model.clone())
            .record(started.elapsed().as_secs_f64());
        let tokens: usize = generated.iter().map(Vec::len).sum();
        metrics::counter!("gatehouse_translate_generated_tokens_total", "model" => model.clone())
            .increment(tokens as u64);
        metrics::counter!("gatehouse_translate_segments_total", "model" => model.clone())
            .increment(batch.len() as u64);
        for ((i, _), ids) in batch.iter().zip(generated) {
            out[*i] = translator.output_text(&ids)?;
        }
    }
    Ok(out)
}
