//! Managing factors end to end: counter-based tokens, changing method, turning 2FA off, the
//! own reset, regenerating recovery codes, step-up. Codes come from the URI the server
//! returned, computed with the test's clock. On SQLite and PostgreSQL.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code: a panic is a failed test"
)]

use std::sync::Arc;

use otp_core::{Hotp, HotpParams, OtpAuthUri, Totp, TotpParams};
use storage::repo::PolicyUpdate;
use tollgate_e2e::{Backend, ManualClock, TestServer, bearer, both, reason, violated_fields};
use tollgate_proto::v1::enrollment_service_client::EnrollmentServiceClient;
use tollgate_proto::v1::{self, authenticate_response, verify_second_factor_response};
use tonic::Code;
use tonic::transport::Channel;

const PASSWORD: &str = "correct horse battery staple";
const T0: i64 = 1_800_000_000;

fn login(email: &str) -> v1::AuthenticateRequest {
    tollgate_e2e::password_login(email, PASSWORD, "")
}

struct World {
    server: TestServer,
    clock: Arc<ManualClock>,
    enrollment: EnrollmentServiceClient<Channel>,
}

impl World {
    async fn new(backend: Backend) -> Self {
        let clock = Arc::new(ManualClock::new(T0));
        let server = TestServer::start_with_clock(backend, Arc::clone(&clock)).await;
        let enrollment = EnrollmentServiceClient::new(server.channel().await);
        Self {
            server,
            clock,
            enrollment,
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(server::Clock::now(&*self.clock)).unwrap()
    }

    async fn user(&self, email: &str) -> String {
        self.server.create_user(email, PASSWORD).await;
        match self.server.first_step(login(email)).await {
            authenticate_response::Result::Authenticated(s) => s.token,
            other => panic!("{other:?}"),
        }
    }

    /// Enrolls an app; returns it, its factor id and the recovery codes (first factor only).
    async fn enroll_app(&mut self, token: &str) -> (Totp, String, Vec<String>) {
        let (app, id) = self.begin_app(token).await;
        let done = self.confirm_app(token, &app, &id, "").await.unwrap();
        // The next code must come from a later step than the confirming one.
        self.clock.advance(30);
        (app, id, done.recovery_codes)
    }

    /// Raises the session `token` to assurance 2 with the app's code now.
    async fn step_up(&self, token: &str, app: &Totp) {
        self.server
            .authentication()
            .await
            .verify_step_up(bearer(
                v1::VerifyStepUpRequest {
                    code: self.code(app),
                    ..Default::default()
                },
                token,
            ))
            .await
            .unwrap();
    }

    /// Begins a hardware token's enrollment: its `seed` imported, counter at 0.
    async fn begin_hotp(
        &mut self,
        token: &str,
        seed: &otp_core::Secret,
    ) -> v1::BeginHotpEnrollmentResponse {
        self.enrollment
            .begin_hotp_enrollment(bearer(
                v1::BeginHotpEnrollmentRequest {
                    label: "yubikey".into(),
                    secret_base32: seed.to_base32().to_string(),
                    counter: 0,
                    digits: 6,
                },
                token,
            ))
            .await
            .unwrap()
            .into_inner()
    }

    /// Begins an app's enrollment: the app (from the otpauth URI) and the pending factor's id.
    async fn begin_app(&mut self, token: &str) -> (Totp, String) {
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
        (app, begun.factor.unwrap().id)
    }

    /// Confirms the app's pending factor `id` with its code now, replacing `replaces` (empty:
    /// none).
    async fn confirm_app(
        &mut self,
        token: &str,
        app: &Totp,
        id: &str,
        replaces: &str,
    ) -> Result<v1::ConfirmTotpEnrollmentResponse, tonic::Status> {
        self.enrollment
            .confirm_totp_enrollment(bearer(
                v1::ConfirmTotpEnrollmentRequest {
                    factor_id: id.to_owned(),
                    code: self.code(app),
                    replaces_factor_id: replaces.to_owned(),
                    client_context: None,
                },
                token,
            ))
            .await
            .map(tonic::Response::into_inner)
    }

    /// The user's factors as (id, status), and their unused recovery codes.
    async fn factors(&mut self, token: &str) -> (Vec<(String, i32)>, i32) {
        let listed = self
            .enrollment
            .list_factors(bearer(v1::ListFactorsRequest {}, token))
            .await
            .unwrap()
            .into_inner();
        let factors = listed
            .factors
            .into_iter()
            .map(|f| (f.id, f.status))
            .collect();
        (factors, listed.recovery_codes_remaining)
    }

    fn code(&self, app: &Totp) -> String {
        app.generate(self.now()).unwrap().to_string()
    }

    /// Password then `code`: Ok(session) or the refusal.
    async fn login_with(&self, email: &str, code: &str) -> Result<v1::Session, tonic::Status> {
        let mut auth = self.server.authentication().await;
        let Some(authenticate_response::Result::SecondFactorRequired(c)) =
            auth.authenticate(login(email)).await?.into_inner().result
        else {
            panic!("expected a challenge")
        };
        let r = auth
            .verify_second_factor(v1::VerifySecondFactorRequest {
                challenge_token: c.challenge_token,
                code: code.into(),
                webauthn_response_json: String::new(),
                client_context: None,
                remember_device: false,
            })
            .await?
            .into_inner();
        match r.result {
            Some(verify_second_factor_response::Result::Authenticated(s)) => Ok(s),
            other => panic!("{other:?}"),
        }
    }
}

async fn hotp_tokens_enroll_log_in_once_per_counter_and_resync(backend: Backend) {
    let mut w = World::new(backend).await;
    let token = w.user("hotp@example.com").await;
    // A hardware token: its seed imported, counter at 0.
    let seed = otp_core::Secret::generate(otp_core::Algorithm::Sha1).unwrap();
    let device = Hotp::new(seed.clone(), HotpParams::default()).unwrap();
    let begun = w.begin_hotp(&token, &seed).await;
    assert!(
        begun.otpauth_uri.is_empty(),
        "an imported seed is not echoed"
    );
    let id = begun.factor.unwrap().id;
    // The first press (counter 0) confirms it.
    w.enrollment
        .confirm_hotp_enrollment(bearer(
            v1::ConfirmHotpEnrollmentRequest {
                factor_id: id.clone(),
                code: device.generate(0).to_string(),
                ..Default::default()
            },
            &token,
        ))
        .await
        .unwrap();
    // The next press logs in; the same code again is a replay.
    let second = device.generate(1).to_string();
    w.login_with("hotp@example.com", &second).await.unwrap();
    let err = w.login_with("hotp@example.com", &second).await.unwrap_err();
    assert_eq!(reason(&err).as_deref(), Some("CODE_REPLAYED"));
    // Presses that never reached the server: within the look-ahead it still works.
    w.login_with("hotp@example.com", &device.generate(5).to_string())
        .await
        .unwrap();
    // Far ahead: refused, until a resync with two consecutive codes.
    let far = device.generate(60).to_string();
    assert_eq!(
        reason(&w.login_with("hotp@example.com", &far).await.unwrap_err()).as_deref(),
        Some("INVALID_CODE")
    );
    w.enrollment
        .resync_hotp(bearer(
            v1::ResyncHotpRequest {
                factor_id: id,
                first_code: device.generate(61).to_string(),
                second_code: device.generate(62).to_string(),
            },
            &token,
        ))
        .await
        .unwrap();
    w.login_with("hotp@example.com", &device.generate(63).to_string())
        .await
        .unwrap();
    w.server.stop().await.unwrap();
}

async fn journey_8_changing_app_enrolls_the_new_then_removes_the_old(backend: Backend) {
    let mut w = World::new(backend).await;
    let token = w.user("change@example.com").await;
    let (old_app, old_id, codes) = w.enroll_app(&token).await;
    assert_eq!(codes.len(), 10);
    // A password-only session cannot add a second way in: it must step up first.
    let err = w
        .enrollment
        .begin_totp_enrollment(bearer(
            v1::BeginTotpEnrollmentRequest {
                label: "new".into(),
            },
            &token,
        ))
        .await
        .unwrap_err();
    assert_eq!(reason(&err).as_deref(), Some("STEP_UP_REQUIRED"));
    w.step_up(&token, &old_app).await;
    w.clock.advance(30);
    let (new_app, _new_id, more) = w.enroll_app(&token).await;
    assert!(more.is_empty(), "recovery codes only with the first factor");
    // Removing needs proof; a wrong proof changes nothing.
    let err = w
        .enrollment
        .remove_factor(bearer(
            v1::RemoveFactorRequest {
                factor_id: old_id.clone(),
                proof: "000000".into(),
                webauthn_response_json: String::new(),
            },
            &token,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    let proof = w.code(&new_app);
    let removed = w
        .enrollment
        .remove_factor(bearer(
            v1::RemoveFactorRequest {
                factor_id: old_id,
                proof,
                webauthn_response_json: String::new(),
            },
            &token,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(!removed.recovery_codes_removed);
    w.clock.advance(30);
    // The old app no longer logs in; the new one does.
    assert!(
        w.login_with("change@example.com", &w.code(&old_app))
            .await
            .is_err()
    );
    w.clock.advance(30);
    w.login_with("change@example.com", &w.code(&new_app))
        .await
        .unwrap();
    w.server.stop().await.unwrap();
}

/// Journey 8 in one call: the new app's confirmation names the old factor, which goes in the
/// same transaction (no moment with neither, no old one left behind). A replacement that is
/// malformed, the new factor itself, unknown or someone else's changes nothing.
async fn journey_8_a_new_app_replaces_the_old_in_its_confirmation(backend: Backend) {
    let mut w = World::new(backend).await;
    let token = w.user("replace@example.com").await;
    let (old_app, old_id, codes) = w.enroll_app(&token).await;
    let other = w.user("other@example.com").await;
    let (_, others_id, _) = w.enroll_app(&other).await;
    w.step_up(&token, &old_app).await;
    w.clock.advance(30);
    let (new_app, new_id) = w.begin_app(&token).await;
    let active = v1::FactorStatus::Active as i32;
    let pending = v1::FactorStatus::Pending as i32;
    let unknown = storage::Uuid::now_v7().to_string();
    for (replaces, code) in [
        ("not a factor id", Code::InvalidArgument),
        (new_id.as_str(), Code::InvalidArgument),
        (unknown.as_str(), Code::NotFound),
        (others_id.as_str(), Code::NotFound),
    ] {
        let err = w
            .confirm_app(&token, &new_app, &new_id, replaces)
            .await
            .unwrap_err();
        assert_eq!(err.code(), code, "{replaces}: {err:?}");
        if code == Code::InvalidArgument {
            assert_eq!(violated_fields(&err), ["replaces_factor_id"], "{replaces}");
        }
        let (factors, left) = w.factors(&token).await;
        assert_eq!(
            factors,
            [(old_id.clone(), active), (new_id.clone(), pending)],
            "{replaces}: nothing changed"
        );
        assert_eq!(left, 10);
    }
    let done = w
        .confirm_app(&token, &new_app, &new_id, &old_id)
        .await
        .unwrap();
    let factor = done.factor.unwrap();
    assert_eq!(
        (factor.id.as_str(), factor.status),
        (new_id.as_str(), active)
    );
    assert!(
        done.recovery_codes.is_empty(),
        "the codes stay as they were"
    );
    let (factors, left) = w.factors(&token).await;
    assert_eq!(factors, [(new_id.clone(), active)], "the old one is gone");
    assert_eq!(left, 10);
    // The other user's factor was never touched.
    let (theirs, _) = w.factors(&other).await;
    assert_eq!(theirs, [(others_id, active)]);
    w.clock.advance(30);
    assert!(
        w.login_with("replace@example.com", &w.code(&old_app))
            .await
            .is_err()
    );
    w.clock.advance(30);
    w.login_with("replace@example.com", &w.code(&new_app))
        .await
        .unwrap();
    w.login_with("replace@example.com", &codes[0])
        .await
        .unwrap();
    // A hardware token replaces the app the same way (the HOTP confirmation).
    let seed = otp_core::Secret::generate(otp_core::Algorithm::Sha1).unwrap();
    let device = Hotp::new(seed.clone(), HotpParams::default()).unwrap();
    let hotp_id = w.begin_hotp(&token, &seed).await.factor.unwrap().id;
    let confirm = |replaces: &str| v1::ConfirmHotpEnrollmentRequest {
        factor_id: hotp_id.clone(),
        code: device.generate(0).to_string(),
        replaces_factor_id: replaces.to_owned(),
        client_context: None,
    };
    let err = w
        .enrollment
        .confirm_hotp_enrollment(bearer(confirm(&hotp_id), &token))
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&err), ["replaces_factor_id"]);
    w.enrollment
        .confirm_hotp_enrollment(bearer(confirm(&new_id), &token))
        .await
        .unwrap();
    let (factors, _) = w.factors(&token).await;
    assert_eq!(factors, [(hotp_id.clone(), active)]);
    w.clock.advance(30);
    assert!(
        w.login_with("replace@example.com", &w.code(&new_app))
            .await
            .is_err()
    );
    w.login_with("replace@example.com", &device.generate(1).to_string())
        .await
        .unwrap();
    w.server.stop().await.unwrap();
}

/// The enrollment token of a login that answers `enrollment_required`.
async fn enrollment_token(w: &World, login: v1::AuthenticateRequest) -> String {
    match w.server.first_step(login).await {
        authenticate_response::Result::EnrollmentRequired(e) => e.enrollment_token,
        other => panic!("expected enrollment: {other:?}"),
    }
}

/// A replacement is asked for with a session and keeps enforcement whole. With an enrollment
/// token (which can add a factor, never take one away) it is refused SESSION_REQUIRED; one
/// that would leave an organization requiring 2FA without a kind it allows is refused
/// LAST_REQUIRED_FACTOR, as RemoveFactor would be; either way nothing changes. An enrollment
/// token issued before the user activated a factor is void. A replacement is audited with
/// the kind of the factor it removed.
async fn journey_8_a_replacement_needs_a_session_and_keeps_enforcement_whole(backend: Backend) {
    let mut w = World::new(backend).await;
    let token = w.user("strict@example.com").await;
    let (app, app_id, _) = w.enroll_app(&token).await;
    let storage = w.server.app.storage.clone();
    let user_id = |email: &'static str| {
        let storage = storage.clone();
        async move {
            storage
                .users()
                .find_by_email(email)
                .await
                .unwrap()
                .unwrap()
                .id
        }
    };
    let owner = user_id("strict@example.com").await;
    let org = storage
        .organizations()
        .create_with_owner(
            "Strict",
            owner,
            T0,
            storage::repo::AuditOf::by_caller("organization.created"),
        )
        .await
        .unwrap();
    let enforce = |allowed_methods: i32| PolicyUpdate {
        mfa_required: true,
        allowed_methods,
        sso_enabled: false,
        sso_mode: storage::entity::enums::SsoMode::Exempt,
        trusted_device_days: 0,
    };
    storage
        .organizations()
        .update_policy(org.id, enforce(0b111), T0)
        .await
        .unwrap();
    w.step_up(&token, &app).await;
    let seed = otp_core::Secret::generate(otp_core::Algorithm::Sha1).unwrap();
    let device = Hotp::new(seed.clone(), HotpParams::default()).unwrap();
    let hotp_id = w.begin_hotp(&token, &seed).await.factor.unwrap().id;
    // The organization narrows its methods to apps while the token is pending.
    storage
        .organizations()
        .update_policy(org.id, enforce(0b001), T0)
        .await
        .unwrap();
    let err = w
        .enrollment
        .confirm_hotp_enrollment(bearer(
            v1::ConfirmHotpEnrollmentRequest {
                factor_id: hotp_id.clone(),
                code: device.generate(0).to_string(),
                replaces_factor_id: app_id.clone(),
                client_context: None,
            },
            &token,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(reason(&err).as_deref(), Some("LAST_REQUIRED_FACTOR"));
    let (active, pending) = (
        v1::FactorStatus::Active as i32,
        v1::FactorStatus::Pending as i32,
    );
    let (factors, _) = w.factors(&token).await;
    assert_eq!(factors, [(app_id, active), (hotp_id, pending)]);

    // A member without a factor gets an enrollment token at each login. Once the first one
    // has enrolled an app, the second is void: it can neither replace that app nor add one.
    w.server.create_user("member@example.com", PASSWORD).await;
    let member = user_id("member@example.com").await;
    storage
        .memberships()
        .add(
            org.id,
            member,
            storage::entity::enums::Role::Member,
            T0,
            storage::repo::AuditOf::by_caller("member.added"),
        )
        .await
        .unwrap();
    let member_login =
        tollgate_e2e::password_login("member@example.com", PASSWORD, &org.id.to_string());
    let (first, second) = (
        enrollment_token(&w, member_login.clone()).await,
        enrollment_token(&w, member_login.clone()).await,
    );
    let (stale_app, stale_id) = w.begin_app(&second).await;
    let (_, member_app_id, _) = w.enroll_app(&first).await;
    for replaces in [member_app_id.as_str(), ""] {
        let err = w
            .confirm_app(&second, &stale_app, &stale_id, replaces)
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated, "{replaces:?}");
    }
    let err = w
        .enrollment
        .list_factors(bearer(v1::ListFactorsRequest {}, &second))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    // A token issued with the factor there (the last recovery code used, the app kept) can
    // enroll, but not replace: that needs a session.
    storage
        .recovery_codes()
        .replace(member, &["LAST-CODE"], T0, &[])
        .await
        .unwrap();
    let challenge = match w.server.first_step(member_login).await {
        authenticate_response::Result::SecondFactorRequired(c) => c.challenge_token,
        other => panic!("expected a challenge: {other:?}"),
    };
    let reenroll = match w
        .server
        .authentication()
        .await
        .verify_second_factor(v1::VerifySecondFactorRequest {
            challenge_token: challenge,
            code: "LAST-CODE".into(),
            webauthn_response_json: String::new(),
            client_context: None,
            remember_device: false,
        })
        .await
        .unwrap()
        .into_inner()
        .result
    {
        Some(verify_second_factor_response::Result::EnrollmentRequired(e)) => e.enrollment_token,
        other => panic!("expected enrollment: {other:?}"),
    };
    let (next_app, next_id) = w.begin_app(&reenroll).await;
    let err = w
        .confirm_app(&reenroll, &next_app, &next_id, &member_app_id)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert_eq!(reason(&err).as_deref(), Some("SESSION_REQUIRED"));
    let stored = storage
        .factors()
        .get(member_app_id.parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.status, storage::entity::enums::FactorStatus::Active);
    w.confirm_app(&reenroll, &next_app, &next_id, "")
        .await
        .unwrap();

    // The owner's allowed replacement (an app by another app) is audited.
    storage
        .organizations()
        .update_policy(org.id, enforce(0b111), T0)
        .await
        .unwrap();
    let (factors, _) = w.factors(&token).await;
    let (new_app, replacing) = w.begin_app(&token).await;
    w.confirm_app(&token, &new_app, &replacing, &factors[0].0)
        .await
        .unwrap();
    let removed = storage::repo::AuditFilter {
        kinds: vec!["factor.removed".to_owned()],
        ..Default::default()
    };
    let events = storage.audit().list(&removed, None, 10).await.unwrap();
    let removed = events
        .items
        .iter()
        .find(|e| e.kind == "factor.removed")
        .expect("a factor.removed event");
    assert_eq!(removed.subject_id, Some(owner));
    assert_eq!(
        removed.details,
        format!(
            r#"{{"factor_id":"{}","kind":"totp","replaced_by":"{replacing}"}}"#,
            factors[0].0
        )
    );
    w.server.stop().await.unwrap();
}

async fn journey_9_turning_2fa_off_and_refused_under_enforcement(backend: Backend) {
    let mut w = World::new(backend).await;
    let token = w.user("off@example.com").await;
    let (_app, id, codes) = w.enroll_app(&token).await;
    // With a recovery code as proof, the last factor goes, and the recovery codes with it.
    let removed = w
        .enrollment
        .remove_factor(bearer(
            v1::RemoveFactorRequest {
                factor_id: id,
                proof: codes[0].clone(),
                webauthn_response_json: String::new(),
            },
            &token,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(removed.recovery_codes_removed);
    let listed = w
        .enrollment
        .list_factors(bearer(v1::ListFactorsRequest {}, &token))
        .await
        .unwrap()
        .into_inner();
    assert!(listed.factors.is_empty());
    assert_eq!(listed.recovery_codes_remaining, 0);

    // Under enforcement the last factor stays.
    let owner = w
        .server
        .app
        .storage
        .users()
        .find_by_email("off@example.com")
        .await
        .unwrap()
        .unwrap();
    let org = w
        .server
        .app
        .storage
        .organizations()
        .create_with_owner(
            "Strict",
            owner.id,
            T0,
            storage::repo::AuditOf::by_caller("organization.created"),
        )
        .await
        .unwrap();
    let (app, id, _) = w.enroll_app(&token).await;
    w.server
        .app
        .storage
        .organizations()
        .update_policy(
            org.id,
            PolicyUpdate {
                mfa_required: true,
                allowed_methods: 0b111,
                sso_enabled: false,
                sso_mode: storage::entity::enums::SsoMode::Exempt,
                trusted_device_days: 0,
            },
            T0,
        )
        .await
        .unwrap();
    let err = w
        .enrollment
        .remove_factor(bearer(
            v1::RemoveFactorRequest {
                factor_id: id,
                proof: w.code(&app),
                webauthn_response_json: String::new(),
            },
            &token,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(reason(&err).as_deref(), Some("LAST_REQUIRED_FACTOR"));
    w.server.stop().await.unwrap();
}

async fn journey_11_own_reset_then_the_new_phone(backend: Backend) {
    let mut w = World::new(backend).await;
    let token = w.user("reset@example.com").await;
    let (old_app, _, _) = w.enroll_app(&token).await;
    let other_session = w
        .login_with("reset@example.com", &w.code(&old_app))
        .await
        .unwrap();
    w.clock.advance(30);
    // Proof with the old device, then everything goes and other sessions are revoked.
    let reset = w
        .enrollment
        .reset_mfa(bearer(
            v1::ResetMfaRequest {
                proof: w.code(&old_app),
                webauthn_response_json: String::new(),
            },
            &token,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reset.factors_removed, 1);
    let mut sessions = w.server.sessions().await;
    assert!(
        sessions
            .validate_session(v1::ValidateSessionRequest {
                token: other_session.token
            })
            .await
            .is_err()
    );
    // A login now must enroll first.
    let r = w
        .server
        .authentication()
        .await
        .authenticate(login("reset@example.com"))
        .await
        .unwrap()
        .into_inner();
    assert!(
        matches!(
            r.result,
            Some(authenticate_response::Result::EnrollmentRequired(_))
        ),
        "{r:?}"
    );
    // This session enrolls the new phone; then logins use it.
    let (new_app, _, codes) = w.enroll_app(&token).await;
    assert_eq!(codes.len(), 10, "a fresh set of recovery codes");
    w.login_with("reset@example.com", &w.code(&new_app))
        .await
        .unwrap();
    w.server.stop().await.unwrap();
}

async fn recovery_codes_regenerate_and_sessions_step_up(backend: Backend) {
    let mut w = World::new(backend).await;
    let token = w.user("codes@example.com").await;
    let (app, _, old_codes) = w.enroll_app(&token).await;
    let fresh = w
        .enrollment
        .regenerate_recovery_codes(bearer(
            v1::RegenerateRecoveryCodesRequest {
                proof: w.code(&app),
                webauthn_response_json: String::new(),
            },
            &token,
        ))
        .await
        .unwrap()
        .into_inner()
        .recovery_codes;
    assert_eq!(fresh.len(), 10);
    assert!(fresh.iter().all(|c| !old_codes.contains(c)));
    // The old set no longer works; the new one does.
    w.clock.advance(30);
    assert!(
        w.login_with("codes@example.com", &old_codes[0])
            .await
            .is_err()
    );
    w.login_with("codes@example.com", &fresh[0]).await.unwrap();

    // Step-up: a level-1 session becomes level 2 with a current code, and one event records
    // it (in the code's own transaction); a wrong code records none.
    let stepped_ups = || async {
        use storage::entity::audit_event::{Column, Entity};
        use storage::sea_orm::QueryFilter as _;
        use storage::sea_orm::{ColumnTrait as _, EntityTrait as _, PaginatorTrait as _};
        Entity::find()
            .filter(Column::Kind.eq("session.stepped_up"))
            .count(w.server.app.storage.db())
            .await
            .unwrap()
    };
    let before = stepped_ups().await;
    let mut auth = w.server.authentication().await;
    let err = auth
        .verify_step_up(bearer(
            v1::VerifyStepUpRequest {
                code: "000000".into(),
                ..Default::default()
            },
            &token,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    // A malformed client context is refused before the code is looked at.
    let bad = auth
        .verify_step_up(bearer(
            v1::VerifyStepUpRequest {
                code: w.code(&app),
                client_context: Some(v1::ClientContext {
                    ip_address: "192.0.2.300".into(),
                    user_agent: String::new(),
                }),
                ..Default::default()
            },
            &token,
        ))
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&bad), ["client_context.ip_address"]);
    w.clock.advance(30);
    let up = auth
        .verify_step_up(bearer(
            v1::VerifyStepUpRequest {
                code: w.code(&app),
                client_context: Some(v1::ClientContext {
                    ip_address: "192.0.2.44".into(),
                    user_agent: "StepUp/2".into(),
                }),
                ..Default::default()
            },
            &token,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(up.assurance_level, v1::AssuranceLevel::SecondFactor as i32);
    assert_eq!(stepped_ups().await, before + 1);
    // Its event keeps where it came from (on PostgreSQL written by the acceptance's one
    // statement, on SQLite in its transaction).
    let event = {
        use storage::entity::audit_event::{Column, Entity};
        use storage::sea_orm::QueryFilter as _;
        use storage::sea_orm::{ColumnTrait as _, EntityTrait as _, QueryOrder as _};
        Entity::find()
            .filter(Column::Kind.eq("session.stepped_up"))
            .order_by_desc(Column::Id)
            .one(w.server.app.storage.db())
            .await
            .unwrap()
            .unwrap()
    };
    assert_eq!(
        (
            event.client_ip.as_deref(),
            event.client_user_agent.as_deref()
        ),
        (Some("192.0.2.44"), Some("StepUp/2"))
    );
    let valid = w
        .server
        .sessions()
        .await
        .validate_session(v1::ValidateSessionRequest { token })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        valid.assurance_level,
        v1::AssuranceLevel::SecondFactor as i32
    );
    w.server.stop().await.unwrap();
}

async fn the_last_recovery_code_means_enrolling_again(backend: Backend) {
    let mut w = World::new(backend).await;
    let token = w.user("lost@example.com").await;
    let (old_app, _, codes) = w.enroll_app(&token).await;
    // The phone is lost: every recovery code but the last, one login each.
    for code in &codes[..9] {
        w.login_with("lost@example.com", code).await.unwrap();
    }
    // The last one passes the second factor, but the login ends in enrollment, not a session.
    let last_code_login = async |w: &World, code: &str| {
        let mut auth = w.server.authentication().await;
        let Some(authenticate_response::Result::SecondFactorRequired(c)) = auth
            .authenticate(login("lost@example.com"))
            .await
            .unwrap()
            .into_inner()
            .result
        else {
            panic!("expected a challenge")
        };
        auth.verify_second_factor(v1::VerifySecondFactorRequest {
            challenge_token: c.challenge_token,
            code: code.to_owned(),
            webauthn_response_json: String::new(),
            client_context: None,
            remember_device: false,
        })
        .await
        .unwrap()
        .into_inner()
    };
    let r = last_code_login(&w, &codes[9]).await;
    let Some(verify_second_factor_response::Result::EnrollmentRequired(_abandoned)) = r.result
    else {
        panic!("expected enrollment: {r:?}")
    };
    assert_eq!(r.recovery_codes_remaining, 0);
    // The user walks away from that enrollment. At the next login the old app (found again,
    // or in someone else's hands) passes the second factor, and still gets no session: the
    // login ends in enrollment again, until 2FA is set up anew.
    w.clock.advance(30);
    let r = last_code_login(&w, &w.code(&old_app)).await;
    let Some(verify_second_factor_response::Result::EnrollmentRequired(required)) = r.result else {
        panic!("expected enrollment, not a session from the old app: {r:?}")
    };
    let (new_app, _, fresh) = w.enroll_app(&required.enrollment_token).await;
    assert_eq!(fresh.len(), 10, "a new set of recovery codes");
    // The new app replaced the factors the user had when the last code went: the lost
    // phone's app is gone.
    let user = w
        .server
        .app
        .storage
        .users()
        .find_by_email("lost@example.com")
        .await
        .unwrap()
        .unwrap();
    assert!(!user.must_reenroll);
    let active = w
        .server
        .app
        .storage
        .factors()
        .of_user(user.id, true)
        .await
        .unwrap();
    assert_eq!(active.len(), 1, "{active:?}");
    w.clock.advance(30);
    let err = w
        .login_with("lost@example.com", &w.code(&old_app))
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Code::Unauthenticated,
        "the old app's codes no longer work"
    );
    // A password alone still gets no further than the second factor.
    let r = w
        .server
        .authentication()
        .await
        .authenticate(login("lost@example.com"))
        .await
        .unwrap()
        .into_inner();
    assert!(
        matches!(
            r.result,
            Some(authenticate_response::Result::SecondFactorRequired(_))
        ),
        "{r:?}"
    );
    w.clock.advance(30);
    w.login_with("lost@example.com", &w.code(&new_app))
        .await
        .unwrap();
    // Every step of this is in the audit log.
    let kinds: Vec<String> =
        <storage::entity::audit_event::Entity as storage::sea_orm::EntityTrait>::find()
            .all(w.server.app.storage.db())
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.kind)
            .collect();
    for kind in [
        "factor.enrollment_begun",
        "factor.enrolled",
        "recovery_codes.issued",
        "recovery_code.used",
        "login.succeeded",
    ] {
        assert!(
            kinds.iter().any(|k| k == kind),
            "{kind} missing from {kinds:?}"
        );
    }
    assert_eq!(
        kinds.iter().filter(|k| *k == "recovery_code.used").count(),
        10
    );
    assert!(
        kinds.iter().any(|k| k == "factor.removed"),
        "the old app's retirement"
    );
    w.server.stop().await.unwrap();
}

/// An enrollment token is ordered against the user's activations by a sequence, not by
/// whole seconds: with the clock standing still, a token issued after an activation works,
/// and one issued before another activation is void.
async fn enrollment_tokens_are_ordered_exactly_within_one_second(backend: Backend) {
    let mut w = World::new(backend).await;
    let session = w.user("same@example.com").await;
    let (app, id) = w.begin_app(&session).await;
    w.confirm_app(&session, &app, &id, "").await.unwrap();
    let user = w
        .server
        .app
        .storage
        .users()
        .find_by_email("same@example.com")
        .await
        .unwrap()
        .unwrap();
    w.server
        .app
        .storage
        .recovery_codes()
        .replace(user.id, &["LAST-CODE"], T0, &[])
        .await
        .unwrap();
    // In the same second as the activation, the last recovery code ends the login in
    // enrollment: its token starts an enrollment.
    let enroll = async |w: &World| {
        let authenticate_response::Result::SecondFactorRequired(c) =
            w.server.first_step(login("same@example.com")).await
        else {
            panic!("a second factor is required")
        };
        let r = w
            .server
            .authentication()
            .await
            .verify_second_factor(v1::VerifySecondFactorRequest {
                challenge_token: c.challenge_token,
                code: "LAST-CODE".into(),
                webauthn_response_json: String::new(),
                client_context: None,
                remember_device: false,
            })
            .await
            .unwrap()
            .into_inner();
        match r.result {
            Some(verify_second_factor_response::Result::EnrollmentRequired(e)) => {
                e.enrollment_token
            }
            other => panic!("expected enrollment: {other:?}"),
        }
    };
    let token = enroll(&w).await;
    let (next_app, next_id) = w.begin_app(&token).await;
    // Still in that second, the user activates another factor through a second such login:
    // the first token, issued before that activation, is void now.
    w.server
        .app
        .storage
        .recovery_codes()
        .replace(user.id, &["LAST-CODE"], T0, &[])
        .await
        .unwrap();
    let second = enroll(&w).await;
    let (other_app, other_id) = w.begin_app(&second).await;
    w.confirm_app(&second, &other_app, &other_id, "")
        .await
        .unwrap();
    let err = w
        .confirm_app(&token, &next_app, &next_id, "")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    w.server.stop().await.unwrap();
}

async fn unconfirmed_enrollments_expire_and_are_cleaned_up(backend: Backend) {
    let mut w = World::new(backend).await;
    let token = w.user("slow@example.com").await;
    let begun = w
        .enrollment
        .begin_totp_enrollment(bearer(
            v1::BeginTotpEnrollmentRequest {
                label: "later".into(),
            },
            &token,
        ))
        .await
        .unwrap()
        .into_inner();
    let expires = begun.factor.as_ref().unwrap().expire_time.unwrap().seconds;
    assert_eq!(expires, T0 + 600, "ten minutes by default");
    let app = OtpAuthUri::parse(&begun.otpauth_uri)
        .unwrap()
        .to_totp(TotpParams::default())
        .unwrap()
        .unwrap();
    w.clock.advance(601);
    let err = w
        .enrollment
        .confirm_totp_enrollment(bearer(
            v1::ConfirmTotpEnrollmentRequest {
                factor_id: begun.factor.unwrap().id,
                code: w.code(&app),
                ..Default::default()
            },
            &token,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let (factors, _) = server::clean_up_expired(&w.server.app).await.unwrap();
    assert_eq!(factors, 1);
    let listed = w
        .enrollment
        .list_factors(bearer(v1::ListFactorsRequest {}, &token))
        .await
        .unwrap()
        .into_inner();
    assert!(listed.factors.is_empty());
    w.server.stop().await.unwrap();
}

async fn failures_count_across_methods_and_codes_work_in_any_order(backend: Backend) {
    let mut w = World::new(backend).await;
    let token = w.user("mixed@example.com").await;
    let (app, _, codes) = w.enroll_app(&token).await;
    // Recovery codes in any order.
    w.login_with("mixed@example.com", &codes[7]).await.unwrap();
    w.login_with("mixed@example.com", &codes[2]).await.unwrap();
    // Three wrong app codes and three wrong recovery codes: one budget for both methods.
    let right = w.code(&app);
    let wrong = if right == "000000" {
        "111111"
    } else {
        "000000"
    };
    for bad in [
        wrong,
        "AAAA-BBBB-CCCC-DDDD",
        wrong,
        "EEEE-FFFF-GGGG-HHHH",
        wrong,
        "2222-3333-4444-5555",
    ] {
        let err = w.login_with("mixed@example.com", bad).await.unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated, "{bad}");
    }
    let err = w.login_with("mixed@example.com", &right).await.unwrap_err();
    assert_eq!(
        reason(&err).as_deref(),
        Some("LOCKED_OUT"),
        "six failures across both methods"
    );
    let err = w
        .login_with("mixed@example.com", &codes[5])
        .await
        .unwrap_err();
    assert_eq!(
        reason(&err).as_deref(),
        Some("LOCKED_OUT"),
        "recovery codes are locked out too"
    );
    // So is a step-up of a session of theirs (its one read brings the counter).
    let err = w
        .server
        .authentication()
        .await
        .verify_step_up(bearer(
            v1::VerifyStepUpRequest {
                code: right,
                ..Default::default()
            },
            &token,
        ))
        .await
        .unwrap_err();
    assert_eq!(reason(&err).as_deref(), Some("LOCKED_OUT"), "step-up");
    w.server.stop().await.unwrap();
}

both!(
    failures_count_across_methods_and_codes_work_in_any_order,
    the_last_recovery_code_means_enrolling_again,
    enrollment_tokens_are_ordered_exactly_within_one_second,
    unconfirmed_enrollments_expire_and_are_cleaned_up,
    hotp_tokens_enroll_log_in_once_per_counter_and_resync,
    journey_8_changing_app_enrolls_the_new_then_removes_the_old,
    journey_8_a_new_app_replaces_the_old_in_its_confirmation,
    journey_8_a_replacement_needs_a_session_and_keeps_enforcement_whole,
    journey_9_turning_2fa_off_and_refused_under_enforcement,
    journey_11_own_reset_then_the_new_phone,
    recovery_codes_regenerate_and_sessions_step_up,
);
