//! `tollgate.v1.AuthenticationService`: the password step of a login.

use crate::error::ErrorReason;
use std::time::Duration;

use storage::Uuid;
use storage::entity::enums::{ChallengePurpose, UserStatus};
use storage::repo::{NewSession, OrganizationsToRead};
use tollgate_proto::v1::authentication_service_server::AuthenticationService;
use tollgate_proto::v1::{self, authenticate_request::Credentials, authenticate_response};
use tonic::{Request, Response, Status};
use zeroize::Zeroizing;

use super::{org_policy, parse_id, policy_kind_to_proto, timestamp};
use crate::auth::caller;
use crate::error::{ApiError, ApiResult};
use crate::telemetry::rpc;
use crate::{App, audit};

/// The service.
#[derive(Debug, Clone)]
pub struct Authentication {
    app: App,
}

impl Authentication {
    /// Over the shared state.
    pub fn new(app: App) -> Self {
        Self { app }
    }
}

/// The one answer for a wrong email, a wrong password, and an account without a password.
const INVALID_CREDENTIALS: &str = "the email or the password is wrong";

fn invalid_credentials() -> ApiError {
    ApiError::Unauthenticated {
        reason: ErrorReason::InvalidCredentials,
        message: INVALID_CREDENTIALS.to_owned(),
    }
}

fn password_key(app: &App, email: &str) -> String {
    crate::throttle::password_key(&app.storage, email)
}

/// Verifies the password given for `email` (against `hash`, or against the dummy hash when
/// there is none: unknown account, or no password) with throttling. The same steps run in
/// every case — lockout check once admitted to hash, one argon2id verification, then the
/// counter — so neither the answer nor the work tells an existing account from an unknown
/// one. A failure counts and may start a lockout; a success is settled against the counter
/// (one read when no failures are on record): when failures in flight alongside it spent
/// the budget first, it is refused as LOCKED_OUT like them, so no number of guesses sent at
/// once gets more than the budget's worth answered (those already admitted are hashed, and
/// their answer withheld).
///
/// With `budgets` (a login's client address and network, [`crate::client::Budgets`]), a
/// lockout of either refuses before anything is hashed, and a failure counts against them
/// too; a success leaves them as they are.
#[allow(
    clippy::too_many_arguments,
    reason = "the password check and everything its counting and audit need"
)]
pub(crate) async fn verify_password_throttled(
    app: &App,
    email: &str,
    hash: Option<String>,
    subject: Option<Uuid>,
    password: Zeroizing<String>,
    budgets: &crate::client::Budgets,
    client: storage::repo::ClientInfo<'_>,
    now: i64,
) -> ApiResult<()> {
    let key = password_key(app, email);
    let locked_out = |e: &ApiError| {
        if matches!(e, ApiError::ResourceExhausted { .. }) {
            app.metrics.login("password", "locked_out");
        }
    };
    // Counted as a client lockout only when it is one (not a database failure).
    let client_locked = |e: &ApiError| {
        if matches!(e, ApiError::ResourceExhausted { .. }) {
            app.metrics.login("password", "client_locked_out");
        }
    };
    budgets.check(app, now).await.inspect_err(client_locked)?;
    let (ok, _) = app
        .passwords
        .verify(password, hash, async {
            crate::throttle::check(app, &key, now).await.map(|_| ())
        })
        .await
        .inspect_err(locked_out)?;
    if ok {
        // A right password whose client was locked meanwhile (failures in flight alongside
        // spent its budget first) is withheld, as the email's budget withholds it.
        budgets.check(app, now).await.inspect_err(client_locked)?;
        return crate::throttle::succeed(app, &key, now)
            .await
            .inspect_err(locked_out);
    }
    budgets.fail(app, now).await.inspect_err(client_locked)?;
    let failed = crate::throttle::fail(app, &key, subject, "password", client, now, |_| Vec::new())
        .await
        .inspect_err(locked_out)?;
    app.metrics.login("password", "invalid_credentials");
    Err(failed.refusal(ErrorReason::InvalidCredentials, INVALID_CREDENTIALS))
}

#[tonic::async_trait]
impl AuthenticationService for Authentication {
    async fn authenticate(
        &self,
        request: Request<v1::AuthenticateRequest>,
    ) -> Result<Response<v1::AuthenticateResponse>, Status> {
        rpc(&self.app, self.authenticate_inner(request)).await
    }

    async fn verify_second_factor(
        &self,
        request: Request<v1::VerifySecondFactorRequest>,
    ) -> Result<Response<v1::VerifySecondFactorResponse>, Status> {
        rpc(&self.app, self.verify_inner(request)).await
    }

    async fn verify_step_up(
        &self,
        request: Request<v1::VerifyStepUpRequest>,
    ) -> Result<Response<v1::VerifyStepUpResponse>, Status> {
        rpc(&self.app, self.step_up(request)).await
    }

    async fn send_sms_code(
        &self,
        request: Request<v1::SendSmsCodeRequest>,
    ) -> Result<Response<v1::SendSmsCodeResponse>, Status> {
        rpc(&self.app, self.send_sms(request)).await
    }

    async fn begin_web_authn_verification(
        &self,
        request: Request<v1::BeginWebAuthnVerificationRequest>,
    ) -> Result<Response<v1::BeginWebAuthnVerificationResponse>, Status> {
        rpc(&self.app, self.begin_webauthn(request)).await
    }

    async fn begin_passkey_login(
        &self,
        request: Request<v1::BeginPasskeyLoginRequest>,
    ) -> Result<Response<v1::BeginPasskeyLoginResponse>, Status> {
        rpc(&self.app, self.begin_passkey(request)).await
    }
}

