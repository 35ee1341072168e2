//! One consistent contract, end to end on SQLite and PostgreSQL: where the user's token goes
//! (the token rule, on every RPC), which reason each refusal carries (a used recovery code is
//! a replay like a used app code; a missing token is told from a bad one), AIP-134 update
//! masks, and the SSO mode read back while SSO is off.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code: a panic is a failed test"
)]

use std::collections::BTreeSet;

use tollgate_e2e::{Backend, TestServer, bearer, both, reason, violated_fields};
use tollgate_proto::v1::{self, authenticate_response};
use tonic::Code;

const PASSWORD: &str = "correct horse battery staple";
const SEED: &[u8] = b"12345678901234567890";
const CODES: [&str; 3] = [
    "AAAA-BBBB-CCCC-DDDD",
    "EEEE-FFFF-GGGG-HHHH",
    "JJJJ-KKKK-LLLL-MMMM",
];

both!(
    the_token_rule_holds_on_every_rpc,
    a_used_recovery_code_is_a_replay,
    update_masks_follow_aip_134,
    the_verification_windows_are_settings,
    each_refusal_names_its_reason,
);

/// A user with an app (the seed above) and three recovery codes, in an organization; returns
/// the user's id and a session at assurance 2 (a recovery code used: `CODES[2]`).
async fn user_with_factor(server: &TestServer, email: &str, org: &str) -> (String, v1::Session) {
    let user = server.create_user(email, PASSWORD).await;
    let id: storage::Uuid = user.id.parse().unwrap();
    let now = server::Clock::now(server.app.clock.as_ref());
    tollgate_e2e::active_totp(&server.app.storage, id, SEED, None, Some(&CODES), now).await;
    server
        .organizations()
        .await
        .add_member(v1::AddMemberRequest {
            organization_id: org.to_owned(),
            user_id: user.id.clone(),
            role: v1::Role::Member as i32,
        })
        .await
        .unwrap();
    let session = second_step(server, email, org, CODES[2]).await.unwrap();
    (user.id, session)
}

async fn second_step(
    server: &TestServer,
    email: &str,
    org: &str,
    code: &str,
) -> Result<v1::Session, tonic::Status> {
    let authenticate_response::Result::SecondFactorRequired(challenge) = server
        .first_step(tollgate_e2e::password_login(email, PASSWORD, org))
        .await
    else {
        panic!("a second factor is required");
    };
    let answer = server
        .authentication()
        .await
        .verify_second_factor(tollgate_e2e::verify_code(&challenge.challenge_token, code))
        .await?
        .into_inner();
    match answer.result {
        Some(v1::verify_second_factor_response::Result::Authenticated(session)) => Ok(session),
        other => panic!("{other:?}"),
    }
}

async fn organization(server: &TestServer, owner_email: &str) -> String {
    let owner = server.create_user(owner_email, PASSWORD).await;
    server
        .organizations()
        .await
        .create_organization(v1::CreateOrganizationRequest {
            name: "Acme".into(),
            owner_user_id: owner.id,
        })
        .await
        .unwrap()
        .into_inner()
        .organization
        .unwrap()
        .id
}

