//! The one set of checks every free-text field goes through before it reaches Postgres or a
//! model: no NUL (Postgres `text` cannot hold it), no control characters where a single line
//! is expected, and an explicit length limit in Unicode scalar values.
//!
//! The api applies these through its typed body fields (`api/src/extract/text.rs`); the
//! policy validation and the admin CLI call [`check`] directly.

use std::fmt;

/// What a field may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// A name, label or identifier: one line, no control characters at all (tabs and line
    /// breaks included), no leading or trailing whitespace once trimmed.
    Line,
    /// Prose: line breaks and tabs are fine, other C0/C1 control characters and NUL are not.
    Text,
}

/// A field's rule: its shape, its length bound, and whether it may be empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    pub shape: Shape,
    pub max_chars: usize,
    pub allow_empty: bool,
}

impl Rule {
    /// A non-empty single line of at most `max_chars`.
    pub const fn line(max_chars: usize) -> Self {
        Self {
            shape: Shape::Line,
            max_chars,
            allow_empty: false,
        }
    }

    /// Non-empty prose of at most `max_chars`.
    pub const fn text(max_chars: usize) -> Self {
        Self {
            shape: Shape::Text,
            max_chars,
            allow_empty: false,
        }
    }

    pub const fn or_empty(self) -> Self {
        Self {
            allow_empty: true,
            ..self
        }
    }
}

/// Why a value was refused; `code()` is the API's stable error code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TextError {
    Empty,
    TooLong { chars: usize, max: usize },
    Nul,
    Control { at: usize },
}

impl TextError {
    pub fn code(&self) -> &'static str {
        match self {
            TextError::Empty => "empty_text",
            TextError::TooLong { .. } => "text_too_long",
            TextError::Nul | TextError::Control { .. } => "invalid_text",
        }
    }
}

impl fmt::Display for TextError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TextError::Empty => f.write_str("must not be empty"),
            TextError::TooLong { chars, max } => {
                write!(f, "has {chars} characters; at most {max} are allowed")
            }
            TextError::Nul => f.write_str("must not contain a NUL character"),
            TextError::Control { at } => {
                write!(
                    f,
                    "must not contain control characters (one at character {at})"
                )
            }
        }
    }
}

impl std::error::Error for TextError {}

/// Checks `value` (as given: trim first if the field is trimmed) against `rule`.
pub fn check(value: &str, rule: Rule) -> Result<(), TextError> {
    if value.is_empty() || (rule.shape == Shape::Line && value.trim().is_empty()) {
        return if rule.allow_empty {
            Ok(())
        } else {
            Err(TextError::Empty)
        };
    }
    if value.contains('\0') {
        return Err(TextError::Nul);
    }
    let mut chars = 0usize;
    for (i, c) in value.chars().enumerate() {
        chars += 1;
        let control = match rule.shape {
            Shape::Line => c.is_control(),
            Shape::Text => c.is_control() && !matches!(c, '\n' | '\r' | '\t'),
        };
        if control {
            return Err(TextError::Control { at: i });
        }
    }
    if chars > rule.max_chars {
        return Err(TextError::TooLong {
            chars,
            max: rule.max_chars,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_refuse_controls_nul_length_and_blank() {
        let rule = Rule::line(5);
        assert_eq!(check("abcde", rule), Ok(()));
        assert_eq!(check("日本語", rule), Ok(()));
        assert_eq!(
            check("abcdef", rule),
            Err(TextError::TooLong { chars: 6, max: 5 })
        );
        assert_eq!(check("a\0b", rule), Err(TextError::Nul));
        assert_eq!(check("a\tb", rule), Err(TextError::Control { at: 1 }));
        assert_eq!(check("a\u{85}", rule), Err(TextError::Control { at: 1 }));
        assert_eq!(check("   ", rule), Err(TextError::Empty));
        assert_eq!(check("", rule.or_empty()), Ok(()));
        assert_eq!(
            check("a\0", rule).map_err(|e| e.code()),
            Err("invalid_text")
        );
    }

    #[test]
    fn prose_keeps_line_breaks_and_tabs() {
        let rule = Rule::text(100);
        assert_eq!(check("one\ntwo\r\n\tthree", rule), Ok(()));
        assert_eq!(check("bell\u{7}", rule), Err(TextError::Control { at: 4 }));
        assert_eq!(check("nul\0", rule), Err(TextError::Nul));
    }
}
