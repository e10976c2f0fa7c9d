//! The process as a whole: deployment profile, process type, listen address, serving
//! threads, data directory, the operator's admin key and how often the routing
//! snapshot is refreshed.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use crate::error::Problems;
use crate::render::Lines;
use crate::Config;

/// The process's settings as read.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct ProcessRaw {
    pub profile: String,
    pub listen: String,
    pub data_dir: PathBuf,
    /// `web` (serves the API) or `worker` (background work): picks the pool size.
    pub process_type: String,
    /// Threads serving requests; 0 means one per available CPU.
    pub worker_threads: usize,
    pub bootstrap_admin_key: Option<String>,
    #[serde(with = "humantime_serde")]
    pub snapshot_reload_interval: Duration,
    #[serde(with = "humantime_serde")]
    pub snapshot_catch_up_interval: Duration,
}

impl Default for ProcessRaw {
    fn default() -> Self {
        Self {
            profile: "dev".into(),
            listen: "127.0.0.1:8080".into(),
            data_dir: PathBuf::from("./data"),
            process_type: "web".into(),
            worker_threads: 0,
            bootstrap_admin_key: None,
            snapshot_reload_interval: Duration::from_secs(3600),
            snapshot_catch_up_interval: Duration::from_secs(5),
        }
    }
}

/// The kind of deployment; `dev` logs text, the others JSON, and `prod` refuses a
/// CORS wildcard.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    Dev,
    Staging,
    Prod,
}

impl Profile {
    /// The name, as the setting spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Profile::Dev => "dev",
            Profile::Staging => "staging",
            Profile::Prod => "prod",
        }
    }
}

/// What a process of this deployment does; each type has its own pool size.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProcessType {
    Web,
    Worker,
}

impl ProcessType {
    /// The name, as the setting spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            ProcessType::Web => "web",
            ProcessType::Worker => "worker",
        }
    }
}

/// The process's settings as checked; `None` where a setting was wrong (and reported).
#[derive(Debug)]
pub(crate) struct Process {
    pub profile: Option<Profile>,
    pub listen: Option<SocketAddr>,
    pub data_dir: PathBuf,
    /// `web` where the setting was wrong, so that the other checks can go on.
    pub process_type: ProcessType,
    pub worker_threads: usize,
    pub bootstrap_admin_key: Option<SecretString>,
    pub snapshot_reload_interval: Duration,
    pub snapshot_catch_up_interval: Duration,
}

impl ProcessRaw {
    pub(crate) fn check(self, problems: &mut Problems) -> Process {
        let profile = match self.profile.as_str() {
            "dev" => Some(Profile::Dev),
            "staging" => Some(Profile::Staging),
            "prod" => Some(Profile::Prod),
            other => {
                problems.add(
                    "profile",
                    format!("must be dev, staging or prod, not {other:?}"),
                );
                None
            }
        };
        let listen = self.listen.parse::<SocketAddr>().ok();
        if listen.is_none() {
            problems.add(
                "listen",
                format!(
                    "must be an address like 127.0.0.1:8080, not {:?}",
                    self.listen
                ),
            );
        }
        if self.data_dir.as_os_str().is_empty() {
            problems.add("data_dir", "must not be empty");
        }
        let process_type = match self.process_type.as_str() {
            "web" => ProcessType::Web,
            "worker" => ProcessType::Worker,
            other => {
                problems.add(
                    "process_type",
                    format!("must be web or worker, not {other:?}"),
                );
                ProcessType::Web
            }
        };
        problems.positive(&[
            ("snapshot_reload_interval", self.snapshot_reload_interval),
            (
                "snapshot_catch_up_interval",
                self.snapshot_catch_up_interval,
            ),
        ]);
        Process {
            profile,
            listen,
            data_dir: self.data_dir,
            process_type,
            worker_threads: match self.worker_threads {
                0 => std::thread::available_parallelism().map_or(1, usize::from),
                n => n,
            },
            bootstrap_admin_key: bootstrap_admin_key(self.bootstrap_admin_key, problems),
            snapshot_reload_interval: self.snapshot_reload_interval,
            snapshot_catch_up_interval: self.snapshot_catch_up_interval,
        }
    }
}

/// The operator's admin key, never echoed in a message.
fn bootstrap_admin_key(key: Option<String>, problems: &mut Problems) -> Option<SecretString> {
    match key {
        Some(key) if key.chars().count() < 32 => {
            problems.add(
                "bootstrap_admin_key",
                "must be at least 32 characters (keep it secret; it is an admin key)",
            );
            None
        }
        Some(key) if key.chars().any(|c| c.is_whitespace() || c.is_control()) => {
            problems.add(
                "bootstrap_admin_key",
                "must not contain whitespace or control characters",
            );
            None
        }
        other => other.map(SecretString::from),
    }
}

/// The process's lines of `check-config`.
pub(crate) fn render(config: &Config, out: &mut Lines) {
    out.quoted("profile", config.profile.as_str());
    out.quoted("listen", config.http.listen);
    out.quoted("data_dir", config.data_dir.display());
    out.quoted("process_type", config.process_type.as_str());
    out.plain("worker_threads", config.worker_threads);
    match config.bootstrap_admin_key {
        Some(_) => out.quoted("bootstrap_admin_key", "***"),
        None => out.unset("bootstrap_admin_key"),
    }
    out.duration("snapshot_reload_interval", config.snapshot_reload_interval);
    out.duration(
        "snapshot_catch_up_interval",
        config.snapshot_catch_up_interval,
    );
}
