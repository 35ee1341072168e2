//! The server's error type and its one mapping to `tonic::Status`, with google.rpc details:
//! `BadRequest` field violations, `ErrorInfo` with a stable reason, `RetryInfo` for
//! throttling. Internal errors reach the caller as a generic message; the detail is logged.

use std::time::Duration;

pub use tollgate_proto::v1::ErrorReason;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt as _};

/// The `domain` of every `ErrorInfo`.
pub const DOMAIN: &str = "tollgate.v1";

/// The reason of every call refused because the database cannot be reached.
pub const DATABASE_UNAVAILABLE: ErrorReason = ErrorReason::DatabaseUnavailable;

/// The `RetryInfo` delay of [`DATABASE_UNAVAILABLE`]: the health check probes this often
/// while the database is down.
pub const DATABASE_RETRY_AFTER: Duration = Duration::from_secs(1);

/// What went wrong, in terms the caller can act on.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// One or more fields are invalid.
    #[error("invalid request")]
    InvalidArgument(Vec<(String, String)>),
    /// The caller is not who they need to be (no or bad credentials, bad password, bad token).
    #[error("{message}")]
    Unauthenticated {
        /// A stable reason, e.g. `INVALID_CREDENTIALS`.
        reason: ErrorReason,
        /// For the caller.
        message: String,
    },
    /// A wrong credential whose failure started a lockout: UNAUTHENTICATED with the reason,
    /// and RetryInfo saying when the next attempt will be answered.
    #[error("{message}")]
    UnauthenticatedLocked {
        /// A stable reason, e.g. `INVALID_CODE`.
        reason: ErrorReason,
        /// For the caller.
        message: String,
        /// How long the lockout lasts.
        retry_after: Duration,
    },
    /// The caller is known but not allowed.
    #[error("{message}")]
    PermissionDenied {
        /// A stable reason, e.g. `MISSING_SCOPE`.
        reason: ErrorReason,
        /// For the caller.
        message: String,
    },
    /// The thing does not exist.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// It exists already.
    #[error("{0} already exists")]
    AlreadyExists(&'static str),
    /// Not in the state the operation needs.
    #[error("{message}")]
    FailedPrecondition {
        /// A stable reason.
        reason: ErrorReason,
        /// For the caller.
        message: String,
    },
    /// A concurrent change got there first: read again and retry.
    #[error("{message}")]
    Aborted {
        /// A stable reason.
        reason: ErrorReason,
        /// For the caller.
        message: String,
    },
    /// Throttled: try again after `retry_after`.
    #[error("{message}")]
    ResourceExhausted {
        /// A stable reason, e.g. `LOCKED_OUT`.
        reason: ErrorReason,
        /// For the caller.
        message: String,
        /// When to try again.
        retry_after: Duration,
    },
    /// A service Tollgate depends on failed (the SMS provider): UNAVAILABLE with a reason.
    /// `detail` is logged, never sent.
    #[error("{message}")]
    Upstream {
        /// A stable reason, e.g. `SMS_UNAVAILABLE`.
        reason: ErrorReason,
        /// For the caller.
        message: String,
        /// For the log.
        detail: String,
    },
    /// The database cannot be reached now: UNAVAILABLE, reason `DATABASE_UNAVAILABLE`, with
    /// `RetryInfo`. The detail is logged, never sent.
    #[error("the database is unavailable")]
    Unavailable(String),
    /// A bug or an unexpected failure. The detail is logged, never sent.
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    /// A single field violation.
    pub fn field(field: &str, description: impl Into<String>) -> Self {
        Self::InvalidArgument(vec![(field.to_owned(), description.into())])
    }
}

impl From<storage::StorageError> for ApiError {
    fn from(err: storage::StorageError) -> Self {
        use storage::StorageError as E;
        match err {
            E::NotFound(what) => Self::NotFound(what),
            E::Conflict(what) => Self::AlreadyExists(what),
            E::Stale(what) => Self::Aborted {
                reason: ErrorReason::ConcurrentChange,
                message: format!("the {what} changed meanwhile: read it and try again"),
            },
            E::Invalid { field, reason } => Self::field(field, reason),
            unavailable if unavailable.is_unavailable() => {
                Self::Unavailable(unavailable.to_string())
            }
            other => Self::Internal(other.to_string()),
        }
    }
}

