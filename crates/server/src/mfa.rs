//! Second-factor checks shared by enrollment and login: TOTP verification with otp-core, the
//! per-user failure budget, recovery codes.

use crate::error::ErrorReason;
use otp_core::{Algorithm, Digits, Secret, Totp, TotpParams, VerifyError};
use storage::Uuid;
use zeroize::Zeroizing;

use crate::error::{ApiError, ApiResult};
use crate::{App, audit};

/// The parameters of the authenticator apps Tollgate enrolls: what every app assumes.
pub(crate) fn totp_params() -> TotpParams {
    TotpParams::default()
}

/// The storage form of the enrolled parameters.
pub(crate) fn storage_params() -> storage::repo::OtpParams {
    let params = totp_params();
    storage::repo::OtpParams {
        algorithm: params.algorithm.as_str(),
        digits: i16::from(params.digits.get()),
        period: i32::try_from(params.period).ok(),
    }
}

/// The TOTP generator of a stored factor (its seed opened from storage).
pub(crate) fn totp_of(app: &App, factor: &storage::entity::factor::Model) -> ApiResult<Totp> {
    let seed = app.storage.factors().open_secret(factor)?;
    let algorithm = factor
        .algorithm
        .as_deref()
        .unwrap_or("SHA1")
        .parse::<Algorithm>()
        .map_err(|e| ApiError::Internal(format!("factor {}: {e}", factor.id)))?;
    let digits = Digits::new(u8::try_from(factor.digits.unwrap_or(6)).unwrap_or(0))
        .map_err(|e| ApiError::Internal(format!("factor {}: {e}", factor.id)))?;
    let params = TotpParams {
        algorithm,
        digits,
        period: u64::try_from(factor.period.unwrap_or(30)).unwrap_or(30),
        window: otp_core::Window {
            behind: app.config.otp.totp_steps_behind,
            ahead: app.config.otp.totp_steps_ahead,
        },
        ..totp_params()
    };
    Totp::new(Secret::from_bytes(seed.to_vec()), params)
        .map_err(|e| ApiError::Internal(format!("factor {}: {e}", factor.id)))
}

/// The time step `code` matches for this factor at `now`, if any.
pub(crate) fn totp_step(totp: &Totp, code: &str, now: i64) -> Option<i64> {
    match totp.verify(code, u64::try_from(now).unwrap_or(0)) {
        Ok(step) => i64::try_from(step).ok(),
        Err(VerifyError::Mismatch | VerifyError::Malformed | VerifyError::BeforeT0) => None,
        Err(_) => None,
    }
}

fn mfa_key(user: Uuid) -> String {
    crate::throttle::second_factor_key(user)
}

/// Refuses while the user's second-factor attempts are locked out; otherwise a [`Failures`]
/// to settle a matching code with.
pub(crate) async fn check_lockout(app: &App, user: Uuid, now: i64) -> ApiResult<Failures> {
    let failures = crate::throttle::check(app, &mfa_key(user), now).await?;
    Ok(Failures { user, failures })
}

/// The user's active factors and their failure counter, read together.
pub(crate) struct FactorsRead {
    /// The active factors, oldest first.
    pub(crate) factors: Vec<storage::entity::factor::Model>,
    /// The counter, when a factor row carried it.
    counter: Option<storage::entity::attempt_counter::Model>,
}

/// Reads the user's active factors with their failure counter (one query when the user has
/// factors).
pub(crate) async fn read_factors(app: &App, user: Uuid) -> ApiResult<FactorsRead> {
    let (factors, counter) = app
        .storage
        .factors()
        .active_with_counter(user, &mfa_key(user))
        .await?;
    Ok(FactorsRead { factors, counter })
}

impl FactorsRead {
    /// The factors and counter read with a session ([`storage::repo::Sessions::find_valid_with_factors`]).
    pub(crate) fn read_with_session(
        factors: Vec<storage::entity::factor::Model>,
        counter: Option<storage::entity::attempt_counter::Model>,
    ) -> Self {
        Self { factors, counter }
    }

    /// [`check_lockout`] on the counter read with the factors (read now when no factor
    /// carried it).
    pub(crate) async fn check_lockout(
        &self,
        app: &App,
        user: Uuid,
        now: i64,
    ) -> ApiResult<Failures> {
        if self.factors.is_empty() {
            return check_lockout(app, user, now).await;
        }
        let failures = crate::throttle::check_counter(self.counter.as_ref(), now)?;
        Ok(Failures { user, failures })
    }
}

