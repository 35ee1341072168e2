//! Passkeys and security keys (WebAuthn) end to end, on SQLite and PostgreSQL, with a
//! software authenticator that performs real ceremonies (webauthn-authenticator-rs's
//! SoftToken: real keys, real signatures, a real signature counter) against the options the
//! server hands out, at the origin `http://localhost:8080` of the relying party `localhost`.
//!
//! The soft token cannot keep discoverable (resident) credentials, so for a passwordless
//! login the test does what a browser with a stored passkey does for it: it names the
//! credential to the token, and puts the user handle (the user's id, which the passkey
//! stores) into the response. The signature does not cover the user handle; the server's side
//! (finding the user and the passkey from them, verifying the signature and user
//! verification) is exactly what a browser's response exercises.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test code: a panic is a failed test"
)]

use data_encoding::BASE64URL_NOPAD;
use tollgate_e2e::{Backend, TestServer, bearer, both, password_login, reason, test_config};
use tollgate_proto::v1::{self, authenticate_response, verify_second_factor_response};
use tonic::Code;
use url::Url;
use webauthn_authenticator_rs::WebauthnAuthenticator as _;
use webauthn_authenticator_rs::softtoken::SoftToken;
use webauthn_rs_proto::{
    AllowCredentials, CreationChallengeResponse, PublicKeyCredentialCreationOptions,
    PublicKeyCredentialRequestOptions, RequestChallengeResponse,
};

const PASSWORD: &str = "correct horse battery staple";
const ORIGIN: &str = "http://localhost:8080";

fn config() -> server::config::Config {
    let mut config = test_config();
    config.webauthn.rp_id = "localhost".into();
    config.webauthn.origins = vec![ORIGIN.into()];
    config
}

async fn start(backend: Backend) -> TestServer {
    TestServer::start_with(backend, config()).await
}

/// A software authenticator with user verification (a PIN it "asks").
fn token() -> SoftToken {
    SoftToken::new(true).unwrap().0
}

/// An exact copy of `token`: its keys and its signature counter (a cloned authenticator).
fn clone_of(token: &SoftToken) -> SoftToken {
    SoftToken::from_cbor(&token.to_cbor().unwrap()).unwrap()
}

/// A copy of `token` that no longer verifies its user (no PIN asked, the UV flag unset).
fn without_user_verification(token: &SoftToken) -> SoftToken {
    use serde_cbor_2::Value;
    let Value::Map(mut fields) = serde_cbor_2::from_slice(&token.to_cbor().unwrap()).unwrap()
    else {
        panic!("a soft token serialises to a map")
    };
    fields.insert(Value::Text("falsify_uv".into()), Value::Bool(false));
    SoftToken::from_cbor(&serde_cbor_2::to_vec(&Value::Map(fields)).unwrap()).unwrap()
}

/// The browser's `navigator.credentials.create()` then `toJSON()`, at `origin`.
fn create_at(token: &mut SoftToken, origin: &str, options_json: &str) -> String {
    let mut public_key: PublicKeyCredentialCreationOptions =
        serde_json::from_str(options_json).unwrap();
    // The soft token keeps no resident keys; the server's side is the same either way.
    if let Some(selection) = public_key.authenticator_selection.as_mut() {
        selection.require_resident_key = false;
        selection.resident_key = None;
    }
    let credential = token
        .do_registration(
            Url::parse(origin).unwrap(),
            CreationChallengeResponse { public_key },
        )
        .unwrap();
    serde_json::to_string(&credential).unwrap()
}

fn create(token: &mut SoftToken, options_json: &str) -> String {
    create_at(token, ORIGIN, options_json)
}

/// The browser's `navigator.credentials.get()` then `toJSON()`, at `origin`; with `allow`,
/// the credential named to the token (a passwordless login, see the module's comment).
fn get_at(
    token: &mut SoftToken,
    origin: &str,
    options_json: &str,
    allow: Option<&[u8]>,
) -> Result<String, String> {
    let mut public_key: PublicKeyCredentialRequestOptions =
        serde_json::from_str(options_json).unwrap();
    if let Some(id) = allow {
        public_key.allow_credentials = vec![AllowCredentials {
            type_: "public-key".into(),
            id: id.to_vec(),
            transports: None,
        }];
    }
    let assertion = token
        .do_authentication(
            Url::parse(origin).unwrap(),
            RequestChallengeResponse {
                public_key,
                mediation: None,
            },
        )
        .map_err(|e| format!("{e:?}"))?;
    Ok(serde_json::to_string(&assertion).unwrap())
}

