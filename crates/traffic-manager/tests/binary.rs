//! The binary as an operator runs it: subcommands, exit codes, signals, and durability
//! of acknowledged writes across `kill -9` (SQLite).

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const BIN: &str = env!("CARGO_BIN_EXE_traffic-manager");
const ADMIN_KEY: &str = "binary-test-admin-key-0123456789abcdef";

/// The binary with a clean environment, its data in `data_dir`.
fn command(data_dir: &Path) -> Command {
    tm_testing::binary_command(BIN, data_dir, ADMIN_KEY)
}

/// Starts `serve` and waits for its "listening" log line; returns the child and address.
async fn serve(data_dir: &Path) -> (Child, String) {
    serve_with(data_dir, &[]).await
}

/// [`serve`] with extra settings.
async fn serve_with(data_dir: &Path, settings: &[(&str, &str)]) -> (Child, String) {
    let mut cmd = command(data_dir);
    for (key, value) in settings {
        cmd.env(key, value);
    }
    let (child, addr, _) = start_serving(cmd).await;
    (child, addr)
}

/// Starts `serve` without a configured admin key; also returns what it printed before
/// it listened.
async fn serve_unconfigured(data_dir: &Path) -> (Child, String, Vec<String>) {
    let mut cmd = command(data_dir);
    cmd.env_remove("TM_BOOTSTRAP_ADMIN_KEY");
    start_serving(cmd).await
}

/// Runs `cmd serve` and waits for its "listening" log line: the child, its address and
/// every line printed until then.
async fn start_serving(cmd: Command) -> (Child, String, Vec<String>) {
    start_running(cmd, "serve").await
}

/// [`start_serving`] for any subcommand that listens (`serve`, `worker`).
async fn start_running(cmd: Command, subcommand: &str) -> (Child, String, Vec<String>) {
    tm_testing::start_listening(cmd, subcommand).await
}

#[tokio::test]
async fn the_first_start_prints_the_bootstrap_key_once_and_keeps_it_in_a_private_file() {
    use std::os::unix::fs::PermissionsExt;
    const PREFIX: &str = "bootstrap admin key: ";
    let dir = tempfile::tempdir().expect("tempdir");

    let (mut child, addr, printed) = serve_unconfigured(dir.path()).await;
    let shown: Vec<&str> = printed
        .iter()
        .filter_map(|line| line.strip_prefix(PREFIX))
        .collect();
    assert_eq!(shown.len(), 1, "printed once: {printed:?}");
    let key = shown[0].trim();
    let file = dir.path().join("bootstrap-admin.key");
    assert_eq!(
        std::fs::read_to_string(&file).expect("key file").trim(),
        key
    );
    let mode = std::fs::metadata(&file)
        .expect("metadata")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "mode {mode:o}");
    let listed = reqwest::Client::new()
        .get(format!("http://{addr}/api/v1/keys"))
        .bearer_auth(key)
        .send()
        .await
        .expect("list keys");
    assert_eq!(
        listed.status(),
        reqwest::StatusCode::OK,
        "the key is an admin key"
    );
    child.kill().await.expect("stopped");

    let (mut again, _, printed) = serve_unconfigured(dir.path()).await;
    assert!(
        !printed.iter().any(|line| line.contains(PREFIX.trim_end())),
        "a second start prints no key: {printed:?}"
    );
    again.kill().await.expect("stopped");
}

fn body(version: usize) -> Value {
    json!({"tenant": "acme", "service": "billing", "env": "prod", "version": format!("v{version}"), "url": "http://a"})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill_9() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut child, addr) = serve(dir.path()).await;
    let client = reqwest::Client::new();

    // Writers run until the process dies under them; every 201 is an acknowledgement.
    let (tx, mut acknowledged) = tokio::sync::mpsc::unbounded_channel::<String>();
    let mut writers = Vec::new();
    for w in 0..4 {
        let (client, addr, tx) = (client.clone(), addr.clone(), tx.clone());
        writers.push(tokio::spawn(async move {
            for i in 0.. {
                let sent = client
                    .post(format!("http://{addr}/api/v1/routes"))
                    .bearer_auth(ADMIN_KEY)
                    .json(&body(w * 1_000_000 + i))
                    .send()
                    .await;
                let Ok(reply) = sent else { return };
                if reply.status() != reqwest::StatusCode::CREATED {
                    return;
                }
                let Ok(route) = reply.json::<Value>().await else {
                    return;
                };
                let _ = tx.send(route["id"].as_str().expect("id").to_owned());
            }
        }));
    }
    drop(tx);
    let mut ids = Vec::new();
    while ids.len() < 200 {
        ids.push(acknowledged.recv().await.expect("writers are running"));
    }
    child.start_kill().expect("SIGKILL");
    child.wait().await.expect("reaped");
    for writer in writers {
        writer.await.expect("writer task");
    }
    while let Ok(id) = acknowledged.try_recv() {
        ids.push(id);
    }

    let (_child, addr) = serve(dir.path()).await;
    for id in &ids {
        let reply = client
            .get(format!("http://{addr}/api/v1/routes/{id}"))
            .bearer_auth(ADMIN_KEY)
            .send()
            .await
            .expect("get");
        assert_eq!(
            reply.status(),
            reqwest::StatusCode::OK,
            "acknowledged route {id} lost"
        );
    }
}

#[tokio::test]
async fn sigterm_drains_and_exits_zero() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut child, addr) = serve(dir.path()).await;
    let reply = reqwest::get(format!("http://{addr}/healthz"))
        .await
        .expect("healthz");
    assert_eq!(reply.status(), reqwest::StatusCode::OK);
    let pid = child.id().expect("running");
    assert_eq!(send_signal(pid, "TERM"), 0);
    let status = tokio::time::timeout(Duration::from_secs(15), child.wait())
        .await
        .expect("exits within 15 s")
        .expect("status");
    assert!(status.success(), "exit status {status}");
}

