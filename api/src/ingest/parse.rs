//! One input line → items, or a line error naming the field. A line is either a Gatehouse
//! item (`{"custom_id", "text"}`) or an OpenAI batch request line (`{"custom_id", "method":
//! "POST", "url": "/v1/moderations", "body": {"input": …}}`); the item checks are the same as
//! for items sent in a JSON body (`check_item`).

use gatehouse_common::{
    config::Limits,
    job::{
        options::{SourceLang, TranslateOptions},
        store::{LineError, NewItem, Parsed},
    },
    text::{self, Rule},
    types::JobKind,
};
use serde_json::Value;

/// A refused item: `(field, code, message)`.
pub type ItemRefusal = (String, &'static str, String);

/// The checks every item goes through (empty, too long, NUL, custom id), wherever it comes
/// from; `field` prefixes the field names (`items[3]`, or empty for a line).
pub fn check_item(
    limits: &Limits,
    field: &str,
    custom_id: Option<String>,
    text: String,
) -> Result<NewItem, ItemRefusal> {
    let name = |leaf: &str| {
        if field.is_empty() {
            leaf.to_string()
        } else {
            format!("{field}.{leaf}")
        }
    };
    if text.trim().is_empty() {
        return Err((
            name("text"),
            "empty_text",
            format!("{} is empty", name("text")),
        ));
    }
    let chars = text.chars().count();
    if chars > limits.max_text_chars {
        return Err((
            name("text"),
            "text_too_long",
            format!(
                "{} has {chars} characters; at most {} (GATEHOUSE_MAX_TEXT_CHARS)",
                name("text"),
                limits.max_text_chars
            ),
        ));
    }
    if text.contains('\0') {
        return Err((
            name("text"),
            "invalid_text",
            format!("{} contains a NUL character", name("text")),
        ));
    }
    if let Some(id) = &custom_id
        && text::check(id, Rule::text(limits.max_custom_id_chars).or_empty()).is_err()
    {
        return Err((
            name("custom_id"),
            "invalid_custom_id",
            format!(
                "{} must be at most {} characters without NUL or control characters (GATEHOUSE_MAX_CUSTOM_ID_CHARS)",
                name("custom_id"),
                limits.max_custom_id_chars
            ),
        ));
    }
    Ok(NewItem {
        custom_id,
        text,
        line_no: None,
    })
}

fn refused(line: i32, field: Option<&str>, code: &str, message: impl Into<String>) -> Vec<Parsed> {
    vec![Parsed::Invalid(LineError {
        line,
        field: field.map(String::from),
        code: code.to_string(),
        message: message.into(),
    })]
}

/// The endpoint an OpenAI batch line (or a batch) targets, and the job kind it makes.
pub fn endpoint_kind(url: &str) -> Option<JobKind> {
    match url {
        "/v1/moderations" => Some(JobKind::Moderate),
        "/v1/translations" => Some(JobKind::Translate),
        _ => None,
    }
}

/// The `url` an OpenAI batch request line of a `kind` input names: a chained job's lines are
/// translation requests (they carry the language pair), moderated before they are translated.
pub fn line_url(kind: JobKind) -> &'static str {
    match kind {
        JobKind::Moderate => "/v1/moderations",
        JobKind::Translate | JobKind::ModerateTranslate => "/v1/translations",
    }
}

/// What a file's lines must agree on (translation options come from the lines of an OpenAI
/// translation batch: every line must ask for the same pair).
#[derive(Debug, Default)]
pub struct LineContext {
    pub translate: Option<TranslateOptions>,
}