fn get(token: &mut SoftToken, options_json: &str) -> String {
    get_at(token, ORIGIN, options_json, None).unwrap()
}

/// A user with a password and a session at assurance 1 (no factor yet).
async fn user(server: &TestServer, email: &str) -> (String, String) {
    let user = server.create_user(email, PASSWORD).await;
    match server.first_step(password_login(email, PASSWORD, "")).await {
        authenticate_response::Result::Authenticated(session) => (user.id, session.token),
        other => panic!("{other:?}"),
    }
}

/// Registers a WebAuthn factor with `token` through the API; returns the confirmation.
async fn register(
    server: &TestServer,
    bearer_token: &str,
    token: &mut SoftToken,
    discoverable: bool,
) -> v1::ConfirmWebAuthnRegistrationResponse {
    let mut enrollment =
        v1::enrollment_service_client::EnrollmentServiceClient::new(server.channel().await);
    let begun = enrollment
        .begin_web_authn_registration(bearer(
            v1::BeginWebAuthnRegistrationRequest {
                label: "key".into(),
                discoverable,
            },
            bearer_token,
        ))
        .await
        .unwrap()
        .into_inner();
    let options: serde_json::Value = serde_json::from_str(&begun.creation_options_json).unwrap();
    assert_eq!(options["rp"]["id"], "localhost", "{options}");
    assert!(options["challenge"].as_str().is_some_and(|c| c.len() >= 43));
    let response = create(token, &begun.creation_options_json);
    enrollment
        .confirm_web_authn_registration(bearer(
            v1::ConfirmWebAuthnRegistrationRequest {
                factor_id: begun.factor.unwrap().id,
                registration_response_json: response,
                replaces_factor_id: String::new(),
                client_context: None,
            },
            bearer_token,
        ))
        .await
        .unwrap()
        .into_inner()
}

/// The password step of a login: its challenge token.
async fn challenge(server: &TestServer, email: &str) -> String {
    match server.first_step(password_login(email, PASSWORD, "")).await {
        authenticate_response::Result::SecondFactorRequired(c) => {
            assert!(
                c.methods
                    .contains(&(v1::SecondFactorMethod::Webauthn as i32)),
                "{c:?}"
            );
            c.challenge_token
        }
        other => panic!("expected a challenge: {other:?}"),
    }
}

async fn begin_verification(
    server: &TestServer,
    challenge_token: &str,
    session_token: &str,
) -> Result<String, tonic::Status> {
    server
        .authentication()
        .await
        .begin_web_authn_verification(bearer(
            v1::BeginWebAuthnVerificationRequest {
                challenge_token: challenge_token.into(),
                ..Default::default()
            },
            session_token,
        ))
        .await
        .map(|r| r.into_inner().request_options_json)
}

async fn verify(
    server: &TestServer,
    challenge_token: &str,
    response: &str,
) -> Result<v1::VerifySecondFactorResponse, tonic::Status> {
    server
        .authentication()
        .await
        .verify_second_factor(v1::VerifySecondFactorRequest {
            challenge_token: challenge_token.into(),
            code: String::new(),
            webauthn_response_json: response.into(),
            client_context: None,
            remember_device: false,
        })
        .await
        .map(tonic::Response::into_inner)
}

async fn audit_kinds(server: &TestServer) -> Vec<String> {
    <storage::entity::audit_event::Entity as storage::sea_orm::EntityTrait>::find()
        .all(server.app.storage.db())
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect()
}

