//! `gatehouse moderate` and `gatehouse translate`: the synchronous endpoints. When the API
//! answers `202` (the work took longer than its wait bound), the job is followed and its
//! results read, so the command always ends with every verdict.

use std::{io::Read, path::PathBuf};

use gatehouse_common::job::{
    ItemStatus,
    result::{ItemError, ItemResult, ModerationResult, ResultLine, TranslationResult},
    view::Job,
};
use reqwest::StatusCode;
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use serde_json::{Value, json};

use super::{Ctx, results};
use crate::{
    api::Api,
    cli::{Moderate, Translate},
    error::{CliError, Result},
    output, progress,
};

/// What `--json` prints for both commands: the job (when the API named it) and one results
/// line per text, in order, as `GET /v1/jobs/{id}/results` has them.
#[derive(Serialize)]
struct Answer<'a> {
    job_id: Option<&'a str>,
    results: &'a [ResultLine],
}

/// `POST /v1/moderations`' answer: the job id and, per input, our verdict under `gatehouse`.
#[derive(Deserialize)]
struct Moderations {
    id: String,
    results: Vec<OpenAiResult>,
}

#[derive(Deserialize)]
struct OpenAiResult {
    gatehouse: ModerationResult,
}

/// `POST /v1/translations`' answer: one result (`text`) or a list (`texts`).
#[derive(Deserialize)]
#[serde(untagged)]
enum Translations {
    Many { results: Vec<TranslationEntry> },
    One(TranslationResult),
}

#[derive(Deserialize)]
#[serde(untagged)]
enum TranslationEntry {
    Failed { error: ItemError },
    Done(TranslationResult),
}

/// The texts of the arguments, then of each `--file` (`-`: standard input), in that order.
fn gather(mut texts: Vec<String>, files: &[PathBuf]) -> Result<Vec<String>> {
    for path in files {
        let text = if path.as_os_str() == "-" {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .map_err(|e| CliError::io("reading standard input", e))?;
            text
        } else {
            std::fs::read_to_string(path)
                .map_err(|e| CliError::io(format!("reading {}", path.display()), e))?
        };
        texts.push(text);
    }
    if texts.is_empty() {
        return Err(CliError::Usage(
            "give at least one text, or --file FILE".to_string(),
        ));
    }
    Ok(texts)
}

fn decode<T: DeserializeOwned>(api: &Api, path: &str, value: Value) -> Result<T> {
    serde_json::from_value(value).map_err(|e| CliError::Protocol {
        url: api.url(path),
        detail: format!("unexpected body: {e}"),
    })
}

fn succeeded(index: usize, result: ItemResult) -> ResultLine {
    ResultLine {
        index: i32::try_from(index).unwrap_or(i32::MAX),
        custom_id: None,
        status: ItemStatus::Succeeded,
        result: Some(result),
        error: None,
    }
}

/// A job the API handed back with `202`: followed to its end, then its results lines.
async fn finish(ctx: &Ctx, api: &Api, job: Job) -> Result<Vec<ResultLine>> {
    if !ctx.json {
        eprintln!(
            "still running after the API's wait: following job {}",
            job.id
        );
    }
    let job = progress::follow(api, job, progress::enabled(ctx.json)).await?;
    results::lines(api, &job).await
}

/// Prints the lines and decides the exit: failed texts first (4), then flagged ones (5).
fn conclude(
    ctx: &Ctx,
    job_id: Option<&str>,
    texts: &[String],
    lines: &[ResultLine],
    fail_on_flagged: bool,
) -> Result<()> {
    if ctx.json {
        output::json(&Answer {
            job_id,
            results: lines,
        });
    } else {
        for (line, text) in lines.iter().zip(texts) {
            match &line.result {
                Some(ItemResult::Translation(t)) => println!("{}", t.text),
                _ => println!(
                    "{:>3}  {}  | {}",
                    line.index + 1,
                    output::line(line),
                    output::preview(text, 60)
                ),
            }
        }
    }
    let failed = lines
        .iter()
        .filter(|l| l.status != ItemStatus::Succeeded)
        .count();
    if failed > 0 {
        if !ctx.json {
            for line in lines.iter().filter(|l| l.status != ItemStatus::Succeeded) {
                eprintln!("text {}: {}", line.index + 1, output::line(line));
            }
        }
        return Err(CliError::ItemsFailed(failed));
    }
    let flagged = lines.iter().any(|l| {
        l.result
            .as_ref()
            .and_then(ItemResult::as_moderation)
            .is_some_and(|m| m.flagged)
    });
    if fail_on_flagged && flagged {
        return Err(CliError::Flagged);
    }
    Ok(())
}

pub async fn moderate(ctx: &Ctx, args: Moderate) -> Result<()> {
    let texts = gather(args.texts, &args.files)?;
    let api = ctx.authed()?;
    const PATH: &str = "/v1/moderations";
    let (status, value): (_, Value) = api
        .post_json(PATH, &json!({ "input": texts }), None)
        .await?;
    let (job_id, lines) = if status == StatusCode::ACCEPTED {
        let job: Job = decode(api, PATH, value)?;
        (job.id.to_string(), finish(ctx, api, job).await?)
    } else {
        let answer: Moderations = decode(api, PATH, value)?;
        let lines = answer
            .results
            .into_iter()
            .enumerate()
            .map(|(i, r)| succeeded(i, ItemResult::Moderation(Box::new(r.gatehouse))))
            .collect();
        (answer.id, lines)
    };
    conclude(ctx, Some(&job_id), &texts, &lines, args.exit_code)
}

pub async fn translate(ctx: &Ctx, args: Translate) -> Result<()> {
    let texts = gather(args.texts, &args.files)?;
    let api = ctx.authed()?;
    const PATH: &str = "/v1/translations";
    let mut body = json!({ "source_lang": args.from, "target_lang": args.to });
    if let [one] = texts.as_slice() {
        body["text"] = Value::String(one.clone());
    } else {
        body["texts"] = json!(texts);
    }
    let (status, value): (_, Value) = api.post_json(PATH, &body, None).await?;
    if status == StatusCode::ACCEPTED {
        let job: Job = decode(api, PATH, value)?;
        let id = job.id.to_string();
        let lines = finish(ctx, api, job).await?;
        return conclude(ctx, Some(&id), &texts, &lines, false);
    }
    let lines = match decode::<Translations>(api, PATH, value)? {
        Translations::One(result) => vec![succeeded(0, ItemResult::Translation(result))],
        Translations::Many { results } => results
            .into_iter()
            .enumerate()
            .map(|(i, entry)| match entry {
                TranslationEntry::Done(result) => succeeded(i, ItemResult::Translation(result)),
                TranslationEntry::Failed { error } => ResultLine {
                    index: i32::try_from(i).unwrap_or(i32::MAX),
                    custom_id: None,
                    status: ItemStatus::Failed,
                    result: None,
                    error: Some(error),
                },
            })
            .collect(),
    };
    conclude(ctx, None, &texts, &lines, false)
}
