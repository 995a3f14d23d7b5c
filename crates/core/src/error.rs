//! The error type of the core crate, shaped so that the gateway can map each variant to one
//! HTTP status without looking inside.

/// Errors from validation and the metadata store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is understood but not acceptable (HTTP 422).
    #[error("{0}")]
    Invalid(String),
    /// The object does not exist, or is not visible to the caller (HTTP 404).
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The request collides with existing state (HTTP 409).
    #[error("{0}")]
    Conflict(String),
    /// A sealed secret could not be opened: wrong key or tampered data.
    #[error("a stored secret could not be decrypted with the configured key")]
    Unseal,
    /// The metadata database failed.
    #[error("metadata database: {0}")]
    Db(#[from] sqlx::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// True when the metadata database could not be reached at all (as opposed to a query error).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Error::Db(sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed))
    }
}
