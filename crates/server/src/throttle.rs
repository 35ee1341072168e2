//! Failure budgets with growing lockouts, one mechanism for passwords (keyed by email) and
//! second factors (keyed by user): the counters are database rows, so they hold across
//! replicas; the schedule is `policy::Throttle`.

use std::time::Duration;

use storage::Uuid;

use crate::error::{ApiError, ApiResult};
use crate::{App, audit};

/// The answer while locked out until `until`.
pub(crate) fn locked(until: i64, now: i64) -> ApiError {
    ApiError::ResourceExhausted {
        reason: "LOCKED_OUT",
        message: "too many failed attempts; try again later".to_owned(),
        retry_after: Duration::from_secs(u64::try_from(until - now).unwrap_or(1).max(1)),
    }
}

/// Refuses while `key` is locked out.
pub(crate) async fn check(app: &App, key: &str, now: i64) -> ApiResult<()> {
    match app.storage.attempts().get(key).await? {
        Some(counter) => match counter.locked_until.filter(|&until| until > now) {
            Some(until) => Err(locked(until, now)),
            None => Ok(()),
        },
        None => Ok(()),
    }
}

/// Counts one failure against `key` and, when the budget is spent, locks it (from the next
/// attempt on) and records the lockout for `subject` under `factor`.
pub(crate) async fn fail(
    app: &App,
    key: &str,
    subject: Option<Uuid>,
    factor: &str,
    now: i64,
) -> ApiResult<()> {
    let failures = app.storage.attempts().record_failure(key, now).await?;
    let Some(until) = app.throttle().locked_until(
        u32::try_from(failures).unwrap_or(u32::MAX),
        u64::try_from(now).unwrap_or(0),
    ) else {
        return Ok(());
    };
    let until = i64::try_from(until).unwrap_or(i64::MAX);
    app.storage.attempts().lock_until(key, until, now).await?;
    if let Some(user) = subject {
        let details = format!(r#"{{"factor":"{factor}"}}"#);
        audit::record(app, "user.locked_out", None, None, Some(user), &details).await?;
    }
    app.metrics
        .lockouts
        .get_or_create(&crate::metrics::LockoutLabels {
            factor: if factor == "password" {
                "password"
            } else {
                "second_factor"
            },
        })
        .inc();
    tracing::warn!(user_id = ?subject, factor, failures, "lockout");
    Ok(())
}

/// Clears `key`'s failures after a success.
pub(crate) async fn clear(app: &App, key: &str) -> ApiResult<()> {
    Ok(app.storage.attempts().reset(key).await?)
}
