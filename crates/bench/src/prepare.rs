//! Setting up the accounts a scenario needs, through the API like any client, checking every
//! answer: a set-up that half worked stops the run instead of producing numbers.

use std::time::{SystemTime, UNIX_EPOCH};

use otp_core::{Hotp, HotpParams, OtpAuthUri, Secret, Totp, TotpParams};
use tollgate_proto::v1::{self, authenticate_request::Credentials, authenticate_response};

use crate::client::Clients;

/// A set-up step that failed: what was being done and what came back.
pub type SetupResult<T> = Result<T, String>;

fn failed(what: &str, status: &tonic::Status) -> String {
    format!("{what}: {}", crate::stats::failure_of_status(status))
}

/// Seconds since the Unix epoch on this machine (the server's clock, when it runs here).
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Names unique to one run, so runs can share a server and its database.
#[derive(Clone, Debug)]
pub struct RunNames {
    run: String,
    /// The password every benchmark account gets (random per run).
    pub password: String,
}

impl Default for RunNames {
    fn default() -> Self {
        Self::new()
    }
}

impl RunNames {
    /// New names.
    pub fn new() -> Self {
        let id = uuid::Uuid::now_v7().simple().to_string();
        Self {
            // 128 random bits from the operating system.
            password: Secret::generate_len(16)
                .map_or_else(|_| format!("bench-{id}"), |s| s.to_base32().to_string()),
            run: id,
        }
    }

    /// The email of account `i` of kind `kind`.
    pub fn email(&self, kind: &str, i: usize) -> String {
        format!("{kind}-{i}-{}@bench.example.com", self.run)
    }
}

/// Creates an account with a password; returns its id.
pub async fn create_user(c: &Clients, email: &str, password: &str) -> SetupResult<String> {
    let user = c
        .users()
        .create_user(c.req(v1::CreateUserRequest {
            email: email.to_owned(),
            password: password.to_owned(),
        }))
        .await
        .map_err(|e| failed("CreateUser", &e))?
        .into_inner()
        .user
        .ok_or("CreateUser: no user in the answer")?;
    if user.id.is_empty() {
        return Err("CreateUser: empty user id".to_owned());
    }
    Ok(user.id)
}

/// Logs in with the password alone (the account has no factor yet), in `org` if given;
/// returns the session.
pub async fn password_session(
    c: &Clients,
    email: &str,
    password: &str,
    org: &str,
) -> SetupResult<String> {
    let credentials = Credentials::Password(v1::PasswordCredentials {
        email: email.to_owned(),
        password: password.to_owned(),
    });
    session_at_once(c, credentials, org, "Authenticate").await
}

/// Imports a new HOTP token (counter 0) and confirms it with its first code; returns the
/// token, whose next code is counter 1.
pub async fn enroll_hotp(c: &Clients, session: &str) -> SetupResult<Hotp> {
    let seed = Secret::generate(otp_core::Algorithm::Sha1).map_err(|e| e.to_string())?;
    let hotp = Hotp::new(seed.clone(), HotpParams::default()).map_err(|e| e.to_string())?;
    let mut enrollment = c.enrollment();
    let factor = enrollment
        .begin_hotp_enrollment(c.bearer(
            v1::BeginHotpEnrollmentRequest {
                label: "bench token".to_owned(),
                secret_base32: seed.to_base32().to_string(),
                counter: 0,
                digits: 6,
            },
            session,
        ))
        .await
        .map_err(|e| failed("BeginHotpEnrollment", &e))?
        .into_inner()
        .factor
        .ok_or("BeginHotpEnrollment: no factor in the answer")?;
    enrollment
        .confirm_hotp_enrollment(c.bearer(
            v1::ConfirmHotpEnrollmentRequest {
                factor_id: factor.id,
                code: hotp.generate(0).to_string(),
                ..Default::default()
            },
            session,
        ))
        .await
        .map_err(|e| failed("ConfirmHotpEnrollment", &e))?;
    Ok(hotp)
}

