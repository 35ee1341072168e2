//! `tollgate.v1.EnrollmentService`: enrolling authenticator apps, listing factors.

use crate::error::ErrorReason;
use otp_core::{OtpAuthUri, Secret, Totp};
use storage::entity::enums::{FactorKind, FactorStatus};
use storage::repo::Activation;
use tollgate_proto::v1;
use tollgate_proto::v1::enrollment_service_server::EnrollmentService;
use tonic::{Request, Response, Status};
use zeroize::Zeroizing;

use super::{kind_to_proto, org_policy, parse_id, timestamp};
use crate::auth::{UserContext, caller, user_context};
use crate::error::{ApiError, ApiResult};
use crate::telemetry::rpc;
use crate::{App, audit, mfa, qr};

/// The service.
#[derive(Debug, Clone)]
pub struct Enrollment {
    pub(super) app: App,
}

impl Enrollment {
    /// Over the shared state.
    pub fn new(app: App) -> Self {
        Self { app }
    }
}

/// Adding a factor to a user who already has one needs a session a second factor raised to
/// assurance 2 (or the enrollment token of a login that asked for it): a password alone must
/// not add a way in, nor a password on a remembered device.
pub(super) async fn check_enrollment_assurance(app: &App, ctx: &UserContext) -> ApiResult<()> {
    if let UserContext::Session(session) = ctx
        && !super::sessions::proven_by_factor(session)
        && !app
            .storage
            .factors()
            .of_user(session.user_id, true)
            .await?
            .is_empty()
    {
        return Err(ApiError::PermissionDenied {
            reason: ErrorReason::StepUpRequired,
            message: "the user has 2FA: step this session up (VerifyStepUp) before adding a factor"
                .to_owned(),
        });
    }
    Ok(())
}

/// The caller's pending, unexpired factor of `kind`, or NOT_FOUND.
pub(super) async fn pending_factor(
    app: &App,
    user_id: storage::Uuid,
    factor_id: storage::Uuid,
    kind: FactorKind,
    now: i64,
) -> ApiResult<storage::entity::factor::Model> {
    app.storage
        .factors()
        .get(factor_id)
        .await?
        .filter(|f| {
            f.user_id == user_id
                && f.kind == kind
                && f.status == FactorStatus::Pending
                && f.pending_expires_at.is_some_and(|t| t > now)
        })
        .ok_or(ApiError::NotFound("pending factor"))
}

/// Refuses kinds the organization of the login or session does not allow.
pub(super) async fn check_kind_allowed(
    app: &App,
    ctx: &UserContext,
    kind: policy::FactorKind,
) -> ApiResult<()> {
    let Some(org_id) = ctx.org_id() else {
        return Ok(());
    };
    let org = app
        .storage
        .organizations()
        .get(org_id)
        .await?
        .ok_or(ApiError::NotFound("organization"))?;
    policy::enroll_factor(&org_policy(&org), kind).map_err(|refusal| ApiError::PermissionDenied {
        reason: refusal.reason(),
        message: refusal.to_string(),
    })
}

pub(crate) fn factor_to_proto(factor: &storage::entity::factor::Model) -> v1::Factor {
    v1::Factor {
        id: factor.id.to_string(),
        kind: kind_to_proto(factor.kind) as i32,
        status: match factor.status {
            FactorStatus::Pending => v1::FactorStatus::Pending,
            FactorStatus::Active => v1::FactorStatus::Active,
        } as i32,
        label: factor.label.clone(),
        create_time: Some(timestamp(factor.created_at)),
        activate_time: factor.activated_at.map(timestamp),
        last_use_time: factor.last_used_at.map(timestamp),
        expire_time: factor.pending_expires_at.map(timestamp),
        masked_phone_number: factor
            .phone_e164
            .as_deref()
            .map(crate::sms::mask)
            .unwrap_or_default(),
        backup_eligible: crate::webauthn::backup_eligible(factor),
        discoverable: factor.discoverable,
    }
}

#[tonic::async_trait]
impl EnrollmentService for Enrollment {
    async fn begin_totp_enrollment(
        &self,
        request: Request<v1::BeginTotpEnrollmentRequest>,
    ) -> Result<Response<v1::BeginTotpEnrollmentResponse>, Status> {
        rpc(&self.app, self.begin(request)).await
    }