impl Authentication {
    #[allow(
        deprecated,
        reason = "the deprecated body field of older clients is still read"
    )]
    async fn begin_webauthn(
        &self,
        request: Request<v1::BeginWebAuthnVerificationRequest>,
    ) -> ApiResult<v1::BeginWebAuthnVerificationResponse> {
        caller(&request)?.require("authentication")?;
        let (challenge_token, session) = login_or_session(&request, |body| {
            (&body.challenge_token, &body.session_token)
        })?;
        let (challenge_token, session_token) = (challenge_token.as_str(), session.as_str());
        let app = &self.app;
        crate::webauthn::relying_party(app)?;
        let now = app.now();
        let (user_id, org_id, binding) =
            proving_user(app, challenge_token, session_token, now).await?;
        let options = crate::webauthn::begin_assertion(app, user_id, org_id, binding, now).await?;
        Ok(v1::BeginWebAuthnVerificationResponse {
            request_options_json: options,
        })
    }

    async fn begin_passkey(
        &self,
        request: Request<v1::BeginPasskeyLoginRequest>,
    ) -> ApiResult<v1::BeginPasskeyLoginResponse> {
        caller(&request)?.require("authentication")?;
        let body = request.into_inner();
        let org_id = if body.organization_id.trim().is_empty() {
            None
        } else {
            Some(parse_id("organization_id", &body.organization_id)?)
        };
        let app = &self.app;
        let (ceremony_id, options) =
            crate::webauthn::begin_passkey_login(app, org_id, app.now()).await?;
        Ok(v1::BeginPasskeyLoginResponse {
            ceremony_id: ceremony_id.to_string(),
            request_options_json: options,
        })
    }

    #[allow(
        deprecated,
        reason = "the deprecated body field of older clients is still read"
    )]
    async fn send_sms(
        &self,
        request: Request<v1::SendSmsCodeRequest>,
    ) -> ApiResult<v1::SendSmsCodeResponse> {
        caller(&request)?.require("authentication")?;
        let (challenge_token, session) = login_or_session(&request, |body| {
            (&body.challenge_token, &body.session_token)
        })?;
        let (challenge_token, session_token) = (challenge_token.as_str(), session.as_str());
        let body = request.into_inner();
        let mut violations = Vec::new();
        let factor_id = if body.factor_id.trim().is_empty() {
            None
        } else {
            match parse_id("factor_id", &body.factor_id) {
                Ok(id) => Some(id),
                Err(ApiError::InvalidArgument(mut v)) => {
                    violations.append(&mut v);
                    None
                }
                Err(other) => return Err(other),
            }
        };
        let client = crate::client::parse(body.client_context.as_ref(), false, &mut violations);
        if !violations.is_empty() {
            return Err(ApiError::InvalidArgument(violations));
        }
        let app = &self.app;
        let stored = client.stored(&app.config.clients);
        let now = app.now();
        // No SMS for a user who is locked out or whose codes are suspended: it could not be
        // used anyway.
        let (user_id, org_id, _) = proving_user(app, challenge_token, session_token, now).await?;
        let phones: Vec<_> = app
            .storage
            .factors()
            .of_user(user_id, true)
            .await?
            .into_iter()
            .filter(|f| f.kind == storage::entity::enums::FactorKind::Sms)
            .collect();
        if phones.is_empty() {
            return Err(ApiError::FailedPrecondition {
                reason: ErrorReason::NoSmsFactor,
                message: "the user has no phone enrolled for SMS codes".to_owned(),
            });
        }
        let factor = match factor_id {
            Some(id) => phones
                .into_iter()
                .find(|f| f.id == id)
                .ok_or(ApiError::NotFound("SMS factor"))?,
            None => phones
                .into_iter()
                .next()
                .ok_or(ApiError::NotFound("SMS factor"))?,
        };
        let sent =
            crate::sms_flow::send_code(app, user_id, org_id, &factor, stored.info(), now).await?;
        Ok(v1::SendSmsCodeResponse {
            factor_id: factor.id.to_string(),
            masked_phone_number: sent.masked,
            expire_time: Some(timestamp(sent.expires_at)),
            resend_time: Some(timestamp(sent.resend_at)),
        })
    }
}

impl Authentication {
    async fn authenticate_inner(
        &self,
        request: Request<v1::AuthenticateRequest>,
    ) -> ApiResult<v1::AuthenticateResponse> {
        let caller = caller(&request)?;
        caller.require("authentication")?;
        let body = request.into_inner();
        let mut violations = Vec::new();
        let requested_org = if body.organization_id.trim().is_empty() {
            None
        } else {
            match parse_id("organization_id", &body.organization_id) {
                Ok(id) => Some(id),
                Err(ApiError::InvalidArgument(mut v)) => {
                    violations.append(&mut v);
                    None
                }
                Err(other) => return Err(other),
            }
        };
        let client = crate::client::parse(
            body.client_context.as_ref(),
            self.app.config.clients.require_context,
            &mut violations,
        );
        let device = device_token(&body.device_token, &mut violations);
        let first = FirstStep {
            requested_org,
            client: &client,
            device,
        };
        let result = match body.credentials {
            Some(Credentials::Password(credentials)) => {
                self.password_login(credentials, first, violations).await?
            }
            Some(Credentials::Sso(credentials)) => {
                // Only a caller trusted to vouch for the identity provider's verdict.
                caller.require("sso")?;
                self.sso_login(credentials, &body.organization_id, first, violations)
                    .await?
            }
            Some(Credentials::Passkey(credentials)) => {
                self.passkey_login(credentials, first, violations).await?
            }
            None => {
                return Err(ApiError::field(
                    "password",
                    "password credentials are required",
                ));
            }
        };
        Ok(v1::AuthenticateResponse {
            result: Some(result),
        })
    }