/// Register as the first factor (recovery codes returned), log in with it as the second
/// factor, step a session up with it, and remove a factor with it as the proof; a response
/// used once is refused the second time.
async fn a_security_key_is_a_second_factor(backend: Backend) {
    let server = start(backend).await;
    let email = "key@example.com";
    let (_, first_session) = user(&server, email).await;
    let mut key = token();
    let confirmed = register(&server, &first_session, &mut key, false).await;
    assert_eq!(confirmed.recovery_codes.len(), 10, "the first factor");
    let factor = confirmed.factor.unwrap();
    assert_eq!(factor.kind, v1::FactorKind::Webauthn as i32);
    assert_eq!(factor.status, v1::FactorStatus::Active as i32);
    assert!(!factor.discoverable);

    // The second factor of a login.
    let login = challenge(&server, email).await;
    let options = begin_verification(&server, &login, "").await.unwrap();
    let response = get(&mut key, &options);
    let done = verify(&server, &login, &response).await.unwrap();
    let Some(verify_second_factor_response::Result::Authenticated(session)) = done.result else {
        panic!("{done:?}")
    };
    assert_eq!(
        session.assurance_level,
        v1::AssuranceLevel::SecondFactor as i32
    );
    // The same response again, with a new login: its ceremony is used up.
    let again = challenge(&server, email).await;
    let err = verify(&server, &again, &response).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert_eq!(reason(&err).as_deref(), Some("WEBAUTHN_REJECTED"));

    // A step-up of the session from before the key.
    let options = begin_verification(&server, "", &first_session)
        .await
        .unwrap();
    let response = get(&mut key, &options);
    server
        .authentication()
        .await
        .verify_step_up(bearer(
            v1::VerifyStepUpRequest {
                webauthn_response_json: response,
                ..Default::default()
            },
            &first_session,
        ))
        .await
        .unwrap();

    // A second key, then the first removed with the second as the proof.
    let mut second = token();
    let second_factor = register(&server, &first_session, &mut second, false)
        .await
        .factor
        .unwrap();
    let options = begin_verification(&server, "", &first_session)
        .await
        .unwrap();
    let proof = get(&mut second, &options);
    let mut enrollment =
        v1::enrollment_service_client::EnrollmentServiceClient::new(server.channel().await);
    enrollment
        .remove_factor(bearer(
            v1::RemoveFactorRequest {
                factor_id: factor.id.clone(),
                proof: String::new(),
                webauthn_response_json: proof,
            },
            &first_session,
        ))
        .await
        .unwrap();
    let listed = enrollment
        .list_factors(bearer(v1::ListFactorsRequest {}, &first_session))
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<&str> = listed.factors.iter().map(|f| f.id.as_str()).collect();
    assert_eq!(ids, [second_factor.id.as_str()]);
    // The removed key's assertions no longer count.
    let login = challenge(&server, email).await;
    let options = begin_verification(&server, &login, "").await.unwrap();
    assert!(
        get_at(&mut key, ORIGIN, &options, None).is_err(),
        "the removed key is not among the credentials asked for"
    );
    let kinds = audit_kinds(&server).await;
    for kind in [
        "factor.enrollment_begun",
        "factor.enrolled",
        "factor.removed",
    ] {
        assert!(kinds.iter().any(|k| k == kind), "{kind}: {kinds:?}");
    }
    server.stop().await.unwrap();
}

