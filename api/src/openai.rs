//! OpenAI's moderation categories, mapped from a Gatehouse verdict. Each OpenAI category has a
//! score formula over our category scores (and, where it ran, the English toxicity model's
//! labels) and is `true` when its gate category is flagged under the tenant's policy and the
//! formula's score is at least the gate's share of that score. Categories with no source
//! (`sexual/minors`, `violence/graphic`) stay `false` / 0.0. `docs/MODERATION.md` has the table.

use gatehouse_common::{job::result::ModerationResult, moderation::Category};
use serde::Serialize;
use std::collections::BTreeMap;

/// (OpenAI name, gate category, how the score is computed).
const TABLE: [(&str, Category, Formula); 13] = [
    (
        "harassment",
        Category::UnethicalActs,
        Formula::Max(&[Category::UnethicalActs], &["insult", "toxic"]),
    ),
    (
        "harassment/threatening",
        Category::Violent,
        Formula::Max(&[Category::Violent], &["threat"]),
    ),
    (
        "hate",
        Category::UnethicalActs,
        Formula::Max(&[], &["identity_hate"]),
    ),
    (
        "hate/threatening",
        Category::Violent,
        Formula::Min(&[Category::Violent], &["identity_hate"]),
    ),
    (
        "illicit",
        Category::NonViolentIllegalActs,
        Formula::Max(&[Category::NonViolentIllegalActs], &[]),
    ),
    (
        "illicit/violent",
        Category::Violent,
        Formula::Min(&[Category::Violent, Category::NonViolentIllegalActs], &[]),
    ),
    (
        "self-harm",
        Category::SuicideSelfHarm,
        Formula::Max(&[Category::SuicideSelfHarm], &[]),
    ),
    (
        "self-harm/intent",
        Category::SuicideSelfHarm,
        Formula::Max(&[Category::SuicideSelfHarm], &[]),
    ),
    (
        "self-harm/instructions",
        Category::SuicideSelfHarm,
        Formula::Max(&[Category::SuicideSelfHarm], &[]),
    ),
    (
        "sexual",
        Category::SexualContent,
        Formula::Max(&[Category::SexualContent], &[]),
    ),
    ("sexual/minors", Category::SexualContent, Formula::None),
    (
        "violence",
        Category::Violent,
        Formula::Max(&[Category::Violent], &["threat"]),
    ),
    ("violence/graphic", Category::Violent, Formula::None),
];

/// Our categories and toxicity labels feeding one OpenAI category.
#[derive(Clone, Copy)]
enum Formula {
    /// The highest of the listed scores.
    Max(&'static [Category], &'static [&'static str]),
    /// The lowest (both must hold, e.g. violent *and* illicit).
    Min(&'static [Category], &'static [&'static str]),
    /// Nothing in Gatehouse detects it.
    None,
}

/// The names OpenAI's response always carries.
pub fn category_names() -> impl Iterator<Item = &'static str> {
    TABLE.iter().map(|(name, _, _)| *name)
}

/// One OpenAI `results[]` entry: OpenAI's categories from our verdict, with `level` and our
/// full result under `gatehouse`.
#[derive(Debug, Clone, Serialize)]
pub struct OpenAiResult {
    pub flagged: bool,
    pub categories: BTreeMap<&'static str, bool>,
    pub category_scores: BTreeMap<&'static str, f64>,
    pub category_applied_input_types: BTreeMap<&'static str, Vec<&'static str>>,
    pub level: gatehouse_common::moderation::Level,
    pub gatehouse: ModerationResult,
}

pub fn result(ours: ModerationResult) -> OpenAiResult {
    let score_of = |c: &Category| ours.scores.get(c).copied();
    let label_of = |l: &&str| ours.toxicity.get(*l).copied();
    let mut categories = BTreeMap::new();
    let mut category_scores = BTreeMap::new();
    let mut applied = BTreeMap::new();
    for (name, gate, formula) in TABLE {
        let values = |cats: &[Category], labels: &[&str]| -> Vec<f64> {
            cats.iter()
                .filter_map(score_of)
                .chain(labels.iter().filter_map(label_of))
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
        let gate_score = score_of(&gate).unwrap_or(0.0);
        // True when the gate category is flagged and this category carries (at least half of)
        // the gate's evidence: a Chinese insult flags `harassment` but not `hate`.
        let on = ours.categories.contains(&gate) && score > 0.0 && score >= 0.5 * gate_score;
        categories.insert(name, on);
        category_scores.insert(name, score);
        applied.insert(
            name,
            if matches!(formula, Formula::None) {
                Vec::new()
            } else {
                vec!["text"]
            },
        );
    }
    OpenAiResult {
        flagged: ours.flagged,
        categories,
        category_scores,
        category_applied_input_types: applied,
        level: ours.level,
        gatehouse: ours,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_common::{job::result::PolicyRef, moderation::Level};

    fn ours(
        categories: &[Category],
        scores: &[(Category, f64)],
        toxicity: &[(&str, f64)],
    ) -> ModerationResult {
        ModerationResult {
            flagged: !categories.is_empty(),
            level: if categories.is_empty() {
                Level::Safe
            } else {
                Level::Unsafe
            },
            categories: categories.to_vec(),
            category_levels: categories.iter().map(|c| (*c, Level::Unsafe)).collect(),
            scores: scores.iter().copied().collect(),
            signals: Vec::new(),
            toxicity: toxicity.iter().map(|(l, p)| (l.to_string(), *p)).collect(),
            models: Vec::new(),
            policy: PolicyRef { version: 0 },
            windows: 1,
            explanation: None,
        }
    }

    #[test]
    fn every_openai_category_is_present() {
        let r = result(ours(&[], &[], &[]));
        assert_eq!(r.categories.len(), 13);
        assert_eq!(r.category_scores.len(), 13);
        assert!(!r.flagged);
        assert_eq!(r.level, Level::Safe);
        assert!(category_names().any(|n| n == "self-harm/instructions"));
        let json = serde_json::to_value(&r).expect("json");
        assert_eq!(json["gatehouse"]["level"], "safe");
    }

    #[test]
    fn categories_follow_the_flagged_gate() {
        let scores = [
            (Category::Violent, 0.9),
            (Category::UnethicalActs, 0.2),
            (Category::SuicideSelfHarm, 0.1),
        ];
        let r = result(ours(&[Category::Violent], &scores, &[("threat", 0.7)]));
        assert!(r.categories["violence"]);
        assert!(r.categories["harassment/threatening"]);
        assert!(!r.categories["harassment"]);
        assert!(!r.categories["self-harm"]);
        assert_eq!(r.category_scores["violence"], 0.9);
        assert!(!r.categories["illicit/violent"]);
        assert_eq!(r.gatehouse.scores[&Category::Violent], 0.9);
    }

    #[test]
    fn an_insult_is_harassment_not_hate() {
        let r = result(ours(
            &[Category::UnethicalActs],
            &[(Category::UnethicalActs, 0.95)],
            &[("identity_hate", 0.01)],
        ));
        assert!(r.categories["harassment"]);
        assert!(!r.categories["hate"]);
        // Without the English model, hate has no evidence at all.
        let r = result(ours(
            &[Category::UnethicalActs],
            &[(Category::UnethicalActs, 0.9)],
            &[],
        ));
        assert!(!r.categories["hate"]);
        assert_eq!(r.category_scores["hate"], 0.0);
    }
}
