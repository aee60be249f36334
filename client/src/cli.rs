//! The command line. `GATEHOUSE_URL` and `GATEHOUSE_API_KEY` are read here, as the env
//! fallbacks of `--url` and `--api-key`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  usage: bad arguments, unreadable input, not logged in, bad config file
  2  the API refused the request (4xx: validation, auth, quota, rate limit, not found)
  3  the server failed (5xx) or could not be reached
  4  the job ended failed or cancelled, or some of its items failed
  5  moderate --exit-code: at least one text was flagged

Credentials: --api-key / GATEHOUSE_API_KEY, else the config file written by `gatehouse login`
($XDG_CONFIG_HOME/gatehouse/config.toml, mode 0600). URL: --url / GATEHOUSE_URL, else the
config file, else http://127.0.0.1:8080.";

/// The Gatehouse client: moderation, translation and bulk jobs from the command line.
#[derive(Debug, Parser)]
#[command(name = "gatehouse", version, after_long_help = EXIT_CODES, after_help = EXIT_CODES)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct Global {
    /// The API's base URL.
    #[arg(long, global = true, env = "GATEHOUSE_URL")]
    pub url: Option<String>,
    /// An API key (`ghk_…`) or token to send as the bearer, instead of the saved login.
    #[arg(long, global = true, env = "GATEHOUSE_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// The config file (default: $XDG_CONFIG_HOME/gatehouse/config.toml).
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Machine-readable output: one JSON document on stdout (errors: the problem object).
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Log in and save the credentials to the config file.
    Login(Login),
    /// Forget the saved credentials.
    Logout,
    /// Who the API thinks you are (`GET /v1/me`).
    Whoami,
    /// Moderate texts (`POST /v1/moderations`) and print each verdict.
    Moderate(Moderate),
    /// Translate texts (`POST /v1/translations`).
    Translate(Translate),
    /// Bulk jobs: submit a JSONL file, follow it, download its results.
    #[command(subcommand)]
    Jobs(Jobs),
}

#[derive(Debug, Args)]
pub struct Login {
    /// The tenant's slug (omit for a platform operator).
    #[arg(long)]
    pub tenant: Option<String>,
    /// The user to log in as (the password is read from standard input or prompted).
    #[arg(long, required_unless_present = "with_api_key")]
    pub username: Option<String>,
    /// Read the password from standard input even when it is a terminal.
    #[arg(long)]
    pub password_stdin: bool,
    /// Save an API key instead (from --api-key / GATEHOUSE_API_KEY, else standard input).
    #[arg(long, conflicts_with_all = ["username", "tenant", "password_stdin"])]
    pub with_api_key: bool,
}

#[derive(Debug, Args)]
pub struct Moderate {
    /// Texts to moderate, one verdict each.
    pub texts: Vec<String>,
    /// Moderate a file's whole content as one text (`-` for standard input); repeatable.
    #[arg(short, long = "file", value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Exit with 5 when any text is flagged.
    #[arg(long)]
    pub exit_code: bool,
}

#[derive(Debug, Args)]
pub struct Translate {
    /// Texts to translate.
    pub texts: Vec<String>,
    /// Translate a file's whole content as one text (`-` for standard input); repeatable.
    #[arg(short, long = "file", value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Source language: zh, en or auto (the API's `source_lang`).
    #[arg(long = "from", visible_alias = "source-lang", default_value = "auto")]
    pub from: String,
    /// Target language: en or zh (the API's `target_lang`).
    #[arg(long = "to", visible_alias = "target-lang", default_value = "en")]
    pub to: String,
}

#[derive(Debug, Subcommand)]
pub enum Jobs {
    /// Upload a JSONL file (`POST /v1/files`) and run a job on it (`POST /v1/jobs`).
    Submit(Submit),
    /// Follow a job until it ends, with a progress bar.
    Wait(Wait),
    /// Show one job.
    Show { id: String },
    /// Cancel a job: what no worker took is skipped, finished results are kept.
    Cancel { id: String },
    /// List your jobs, newest first.
    List(List),
    /// Download a job's results (NDJSON, or CSV with --csv).
    Results(Results),
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Kind {
    Moderate,
    Translate,
    ModerateTranslate,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Moderate => "moderate",
            Kind::Translate => "translate",
            Kind::ModerateTranslate => "moderate_translate",
        }
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum OnInvalid {
    Reject,
    Skip,
}

#[derive(Debug, Args)]
pub struct Submit {
    /// The input: one `{"custom_id"?, "text"}` (or OpenAI batch request) per line.
    pub file: PathBuf,
    #[arg(long, value_enum, default_value = "moderate")]
    pub kind: Kind,
    /// Source language of translate jobs (zh, en, auto).
    #[arg(long = "from", visible_alias = "source-lang")]
    pub from: Option<String>,
    /// Target language of translate jobs (en, zh).
    #[arg(long = "to", visible_alias = "target-lang")]
    pub to: Option<String>,
    /// moderate_translate: the worst level still translated (safe, controversial, unsafe).
    #[arg(long)]
    pub max_level: Option<String>,
    /// What a bad line does: reject the whole file (default) or skip the line.
    #[arg(long, value_enum, default_value = "reject")]
    pub on_invalid: OnInvalid,
    /// Wait for the job to end, with a progress bar.
    #[arg(long)]
    pub wait: bool,
    /// With --wait: also download the results to this file.
    #[arg(short, long, requires = "wait", value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// The submission's Idempotency-Key (default: a new one, so retries never submit twice).
    #[arg(long)]
    pub idempotency_key: Option<String>,
}

#[derive(Debug, Args)]
pub struct Wait {
    pub id: String,
    /// Also download the results to this file once the job ended.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct List {
    /// Jobs per page (1 to 200).
    #[arg(long, default_value_t = 20)]
    pub limit: u32,
    /// Follow the pages to the end.
    #[arg(long)]
    pub all: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ResultStatus {
    Succeeded,
    Failed,
}

#[derive(Debug, Args)]
pub struct Results {
    pub id: String,
    /// Write to this file instead of standard output.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Only the items that succeeded or failed.
    #[arg(long, value_enum)]
    pub status: Option<ResultStatus>,
    /// CSV instead of NDJSON.
    #[arg(long)]
    pub csv: bool,
}
