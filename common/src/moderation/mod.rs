//! The moderation taxonomy (Qwen3Guard's levels and categories) and the tenant policy that
//! turns scores into verdicts. Shared: the api validates policies, the worker applies them.

use std::{collections::BTreeMap, fmt, str::FromStr};

use serde::{Deserialize, Serialize};

mod verdict;
pub use verdict::verdict;

/// A verdict level, ordered from harmless to harmful.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    Safe,
    Controversial,
    Unsafe,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Safe => "safe",
            Self::Controversial => "controversial",
            Self::Unsafe => "unsafe",
        }
    }
}

/// Qwen3Guard's safety categories, in this fixed order (the classifier's label order too).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    Violent,
    NonViolentIllegalActs,
    SexualContent,
    Pii,
    SuicideSelfHarm,
    UnethicalActs,
    PoliticallySensitive,
    CopyrightViolation,
    Jailbreak,
}

impl Category {
    pub const ALL: [Category; 9] = [
        Self::Violent,
        Self::NonViolentIllegalActs,
        Self::SexualContent,
        Self::Pii,
        Self::SuicideSelfHarm,
        Self::UnethicalActs,
        Self::PoliticallySensitive,
        Self::CopyrightViolation,
        Self::Jailbreak,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Violent => "violent",
            Self::NonViolentIllegalActs => "non_violent_illegal_acts",
            Self::SexualContent => "sexual_content",
            Self::Pii => "pii",
            Self::SuicideSelfHarm => "suicide_self_harm",
            Self::UnethicalActs => "unethical_acts",
            Self::PoliticallySensitive => "politically_sensitive",
            Self::CopyrightViolation => "copyright_violation",
            Self::Jailbreak => "jailbreak",
        }
    }

    /// Where a label of the English toxicity model (Jigsaw labels) lands in the taxonomy.
    /// Qwen3Guard files insults, harassment and hate under "unethical acts"; threats are
    /// violent. Unknown labels map to nothing.
    pub fn from_toxicity_label(label: &str) -> Option<Category> {
        match label {
            "toxic" | "severe_toxic" | "obscene" | "insult" | "identity_hate" => {
                Some(Self::UnethicalActs)
            }
            "threat" => Some(Self::Violent),
            _ => None,
        }
    }
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("unknown category `{0}`")]
pub struct UnknownCategory(pub String);

impl FromStr for Category {
    type Err = UnknownCategory;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| UnknownCategory(s.to_string()))
    }
}

/// A category's two thresholds: a score at or above `controversial` makes the category
/// controversial, at or above `unsafe` unsafe.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Thresholds {
    pub controversial: f32,
    #[serde(rename = "unsafe")]
    pub unsafe_: f32,
}

impl Thresholds {
    pub const DEFAULT: Thresholds = Thresholds {
        controversial: 0.5,
        unsafe_: 0.8,
    };

    pub fn level(&self, score: f32) -> Level {
        if score >= self.unsafe_ {
            Level::Unsafe
        } else if score >= self.controversial {
            Level::Controversial
        } else {
            Level::Safe
        }
    }
}

/// One blocklist entry: a term and the category (and level) a match means.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlockTerm {
    pub term: String,
    pub category: Category,
    #[serde(default = "unsafe_level")]
    pub level: Level,
}

fn unsafe_level() -> Level {
    Level::Unsafe
}

/// A tenant's moderation policy, in full. Version 0 is the built-in default; every change a
/// tenant admin makes is stored as the next version and results record the version they
/// were judged by.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Policy {
    pub version: i32,
    /// One entry per category, always complete.
    pub thresholds: BTreeMap<Category, Thresholds>,
    /// Categories that can flag; the others are still scored but never raise the level.
    pub enabled_categories: Vec<Category>,
    /// The level a PII rule match (e-mail, phone, resident ID, card, IP) raises `pii` to.
    pub pii_rule_level: Level,
    pub blocklist: Vec<BlockTerm>,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            version: 0,
            thresholds: Category::ALL
                .into_iter()
                .map(|c| (c, Thresholds::DEFAULT))
                .collect(),
            enabled_categories: Category::ALL.to_vec(),
            pii_rule_level: Level::Unsafe,
            blocklist: Vec::new(),
        }
    }
}

impl Policy {
    pub fn thresholds(&self, category: Category) -> Thresholds {
        self.thresholds
            .get(&category)
            .copied()
            .unwrap_or(Thresholds::DEFAULT)
    }

