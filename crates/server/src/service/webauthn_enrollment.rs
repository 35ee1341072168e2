//! Registering a passkey or security key (`BeginWebAuthnRegistration`,
//! `ConfirmWebAuthnRegistration`) in `tollgate.v1.EnrollmentService`.

use storage::entity::enums::FactorKind;
use tollgate_proto::v1;
use tonic::Request;

use super::enrollment::{Enrollment, factor_to_proto};
use super::parse_id;
use crate::error::{ApiError, ApiResult};
use crate::webauthn;

impl Enrollment {
    pub(super) async fn begin_webauthn(
        &self,
        request: Request<v1::BeginWebAuthnRegistrationRequest>,
    ) -> ApiResult<v1::BeginWebAuthnRegistrationResponse> {
        let ctx = self.context(&request).await?;
        super::enrollment::check_enrollment_assurance(&self.app, &ctx).await?;
        let body = request.into_inner();
        if body.label.trim().chars().count() > 64 {
            return Err(ApiError::field("label", "at most 64 characters"));
        }
        let app = &self.app;
        webauthn::relying_party(app)?;
        super::enrollment::check_kind_allowed(app, &ctx, policy::FactorKind::WebAuthn).await?;
        let user = app
            .storage
            .users()
            .get(ctx.user_id())
            .await?
            .ok_or(ApiError::NotFound("user"))?;
        let label = match body.label.trim() {
            "" if body.discoverable => "passkey",
            "" => "security key",
            label => label,
        };
        let (factor, options) = webauthn::begin_registration(
            app,
            &user,
            ctx.org_id(),
            label,
            body.discoverable,
            app.now(),
        )
        .await?;
        Ok(v1::BeginWebAuthnRegistrationResponse {
            factor: Some(factor_to_proto(&factor)),
            creation_options_json: options,
        })
    }

    pub(super) async fn confirm_webauthn(
        &self,
        request: Request<v1::ConfirmWebAuthnRegistrationRequest>,
    ) -> ApiResult<v1::ConfirmWebAuthnRegistrationResponse> {
        let ctx = self.context(&request).await?;
        super::enrollment::check_enrollment_assurance(&self.app, &ctx).await?;
        let body = request.into_inner();
        let mut violations = Vec::new();
        let factor_id = match parse_id("factor_id", &body.factor_id) {
            Ok(id) => Some(id),
            Err(ApiError::InvalidArgument(mut v)) => {
                violations.append(&mut v);
                None
            }
            Err(other) => return Err(other),
        };
        if body.registration_response_json.trim().is_empty() {
            violations.push((
                "registration_response_json".to_owned(),
                "the browser's credential.toJSON() is required".to_owned(),
            ));
        }
        let client = crate::client::parse(body.client_context.as_ref(), false, &mut violations);
        let (Some(factor_id), true) = (factor_id, violations.is_empty()) else {
            return Err(ApiError::InvalidArgument(violations));
        };
        let app = &self.app;
        let client = client.stored(&app.config.clients);
        webauthn::relying_party(app)?;
        let user_id = ctx.user_id();
        let now = app.now();
        let factor =
            super::enrollment::pending_factor(app, user_id, factor_id, FactorKind::Webauthn, now)
                .await?;
        let replaces = self
            .replaced_factor(&ctx, &body.replaces_factor_id, &factor)
            .await?;
        let registered = webauthn::finish_registration(
            app,
            user_id,
            &factor,
            &body.registration_response_json,
            now,
        )
        .await?;
        let (factor, recovery_codes, session) = self
            .finish_with(
                &ctx,
                &factor,
                None,
                "webauthn",
                replaces.as_ref(),
                Some((&registered.credential_id, &registered.credential)),
                &client,
            )
            .await?;
        Ok(v1::ConfirmWebAuthnRegistrationResponse {
            factor: Some(factor),
            recovery_codes,
            session,
        })
    }
}
