//! The real `gatehouse` binary against a real stack: the api served on 127.0.0.1:0 with its
//! outbox relay and dispatcher, a real worker with the ONNX models, real Postgres and RabbitMQ,
//! each test in its own database and queue prefix (`TestEnv`) and its own config directory.

use std::{
    io::Write,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::Duration,
};

use gatehouse_api::{AppState, store};
use gatehouse_common::{
    job::result::ResultLine,
    telemetry,
    testkit::TestEnv,
    types::{Role, TenantId},
};
use gatehouse_worker::WorkerHandle;
use serde_json::Value;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const PASSWORD: &str = "correct horse battery staple";
const REFERENCE: &str = "You are so dumb and stupid!";
const BENIGN: &str = "Have a nice day :)";

struct Stack {
    env: TestEnv,
    state: AppState,
    url: String,
    tenant: TenantId,
    key: String,
    home: PathBuf,
    stop: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
    worker: Option<WorkerHandle>,
}

impl Stack {
    /// The api on a TCP port with its background tasks, a tenant `acme` (scopes moderate and
    /// translate) with a key, and a worker when `worker`.
    async fn new(worker: bool) -> Self {
        let env = TestEnv::new(&[
            ("GATEHOUSE_ORT_INTRA_THREADS", "1"),
            ("GATEHOUSE_MODERATION_MODELS", "toxic-bilstm"),
        ])
        .await;
        let state = AppState::new(
            env.app_pool.clone(),
            env.config.clone(),
            telemetry::metrics_handle(),
        )
        .await
        .expect("app state");
        let scopes = ["moderate".to_string(), "translate".to_string()];
        let tenant = store::tenants::create(
            &state.pool,
            store::tenants::NewTenant {
                name: "acme",
                slug: "acme",
                scopes: Some(&scopes),
                ip_allowlist: &[],
            },
            "test",
            None,
        )
        .await
        .expect("tenant")
        .tenant_id;
        let key = store::keys::create(
            &state.pool,
            store::keys::NewKey {
                tenant,
                name: "cli",
                scopes: &scopes,
                expires_at: None,
                actor: "test",
                client_ip: None,
            },
        )
        .await
        .expect("key")
        .1;
        let stop = CancellationToken::new();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let server = tokio::spawn({
            let app = gatehouse_api::app(state.clone());
            let limits = state.config.server;
            let stop = stop.clone();
            async move {
                let _ = gatehouse_api::server::serve(listener, app, limits, stop).await;
            }
        });
        let background = gatehouse_api::background::spawn(&state, stop.clone());
        let worker = worker.then(|| {
            let models = gatehouse_worker::load_models(&env.config)
                .expect("models and ONNX Runtime (run `make models`)");
            gatehouse_worker::start(
                env.config.clone(),
                env.app_pool.clone(),
                models,
                CancellationToken::new(),
            )
        });
        let home = std::env::temp_dir().join(format!("gatehouse-cli-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&home).expect("config home");
        Self {
            env,
            state,
            url,
            tenant,
            key,
            home,
            stop,
            tasks: vec![server, background],
            worker,
        }
    }

    fn config_file(&self) -> PathBuf {
        self.home.join("gatehouse/config.toml")
    }

    /// `program args…` pointed at this stack and this test's config directory, with no
    /// credentials from the environment.
    fn command_for(&self, program: &str, args: &[&str]) -> Command {
        let mut command = Command::new(program);
        command
            .args(args)
            .env("GATEHOUSE_URL", &self.url)
            .env("XDG_CONFIG_HOME", &self.home)
            .env_remove("GATEHOUSE_API_KEY")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        command
    }

    fn command(&self, args: &[&str]) -> Command {
        self.command_for(env!("CARGO_BIN_EXE_gatehouse"), args)
    }

    /// Runs `gatehouse args…` (off the async threads: the api runs on them) with `stdin`.
    async fn run(&self, args: &[&str], stdin: &str, key: Option<&str>) -> Output {
        let mut command = self.command(args);
        if let Some(key) = key {
            command.env("GATEHOUSE_API_KEY", key);
        }
        let stdin = stdin.to_string();
        tokio::task::spawn_blocking(move || {
            let mut child = command.spawn().expect("spawn gatehouse");
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(stdin.as_bytes())
                .expect("write stdin");
            child.wait_with_output().expect("wait")
        })
        .await
        .expect("join")
    }

    /// `gatehouse args…` with the tenant's key in `GATEHOUSE_API_KEY`.
    async fn keyed(&self, args: &[&str]) -> Output {
        self.run(args, "", Some(&self.key)).await
    }

    async fn teardown(mut self) {
        if let Some(worker) = self.worker.take() {
            worker.stop().await;
        }
        self.stop.cancel();
        for task in self.tasks.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
        }
        self.state.broker.close().await;
        let _ = std::fs::remove_dir_all(&self.home);
        self.env.teardown().await;
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The exit code, and stdout parsed as JSON, of a `--json` run.
fn json(output: &Output) -> (i32, Value) {
    let stdout = text(&output.stdout);
    let value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {stdout}\nstderr: {}",
            text(&output.stderr)
        )
    });
    (output.status.code().unwrap_or(-1), value)
}

