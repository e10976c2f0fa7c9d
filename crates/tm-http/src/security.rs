//! Browser-facing protections: security headers on every response, and CORS for the
//! configured origins only.

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, Request, Response};
use axum::Router;
use tm_config::CorsOrigins;
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::wire::AnswerHeaders;

/// Nothing this API returns is a document to render or frame.
const CONTENT_SECURITY_POLICY: &str =
    "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";
const STRICT_TRANSPORT_SECURITY: &str = "max-age=63072000; includeSubDomains";

static NOSNIFF: HeaderValue = HeaderValue::from_static("nosniff");
static NO_REFERRER: HeaderValue = HeaderValue::from_static("no-referrer");
static DENY: HeaderValue = HeaderValue::from_static("DENY");
static CSP: HeaderValue = HeaderValue::from_static(CONTENT_SECURITY_POLICY);
static HSTS: HeaderValue = HeaderValue::from_static(STRICT_TRANSPORT_SECURITY);

/// Adds `X-Content-Type-Options`, `Referrer-Policy`, `X-Frame-Options`,
/// `Content-Security-Policy` and, behind TLS, `Strict-Transport-Security`. Called for
/// every answer once it is made, rather than as five layers of their own.
pub(crate) fn add_headers(headers: &mut impl AnswerHeaders, behind_tls: bool) {
    headers.put(&header::X_CONTENT_TYPE_OPTIONS, &NOSNIFF);
    headers.put(&header::REFERRER_POLICY, &NO_REFERRER);
    headers.put(&header::X_FRAME_OPTIONS, &DENY);
    headers.put(&header::CONTENT_SECURITY_POLICY, &CSP);
    if behind_tls {
        headers.put(&header::STRICT_TRANSPORT_SECURITY, &HSTS);
    }
}

/// `router` with CORS for the configured origins; with none configured, no
/// cross-origin access.
pub fn with_cors<S: Clone + Send + Sync + 'static>(
    router: Router<S>,
    origins: &CorsOrigins,
) -> Router<S> {
    match cors(origins) {
        Some(layer) => router.layer(layer),
        None => router,
    }
}

/// The headers CORS adds to the answer of a request without `Origin` (not a browser's
/// cross-origin call): they depend on the settings only, so the fast path adds them
/// as found here, by asking the very layer the router uses once.
pub fn cors_headers_without_origin(origins: &CorsOrigins) -> HeaderMap {
    use futures::FutureExt;
    use tower::{Layer, ServiceExt};

    let Some(layer) = cors(origins) else {
        return HeaderMap::new();
    };
    let plain = tower::service_fn(|_: Request<Body>| {
        std::future::ready(Ok::<_, std::convert::Infallible>(Response::new(
            Body::empty(),
        )))
    });
    let request = Request::get(crate::fast::RESOLVE_PATH)
        .body(Body::empty())
        .expect("a valid request");
    layer
        .layer(plain)
        .oneshot(request)
        .now_or_never()
        .and_then(Result::ok)
        .map(|response| response.headers().clone())
        .unwrap_or_default()
}

/// The CORS layer for the configured origins; `None` for no cross-origin access.
fn cors(origins: &CorsOrigins) -> Option<CorsLayer> {
    let allow = match origins {
        CorsOrigins::None => return None,
        CorsOrigins::Any => AllowOrigin::any(),
        CorsOrigins::List(list) => AllowOrigin::list(
            list.iter()
                .map(|o| HeaderValue::from_str(o).expect("origins are validated at start-up")),
        ),
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([Method::GET, Method::POST, Method::PATCH, Method::DELETE])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                header::IF_MATCH,
                header::IF_NONE_MATCH,
                HeaderName::from_static("x-request-id"),
                HeaderName::from_static("x-correlation-id"),
                HeaderName::from_static("traceparent"),
                HeaderName::from_static("idempotency-key"),
            ])
            .expose_headers([
                header::ETAG,
                header::LOCATION,
                header::RETRY_AFTER,
                HeaderName::from_static("x-request-id"),
                HeaderName::from_static("x-correlation-id"),
                HeaderName::from_static("idempotent-replayed"),
            ])
            .max_age(std::time::Duration::from_secs(600)),
    )
}
