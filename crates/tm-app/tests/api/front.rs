//! Resolve as the HTTP/1 front serves it, byte by byte: kept-alive and pipelined
//! requests, heads that arrive in pieces, requests it leaves to hyper on the same
//! connection (HTTP/1.0, `Connection: close`, other endpoints, refused keys, oversized
//! heads), and its answers next to hyper's. With the fast path turned off, the same
//! tests hold for hyper alone.

use std::time::Duration;

use reqwest::StatusCode;
use tm_testing::*;

use crate::raw::Raw;

const QUERY: &str = "tenant=acme&service=billing&env=prod";

/// An app with one active route, and a reader key for it.
async fn app_with_route() -> (TestApp, String) {
    let app = TestApp::builder().spawn().await;
    app.create("acme", "billing", "prod", "v1", "http://10.0.0.7:8080")
        .await;
    app.activate("acme", "billing", "prod", "v1")
        .await
        .assert_status(StatusCode::OK);
    let key = app.create_key("reader", Some("acme")).await;
    (app, key)
}

/// A resolve of `query` with `key`, with `extra` header lines (each ending in CRLF).
fn resolve(query: &str, key: &str, extra: &str) -> String {
    format!(
        "GET /api/v1/routes/resolve?{query} HTTP/1.1\r\nHost: test\r\n\
         Authorization: Bearer {key}\r\n{extra}\r\n"
    )
}

/// The next answer on `client`, which must come.
async fn next(client: &mut Raw) -> Answer {
    let text = tokio::time::timeout(Duration::from_secs(5), client.response())
        .await
        .expect("an answer in time")
        .expect("an answer before the connection closed");
    Answer::parse(&text)
}

/// An answer as sent: status code, headers (names lower case) and body.
struct Answer {
    version: String,
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn parse(text: &str) -> Self {
        let (head, body) = text.split_once("\r\n\r\n").expect("a head");
        let mut lines = head.split("\r\n");
        let status_line = lines.next().expect("a status line");
        let mut parts = status_line.split(' ');
        let version = parts.next().expect("a version").to_owned();
        let status = parts.next().expect("a status").parse().expect("a number");
        let headers = lines
            .map(|l| {
                let (name, value) = l.split_once(':').expect("a header");
                (name.to_ascii_lowercase(), value.trim().to_owned())
            })
            .collect();
        Self {
            version,
            status,
            headers,
            body: body.to_owned(),
        }
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The names of its headers, sorted, each as many times as it was sent.
    fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.headers.iter().map(|(n, _)| n.as_str()).collect();
        names.sort_unstable();
        names
    }

