//! Organization 2FA enforcement and administration end to end (journeys 1, 2, 3 and 10):
//! the password-confirmed policy change and the sessions it revokes, SSO logins exempt or
//! enforced, the admin without a password, the member reset, the member list, the audit log,
//! and every administrative RPC refused to everyone else with nothing changed. On SQLite and
//! PostgreSQL, with a clock the test moves.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code: a panic is a failed test"
)]

use std::sync::Arc;

use otp_core::{OtpAuthUri, Totp, TotpParams};
use server::config::ApiKeyConfig;
use storage::repo::NewSession;
use storage::sea_orm::EntityTrait;
use tollgate_e2e::{
    Backend, ManualClock, TestServer, bearer, both, reason, test_config, violated_fields,
};
use tollgate_proto::v1::authentication_service_client::AuthenticationServiceClient;
use tollgate_proto::v1::enrollment_service_client::EnrollmentServiceClient;
use tollgate_proto::v1::organization_service_client::OrganizationServiceClient;
use tollgate_proto::v1::{self, authenticate_response, verify_second_factor_response};
use tonic::Code;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;

const PASSWORD: &str = "correct horse battery staple";
const T0: i64 = 1_800_000_000;

fn password_login(email: &str, org: &str) -> v1::AuthenticateRequest {
    v1::AuthenticateRequest {
        credentials: Some(v1::authenticate_request::Credentials::Password(
            v1::PasswordCredentials {
                email: email.into(),
                password: PASSWORD.into(),
            },
        )),
        organization_id: org.into(),
        client_context: None,
        device_token: String::new(),
    }
}

fn sso_login(email: &str, org: &str) -> v1::AuthenticateRequest {
    v1::AuthenticateRequest {
        credentials: Some(v1::authenticate_request::Credentials::Sso(
            v1::SsoCredentials {
                email: email.into(),
                identity_provider: "https://idp.example.com".into(),
            },
        )),
        organization_id: org.into(),
        client_context: None,
        device_token: String::new(),
    }
}

/// A policy with every method allowed; the fields a test changes go in the mask.
fn policy(mfa_required: bool, sso_enabled: bool, sso_mode: v1::SsoMode) -> v1::MfaPolicy {
    v1::MfaPolicy {
        mfa_required,
        mfa_required_time: None,
        allowed_methods: vec![
            v1::FactorKind::Totp as i32,
            v1::FactorKind::Hotp as i32,
            v1::FactorKind::Sms as i32,
        ],
        sso_enabled,
        sso_mode: sso_mode as i32,
        trusted_device_days: 0,
    }
}

/// Every row an administrative call could touch.
#[derive(Debug, PartialEq)]
struct Snapshot {
    organizations: Vec<storage::entity::organization::Model>,
    users: Vec<storage::entity::user::Model>,
    memberships: Vec<storage::entity::membership::Model>,
    factors: Vec<storage::entity::factor::Model>,
    recovery_codes: Vec<storage::entity::recovery_code::Model>,
    sessions: Vec<storage::entity::session::Model>,
    audit: Vec<storage::entity::audit_event::Model>,
    attempts: Vec<storage::entity::attempt_counter::Model>,
}

struct World {
    server: TestServer,
    clock: Arc<ManualClock>,
    orgs: OrganizationServiceClient<Channel>,
    auth: AuthenticationServiceClient<Channel>,
    enrollment: EnrollmentServiceClient<Channel>,
}

