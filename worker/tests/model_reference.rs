//! The worker's own inference code against the scores published in the
//! `toxic-comment-classifier==0.3.0` README (an independent reference).

use std::path::PathBuf;

use gatehouse_worker::model::{Classifier, OnnxClassifier, init_runtime};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

fn load() -> OnnxClassifier {
    let dylib = std::env::var("ORT_DYLIB_PATH")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root().join(".cache/onnxruntime/libonnxruntime.so.1.31.1"));
    let models = std::env::var("GATEHOUSE_MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root().join("models"));
    let env = init_runtime(&dylib).expect("ONNX Runtime (run `make models`)");
    OnnxClassifier::load(&env, &models.join("toxic-bilstm"), 1).expect("model (run `make models`)")
}

#[test]
fn reproduces_the_published_scores() {
    let mut model = load();
    let labels = model.info().labels.clone();
    assert_eq!(
        labels,
        [
            "toxic",
            "severe_toxic",
            "obscene",
            "threat",
            "insult",
            "identity_hate"
        ]
    );
    let published = [0.989_f32, 0.073, 0.620, 0.019, 0.866, 0.041];
    let scores = model
        .classify(&["You are so dumb and stupid!".to_string()])
        .expect("classify");
    for ((label, got), want) in labels.iter().zip(&scores[0]).zip(published) {
        assert!(
            (got - want).abs() <= 1e-3 + 5e-4,
            "{label}: got {got}, published {want}"
        );
    }
    // The README prints the full-precision values too: hold them to 1e-3.
    let precise = [
        0.988_940_3_f32,
        0.072_567_72,
        0.620_429_3,
        0.019_348_456,
        0.866_407_5,
        0.040_729_48,
    ];
    for ((label, got), want) in labels.iter().zip(&scores[0]).zip(precise) {
        assert!(
            (got - want).abs() <= 1e-3,
            "{label}: got {got}, published {want}"
        );
    }
}

#[test]
fn reproduces_the_published_batch_means_in_one_batch() {
    let mut model = load();
    let published = [
        ("I hate you so much!", 0.1395_f32),
        ("This is wonderful news.", 0.0013),
        ("You're disgusting!", 0.3110),
        ("Absolutely love your energy!", 0.0088),
        ("You're the worst person ever!", 0.0937),
        ("Have a nice day :)", 0.0115),
    ];
    let texts: Vec<String> = published.iter().map(|(t, _)| t.to_string()).collect();
    let batch = model.classify(&texts).expect("classify batch");
    for ((text, want), scores) in published.iter().zip(&batch) {
        let mean = scores.iter().sum::<f32>() / scores.len() as f32;
        assert!(
            (mean - want).abs() <= 1e-3,
            "{text}: mean {mean}, published {want}"
        );
        // Batching must not change a text's scores.
        let alone = model.classify(&[text.to_string()]).expect("classify one");
        for (a, b) in alone[0].iter().zip(scores) {
            assert!((a - b).abs() < 1e-5, "{text}: alone {a} vs batched {b}");
        }
    }
}

#[test]
fn keras_tokenization_rules_hold() {
    let model = load();
    // Lowercased, filter characters stripped, padded at the front to 100.
    let ids = model.encode("You are so dumb and stupid!").expect("encode");
    assert_eq!(ids.len(), 100);
    assert_eq!(&ids[94..], &[6, 19, 37, 1753, 4, 604]);
    assert!(ids[..94].iter().all(|id| *id == 0));
    assert_eq!(
        model
            .encode("YOU, are... so\tDUMB (and) stupid!!")
            .expect("encode"),
        ids
    );
    // Unknown words are dropped, not mapped to a token.
    assert_eq!(
        model
            .encode("You zzqxjv are so dumb and stupid!")
            .expect("encode"),
        ids
    );
    // Longer than 100 words: the last 100 are kept ("pre" truncation).
    let long = format!("{} you are so dumb and stupid", "hello ".repeat(150));
    let long_ids = model.encode(&long).expect("encode");
    assert_eq!(long_ids.len(), 100);
    assert_eq!(&long_ids[95..], &[6, 19, 37, 1753, 4, 604][1..]);
}