    async fn begin_web_authn_registration(
        &self,
        request: Request<v1::BeginWebAuthnRegistrationRequest>,
    ) -> Result<Response<v1::BeginWebAuthnRegistrationResponse>, Status> {
        rpc(&self.app, self.begin_webauthn(request)).await
    }

    async fn confirm_web_authn_registration(
        &self,
        request: Request<v1::ConfirmWebAuthnRegistrationRequest>,
    ) -> Result<Response<v1::ConfirmWebAuthnRegistrationResponse>, Status> {
        rpc(&self.app, self.confirm_webauthn(request)).await
    }

    async fn confirm_totp_enrollment(
        &self,
        request: Request<v1::ConfirmTotpEnrollmentRequest>,
    ) -> Result<Response<v1::ConfirmTotpEnrollmentResponse>, Status> {
        rpc(&self.app, self.confirm(request)).await
    }

    async fn list_factors(
        &self,
        request: Request<v1::ListFactorsRequest>,
    ) -> Result<Response<v1::ListFactorsResponse>, Status> {
        rpc(&self.app, self.list(request)).await
    }

    async fn begin_hotp_enrollment(
        &self,
        request: Request<v1::BeginHotpEnrollmentRequest>,
    ) -> Result<Response<v1::BeginHotpEnrollmentResponse>, Status> {
        rpc(&self.app, self.begin_hotp(request)).await
    }

    async fn confirm_hotp_enrollment(
        &self,
        request: Request<v1::ConfirmHotpEnrollmentRequest>,
    ) -> Result<Response<v1::ConfirmHotpEnrollmentResponse>, Status> {
        rpc(&self.app, self.confirm_hotp(request)).await
    }

    async fn resync_hotp(
        &self,
        request: Request<v1::ResyncHotpRequest>,
    ) -> Result<Response<v1::ResyncHotpResponse>, Status> {
        rpc(&self.app, self.resync(request)).await
    }

    async fn remove_factor(
        &self,
        request: Request<v1::RemoveFactorRequest>,
    ) -> Result<Response<v1::RemoveFactorResponse>, Status> {
        rpc(&self.app, self.remove(request)).await
    }

    async fn regenerate_recovery_codes(
        &self,
        request: Request<v1::RegenerateRecoveryCodesRequest>,
    ) -> Result<Response<v1::RegenerateRecoveryCodesResponse>, Status> {
        rpc(&self.app, self.regenerate(request)).await
    }

    async fn reset_mfa(
        &self,
        request: Request<v1::ResetMfaRequest>,
    ) -> Result<Response<v1::ResetMfaResponse>, Status> {
        rpc(&self.app, self.reset(request)).await
    }

    async fn begin_sms_enrollment(
        &self,
        request: Request<v1::BeginSmsEnrollmentRequest>,
    ) -> Result<Response<v1::BeginSmsEnrollmentResponse>, Status> {
        rpc(&self.app, self.begin_sms(request)).await
    }

    async fn confirm_sms_enrollment(
        &self,
        request: Request<v1::ConfirmSmsEnrollmentRequest>,
    ) -> Result<Response<v1::ConfirmSmsEnrollmentResponse>, Status> {
        rpc(&self.app, self.confirm_sms(request)).await
    }
}

impl Enrollment {
    /// The calling service (scope `factors`) and the user it acts for.
    pub(super) async fn context<T>(&self, request: &Request<T>) -> ApiResult<UserContext> {
        caller(request)?.require("factors")?;
        user_context(&self.app, request).await
    }

