//! What the commands print: human text by default, one JSON document with `--json`. Data goes
//! to stdout; progress, notes and errors to stderr.

use gatehouse_common::job::{
    ItemStatus,
    result::{ItemResult, ModerationResult, ResultLine},
    view::Job,
};
use serde::Serialize;

use crate::error::CliError;

/// Prints `value` as one JSON document on stdout.
pub fn json<T: Serialize>(value: &T) {
    match serde_json::to_string_pretty(value) {
        Ok(text) => println!("{text}"),
        Err(e) => eprintln!("error: cannot encode the output: {e}"),
    }
}

/// Prints a failed command's error: readable on stderr, and with `--json` the problem object
/// (or `{"error"}`) on stdout. A failed job or a flagged text was already printed.
pub fn report(error: &CliError, as_json: bool) {
    match error {
        CliError::Flagged => {}
        CliError::JobFailed(job) => eprintln!(
            "error: job {} ended {} ({} of {} items failed, {} cancelled)",
            job.id,
            job.status.as_str(),
            job.counts.failed,
            job.counts.total,
            job.counts.cancelled
        ),
        CliError::Api { problem, .. } => {
            eprintln!("{}", error.human());
            if as_json {
                json(problem);
            }
        }
        other => {
            eprintln!("{}", other.human());
            if as_json {
                json(
                    &serde_json::json!({ "error": other.to_string(), "exit_code": other.exit_code() }),
                );
            }
        }
    }
}

/// One line of a text for a table cell: newlines folded, cut at `max` characters.
pub fn preview(text: &str, max: usize) -> String {
    let flat: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let flat = flat.trim();
    if flat.chars().count() > max {
        let cut: String = flat.chars().take(max.saturating_sub(1)).collect();
        format!("{cut}…")
    } else {
        flat.to_string()
    }
}

fn verdict(m: &ModerationResult) -> String {
    let categories = if m.categories.is_empty() {
        "-".to_string()
    } else {
        m.categories
            .iter()
            .map(|c| c.as_str())
            .collect::<Vec<_>>()
            .join(",")
    };
    format!(
        "{:<8} {:<13} {categories:<24}",
        if m.flagged { "FLAGGED" } else { "ok" },
        m.level.as_str()
    )
}

/// A results line as a person reads it: the verdict, the translation, or the error.
pub fn line(line: &ResultLine) -> String {
    if line.status == ItemStatus::Failed || line.result.is_none() {
        return match &line.error {
            Some(e) => format!("failed   {}: {}", e.code, e.message),
            None => line.status.as_str().to_string(),
        };
    }
    match &line.result {
        Some(ItemResult::Moderation(m)) => verdict(m),
        Some(ItemResult::Translation(t)) => t.text.clone(),
        Some(ItemResult::Chained(c)) => match &c.translation {
            Some(t) => format!("{}  → {}", verdict(&c.moderation), t.text),
            None => format!(
                "{}  (not translated: {})",
                verdict(&c.moderation),
                c.not_translated_reason.as_deref().unwrap_or("-")
            ),
        },
        Some(ItemResult::Legacy(v)) => v.to_string(),
        None => String::new(),
    }
}

/// A job in one paragraph.
pub fn job(job: &Job) -> String {
    let c = &job.counts;
    let mut out = format!(
        "{}  {}  {}\n  items: {} total, {} succeeded, {} failed, {} cancelled ({:.1} %)",
        job.id,
        job.kind.as_str(),
        job.status.as_str(),
        c.total,
        c.succeeded,
        c.failed,
        c.cancelled,
        job.progress * 100.0
    );
    if let Some(ahead) = job.queue_position.filter(|n| *n > 0) {
        out.push_str(&format!(
            "\n  queue: {ahead} items of your earlier jobs ahead"
        ));
    }
    if let Some(eta) = job.eta_seconds {
        out.push_str(&format!("\n  eta: {eta} s"));
    }
    if job.invalid_lines > 0 {
        out.push_str(&format!(
            "\n  invalid lines skipped: {} (GET /v1/jobs/{}/errors)",
            job.invalid_lines, job.id
        ));
    }
    let time = |at: &chrono::DateTime<chrono::Utc>| at.format("%Y-%m-%d %H:%M:%S UTC").to_string();
    out.push_str(&format!("\n  created: {}", time(&job.created_at)));
    if let Some(at) = job.completed_at {
        out.push_str(&format!("\n  completed: {}", time(&at)));
    }
    out.push_str(&format!("\n  expires: {}", time(&job.expires_at)));
    if job.expired {
        out.push_str(" (results deleted by retention)");
    }
    out
}

/// The header and rows of `gatehouse jobs list`.
pub fn job_table(jobs: &[Job]) -> String {
    let mut out = format!(
        "{:<40} {:<18} {:<10} {:>7} {:>21}  CREATED\n",
        "ID", "KIND", "STATUS", "DONE", "OK/FAILED/TOTAL"
    );
    for j in jobs {
        out.push_str(&format!(
            "{:<40} {:<18} {:<10} {:>6.1}% {:>21}  {}\n",
            j.id.to_string(),
            j.kind.as_str(),
            j.status.as_str(),
            j.progress * 100.0,
            format!(
                "{}/{}/{}",
                j.counts.succeeded, j.counts.failed, j.counts.total
            ),
            j.created_at.format("%Y-%m-%d %H:%M:%S")
        ));
    }
    out
}
