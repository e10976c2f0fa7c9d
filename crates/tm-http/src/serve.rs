//! The server loop: accepts connections up to a cap, serves each with the HTTP/1 front
//! (see [`crate::front`]) while it takes the requests, then with hyper (HTTP/1.1, and
//! HTTP/2 over cleartext), cuts off clients that are slow to send a request's headers or
//! body or that hold a connection unused, and drains on shutdown.
//!
//! hyper's own HTTP/1 header time-out is not used: it also runs while a kept-alive
//! connection waits for its next request, so it would close idle connections at the
//! header time-out rather than the idle one. [`Activity`] times both instead.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::ConnectInfo;
use axum::http::{Request, Version};
use axum::response::Response;
use axum::Router;
use bytes::{Buf, BytesMut};
use futures::future::Either;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tm_config::ConnectionLimits;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;
use tower::util::Oneshot;
use tower::ServiceExt;

use crate::AppState;

/// Serves the API on `listener` until `shutdown` is cancelled, then stops accepting,
/// lets the requests under way finish, closes every connection and returns.
///
/// At most `TM_HTTP_MAX_CONNECTIONS` connections are open at once: further clients wait
/// in the listen backlog until one closes. Errors accepting a connection are logged and
/// never end the loop (a full file table empties again).
pub async fn serve(listener: TcpListener, state: AppState, shutdown: CancellationToken) {
    let limits = Arc::new(state.config.connections.clone());
    let builder = Arc::new(builder(&limits));
    let router = crate::router(state.clone());
    let slots = Arc::new(Semaphore::new(
        usize::try_from(limits.max_connections).unwrap_or(Semaphore::MAX_PERMITS),
    ));
    let mut connections = JoinSet::new();
    loop {
        let (stream, remote, slot) = tokio::select! {
            () = shutdown.cancelled() => break,
            Some(ended) = connections.join_next() => {
                report(ended);
                continue;
            }
            accepted = accept(&listener, &slots) => accepted,
        };
        let connection = Connection {
            state: state.clone(),
            builder: builder.clone(),
            service: service(&state, router.clone(), remote, limits.body_read_timeout),
            limits: limits.clone(),
            shutdown: shutdown.clone(),
            _slot: slot,
        };
        connections.spawn(connection.run(stream));
    }
    drop(listener);
    // Watches answer at once with what they have, so that their connections can drain.
    state.closing.cancel();
    while let Some(ended) = connections.join_next().await {
        report(ended);
    }
}

/// hyper's connection builder with the HTTP/2 limits.
fn builder(limits: &ConnectionLimits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // Ours instead (see the module's documentation).
    builder.http1().header_read_timeout(None);
    builder
        .http2()
        .max_concurrent_streams(limits.http2_max_concurrent_streams)
        .max_pending_accept_reset_streams(as_usize(limits.http2_max_pending_accept_reset_streams))
        .max_local_error_reset_streams(as_usize(limits.http2_max_local_error_reset_streams));
    builder
}

fn as_usize(n: u32) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

/// What answers the requests of one connection, from `remote`: the resolve fast path
/// for the resolves it takes (see [`crate::fast`]), else the router, given each
/// request's `ConnectInfo` and a body that must arrive within `body_read_timeout`.
///
/// The one place every request passes on its way from hyper to the application.
fn service(
    state: &AppState,
    router: Router,
    remote: SocketAddr,
    body_read_timeout: Duration,
) -> impl Fn(Request<Incoming>) -> Answer + Clone {
    let state = state.clone();
    move |request: Request<Incoming>| {
        if let Some(response) = crate::fast::resolve(&state, &request) {
            return Either::Left(std::future::ready(Ok(response)));
        }
        let mut request = request.map(|body| within(body, body_read_timeout));
        request.extensions_mut().insert(ConnectInfo(remote));
        Either::Right(router.clone().oneshot(request))
    }
}