    async fn password_login(
        &self,
        credentials: v1::PasswordCredentials,
        first: FirstStep<'_>,
        mut violations: Vec<(String, String)>,
    ) -> ApiResult<authenticate_response::Result> {
        let password = Zeroizing::new(credentials.password);
        if credentials.email.trim().is_empty() {
            violations.push(("password.email".to_owned(), "is required".to_owned()));
        }
        if password.is_empty() {
            violations.push(("password.password".to_owned(), "is required".to_owned()));
        } else if password.chars().count() > 256 {
            violations.push((
                "password.password".to_owned(),
                "at most 256 characters".to_owned(),
            ));
        }
        if !violations.is_empty() {
            return Err(ApiError::InvalidArgument(violations));
        }
        let now = self.app.now();
        let app = &self.app;

        // Unknown email: the same steps, the same cost and the same answer as a wrong password.
        let user = app
            .storage
            .users()
            .find_by_email(&credentials.email)
            .await?;
        let hash = user.as_ref().and_then(|u| u.password_hash.clone());
        let subject = user.as_ref().map(|u| u.id);
        let budgets = crate::client::Budgets::of(app, first.client);
        let stored = first.client.stored(&app.config.clients);
        verify_password_throttled(
            app,
            &credentials.email,
            hash,
            subject,
            password,
            &budgets,
            stored.info(),
            now,
        )
        .await?;
        // A verified password implies an existing account with a password.
        let user_id =
            subject.ok_or_else(|| ApiError::Internal("verified without a user".to_owned()))?;
        self.first_step(user_id, Proven::Password, first, now).await
    }

    /// A login the organization's identity provider verified, vouched for by the caller: the
    /// user must exist and be a member of the named organization, which must have SSO on.
    async fn sso_login(
        &self,
        credentials: v1::SsoCredentials,
        organization_field: &str,
        first: FirstStep<'_>,
        mut violations: Vec<(String, String)>,
    ) -> ApiResult<authenticate_response::Result> {
        if credentials.email.trim().is_empty() {
            violations.push(("sso.email".to_owned(), "is required".to_owned()));
        } else if credentials.email.chars().count() > 254 {
            violations.push(("sso.email".to_owned(), "at most 254 characters".to_owned()));
        }
        let provider = credentials.identity_provider.trim();
        if provider.chars().count() > 200 || provider.chars().any(char::is_control) {
            violations.push((
                "sso.identity_provider".to_owned(),
                "at most 200 printable characters".to_owned(),
            ));
        }
        if organization_field.trim().is_empty() {
            violations.push((
                "organization_id".to_owned(),
                "is required for an SSO login: the organization whose identity provider \
                 verified the user"
                    .to_owned(),
            ));
        }
        if !violations.is_empty() {
            return Err(ApiError::InvalidArgument(violations));
        }
        let app = &self.app;
        let now = app.now();
        // The organization's SSO setting first, and one answer for an unknown email and a
        // non-member: an SSO login tells no more about who has an account than it must.
        let org = match first.requested_org {
            Some(id) => app.storage.organizations().get(id).await?,
            None => None,
        }
        .ok_or(ApiError::NotFound("organization"))?;
        if !org.sso_enabled {
            let denial = policy::Denial::SsoNotEnabled;
            return Err(ApiError::PermissionDenied {
                reason: denial.reason(),
                message: denial.to_string(),
            });
        }
        let not_a_member = || {
            let denial = policy::Denial::NotAMember;
            ApiError::PermissionDenied {
                reason: denial.reason(),
                message: denial.to_string(),
            }
        };
        let user = app
            .storage
            .users()
            .find_by_email(&credentials.email)
            .await?
            .ok_or_else(not_a_member)?;
        self.first_step(user.id, Proven::Sso(provider), first, now)
            .await
    }

    /// A passwordless login: the browser's assertion by a discoverable passkey, for the
    /// ceremony BeginPasskeyLogin started (whose organization applies unless the request
    /// names one).
    async fn passkey_login(
        &self,
        credentials: v1::PasskeyCredentials,
        first: FirstStep<'_>,
        mut violations: Vec<(String, String)>,
    ) -> ApiResult<authenticate_response::Result> {
        let ceremony = match parse_id("passkey.ceremony_id", &credentials.ceremony_id) {
            Ok(id) => Some(id),
            Err(ApiError::InvalidArgument(mut v)) => {
                violations.append(&mut v);
                None
            }
            Err(other) => return Err(other),
        };
        if credentials.response_json.trim().is_empty() {
            violations.push((
                "passkey.response_json".to_owned(),
                "the browser's credential.toJSON() is required".to_owned(),
            ));
        }
        let (Some(ceremony), true) = (ceremony, violations.is_empty()) else {
            return Err(ApiError::InvalidArgument(violations));
        };
        let app = &self.app;
        let now = app.now();
        let stored = first.client.stored(&app.config.clients);
        let json = &credentials.response_json;
        let (user_id, ceremony_org) =
            crate::webauthn::finish_passkey_login(app, ceremony, json, stored.info(), now).await?;
        let first = FirstStep {
            requested_org: first.requested_org.or(ceremony_org),
            ..first
        };
        self.first_step(user_id, Proven::Passkey, first, now).await
    }

