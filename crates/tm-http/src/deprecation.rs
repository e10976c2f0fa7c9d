//! Endpoints on their way out: they keep answering as before, and every answer says so
//! — `Deprecation` (RFC 9745: since when, as `@<Unix seconds>`), `Sunset` (RFC 8594:
//! from when it may stop answering, an HTTP date) and `Link` to the endpoint that
//! replaces it (`rel="successor-version"`). An endpoint is marked by wrapping its route
//! with [`deprecated`] and a [`Deprecation`] declared here.

use std::time::{Duration, SystemTime};

use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::MethodRouter;

/// A deprecated endpoint: since when, until when, and what replaces it.
#[derive(Debug)]
pub struct Deprecation {
    /// The path it answers on.
    pub path: &'static str,
    /// When it was deprecated (Unix seconds).
    pub since: u64,
    /// When it may stop answering (Unix seconds).
    pub sunset: u64,
    /// The path that replaces it.
    pub successor: &'static str,
}

/// `GET /health`: the process is up, as `/health/live` says (and the probes of
/// orchestrators ask). Deprecated 2026-12-01, may be removed from 2027-07-01.
pub const HEALTH: Deprecation = Deprecation {
    path: "/health",
    since: 1_796_083_200,
    sunset: 1_814_400_000,
    successor: "/health/live",
};

/// `route`, answering with the headers of `deprecation`.
pub fn deprecated<S>(route: MethodRouter<S>, deprecation: &'static Deprecation) -> MethodRouter<S>
where
    S: Clone + Send + Sync + 'static,
{
    let headers = Headers::of(deprecation);
    route.layer(middleware::from_fn(move |request: Request, next: Next| {
        let headers = headers.clone();
        async move {
            let mut response = next.run(request).await;
            headers.add_to(&mut response);
            response
        }
    }))
}

/// The three headers, made once.
#[derive(Clone)]
struct Headers([(HeaderName, HeaderValue); 3]);

impl Headers {
    fn of(deprecation: &Deprecation) -> Self {
        let value = |text: String| HeaderValue::try_from(text).expect("a valid header value");
        let sunset = SystemTime::UNIX_EPOCH + Duration::from_secs(deprecation.sunset);
        Self([
            (
                HeaderName::from_static("deprecation"),
                value(format!("@{}", deprecation.since)),
            ),
            (
                HeaderName::from_static("sunset"),
                value(httpdate::fmt_http_date(sunset)),
            ),
            (
                HeaderName::from_static("link"),
                value(format!(
                    "<{}>; rel=\"successor-version\"",
                    deprecation.successor
                )),
            ),
        ])
    }

    fn add_to(&self, response: &mut Response) {
        for (name, value) in &self.0 {
            response.headers_mut().append(name.clone(), value.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_headers_follow_their_rfcs() {
        let headers = Headers::of(&HEALTH).0;
        assert_eq!(headers[0].1, "@1796083200");
        assert_eq!(headers[1].1, "Thu, 01 Jul 2027 00:00:00 GMT");
        assert_eq!(headers[2].1, "</health/live>; rel=\"successor-version\"");
    }
}