/// A discoverable passkey logs in alone at assurance 2; a second-factor key cannot, and
/// neither can an assertion without user verification.
async fn a_passkey_logs_in_without_a_password(backend: Backend) {
    let server = start(backend).await;
    let email = "passkey@example.com";
    let (user_id, session) = user(&server, email).await;
    let mut passkey = token();
    let confirmed = register(&server, &session, &mut passkey, true).await;
    let factor = confirmed.factor.unwrap();
    assert!(factor.discoverable);
    let credential_id = server
        .app
        .storage
        .factors()
        .get(factor.id.parse().unwrap())
        .await
        .unwrap()
        .unwrap()
        .credential_id
        .unwrap();

    let passwordless = async |token: &mut SoftToken, user_handle: &str| {
        let begun = server
            .authentication()
            .await
            .begin_passkey_login(v1::BeginPasskeyLoginRequest::default())
            .await
            .unwrap()
            .into_inner();
        let options: serde_json::Value = serde_json::from_str(&begun.request_options_json).unwrap();
        assert_eq!(options["userVerification"], "required", "{options}");
        let response = get_at(
            token,
            ORIGIN,
            &begun.request_options_json,
            Some(&credential_id),
        )
        .unwrap();
        let mut response: serde_json::Value = serde_json::from_str(&response).unwrap();
        response["response"]["userHandle"] = serde_json::Value::String(user_handle.to_owned());
        server
            .authentication()
            .await
            .authenticate(v1::AuthenticateRequest {
                credentials: Some(v1::authenticate_request::Credentials::Passkey(
                    v1::PasskeyCredentials {
                        ceremony_id: begun.ceremony_id,
                        response_json: response.to_string(),
                    },
                )),
                organization_id: String::new(),
                client_context: None,
                device_token: String::new(),
            })
            .await
            .map(|r| r.into_inner().result.unwrap())
    };
    let handle = BASE64URL_NOPAD.encode(user_id.parse::<storage::Uuid>().unwrap().as_bytes());
    match passwordless(&mut passkey, &handle).await.unwrap() {
        authenticate_response::Result::Authenticated(session) => assert_eq!(
            session.assurance_level,
            v1::AssuranceLevel::SecondFactor as i32
        ),
        other => panic!("{other:?}"),
    }
    // Another user's handle with this passkey: refused.
    let handle_of_another = BASE64URL_NOPAD.encode(storage::Uuid::now_v7().as_bytes());
    let err = passwordless(&mut passkey, &handle_of_another)
        .await
        .unwrap_err();
    assert_eq!(
        reason(&err).as_deref(),
        Some("WEBAUTHN_REJECTED"),
        "{err:?}"
    );
    // The same passkey on an authenticator that does not verify its user: refused.
    let mut unverified = without_user_verification(&passkey);
    let err = passwordless(&mut unverified, &handle).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    server.stop().await.unwrap();
}

/// An assertion from the wrong origin, and one from a cloned authenticator (its signature
/// counter behind the server's), are refused and counted; the clone is audited.
async fn wrong_origins_and_clones_are_refused(backend: Backend) {
    let server = start(backend).await;
    let email = "clone@example.com";
    let (_, session) = user(&server, email).await;
    let mut key = token();
    register(&server, &session, &mut key, false).await;
    let copy = clone_of(&key);

    // A phishing site: the same RP ID asked from an origin the server does not list.
    let login = challenge(&server, email).await;
    let options = begin_verification(&server, &login, "").await.unwrap();
    let phished = get_at(&mut key, "http://localhost:9999", &options, None).unwrap();
    let err = verify(&server, &login, &phished).await.unwrap_err();
    assert_eq!(
        reason(&err).as_deref(),
        Some("WEBAUTHN_REJECTED"),
        "{err:?}"
    );

    // The real key moves its counter on; the copy then signs with an older one.
    let options = begin_verification(&server, &login, "").await.unwrap();
    let genuine = get(&mut key, &options);
    verify(&server, &login, &genuine).await.unwrap();
    let login = challenge(&server, email).await;
    let options = begin_verification(&server, &login, "").await.unwrap();
    let mut copy = copy;
    let cloned = get(&mut copy, &options);
    let err = verify(&server, &login, &cloned).await.unwrap_err();
    assert_eq!(
        reason(&err).as_deref(),
        Some("WEBAUTHN_CLONE_SUSPECTED"),
        "{err:?}"
    );
    assert!(
        audit_kinds(&server)
            .await
            .iter()
            .any(|k| k == "factor.clone_suspected")
    );
    // Both failures counted against the user's budget.
    let user = server
        .app
        .storage
        .users()
        .find_by_email(email)
        .await
        .unwrap()
        .unwrap();
    let counter = server
        .app
        .storage
        .attempts()
        .get(&storage::repo::second_factor_counter(user.id))
        .await
        .unwrap();
    assert_eq!(
        counter.map(|c| c.failures),
        Some(1),
        "the success between them cleared one"
    );
    server.stop().await.unwrap();
}

