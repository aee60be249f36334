//! Greedy decode throughput of the worker's translation engine on the bundled zh→en GRU model
//! (`make bench-translate`; `loadtest/translate.py --bench` runs the Python onnxruntime side).
//!
//! Not a test and not a statistical harness: one timed run over a fixed sentence set.
//!
//! * Sentences: the texts of `models/cn2en-gru/reference.json`, repeated and shuffled
//!   deterministically (seeded) to `GATEHOUSE_BENCH_SENTENCES` (default 2,000).
//! * Batches of `GATEHOUSE_BENCH_BATCH` (default 32) in that order, `Translator::generate` with
//!   `DecodeOptions::default()` (greedy, the manifest's `max_new_tokens`).
//! * ONNX Runtime intra-op threads: `GATEHOUSE_ORT_INTRA_THREADS` (default 1; 0 = ORT default).
//! * Clock: only the `generate` calls (tokenization is timed separately), after one untimed
//!   warm-up batch.
//! * Tokens: the generated ids `generate` returns, i.e. **excluding** the final EOS step
//!   (decoder start not counted either). The Python side counts the same way.
//!
//! Prints one JSON line and writes the sentences, source ids and output ids to
//! `GATEHOUSE_BENCH_OUT` (default `loadtest/results/translate-bench-rust.json`) so the Python
//! side decodes the very same sentences and checks its ids against these.
//!
//! Env: `ORT_DYLIB_PATH` (default `.cache/onnxruntime/libonnxruntime.so.1.31.1`),
//! `GATEHOUSE_MODELS_DIR` (default `models`), `GATEHOUSE_BENCH_SEED` (default 20251124).

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use gatehouse_worker::model::{
    init_runtime,
    seq2seq::{DecodeOptions, Translator},
};
use serde_json::{Value, json};

const MODEL: &str = "cn2en-gru";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a valid value")),
        _ => default,
    }
}

/// splitmix64: a tiny deterministic generator (no extra dependency).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs bench programs too, and
    // a timed run in a debug build measures nothing.
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!("translate bench: run it with `cargo bench` (`make bench-translate`); skipped");
        return;
    }
    let sentences: usize = env_or("GATEHOUSE_BENCH_SENTENCES", 2000);
    let batch: usize = env_or("GATEHOUSE_BENCH_BATCH", 32);
    let threads: usize = env_or("GATEHOUSE_ORT_INTRA_THREADS", 1);
    let seed: u64 = env_or("GATEHOUSE_BENCH_SEED", 20_251_124);
    assert!(
        sentences > 0 && batch > 0,
        "sentences and batch must be > 0"
    );

    let dylib = std::env::var("ORT_DYLIB_PATH")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root().join(".cache/onnxruntime/libonnxruntime.so.1.31.1"));
    let models = std::env::var("GATEHOUSE_MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root().join("models"));
    let out_path = std::env::var("GATEHOUSE_BENCH_OUT")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root().join("loadtest/results/translate-bench-rust.json"));

    let env = init_runtime(&dylib).expect("ONNX Runtime (run `make models`)");
    let dir = models.join(MODEL);
    let mut model = Translator::load(&env, &dir, threads).expect("model (run `make models`)");
    let reference: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("reference.json")).expect("reference.json"),
    )
    .expect("reference.json is JSON");
    let base: Vec<String> = reference["cases"]
        .as_array()
        .expect("reference cases")
        .iter()
        .map(|c| c["text"].as_str().expect("case text").to_string())
        .collect();
    assert!(!base.is_empty(), "reference.json has no cases");

    // The sentence set: the reference texts repeated, then a seeded Fisher-Yates shuffle.
    let mut texts: Vec<String> = base.iter().cycle().take(sentences).cloned().collect();
    let mut rng = Rng(seed);
    for i in (1..texts.len()).rev() {
        texts.swap(i, rng.below(i + 1));
    }

    let started = Instant::now();
    let sources: Vec<Vec<i64>> = texts
        .iter()
        .map(|t| model.encode_source(t).expect("encode"))
        .collect();
    let tokenize = started.elapsed();

    // Warm-up (untimed): one batch.
    let warm = &sources[..batch.min(sources.len())];
    model
        .generate(warm, DecodeOptions::default())
        .expect("warm-up generate");

    let mut outputs: Vec<Vec<i64>> = Vec::with_capacity(sources.len());
    let mut decode = Duration::ZERO;
    for chunk in sources.chunks(batch) {
        let t = Instant::now();
        let out = model
            .generate(chunk, DecodeOptions::default())
            .expect("generate");
        decode += t.elapsed();
        outputs.extend(out);
    }
    let tokens: usize = outputs.iter().map(Vec::len).sum();
    let decode_s = decode.as_secs_f64();

    let summary = json!({
        "bench": "translate",
        "engine": "rust",
        "model": MODEL,
        "sentences": sentences,
        "batch": batch,
        "threads": threads,
        "seed": seed,
        "token_rule": "generated ids excluding the final EOS",
        "tokens": tokens,
        "source_tokens": sources.iter().map(Vec::len).sum::<usize>(),
        "decode_s": decode_s,
        "tokens_per_s": tokens as f64 / decode_s,
        "sentences_per_s": sentences as f64 / decode_s,
        "tokenize_s": tokenize.as_secs_f64(),
        "out": out_path.display().to_string(),
    });
    let detail = json!({
        "summary": summary,
        "texts": texts,
        "source_ids": sources,
        "output_ids": outputs,
    });
    if let Some(parent) = out_path.parent() {
        std::fs::create_dir_all(parent).expect("create the output directory");
    }
    std::fs::write(&out_path, serde_json::to_string(&detail).expect("json"))
        .expect("write the output ids");
    println!("{summary}");
}
