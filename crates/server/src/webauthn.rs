//! Passkeys and security keys (WebAuthn) on webauthn-rs: registration, assertions for the
//! second factor, step-up and proofs, and passwordless logins with discoverable passkeys.
//! Nothing here verifies a signature or an attestation by hand.
//!
//! Ceremony state (webauthn-rs's, with the challenge) lives only in the database, bound to
//! its user and to the login challenge or session it serves (a passwordless ceremony to
//! itself). A response finds its ceremony by the challenge its clientDataJSON carries; the
//! ceremony is verified first, then used up by one conditional UPDATE, so one assertion is
//! accepted once, even raced to two replicas, and a response that does not verify uses up
//! nothing but an attempt of the user's failure budget.

use crate::error::ErrorReason;
use std::sync::Arc;
use std::time::Duration;

use data_encoding::BASE64URL_NOPAD;
use serde::{Deserialize, Serialize};
use storage::Uuid;
use storage::entity::enums::{CeremonyPurpose, FactorKind, FactorStatus};
use storage::entity::factor::Model as Factor;
use webauthn_rs::prelude::{
    Credential, DiscoverableAuthentication, Passkey, PasskeyAuthentication, PasskeyRegistration,
    PublicKeyCredential, RegisterPublicKeyCredential, SecurityKey, SecurityKeyAuthentication,
    SecurityKeyRegistration, Url, Webauthn, WebauthnBuilder, WebauthnError,
};

use crate::App;
use crate::config::{ConfigError, UserVerification, WebAuthnConfig};
use crate::error::{ApiError, ApiResult};

/// The relying party, from `[webauthn]`; `None` while `rp_id` is empty.
pub fn from_config(config: &WebAuthnConfig) -> Result<Option<Arc<Webauthn>>, ConfigError> {
    if config.rp_id.is_empty() {
        return Ok(None);
    }
    let bad = |e: WebauthnError| ConfigError(format!("webauthn: {e}"));
    let origins: Vec<Url> = config
        .origins
        .iter()
        .map(|o| Url::parse(o).map_err(|e| ConfigError(format!("webauthn.origins: {o}: {e}"))))
        .collect::<Result<_, _>>()?;
    let Some((first, rest)) = origins.split_first() else {
        return Err(ConfigError(
            "webauthn.origins: at least one origin is needed with rp_id".to_owned(),
        ));
    };
    let mut builder = WebauthnBuilder::new(&config.rp_id, first)
        .map_err(bad)?
        .rp_name(&config.rp_name)
        .timeout(Duration::from_secs(config.timeout_secs));
    for origin in rest {
        builder = builder.append_allowed_origin(origin);
    }
    Ok(Some(Arc::new(builder.build().map_err(bad)?)))
}

fn not_configured() -> ApiError {
    ApiError::FailedPrecondition {
        reason: ErrorReason::WebauthnNotConfigured,
        message: "passkeys are not configured on this server ([webauthn] rp_id)".to_owned(),
    }
}

/// The relying party, or FAILED_PRECONDITION `WEBAUTHN_NOT_CONFIGURED`.
pub(crate) fn relying_party(app: &App) -> ApiResult<&Webauthn> {
    app.webauthn.as_deref().ok_or_else(not_configured)
}

fn rejected(message: &str) -> ApiError {
    ApiError::Unauthenticated {
        reason: ErrorReason::WebauthnRejected,
        message: message.to_owned(),
    }
}

/// The credential stored with a WebAuthn factor.
fn credential_of(factor: &Factor) -> ApiResult<Credential> {
    let json = factor
        .webauthn_credential
        .as_deref()
        .ok_or_else(|| ApiError::Internal(format!("factor {} has no credential", factor.id)))?;
    serde_json::from_str(json)
        .map_err(|e| ApiError::Internal(format!("factor {}: credential: {e}", factor.id)))
}

/// Whether a WebAuthn factor's credential may be synced by its provider (a synced passkey).
pub(crate) fn backup_eligible(factor: &Factor) -> bool {
    factor.kind == FactorKind::Webauthn
        && factor
            .webauthn_credential
            .as_deref()
            .and_then(|json| serde_json::from_str::<Credential>(json).ok())
            .is_some_and(|c| c.backup_eligible)
}

