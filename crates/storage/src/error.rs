//! The storage error type.

use sea_orm::DbErr;
use thiserror::Error;

use crate::crypto::CryptoError;

/// Why a storage operation failed. `Db` carries the driver's message for the log; the
/// server shows callers a generic message for it.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum StorageError {
    /// The row does not exist (or is not in the state the operation needs).
    #[error("{0} not found")]
    NotFound(&'static str),
    /// A uniqueness rule was violated, e.g. an email already registered.
    #[error("{0} already exists")]
    Conflict(&'static str),
    /// The row changed since the caller read it: read it again and retry.
    #[error("{0} changed concurrently")]
    Stale(&'static str),
    /// An input is invalid; the field is named.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A sealed value did not open, or sealing failed.
    #[error("secret at rest: {0}")]
    Crypto(#[from] CryptoError),
    /// The database failed or is unreachable.
    #[error("database: {0}")]
    Db(#[from] DbErr),
}

impl StorageError {
    /// Maps a unique-constraint violation to [`StorageError::Conflict`], any other database
    /// error to [`StorageError::Db`].
    pub(crate) fn from_insert(err: DbErr, what: &'static str) -> Self {
        match err.sql_err() {
            Some(sea_orm::SqlErr::UniqueConstraintViolation(_)) => Self::Conflict(what),
            _ => Self::Db(err),
        }
    }
}

/// The result of a storage operation.
pub type Result<T, E = StorageError> = std::result::Result<T, E>;
