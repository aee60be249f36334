//! String fields that validate themselves while the body is deserialized. A handler that
//! takes `Line<100>` instead of `String` cannot receive a NUL, a control character or a
//! 9,000-character value: the request is refused with 422 and the field's path.

use std::fmt;

use gatehouse_common::text::{self, Rule, TextError};
use serde::{Deserialize, Deserializer, de};

/// Error codes a field check may produce (anything else reads as `invalid_body`).
pub(super) fn known_code(code: &str) -> &'static str {
    ["empty_text", "text_too_long", "invalid_text"]
        .into_iter()
        .find(|c| *c == code)
        .unwrap_or("invalid_body")
}

fn refuse<E: de::Error>(error: TextError) -> E {
    E::custom(format!("[{}] {error}", error.code()))
}

/// A trimmed, non-empty single line of at most `MAX` characters (names, labels, usernames,
/// slugs, terms).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Line<const MAX: usize>(String);

impl<const MAX: usize> Line<MAX> {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_inner(self) -> String {
        self.0
    }
}

impl<const MAX: usize> fmt::Debug for Line<MAX> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl<const MAX: usize> std::ops::Deref for Line<MAX> {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl<'de, const MAX: usize> Deserialize<'de> for Line<MAX> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        let trimmed = raw.trim();
        text::check(trimmed, Rule::line(MAX)).map_err(refuse)?;
        Ok(Self(trimmed.to_string()))
    }
}

/// Free prose of at most `MAX` characters (descriptions): line breaks and tabs allowed,
/// other control characters and NUL refused; may be empty.
#[derive(Clone, PartialEq, Eq)]
pub struct Prose<const MAX: usize>(String);

impl<const MAX: usize> Prose<MAX> {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_inner(self) -> String {
        self.0
    }
}

impl<const MAX: usize> fmt::Debug for Prose<MAX> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl<'de, const MAX: usize> Deserialize<'de> for Prose<MAX> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        text::check(&raw, Rule::text(MAX).or_empty()).map_err(refuse)?;
        Ok(Self(raw))
    }
}

/// In the OpenAPI description: a string of 1 to `MAX` characters without control characters
/// (component `Line<MAX>`).
impl<const MAX: usize> utoipa::PartialSchema for Line<MAX> {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .min_length(Some(1))
            .max_length(Some(MAX))
            .description(Some(
                "one line: trimmed, not blank, no NUL or control characters",
            ))
            .into()
    }
}

impl<const MAX: usize> utoipa::ToSchema for Line<MAX> {
    fn name() -> std::borrow::Cow<'static, str> {
        format!("Line{MAX}").into()
    }
}

/// In the OpenAPI description: a string of at most `MAX` characters (component `Prose<MAX>`).
impl<const MAX: usize> utoipa::PartialSchema for Prose<MAX> {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .max_length(Some(MAX))
            .description(Some(
                "free text: line breaks and tabs allowed, no NUL or other control characters",
            ))
            .into()
    }
}

impl<const MAX: usize> utoipa::ToSchema for Prose<MAX> {
    fn name() -> std::borrow::Cow<'static, str> {
        format!("Prose{MAX}").into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    struct Body {
        name: Line<5>,
        #[serde(default)]
        about: Option<Prose<10>>,
    }

    #[test]
    fn lines_are_trimmed_and_checked() {
        let b: Body = serde_json::from_str(r#"{"name": "  ab  "}"#).expect("ok");
        assert_eq!(b.name.as_str(), "ab");
        for bad in [r#""a\u0000""#, r#""abcdef""#, r#""a\tb""#, r#""   ""#] {
            let err = serde_json::from_str::<Body>(&format!(r#"{{"name": {bad}}}"#))
                .expect_err(bad)
                .to_string();
            assert!(err.starts_with('['), "{err}");
        }
        let b: Body = serde_json::from_str(r#"{"name": "x", "about": "a\nb"}"#).expect("prose");
        assert_eq!(b.about.map(Prose::into_inner).as_deref(), Some("a\nb"));
    }
}
