//! The OpenAPI 3.1 description of the api, generated from the code: each handler carries a
//! `#[utoipa::path]` annotation (method, path, body, success responses), request and response
//! types derive `ToSchema`, and [`Conventions`] adds what every operation shares — the
//! security schemes and, from [`crate::policy::ROUTES`], which operations need them and which
//! rule admits whom; the path parameters' id formats; the problem+json error responses.
//!
//! `openapi.json` at the repository root is this document, committed; the `openapi`
//! integration test fails when they drift (`make openapi` regenerates it) and when a route of
//! the router is missing from it, or the other way round. Served at `GET /openapi.json`, with
//! Swagger UI at `GET /docs` (`routes/docs.rs`).

pub mod problems;
mod schemas;

pub use schemas::*;

use utoipa::{
    Modify, OpenApi,
    openapi::{
        self, ComponentsBuilder, Ref, RefOr, Required,
        path::{Operation, ParameterBuilder, ParameterIn},
        schema::{ObjectBuilder, Type},
        security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme},
    },
};

use crate::{policy, routes};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Gatehouse",
        description = "Self-hosted, multi-tenant content moderation and Chinese↔English \
            translation. Every error is `application/problem+json` with a stable `code` (see the \
            `Problem` schema). Protected operations take an API key (`ghk_…`) or a JWT as the \
            bearer; which roles may call each one is written in its description (`docs/AUTHORIZATION.md`).",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    paths(
        routes::health::healthz,
        routes::health::readyz,
        routes::health::metrics,
        routes::docs::openapi_json,
        routes::docs::page,
        routes::docs::asset,
        routes::auth::token,
        routes::auth::login,
        routes::auth::jwks,
        routes::auth::me,
        routes::jobs::create,
        routes::jobs::list,
        routes::jobs::show,
        routes::jobs::share,
        routes::jobs::examples,
        routes::job_actions::cancel,
        routes::job_actions::retry,
        routes::job_results::results,
        routes::job_results::errors,
        routes::files::upload,
        routes::files::list,
        routes::files::show,
        routes::files::remove,
        routes::files::content,
        routes::batches::create,
        routes::batches::list,
        routes::batches::show,
        routes::batches::cancel,
        routes::moderations::moderate,
        routes::translations::translate,
        routes::moderation_policy::current,
        routes::moderation_policy::history,
        routes::moderation_policy::version,
        routes::moderation_policy::replace,
        routes::moderation_policy::merge,
        routes::keys::create,
        routes::keys::list,
        routes::keys::rotate,
        routes::keys::revoke,
        routes::keys::change,
        routes::users::create,
        routes::users::list,
        routes::users::update,
        routes::users::remove,
        routes::tenants::own,
        routes::tenants::update_own,
        routes::tenants::create,
        routes::tenants::list,
        routes::tenants::update,
        routes::audit::list,
        routes::audit::export,
        routes::audit::list_checkpoints,
        routes::audit::verify,
        routes::usage::report,
        routes::webhook_endpoints::create,
        routes::webhook_endpoints::list,
        routes::webhook_endpoints::show,
        routes::webhook_endpoints::change,
        routes::webhook_endpoints::remove,
        routes::webhook_endpoints::secret,
        routes::webhook_endpoints::rotate,
        routes::webhook_endpoints::recover,
        routes::webhook_endpoints::test,
        routes::webhook_messages::list,
        routes::webhook_messages::show,
        routes::webhook_messages::attempts,
        routes::webhook_messages::retry,
    ),
    tags(
        (name = "health", description = "Liveness, readiness, metrics"),
        (name = "docs", description = "This description and its UI"),
        (name = "auth", description = "Tokens, login, identity"),
        (name = "jobs", description = "Bulk jobs: submit, status, results, cancel, retry"),
        (name = "files", description = "Uploads and batch output (OpenAI Files API)"),
        (name = "batches", description = "OpenAI Batch API"),
        (name = "sync", description = "Synchronous moderation and translation"),
        (name = "moderation policy", description = "The tenant's versioned moderation policy"),
        (name = "admin", description = "Keys, users, tenants, audit, usage"),
        (name = "webhooks", description = "Webhook endpoints, messages and attempts"),
    ),
    modifiers(&Conventions),
)]
pub struct ApiDoc;

/// The document as served and committed: pretty JSON with a final newline.
pub fn json() -> String {
    let mut text = ApiDoc::openapi()
        .to_pretty_json()
        .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
    text.push('\n');
    text
}

/// Security schemes, error responses, path parameters, and authorization per operation.
struct Conventions;

const JWT: &str = "bearer_jwt";
const API_KEY: &str = "api_key";

