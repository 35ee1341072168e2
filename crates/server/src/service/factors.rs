//! The rest of `tollgate.v1.EnrollmentService`: counter-based tokens (HOTP), removing factors,
//! regenerating recovery codes, and the user's own reset.

use crate::error::ErrorReason;
use otp_core::{Digits, Hotp, HotpParams, OtpAuthUri, Secret};
use storage::entity::enums::{FactorKind, FactorStatus};
use tollgate_proto::v1;
use tonic::Request;
use zeroize::Zeroizing;

use super::enrollment::{Enrollment, factor_to_proto};
use super::{org_policy, parse_id};
use crate::auth::UserContext;
use crate::error::{ApiError, ApiResult};
use crate::{audit, mfa};

/// A session, not an enrollment token: removing or resetting factors is not part of a login.
fn session_only(ctx: &UserContext) -> ApiResult<()> {
    match ctx {
        UserContext::Session(_) => Ok(()),
        UserContext::Enrollment(_) => Err(ApiError::PermissionDenied {
            reason: ErrorReason::SessionRequired,
            message: "this needs a session, not an enrollment token".to_owned(),
        }),
    }
}

fn code_field(field: &str, code: &str) -> ApiResult<String> {
    mfa::looks_like_otp(code)
        .filter(|d| (6..=8).contains(&d.len()))
        .ok_or_else(|| ApiError::field(field, "must be the 6 to 8 digits the token shows"))
}

impl Enrollment {
    pub(super) async fn begin_hotp(
        &self,
        request: Request<v1::BeginHotpEnrollmentRequest>,
    ) -> ApiResult<v1::BeginHotpEnrollmentResponse> {
        let ctx = self.context(&request).await?;
        super::enrollment::check_enrollment_assurance(&self.app, &ctx).await?;
        let body = request.into_inner();
        let imported = Zeroizing::new(body.secret_base32);
        let mut violations = Vec::new();
        if body.label.trim().chars().count() > 64 {
            violations.push(("label".to_owned(), "at most 64 characters".to_owned()));
        }
        let digits = match body.digits {
            0 => Some(Digits::SIX),
            n => u8::try_from(n).ok().and_then(|n| Digits::new(n).ok()),
        };
        if digits.is_none() {
            violations.push(("digits".to_owned(), "must be 6, 7 or 8".to_owned()));
        }
        let secret = if imported.trim().is_empty() {
            None
        } else {
            match Secret::from_base32(&imported) {
                Ok(secret) => Some(secret),
                Err(e) => {
                    violations.push(("secret_base32".to_owned(), e.to_string()));
                    None
                }
            }
        };
        let params = HotpParams {
            digits: digits.unwrap_or(Digits::SIX),
            legacy_short_secret: true,
            ..HotpParams::default()
        };
        let generated = secret.is_none();
        let secret = match secret {
            Some(secret) => secret,
            None => {
                Secret::generate(params.algorithm).map_err(|e| ApiError::Internal(e.to_string()))?
            }
        };
        let hotp = Hotp::new(secret, params);
        if let Err(e) = &hotp {
            violations.push(("secret_base32".to_owned(), e.to_string()));
        }
        let (Ok(hotp), true) = (hotp, violations.is_empty()) else {
            return Err(ApiError::InvalidArgument(violations));
        };
        let app = &self.app;
        super::enrollment::check_kind_allowed(app, &ctx, policy::FactorKind::Hotp).await?;
        let user = app
            .storage
            .users()
            .get(ctx.user_id())
            .await?
            .ok_or(ApiError::NotFound("user"))?;
        let now = app.now();
        let stored = storage::repo::OtpParams {
            algorithm: hotp.params().algorithm.as_str(),
            digits: i16::from(hotp.params().digits.get()),
            period: None,
        };
        let factor = app
            .storage
            .factors()
            .create_otp_pending(
                user.id,
                FactorKind::Hotp,
                body.label.trim(),
                hotp.secret().expose_bytes(),
                stored,
                Some(body.counter),
                now,
                now + app.config.otp.pending_enrollment_ttl_secs,
                &[audit::own_event(
                    ctx.org_id(),
                    user.id,
                    "factor.enrollment_begun",
                    r#"{"kind":"hotp"}"#,
                    now,
                )],
            )
            .await?;
        let (uri, shown) = if generated {
            let uri = OtpAuthUri::for_hotp(
                &hotp,
                body.counter,
                Some(&app.config.otp.issuer),
                &user.email,
            )
            .to_uri()
            .map_err(|e| ApiError::Internal(format!("otpauth URI: {e}")))?;
            (
                uri.to_string(),
                hotp.secret().to_base32_grouped().to_string(),
            )
        } else {
            (String::new(), String::new())
        };
        Ok(v1::BeginHotpEnrollmentResponse {
            factor: Some(factor_to_proto(&factor)),
            otpauth_uri: uri,
            secret_base32: shown,
        })
    }

