//! `tmctl` against a running server (the application on loopback).

use std::process::Output;

use serde_json::Value;
use tm_testing::{spawn_app, TestApp};

/// Runs `tmctl args` against `app` with the admin key from the environment.
fn tmctl(app: &TestApp, args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_tmctl"))
        .args(args)
        .env("TMCTL_URL", format!("http://{}", app.addr))
        .env("TMCTL_KEY", &app.admin_key)
        .env("TMCTL_CONFIG", "/nonexistent/tmctl.toml")
        .output()
        .expect("tmctl runs")
}

fn json_of(output: &Output) -> Value {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("JSON")
}

const V1: [&str; 8] = [
    "--tenant",
    "acme",
    "--service",
    "billing",
    "--env",
    "prod",
    "--version",
    "v1",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_are_created_activated_weighed_and_resolved_from_the_command_line() {
    let app = spawn_app().await;
    let mut create = vec![
        "routes",
        "create",
        "--url",
        "http://10.0.0.1:8080",
        "-o",
        "json",
    ];
    create.extend(V1);
    let created = json_of(&tmctl(&app, &create));
    assert_eq!(created["active"], false);
    let id = created["id"].as_str().expect("id").to_owned();

    let mut activate = vec!["routes", "activate", "-o", "json"];
    activate.extend(V1);
    assert_eq!(json_of(&tmctl(&app, &activate))["active"], true);
    let weighed = json_of(&tmctl(
        &app,
        &["routes", "set-weight", &id, "30", "-o", "json"],
    ));
    assert_eq!(
        (weighed["weight"].as_u64(), weighed["revision"].as_u64()),
        (Some(30), Some(3))
    );

    // For people: columns with a header.
    let listed = tmctl(&app, &["routes", "list", "--tenant", "acme"]);
    let text = String::from_utf8_lossy(&listed.stdout);
    assert!(
        text.lines()
            .next()
            .is_some_and(|h| h.contains("VERSION") && h.contains("WEIGHT")),
        "{text}"
    );
    assert!(
        text.contains(&id) && text.contains("http://10.0.0.1:8080"),
        "{text}"
    );

    let resolved = json_of(&tmctl(
        &app,
        &[
            "resolve",
            "--tenant",
            "acme",
            "--service",
            "billing",
            "--env",
            "prod",
            "-o",
            "json",
        ],
    ));
    assert_eq!(resolved["url"], "http://10.0.0.1:8080");

    // Exit codes: 3 for not found, 1 for a refusal, 2 for bad usage.
    let missing = tmctl(
        &app,
        &[
            "resolve",
            "--tenant",
            "acme",
            "--service",
            "nothing",
            "--env",
            "prod",
        ],
    );
    assert_eq!(missing.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("404"));
    // 101 is the server's to refuse (422); 300 is not a weight at all.
    let invalid = tmctl(&app, &["routes", "set-weight", &id, "101"]);
    assert_eq!(invalid.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&invalid.stderr).contains("422"));
    let not_a_weight = tmctl(&app, &["routes", "set-weight", &id, "300"]);
    assert_eq!(not_a_weight.status.code(), Some(2));
    let mut duplicate = vec!["routes", "create", "--url", "http://10.0.0.1:8080"];
    duplicate.extend(V1);
    assert_eq!(tmctl(&app, &duplicate).status.code(), Some(1));
    assert_eq!(
        tmctl(&app, &["routes", "frobnicate"]).status.code(),
        Some(2)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_profile_names_the_server_and_the_environment_overrides_it() {
    let app = spawn_app().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "default_profile = \"local\"\n[profiles.local]\nurl = \"http://{}\"\nkey = \"{}\"\n[profiles.nowhere]\nurl = \"http://127.0.0.1:9\"\nkey = \"x\"\n",
            app.addr, app.admin_key
        ),
    )
    .expect("written");
    let run = |args: &[&str], env: &[(&str, &str)]| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_tmctl"));
        cmd.args(args)
            .env("TMCTL_CONFIG", &config)
            .env_remove("TMCTL_URL")
            .env_remove("TMCTL_KEY");
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().expect("tmctl runs")
    };
    assert!(run(&["routes", "list"], &[]).status.success());
    let unreachable = run(&["--profile", "nowhere", "routes", "list"], &[]);
    assert_eq!(
        unreachable.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&unreachable.stderr)
    );
    let url = format!("http://{}", app.addr);
    assert!(run(
        &["--profile", "nowhere", "routes", "list"],
        &[("TMCTL_URL", &url), ("TMCTL_KEY", &app.admin_key)]
    )
    .status
    .success());
    assert_eq!(
        run(&["--profile", "absent", "routes", "list"], &[])
            .status
            .code(),
        Some(2)
    );
    let completions = run(&["completions", "bash"], &[]);
    assert!(String::from_utf8_lossy(&completions.stdout).contains("tmctl"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_audit_keys_watch_and_the_dead_letter_queue_from_the_command_line() {
    let app = spawn_app().await;
    let service = ["--tenant", "acme", "--service", "billing", "--env", "prod"];
    for version in ["v1", "v2"] {
        let mut create = vec![
            "routes",
            "create",
            "--url",
            "http://10.0.0.1:8080",
            "--version",
            version,
            "--active",
        ];
        create.extend(service);
        assert!(tmctl(&app, &create).status.success());
    }
    let mut deactivate = vec!["routes", "deactivate", "--version", "v1"];
    deactivate.extend(service);
    assert!(tmctl(&app, &deactivate).status.success());
    let mut rollback = vec!["routes", "rollback", "-o", "json"];
    rollback.extend(service);
    assert_eq!(
        json_of(&tmctl(&app, &rollback))["active_versions"],
        serde_json::json!(["v1", "v2"])
    );

    let mut audit = vec!["audit"];
    audit.extend(service);
    let text = String::from_utf8_lossy(&tmctl(&app, &audit).stdout).into_owned();
    assert!(
        text.contains("rollback") && text.contains("active: true → false"),
        "{text}"
    );

    let mut watch = vec!["watch", "--once"];
    watch.extend(service);
    let state = json_of(&tmctl(&app, &watch));
    assert_eq!(state["versions"].as_array().map(Vec::len), Some(2));
    let mut explain = vec!["resolve", "--explain", "--key", "user-1"];
    explain.extend(service);
    assert!(json_of(&tmctl(&app, &explain)).is_object());

    let created = json_of(&tmctl(
        &app,
        &[
            "keys", "create", "--name", "ci", "--role", "reader", "--tenant", "acme", "-o", "json",
        ],
    ));
    let id = created["id"].as_str().expect("id");
    assert!(String::from_utf8_lossy(&tmctl(&app, &["keys", "list"]).stdout).contains(id));
    assert!(tmctl(&app, &["keys", "revoke", id]).status.success());
    assert!(!String::from_utf8_lossy(&tmctl(&app, &["keys", "list"]).stdout).contains(id));
    assert_eq!(
        json_of(&tmctl(&app, &["dlq", "-o", "json"]))["items"],
        serde_json::json!([])
    );
}