    /// What follows a verified first step (a password, an SSO login, or a passkey alone):
    /// the organization's policy decides between a session, a second-factor challenge and an
    /// enrollment; where it asks for the second factor, a valid remembered device stands in
    /// for it.
    async fn first_step(
        &self,
        user_id: Uuid,
        proven: Proven<'_>,
        first: FirstStep<'_>,
        now: i64,
    ) -> ApiResult<authenticate_response::Result> {
        let app = &self.app;
        let requested_org = first.requested_org;
        let stored = first.client.stored(&app.config.clients);
        // The user as they are now (a password check waits its turn to hash: an account
        // disabled meanwhile is refused), their factors and their organizations, in one read.
        let (user, state, mut organizations) =
            user_state(app, user_id, OrganizationsToRead::Memberships).await?;
        if user.status == UserStatus::Disabled {
            return Err(ApiError::PermissionDenied {
                reason: ErrorReason::AccountDisabled,
                message: "the account is disabled".to_owned(),
            });
        }
        let memberships: Vec<Uuid> = organizations.iter().map(|o| o.id).collect();
        let org_id =
            policy::choose_organization(&memberships, requested_org).map_err(|denial| {
                ApiError::PermissionDenied {
                    reason: denial.reason(),
                    message: denial.to_string(),
                }
            })?;
        // The chosen one is among those just read.
        let org = match org_id {
            Some(id) => {
                let at = organizations
                    .iter()
                    .position(|o| o.id == id)
                    .ok_or(ApiError::NotFound("organization"))?;
                Some(organizations.swap_remove(at))
            }
            None => None,
        };
        let org_policy = org.as_ref().map(org_policy).unwrap_or_default();
        let at = u64::try_from(now).unwrap_or(0);
        let (mut outcome, method, provider) = match proven {
            Proven::Password => (
                policy::login_outcome(&org_policy, &state, policy::LoginKind::Password, at),
                "password",
                None,
            ),
            Proven::Sso(provider) => (
                policy::login_outcome(&org_policy, &state, policy::LoginKind::Sso, at),
                "sso",
                Some(provider),
            ),
            // Possession and the device's PIN or biometric: two factors, as after a second
            // factor, subject to the organization's allowed kinds like any.
            Proven::Passkey => (
                policy::after_second_factor(&org_policy, &state),
                "passkey",
                None,
            ),
        };
        // A remembered device stands in for the second factor, and only for it: an
        // enrollment, a lockout or a refusal stays as it is. Any token that is not valid
        // here is as good as none.
        let mut remembered = None;
        if let (policy::LoginOutcome::SecondFactorRequired { .. }, Some(token), Some(org)) =
            (&outcome, first.device, &org)
            && org.trusted_device_days > 0
        {
            remembered = app
                .storage
                .trusted_devices()
                .use_valid(token, user.id, org.id, now)
                .await?;
            if remembered.is_some() {
                outcome = policy::with_remembered_device(outcome, &org_policy, &state);
            }
        }
        let device_id = remembered.as_ref().map(|d| d.id);
        tracing::info!(
            user_id = %user.id,
            method,
            outcome = outcome_name(&outcome),
            remembered_device = remembered.is_some(),
            "first login step"
        );
        app.metrics.login(method, outcome_name(&outcome));
        let result = match outcome {
            policy::LoginOutcome::Authenticated { assurance, .. } => {
                let session = create_session(
                    app,
                    user.id,
                    org_id,
                    assurance as i16,
                    stored.info(),
                    device_id,
                    now,
                )
                .await?;
                let details = match device_id {
                    Some(id) => serde_json::json!({
                        "assurance": assurance as i16,
                        "method": method,
                        "identity_provider": provider,
                        "trusted_device": id.to_string(),
                    }),
                    None => serde_json::json!({
                        "assurance": assurance as i16,
                        "method": method,
                        "identity_provider": provider,
                    }),
                }
                .to_string();
                audit::own_from(
                    app,
                    org_id,
                    user.id,
                    "login.succeeded",
                    &details,
                    stored.info(),
                )
                .await?;
                authenticate_response::Result::Authenticated(session)
            }
            policy::LoginOutcome::SecondFactorRequired { methods } => {
                let ttl = app.config.login.challenge_ttl_secs;
                let (token, expires) = issue_challenge(
                    app,
                    &user,
                    org_id,
                    ChallengePurpose::SecondFactor,
                    ttl,
                    stored.info(),
                    now,
                )
                .await?;
                authenticate_response::Result::SecondFactorRequired(v1::SecondFactorRequired {
                    challenge_token: token,
                    expire_time: Some(timestamp(expires)),
                    methods: methods.iter().map(|m| method_to_proto(m) as i32).collect(),
                })
            }
            policy::LoginOutcome::EnrollmentRequired { methods, .. } => {
                let ttl = app.config.login.enrollment_ttl_secs;
                let (token, expires) = issue_challenge(
                    app,
                    &user,
                    org_id,
                    ChallengePurpose::Enrollment,
                    ttl,
                    stored.info(),
                    now,
                )
                .await?;
                authenticate_response::Result::EnrollmentRequired(v1::EnrollmentRequired {
                    enrollment_token: token,
                    expire_time: Some(timestamp(expires)),
                    allowed_methods: methods
                        .iter()
                        .map(|k| policy_kind_to_proto(k) as i32)
                        .collect(),
                })
            }
            policy::LoginOutcome::Denied(denial) => {
                return Err(match denial {
                    // Never tell a wrong password from an account without one.
                    policy::Denial::NoPassword => invalid_credentials(),
                    policy::Denial::LockedOut { until } => {
                        crate::throttle::locked(i64::try_from(until).unwrap_or(i64::MAX), now)
                    }
                    other => ApiError::PermissionDenied {
                        reason: other.reason(),
                        message: other.to_string(),
                    },
                });
            }
        };
        Ok(result)
    }
}