    pub(super) async fn confirm_hotp(
        &self,
        request: Request<v1::ConfirmHotpEnrollmentRequest>,
    ) -> ApiResult<v1::ConfirmHotpEnrollmentResponse> {
        let ctx = self.context(&request).await?;
        super::enrollment::check_enrollment_assurance(&self.app, &ctx).await?;
        let body = request.into_inner();
        let code = Zeroizing::new(body.code);
        let factor_id = parse_id("factor_id", &body.factor_id)?;
        let digits = code_field("code", &code)?;
        let client = crate::client::checked(&self.app, body.client_context.as_ref())?;
        let app = &self.app;
        let user_id = ctx.user_id();
        let now = app.now();
        let factor =
            super::enrollment::pending_factor(app, user_id, factor_id, FactorKind::Hotp, now)
                .await?;
        let replaces = self
            .replaced_factor(&ctx, &body.replaces_factor_id, &factor)
            .await?;
        let failures = mfa::check_lockout(app, user_id, now).await?;
        let (hotp, next) = mfa::hotp_of(app, &factor)?;
        let Some(counter) = hotp
            .verify(&digits, next)
            .ok()
            .and_then(|c| i64::try_from(c).ok())
        else {
            let (reason, client) = (ErrorReason::InvalidCode, client.info());
            return Err(mfa::record_failure_from(app, user_id, reason, client, now).await);
        };
        failures.succeed(app, now).await?;
        let (factor, recovery_codes, session) = self
            .finish(
                &ctx,
                &factor,
                Some(counter),
                "hotp",
                replaces.as_ref(),
                &client,
            )
            .await?;
        Ok(v1::ConfirmHotpEnrollmentResponse {
            factor: Some(factor),
            recovery_codes,
            session,
        })
    }

    pub(super) async fn resync(
        &self,
        request: Request<v1::ResyncHotpRequest>,
    ) -> ApiResult<v1::ResyncHotpResponse> {
        let ctx = self.context(&request).await?;
        session_only(&ctx)?;
        let body = request.into_inner();
        let (first, second) = (
            Zeroizing::new(body.first_code),
            Zeroizing::new(body.second_code),
        );
        let factor_id = parse_id("factor_id", &body.factor_id)?;
        let first = code_field("first_code", &first)?;
        let second = code_field("second_code", &second)?;
        let app = &self.app;
        let user_id = ctx.user_id();
        let now = app.now();
        let factor = app
            .storage
            .factors()
            .get(factor_id)
            .await?
            .filter(|f| {
                f.user_id == user_id
                    && f.kind == FactorKind::Hotp
                    && f.status == FactorStatus::Active
            })
            .ok_or(ApiError::NotFound("factor"))?;
        let failures = mfa::check_lockout(app, user_id, now).await?;
        let (hotp, next) = mfa::hotp_of(app, &factor)?;
        let counter = match hotp.resync(&first, &second, next) {
            Ok(counter) => {
                i64::try_from(counter).map_err(|_| ApiError::Internal("counter".into()))?
            }
            Err(_) => {
                return Err(mfa::record_failure(app, user_id, ErrorReason::InvalidCode, now).await);
            }
        };
        // Settled before the counter moves: a resync refused by a lockout changes nothing.
        failures.succeed(app, now).await?;
        let resynced = audit::own_event(ctx.org_id(), user_id, "factor.resynced", "{}", now);
        if !app
            .storage
            .factors()
            .resync(factor.id, counter, now, &[resynced])
            .await?
        {
            return Err(mfa::record_failure(app, user_id, ErrorReason::CodeReplayed, now).await);
        }
        let factor = app
            .storage
            .factors()
            .get(factor.id)
            .await?
            .ok_or(ApiError::NotFound("factor"))?;
        Ok(v1::ResyncHotpResponse {
            factor: Some(factor_to_proto(&factor)),
        })
    }

