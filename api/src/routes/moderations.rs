//! `POST /v1/moderations`, OpenAI-compatible: `{"input": "text" | ["text", ...] |
//! [{"type": "text", "text": "..."}, ...], "model"?: "..."}` → `{"id", "model", "results"}`
//! with OpenAI's categories, plus `level` and our full verdict under `gatehouse`. The texts run
//! as a moderation job through the same queue and workers; past `GATEHOUSE_SYNC_WAIT_MS` the
//! answer is `202` with the job to poll.

use axum::{
    Json, Router, extract::State, response::IntoResponse, response::Response, routing::post,
};
use gatehouse_common::{
    job::{
        options::{JobOptions, ModerateOptions},
        result::{ItemResult, ModerationResult},
        store::NewItem,
    },
    types::JobKind,
};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{
    jobs::{ItemIn, validate_items},
    sync::{self, Waited},
};
use crate::{auth::Principal, error::ApiError, extract::ApiJson, openai, policy, state::AppState};

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/moderations", post(moderate))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
struct ModerationRequest {
    #[serde(default)]
    input: Option<Value>,
    /// Accepted for compatibility (`omni-moderation-latest`, ...); Gatehouse answers with the
    /// models it ran.
    #[serde(default)]
    #[allow(dead_code)]
    model: Option<crate::extract::Line<200>>,
}

#[utoipa::path(
    post, path = "/v1/moderations", tag = "sync", operation_id = "moderate",
    request_body = ModerationRequest,
    responses(
        (status = 200, description = "OpenAI's moderation object", body = crate::openapi::Moderation),
        (status = 202, description = "Not finished within `GATEHOUSE_SYNC_WAIT_MS`: the job to poll", body = crate::store::jobs::Job),
    ),
)]
async fn moderate(
    State(state): State<AppState>,
    principal: Principal,
    body: Result<ApiJson<ModerationRequest>, ApiError>,
) -> Result<Response, ApiError> {
    principal.require(&policy::JOBS_SUBMIT)?;
    let ApiJson(body) = body?;
    principal.require_scope(JobKind::Moderate.as_str())?;
    let items = inputs(&state, body.input)?;
    let options = JobOptions::Moderate(ModerateOptions::default());
    let (job, results) = match sync::submit_and_wait(&state, &principal, options, items).await? {
        Waited::Done { job, results } => (job, results),
        Waited::Pending(response) => return Ok(response),
    };
    let mut out = Vec::with_capacity(results.len());
    let mut model = String::new();
    for (i, result) in results.into_iter().enumerate() {
        let ours = match result {
            Ok(ItemResult::Moderation(ours)) => ours,
            Ok(_) => {
                return Err(ApiError::Internal(format!(
                    "input[{i}]: not a moderation result"
                )));
            }
            Err(error) => {
                return Err(ApiError::Internal(format!(
                    "input[{i}] could not be moderated: {}",
                    error.message
                )));
            }
        };
        if model.is_empty() {
            model = model_name(&ours);
        }
        out.push(openai::result(*ours));
    }
    Ok(Json(json!({ "id": job.to_string(), "model": model, "results": out })).into_response())
}

/// `guard-e5-small@…+toxic-bilstm@…`: the models that judged the input.
fn model_name(result: &ModerationResult) -> String {
    let refs: Vec<&str> = result.models.iter().map(|m| m.reference.as_str()).collect();
    if refs.is_empty() {
        "gatehouse".into()
    } else {
        refs.join("+")
    }
}

/// The texts of `input`, checked against the limits, each error naming its field.
fn inputs(state: &AppState, input: Option<Value>) -> Result<Vec<NewItem>, ApiError> {
    let limits = &state.config.limits;
    let invalid = |code, field: String, detail: String| ApiError::invalid(code, field, detail);
    let (single, values) = match input {
        None | Some(Value::Null) => {
            return Err(invalid(
                "missing_input",
                "input".into(),
                "`input` is required".into(),
            ));
        }
        Some(Value::String(text)) => (true, vec![Value::String(text)]),
        Some(Value::Array(values)) => (false, values),
        Some(_) => {
            return Err(invalid(
                "invalid_input",
                "input".into(),
                "`input` must be a string or an array of strings".into(),
            ));
        }
    };
    if values.is_empty() {
        return Err(invalid(
            "empty_input",
            "input".into(),
            "`input` must hold at least one text".into(),
        ));
    }
    if values.len() > limits.max_moderation_inputs {
        return Err(invalid(
            "too_many_inputs",
            "input".into(),
            format!(
                "{} inputs; at most {} per request (GATEHOUSE_MAX_MODERATION_INPUTS)",
                values.len(),
                limits.max_moderation_inputs
            ),
        ));
    }
    let mut items = Vec::with_capacity(values.len());
    for (i, value) in values.into_iter().enumerate() {
        let field = if single {
            "input".to_string()
        } else {
            format!("input[{i}]")
        };
        let text = match value {
            Value::String(text) => text,
            // OpenAI's multi-modal form: text parts only.
            Value::Object(part) if part.get("type") == Some(&json!("text")) => {
                match part.get("text") {
                    Some(Value::String(text)) => text.clone(),
                    _ => {
                        return Err(invalid(
                            "invalid_input",
                            format!("{field}.text"),
                            format!("{field}.text must be a string"),
                        ));
                    }
                }
            }
            Value::Object(_) => {
                return Err(invalid(
                    "unsupported_input",
                    format!("{field}.type"),
                    format!("{field}: only `text` parts are supported"),
                ));
            }
            _ => {
                return Err(invalid(
                    "invalid_input",
                    field.clone(),
                    format!("{field} must be a string"),
                ));
            }
        };
        items.push(ItemIn {
            custom_id: None,
            text,
        });
    }
    // Empty, over-long and NUL texts: the same checks as any job's items.
    validate_items(state, items).map_err(|e| sync::rename_item_field(e, single, "input", "input"))
}