/// The user who is to prove possession of a factor, from a login's challenge token or a
/// session token (exactly one, checked by the caller), with the organization and what a
/// WebAuthn ceremony would be bound to; refused while the user is locked out or their codes
/// are suspended, before anything is sent or started.
async fn proving_user(
    app: &App,
    challenge_token: &str,
    session_token: &str,
    now: i64,
) -> ApiResult<(Uuid, Option<Uuid>, crate::webauthn::Binding)> {
    let (user_id, org_id, binding) = if challenge_token.is_empty() {
        let session = app
            .storage
            .sessions()
            .find_valid(session_token, now)
            .await?
            .ok_or_else(super::sessions::invalid_session)?;
        let binding = crate::webauthn::Binding::Session(session.id);
        (session.user_id, session.org_id, binding)
    } else {
        let challenge = app
            .storage
            .challenges()
            .find_active(challenge_token, now)
            .await?
            .filter(|c| c.purpose == ChallengePurpose::SecondFactor)
            .ok_or_else(invalid_challenge)?;
        let binding = crate::webauthn::Binding::Login(challenge.id);
        (challenge.user_id, challenge.org_id, binding)
    };
    let _not_compared_here = crate::mfa::check_lockout(app, user_id, now)
        .await?
        .refuse_codes_if_suspended(app)?;
    Ok((user_id, org_id, binding))
}

/// The session a call acts for, by the contract's token rule: `authorization: Bearer`, or
/// the deprecated body field (`session_token`) of clients written before the rule, which
/// then works exactly as it did (the header is not consulted: such a client may send a
/// bearer token of its own, for a gateway). Neither: UNAUTHENTICATED `USER_TOKEN_MISSING`.
fn session_of<T>(request: &Request<T>, deprecated_field: &str) -> ApiResult<String> {
    match session_given(request, deprecated_field) {
        Some(token) => Ok(token),
        None => Err(ApiError::Unauthenticated {
            reason: ErrorReason::UserTokenMissing,
            message: "send the user's session as authorization: Bearer".to_owned(),
        }),
    }
}

/// The session of [`session_of`], if any was given.
fn session_given<T>(request: &Request<T>, deprecated_field: &str) -> Option<String> {
    let body = deprecated_field.trim();
    if body.is_empty() {
        crate::auth::bearer(request)
    } else {
        Some(body.to_owned())
    }
}

/// SendSmsCode's and BeginWebAuthnVerification's two uses: during a login, the challenge
/// token of the body (a bearer header beside it is not consulted: a browser may hold an old
/// session while it logs in again); otherwise the user's session, by [`session_of`]. Exactly
/// one: the challenge and the deprecated `session_token` field together are refused, and so
/// is neither. Returns (challenge token, session token), one of them empty.
fn login_or_session<T>(
    request: &Request<T>,
    fields: impl Fn(&T) -> (&String, &String),
) -> ApiResult<(String, String)> {
    let (challenge, deprecated_session) = fields(request.get_ref());
    let challenge = challenge.trim();
    let neither = "give the challenge token during a login, or the session as \
                   authorization: Bearer";
    if challenge.len() > 256 {
        return Err(ApiError::field("challenge_token", "at most 256 characters"));
    }
    if !challenge.is_empty() {
        if !deprecated_session.trim().is_empty() {
            return Err(ApiError::field(
                "challenge_token",
                "give a challenge token (during a login) or a session, not both",
            ));
        }
        return Ok((challenge.to_owned(), String::new()));
    }
    match session_given(request, deprecated_session) {
        Some(session) => Ok((String::new(), session)),
        None => Err(ApiError::field("challenge_token", neither)),
    }
}

/// A login challenge that is unknown, used or expired.
fn invalid_challenge() -> ApiError {
    ApiError::Unauthenticated {
        reason: ErrorReason::ChallengeInvalid,
        message: "the challenge is unknown, used or expired: log in again".to_owned(),
    }
}

/// What the first step of a login brings beside its credentials. `Debug` leaves the device
/// token out.
#[derive(Clone, Copy)]
struct FirstStep<'a> {
    /// The organization the request names.
    requested_org: Option<Uuid>,
    /// Where it comes from.
    client: &'a crate::client::Client,
    /// A remembered device's token, if one was presented.
    device: Option<&'a str>,
}

impl std::fmt::Debug for FirstStep<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FirstStep")
            .field("requested_org", &self.requested_org)
            .field("client", &self.client)
            .field("device", &self.device.map(|_| "[REDACTED]"))
            .finish()
    }
}

/// Authenticate's `device_token`: None when empty; a violation when it cannot be a token
/// (a token is 43 base64url characters; up to 128 are looked up).
fn device_token<'a>(value: &'a str, violations: &mut Vec<(String, String)>) -> Option<&'a str> {
    if value.is_empty() {
        return None;
    }
    let base64url = |b: u8| b.is_ascii_alphanumeric() || b == b'-' || b == b'_';
    if value.len() > 128 || !value.bytes().all(base64url) {
        violations.push((
            "device_token".to_owned(),
            "must be a device token from VerifySecondFactor (at most 128 base64url characters)"
                .to_owned(),
        ));
        return None;
    }
    Some(value)
}