impl World {
    async fn new(backend: Backend) -> Self {
        let clock = Arc::new(ManualClock::new(T0));
        let server = TestServer::start_with_clock(backend, Arc::clone(&clock)).await;
        let channel = server.channel().await;
        Self {
            orgs: OrganizationServiceClient::new(channel.clone()),
            auth: AuthenticationServiceClient::new(channel.clone()),
            enrollment: EnrollmentServiceClient::new(channel),
            server,
            clock,
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(server::Clock::now(&*self.clock)).unwrap()
    }

    async fn snapshot(&self) -> Snapshot {
        use storage::entity as e;
        let db = self.server.app.storage.db();
        Snapshot {
            organizations: e::organization::Entity::find().all(db).await.unwrap(),
            users: e::user::Entity::find().all(db).await.unwrap(),
            memberships: e::membership::Entity::find().all(db).await.unwrap(),
            factors: e::factor::Entity::find().all(db).await.unwrap(),
            recovery_codes: e::recovery_code::Entity::find().all(db).await.unwrap(),
            sessions: e::session::Entity::find().all(db).await.unwrap(),
            audit: e::audit_event::Entity::find().all(db).await.unwrap(),
            attempts: e::attempt_counter::Entity::find().all(db).await.unwrap(),
        }
    }

    /// Creates a user (with the test password, or none); returns their id.
    async fn user(&self, email: &str, with_password: bool) -> String {
        let password = if with_password { PASSWORD } else { "" };
        self.server.create_user(email, password).await.id
    }

    async fn org(&mut self, name: &str, owner: &str) -> String {
        self.orgs
            .create_organization(v1::CreateOrganizationRequest {
                name: name.into(),
                owner_user_id: owner.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .organization
            .unwrap()
            .id
    }

    async fn add(&mut self, org: &str, user: &str, role: v1::Role) {
        self.orgs
            .add_member(v1::AddMemberRequest {
                organization_id: org.into(),
                user_id: user.into(),
                role: role as i32,
            })
            .await
            .unwrap();
    }

    async fn first_step(
        &mut self,
        request: v1::AuthenticateRequest,
    ) -> authenticate_response::Result {
        self.server.first_step(request).await
    }

    /// A password login that must give a session at once.
    async fn session(&mut self, email: &str, org: &str) -> v1::Session {
        match self.first_step(password_login(email, org)).await {
            authenticate_response::Result::Authenticated(s) => s,
            other => panic!("expected a session, got {other:?}"),
        }
    }

    /// Enrolls an app with `token` (a session or an enrollment token); returns the app and,
    /// with an enrollment token, the session that completes the login.
    async fn enroll_app(&mut self, token: &str) -> (Totp, Option<v1::Session>) {
        let begun = self
            .enrollment
            .begin_totp_enrollment(bearer(
                v1::BeginTotpEnrollmentRequest {
                    label: "app".into(),
                },
                token,
            ))
            .await
            .unwrap()
            .into_inner();
        let app = OtpAuthUri::parse(&begun.otpauth_uri)
            .unwrap()
            .to_totp(TotpParams::default())
            .unwrap()
            .unwrap();
        let done = self
            .enrollment
            .confirm_totp_enrollment(bearer(
                v1::ConfirmTotpEnrollmentRequest {
                    factor_id: begun.factor.unwrap().id,
                    code: app.generate(self.now()).unwrap().to_string(),
                    ..Default::default()
                },
                token,
            ))
            .await
            .unwrap()
            .into_inner();
        // The next code must come from a later step than the confirming one.
        self.clock.advance(30);
        (app, done.session)
    }

    /// Passes a challenge with the app's current code.
    async fn second_factor(&mut self, challenge: &str, app: &Totp) -> v1::Session {
        let code = app.generate(self.now()).unwrap().to_string();
        self.clock.advance(30);
        match self
            .auth
            .verify_second_factor(v1::VerifySecondFactorRequest {
                challenge_token: challenge.into(),
                code,
                webauthn_response_json: String::new(),
                client_context: None,
                remember_device: false,
            })
            .await
            .unwrap()
            .into_inner()
            .result
        {
            Some(verify_second_factor_response::Result::Authenticated(s)) => s,
            other => panic!("expected a session, got {other:?}"),
        }
    }

    /// Password then the app's code.
    async fn session_2fa(&mut self, email: &str, org: &str, app: &Totp) -> v1::Session {
        match self.first_step(password_login(email, org)).await {
            authenticate_response::Result::SecondFactorRequired(c) => {
                self.second_factor(&c.challenge_token, app).await
            }
            other => panic!("expected a challenge, got {other:?}"),
        }
    }

    /// A user with an app, and a session at assurance 2 for `org` (which they must be in).
    async fn with_app(&mut self, email: &str, org: &str) -> (Totp, v1::Session) {
        let first = self.session(email, org).await;
        let (app, _) = self.enroll_app(&first.token).await;
        let session = self.session_2fa(email, org, &app).await;
        (app, session)
    }

    async fn update(
        &mut self,
        token: &str,
        org: &str,
        policy: v1::MfaPolicy,
        mask: &[&str],
        password: &str,
    ) -> Result<v1::UpdateMfaPolicyResponse, tonic::Status> {
        self.orgs
            .update_mfa_policy(bearer(
                v1::UpdateMfaPolicyRequest {
                    organization_id: org.into(),
                    policy: Some(policy),
                    update_mask: Some(prost_types::FieldMask {
                        paths: mask.iter().map(|p| (*p).to_owned()).collect(),
                    }),
                    password: password.into(),
                    client_context: None,
                },
                token,
            ))
            .await
            .map(tonic::Response::into_inner)
    }

    async fn reset(
        &mut self,
        token: &str,
        org: &str,
        user: &str,
    ) -> Result<v1::ResetMemberMfaResponse, tonic::Status> {
        self.orgs
            .reset_member_mfa(bearer(
                v1::ResetMemberMfaRequest {
                    organization_id: org.into(),
                    user_id: user.into(),
                    client_context: None,
                },
                token,
            ))
            .await
            .map(tonic::Response::into_inner)
    }

    async fn audit(
        &mut self,
        token: &str,
        request: v1::ListAuditEventsRequest,
    ) -> Result<v1::ListAuditEventsResponse, tonic::Status> {
        self.orgs
            .list_audit_events(bearer(request, token))
            .await
            .map(tonic::Response::into_inner)
    }

    /// Every audit event of `org` of one kind, newest first.
    async fn events(&mut self, token: &str, org: &str, kind: &str) -> Vec<v1::AuditEvent> {
        self.audit(
            token,
            v1::ListAuditEventsRequest {
                organization_id: org.into(),
                kinds: vec![kind.into()],
                page_size: 500,
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .events
    }

    async fn session_is_valid(&self, token: &str) -> bool {
        self.server
            .sessions()
            .await
            .validate_session(v1::ValidateSessionRequest {
                token: token.into(),
            })
            .await
            .is_ok()
    }

    async fn members(&mut self, org: &str) -> Vec<v1::Member> {
        self.orgs
            .list_members(v1::ListMembersRequest {
                organization_id: org.into(),
                page_size: 0,
                page_token: String::new(),
            })
            .await
            .unwrap()
            .into_inner()
            .members
    }
}

fn assert_refused(result: Result<impl std::fmt::Debug, tonic::Status>, code: Code, why: &str) {
    let err = result.expect_err("expected a refusal");
    assert_eq!(err.code(), code, "{err:?}");
    assert_eq!(reason(&err).as_deref(), Some(why), "{err:?}");
}

async fn journey_1_admin_turns_on_mandatory_2fa(backend: Backend) {
    let mut w = World::new(backend).await;
    let owner = w.user("owner@example.com", true).await;
    let alice = w.user("alice@example.com", true).await;
    let bob = w.user("bob@example.com", true).await;
    let org = w.org("Acme", &owner).await;
    w.add(&org, &alice, v1::Role::Member).await;
    w.add(&org, &bob, v1::Role::Member).await;
    let owner_session = w.session("owner@example.com", &org).await;
    let alice_session = w.session("alice@example.com", &org).await;
    let (bob_app, bob_session) = w.with_app("bob@example.com", &org).await;
    let required = policy(true, false, v1::SsoMode::Exempt);

    // The change must be confirmed with the admin's password: missing or wrong, nothing
    // changes.
    let before = w.snapshot().await;
    let err = w
        .update(
            &owner_session.token,
            &org,
            required.clone(),
            &["mfa_required"],
            "",
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(violated_fields(&err), ["password"]);
    assert_eq!(w.snapshot().await, before);
    assert_refused(
        w.update(
            &owner_session.token,
            &org,
            required.clone(),
            &["mfa_required"],
            "not the password",
        )
        .await,
        Code::PermissionDenied,
        "PASSWORD_CONFIRMATION_FAILED",
    );
    // A wrong password counts toward the password lockout, and changes nothing else.
    let mut after_wrong = w.snapshot().await;
    assert_eq!(after_wrong.attempts.len(), 1);
    after_wrong.attempts.clear();
    assert_eq!(after_wrong, before);

    // Turned on: every session not established with a second factor is revoked.
    let changed = w
        .update(
            &owner_session.token,
            &org,
            required.clone(),
            &["mfa_required"],
            PASSWORD,
        )
        .await
        .unwrap();
    let now_policy = changed.organization.unwrap().mfa_policy.unwrap();
    assert!(now_policy.mfa_required);
    assert_eq!(
        now_policy.mfa_required_time.unwrap().seconds,
        i64::try_from(w.now()).unwrap()
    );
    assert_eq!(now_policy.allowed_methods.len(), 4, "the mask kept them");
    // Alice's and the owner's, and the one Bob enrolled his app from.
    assert_eq!(changed.sessions_revoked, 3);
    assert!(!w.session_is_valid(&alice_session.token).await);
    assert!(!w.session_is_valid(&owner_session.token).await);
    assert!(w.session_is_valid(&bob_session.token).await);

    // Members without a factor must enroll at their next login, and get no session until
    // they do; a member with one passes it as before.
    let mut login = password_login("alice@example.com", &org);
    login.client_context = Some(v1::ClientContext {
        ip_address: "203.0.113.41".into(),
        user_agent: "Enroller/1".into(),
    });
    let enrollment = match w.first_step(login).await {
        authenticate_response::Result::EnrollmentRequired(e) => e,
        other => panic!("expected enrollment, got {other:?}"),
    };
    assert_eq!(enrollment.allowed_methods.len(), 4);
    let err = w
        .server
        .sessions()
        .await
        .validate_session(v1::ValidateSessionRequest {
            token: enrollment.enrollment_token.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Code::Unauthenticated,
        "an enrollment token is no session"
    );
    let (alice_app, session) = w.enroll_app(&enrollment.enrollment_token).await;
    let session = session.expect("enrolling completes the login");
    assert_eq!(
        session.assurance_level,
        v1::AssuranceLevel::SecondFactor as i32
    );
    // The session keeps the client of the login the enrollment token came from.
    let listed = w
        .server
        .sessions()
        .await
        .list_sessions(bearer(v1::ListSessionsRequest::default(), &session.token))
        .await
        .unwrap()
        .into_inner()
        .sessions;
    let current = listed.iter().find(|s| s.current).unwrap();
    assert_eq!(
        current.client_context,
        Some(v1::ClientContext {
            ip_address: "203.0.113.41".into(),
            user_agent: "Enroller/1".into(),
        })
    );
    let bob_session = w.session_2fa("bob@example.com", &org, &bob_app).await;

    // Journey 9, enforced: Bob cannot remove his last factor himself; it stays.
    let bob_factor = w
        .enrollment
        .list_factors(bearer(v1::ListFactorsRequest {}, &bob_session.token))
        .await
        .unwrap()
        .into_inner()
        .factors[0]
        .id
        .clone();
    let proof = bob_app.generate(w.now()).unwrap().to_string();
    w.clock.advance(30);
    let before_removal = w.snapshot().await.factors;
    assert_refused(
        w.enrollment
            .remove_factor(bearer(
                v1::RemoveFactorRequest {
                    factor_id: bob_factor,
                    proof,
                    webauthn_response_json: String::new(),
                },
                &bob_session.token,
            ))
            .await,
        Code::FailedPrecondition,
        "LAST_REQUIRED_FACTOR",
    );
    assert_eq!(w.snapshot().await.factors.len(), before_removal.len());

    // A member added now enrolls right after their first password login.
    let carol = w.user("carol@example.com", true).await;
    w.add(&org, &carol, v1::Role::Member).await;
    assert!(matches!(
        w.first_step(password_login("carol@example.com", &org))
            .await,
        authenticate_response::Result::EnrollmentRequired(_)
    ));

    // The owner, too, enrolls; then turns the requirement off. Each member keeps their own
    // 2FA: it is still asked for at login.
    let enrollment = match w
        .first_step(password_login("owner@example.com", &org))
        .await
    {
        authenticate_response::Result::EnrollmentRequired(e) => e,
        other => panic!("expected enrollment, got {other:?}"),
    };
    let (_owner_app, owner_session) = w.enroll_app(&enrollment.enrollment_token).await;
    let owner_session = owner_session.unwrap();
    // The audit log says where Alice's enrollment login came from; logins without a
    // client context say nothing.
    let logins = w
        .events(&owner_session.token, &org, "login.succeeded")
        .await;
    let alice_login = logins
        .iter()
        .find(|e| e.client_context.is_some())
        .expect("Alice's login carried a client");
    assert_eq!(
        alice_login.client_context,
        Some(v1::ClientContext {
            ip_address: "203.0.113.41".into(),
            user_agent: "Enroller/1".into(),
        })
    );
    assert_eq!(
        logins.iter().filter(|e| e.client_context.is_some()).count(),
        1
    );
    // Only an admin reset removes Bob's factor; he enrolls again at his next login.
    w.reset(&owner_session.token, &org, &bob).await.unwrap();
    assert!(matches!(
        w.first_step(password_login("bob@example.com", &org)).await,
        authenticate_response::Result::EnrollmentRequired(_)
    ));
    let off = w
        .update(
            &owner_session.token,
            &org,
            policy(false, false, v1::SsoMode::Exempt),
            &["mfa_required"],
            PASSWORD,
        )
        .await
        .unwrap();
    assert_eq!(off.sessions_revoked, 0);
    assert!(!off.organization.unwrap().mfa_policy.unwrap().mfa_required);
    assert!(matches!(
        w.first_step(password_login("alice@example.com", &org))
            .await,
        authenticate_response::Result::SecondFactorRequired(_)
    ));
    assert!(w.session_is_valid(&owner_session.token).await);
    w.session_2fa("alice@example.com", &org, &alice_app).await;
    // Carol never enrolled: without the requirement she logs in with her password.
    w.session("carol@example.com", &org).await;

    // Both changes are in the audit log, with who made them and what changed.
    let events = w
        .events(&owner_session.token, &org, "mfa_policy.updated")
        .await;
    assert_eq!(events.len(), 2);
    assert_eq!(events[1].actor_user_id, owner);
    assert!(
        events[1].details.contains(r#""sessions_revoked":3"#),
        "{}",
        events[1].details
    );
    assert!(
        events[0].details.contains(
            r#""after":{"allowed_methods":["totp","hotp","sms","webauthn"],"mfa_required":false"#
        ),
        "{}",
        events[0].details
    );
    w.server.stop().await.unwrap();
}

async fn journey_2_sso_logins_exempt_or_enforced(backend: Backend) {
    let mut w = World::new(backend).await;
    let owner = w.user("owner@example.com", true).await;
    let alice = w.user("alice@example.com", true).await;
    let bob = w.user("bob@example.com", false).await;
    w.user("carol@example.com", true).await;
    let org = w.org("Acme", &owner).await;
    w.add(&org, &alice, v1::Role::Member).await;
    w.add(&org, &bob, v1::Role::Member).await;
    let (_owner_app, owner_session) = w.with_app("owner@example.com", &org).await;
    let (alice_app, _) = w.with_app("alice@example.com", &org).await;
    let token = owner_session.token.clone();

    // SSO is off: SSO logins are refused.
    assert_refused(
        w.auth
            .authenticate(sso_login("alice@example.com", &org))
            .await,
        Code::PermissionDenied,
        "SSO_NOT_ENABLED",
    );
    // Exempt mode: SSO logins skip 2FA, even for a member who has it.
    let sso_exempt = policy(false, true, v1::SsoMode::Exempt);
    w.update(
        &token,
        &org,
        sso_exempt,
        &["sso_enabled", "sso_mode"],
        PASSWORD,
    )
    .await
    .unwrap();
    let exempt_session = match w.first_step(sso_login("alice@example.com", &org)).await {
        authenticate_response::Result::Authenticated(s) => s,
        other => panic!("expected a session, got {other:?}"),
    };
    let session = exempt_session.clone();
    assert_eq!(
        session.assurance_level,
        v1::AssuranceLevel::SingleFactor as i32
    );
    let logins = w.events(&token, &org, "login.succeeded").await;
    assert!(
        logins[0].details.contains(r#""method":"sso""#)
            && logins[0].details.contains("idp.example.com"),
        "{}",
        logins[0].details
    );
    // An account without a password logs in through SSO.
    assert!(matches!(
        w.first_step(sso_login("bob@example.com", &org)).await,
        authenticate_response::Result::Authenticated(_)
    ));
    // A password login still asks for Alice's factor.
    assert!(matches!(
        w.first_step(password_login("alice@example.com", &org))
            .await,
        authenticate_response::Result::SecondFactorRequired(_)
    ));

    // 2FA cannot be required while SSO exempts: refused with the reason, nothing changes.
    let before = w.snapshot().await;
    assert_refused(
        w.update(
            &token,
            &org,
            policy(true, true, v1::SsoMode::Exempt),
            &["mfa_required"],
            PASSWORD,
        )
        .await,
        Code::FailedPrecondition,
        "SSO_EXEMPTS",
    );
    assert_eq!(w.snapshot().await, before);

    // Enforce mode: 2FA on top of SSO, exactly as after a password.
    w.update(
        &token,
        &org,
        policy(true, true, v1::SsoMode::Enforce),
        &[],
        PASSWORD,
    )
    .await
    .unwrap();
    // The single-factor SSO session that skipped Alice's 2FA is gone with the exemption.
    assert!(!w.session_is_valid(&exempt_session.token).await);
    let challenge = match w.first_step(sso_login("alice@example.com", &org)).await {
        authenticate_response::Result::SecondFactorRequired(c) => c,
        other => panic!("expected a challenge, got {other:?}"),
    };
    let session = w
        .second_factor(&challenge.challenge_token, &alice_app)
        .await;
    assert_eq!(
        session.assurance_level,
        v1::AssuranceLevel::SecondFactor as i32
    );
    assert!(matches!(
        w.first_step(sso_login("bob@example.com", &org)).await,
        authenticate_response::Result::EnrollmentRequired(_)
    ));

    // Bad SSO logins: each refused with the field or the reason.
    let err = w.auth.authenticate(sso_login("", "")).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(violated_fields(&err), ["sso.email", "organization_id"]);
    // An unknown email gets the same answer as a non-member.
    assert_refused(
        w.auth
            .authenticate(sso_login("nobody@example.com", &org))
            .await,
        Code::PermissionDenied,
        "NOT_A_MEMBER",
    );
    let err = w
        .auth
        .authenticate(sso_login("alice@example.com", "not-a-uuid"))
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&err), ["organization_id"]);
    let mut long_idp = sso_login("alice@example.com", &org);
    if let Some(v1::authenticate_request::Credentials::Sso(c)) = &mut long_idp.credentials {
        c.identity_provider = "x".repeat(201);
    }
    let err = w.auth.authenticate(long_idp).await.unwrap_err();
    assert_eq!(violated_fields(&err), ["sso.identity_provider"]);
    assert_refused(
        w.auth
            .authenticate(sso_login("carol@example.com", &org))
            .await,
        Code::PermissionDenied,
        "NOT_A_MEMBER",
    );
    w.server.stop().await.unwrap();
}

/// Only a caller with the `sso` scope may vouch for an SSO login.
async fn sso_logins_need_the_sso_scope(backend: Backend) {
    const FRONT: &str = "login-front-end-key-0123456789abcdef012345";
    const BRIDGE: &str = "sso-bridge-key-0123456789abcdef0123456789ab";
    let mut config = test_config();
    config.api_keys = vec![
        ApiKeyConfig {
            name: "front".into(),
            sha256: server::auth::hash_api_key(FRONT),
            scopes: vec!["authentication".into()],
        },
        ApiKeyConfig {
            name: "bridge".into(),
            sha256: server::auth::hash_api_key(BRIDGE),
            scopes: vec!["authentication".into(), "sso".into()],
        },
    ];
    let server = TestServer::start_with(backend, config).await;
    let storage = &server.app.storage;
    let user = storage
        .users()
        .create("alice@example.com", None, T0)
        .await
        .unwrap();
    let org = storage
        .organizations()
        .create_with_owner(
            "Acme",
            user.id,
            T0,
            storage::repo::AuditOf::by_caller("organization.created"),
        )
        .await
        .unwrap();
    storage
        .organizations()
        .update_policy(
            org.id,
            storage::repo::PolicyUpdate {
                mfa_required: false,
                allowed_methods: 0b111,
                sso_enabled: true,
                sso_mode: storage::entity::enums::SsoMode::Exempt,
                trusted_device_days: 0,
            },
            T0,
        )
        .await
        .unwrap();
    let with_key = |key: &'static str| {
        move |mut request: tonic::Request<()>| {
            request
                .metadata_mut()
                .insert("x-api-key", MetadataValue::from_static(key));
            Ok(request)
        }
    };
    let channel = server.channel().await;
    let mut front = AuthenticationServiceClient::with_interceptor(channel.clone(), with_key(FRONT));
    let sessions_before = storage::entity::session::Entity::find()
        .all(storage.db())
        .await
        .unwrap();
    assert_refused(
        front
            .authenticate(sso_login("alice@example.com", &org.id.to_string()))
            .await,
        Code::PermissionDenied,
        "MISSING_SCOPE",
    );
    assert_eq!(
        storage::entity::session::Entity::find()
            .all(storage.db())
            .await
            .unwrap(),
        sessions_before
    );
    let mut bridge = AuthenticationServiceClient::with_interceptor(channel, with_key(BRIDGE));
    let answer = bridge
        .authenticate(sso_login("alice@example.com", &org.id.to_string()))
        .await
        .unwrap()
        .into_inner();
    assert!(matches!(
        answer.result,
        Some(authenticate_response::Result::Authenticated(_))
    ));
    server.stop().await.unwrap();
}

async fn journey_3_an_admin_without_a_password_sets_one_first(backend: Backend) {
    let mut w = World::new(backend).await;
    let owner = w.user("owner@example.com", true).await;
    let sam = w.user("sam@example.com", false).await;
    let org = w.org("Acme", &owner).await;
    w.add(&org, &sam, v1::Role::Admin).await;
    let owner_session = w.session("owner@example.com", &org).await;
    w.update(
        &owner_session.token,
        &org,
        policy(false, true, v1::SsoMode::Enforce),
        &["sso_enabled", "sso_mode"],
        PASSWORD,
    )
    .await
    .unwrap();
    // Sam has no password: SSO is how he logs in.
    let sam_session = match w.first_step(sso_login("sam@example.com", &org)).await {
        authenticate_response::Result::Authenticated(s) => s,
        other => panic!("expected a session, got {other:?}"),
    };
    let before = w.snapshot().await;
    let err = w
        .update(
            &sam_session.token,
            &org,
            policy(true, true, v1::SsoMode::Enforce),
            &["mfa_required"],
            "",
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(reason(&err).as_deref(), Some("PASSWORD_NOT_SET"));
    assert!(
        err.message().contains("set a password"),
        "{}",
        err.message()
    );
    assert_eq!(w.snapshot().await, before);
    // He sets one, then confirms with it.
    w.server
        .users()
        .await
        .set_password(bearer(
            v1::SetPasswordRequest {
                user_id: sam.clone(),
                new_password: PASSWORD.into(),
                current_password: String::new(),
            },
            &sam_session.token,
        ))
        .await
        .unwrap();
    let changed = w
        .update(
            &sam_session.token,
            &org,
            policy(true, true, v1::SsoMode::Enforce),
            &["mfa_required"],
            PASSWORD,
        )
        .await
        .unwrap();
    assert!(
        changed
            .organization
            .unwrap()
            .mfa_policy
            .unwrap()
            .mfa_required
    );
    // His own single-factor session went with everyone else's.
    assert!(!w.session_is_valid(&sam_session.token).await);
    w.server.stop().await.unwrap();
}

async fn journey_10_an_admin_resets_a_member_after_a_lost_phone(backend: Backend) {
    let mut w = World::new(backend).await;
    let owner = w.user("owner@example.com", true).await;
    let dave = w.user("dave@example.com", true).await;
    let alice = w.user("alice@example.com", true).await;
    let bob = w.user("bob@example.com", true).await;
    let org = w.org("Acme", &owner).await;
    w.add(&org, &dave, v1::Role::Admin).await;
    w.add(&org, &alice, v1::Role::Member).await;
    w.add(&org, &bob, v1::Role::Member).await;
    let (_, owner_session) = w.with_app("owner@example.com", &org).await;
    let dave_first = w.session("dave@example.com", &org).await;
    let (dave_app, _) = w.enroll_app(&dave_first.token).await;
    let dave_session = w.session_2fa("dave@example.com", &org, &dave_app).await;
    let (_, alice_session) = w.with_app("alice@example.com", &org).await;

    // The member list shows who has 2FA, with which methods and when it was last used.
    let members = w.members(&org).await;
    let row = |id: &str| members.iter().find(|m| m.user_id == id).unwrap().clone();
    let alice_row = row(&alice);
    assert!(alice_row.mfa_enrolled);
    assert_eq!(alice_row.mfa_methods, [v1::FactorKind::Totp as i32]);
    assert!(alice_row.mfa_last_used_time.is_some());
    assert_eq!(alice_row.role, v1::Role::Member as i32);
    let bob_row = row(&bob);
    assert!(!bob_row.mfa_enrolled && bob_row.mfa_methods.is_empty());
    assert_eq!(row(&dave).role, v1::Role::Admin as i32);

    // What an admin may not do, each refused with its reason and nothing changed.
    let before = w.snapshot().await;
    let t = dave_session.token.clone();
    assert_refused(
        w.reset(&t, &org, &owner).await,
        Code::PermissionDenied,
        "CANNOT_RESET_OWNER",
    );
    assert_refused(
        w.reset(&t, &org, &dave).await,
        Code::FailedPrecondition,
        "CANNOT_RESET_SELF",
    );
    assert_refused(
        w.reset(&t, &org, &bob).await,
        Code::FailedPrecondition,
        "NO_FACTOR",
    );
    let stranger = w.user("stranger@example.com", true).await;
    let err = w.reset(&t, &org, &stranger).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    // Dave's first session was established before he had 2FA: he must step up first.
    assert_refused(
        w.reset(&dave_first.token, &org, &alice).await,
        Code::FailedPrecondition,
        "STEP_UP_REQUIRED",
    );
    let mut after = w.snapshot().await;
    // Only the stranger's account (and its creation event) is new.
    after.users.retain(|u| u.id.to_string() != stranger);
    after
        .audit
        .retain(|e| e.subject_id.map(|id| id.to_string()) != Some(stranger.clone()));
    assert_eq!(after, before);

    // The reset: factors and recovery codes gone, every session of Alice revoked.
    let done = w.reset(&t, &org, &alice).await.unwrap();
    assert_eq!(done.factors_removed, 1);
    assert_eq!(
        done.sessions_revoked, 2,
        "her first session and her 2FA one"
    );
    assert!(!w.session_is_valid(&alice_session.token).await);
    let storage = &w.server.app.storage;
    let alice_id: storage::Uuid = alice.parse().unwrap();
    assert!(
        storage
            .factors()
            .of_user(alice_id, false)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        storage.recovery_codes().remaining(alice_id).await.unwrap(),
        0
    );
    assert!(!row_of(&w.members(&org).await, &alice).mfa_enrolled);
    // She enrolls again at her next login (the organization does not even require 2FA).
    let enrollment = match w
        .first_step(password_login("alice@example.com", &org))
        .await
    {
        authenticate_response::Result::EnrollmentRequired(e) => e,
        other => panic!("expected enrollment, got {other:?}"),
    };
    let (_, session) = w.enroll_app(&enrollment.enrollment_token).await;
    assert!(session.is_some());
    assert!(row_of(&w.members(&org).await, &alice).mfa_enrolled);

    // The owner may reset an admin.
    w.reset(&owner_session.token, &org, &dave).await.unwrap();
    assert!(!w.session_is_valid(&dave_session.token).await);

    let resets = w
        .events(&owner_session.token, &org, "member.mfa_reset")
        .await;
    assert_eq!(resets.len(), 2);
    assert_eq!(
        (
            resets[1].actor_user_id.as_str(),
            resets[1].subject_user_id.as_str()
        ),
        (dave.as_str(), alice.as_str())
    );
    assert!(resets[1].details.contains(r#""factors_removed":1"#));
    w.server.stop().await.unwrap();
}

/// A request with the session `token`, if any.
fn with<T>(body: T, token: &Option<String>) -> tonic::Request<T> {
    match token {
        Some(t) => bearer(body, t),
        None => tonic::Request::new(body),
    }
}

fn row_of(members: &[v1::Member], id: &str) -> v1::Member {
    members.iter().find(|m| m.user_id == id).unwrap().clone()
}

async fn the_audit_log_lists_filters_and_pages(backend: Backend) {
    let mut w = World::new(backend).await;
    let owner = w.user("owner@example.com", true).await;
    let alice = w.user("alice@example.com", true).await;
    let other_owner = w.user("other@example.com", true).await;
    let org = w.org("Acme", &owner).await;
    let other = w.org("Other", &other_owner).await;
    w.add(&org, &alice, v1::Role::Member).await;
    let (_, owner_session) = w.with_app("owner@example.com", &org).await;
    let (alice_app, _) = w.with_app("alice@example.com", &org).await;
    let other_session = w.session("other@example.com", &other).await;
    let t = owner_session.token.clone();
    let start = i64::try_from(w.now()).unwrap();
    w.clock.advance(60);

    // Alice uses a recovery code, then gets locked out by wrong passwords.
    let alice_session = w.session_2fa("alice@example.com", &org, &alice_app).await;
    let codes = w
        .enrollment
        .regenerate_recovery_codes(bearer(
            v1::RegenerateRecoveryCodesRequest {
                proof: alice_app.generate(w.now()).unwrap().to_string(),
                webauthn_response_json: String::new(),
            },
            &alice_session.token,
        ))
        .await
        .unwrap()
        .into_inner()
        .recovery_codes;
    w.clock.advance(30);
    let challenge = match w
        .first_step(password_login("alice@example.com", &org))
        .await
    {
        authenticate_response::Result::SecondFactorRequired(c) => c.challenge_token,
        other => panic!("{other:?}"),
    };
    w.auth
        .verify_second_factor(v1::VerifySecondFactorRequest {
            challenge_token: challenge,
            code: codes[0].clone(),
            webauthn_response_json: String::new(),
            client_context: None,
            remember_device: false,
        })
        .await
        .unwrap();
    for _ in 0..50 {
        let mut wrong = password_login("alice@example.com", &org);
        if let Some(v1::authenticate_request::Credentials::Password(p)) = &mut wrong.credentials {
            p.password = "wrong password, wrong".into();
        }
        if w.auth.authenticate(wrong).await.unwrap_err().code() == Code::ResourceExhausted {
            break;
        }
    }
    w.clock.advance(60);
    let end = i64::try_from(w.now()).unwrap();
    w.clock.advance(600);
    w.update(
        &t,
        &org,
        policy(true, false, v1::SsoMode::Enforce),
        &[],
        PASSWORD,
    )
    .await
    .unwrap();

    // Every kind of event the issue names is there; the other organization's are not.
    let all = w
        .audit(
            &t,
            v1::ListAuditEventsRequest {
                organization_id: org.clone(),
                page_size: 500,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(all.next_page_token.is_empty());
    let kinds: Vec<&str> = all.events.iter().map(|e| e.kind.as_str()).collect();
    for kind in [
        "organization.created",
        "member.added",
        "factor.enrolled",
        "recovery_codes.regenerated",
        "recovery_code.used",
        "user.locked_out",
        "login.succeeded",
        "mfa_policy.updated",
    ] {
        assert!(kinds.contains(&kind), "{kind} missing from {kinds:?}");
    }
    assert!(
        all.events
            .iter()
            .all(|e| e.organization_id == org || e.organization_id.is_empty())
    );
    assert!(all.events.windows(2).all(|p| p[0].sequence > p[1].sequence));
    let lockout = all
        .events
        .iter()
        .find(|e| e.kind == "user.locked_out")
        .unwrap();
    assert_eq!(lockout.subject_user_id, alice);
    // No password or code reaches the audit log.
    let snapshot = w.snapshot().await;
    assert!(
        snapshot
            .audit
            .iter()
            .all(|e| !e.details.contains("wrong password")
                && !e.details.contains(PASSWORD)
                && !codes.iter().any(|c| e.details.contains(c.as_str())))
    );

    // Pages of 3: the same events, in order, none twice.
    let mut paged = Vec::new();
    let mut token = String::new();
    loop {
        let page = w
            .audit(
                &t,
                v1::ListAuditEventsRequest {
                    organization_id: org.clone(),
                    page_size: 3,
                    page_token: token.clone(),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert!(page.events.len() <= 3);
        paged.extend(page.events);
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(paged, all.events);

    // Filters: actor, subject, kind, time.
    let by_alice = w
        .audit(
            &t,
            v1::ListAuditEventsRequest {
                organization_id: org.clone(),
                actor_user_id: alice.clone(),
                page_size: 500,
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .events;
    assert!(!by_alice.is_empty() && by_alice.iter().all(|e| e.actor_user_id == alice));
    let about_alice = w
        .audit(
            &t,
            v1::ListAuditEventsRequest {
                organization_id: org.clone(),
                subject_user_id: alice.clone(),
                kinds: vec!["user.locked_out".into(), "recovery_code.used".into()],
                page_size: 500,
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .events;
    assert_eq!(about_alice.len(), 2, "{about_alice:?}");
    let window = w
        .audit(
            &t,
            v1::ListAuditEventsRequest {
                organization_id: org.clone(),
                start_time: Some(prost_types::Timestamp {
                    seconds: start,
                    nanos: 0,
                }),
                end_time: Some(prost_types::Timestamp {
                    seconds: end,
                    nanos: 0,
                }),
                page_size: 500,
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .events;
    assert!(!window.is_empty());
    assert!(window.iter().all(|e| {
        let at = e.occur_time.unwrap().seconds;
        (start..end).contains(&at)
    }));
    assert!(!window.iter().any(|e| e.kind == "mfa_policy.updated"));

    // Bad filters name their fields; a page token of another organization's list is refused.
    let err = w
        .audit(
            &t,
            v1::ListAuditEventsRequest {
                organization_id: org.clone(),
                actor_user_id: "not-a-uuid".into(),
                kinds: vec!["DROP TABLE".into()],
                start_time: Some(prost_types::Timestamp {
                    seconds: end,
                    nanos: 0,
                }),
                end_time: Some(prost_types::Timestamp {
                    seconds: start,
                    nanos: 0,
                }),
                page_size: 501,
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let mut fields = violated_fields(&err);
    fields.sort();
    assert_eq!(fields, ["actor_user_id", "end_time", "kinds", "page_size"]);
    let other_token = w
        .audit(
            &other_session.token,
            v1::ListAuditEventsRequest {
                organization_id: other.clone(),
                page_size: 1,
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .next_page_token;
    assert!(!other_token.is_empty());
    let err = w
        .audit(
            &t,
            v1::ListAuditEventsRequest {
                organization_id: org.clone(),
                page_token: other_token,
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&err), ["page_token"]);
    w.server.stop().await.unwrap();
}

async fn bad_policy_updates_name_the_field_and_change_nothing(backend: Backend) {
    let mut w = World::new(backend).await;
    let owner = w.user("owner@example.com", true).await;
    let org = w.org("Acme", &owner).await;
    let session = w.session("owner@example.com", &org).await;
    let t = session.token.clone();
    let before = w.snapshot().await;
    let cases: Vec<(v1::UpdateMfaPolicyRequest, &str)> = vec![
        (
            v1::UpdateMfaPolicyRequest {
                organization_id: org.clone(),
                policy: None,
                update_mask: None,
                password: PASSWORD.into(),
                client_context: None,
            },
            "policy",
        ),
        (
            v1::UpdateMfaPolicyRequest {
                organization_id: org.clone(),
                policy: Some(policy(true, false, v1::SsoMode::Enforce)),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["mfa_required_time".into()],
                }),
                password: PASSWORD.into(),
                client_context: None,
            },
            "update_mask",
        ),
        (
            v1::UpdateMfaPolicyRequest {
                organization_id: org.clone(),
                policy: Some(v1::MfaPolicy {
                    allowed_methods: vec![v1::FactorKind::Unspecified as i32],
                    ..policy(true, false, v1::SsoMode::Enforce)
                }),
                update_mask: None,
                password: PASSWORD.into(),
                client_context: None,
            },
            "policy.allowed_methods",
        ),
        // No methods at all: named in the mask (without one, an empty list is not set).
        (
            v1::UpdateMfaPolicyRequest {
                organization_id: org.clone(),
                policy: Some(v1::MfaPolicy {
                    allowed_methods: vec![],
                    ..policy(true, false, v1::SsoMode::Enforce)
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["allowed_methods".into()],
                }),
                password: PASSWORD.into(),
                client_context: None,
            },
            "policy.allowed_methods",
        ),
        // SSO on needs a mode.
        (
            v1::UpdateMfaPolicyRequest {
                organization_id: org.clone(),
                policy: Some(policy(false, true, v1::SsoMode::Unspecified)),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["sso_enabled".into(), "sso_mode".into()],
                }),
                password: PASSWORD.into(),
                client_context: None,
            },
            "policy.sso_mode",
        ),
        // No mask and no field set: nothing to do.
        (
            v1::UpdateMfaPolicyRequest {
                organization_id: org.clone(),
                policy: Some(v1::MfaPolicy::default()),
                update_mask: None,
                password: PASSWORD.into(),
                client_context: None,
            },
            "update_mask",
        ),
    ];
    for (request, field) in cases {
        let err = w
            .orgs
            .update_mfa_policy(bearer(request, &t))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{field}: {err:?}");
        assert_eq!(violated_fields(&err), [field]);
    }
    let err = w
        .update(
            &t,
            &org,
            policy(true, false, v1::SsoMode::Enforce),
            &[],
            &"x".repeat(257),
        )
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&err), ["password"]);
    let err = w.reset(&t, "nope", "").await.unwrap_err();
    let mut fields = violated_fields(&err);
    fields.sort();
    assert_eq!(fields, ["organization_id", "user_id"]);
    for token in ["%%%", "AAAA", ""] {
        let result = w
            .audit(
                &t,
                v1::ListAuditEventsRequest {
                    organization_id: org.clone(),
                    page_token: token.into(),
                    start_time: Some(prost_types::Timestamp {
                        seconds: 5,
                        nanos: if token.is_empty() { -1 } else { 0 },
                    }),
                    ..Default::default()
                },
            )
            .await;
        let err = result.unwrap_err();
        let expected = if token.is_empty() {
            "start_time"
        } else {
            "page_token"
        };
        assert_eq!(violated_fields(&err), [expected], "{token:?}");
    }
    // A window within one second is a valid window.
    w.audit(
        &t,
        v1::ListAuditEventsRequest {
            organization_id: org.clone(),
            start_time: Some(prost_types::Timestamp {
                seconds: 5,
                nanos: 100,
            }),
            end_time: Some(prost_types::Timestamp {
                seconds: 5,
                nanos: 900,
            }),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let err = w
        .update(
            &t,
            "nope",
            policy(true, false, v1::SsoMode::Enforce),
            &[],
            PASSWORD,
        )
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&err), ["organization_id"]);
    let err = w
        .update(
            &t,
            &storage::Uuid::now_v7().to_string(),
            policy(true, false, v1::SsoMode::Enforce),
            &[],
            PASSWORD,
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert_eq!(w.snapshot().await, before);
    w.server.stop().await.unwrap();
}

/// Every administrative RPC, called by a plain member, by an admin of another organization,
/// without a session, with an expired session and with a revoked one: refused, and the
/// database and the audit log are exactly as before.
async fn admin_rpcs_refuse_everyone_else_and_change_nothing(backend: Backend) {
    let mut w = World::new(backend).await;
    let owner = w.user("owner@example.com", true).await;
    let member = w.user("member@example.com", true).await;
    let other_admin = w.user("other-admin@example.com", true).await;
    let org = w.org("Acme", &owner).await;
    let other = w.org("Other", &other_admin).await;
    w.add(&org, &member, v1::Role::Member).await;
    let (_, member_session) = w.with_app("member@example.com", &org).await;
    // An admin with 2FA whose session was established before he had it.
    let dave = w.user("dave@example.com", true).await;
    w.add(&org, &dave, v1::Role::Admin).await;
    let dave_first = w.session("dave@example.com", &org).await;
    w.enroll_app(&dave_first.token).await;
    let (_, other_session) = w.with_app("other-admin@example.com", &other).await;
    let revoked = w.session("owner@example.com", &org).await;
    w.server
        .sessions()
        .await
        .revoke_session(v1::RevokeSessionRequest {
            token: revoked.token.clone(),
        })
        .await
        .unwrap();
    // A session of the owner that expires while the others stay valid.
    let owner_id: storage::Uuid = owner.parse().unwrap();
    let org_id: storage::Uuid = org.parse().unwrap();
    w.server
        .app
        .storage
        .sessions()
        .create(
            "short-lived-owner-session",
            NewSession {
                user_id: owner_id,
                org_id: Some(org_id),
                assurance: 2,
                now: i64::try_from(w.now()).unwrap(),
                idle_ttl: 5,
                absolute_ttl: 5,
                client: Default::default(),
                trusted_device_id: None,
            },
        )
        .await
        .unwrap();
    w.clock.advance(10);
    assert!(!w.session_is_valid("short-lived-owner-session").await);
    assert!(w.session_is_valid(&member_session.token).await);

    let callers: [(&str, Option<String>, Code, &str); 6] = [
        (
            "admin who must step up",
            Some(dave_first.token.clone()),
            Code::FailedPrecondition,
            "STEP_UP_REQUIRED",
        ),
        (
            "plain member",
            Some(member_session.token.clone()),
            Code::PermissionDenied,
            "NOT_AN_ADMIN",
        ),
        (
            "admin of another organization",
            Some(other_session.token.clone()),
            Code::PermissionDenied,
            "SESSION_OF_ANOTHER_ORGANIZATION",
        ),
        (
            "no session",
            None,
            Code::Unauthenticated,
            "USER_TOKEN_MISSING",
        ),
        (
            "expired session",
            Some("short-lived-owner-session".to_owned()),
            Code::Unauthenticated,
            "SESSION_INVALID",
        ),
        (
            "revoked session",
            Some(revoked.token.clone()),
            Code::Unauthenticated,
            "SESSION_INVALID",
        ),
    ];
    for (who, token, code, why) in callers {
        let before = w.snapshot().await;
        let update = w
            .orgs
            .update_mfa_policy(with(
                v1::UpdateMfaPolicyRequest {
                    organization_id: org.clone(),
                    policy: Some(policy(true, false, v1::SsoMode::Enforce)),
                    update_mask: None,
                    password: PASSWORD.into(),
                    client_context: None,
                },
                &token,
            ))
            .await;
        let reset = w
            .orgs
            .reset_member_mfa(with(
                v1::ResetMemberMfaRequest {
                    organization_id: org.clone(),
                    user_id: member.clone(),
                    client_context: None,
                },
                &token,
            ))
            .await;
        let audit = w
            .orgs
            .list_audit_events(with(
                v1::ListAuditEventsRequest {
                    organization_id: org.clone(),
                    ..Default::default()
                },
                &token,
            ))
            .await;
        for (rpc, err) in [
            ("UpdateMfaPolicy", update.map(|_| ()).unwrap_err()),
            ("ResetMemberMfa", reset.map(|_| ()).unwrap_err()),
            ("ListAuditEvents", audit.map(|_| ()).unwrap_err()),
        ] {
            assert_eq!(err.code(), code, "{who}, {rpc}: {err:?}");
            assert_eq!(reason(&err).as_deref(), Some(why), "{who}, {rpc}");
        }
        assert_eq!(w.snapshot().await, before, "{who} changed something");
    }
    // The member's own reset target: a plain member cannot reset the owner either.
    assert_refused(
        w.reset(&member_session.token, &org, &owner).await,
        Code::PermissionDenied,
        "NOT_AN_ADMIN",
    );
    w.server.stop().await.unwrap();
}

/// An organization's only owner who lost the phone and the recovery codes: nobody in the
/// product can reset them (an owner cannot reset themselves, and no admin may reset an
/// owner), so an operator runs `tollgate reset-mfa`: the factors, codes and sessions go in
/// one transaction, audited with the operator's name, and the owner enrolls again at the
/// next login.
async fn an_operator_resets_the_sole_owner(backend: Backend) {
    let mut w = World::new(backend).await;
    let owner = w.user("owner@example.com", true).await;
    let org = w.org("Solo", &owner).await;
    let (_, session) = w.with_app("owner@example.com", &org).await;
    assert_refused(
        w.reset(&session.token, &org, &owner).await,
        Code::FailedPrecondition,
        "CANNOT_RESET_SELF",
    );

    let now = server::Clock::now(w.clock.as_ref());
    let storage = &w.server.app.storage;
    let reset = server::operator::reset_mfa(storage, "Owner@Example.com", "ops ticket 42", now)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(reset.user_id.to_string(), owner);
    assert_eq!(reset.outcome.factors_removed, 1);
    assert_eq!(reset.outcome.recovery_codes_removed, 10);
    assert!(reset.outcome.sessions_revoked >= 1);
    let user = reset.user_id;
    assert!(
        storage
            .factors()
            .of_user(user, false)
            .await
            .unwrap()
            .is_empty()
    );
    let validated = w
        .server
        .sessions()
        .await
        .validate_session(v1::ValidateSessionRequest {
            token: session.token.clone(),
        })
        .await;
    assert_eq!(validated.unwrap_err().code(), Code::Unauthenticated);
    let filter = storage::repo::AuditFilter {
        subject_id: Some(user),
        kinds: vec!["mfa.reset".to_owned()],
        ..Default::default()
    };
    let events = storage.audit().list(&filter, None, 10).await.unwrap().items;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].actor_id, None);
    let details: serde_json::Value = serde_json::from_str(&events[0].details).unwrap();
    assert_eq!(details["by"], "operator");
    assert_eq!(details["operator"], "ops ticket 42");
    assert_eq!(details["factors_removed"], 1);

    // The next login asks for a new factor, not a code from the lost phone.
    let answer = w
        .server
        .first_step(password_login("owner@example.com", &org))
        .await;
    assert!(
        matches!(answer, authenticate_response::Result::EnrollmentRequired(_)),
        "{answer:?}"
    );
    // An unknown email changes nothing.
    let none = server::operator::reset_mfa(storage, "nobody@example.com", "ops", now)
        .await
        .unwrap();
    assert!(none.is_none());
    w.server.stop().await.unwrap();
}

both!(
    an_operator_resets_the_sole_owner,
    journey_1_admin_turns_on_mandatory_2fa,
    journey_2_sso_logins_exempt_or_enforced,
    sso_logins_need_the_sso_scope,
    journey_3_an_admin_without_a_password_sets_one_first,
    journey_10_an_admin_resets_a_member_after_a_lost_phone,
    the_audit_log_lists_filters_and_pages,
    bad_policy_updates_name_the_field_and_change_nothing,
    admin_rpcs_refuse_everyone_else_and_change_nothing,
);