fn assert_exit(output: &Output, code: i32) {
    assert_eq!(
        output.status.code(),
        Some(code),
        "stdout: {}\nstderr: {}",
        text(&output.stdout),
        text(&output.stderr)
    );
}

fn write_jsonl(dir: &Path, name: &str, lines: &[String]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, lines.join("\n") + "\n").expect("write input");
    path
}

/// A TCP proxy to `upstream` that cuts each of the first `cuts` connections once it has
/// passed `budget` bytes of response: a connection dropped in the middle of a download.
/// Returns its URL and the number of connections it cut so far.
async fn cutting_proxy(
    upstream: &str,
    budget: usize,
    cuts: usize,
) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::{Arc, atomic::Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    let upstream = upstream.trim_start_matches("http://").to_string();
    let cut = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = cut.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let upstream = upstream.clone();
            let counter = counter.clone();
            tokio::spawn(async move {
                let Ok(server) = tokio::net::TcpStream::connect(&upstream).await else {
                    return;
                };
                let (mut client_read, mut client_write) = client.into_split();
                let (mut server_read, mut server_write) = server.into_split();
                let requests = tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
                });
                let mut sent = 0;
                let mut buf = vec![0u8; 16 * 1024];
                loop {
                    let n = match server_read.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    if sent + n > budget && counter.load(Ordering::SeqCst) < cuts {
                        counter.fetch_add(1, Ordering::SeqCst);
                        let _ = client_write
                            .write_all(&buf[..budget.saturating_sub(sent)])
                            .await;
                        break; // both halves dropped: the client sees the connection reset
                    }
                    if client_write.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                    sent += n;
                }
                requests.abort();
            });
        }
    });
    (url, cut)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_saves_a_private_token_and_the_sync_commands_print_verdicts_and_translations() {
    let stack = Stack::new(true).await;
    let hash = gatehouse_api::identity::password::hash(PASSWORD.to_string())
        .await
        .expect("hash");
    store::users::create(
        &stack.state.pool,
        Some(stack.tenant),
        "alice",
        &hash,
        Role::Admin,
        store::users::Actor {
            name: "test",
            client_ip: None,
        },
    )
    .await
    .expect("user");

    // Not logged in yet: a usage error (1) that says what to do.
    let out = stack.run(&["whoami"], "", None).await;
    assert_exit(&out, 1);
    assert!(text(&out.stderr).contains("gatehouse login"));

    // A wrong password is the API's 401, readable, exit 2.
    let out = stack
        .run(
            &["login", "--tenant", "acme", "--username", "alice"],
            "not the password\n",
            None,
        )
        .await;
    assert_exit(&out, 2);
    let stderr = text(&out.stderr);
    assert!(stderr.contains("401"), "{stderr}");
    assert!(
        stderr.contains("invalid tenant, username or password"),
        "{stderr}"
    );

    // The password from standard input; the token lands in a 0600 file, the password nowhere.
    let out = stack
        .run(
            &["login", "--tenant", "acme", "--username", "alice"],
            &format!("{PASSWORD}\n"),
            None,
        )
        .await;
    assert_exit(&out, 0);
    assert!(
        text(&out.stdout).contains("Logged in"),
        "{}",
        text(&out.stdout)
    );
    let file = stack.config_file();
    let saved = std::fs::read_to_string(&file).expect("config written");
    assert!(saved.contains("token = \"ey"), "{saved}");
    assert!(!saved.contains(PASSWORD));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let (code, me) = json(&stack.run(&["whoami", "--json"], "", None).await);
    assert_eq!(code, 0);
    assert_eq!(me["role"], "admin");
    assert_eq!(me["tenant"]["slug"], "acme");

    // Moderation with the saved token: one verdict per text, in order.
    let (code, answer) = json(
        &stack
            .run(&["moderate", "--json", REFERENCE, BENIGN], "", None)
            .await,
    );
    assert_eq!(code, 0, "{answer}");
    assert!(
        answer["job_id"]
            .as_str()
            .expect("job id")
            .starts_with("job_")
    );
    let results: Vec<ResultLine> =
        serde_json::from_value(answer["results"].clone()).expect("results lines");
    let flagged: Vec<bool> = results
        .iter()
        .map(|l| {
            l.result
                .as_ref()
                .and_then(|r| r.as_moderation())
                .expect("a verdict")
                .flagged
        })
        .collect();
    assert_eq!(flagged, [true, false]);

    // Human output, and --exit-code: 5 when something is flagged, 0 when not.
    let out = stack
        .run(&["moderate", "--exit-code", REFERENCE], "", None)
        .await;
    assert_exit(&out, 5);
    assert!(
        text(&out.stdout).contains("FLAGGED"),
        "{}",
        text(&out.stdout)
    );
    let note = stack.home.join("note.txt");
    std::fs::write(&note, BENIGN).expect("write");
    let out = stack
        .run(
            &[
                "moderate",
                "--exit-code",
                "-f",
                note.to_str().expect("utf-8"),
            ],
            "",
            None,
        )
        .await;
    assert_exit(&out, 0);
    assert!(text(&out.stdout).contains("ok"), "{}", text(&out.stdout));

    // Translation (the bundled zh→en model), with the API's option names as aliases.
    let out = stack
        .run(
            &["translate", "--from", "zh", "--to", "en", "我不知道。"],
            "",
            None,
        )
        .await;
    assert_exit(&out, 0);
    assert_eq!(text(&out.stdout).trim(), "I don't know.");
    let (code, answer) = json(
        &stack
            .run(
                &[
                    "translate",
                    "--json",
                    "--source-lang",
                    "zh",
                    "--target-lang",
                    "en",
                    "我不知道。",
                    "今天很冷。",
                ],
                "",
                None,
            )
            .await,
    );
    assert_eq!(code, 0, "{answer}");
    assert_eq!(answer["results"][0]["result"]["text"], "I don't know.");
    assert_eq!(answer["results"][1]["result"]["text"], "It is very cold.");

    // A problem+json refusal, readable: an unsupported pair is a 422 with its code (exit 2),
    // and with --json the problem object itself is on stdout.
    let out = stack
        .run(
            &["translate", "--from", "en", "--to", "zh", "hello"],
            "",
            None,
        )
        .await;
    assert_exit(&out, 2);
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("422") && stderr.contains("[unsupported_language_pair]"),
        "{stderr}"
    );
    let (code, problem) = json(
        &stack
            .run(
                &["translate", "--json", "--from", "en", "--to", "zh", "hello"],
                "",
                None,
            )
            .await,
    );
    assert_eq!(code, 2);
    assert_eq!(problem["code"], "unsupported_language_pair");
    assert_eq!(problem["status"], 422);

    // An expired saved token is refused locally with the way out; logout forgets it.
    let expired = saved.replace(
        &saved
            .lines()
            .find(|l| l.starts_with("token_expires_at"))
            .expect("expiry")
            .to_string(),
        "token_expires_at = \"2020-01-01T00:00:00Z\"",
    );
    std::fs::write(&file, expired).expect("write");
    let out = stack.run(&["whoami"], "", None).await;
    assert_exit(&out, 1);
    assert!(
        text(&out.stderr).contains("expired"),
        "{}",
        text(&out.stderr)
    );
    assert_exit(&stack.run(&["logout"], "", None).await, 0);
    let out = stack.run(&["whoami"], "", None).await;
    assert_exit(&out, 1);
    assert!(text(&out.stderr).contains("not logged in"));

    // An API key can be saved instead (read from standard input), and works.
    let out = stack
        .run(
            &["login", "--with-api-key"],
            &format!("{}\n", stack.key),
            None,
        )
        .await;
    assert_exit(&out, 0);
    let (code, me) = json(&stack.run(&["whoami", "--json"], "", None).await);
    assert_eq!(code, 0);
    assert_eq!(me["kind"], "api_key");

    stack.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_submit_waits_with_progress_and_results_download_whole() {
    let stack = Stack::new(true).await;
    let n = 400;
    let lines: Vec<String> = (0..n)
        .map(|i| {
            let text = if i % 4 == 0 { REFERENCE } else { BENIGN };
            serde_json::json!({"custom_id": format!("c{i}"), "text": format!("{text} #{i}")})
                .to_string()
        })
        .collect();
    let input = write_jsonl(&stack.home, "comments.jsonl", &lines);
    let input = input.to_str().expect("utf-8");
    let out_file = stack.home.join("out.jsonl");
    let out_path = out_file.to_str().expect("utf-8");

    // Under a terminal (script(1) gives it a pty), as a person runs it: the upload, the job's
    // items done out of the total with rate and ETA, then the download.
    let shell_line = format!(
        "{} jobs submit {input} --kind moderate --wait -o {out_path}",
        env!("CARGO_BIN_EXE_gatehouse")
    );
    let mut script = stack.command_for("script", &["-qec", &shell_line, "/dev/null"]);
    script
        .env("GATEHOUSE_API_KEY", &stack.key)
        .env("TERM", "xterm-256color")
        .env("COLUMNS", "160")
        .stdin(Stdio::null());
    let out = tokio::task::spawn_blocking(move || script.output().expect("run script"))
        .await
        .expect("join");
    let screen = text(&out.stdout);
    assert_exit(&out, 0);
    assert!(screen.contains(&format!("{n}/{n} items")), "{screen}");
    assert!(screen.contains("ETA"), "{screen}");
    assert!(screen.contains("/s"), "{screen}");
    assert!(screen.contains("completed"), "{screen}");
    assert!(
        screen.contains(&format!("wrote {n} results lines")),
        "{screen}"
    );

    // The downloaded file: every line, in submission order, with its verdict.
    let written = std::fs::read_to_string(&out_file).expect("results written");
    let results: Vec<ResultLine> = written
        .lines()
        .map(|l| serde_json::from_str(l).expect("a results line"))
        .collect();
    assert_eq!(results.len(), n);
    for (i, line) in results.iter().enumerate() {
        assert_eq!(line.index, i as i32);
        assert_eq!(line.custom_id.as_deref(), Some(format!("c{i}").as_str()));
        let verdict = line
            .result
            .as_ref()
            .and_then(|r| r.as_moderation())
            .expect("verdict");
        assert_eq!(verdict.flagged, i % 4 == 0, "item {i}");
    }
    assert!(!stack.home.join("out.jsonl.part").exists());

    // A connection that breaks in the middle of the download (twice): the client asks again
    // from the last whole line it wrote, and the file is the same, without a duplicate.
    let (proxy, cut) = cutting_proxy(&stack.url, 64 * 1024, 2).await;
    let resumed = stack.home.join("resumed.jsonl");
    let id_of_first = results_job_id(&stack).await;
    let mut command = stack.command(&[
        "jobs",
        "results",
        &id_of_first,
        "-o",
        resumed.to_str().expect("utf-8"),
    ]);
    command
        .env("GATEHOUSE_URL", &proxy)
        .env("GATEHOUSE_API_KEY", &stack.key);
    let out = tokio::task::spawn_blocking(move || command.output().expect("run"))
        .await
        .expect("join");
    assert_exit(&out, 0);
    assert_eq!(
        cut.load(std::sync::atomic::Ordering::SeqCst),
        2,
        "the proxy cut twice"
    );
    assert_eq!(std::fs::read_to_string(&resumed).expect("resumed"), written);

    // The same job through the scripting interface.
    let (code, page) = json(&stack.keyed(&["jobs", "list", "--json"]).await);
    assert_eq!(code, 0);
    let job = &page["data"][0];
    let id = job["id"].as_str().expect("id").to_string();
    assert_eq!(job["status"], "completed");
    assert_eq!(job["counts"]["succeeded"], n);
    let out = stack.keyed(&["jobs", "list"]).await;
    assert_exit(&out, 0);
    assert!(text(&out.stdout).contains(&id));
    let (code, shown) = json(&stack.keyed(&["jobs", "show", &id, "--json"]).await);
    assert_eq!(code, 0);
    assert_eq!(shown["id"], id.as_str());

    // Results to stdout are the API's stream as is; filters and CSV are passed through.
    let out = stack.keyed(&["jobs", "results", &id]).await;
    assert_exit(&out, 0);
    assert_eq!(text(&out.stdout), written);
    let out = stack
        .keyed(&["jobs", "results", &id, "--status", "failed"])
        .await;
    assert_exit(&out, 0);
    assert!(out.stdout.is_empty());
    let csv = stack.home.join("out.csv");
    let (code, summary) = json(
        &stack
            .keyed(&[
                "jobs",
                "results",
                &id,
                "--csv",
                "-o",
                csv.to_str().expect("utf-8"),
                "--json",
            ])
            .await,
    );
    assert_eq!(code, 0);
    assert_eq!(summary["lines"], n);
    assert_eq!(summary["job_status"], "completed");
    let rows = std::fs::read_to_string(&csv).expect("csv");
    assert!(rows.starts_with("index,custom_id,status,flagged"));
    assert_eq!(rows.lines().count(), n + 1);

    // --json submit: the final job object; a bad line is refused as a readable problem.
    let small = write_jsonl(
        &stack.home,
        "small.jsonl",
        &[
            serde_json::json!({"text": BENIGN}).to_string(),
            serde_json::json!({"custom_id": "no text"}).to_string(),
        ],
    );
    let small = small.to_str().expect("utf-8");
    let out = stack.keyed(&["jobs", "submit", small, "--wait"]).await;
    assert_exit(&out, 2);
    let stderr = text(&out.stderr);
    assert!(stderr.contains("[invalid_lines]"), "{stderr}");
    assert!(stderr.contains("line: 2"), "{stderr}");
    let (code, done) = json(
        &stack
            .keyed(&[
                "jobs",
                "submit",
                small,
                "--on-invalid",
                "skip",
                "--wait",
                "--json",
            ])
            .await,
    );
    assert_eq!(code, 0, "{done}");
    assert_eq!(done["status"], "completed");
    assert_eq!(done["counts"]["total"], 1);
    assert_eq!(done["invalid_lines"], 1);

    // Someone else's or a made-up job: the API's 404, exit 2.
    let out = stack
        .keyed(&["jobs", "show", "job_0000000000000000000000000000"])
        .await;
    assert_exit(&out, 2);
    assert!(text(&out.stderr).contains("404"));

    stack.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_job_is_exit_4_and_an_unreachable_server_exit_3() {
    // No worker: the job stays queued until it is cancelled.
    let stack = Stack::new(false).await;
    let input = write_jsonl(
        &stack.home,
        "in.jsonl",
        &(0..50)
            .map(|i| serde_json::json!({"text": format!("{BENIGN} {i}")}).to_string())
            .collect::<Vec<_>>(),
    );
    let (code, job) = json(
        &stack
            .keyed(&["jobs", "submit", input.to_str().expect("utf-8"), "--json"])
            .await,
    );
    assert_eq!(code, 0, "{job}");
    let id = job["id"].as_str().expect("id").to_string();
    assert_eq!(job["counts"]["total"], 50);
    let (code, cancelled) = json(&stack.keyed(&["jobs", "cancel", &id, "--json"]).await);
    assert_eq!(code, 0, "{cancelled}");
    let out = stack.keyed(&["jobs", "wait", &id]).await;
    assert_exit(&out, 4);
    assert!(
        text(&out.stderr).contains("cancelled"),
        "{}",
        text(&out.stderr)
    );

    let mut command = stack.command(&["moderate", "hello"]);
    command.env("GATEHOUSE_URL", "http://127.0.0.1:9");
    command.env("GATEHOUSE_API_KEY", &stack.key);
    let out = tokio::task::spawn_blocking(move || command.output().expect("run"))
        .await
        .expect("join");
    assert_exit(&out, 3);
    assert!(text(&out.stderr).contains("cannot reach"));

    // Usage errors are 1, not clap's 2 (2 is "the API refused").
    let out = stack.keyed(&["jobs", "submit"]).await;
    assert_exit(&out, 1);
    stack.teardown().await;
}

/// The newest job of the stack's tenant, as `gatehouse jobs list --json` shows it.
async fn results_job_id(stack: &Stack) -> String {
    let (code, page) = json(
        &stack
            .keyed(&["jobs", "list", "--json", "--limit", "1"])
            .await,
    );
    assert_eq!(code, 0);
    page["data"][0]["id"].as_str().expect("id").to_string()
}