    fn url(&self) -> String {
        let body: serde_json::Value = serde_json::from_str(&self.body).expect("JSON");
        body["url"].as_str().expect("a url").to_owned()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kept_alive_and_pipelined_resolves_are_answered_in_order() {
    let (app, key) = app_with_route().await;
    let mut client = Raw::connect(app.addr).await;
    for i in 0..3 {
        client
            .send(&resolve(QUERY, &key, &format!("X-Request-ID: one-{i}\r\n")))
            .await;
        let answer = next(&mut client).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        assert_eq!(answer.header("x-request-id"), Some(&*format!("one-{i}")));
        assert_eq!(answer.url(), "http://10.0.0.7:8080");
    }

    // Four requests in one write, the third for another endpoint (hyper's from there on)
    // and the last refused: answered in the order sent.
    let mut burst = String::new();
    for i in 0..2 {
        burst += &resolve(QUERY, &key, &format!("X-Request-ID: burst-{i}\r\n"));
    }
    burst += "GET /health/live HTTP/1.1\r\nHost: test\r\n\r\n";
    burst += &resolve("tenant=acme&service=nothing&env=prod", &key, "");
    client.send(&burst).await;
    for i in 0..2 {
        let answer = next(&mut client).await;
        assert_eq!(answer.status, 200);
        assert_eq!(answer.header("x-request-id"), Some(&*format!("burst-{i}")));
    }
    assert_eq!(next(&mut client).await.status, 200, "the liveness probe");
    let missing = next(&mut client).await;
    assert_eq!(missing.status, 404, "{}", missing.body);
    assert_eq!(
        missing.header("content-type"),
        Some("application/problem+json")
    );

    // Still open for more.
    client.send(&resolve(QUERY, &key, "")).await;
    assert_eq!(next(&mut client).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_sent_in_pieces_is_answered_once_whole() {
    let (app, key) = app_with_route().await;
    let mut client = Raw::connect(app.addr).await;
    let request = resolve(QUERY, &key, "");
    let (a, rest) = request.split_at(7);
    let (b, c) = rest.split_at(rest.len() - 3);
    for piece in [a, b, c] {
        client.send(piece).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(next(&mut client).await.status, 200);
    // Two requests, split across the boundary between them.
    let two = resolve(QUERY, &key, "X-Request-ID: first\r\n")
        + &resolve(QUERY, &key, "X-Request-ID: second\r\n");
    let (a, b) = two.split_at(two.len() / 2 + 11);
    client.send(a).await;
    let first = next(&mut client).await;
    assert_eq!(first.header("x-request-id"), Some("first"));
    client.send(b).await;
    let second = next(&mut client).await;
    assert_eq!(second.header("x-request-id"), Some("second"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unchanged_answer_has_no_body_and_the_connection_goes_on() {
    let (app, key) = app_with_route().await;
    let mut client = Raw::connect(app.addr).await;
    client.send(&resolve(QUERY, &key, "")).await;
    let first = next(&mut client).await;
    let etag = first.header("etag").expect("an entity tag").to_owned();
    client
        .send(&resolve(QUERY, &key, &format!("If-None-Match: {etag}\r\n")))
        .await;
    let unchanged = next(&mut client).await;
    assert_eq!(unchanged.status, 304);
    assert_eq!(unchanged.body, "");
    assert_eq!(unchanged.header("content-length"), None);
    assert_eq!(unchanged.header("etag"), Some(&*etag));
    client.send(&resolve(QUERY, &key, "")).await;
    assert_eq!(next(&mut client).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_1_0_and_connection_close_are_answered_then_closed() {
    let (app, key) = app_with_route().await;
    for (version, extra) in [("HTTP/1.0", ""), ("HTTP/1.1", "Connection: close\r\n")] {
        let mut client = Raw::connect(app.addr).await;
        client
            .send(&format!(
                "GET /api/v1/routes/resolve?{QUERY} {version}\r\nHost: test\r\n\
                 Authorization: Bearer {key}\r\n{extra}\r\n"
            ))
            .await;
        let answer = next(&mut client).await;
        assert_eq!(answer.status, 200, "{version} {extra}");
        assert_eq!(answer.url(), "http://10.0.0.7:8080");
        assert!(
            client.closed(Duration::from_secs(3)).await.is_some(),
            "{version} {extra}: still open"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_key_and_an_oversized_head_are_answered_as_hyper_answers_them() {
    let (app, key) = app_with_route().await;
    let mut client = Raw::connect(app.addr).await;
    client.send(&resolve(QUERY, "not-a-key", "")).await;
    let refused = next(&mut client).await;
    assert_eq!(refused.status, 401);
    assert_eq!(refused.header("www-authenticate"), Some("Bearer"));
    client.send(&resolve(QUERY, &key, "")).await;
    assert_eq!(next(&mut client).await.status, 200);

    // Longer than the front waits for, well within hyper's limits.
    let mut client = Raw::connect(app.addr).await;
    let padding = format!("X-Padding: {}\r\n", "p".repeat(20 * 1024));
    client.send(&resolve(QUERY, &key, &padding)).await;
    assert_eq!(next(&mut client).await.status, 200);
    client.send(&resolve(QUERY, &key, "")).await;
    assert_eq!(next(&mut client).await.status, 200);

    // A head hyper refuses.
    let mut client = Raw::connect(app.addr).await;
    client
        .send("GET /api/v1/routes/resolve?te nant HTTP/1.1\r\n\r\n")
        .await;
    assert_eq!(next(&mut client).await.status, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_front_answers_as_hyper_does() {
    let (app, key) = app_with_route().await;
    // The first request of a connection is the front's (with the fast path on); after
    // another endpoint's, the connection is hyper's.
    let mut front = Raw::connect(app.addr).await;
    let mut behind = Raw::connect(app.addr).await;
    behind
        .send("GET /health/live HTTP/1.1\r\nHost: test\r\n\r\n")
        .await;
    assert_eq!(next(&mut behind).await.status, 200);
    let cases = [
        (QUERY, "X-Correlation-ID: flow-9\r\n"),
        (QUERY, "If-None-Match: *\r\n"),
        ("tenant=acme&service=billing", ""),
        ("tenant=globex&service=billing&env=prod", ""),
        ("tenant=acme&service=Billing&env=prod&key=%E2%9C%93", ""),
    ];
    for (query, extra) in cases {
        front.send(&resolve(query, &key, extra)).await;
        behind.send(&resolve(query, &key, extra)).await;
        let (a, b) = (next(&mut front).await, next(&mut behind).await);
        if extra.starts_with("X-Correlation-ID") {
            assert_eq!(a.header("x-correlation-id"), Some("flow-9"));
            assert_eq!(b.header("x-correlation-id"), Some("flow-9"));
        }
        assert_eq!(a.version, b.version, "{query}");
        assert_eq!(a.status, b.status, "{query}");
        assert_eq!(a.names(), b.names(), "{query}");
        for name in a.names() {
            let varying = [
                "date",
                "x-request-id",
                "x-correlation-id",
                "x-rate-limit-remaining",
            ];
            if !varying.contains(&name) {
                assert_eq!(a.header(name), b.header(name), "{query}: {name}");
            }
        }
        let (mut a, mut b): (serde_json::Value, serde_json::Value) = (
            serde_json::from_str(&a.body).unwrap_or_default(),
            serde_json::from_str(&b.body).unwrap_or_default(),
        );
        for body in [&mut a, &mut b] {
            if let Some(problem) = body.as_object_mut() {
                problem.remove("instance");
            }
        }
        assert_eq!(a, b, "{query}");
    }
}
