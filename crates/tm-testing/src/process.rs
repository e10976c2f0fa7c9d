//! A server process a test started: stopped with SIGKILL (and reaped) when asked or
//! dropped, and sent other signals by its PID.

use std::process::{Child, Command};

/// A server process, or none while it is stopped.
#[derive(Default)]
pub(crate) struct Server(Option<Child>);

impl Server {
    pub(crate) fn set(&mut self, child: Child) {
        self.0 = Some(child);
    }

    pub(crate) fn is_running(&self) -> bool {
        self.0.is_some()
    }

    /// Whether it was started and has exited since.
    pub(crate) fn exited(&mut self) -> bool {
        self.0
            .as_mut()
            .is_some_and(|child| !matches!(child.try_wait(), Ok(None)))
    }

    /// SIGKILL, and waits for the process to be gone.
    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends `signal` (e.g. `STOP`, `CONT`).
    pub(crate) fn signal(&self, signal: &str) {
        let pid = self.0.as_ref().expect("running").id().to_string();
        assert!(Command::new("kill")
            .args([&format!("-{signal}"), &pid])
            .status()
            .expect("kill")
            .success());
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}
