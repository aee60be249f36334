//! A job's output: `GET /v1/jobs/{id}/results?status=succeeded|failed&after=<index>&limit=`
//! as NDJSON (default) or CSV (`Accept: text/csv`), streamed page by page (memory stays
//! constant whatever the job's size; readable while the job runs), and
//! `GET /v1/jobs/{id}/errors`: the input lines refused with `on_invalid: skip`, as NDJSON.
//! Results deleted by retention are `410 Gone`, `code: expired`.

use axum::{
    Router,
    body::Body,
    extract::{Path, State},
    http::{HeaderMap, HeaderValue, header},
    response::Response,
    routing::get,
};
use futures_util::stream;
use gatehouse_common::job::{ItemStatus, result::ItemResult};
use serde::Deserialize;

use super::jobs::visible_job;
use crate::{
    auth::Principal,
    error::ApiError,
    extract::ApiQuery,
    state::AppState,
    store::results::{self, ResultLine, ResultsReader},
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/jobs/{id}/results", get(results))
        .route("/v1/jobs/{id}/errors", get(errors))
}

const PAGE: i64 = 1000;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct ResultsQuery {
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    after: Option<i32>,
    #[serde(default)]
    limit: Option<i64>,
}

fn wants_csv(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',').any(|m| {
                m.split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .eq_ignore_ascii_case("text/csv")
            })
        })
}

/// The CSV columns: one row per finished item.
const CSV_HEADER: [&str; 9] = [
    "index",
    "custom_id",
    "status",
    "flagged",
    "level",
    "categories",
    "text",
    "error_code",
    "error_message",
];

fn csv_row(writer: &mut csv::Writer<Vec<u8>>, line: &ResultLine) -> Result<(), csv::Error> {
    let (flagged, level, categories, text) = match &line.result {
        Some(ItemResult::Moderation(m)) => (
            m.flagged.to_string(),
            m.level.as_str().to_string(),
            m.categories
                .iter()
                .map(|c| c.as_str())
                .collect::<Vec<_>>()
                .join(" "),
            String::new(),
        ),
        Some(ItemResult::Translation(t)) => {
            (String::new(), String::new(), String::new(), t.text.clone())
        }
        Some(ItemResult::Chained(c)) => (
            c.moderation.flagged.to_string(),
            c.moderation.level.as_str().to_string(),
            c.moderation
                .categories
                .iter()
                .map(|c| c.as_str())
                .collect::<Vec<_>>()
                .join(" "),
            c.translation
                .as_ref()
                .map(|t| t.text.clone())
                .unwrap_or_default(),
        ),
        Some(ItemResult::Legacy(v)) => (
            v["flagged"]
                .as_bool()
                .map(|b| b.to_string())
                .unwrap_or_default(),
            v["level"].as_str().unwrap_or("").to_string(),
            String::new(),
            v["text"].as_str().unwrap_or("").to_string(),
        ),
        None => Default::default(),
    };
    let (code, message) = match &line.error {
        Some(e) => (e.code.clone(), e.message.clone()),
        None => Default::default(),
    };
    writer.write_record([
        line.index.to_string(),
        line.custom_id.clone().unwrap_or_default(),
        line.status.as_str().to_string(),
        flagged,
        level,
        categories,
        text,
        code,
        message,
    ])
}