/// A user whose second-factor lockout was checked before a code was compared: a matching
/// code still has to be settled against the budget ([`Failures::succeed`], or the replay
/// guard's update for an app code, [`check_code_among`]).
#[derive(Clone, Copy, Debug)]
#[must_use = "a matching code is accepted only once settled against the budget"]
pub(crate) struct Failures {
    user: Uuid,
    /// The failures in a row on record at the check.
    failures: i64,
}

impl Failures {
    /// FAILED_PRECONDITION `FACTORS_SUSPENDED` once `login.max_consecutive_failures` wrong
    /// codes in a row are on record: app, token and SMS codes are then not even compared
    /// until a recovery code, an admin's reset or an operator's unlock clears the count.
    pub(crate) fn refuse_codes_if_suspended(self, app: &App) -> ApiResult<Self> {
        if self.failures >= i64::from(app.config.login.max_consecutive_failures) {
            return Err(suspended());
        }
        Ok(self)
    }

    /// Settles a matching code: LOCKED_OUT when wrong codes in flight alongside it spent the
    /// budget first (so it came after the lockout and earns nothing), else the user's
    /// failures are cleared. The check before the compare only spares work; this is what
    /// holds the budget exact when many codes are in flight at once.
    pub(crate) async fn succeed(self, app: &App, now: i64) -> ApiResult<()> {
        crate::throttle::succeed(app, &mfa_key(self.user), now).await
    }

    /// The user's failure counter, for a statement that refuses to use a code while a
    /// lockout is in force ([`Failures::settled`] follows it).
    pub(crate) fn key(&self) -> String {
        mfa_key(self.user)
    }

    /// After a code was used up by a statement that refused it under a lockout (the replay
    /// guard's update for an app code, the SMS code's use), so it is settled already: clears
    /// the failures the check saw, if any. A user with none, the common case, costs nothing
    /// more; failures counted since the check stay counted, on the side of the lockout.
    pub(crate) async fn settled(self, app: &App, now: i64) -> ApiResult<()> {
        if self.failures > 0 {
            // A lockout written since the acceptance leaves the count as it is.
            app.storage
                .attempts()
                .settle_success(&mfa_key(self.user), now)
                .await?;
        }
        Ok(())
    }
}

/// The answer once the user's code factors are suspended.
fn suspended() -> ApiError {
    ApiError::FailedPrecondition {
        reason: ErrorReason::FactorsSuspended,
        message: "too many wrong codes in a row: app, token and SMS codes are suspended; \
                  use a recovery code, or ask an admin to reset your 2FA"
            .to_owned(),
    }
}

/// Counts a failed code against the user (across methods, challenges and replicas), starts a
/// lockout when the budget is spent (it applies to every attempt not yet counted or settled,
/// those in flight included), and returns the error to answer for this one: UNAUTHENTICATED
/// with the reason given; LOCKED_OUT when a failure in flight alongside spent the budget
/// first (this one is then not counted); FACTORS_SUSPENDED when this failure made
/// `login.max_consecutive_failures` in a row. Once per streak, the failure that starts the
/// first lockout records `password.suspected_compromised` (whoever typed these codes had the
/// password, or a session), and the one that suspends records `factors.suspended`, both in
/// the transaction that counts.
pub(crate) async fn record_failure(
    app: &App,
    user: Uuid,
    reason: ErrorReason,
    now: i64,
) -> ApiError {
    record_failure_from(app, user, reason, Default::default(), now).await
}

