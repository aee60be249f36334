//! A moderation result: `{"flagged", "categories", "scores", "model"}`.

use serde::Serialize;
use serde_json::Map;

use crate::model::ModelInfo;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ModerationResult {
    pub flagged: bool,
    /// Labels whose probability is at or above the model's threshold, in label order.
    pub categories: Vec<String>,
    pub scores: Map<String, serde_json::Value>,
    pub model: String,
}

/// Builds the result for one item from its probabilities (one per label).
pub fn result(info: &ModelInfo, probabilities: &[f32]) -> ModerationResult {
    let mut categories = Vec::new();
    let mut scores = Map::new();
    for (label, p) in info.labels.iter().zip(probabilities) {
        if *p >= info.threshold {
            categories.push(label.clone());
        }
        // Six decimals: plenty for thresholds, and no f32 noise digits in the JSON.
        let rounded = (f64::from(*p) * 1e6).round() / 1e6;
        scores.insert(label.clone(), serde_json::json!(rounded));
    }
    ModerationResult {
        flagged: !categories.is_empty(),
        categories,
        scores,
        model: info.reference(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn categories_are_the_labels_over_threshold() {
        let info = ModelInfo {
            name: "m".into(),
            content_hash: "abcdef0123456789".into(),
            labels: vec!["toxic".into(), "threat".into(), "insult".into()],
            threshold: 0.5,
        };
        let r = result(&info, &[0.9, 0.1, 0.5]);
        assert!(r.flagged);
        assert_eq!(r.categories, ["toxic", "insult"]);
        assert_eq!(r.scores["threat"], serde_json::json!(0.1));
        assert_eq!(r.model, "m@abcdef012345");
        let clean = result(&info, &[0.1, 0.1, 0.1]);
        assert!(!clean.flagged && clean.categories.is_empty());
    }
}