/// How the first step of a login was proven.
#[derive(Clone, Copy, Debug)]
enum Proven<'a> {
    /// Email and password.
    Password,
    /// The organization's identity provider, named for the audit log.
    Sso(&'a str),
    /// A discoverable passkey with user verification.
    Passkey,
}

/// Stores a challenge (or enrollment) token for the user and returns it with its expiry.
async fn issue_challenge(
    app: &App,
    user: &storage::entity::user::Model,
    org_id: Option<Uuid>,
    purpose: ChallengePurpose,
    ttl: i64,
    client: storage::repo::ClientInfo<'_>,
    now: i64,
) -> ApiResult<(String, i64)> {
    let token = storage::crypto::new_token().map_err(|e| ApiError::Internal(e.to_string()))?;
    let expires = now + ttl;
    // The factor generation the login decided on: an enrollment token is void once the user
    // has activated a factor since (`auth::user_context`), exactly, whatever the clock says.
    app.storage
        .challenges()
        .create(
            &token,
            user.id,
            org_id,
            purpose,
            now,
            expires,
            Some(user.factor_generation),
            client,
        )
        .await?;
    Ok((token.to_string(), expires))
}

impl Authentication {
    #[allow(
        deprecated,
        reason = "the deprecated body field of older clients is still read"
    )]
    async fn step_up(
        &self,
        request: Request<v1::VerifyStepUpRequest>,
    ) -> ApiResult<v1::VerifyStepUpResponse> {
        caller(&request)?.require("authentication")?;
        let session_token = session_of(&request, &request.get_ref().session_token)?;
        let body = request.into_inner();
        let code = Zeroizing::new(body.code);
        let webauthn = body.webauthn_response_json.trim();
        if !webauthn.is_empty() && !code.trim().is_empty() {
            return Err(ApiError::field(
                "webauthn_response_json",
                "give a code or a passkey's response, not both",
            ));
        }
        if webauthn.is_empty() && code.trim().is_empty() {
            return Err(ApiError::field(
                "code",
                "a current code or a recovery code is required",
            ));
        }
        let mut violations = Vec::new();
        let client = crate::client::parse(body.client_context.as_ref(), false, &mut violations);
        if !violations.is_empty() {
            return Err(ApiError::InvalidArgument(violations));
        }
        let app = &self.app;
        let stored = client.stored(&app.config.clients);
        let now = app.now();
        // The session with the user's factors and their failure counter: one read.
        let storage::repo::SessionFactors {
            session,
            factors,
            counter,
        } = app
            .storage
            .sessions()
            .find_valid_with_factors(&session_token, now)
            .await?
            .ok_or_else(super::sessions::invalid_session)?;
        let read = crate::mfa::FactorsRead::read_with_session(factors, counter);
        if read.factors.is_empty() {
            return Err(ApiError::FailedPrecondition {
                reason: ErrorReason::NoFactor,
                message: "the user has no second factor to step up with".to_owned(),
            });
        }
        // A session already at assurance 2 stays so (find_valid just read it live); only a
        // lower one is raised, which also catches a revocation since. The raise and its event
        // go with the proof: an app or token code's acceptance writes them in its own
        // transaction (one statement on PostgreSQL); another proof, in one after it.
        let raise = !super::sessions::proven_by_factor(&session);
        let event = storage::repo::NewAuditEvent {
            client: stored.info(),
            ..audit::own_event(
                session.org_id,
                session.user_id,
                "session.stepped_up",
                "{}",
                now,
            )
        };
        let written = if webauthn.is_empty() {
            let along = crate::mfa::Along {
                raise: raise.then_some(session.id),
                audit: Some(event),
            };
            crate::mfa::prove_along(
                app,
                session.user_id,
                session.org_id,
                &code,
                now,
                Some(&read),
                along,
            )
            .await
            .map_err(|e| match e {
                ApiError::InvalidArgument(_) => {
                    ApiError::field("code", "a current code or a recovery code is required")
                }
                other => other,
            })?
            .1
        } else {
            crate::webauthn::verify_for_session(app, &session, webauthn, stored.info(), now)
                .await?;
            None
        };
        let live = match written {
            Some(written) => !raise || written.raised,
            None => {
                app.storage
                    .sessions()
                    .step_up(session.id, raise, now, &[event])
                    .await?
            }
        };
        if !live {
            return Err(super::sessions::invalid_session());
        }
        Ok(v1::VerifyStepUpResponse {
            assurance_level: v1::AssuranceLevel::SecondFactor as i32,
        })
    }

    async fn verify_inner(
        &self,
        request: Request<v1::VerifySecondFactorRequest>,
    ) -> ApiResult<v1::VerifySecondFactorResponse> {
        caller(&request)?.require("authentication")?;
        let body = request.into_inner();
        let code = Zeroizing::new(body.code);
        let webauthn = body.webauthn_response_json.trim();
        let mut violations = Vec::new();
        if body.challenge_token.trim().is_empty() || body.challenge_token.len() > 256 {
            violations.push(("challenge_token".to_owned(), "is required".to_owned()));
        }
        if !webauthn.is_empty() && !code.trim().is_empty() {
            violations.push((
                "webauthn_response_json".to_owned(),
                "give a code or a passkey's response, not both".to_owned(),
            ));
        } else if webauthn.is_empty() && (code.trim().is_empty() || code.len() > 64) {
            violations.push((
                "code".to_owned(),
                "must be an app code or a recovery code".to_owned(),
            ));
        }
        let client = crate::client::parse(body.client_context.as_ref(), false, &mut violations);
        if !violations.is_empty() {
            return Err(ApiError::InvalidArgument(violations));
        }
        let app = &self.app;
        let now = app.now();
        let challenge = app
            .storage
            .challenges()
            .find_active(body.challenge_token.trim(), now)
            .await?
            .filter(|c| c.purpose == ChallengePurpose::SecondFactor)
            .ok_or_else(invalid_challenge)?;
        let user_id = challenge.user_id;
        // The session (or enrollment token) keeps this step's client, else the first step's.
        let stored = client
            .stored(&app.config.clients)
            .or(crate::client::Stored::of_challenge(&challenge));
        // The user's lockout first (read with the factors), then an attempt from this
        // challenge's budget: both before any code is compared.
        let read = crate::mfa::read_factors(app, user_id).await?;
        let failures = read.check_lockout(app, user_id, now).await?;
        if !app
            .storage
            .challenges()
            .take_attempt(challenge.id, app.config.otp.challenge_max_attempts, now)
            .await?
        {
            return Err(ApiError::ResourceExhausted {
                reason: ErrorReason::ChallengeExhausted,
                message: "too many codes for this login: log in again".to_owned(),
                retry_after: Duration::from_secs(1),
            });
        }

        // A matching code is settled against the user's budget before anything else is
        // used up (a failure in flight alongside may have spent it first).
        let mut used_recovery_code = false;
        if !webauthn.is_empty() {
            crate::webauthn::verify_assertion(
                app,
                failures,
                crate::webauthn::Asserting {
                    user_id,
                    org_id: challenge.org_id,
                    binding: crate::webauthn::Binding::Login(challenge.id),
                    client: stored.info(),
                },
                "webauthn_response_json",
                webauthn,
                now,
            )
            .await?;
        } else if let Some(digits) = crate::mfa::looks_like_otp(&code) {
            let reason = match crate::mfa::check_code_among(
                app,
                failures,
                &read.factors,
                &digits,
                now,
                crate::mfa::Along::default(),
            )
            .await?
            {
                crate::mfa::CodeCheck::Accepted(_) => None,
                crate::mfa::CodeCheck::Replayed => Some(ErrorReason::CodeReplayed),
                crate::mfa::CodeCheck::NoMatch => Some(ErrorReason::InvalidCode),
            };
            if let Some(reason) = reason {
                return Err(crate::mfa::record_failure_from(
                    app,
                    user_id,
                    reason,
                    stored.info(),
                    now,
                )
                .await);
            }
        } else if crate::mfa::use_recovery_code(app, failures, user_id, &code, now, true).await? {
            used_recovery_code = true;
        } else {
            let reason = crate::mfa::recovery_code_refusal(app, user_id, &code).await?;
            let failed =
                crate::mfa::record_failure_from(app, user_id, reason, stored.info(), now).await;
            return Err(failed);
        }

        // Exactly one caller completes the challenge.
        if !app
            .storage
            .challenges()
            .consume_by_id(challenge.id, now)
            .await?
        {
            return Err(invalid_challenge());
        }
        // The user as they are now, with the organization the login is for.
        let organization = challenge
            .org_id
            .map_or(OrganizationsToRead::None, OrganizationsToRead::Only);
        let (user, mut state, org) = user_state(app, user_id, organization).await?;
        if user.status == UserStatus::Disabled {
            return Err(ApiError::PermissionDenied {
                reason: ErrorReason::AccountDisabled,
                message: "the account is disabled".to_owned(),
            });
        }
        if used_recovery_code {
            let client = stored.info();
            audit::own_from(
                app,
                challenge.org_id,
                user_id,
                "recovery_code.used",
                "{}",
                client,
            )
            .await?;
            // The last code, no other factor: 2FA is set up again now, in this login (an
            // enrollment token instead of a session), never later on a password alone.
            if policy::after_recovery_code(state.recovery_codes_left, &state.factors)
                == policy::AfterRecoveryCode::MustReenroll
            {
                state.must_reenroll = true;
            }
        }
        let org_policy = org.first().map(org_policy).unwrap_or_default();
        let remaining = i32::try_from(state.recovery_codes_left).unwrap_or(i32::MAX);
        let mut device = None;
        let result = match policy::after_second_factor(&org_policy, &state) {
            policy::LoginOutcome::EnrollmentRequired { methods, .. } => {
                let ttl = app.config.login.enrollment_ttl_secs;
                let (token, expires) = issue_challenge(
                    app,
                    &user,
                    challenge.org_id,
                    ChallengePurpose::Enrollment,
                    ttl,
                    stored.info(),
                    now,
                )
                .await?;
                v1::verify_second_factor_response::Result::EnrollmentRequired(
                    v1::EnrollmentRequired {
                        enrollment_token: token,
                        expire_time: Some(timestamp(expires)),
                        allowed_methods: methods
                            .iter()
                            .map(|k| policy_kind_to_proto(k) as i32)
                            .collect(),
                    },
                )
            }
            _ => {
                let session =
                    create_session(app, user_id, challenge.org_id, 2, stored.info(), None, now)
                        .await?;
                audit::own_from(
                    app,
                    challenge.org_id,
                    user_id,
                    "login.succeeded",
                    r#"{"assurance":2}"#,
                    stored.info(),
                )
                .await?;
                if let (true, Some(org)) = (body.remember_device, org.first())
                    && org.trusted_device_days > 0
                {
                    let seen = storage::repo::SeenUser {
                        password_hash: user.password_hash.as_deref(),
                        factor_generation: user.factor_generation,
                        active_factors: u64::from(state.factors.total()),
                    };
                    device = remember_device(app, user_id, org, seen, stored.info(), now).await?;
                }
                v1::verify_second_factor_response::Result::Authenticated(session)
            }
        };
        tracing::info!(
            user_id = %user_id,
            recovery_code = used_recovery_code,
            device_remembered = device.is_some(),
            "second factor passed"
        );
        let (device_token, device_token_expire_time) = match device {
            Some((token, expires)) => (token.to_string(), Some(timestamp(expires))),
            None => (String::new(), None),
        };
        Ok(v1::VerifySecondFactorResponse {
            result: Some(result),
            recovery_codes_remaining: remaining,
            device_token,
            device_token_expire_time,
        })
    }
}