/// [`record_failure`] of a call that relayed its client: the events it writes keep it.
pub(crate) async fn record_failure_from(
    app: &App,
    user: Uuid,
    reason: ErrorReason,
    client: storage::repo::ClientInfo<'_>,
    now: i64,
) -> ApiError {
    let first_lockout = i64::from(app.config.login.free_failures) + 1;
    let suspend_at = i64::from(app.config.login.max_consecutive_failures);
    let events = move |failures: i64| {
        let details = format!(r#"{{"failures":{failures}}}"#);
        let mut events = Vec::new();
        if failures == first_lockout {
            events.push(("password.suspected_compromised", details.clone()));
        }
        if failures == suspend_at {
            events.push(("factors.suspended", details));
        }
        events
    };
    let failed = match crate::throttle::fail(
        app,
        &mfa_key(user),
        Some(user),
        "second",
        client,
        now,
        events,
    )
    .await
    {
        Ok(failed) => failed,
        Err(e) => return e,
    };
    let failures = failed.failures;
    if failures == first_lockout {
        app.metrics.passwords_suspected_compromised.inc();
        tracing::warn!(user_id = %user, failures, "password suspected compromised");
    }
    if failures >= suspend_at {
        if failures == suspend_at {
            app.metrics.factors_suspended.inc();
            tracing::warn!(user_id = %user, failures, "code factors suspended");
        }
        return suspended();
    }
    failed.refusal(
        reason,
        match reason {
            // Whatever made it (an app's time step, a token's counter, a recovery code).
            ErrorReason::CodeReplayed => {
                "this code was already used; a used code never works again"
            }
            _ => "the code is wrong",
        },
    )
}

/// `n` fresh recovery codes, 80 random bits each, as `XXXX-XXXX-XXXX-XXXX` (base32).
pub(crate) fn new_recovery_codes(n: usize) -> ApiResult<Vec<Zeroizing<String>>> {
    (0..n)
        .map(|_| {
            let secret = Secret::generate_len(10).map_err(|e| ApiError::Internal(e.to_string()))?;
            let plain = secret.to_base32();
            let groups: Vec<&str> = plain
                .as_bytes()
                .chunks(4)
                .map(|c| std::str::from_utf8(c).unwrap_or_default())
                .collect();
            Ok(Zeroizing::new(groups.join("-")))
        })
        .collect()
}

/// Whether typed text looks like an app code (digits only, after dropping spaces) rather than
/// a recovery code.
pub(crate) fn looks_like_otp(code: &str) -> Option<String> {
    let digits: String = code.chars().filter(|c| !c.is_whitespace()).collect();
    (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())).then_some(digits)
}

/// The HOTP generator of a stored factor, and the counter it expects next.
pub(crate) fn hotp_of(
    app: &App,
    factor: &storage::entity::factor::Model,
) -> ApiResult<(otp_core::Hotp, u64)> {
    let seed = app.storage.factors().open_secret(factor)?;
    let algorithm = factor
        .algorithm
        .as_deref()
        .unwrap_or("SHA1")
        .parse::<Algorithm>()
        .map_err(|e| ApiError::Internal(format!("factor {}: {e}", factor.id)))?;
    let digits = Digits::new(u8::try_from(factor.digits.unwrap_or(6)).unwrap_or(0))
        .map_err(|e| ApiError::Internal(format!("factor {}: {e}", factor.id)))?;
    let params = otp_core::HotpParams {
        algorithm,
        digits,
        // Imported seeds can be shorter than 128 bits on older tokens.
        legacy_short_secret: true,
        look_ahead: app.config.otp.hotp_look_ahead,
        resync_window: app.config.otp.hotp_resync_window,
    };
    let hotp = otp_core::Hotp::new(Secret::from_bytes(seed.to_vec()), params)
        .map_err(|e| ApiError::Internal(format!("factor {}: {e}", factor.id)))?;
    let next = factor
        .last_step
        .map_or(0, |last| u64::try_from(last).unwrap_or(0).saturating_add(1));
    Ok((hotp, next))
}

/// What is written with an accepted app or token code, in the replay guard's transaction
/// (on PostgreSQL, its one statement): a session raised, the event that records it.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Along<'e> {
    /// The session raised to assurance 2 (a step-up).
    pub(crate) raise: Option<Uuid>,
    /// The event.
    pub(crate) audit: Option<storage::repo::NewAuditEvent<'e>>,
}

/// What a typed code did against the user's active factors.
pub(crate) enum CodeCheck {
    /// Accepted by one factor (its step, counter or SMS code is now used) and settled
    /// against the user's failure budget. With what the acceptance wrote of [`Along`] when
    /// an app or token code was accepted (None for an SMS code, which wrote none of it).
    Accepted(Option<storage::repo::Accepted>),
    /// It matched, but its step or counter was already used.
    Replayed,
    /// It matched no factor.
    NoMatch,
}