#[tokio::test]
async fn one_worker_thread_runs_everything_on_one_event_loop() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Frequent full reloads: their blocking work must not need a second worker.
    let (mut child, addr) = serve_with(
        dir.path(),
        &[
            ("TM_WORKER_THREADS", "1"),
            ("TM_SNAPSHOT_RELOAD_INTERVAL", "100ms"),
            ("TM_SNAPSHOT_CATCH_UP_INTERVAL", "50ms"),
        ],
    )
    .await;
    let client = reqwest::Client::new();
    let mut route = body(1);
    route["active"] = json!(true);
    let created = client
        .post(format!("http://{addr}/api/v1/routes"))
        .bearer_auth(ADMIN_KEY)
        .json(&route)
        .send()
        .await
        .expect("create");
    assert_eq!(created.status(), reqwest::StatusCode::CREATED);
    // Time is what is tested: a few reloads and catch-ups run on the one worker first.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for _ in 0..20 {
        let resolved = client
            .get(format!(
                "http://{addr}/api/v1/routes/resolve?tenant=acme&service=billing&env=prod"
            ))
            .bearer_auth(ADMIN_KEY)
            .send()
            .await
            .expect("resolve");
        assert_eq!(resolved.status(), reqwest::StatusCode::OK);
    }
    assert_eq!(send_signal(child.id().expect("running"), "TERM"), 0);
    let status = tokio::time::timeout(Duration::from_secs(15), child.wait())
        .await
        .expect("exits within 15 s")
        .expect("status");
    assert!(status.success(), "exit status {status}");
}

/// Sends `signal` to `pid` with the `kill` command, keeping the crate free of `unsafe`.
fn send_signal(pid: u32, signal: &str) -> i32 {
    let status = std::process::Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .expect("kill runs");
    status.code().unwrap_or(-1)
}

#[tokio::test]
async fn check_config_prints_redacted_settings() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = command(dir.path())
        .arg("check-config")
        .env(
            "TM_DATABASE_URL",
            "postgres://tm:hunter2@db.internal:5432/tm",
        )
        .output()
        .await
        .expect("runs");
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("postgres://tm:***@db.internal:5432/tm"),
        "{stdout}"
    );
    assert!(!stdout.contains("hunter2"));
}

#[tokio::test]
async fn a_bad_setting_stops_start_up_naming_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    for sub in ["check-config", "serve", "migrate"] {
        let out = command(dir.path())
            .arg(sub)
            .env("TM_LISTEN", "not-an-address")
            .env("TM_DB_POOL_MAX", "0")
            .output()
            .await
            .expect("runs");
        assert!(!out.status.success(), "{sub} must fail");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("TM_LISTEN") && stderr.contains("TM_DB_POOL_MAX"),
            "{sub}: {stderr}"
        );
    }
}

#[tokio::test]
async fn migrate_creates_the_sqlite_database_and_exits() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = command(dir.path())
        .arg("migrate")
        .output()
        .await
        .expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(dir.path().join("traffic-manager.db").exists());
    // Running it again is harmless.
    let again = command(dir.path())
        .arg("migrate")
        .output()
        .await
        .expect("runs");
    assert!(again.status.success());
}