fn to_json<T: Serialize>(value: &T) -> ApiResult<String> {
    serde_json::to_string(value).map_err(|e| ApiError::Internal(format!("JSON: {e}")))
}

/// A browser's response, parsed: INVALID_ARGUMENT naming `field` when it is not JSON of the
/// expected shape.
fn parse<T: for<'de> Deserialize<'de>>(field: &str, json: &str) -> ApiResult<T> {
    serde_json::from_str(json).map_err(|_| {
        ApiError::field(
            field,
            "must be the browser's credential.toJSON() of this ceremony",
        )
    })
}

/// The challenge a response's clientDataJSON carries, as the ceremony stores it (base64url,
/// no padding).
fn challenge_of(field: &str, json: &str) -> ApiResult<String> {
    let value: serde_json::Value = parse(field, json)?;
    let shape = || ApiError::field(field, "has no readable response.clientDataJSON");
    let client_data = value
        .get("response")
        .and_then(|r| r.get("clientDataJSON"))
        .and_then(serde_json::Value::as_str)
        .ok_or_else(shape)?;
    let bytes = BASE64URL_NOPAD
        .decode(client_data.trim_end_matches('=').as_bytes())
        .map_err(|_| shape())?;
    let client: serde_json::Value = serde_json::from_slice(&bytes).map_err(|_| shape())?;
    let challenge = client
        .get("challenge")
        .and_then(serde_json::Value::as_str)
        .ok_or_else(shape)?;
    let raw = BASE64URL_NOPAD
        .decode(challenge.trim_end_matches('=').as_bytes())
        .map_err(|_| shape())?;
    Ok(BASE64URL_NOPAD.encode(&raw))
}

/// The webauthn-rs state a ceremony stored.
fn state_of<S: for<'de> Deserialize<'de>>(
    ceremony: &storage::entity::webauthn_ceremony::Model,
) -> ApiResult<S> {
    serde_json::from_str(&ceremony.state)
        .map_err(|e| ApiError::Internal(format!("ceremony {}: state: {e}", ceremony.id)))
}

/// A registration ceremony's state: a second-factor key (user verification preferred) or a
/// passkey (required).
#[derive(Serialize, Deserialize)]
enum Registration {
    SecurityKey(SecurityKeyRegistration),
    Passkey(PasskeyRegistration),
}

/// An assertion ceremony's state.
#[derive(Serialize, Deserialize)]
enum Assertion {
    SecurityKey(SecurityKeyAuthentication),
    Passkey(PasskeyAuthentication),
    Discoverable(DiscoverableAuthentication),
}

/// Whose assertion is verified, and for what.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Asserting<'a> {
    /// The user.
    pub(crate) user_id: Uuid,
    /// The organization of the login or session (for the audit log).
    pub(crate) org_id: Option<Uuid>,
    /// The login challenge or session the ceremony serves.
    pub(crate) binding: Binding,
    /// Where the call came from, for the events a failure writes.
    pub(crate) client: storage::repo::ClientInfo<'a>,
}

/// What an assertion ceremony serves, and so what its response must come with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Binding {
    /// The second factor of this login challenge.
    Login(Uuid),
    /// A step-up or a proof with this session.
    Session(Uuid),
}

/// The user's active WebAuthn factors.
fn webauthn_factors(factors: &[Factor]) -> impl Iterator<Item = &Factor> {
    factors
        .iter()
        .filter(|f| f.kind == FactorKind::Webauthn && f.status == FactorStatus::Active)
}

// === Registration ===

