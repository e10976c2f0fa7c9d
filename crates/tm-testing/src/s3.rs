//! An S3-compatible object store of a test's own: moto's standalone server (from PyPI)
//! when `TM_TEST_S3_SERVER` names its `moto_server` script (the test command installs
//! it), on a loopback port, stopped by its PID when dropped. It speaks the S3 REST
//! protocol (SigV4-signed requests, multipart uploads, ListObjectsV2), which is what the
//! application's backups use against any S3-compatible storage.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::process::Server;
use crate::{eventually_blocking, free_port};

/// The credentials the server is given (it accepts any); what a client must sign with.
pub const S3_ACCESS_KEY: &str = "test-access-key";
pub const S3_SECRET_KEY: &str = "test-secret-key";
pub const S3_REGION: &str = "us-east-1";

pub struct S3Server {
    _process: Server,
    pub port: u16,
}

impl S3Server {
    /// Starts a server; `None` when `TM_TEST_S3_SERVER` is not set.
    pub fn start() -> Option<S3Server> {
        let script = std::env::var_os("TM_TEST_S3_SERVER").map(PathBuf::from)?;
        let port = free_port();
        let child = Command::new(script)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("moto_server starts");
        let mut process = Server::default();
        process.set(child);
        let what = format!("the S3 server on port {port} accepting connections");
        eventually_blocking(Duration::from_secs(30), &what, || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        Some(S3Server {
            _process: process,
            port,
        })
    }

    /// `http://127.0.0.1:<port>`: what `AWS_ENDPOINT_URL` is set to.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The `AWS_*` settings a client of this server needs.
    pub fn env(&self) -> [(&'static str, String); 4] {
        [
            ("AWS_ACCESS_KEY_ID", S3_ACCESS_KEY.to_owned()),
            ("AWS_SECRET_ACCESS_KEY", S3_SECRET_KEY.to_owned()),
            ("AWS_REGION", S3_REGION.to_owned()),
            ("AWS_ENDPOINT_URL", self.endpoint()),
        ]
    }

    /// Creates a bucket (`PUT /<bucket>`).
    pub async fn create_bucket(&self, bucket: &str) {
        let reply = reqwest::Client::new()
            .put(format!("{}/{bucket}", self.endpoint()))
            .send()
            .await
            .expect("the S3 server answers");
        assert!(
            reply.status().is_success(),
            "create bucket: {}",
            reply.status()
        );
    }

    /// The keys of the objects in `bucket` under `prefix` (ListObjectsV2), sorted.
    pub async fn keys(&self, bucket: &str, prefix: &str) -> Vec<String> {
        let reply = reqwest::Client::new()
            .get(format!(
                "{}/{bucket}?list-type=2&prefix={prefix}",
                self.endpoint()
            ))
            .send()
            .await
            .expect("the S3 server answers");
        assert!(reply.status().is_success(), "list: {}", reply.status());
        let xml = reply.text().await.expect("a listing");
        let mut keys: Vec<String> = xml
            .split("<Key>")
            .skip(1)
            .filter_map(|rest| rest.split_once("</Key>").map(|(key, _)| key.to_owned()))
            .collect();
        keys.sort();
        keys
    }
}
