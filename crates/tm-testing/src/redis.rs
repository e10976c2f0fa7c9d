//! Redis servers and clusters of a test's own, from Debian's `redis-server`. They run
//! when `TM_TEST_REDIS_SERVER` names the binary (the test command sets it, installing
//! the package when missing); each is stopped by its PID when dropped.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::process::Server;
use crate::{eventually_blocking, free_port};

/// One `redis-server`, in a temporary directory, persisting nothing.
pub struct RedisServer {
    process: Server,
    /// The loopback port it listens on.
    pub port: u16,
    dir: tempfile::TempDir,
    args: Vec<String>,
}

fn server_binary() -> Option<PathBuf> {
    std::env::var_os("TM_TEST_REDIS_SERVER").map(PathBuf::from)
}

/// `redis-cli`, beside the server binary.
fn cli() -> PathBuf {
    let server = server_binary().expect("TM_TEST_REDIS_SERVER");
    server.with_file_name("redis-cli")
}

impl RedisServer {
    /// Starts a server; `None` when `TM_TEST_REDIS_SERVER` is not set.
    pub fn start() -> Option<RedisServer> {
        Self::start_with(&[])
    }

    fn start_with(extra: &[&str]) -> Option<RedisServer> {
        server_binary()?;
        let mut server = RedisServer {
            process: Server::default(),
            port: free_port(),
            dir: tempfile::tempdir().expect("tempdir"),
            args: extra.iter().map(|a| (*a).to_owned()).collect(),
        };
        server.spawn();
        Some(server)
    }

    fn spawn(&mut self) {
        let child = Command::new(server_binary().expect("binary"))
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        self.process.set(child);
        let what = format!("redis-server on port {} answering PING", self.port);
        eventually_blocking(Duration::from_secs(10), &what, || {
            self.cli(&["PING"]).as_deref() == Some("PONG")
        });
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Runs one command with `redis-cli`; its output, trimmed, if it ran.
    pub fn cli(&self, args: &[&str]) -> Option<String> {
        let out = Command::new(cli())
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(args)
            .stderr(Stdio::null())
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// SIGKILL, and waits for the process to be gone.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// Starts it again on the same port and directory.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Sends `signal` (e.g. `STOP`, `CONT`) to the server.
    pub fn signal(&self, signal: &str) {
        self.process.signal(signal);
    }
}

/// Six nodes: three masters with a replica each, failing over after one second.
pub struct RedisCluster {
    /// Every node, masters and replicas, in start order.
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts six nodes and makes them a cluster; `None` when `TM_TEST_REDIS_SERVER` is
    /// not set.
    pub fn start() -> Option<RedisCluster> {
        server_binary()?;
        let nodes: Vec<RedisServer> = (0..6)
            .map(|_| {
                RedisServer::start_with(&[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "1000",
                    // A replica may take over however long it has been cut off.
                    "--cluster-replica-validity-factor",
                    "0",
                ])
                .expect("server")
            })
            .collect();
        let addresses: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let created = Command::new(cli())
            .args(["--cluster", "create"])
            .args(&addresses)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("redis-cli runs");
        assert!(created.success(), "redis-cli --cluster create failed");
        let cluster = RedisCluster { nodes };
        cluster.wait_until_ok(Duration::from_secs(30));
        // Replicas attach after the slots are assigned; one still syncing cannot take
        // over from its master.
        eventually_blocking(Duration::from_secs(30), "the replicas in sync", || {
            cluster
                .nodes
                .iter()
                .filter(|n| {
                    n.cli(&["ROLE"])
                        .is_some_and(|r| r.lines().next() == Some("slave"))
                })
                .filter(|n| {
                    n.cli(&["INFO", "replication"])
                        .is_some_and(|info| info.contains("master_link_status:up"))
                })
                .count()
                >= 3
        });
        Some(cluster)
    }

    /// Every live node says the cluster is ok and knows three masters.
    pub fn wait_until_ok(&self, within: Duration) {
        eventually_blocking(within, "the Redis cluster ok", || {
            let ok = self
                .nodes
                .iter()
                .filter(|n| n.process.is_running())
                .all(|n| {
                    n.cli(&["CLUSTER", "INFO"])
                        .is_some_and(|info| info.contains("cluster_state:ok"))
                });
            ok && self.masters().len() == 3
        });
    }

    /// Ports of the live masters that serve slots.
    pub fn masters(&self) -> Vec<u16> {
        self.nodes
            .iter()
            .filter(|n| n.process.is_running())
            .filter(|n| {
                n.cli(&["ROLE"])
                    .is_some_and(|role| role.lines().next() == Some("master"))
            })
            .map(|n| n.port)
            .collect()
    }

    /// The seed URLs, comma-separated.
    pub fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(RedisServer::url)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// SIGKILLs the master that holds `key`'s slot; its port.
    pub fn kill_master_of(&mut self, key: &str) -> u16 {
        let slot = self.nodes[0]
            .cli(&["CLUSTER", "KEYSLOT", key])
            .expect("keyslot");
        let owner = self
            .nodes
            .iter()
            .position(|n| {
                n.process.is_running()
                    && n.cli(&["ROLE"])
                        .is_some_and(|r| r.lines().next() == Some("master"))
                    && owns_slot(n, &slot)
            })
            .expect("a master owns the slot");
        let port = self.nodes[owner].port;
        self.nodes[owner].kill();
        port
    }
}

/// Whether `node` serves `slot`, by its own view of the slot map.
fn owns_slot(node: &RedisServer, slot: &str) -> bool {
    let slot: u32 = slot.parse().expect("slot number");
    let Some(myself) = node.cli(&["CLUSTER", "MYID"]) else {
        return false;
    };
    let Some(nodes) = node.cli(&["CLUSTER", "NODES"]) else {
        return false;
    };
    nodes
        .lines()
        .find(|line| line.starts_with(&myself))
        .is_some_and(|line| {
            line.split_whitespace().skip(8).any(|range| {
                let (from, to) = range.split_once('-').unwrap_or((range, range));
                matches!((from.parse::<u32>(), to.parse::<u32>()), (Ok(f), Ok(t)) if f <= slot && slot <= t)
            })
        })
}
