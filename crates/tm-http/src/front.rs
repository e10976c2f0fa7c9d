//! The HTTP/1 front: what a connection's first bytes are read by. It parses each
//! request's head itself (with httparse, hyper's own parser) and answers the plain
//! HTTP/1.1 resolves that the fast path takes, writing the answer's bytes directly; at
//! the first request it does not take, it hands the connection, with every byte read and
//! not answered, to hyper for good. hyper then sees the connection as if it had read it
//! from the start, so everything but a plain resolve is served exactly as before.
//!
//! Taken: `GET /api/v1/routes/resolve` over HTTP/1.1, kept alive, without a body, an
//! `Origin`, an `Upgrade` or an `Expect`, whose query is plain RFC 3986 text, with a live
//! key. A head that is not whole yet is waited for up to [`MAX_HEAD`] bytes; anything
//! hyper would refuse or treat specially (HTTP/1.0, `Connection: close`, HTTP/2's
//! preface, a malformed or oversized head) is handed over before anything is done for it.

use crate::fast::{self, Taken, RESOLVE_PATH};
use crate::AppState;
use tm_domain::RoutingSnapshot;

/// Most headers a head the front takes may have; one with more is hyper's.
const MAX_HEADERS: usize = 32;

/// Longest head the front waits for; a longer one is hyper's, whose limits apply.
pub(crate) const MAX_HEAD: usize = 8 * 1024;

/// What the front makes of the bytes at the start of a connection's buffer.
#[expect(
    clippy::large_enum_variant,
    reason = "made once per request and matched at once: boxing it would allocate per resolve"
)]
pub(crate) enum Step<'s> {
    /// A resolve taken, whose head was the first `consumed` bytes.
    Taken { consumed: usize, taken: Taken<'s> },
    /// The head is not whole yet.
    Partial,
    /// Not a request the front takes: the connection is hyper's from here.
    HandOff,
}

/// Reads the request at the start of `buf`, to be answered from `snapshot`.
pub(crate) fn step<'s>(state: &AppState, snapshot: &'s RoutingSnapshot, buf: &[u8]) -> Step<'s> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let consumed = match request.parse(buf) {
        Ok(httparse::Status::Complete(consumed)) => consumed,
        Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => return Step::Partial,
        _ => return Step::HandOff,
    };
    let Some(query) = plain_resolve(&request) else {
        return Step::HandOff;
    };
    match fast::take(state, snapshot, query, request.headers) {
        Some(taken) => Step::Taken { consumed, taken },
        None => Step::HandOff,
    }
}

/// The query of a plain HTTP/1.1 resolve (`Some(None)`: none), or `None` for any other
/// request.
fn plain_resolve<'b>(request: &httparse::Request<'_, 'b>) -> Option<Option<&'b str>> {
    if request.method != Some("GET") || request.version != Some(1) {
        return None;
    }
    let target = request.path?;
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (target, None),
    };
    if path != RESOLVE_PATH || !query.unwrap_or_default().bytes().all(is_query_byte) {
        return None;
    }
    let plain = request.headers.iter().all(|h| {
        let name = h.name;
        let special = ["content-length", "transfer-encoding", "upgrade", "expect"]
            .iter()
            .any(|n| name.eq_ignore_ascii_case(n));
        !special
            && (!name.eq_ignore_ascii_case("connection")
                || h.value.trim_ascii().eq_ignore_ascii_case(b"keep-alive"))
    });
    plain.then_some(query)
}

/// RFC 3986's query characters: unreserved, percent-encoded, sub-delimiters, `:`, `@`,
/// `/` and `?`.
fn is_query_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'.'
                | b'_'
                | b'~'
                | b'%'
                | b'!'
                | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b';'
                | b'='
                | b':'
                | b'@'
                | b'/'
                | b'?'
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What [`plain_resolve`] makes of `head`; `Err` for a head that does not parse whole.
    fn plain(head: &str) -> Result<Option<Option<String>>, ()> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut request = httparse::Request::new(&mut headers);
        match request.parse(head.as_bytes()) {
            Ok(httparse::Status::Complete(_)) => {
                Ok(plain_resolve(&request).map(|q| q.map(str::to_owned)))
            }
            _ => Err(()),
        }
    }

    #[test]
    fn only_plain_kept_alive_resolves_are_taken() {
        let taken = [
            (
                "GET /api/v1/routes/resolve?tenant=a&service=b&env=c HTTP/1.1\r\n\r\n",
                Some("tenant=a&service=b&env=c"),
            ),
            (
                "GET /api/v1/routes/resolve HTTP/1.1\r\nHost: x\r\n\r\n",
                None,
            ),
            (
                "GET /api/v1/routes/resolve?key=%E2%9C%93&x=(a)*,b;c:d@e/f?g HTTP/1.1\r\n\r\n",
                Some("key=%E2%9C%93&x=(a)*,b;c:d@e/f?g"),
            ),
            (
                "GET /api/v1/routes/resolve?a=b HTTP/1.1\r\nConnection: Keep-Alive \r\n\r\n",
                Some("a=b"),
            ),
        ];
        for (head, query) in taken {
            assert_eq!(plain(head), Ok(Some(query.map(str::to_owned))), "{head}");
        }
        let left = [
            "POST /api/v1/routes/resolve?a=b HTTP/1.1\r\n\r\n",
            "HEAD /api/v1/routes/resolve?a=b HTTP/1.1\r\n\r\n",
            "GET /api/v1/routes/resolve?a=b HTTP/1.0\r\n\r\n",
            "GET /api/v1/routes/resolve/?a=b HTTP/1.1\r\n\r\n",
            "GET /api/v1/routes/resolvez HTTP/1.1\r\n\r\n",
            "GET http://x/api/v1/routes/resolve?a=b HTTP/1.1\r\n\r\n",
            "GET /api/v1/routes/resolve?a=b#f HTTP/1.1\r\n\r\n",
            "GET /api/v1/routes/resolve?a={b} HTTP/1.1\r\n\r\n",
            "GET /api/v1/routes/resolve?a=\"b\" HTTP/1.1\r\n\r\n",
            "GET /api/v1/routes/resolve?a=b HTTP/1.1\r\nConnection: close\r\n\r\n",
            "GET /api/v1/routes/resolve?a=b HTTP/1.1\r\nconnection: upgrade\r\nUpgrade: h2c\r\n\r\n",
            "GET /api/v1/routes/resolve?a=b HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
            "GET /api/v1/routes/resolve?a=b HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            "GET /api/v1/routes/resolve?a=b HTTP/1.1\r\nExpect: 100-continue\r\n\r\n",
        ];
        for head in left {
            assert_eq!(plain(head), Ok(None), "{head}");
        }
        // HTTP/2's preface is not an HTTP/1 head at all.
        assert_eq!(plain("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), Err(()));
    }
}
