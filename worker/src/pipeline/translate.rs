//! A translate result ([`TranslationResult`]: `text`, `source_lang`, `target_lang`, `model`,
//! `segments`).
//!
//! Each item is split into sentences (the layout between them kept byte for byte), the
//! sentences are translated in batches by the pair's model, and the document is reassembled.
//! `auto` detects the source language per item. Segments the model knows nothing of (emoji,
//! symbols, numbers) pass through unchanged.

use gatehouse_common::job::{
    options::{Lang, TranslateOptions},
    result::{ItemError, Segment, StoredOutcome, TranslationResult},
};

use super::segment::{self, Piece};
use crate::translator::TranslatorHandle;

/// `zh` or `en` for a text: whatlang's guess, with any CJK ideograph meaning Chinese when it
/// has none.
pub fn detect(text: &str) -> Lang {
    match whatlang::detect(text).map(|info| info.lang()) {
        Some(whatlang::Lang::Cmn) => Lang::Zh,
        Some(whatlang::Lang::Eng) => Lang::En,
        _ if text.chars().any(|c| ('\u{4e00}'..='\u{9fff}').contains(&c)) => Lang::Zh,
        _ => Lang::En,
    }
}

fn failed(code: &str, message: String) -> StoredOutcome {
    StoredOutcome::Failed(ItemError::new(code, message))
}

/// An item's plan: its language pair and its pieces.
struct Plan<'a> {
    source: Lang,
    pieces: Vec<Piece<'a>>,
}

fn plan<'a>(options: &TranslateOptions, text: &'a str) -> Plan<'a> {
    let source = options.source_lang.fixed().unwrap_or_else(|| detect(text));
    Plan {
        source,
        pieces: segment::split(text),
    }
}

fn sentences<'p>(pieces: &'p [Piece<'p>]) -> impl Iterator<Item = &'p str> + 'p {
    pieces.iter().filter_map(|p| match p {
        Piece::Text(t) if !segment::is_passthrough(t) => Some(*t),
        _ => None,
    })
}

/// Translates a chunk's items. The sentences of all items with the same language pair go to
/// the model together (full batches); if that fails, each item is retried alone, so a
/// failure fails only the item it belongs to, with a reason.
pub async fn items(
    handle: &TranslatorHandle,
    options: &TranslateOptions,
    texts: &[&str],
) -> Vec<StoredOutcome> {
    let target = options.target_lang;
    let plans: Vec<Plan<'_>> = texts.iter().map(|t| plan(options, t)).collect();
    let mut outcomes: Vec<Option<StoredOutcome>> = (0..texts.len()).map(|_| None).collect();
    let mut by_pair: Vec<(usize, Vec<usize>)> = Vec::new();
    for (i, p) in plans.iter().enumerate() {
        if p.source == target {
            outcomes[i] = Some(StoredOutcome::Translated(TranslationResult {
                text: texts[i].to_string(),
                source_lang: p.source,
                target_lang: target,
                model: None,
                segments: Vec::new(),
            }));
            continue;
        }
        match handle.pair(p.source.as_str(), target.as_str()) {
            Some((pair, _)) => match by_pair.iter_mut().find(|(k, _)| *k == pair) {
                Some((_, members)) => members.push(i),
                None => by_pair.push((pair, vec![i])),
            },
            None => {
                outcomes[i] = Some(failed(
                    "unsupported_language_pair",
                    format!("no model translates {} to {target}", p.source),
                ));
            }
        }
    }
    for (pair, members) in by_pair {
        let model = handle.pairs()[pair].model.clone();
        let batch: Vec<String> = members
            .iter()
            .flat_map(|i| sentences(&plans[*i].pieces).map(str::to_string))
            .collect();
        match handle.translate(pair, batch).await {
            Ok(translated) => {
                let mut next = translated.into_iter();
                for i in members {
                    let count = sentences(&plans[i].pieces).count();
                    let mine: Vec<String> = next.by_ref().take(count).collect();
                    outcomes[i] = Some(assemble(&plans[i], target, &model, mine));
                }
            }
            Err(_) => {
                for i in members {
                    let mine = sentences(&plans[i].pieces).map(str::to_string).collect();
                    outcomes[i] = Some(match handle.translate(pair, mine).await {
                        Ok(translated) => assemble(&plans[i], target, &model, translated),
                        Err(error) => failed("translation_failed", error.to_string()),
                    });
                }
            }
        }
    }
    outcomes
        .into_iter()
        .map(|o| o.unwrap_or_else(|| failed("translation_failed", "not translated".into())))
        .collect()
}

/// Puts the translated sentences back between the original gaps.
fn assemble(plan: &Plan<'_>, target: Lang, model: &str, translated: Vec<String>) -> StoredOutcome {
    let mut next = translated.into_iter();
    let mut out = String::new();
    let mut segments = Vec::new();
    let mut after_text = false;
    for piece in &plan.pieces {
        // Chinese sentences follow each other without spaces; English ones need one.
        if after_text && piece.is_text() && target == Lang::En {
            out.push(' ');
        }
        after_text = piece.is_text();
        match piece {
            Piece::Gap(gap) => out.push_str(gap),
            Piece::Text(t) if segment::is_passthrough(t) => {
                out.push_str(t);
                segments.push(Segment {
                    source: t.to_string(),
                    text: t.to_string(),
                });
            }
            Piece::Text(t) => {
                let translation = next.next().unwrap_or_else(|| t.to_string());
                out.push_str(&translation);
                segments.push(Segment {
                    source: t.to_string(),
                    text: translation,
                });
            }
        }
    }
    StoredOutcome::Translated(TranslationResult {
        text: out,
        source_lang: plan.source,
        target_lang: target,
        model: Some(model.to_string()),
        segments,
    })
}

#[cfg(test)]
mod tests {
    use super::{Lang, detect};

    #[test]
    fn languages_are_detected() {
        assert_eq!(detect("我不知道这是什么意思。"), Lang::Zh);
        assert_eq!(detect("I do not know what this means."), Lang::En);
        assert_eq!(detect("你好"), Lang::Zh);
    }
}
