//! Enrolling a phone (`BeginSmsEnrollment`, `ConfirmSmsEnrollment`) in
//! `tollgate.v1.EnrollmentService`.

use crate::error::ErrorReason;
use storage::entity::enums::{FactorKind, FactorStatus};
use tollgate_proto::v1;
use tonic::Request;
use zeroize::Zeroizing;

use super::enrollment::{Enrollment, factor_to_proto};
use super::{parse_id, timestamp};
use crate::error::{ApiError, ApiResult};
use crate::{audit, mfa, sms, sms_flow};

impl Enrollment {
    pub(super) async fn begin_sms(
        &self,
        request: Request<v1::BeginSmsEnrollmentRequest>,
    ) -> ApiResult<v1::BeginSmsEnrollmentResponse> {
        let ctx = self.context(&request).await?;
        super::enrollment::check_enrollment_assurance(&self.app, &ctx).await?;
        let body = request.into_inner();
        let app = &self.app;
        let mut violations = Vec::new();
        let phone = sms::normalize_phone(&body.phone_number);
        match &phone {
            None => violations.push((
                "phone_number".to_owned(),
                "must be a phone number in international form, like +14155550100".to_owned(),
            )),
            Some(phone) if !sms_flow::country_allowed(app, phone) => violations.push((
                "phone_number".to_owned(),
                "SMS is not offered to this country; use an authenticator app".to_owned(),
            )),
            Some(_) => {}
        }
        if body.label.trim().chars().count() > 64 {
            violations.push(("label".to_owned(), "at most 64 characters".to_owned()));
        }
        let (Some(phone), true) = (phone, violations.is_empty()) else {
            return Err(ApiError::InvalidArgument(violations));
        };
        super::enrollment::check_kind_allowed(app, &ctx, policy::FactorKind::Sms).await?;
        let user_id = ctx.user_id();
        let now = app.now();
        // The same number again: a new code for the pending factor, not a second factor.
        let existing = app
            .storage
            .factors()
            .of_user(user_id, false)
            .await?
            .into_iter()
            .find(|f| {
                f.kind == FactorKind::Sms
                    && f.status == FactorStatus::Pending
                    && f.phone_e164.as_deref() == Some(phone.as_str())
                    && f.pending_expires_at.is_some_and(|t| t > now)
            });
        let created = existing.is_none();
        let factor = match existing {
            Some(factor) => factor,
            None => {
                app.storage
                    .factors()
                    .create_sms_pending(
                        user_id,
                        body.label.trim(),
                        &phone,
                        now,
                        now + app.config.otp.pending_enrollment_ttl_secs,
                        &[audit::own_event(
                            ctx.org_id(),
                            user_id,
                            "factor.enrollment_begun",
                            r#"{"kind":"sms"}"#,
                            now,
                        )],
                    )
                    .await?
            }
        };
        let sent =
            match sms_flow::send_code(app, user_id, ctx.org_id(), &factor, Default::default(), now)
                .await
            {
                Ok(sent) => sent,
                Err(e) => {
                    // Nothing is left pending for a phone that got no code.
                    if created {
                        app.storage
                            .factors()
                            .remove(user_id, factor.id, false, now, &[])
                            .await?;
                    }
                    return Err(e);
                }
            };
        Ok(v1::BeginSmsEnrollmentResponse {
            factor: Some(factor_to_proto(&factor)),
            masked_phone_number: sent.masked,
            code_expire_time: Some(timestamp(sent.expires_at)),
            resend_time: Some(timestamp(sent.resend_at)),
        })
    }

    pub(super) async fn confirm_sms(
        &self,
        request: Request<v1::ConfirmSmsEnrollmentRequest>,
    ) -> ApiResult<v1::ConfirmSmsEnrollmentResponse> {
        let ctx = self.context(&request).await?;
        super::enrollment::check_enrollment_assurance(&self.app, &ctx).await?;
        let body = request.into_inner();
        let code = Zeroizing::new(body.code);
        let mut violations = Vec::new();
        let factor_id = match parse_id("factor_id", &body.factor_id) {
            Ok(id) => Some(id),
            Err(ApiError::InvalidArgument(mut v)) => {
                violations.append(&mut v);
                None
            }
            Err(other) => return Err(other),
        };
        let digits = mfa::looks_like_otp(&code).filter(|d| d.len() == 6);
        if digits.is_none() {
            violations.push((
                "code".to_owned(),
                "must be the 6 digits the SMS gave".to_owned(),
            ));
        }
        let client = crate::client::parse(body.client_context.as_ref(), false, &mut violations);
        let (Some(factor_id), Some(digits), true) = (factor_id, digits, violations.is_empty())
        else {
            return Err(ApiError::InvalidArgument(violations));
        };
        let app = &self.app;
        let client = client.stored(&app.config.clients);
        let user_id = ctx.user_id();
        let now = app.now();
        let factor =
            super::enrollment::pending_factor(app, user_id, factor_id, FactorKind::Sms, now)
                .await?;
        let replaces = self
            .replaced_factor(&ctx, &body.replaces_factor_id, &factor)
            .await?;
        let failures = mfa::check_lockout(app, user_id, now).await?;
        if !sms_flow::check_code(app, failures, factor.id, &digits, now).await? {
            let (reason, client) = (ErrorReason::InvalidCode, client.info());
            return Err(mfa::record_failure_from(app, user_id, reason, client, now).await);
        }
        let (factor, recovery_codes, session) = self
            .finish(&ctx, &factor, None, "sms", replaces.as_ref(), &client)
            .await?;
        Ok(v1::ConfirmSmsEnrollmentResponse {
            factor: Some(factor),
            recovery_codes,
            session,
        })
    }
}