    pub fn is_enabled(&self, category: Category) -> bool {
        self.enabled_categories.contains(&category)
    }
}

/// Limits on what a policy may hold.
#[derive(Debug, Clone, Copy)]
pub struct PolicyLimits {
    pub max_blocklist_terms: usize,
    pub max_term_chars: usize,
}

/// A policy change as a tenant admin sends it: every field optional; a missing field keeps
/// the current value (thresholds merge per category).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyChange {
    #[serde(default)]
    pub thresholds: Option<BTreeMap<String, serde_json::Value>>,
    #[serde(default)]
    pub enabled_categories: Option<Vec<String>>,
    #[serde(default)]
    pub pii_rule_level: Option<Level>,
    #[serde(default)]
    pub blocklist: Option<Vec<serde_json::Value>>,
}

/// A policy field that was refused, named the way the request spelled it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct PolicyError {
    pub field: String,
    pub message: String,
}

fn refuse(field: impl Into<String>, message: impl Into<String>) -> PolicyError {
    PolicyError {
        field: field.into(),
        message: message.into(),
    }
}

impl PolicyChange {
    /// The policy `current` becomes with this change applied (same version number: the
    /// store assigns the next one), or the first refused field.
    pub fn apply(&self, current: &Policy, limits: PolicyLimits) -> Result<Policy, PolicyError> {
        let mut next = current.clone();
        if let Some(thresholds) = &self.thresholds {
            for (name, value) in thresholds {
                let field = format!("thresholds.{name}");
                let category: Category = name
                    .parse()
                    .map_err(|e: UnknownCategory| refuse(&field, e.to_string()))?;
                let mut t = next.thresholds(category);
                let object = value.as_object().ok_or_else(|| {
                    refuse(
                        &field,
                        "must be an object with `controversial` and/or `unsafe`",
                    )
                })?;
                for (key, v) in object {
                    let key_field = format!("{field}.{key}");
                    let x = v
                        .as_f64()
                        .ok_or_else(|| refuse(&key_field, "must be a number"))?;
                    if !(0.0..=1.0).contains(&x) {
                        return Err(refuse(&key_field, "must be within [0, 1]"));
                    }
                    match key.as_str() {
                        "controversial" => t.controversial = x as f32,
                        "unsafe" => t.unsafe_ = x as f32,
                        _ => {
                            return Err(refuse(
                                &key_field,
                                "unknown threshold (expected `controversial` or `unsafe`)",
                            ));
                        }
                    }
                }
                if t.controversial > t.unsafe_ {
                    return Err(refuse(&field, "`controversial` must not be above `unsafe`"));
                }
                next.thresholds.insert(category, t);
            }
        }
        if let Some(names) = &self.enabled_categories {
            if names.len() > 4 * Category::ALL.len() {
                return Err(refuse(
                    "enabled_categories",
                    format!(
                        "{} entries; at most {}",
                        names.len(),
                        4 * Category::ALL.len()
                    ),
                ));
            }
            let mut enabled = Vec::new();
            for (i, name) in names.iter().enumerate() {
                let category: Category = name.parse().map_err(|e: UnknownCategory| {
                    refuse(format!("enabled_categories[{i}]"), e.to_string())
                })?;
                if !enabled.contains(&category) {
                    enabled.push(category);
                }
            }
            enabled.sort();
            next.enabled_categories = enabled;
        }
        if let Some(level) = self.pii_rule_level {
            next.pii_rule_level = level;
        }
        if let Some(entries) = &self.blocklist {
            if entries.len() > limits.max_blocklist_terms {
                return Err(refuse(
                    "blocklist",
                    format!(
                        "{} terms is over the limit of {}",
                        entries.len(),
                        limits.max_blocklist_terms
                    ),
                ));
            }
            let mut terms = Vec::with_capacity(entries.len());
            for (i, raw) in entries.iter().enumerate() {
                let field = format!("blocklist[{i}]");
                let term: BlockTerm = serde_json::from_value(raw.clone())
                    .map_err(|e| refuse(&field, e.to_string()))?;
                let chars = term.term.chars().count();
                if term.term.trim().is_empty() {
                    return Err(refuse(format!("{field}.term"), "must not be empty"));
                }
                if let Err(
                    e @ (crate::text::TextError::Nul | crate::text::TextError::Control { .. }),
                ) = crate::text::check(&term.term, crate::text::Rule::line(usize::MAX))
                {
                    return Err(refuse(format!("{field}.term"), e.to_string()));
                }
                if chars > limits.max_term_chars {
                    return Err(refuse(
                        format!("{field}.term"),
                        format!(
                            "{chars} characters is over the limit of {}",
                            limits.max_term_chars
                        ),
                    ));
                }
                if term.level == Level::Safe {
                    return Err(refuse(
                        format!("{field}.level"),
                        "must be `controversial` or `unsafe`",
                    ));
                }
                terms.push(term);
            }
            next.blocklist = terms;
        }
        Ok(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const LIMITS: PolicyLimits = PolicyLimits {
        max_blocklist_terms: 3,
        max_term_chars: 10,
    };

    fn change(v: serde_json::Value) -> PolicyChange {
        serde_json::from_value(v).expect("change")
    }

    #[test]
    fn names_round_trip_and_toxicity_labels_map() {
        for c in Category::ALL {
            assert_eq!(c.as_str().parse::<Category>().expect("parse"), c);
            assert_eq!(serde_json::to_value(c).expect("json"), json!(c.as_str()));
        }
        assert_eq!(
            Category::from_toxicity_label("threat"),
            Some(Category::Violent)
        );
        assert_eq!(
            Category::from_toxicity_label("insult"),
            Some(Category::UnethicalActs)
        );
        assert_eq!(Category::from_toxicity_label("other"), None);
        assert!(Level::Unsafe > Level::Controversial && Level::Controversial > Level::Safe);
    }

    #[test]
    fn thresholds_give_levels() {
        let t = Thresholds::DEFAULT;
        assert_eq!(t.level(0.1), Level::Safe);
        assert_eq!(t.level(0.5), Level::Controversial);
        assert_eq!(t.level(0.8), Level::Unsafe);
    }

    #[test]
    fn a_change_merges_into_the_current_policy() {
        let base = Policy::default();
        let next = change(json!({
            "thresholds": {"violent": {"unsafe": 0.9}},
            "enabled_categories": ["jailbreak", "violent", "violent"],
            "blocklist": [{"term": "foo", "category": "jailbreak"}]
        }))
        .apply(&base, LIMITS)
        .expect("valid");
        assert_eq!(next.thresholds(Category::Violent).unsafe_, 0.9);
        assert_eq!(next.thresholds(Category::Violent).controversial, 0.5);
        assert_eq!(
            next.enabled_categories,
            [Category::Violent, Category::Jailbreak]
        );
        assert_eq!(next.blocklist[0].level, Level::Unsafe);
        // An empty change keeps everything.
        assert_eq!(change(json!({})).apply(&next, LIMITS).expect("same"), next);
    }

    #[test]
    fn bad_changes_name_the_field() {
        let base = Policy::default();
        let cases = [
            (
                json!({"thresholds": {"violent": {"unsafe": 1.5}}}),
                "thresholds.violent.unsafe",
            ),
            (
                json!({"thresholds": {"violent": {"controversial": -0.1}}}),
                "thresholds.violent.controversial",
            ),
            (
                json!({"thresholds": {"gore": {"unsafe": 0.5}}}),
                "thresholds.gore",
            ),
            (
                json!({"thresholds": {"violent": {"controversial": 0.9, "unsafe": 0.5}}}),
                "thresholds.violent",
            ),
            (
                json!({"thresholds": {"violent": {"medium": 0.5}}}),
                "thresholds.violent.medium",
            ),
            (
                json!({"enabled_categories": ["violent", "gore"]}),
                "enabled_categories[1]",
            ),
            (
                json!({"blocklist": [{"term": "a", "category": "x"}]}),
                "blocklist[0]",
            ),
            (
                json!({"blocklist": [{"term": " ", "category": "pii"}]}),
                "blocklist[0].term",
            ),
            (
                json!({"blocklist": [{"term": "abcdefghijk", "category": "pii"}]}),
                "blocklist[0].term",
            ),
            (
                json!({"blocklist": [{"term": "a", "category": "pii", "level": "safe"}]}),
                "blocklist[0].level",
            ),
            (
                json!({"blocklist": [
                {"term": "a", "category": "pii"}, {"term": "b", "category": "pii"},
                {"term": "c", "category": "pii"}, {"term": "d", "category": "pii"}]}),
                "blocklist",
            ),
        ];
        for (body, field) in cases {
            let err = change(body.clone())
                .apply(&base, LIMITS)
                .expect_err("refused");
            assert_eq!(err.field, field, "{body}");
        }
    }
}