/// Parses one line of a `kind` input.
pub fn line(
    limits: &Limits,
    kind: JobKind,
    line_no: i32,
    raw: &str,
    context: &mut LineContext,
) -> Vec<Parsed> {
    let value: Value = match serde_json::from_str(raw) {
        Ok(v) => v,
        Err(e) => return refused(line_no, None, "invalid_json", format!("not JSON: {e}")),
    };
    let Value::Object(object) = value else {
        return refused(
            line_no,
            None,
            "invalid_line",
            "a line must be a JSON object",
        );
    };
    let custom_id = match object.get("custom_id") {
        None | Some(Value::Null) => None,
        Some(Value::String(id)) => Some(id.clone()),
        Some(_) => {
            return refused(
                line_no,
                Some("custom_id"),
                "invalid_custom_id",
                "custom_id must be a string",
            );
        }
    };
    let stamp = |mut parsed: Vec<Parsed>| {
        for p in &mut parsed {
            if let Parsed::Item(item) = p {
                item.line_no = Some(line_no);
            }
        }
        parsed
    };
    // An OpenAI batch request line.
    if object.contains_key("url") || object.contains_key("body") || object.contains_key("method") {
        let method = object.get("method").and_then(Value::as_str).unwrap_or("");
        if !method.eq_ignore_ascii_case("POST") {
            return refused(
                line_no,
                Some("method"),
                "invalid_method",
                "method must be POST",
            );
        }
        let url = object.get("url").and_then(Value::as_str).unwrap_or("");
        if url != line_url(kind) {
            return refused(
                line_no,
                Some("url"),
                "invalid_url",
                format!("url must be the batch's endpoint ({})", line_url(kind)),
            );
        }
        let Some(Value::Object(body)) = object.get("body") else {
            return refused(
                line_no,
                Some("body"),
                "invalid_body",
                "body must be an object",
            );
        };
        if custom_id.is_none() {
            return refused(
                line_no,
                Some("custom_id"),
                "missing_custom_id",
                "a batch request line needs a custom_id",
            );
        }
        return stamp(match kind {
            JobKind::Moderate => moderation_body(limits, line_no, custom_id, body),
            JobKind::Translate | JobKind::ModerateTranslate => {
                translation_body(limits, line_no, custom_id, body, context)
            }
        });
    }
    // A Gatehouse item line.
    for key in object.keys() {
        if !matches!(key.as_str(), "custom_id" | "text") {
            return refused(
                line_no,
                Some(key),
                "unknown_field",
                format!("unknown field `{key}`"),
            );
        }
    }
    let text = match object.get("text") {
        Some(Value::String(t)) => t.clone(),
        _ => {
            return refused(
                line_no,
                Some("text"),
                "missing_text",
                "text must be a string",
            );
        }
    };
    stamp(match check_item(limits, "", custom_id, text) {
        Ok(item) => vec![Parsed::Item(item)],
        Err((field, code, message)) => refused(line_no, Some(&field), code, message),
    })
}

/// `body.input`: a string, an array of strings, or OpenAI text parts; each text one item.
fn moderation_body(
    limits: &Limits,
    line_no: i32,
    custom_id: Option<String>,
    body: &serde_json::Map<String, Value>,
) -> Vec<Parsed> {
    let texts: Vec<(String, Value)> = match body.get("input") {
        Some(Value::String(t)) => vec![("body.input".into(), Value::String(t.clone()))],
        Some(Value::Array(parts)) if !parts.is_empty() => parts
            .iter()
            .enumerate()
            .map(|(i, p)| (format!("body.input[{i}]"), p.clone()))
            .collect(),
        _ => {
            return refused(
                line_no,
                Some("body.input"),
                "invalid_input",
                "body.input must be a string or a non-empty array",
            );
        }
    };
    if texts.len() > limits.max_moderation_inputs {
        return refused(
            line_no,
            Some("body.input"),
            "too_many_inputs",
            format!(
                "at most {} inputs per line (GATEHOUSE_MAX_MODERATION_INPUTS)",
                limits.max_moderation_inputs
            ),
        );
    }
    let mut out = Vec::with_capacity(texts.len());
    for (field, value) in texts {
        let text = match value {
            Value::String(t) => t,
            Value::Object(part) if part.get("type") == Some(&Value::String("text".into())) => {
                match part.get("text") {
                    Some(Value::String(t)) => t.clone(),
                    _ => {
                        return refused(
                            line_no,
                            Some(&field),
                            "invalid_input",
                            "text part without text",
                        );
                    }
                }
            }
            _ => {
                return refused(
                    line_no,
                    Some(&field),
                    "unsupported_input",
                    "only text inputs are supported",
                );
            }
        };
        match check_item(limits, "", custom_id.clone(), text) {
            Ok(item) => out.push(Parsed::Item(item)),
            Err((_, code, message)) => return refused(line_no, Some(&field), code, message),
        }
    }
    out
}