    async fn begin(
        &self,
        request: Request<v1::BeginTotpEnrollmentRequest>,
    ) -> ApiResult<v1::BeginTotpEnrollmentResponse> {
        let ctx = self.context(&request).await?;
        check_enrollment_assurance(&self.app, &ctx).await?;
        let label = request.into_inner().label;
        if label.trim().chars().count() > 64 {
            return Err(ApiError::field("label", "at most 64 characters"));
        }
        let app = &self.app;
        let user = app
            .storage
            .users()
            .get(ctx.user_id())
            .await?
            .ok_or(ApiError::NotFound("user"))?;
        // Only kinds the organization of this login or session allows.
        check_kind_allowed(app, &ctx, policy::FactorKind::Totp).await?;
        let params = mfa::totp_params();
        let secret =
            Secret::generate(params.algorithm).map_err(|e| ApiError::Internal(e.to_string()))?;
        let totp = Totp::new(secret, params).map_err(|e| ApiError::Internal(e.to_string()))?;
        let now = app.now();
        let factor = app
            .storage
            .factors()
            .create_otp_pending(
                user.id,
                FactorKind::Totp,
                label.trim(),
                totp.secret().expose_bytes(),
                mfa::storage_params(),
                None,
                now,
                now + app.config.otp.pending_enrollment_ttl_secs,
                &[audit::own_event(
                    ctx.org_id(),
                    user.id,
                    "factor.enrollment_begun",
                    r#"{"kind":"totp"}"#,
                    now,
                )],
            )
            .await?;
        let uri = OtpAuthUri::for_totp(&totp, Some(&app.config.otp.issuer), &user.email)
            .to_uri()
            .map_err(|e| ApiError::Internal(format!("otpauth URI: {e}")))?;
        let (png, svg) = qr::render(&uri)?;
        Ok(v1::BeginTotpEnrollmentResponse {
            factor: Some(factor_to_proto(&factor)),
            otpauth_uri: uri.to_string(),
            secret_base32: totp.secret().to_base32_grouped().to_string(),
            qr_code_png: png.to_vec(),
            qr_code_svg: svg.to_string(),
        })
    }

    async fn confirm(
        &self,
        request: Request<v1::ConfirmTotpEnrollmentRequest>,
    ) -> ApiResult<v1::ConfirmTotpEnrollmentResponse> {
        let ctx = self.context(&request).await?;
        check_enrollment_assurance(&self.app, &ctx).await?;
        let body = request.into_inner();
        let code = Zeroizing::new(body.code);
        let factor_id = parse_id("factor_id", &body.factor_id)?;
        let Some(digits) = mfa::looks_like_otp(&code).filter(|d| (6..=8).contains(&d.len())) else {
            return Err(ApiError::field(
                "code",
                "must be the 6 to 8 digits the app shows",
            ));
        };
        let client = crate::client::checked(&self.app, body.client_context.as_ref())?;
        let app = &self.app;
        let user_id = ctx.user_id();
        let now = app.now();
        let factor = pending_factor(app, user_id, factor_id, FactorKind::Totp, now).await?;
        let replaces = self
            .replaced_factor(&ctx, &body.replaces_factor_id, &factor)
            .await?;
        let failures = mfa::check_lockout(app, user_id, now).await?;
        let totp = mfa::totp_of(app, &factor)?;
        let Some(step) = mfa::totp_step(&totp, &digits, now) else {
            let (reason, client) = (ErrorReason::InvalidCode, client.info());
            return Err(mfa::record_failure_from(app, user_id, reason, client, now).await);
        };
        failures.succeed(app, now).await?;
        let (factor, recovery_codes, session) = self
            .finish(
                &ctx,
                &factor,
                Some(step),
                "totp",
                replaces.as_ref(),
                &client,
            )
            .await?;
        Ok(v1::ConfirmTotpEnrollmentResponse {
            factor: Some(factor),
            recovery_codes,
            session,
        })
    }