/// Checks a typed code against every active TOTP and HOTP factor of the user (a match goes
/// through the replay guard: one conditional UPDATE, exact across calls and replicas, which
/// also refuses it while the user is locked out), then against the current code of each SMS
/// factor (used up when it matches and no lockout is in force, in one statement too).
/// `failures`: the lockout check made before; `factors`: the user's active ones, read by
/// the caller; `along`: written with an accepted app or token code.
/// LOCKED_OUT when failures in flight alongside spent the budget first.
pub(crate) async fn check_code_among(
    app: &App,
    failures: Failures,
    factors: &[storage::entity::factor::Model],
    digits: &str,
    now: i64,
    along: Along<'_>,
) -> ApiResult<CodeCheck> {
    let failures = failures.refuse_codes_if_suspended(app)?;
    let key = failures.key();
    let mut replayed = false;
    for factor in factors {
        let step = match factor.kind {
            storage::entity::enums::FactorKind::Totp => {
                totp_step(&totp_of(app, factor)?, digits, now)
            }
            storage::entity::enums::FactorKind::Hotp => {
                let (hotp, next) = hotp_of(app, factor)?;
                match hotp.verify(digits, next) {
                    Ok(counter) => i64::try_from(counter).ok(),
                    // Behind `next`: a used counter, within the look-ahead of one used before.
                    Err(_) => {
                        let earlier = next.saturating_sub(u64::from(hotp.params().look_ahead) + 1);
                        if hotp.verify(digits, earlier).is_ok_and(|c| c < next) {
                            replayed = true;
                        }
                        None
                    }
                }
            }
            // SMS codes are checked below; passkeys never take a typed code.
            storage::entity::enums::FactorKind::Sms
            | storage::entity::enums::FactorKind::Webauthn => None,
        };
        if let Some(step) = step {
            let written = app
                .storage
                .factors()
                .accept_code(&storage::repo::Acceptance {
                    factor_id: factor.id,
                    step,
                    now,
                    lock_key: &key,
                    raise: along.raise,
                    audit: along.audit,
                })
                .await?;
            if written.accepted {
                failures.settled(app, now).await?;
                let method = match factor.kind {
                    storage::entity::enums::FactorKind::Hotp => "hotp",
                    _ => "totp",
                };
                app.metrics.check(method, "accepted");
                return Ok(CodeCheck::Accepted(Some(written)));
            }
            // Refused: the step was used, or a lockout came first (the step is then left).
            crate::throttle::check(app, &key, now).await?;
            replayed = true;
        }
    }
    // SMS codes last: checking one spends one of its attempts, which a right app code
    // therefore never does.
    if !replayed {
        for factor in factors
            .iter()
            .filter(|f| f.kind == storage::entity::enums::FactorKind::Sms)
        {
            if crate::sms_flow::check_code(app, failures, factor.id, digits, now).await? {
                app.metrics.check("sms", "accepted");
                return Ok(CodeCheck::Accepted(None));
            }
        }
    }
    Ok(if replayed {
        app.metrics.check("code", "replayed");
        CodeCheck::Replayed
    } else {
        app.metrics.check("code", "rejected");
        CodeCheck::NoMatch
    })
}

/// Proof of possession for a sensitive change: a current code from one of the user's factors
/// (through the replay guard) or a recovery code (used up). Checked against the lockout
/// first; a failure counts toward it. `read`: what [`read_factors`] returned, when the caller
/// already read it. `org`: the organization of the session, for the audit event of a
/// recovery code used.
pub(crate) async fn prove(
    app: &App,
    user: Uuid,
    org: Option<Uuid>,
    proof: &str,
    now: i64,
    read: Option<&FactorsRead>,
) -> ApiResult<policy::Proof> {
    Ok(
        prove_along(app, user, org, proof, now, read, Along::default())
            .await?
            .0,
    )
}

