//! What can go wrong in storage, classified for the caller.

use tm_domain::Route;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("route not found")]
    NotFound,
    #[error("a route with this tenant, service, env and version already exists")]
    Conflict,
    /// A tenant holds the most live keys allowed; one must be revoked first.
    #[error("the tenant holds {max} live keys, the most allowed")]
    TooManyKeys { max: u32 },
    /// A tenant holds the most webhook subscriptions allowed.
    #[error("the tenant holds {max} webhooks, the most allowed")]
    TooManyWebhooks { max: u32 },
    /// A rollback found no earlier activation state to go back to, or one it cannot
    /// restore; the reason says which.
    #[error("nothing to roll back to: {0}")]
    NoRollback(String),
    /// A conditional write whose expected revision is not the stored one.
    #[error("route revision is {}, not the one expected", .current.revision)]
    StaleRevision { current: Box<Route> },
    /// The database cannot be reached or did not answer in time; worth retrying later.
    #[error("database unavailable")]
    Unavailable(#[source] sqlx::Error),
    /// A stored row the domain refuses: the data was changed behind the registry's back.
    #[error("stored data is invalid: {0}")]
    Corrupt(String),
    /// A backup that cannot be restored here, or a store it may not replace; the reason
    /// says which.
    #[error("{0}")]
    Refused(String),
    #[error("database error")]
    Other(#[source] sqlx::Error),
}

impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> Self {
        if is_unavailable(&err) {
            StoreError::Unavailable(err)
        } else {
            StoreError::Other(err)
        }
    }
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(err: sqlx::migrate::MigrateError) -> Self {
        match err {
            sqlx::migrate::MigrateError::Execute(e) => e.into(),
            other => StoreError::Corrupt(format!("migrations: {other}")),
        }
    }
}

/// Connection failures, pool exhaustion and server-side timeouts or shutdowns: the
/// transient faults a client should retry, as opposed to errors in what was asked.
fn is_unavailable(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => {
            let code = db.code();
            let code = code.as_deref().unwrap_or_default();
            // PostgreSQL: connection exceptions (08), insufficient resources (53),
            // operator intervention incl. statement timeout and shutdown (57), serialization (40001).
            code.starts_with("08")
                || code.starts_with("53")
                || code.starts_with("57")
                || code == "40001"
                || code == "40P01"
                // SQLite: SQLITE_BUSY and SQLITE_LOCKED, with their extended codes.
                || matches!(code.parse::<i32>().map(|c| c & 0xff), Ok(5 | 6))
        }
        _ => false,
    }
}

/// Whether `err` is a unique-constraint violation on either backend.
pub(crate) fn is_unique_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.is_unique_violation())
}

/// Whether `err` is a foreign-key violation on either backend.
pub(crate) fn is_foreign_key_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.is_foreign_key_violation())
}
