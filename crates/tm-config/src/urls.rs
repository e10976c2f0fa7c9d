//! The URL checks the sections share, written once: PostgreSQL and Redis URLs, and
//! how any URL is shown with its credentials hidden.

use secrecy::SecretString;

/// Whether `url` names PostgreSQL (`postgres://` or `postgresql://`), valid or not.
pub(crate) fn is_postgres(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// `url` if it is a PostgreSQL URL with a host; else why not, with `url` redacted.
pub(crate) fn postgres_url(url: &str) -> Result<SecretString, String> {
    if is_postgres(url) && has_host(url) {
        Ok(SecretString::from(url.to_owned()))
    } else {
        Err(format!("{} is not a valid PostgreSQL URL", redact_url(url)))
    }
}

/// `url` if it is a `redis://` URL with a host; else why not, with `url` redacted.
/// TLS to Redis is not built in: it is terminated in a local proxy (stunnel, a sidecar).
pub(crate) fn redis_url(url: &str) -> Result<SecretString, String> {
    if url.starts_with("redis://") && has_host(url) {
        Ok(SecretString::from(url.to_owned()))
    } else {
        Err(format!(
            "{} is not a redis:// URL (TLS is not built in)",
            redact_url(url)
        ))
    }
}

fn has_host(url: &str) -> bool {
    url::Url::parse(url).is_ok_and(|p| p.host_str().is_some_and(|h| !h.is_empty()))
}

/// `url` with any password replaced by `***`.
pub fn redact_url(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut url) => {
            if url.password().is_some() {
                let _ = url.set_password(Some("***"));
            }
            // Query parameters such as `password=` may carry secrets too.
            if url.query().is_some_and(|q| q.contains("password")) {
                url.set_query(Some("***"));
            }
            url.to_string()
        }
        Err(_) => "***".into(),
    }
}
