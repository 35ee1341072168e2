//! Sending an SMS code: the country allowlist, the pumping guard and the sending limits (per
//! number, per user, per organization; sliding windows, decided in one transaction, exact
//! across replicas), the code itself (6 digits
//! from the CSPRNG, stored only as a keyed hash) and its delivery. A refusal changes nothing;
//! a delivery failure leaves no code valid and gives every limit back.

use crate::error::ErrorReason;
use std::time::Duration;

use storage::Uuid;
use storage::repo::Limit;
use zeroize::Zeroizing;

use crate::error::{ApiError, ApiResult};
use crate::{App, audit};

/// The guard's counters, deployment-wide: sends, successful verifications, and its alerts
/// (at most one per window).
const PUMPING_SENT: &str = "sms:pumping:sent";
const PUMPING_VERIFIED: &str = "sms:pumping:verified";
const PUMPING_ALERTED: &str = "sms:pumping:alerted";

/// A code on its way.
#[derive(Debug)]
pub(crate) struct Sent {
    /// The destination, masked.
    pub masked: String,
    /// When the code expires.
    pub expires_at: i64,
    /// When another may be requested.
    pub resend_at: i64,
}

/// Whether SMS may go to `e164`: a prefix of the allowlist and none of the denylist.
pub(crate) fn country_allowed(app: &App, e164: &str) -> bool {
    let sms = &app.config.sms;
    sms.allowed_country_prefixes
        .iter()
        .any(|prefix| e164.starts_with(prefix.as_str()))
        && !sms
            .denied_country_prefixes
            .iter()
            .any(|prefix| e164.starts_with(prefix.as_str()))
}

/// A uniformly random 6-digit code from the operating system's CSPRNG.
fn new_code() -> ApiResult<Zeroizing<String>> {
    // Rejection sampling: 4,294,000,000 is the largest multiple of 10^6 below 2^32.
    loop {
        let mut bytes = [0u8; 4];
        getrandom::fill(&mut bytes).map_err(|e| ApiError::Internal(format!("CSPRNG: {e}")))?;
        let value = u32::from_le_bytes(bytes);
        if value < 4_294_000_000 {
            return Ok(Zeroizing::new(format!("{:06}", value % 1_000_000)));
        }
    }
}

fn exhausted(reason: ErrorReason, message: &str, retry_at: i64, now: i64) -> ApiError {
    ApiError::ResourceExhausted {
        reason,
        message: message.to_owned(),
        retry_after: Duration::from_secs(u64::try_from(retry_at - now).unwrap_or(1).max(1)),
    }
}

/// The pumping guard refused a send (decided in the transaction that would have taken it):
/// sends outrun successful verifications. The alert (error log, audit event, counter) is
/// raised at most once per window, so refused requests cannot flood the audit log.
async fn pumping_refused(
    app: &App,
    user_id: Uuid,
    sent: i64,
    verified: i64,
    retry_at: i64,
    now: i64,
) -> ApiResult<ApiError> {
    let sms = &app.config.sms;
    let first = app
        .storage
        .sms_limits()
        .take(
            &[Limit {
                key: PUMPING_ALERTED,
                max: 1,
                window_secs: sms.pumping_window_secs,
            }],
            now,
        )
        .await?
        .is_ok();
    if first {
        app.metrics.sms_pumping_alerts.inc();
        tracing::error!(
            alert = "sms_pumping_suspected",
            sent,
            verified,
            max_ratio = sms.pumping_max_ratio,
            "SMS pumping suspected: sends far outrun verifications; sending stopped until verifications catch up"
        );
        let details = serde_json::json!({ "sent": sent, "verified": verified }).to_string();
        audit::record(
            app,
            "sms.pumping_suspected",
            None,
            None,
            Some(user_id),
            &details,
        )
        .await?;
    }
    app.metrics
        .sms_refused
        .get_or_create(&crate::metrics::ReasonLabels {
            reason: ErrorReason::SmsPumpingSuspected.as_str_name(),
        })
        .inc();
    Ok(exhausted(
        ErrorReason::SmsPumpingSuspected,
        "SMS sending is paused: too many codes went out without being used",
        retry_at,
        now,
    ))
}

