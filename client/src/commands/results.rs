//! Reading a job's results (`GET /v1/jobs/{id}/results`): all lines into memory for the small
//! sync fallbacks, or streamed to a file or stdout for `gatehouse jobs results`. A download
//! writes whole lines only and, when the connection breaks, asks again from the last index it
//! wrote (`?after=`), so a long download survives a dropped connection without duplicates.

use std::path::{Path, PathBuf};

use futures_util::StreamExt;
use gatehouse_common::job::{result::ResultLine, view::Job};
use reqwest::{Method, header};
use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::{
    api::{Api, retrying},
    cli::ResultStatus,
    error::{CliError, Result},
    progress,
};

/// Reconnections a download may make after its connection broke.
const RESUMES: u32 = 3;

/// Every results line of a (small) job, parsed.
pub async fn lines(api: &Api, job: &Job) -> Result<Vec<ResultLine>> {
    let path = format!("/v1/jobs/{}/results", job.id);
    let response = retrying(|| api.send(api.request(Method::GET, &path))).await?;
    let url = response.url().to_string();
    let body = response.bytes().await.map_err(|source| CliError::Network {
        url: url.clone(),
        source,
    })?;
    body.split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| {
            serde_json::from_slice(l).map_err(|e| CliError::Protocol {
                url: url.clone(),
                detail: format!("a results line: {e}"),
            })
        })
        .collect()
}

pub struct Download<'a> {
    pub id: &'a str,
    pub output: Option<&'a Path>,
    pub status: Option<ResultStatus>,
    pub csv: bool,
    /// Lines expected (for the bar), when known.
    pub total: Option<u64>,
    pub show: bool,
}

#[derive(Debug, serde::Serialize)]
pub struct Downloaded {
    pub job_id: String,
    /// Results lines written (CSV: rows, without the header).
    pub lines: u64,
    pub output: Option<PathBuf>,
    /// The job's status when the download began (`X-Gatehouse-Job-Status`): a running job's
    /// results are the items finished so far.
    pub job_status: Option<String>,
}

fn write_error(target: &str, e: std::io::Error) -> CliError {
    CliError::io(format!("writing {target}"), e)
}

/// Streams the results to `output` (through `<output>.part`, renamed when complete) or stdout.
pub async fn download(api: &Api, d: Download<'_>) -> Result<Downloaded> {
    let partial = d.output.map(|p| {
        let mut name = p.as_os_str().to_owned();
        name.push(".part");
        PathBuf::from(name)
    });
    let target = d
        .output
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "standard output".to_string());
    let mut sink: Box<dyn AsyncWrite + Unpin> = match &partial {
        Some(path) => Box::new(tokio::io::BufWriter::new(
            tokio::fs::File::create(path)
                .await
                .map_err(|e| CliError::io(format!("creating {}", path.display()), e))?,
        )),
        None => Box::new(tokio::io::stdout()),
    };
    let bar = progress::download(d.total, d.show);
    let path = format!("/v1/jobs/{}/results", d.id);
    let mut after: Option<i32> = None;
    let mut resumes = 0;
    let mut written: u64 = 0;
    let mut job_status = None;
    loop {
        let mut query: Vec<(&str, String)> = Vec::new();
        if let Some(status) = d.status {
            query.push((
                "status",
                match status {
                    ResultStatus::Succeeded => "succeeded",
                    ResultStatus::Failed => "failed",
                }
                .to_string(),
            ));
        }
        if let Some(after) = after {
            query.push(("after", after.to_string()));
        }
        let request = || {
            let builder = api.request(Method::GET, &path).query(&query);
            if d.csv {
                builder.header(header::ACCEPT, "text/csv")
            } else {
                builder.header(header::ACCEPT, "application/x-ndjson")
            }
        };
        let response = retrying(|| api.send(request())).await?;
        if job_status.is_none() {
            job_status = response
                .headers()
                .get("x-gatehouse-job-status")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
        }
        let mut stream = response.bytes_stream();
        let mut pending: Vec<u8> = Vec::new();
        let mut broken = None;
        while let Some(chunk) = stream.next().await {
            let chunk = match chunk {
                Ok(chunk) => chunk,
                Err(e) => {
                    broken = Some(e);
                    break;
                }
            };
            pending.extend_from_slice(&chunk);
            let Some(end) = pending.iter().rposition(|b| *b == b'\n') else {
                continue;
            };
            let complete: Vec<u8> = pending.drain(..=end).collect();
            let count = complete.iter().filter(|b| **b == b'\n').count() as u64;
            if !d.csv {
                let body = &complete[..complete.len() - 1];
                let last = body.rsplit(|b| *b == b'\n').next().unwrap_or(body);
                let line: ResultLine =
                    serde_json::from_slice(last).map_err(|e| CliError::Protocol {
                        url: api.url(&path),
                        detail: format!("a results line: {e}"),
                    })?;
                after = Some(line.index);
            }
            sink.write_all(&complete)
                .await
                .map_err(|e| write_error(&target, e))?;
            written += count;
            bar.inc(count);
        }
        match broken {
            None => {
                if !pending.is_empty() {
                    sink.write_all(&pending)
                        .await
                        .map_err(|e| write_error(&target, e))?;
                    written += 1;
                    bar.inc(1);
                }
                break;
            }
            Some(source) if d.csv || resumes >= RESUMES => {
                return Err(CliError::Network {
                    url: api.url(&path),
                    source,
                });
            }
            Some(_) => resumes += 1,
        }
    }
    sink.flush().await.map_err(|e| write_error(&target, e))?;
    drop(sink);
    bar.finish_and_clear();
    if let (Some(partial), Some(output)) = (&partial, d.output) {
        tokio::fs::rename(partial, output)
            .await
            .map_err(|e| write_error(&target, e))?;
    }
    Ok(Downloaded {
        job_id: d.id.to_string(),
        lines: if d.csv {
            written.saturating_sub(1)
        } else {
            written
        },
        output: d.output.map(Path::to_path_buf),
        job_status,
    })
}
