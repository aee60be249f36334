//! OpenAI's moderation categories, mapped from a Gatehouse verdict. Each OpenAI category has a
//! score formula over our category scores (and, where it ran, the English toxicity model's
//! labels) and is `true` when its gate category is flagged under the tenant's policy and the
//! formula's score is at least the gate's share of that score. Categories with no source
//! (`sexual/minors`, `violence/graphic`) stay `false` / 0.0. `docs/MODERATION.md` has the table.

use serde_json::{Map, Value, json};

/// (OpenAI name, gate category, how the score is computed).
const TABLE: [(&str, &str, Formula); 13] = [
    (
        "harassment",
        "unethical_acts",
        Formula::Max(&["unethical_acts"], &["insult", "toxic"]),
    ),
    (
        "harassment/threatening",
        "violent",
        Formula::Max(&["violent"], &["threat"]),
    ),
    (
        "hate",
        "unethical_acts",
        Formula::Max(&[], &["identity_hate"]),
    ),
    (
        "hate/threatening",
        "violent",
        Formula::Min(&["violent"], &["identity_hate"]),
    ),
    (
        "illicit",
        "non_violent_illegal_acts",
        Formula::Max(&["non_violent_illegal_acts"], &[]),
    ),
    (
        "illicit/violent",
        "violent",
        Formula::Min(&["violent", "non_violent_illegal_acts"], &[]),
    ),
    (
        "self-harm",
        "suicide_self_harm",
        Formula::Max(&["suicide_self_harm"], &[]),
    ),
    (
        "self-harm/intent",
        "suicide_self_harm",
        Formula::Max(&["suicide_self_harm"], &[]),
    ),
    (
        "self-harm/instructions",
        "suicide_self_harm",
        Formula::Max(&["suicide_self_harm"], &[]),
    ),
    (
        "sexual",
        "sexual_content",
        Formula::Max(&["sexual_content"], &[]),
    ),
    ("sexual/minors", "sexual_content", Formula::None),
    (
        "violence",
        "violent",
        Formula::Max(&["violent"], &["threat"]),
    ),
    ("violence/graphic", "violent", Formula::None),
];

/// Our categories and toxicity labels feeding one OpenAI category.
#[derive(Clone, Copy)]
enum Formula {
    /// The highest of the listed scores.
    Max(&'static [&'static str], &'static [&'static str]),
    /// The lowest (both must hold, e.g. violent *and* illicit).
    Min(&'static [&'static str], &'static [&'static str]),
    /// Nothing in Gatehouse detects it.
    None,
}

/// The names OpenAI's response always carries.
pub fn category_names() -> impl Iterator<Item = &'static str> {
    TABLE.iter().map(|(name, _, _)| *name)
}

fn lookup(map: &Value, key: &str) -> Option<f64> {
    map.get(key).and_then(Value::as_f64)
}

/// One OpenAI `results[]` entry from our result (`gatehouse`), with `level` and the full
/// result under `gatehouse`.
pub fn result(ours: &Value) -> Value {
    let scores = &ours["scores"];
    let toxicity = &ours["toxicity"];
    let flagged_categories: Vec<&str> = ours["categories"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let mut categories = Map::new();
    let mut category_scores = Map::new();
    let mut applied = Map::new();
    for (name, gate, formula) in TABLE {
        let values = |cats: &[&str], labels: &[&str]| -> Vec<f64> {
            cats.iter()
                .filter_map(|c| lookup(scores, c))
                .chain(labels.iter().filter_map(|l| lookup(toxicity, l)))
                .collect()
        };
        let score = match formula {
            Formula::Max(cats, labels) => values(cats, labels).into_iter().fold(0.0, f64::max),
            Formula::Min(cats, labels) => {
                let all = values(cats, labels);
                if all.len() < cats.len() + labels.len() {
                    0.0
                } else {
                    all.into_iter().fold(1.0, f64::min)
                }
            }
            Formula::None => 0.0,
        };
        let gate_score = lookup(scores, gate).unwrap_or(0.0);
        // True when the gate category is flagged and this category carries (at least half of)
        // the gate's evidence: a Chinese insult flags `harassment` but not `hate`.
        let on = flagged_categories.contains(&gate) && score > 0.0 && score >= 0.5 * gate_score;
        categories.insert(name.to_string(), json!(on));
        category_scores.insert(name.to_string(), json!(score));
        applied.insert(
            name.to_string(),
            if matches!(formula, Formula::None) {
                json!([])
            } else {
                json!(["text"])
            },
        );
    }
    json!({
        "flagged": ours["flagged"].as_bool().unwrap_or(false),
        "categories": categories,
        "category_scores": category_scores,
        "category_applied_input_types": applied,
        "level": ours["level"],
        "gatehouse": ours,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ours(categories: &[&str], scores: Value, toxicity: Value) -> Value {
        json!({
            "flagged": !categories.is_empty(),
            "level": if categories.is_empty() { "safe" } else { "unsafe" },
            "categories": categories,
            "scores": scores,
            "toxicity": toxicity,
        })
    }

    #[test]
    fn every_openai_category_is_present() {
        let r = result(&ours(&[], json!({}), json!({})));
        assert_eq!(r["categories"].as_object().map(Map::len), Some(13));
        assert_eq!(r["category_scores"].as_object().map(Map::len), Some(13));
        assert_eq!(r["flagged"], false);
        assert_eq!(r["level"], "safe");
        assert!(category_names().any(|n| n == "self-harm/instructions"));
    }

    #[test]
    fn categories_follow_the_flagged_gate() {
        let scores = json!({"violent": 0.9, "unethical_acts": 0.2, "suicide_self_harm": 0.1});
        let r = result(&ours(&["violent"], scores, json!({"threat": 0.7})));
        assert_eq!(r["categories"]["violence"], true);
        assert_eq!(r["categories"]["harassment/threatening"], true);
        assert_eq!(r["categories"]["harassment"], false);
        assert_eq!(r["categories"]["self-harm"], false);
        assert_eq!(r["category_scores"]["violence"], 0.9);
        assert_eq!(r["categories"]["illicit/violent"], false);
        assert_eq!(r["gatehouse"]["scores"]["violent"], 0.9);
    }

    #[test]
    fn an_insult_is_harassment_not_hate() {
        let scores = json!({"unethical_acts": 0.95});
        let r = result(&ours(
            &["unethical_acts"],
            scores,
            json!({"identity_hate": 0.01}),
        ));
        assert_eq!(r["categories"]["harassment"], true);
        assert_eq!(r["categories"]["hate"], false);
        // Without the English model, hate has no evidence at all.
        let r = result(&ours(
            &["unethical_acts"],
            json!({"unethical_acts": 0.9}),
            json!(null),
        ));
        assert_eq!(r["categories"]["hate"], false);
        assert_eq!(r["category_scores"]["hate"], 0.0);
    }
}
