//! PostgreSQL clusters of a test's own, for the tests that stop, freeze or replicate
//! a database. They run when `TM_TEST_PG_BINDIR` names PostgreSQL's binaries (the test
//! command sets it, and `TM_TEST_PG_USER` when clusters must run as another user than
//! root).

#![allow(dead_code)] // each test file uses its own part of this module

pub mod redis;

use std::path::{Path, PathBuf};
use std::process::Command;

/// A throwaway cluster, stopped and removed on drop.
pub struct Cluster {
    bindir: PathBuf,
    user: Option<String>,
    dir: tempfile::TempDir,
    port: u16,
}

impl Cluster {
    pub fn start() -> Option<Cluster> {
        let cluster = Self::empty()?;
        assert!(cluster
            .pg(
                "initdb",
                &[
                    "-D",
                    &cluster.data(),
                    "-U",
                    "postgres",
                    "-A",
                    "trust",
                    "--no-sync"
                ]
            )
            .success());
        cluster.start_server();
        Some(cluster)
    }

    /// A streaming replica of `primary`, copied with `pg_basebackup` and started.
    pub fn replica_of(primary: &Cluster) -> Cluster {
        let replica = Self::empty().expect("the primary's binaries");
        let port = primary.port.to_string();
        assert!(replica
            .pg(
                "pg_basebackup",
                &[
                    "-D",
                    &replica.data(),
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &port,
                    "-U",
                    "postgres",
                    "-R",
                    "-X",
                    "stream",
                    "--no-sync"
                ]
            )
            .success());
        replica.start_server();
        replica
    }

    /// A directory and a port for a cluster, nothing in them yet.
    fn empty() -> Option<Cluster> {
        let bindir = PathBuf::from(std::env::var_os("TM_TEST_PG_BINDIR")?);
        let user = std::env::var("TM_TEST_PG_USER")
            .ok()
            .filter(|u| !u.is_empty());
        let dir = tempfile::tempdir().expect("tempdir");
        if let Some(user) = &user {
            assert!(Command::new("chown")
                .arg(user)
                .arg(dir.path())
                .status()
                .expect("chown")
                .success());
        }
        Some(Cluster {
            bindir,
            user,
            dir,
            port: free_port(),
        })
    }

    /// Stops the server (fast shutdown) and waits for it.
    pub fn stop(&self) {
        assert!(self
            .pg("pg_ctl", &["-D", &self.data(), "-m", "fast", "-w", "stop"])
            .success());
    }

    /// Runs one SQL statement as the superuser; true when it succeeded.
    pub fn sql(&self, statement: &str) -> bool {
        let port = self.port.to_string();
        self.pg(
            "psql",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                "postgres",
                "-qAtc",
                statement,
            ],
        )
        .success()
    }

    pub fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    pub fn pg(&self, tool: &str, args: &[&str]) -> std::process::ExitStatus {
        let program = self.bindir.join(tool);
        let mut cmd = match &self.user {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(&program);
                c
            }
            None => Command::new(&program),
        };
        cmd.args(args)
            .stdout(std::process::Stdio::null())
            .status()
            .expect("pg tool runs")
    }

    pub fn start_server(&self) {
        let options = format!(
            "-c listen_addresses=127.0.0.1 -p {} -k {} -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("server.log").display().to_string();
        assert!(self
            .pg(
                "pg_ctl",
                &[
                    "-D",
                    &self.data(),
                    "-l",
                    &log,
                    "-w",
                    "-o",
                    &options,
                    "start"
                ]
            )
            .success());
    }

    pub fn kill(&self) {
        assert!(self
            .pg(
                "pg_ctl",
                &["-D", &self.data(), "-m", "immediate", "-w", "stop"]
            )
            .success());
    }

    /// The postmaster and every process it started.
    pub fn pids(&self) -> Vec<String> {
        // A stopped cluster has no pid file and no processes.
        let Ok(pidfile) = std::fs::read_to_string(Path::new(&self.data()).join("postmaster.pid"))
        else {
            return Vec::new();
        };
        let postmaster = pidfile.lines().next().expect("pid").trim().to_owned();
        let children = Command::new("pgrep")
            .args(["-P", &postmaster])
            .output()
            .expect("pgrep");
        let mut pids: Vec<String> = String::from_utf8_lossy(&children.stdout)
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        pids.push(postmaster);
        pids
    }

    pub fn signal(&self, signal: &str) {
        for pid in self.pids() {
            let _ = Command::new("kill")
                .args([&format!("-{signal}"), &pid])
                .stderr(std::process::Stdio::null())
                .status();
        }
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.signal("CONT");
        let _ = self.pg("pg_ctl", &["-D", &self.data(), "-m", "immediate", "stop"]);
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// One running instance of the registry, stopped when dropped.
pub struct Instance {
    pub base: String,
    pub http: reqwest::Client,
    shutdown: tokio_util::sync::CancellationToken,
    _data: tempfile::TempDir,
}

impl Instance {
    /// Starts an instance on `raw` (listen address and data directory are its own).
    pub async fn start(mut raw: tm_config::RawConfig) -> Instance {
        let data = tempfile::tempdir().expect("tempdir");
        raw.process.listen = "127.0.0.1:0".into();
        raw.process.data_dir = data.path().to_path_buf();
        let config = tm_config::Config::try_from(raw).expect("config");
        let app = tm_app::Application::build(config).await.expect("starts");
        let base = format!("http://{}", app.local_addr());
        let shutdown = tokio_util::sync::CancellationToken::new();
        tokio::spawn(app.run_until(shutdown.clone()));
        Instance {
            base,
            http: reqwest::Client::new(),
            shutdown,
            _data: data,
        }
    }

    /// Sends a request with `key`; status, headers and JSON body (null if none).
    pub async fn send(
        &self,
        key: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
        headers: &[(&str, &str)],
    ) -> (
        reqwest::StatusCode,
        reqwest::header::HeaderMap,
        serde_json::Value,
    ) {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(key);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let reply = request.send().await.expect("request");
        let status = reply.status();
        let headers = reply.headers().clone();
        (
            status,
            headers,
            reply.json().await.unwrap_or(serde_json::Value::Null),
        )
    }

    /// The value of one series in `/metrics` (0 when absent).
    pub async fn metric(&self, series: &str) -> f64 {
        let text = self
            .http
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text");
        text.lines()
            .find_map(|line| {
                line.strip_prefix(series)?
                    .strip_prefix(' ')?
                    .trim()
                    .parse()
                    .ok()
            })
            .unwrap_or(0.0)
    }

    /// `/health/ready`: status code and body.
    pub async fn ready(&self) -> (reqwest::StatusCode, serde_json::Value) {
        let reply = self
            .http
            .get(format!("{}/health/ready", self.base))
            .send()
            .await
            .expect("ready");
        let status = reply.status();
        (status, reply.json().await.expect("json"))
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Polls `check` until it holds, for at most `within`; how long it took.
pub async fn eventually<F, Fut>(
    within: std::time::Duration,
    what: &str,
    mut check: F,
) -> std::time::Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = std::time::Instant::now();
    while !check().await {
        assert!(started.elapsed() < within, "{what}: not within {within:?}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    started.elapsed()
}