/// Starts registering a credential for a new pending factor of `user`: the factor and the
/// creation options JSON (the user's other credentials excluded).
pub(crate) async fn begin_registration(
    app: &App,
    user: &storage::entity::user::Model,
    org_id: Option<Uuid>,
    label: &str,
    discoverable: bool,
    now: i64,
) -> ApiResult<(Factor, String)> {
    let rp = relying_party(app)?;
    let existing = app.storage.factors().of_user(user.id, true).await?;
    let exclude: Vec<_> = webauthn_factors(&existing)
        .filter_map(|f| credential_of(f).ok())
        .map(|c| c.cred_id)
        .collect();
    let exclude = (!exclude.is_empty()).then_some(exclude);
    let failed = |e: WebauthnError| ApiError::Internal(format!("webauthn: {e}"));
    let second_factor_uv = app.config.webauthn.user_verification;
    let (mut options, state) = if discoverable || second_factor_uv == UserVerification::Required {
        let (ccr, state) = rp
            .start_passkey_registration(user.id, &user.email, &user.email, exclude)
            .map_err(failed)?;
        (ccr, Registration::Passkey(state))
    } else {
        let (ccr, state) = rp
            .start_securitykey_registration(user.id, &user.email, &user.email, exclude, None, None)
            .map_err(failed)?;
        (ccr, Registration::SecurityKey(state))
    };
    if discoverable {
        // A passkey to log in with alone: the authenticator must keep it (resident key).
        if let Some(selection) = options.public_key.authenticator_selection.as_mut() {
            selection.require_resident_key = true;
            selection.resident_key = Some(webauthn_rs_proto::ResidentKeyRequirement::Required);
        }
    }
    let challenge = BASE64URL_NOPAD.encode(&options.public_key.challenge);
    let expires = now + i64::try_from(app.config.webauthn.timeout_secs).unwrap_or(300);
    let factor = app
        .storage
        .factors()
        .create_webauthn_pending(
            user.id,
            label,
            discoverable,
            now,
            now + app.config.otp.pending_enrollment_ttl_secs,
            &[crate::audit::own_event(
                org_id,
                user.id,
                "factor.enrollment_begun",
                r#"{"kind":"webauthn"}"#,
                now,
            )],
        )
        .await?;
    app.storage
        .ceremonies()
        .create(
            storage::repo::NewCeremony {
                challenge: &challenge,
                purpose: CeremonyPurpose::Registration,
                user_id: Some(user.id),
                org_id,
                factor_id: Some(factor.id),
                login_challenge_id: None,
                session_id: None,
                state: &to_json(&state)?,
            },
            now,
            expires,
        )
        .await?;
    Ok((factor, to_json(&options.public_key)?))
}

/// A verified registration: the credential's id and its JSON, for the activation.
pub(crate) struct Registered {
    pub(crate) credential_id: Vec<u8>,
    pub(crate) credential: String,
}

/// Verifies the browser's registration response for `factor` (pending, `user_id`'s) against
/// its ceremony, then uses the ceremony up.
pub(crate) async fn finish_registration(
    app: &App,
    user_id: Uuid,
    factor: &Factor,
    response_json: &str,
    now: i64,
) -> ApiResult<Registered> {
    const FIELD: &str = "registration_response_json";
    let rp = relying_party(app)?;
    let challenge = challenge_of(FIELD, response_json)?;
    let response: RegisterPublicKeyCredential = parse(FIELD, response_json)?;
    let ceremony = app
        .storage
        .ceremonies()
        .find_open(&challenge, now)
        .await?
        .filter(|c| {
            c.purpose == CeremonyPurpose::Registration
                && c.user_id == Some(user_id)
                && c.factor_id == Some(factor.id)
        })
        .ok_or_else(|| rejected("the registration ceremony is unknown, used or expired"))?;
    let state: Registration = state_of(&ceremony)?;
    let verified = match &state {
        Registration::SecurityKey(state) => rp
            .finish_securitykey_registration(&response, state)
            .map(Credential::from),
        Registration::Passkey(state) => rp
            .finish_passkey_registration(&response, state)
            .map(Credential::from),
    };
    let credential = verified.map_err(|e| {
        tracing::info!(user_id = %user_id, error = %e, "WebAuthn registration refused");
        rejected("the passkey's registration does not verify")
    })?;
    if app
        .storage
        .ceremonies()
        .take(&challenge, now)
        .await?
        .is_none()
    {
        return Err(rejected("the registration ceremony was used already"));
    }
    Ok(Registered {
        credential_id: AsRef::<[u8]>::as_ref(&credential.cred_id).to_vec(),
        credential: to_json(&credential)?,
    })
}

// === Assertions: second factor, step-up, proofs ===

