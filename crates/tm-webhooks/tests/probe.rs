//! Probes against small servers on 127.0.0.1: the statuses that count as healthy,
//! redirects not followed, time-outs, TCP probes, TLS against a plain server, bodies never
//! read, connections not kept between probes, and the network policy on both paths (IP
//! literals and resolved names) for both HTTP and TCP.
//!
//! Every server here listens on 127.0.0.1 and lives only as long as its test's runtime.

use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use tm_webhooks::{NetworkPolicy, ProbeFailure, ProbeOk, ProbeProtocol, ProbeRequest, Prober};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const USER_AGENT: &str = "tm-probe-test/1";
/// A bound on every probe in these tests, well above the probes' own timeouts.
const TEST_BOUND: Duration = Duration::from_secs(10);
const HEALTHY: &[RangeInclusive<u16>] = &[200..=299];

/// What a recording server received: each request's method, path and query, and headers.
type Received = Arc<Mutex<Vec<(Method, String, HeaderMap)>>>;

fn loopback_policy() -> Arc<NetworkPolicy> {
    Arc::new(NetworkPolicy::new(vec!["127.0.0.0/8"
        .parse()
        .expect("network")]))
}

fn prober(policy: Arc<NetworkPolicy>) -> Prober {
    Prober::new(policy, USER_AGENT).expect("prober builds")
}

fn request<'a>(protocol: ProbeProtocol, host: &'a str, port: u16) -> ProbeRequest<'a> {
    ProbeRequest {
        protocol,
        host,
        port,
        path: "/",
        expected: HEALTHY,
        timeout: Duration::from_secs(5),
    }
}

async fn probe(prober: &Prober, request: &ProbeRequest<'_>) -> Result<ProbeOk, ProbeFailure> {
    tokio::time::timeout(TEST_BOUND, prober.probe(request))
        .await
        .expect("the probe ends within the test's bound")
}

/// A server on 127.0.0.1 that records every request and answers with `response`.
async fn recording_server(
    response: impl Fn() -> Response + Clone + Send + Sync + 'static,
) -> (SocketAddr, Received) {
    let received: Received = Arc::default();
    let store = Arc::clone(&received);
    let app = Router::new().fallback(any(move |method: Method, uri: Uri, headers: HeaderMap| {
        let store = Arc::clone(&store);
        let response = response.clone();
        async move {
            let target = uri
                .path_and_query()
                .map_or_else(String::new, ToString::to_string);
            store.lock().expect("lock").push((method, target, headers));
            response()
        }
    }));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (address, received)
}

/// A listener on 127.0.0.1 that accepts connections, counts them, and never answers.
async fn silent_server() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&accepted);
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            held.push(socket);
        }
    });
    (address, accepted)
}

/// A port on 127.0.0.1 that (almost surely) nothing listens on: bound, then let go.
async fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("address").port();
    drop(listener);
    port
}

#[tokio::test]
async fn healthy_http_sends_path_and_query_as_given() {
    let (address, received) = recording_server(|| StatusCode::OK.into_response()).await;
    let client = prober(loopback_policy());
    let path = "/health/deep?verbose=1&name=a%20b&x=%2F";
    let ok = probe(
        &client,
        &ProbeRequest {
            path,
            ..request(ProbeProtocol::Http, "127.0.0.1", address.port())
        },
    )
    .await
    .expect("healthy");
    assert_eq!(ok.status, Some(200));
    assert!(ok.elapsed < Duration::from_secs(5), "{:?}", ok.elapsed);

    let received = received.lock().expect("lock");
    assert_eq!(received.len(), 1);
    let (method, target, headers) = &received[0];
    assert_eq!(method, Method::GET);
    assert_eq!(target, path);
    assert_eq!(headers[header::USER_AGENT], USER_AGENT);
}