/// The RPCs that act for a user, who sends their session (or, for the enrollment service,
/// an enrollment token) as `authorization: Bearer`, and an answer to each: without the
/// header, with a bad token, with the header.
async fn the_token_rule_holds_on_every_rpc(backend: Backend) {
    let server = TestServer::start(backend).await;
    let org = organization(&server, "owner@example.com").await;
    let (user_id, session) = user_with_factor(&server, "member@example.com", &org).await;
    let channel = server.channel().await;
    let mut enrollment =
        v1::enrollment_service_client::EnrollmentServiceClient::new(channel.clone());
    let mut orgs = v1::organization_service_client::OrganizationServiceClient::new(channel.clone());
    let mut sessions = v1::session_service_client::SessionServiceClient::new(channel.clone());
    let mut auth = v1::authentication_service_client::AuthenticationServiceClient::new(channel);
    let id = "0190c7a0-0000-7000-8000-000000000000".to_owned();

    // Every RPC is classified: a new one fails this test until it is.
    let header: BTreeSet<&str> = [
        "EnrollmentService/BeginTotpEnrollment",
        "EnrollmentService/ConfirmTotpEnrollment",
        "EnrollmentService/BeginHotpEnrollment",
        "EnrollmentService/ConfirmHotpEnrollment",
        "EnrollmentService/ResyncHotp",
        "EnrollmentService/ListFactors",
        "EnrollmentService/RemoveFactor",
        "EnrollmentService/RegenerateRecoveryCodes",
        "EnrollmentService/ResetMfa",
        "EnrollmentService/BeginSmsEnrollment",
        "EnrollmentService/ConfirmSmsEnrollment",
        "EnrollmentService/BeginWebAuthnRegistration",
        "EnrollmentService/ConfirmWebAuthnRegistration",
        "OrganizationService/UpdateMfaPolicy",
        "OrganizationService/ResetMemberMfa",
        "OrganizationService/ListAuditEvents",
        "AuthenticationService/VerifyStepUp",
        "SessionService/ListSessions",
        "SessionService/RevokeOtherSessions",
        "SessionService/ListTrustedDevices",
        "SessionService/RevokeTrustedDevice",
    ]
    .into();
    // A login step's challenge in the body, or else the session in the header.
    let challenge_or_header: BTreeSet<&str> = [
        "AuthenticationService/SendSmsCode",
        "AuthenticationService/BeginWebAuthnVerification",
    ]
    .into();
    // The token is the subject of the call (a service validates or revokes it), or a login
    // step's: a body field.
    let body: BTreeSet<&str> = [
        "SessionService/ValidateSession",
        "SessionService/RevokeSession",
        "AuthenticationService/VerifySecondFactor",
    ]
    .into();
    // No user's token: the calling service acts (SetPassword may carry a user's session as
    // the header too, for a self-service change).
    let none: BTreeSet<&str> = [
        "UserService/CreateUser",
        "UserService/GetUser",
        "UserService/SetPassword",
        "OrganizationService/CreateOrganization",
        "OrganizationService/GetOrganization",
        "OrganizationService/AddMember",
        "OrganizationService/ListMembers",
        "AuthenticationService/Authenticate",
        "AuthenticationService/BeginPasskeyLogin",
    ]
    .into();
    let classified: BTreeSet<String> = [&header, &challenge_or_header, &body, &none]
        .into_iter()
        .flatten()
        .map(|method| format!("/tollgate.v1.{method}"))
        .collect();
    let all: BTreeSet<String> = tollgate_proto::METHODS
        .iter()
        .map(|(package, service, method)| format!("/{package}.{service}/{method}"))
        .collect();
    assert_eq!(classified, all, "every RPC follows one rule");

    // Each header RPC: no header is USER_TOKEN_MISSING; a bad token is refused as invalid.
    macro_rules! check {
        ($client:ident . $rpc:ident ( $request:expr ), $invalid:literal) => {{
            let missing = $client
                .$rpc(tonic::Request::new($request))
                .await
                .unwrap_err();
            assert_eq!(
                missing.code(),
                Code::Unauthenticated,
                "{}: {missing:?}",
                stringify!($rpc)
            );
            assert_eq!(
                reason(&missing).as_deref(),
                Some("USER_TOKEN_MISSING"),
                "{}",
                stringify!($rpc)
            );
            let bad = $client
                .$rpc(bearer($request, "not-a-token"))
                .await
                .unwrap_err();
            assert_eq!(
                bad.code(),
                Code::Unauthenticated,
                "{}: {bad:?}",
                stringify!($rpc)
            );
            assert_eq!(
                reason(&bad).as_deref(),
                Some($invalid),
                "{}",
                stringify!($rpc)
            );
        }};
    }
    let label = || "x".to_owned();
    check!(
        enrollment.begin_totp_enrollment(v1::BeginTotpEnrollmentRequest { label: label() }),
        "USER_TOKEN_INVALID"
    );
    check!(
        enrollment.confirm_totp_enrollment(v1::ConfirmTotpEnrollmentRequest {
            factor_id: id.clone(),
            code: "123456".into(),
            replaces_factor_id: String::new(),
            client_context: None,
        }),
        "USER_TOKEN_INVALID"
    );
    check!(
        enrollment.begin_hotp_enrollment(v1::BeginHotpEnrollmentRequest {
            label: label(),
            ..Default::default()
        }),
        "USER_TOKEN_INVALID"
    );
    check!(
        enrollment.confirm_hotp_enrollment(v1::ConfirmHotpEnrollmentRequest {
            factor_id: id.clone(),
            code: "123456".into(),
            replaces_factor_id: String::new(),
            client_context: None,
        }),
        "USER_TOKEN_INVALID"
    );
    check!(
        enrollment.resync_hotp(v1::ResyncHotpRequest {
            factor_id: id.clone(),
            first_code: "123456".into(),
            second_code: "654321".into()
        }),
        "USER_TOKEN_INVALID"
    );
    check!(
        enrollment.list_factors(v1::ListFactorsRequest {}),
        "USER_TOKEN_INVALID"
    );
    check!(
        enrollment.remove_factor(v1::RemoveFactorRequest {
            factor_id: id.clone(),
            proof: "123456".into(),
            ..Default::default()
        }),
        "USER_TOKEN_INVALID"
    );
    check!(
        enrollment.regenerate_recovery_codes(v1::RegenerateRecoveryCodesRequest {
            proof: "123456".into(),
            ..Default::default()
        }),
        "USER_TOKEN_INVALID"
    );
    check!(
        enrollment.reset_mfa(v1::ResetMfaRequest {
            proof: "123456".into(),
            ..Default::default()
        }),
        "USER_TOKEN_INVALID"
    );
    check!(
        enrollment.begin_sms_enrollment(v1::BeginSmsEnrollmentRequest {
            phone_number: "+14155550100".into(),
            label: label()
        }),
        "USER_TOKEN_INVALID"
    );
    check!(
        enrollment.confirm_sms_enrollment(v1::ConfirmSmsEnrollmentRequest {
            factor_id: id.clone(),
            code: "123456".into(),
            replaces_factor_id: String::new(),
            client_context: None,
        }),
        "USER_TOKEN_INVALID"
    );
    check!(
        enrollment.begin_web_authn_registration(v1::BeginWebAuthnRegistrationRequest {
            label: label(),
            discoverable: false
        }),
        "USER_TOKEN_INVALID"
    );
    check!(
        enrollment.confirm_web_authn_registration(v1::ConfirmWebAuthnRegistrationRequest {
            factor_id: id.clone(),
            registration_response_json: "{}".into(),
            replaces_factor_id: String::new(),
            client_context: None,
        }),
        "USER_TOKEN_INVALID"
    );
    check!(
        orgs.update_mfa_policy(v1::UpdateMfaPolicyRequest {
            organization_id: org.clone(),
            policy: Some(v1::MfaPolicy {
                mfa_required: true,
                ..Default::default()
            }),
            update_mask: None,
            password: PASSWORD.into(),
            client_context: None,
        }),
        "SESSION_INVALID"
    );
    check!(
        orgs.reset_member_mfa(v1::ResetMemberMfaRequest {
            organization_id: org.clone(),
            user_id: user_id.clone(),
            client_context: None,
        }),
        "SESSION_INVALID"
    );
    check!(
        orgs.list_audit_events(v1::ListAuditEventsRequest {
            organization_id: org.clone(),
            ..Default::default()
        }),
        "SESSION_INVALID"
    );
    check!(
        sessions.list_sessions(v1::ListSessionsRequest::default()),
        "USER_TOKEN_INVALID"
    );
    check!(
        sessions.revoke_other_sessions(v1::RevokeOtherSessionsRequest {}),
        "USER_TOKEN_INVALID"
    );
    check!(
        sessions.list_trusted_devices(v1::ListTrustedDevicesRequest::default()),
        "USER_TOKEN_INVALID"
    );
    check!(
        sessions.revoke_trusted_device(v1::RevokeTrustedDeviceRequest {
            device_id: id.clone()
        }),
        "USER_TOKEN_INVALID"
    );
    check!(
        auth.verify_step_up(v1::VerifyStepUpRequest {
            code: "123456".into(),
            ..Default::default()
        }),
        "SESSION_INVALID"
    );

    // With the header, the user's calls go through (a member is not an admin, which Tollgate
    // can only say once it knows who is calling).
    let listed = enrollment
        .list_factors(bearer(v1::ListFactorsRequest {}, &session.token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.factors.len(), 1);
    let own = sessions
        .list_sessions(bearer(v1::ListSessionsRequest::default(), &session.token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(own.sessions.len(), 1);
    assert!(own.sessions[0].current);
    let audit = orgs
        .list_audit_events(bearer(
            v1::ListAuditEventsRequest {
                organization_id: org.clone(),
                ..Default::default()
            },
            &session.token,
        ))
        .await
        .unwrap_err();
    assert_eq!(reason(&audit).as_deref(), Some("NOT_AN_ADMIN"));
    let wrong = auth
        .verify_step_up(bearer(
            v1::VerifyStepUpRequest {
                code: "ZZZZ-ZZZZ-ZZZZ-ZZZZ".into(),
                ..Default::default()
            },
            &session.token,
        ))
        .await
        .unwrap_err();
    assert_eq!(reason(&wrong).as_deref(), Some("INVALID_CODE"));
    let up = auth
        .verify_step_up(bearer(
            v1::VerifyStepUpRequest {
                code: CODES[0].into(),
                ..Default::default()
            },
            &session.token,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(up.assurance_level, v1::AssuranceLevel::SecondFactor as i32);

    // The deprecated body field still works as it did, alone or beside a bearer token of
    // the client's own (which it then does not consult).
    #[allow(deprecated, reason = "the released body field keeps working")]
    let deprecated = |token: &str| v1::VerifyStepUpRequest {
        session_token: token.to_owned(),
        code: CODES[1].into(),
        webauthn_response_json: String::new(),
        client_context: None,
    };
    let wrong_body = auth
        .verify_step_up(bearer(deprecated("another-token"), &session.token))
        .await
        .unwrap_err();
    assert_eq!(
        reason(&wrong_body).as_deref(),
        Some("SESSION_INVALID"),
        "the body decides"
    );
    auth.verify_step_up(bearer(deprecated(&session.token), "a-gateway-token"))
        .await
        .unwrap();
    let replayed = auth
        .verify_step_up(deprecated(&session.token))
        .await
        .unwrap_err();
    assert_eq!(
        reason(&replayed).as_deref(),
        Some("CODE_REPLAYED"),
        "it reached the code"
    );

    // SendSmsCode and BeginWebAuthnVerification without a challenge take the header's session
    // (this user has neither an SMS phone nor WebAuthn: the answers say so, so the session
    // was read).
    let sms = auth
        .send_sms_code(bearer(v1::SendSmsCodeRequest::default(), &session.token))
        .await
        .unwrap_err();
    assert_eq!(reason(&sms).as_deref(), Some("NO_SMS_FACTOR"));
    let neither = auth
        .send_sms_code(v1::SendSmsCodeRequest::default())
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&neither), ["challenge_token"]);
    let webauthn = auth
        .begin_web_authn_verification(bearer(
            v1::BeginWebAuthnVerificationRequest::default(),
            &session.token,
        ))
        .await
        .unwrap_err();
    assert_eq!(webauthn.code(), Code::FailedPrecondition, "{webauthn:?}");

    server.stop().await.unwrap();
}

/// A recovery code works once; presented again it is a replay (CODE_REPLAYED, as a used app
/// code's step), at a login and as a proof, while a code that never existed is INVALID_CODE.
/// The `recovery_code.used` event of a proof names the session's organization.
async fn a_used_recovery_code_is_a_replay(backend: Backend) {
    let server = TestServer::start(backend).await;
    let org = organization(&server, "owner@example.com").await;
    let (_, session) = user_with_factor(&server, "member@example.com", &org).await;
    // CODES[2] logged in (user_with_factor); again, it is a replay.
    let again = second_step(&server, "member@example.com", &org, CODES[2])
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::Unauthenticated);
    assert_eq!(
        reason(&again).as_deref(),
        Some("CODE_REPLAYED"),
        "{again:?}"
    );
    let unknown = second_step(&server, "member@example.com", &org, "ZZZZ-ZZZZ-ZZZZ-ZZZZ")
        .await
        .unwrap_err();
    assert_eq!(reason(&unknown).as_deref(), Some("INVALID_CODE"));

    // As the proof of a change: the same.
    let mut enrollment =
        v1::enrollment_service_client::EnrollmentServiceClient::new(server.channel().await);
    let replayed = enrollment
        .regenerate_recovery_codes(bearer(
            v1::RegenerateRecoveryCodesRequest {
                proof: CODES[2].into(),
                ..Default::default()
            },
            &session.token,
        ))
        .await
        .unwrap_err();
    assert_eq!(reason(&replayed).as_deref(), Some("CODE_REPLAYED"));
    let reset = enrollment
        .reset_mfa(bearer(
            v1::ResetMfaRequest {
                proof: CODES[0].into(),
                ..Default::default()
            },
            &session.token,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reset.factors_removed, 1);
    // Every recovery_code.used event of this user names the organization, the proof's too.
    let used: Vec<_> =
        <storage::entity::audit_event::Entity as storage::sea_orm::EntityTrait>::find()
            .all(server.app.storage.db())
            .await
            .unwrap()
            .into_iter()
            .filter(|event| event.kind == "recovery_code.used")
            .collect();
    assert_eq!(used.len(), 2, "the login's and the reset's: {used:?}");
    let org_id: storage::Uuid = org.parse().unwrap();
    assert!(
        used.iter().all(|event| event.org_id == Some(org_id)),
        "{used:?}"
    );
    server.stop().await.unwrap();
}

/// AIP-134: without a mask, the fields the policy sets; `*` replaces it all; turning a field
/// off needs the mask. The SSO mode reads back unspecified while SSO is off.
async fn update_masks_follow_aip_134(backend: Backend) {
    let server = TestServer::start(backend).await;
    let owner = "owner@example.com";
    let org = organization(&server, owner).await;
    let login = || async {
        let authenticate_response::Result::Authenticated(session) = server
            .first_step(tollgate_e2e::password_login(owner, PASSWORD, &org))
            .await
        else {
            panic!("the owner has no factor yet")
        };
        session.token
    };
    let mut token = login().await;
    let orgs = server.organizations().await;
    let get = |orgs: &v1::organization_service_client::OrganizationServiceClient<_>| {
        let request = v1::GetOrganizationRequest {
            organization_id: org.clone(),
        };
        let mut orgs = orgs.clone();
        async move {
            orgs.get_organization(request)
                .await
                .unwrap()
                .into_inner()
                .organization
                .unwrap()
                .mfa_policy
                .unwrap()
        }
    };
    let initial = get(&orgs).await;
    assert!(!initial.sso_enabled);
    assert_eq!(
        initial.sso_mode,
        v1::SsoMode::Unspecified as i32,
        "SSO is off"
    );
    assert_eq!(initial.allowed_methods.len(), 4);

    let update = |token: &str, policy: v1::MfaPolicy, paths: Option<Vec<&str>>| {
        let request = v1::UpdateMfaPolicyRequest {
            organization_id: org.clone(),
            policy: Some(policy),
            update_mask: paths.map(|paths| prost_types::FieldMask {
                paths: paths.into_iter().map(str::to_owned).collect(),
            }),
            password: PASSWORD.into(),
            client_context: None,
        };
        let mut orgs = orgs.clone();
        let token = token.to_owned();
        async move { orgs.update_mfa_policy(bearer(request, &token)).await }
    };
    // Only the allowed methods are set: only they change (the issue's {mfa_required: true}
    // without a mask would revoke this very session, whose owner has no factor; the rule is
    // the same for any field).
    update(
        &token,
        v1::MfaPolicy {
            allowed_methods: vec![v1::FactorKind::Totp as i32],
            ..Default::default()
        },
        None,
    )
    .await
    .unwrap();
    let now = get(&orgs).await;
    assert_eq!(now.allowed_methods, [v1::FactorKind::Totp as i32]);
    assert!(!now.mfa_required && !now.sso_enabled);
    // SSO on, with no mode named: the stored default (exempt) applies and reads back.
    update(
        &token,
        v1::MfaPolicy {
            sso_enabled: true,
            ..Default::default()
        },
        None,
    )
    .await
    .unwrap();
    let now = get(&orgs).await;
    assert!(now.sso_enabled);
    assert_eq!(now.sso_mode, v1::SsoMode::Exempt as i32);
    assert_eq!(now.allowed_methods, [v1::FactorKind::Totp as i32], "kept");
    // Turning SSO off needs the mask (false is not "set").
    let nothing = update(&token, v1::MfaPolicy::default(), None)
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&nothing), ["update_mask"]);
    let off = update(&token, v1::MfaPolicy::default(), Some(vec!["sso_enabled"]))
        .await
        .unwrap()
        .into_inner();
    // Single-factor sessions end with SSO (this one too): log in again.
    assert_eq!(off.sessions_revoked, 1);
    token = login().await;
    let now = get(&orgs).await;
    assert!(!now.sso_enabled);
    assert_eq!(now.sso_mode, v1::SsoMode::Unspecified as i32);
    // `*`: the whole policy, as read back (SSO off, its mode unspecified) with methods added.
    let mut replaced = now.clone();
    replaced.allowed_methods = vec![v1::FactorKind::Totp as i32, v1::FactorKind::Sms as i32];
    update(&token, replaced, Some(vec!["*"])).await.unwrap();
    let now = get(&orgs).await;
    assert_eq!(now.allowed_methods.len(), 2);
    assert!(!now.mfa_required && !now.sso_enabled);
    server.stop().await.unwrap();
}

/// The TOTP window (`otp.totp_steps_behind`/`ahead`) and the HOTP look-ahead
/// (`otp.hotp_look_ahead`) are settings: with the app's window narrowed to its own step, the
/// next step's code is refused; by default (one step each way) it is accepted.
async fn the_verification_windows_are_settings(backend: Backend) {
    use std::sync::Arc;
    let app = otp_core::Totp::new(
        otp_core::Secret::from_bytes(SEED.to_vec()),
        otp_core::TotpParams::default(),
    )
    .unwrap();
    for (ahead, accepted) in [(0, false), (1, true)] {
        let clock = Arc::new(server::ManualClock::new(1_800_000_000));
        let mut config = tollgate_e2e::test_config();
        config.otp.totp_steps_ahead = ahead;
        let server = TestServer::start_full(backend, config, Arc::clone(&clock) as _).await;
        let org = organization(&server, "owner@example.com").await;
        let (_, _) = user_with_factor(&server, "member@example.com", &org).await;
        let next = app.generate(1_800_000_000 + 30).unwrap().to_string();
        let answer = second_step(&server, "member@example.com", &org, &next).await;
        assert_eq!(answer.is_ok(), accepted, "steps ahead {ahead}: {answer:?}");
        if !accepted {
            assert_eq!(
                reason(&answer.unwrap_err()).as_deref(),
                Some("INVALID_CODE")
            );
        }
        server.stop().await.unwrap();
    }
    // A window that would accept too many codes stops start-up, naming the key.
    let mut config = tollgate_e2e::test_config();
    config.otp.hotp_look_ahead = 1_000;
    let refused = config.validate().unwrap_err().to_string();
    assert!(refused.contains("otp.hotp_look_ahead"), "{refused}");
}

/// The refusals no other test provokes, each with its reason (and, through `reason`, the
/// code error_reason.proto names): a user of several organizations who names none, another
/// user's session setting a password, a kind the organization does not allow, a passkey
/// step without a passkey, an admin of another organization reset, a disabled account.
async fn each_refusal_names_its_reason(backend: Backend) {
    let mut config = tollgate_e2e::test_config();
    config.webauthn.rp_id = "localhost".into();
    config.webauthn.origins = vec!["http://localhost:8080".into()];
    let server = TestServer::start_with(backend, config).await;
    let org_a = organization(&server, "alice@example.com").await;
    let org_b = organization(&server, "bob@example.com").await;
    let mut orgs = server.organizations().await;
    let add = |user: String, org: &str, role: v1::Role| v1::AddMemberRequest {
        organization_id: org.to_owned(),
        user_id: user,
        role: role as i32,
    };
    let carol = server.create_user("carol@example.com", PASSWORD).await;
    for org in [&org_a, &org_b] {
        orgs.add_member(add(carol.id.clone(), org, v1::Role::Member))
            .await
            .unwrap();
    }
    let refused = server
        .authentication()
        .await
        .authenticate(tollgate_e2e::password_login(
            "carol@example.com",
            PASSWORD,
            "",
        ))
        .await
        .unwrap_err();
    assert_eq!(reason(&refused).as_deref(), Some("ORGANIZATION_REQUIRED"));

    let authenticate_response::Result::Authenticated(alice) = server
        .first_step(tollgate_e2e::password_login(
            "alice@example.com",
            PASSWORD,
            &org_a,
        ))
        .await
    else {
        panic!("alice has no factor")
    };
    let refused = server
        .users()
        .await
        .set_password(bearer(
            v1::SetPasswordRequest {
                user_id: carol.id.clone(),
                new_password: "another long password".into(),
                current_password: PASSWORD.into(),
            },
            &alice.token,
        ))
        .await
        .unwrap_err();
    assert_eq!(reason(&refused).as_deref(), Some("NOT_YOUR_ACCOUNT"));

    let only_apps = v1::UpdateMfaPolicyRequest {
        organization_id: org_a.clone(),
        policy: Some(v1::MfaPolicy {
            allowed_methods: vec![v1::FactorKind::Totp as i32],
            ..Default::default()
        }),
        update_mask: None,
        password: PASSWORD.into(),
        client_context: None,
    };
    orgs.update_mfa_policy(bearer(only_apps, &alice.token))
        .await
        .unwrap();
    let mut enrollment =
        v1::enrollment_service_client::EnrollmentServiceClient::new(server.channel().await);
    let refused = enrollment
        .begin_sms_enrollment(bearer(
            v1::BeginSmsEnrollmentRequest {
                phone_number: "+14155550100".into(),
                label: String::new(),
            },
            &alice.token,
        ))
        .await
        .unwrap_err();
    assert_eq!(reason(&refused).as_deref(), Some("METHOD_NOT_ALLOWED"));
    let refused = server
        .authentication()
        .await
        .begin_web_authn_verification(bearer(
            v1::BeginWebAuthnVerificationRequest::default(),
            &alice.token,
        ))
        .await
        .unwrap_err();
    assert_eq!(reason(&refused).as_deref(), Some("NO_WEBAUTHN_FACTOR"));

    // Dave administers organization B and is a member of A: A's owner may not reset him.
    let dave = server.create_user("dave@example.com", PASSWORD).await;
    orgs.add_member(add(dave.id.clone(), &org_b, v1::Role::Admin))
        .await
        .unwrap();
    orgs.add_member(add(dave.id.clone(), &org_a, v1::Role::Member))
        .await
        .unwrap();
    let dave_id: storage::Uuid = dave.id.parse().unwrap();
    let now = server::Clock::now(server.app.clock.as_ref());
    tollgate_e2e::active_totp(&server.app.storage, dave_id, SEED, None, Some(&CODES), now).await;
    let refused = orgs
        .reset_member_mfa(bearer(
            v1::ResetMemberMfaRequest {
                organization_id: org_a.clone(),
                user_id: dave.id.clone(),
                client_context: None,
            },
            &alice.token,
        ))
        .await
        .unwrap_err();
    assert_eq!(reason(&refused).as_deref(), Some("ADMINISTERS_ELSEWHERE"));

    // An operator disabled carol: her login is refused as such.
    {
        use storage::sea_orm::{ActiveModelTrait as _, ActiveValue::Set};
        let carol_id: storage::Uuid = carol.id.parse().unwrap();
        storage::entity::user::ActiveModel {
            id: Set(carol_id),
            status: Set(storage::entity::enums::UserStatus::Disabled),
            ..Default::default()
        }
        .update(server.app.storage.db())
        .await
        .unwrap();
    }
    let refused = server
        .authentication()
        .await
        .authenticate(tollgate_e2e::password_login(
            "carol@example.com",
            PASSWORD,
            &org_a,
        ))
        .await
        .unwrap_err();
    assert_eq!(reason(&refused).as_deref(), Some("ACCOUNT_DISABLED"));
    server.stop().await.unwrap();
}
