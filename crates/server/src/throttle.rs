//! Failure budgets with growing lockouts, one mechanism for passwords (keyed by email) and
//! second factors (keyed by user): the counters are database rows, so they hold across
//! replicas; the schedule is `policy::Throttle`.

use crate::error::ErrorReason;
use std::time::Duration;

use storage::Uuid;

use crate::App;
use crate::error::{ApiError, ApiResult};

/// The password-throttling counter of an email: keyed by a keyed hash of the normalized
/// address, so unknown emails are counted and locked exactly like existing accounts (the
/// lockout must not tell them apart) and no address is stored in the counter table.
pub fn password_key(storage: &storage::Storage, email: &str) -> String {
    let normalized = email.trim().to_lowercase();
    let hash = storage.hasher().hash(
        storage::crypto::HashPurpose::ThrottleKey,
        &[normalized.as_bytes()],
    );
    format!("password:{}", hex::encode(hash.0))
}

/// The second-factor counter of a user (across methods, challenges and replicas).
pub fn second_factor_key(user: Uuid) -> String {
    storage::repo::second_factor_counter(user)
}

/// An operator's unlock: clears the password lockout of `email` and, when it has an account,
/// that user's second-factor lockout, and audits it (`user.unlocked`). Returns the user, if
/// any. Works the same for an unknown email (its counter exists all the same).
pub async fn unlock(
    storage: &storage::Storage,
    email: &str,
    now: i64,
) -> Result<Option<Uuid>, storage::StorageError> {
    storage
        .attempts()
        .reset(&password_key(storage, email))
        .await?;
    let Some(user) = storage.users().find_by_email(email).await? else {
        return Ok(None);
    };
    storage
        .attempts()
        .reset(&second_factor_key(user.id))
        .await?;
    storage
        .audit()
        .append(storage::repo::NewAuditEvent {
            occurred_at: now,
            org_id: None,
            actor_id: None,
            subject_id: Some(user.id),
            kind: "user.unlocked",
            details: r#"{"by":"operator"}"#,
            client: Default::default(),
        })
        .await?;
    Ok(Some(user.id))
}

/// The answer while locked out until `until`.
pub(crate) fn locked(until: i64, now: i64) -> ApiError {
    refused_until(
        ErrorReason::LockedOut,
        "too many failed attempts; try again later",
        until,
        now,
    )
}

/// RESOURCE_EXHAUSTED with `reason` and RetryInfo for the wait until `until` (at least 1 s).
pub(crate) fn refused_until(reason: ErrorReason, message: &str, until: i64, now: i64) -> ApiError {
    ApiError::ResourceExhausted {
        reason,
        message: message.to_owned(),
        retry_after: Duration::from_secs(u64::try_from(until - now).unwrap_or(1).max(1)),
    }
}

/// Refuses while `key` is locked out: the check before a comparison, which spares the work
/// (a success is settled again after it, [`succeed`]). Otherwise the failures in a row on
/// record (0: none).
pub(crate) async fn check(app: &App, key: &str, now: i64) -> ApiResult<i64> {
    check_counter(app.storage.attempts().get(key).await?.as_ref(), now)
}

/// [`check`] on a counter the caller already read (`None`: no failures on record).
pub(crate) fn check_counter(
    counter: Option<&storage::entity::attempt_counter::Model>,
    now: i64,
) -> ApiResult<i64> {
    match counter
        .and_then(|c| c.locked_until)
        .filter(|&until| until > now)
    {
        Some(until) => Err(locked(until, now)),
        None => Ok(counter.map_or(0, |c| c.failures)),
    }
}

/// Counts one failure against `key` and, when the budget is spent, locks it (in a
/// transaction, whether or not the email has an account); for a `subject` the lockout (`user.locked_out`, with `factor`) and whatever `more` adds for the new count
/// are audited in the transaction that counts. A lockout already in force (a failure in
/// flight alongside spent the budget first) is refused instead: the answer is LOCKED_OUT, as
/// for an attempt that came after it, and nothing is counted. Returns the failures in a row
/// now on record, and how long the lockout this failure started lasts.
pub(crate) async fn fail(
    app: &App,
    key: &str,
    subject: Option<Uuid>,
    factor: &'static str,
    client: storage::repo::ClientInfo<'_>,
    now: i64,
    more: impl Fn(i64) -> Vec<(&'static str, String)> + Send + Sync,
) -> ApiResult<Failed> {
    let throttle = app.throttle();
    // A lockout starts at the time rounded up: stored in whole seconds, it never ends early.
    let lockouts = storage::repo::Lockouts::new(throttle.free_failures, &throttle.lockouts())
        .starting_at(app.now_rounded_up().max(now));
    let events = |failures: i64, locked_until: Option<i64>| {
        let mut events = more(failures);
        if locked_until.is_some_and(|until| until > now) {
            events.push(("user.locked_out", format!(r#"{{"factor":"{factor}"}}"#)));
        }
        events
    };
    let audit = Some(storage::repo::FailureAudit {
        subject_id: subject,
        events: &events,
        client,
    });
    let (failures, until) = match app
        .storage
        .attempts()
        .record_failure(key, now, &lockouts, audit)
        .await?
    {
        storage::repo::Failure::Locked { until } => return Err(locked(until, now)),
        storage::repo::Failure::Counted {
            failures,
            locked_until: Some(until),
        } if until > now => (failures, until),
        // Within the budget (or a lockout of zero seconds, which locks nothing).
        storage::repo::Failure::Counted { failures, .. } => {
            return Ok(Failed {
                failures,
                locked_for: None,
            });
        }
    };
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
    tracing::warn!(user_id = ?subject, factor, failures, locked_until = until, "lockout");
    // The wait from now, not from the call's start: the lockout starts when the failure is
    // recorded, which a slow password check puts seconds after the call began.
    let answered = app.now().max(now);
    Ok(Failed {
        failures,
        locked_for: Some(Duration::from_secs(
            u64::try_from(until - answered).unwrap_or(1).max(1),
        )),
    })
}

/// A failure counted by [`fail`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Failed {
    /// The failures in a row now on record.
    pub(crate) failures: i64,
    /// The lockout this failure started: the wait the caller is told (RetryInfo with the
    /// wrong-credential answer), so that a person learns of it before their next attempt.
    pub(crate) locked_for: Option<Duration>,
}

impl Failed {
    /// The wrong-credential answer: UNAUTHENTICATED with `reason`, and RetryInfo when this
    /// failure started a lockout.
    pub(crate) fn refusal(self, reason: ErrorReason, message: &str) -> ApiError {
        match self.locked_for {
            Some(retry_after) => ApiError::UnauthenticatedLocked {
                reason,
                message: format!("{message}; too many failed attempts, try again later"),
                retry_after,
            },
            None => ApiError::Unauthenticated {
                reason,
                message: message.to_owned(),
            },
        }
    }
}

/// Settles a success on `key`: refused with LOCKED_OUT when a lockout is in force now (a
/// failure in flight alongside spent the budget first, so this attempt came after it);
/// otherwise clears the failures on record.
pub(crate) async fn succeed(app: &App, key: &str, now: i64) -> ApiResult<()> {
    match app.storage.attempts().settle_success(key, now).await? {
        Some(until) => Err(locked(until, now)),
        None => Ok(()),
    }
}
