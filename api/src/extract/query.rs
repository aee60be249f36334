//! `ApiQuery<T>`: query parameters with problem+json rejections (`400 invalid_query` naming
//! the parameter) instead of axum's plain-text ones.

use axum::{extract::FromRequestParts, http::request::Parts};
use serde::de::DeserializeOwned;

use crate::error::ApiError;

pub struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or_default();
        let deserializer =
            serde_urlencoded::Deserializer::new(form_urlencoded_parse(query.as_bytes()));
        serde_path_to_error::deserialize(deserializer)
            .map(ApiQuery)
            .map_err(|error| {
                let path = error.path().to_string();
                let message = error.inner().to_string();
                let field = if path.is_empty() || path == "." {
                    None
                } else {
                    Some(path)
                };
                let detail = match &field {
                    Some(field) => format!("query parameter `{field}`: {message}"),
                    None => format!("invalid query string: {message}"),
                };
                ApiError::bad_request("invalid_query", detail).with_field(field)
            })
    }
}

fn form_urlencoded_parse(input: &[u8]) -> form_urlencoded::Parse<'_> {
    form_urlencoded::parse(input)
}