/// The answer to one request: ready at once from the fast path, or the router's.
type Answer =
    Either<std::future::Ready<Result<Response, Infallible>>, Oneshot<Router, Request<Body>>>;

/// Accepts the next connection once fewer than the cap are open; the slot taken is
/// given back when the connection closes.
async fn accept(
    listener: &TcpListener,
    slots: &Arc<Semaphore>,
) -> (TcpStream, SocketAddr, OwnedSemaphorePermit) {
    let slot = slots
        .clone()
        .acquire_owned()
        .await
        .expect("the semaphore is never closed");
    loop {
        match listener.accept().await {
            Ok((stream, remote)) => return (stream, remote, slot),
            // The client gave up before it was accepted: nothing to do.
            Err(e) if is_connection_error(&e) => {}
            Err(e) => {
                // Out of file descriptors, most likely: wait for some to close rather
                // than spin (as hyper and axum do).
                tracing::error!(error = %e, "accepting a connection failed; retrying in 1s");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// Logs a connection task that panicked (an error serving one is the client's business).
fn report(ended: Result<(), tokio::task::JoinError>) {
    if let Err(e) = ended {
        if e.is_panic() {
            tracing::error!(error = %e, "a connection's task panicked");
        }
    }
}

/// One accepted connection and what it needs to be served.
struct Connection<F> {
    state: AppState,
    builder: Arc<auto::Builder<TokioExecutor>>,
    service: F,
    limits: Arc<ConnectionLimits>,
    shutdown: CancellationToken,
    /// Held for its `Drop`: the connection's place under the cap.
    _slot: OwnedSemaphorePermit,
}

impl<F, A> Connection<F>
where
    F: Fn(Request<Incoming>) -> A + Clone + Send + Sync + 'static,
    A: Future<Output = Result<Response, Infallible>> + Send + 'static,
{
    /// Serves the connection until it closes, the client is too slow or idle for too
    /// long, or shutdown has let its requests finish.
    async fn run(self, stream: TcpStream) {
        let activity = Arc::new(Activity::new());
        let mut watched = Watched {
            stream,
            activity: activity.clone(),
            ahead: Bytes::new(),
        };
        if self.state.config.resolve_ahead() {
            match self.front(&mut watched, &activity).await {
                Some(unanswered) => watched.ahead = unanswered,
                None => return,
            }
        }
        let io = TokioIo::new(watched);
        let service = {
            let (activity, answer) = (activity.clone(), self.service.clone());
            hyper::service::service_fn(move |request: Request<Incoming>| {
                let under_way = activity.request_started(request.version());
                let answered = answer(request);
                async move {
                    let response = answered.await;
                    drop(under_way);
                    response
                }
            })
        };
        let mut conn = pin!(self.builder.serve_connection(io, service));
        let mut closing = false;
        loop {
            tokio::select! {
                biased;
                _ = conn.as_mut() => break,
                () = self.shutdown.cancelled(), if !closing => {
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                }
                expired = activity.expired(&self.limits, closing) => match expired {
                    Expired::Idle if !closing => {
                        closing = true;
                        conn.as_mut().graceful_shutdown();
                    }
                    // A head begun and never finished, or a connection still open an idle
                    // period after being asked to close: dropped, which closes it.
                    Expired::Idle | Expired::Header => {
                        tracing::debug!(reason = ?expired, "closing a connection");
                        break;
                    }
                },
            }
        }
    }

    /// Serves the connection with the HTTP/1 front until a request is not one it takes:
    /// the bytes read and not answered, for hyper to read first; `None` once the
    /// connection is closed (by the client, an error, a time-out or shutdown).
    async fn front(&self, io: &mut Watched, activity: &Arc<Activity>) -> Option<Bytes> {
        let mut served = pin!(front(&self.state, io, activity, &self.shutdown));
        let mut closing = false;
        loop {
            tokio::select! {
                biased;
                unanswered = served.as_mut() => return unanswered,
                () = self.shutdown.cancelled(), if !closing => {
                    // Nothing under way: nothing to finish. Else the answer being written
                    // is finished first, and the front stops after it.
                    if !activity.busy() {
                        return None;
                    }
                    closing = true;
                }
                expired = activity.expired(&self.limits, closing) => {
                    tracing::debug!(reason = ?expired, "closing a connection");
                    return None;
                }
            }
        }
    }
}

/// What the front reads ahead of a head, and writes at once.
const FRONT_BUFFER: usize = 8 * 1024;

/// The HTTP/1 front's loop: answers every whole request the front takes as it arrives,
/// pipelined ones in order and written together, until one it does not take (`Some`:
/// the bytes from that one on) or the connection closes (`None`). Stops after the
/// answers under way once `shutdown` is cancelled.
async fn front(
    state: &AppState,
    io: &mut Watched,
    activity: &Arc<Activity>,
    shutdown: &CancellationToken,
) -> Option<Bytes> {
    let mut read = BytesMut::with_capacity(FRONT_BUFFER);
    let mut written = Vec::with_capacity(FRONT_BUFFER);
    loop {
        let mut under_way = None;
        let hand_off = loop {
            if read.is_empty() {
                break false;
            }
            // The snapshot is held for one request and never across an await.
            let refused = {
                let snapshot = state.routing.snapshot();
                match crate::front::step(state, &snapshot, &read) {
                    crate::front::Step::Taken { consumed, taken } => {
                        under_way.get_or_insert_with(|| activity.request_started(Version::HTTP_11));
                        read.advance(consumed);
                        taken.write(state, &mut written)
                    }
                    crate::front::Step::Partial => break false,
                    crate::front::Step::HandOff => break true,
                }
            };
            if let Some(refusal) = refused {
                crate::fast::write_response(&mut written, refusal).await;
            }
        };
        if !written.is_empty() {
            io.write_all(&written).await.ok()?;
            written.clear();
        }
        if under_way.take().is_some() && !read.is_empty() {
            // The next request's head, begun before the answers were written.
            activity.read();
        }
        if hand_off {
            return Some(read.freeze());
        }
        if shutdown.is_cancelled() {
            return None;
        }
        if read.capacity() - read.len() < FRONT_BUFFER / 2 {
            read.reserve(FRONT_BUFFER);
        }
        match io.read_buf(&mut read).await {
            Ok(0) | Err(_) => return None,
            Ok(_) => {}
        }
    }
}

/// Why a connection is closed.
#[derive(Debug)]
enum Expired {
    /// No request under way, nor begun, for the idle time-out.
    Idle,
    /// A request's head begun and not complete within the header time-out.
    Header,
}

/// What one connection is doing, as its requests and its reads tell: enough to time
/// out a slow header or an idle connection without a timer per request.
struct Activity {
    opened: Instant,
    /// Requests whose answer is not yet made.
    under_way: AtomicU32,
    /// When (milliseconds after `opened`) the last request's answer was made.
    idle_since: AtomicU64,
    /// When the first byte after that was read: a request's head begun; [`NO_HEAD`] if none.
    head_since: AtomicU64,
    /// HTTP/2: reads are frames of any stream or of the connection, not a request's head.
    multiplexed: AtomicBool,
}

const NO_HEAD: u64 = u64::MAX;

impl Activity {
    /// A connection just opened: its first request's head counts from now.
    fn new() -> Self {
        Self {
            opened: Instant::now(),
            under_way: AtomicU32::new(0),
            idle_since: AtomicU64::new(0),
            head_since: AtomicU64::new(0),
            multiplexed: AtomicBool::new(false),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(NO_HEAD - 1)
    }

    /// A request's head is complete; until the guard is dropped, it is under way.
    fn request_started(self: &Arc<Self>, version: Version) -> UnderWay {
        if version == Version::HTTP_2 {
            self.multiplexed.store(true, Ordering::Relaxed);
        }
        self.under_way.fetch_add(1, Ordering::AcqRel);
        UnderWay(self.clone())
    }

    /// Whether a request is under way.
    fn busy(&self) -> bool {
        self.under_way.load(Ordering::Acquire) > 0
    }

    /// Bytes were read: with no request under way, they begin the next one's head.
    fn read(&self) {
        if self.head_since.load(Ordering::Relaxed) == NO_HEAD
            && self.under_way.load(Ordering::Acquire) == 0
        {
            self.head_since.store(self.now(), Ordering::Release);
        }
    }

    /// Waits until the connection has been idle, or in the middle of a head, for too
    /// long. While `closing`, an idle connection is given a second idle period to close.
    async fn expired(&self, limits: &ConnectionLimits, closing: bool) -> Expired {
        let header = millis(limits.header_read_timeout);
        let idle = millis(limits.idle_timeout).saturating_mul(if closing { 2 } else { 1 });
        // No change of state brings a deadline nearer than this from now, so sleeping no
        // longer between looks, the watch needs no waking: requests pay for no timer.
        let step = header.min(idle);
        loop {
            let now = self.now();
            let head = self.head_since.load(Ordering::Acquire);
            let (deadline, expired) = if self.under_way.load(Ordering::Acquire) > 0 {
                // No deadline: the body time-out covers a request under way.
                (u64::MAX, Expired::Idle)
            } else if head != NO_HEAD && !self.multiplexed.load(Ordering::Relaxed) {
                (head.saturating_add(header), Expired::Header)
            } else {
                let since = self.idle_since.load(Ordering::Acquire);
                (since.saturating_add(idle), Expired::Idle)
            };
            if now >= deadline {
                return expired;
            }
            let next_look = deadline.min(now.saturating_add(step));
            tokio::time::sleep_until(self.opened + Duration::from_millis(next_look)).await;
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A request under way; dropped when its answer is made (or the request abandoned).
struct UnderWay(Arc<Activity>);

impl Drop for UnderWay {
    fn drop(&mut self) {
        let activity = &self.0;
        if activity.under_way.fetch_sub(1, Ordering::AcqRel) == 1 {
            activity.idle_since.store(activity.now(), Ordering::Release);
            activity.head_since.store(NO_HEAD, Ordering::Release);
        }
    }
}

/// The connection's socket, telling its [`Activity`] of every read; the bytes the front
/// read ahead and did not answer are read first.
struct Watched {
    stream: TcpStream,
    activity: Arc<Activity>,
    ahead: Bytes,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.ahead.is_empty() {
            let n = self.ahead.len().min(buf.remaining());
            buf.put_slice(&self.ahead.split_to(n));
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let read = Pin::new(&mut self.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.read();
        }
        read
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// A request body that must be whole within `timeout` of now. A body already complete
/// (none at all, as on most `GET`s) is passed through as it is.
fn within(body: Incoming, timeout: Duration) -> Body {
    if http_body::Body::is_end_stream(&body) {
        return Body::new(body);
    }
    Body::new(Deadline {
        body,
        at: Instant::now() + timeout,
        timer: None,
    })
}

/// What reading a body answers once its time is up; [`is_body_timeout`] finds it.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive in time")]
pub(crate) struct BodyTimedOut;

/// Whether `err`, or an error behind it, is a body that did not arrive in time.
pub(crate) fn is_body_timeout(err: &(dyn std::error::Error + 'static)) -> bool {
    std::iter::successors(Some(err), |e| e.source()).any(|e| e.is::<BodyTimedOut>())
}

/// A body read against a deadline. The timer is made only if the body has to be waited
/// for: one that arrives with its headers costs none.
struct Deadline {
    body: Incoming,
    at: Instant,
    timer: Option<Pin<Box<Sleep>>>,
}

impl http_body::Body for Deadline {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        if let Poll::Ready(frame) = Pin::new(&mut this.body).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        let at = this.at;
        let timer = this
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
        ready!(timer.as_mut().poll(cx));
        Poll::Ready(Some(Err(Box::new(BodyTimedOut))))
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
