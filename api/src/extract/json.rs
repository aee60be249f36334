//! `ApiJson<T>`: a JSON body extractor whose every rejection is problem+json:
//!
//! - the body must be a JSON **object** (`[]` or `"x"` for a struct body is `422
//!   invalid_body`, never fields taken by position);
//! - a field that fails to deserialize or to validate is named by its path
//!   (`blocklist[3].term`), with the field check's own code (`invalid_text`, ...);
//! - a body that stops arriving is cut by the server's body deadline (`408`);
//! - lone UTF-16 surrogates (`"\ud800"`), which JavaScript and Python clients emit for broken
//!   strings, become U+FFFD instead of failing the whole request.

use std::borrow::Cow;

use axum::{
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
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|rejection| body_error(rejection.status(), &rejection))?;
        let repaired = repair_lone_surrogates(&bytes);
        parse(&repaired).map(ApiJson)
    }
}

/// An optional body: no `Content-Type` and an empty body is `None`; anything else is read as
/// [`ApiJson`] would.
impl<S, T> axum::extract::OptionalFromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Option<Self>, Self::Rejection> {
        if req.headers().contains_key(header::CONTENT_TYPE) {
            return <Self as FromRequest<S>>::from_request(req, state)
                .await
                .map(Some);
        }
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|rejection| body_error(rejection.status(), &rejection))?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            Ok(None)
        } else {
            Err(ApiError::UnsupportedMediaType {
                detail: "expected `Content-Type: application/json`".into(),
            })
        }
    }
}

/// Why a body could not be read: too large, cut by the read deadline, or broken framing.
pub fn body_error(status: StatusCode, error: &dyn std::error::Error) -> ApiError {
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        return ApiError::PayloadTooLarge {
            detail: "the body is larger than GATEHOUSE_MAX_BODY_BYTES allows".into(),
        };
    }
    if crate::server::is_body_timeout(error) {
        return ApiError::RequestTimeout;
    }
    ApiError::bad_request(
        "unreadable_body",
        "the request body could not be read (broken framing or connection)",
    )
}

/// Deserializes a JSON object body, naming the field at fault.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    match first {
        None => {
            return Err(ApiError::bad_request(
                "invalid_json",
                "the body is empty; expected a JSON object",
            ));
        }
        Some(b'{') => {}
        Some(b'[' | b'"' | b'-' | b'0'..=b'9' | b't' | b'f' | b'n') => {
            // Valid JSON of the wrong kind is a 422; garbage stays a 400 below.
            if serde_json::from_slice::<serde::de::IgnoredAny>(bytes).is_ok() {
                return Err(ApiError::Unprocessable {
                    code: "invalid_body",
                    detail: "the body must be a JSON object".into(),
                    field: None,
                });
            }
        }
        Some(_) => {}
    }
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            ApiError::bad_request(
                "invalid_json",
                format!("the body is not valid JSON: {inner}"),
            )
        } else {
            super::field_error(&path, &inner.to_string(), "invalid_body")
        }
    })?;
    deserializer.end().map_err(|e| {
        ApiError::bad_request("invalid_json", format!("the body is not valid JSON: {e}"))
    })?;
    Ok(value)
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

#[cfg(test)]
mod parse_tests {
    use super::parse;
    use crate::error::ApiError;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        term: crate::extract::Line<5>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        role: Option<String>,
        #[serde(default)]
        list: Vec<Inner>,
    }

    fn refused(raw: &str) -> (u16, String, Option<String>) {
        match parse::<Body>(raw.as_bytes()) {
            Ok(b) => panic!("accepted {raw}: {b:?}"),
            Err(e) => {
                let status = e.status_code().as_u16();
                let code = e.code().to_string();
                let field = match e {
                    ApiError::Unprocessable { field, .. } | ApiError::BadRequest { field, .. } => {
                        field
                    }
                    _ => None,
                };
                (status, code, field)
            }
        }
    }

    #[test]
    fn only_objects_are_bodies() {
        assert_eq!(refused(r#"["guest"]"#), (422, "invalid_body".into(), None));
        assert_eq!(refused("[]"), (422, "invalid_body".into(), None));
        assert_eq!(refused("5"), (422, "invalid_body".into(), None));
        assert_eq!(refused("nul"), (400, "invalid_json".into(), None));
        assert_eq!(refused(""), (400, "invalid_json".into(), None));
        assert_eq!(
            refused(r#"{"role": "x"} {"#),
            (400, "invalid_json".into(), None)
        );
    }

    #[test]
    fn bad_fields_are_named_by_path() {
        assert_eq!(
            refused(r#"{"rol": "guest"}"#),
            (422, "invalid_body".into(), Some("rol".into()))
        );
        assert_eq!(
            refused(r#"{"role": 5}"#),
            (422, "invalid_body".into(), Some("role".into()))
        );
        assert_eq!(
            refused(r#"{"list": [{"term": "ok"}, {"term": "a\u0000"}]}"#),
            (422, "invalid_text".into(), Some("list[1].term".into()))
        );
        assert_eq!(
            refused(r#"{"list": [{"term": "toolong"}]}"#),
            (422, "text_too_long".into(), Some("list[0].term".into()))
        );
        assert_eq!(
            refused(r#"{"list": [{"term": "ok", "x": 1}]}"#),
            (422, "invalid_body".into(), Some("list[0].x".into()))
        );
    }
}
