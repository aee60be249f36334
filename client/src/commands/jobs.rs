//! `gatehouse jobs submit|wait|show|list|results`.
//!
//! `submit` uploads the file with `POST /v1/files` (streamed, with a byte progress bar) and
//! then creates the job with `POST /v1/jobs {"kind", "input_file_id", "options"?,
//! "on_invalid"}`, carrying an `Idempotency-Key` so a retried submission never makes two jobs.

use futures_util::TryStreamExt;
use gatehouse_common::job::view::Job;
use reqwest::{
    Method,
    multipart::{Form, Part},
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokio_util::io::ReaderStream;

use super::{
    Ctx,
    results::{self, Download},
};
use crate::{
    api::Api,
    cli::{self, Jobs, OnInvalid},
    error::{CliError, Result},
    output, progress,
};

/// The part of `POST /v1/files`' answer the submission needs.
#[derive(Deserialize)]
struct Uploaded {
    id: String,
    #[serde(default)]
    lines: Option<i64>,
}

#[derive(Serialize)]
struct NewJob<'a> {
    kind: &'a str,
    input_file_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    options: Option<Value>,
    on_invalid: &'a str,
}

/// `GET /v1/jobs`' page.
#[derive(Serialize, Deserialize)]
struct Page {
    data: Vec<Job>,
    next_after: Option<String>,
}

pub async fn run(ctx: &Ctx, command: Jobs) -> Result<()> {
    let api = ctx.authed()?;
    match command {
        Jobs::Submit(args) => submit(ctx, api, args).await,
        Jobs::Wait(args) => {
            let job: Job = api.get_json(&job_path(&args.id)?).await?;
            wait(ctx, api, job, args.output.as_deref()).await
        }
        Jobs::Show { id } => {
            let job: Job = api.get_json(&job_path(&id)?).await?;
            if ctx.json {
                output::json(&job);
            } else {
                println!("{}", output::job(&job));
            }
            Ok(())
        }
        Jobs::Cancel { id } => {
            let path = format!("{}/cancel", job_path(&id)?);
            let response = api.send(api.request(Method::POST, &path)).await?;
            let job: Job = api.decode(response).await?;
            if ctx.json {
                output::json(&job);
            } else {
                println!("{}", output::job(&job));
            }
            Ok(())
        }
        Jobs::List(args) => list(ctx, api, args).await,
        Jobs::Results(args) => {
            let job: Job = api.get_json(&job_path(&args.id)?).await?;
            let total = (args.status.is_none())
                .then(|| u64::try_from(job.counts.total).ok())
                .flatten();
            let id = job.id.to_string();
            let done = results::download(
                api,
                Download {
                    id: &id,
                    output: args.output.as_deref(),
                    status: args.status,
                    csv: args.csv,
                    total,
                    show: args.output.is_some() && progress::enabled(ctx.json),
                },
            )
            .await?;
            if args.output.is_some() {
                report_download(ctx, &done, true);
            } else if done.job_status.as_deref().is_some_and(|s| !is_final(s)) {
                eprintln!(
                    "note: job {id} is {}: these are the results finished so far",
                    done.job_status.as_deref().unwrap_or("running")
                );
            }
            Ok(())
        }
    }
}

/// `/v1/jobs/{id}` for an id that looks like one (anything else would change the path).
fn job_path(id: &str) -> Result<String> {
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(CliError::Usage(format!("`{id}` is not a job id (job_…)")));
    }
    Ok(format!("/v1/jobs/{id}"))
}

fn is_final(status: &str) -> bool {
    matches!(status, "completed" | "failed" | "cancelled")
}

fn report_download(ctx: &Ctx, done: &results::Downloaded, print_json: bool) {
    if ctx.json {
        if print_json {
            output::json(done);
        }
        return;
    }
    let path = done
        .output
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    eprintln!("wrote {} results lines to {path}", done.lines);
    if let Some(status) = done.job_status.as_deref().filter(|s| !is_final(s)) {
        eprintln!(
            "note: job {} is {status}: these are the results finished so far",
            done.job_id
        );
    }
}

fn options(args: &cli::Submit) -> Option<Value> {
    let mut options = Map::new();
    if let Some(from) = &args.from {
        options.insert("source_lang".into(), Value::String(from.clone()));
    }
    if let Some(to) = &args.to {
        options.insert("target_lang".into(), Value::String(to.clone()));
    }
    if let Some(level) = &args.max_level {
        options.insert("max_level".into(), Value::String(level.clone()));
    }
    (!options.is_empty()).then_some(Value::Object(options))
}