#[tokio::test]
async fn unexpected_status_is_a_failure() {
    let (address, _) = recording_server(|| StatusCode::SERVICE_UNAVAILABLE.into_response()).await;
    let client = prober(loopback_policy());
    let failure = probe(
        &client,
        &request(ProbeProtocol::Http, "127.0.0.1", address.port()),
    )
    .await
    .expect_err("503");
    assert_eq!(failure, ProbeFailure::Status(503));
    assert_eq!(failure.to_string(), "answered with status 503");
}

#[tokio::test]
async fn redirect_is_a_failure_and_not_followed() {
    let (other, other_received) = recording_server(|| StatusCode::OK.into_response()).await;
    let location = format!("http://{other}/elsewhere");
    let (address, received) = recording_server(move || {
        (StatusCode::FOUND, [(header::LOCATION, location.clone())]).into_response()
    })
    .await;
    let client = prober(loopback_policy());
    let failure = probe(
        &client,
        &request(ProbeProtocol::Http, "127.0.0.1", address.port()),
    )
    .await
    .expect_err("302");
    assert_eq!(failure, ProbeFailure::Status(302));
    assert_eq!(received.lock().expect("lock").len(), 1);
    assert!(
        other_received.lock().expect("lock").is_empty(),
        "the redirect target received nothing"
    );
}

#[tokio::test]
async fn any_expected_range_counts_as_healthy() {
    let expected = [200..=299, 401..=401];
    let client = prober(loopback_policy());
    for (status, healthy) in [(401, true), (204, true), (403, false), (400, false)] {
        let code = StatusCode::from_u16(status).expect("status");
        let (address, _) = recording_server(move || code.into_response()).await;
        let result = probe(
            &client,
            &ProbeRequest {
                expected: &expected,
                ..request(ProbeProtocol::Http, "127.0.0.1", address.port())
            },
        )
        .await;
        if healthy {
            assert_eq!(result.expect("healthy").status, Some(status));
        } else {
            assert_eq!(result, Err(ProbeFailure::Status(status)));
        }
    }
}