fn outcome_name(outcome: &policy::LoginOutcome) -> &'static str {
    match outcome {
        policy::LoginOutcome::Authenticated { .. } => "authenticated",
        policy::LoginOutcome::SecondFactorRequired { .. } => "second_factor_required",
        policy::LoginOutcome::EnrollmentRequired { .. } => "enrollment_required",
        policy::LoginOutcome::Denied(_) => "denied",
    }
}

fn method_to_proto(method: policy::Method) -> v1::SecondFactorMethod {
    match method {
        policy::Method::Totp => v1::SecondFactorMethod::Totp,
        policy::Method::Hotp => v1::SecondFactorMethod::Hotp,
        policy::Method::Sms => v1::SecondFactorMethod::Sms,
        policy::Method::RecoveryCode => v1::SecondFactorMethod::RecoveryCode,
        policy::Method::WebAuthn => v1::SecondFactorMethod::Webauthn,
    }
}

/// Remembers the device of a login that passed its second factor, for `org`'s
/// `trusted_device_days`, with the event `trusted_device.remembered` in the same
/// transaction. Returns the device token (shown only now) and its expiry; None when what
/// allowed it changed since the login read it (the policy, the password, the factors).
async fn remember_device(
    app: &App,
    user_id: Uuid,
    org: &storage::entity::organization::Model,
    seen: storage::repo::SeenUser<'_>,
    client: storage::repo::ClientInfo<'_>,
    now: i64,
) -> ApiResult<Option<(Zeroizing<String>, i64)>> {
    let token = storage::crypto::new_token().map_err(|e| ApiError::Internal(e.to_string()))?;
    let days = org.trusted_device_days;
    let event = storage::repo::NewAuditEvent {
        client,
        ..audit::own_event(Some(org.id), user_id, "trusted_device.remembered", "", now)
    };
    let device = app
        .storage
        .trusted_devices()
        .create(
            &token,
            storage::repo::NewTrustedDevice {
                user_id,
                org_id: org.id,
                days,
                now,
                client,
                seen,
            },
            event,
            |id, days| serde_json::json!({"device_id": id.to_string(), "days": days}).to_string(),
        )
        .await?;
    Ok(device.map(|device| (token, device.expires_at)))
}

