//! Deliveries against small servers on 127.0.0.1: signatures that verify with the
//! reference library, the status codes and their permanence, redirects not followed,
//! time-outs, and the network policy on both paths (IP literals and resolved names).
//!
//! Every server here listens on 127.0.0.1 and lives only as long as its test's runtime.
//! The one URL that is not loopback, the metadata address, is refused before any
//! connection is attempted.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use standardwebhooks::Webhook;
use tm_webhooks::{new_secret, secret_bytes, Deliverer, DeliveryError, NetworkPolicy};
use tokio::net::TcpListener;
use url::Url;

const USER_AGENT: &str = "tm-webhooks-test/1";
const BODY: &[u8] = br#"{"event":"route.updated","tenant":"acme","version":7}"#;
/// A bound on every delivery in these tests, well above the client's own timeouts.
const TEST_BOUND: Duration = Duration::from_secs(10);

/// What a recording server received: each request's headers and body.
type Received = Arc<Mutex<Vec<(HeaderMap, Bytes)>>>;

fn loopback_policy() -> Arc<NetworkPolicy> {
    Arc::new(NetworkPolicy::new(vec!["127.0.0.0/8"
        .parse()
        .expect("network")]))
}

fn deliverer(policy: Arc<NetworkPolicy>, timeout: Duration) -> Deliverer {
    Deliverer::new(policy, timeout, USER_AGENT).expect("client builds")
}

fn url(text: &str) -> Url {
    Url::parse(text).expect("url")
}

