//! One view of a request's headers and one sink for an answer's, so that the policy code
//! (key check, ids, entity tags, security and rate-limit headers) serves hyper's requests
//! and the HTTP/1 front's alike: a [`HeaderMap`] on one side, the parsed head and the
//! bytes of the answer on the other.

use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

/// The headers of a request, read in place.
pub(crate) trait RequestHead {
    /// The first value of `name`.
    fn first(&self, name: &HeaderName) -> Option<&[u8]>;

    /// Every value of `name`, in the order sent.
    fn each<'a>(&'a self, name: &'a HeaderName) -> impl Iterator<Item = &'a [u8]>;

    fn has(&self, name: &HeaderName) -> bool {
        self.first(name).is_some()
    }
}

impl RequestHead for HeaderMap {
    fn first(&self, name: &HeaderName) -> Option<&[u8]> {
        self.get(name).map(HeaderValue::as_bytes)
    }

    fn each<'a>(&'a self, name: &'a HeaderName) -> impl Iterator<Item = &'a [u8]> {
        self.get_all(name).iter().map(HeaderValue::as_bytes)
    }
}

impl RequestHead for [httparse::Header<'_>] {
    fn first(&self, name: &HeaderName) -> Option<&[u8]> {
        // Names as parsed keep the client's case; a `HeaderName` is lower case.
        self.iter()
            .find(|h| h.name.eq_ignore_ascii_case(name.as_str()))
            .map(|h| h.value)
    }

    fn each<'a>(&'a self, name: &'a HeaderName) -> impl Iterator<Item = &'a [u8]> {
        self.iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name.as_str()))
            .map(|h| h.value)
    }
}

/// The text of a header value, as [`HeaderValue::to_str`] reads it: visible ASCII,
/// spaces and tabs only.
pub(crate) fn text(value: &[u8]) -> Option<&str> {
    value
        .iter()
        .all(|&b| b == b'\t' || (b' '..=b'~').contains(&b))
        .then(|| std::str::from_utf8(value).ok())
        .flatten()
}

/// Where the headers of an answer go.
pub(crate) trait AnswerHeaders {
    /// Sets `name` to `value`, replacing any value it had.
    fn put(&mut self, name: &HeaderName, value: &HeaderValue);

    /// Adds a value of `name`, keeping those it had.
    fn add(&mut self, name: &HeaderName, value: &HeaderValue);

    /// Sets `name` to the decimal digits of `value`.
    fn put_number(&mut self, name: &HeaderName, value: u64);

    /// Sets `name` to `value`, visible ASCII made by this server (never the client's).
    fn put_ascii(&mut self, name: &HeaderName, value: &[u8]);
}

impl AnswerHeaders for HeaderMap {
    fn put(&mut self, name: &HeaderName, value: &HeaderValue) {
        self.insert(name.clone(), value.clone());
    }

    fn add(&mut self, name: &HeaderName, value: &HeaderValue) {
        self.append(name.clone(), value.clone());
    }

    fn put_number(&mut self, name: &HeaderName, value: u64) {
        self.insert(name.clone(), HeaderValue::from(value));
    }

    fn put_ascii(&mut self, name: &HeaderName, value: &[u8]) {
        let value = HeaderValue::from_bytes(value).expect("visible ASCII is a valid header value");
        self.insert(name.clone(), value);
    }
}

/// An HTTP/1.1 answer written straight into the bytes sent, as hyper writes one: lower
/// case names, `content-length` (none on a 304) and `date` last, no `connection` header
/// (the connection is kept alive).
pub(crate) struct Http1Answer<'a>(&'a mut Vec<u8>);

impl<'a> Http1Answer<'a> {
    /// Begins the answer with its status line.
    pub(crate) fn start(out: &'a mut Vec<u8>, status: StatusCode) -> Self {
        out.extend_from_slice(b"HTTP/1.1 ");
        out.extend_from_slice(status.as_str().as_bytes());
        out.push(b' ');
        out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
        out.extend_from_slice(b"\r\n");
        Self(out)
    }

    fn line(&mut self, name: &str, value: &[u8]) {
        self.0.extend_from_slice(name.as_bytes());
        self.0.extend_from_slice(b": ");
        self.0.extend_from_slice(value);
        self.0.extend_from_slice(b"\r\n");
    }

    /// Ends the head with the length of `body` (unless `status` has no body) and the
    /// date, then writes the body.
    pub(crate) fn finish(mut self, status: StatusCode, body: &[u8]) {
        if status != StatusCode::NOT_MODIFIED {
            let mut digits = itoa::Buffer::new();
            self.line("content-length", digits.format(body.len()).as_bytes());
        }
        let date = DATE.with(CachedDate::now);
        self.line("date", &date);
        self.0.extend_from_slice(b"\r\n");
        self.0.extend_from_slice(body);
    }
}

impl AnswerHeaders for Http1Answer<'_> {
    fn put(&mut self, name: &HeaderName, value: &HeaderValue) {
        self.line(name.as_str(), value.as_bytes());
    }

    fn add(&mut self, name: &HeaderName, value: &HeaderValue) {
        self.line(name.as_str(), value.as_bytes());
    }

    fn put_number(&mut self, name: &HeaderName, value: u64) {
        let mut digits = itoa::Buffer::new();
        self.line(name.as_str(), digits.format(value).as_bytes());
    }

    fn put_ascii(&mut self, name: &HeaderName, value: &[u8]) {
        self.line(name.as_str(), value);
    }
}

thread_local! {
    static DATE: CachedDate = const { CachedDate(std::cell::Cell::new((0, [0; DATE_LEN]))) };
}

/// `Sun, 06 Nov 1994 08:49:37 GMT`
const DATE_LEN: usize = 29;

/// The `date` header's value, formatted once a second per thread.
struct CachedDate(std::cell::Cell<(u64, [u8; DATE_LEN])>);

impl CachedDate {
    fn now(&self) -> [u8; DATE_LEN] {
        let now = std::time::SystemTime::now();
        let second = now
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let (cached, mut text) = self.0.get();
        if cached != second {
            let formatted = httpdate::fmt_http_date(now);
            if formatted.len() == DATE_LEN {
                text.copy_from_slice(formatted.as_bytes());
                self.0.set((second, text));
            }
        }
        text
    }
}