/// Starts an assertion by one of `user_id`'s credentials for `binding`: the request options
/// JSON. FAILED_PRECONDITION `NO_WEBAUTHN_FACTOR` when the user has none.
pub(crate) async fn begin_assertion(
    app: &App,
    user_id: Uuid,
    org_id: Option<Uuid>,
    binding: Binding,
    now: i64,
) -> ApiResult<String> {
    let rp = relying_party(app)?;
    let factors = app.storage.factors().of_user(user_id, true).await?;
    let credentials: Vec<Credential> = webauthn_factors(&factors)
        .map(credential_of)
        .collect::<ApiResult<_>>()?;
    if credentials.is_empty() {
        return Err(ApiError::FailedPrecondition {
            reason: ErrorReason::NoWebauthnFactor,
            message: "the user has no passkey or security key".to_owned(),
        });
    }
    let failed = |e: WebauthnError| ApiError::Internal(format!("webauthn: {e}"));
    let (options, state) = match app.config.webauthn.user_verification {
        UserVerification::Preferred => {
            let keys: Vec<SecurityKey> = credentials.into_iter().map(SecurityKey::from).collect();
            let (rcr, state) = rp.start_securitykey_authentication(&keys).map_err(failed)?;
            (rcr, Assertion::SecurityKey(state))
        }
        UserVerification::Required => {
            let keys: Vec<Passkey> = credentials.into_iter().map(Passkey::from).collect();
            let (rcr, state) = rp.start_passkey_authentication(&keys).map_err(failed)?;
            (rcr, Assertion::Passkey(state))
        }
    };
    let (login_challenge_id, session_id) = match binding {
        Binding::Login(id) => (Some(id), None),
        Binding::Session(id) => (None, Some(id)),
    };
    create_assertion_ceremony(
        app,
        &options.public_key.challenge,
        CeremonyPurpose::Assertion,
        Some(user_id),
        org_id,
        (login_challenge_id, session_id),
        &to_json(&state)?,
        now,
    )
    .await?;
    to_json(&options.public_key)
}

#[allow(
    clippy::too_many_arguments,
    reason = "a ceremony's columns, each named"
)]
async fn create_assertion_ceremony(
    app: &App,
    challenge: &[u8],
    purpose: CeremonyPurpose,
    user_id: Option<Uuid>,
    org_id: Option<Uuid>,
    (login_challenge_id, session_id): (Option<Uuid>, Option<Uuid>),
    state: &str,
    now: i64,
) -> ApiResult<storage::entity::webauthn_ceremony::Model> {
    let expires = now + i64::try_from(app.config.webauthn.timeout_secs).unwrap_or(300);
    Ok(app
        .storage
        .ceremonies()
        .create(
            storage::repo::NewCeremony {
                challenge: &BASE64URL_NOPAD.encode(challenge),
                purpose,
                user_id,
                org_id,
                factor_id: None,
                login_challenge_id,
                session_id,
                state,
            },
            now,
            expires,
        )
        .await?)
}

/// Records a verified assertion on the factor whose credential made it: the new signature
/// counter and the time of use. A counter that went backwards was refused before this.
async fn record_use(
    app: &App,
    factor: &Factor,
    result: &webauthn_rs::prelude::AuthenticationResult,
    now: i64,
) -> ApiResult<()> {
    let previous = factor.webauthn_credential.clone().unwrap_or_default();
    let mut key = SecurityKey::from(credential_of(factor)?);
    key.update_credential(result);
    let updated = to_json(&Credential::from(key))?;
    // Another assertion of the same credential may have moved it meanwhile: its counter
    // is then the newer one, and this one's is not written over it.
    app.storage
        .factors()
        .update_webauthn_credential(factor.id, &previous, &updated, now)
        .await?;
    Ok(())
}

