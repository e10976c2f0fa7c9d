//! An upstream endpoint for health probes to check: answers every GET with a status the
//! test sets (or alternates), and counts the probes it got.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;

#[derive(Default)]
struct Shared {
    status: AtomicU16,
    /// When not 0: the status of every other request (the first is `status`'s).
    flap_to: AtomicU16,
    hits: AtomicU64,
}

/// A loopback HTTP server standing for a route's upstream.
pub struct Upstream {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

async fn answer(State(shared): State<Arc<Shared>>) -> StatusCode {
    let n = shared.hits.fetch_add(1, Ordering::SeqCst);
    let flap_to = shared.flap_to.load(Ordering::SeqCst);
    let status = if flap_to != 0 && n % 2 == 1 {
        flap_to
    } else {
        shared.status.load(Ordering::SeqCst)
    };
    StatusCode::from_u16(status).unwrap_or(StatusCode::IM_A_TEAPOT)
}

impl Upstream {
    /// A server answering 200 until told otherwise.
    pub async fn start() -> Upstream {
        let shared = Arc::new(Shared::default());
        shared.status.store(200, Ordering::SeqCst);
        let app = axum::Router::new()
            .route("/", get(answer))
            .route("/{*path}", get(answer))
            .with_state(shared.clone());
        let (addr, task) = crate::serve_on_loopback(app).await;
        Upstream { addr, shared, task }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Answers `status` from now on.
    pub fn answer(&self, status: u16) {
        self.shared.flap_to.store(0, Ordering::SeqCst);
        self.shared.status.store(status, Ordering::SeqCst);
    }

    /// Alternates between `status` and `other`, request by request.
    pub fn flap(&self, status: u16, other: u16) {
        self.shared.status.store(status, Ordering::SeqCst);
        self.shared.flap_to.store(other, Ordering::SeqCst);
    }

    /// Requests answered so far.
    pub fn hits(&self) -> u64 {
        self.shared.hits.load(Ordering::SeqCst)
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}
