//! Checks a webhook URL when a tenant registers it.
//!
//! The check is about form only: an absolute http or https URL with a host, no user name
//! or password (credentials do not belong in a stored URL, and they would be sent to
//! whoever answers), no fragment (never sent, so almost surely a mistake), and a bounded
//! length. Where the URL may point is the network policy's business, judged at delivery
//! time on the addresses actually connected to, since DNS can change after registration.
//! The error messages are short sentences meant for an API's problem detail.

use url::{ParseError, Url};

/// The longest URL accepted, in bytes.
pub const MAX_URL_LEN: usize = 2048;

/// Why a webhook URL was not accepted.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum UrlError {
    /// Longer than [`MAX_URL_LEN`] bytes.
    #[error("must be at most 2048 bytes long")]
    TooLong,
    /// Not a URL at all, or a relative one.
    #[error("must be a valid absolute URL")]
    NotAbsolute,
    /// A scheme other than http and https.
    #[error("must be an http or https URL")]
    Scheme,
    /// No host (or an empty one).
    #[error("must have a host")]
    NoHost,
    /// A user name or a password before the host.
    #[error("must not contain a user name or password")]
    UserInfo,
    /// A fragment (`#...`).
    #[error("must not have a fragment")]
    Fragment,
}

/// Parses and checks a webhook URL: absolute http or https, a host, no user name or
/// password, no fragment, at most 2048 bytes.
///
/// # Errors
///
/// The first rule the URL breaks, as a [`UrlError`].
pub fn check_url(raw: &str) -> Result<Url, UrlError> {
    if raw.len() > MAX_URL_LEN {
        return Err(UrlError::TooLong);
    }
    let url = Url::parse(raw).map_err(|error| match error {
        ParseError::EmptyHost => UrlError::NoHost,
        _ => UrlError::NotAbsolute,
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(UrlError::Scheme);
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(UrlError::NoHost);
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(UrlError::UserInfo);
    }
    if url.fragment().is_some() {
        return Err(UrlError::Fragment);
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_http_and_https_urls() {
        for raw in [
            "https://hooks.example.com/traffic",
            "http://hooks.example.com:8080/a/b?tenant=acme&x=1",
            "https://203.0.113.5/hook",
            "https://[2001:db8::1]:8443/hook",
            "HTTPS://Hooks.Example.COM/",
        ] {
            assert!(check_url(raw).is_ok(), "{raw}");
        }
    }

    #[test]
    fn refuses_malformed_urls() {
        let long = format!("https://example.com/{}", "a".repeat(MAX_URL_LEN));
        let cases: Vec<(&str, UrlError)> = vec![
            (&long, UrlError::TooLong),
            ("", UrlError::NotAbsolute),
            ("/relative/path", UrlError::NotAbsolute),
            ("example.com/hook", UrlError::NotAbsolute),
            ("http://", UrlError::NoHost),
            ("http://exa mple.com/", UrlError::NotAbsolute),
            ("ftp://example.com/hook", UrlError::Scheme),
            ("file:///etc/passwd", UrlError::Scheme),
            ("javascript:alert(1)", UrlError::Scheme),
            ("mailto:ops@example.com", UrlError::Scheme),
            ("https://user@example.com/", UrlError::UserInfo),
            ("https://user:pass@example.com/", UrlError::UserInfo),
            ("https://:pass@example.com/", UrlError::UserInfo),
            ("https://example.com/hook#part", UrlError::Fragment),
            ("https://example.com/hook#", UrlError::Fragment),
        ];
        for (raw, expected) in cases {
            assert_eq!(check_url(raw), Err(expected), "{raw}");
        }
    }

    #[test]
    fn accepts_exactly_the_longest_url() {
        let prefix = "https://example.com/";
        let raw = format!("{prefix}{}", "a".repeat(MAX_URL_LEN - prefix.len()));
        assert_eq!(raw.len(), MAX_URL_LEN);
        assert!(check_url(&raw).is_ok());
    }

    #[test]
    fn messages_are_short_sentences() {
        assert_eq!(UrlError::Scheme.to_string(), "must be an http or https URL");
        assert_eq!(
            UrlError::TooLong.to_string(),
            "must be at most 2048 bytes long"
        );
    }
}