async fn upload(ctx: &Ctx, api: &Api, path: &std::path::Path) -> Result<Uploaded> {
    let context = || format!("reading {}", path.display());
    let len = tokio::fs::metadata(path)
        .await
        .map_err(|e| CliError::io(context(), e))?
        .len();
    let file = tokio::fs::File::open(path)
        .await
        .map_err(|e| CliError::io(context(), e))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "input.jsonl".to_string());
    let bar = progress::upload(len, progress::enabled(ctx.json));
    let counter = bar.clone();
    let stream = ReaderStream::new(file).inspect_ok(move |chunk| counter.inc(chunk.len() as u64));
    let part = Part::stream_with_length(reqwest::Body::wrap_stream(stream), len)
        .file_name(name)
        .mime_str("application/jsonl")
        .map_err(|e| CliError::Usage(format!("multipart: {e}")))?;
    let form = Form::new().text("purpose", "jobs").part("file", part);
    let response = api
        .send(api.request(Method::POST, "/v1/files").multipart(form))
        .await;
    bar.finish_and_clear();
    api.decode(response?).await
}

async fn submit(ctx: &Ctx, api: &Api, args: cli::Submit) -> Result<()> {
    let file = upload(ctx, api, &args.file).await?;
    if !ctx.json {
        eprintln!(
            "uploaded {} as {} ({} lines)",
            args.file.display(),
            file.id,
            file.lines
                .map(|n| n.to_string())
                .unwrap_or_else(|| "?".into())
        );
    }
    let key = args
        .idempotency_key
        .clone()
        .unwrap_or_else(|| format!("gatehouse-cli-{}", uuid::Uuid::now_v7()));
    let body = NewJob {
        kind: args.kind.as_str(),
        input_file_id: &file.id,
        options: options(&args),
        on_invalid: match args.on_invalid {
            OnInvalid::Reject => "reject",
            OnInvalid::Skip => "skip",
        },
    };
    let (_, job): (_, Job) = api.post_json("/v1/jobs", &body, Some(&key)).await?;
    if !args.wait {
        if ctx.json {
            output::json(&job);
        } else {
            println!("{}", output::job(&job));
            println!("follow it: gatehouse jobs wait {}", job.id);
        }
        return Ok(());
    }
    wait(ctx, api, job, args.output.as_deref()).await
}

/// Follows the job to its end, downloads its results if asked, prints it; a failed or
/// cancelled job, or one with failed items, is exit 4.
async fn wait(ctx: &Ctx, api: &Api, job: Job, output: Option<&std::path::Path>) -> Result<()> {
    let job = progress::follow(api, job, progress::enabled(ctx.json)).await?;
    if let Some(path) = output {
        let id = job.id.to_string();
        let done = results::download(
            api,
            Download {
                id: &id,
                output: Some(path),
                status: None,
                csv: false,
                total: u64::try_from(job.counts.total).ok(),
                show: progress::enabled(ctx.json),
            },
        )
        .await?;
        report_download(ctx, &done, false);
    }
    if ctx.json {
        output::json(&job);
    } else {
        println!("{}", output::job(&job));
        if let (Some(start), Some(end)) = (job.started_at, job.completed_at) {
            let secs = (end - start).num_milliseconds().max(1) as f64 / 1000.0;
            println!(
                "  ran {secs:.1} s: {:.0} items/s",
                f64::from(job.counts.total) / secs
            );
        }
        if output.is_none() {
            println!(
                "results: gatehouse jobs results {} -o results.jsonl",
                job.id
            );
        }
    }
    let c = job.counts;
    if c.failed > 0 || !matches!(job.status, gatehouse_common::types::JobStatus::Completed) {
        return Err(CliError::JobFailed(Box::new(job)));
    }
    Ok(())
}

async fn list(ctx: &Ctx, api: &Api, args: cli::List) -> Result<()> {
    if !(1..=200).contains(&args.limit) {
        return Err(CliError::Usage("--limit must be between 1 and 200".into()));
    }
    let mut all = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let mut path = format!("/v1/jobs?limit={}", args.limit);
        if let Some(cursor) = &after {
            path.push_str(&format!("&after={cursor}"));
        }
        let page: Page = api.get_json(&path).await?;
        all.extend(page.data);
        after = page.next_after;
        if !args.all || after.is_none() {
            break;
        }
    }
    if ctx.json {
        output::json(&Page {
            data: all,
            next_after: after,
        });
    } else if all.is_empty() {
        println!("no jobs");
    } else {
        print!("{}", output::job_table(&all));
        if let Some(cursor) = after {
            eprintln!("more: gatehouse jobs list --all (next page after {cursor})");
        }
    }
    Ok(())
}
