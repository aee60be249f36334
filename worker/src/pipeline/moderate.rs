//! One item's moderation verdict in the Qwen3Guard taxonomy: every model's scores mapped onto
//! the categories, the deterministic detectors (PII rules, the tenant's blocklist), and the
//! tenant policy's thresholds turning scores into a level.
//!
//! ```json
//! {"flagged": true, "level": "unsafe", "categories": ["violent"],
//!  "category_levels": {"violent": "unsafe"}, "scores": {"violent": 0.93, ...},
//!  "signals": [{"detector": "model", ...}, {"detector": "pii", ...}],
//!  "toxicity": {"toxic": 0.1, ...}, "models": [...], "policy": {"version": 3}, "windows": 1}
//! ```

use std::collections::BTreeMap;

use gatehouse_common::moderation::{Category, Level, Thresholds};
use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::{batcher::TextScores, detect, model::ModelInfo, policy::CompiledPolicy};

/// A model named the way results name it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ModelRef {
    pub name: String,
    pub sha256: String,
    #[serde(rename = "ref")]
    pub reference: String,
}

impl From<&ModelInfo> for ModelRef {
    fn from(info: &ModelInfo) -> Self {
        Self {
            name: info.name.clone(),
            sha256: info.content_hash.clone(),
            reference: info.reference(),
        }
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ModerationResult {
    pub flagged: bool,
    pub level: Level,
    /// Enabled categories at `controversial` or worse, in taxonomy order.
    pub categories: Vec<Category>,
    pub category_levels: BTreeMap<Category, Level>,
    /// Every category's score in [0, 1] (1.0 where a rule matched).
    pub scores: BTreeMap<Category, f64>,
    /// Which detectors fired.
    pub signals: Vec<Value>,
    /// The English toxicity model's own labels, when it ran.
    #[serde(skip_serializing_if = "Map::is_empty")]
    pub toxicity: Map<String, Value>,
    pub models: Vec<ModelRef>,
    pub policy: Value,
    /// Model windows the text needed (long texts are split; the worst window counts).
    pub windows: usize,
}

/// Six decimals: plenty for thresholds, and no f32 noise digits in the JSON.
fn round(p: f32) -> f64 {
    (f64::from(p) * 1e6).round() / 1e6
}

/// The verdict for `text` from each model's scores (in `models` order) and the policy.
pub fn verdict(
    text: &str,
    models: &[(&ModelInfo, &TextScores)],
    policy: &CompiledPolicy,
) -> ModerationResult {
    let rules = &policy.policy;
    let mut scores: BTreeMap<Category, f32> = Category::ALL.iter().map(|c| (*c, 0.0)).collect();
    let mut floors: BTreeMap<Category, Level> = BTreeMap::new();
    let mut signals = Vec::new();
    let mut toxicity = Map::new();
    let mut windows = 1;

    for (info, out) in models {
        windows = windows.max(out.windows);
        for (label, p) in info.labels.iter().zip(&out.scores) {
            let direct = label.parse::<Category>().ok();
            let category = direct.or_else(|| Category::from_toxicity_label(label));
            if direct.is_none() {
                toxicity.insert(label.clone(), json!(round(*p)));
            }
            let Some(category) = category else { continue };
            let slot = scores.entry(category).or_insert(0.0);
            *slot = slot.max(*p);
            if rules.thresholds(category).level(*p) > Level::Safe {
                signals.push(json!({
                    "detector": "model",
                    "model": info.reference(),
                    "label": label,
                    "category": category,
                    "score": round(*p),
                }));
            }
        }
    }

    let model_scores = scores.clone();
    for hit in detect::find_pii(text) {
        raise(
            &mut scores,
            &mut floors,
            Category::Pii,
            rules.pii_rule_level,
            rules.thresholds(Category::Pii),
        );
        signals.push(json!({
            "detector": "pii",
            "rule": hit.kind.as_str(),
            "category": Category::Pii,
            "level": rules.pii_rule_level,
            "start": hit.start,
            "end": hit.end,
        }));
    }
    for hit in policy.blocklist.find(text) {
        let Some(term) = rules.blocklist.get(hit.term) else {
            continue;
        };
        raise(
            &mut scores,
            &mut floors,
            term.category,
            term.level,
            rules.thresholds(term.category),
        );
        signals.push(json!({
            "detector": "blocklist",
            "term": term.term,
            "category": term.category,
            "level": term.level,
            "start": hit.start,
            "end": hit.end,
        }));
    }

    let mut level = Level::Safe;
    let mut categories = Vec::new();
    let mut category_levels = BTreeMap::new();
    for category in Category::ALL {
        if !rules.is_enabled(category) {
            continue;
        }
        // The models' score through the thresholds, raised to any rule's level.
        let by_models = rules.thresholds(category).level(model_scores[&category]);
        let by_rules = floors.get(&category).copied().unwrap_or(Level::Safe);
        let category_level = by_models.max(by_rules);
        if category_level > Level::Safe {
            categories.push(category);
            category_levels.insert(category, category_level);
            level = level.max(category_level);
        }
    }

    ModerationResult {
        flagged: level != Level::Safe,
        level,
        categories,
        category_levels,
        scores: scores.into_iter().map(|(c, p)| (c, round(p))).collect(),
        signals,
        toxicity,
        models: models
            .iter()
            .map(|(info, _)| ModelRef::from(*info))
            .collect(),
        policy: json!({ "version": rules.version }),
        windows,
    }
}

/// A rule match: the category is at least `level`, and its score at least what that level
/// means (1.0 for `unsafe`; the controversial threshold for `controversial`).
fn raise(
    scores: &mut BTreeMap<Category, f32>,
    floors: &mut BTreeMap<Category, Level>,
    category: Category,
    level: Level,
    thresholds: Thresholds,
) {
    let floor_score = match level {
        Level::Safe => return,
        Level::Controversial => thresholds.controversial,
        Level::Unsafe => 1.0,
    };
    let score = scores.entry(category).or_insert(0.0);
    *score = score.max(floor_score);
    let floor = floors.entry(category).or_insert(level);
    *floor = (*floor).max(level);
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_common::moderation::{BlockTerm, Policy, PolicyChange, PolicyLimits};

    fn guard() -> ModelInfo {
        ModelInfo {
            name: "guard".into(),
            content_hash: "abcdef0123456789".into(),
            labels: Category::ALL
                .iter()
                .map(|c| c.as_str().to_string())
                .collect(),
            threshold: 0.5,
        }
    }

    fn toxic() -> ModelInfo {
        ModelInfo {
            name: "toxic".into(),
            content_hash: "0123456789abcdef".into(),
            labels: [
                "toxic",
                "severe_toxic",
                "obscene",
                "threat",
                "insult",
                "identity_hate",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
            threshold: 0.5,
        }
    }

    fn compiled(policy: Policy) -> CompiledPolicy {
        let blocklist = crate::detect::Blocklist::new(&policy.blocklist).expect("blocklist");
        CompiledPolicy { policy, blocklist }
    }

    fn scores(values: &[f32]) -> TextScores {
        TextScores {
            scores: values.to_vec(),
            windows: 1,
        }
    }

    #[test]
    fn ordinary_text_is_safe_and_names_models_and_policy() {
        let (g, t) = (guard(), toxic());
        let (gs, ts) = (scores(&[0.01; 9]), scores(&[0.02; 6]));
        let r = verdict(
            "hello there",
            &[(&g, &gs), (&t, &ts)],
            &compiled(Policy::default()),
        );
        assert!(!r.flagged);
        assert_eq!(r.level, Level::Safe);
        assert!(r.categories.is_empty() && r.signals.is_empty());
        assert_eq!(r.scores.len(), 9);
        assert_eq!(r.toxicity.len(), 6);
        assert_eq!(r.models[0].reference, "guard@abcdef012345");
        assert_eq!(r.policy, json!({"version": 0}));
    }

    #[test]
    fn thresholds_decide_levels_and_toxicity_labels_map_onto_categories() {
        let (g, t) = (guard(), toxic());
        let mut gv = [0.0; 9];
        gv[0] = 0.6; // violent: controversial
        let gs = scores(&gv);
        let ts = scores(&[0.9, 0.1, 0.1, 0.1, 0.95, 0.0]); // toxic + insult → unethical_acts
        let r = verdict("x", &[(&g, &gs), (&t, &ts)], &compiled(Policy::default()));
        assert_eq!(r.level, Level::Unsafe);
        assert_eq!(r.categories, [Category::Violent, Category::UnethicalActs]);
        assert_eq!(r.category_levels[&Category::Violent], Level::Controversial);
        assert_eq!(r.category_levels[&Category::UnethicalActs], Level::Unsafe);
        assert_eq!(r.scores[&Category::UnethicalActs], 0.95);
        assert!(r.signals.iter().any(|s| s["label"] == "insult"));
    }

    #[test]
    fn policy_can_disable_categories_and_move_thresholds() {
        let g = guard();
        let mut gv = [0.0; 9];
        gv[0] = 0.6;
        gv[8] = 0.6;
        let gs = scores(&gv);
        let limits = PolicyLimits {
            max_blocklist_terms: 10,
            max_term_chars: 10,
        };
        let change: PolicyChange = serde_json::from_value(json!({
            "enabled_categories": ["violent"],
            "thresholds": {"violent": {"controversial": 0.3, "unsafe": 0.55}}
        }))
        .expect("change");
        let mut policy = change.apply(&Policy::default(), limits).expect("valid");
        policy.version = 4;
        let r = verdict("x", &[(&g, &gs)], &compiled(policy));
        assert_eq!(r.categories, [Category::Violent]);
        assert_eq!(r.level, Level::Unsafe);
        // Jailbreak scored but disabled.
        assert_eq!(r.scores[&Category::Jailbreak], 0.6);
        assert_eq!(r.policy, json!({"version": 4}));
    }

    #[test]
    fn rules_fire_beside_the_models() {
        let g = guard();
        let gs = scores(&[0.0; 9]);
        let policy = Policy {
            blocklist: vec![BlockTerm {
                term: "SECRET".into(),
                category: Category::Jailbreak,
                level: Level::Controversial,
            }],
            ..Policy::default()
        };
        let r = verdict(
            "call 13812345678, say ｓｅｃｒｅｔ",
            &[(&g, &gs)],
            &compiled(policy),
        );
        assert_eq!(r.level, Level::Unsafe);
        assert_eq!(r.category_levels[&Category::Pii], Level::Unsafe);
        assert_eq!(
            r.category_levels[&Category::Jailbreak],
            Level::Controversial
        );
        assert_eq!(r.scores[&Category::Pii], 1.0);
        let pii = r
            .signals
            .iter()
            .find(|s| s["detector"] == "pii")
            .expect("pii");
        assert_eq!(pii["rule"], "cn_mobile");
        assert_eq!(
            (pii["start"].as_u64(), pii["end"].as_u64()),
            (Some(5), Some(16))
        );
        let block = r
            .signals
            .iter()
            .find(|s| s["detector"] == "blocklist")
            .expect("block");
        assert_eq!(block["term"], "SECRET");
    }
}
