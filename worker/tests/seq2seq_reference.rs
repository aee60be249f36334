//! The worker's decoding engine against independent reference decodes of the same files:
//! the bundled zh→en GRU model (a numpy reimplementation of the package's own greedy decode)
//! and a tiny Marian-shaped Optimum export (Python onnxruntime: greedy and beam, with and
//! without the cache).

use std::path::PathBuf;

use gatehouse_worker::model::{
    init_runtime,
    seq2seq::{Cache, DecodeOptions, Translator},
};
use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

fn models() -> PathBuf {
    std::env::var("GATEHOUSE_MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root().join("models"))
}

fn load(name: &str) -> (Translator, Value) {
    let dylib = std::env::var("ORT_DYLIB_PATH")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root().join(".cache/onnxruntime/libonnxruntime.so.1.31.1"));
    let env = init_runtime(&dylib).expect("ONNX Runtime (run `make models`)");
    let dir = models().join(name);
    let translator = Translator::load(&env, &dir, 1).expect("model (run `make models`)");
    let reference: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("reference.json")).expect("reference.json"),
    )
    .expect("reference json");
    (translator, reference)
}

fn ids(value: &Value) -> Vec<i64> {
    value
        .as_array()
        .expect("ids")
        .iter()
        .map(|v| v.as_i64().expect("id"))
        .collect()
}

#[test]
fn the_bundled_zh_en_model_matches_its_own_greedy_decode_token_for_token() {
    let (mut model, reference) = load("cn2en-gru");
    let cases = reference["cases"].as_array().expect("cases");
    assert!(cases.len() >= 20);
    let mut sources = Vec::new();
    for case in cases {
        let text = case["text"].as_str().expect("text");
        let source = model.encode_source(text).expect("encode");
        assert_eq!(source, ids(&case["source_ids"]), "source ids of {text:?}");
        sources.push(source);
    }
    // One at a time.
    for (case, source) in cases.iter().zip(&sources) {
        let out = model
            .generate(std::slice::from_ref(source), DecodeOptions::default())
            .expect("generate");
        assert_eq!(
            out[0],
            ids(&case["output_ids"]),
            "greedy output of {:?}",
            case["text"]
        );
        assert_eq!(
            model.detokenize(&out[0]).expect("detokenize"),
            case["output_text"].as_str().expect("output_text")
        );
    }
    // Batched: right padding plus sequence lengths give the same answers.
    let batched = model
        .generate(&sources, DecodeOptions::default())
        .expect("generate batch");
    for (case, out) in cases.iter().zip(&batched) {
        assert_eq!(
            *out,
            ids(&case["output_ids"]),
            "batched greedy output of {:?}",
            case["text"]
        );
    }
    let known = model.encode_source("我不知道。").expect("encode");
    let out = model
        .generate(&[known], DecodeOptions::default())
        .expect("generate");
    assert_eq!(
        model.detokenize(&out[0]).expect("detokenize"),
        "i don't know ."
    );
    // What a client gets: the join_spaces output tidied and capitalised.
    assert_eq!(
        model.output_text(&out[0]).expect("output text"),
        "I don't know."
    );
    assert!(model.reference().starts_with("cn2en-gru@"));
}

/// The reference's expected output ids for one case.
type Expected = Box<dyn Fn(&Value) -> Vec<i64>>;

#[test]
fn the_optimum_marian_layout_matches_an_onnxruntime_reference_greedy_and_beam_with_and_without_cache()
 {
    let (mut model, reference) = load("fixtures/tiny-marian-zh-en");
    let max_new = reference["max_new_tokens"]
        .as_u64()
        .expect("max_new_tokens") as usize;
    let cases = reference["cases"].as_array().expect("cases");
    let sources: Vec<Vec<i64>> = cases
        .iter()
        .map(|case| {
            let text = case["text"].as_str().expect("text");
            let source = model.encode_source(text).expect("encode");
            assert_eq!(source, ids(&case["source_ids"]), "source ids of {text:?}");
            source
        })
        .collect();
    let mut searches: Vec<(usize, f32, Expected)> =
        vec![(1, 1.0, Box::new(|case: &Value| ids(&case["greedy_ids"])))];
    for penalty in [1.0_f32, 0.6] {
        searches.push((
            4,
            penalty,
            Box::new(move |case: &Value| {
                let beam = case["beam"]
                    .as_array()
                    .expect("beam")
                    .iter()
                    .find(|b| {
                        b["beam_size"] == 4
                            && (b["length_penalty"].as_f64().expect("lp") as f32 - penalty).abs()
                                < 1e-6
                    })
                    .expect("beam case");
                ids(&beam["ids"])
            }),
        ));
    }
    for cache in [Cache::Off, Cache::WithPast, Cache::Merged] {
        for (beam_size, length_penalty, expected) in &searches {
            let options = DecodeOptions {
                beam_size: *beam_size,
                max_new_tokens: Some(max_new),
                length_penalty: *length_penalty,
                cache,
            };
            let batched = model.generate(&sources, options).expect("generate batch");
            for ((case, source), out) in cases.iter().zip(&sources).zip(&batched) {
                let what = format!(
                    "{:?} beam {beam_size} lp {length_penalty} {:?}",
                    cache, case["text"]
                );
                assert_eq!(*out, expected(case), "batched: {what}");
                let single = model
                    .generate(std::slice::from_ref(source), options)
                    .expect("generate one");
                assert_eq!(single[0], expected(case), "single: {what}");
            }
        }
    }
    // The reference's texts decode the same way too.
    let first = &cases[0];
    let out = model
        .generate(
            &sources[..1],
            DecodeOptions {
                max_new_tokens: Some(max_new),
                ..DecodeOptions::default()
            },
        )
        .expect("generate");
    assert_eq!(
        model.detokenize(&out[0]).expect("detokenize"),
        first["greedy_text"].as_str().expect("greedy_text")
    );
}