    /// Activates a pending factor at `step`, removing the factor it `replaces`, issuing
    /// recovery codes (with the first factor, or when none are left), and recording all of
    /// it in the audit log, in one transaction; with an enrollment token, uses it up and
    /// opens the session that completes the login. The confirming code was settled against
    /// the user's failure budget before (which cleared their failures): a lockout that
    /// failures in flight alongside it wrote since is left in force.
    #[allow(
        clippy::too_many_arguments,
        reason = "each confirmation hands over what it checked"
    )]
    pub(super) async fn finish(
        &self,
        ctx: &UserContext,
        factor: &storage::entity::factor::Model,
        step: Option<i64>,
        kind: &str,
        replaces: Option<&storage::entity::factor::Model>,
        client: &crate::client::Stored,
    ) -> ApiResult<(v1::Factor, Vec<String>, Option<v1::Session>)> {
        self.finish_with(ctx, factor, step, kind, replaces, None, client)
            .await
    }

    /// [`Enrollment::finish`] for a WebAuthn factor, whose credential (its id and JSON) is
    /// stored with the activation. The events carry `client`; so does the session of an
    /// enrollment token's login (else the client its first step kept).
    #[allow(
        clippy::too_many_arguments,
        reason = "each confirmation hands over what it checked"
    )]
    pub(super) async fn finish_with(
        &self,
        ctx: &UserContext,
        factor: &storage::entity::factor::Model,
        step: Option<i64>,
        kind: &str,
        replaces: Option<&storage::entity::factor::Model>,
        credential: Option<(&[u8], &str)>,
        client: &crate::client::Stored,
    ) -> ApiResult<(v1::Factor, Vec<String>, Option<v1::Session>)> {
        let app = &self.app;
        let user_id = ctx.user_id();
        let now = app.now();
        let user = app
            .storage
            .users()
            .get(user_id)
            .await?
            .ok_or(ApiError::NotFound("user"))?;
        if user.status == storage::entity::enums::UserStatus::Disabled {
            return Err(ApiError::PermissionDenied {
                reason: ErrorReason::AccountDisabled,
                message: "the account is disabled".to_owned(),
            });
        }
        // An enrollment token is used up first: whatever happens next, it is never used twice,
        // and nothing is activated for a token someone else already used.
        if let UserContext::Enrollment(challenge) = ctx
            && !app
                .storage
                .challenges()
                .consume_by_id(challenge.id, now)
                .await?
        {
            return Err(ApiError::Unauthenticated {
                reason: ErrorReason::UserTokenInvalid,
                message: "the enrollment token was already used".to_owned(),
            });
        }
        let active = app.storage.factors().of_user(user_id, true).await?;
        // Recovery codes come with the first factor, and again when none are left (the last
        // one brought the user here).
        let first =
            active.is_empty() || app.storage.recovery_codes().remaining(user_id).await? == 0;
        let codes = if first {
            mfa::new_recovery_codes(app.config.otp.recovery_codes)?
        } else {
            Vec::new()
        };
        // A re-enrollment after the last recovery code retires the factors the user had then
        // (the lost device's): the new factor replaces them all, in the same transaction.
        let retired: Vec<&storage::entity::factor::Model> = if user.must_reenroll {
            active
                .iter()
                .filter(|f| f.id != factor.id && replaces.is_none_or(|r| r.id != f.id))
                .collect()
        } else {
            Vec::new()
        };
        let retired_ids: Vec<storage::Uuid> = retired.iter().map(|f| f.id).collect();
        let retired_details: Vec<String> = retired
            .iter()
            .map(|old| {
                format!(
                    r#"{{"factor_id":"{}","kind":"{}","retired_by":"{}"}}"#,
                    old.id,
                    kind_name(old.kind),
                    factor.id
                )
            })
            .collect();
        let code_refs: Vec<&str> = codes.iter().map(|c| c.as_str()).collect();
        // The events commit with the change, or neither does.
        let enrolled = format!(r#"{{"kind":"{kind}"}}"#);
        let removed = replaces.map(|old| {
            format!(
                r#"{{"factor_id":"{}","kind":"{}","replaced_by":"{}"}}"#,
                old.id,
                kind_name(old.kind),
                factor.id
            )
        });
        let event = |kind, details| storage::repo::NewAuditEvent {
            client: client.info(),
            ..audit::own_event(ctx.org_id(), user_id, kind, details, now)
        };
        let mut events = vec![event("factor.enrolled", enrolled.as_str())];
        if let Some(details) = &removed {
            events.push(event("factor.removed", details));
        }
        for details in &retired_details {
            events.push(event("factor.removed", details));
        }
        if first {
            events.push(event("recovery_codes.issued", "{}"));
        }
        app.storage
            .factors()
            .activate_with(
                factor.id,
                user_id,
                step,
                Activation {
                    recovery_codes: first.then_some(code_refs.as_slice()),
                    replaces: replaces.map(|old| old.id),
                    retires: &retired_ids,
                    credential,
                    audit: &events,
                },
                now,
            )
            .await?;
        // With an enrollment token, the login completes: the token is used up, a session issued.
        let session = match ctx {
            UserContext::Enrollment(challenge) => {
                // This call's client, else the login's as Authenticate kept it with the
                // enrollment token.
                let client = client
                    .clone()
                    .or(crate::client::Stored::of_challenge(challenge));
                let session = super::authentication::create_session(
                    app,
                    user_id,
                    ctx.org_id(),
                    2,
                    client.info(),
                    None,
                    now,
                )
                .await?;
                audit::own_from(
                    app,
                    ctx.org_id(),
                    user_id,
                    "login.succeeded",
                    r#"{"assurance":2}"#,
                    client.info(),
                )
                .await?;
                Some(session)
            }
            UserContext::Session(_) => None,
        };
        let factor = app
            .storage
            .factors()
            .get(factor.id)
            .await?
            .ok_or(ApiError::NotFound("factor"))?;
        Ok((
            factor_to_proto(&factor),
            codes.iter().map(|c| c.to_string()).collect(),
            session,
        ))
    }

    async fn list(
        &self,
        request: Request<v1::ListFactorsRequest>,
    ) -> ApiResult<v1::ListFactorsResponse> {
        let ctx = self.context(&request).await?;
        let factors = self
            .app
            .storage
            .factors()
            .of_user(ctx.user_id(), false)
            .await?;
        let remaining = self
            .app
            .storage
            .recovery_codes()
            .remaining(ctx.user_id())
            .await?;
        Ok(v1::ListFactorsResponse {
            factors: factors.iter().map(factor_to_proto).collect(),
            recovery_codes_remaining: i32::try_from(remaining).unwrap_or(i32::MAX),
        })
    }
}

