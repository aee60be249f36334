//! Progress bars (indicatif, on stderr, only when it is a terminal and the output is not
//! `--json`): bytes while uploading, items while a job runs (done/total, rate, ETA), lines
//! while results download.

use std::{io::IsTerminal, time::Duration};

use gatehouse_common::{job::view::Job, types::JobStatus};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};

use crate::{api::Api, error::Result};

/// Whether bars are drawn at all.
pub fn enabled(json: bool) -> bool {
    !json && std::io::stderr().is_terminal()
}

fn bar(len: Option<u64>, template: &str, show: bool) -> ProgressBar {
    let bar = match len {
        Some(len) => ProgressBar::new(len),
        None => ProgressBar::new_spinner(),
    };
    bar.set_draw_target(if show {
        ProgressDrawTarget::stderr_with_hz(10)
    } else {
        ProgressDrawTarget::hidden()
    });
    if let Ok(style) = ProgressStyle::with_template(template) {
        // `{rate}`: items (or lines) per second without indicatif's four decimals.
        let style = style
            .with_key(
                "rate",
                |state: &ProgressState, w: &mut dyn std::fmt::Write| {
                    let _ = write!(w, "{:.0}/s", state.per_sec());
                },
            )
            .progress_chars("=> ");
        bar.set_style(style);
    }
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// Bytes sent, with throughput and ETA.
pub fn upload(len: u64, show: bool) -> ProgressBar {
    bar(
        Some(len),
        "upload  [{wide_bar}] {bytes}/{total_bytes} · {binary_bytes_per_sec} · ETA {eta}",
        show,
    )
}

/// Lines written (of `total` when known).
pub fn download(total: Option<u64>, show: bool) -> ProgressBar {
    match total {
        Some(_) => bar(
            total,
            "results [{wide_bar}] {pos}/{len} lines · {rate} · ETA {eta}",
            show,
        ),
        None => bar(None, "results {spinner} {pos} lines · {rate}", show),
    }
}

/// Polls `GET /v1/jobs/{id}` until the job ends, drawing items done out of total, the rate
/// and the ETA; returns the final job. Polls every 250 ms at first, backing off to 2 s.
pub async fn follow(api: &Api, mut job: Job, show: bool) -> Result<Job> {
    let total = u64::try_from(job.counts.total).unwrap_or(0);
    let bar = bar(
        Some(total),
        "{spinner} {msg:<11} [{elapsed_precise}] [{wide_bar}] {pos}/{len} items · {rate} · ETA {eta}",
        show,
    );
    let path = format!("/v1/jobs/{}", job.id);
    let mut interval = Duration::from_millis(250);
    loop {
        let c = job.counts;
        bar.set_length(u64::try_from(c.total).unwrap_or(0));
        bar.set_position(u64::try_from(c.succeeded + c.failed + c.cancelled).unwrap_or(0));
        let mut msg = job.status.as_str().to_string();
        if c.failed > 0 {
            msg.push_str(&format!(" ({} failed)", c.failed));
        }
        if job.status == JobStatus::Queued
            && let Some(ahead) = job.queue_position.filter(|n| *n > 0)
        {
            msg.push_str(&format!(" ({ahead} ahead)"));
        }
        bar.set_message(msg);
        if job.status.is_terminal() {
            bar.finish();
            return Ok(job);
        }
        tokio::time::sleep(interval).await;
        interval = (interval * 2).min(Duration::from_secs(2));
        job = api.get_json(&path).await?;
    }
}