/// [`prove`], with `along` written with an accepted app or token code; returns what that
/// wrote of it (None when the proof was another kind, which wrote none of it).
pub(crate) async fn prove_along(
    app: &App,
    user: Uuid,
    org: Option<Uuid>,
    proof: &str,
    now: i64,
    read: Option<&FactorsRead>,
    along: Along<'_>,
) -> ApiResult<(policy::Proof, Option<storage::repo::Accepted>)> {
    if proof.trim().is_empty() || proof.len() > 64 {
        return Err(ApiError::field(
            "proof",
            "a current code or a recovery code is required",
        ));
    }
    let failures = match read {
        Some(read) => read.check_lockout(app, user, now).await?,
        None => check_lockout(app, user, now).await?,
    };
    let factors = read.map(|read| read.factors.as_slice());
    // The client of the call, as its event carries it (VerifyStepUp's).
    let client = along.audit.map(|event| event.client).unwrap_or_default();
    let result = if let Some(digits) = looks_like_otp(proof) {
        let checked = match factors {
            Some(factors) => check_code_among(app, failures, factors, &digits, now, along).await?,
            None => {
                let factors = app.storage.factors().of_user(user, true).await?;
                check_code_among(app, failures, &factors, &digits, now, along).await?
            }
        };
        match checked {
            CodeCheck::Accepted(written) => Ok((policy::Proof::FactorCode, written)),
            CodeCheck::Replayed => Err(ErrorReason::CodeReplayed),
            CodeCheck::NoMatch => Err(ErrorReason::InvalidCode),
        }
    } else if use_recovery_code(app, failures, user, proof, now, false).await? {
        audit::own_from(app, org, user, "recovery_code.used", "{}", client).await?;
        Ok((policy::Proof::RecoveryCode, None))
    } else {
        Err(recovery_code_refusal(app, user, proof).await?)
    };
    match result {
        Ok(proof) => Ok(proof),
        Err(reason) => Err(record_failure_from(app, user, reason, client, now).await),
    }
}

/// Why a typed recovery code was refused: CODE_REPLAYED when it is one of the user's codes
/// used already (as for an app code's spent time step), INVALID_CODE otherwise. A read on the
/// failure path only.
pub(crate) async fn recovery_code_refusal(
    app: &App,
    user: Uuid,
    code: &str,
) -> ApiResult<ErrorReason> {
    Ok(if app.storage.recovery_codes().is_used(user, code).await? {
        ErrorReason::CodeReplayed
    } else {
        ErrorReason::InvalidCode
    })
}