    /// The factor a confirmation of `confirming` replaces (`replaces_factor_id`, a change of
    /// method): none when the field is empty. Else it must be another active factor of the
    /// same user (INVALID_ARGUMENT naming the field, or NOT_FOUND), asked for with a session
    /// (PERMISSION_DENIED `SESSION_REQUIRED` with an enrollment token, which can add a factor
    /// but never take one away), and its removal must be one `RemoveFactor` would allow once
    /// the new factor is counted (FAILED_PRECONDITION `LAST_REQUIRED_FACTOR`: an organization
    /// that requires 2FA keeps a factor of a kind it allows). Checked before anything changes.
    pub(super) async fn replaced_factor(
        &self,
        ctx: &UserContext,
        value: &str,
        confirming: &storage::entity::factor::Model,
    ) -> ApiResult<Option<storage::entity::factor::Model>> {
        if value.trim().is_empty() {
            return Ok(None);
        }
        let id = parse_id("replaces_factor_id", value)?;
        if id == confirming.id {
            return Err(ApiError::field(
                "replaces_factor_id",
                "must be another factor than the one confirmed",
            ));
        }
        session_only(ctx)?;
        let app = &self.app;
        let user_id = ctx.user_id();
        let old = app
            .storage
            .factors()
            .get(id)
            .await?
            .filter(|f| f.user_id == user_id && f.status == FactorStatus::Active)
            .ok_or(ApiError::NotFound("factor to replace"))?;
        let (_, state, _) = super::authentication::user_state(
            app,
            user_id,
            storage::repo::OrganizationsToRead::None,
        )
        .await?;
        let organizations = self.organizations_of(user_id).await?;
        policy::replace_factor(
            &state,
            policy_kind(old.kind),
            policy_kind(confirming.kind),
            &organizations,
        )
        .map_err(|refusal| ApiError::FailedPrecondition {
            reason: refusal.reason(),
            message: refusal.to_string(),
        })?;
        Ok(Some(old))
    }