impl Modify for Conventions {
    fn modify(&self, api: &mut openapi::OpenApi) {
        let mut components = api
            .components
            .take()
            .unwrap_or_else(|| ComponentsBuilder::new().build());
        components.add_security_scheme(
            JWT,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "An EdDSA JWT from `POST /v1/auth/login` (people) or `POST /v1/auth/token` \
                         (an API key's short-lived token): `Authorization: Bearer eyJ…`",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            API_KEY,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("ghk_<key id>_<secret>")
                    .description(Some(
                        "An API key, sent as the bearer: `Authorization: Bearer ghk_…`",
                    ))
                    .build(),
            ),
        );
        components
            .schemas
            .insert("Problem".into(), RefOr::T(problems::problem_schema()));
        for (name, _, description, retry_after) in problems::RESPONSES {
            components.responses.insert(
                (*name).into(),
                problems::response(description, *retry_after),
            );
        }
        api.components = Some(components);

        for (path, item) in api.paths.paths.iter_mut() {
            let operations = [
                ("GET", &mut item.get),
                ("POST", &mut item.post),
                ("PUT", &mut item.put),
                ("PATCH", &mut item.patch),
                ("DELETE", &mut item.delete),
            ];
            for (method, operation) in operations {
                if let Some(operation) = operation.as_mut() {
                    conventions(method, path, operation);
                }
            }
        }
    }
}

/// The schema of a path parameter, by the resource its path names.
fn parameter_schema(path: &str, name: &str) -> RefOr<openapi::schema::Schema> {
    let id = |schema: &str| RefOr::Ref(Ref::from_schema_name(schema));
    match name {
        "version" => ObjectBuilder::new()
            .schema_type(Type::Integer)
            .minimum(Some(0))
            .into(),
        "id" if path.starts_with("/v1/jobs/") => id("JobId"),
        "id" if path.starts_with("/v1/files/") => id("FileId"),
        "id" if path.starts_with("/v1/batches/") => id("BatchId"),
        "id" if path.starts_with("/v1/keys/") => id("KeyId"),
        "id" if path.starts_with("/v1/users/") => id("UserId"),
        "id" if path.starts_with("/v1/tenants/") => id("TenantId"),
        "id" if path.starts_with("/v1/webhooks/endpoints/") => id("EndpointId"),
        "id" if path.starts_with("/v1/webhooks/messages/") => id("MessageId"),
        _ => ObjectBuilder::new().schema_type(Type::String).into(),
    }
}

fn conventions(method: &str, path: &str, operation: &mut Operation) {
    let rule = policy::ROUTES
        .iter()
        .find(|(m, p, _)| *m == method && *p == path)
        .map(|(_, _, rule)| *rule);

    // Path parameters, unless the annotation declared them.
    let names: Vec<&str> = path
        .split('/')
        .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .collect();
    let parameters = operation.parameters.get_or_insert_with(Vec::new);
    for name in &names {
        if !parameters
            .iter()
            .any(|p| p.name == *name && p.parameter_in == ParameterIn::Path)
        {
            parameters.push(
                ParameterBuilder::new()
                    .name(*name)
                    .parameter_in(ParameterIn::Path)
                    .required(Required::True)
                    .schema(Some(parameter_schema(path, name)))
                    .build(),
            );
        }
    }
    let has_query = parameters
        .iter()
        .any(|p| p.parameter_in == ParameterIn::Query);
    if parameters.is_empty() {
        operation.parameters = None;
    }
    let has_body = operation.request_body.is_some();

    let mut errors: Vec<&str> = vec!["BadRequest", "RequestTimeout", "PayloadTooLarge"];
    if let Some(rule) = rule {
        operation.security = Some(vec![
            SecurityRequirement::new(JWT, Vec::<String>::new()),
            SecurityRequirement::new(API_KEY, Vec::<String>::new()),
        ]);
        let roles: Vec<&str> = rule.roles.iter().map(|r| r.as_str()).collect();
        let how = if rule.api_key_only {
            " (an API key itself, not a token)"
        } else {
            ""
        };
        let note = format!(
            "\n\n**Authorization:** rule `{}` — roles {}{how}.",
            rule.name,
            roles
                .iter()
                .map(|r| format!("`{r}`"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let description = operation.description.get_or_insert_with(String::new);
        description.push_str(&note);
        operation
            .extensions
            .get_or_insert_with(Default::default)
            .insert("x-gatehouse-rule".into(), rule.name.into());
        errors.extend(["Unauthorized", "Forbidden", "TooManyRequests"]);
    } else {
        let description = operation.description.get_or_insert_with(String::new);
        description.push_str("\n\n**Authorization:** none (public).");
        // The login throttle.
        errors.push("TooManyRequests");
    }
    if !names.is_empty() {
        errors.push("NotFound");
    }
    if has_body {
        errors.push("UnsupportedMediaType");
    }
    if has_body || has_query || rule.is_some() {
        errors.push("Unprocessable");
    }
    errors.extend(["Internal", "Unavailable"]);
    for name in errors {
        let status = problems::RESPONSES
            .iter()
            .find(|(n, ..)| *n == name)
            .map(|(_, status, ..)| status.to_string())
            .unwrap_or_default();
        operation
            .responses
            .responses
            .entry(status)
            .or_insert_with(|| RefOr::Ref(Ref::from_response_name(name)));
    }
}
