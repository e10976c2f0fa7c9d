//! The `key = value` lines of `check-config`, each section adding its own.

use std::fmt::Display;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};

use crate::urls::redact_url;

/// The effective settings as TOML-like lines.
#[derive(Debug, Default)]
pub(crate) struct Lines(Vec<String>);

impl Lines {
    /// `key = "value"`.
    pub(crate) fn quoted(&mut self, key: &str, value: impl Display) {
        self.0.push(format!("{key} = {:?}", value.to_string()));
    }

    /// `key = value`, for numbers and booleans.
    pub(crate) fn plain(&mut self, key: &str, value: impl Display) {
        self.0.push(format!("{key} = {value}"));
    }

    /// `key = "1m 30s"`.
    pub(crate) fn duration(&mut self, key: &str, value: Duration) {
        self.quoted(key, humantime::format_duration(value));
    }

    /// `key = (unset)`.
    pub(crate) fn unset(&mut self, key: &str) {
        self.0.push(format!("{key} = (unset)"));
    }

    /// A URL with its password hidden.
    pub(crate) fn url(&mut self, key: &str, url: &SecretString) {
        self.quoted(key, redact_url(url.expose_secret()));
    }

    /// Comma-separated URLs with their passwords hidden.
    pub(crate) fn urls(&mut self, key: &str, urls: &[SecretString]) {
        let shown: Vec<String> = urls.iter().map(|u| redact_url(u.expose_secret())).collect();
        self.quoted(key, shown.join(","));
    }

    pub(crate) fn finish(self) -> String {
        self.0.join("\n")
    }
}