/// Enrolls an authenticator app from the server's otpauth:// URI and confirms it with the
/// current code; returns the app, its factor id and the step the confirmation used.
pub async fn enroll_totp(c: &Clients, session: &str) -> SetupResult<(Totp, String, u64)> {
    let mut enrollment = c.enrollment();
    let begun = enrollment
        .begin_totp_enrollment(c.bearer(
            v1::BeginTotpEnrollmentRequest {
                label: "bench app".to_owned(),
            },
            session,
        ))
        .await
        .map_err(|e| failed("BeginTotpEnrollment", &e))?
        .into_inner();
    if begun.qr_code_png.is_empty() || begun.qr_code_svg.is_empty() {
        return Err("BeginTotpEnrollment: no QR code in the answer".to_owned());
    }
    let totp = OtpAuthUri::parse(&begun.otpauth_uri)
        .map_err(|e| format!("BeginTotpEnrollment: otpauth URI: {e}"))?
        .to_totp(TotpParams::default())
        .ok_or("BeginTotpEnrollment: not a TOTP URI")?
        .map_err(|e| format!("BeginTotpEnrollment: {e}"))?;
    let factor = begun
        .factor
        .ok_or("BeginTotpEnrollment: no factor in the answer")?
        .id;
    let now = unix_now();
    let step = totp.step(now).map_err(|e| e.to_string())?;
    enrollment
        .confirm_totp_enrollment(c.bearer(
            v1::ConfirmTotpEnrollmentRequest {
                factor_id: factor.clone(),
                code: totp.generate_step(step).to_string(),
                ..Default::default()
            },
            session,
        ))
        .await
        .map_err(|e| failed("ConfirmTotpEnrollment", &e))?;
    Ok((totp, factor, step))
}

/// An organization whose members may log in through SSO without 2FA (SSO_MODE_EXEMPT): set-up
/// then needs one password hash per account instead of two. Returns its id.
pub async fn sso_organization(c: &Clients, names: &RunNames) -> SetupResult<String> {
    let owner_email = names.email("owner", 0);
    let owner = create_user(c, &owner_email, &names.password).await?;
    let org = c
        .organizations()
        .create_organization(c.req(v1::CreateOrganizationRequest {
            name: format!("bench {}", names.run),
            owner_user_id: owner,
        }))
        .await
        .map_err(|e| failed("CreateOrganization", &e))?
        .into_inner()
        .organization
        .ok_or("CreateOrganization: no organization in the answer")?;
    // The owner's session must be one of this organization's.
    let session = password_session(c, &owner_email, &names.password, &org.id).await?;
    let updated = c
        .organizations()
        .update_mfa_policy(c.bearer(
            v1::UpdateMfaPolicyRequest {
                organization_id: org.id.clone(),
                policy: Some(v1::MfaPolicy {
                    sso_enabled: true,
                    sso_mode: v1::SsoMode::Exempt.into(),
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["sso_enabled".to_owned(), "sso_mode".to_owned()],
                }),
                password: names.password.clone(),
                client_context: None,
            },
            &session,
        ))
        .await
        .map_err(|e| failed("UpdateMfaPolicy", &e))?
        .into_inner();
    let policy = updated
        .organization
        .and_then(|o| o.mfa_policy)
        .ok_or("UpdateMfaPolicy: no policy in the answer")?;
    if !policy.sso_enabled || policy.sso_mode() != v1::SsoMode::Exempt {
        return Err(format!("UpdateMfaPolicy: the policy is now {policy:?}"));
    }
    Ok(org.id)
}

/// Adds the account to the organization as a member and logs it in through SSO (exempt:
/// a session at once); returns the session.
pub async fn sso_member_session(
    c: &Clients,
    org: &str,
    user_id: &str,
    email: &str,
) -> SetupResult<String> {
    c.organizations()
        .add_member(c.req(v1::AddMemberRequest {
            organization_id: org.to_owned(),
            user_id: user_id.to_owned(),
            role: v1::Role::Member.into(),
        }))
        .await
        .map_err(|e| failed("AddMember", &e))?;
    let credentials = Credentials::Sso(v1::SsoCredentials {
        email: email.to_owned(),
        identity_provider: "tollgate-bench".to_owned(),
    });
    session_at_once(c, credentials, org, "Authenticate (SSO)").await
}

/// Authenticates with `credentials` in `org` and expects a session at once (no second
/// factor asked); returns its token. `what` names the call in an error.
async fn session_at_once(
    c: &Clients,
    credentials: Credentials,
    org: &str,
    what: &str,
) -> SetupResult<String> {
    let answer = c
        .authentication()
        .authenticate(c.req(v1::AuthenticateRequest {
            credentials: Some(credentials),
            organization_id: org.to_owned(),
            client_context: None,
            device_token: String::new(),
        }))
        .await
        .map_err(|e| failed(what, &e))?
        .into_inner();
    match answer.result {
        Some(authenticate_response::Result::Authenticated(s)) if !s.token.is_empty() => Ok(s.token),
        other => Err(format!("{what}: expected a session, got {other:?}")),
    }
}
