//! The verdict: every model's scores mapped onto the categories, the rule hits raised to
//! their levels, and the tenant policy's thresholds turning scores into a level. A pure
//! function of what the worker stored, the chunk's models and the job's policy version, so
//! the worker (for its metrics) and the api (rendering results) compute the same thing.

use std::collections::BTreeMap;

use super::{Category, Level, Policy, Thresholds};
use crate::job::result::{
    CategoryScore, ChunkModel, DecidedBy, Explanation, ModelRef, ModerationResult, PolicyRef,
    RuleHit, Signal, StoredModeration, WindowExplanation,
};

/// Six decimals: plenty for thresholds, and no f32 noise digits in the JSON.
fn round(p: f32) -> f64 {
    (f64::from(p) * 1e6).round() / 1e6
}

/// Where a model label lands in the taxonomy: a category of its own name, or a toxicity
/// label mapped onto one. The second value says whether it is a toxicity label.
fn category_of(label: &str) -> (Option<Category>, bool) {
    match label.parse::<Category>() {
        Ok(c) => (Some(c), false),
        Err(_) => (Category::from_toxicity_label(label), true),
    }
}

/// Most windows an explanation lists per model (the highest-scoring ones).
const MAX_EXPLAINED_WINDOWS: usize = 4;
/// Categories per window in an explanation.
const TOP_PER_WINDOW: usize = 3;

/// The verdict for one stored item.
pub fn verdict(
    models: &[ChunkModel],
    stored: &StoredModeration,
    policy: &Policy,
) -> ModerationResult {
    let mut scores: BTreeMap<Category, f32> = Category::ALL.iter().map(|c| (*c, 0.0)).collect();
    let mut floors: BTreeMap<Category, Level> = BTreeMap::new();
    let mut signals = Vec::new();
    let mut toxicity = BTreeMap::new();
    let mut windows = 1;
    // Per category the best model score: (score, model index, label index, window).
    let mut best: BTreeMap<Category, (f32, usize, usize, usize)> = BTreeMap::new();

    for (m, (model, per_window)) in models.iter().zip(&stored.scores).enumerate() {
        windows = windows.max(per_window.len());
        for (l, label) in model.labels.iter().enumerate() {
            let (window, p) = per_window
                .iter()
                .enumerate()
                .filter_map(|(w, s)| s.get(l).map(|p| (w, *p)))
                .fold(
                    (0, 0.0_f32),
                    |acc, (w, p)| if p > acc.1 { (w, p) } else { acc },
                );
            let (category, is_toxicity) = category_of(label);
            if is_toxicity {
                toxicity.insert(label.clone(), round(p));
            }
            let Some(category) = category else { continue };
            let slot = scores.entry(category).or_insert(0.0);
            if p > *slot {
                *slot = p;
            }
            if best.get(&category).is_none_or(|b| p > b.0) {
                best.insert(category, (p, m, l, window));
            }
            if policy.thresholds(category).level(p) > Level::Safe {
                signals.push(Signal::Model {
                    model: model.model.reference.clone(),
                    label: label.clone(),
                    category,
                    score: round(p),
                });
            }
        }
    }

    let model_scores = scores.clone();
    let mut rule_for: BTreeMap<Category, (Level, String, &'static str)> = BTreeMap::new();
    for hit in &stored.rules {
        match hit {
            RuleHit::Pii { rule, start, end } => {
                let level = policy.pii_rule_level;
                raise(&mut scores, &mut floors, Category::Pii, level, policy);
                note_rule(&mut rule_for, Category::Pii, level, rule, "pii");
                signals.push(Signal::Pii {
                    rule: rule.clone(),
                    category: Category::Pii,
                    level,
                    start: *start,
                    end: *end,
                });
            }
            RuleHit::Blocklist { term, start, end } => {
                let Some(entry) = usize::try_from(*term)
                    .ok()
                    .and_then(|i| policy.blocklist.get(i))
                else {
                    continue;
                };
                raise(
                    &mut scores,
                    &mut floors,
                    entry.category,
                    entry.level,
                    policy,
                );
                note_rule(
                    &mut rule_for,
                    entry.category,
                    entry.level,
                    &entry.term,
                    "blocklist",
                );
                signals.push(Signal::Blocklist {
                    term: entry.term.clone(),
                    category: entry.category,
                    level: entry.level,
                    start: *start,
                    end: *end,
                });
            }
        }
    }

    let mut level = Level::Safe;
    let mut categories = Vec::new();
    let mut category_levels = BTreeMap::new();
    for category in Category::ALL {
        if !policy.is_enabled(category) {
            continue;
        }
        // The models' score through the thresholds, raised to any rule's level.
        let by_models = policy.thresholds(category).level(model_scores[&category]);
        let by_rules = floors.get(&category).copied().unwrap_or(Level::Safe);
        let category_level = by_models.max(by_rules);
        if category_level > Level::Safe {
            categories.push(category);
            category_levels.insert(category, category_level);
            level = level.max(category_level);
        }
    }

    let explanation = (level > Level::Safe).then(|| {
        explain(
            models,
            stored,
            &category_levels,
            level,
            &model_scores,
            &best,
            &rule_for,
            &signals,
            policy,
        )
    });

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
            .map(|m| m.model.clone())
            .collect::<Vec<ModelRef>>(),
        policy: PolicyRef {
            version: policy.version,
        },
        windows,
        explanation,
    }
}

