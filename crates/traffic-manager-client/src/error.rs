//! What a call can fail with.

use std::time::Duration;

use serde::Deserialize;

/// An RFC 9457 problem, as the server answers an error.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct Problem {
    #[serde(default, rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub title: String,
    #[serde(default)]
    pub status: u16,
    #[serde(default)]
    pub detail: Option<String>,
    /// The invalid fields, for a 422.
    #[serde(default)]
    pub errors: Vec<FieldProblem>,
}

/// One invalid field of a request.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct FieldProblem {
    pub field: String,
    pub message: String,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server answered with an error status (after the retries it allows).
    #[error("the server answered {status}: {}", problem.detail.as_deref().unwrap_or(&problem.title))]
    Api { status: u16, problem: Problem },
    /// The server could not be reached or did not answer in time (after the retries).
    #[error("the server is out of reach: {0}")]
    Unreachable(String),
    /// The answer was not what the API says it is.
    #[error("the server's answer could not be read: {0}")]
    Decode(String),
    /// The base URL or a name in the request cannot make a URL.
    #[error("not a usable URL: {0}")]
    Url(String),
    /// The cache holds nothing fresh enough: the server has been out of reach for
    /// longer than the cache may serve what it last knew.
    #[error("the last known state is {age:?} old, beyond the {bound:?} allowed, and the server is out of reach: {reason}")]
    Stale {
        age: Duration,
        bound: Duration,
        reason: String,
    },
}

impl Error {
    /// The HTTP status the server answered, if it answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Whether the server said there is no such thing (404).
    pub fn is_not_found(&self) -> bool {
        self.status() == Some(404)
    }
}