#[tokio::test]
async fn help_is_useful_for_every_subcommand() {
    for args in [
        vec!["--help"],
        vec!["serve", "--help"],
        vec!["migrate", "--help"],
        vec!["check-config", "--help"],
    ] {
        let out = Command::new(BIN).args(&args).output().await.expect("runs");
        assert!(out.status.success(), "{args:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("Usage"), "{args:?}: {text}");
    }
}

/// Starts `serve` with `settings` and every stdout line collected, for tests that read
/// the logs.
async fn serve_collecting(
    data_dir: &Path,
    settings: &[(&str, &str)],
) -> (Child, String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    let mut cmd = command(data_dir);
    for (key, value) in settings {
        cmd.env(key, value);
    }
    let mut child = cmd
        .arg("serve")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("binary starts");
    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let (addr_tx, addr_rx) = tokio::sync::oneshot::channel();
    let mut reader = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let collected = lines.clone();
    tokio::spawn(async move {
        let mut addr_tx = Some(addr_tx);
        while let Ok(Some(line)) = reader.next_line().await {
            if let Some(addr) = serde_json::from_str::<Value>(&line)
                .ok()
                .and_then(|v| v["addr"].as_str().map(str::to_owned))
            {
                if let Some(tx) = addr_tx.take() {
                    let _ = tx.send(addr);
                }
            }
            collected.lock().expect("lock").push(line);
        }
    });
    let addr = tokio::time::timeout(Duration::from_secs(30), addr_rx)
        .await
        .expect("listening within 30 s")
        .expect("address");
    (child, addr, lines)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_request_logs_one_json_line_and_no_secret_ever_reaches_the_logs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut child, addr, lines) = serve_collecting(dir.path(), &[]).await;
    let client = reqwest::Client::new();
    let base = format!("http://{addr}");

    let created = client
        .post(format!("{base}/api/v1/keys"))
        .bearer_auth(ADMIN_KEY)
        .json(&json!({"name": "reader", "role": "reader", "tenant": "acme"}))
        .send()
        .await
        .expect("create key")
        .json::<Value>()
        .await
        .expect("json");
    let reader_key = created["key"].as_str().expect("key").to_owned();
    let reader_id = created["id"].as_str().expect("id").to_owned();
    let traced = client
        .get(format!(
            "{base}/api/v1/routes/resolve?tenant=acme&service=billing&env=prod"
        ))
        .bearer_auth(&reader_key)
        .header("x-request-id", "req-under-test")
        .header("x-correlation-id", "flow-under-test")
        .header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .send()
        .await
        .expect("resolve");
    assert_eq!(traced.status(), reqwest::StatusCode::NOT_FOUND);
    // Failed authentications must not log what was presented either.
    let wrong = format!("{reader_key}x");
    client
        .get(format!("{base}/api/v1/routes"))
        .bearer_auth(&wrong)
        .send()
        .await
        .expect("list");
    client
        .get(format!("{base}/api/v1/routes"))
        .header("authorization", format!("Basic {reader_key}"))
        .send()
        .await
        .expect("list");

    send_signal(child.id().expect("running"), "TERM");
    child.wait().await.expect("exits");
    let lines = lines.lock().expect("lock").clone();
    let all = lines.join("\n");
    for secret in [ADMIN_KEY, reader_key.as_str(), wrong.as_str()] {
        assert!(!all.contains(secret), "a secret reached the logs");
    }
    let secret_part = reader_key.rsplit('_').next().expect("secret");
    assert!(
        !all.contains(secret_part),
        "part of a secret reached the logs"
    );

    // Every line is one flat JSON object, and the resolve request has exactly one line
    // with its identity, each field once at the top level.
    let entries = json_lines(&lines);
    let answered: Vec<&Value> = entries
        .iter()
        .filter(|e| e["request_id"] == "req-under-test" && e.get("status").is_some())
        .collect();
    assert_eq!(answered.len(), 1, "one line per request: {answered:?}");
    let line = answered[0];
    assert_eq!(line["correlation_id"], "flow-under-test");
    assert_eq!(line["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(line["tenant"], "acme");
    assert_eq!(line["key_id"], reader_id.as_str());
    assert_eq!(line["method"], "GET");
    assert_eq!(line["route"], "/api/v1/routes/resolve");
    assert_eq!(line["status"], 404);
    assert!(line["latency_ms"].is_number());
}

/// The JSON log lines among `lines`, each checked to be one flat object: no nested
/// copy of the span (`span`, `spans`), and no key twice.
fn json_lines(lines: &[String]) -> Vec<Value> {
    lines
        .iter()
        .filter(|l| l.starts_with('{'))
        .map(|l| {
            let entry: Value = serde_json::from_str(l).expect("JSON log line");
            let object = entry.as_object().expect("an object per line");
            assert!(
                !object.contains_key("span") && !object.contains_key("spans"),
                "span data nested in {l}"
            );
            for key in object.keys() {
                assert_eq!(
                    l.matches(&format!("\"{key}\":")).count(),
                    1,
                    "{key} twice in {l}"
                );
            }
            entry
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn successful_resolves_are_sampled_in_the_access_log_and_errors_never_are() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut child, addr, lines) = serve_collecting(
        dir.path(),
        &[
            ("TM_PROFILE", "prod"),
            ("TM_ACCESS_LOG_RESOLVE_SAMPLE", "10"),
        ],
    )
    .await;
    let client = reqwest::Client::new();
    let base = format!("http://{addr}");
    let route = json!({"tenant": "acme", "service": "billing", "env": "prod",
        "version": "v1", "url": "http://10.0.0.7:8080", "active": true});
    let created = client
        .post(format!("{base}/api/v1/routes"))
        .bearer_auth(ADMIN_KEY)
        .json(&route)
        .send()
        .await
        .expect("create");
    assert_eq!(created.status(), reqwest::StatusCode::CREATED);
    let resolve = |service: &str| {
        client
            .get(format!(
                "{base}/api/v1/routes/resolve?tenant=acme&service={service}&env=prod"
            ))
            .bearer_auth(ADMIN_KEY)
            .send()
    };
    for _ in 0..50 {
        let answer = resolve("billing").await.expect("resolve");
        assert_eq!(answer.status(), reqwest::StatusCode::OK);
    }
    for _ in 0..3 {
        let answer = resolve("nothing-here").await.expect("resolve");
        assert_eq!(answer.status(), reqwest::StatusCode::NOT_FOUND);
    }

    send_signal(child.id().expect("running"), "TERM");
    child.wait().await.expect("exits");
    let lines = lines.lock().expect("lock").clone();
    let entries = json_lines(&lines);
    let logged = |status: u64| {
        entries
            .iter()
            .filter(|e| e["route"] == "/api/v1/routes/resolve" && e["status"] == status)
            .count()
    };
    assert_eq!(logged(200), 5, "one successful resolve in ten");
    assert_eq!(logged(404), 3, "every failed resolve");
    let writes = entries
        .iter()
        .filter(|e| e["route"] == "/api/v1/routes" && e["status"] == 201)
        .count();
    assert_eq!(writes, 1, "every other request");
}

#[tokio::test]
async fn a_database_password_never_reaches_the_output() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = command(dir.path())
        .arg("serve")
        .env(
            "TM_DATABASE_URL",
            "postgres://tm:hunter2secret@127.0.0.1:1/tm",
        )
        .env("TM_DB_ACQUIRE_TIMEOUT", "1s")
        .output()
        .await
        .expect("runs");
    assert!(!out.status.success(), "nothing listens on port 1");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!text.contains("hunter2secret"), "{text}");
    assert!(!text.is_empty());
}

/// `promtool check metrics` on a scrape taken after mixed traffic. The test command
/// provides promtool through `TM_TEST_PROMTOOL`; elsewhere the check says it was not run.
#[tokio::test]
async fn metrics_pass_promtool_after_mixed_traffic() {
    let Ok(promtool) = std::env::var("TM_TEST_PROMTOOL") else {
        eprintln!("TM_TEST_PROMTOOL is not set: promtool check not run");
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let (_child, addr) = serve(dir.path()).await;
    let client = reqwest::Client::new();
    let base = format!("http://{addr}");
    let route = json!({"tenant": "acme", "service": "billing", "env": "prod", "version": "v1", "url": "http://a", "active": true});
    client
        .post(format!("{base}/api/v1/routes"))
        .bearer_auth(ADMIN_KEY)
        .json(&route)
        .send()
        .await
        .expect("create");
    client
        .post(format!("{base}/api/v1/routes"))
        .bearer_auth(ADMIN_KEY)
        .json(&route)
        .send()
        .await
        .expect("conflict");
    for path in [
        "/api/v1/routes/resolve?tenant=acme&service=billing&env=prod",
        "/api/v1/routes",
        "/nope",
        "/healthz",
        "/health/ready",
    ] {
        client
            .get(format!("{base}{path}"))
            .bearer_auth(ADMIN_KEY)
            .send()
            .await
            .expect("get");
    }
    client
        .get(format!("{base}/api/v1/routes"))
        .send()
        .await
        .expect("unauthenticated");
    let scrape = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("scrape")
        .text()
        .await
        .expect("text");
    let mut check = std::process::Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs");
    use std::io::Write;
    check
        .stdin
        .take()
        .expect("stdin")
        .write_all(scrape.as_bytes())
        .expect("write");
    let out = check.wait_with_output().expect("promtool finishes");
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Property-based API testing against the served OpenAPI document, with every check
/// schemathesis has, in every phase: examples, coverage (boundaries and near misses of
/// every constraint), fuzzing, and stateful sequences that follow the links between
/// operations. Schema-valid requests are accepted and schema-invalid ones refused, no
/// answer is a server error, and every status, content type, header and body is as
/// documented. The test command provides schemathesis through `TM_TEST_SCHEMATHESIS`;
/// elsewhere the check says it was not run.
///
/// One check is replaced rather than run as is: `positive_data_acceptance` becomes the
/// project's `schema_valid_requests_are_accepted` (tests/schemathesis/hooks.py), the
/// same check with the answers excused that depend on what the server holds or how it
/// is configured, or on a relation between fields JSON Schema cannot state — 412 for an
/// `If-Match` naming another revision, 422 for an `Idempotency-Key` already used with
/// another request, for a webhook URL naming an internal address, and for a policy whose
/// probe timeout exceeds its interval (and the like) — each recognised by its problem
/// type, the last two also by field and reason. tests/schemathesis/
/// schemathesis.toml sets the examples and the request timeout, silences one warning for
/// the two operations on one dead job, which can only answer 404 while the dead-letter
/// queue is empty, and holds a watch's `wait` at 1 second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_error_and_every_answer_fits_the_document() {
    let Ok(schemathesis) = std::env::var("TM_TEST_SCHEMATHESIS") else {
        eprintln!("TM_TEST_SCHEMATHESIS is not set: schemathesis run skipped");
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    // Key management's budget (50/s by default) is shared by the key, dead-letter and
    // webhook operations: a fast run exceeds it, and its 429s would count against the
    // generated data. Rate limits have tests of their own.
    let (_child, addr) = serve_with(dir.path(), &[("TM_RATE_LIMIT_KEYS", "1000000/s")]).await;
    let hooks = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/schemathesis/hooks.py");
    let settings =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/schemathesis/schemathesis.toml");
    // Its working directory is a fresh one, so that no example database or cache kept
    // from an earlier run changes what this one does.
    let work = tempfile::tempdir().expect("tempdir");
    let started = std::time::Instant::now();
    let out = tokio::time::timeout(
        Duration::from_secs(480),
        Command::new(schemathesis)
            .args([
                "--config-file",
                settings.to_str().expect("a UTF-8 path"),
                "run",
                &format!("http://{addr}/openapi.json"),
                "--header",
                &format!("Authorization: Bearer {ADMIN_KEY}"),
                "--checks",
                "all",
                "--exclude-checks",
                "positive_data_acceptance",
                "--phases",
                "examples,coverage,fuzzing,stateful",
                "--seed",
                "20261123",
            ])
            .current_dir(work.path())
            .env("SCHEMATHESIS_HOOKS", &hooks)
            .env("NO_COLOR", "1")
            .output(),
    )
    .await
    .expect("schemathesis finishes within 8 minutes")
    .expect("schemathesis runs");
    let report = String::from_utf8_lossy(&out.stdout);
    let summary: Vec<&str> = report
        .lines()
        .filter(|line| line.contains(" generated,") || line.starts_with("=="))
        .map(str::trim)
        .collect();
    eprintln!(
        "schemathesis took {:.0?}: {}",
        started.elapsed(),
        summary.join(" ")
    );
    assert!(
        out.status.success(),
        "schemathesis found problems:\n{report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(report.contains("No issues found"), "{report}");
}

#[tokio::test]
async fn keys_create_works_offline_and_the_key_works_online() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = command(dir.path())
        .args([
            "keys",
            "create",
            "--role",
            "reader",
            "--tenant",
            "acme",
            "--name",
            "deploy pipeline",
        ])
        .output()
        .await
        .expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key = String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|l| l.starts_with("tm_"))
        .expect("the key on stdout")
        .to_owned();

    let refused = command(dir.path())
        .args([
            "keys", "create", "--role", "admin", "--tenant", "acme", "--name", "x",
        ])
        .output()
        .await
        .expect("runs");
    assert!(!refused.status.success(), "admin keys have no tenant");

    let (_child, addr) = serve(dir.path()).await;
    let client = reqwest::Client::new();
    let own = client
        .get(format!("http://{addr}/api/v1/routes?tenant=acme"))
        .bearer_auth(&key)
        .send()
        .await
        .expect("list");
    assert_eq!(own.status(), reqwest::StatusCode::OK);
    let other = client
        .get(format!("http://{addr}/api/v1/routes?tenant=globex"))
        .bearer_auth(&key)
        .send()
        .await
        .expect("list");
    assert_eq!(other.status(), reqwest::StatusCode::FORBIDDEN);
}

/// `worker` runs the job queue without the API: its probes and metrics answer, `/api/v1`
/// does not, and the jobs it schedules (the purge) run in it.
#[tokio::test]
async fn a_worker_runs_jobs_and_serves_no_api() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cmd = command(dir.path());
    cmd.env("TM_JOB_POLL_INTERVAL", "50ms");
    let (mut child, addr, _) = start_running(cmd, "worker").await;
    let client = reqwest::Client::new();
    let get = |path: &str| {
        client
            .get(format!("http://{addr}{path}"))
            .bearer_auth(ADMIN_KEY)
            .send()
    };
    assert_eq!(get("/healthz").await.expect("sent").status(), 200);
    assert_eq!(get("/health/ready").await.expect("sent").status(), 200);
    assert_eq!(get("/api/v1/routes").await.expect("sent").status(), 404);
    assert_eq!(
        get("/api/v1/routes/resolve?tenant=a&service=b&env=c")
            .await
            .expect("sent")
            .status(),
        404
    );
    let started = std::time::Instant::now();
    loop {
        let text = get("/metrics")
            .await
            .expect("sent")
            .text()
            .await
            .expect("text");
        if text.contains("jobs_processed_total{kind=\"purge\",outcome=\"done\"} 1") {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the purge job never ran:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    child.kill().await.expect("killed");
}

#[tokio::test]
async fn a_delivery_cut_short_by_kill_9_is_delivered_again_under_the_same_id() {
    let receiver = tm_testing::WebhookReceiver::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    // On SQLite in the data directory, or on a PostgreSQL schema of the test's own.
    let schema = tm_testing::OwnSchema::create().await;
    let settings = [
        ("TM_WEBHOOK_ALLOW_NETWORKS", "127.0.0.0/8"),
        ("TM_JOB_LEASE", "2s"),
        ("TM_JOB_POLL_INTERVAL", "50ms"),
    ];
    let with = |mut cmd: Command| {
        for (key, value) in settings {
            cmd.env(key, value);
        }
        if let Some(schema) = &schema {
            cmd.env("TM_DATABASE_URL", &schema.url);
        }
        cmd
    };
    // The API alone makes the subscription and the change.
    let mut api = command(dir.path());
    api.env("TM_JOBS_IN_SERVE", "false");
    let (mut serve, addr, _) = start_serving(with(api)).await;
    let client = reqwest::Client::new();
    let post = |path: &str, body: Value| {
        client
            .post(format!("http://{addr}{path}"))
            .bearer_auth(ADMIN_KEY)
            .json(&body)
            .send()
    };
    let hook: Value = post(
        "/api/v1/webhooks",
        json!({"tenant": "acme", "url": receiver.url("/in")}),
    )
    .await
    .expect("sent")
    .json()
    .await
    .expect("json");
    receiver.set_secret(hook["secret"].as_str().expect("secret"));
    let created = post("/api/v1/routes", body(1)).await.expect("sent");
    assert_eq!(created.status(), 201);
    assert_eq!(send_signal(serve.id().expect("running"), "TERM"), 0);
    serve.wait().await.expect("stopped");

    // A worker takes the delivery, which the receiver holds unanswered: killed then.
    receiver.answer(tm_testing::Answer::Stall);
    let (mut worker, _, _) = start_running(with(command(dir.path())), "worker").await;
    let started = std::time::Instant::now();
    while receiver.received().is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no delivery began"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    worker.kill().await.expect("killed");

    // The next worker takes the job again once the dead one's lease has run out.
    receiver.answer(tm_testing::Answer::Accept);
    let (mut worker, _, _) = start_running(with(command(dir.path())), "worker").await;
    while receiver.received().len() < 2 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "never delivered again"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Nothing more comes: the second attempt was acknowledged.
    tokio::time::sleep(Duration::from_secs(3)).await;
    worker.kill().await.expect("killed");
    let got = receiver.received();
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(got.iter().all(|r| r.verified));
    // Deduplicated by webhook-id, the receiver has the event exactly once.
    assert_eq!(got[0].id, got[1].id);
    assert_eq!(got[0].id, got[0].body["id"].as_str().expect("event id"));
    assert_eq!(got[0].body["type"], "route.created");
}

/// Every route `serve` at `addr` holds, as the admin lists them.
async fn listed_routes(addr: &str) -> Value {
    let listed: Value = reqwest::Client::new()
        .get(format!("http://{addr}/api/v1/routes"))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("JSON");
    listed["items"].clone()
}

/// Three routes of one service, two of them active, made through `serve` at `addr`.
async fn make_routes(addr: &str) {
    for version in ["v1", "v2", "v3"] {
        let created = reqwest::Client::new()
            .post(format!("http://{addr}/api/v1/routes"))
            .bearer_auth(ADMIN_KEY)
            .json(
                &json!({"tenant": "acme", "service": "billing", "env": "prod",
                          "version": version, "url": format!("http://billing-{version}"),
                          "active": version != "v3"}),
            )
            .send()
            .await
            .expect("create");
        assert_eq!(created.status(), reqwest::StatusCode::CREATED);
    }
}

/// What a command printed first on stdout (log lines follow it there).
fn first_line(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// `backup` to S3-compatible storage (a server of the test's own) and `restore` from it
/// into another store, as a CronJob and an operator would run them; retention deletes
/// from the bucket too.
#[tokio::test]
async fn backups_go_to_s3_and_restore_from_there() {
    let Some(s3) = tm_testing::S3Server::start() else {
        eprintln!("TM_TEST_S3_SERVER is not set: S3 round trip not run");
        return;
    };
    s3.create_bucket("tm-backups").await;
    let source = tempfile::tempdir().expect("tempdir");
    let (mut child, addr) = serve(source.path()).await;
    make_routes(&addr).await;
    let before = listed_routes(&addr).await;
    child.kill().await.expect("stopped");

    let backup = || {
        let mut cmd = command(source.path());
        cmd.args(["backup", "--to", "s3://tm-backups/registry"])
            .envs(s3.env())
            // One backup a day kept, none a week or month: the second deletes the first.
            .env("TM_BACKUP_KEEP_DAILY", "1")
            .env("TM_BACKUP_KEEP_WEEKLY", "0")
            .env("TM_BACKUP_KEEP_MONTHLY", "0");
        cmd
    };
    let stored = |name: &str| {
        [
            format!("registry/{name}/manifest.json"),
            format!("registry/{name}/store.sqlite.zst"),
        ]
    };
    let location = first_line(&backup().output().await.expect("runs"));
    let name = location
        .strip_prefix("s3://tm-backups/registry/")
        .expect("the backup's location")
        .to_owned();
    assert_eq!(s3.keys("tm-backups", "registry/").await, stored(&name));
    let newer = first_line(&backup().output().await.expect("runs"))
        .rsplit('/')
        .next()
        .expect("name")
        .to_owned();
    assert_ne!(newer, name);
    assert_eq!(
        s3.keys("tm-backups", "registry/").await,
        stored(&newer),
        "the older backup is deleted"
    );

    // Another store, restored from the bucket's newest verified backup.
    let restored = tempfile::tempdir().expect("tempdir");
    let out = command(restored.path())
        .args(["restore", "--from", "s3://tm-backups/registry", "--yes"])
        .envs(s3.env())
        .output()
        .await
        .expect("runs");
    assert_eq!(first_line(&out), format!("restored {newer}"));
    let (_child, addr) = serve(restored.path()).await;
    assert_eq!(listed_routes(&addr).await, before);

    // A bucket that does not exist: an honest failure, non-zero.
    let refused = command(source.path())
        .args(["backup", "--to", "s3://no-such-bucket/x"])
        .envs(s3.env())
        .output()
        .await
        .expect("runs");
    assert!(!refused.status.success());
}

/// A `traceparent` of the test's own, as a calling service would send it.
fn caller_traceparent(trace: u128, span: u64) -> String {
    format!("00-{trace:032x}-{span:016x}-01")
}

/// The trace id and span id of a `traceparent` value.
fn ids_of(traceparent: &str) -> (String, String) {
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(parts.len(), 4, "{traceparent}");
    (parts[1].to_owned(), parts[2].to_owned())
}

/// Creates a webhook subscription of tenant acme to `receiver` and a route made under
/// `traceparent`; the answer to the create.
async fn subscribe_and_create(
    addr: &str,
    receiver: &tm_testing::WebhookReceiver,
    traceparent: &str,
) -> reqwest::Response {
    let client = reqwest::Client::new();
    let hook: Value = client
        .post(format!("http://{addr}/api/v1/webhooks"))
        .bearer_auth(ADMIN_KEY)
        .json(&json!({"tenant": "acme", "url": receiver.url("/in")}))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    receiver.set_secret(hook["secret"].as_str().expect("secret"));
    create_billing(addr, &[("traceparent", traceparent)]).await
}

/// Creates the active route acme/billing/prod/v1 as the admin, with `headers`; the
/// answer, a 201.
async fn create_billing(addr: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut request = reqwest::Client::new()
        .post(format!("http://{addr}/api/v1/routes"))
        .bearer_auth(ADMIN_KEY);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let created = request
        .json(&json!({"tenant": "acme", "service": "billing", "env": "prod", "version": "v1", "url": "http://10.0.0.7:8080", "active": true}))
        .send()
        .await
        .expect("sent");
    assert_eq!(created.status(), 201);
    created
}

/// A `GET` of `path` as the admin, under `traceparent` if given.
async fn get(addr: &str, path: &str, traceparent: Option<&str>) -> reqwest::Response {
    let mut request = reqwest::Client::new()
        .get(format!("http://{addr}{path}"))
        .bearer_auth(ADMIN_KEY);
    if let Some(traceparent) = traceparent {
        request = request.header("traceparent", traceparent);
    }
    request.send().await.expect("sent")
}

/// The value of `name` in `response`, which must have it.
fn header(response: &reqwest::Response, name: &str) -> String {
    response.headers()[name].to_str().expect("text").to_owned()
}

/// Waits for the first webhook delivery.
async fn first_delivery(receiver: &tm_testing::WebhookReceiver) -> tm_testing::Received {
    let started = std::time::Instant::now();
    loop {
        if let Some(first) = receiver.received().into_iter().next() {
            return first;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "no delivery");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Stops `child` with SIGTERM and waits for it to exit 0 (which flushes the spans).
async fn terminate(mut child: Child) {
    assert_eq!(send_signal(child.id().expect("running"), "TERM"), 0);
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("exits within 30 s")
        .expect("status");
    assert!(status.success(), "exit status {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tracing_exports_request_store_and_job_spans_and_propagates_traceparent() {
    let collector = tm_testing::OtlpReceiver::start().await;
    let receiver = tm_testing::WebhookReceiver::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let endpoint = collector.endpoint();
    let (child, addr, lines) = serve_collecting(
        dir.path(),
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_SERVICE_NAME", "tm-under-test"),
            (
                "OTEL_EXPORTER_OTLP_HEADERS",
                "authorization=Bearer%20collector-secret",
            ),
            ("TM_WEBHOOK_ALLOW_NETWORKS", "127.0.0.0/8"),
            ("TM_JOB_POLL_INTERVAL", "50ms"),
            ("TM_LOG_LEVEL", "info,tm_app::workers::webhooks=debug"),
        ],
    )
    .await;

    // A write made under a caller's span.
    let (caller_trace, caller_span) = (
        0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736_u128,
        0x00f0_67aa_0ba9_02b7_u64,
    );
    let created = subscribe_and_create(
        &addr,
        &receiver,
        &caller_traceparent(caller_trace, caller_span),
    )
    .await;
    let answered = header(&created, "traceparent");
    let (trace, request_span) = ids_of(&answered);
    assert_eq!(trace, format!("{caller_trace:032x}"), "the caller's trace");
    assert_ne!(
        request_span,
        format!("{caller_span:016x}"),
        "a span of its own"
    );
    assert!(answered.ends_with("-01"), "recorded: {answered}");

    // A resolve (the fast path) under another caller's span.
    let resolve_trace = 0x0af7_6519_16cd_43dd_8448_eb21_1c80_319c_u128;
    let resolved = get(
        &addr,
        "/api/v1/routes/resolve?tenant=acme&service=billing&env=prod",
        Some(&caller_traceparent(resolve_trace, 0xb7ad_6b71_6920_3331)),
    )
    .await;
    assert_eq!(resolved.status(), 200);
    let (trace_of_resolve, resolve_span) = ids_of(&header(&resolved, "traceparent"));
    assert_eq!(trace_of_resolve, format!("{resolve_trace:032x}"));

    // A request without a caller starts a trace, which its log lines name.
    let listed = get(&addr, "/api/v1/routes", None).await;
    let (started_trace, _) = ids_of(&header(&listed, "traceparent"));
    let request_id = header(&listed, "x-request-id");

    let delivery = first_delivery(&receiver).await;
    let delivered = delivery
        .traceparent
        .expect("the delivery carries a traceparent");
    terminate(child).await;
    let lines = lines.lock().expect("lock").clone();
    let logged = logged_trace_id(&lines, &request_id);
    assert_eq!(logged, started_trace, "the log names the request's trace");
    assert_eq!(collector.refused(), 0);
    assert_exported(
        &collector.spans(),
        &Seen {
            write_trace: trace,
            caller_span: format!("{caller_span:016x}"),
            request_span,
            started_trace,
            resolve_span,
            delivered,
        },
    );
    assert_job_lines_name_its_trace(&collector.spans(), &lines);
}

/// The delivery job's log line names the trace of the job's exported span.
fn assert_job_lines_name_its_trace(spans: &[tm_testing::ExportedSpan], lines: &[String]) {
    let job_trace = &spans
        .iter()
        .find(|s| s.name == "job" && s.attributes["job.kind"] == "webhook.deliver")
        .expect("the delivery job's span")
        .trace_id;
    let delivered_line = lines
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|l| l["message"] == "webhook delivered")
        .expect("the delivery's log line");
    assert_eq!(delivered_line["trace_id"], job_trace.as_str());
    assert_eq!(delivered_line["job.kind"], "webhook.deliver");
}

/// The trace id of the access-log line of the request `request_id`.
fn logged_trace_id(lines: &[String], request_id: &str) -> String {
    lines
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|l| l["request_id"] == request_id && l["status"].is_number())
        .and_then(|l| l["trace_id"].as_str().map(str::to_owned))
        .expect("the request's access-log line")
}

/// What the tracing test saw of its requests from outside.
struct Seen {
    /// The caller's trace the write was made in, its span and the write's own span.
    write_trace: String,
    caller_span: String,
    request_span: String,
    /// The trace a request without a caller started.
    started_trace: String,
    resolve_span: String,
    /// The `traceparent` of the webhook delivery.
    delivered: String,
}

/// The spans exported are those `seen`, in the right traces, under the right parents.
fn assert_exported(spans: &[tm_testing::ExportedSpan], seen: &Seen) {
    assert!(spans.iter().all(|s| s.service == "tm-under-test"));
    let find = |id: &str| spans.iter().find(|s| s.span_id == id);
    let server =
        find(&seen.request_span).unwrap_or_else(|| panic!("request span exported: {spans:#?}"));
    assert_eq!(server.name, "POST /api/v1/routes");
    assert_eq!(
        server.kind,
        opentelemetry_proto::tonic::trace::v1::span::SpanKind::Server
    );
    assert_eq!(server.trace_id, seen.write_trace);
    assert_eq!(server.parent_span_id, seen.caller_span);
    assert_eq!(server.attributes["http.response.status_code"], "201");
    assert_eq!(server.attributes["http.route"], "/api/v1/routes");
    assert_eq!(server.attributes["http.request.method"], "POST");
    assert!(!server.attributes["request_id"].is_empty());

    // The store call of the write, under the request span.
    let write = spans
        .iter()
        .find(|s| s.name == "store.create_route")
        .unwrap_or_else(|| panic!("store span exported: {spans:#?}"));
    assert_eq!(write.trace_id, seen.write_trace);
    assert_eq!(write.attributes["db.system"], "sqlite");
    let mut ancestor = write.parent_span_id.clone();
    while ancestor != seen.request_span {
        ancestor = find(&ancestor)
            .unwrap_or_else(|| panic!("{ancestor} leads to the request span"))
            .parent_span_id
            .clone();
    }

    assert!(spans.iter().any(|s| s.trace_id == seen.started_trace
        && s.name == "GET /api/v1/routes"
        && s.parent_span_id.is_empty()));

    let resolve = find(&seen.resolve_span).expect("resolve span exported");
    assert_eq!(resolve.name, "GET /api/v1/routes/resolve");
    assert_eq!(resolve.parent_span_id, "b7ad6b7169203331");
    assert_eq!(resolve.attributes["http.response.status_code"], "200");

    // The delivery continues the write's trace: its traceparent names the sending span,
    // a client span in the write's trace under the store call that wrote the event, and
    // linked to the delivery job's span.
    let (delivery_trace, delivery_span) = ids_of(&seen.delivered);
    assert_eq!(delivery_trace, seen.write_trace, "the write's trace");
    let sending =
        find(&delivery_span).unwrap_or_else(|| panic!("sending span exported: {spans:#?}"));
    assert_eq!(sending.name, "webhook.send");
    assert_eq!(
        sending.kind,
        opentelemetry_proto::tonic::trace::v1::span::SpanKind::Client
    );
    assert_eq!(sending.trace_id, seen.write_trace);
    assert_eq!(sending.parent_span_id, write.span_id, "under the write");
    let [(job_trace, job_span)] = sending.links.as_slice() else {
        panic!("one link, to the job: {sending:#?}");
    };
    let job = find(job_span).unwrap_or_else(|| panic!("job span exported: {spans:#?}"));
    assert_eq!(&job.trace_id, job_trace);
    assert_ne!(
        job.trace_id, seen.write_trace,
        "a job is a trace of its own"
    );
    assert_eq!(job.attributes["job.kind"], "webhook.deliver");
    assert_eq!(job.attributes["job.outcome"], "done");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_commands_are_exported_within_the_request_that_sent_them() {
    let Some(redis) = tm_testing::RedisServer::start() else {
        return;
    };
    let collector = tm_testing::OtlpReceiver::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (endpoint, redis_url) = (collector.endpoint(), redis.url());
    let (child, addr, _) = serve_collecting(
        dir.path(),
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("TM_REDIS_URL", redis_url.as_str()),
        ],
    )
    .await;
    // An idempotent write: its key is claimed in Redis.
    let created = create_billing(&addr, &[("Idempotency-Key", "traced-create-1")]).await;
    let (trace, request_span) = ids_of(&header(&created, "traceparent"));
    terminate(child).await;
    let spans = collector.spans();
    let find = |id: &str| spans.iter().find(|s| s.span_id == id);
    let command = spans
        .iter()
        .find(|s| {
            s.name == "redis.command"
                && s.trace_id == trace
                && s.attributes["db.operation.name"] == "idempotency"
        })
        .unwrap_or_else(|| panic!("the idempotency claim exported: {spans:#?}"));
    assert_eq!(command.attributes["db.system"], "redis");
    let mut ancestor = command.parent_span_id.clone();
    while ancestor != request_span {
        ancestor = find(&ancestor)
            .unwrap_or_else(|| panic!("{ancestor} leads to the request span: {spans:#?}"))
            .parent_span_id
            .clone();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_records_carry_the_trace_of_the_write_that_made_them() {
    let Some(broker) = tm_testing::KafkaBroker::start() else {
        return;
    };
    let collector = tm_testing::OtlpReceiver::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (endpoint, brokers) = (collector.endpoint(), broker.address());
    let (child, addr, _) = serve_collecting(
        dir.path(),
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("TM_KAFKA_BROKERS", brokers.as_str()),
            ("TM_KAFKA_TOPIC", "traced"),
            ("TM_KAFKA_PARTITIONS", "1"),
            ("TM_JOB_POLL_INTERVAL", "50ms"),
        ],
    )
    .await;
    let caller_trace = 0x0af7_6519_16cd_43dd_8448_eb21_1c80_319c_u128;
    let traceparent = caller_traceparent(caller_trace, 0x1111);
    create_billing(
        &addr,
        &[("traceparent", &traceparent), ("tracestate", "vendor=abc")],
    )
    .await;
    let started = std::time::Instant::now();
    let record = loop {
        if let Some(first) = broker.records("traced").await.into_iter().next() {
            break first;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "no record");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    terminate(child).await;
    let (trace, span) = ids_of(&record.headers["traceparent"]);
    assert_eq!(trace, format!("{caller_trace:032x}"), "the write's trace");
    assert_eq!(record.headers["tracestate"], "vendor=abc");
    // The span that wrote the event: the store call, exported.
    let spans = collector.spans();
    let write = spans
        .iter()
        .find(|s| s.span_id == span)
        .unwrap_or_else(|| panic!("the writing span exported: {spans:#?}"));
    assert_eq!(write.name, "store.create_route");
    assert_eq!(write.trace_id, trace);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_tracing_nothing_is_exported_and_no_traceparent_is_invented() {
    let traceparent = caller_traceparent(
        0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736,
        0x00f0_67aa_0ba9_02b7,
    );
    // Off: no endpoint.
    let receiver = tm_testing::WebhookReceiver::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (child, addr, lines) = serve_collecting(
        dir.path(),
        &[
            ("TM_WEBHOOK_ALLOW_NETWORKS", "127.0.0.0/8"),
            ("TM_JOB_POLL_INTERVAL", "50ms"),
        ],
    )
    .await;
    let created = subscribe_and_create(&addr, &receiver, &traceparent).await;
    assert!(!created.headers().contains_key("traceparent"));
    let delivery = first_delivery(&receiver).await;
    assert_eq!(delivery.traceparent, None);
    terminate(child).await;
    // The logs still name the caller's trace.
    let logged: Vec<Value> = lines
        .lock()
        .expect("lock")
        .iter()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert!(
        logged.iter().any(|l| l["route"] == "/api/v1/routes"
            && l["status"] == 201
            && l["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"),
        "{logged:#?}"
    );

    // On, but sampling nothing: nothing reaches the collector.
    let collector = tm_testing::OtlpReceiver::start().await;
    let receiver = tm_testing::WebhookReceiver::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let endpoint = collector.endpoint();
    let (child, addr, _) = serve_collecting(
        dir.path(),
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_TRACES_SAMPLER", "always_off"),
            ("TM_WEBHOOK_ALLOW_NETWORKS", "127.0.0.0/8"),
            ("TM_JOB_POLL_INTERVAL", "50ms"),
        ],
    )
    .await;
    let created = subscribe_and_create(&addr, &receiver, &traceparent).await;
    assert!(!created.headers().contains_key("traceparent"));
    let delivery = first_delivery(&receiver).await;
    // Propagated in the caller's trace, marked not recorded, so that the receiver does
    // not record it either.
    let delivered = delivery.traceparent.expect("propagated");
    assert!(delivered.ends_with("-00"), "{delivered}");
    assert_eq!(ids_of(&delivered).0, "4bf92f3577b34da6a3ce929d0e0e4736");
    terminate(child).await;
    assert!(collector.spans().is_empty(), "{:#?}", collector.spans());
}

#[tokio::test]
async fn check_config_says_where_spans_go_and_hides_the_export_headers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = command(dir.path())
        .arg("check-config")
        .env(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "http://collector.internal:4318",
        )
        .env("OTEL_EXPORTER_OTLP_HEADERS", "x-api-key=hunter2")
        .env("OTEL_TRACES_SAMPLER", "parentbased_traceidratio")
        .env("OTEL_TRACES_SAMPLER_ARG", "0.05")
        .output()
        .await
        .expect("runs");
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("tracing = \"on\""), "{stdout}");
    assert!(
        stdout.contains(
            "otel_exporter_otlp_traces_endpoint = \"http://collector.internal:4318/v1/traces\""
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("otel_traces_sampler = \"parentbased_traceidratio 0.05\""),
        "{stdout}"
    );
    assert!(stdout.contains("x-api-key=(redacted)"), "{stdout}");
    assert!(!stdout.contains("hunter2"), "{stdout}");
}
