//! A translate result: `{"text", "source_lang", "target_lang", "model", "segments"}`.
//!
//! Each item is split into sentences (the layout between them kept byte for byte), the
//! sentences are translated in batches by the pair's model, and the document is reassembled.
//! `auto` detects the source language per item. Segments the model knows nothing of (emoji,
//! symbols, numbers) pass through unchanged.

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::segment::{self, Piece};
use crate::{store::ItemOutcome, translator::TranslatorHandle};

#[derive(Debug, Clone, Deserialize)]
pub struct TranslateOptions {
    pub source_lang: String,
    pub target_lang: String,
}

#[derive(Debug, Serialize)]
struct Segment<'a> {
    source: &'a str,
    text: String,
}

/// `zh` or `en` for a text: whatlang's guess, with any CJK ideograph meaning Chinese when it
/// has none.
pub fn detect(text: &str) -> &'static str {
    match whatlang::detect(text).map(|info| info.lang()) {
        Some(whatlang::Lang::Cmn) => "zh",
        Some(whatlang::Lang::Eng) => "en",
        _ if text.chars().any(|c| ('\u{4e00}'..='\u{9fff}').contains(&c)) => "zh",
        _ => "en",
    }
}

fn failed(code: &str, message: String) -> ItemOutcome {
    ItemOutcome::Failed(json!({ "code": code, "message": message }))
}

/// Translates one item; a failure fails this item only, with a reason.
pub async fn item(
    handle: &TranslatorHandle,
    options: &TranslateOptions,
    text: &str,
) -> ItemOutcome {
    let source = if options.source_lang == "auto" {
        detect(text)
    } else {
        options.source_lang.as_str()
    };
    let target = options.target_lang.as_str();
    let pieces = segment::split(text);
    if source == target {
        return ItemOutcome::Succeeded(json!({
            "text": text, "source_lang": source, "target_lang": target, "model": null, "segments": [],
        }));
    }
    let Some((pair, info)) = handle.pair(source, target) else {
        return failed(
            "unsupported_language_pair",
            format!("no model translates {source} to {target}"),
        );
    };
    let sentences: Vec<&str> = pieces
        .iter()
        .filter_map(|p| match p {
            Piece::Text(t) if !segment::is_passthrough(t) => Some(*t),
            _ => None,
        })
        .collect();
    let translated = match handle
        .translate(pair, sentences.iter().map(|s| s.to_string()).collect())
        .await
    {
        Ok(t) => t,
        Err(error) => return failed("translation_failed", error.to_string()),
    };
    let mut next = translated.into_iter();
    let mut out = String::with_capacity(text.len() * 2);
    let mut segments = Vec::new();
    let mut after_text = false;
    for piece in &pieces {
        // Chinese sentences follow each other without spaces; English ones need one.
        if after_text && piece.is_text() && target == "en" {
            out.push(' ');
        }
        after_text = piece.is_text();
        match piece {
            Piece::Gap(gap) => out.push_str(gap),
            Piece::Text(t) if segment::is_passthrough(t) => {
                out.push_str(t);
                segments.push(Segment {
                    source: t,
                    text: t.to_string(),
                });
            }
            Piece::Text(t) => {
                let translation = next.next().unwrap_or_else(|| t.to_string());
                out.push_str(&translation);
                segments.push(Segment {
                    source: t,
                    text: translation,
                });
            }
        }
    }
    ItemOutcome::Succeeded(json!({
        "text": out,
        "source_lang": source,
        "target_lang": target,
        "model": info.model,
        "segments": segments,
    }))
}

#[cfg(test)]
mod tests {
    use super::detect;

    #[test]
    fn languages_are_detected() {
        assert_eq!(detect("我不知道这是什么意思。"), "zh");
        assert_eq!(detect("I do not know what this means."), "en");
        assert_eq!(detect("你好"), "zh");
    }
}