/// One assertion raced to two replicas on one database is accepted once.
async fn an_assertion_raced_to_two_replicas_is_accepted_once(backend: Backend) {
    let a = start(backend).await;
    let b = a.replica().await;
    let email = "race@example.com";
    let (_, session) = user(&a, email).await;
    let mut key = token();
    register(&a, &session, &mut key, false).await;
    let login = challenge(&a, email).await;
    let options = begin_verification(&a, &login, "").await.unwrap();
    let response = get(&mut key, &options);
    let (first, second) =
        tokio::join!(verify(&a, &login, &response), verify(&b, &login, &response));
    let sessions = [&first, &second]
        .iter()
        .filter(|r| {
            matches!(
                r,
                Ok(v1::VerifySecondFactorResponse {
                    result: Some(verify_second_factor_response::Result::Authenticated(_)),
                    ..
                })
            )
        })
        .count();
    assert_eq!(sessions, 1, "{first:?} {second:?}");
    b.stop().await.unwrap();
    a.stop().await.unwrap();
}

/// An organization that allows WebAuthn only: a member with an app gets enrollment_required,
/// enrolls a key with the enrollment token, and logs in with it.
async fn an_organization_can_allow_webauthn_only(backend: Backend) {
    let server = start(backend).await;
    let owner = server.create_user("owner@example.com", PASSWORD).await;
    let mut orgs = server.organizations().await;
    let org = orgs
        .create_organization(v1::CreateOrganizationRequest {
            name: "Keys only".into(),
            owner_user_id: owner.id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .organization
        .unwrap();
    let org_id: storage::Uuid = org.id.parse().unwrap();
    let member = server.create_user("member@example.com", PASSWORD).await;
    let member_id: storage::Uuid = member.id.parse().unwrap();
    server
        .app
        .storage
        .memberships()
        .add(
            org_id,
            member_id,
            storage::entity::enums::Role::Member,
            0,
            storage::repo::AuditOf::by_caller("member.added"),
        )
        .await
        .unwrap();
    let now = server::Clock::now(server.app.clock.as_ref());
    tollgate_e2e::active_totp(
        &server.app.storage,
        member_id,
        b"12345678901234567890",
        None,
        None,
        now,
    )
    .await;
    let current = server
        .app
        .storage
        .organizations()
        .get(org_id)
        .await
        .unwrap()
        .unwrap();
    let mut update = storage::repo::PolicyUpdate::of(&current);
    update.mfa_required = true;
    update.allowed_methods = 8;
    server
        .app
        .storage
        .organizations()
        .update_policy(org_id, update, now)
        .await
        .unwrap();

    let login = password_login("member@example.com", PASSWORD, &org.id);
    let authenticate_response::Result::SecondFactorRequired(challenge) =
        server.first_step(login.clone()).await
    else {
        panic!("the app is asked for first")
    };
    let totp = otp_core::Totp::new(
        otp_core::Secret::from_bytes(b"12345678901234567890".to_vec()),
        otp_core::TotpParams::default(),
    )
    .unwrap();
    let code = totp
        .generate(u64::try_from(now + 30).unwrap())
        .unwrap()
        .to_string();
    let r = server
        .authentication()
        .await
        .verify_second_factor(tollgate_e2e::verify_code(&challenge.challenge_token, &code))
        .await;
    // The app passes, but it is not a kind the organization allows: enroll a key.
    let r = match r {
        Ok(r) => r.into_inner(),
        Err(e) => panic!("{e:?}"),
    };
    let Some(verify_second_factor_response::Result::EnrollmentRequired(required)) = r.result else {
        panic!("{r:?}")
    };
    assert_eq!(required.allowed_methods, [v1::FactorKind::Webauthn as i32]);
    let mut key = token();
    let confirmed = register(&server, &required.enrollment_token, &mut key, false).await;
    assert!(
        confirmed.session.is_some(),
        "the enrollment completes the login"
    );
    server.stop().await.unwrap();
}

/// Bad JSON in every new field is INVALID_ARGUMENT naming it; WebAuthn off is
/// FAILED_PRECONDITION.
async fn bad_responses_name_the_field(backend: Backend) {
    let server = start(backend).await;
    let email = "bad@example.com";
    let (_, session) = user(&server, email).await;
    let mut enrollment =
        v1::enrollment_service_client::EnrollmentServiceClient::new(server.channel().await);
    let begun = enrollment
        .begin_web_authn_registration(bearer(
            v1::BeginWebAuthnRegistrationRequest::default(),
            &session,
        ))
        .await
        .unwrap()
        .into_inner();
    for bad in [
        "not json",
        "{}",
        r#"{"response":{"clientDataJSON":"!!"}}"#,
        "[1,2]",
    ] {
        let err = enrollment
            .confirm_web_authn_registration(bearer(
                v1::ConfirmWebAuthnRegistrationRequest {
                    factor_id: begun.factor.as_ref().unwrap().id.clone(),
                    registration_response_json: bad.into(),
                    replaces_factor_id: String::new(),
                    client_context: None,
                },
                &session,
            ))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{bad}: {err:?}");
        assert_eq!(
            tollgate_e2e::violated_fields(&err),
            ["registration_response_json"]
        );
    }
    let mut key = token();
    register(&server, &session, &mut key, false).await;
    let login = challenge(&server, email).await;
    let err = verify(&server, &login, "not json").await.unwrap_err();
    assert_eq!(
        tollgate_e2e::violated_fields(&err),
        ["webauthn_response_json"]
    );
    let err = server
        .authentication()
        .await
        .verify_second_factor(v1::VerifySecondFactorRequest {
            challenge_token: login.clone(),
            code: "123456".into(),
            webauthn_response_json: "{}".into(),
            client_context: None,
            remember_device: false,
        })
        .await
        .unwrap_err();
    assert_eq!(
        tollgate_e2e::violated_fields(&err),
        ["webauthn_response_json"]
    );
    let err = server
        .authentication()
        .await
        .authenticate(v1::AuthenticateRequest {
            credentials: Some(v1::authenticate_request::Credentials::Passkey(
                v1::PasskeyCredentials {
                    ceremony_id: "nope".into(),
                    response_json: String::new(),
                },
            )),
            organization_id: String::new(),
            client_context: None,
            device_token: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        tollgate_e2e::violated_fields(&err),
        ["passkey.ceremony_id", "passkey.response_json"]
    );
    server.stop().await.unwrap();

    // Without [webauthn] the RPCs say so.
    let off = TestServer::start_with(backend, test_config()).await;
    let err = off
        .authentication()
        .await
        .begin_passkey_login(v1::BeginPasskeyLoginRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(reason(&err).as_deref(), Some("WEBAUTHN_NOT_CONFIGURED"));
    off.stop().await.unwrap();
}

/// A refused assertion counts with the call's client: the lockout it starts names it.
async fn a_refused_assertion_keeps_the_client_on_its_events(backend: Backend) {
    let mut config = config();
    config.login.free_failures = 0;
    let server = TestServer::start_with(backend, config).await;
    let email = "phished@example.com";
    let (_, session) = user(&server, email).await;
    let mut key = token();
    register(&server, &session, &mut key, false).await;
    let login = challenge(&server, email).await;
    let options = begin_verification(&server, &login, "").await.unwrap();
    let phished = get_at(&mut key, "http://localhost:9999", &options, None).unwrap();
    let err = server
        .authentication()
        .await
        .verify_second_factor(v1::VerifySecondFactorRequest {
            challenge_token: login.clone(),
            code: String::new(),
            webauthn_response_json: phished,
            client_context: Some(v1::ClientContext {
                ip_address: "198.51.100.66".into(),
                user_agent: "Phish/1".into(),
            }),
            remember_device: false,
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&err).as_deref(), Some("WEBAUTHN_REJECTED"));
    let filter = storage::repo::AuditFilter {
        kinds: vec!["user.locked_out".into()],
        ..Default::default()
    };
    let audit = server.app.storage.audit();
    let events = audit.list(&filter, None, 10).await.unwrap().items;
    assert_eq!(events.len(), 1, "the first failure locks here");
    assert_eq!(events[0].client_ip.as_deref(), Some("198.51.100.66"));
    assert_eq!(events[0].client_user_agent.as_deref(), Some("Phish/1"));
    server.stop().await.unwrap();
}

both!(
    a_security_key_is_a_second_factor,
    a_passkey_logs_in_without_a_password,
    wrong_origins_and_clones_are_refused,
    an_assertion_raced_to_two_replicas_is_accepted_once,
    an_organization_can_allow_webauthn_only,
    bad_responses_name_the_field,
    a_refused_assertion_keeps_the_client_on_its_events,
);
