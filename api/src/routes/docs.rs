//! `GET /openapi.json` (the OpenAPI 3.1 description, `crate::openapi`) and `GET /docs`
//! (Swagger UI over it). The UI's files are in the binary (`api/assets/swagger-ui/`, from the
//! npm package `swagger-ui-dist`): nothing is fetched from a CDN when a browser opens it.

use std::sync::LazyLock;

use axum::{
    Router,
    extract::Path,
    http::header,
    response::{Html, IntoResponse, Response},
    routing::get,
};

use crate::{error::ApiError, openapi, state::AppState};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/openapi.json", get(openapi_json))
        .route("/docs", get(page))
        .route("/docs/{file}", get(asset))
}

static SPEC: LazyLock<String> = LazyLock::new(openapi::json);

/// The OpenAPI 3.1 description of this api.
#[utoipa::path(
    get, path = "/openapi.json", tag = "docs", operation_id = "openapi",
    responses((status = 200, description = "The OpenAPI document", content_type = "application/json", body = Object)),
)]
async fn openapi_json() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], SPEC.as_str()).into_response()
}

const PAGE: &str = r#"<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>Gatehouse API</title>
  <link rel="stylesheet" href="/docs/swagger-ui.css">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="/docs/swagger-ui-bundle.js"></script>
  <script src="/docs/init.js"></script>
</body>
</html>
"#;

/// Swagger UI's start: the served description, no online validator (no outside requests).
const INIT: &str = r##"window.ui = SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#swagger-ui",
  validatorUrl: null,
  deepLinking: true,
  persistAuthorization: false,
});
"##;

/// Swagger UI over `/openapi.json`.
#[utoipa::path(
    get, path = "/docs", tag = "docs", operation_id = "docs",
    responses((status = 200, description = "The docs UI", content_type = "text/html", body = String)),
)]
async fn page() -> Html<&'static str> {
    Html(PAGE)
}

/// The files of the docs UI (embedded).
#[utoipa::path(
    get, path = "/docs/{file}", tag = "docs", operation_id = "docsAsset",
    params(("file" = String, Path, description = "`swagger-ui-bundle.js`, `swagger-ui.css` or `init.js`")),
    responses(
        (status = 200, description = "The file", content(
            (String = "text/javascript"),
            (String = "text/css"),
        )),
    ),
)]
async fn asset(Path(file): Path<String>) -> Result<Response, ApiError> {
    let (content_type, body): (&str, &'static [u8]) = match file.as_str() {
        "swagger-ui-bundle.js" => (
            "text/javascript; charset=utf-8",
            include_bytes!("../../assets/swagger-ui/swagger-ui-bundle.js"),
        ),
        "swagger-ui.css" => (
            "text/css; charset=utf-8",
            include_bytes!("../../assets/swagger-ui/swagger-ui.css"),
        ),
        "init.js" => ("text/javascript; charset=utf-8", INIT.as_bytes()),
        _ => return Err(ApiError::NotFound),
    };
    Ok((
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=86400"),
        ],
        body,
    )
        .into_response())
}
