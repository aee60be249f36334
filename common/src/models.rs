//! What the models directory offers, read from the manifests alone (no ONNX Runtime): the api
//! validates translation jobs against the pairs actually installed.

use std::path::Path;

use serde::{Deserialize, Serialize};

/// One installed translation model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TranslationPair {
    pub source_lang: String,
    pub target_lang: String,
    /// The model's directory name under `GATEHOUSE_MODELS_DIR`.
    pub model: String,
}

#[derive(Deserialize)]
struct Head {
    task: String,
    #[serde(default)]
    source_lang: String,
    #[serde(default)]
    target_lang: String,
}

/// Translation models in `dir/*/manifest.json`. With `only` empty: all of them, sorted by pair
/// then directory; otherwise just those directories, in that order (the first model listed
/// for a pair serves it). Unreadable manifests are skipped; fixtures live deeper.
pub fn translation_pairs(dir: &Path, only: &[String]) -> Vec<TranslationPair> {
    let all = scan(dir);
    if only.is_empty() {
        return all;
    }
    only.iter()
        .filter_map(|name| all.iter().find(|p| &p.model == name).cloned())
        .collect()
}

fn scan(dir: &Path) -> Vec<TranslationPair> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut pairs: Vec<TranslationPair> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let raw = std::fs::read_to_string(entry.path().join("manifest.json")).ok()?;
            let head: Head = serde_json::from_str(&raw).ok()?;
            (head.task == "translation").then(|| TranslationPair {
                source_lang: head.source_lang,
                target_lang: head.target_lang,
                model: entry.file_name().to_string_lossy().into_owned(),
            })
        })
        .collect();
    pairs.sort_by(|a, b| {
        (&a.source_lang, &a.target_lang, &a.model).cmp(&(&b.source_lang, &b.target_lang, &b.model))
    });
    pairs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_translation_manifests_count() {
        let dir = std::env::temp_dir().join(format!("gh-models-{}", uuid::Uuid::now_v7().simple()));
        for (name, manifest) in [
            (
                "b-model",
                r#"{"task": "translation", "source_lang": "zh", "target_lang": "en"}"#,
            ),
            (
                "a-model",
                r#"{"task": "translation", "source_lang": "en", "target_lang": "zh"}"#,
            ),
            ("classifier", r#"{"task": "text-classification"}"#),
            ("broken", "{not json"),
        ] {
            std::fs::create_dir_all(dir.join(name)).expect("dir");
            std::fs::write(dir.join(name).join("manifest.json"), manifest).expect("write");
        }
        let pairs = translation_pairs(&dir, &[]);
        assert_eq!(pairs.len(), 2);
        assert_eq!(
            (pairs[0].source_lang.as_str(), pairs[0].model.as_str()),
            ("en", "a-model")
        );
        assert_eq!(
            (pairs[1].source_lang.as_str(), pairs[1].target_lang.as_str()),
            ("zh", "en")
        );
        assert!(translation_pairs(&dir.join("missing"), &[]).is_empty());
        let chosen = translation_pairs(&dir, &["b-model".to_string(), "classifier".to_string()]);
        assert_eq!(chosen.len(), 1);
        assert_eq!(chosen[0].model, "b-model");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