#[utoipa::path(
    get, path = "/v1/jobs/{id}/results", tag = "jobs", operation_id = "jobResults",
    params(ResultsQuery),
    responses(
        (status = 200, description = "One line per finished item, in item order (`X-Gatehouse-Job-Status` says whether more will come)", content(
            (crate::store::results::ResultLine = "application/x-ndjson"),
            (String = "text/csv"),
        )),
        (status = 410, description = "Removed by retention (`expired`)", content_type = "application/problem+json", body = crate::openapi::Problem),
    ),
)]
async fn results(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    headers: HeaderMap,
    ApiQuery(query): ApiQuery<ResultsQuery>,
) -> Result<Response, ApiError> {
    let job = visible_job(&state, &principal, &id).await?;
    if job.expired {
        return Err(ApiError::Gone {
            code: "expired",
            detail: format!(
                "the job's results were deleted by retention on {}",
                job.expires_at.date_naive()
            ),
        });
    }
    let status = match query.status.as_deref() {
        None => None,
        Some("succeeded") => Some(ItemStatus::Succeeded),
        Some("failed") => Some(ItemStatus::Failed),
        Some(_) => {
            return Err(ApiError::bad_request(
                "invalid_query",
                "status must be succeeded or failed",
            )
            .with_field(Some("status".into())));
        }
    };
    if query.limit.is_some_and(|l| l < 1) {
        return Err(
            ApiError::bad_request("invalid_query", "limit must be at least 1")
                .with_field(Some("limit".into())),
        );
    }
    let csv = wants_csv(&headers);
    let reader = ResultsReader::new(&state.pool, principal.tenant()?, job.id).await?;
    let after = query.after.unwrap_or(-1);
    let remaining = query.limit.unwrap_or(i64::MAX);
    let pages = stream::try_unfold(
        (reader, Some(after), remaining, csv),
        move |(mut reader, cursor, remaining, first)| async move {
            let Some(after) = cursor else {
                return Ok::<_, sqlx::Error>(None);
            };
            let want = remaining.min(PAGE);
            if want <= 0 {
                return Ok(None);
            }
            let lines = reader.page(after, want, status).await?;
            let mut buf = Vec::with_capacity(lines.len() * 256);
            if csv {
                let mut writer = csv::WriterBuilder::new()
                    .has_headers(false)
                    .from_writer(Vec::new());
                let fail = |e: csv::Error| sqlx::Error::Protocol(e.to_string());
                if first {
                    writer.write_record(CSV_HEADER).map_err(fail)?;
                }
                for line in &lines {
                    csv_row(&mut writer, line).map_err(fail)?;
                }
                buf = writer
                    .into_inner()
                    .map_err(|e| sqlx::Error::Protocol(e.to_string()))?;
            } else {
                for line in &lines {
                    serde_json::to_writer(&mut buf, line)
                        .map_err(|e| sqlx::Error::Protocol(e.to_string()))?;
                    buf.push(b'\n');
                }
            }
            if lines.is_empty() && buf.is_empty() {
                return Ok(None);
            }
            let full = lines.len() as i64 == want;
            let next = if full {
                lines.last().map(|l| l.index)
            } else {
                None
            };
            Ok(Some((
                buf,
                (reader, next, remaining - lines.len() as i64, false),
            )))
        },
    );
    let mut response = Response::new(Body::from_stream(pages));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(if csv {
            "text/csv; charset=utf-8"
        } else {
            "application/x-ndjson"
        }),
    );
    headers.insert(
        "x-gatehouse-job-status",
        HeaderValue::from_static(job.status.as_str()),
    );
    Ok(response)
}

#[utoipa::path(
    get, path = "/v1/jobs/{id}/errors", tag = "jobs", operation_id = "jobErrors",
    responses(
        (status = 200, description = "The input lines refused with `on_invalid: skip`", content(
            (gatehouse_common::job::store::LineError = "application/x-ndjson"),
        )),
        (status = 410, description = "Removed by retention (`expired`)", content_type = "application/problem+json", body = crate::openapi::Problem),
    ),
)]
async fn errors(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let job = visible_job(&state, &principal, &id).await?;
    let tenant = principal.tenant()?;
    let pool = state.pool.clone();
    let pages = stream::try_unfold(Some(0), move |cursor| {
        let pool = pool.clone();
        async move {
            let Some(after) = cursor else {
                return Ok::<_, sqlx::Error>(None);
            };
            let lines = results::line_errors(&pool, tenant, job.id, after, PAGE).await?;
            if lines.is_empty() {
                return Ok(None);
            }
            let next = (lines.len() as i64 == PAGE)
                .then(|| lines.last().map(|l| l.line))
                .flatten();
            let mut buf = Vec::new();
            for line in &lines {
                serde_json::to_writer(&mut buf, line)
                    .map_err(|e| sqlx::Error::Protocol(e.to_string()))?;
                buf.push(b'\n');
            }
            Ok(Some((buf, next)))
        }
    });
    let mut response = Response::new(Body::from_stream(pages));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    Ok(response)
}