/// An assertion of `user`'s (and the organization's) that did not verify: counted as a
/// failure, UNAUTHENTICATED `WEBAUTHN_REJECTED`, or `WEBAUTHN_CLONE_SUSPECTED` for a
/// signature counter that went backwards (audited as `factor.clone_suspected`).
async fn refuse_assertion(
    app: &App,
    (user_id, org_id): (Uuid, Option<Uuid>),
    client: storage::repo::ClientInfo<'_>,
    credential_id: &[u8],
    error: &WebauthnError,
    now: i64,
) -> ApiError {
    let reason = if matches!(error, WebauthnError::CredentialPossibleCompromise) {
        app.metrics.check("webauthn", "clone_suspected");
        tracing::warn!(user_id = %user_id, "WebAuthn signature counter went backwards: a cloned authenticator?");
        if let Err(e) = clone_suspected(app, user_id, org_id, credential_id, now).await {
            return e;
        }
        ErrorReason::WebauthnCloneSuspected
    } else {
        app.metrics.check("webauthn", "rejected");
        tracing::info!(user_id = %user_id, error = %error, "WebAuthn assertion refused");
        ErrorReason::WebauthnRejected
    };
    crate::mfa::record_failure_from(app, user_id, reason, client, now).await
}

/// Verifies an assertion made for a step-up or a proof with `session` (see
/// [`verify_assertion`]), against the user's failure budget as it is now; `client`: where
/// the call came from, when it said.
pub(crate) async fn verify_for_session(
    app: &App,
    session: &storage::entity::session::Model,
    response_json: &str,
    client: storage::repo::ClientInfo<'_>,
    now: i64,
) -> ApiResult<()> {
    let failures = crate::mfa::check_lockout(app, session.user_id, now).await?;
    let asserting = Asserting {
        user_id: session.user_id,
        org_id: session.org_id,
        binding: Binding::Session(session.id),
        client,
    };
    verify_assertion(
        app,
        failures,
        asserting,
        "webauthn_response_json",
        response_json,
        now,
    )
    .await
}

/// Verifies an assertion of `user_id`'s for `binding`: the ceremony (found by the challenge
/// the response carries) must be theirs and serve this login or session; the assertion must
/// verify against one of their credentials (origin, RP ID, signature, user verification,
/// signature counter). Then the ceremony is used up, and the success settled against the
/// failure budget `failures` was checked for. A failure counts against it (as a wrong code:
/// UNAUTHENTICATED `WEBAUTHN_REJECTED`, or `WEBAUTHN_CLONE_SUSPECTED` for a counter that
/// went backwards, audited as `factor.clone_suspected`).
pub(crate) async fn verify_assertion(
    app: &App,
    failures: crate::mfa::Failures,
    asserting: Asserting<'_>,
    field: &str,
    response_json: &str,
    now: i64,
) -> ApiResult<()> {
    let Asserting {
        user_id, binding, ..
    } = asserting;
    let failed =
        |reason| crate::mfa::record_failure_from(app, user_id, reason, asserting.client, now);
    let rp = relying_party(app)?;
    let challenge = challenge_of(field, response_json)?;
    let response: PublicKeyCredential = parse(field, response_json)?;
    let failures = failures.refuse_codes_if_suspended(app)?;
    let ceremony = app
        .storage
        .ceremonies()
        .find_open(&challenge, now)
        .await?
        .filter(|c| {
            c.purpose == CeremonyPurpose::Assertion
                && c.user_id == Some(user_id)
                && match binding {
                    Binding::Login(id) => c.login_challenge_id == Some(id),
                    Binding::Session(id) => c.session_id == Some(id),
                }
        });
    let Some(ceremony) = ceremony else {
        app.metrics.check("webauthn", "rejected");
        return Err(failed(ErrorReason::WebauthnRejected).await);
    };
    let state: Assertion = state_of(&ceremony)?;
    let verified = match &state {
        Assertion::SecurityKey(state) => rp.finish_securitykey_authentication(&response, state),
        Assertion::Passkey(state) => rp.finish_passkey_authentication(&response, state),
        Assertion::Discoverable(_) => Err(WebauthnError::InvalidUserUniqueId),
    };
    let result = match verified {
        Ok(result) => result,
        Err(e) => {
            let credential = response.get_credential_id();
            let who = (user_id, asserting.org_id);
            let client = asserting.client;
            return Err(refuse_assertion(app, who, client, credential, &e, now).await);
        }
    };
    // Settled against the budget, then the ceremony used up: exactly one caller gets here
    // with it, however many present the same assertion at once.
    failures.succeed(app, now).await?;
    if app
        .storage
        .ceremonies()
        .take(&challenge, now)
        .await?
        .is_none()
    {
        app.metrics.check("webauthn", "replayed");
        return Err(failed(ErrorReason::WebauthnRejected).await);
    }
    let factors = app.storage.factors().of_user(user_id, true).await?;
    if let Some(factor) = webauthn_factors(&factors)
        .find(|f| f.credential_id.as_deref() == Some(result.cred_id().as_ref()))
    {
        record_use(app, factor, &result, now).await?;
    }
    app.metrics.check("webauthn", "accepted");
    Ok(())
}

