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
    /// Whether the database could not be reached or could not serve the statement now (an
    /// I/O error, a closed or reset connection, a pool timeout, a server shutting down or
    /// starting, too many connections, SQLite's lock or disk): worth retrying later, not a
    /// bug and not the caller's fault.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Db(err) if db_unavailable(err))
    }

    /// Maps a unique-constraint violation to [`StorageError::Conflict`], any other database
    /// error to [`StorageError::Db`].
    pub(crate) fn from_insert(err: DbErr, what: &'static str) -> Self {
        match err.sql_err() {
            Some(sea_orm::SqlErr::UniqueConstraintViolation(_)) => Self::Conflict(what),
            _ => Self::Db(err),
        }
    }
}

/// Whether `err` says the database is out of reach rather than that the statement is wrong.
pub(crate) fn db_unavailable(err: &DbErr) -> bool {
    use sea_orm::RuntimeErr;
    match err {
        DbErr::ConnectionAcquire(_) | DbErr::Conn(_) => true,
        DbErr::Exec(RuntimeErr::SqlxError(e)) | DbErr::Query(RuntimeErr::SqlxError(e)) => {
            sqlx_unavailable(e)
        }
        _ => false,
    }
}

fn sqlx_unavailable(err: &sea_orm::sqlx::Error) -> bool {
    use sea_orm::sqlx::Error as E;
    match err {
        E::Io(_) | E::Tls(_) | E::PoolTimedOut | E::PoolClosed | E::WorkerCrashed => true,
        E::Database(db) => {
            if let Some(pg) = db.try_downcast_ref::<sea_orm::sqlx::postgres::PgDatabaseError>() {
                postgres_unavailable(pg.code())
            } else {
                db.code()
                    .and_then(|code| code.parse::<i32>().ok())
                    .is_some_and(sqlite_unavailable)
            }
        }
        _ => false,
    }
}

/// PostgreSQL's SQLSTATEs that mean "not now": class 08 (connection exceptions), 53300 (too
/// many connections), 57P01-57P03 (the server shutting down, crashed, starting).
fn postgres_unavailable(code: &str) -> bool {
    code.starts_with("08") || matches!(code, "53300" | "57P01" | "57P02" | "57P03")
}

/// SQLite's primary result codes that mean "not now": 5 busy, 6 locked, 10 I/O error,
/// 13 disk full, 14 cannot open. Extended codes keep the primary one in their low byte.
pub(crate) fn sqlite_unavailable(code: i32) -> bool {
    matches!(code & 0xff, 5 | 6 | 10 | 13 | 14)
}

/// The result of a storage operation.
pub type Result<T, E = StorageError> = std::result::Result<T, E>;