/// The user, what the policy needs to know about them, and the `organizations` asked for,
/// read in one query (NOT_FOUND `user` when they do not exist).
pub(crate) async fn user_state(
    app: &App,
    user_id: Uuid,
    organizations: OrganizationsToRead,
) -> ApiResult<(
    storage::entity::user::Model,
    policy::UserState,
    Vec<storage::entity::organization::Model>,
)> {
    let (user, mfa, organizations) = app
        .storage
        .users()
        .get_with_mfa(user_id, organizations)
        .await?
        .ok_or(ApiError::NotFound("user"))?;
    let state = policy::UserState {
        status: match user.status {
            UserStatus::Active => policy::AccountStatus::Active,
            UserStatus::Disabled => policy::AccountStatus::Disabled,
        },
        has_password: user.password_hash.is_some(),
        factors: policy::Factors {
            totp: mfa.totp,
            hotp: mfa.hotp,
            sms: mfa.sms,
            webauthn: mfa.webauthn,
        },
        recovery_codes_left: u32::try_from(mfa.recovery_codes_left).unwrap_or(u32::MAX),
        must_reenroll: user.must_reenroll,
        // Password lockouts are checked before the password; this decision comes after it.
        locked_until: None,
    };
    Ok((user, state, organizations))
}

/// Creates a session and returns it as the API shows it (the token only here).
pub(crate) async fn create_session(
    app: &App,
    user_id: Uuid,
    org_id: Option<Uuid>,
    assurance: i16,
    client: storage::repo::ClientInfo<'_>,
    trusted_device_id: Option<Uuid>,
    now: i64,
) -> ApiResult<v1::Session> {
    let token = storage::crypto::new_token().map_err(|e| ApiError::Internal(e.to_string()))?;
    let session = app
        .storage
        .sessions()
        .create(
            &token,
            NewSession {
                user_id,
                org_id,
                assurance,
                now,
                idle_ttl: app.config.sessions.idle_ttl_secs,
                absolute_ttl: app.config.sessions.absolute_ttl_secs,
                client,
                trusted_device_id,
            },
        )
        .await?;
    Ok(v1::Session {
        token: token.to_string(),
        session_id: session.id.to_string(),
        user_id: user_id.to_string(),
        organization_id: org_id.map(|id| id.to_string()).unwrap_or_default(),
        assurance_level: super::sessions::assurance_to_proto(session.assurance) as i32,
        expire_time: Some(timestamp(session.expires_at)),
        idle_expire_time: Some(timestamp(session.idle_expires_at)),
        remembered_device: session.trusted_device_id.is_some(),
    })
}