impl From<ApiError> for Status {
    fn from(err: ApiError) -> Self {
        // Every ErrorInfo is built here, from the contract's ErrorReason.
        let info = |reason: ErrorReason| error_info(reason);
        match err {
            ApiError::InvalidArgument(violations) => {
                let mut details = info(ErrorReason::InvalidArgument);
                for (field, description) in &violations {
                    details.add_bad_request_violation(field.clone(), description.clone());
                }
                let fields: Vec<&str> = violations.iter().map(|(f, _)| f.as_str()).collect();
                let message = format!("invalid {}", fields.join(", "));
                tracing::debug!(%message, "invalid argument");
                Status::with_error_details(Code::InvalidArgument, message, details)
            }
            ApiError::Unauthenticated { reason, message } => {
                tracing::info!(reason = reason.as_str_name(), "unauthenticated");
                Status::with_error_details(Code::Unauthenticated, message, info(reason))
            }
            ApiError::UnauthenticatedLocked {
                reason,
                message,
                retry_after,
            } => {
                tracing::info!(
                    reason = reason.as_str_name(),
                    retry_after_secs = retry_after.as_secs(),
                    "unauthenticated"
                );
                let mut details = info(reason);
                details.set_retry_info(Some(retry_after));
                Status::with_error_details(Code::Unauthenticated, message, details)
            }
            ApiError::PermissionDenied { reason, message } => {
                tracing::info!(reason = reason.as_str_name(), "permission denied");
                Status::with_error_details(Code::PermissionDenied, message, info(reason))
            }
            ApiError::NotFound(what) => Status::with_error_details(
                Code::NotFound,
                format!("{what} not found"),
                info(ErrorReason::NotFound),
            ),
            ApiError::AlreadyExists(what) => Status::with_error_details(
                Code::AlreadyExists,
                format!("{what} already exists"),
                info(ErrorReason::AlreadyExists),
            ),
            ApiError::FailedPrecondition { reason, message } => {
                Status::with_error_details(Code::FailedPrecondition, message, info(reason))
            }
            ApiError::Aborted { reason, message } => {
                Status::with_error_details(Code::Aborted, message, info(reason))
            }
            ApiError::ResourceExhausted {
                reason,
                message,
                retry_after,
            } => {
                tracing::warn!(
                    reason = reason.as_str_name(),
                    retry_after_secs = retry_after.as_secs(),
                    "throttled"
                );
                let mut details = info(reason);
                details.set_retry_info(Some(retry_after));
                Status::with_error_details(Code::ResourceExhausted, message, details)
            }
            ApiError::Upstream {
                reason,
                message,
                detail,
            } => {
                tracing::warn!(reason = reason.as_str_name(), %detail, "upstream failure");
                Status::with_error_details(Code::Unavailable, message, info(reason))
            }
            ApiError::Unavailable(detail) => {
                tracing::warn!(%detail, "database unavailable");
                let mut details = info(DATABASE_UNAVAILABLE);
                details.set_retry_info(Some(DATABASE_RETRY_AFTER));
                Status::with_error_details(
                    Code::Unavailable,
                    "the database is unavailable, try again shortly",
                    details,
                )
            }
            ApiError::Internal(detail) => {
                tracing::error!(%detail, "internal error");
                Status::with_error_details(
                    Code::Internal,
                    "internal error",
                    info(ErrorReason::Internal),
                )
            }
        }
    }
}

/// The `ErrorInfo` of `reason`, in the domain `tollgate.v1`.
pub fn error_info(reason: ErrorReason) -> ErrorDetails {
    ErrorDetails::with_error_info(reason.as_str_name(), DOMAIN, [])
}

/// The result of a handler.
pub type ApiResult<T> = Result<T, ApiError>;