/// Audits a signature counter that went backwards (`factor.clone_suspected`).
async fn clone_suspected(
    app: &App,
    user_id: Uuid,
    org_id: Option<Uuid>,
    credential_id: &[u8],
    now: i64,
) -> ApiResult<()> {
    let factor = app
        .storage
        .factors()
        .by_credential_id(credential_id)
        .await?;
    let details = serde_json::json!({
        "factor_id": factor.map(|f| f.id.to_string()),
    })
    .to_string();
    app.storage
        .audit()
        .append(crate::audit::own_event(
            org_id,
            user_id,
            "factor.clone_suspected",
            &details,
            now,
        ))
        .await?;
    Ok(())
}

// === Passwordless ===

/// Starts a passwordless login: a ceremony of its own and the request options JSON, with no
/// credentials named and user verification required.
pub(crate) async fn begin_passkey_login(
    app: &App,
    org_id: Option<Uuid>,
    now: i64,
) -> ApiResult<(Uuid, String)> {
    let rp = relying_party(app)?;
    let (options, state) = rp
        .start_discoverable_authentication()
        .map_err(|e| ApiError::Internal(format!("webauthn: {e}")))?;
    let ceremony = create_assertion_ceremony(
        app,
        &options.public_key.challenge,
        CeremonyPurpose::PasskeyLogin,
        None,
        org_id,
        (None, None),
        &to_json(&Assertion::Discoverable(state))?,
        now,
    )
    .await?;
    Ok((ceremony.id, to_json(&options.public_key)?))
}

/// Verifies a passwordless login's assertion: the ceremony `ceremony_id` (unused,
/// unexpired), the passkey the response names (its user handle and credential id: a
/// discoverable passkey of that user), user verification. Returns the user and the
/// ceremony's organization. A response that does not verify counts against the user's
/// failure budget when its user is known.
pub(crate) async fn finish_passkey_login(
    app: &App,
    ceremony_id: Uuid,
    response_json: &str,
    client: storage::repo::ClientInfo<'_>,
    now: i64,
) -> ApiResult<(Uuid, Option<Uuid>)> {
    const FIELD: &str = "passkey.response_json";
    let rp = relying_party(app)?;
    let challenge = challenge_of(FIELD, response_json)?;
    let response: PublicKeyCredential = parse(FIELD, response_json)?;
    let refused = || rejected("the passkey login does not verify: start it again");
    let ceremony = app
        .storage
        .ceremonies()
        .find_open(&challenge, now)
        .await?
        .filter(|c| c.id == ceremony_id && c.purpose == CeremonyPurpose::PasskeyLogin)
        .ok_or_else(refused)?;
    let (user_id, credential_id) = rp
        .identify_discoverable_authentication(&response)
        .map_err(|_| refused())?;
    let factor = app
        .storage
        .factors()
        .by_credential_id(credential_id)
        .await?
        .filter(|f| f.user_id == user_id && f.discoverable)
        .ok_or_else(refused)?;
    let failures = crate::mfa::check_lockout(app, user_id, now).await?;
    let Assertion::Discoverable(state) = state_of(&ceremony)? else {
        return Err(refused());
    };
    let passkey = Passkey::from(credential_of(&factor)?);
    let result = match rp.finish_discoverable_authentication_v2(&response, state, &passkey) {
        Ok(result) => result,
        Err(e) => {
            let who = (user_id, ceremony.org_id);
            return Err(refuse_assertion(app, who, client, credential_id, &e, now).await);
        }
    };
    failures.succeed(app, now).await?;
    if app
        .storage
        .ceremonies()
        .take(&challenge, now)
        .await?
        .is_none()
    {
        return Err(refused());
    }
    record_use(app, &factor, &result, now).await?;
    app.metrics.check("webauthn", "accepted");
    Ok((user_id, ceremony.org_id))
}
