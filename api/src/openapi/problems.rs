//! The error side of the OpenAPI description: the `Problem` schema (RFC 9457
//! `application/problem+json`, as [`crate::error`] renders it), the catalogue of its `code`
//! values, and the reusable error responses every operation refers to.
//!
//! `code` is documented as an open list, not a closed `enum`: a client must treat an unknown
//! code like its status. The `openapi` integration test checks that every code written at an
//! `ApiError` construction site in `api/src` and `common/src`, and every code of the README's
//! error table, is in [`CODES`].

use utoipa::openapi::{
    ContentBuilder, HeaderBuilder, ObjectBuilder, RefOr, Response, ResponseBuilder,
    schema::{ArrayBuilder, Schema, Type},
};

use crate::error::PROBLEM_JSON;

/// Every `code` a problem response can carry: (code, status, when).
pub const CODES: &[(&str, u16, &str)] = &[
    ("bad_request", 400, "malformed HTTP framing"),
    ("invalid_json", 400, "the body is not JSON"),
    (
        "invalid_query",
        400,
        "a query parameter that does not parse (`field` names it)",
    ),
    (
        "invalid_idempotency_key",
        400,
        "`Idempotency-Key` is not 1 to 255 visible ASCII characters",
    ),
    (
        "invalid_multipart",
        400,
        "a multipart upload that cannot be read",
    ),
    ("unreadable_body", 400, "the request body could not be read"),
    (
        "unauthorized",
        401,
        "missing, malformed, expired, wrongly signed or revoked credential",
    ),
    (
        "forbidden",
        403,
        "the principal lacks the role or scope, or the client IP is outside the tenant's allowlist",
    ),
    (
        "not_found",
        404,
        "unknown route or resource, or another tenant's",
    ),
    (
        "method_not_allowed",
        405,
        "the route exists, the method does not (`Allow` lists the ones that do)",
    ),
    ("not_acceptable", 406, "no acceptable representation"),
    (
        "request_timeout",
        408,
        "the request head or body arrived too slowly",
    ),
    ("duplicate_slug", 409, "a tenant with that slug exists"),
    (
        "duplicate_username",
        409,
        "a user with that username exists",
    ),
    (
        "duplicate_file",
        409,
        "a file with that name is being uploaded",
    ),
    (
        "last_admin",
        409,
        "the last enabled admin cannot be demoted, disabled or deleted",
    ),
    (
        "too_many_endpoints",
        409,
        "over `GATEHOUSE_WEBHOOK_MAX_ENDPOINTS`",
    ),
    (
        "endpoint_disabled",
        409,
        "testing or recovering a disabled webhook endpoint",
    ),
    ("job_finished", 409, "cancelling a finished job"),
    (
        "job_not_finished",
        409,
        "retrying a job that is still running",
    ),
    (
        "nothing_to_retry",
        409,
        "retrying a job without failed items",
    ),
    (
        "expired",
        410,
        "the job's texts and results were removed by retention",
    ),
    (
        "payload_too_large",
        413,
        "a body over `GATEHOUSE_MAX_BODY_BYTES` or a file over `GATEHOUSE_MAX_FILE_BYTES`",
    ),
    ("uri_too_long", 414, "the request target is too long"),
    (
        "unsupported_media_type",
        415,
        "a `Content-Type` the route does not take",
    ),
    (
        "invalid_body",
        422,
        "wrong JSON shape: not an object, a missing or unknown field (`field` names it)",
    ),
    ("invalid_value", 422, "a value the database refused"),
    (
        "unknown_kind",
        422,
        "`kind` is not one the deployment supports",
    ),
    ("invalid_pipeline", 422, "`pipeline` is not a known chain"),
    ("no_items", 422, "`items` missing or empty"),
    (
        "too_many_items",
        422,
        "more than `GATEHOUSE_MAX_ITEMS_PER_JOB` items",
    ),
    (
        "too_many_lines",
        422,
        "a file over `GATEHOUSE_MAX_FILE_LINES` lines",
    ),
    (
        "invalid_lines",
        422,
        "input lines refused (`on_invalid: reject`): `errors` lists the first, `invalid_lines` counts them",
    ),
    ("empty_text", 422, "a text or name is empty or blank"),
    ("text_too_long", 422, "a text or name over its length"),
    (
        "invalid_text",
        422,
        "a NUL or control character in a text or name",
    ),
    (
        "invalid_custom_id",
        422,
        "a `custom_id` over `GATEHOUSE_MAX_CUSTOM_ID_CHARS`",
    ),
    (
        "too_many_entries",
        422,
        "a list over its bound (`scopes`, `ip_allowlist`)",
    ),
    (
        "idempotency_key_reused",
        422,
        "an `Idempotency-Key` already used for a different request",
    ),
    (
        "missing_options",
        422,
        "a translation job without `options`",
    ),
    ("invalid_options", 422, "job options that do not parse"),
    ("invalid_language", 422, "an unknown language code"),
    (
        "unsupported_language_pair",
        422,
        "no installed model translates the pair (the detail lists them)",
    ),
    (
        "missing_input",
        422,
        "`POST /v1/moderations` without `input`",
    ),
    ("empty_input", 422, "an empty `input` array"),
    (
        "too_many_inputs",
        422,
        "more than `GATEHOUSE_MAX_MODERATION_INPUTS` inputs",
    ),
    ("invalid_input", 422, "an input that is not text"),
    ("unsupported_input", 422, "an input type other than text"),
    ("unknown_file", 422, "`input_file_id` names no file"),
    ("missing_file", 422, "an upload without its `file` part"),
    (
        "missing_purpose",
        422,
        "an upload without its `purpose` part",
    ),
    ("invalid_purpose", 422, "an unknown file `purpose`"),
    (
        "invalid_endpoint",
        422,
        "a batch `endpoint` other than `/v1/moderations` or `/v1/translations`",
    ),
    (
        "invalid_completion_window",
        422,
        "a batch `completion_window` other than `24h`",
    ),
    ("invalid_metadata", 422, "batch `metadata` over its bounds"),
    ("invalid_limit", 422, "`limit` outside 1 to 200"),
    ("invalid_cursor", 422, "an `after` cursor of the wrong kind"),
    (
        "invalid_range",
        422,
        "a usage `from`/`to` range that is reversed or too long",
    ),
    ("invalid_granularity", 422, "an unknown usage granularity"),
    (
        "invalid_scope",
        422,
        "a scope that is unknown or not granted to the tenant",
    ),
    ("invalid_expiry", 422, "a key `expires_at` in the past"),
    ("invalid_role", 422, "an unknown or forbidden role"),
    (
        "weak_password",
        422,
        "a password shorter than 12 characters",
    ),
    (
        "invalid_credentials_shape",
        422,
        "a login body of the wrong shape",
    ),
    ("invalid_slug", 422, "a slug that is not `a-z0-9-`"),
    (
        "invalid_cidr",
        422,
        "an IP allowlist entry that is not a CIDR",
    ),
    ("invalid_quota", 422, "a quota that is negative"),
    ("invalid_rate_limit", 422, "a rate limit outside its range"),
    ("invalid_weight", 422, "a tenant weight outside 1 to 100"),
    (
        "invalid_retention",
        422,
        "`retention_days` outside 1 to 3650",
    ),
    (
        "invalid_policy",
        422,
        "a moderation policy threshold, category or blocklist that is invalid",
    ),
    ("invalid_url", 422, "a malformed webhook URL"),
    (
        "url_refused",
        422,
        "a webhook URL that resolves to an internal address",
    ),
    (
        "url_scheme_refused",
        422,
        "an `http` webhook URL without `GATEHOUSE_WEBHOOK_ALLOW_HTTP`",
    ),
    ("invalid_event_type", 422, "an unknown webhook event type"),
    (
        "invalid_header",
        422,
        "a reserved or malformed webhook header",
    ),
    ("invalid_since", 422, "a recovery `since` in the future"),
    (
        "unknown_endpoint",
        422,
        "a webhook `endpoint_id` not of this tenant",
    ),
    (
        "translation_failed",
        422,
        "`POST /v1/translations` with one `text`: the item failed",
    ),
    (
        "too_many_requests",
        429,
        "login attempts throttled (`Retry-After`)",
    ),
    (
        "quota_exceeded",
        429,
        "a daily quota is used up (`Retry-After`; the body names the quota)",
    ),
    (
        "rate_limited",
        429,
        "a per-minute rate limit (`Retry-After`; the body names the limit)",
    ),
    (
        "backlog_full",
        429,
        "the tenant's backlog is full (`Retry-After`)",
    ),
    (
        "internal",
        500,
        "a server error; the detail is logged, never returned",
    ),
    (
        "unavailable",
        503,
        "a dependency is down, or the replica is at `GATEHOUSE_MAX_CONNECTIONS` (`Retry-After`)",
    ),
    (
        "overloaded",
        503,
        "every tenant's backlog is full, or too many synchronous requests wait (`Retry-After`)",
    ),
    ("headers_too_large", 431, "the request head is too large"),
    // The audit trail (issue 14).
    (
        "reauthentication_required",
        401,
        "a sensitive operation needs a login within the last 5 minutes or the password in `Gatehouse-Confirm-Password`",
    ),
    (
        "tenant_required",
        422,
        "an operator reads an audit trail without naming the tenant (`?tenant=ten_…`)",
    ),
    (
        "invalid_action",
        422,
        "`action` is not an audit action name (docs/AUDIT.md)",
    ),
    (
        "invalid_outcome",
        422,
        "`outcome` is not success, denied, error, failure or throttled",
    ),
    (
        "invalid_format",
        422,
        "the audit export's `format` is not `ndjson` or `csv`",
    ),
    (
        "invalid_audit_retention",
        422,
        "`audit_retention_days` below 90 or above 36500",
    ),
];

