//! `POST /v1/translations`: the two-pane translator's call. It goes through the same queue and
//! workers as any job and waits — on the workers' `NOTIFY`, not a sleep loop — up to
//! `GATEHOUSE_SYNC_WAIT_MS`: `200` with the result (`text`) or `{"results": [...]}` in order
//! (`texts`); past the bound, `202` with the job to poll.

use axum::{
    Json, Router,
    extract::State,
    response::{IntoResponse, Response},
    routing::post,
};
use gatehouse_common::types::JobKind;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{
    jobs::{ItemIn, job_options, validate_items},
    sync,
};
use crate::{auth::Principal, error::ApiError, extract::ApiJson, policy, state::AppState};

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/translations", post(translate))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct Translate {
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    texts: Option<Vec<String>>,
    #[serde(default)]
    source_lang: Option<String>,
    #[serde(default)]
    target_lang: Option<String>,
}

#[utoipa::path(
    post, path = "/v1/translations", tag = "sync", operation_id = "translate",
    request_body = Translate,
    responses(
        (status = 200, description = "`text`: its translation; `texts`: `{\"results\"}`, one per text", content(
            (crate::openapi::TranslationReply = "application/json"),
        )),
        (status = 202, description = "Not finished within `GATEHOUSE_SYNC_WAIT_MS`: the job to poll", body = crate::store::jobs::Job),
    ),
)]
async fn translate(
    State(state): State<AppState>,
    principal: Principal,
    body: Result<ApiJson<Translate>, ApiError>,
) -> Result<Response, ApiError> {
    principal.require(&policy::JOBS_SUBMIT)?;
    let ApiJson(body) = body?;
    principal.require_scope(JobKind::Translate.as_str())?;
    principal.tenant()?;
    let (single, texts) = match (body.text, body.texts) {
        (Some(text), None) => (true, vec![text]),
        (None, Some(texts)) => (false, texts),
        _ => {
            return Err(ApiError::invalid(
                "invalid_body",
                "text",
                "send exactly one of `text` or `texts`",
            ));
        }
    };
    let mut raw = serde_json::Map::new();
    if let Some(source) = body.source_lang {
        raw.insert("source_lang".into(), Value::String(source));
    }
    if let Some(target) = body.target_lang {
        raw.insert("target_lang".into(), Value::String(target));
    }
    let options = job_options(&state, JobKind::Translate, Some(Value::Object(raw)))?;
    let items = texts
        .into_iter()
        .map(|text| ItemIn {
            custom_id: None,
            text,
        })
        .collect();
    let items = validate_items(&state, items)
        .map_err(|e| sync::rename_item_field(e, single, "text", "texts"))?;

    let results = match sync::submit_and_wait(&state, &principal, options, items).await? {
        sync::Waited::Done { results, .. } => results,
        sync::Waited::Pending(response) => return Ok(response),
    };
    if single {
        return match results.into_iter().next() {
            Some(Ok(result)) => Ok(Json(result).into_response()),
            Some(Err(error)) => Err(ApiError::invalid(
                "translation_failed",
                "text",
                error.message,
            )),
            None => Err(ApiError::Internal(
                "a translation job without its item".into(),
            )),
        };
    }
    let results: Vec<Value> = results
        .into_iter()
        .map(|r| match r {
            Ok(result) => serde_json::to_value(result).unwrap_or(Value::Null),
            Err(error) => json!({ "error": error }),
        })
        .collect();
    Ok(Json(json!({ "results": results })).into_response())
}
