//! A webhook receiver of a test's own, on a loopback port: it verifies every request's
//! signature with the Standard Webhooks reference library (not the registry's own code)
//! and records what came, answering as the test tells it to.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use serde_json::Value;
use tokio::task::JoinHandle;

/// How the receiver answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// 204.
    Accept,
    /// This status, to every request.
    Status(u16),
    /// 503 to the first `n` requests, then 204.
    FailFirst(usize),
    /// Never answers (the connection stays open).
    Stall,
}

/// A request as received.
#[derive(Clone, Debug)]
pub struct Received {
    /// `webhook-id`.
    pub id: String,
    /// Whether its signature verified with the secret given (and its timestamp is
    /// recent).
    pub verified: bool,
    pub body: Value,
    /// Its W3C `traceparent`, if it had one.
    pub traceparent: Option<String>,
    /// When it arrived.
    pub at: std::time::SystemTime,
}

#[derive(Default)]
struct Shared {
    secret: Option<String>,
    answer: Option<Answer>,
    received: Vec<Received>,
}

/// One receiver, stopped when dropped.
pub struct WebhookReceiver {
    pub addr: SocketAddr,
    shared: Arc<Mutex<Shared>>,
    task: JoinHandle<()>,
}

async fn receive(
    State(shared): State<Arc<Mutex<Shared>>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let answer = {
        let mut shared = shared.lock().expect("lock");
        let verified = shared.secret.as_deref().is_some_and(|secret| {
            standardwebhooks::Webhook::new(secret)
                .and_then(|hook| hook.verify(&body, &headers))
                .is_ok()
        });
        let id = headers
            .get("webhook-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let traceparent = headers
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        shared.received.push(Received {
            at: std::time::SystemTime::now(),
            traceparent,
            id,
            verified,
            body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        });
        let answer = shared.answer.unwrap_or(Answer::Accept);
        match answer {
            Answer::FailFirst(n) if shared.received.len() <= n => Answer::Status(503),
            Answer::FailFirst(_) => Answer::Accept,
            other => other,
        }
    };
    match answer {
        Answer::Accept | Answer::FailFirst(_) => StatusCode::NO_CONTENT,
        Answer::Status(code) => StatusCode::from_u16(code).unwrap_or(StatusCode::IM_A_TEAPOT),
        Answer::Stall => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            StatusCode::NO_CONTENT
        }
    }
}

impl WebhookReceiver {
    pub async fn start() -> WebhookReceiver {
        let shared = Arc::new(Mutex::new(Shared::default()));
        let app = axum::Router::new()
            .route("/{*path}", post(receive))
            .with_state(shared.clone());
        let (addr, task) = crate::serve_on_loopback(app).await;
        WebhookReceiver { addr, shared, task }
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The secret signatures are verified with.
    pub fn set_secret(&self, secret: &str) {
        self.shared.lock().expect("lock").secret = Some(secret.to_owned());
    }

    pub fn answer(&self, answer: Answer) {
        self.shared.lock().expect("lock").answer = Some(answer);
    }

    /// Every request so far, in arrival order.
    pub fn received(&self) -> Vec<Received> {
        self.shared.lock().expect("lock").received.clone()
    }
}

impl Drop for WebhookReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}