/// Uses a typed recovery code of the user's, settled against the budget before it is spent:
/// true when it was one of their unused codes and is now used; false when it is not (or a
/// request alongside used it first), for the caller to count as a failure. LOCKED_OUT when
/// failures in flight alongside spent the budget first, and the code is then left unused:
/// a right code refused never costs the user one of their codes.
pub(crate) async fn use_recovery_code(
    app: &App,
    failures: Failures,
    user: Uuid,
    code: &str,
    now: i64,
    at_login: bool,
) -> ApiResult<bool> {
    let codes = app.storage.recovery_codes();
    if !codes.is_unused(user, code).await? {
        app.metrics.check("recovery_code", "rejected");
        return Ok(false);
    }
    failures.succeed(app, now).await?;
    // At a login, the last code also sets the user to enroll again (the lost device's
    // factors are retired by that enrollment), in the same transaction.
    let used = if at_login {
        codes.consume_at_login(user, code, now).await?
    } else {
        codes.consume(user, code, now).await?
    };
    if !used {
        app.metrics.check("recovery_code", "rejected");
        return Ok(false);
    }
    app.metrics.check("recovery_code", "accepted");
    Ok(true)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]

    use storage::testing::{Backend, NOW, TestDb};

    use super::*;
    use crate::test_support::{active_totp, app, app_code, is_locked_out, user};

    const CODE: &str = "AAAA-BBBB-CCCC-DDDD";

    /// The interleaving a burst produces, in order: a right code passes the lockout check,
    /// then wrong codes in flight alongside spend the budget, then the right one is
    /// settled. It is refused, and a recovery code, an app code's step and an SMS code are
    /// each left unused.
    async fn a_right_code_settled_after_the_budget_is_spent_is_refused(backend: Backend) {
        let db = TestDb::new(backend).await;
        let app = app(&db).await;
        let user = user(&db, "a@example.com").await;
        db.storage
            .recovery_codes()
            .replace(user, &[CODE], NOW, &[])
            .await
            .unwrap();
        let factors = [active_totp(&db, user).await];
        let phone = {
            let factors = db.storage.factors();
            let phone = factors
                .create_sms_pending(user, "", "+4915112345678", NOW, NOW + 600, &[])
                .await
                .unwrap();
            factors
                .activate(phone.id, user, None, None, NOW)
                .await
                .unwrap();
            factors.get(phone.id).await.unwrap().unwrap()
        };
        db.storage
            .sms_codes()
            .issue(phone.id, "654321", NOW, NOW + 300)
            .await
            .unwrap();
        let phones = [phone];
        let admitted = [
            check_lockout(&app, user, NOW).await.unwrap(),
            check_lockout(&app, user, NOW).await.unwrap(),
        ];
        let app_admitted = check_lockout(&app, user, NOW).await.unwrap();
        let sms_admitted = check_lockout(&app, user, NOW).await.unwrap();
        let budget = app.throttle().free_failures + 1;
        for n in 1..=budget {
            let e = record_failure(&app, user, ErrorReason::InvalidCode, NOW).await;
            // The last one starts the lockout and says so (RetryInfo).
            let locked = matches!(e, ApiError::UnauthenticatedLocked { .. });
            assert!(
                matches!(e, ApiError::Unauthenticated { .. }) || (n == budget && locked),
                "failure {n}: {e:?}"
            );
        }
        // One more in flight finds the lockout: not counted, answered LOCKED_OUT.
        assert!(is_locked_out(
            &record_failure(&app, user, ErrorReason::InvalidCode, NOW).await
        ));
        let e = use_recovery_code(&app, admitted[0], user, CODE, NOW, false)
            .await
            .unwrap_err();
        assert!(is_locked_out(&e), "{e:?}");
        assert!(
            db.storage
                .recovery_codes()
                .is_unused(user, CODE)
                .await
                .unwrap(),
            "a refused recovery code is not spent"
        );
        let e = admitted[1].succeed(&app, NOW).await.unwrap_err();
        assert!(is_locked_out(&e), "{e:?}");
        // An app code the same way: the replay guard refuses it, and its step stays unused.
        let e = check_code_among(
            &app,
            app_admitted,
            &factors,
            &app_code(NOW),
            NOW,
            Along::default(),
        )
        .await
        .err()
        .unwrap();
        assert!(is_locked_out(&e), "{e:?}");
        let stored = db
            .storage
            .factors()
            .get(factors[0].id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(stored.last_step, None, "the step is not used");
        // An SMS code the same way: its use is refused, so it is answered like a wrong code,
        // which finds the lockout; the code stays unused.
        let checked =
            check_code_among(&app, sms_admitted, &phones, "654321", NOW, Along::default())
                .await
                .unwrap();
        assert!(matches!(checked, CodeCheck::NoMatch));
        assert!(is_locked_out(
            &record_failure(&app, user, ErrorReason::InvalidCode, NOW).await
        ));
        let sms = db
            .storage
            .sms_codes()
            .current(phones[0].id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(sms.consumed_at, None, "the SMS code is not used");
        let counter = db
            .storage
            .attempts()
            .get(&mfa_key(user))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            counter.failures,
            i64::from(budget),
            "the refusals counted nothing"
        );
        // After the lockout, the same code works, once, and clears the count.
        let later = NOW + 30;
        let admitted = check_lockout(&app, user, later).await.unwrap();
        assert!(
            use_recovery_code(&app, admitted, user, CODE, later, false)
                .await
                .unwrap()
        );
        assert!(
            db.storage
                .attempts()
                .get(&mfa_key(user))
                .await
                .unwrap()
                .is_none()
        );
        let admitted = check_lockout(&app, user, later).await.unwrap();
        assert!(
            !use_recovery_code(&app, admitted, user, CODE, later, false)
                .await
                .unwrap()
        );
        let admitted = check_lockout(&app, user, later).await.unwrap();
        let checked = check_code_among(
            &app,
            admitted,
            &factors,
            &app_code(later),
            later,
            Along::default(),
        )
        .await
        .unwrap();
        assert!(matches!(checked, CodeCheck::Accepted(_)));
        let admitted = check_lockout(&app, user, later).await.unwrap();
        let checked = check_code_among(&app, admitted, &phones, "654321", later, Along::default())
            .await
            .unwrap();
        assert!(
            matches!(checked, CodeCheck::Accepted(_)),
            "the SMS code, kept"
        );
    }

    #[tokio::test]
    async fn a_right_code_settled_after_the_budget_is_spent_is_refused_on_sqlite() {
        a_right_code_settled_after_the_budget_is_spent_is_refused(Backend::Sqlite).await;
    }

    #[tokio::test]
    async fn a_right_code_settled_after_the_budget_is_spent_is_refused_on_postgres() {
        a_right_code_settled_after_the_budget_is_spent_is_refused(Backend::Postgres).await;
    }
}
