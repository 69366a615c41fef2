//! The one error type of the domain core. The API maps it to responses in one place.

use crate::store::ExpectedVersion;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is well-formed but refers to something that does not fit (unknown stack,
    /// unknown version, missing variable, …). A 400 at the API.
    #[error("{0}")]
    Invalid(String),
    /// A resource addressed by the path does not exist. A 404 at the API.
    #[error("{0}")]
    NotFound(String),
    /// Understood but refused as it stands (an idempotency key reused for another request).
    #[error("{0}")]
    Unprocessable(String),
    /// The resource exists already.
    #[error("{0}")]
    AlreadyExists(String),
    /// Optimistic concurrency: the stream moved on since it was read.
    #[error("stream '{stream}' is at version {actual}, expected {expected:?}")]
    Conflict {
        stream: String,
        expected: ExpectedVersion,
        actual: i64,
    },
    /// This worker no longer holds the stack's lease; it must not record or touch anything.
    #[error("lease on stack '{0}' lost")]
    LeaseLost(String),
    #[error("stored event could not be decoded: {0}")]
    Decode(#[from] serde_json::Error),
    #[error("job queue: {0}")]
    Queue(String),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

impl Error {
    /// The database could not be reached (as opposed to a query that failed): worth a retry.
    pub fn is_unavailable(&self) -> bool {
        match self {
            // SQLSTATE class 08 (connection exception) and 57P (the server shutting down
            // or starting up): the database is going away or not back yet.
            Error::Database(sqlx::Error::Database(db)) => db
                .code()
                .is_some_and(|code| code.starts_with("08") || code.starts_with("57P")),
            Error::Database(e) => matches!(
                e,
                sqlx::Error::Io(_)
                    | sqlx::Error::PoolTimedOut
                    | sqlx::Error::PoolClosed
                    | sqlx::Error::Tls(_)
                    | sqlx::Error::Protocol(_)
            ),
            _ => false,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