/// The `Problem` schema.
pub fn problem_schema() -> Schema {
    let mut table = String::from(
        "An RFC 9457 problem (`application/problem+json`). `code` is stable; extension \
         members depend on the code (`field` for 400/422, `invalid_lines` and `errors` for \
         `invalid_lines`, the quota or limit for 429/503).\n\n| code | status | when |\n|---|---|---|\n",
    );
    for (code, status, when) in CODES {
        table.push_str(&format!("| `{code}` | {status} | {when} |\n"));
    }
    let string = |description: &str| {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some(description))
    };
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .description(Some(table))
        .property(
            "type",
            string("`https://gatehouse.invalid/problems/<code with dashes>`"),
        )
        .property("title", string("the status's reason phrase"))
        .property(
            "status",
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .minimum(Some(400))
                .maximum(Some(599)),
        )
        .property(
            "code",
            string("one of the codes in the table above").examples(["invalid_body", "not_found"]),
        )
        .property(
            "detail",
            string("for people; 5xx details are logged, not returned"),
        )
        .property(
            "field",
            string("the field to blame (400 and 422), e.g. `items[3].text`"),
        )
        .property(
            "invalid_lines",
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .description(Some("`invalid_lines`: how many lines were refused")),
        )
        .property(
            "errors",
            ArrayBuilder::new()
                .items(
                    ObjectBuilder::new()
                        .schema_type(Type::Object)
                        .property("line", ObjectBuilder::new().schema_type(Type::Integer))
                        .property("field", ObjectBuilder::new().schema_type(Type::String))
                        .property("code", ObjectBuilder::new().schema_type(Type::String))
                        .property("message", ObjectBuilder::new().schema_type(Type::String)),
                )
                .description(Some("`invalid_lines`: the first 100 refused lines")),
        )
        .required("type")
        .required("title")
        .required("status")
        .required("code")
        .required("detail")
        .into()
}

