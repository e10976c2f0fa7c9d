//! Browser-facing protections: security headers on every response, and CORS for the
//! configured origins only.

use axum::http::{header, HeaderName, HeaderValue, Method};
use axum::Router;
use tm_config::CorsOrigins;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::set_header::SetResponseHeaderLayer;

/// Nothing this API returns is a document to render or frame.
const CONTENT_SECURITY_POLICY: &str =
    "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";
const STRICT_TRANSPORT_SECURITY: &str = "max-age=63072000; includeSubDomains";

/// `router` with `X-Content-Type-Options`, `Referrer-Policy`, `X-Frame-Options`,
/// `Content-Security-Policy` and, behind TLS, `Strict-Transport-Security` on every response.
pub fn with_headers<S: Clone + Send + Sync + 'static>(
    router: Router<S>,
    behind_tls: bool,
) -> Router<S> {
    let set = |name: HeaderName, value: &'static str| {
        SetResponseHeaderLayer::overriding(name, HeaderValue::from_static(value))
    };
    let router = router
        .layer(set(header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .layer(set(header::REFERRER_POLICY, "no-referrer"))
        .layer(set(header::X_FRAME_OPTIONS, "DENY"))
        .layer(set(
            header::CONTENT_SECURITY_POLICY,
            CONTENT_SECURITY_POLICY,
        ));
    if behind_tls {
        router.layer(set(
            header::STRICT_TRANSPORT_SECURITY,
            STRICT_TRANSPORT_SECURITY,
        ))
    } else {
        router
    }
}

/// `router` with CORS for the configured origins; with none configured, no
/// cross-origin access.
pub fn with_cors<S: Clone + Send + Sync + 'static>(
    router: Router<S>,
    origins: &CorsOrigins,
) -> Router<S> {
    let allow = match origins {
        CorsOrigins::None => return router,
        CorsOrigins::Any => AllowOrigin::any(),
        CorsOrigins::List(list) => AllowOrigin::list(
            list.iter()
                .map(|o| HeaderValue::from_str(o).expect("origins are validated at start-up")),
        ),
    };
    router.layer(
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
            ])
            .expose_headers([
                header::ETAG,
                header::LOCATION,
                header::RETRY_AFTER,
                HeaderName::from_static("x-request-id"),
                HeaderName::from_static("x-correlation-id"),
            ])
            .max_age(std::time::Duration::from_secs(600)),
    )
}