#[tokio::test]
async fn loopback_refused_by_default_policy_without_connecting() {
    let (address, accepted) = silent_server().await;
    let client = prober(Arc::new(NetworkPolicy::default()));
    let cases = [
        (ProbeProtocol::Http, "127.0.0.1"),
        (ProbeProtocol::Http, "localhost"),
        (ProbeProtocol::Http, "::ffff:127.0.0.1"),
        (ProbeProtocol::Https, "localhost"),
        (ProbeProtocol::Tcp, "127.0.0.1"),
        (ProbeProtocol::Tcp, "localhost"),
        (ProbeProtocol::Tcp, "::ffff:127.0.0.1"),
    ];
    for (protocol, host) in cases {
        let started = Instant::now();
        let failure = probe(&client, &request(protocol, host, address.port()))
            .await
            .expect_err("refused");
        assert!(
            matches!(&failure, ProbeFailure::Refused(_)),
            "{protocol:?} {host}: {failure:?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{protocol:?} {host}"
        );
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(accepted.load(Ordering::SeqCst), 0, "no connection was made");
}

#[tokio::test]
async fn refusal_messages_name_the_host_only() {
    let client = prober(Arc::new(NetworkPolicy::default()));
    let port = closed_port().await;
    for protocol in [ProbeProtocol::Http, ProbeProtocol::Tcp] {
        let by_name = probe(&client, &request(protocol, "localhost", port)).await;
        assert_eq!(
            by_name,
            Err(ProbeFailure::Refused(
                "host localhost resolves only to refused addresses".to_owned()
            )),
            "{protocol:?}"
        );
        let literal = probe(&client, &request(protocol, "169.254.169.254", 80)).await;
        assert_eq!(
            literal,
            Err(ProbeFailure::Refused(
                "address 169.254.169.254 is not allowed".to_owned()
            )),
            "{protocol:?}"
        );
    }
}

#[tokio::test]
async fn allowed_network_is_exact_for_ipv6_literals() {
    // The loopback policy allows 127.0.0.0/8, not ::1: the bare IPv6 literal is bracketed
    // into the URL, judged as a literal, and refused for both protocols.
    let client = prober(loopback_policy());
    for protocol in [ProbeProtocol::Http, ProbeProtocol::Tcp] {
        let failure = probe(&client, &request(protocol, "::1", 8080))
            .await
            .expect_err("refused");
        assert_eq!(
            failure,
            ProbeFailure::Refused("address ::1 is not allowed".to_owned()),
            "{protocol:?}"
        );
    }
}

#[tokio::test]
async fn silent_server_times_out() {
    let (address, accepted) = silent_server().await;
    let client = prober(loopback_policy());
    let started = Instant::now();
    let failure = probe(
        &client,
        &ProbeRequest {
            timeout: Duration::from_millis(300),
            ..request(ProbeProtocol::Http, "127.0.0.1", address.port())
        },
    )
    .await
    .expect_err("time-out");
    let elapsed = started.elapsed();
    assert_eq!(failure, ProbeFailure::TimedOut);
    assert!(elapsed >= Duration::from_millis(250), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(2), "{elapsed:?}");
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn tcp_open_port_is_healthy() {
    let (address, accepted) = silent_server().await;
    let client = prober(loopback_policy());
    // By literal, and by name: `localhost` may resolve to ::1 first, which this policy
    // refuses, so the probe must go on to 127.0.0.1.
    for host in ["127.0.0.1", "localhost"] {
        let ok = probe(&client, &request(ProbeProtocol::Tcp, host, address.port()))
            .await
            .expect("healthy");
        assert_eq!(ok.status, None, "{host}");
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn tcp_closed_port_is_a_connect_failure() {
    let port = closed_port().await;
    let client = prober(loopback_policy());
    let failure = probe(&client, &request(ProbeProtocol::Tcp, "127.0.0.1", port))
        .await
        .expect_err("closed");
    assert!(
        matches!(&failure, ProbeFailure::Connect(message) if message.starts_with("connection failed:")),
        "{failure:?}"
    );
    assert!(!failure.to_string().contains("127.0.0.1"), "{failure}");
}

#[tokio::test]
async fn http_closed_port_is_a_connect_failure() {
    let port = closed_port().await;
    let client = prober(loopback_policy());
    let failure = probe(&client, &request(ProbeProtocol::Http, "127.0.0.1", port))
        .await
        .expect_err("closed");
    assert!(matches!(&failure, ProbeFailure::Connect(_)), "{failure:?}");
}

#[tokio::test]
async fn https_against_plain_http_is_a_connect_failure() {
    let (address, _) = recording_server(|| StatusCode::OK.into_response()).await;
    let client = prober(loopback_policy());
    let failure = probe(
        &client,
        &request(ProbeProtocol::Https, "127.0.0.1", address.port()),
    )
    .await
    .expect_err("TLS fails");
    assert!(
        matches!(&failure, ProbeFailure::Connect(message) if message.starts_with("TLS failed:")),
        "{failure:?}"
    );
}

#[tokio::test]
async fn invalid_path_host_or_port_sends_nothing() {
    let (address, received) = recording_server(|| StatusCode::OK.into_response()).await;
    let client = prober(loopback_policy());
    let port = address.port();
    let cases = [
        ProbeRequest {
            path: "no-slash",
            ..request(ProbeProtocol::Http, "127.0.0.1", port)
        },
        ProbeRequest {
            path: "/a#fragment",
            ..request(ProbeProtocol::Http, "127.0.0.1", port)
        },
        request(ProbeProtocol::Http, "bad host", port),
        request(ProbeProtocol::Tcp, "", port),
        request(ProbeProtocol::Tcp, "127.0.0.1", 0),
    ];
    for case in &cases {
        let failure = probe(&client, case).await.expect_err("invalid");
        assert!(
            matches!(&failure, ProbeFailure::Invalid(_)),
            "{case:?}: {failure:?}"
        );
    }
    assert!(received.lock().expect("lock").is_empty());
}

#[tokio::test]
async fn endless_body_is_not_read() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let (written_tx, written_rx) = tokio::sync::oneshot::channel::<usize>();
    tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.expect("accept");
        let mut head = Vec::new();
        let mut buffer = [0_u8; 1024];
        while !head.windows(4).any(|window| window == b"\r\n\r\n") {
            let read = socket.read(&mut buffer).await.expect("read");
            assert!(read > 0, "the request head came whole");
            head.extend_from_slice(&buffer[..read]);
        }
        let answer =
            b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ntransfer-encoding: chunked\r\n\r\n";
        socket.write_all(answer).await.expect("head");
        // One never-ending chunked body: 64 KiB chunks until the client goes away.
        let chunk = [b'x'; 65_536];
        let mut written = 0;
        loop {
            let sent = async {
                socket.write_all(b"10000\r\n").await?;
                socket.write_all(&chunk).await?;
                socket.write_all(b"\r\n").await
            };
            if sent.await.is_err() {
                break;
            }
            written += chunk.len();
        }
        let _ = written_tx.send(written);
    });

    let client = prober(loopback_policy());
    let started = Instant::now();
    let ok = probe(
        &client,
        &request(ProbeProtocol::Http, "127.0.0.1", address.port()),
    )
    .await
    .expect("healthy");
    assert_eq!(ok.status, Some(200));
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    // The connection was closed with the body unread, so the server's writes fail soon.
    let written = tokio::time::timeout(Duration::from_secs(5), written_rx)
        .await
        .expect("the server saw the connection closed")
        .expect("written");
    assert!(written < 256 * 1024 * 1024, "{written} bytes written");
}

/// A hand-written HTTP/1.1 server on 127.0.0.1 that answers every request with an empty
/// 200 and keeps each connection open for more, in a task of its own that outlives the
/// listener: aborting the returned handle stops only new connections, as when an endpoint
/// goes down behind connections a pool could still hold. (axum closes idle connections
/// when its server is dropped, so it cannot play this part.)
async fn keep_alive_server() -> (SocketAddr, Arc<AtomicUsize>, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let answered = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&answered);
    let accepting = tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let count = Arc::clone(&count);
            tokio::spawn(async move {
                let mut pending = Vec::new();
                let mut buffer = [0_u8; 1024];
                loop {
                    let Ok(read) = socket.read(&mut buffer).await else {
                        return;
                    };
                    if read == 0 {
                        return;
                    }
                    pending.extend_from_slice(&buffer[..read]);
                    while let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                        pending.drain(..end + 4);
                        count.fetch_add(1, Ordering::SeqCst);
                        let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
                        if socket.write_all(answer).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    (address, answered, accepting)
}

#[tokio::test]
async fn no_connection_is_kept_between_probes() {
    let (address, answered, accepting) = keep_alive_server().await;
    let client = prober(loopback_policy());
    let probe_request = request(ProbeProtocol::Http, "127.0.0.1", address.port());
    assert_eq!(
        probe(&client, &probe_request)
            .await
            .expect("healthy")
            .status,
        Some(200)
    );
    // The endpoint goes down: no new connection is taken. A connection kept from the
    // first probe would still be answered; a fresh one is refused.
    accepting.abort();
    let _ = accepting.await;
    let failure = probe(&client, &probe_request).await.expect_err("down");
    assert!(matches!(&failure, ProbeFailure::Connect(_)), "{failure:?}");
    assert_eq!(answered.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn one_prober_serves_different_timeouts() {
    let (silent, _) = silent_server().await;
    let (address, _) = recording_server(|| StatusCode::OK.into_response()).await;
    let client = prober(loopback_policy());
    let short = ProbeRequest {
        timeout: Duration::from_millis(200),
        ..request(ProbeProtocol::Http, "127.0.0.1", silent.port())
    };
    let long = request(ProbeProtocol::Http, "127.0.0.1", address.port());
    let (short, long) = tokio::join!(probe(&client, &short), probe(&client, &long));
    assert_eq!(short, Err(ProbeFailure::TimedOut));
    assert_eq!(long.expect("healthy").status, Some(200));
}
