//! Connection hygiene: clients slow to send a request, connections left unused, more
//! connections than the cap, HTTP/2 limits, the drain on shutdown, and resolve's own
//! in-flight budget. Slow clients are raw TCP streams, so that the test decides every
//! byte and every pause.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use tm_testing::*;

use crate::raw::Raw;

const SVC: [(&str, &str); 3] = [("tenant", "acme"), ("service", "billing"), ("env", "prod")];

/// Longest a test waits for something that should happen well before.
const BOUND: Duration = Duration::from_secs(3);

async fn app_with_route(
    configure: impl Fn(&mut tm_config::RawConfig) + Send + Sync + 'static,
) -> TestApp {
    let app = TestApp::builder().configure(configure).spawn().await;
    app.create("acme", "billing", "prod", "v1", "http://a")
        .await;
    app.activate("acme", "billing", "prod", "v1")
        .await
        .assert_status(StatusCode::OK);
    app
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_stalling_in_its_headers_is_cut_off_while_resolve_answers() {
    let app = app_with_route(|raw| {
        raw.http.http_header_read_timeout = Duration::from_millis(300);
    })
    .await;
    let opened = Instant::now();
    let mut slow = Raw::connect(app.addr).await;
    slow.send("GET /api/v1/routes/resolve?tenant=acme HTTP/1.1\r\nHost: te")
        .await;
    let mut silent = Raw::connect(app.addr).await;
    // Meanwhile, others are served.
    app.resolve(&SVC).await.assert_status(StatusCode::OK);

    for (client, what) in [(&mut slow, "half a header"), (&mut silent, "nothing")] {
        assert!(
            client.closed(BOUND).await.is_some(),
            "a client that sent {what} is still connected"
        );
        assert!(
            opened.elapsed() >= Duration::from_millis(250),
            "closed after {:?}, before the header time-out",
            opened.elapsed()
        );
    }
    app.resolve(&SVC).await.assert_status(StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_stalling_in_its_body_gets_408_while_resolve_answers() {
    let app = app_with_route(|raw| {
        raw.http.http_body_read_timeout = Duration::from_millis(300);
    })
    .await;
    // Through the JSON extractor, and through the idempotency layer, which reads the
    // body itself.
    let mut plain = Raw::connect(app.addr).await;
    plain
        .post_half_a_body("/api/v1/routes", &app.admin_key, "")
        .await;
    let mut idempotent = Raw::connect(app.addr).await;
    idempotent
        .post_half_a_body(
            "/api/v1/routes/activate",
            &app.admin_key,
            "Idempotency-Key: slow-1\r\n",
        )
        .await;
    app.resolve(&SVC).await.assert_status(StatusCode::OK);

    for client in [&mut plain, &mut idempotent] {
        let started = Instant::now();
        let answer = tokio::time::timeout(BOUND, client.response())
            .await
            .expect("an answer before the bound")
            .expect("an answer before the connection closes");
        assert!(answer.starts_with("HTTP/1.1 408 "), "{answer}");
        assert!(answer.contains("application/problem+json"), "{answer}");
        assert!(answer.contains("request-timeout"), "{answer}");
        assert!(started.elapsed() < BOUND);
        assert!(
            client.closed(BOUND).await.is_some(),
            "the rest of the body is not waited for"
        );
    }
    app.resolve(&SVC).await.assert_status(StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_is_closed_after_the_idle_time_out() {
    let app = TestApp::builder()
        .configure(|raw| raw.http.http_idle_timeout = Duration::from_millis(300))
        .spawn()
        .await;
    let mut client = Raw::connect(app.addr).await;
    // A connection in use stays open however long it lives: requests 150 ms apart, for
    // twice the idle time-out, all on the one connection.
    for _ in 0..5 {
        client.get("/healthz").await;
        let answer = client.response().await.expect("answered");
        assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let took = client
        .closed(BOUND)
        .await
        .expect("an idle connection is closed");
    // 150 ms of it already passed in the loop's last pause.
    assert!(
        took >= Duration::from_millis(50),
        "closed {took:?} after, before the idle time-out"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_cap_wait_until_one_closes() {
    let app = TestApp::builder()
        .configure(|raw| raw.http.http_max_connections = 2)
        .spawn()
        .await;
    let mut open = Vec::new();
    for _ in 0..2 {
        let mut client = Raw::connect(app.addr).await;
        client.get("/healthz").await;
        assert!(client.response().await.is_some(), "served below the cap");
        open.push(client);
    }
    // The kernel completes the handshake; the server does not take the connection up.
    let mut third = Raw::connect(app.addr).await;
    third.get("/healthz").await;
    assert!(
        tokio::time::timeout(Duration::from_millis(500), third.response())
            .await
            .is_err(),
        "a third connection is served while two are open"
    );
    drop(open.pop());
    let answer = tokio::time::timeout(BOUND, third.response())
        .await
        .expect("served once a connection closed")
        .expect("answered");
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_limits_are_announced_to_the_client() {
    let app = TestApp::builder()
        .configure(|raw| raw.http.http2_max_concurrent_streams = 7)
        .spawn()
        .await;
    let mut client = Raw::connect(app.addr).await;
    // The HTTP/2 preface (h2c with prior knowledge) and an empty SETTINGS frame.
    client
        .0
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .await
        .expect("write");
    let mut header = [0u8; 9];
    tokio::time::timeout(BOUND, client.0.read_exact(&mut header))
        .await
        .expect("answered")
        .expect("a frame");
    assert_eq!(header[3], 0x4, "the server's first frame is its SETTINGS");
    let length = usize::from(header[1]) << 8 | usize::from(header[2]);
    let mut payload = vec![0u8; length];
    client.0.read_exact(&mut payload).await.expect("payload");
    let settings: Vec<(u16, u32)> = payload
        .chunks_exact(6)
        .map(|s| {
            (
                u16::from_be_bytes([s[0], s[1]]),
                u32::from_be_bytes([s[2], s[3], s[4], s[5]]),
            )
        })
        .collect();
    // SETTINGS_MAX_CONCURRENT_STREAMS is 0x3.
    assert!(settings.contains(&(0x3, 7)), "{settings:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resolve_answers_while_slow_writes_hold_every_other_slot() {
    let app = app_with_route(|raw| {
        raw.guards.max_in_flight = 4;
        raw.http.http_body_read_timeout = Duration::from_secs(30);
    })
    .await;
    // Slow writes until one is refused at once: the others then hold every slot, and
    // keep them (no other request is made meanwhile).
    let mut slow = Vec::new();
    let refused = loop {
        assert!(
            slow.len() <= 8,
            "{} slow writes and none refused",
            slow.len()
        );
        let mut client = Raw::connect(app.addr).await;
        client
            .post_half_a_body("/api/v1/routes", &app.admin_key, "")
            .await;
        match tokio::time::timeout(Duration::from_millis(200), client.response()).await {
            Ok(answer) => break answer.expect("an answer"),
            Err(_) => slow.push(client),
        }
    };
    assert!(refused.starts_with("HTTP/1.1 503 "), "{refused}");
    for _ in 0..20 {
        app.resolve(&SVC).await.assert_status(StatusCode::OK);
    }
    app.activate("acme", "billing", "prod", "v1")
        .await
        .problem(StatusCode::SERVICE_UNAVAILABLE);
    app.get("/api/v1/routes")
        .await
        .problem(StatusCode::SERVICE_UNAVAILABLE);
    drop(slow);
    eventually(BOUND, "the slots come back", || async {
        app.get("/api/v1/routes").await.status == StatusCode::OK
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_a_request_under_way_finish_and_closes_idle_connections_at_once() {
    let app = TestApp::builder().spawn().await;
    let addr = app.addr;
    let body =
        serde_json::to_string(&route("acme", "billing", "prod", "v1", "http://a")).expect("json");
    let mut writer = Raw::connect(addr).await;
    writer
        .send(&format!(
            "POST /api/v1/routes HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{}",
            app.admin_key,
            body.len(),
            &body[..10]
        ))
        .await;
    // A connection that never sent anything, and one kept alive after its request.
    let mut silent = Raw::connect(addr).await;
    let mut kept = Raw::connect(addr).await;
    kept.get("/healthz").await;
    assert!(kept.response().await.is_some());

    let stopping = tokio::spawn(app.stop());
    for (client, what) in [(&mut silent, "a silent"), (&mut kept, "an idle")] {
        assert!(
            client.closed(BOUND).await.is_some(),
            "{what} connection is closed on shutdown"
        );
    }
    eventually(BOUND, "connections are refused once stopping", || async {
        TcpStream::connect(addr).await.is_err()
    })
    .await;
    assert!(!stopping.is_finished(), "the write under way is waited for");
    writer.send(&body[10..]).await;
    let answer = tokio::time::timeout(BOUND, writer.response())
        .await
        .expect("answered")
        .expect("an answer");
    assert!(answer.starts_with("HTTP/1.1 201 "), "{answer}");
    tokio::time::timeout(BOUND, stopping)
        .await
        .expect("stopped once the write was answered")
        .expect("task")
        .expect("a clean stop");
}