fn note_rule(
    rule_for: &mut BTreeMap<Category, (Level, String, &'static str)>,
    category: Category,
    level: Level,
    name: &str,
    detector: &'static str,
) {
    if rule_for.get(&category).is_none_or(|(l, _, _)| level > *l) {
        rule_for.insert(category, (level, name.to_string(), detector));
    }
}

/// A rule match: the category is at least `level`, and its score at least what that level
/// means (1.0 for `unsafe`; the controversial threshold for `controversial`).
fn raise(
    scores: &mut BTreeMap<Category, f32>,
    floors: &mut BTreeMap<Category, Level>,
    category: Category,
    level: Level,
    policy: &Policy,
) {
    let thresholds: Thresholds = policy.thresholds(category);
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

#[allow(clippy::too_many_arguments)]
fn explain(
    models: &[ChunkModel],
    stored: &StoredModeration,
    category_levels: &BTreeMap<Category, Level>,
    level: Level,
    model_scores: &BTreeMap<Category, f32>,
    best: &BTreeMap<Category, (f32, usize, usize, usize)>,
    rule_for: &BTreeMap<Category, (Level, String, &'static str)>,
    signals: &[Signal],
    policy: &Policy,
) -> Explanation {
    // The first category (taxonomy order) at the overall level decides; a rule at that level
    // wins over a model score, else the model window with the highest score.
    let category = category_levels
        .iter()
        .find(|(_, l)| **l == level)
        .map(|(c, _)| *c)
        .unwrap_or(Category::Violent);
    let thresholds = policy.thresholds(category);
    let by_models = thresholds.level(model_scores.get(&category).copied().unwrap_or(0.0));
    let mut decided_by = DecidedBy {
        category,
        level,
        detector: "model".into(),
        model: None,
        window: None,
        label: None,
        score: None,
        threshold: None,
        rule: None,
        signal: None,
    };
    let mut deciding_window = None;
    match rule_for.get(&category) {
        Some((rule_level, name, detector)) if *rule_level >= by_models => {
            decided_by.detector = (*detector).to_string();
            decided_by.signal = signals.iter().position(|s| match s {
                Signal::Pii { rule, .. } => *detector == "pii" && rule == name,
                Signal::Blocklist { term, .. } => *detector == "blocklist" && term == name,
                Signal::Model { .. } => false,
            });
            decided_by.rule = Some(name.clone());
        }
        _ => {
            if let Some((p, m, l, w)) = best.get(&category).copied() {
                let model = models.get(m);
                let reference = model.map(|m| m.model.reference.clone());
                let label = model.and_then(|m| m.labels.get(l)).cloned();
                decided_by.signal = signals.iter().position(|s| {
                    matches!(s, Signal::Model { model, label: sl, .. }
                        if Some(model) == reference.as_ref() && Some(sl) == label.as_ref())
                });
                decided_by.model = reference;
                decided_by.label = label;
                decided_by.score = Some(round(p));
                decided_by.threshold = Some(round(match level {
                    Level::Unsafe => thresholds.unsafe_,
                    _ => thresholds.controversial,
                }));
                deciding_window = Some((m, w));
            }
            decided_by.window = Some(deciding_window.map_or(0, |(_, w)| w));
        }
    }
    let mut windows = Vec::new();
    for (m, (model, per_window)) in models.iter().zip(&stored.scores).enumerate() {
        // Each window's categories (a toxicity label counts for the category it maps onto).
        let mut ranked: Vec<(usize, Vec<(Category, f32)>)> = per_window
            .iter()
            .enumerate()
            .map(|(w, row)| {
                let mut by_category: BTreeMap<Category, f32> = BTreeMap::new();
                for (label, p) in model.labels.iter().zip(row) {
                    if let (Some(c), _) = category_of(label) {
                        let slot = by_category.entry(c).or_insert(0.0);
                        *slot = slot.max(*p);
                    }
                }
                let mut top: Vec<(Category, f32)> = by_category.into_iter().collect();
                top.sort_by(|a, b| b.1.total_cmp(&a.1));
                top.truncate(TOP_PER_WINDOW);
                (w, top)
            })
            .collect();
        // The highest-scoring windows first (the deciding one before all), then in order.
        let peak = |top: &[(Category, f32)]| top.first().map_or(0.0, |t| t.1);
        ranked.sort_by(|a, b| {
            let decides = |w: usize| deciding_window == Some((m, w));
            decides(b.0)
                .cmp(&decides(a.0))
                .then(peak(&b.1).total_cmp(&peak(&a.1)))
                .then(a.0.cmp(&b.0))
        });
        ranked.truncate(MAX_EXPLAINED_WINDOWS);
        ranked.sort_by_key(|(w, _)| *w);
        windows.extend(ranked.into_iter().map(|(w, top)| {
            WindowExplanation {
                model: model.model.reference.clone(),
                window: w,
                top: top
                    .into_iter()
                    .map(|(category, p)| CategoryScore {
                        category,
                        score: round(p),
                    })
                    .collect(),
            }
        }));
    }
    Explanation {
        decided_by,
        windows,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::moderation::{BlockTerm, PolicyChange, PolicyLimits};
    use serde_json::json;

    fn guard() -> ChunkModel {
        ChunkModel {
            model: ModelRef::new("guard", "abcdef0123456789"),
            labels: Category::ALL
                .iter()
                .map(|c| c.as_str().to_string())
                .collect(),
        }
    }

    fn toxic() -> ChunkModel {
        ChunkModel {
            model: ModelRef::new("toxic", "0123456789abcdef"),
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
        }
    }

    fn stored(per_model: &[&[f32]]) -> StoredModeration {
        StoredModeration {
            scores: per_model.iter().map(|s| vec![s.to_vec()]).collect(),
            rules: Vec::new(),
        }
    }

    #[test]
    fn ordinary_text_is_safe_and_names_models_and_policy() {
        let r = verdict(
            &[guard(), toxic()],
            &stored(&[&[0.01; 9], &[0.02; 6]]),
            &Policy::default(),
        );
        assert!(!r.flagged);
        assert_eq!(r.level, Level::Safe);
        assert!(r.categories.is_empty() && r.signals.is_empty());
        assert_eq!(r.scores.len(), 9);
        assert_eq!(r.toxicity.len(), 6);
        assert_eq!(r.models[0].reference, "guard@abcdef012345");
        assert_eq!(r.policy, PolicyRef { version: 0 });
        assert!(r.explanation.is_none());
    }

    #[test]
    fn thresholds_decide_levels_and_toxicity_labels_map_onto_categories() {
        let mut gv = [0.0; 9];
        gv[0] = 0.6; // violent: controversial
        let r = verdict(
            &[guard(), toxic()],
            &stored(&[&gv, &[0.9, 0.1, 0.1, 0.1, 0.95, 0.0]]),
            &Policy::default(),
        );
        assert_eq!(r.level, Level::Unsafe);
        assert_eq!(r.categories, [Category::Violent, Category::UnethicalActs]);
        assert_eq!(r.category_levels[&Category::Violent], Level::Controversial);
        assert_eq!(r.category_levels[&Category::UnethicalActs], Level::Unsafe);
        assert_eq!(r.scores[&Category::UnethicalActs], 0.95);
        assert!(
            r.signals
                .iter()
                .any(|s| matches!(s, Signal::Model { label, .. } if label == "insult"))
        );
        let why = r.explanation.expect("flagged results explain themselves");
        assert_eq!(why.decided_by.category, Category::UnethicalActs);
        assert_eq!(why.decided_by.detector, "model");
        assert_eq!(why.decided_by.model.as_deref(), Some("toxic@0123456789ab"));
        assert_eq!(why.windows.len(), 2);
        assert_eq!(why.windows[1].top[0].category, Category::UnethicalActs);
    }

    #[test]
    fn the_worst_window_counts_and_is_named() {
        let mut calm = vec![0.0; 9];
        calm[0] = 0.1;
        let mut hot = vec![0.0; 9];
        hot[0] = 0.9;
        let s = StoredModeration {
            scores: vec![vec![calm, hot.clone(), vec![0.0; 9]]],
            rules: Vec::new(),
        };
        let r = verdict(&[guard()], &s, &Policy::default());
        assert_eq!(r.windows, 3);
        assert_eq!(r.scores[&Category::Violent], 0.9);
        let why = r.explanation.expect("explanation");
        assert_eq!(why.decided_by.window, Some(1));
        assert_eq!(why.windows.len(), 3);
        assert_eq!(why.windows[1].top[0].score, 0.9);
    }

    #[test]
    fn the_explanation_names_the_deciding_signal_and_lists_few_windows() {
        // 10 windows: window 7 has the highest violent score, window 2 a lower jailbreak one.
        let mut per_window = vec![vec![0.01_f32; 9]; 10];
        per_window[7][0] = 0.93;
        per_window[7][5] = 0.4;
        per_window[2][8] = 0.6;
        for (w, row) in per_window.iter_mut().enumerate() {
            row[1] = 0.02 * w as f32;
        }
        let s = StoredModeration {
            scores: vec![per_window, vec![vec![0.9, 0.0, 0.0, 0.0, 0.0, 0.0]]],
            rules: Vec::new(),
        };
        let r = verdict(&[guard(), toxic()], &s, &Policy::default());
        assert_eq!(r.level, Level::Unsafe);
        let why = r.explanation.clone().expect("explanation");
        let d = &why.decided_by;
        assert_eq!(
            (d.category, d.detector.as_str(), d.window),
            (Category::Violent, "model", Some(7))
        );
        assert_eq!(d.model.as_deref(), Some("guard@abcdef012345"));
        assert_eq!(d.label.as_deref(), Some("violent"));
        assert_eq!((d.score, d.threshold), (Some(0.93), Some(0.8)));
        let signal = &r.signals[d.signal.expect("signal index")];
        assert!(
            matches!(signal, Signal::Model { label, category: Category::Violent, .. } if label == "violent")
        );
        // At most 4 windows of the guard (the highest-scoring, in order) + the toxic model's one.
        let guard_windows: Vec<usize> = why
            .windows
            .iter()
            .filter(|w| w.model.starts_with("guard@"))
            .map(|w| w.window)
            .collect();
        assert_eq!(guard_windows, [2, 7, 8, 9]);
        assert_eq!(why.windows.len(), 5);
        let seven = &why.windows[1];
        assert_eq!(seven.top.len(), 3);
        assert_eq!(
            (seven.top[0].category, seven.top[0].score),
            (Category::Violent, 0.93)
        );
        assert_eq!(seven.top[1].category, Category::UnethicalActs);
        // Typed both ways: what the api serialises, it reads back.
        let json = serde_json::to_value(&r).expect("json");
        assert_eq!(json["explanation"]["decided_by"]["signal"], json!(d.signal));
        let back: ModerationResult = serde_json::from_value(json).expect("typed");
        assert_eq!(back, r);
        // Compact: the explanation of a 10-window text stays small.
        let bytes = serde_json::to_vec(&why).expect("bytes").len();
        assert!(bytes < 1200, "{bytes} bytes");
    }

    #[test]
    fn policy_can_disable_categories_and_move_thresholds() {
        let mut gv = [0.0; 9];
        gv[0] = 0.6;
        gv[8] = 0.6;
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
        let r = verdict(&[guard()], &stored(&[&gv]), &policy);
        assert_eq!(r.categories, [Category::Violent]);
        assert_eq!(r.level, Level::Unsafe);
        // Jailbreak scored but disabled.
        assert_eq!(r.scores[&Category::Jailbreak], 0.6);
        assert_eq!(r.policy, PolicyRef { version: 4 });
    }

    #[test]
    fn rules_fire_beside_the_models_and_decide_when_stronger() {
        let policy = Policy {
            blocklist: vec![BlockTerm {
                term: "SECRET".into(),
                category: Category::Jailbreak,
                level: Level::Controversial,
            }],
            ..Policy::default()
        };
        let s = StoredModeration {
            scores: vec![vec![vec![0.0; 9]]],
            rules: vec![
                RuleHit::Pii {
                    rule: "cn_mobile".into(),
                    start: 5,
                    end: 16,
                },
                RuleHit::Blocklist {
                    term: 0,
                    start: 22,
                    end: 28,
                },
                // An index the policy does not have is ignored.
                RuleHit::Blocklist {
                    term: 9,
                    start: 0,
                    end: 1,
                },
            ],
        };
        let r = verdict(&[guard()], &s, &policy);
        assert_eq!(r.level, Level::Unsafe);
        assert_eq!(r.category_levels[&Category::Pii], Level::Unsafe);
        assert_eq!(
            r.category_levels[&Category::Jailbreak],
            Level::Controversial
        );
        assert_eq!(r.scores[&Category::Pii], 1.0);
        assert_eq!(r.signals.len(), 2);
        assert!(
            matches!(&r.signals[0], Signal::Pii { rule, start: 5, end: 16, .. } if rule == "cn_mobile")
        );
        assert!(matches!(&r.signals[1], Signal::Blocklist { term, .. } if term == "SECRET"));
        let why = r.explanation.expect("explanation");
        assert_eq!(why.decided_by.detector, "pii");
        assert_eq!(why.decided_by.rule.as_deref(), Some("cn_mobile"));
        assert_eq!(why.decided_by.signal, Some(0));
        assert_eq!(why.decided_by.score, None);
    }
}
