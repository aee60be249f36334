//! Moderation on the worker's side: every model's scores (each window kept) and the
//! deterministic detectors' hits (PII rules, the tenant's blocklist) become the item's
//! [`StoredModeration`]. The verdict itself — policy thresholds turning scores into levels —
//! is `gatehouse_common::moderation::verdict`, computed from exactly what is stored, so the
//! api renders the same result the worker counted in its metrics.

use gatehouse_common::{
    job::result::{ChunkModel, ModelRef, RuleHit, StoredModeration},
    moderation,
};

use crate::{batcher::TextScores, detect, model::ModelInfo, policy::CompiledPolicy};

/// A model as a chunk's results name it.
pub fn chunk_model(info: &ModelInfo) -> ChunkModel {
    ChunkModel {
        model: ModelRef::new(&info.name, &info.content_hash),
        labels: info.labels.clone(),
    }
}

/// The detectors' hits on `text` under `policy` (blocklist terms by their index).
pub fn rule_hits(text: &str, policy: &CompiledPolicy) -> Vec<RuleHit> {
    let offset = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
    let mut hits: Vec<RuleHit> = detect::find_pii(text)
        .into_iter()
        .map(|hit| RuleHit::Pii {
            rule: hit.kind.as_str().to_string(),
            start: offset(hit.start),
            end: offset(hit.end),
        })
        .collect();
    hits.extend(
        policy
            .blocklist
            .find(text)
            .into_iter()
            .map(|hit| RuleHit::Blocklist {
                term: offset(hit.term),
                start: offset(hit.start),
                end: offset(hit.end),
            }),
    );
    hits
}

/// What is stored for one item: each model's per-window scores (in `models` order) and the
/// rule hits.
pub fn stored(per_model: &[&TextScores], rules: Vec<RuleHit>) -> StoredModeration {
    StoredModeration {
        scores: per_model.iter().map(|s| s.per_window.clone()).collect(),
        rules,
    }
}

/// The verdict level and flagged categories of a stored item, for the worker's metrics.
pub fn judge(
    models: &[ChunkModel],
    item: &StoredModeration,
    policy: &CompiledPolicy,
) -> moderation::Level {
    moderation::verdict(models, item, &policy.policy).level
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_common::moderation::{BlockTerm, Category, Level, Policy};

    fn compiled(policy: Policy) -> CompiledPolicy {
        let blocklist = crate::detect::Blocklist::new(&policy.blocklist).expect("blocklist");
        CompiledPolicy { policy, blocklist }
    }

    #[test]
    fn rules_are_found_in_original_offsets_and_stored_beside_the_scores() {
        let policy = compiled(Policy {
            blocklist: vec![BlockTerm {
                term: "SECRET".into(),
                category: Category::Jailbreak,
                level: Level::Controversial,
            }],
            ..Policy::default()
        });
        let hits = rule_hits("call 13812345678, say ｓｅｃｒｅｔ", &policy);
        assert_eq!(
            hits,
            vec![
                RuleHit::Pii {
                    rule: "cn_mobile".into(),
                    start: 5,
                    end: 16
                },
                RuleHit::Blocklist {
                    term: 0,
                    start: 22,
                    end: 28
                },
            ]
        );
        let scores = TextScores {
            scores: vec![0.1; 9],
            windows: 2,
            per_window: vec![vec![0.1; 9], vec![0.0; 9]],
        };
        let item = stored(&[&scores], hits);
        assert_eq!(item.scores, vec![vec![vec![0.1; 9], vec![0.0; 9]]]);
        let guard = ModelInfo {
            name: "guard".into(),
            content_hash: "abcdef0123456789".into(),
            labels: Category::ALL
                .iter()
                .map(|c| c.as_str().to_string())
                .collect(),
            threshold: 0.5,
        };
        assert_eq!(judge(&[chunk_model(&guard)], &item, &policy), Level::Unsafe);
    }
}
