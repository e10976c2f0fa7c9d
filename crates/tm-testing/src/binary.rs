//! The `traffic-manager` binary as an operator runs it, for the tests of the binary's
//! crate (which alone know its path: `env!("CARGO_BIN_EXE_traffic-manager")`).

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// The binary at `path` with a clean environment — no `TM_*` (or `OTEL_*`) setting
/// leaks in from outside — its data in `data_dir`, `admin_key` as its admin key, a free
/// loopback port and JSON logs; killed if dropped.
pub fn binary_command(path: &str, data_dir: &Path, admin_key: &str) -> Command {
    let mut cmd = Command::new(path);
    for (key, _) in std::env::vars_os() {
        let name = key.to_string_lossy();
        if name.starts_with("TM_") || name.starts_with("OTEL_") {
            cmd.env_remove(key);
        }
    }
    cmd.env("TM_DATA_DIR", data_dir)
        .env("TM_BOOTSTRAP_ADMIN_KEY", admin_key)
        .env("TM_LISTEN", "127.0.0.1:0")
        .env("TM_LOG_FORMAT", "json")
        .kill_on_drop(true);
    cmd
}

/// Runs `cmd <subcommand>` (one that listens: `serve`, `worker`) and waits for its
/// "listening" log line: the child, its address and every line printed until then.
/// Its stdout is drained afterwards, so that it never blocks on a full pipe.
pub async fn start_listening(mut cmd: Command, subcommand: &str) -> (Child, String, Vec<String>) {
    let mut child = cmd
        .arg(subcommand)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("binary starts");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut printed = Vec::new();
    let addr = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.expect("read stdout") {
            let addr = serde_json::from_str::<Value>(&line)
                .ok()
                .and_then(|entry| entry["addr"].as_str().map(str::to_owned));
            printed.push(line);
            if let Some(addr) = addr {
                return addr;
            }
        }
        panic!("the server exited before listening");
    })
    .await
    .expect("server listening within 30 s");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, addr, printed)
}
