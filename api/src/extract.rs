//! `ApiJson<T>`: a JSON body extractor with its rejections turned into problem+json, which
//! also accepts the lone UTF-16 surrogates (`"\ud800"`) that JavaScript and Python clients
//! emit for broken strings: each becomes U+FFFD instead of failing the whole request.

use std::borrow::Cow;

use axum::{
    Json,
    body::Bytes,
    extract::{FromRequest, Request},
    http::{HeaderMap, StatusCode, header},
};
use serde::de::DeserializeOwned;

use crate::error::ApiError;

pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json(req.headers()) {
            return Err(ApiError::UnsupportedMediaType {
                detail: "expected `Content-Type: application/json`".into(),
            });
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge {
                    detail: "the body is larger than GATEHOUSE_MAX_BODY_BYTES allows".into(),
                }
            } else {
                ApiError::BadRequest {
                    code: "unreadable_body",
                    detail: rejection.body_text(),
                }
            }
        })?;
        let repaired = repair_lone_surrogates(&bytes);
        let Json(value) = Json::<T>::from_bytes(&repaired)?;
        Ok(ApiJson(value))
    }
}

/// `application/json` or any `+json` media type, parameters allowed.
fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Rewrites every `\uXXXX` escape that is a lone surrogate (a high one not followed by a low
/// one, or a low one on its own) to `\uFFFD`. Borrowed unchanged when there is none.
pub fn repair_lone_surrogates(body: &[u8]) -> Cow<'_, [u8]> {
    let hex = |at: usize| -> Option<u16> {
        let digits = body.get(at..at + 4)?;
        u16::from_str_radix(std::str::from_utf8(digits).ok()?, 16).ok()
    };
    // `\u` + 4 hex digits at `at` (pointing at the backslash).
    let escape = |at: usize| -> Option<u16> {
        if body.get(at) == Some(&b'\\') && body.get(at + 1) == Some(&b'u') {
            hex(at + 2)
        } else {
            None
        }
    };
    let mut lone: Vec<usize> = Vec::new();
    let mut in_string = false;
    let mut i = 0;
    while i < body.len() {
        match body[i] {
            b'"' => {
                in_string = !in_string;
                i += 1;
            }
            b'\\' if in_string => {
                match escape(i) {
                    Some(0xD800..=0xDBFF) => {
                        if matches!(escape(i + 6), Some(0xDC00..=0xDFFF)) {
                            i += 12;
                            continue;
                        }
                        lone.push(i);
                    }
                    Some(0xDC00..=0xDFFF) => lone.push(i),
                    _ => {}
                }
                // Skip the escaped character (or the whole \uXXXX) so `\"` never toggles.
                i += if body.get(i + 1) == Some(&b'u') { 6 } else { 2 };
            }
            _ => i += 1,
        }
    }
    if lone.is_empty() {
        return Cow::Borrowed(body);
    }
    let mut out = body.to_vec();
    for at in lone {
        out[at + 2..at + 6].copy_from_slice(b"FFFD");
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &str) -> serde_json::Value {
        serde_json::from_slice(&repair_lone_surrogates(raw.as_bytes())).expect("valid JSON")
    }

    #[test]
    fn lone_surrogates_become_replacement_characters() {
        assert_eq!(parse(r#"{"a": "x\ud800y"}"#)["a"], "x\u{FFFD}y");
        assert_eq!(
            parse(r#"["\udc00", "\ud83d"]"#),
            serde_json::json!(["\u{FFFD}", "\u{FFFD}"])
        );
        // Two highs in a row: both lone.
        assert_eq!(parse(r#""\ud800\ud800""#), "\u{FFFD}\u{FFFD}");
    }

    #[test]
    fn valid_text_is_left_alone() {
        let pair = r#"{"a": "\ud83d\ude00 \\ud800 \" \u00e9"}"#;
        assert!(matches!(
            repair_lone_surrogates(pair.as_bytes()),
            Cow::Borrowed(_)
        ));
        // An escaped backslash followed by `ud800` is plain text, not an escape.
        assert_eq!(parse(pair)["a"], "😀 \\ud800 \" é");
        assert!(matches!(
            repair_lone_surrogates(b"not json \\ud800"),
            Cow::Borrowed(_)
        ));
    }
}