/// The reusable error responses: (component name, status, description, `Retry-After`?).
pub const RESPONSES: &[(&str, u16, &str, bool)] = &[
    (
        "BadRequest",
        400,
        "Malformed request or query parameter",
        false,
    ),
    (
        "Unauthorized",
        401,
        "No, or no valid, credential (`WWW-Authenticate: Bearer`)",
        false,
    ),
    (
        "Forbidden",
        403,
        "Authenticated, but not allowed (role, scope or IP allowlist)",
        false,
    ),
    (
        "NotFound",
        404,
        "No such resource (or another tenant's)",
        false,
    ),
    (
        "RequestTimeout",
        408,
        "The request arrived too slowly",
        false,
    ),
    ("Conflict", 409, "Conflicts with the current state", false),
    ("PayloadTooLarge", 413, "The body is too large", false),
    (
        "UnsupportedMediaType",
        415,
        "A content type the route does not take",
        false,
    ),
    (
        "Unprocessable",
        422,
        "The body or a value is invalid (`field` names it)",
        false,
    ),
    (
        "TooManyRequests",
        429,
        "A rate limit, quota or backlog bound (`Retry-After`)",
        true,
    ),
    ("Internal", 500, "Server error (logged)", false),
    (
        "Unavailable",
        503,
        "A dependency is down or the replica is overloaded (`Retry-After`)",
        true,
    ),
];

pub fn response(description: &str, retry_after: bool) -> RefOr<Response> {
    let mut builder = ResponseBuilder::new().description(description).content(
        PROBLEM_JSON,
        ContentBuilder::new()
            .schema(Some(RefOr::Ref(utoipa::openapi::Ref::from_schema_name(
                "Problem",
            ))))
            .build(),
    );
    if retry_after {
        builder = builder.header(
            "Retry-After",
            HeaderBuilder::new()
                .schema(ObjectBuilder::new().schema_type(Type::Integer))
                .description(Some("seconds to wait"))
                .build(),
        );
    }
    RefOr::T(builder.build())
}