/// `body`: `{"text" | "input", "source_lang", "target_lang"}`; every line of a batch must ask
/// for the pair of its first line (a batch is one job with one pair).
fn translation_body(
    limits: &Limits,
    line_no: i32,
    custom_id: Option<String>,
    body: &serde_json::Map<String, Value>,
    context: &mut LineContext,
) -> Vec<Parsed> {
    let text = match body.get("text").or_else(|| body.get("input")) {
        Some(Value::String(t)) => t.clone(),
        _ => {
            return refused(
                line_no,
                Some("body.text"),
                "missing_text",
                "body.text must be a string",
            );
        }
    };
    let lang = |key: &str| body.get(key).and_then(Value::as_str).map(String::from);
    let source = match lang("source_lang").as_deref() {
        None | Some("auto") => SourceLang::Auto,
        Some("zh") => SourceLang::Zh,
        Some("en") => SourceLang::En,
        Some(_) => {
            return refused(
                line_no,
                Some("body.source_lang"),
                "invalid_language",
                "source_lang must be zh, en or auto",
            );
        }
    };
    let target = match lang("target_lang").as_deref().map(str::parse) {
        Some(Ok(l)) => l,
        _ => {
            return refused(
                line_no,
                Some("body.target_lang"),
                "invalid_language",
                "target_lang must be zh or en",
            );
        }
    };
    let options = TranslateOptions {
        source_lang: source,
        target_lang: target,
    };
    match context.translate {
        None => context.translate = Some(options),
        Some(first) if first != options => {
            return refused(
                line_no,
                Some("body"),
                "mixed_languages",
                "every line of a translation batch must ask for the same source_lang and target_lang",
            );
        }
        Some(_) => {}
    }
    match check_item(limits, "", custom_id, text) {
        Ok(item) => vec![Parsed::Item(item)],
        Err((_, code, message)) => refused(line_no, Some("body.text"), code, message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        gatehouse_common::config::Config::from_lookup(|_| None)
            .expect("defaults")
            .limits
    }

    fn items(parsed: &[Parsed]) -> Vec<(Option<String>, String, Option<i32>)> {
        parsed
            .iter()
            .filter_map(|p| match p {
                Parsed::Item(i) => Some((i.custom_id.clone(), i.text.clone(), i.line_no)),
                Parsed::Invalid(_) => None,
            })
            .collect()
    }

    fn error(parsed: &[Parsed]) -> (Option<String>, String) {
        match &parsed[0] {
            Parsed::Invalid(e) => (e.field.clone(), e.code.clone()),
            other => panic!("accepted: {other:?}"),
        }
    }

    #[test]
    fn both_line_forms_make_items() {
        let l = limits();
        let mut c = LineContext::default();
        let p = line(
            &l,
            JobKind::Moderate,
            3,
            r#"{"custom_id": "a", "text": "hi"}"#,
            &mut c,
        );
        assert_eq!(items(&p), vec![(Some("a".into()), "hi".into(), Some(3))]);
        let p = line(
            &l,
            JobKind::Moderate,
            4,
            r#"{"custom_id": "b", "method": "POST", "url": "/v1/moderations", "body": {"input": ["x", "y"]}}"#,
            &mut c,
        );
        assert_eq!(items(&p).len(), 2);
        assert_eq!(items(&p)[1], (Some("b".into()), "y".into(), Some(4)));
    }

    #[test]
    fn bad_lines_name_their_field() {
        let l = limits();
        let mut c = LineContext::default();
        let cases = [
            ("not json", (None, "invalid_json")),
            ("[1]", (None, "invalid_line")),
            (r#"{"text": ""}"#, (Some("text".into()), "empty_text")),
            (
                r#"{"text": "a\u0000"}"#,
                (Some("text".into()), "invalid_text"),
            ),
            (r#"{"txt": "a"}"#, (Some("txt".into()), "unknown_field")),
            (
                r#"{"custom_id": "x", "method": "POST", "url": "/v1/chat", "body": {}}"#,
                (Some("url".into()), "invalid_url"),
            ),
            (
                r#"{"method": "POST", "url": "/v1/moderations", "body": {"input": "x"}}"#,
                (Some("custom_id".into()), "missing_custom_id"),
            ),
            (
                r#"{"custom_id": "x", "method": "POST", "url": "/v1/moderations", "body": {"input": [1]}}"#,
                (Some("body.input[0]".into()), "unsupported_input"),
            ),
        ];
        for (raw, (field, code)) in cases {
            let (got_field, got_code) = error(&line(&l, JobKind::Moderate, 1, raw, &mut c));
            assert_eq!((got_field, got_code.as_str()), (field, code), "{raw}");
        }
    }

    #[test]
    fn a_translation_batch_keeps_one_pair() {
        let l = limits();
        let mut c = LineContext::default();
        let first = r#"{"custom_id": "1", "method": "POST", "url": "/v1/translations", "body": {"text": "你好", "source_lang": "zh", "target_lang": "en"}}"#;
        let other = r#"{"custom_id": "2", "method": "POST", "url": "/v1/translations", "body": {"text": "hi", "source_lang": "en", "target_lang": "zh"}}"#;
        assert_eq!(
            items(&line(&l, JobKind::Translate, 1, first, &mut c)).len(),
            1
        );
        assert_eq!(
            error(&line(&l, JobKind::Translate, 2, other, &mut c)).1,
            "mixed_languages"
        );
    }
}
