//! Request extractors whose every rejection is problem+json naming the field at fault:
//!
//! - [`ApiJson`]: a JSON *object* body, deserialized with the path of a bad field kept
//!   (`blocklist[3].term`), lone UTF-16 surrogates repaired to U+FFFD.
//! - [`ApiQuery`]: query parameters, same error shape (`limit=abc`, `limit=1&limit=2`).
//! - [`Line`] / [`Prose`]: string fields checked by `gatehouse_common::text` (NUL, control
//!   characters, length) while the body is read, so no handler can forget them.

mod json;
mod query;
mod text;

pub use json::{ApiJson, body_error, repair_lone_surrogates};
pub use query::ApiQuery;
pub use text::{Line, Prose};

use crate::error::ApiError;

/// Turns a `serde_path_to_error` failure into a 422 naming the field. Field checks encode
/// their error code as `[code] detail` (see [`text`]); anything else is `invalid_body`.
fn field_error(path: &str, message: &str, fallback_code: &'static str) -> ApiError {
    let message = message
        .split(" at line ")
        .next()
        .unwrap_or(message)
        .trim()
        .to_string();
    let (code, detail) = match message
        .strip_prefix('[')
        .and_then(|rest| rest.split_once("] "))
    {
        Some((code, detail)) => (text::known_code(code), detail.to_string()),
        None => (fallback_code, message),
    };
    // The path names an unknown field itself (`list[0].x`), a bad value its own field.
    let field = if path.is_empty() || path == "." {
        None
    } else {
        Some(path.to_string())
    };
    let detail = match &field {
        Some(field) if !detail.starts_with(field.as_str()) => format!("{field}: {detail}"),
        _ => detail,
    };
    ApiError::Unprocessable {
        code,
        detail,
        field,
    }
}