/// Sends a new code for the SMS `factor` of `user_id`, replacing any earlier one. `org_id`
/// is the organization of the login or session (its name goes into the message, its daily
/// budget is charged).
pub(crate) async fn send_code(
    app: &App,
    user_id: Uuid,
    org_id: Option<Uuid>,
    factor: &storage::entity::factor::Model,
    client: storage::repo::ClientInfo<'_>,
    now: i64,
) -> ApiResult<Sent> {
    let sms = &app.config.sms;
    let phone = factor
        .phone_e164
        .as_deref()
        .ok_or_else(|| ApiError::Internal(format!("SMS factor {} has no number", factor.id)))?;
    if !country_allowed(app, phone) {
        app.metrics
            .sms_refused
            .get_or_create(&crate::metrics::ReasonLabels {
                reason: ErrorReason::SmsCountryNotAllowed.as_str_name(),
            })
            .inc();
        return Err(ApiError::FailedPrecondition {
            reason: ErrorReason::SmsCountryNotAllowed,
            message: "SMS is not offered to this phone's country; use another method".to_owned(),
        });
    }

    // Counter keys: the number only as a keyed hash (no phone numbers in another table).
    let number_hash = app.storage.hasher().hash(
        storage::crypto::HashPurpose::ThrottleKey,
        &[b"sms-number", phone.as_bytes()],
    );
    let number_key = format!("sms:number:{}", hex::encode(number_hash.0));
    let user_key = format!("sms:user:{user_id}");
    // Users in no organization: the daily budget is their own (a shared one would let a few
    // such accounts spend it for everyone).
    let org_key = match org_id {
        Some(id) => format!("sms:org:{id}"),
        None => format!("sms:user-day:{user_id}"),
    };
    let limits = [
        Limit {
            key: &number_key,
            max: 1,
            window_secs: sms.number_cooldown_secs,
        },
        Limit {
            key: &user_key,
            max: sms.user_hourly_limit,
            window_secs: 3_600,
        },
        Limit {
            key: &org_key,
            max: sms.org_daily_limit,
            window_secs: 86_400,
        },
    ];
    let guard = storage::repo::PumpingGuard {
        sent_key: PUMPING_SENT,
        verified_key: PUMPING_VERIFIED,
        window_secs: sms.pumping_window_secs,
        min_sends: sms.pumping_min_sends,
        max_ratio: sms.pumping_max_ratio,
    };
    let taken = match app
        .storage
        .sms_limits()
        .take_guarded(Some(guard), &limits, now)
        .await?
    {
        Ok(taken) => taken,
        Err(storage::repo::Refused::Pumping {
            sent,
            verified,
            retry_at,
        }) => return Err(pumping_refused(app, user_id, sent, verified, retry_at, now).await?),
        Err(storage::repo::Refused::Limit(reached)) => {
            let (reason, message) = match reached.index {
                0 => (
                    ErrorReason::SmsNumberCooldown,
                    "a code was just sent to this number; wait before asking again",
                ),
                1 => (
                    ErrorReason::SmsUserLimit,
                    "too many codes were sent for this user; try again later",
                ),
                _ => (
                    ErrorReason::SmsOrganizationLimit,
                    "the organization's daily SMS budget is spent; try again later",
                ),
            };
            tracing::warn!(user_id = %user_id, reason = reason.as_str_name(), "SMS refused");
            app.metrics
                .sms_refused
                .get_or_create(&crate::metrics::ReasonLabels {
                    reason: reason.as_str_name(),
                })
                .inc();
            return Err(exhausted(reason, message, reached.retry_at, now));
        }
    };

    let organization = match org_id {
        Some(id) => app.storage.organizations().get(id).await?.map(|o| o.name),
        None => None,
    }
    .unwrap_or_else(|| app.config.otp.issuer.clone());
    let code = new_code()?;
    let message = Zeroizing::new(
        sms.message
            .replace("{organization}", &organization)
            .replace("{code}", &code),
    );
    let sending = tracing::info_span!("sms.send", otel.kind = "client", sender = app.sms.name());
    if let Err(e) = tracing::Instrument::instrument(app.sms.send(phone, &message), sending).await {
        // No new code is stored either way: a code the user may never receive is never valid
        // (an earlier one, which they did receive, stays as it was). When the message surely
        // did not go, nothing is charged either; when it may have (a timeout), the limits
        // stay taken, so a slow provider cannot be used to send without limits.
        if e.certainly_not_sent {
            app.storage.sms_limits().give_back(&taken).await?;
        }
        app.metrics
            .sms_failed
            .get_or_create(&crate::metrics::ReasonLabels {
                reason: if e.certainly_not_sent {
                    "not_sent"
                } else {
                    "maybe_sent"
                },
            })
            .inc();
        return Err(ApiError::Upstream {
            reason: ErrorReason::SmsUnavailable,
            message: "the SMS could not be sent; try again shortly or use another method"
                .to_owned(),
            detail: format!(
                "sender {}: {} (certainly not sent: {})",
                app.sms.name(),
                e.kind,
                e.certainly_not_sent
            ),
        });
    }
    app.metrics.sms_sent.inc();
    let expires_at = now + sms.code_ttl_secs;
    app.storage
        .sms_codes()
        .issue(factor.id, &code, now, expires_at)
        .await?;
    let masked = crate::sms::mask(phone);
    let details = serde_json::json!({ "factor_id": factor.id, "to": masked }).to_string();
    audit::own_from(app, org_id, user_id, "sms.sent", &details, client).await?;
    tracing::info!(user_id = %user_id, factor_id = %factor.id, sender = app.sms.name(), "SMS code sent");
    Ok(Sent {
        masked,
        expires_at,
        resend_at: now + sms.number_cooldown_secs,
    })
}

/// Checks a typed code against the current SMS code of `factor_id`: takes one of the code's
/// attempts first, then uses the code up if it matches and no lockout of the user is in
/// force, in one statement (a right code refused by a lockout that failures in flight
/// alongside it started stays unused, for after the lockout), which settles it against the
/// budget `failures` was checked for. False for a wrong code and for one refused that way:
/// counting it as a failure then answers LOCKED_OUT. A success counts as a verification
/// for the pumping guard.
pub(crate) async fn check_code(
    app: &App,
    failures: crate::mfa::Failures,
    factor_id: Uuid,
    digits: &str,
    now: i64,
) -> ApiResult<bool> {
    let codes = app.storage.sms_codes();
    if !codes
        .take_attempt(factor_id, app.config.sms.code_max_attempts, now)
        .await?
    {
        return Ok(false);
    }
    if !codes
        .consume(factor_id, digits, now, &failures.key())
        .await?
    {
        return Ok(false);
    }
    failures.settled(app, now).await?;
    app.storage.factors().touch(factor_id, now).await?;
    app.storage
        .sms_limits()
        .count_event(PUMPING_VERIFIED, app.config.sms.pumping_window_secs, now)
        .await?;
    Ok(true)
}
