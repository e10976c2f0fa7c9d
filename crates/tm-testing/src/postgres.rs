//! PostgreSQL clusters of a test's own, for the tests that stop, freeze or replicate a
//! database: `initdb` (or `pg_basebackup`) into a temporary directory, a free loopback
//! port, stopped and removed on drop. They need `TM_TEST_PG_BINDIR` (and `TM_TEST_PG_USER`
//! when the tests run as root).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::free_port;

/// A throwaway cluster, stopped and removed on drop.
pub struct PgCluster {
    bindir: PathBuf,
    user: Option<String>,
    dir: tempfile::TempDir,
    port: u16,
}

impl PgCluster {
    /// A new cluster, started; `None` when `TM_TEST_PG_BINDIR` is not set.
    pub fn start() -> Option<PgCluster> {
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
    pub fn replica_of(primary: &PgCluster) -> PgCluster {
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
    fn empty() -> Option<PgCluster> {
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
        Some(PgCluster {
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

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    fn pg(&self, tool: &str, args: &[&str]) -> std::process::ExitStatus {
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

    /// Starts the server (again, after [`stop`](Self::stop) or [`kill`](Self::kill)).
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

    /// Stops the server without a clean shutdown (immediate mode), as a crash would.
    pub fn kill(&self) {
        assert!(self
            .pg(
                "pg_ctl",
                &["-D", &self.data(), "-m", "immediate", "-w", "stop"]
            )
            .success());
    }

    /// The postmaster and every process it started.
    fn pids(&self) -> Vec<String> {
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

    /// Sends `signal` (e.g. `STOP`, `CONT`) to the postmaster and all its processes.
    pub fn signal(&self, signal: &str) {
        for pid in self.pids() {
            let _ = Command::new("kill")
                .args([&format!("-{signal}"), &pid])
                .stderr(std::process::Stdio::null())
                .status();
        }
    }

    /// The superuser's URL of the `postgres` database.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        self.signal("CONT");
        let _ = self.pg("pg_ctl", &["-D", &self.data(), "-m", "immediate", "stop"]);
    }
}