    pub(super) async fn remove(
        &self,
        request: Request<v1::RemoveFactorRequest>,
    ) -> ApiResult<v1::RemoveFactorResponse> {
        let ctx = self.context(&request).await?;
        session_only(&ctx)?;
        let body = request.into_inner();
        let proof = Zeroizing::new(body.proof);
        let webauthn = body.webauthn_response_json;
        let factor_id = parse_id("factor_id", &body.factor_id)?;
        let app = &self.app;
        let user_id = ctx.user_id();
        let now = app.now();
        let factor = app
            .storage
            .factors()
            .get(factor_id)
            .await?
            .filter(|f| f.user_id == user_id)
            .ok_or(ApiError::NotFound("factor"))?;
        let organizations = self.organizations_of(user_id).await?;
        let removal = if factor.status == FactorStatus::Pending {
            // An unconfirmed enrollment protects nothing: it goes without proof.
            policy::Removal {
                delete_recovery_codes: false,
            }
        } else {
            let (_, state, _) = super::authentication::user_state(
                app,
                user_id,
                storage::repo::OrganizationsToRead::None,
            )
            .await?;
            let decide = |proof| {
                policy::remove_factor(&state, policy_kind(factor.kind), proof, &organizations)
                    .map_err(|refusal| ApiError::FailedPrecondition {
                        reason: refusal.reason(),
                        message: refusal.to_string(),
                    })
            };
            // Refusals that do not depend on the proof come before it is used up.
            decide(policy::Proof::FactorCode)?;
            let proven = prove_either(app, &ctx, &proof, &webauthn, now).await?;
            decide(proven)?
        };
        // The event commits with the removal; a factor removed meanwhile by another call is
        // not removed, nor recorded, twice.
        let details = format!(r#"{{"factor_id":"{}"}}"#, factor.id);
        let event = audit::own_event(ctx.org_id(), user_id, "factor.removed", &details, now);
        if !app
            .storage
            .factors()
            .remove(
                user_id,
                factor.id,
                removal.delete_recovery_codes,
                now,
                &[event],
            )
            .await?
        {
            return Err(ApiError::NotFound("factor"));
        }
        Ok(v1::RemoveFactorResponse {
            recovery_codes_removed: removal.delete_recovery_codes,
        })
    }

    pub(super) async fn regenerate(
        &self,
        request: Request<v1::RegenerateRecoveryCodesRequest>,
    ) -> ApiResult<v1::RegenerateRecoveryCodesResponse> {
        let ctx = self.context(&request).await?;
        session_only(&ctx)?;
        let body = request.into_inner();
        let (proof, webauthn) = (Zeroizing::new(body.proof), body.webauthn_response_json);
        let app = &self.app;
        let user_id = ctx.user_id();
        let now = app.now();
        if app
            .storage
            .factors()
            .of_user(user_id, true)
            .await?
            .is_empty()
        {
            return Err(ApiError::FailedPrecondition {
                reason: ErrorReason::NoFactor,
                message: "recovery codes stand in for a factor; enroll one first".to_owned(),
            });
        }
        prove_either(app, &ctx, &proof, &webauthn, now).await?;
        let codes = mfa::new_recovery_codes(app.config.otp.recovery_codes)?;
        let refs: Vec<&str> = codes.iter().map(|c| c.as_str()).collect();
        let event = audit::own_event(
            ctx.org_id(),
            user_id,
            "recovery_codes.regenerated",
            "{}",
            now,
        );
        app.storage
            .recovery_codes()
            .replace(user_id, &refs, now, &[event])
            .await?;
        Ok(v1::RegenerateRecoveryCodesResponse {
            recovery_codes: codes.iter().map(|c| c.to_string()).collect(),
        })
    }

    pub(super) async fn reset(
        &self,
        request: Request<v1::ResetMfaRequest>,
    ) -> ApiResult<v1::ResetMfaResponse> {
        let ctx = self.context(&request).await?;
        session_only(&ctx)?;
        let UserContext::Session(session) = &ctx else {
            return Err(ApiError::Internal(
                "session_only let an enrollment token through".into(),
            ));
        };
        let body = request.into_inner();
        let (proof, webauthn) = (Zeroizing::new(body.proof), body.webauthn_response_json);
        let app = &self.app;
        let user_id = ctx.user_id();
        let now = app.now();
        let (_, state, _) = super::authentication::user_state(
            app,
            user_id,
            storage::repo::OrganizationsToRead::None,
        )
        .await?;
        if state.factors.total() == 0 {
            return Err(ApiError::FailedPrecondition {
                reason: ErrorReason::NoFactor,
                message: "there is no factor to reset".to_owned(),
            });
        }
        let proven = prove_either(app, &ctx, &proof, &webauthn, now).await?;
        let plan = policy::reset_own_mfa(&state, proven).map_err(|refusal| {
            ApiError::FailedPrecondition {
                reason: refusal.reason(),
                message: refusal.to_string(),
            }
        })?;
        // Factors, codes, the re-enrollment flag, the other sessions and the audit event:
        // one transaction.
        let outcome = app
            .storage
            .factors()
            .reset(
                user_id,
                storage::repo::ResetPlan {
                    org_id: ctx.org_id(),
                    must_reenroll: plan.must_reenroll,
                    revoke: if plan.revoke_other_sessions {
                        storage::repo::SessionsToRevoke::AllExcept(session.id)
                    } else {
                        storage::repo::SessionsToRevoke::None
                    },
                },
                storage::repo::AuditOf {
                    actor_id: Some(user_id),
                    kind: "mfa.reset",
                    client: Default::default(),
                },
                |r| {
                    serde_json::json!({
                        "by": "self",
                        "factors_removed": r.factors_removed,
                        "sessions_revoked": r.sessions_revoked,
                        "trusted_devices_revoked": r.trusted_devices_revoked,
                    })
                    .to_string()
                },
                now,
            )
            .await?;
        let removed = outcome.factors_removed;
        Ok(v1::ResetMfaResponse {
            factors_removed: i32::try_from(removed).unwrap_or(i32::MAX),
        })
    }

    async fn organizations_of(&self, user: storage::Uuid) -> ApiResult<Vec<policy::OrgPolicy>> {
        let organizations = self
            .app
            .storage
            .memberships()
            .organizations_of(user)
            .await?;
        Ok(organizations.iter().map(org_policy).collect())
    }
}

/// The proof of a sensitive change made with a session: a code (`proof`: an app, token or
/// SMS code, or a recovery code) or an assertion by one of the user's passkeys or security
/// keys (`webauthn_response_json`, for a ceremony begun with this session). Exactly one.
async fn prove_either(
    app: &crate::App,
    ctx: &UserContext,
    proof: &str,
    webauthn: &str,
    now: i64,
) -> ApiResult<policy::Proof> {
    let webauthn = webauthn.trim();
    if webauthn.is_empty() {
        return mfa::prove(app, ctx.user_id(), ctx.org_id(), proof, now, None).await;
    }
    if !proof.trim().is_empty() {
        return Err(ApiError::field(
            "webauthn_response_json",
            "give a proof code or a passkey's response, not both",
        ));
    }
    let UserContext::Session(session) = ctx else {
        return Err(ApiError::Internal("a proof without a session".to_owned()));
    };
    crate::webauthn::verify_for_session(app, session, webauthn, Default::default(), now).await?;
    Ok(policy::Proof::FactorCode)
}

fn policy_kind(kind: FactorKind) -> policy::FactorKind {
    match kind {
        FactorKind::Totp => policy::FactorKind::Totp,
        FactorKind::Hotp => policy::FactorKind::Hotp,
        FactorKind::Sms => policy::FactorKind::Sms,
        FactorKind::Webauthn => policy::FactorKind::WebAuthn,
    }
}