/// A factor kind as the audit log names it.
pub(super) fn kind_name(kind: FactorKind) -> &'static str {
    match kind {
        FactorKind::Totp => "totp",
        FactorKind::Hotp => "hotp",
        FactorKind::Sms => "sms",
        FactorKind::Webauthn => "webauthn",
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]

    use storage::repo::NewSession;
    use storage::testing::{Backend, NOW, TestDb};

    use super::*;
    use crate::test_support::{app, is_locked_out, pending_totp, user};

    /// The interleaving of a confirmation with wrong codes in flight alongside it: the
    /// confirming code is settled, then the wrong codes spend the budget, then the factor
    /// is activated. The lockout they started stays in force (activating clears nothing).
    async fn activating_a_factor_leaves_a_lockout_in_force(backend: Backend) {
        let db = TestDb::new(backend).await;
        let app = app(&db).await;
        let user = user(&db, "enrolling@example.com").await;
        let factor = pending_totp(&db, user).await;
        let session = db
            .storage
            .sessions()
            .create(
                "a-session-token-for-this-test",
                NewSession {
                    user_id: user,
                    org_id: None,
                    assurance: 1,
                    now: NOW,
                    idle_ttl: 600,
                    absolute_ttl: 3600,
                    client: Default::default(),
                    trusted_device_id: None,
                },
            )
            .await
            .unwrap();
        mfa::check_lockout(&app, user, NOW)
            .await
            .unwrap()
            .succeed(&app, NOW)
            .await
            .unwrap();
        let budget = app.throttle().free_failures + 1;
        for _ in 0..budget {
            mfa::record_failure(&app, user, ErrorReason::InvalidCode, NOW).await;
        }
        Enrollment::new(app.clone())
            .finish(
                &UserContext::Session(session),
                &factor,
                Some(1),
                "totp",
                None,
                &Default::default(),
            )
            .await
            .unwrap();
        let stored = db.storage.factors().get(factor.id).await.unwrap().unwrap();
        assert_eq!(stored.status, FactorStatus::Active);
        let e = mfa::check_lockout(&app, user, NOW).await.unwrap_err();
        assert!(is_locked_out(&e), "{e:?}");
        let counter = db
            .storage
            .attempts()
            .get(&crate::throttle::second_factor_key(user))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(counter.failures, i64::from(budget), "nothing cleared");
    }

    #[tokio::test]
    async fn activating_a_factor_leaves_a_lockout_in_force_on_sqlite() {
        activating_a_factor_leaves_a_lockout_in_force(Backend::Sqlite).await;
    }

    #[tokio::test]
    async fn activating_a_factor_leaves_a_lockout_in_force_on_postgres() {
        activating_a_factor_leaves_a_lockout_in_force(Backend::Postgres).await;
    }
}