/// A server on 127.0.0.1 that records every request and answers with `response`.
async fn recording_server(response: fn() -> Response) -> (SocketAddr, Received) {
    let received: Received = Arc::default();
    let store = Arc::clone(&received);
    let app = Router::new().fallback(post(move |headers: HeaderMap, body: Bytes| {
        let store = Arc::clone(&store);
        async move {
            store.lock().expect("lock").push((headers, body));
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

async fn deliver(
    deliverer: &Deliverer,
    target: &Url,
    secret: &str,
) -> Result<tm_webhooks::Delivered, DeliveryError> {
    let key = secret_bytes(secret).expect("secret");
    tokio::time::timeout(
        TEST_BOUND,
        deliverer.deliver(target, "msg_01hz", &key, BODY.to_vec(), &[]),
    )
    .await
    .expect("the delivery ends within the test's bound")
}

#[tokio::test]
async fn delivers_signed_request_that_verifies_with_reference() {
    let (address, received) = recording_server(|| StatusCode::NO_CONTENT.into_response()).await;
    let secret = new_secret();
    let client = deliverer(loopback_policy(), Duration::from_secs(5));
    let target = url(&format!("http://{address}/hooks/acme?x=1"));

    let delivered = deliver(&client, &target, &secret).await.expect("delivered");
    assert_eq!(delivered.status, 204);

    let received = received.lock().expect("lock");
    assert_eq!(received.len(), 1);
    let (headers, body) = &received[0];
    assert_eq!(body.as_ref(), BODY);
    assert_eq!(headers["webhook-id"], "msg_01hz");
    assert_eq!(headers[header::CONTENT_TYPE], "application/json");
    assert_eq!(headers[header::USER_AGENT], USER_AGENT);
    assert!(headers["webhook-signature"]
        .to_str()
        .expect("ascii")
        .starts_with("v1,"));
    Webhook::new(&secret)
        .expect("reference accepts the secret")
        .verify(body, headers)
        .expect("the reference library verifies the delivery");
    assert!(Webhook::new(&new_secret())
        .expect("secret")
        .verify(body, headers)
        .is_err());
}

#[tokio::test]
async fn same_id_on_every_attempt() {
    let (address, received) =
        recording_server(|| StatusCode::SERVICE_UNAVAILABLE.into_response()).await;
    let secret = new_secret();
    let client = deliverer(loopback_policy(), Duration::from_secs(5));
    let target = url(&format!("http://{address}/"));
    for _ in 0..2 {
        let error = deliver(&client, &target, &secret).await.expect_err("503");
        assert_eq!(error, DeliveryError::Status(503));
    }
    let received = received.lock().expect("lock");
    assert_eq!(received.len(), 2);
    assert_eq!(received[0].0["webhook-id"], received[1].0["webhook-id"]);
}

#[tokio::test]
async fn server_error_is_status_500_and_retryable() {
    let (address, _) = recording_server(|| StatusCode::INTERNAL_SERVER_ERROR.into_response()).await;
    let client = deliverer(loopback_policy(), Duration::from_secs(5));
    let error = deliver(&client, &url(&format!("http://{address}/")), &new_secret())
        .await
        .expect_err("500");
    assert_eq!(error, DeliveryError::Status(500));
    assert!(!error.is_permanent());
}

#[tokio::test]
async fn not_found_is_permanent() {
    let (address, _) = recording_server(|| StatusCode::NOT_FOUND.into_response()).await;
    let client = deliverer(loopback_policy(), Duration::from_secs(5));
    let error = deliver(&client, &url(&format!("http://{address}/")), &new_secret())
        .await
        .expect_err("404");
    assert_eq!(error, DeliveryError::Status(404));
    assert!(error.is_permanent());
}

#[tokio::test]
async fn too_many_requests_is_retryable() {
    let (address, _) = recording_server(|| StatusCode::TOO_MANY_REQUESTS.into_response()).await;
    let client = deliverer(loopback_policy(), Duration::from_secs(5));
    let error = deliver(&client, &url(&format!("http://{address}/")), &new_secret())
        .await
        .expect_err("429");
    assert_eq!(error, DeliveryError::Status(429));
    assert!(!error.is_permanent());
}

#[tokio::test]
async fn redirect_is_not_followed() {
    let (other, other_received) = recording_server(|| StatusCode::OK.into_response()).await;
    // `recording_server` answers from a plain function, so the redirecting server, whose
    // answer depends on the other server's port, is built here.
    let location = format!("http://{other}/elsewhere");
    let app = Router::new().fallback(post(move || async move {
        (StatusCode::FOUND, [(header::LOCATION, location)]).into_response()
    }));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move { axum::serve(listener, app).await });

    let client = deliverer(loopback_policy(), Duration::from_secs(5));
    let error = deliver(&client, &url(&format!("http://{address}/")), &new_secret())
        .await
        .expect_err("302");
    assert_eq!(error, DeliveryError::Status(302));
    assert!(error.is_permanent());
    assert!(
        other_received.lock().expect("lock").is_empty(),
        "the redirect target received nothing"
    );
}

#[tokio::test]
async fn silent_server_times_out() {
    let (address, accepted) = silent_server().await;
    let timeout = Duration::from_millis(300);
    let client = deliverer(loopback_policy(), timeout);
    let started = Instant::now();
    let error = deliver(&client, &url(&format!("http://{address}/")), &new_secret())
        .await
        .expect_err("time-out");
    let elapsed = started.elapsed();
    assert_eq!(error, DeliveryError::TimedOut);
    assert!(!error.is_permanent());
    assert!(elapsed >= Duration::from_millis(250), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(2), "{elapsed:?}");
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn connection_refused_is_retryable() {
    // Bind then drop, so the port is (almost surely) closed.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    drop(listener);
    let client = deliverer(loopback_policy(), Duration::from_secs(5));
    let error = deliver(&client, &url(&format!("http://{address}/")), &new_secret())
        .await
        .expect_err("refused connection");
    assert!(matches!(error, DeliveryError::Connect(_)), "{error:?}");
    assert!(!error.is_permanent());
}

#[tokio::test]
async fn literal_loopback_refused_by_default_policy() {
    let (address, accepted) = silent_server().await;
    let client = deliverer(Arc::new(NetworkPolicy::default()), Duration::from_secs(5));
    for target in [
        format!("http://{address}/"),
        format!("http://[::ffff:127.0.0.1]:{}/", address.port()),
    ] {
        let error = deliver(&client, &url(&target), &new_secret())
            .await
            .expect_err("refused");
        assert!(
            matches!(error, DeliveryError::Refused(_)),
            "{target}: {error:?}"
        );
        assert!(error.is_permanent());
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(accepted.load(Ordering::SeqCst), 0, "no connection was made");
}

#[tokio::test]
async fn localhost_refused_by_default_policy_via_resolver() {
    let (address, accepted) = silent_server().await;
    let client = deliverer(Arc::new(NetworkPolicy::default()), Duration::from_secs(5));
    let target = url(&format!("http://localhost:{}/", address.port()));
    let error = deliver(&client, &target, &new_secret())
        .await
        .expect_err("refused");
    assert_eq!(
        error,
        DeliveryError::Refused("host localhost resolves only to refused addresses".to_owned())
    );
    assert!(error.is_permanent());
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(accepted.load(Ordering::SeqCst), 0, "no connection was made");
}

#[tokio::test]
async fn localhost_delivers_when_loopback_allowed() {
    let (address, received) = recording_server(|| StatusCode::OK.into_response()).await;
    let client = deliverer(loopback_policy(), Duration::from_secs(5));
    let target = url(&format!("http://localhost:{}/", address.port()));
    let delivered = deliver(&client, &target, &new_secret())
        .await
        .expect("delivered");
    assert_eq!(delivered.status, 200);
    assert_eq!(received.lock().expect("lock").len(), 1);
}

#[tokio::test]
async fn metadata_literal_refused_without_connecting() {
    // Even a policy allowing loopback refuses the metadata address, and does so before
    // any connection attempt: the literal is checked first, so this ends at once.
    let client = deliverer(loopback_policy(), Duration::from_millis(300));
    let started = Instant::now();
    let error = deliver(
        &client,
        &url("http://169.254.169.254/latest/meta-data/"),
        &new_secret(),
    )
    .await
    .expect_err("refused");
    assert_eq!(
        error,
        DeliveryError::Refused("address 169.254.169.254 is not allowed".to_owned())
    );
    assert!(started.elapsed() < Duration::from_millis(100));
}

#[tokio::test]
async fn invalid_id_is_refused_before_sending() {
    let (address, received) = recording_server(|| StatusCode::OK.into_response()).await;
    let client = deliverer(loopback_policy(), Duration::from_secs(5));
    let key = secret_bytes(&new_secret()).expect("secret");
    let error = client
        .deliver(
            &url(&format!("http://{address}/")),
            "msg\r\nx-injected: 1",
            &key,
            BODY.to_vec(),
            &[],
        )
        .await
        .expect_err("invalid id");
    assert!(matches!(error, DeliveryError::Invalid(_)), "{error:?}");
    assert!(error.is_permanent());
    assert!(received.lock().expect("lock").is_empty());
}

#[tokio::test]
async fn the_trace_context_given_is_sent_with_the_delivery() {
    let (address, received) = recording_server(|| StatusCode::NO_CONTENT.into_response()).await;
    let client = deliverer(loopback_policy(), Duration::from_secs(5));
    let key = secret_bytes(&new_secret()).expect("secret");
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let trace = [
        ("traceparent", traceparent.to_owned()),
        ("tracestate", "vendor=abc".to_owned()),
    ];
    client
        .deliver(
            &url(&format!("http://{address}/")),
            "msg_01hz",
            &key,
            BODY.to_vec(),
            &trace,
        )
        .await
        .expect("delivered");
    let received = received.lock().expect("lock");
    let (headers, _) = &received[0];
    assert_eq!(headers["traceparent"], traceparent);
    assert_eq!(headers["tracestate"], "vendor=abc");
}
