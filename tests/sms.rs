//! The SMS second factor end to end (journeys 6, 7 and 8 of DESIGN.md), through the real
//! aws-sdk-sns client to moto's SNS server (started by the test command): the tests read what
//! a phone would receive from moto and type it back. Enrollment, login, wrong and expired
//! codes, resending, every sending limit, SNS being down, and moving from SMS to an app. On
//! SQLite and PostgreSQL, with a clock the test moves.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code: a panic is a failed test"
)]

use std::sync::Arc;
use std::time::Duration;

use otp_core::{OtpAuthUri, TotpParams};
use server::config::Config;
use tollgate_e2e::{
    Backend, ManualClock, TestServer, bearer, both, code_in, reason, sms_config, sms_inbox,
    sns_endpoint, unique_phone, violated_fields,
};
use tollgate_proto::v1::authentication_service_client::AuthenticationServiceClient;
use tollgate_proto::v1::enrollment_service_client::EnrollmentServiceClient;
use tollgate_proto::v1::{self, authenticate_response, verify_second_factor_response};
use tonic::Code;
use tonic::transport::Channel;
use tonic_types::StatusExt as _;

const PASSWORD: &str = "correct horse battery staple";
const T0: i64 = 1_800_000_000;

fn login(email: &str) -> v1::AuthenticateRequest {
    tollgate_e2e::password_login(email, PASSWORD, "")
}

struct World {
    server: TestServer,
    clock: Arc<ManualClock>,
    endpoint: String,
    auth: AuthenticationServiceClient<Channel>,
    enrollment: EnrollmentServiceClient<Channel>,
}

impl World {
    async fn new(backend: Backend) -> Self {
        let endpoint = sns_endpoint();
        Self::with(backend, sms_config(&endpoint), endpoint).await
    }

    async fn with(backend: Backend, config: Config, endpoint: String) -> Self {
        let clock = Arc::new(ManualClock::new(T0));
        let server = TestServer::start_full(
            backend,
            config,
            Arc::clone(&clock) as Arc<dyn server::Clock>,
        )
        .await;
        let channel = server.channel().await;
        Self {
            auth: AuthenticationServiceClient::new(channel.clone()),
            enrollment: EnrollmentServiceClient::new(channel),
            server,
            clock,
            endpoint,
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(server::Clock::now(&*self.clock)).unwrap()
    }

    /// A user with a password; returns their session (no factor yet).
    async fn user(&mut self, email: &str) -> String {
        self.server.create_user(email, PASSWORD).await;
        match self.first_step(email).await {
            authenticate_response::Result::Authenticated(s) => s.token,
            other => panic!("{other:?}"),
        }
    }

    async fn first_step(&mut self, email: &str) -> authenticate_response::Result {
        self.server.first_step(login(email)).await
    }

    async fn challenge(&mut self, email: &str) -> v1::SecondFactorRequired {
        match self.first_step(email).await {
            authenticate_response::Result::SecondFactorRequired(c) => c,
            other => panic!("expected a challenge, got {other:?}"),
        }
    }

    async fn inbox(&self, phone: &str) -> Vec<String> {
        sms_inbox(&self.endpoint, phone).await
    }

    /// The code of the last SMS to `phone`.
    async fn last_code(&self, phone: &str) -> String {
        code_in(self.inbox(phone).await.last().expect("an SMS"))
    }

    async fn begin(
        &mut self,
        token: &str,
        phone: &str,
    ) -> Result<v1::BeginSmsEnrollmentResponse, tonic::Status> {
        self.enrollment
            .begin_sms_enrollment(bearer(
                v1::BeginSmsEnrollmentRequest {
                    phone_number: phone.into(),
                    label: "phone".into(),
                },
                token,
            ))
            .await
            .map(tonic::Response::into_inner)
    }

    async fn confirm(
        &mut self,
        token: &str,
        factor_id: &str,
        code: &str,
    ) -> Result<v1::ConfirmSmsEnrollmentResponse, tonic::Status> {
        self.confirm_replacing(token, factor_id, code, "").await
    }

    /// Confirms the phone `factor_id`, replacing the factor `replaces` (empty: none).
    async fn confirm_replacing(
        &mut self,
        token: &str,
        factor_id: &str,
        code: &str,
        replaces: &str,
    ) -> Result<v1::ConfirmSmsEnrollmentResponse, tonic::Status> {
        self.enrollment
            .confirm_sms_enrollment(bearer(
                v1::ConfirmSmsEnrollmentRequest {
                    factor_id: factor_id.into(),
                    code: code.into(),
                    replaces_factor_id: replaces.into(),
                    client_context: None,
                },
                token,
            ))
            .await
            .map(tonic::Response::into_inner)
    }

    /// A user with an active SMS factor on a fresh number; returns the number.
    async fn user_with_phone(&mut self, email: &str) -> String {
        let token = self.user(email).await;
        let phone = unique_phone();
        let begun = self.begin(&token, &phone).await.unwrap();
        let code = self.last_code(&phone).await;
        self.confirm(&token, &begun.factor.unwrap().id, &code)
            .await
            .unwrap();
        // The next code to this number must wait for the cooldown.
        self.clock.advance(31);
        phone
    }

    async fn send(&mut self, challenge: &str) -> Result<v1::SendSmsCodeResponse, tonic::Status> {
        self.auth
            .send_sms_code(v1::SendSmsCodeRequest {
                challenge_token: challenge.into(),
                factor_id: String::new(),
                client_context: Some(v1::ClientContext {
                    ip_address: "192.0.2.44".into(),
                    user_agent: "SmsTest/1".into(),
                }),
                ..Default::default()
            })
            .await
            .map(tonic::Response::into_inner)
    }

    async fn verify(
        &mut self,
        challenge: &str,
        code: &str,
    ) -> Result<v1::VerifySecondFactorResponse, tonic::Status> {
        self.auth
            .verify_second_factor(v1::VerifySecondFactorRequest {
                challenge_token: challenge.into(),
                code: code.into(),
                webauthn_response_json: String::new(),
                client_context: None,
                remember_device: false,
            })
            .await
            .map(tonic::Response::into_inner)
    }

    /// The user's second-factor failure count.
    async fn failures(&self, email: &str) -> i64 {
        let user = self
            .server
            .app
            .storage
            .users()
            .find_by_email(email)
            .await
            .unwrap()
            .unwrap();
        self.server
            .app
            .storage
            .attempts()
            .get(&format!("mfa:{}", user.id))
            .await
            .unwrap()
            .map_or(0, |c| c.failures)
    }
}

fn retry_after(status: &tonic::Status) -> Duration {
    status
        .get_details_retry_info()
        .and_then(|r| r.retry_delay)
        .expect("RetryInfo")
}

fn session_of(response: v1::VerifySecondFactorResponse) -> v1::Session {
    match response.result {
        Some(verify_second_factor_response::Result::Authenticated(s)) => s,
        other => panic!("expected a session, got {other:?}"),
    }
}

async fn journey_6_enroll_a_phone_by_sms(backend: Backend) {
    let mut w = World::new(backend).await;
    let token = w.user("sam@example.com").await;
    let phone = unique_phone();
    // Typed the way people type it.
    let typed = format!("+1 ({}) {}-{}", &phone[2..5], &phone[5..8], &phone[8..]);
    assert_eq!(
        server::sms::normalize_phone(&typed).as_deref(),
        Some(phone.as_str())
    );
    let begun = w.begin(&token, &typed).await.unwrap();
    let factor = begun.factor.unwrap();
    assert_eq!(factor.status, v1::FactorStatus::Pending as i32);
    assert_eq!(factor.kind, v1::FactorKind::Sms as i32);
    assert!(
        begun
            .masked_phone_number
            .ends_with(&phone[phone.len() - 2..])
    );
    assert!(!begun.masked_phone_number.contains(&phone[5..9]));
    let now = i64::try_from(w.now()).unwrap();
    assert_eq!(begun.code_expire_time.unwrap().seconds, now + 300);
    assert_eq!(begun.resend_time.unwrap().seconds, now + 30);
    // The phone received one text, with the code and the issuer (no organization).
    let inbox = w.inbox(&phone).await;
    assert_eq!(inbox.len(), 1, "{inbox:?}");
    assert!(inbox[0].contains("Tollgate"), "{}", inbox[0]);
    let code = code_in(&inbox[0]);

    // A wrong code: refused, counted, the factor stays pending.
    let wrong = if code == "000000" { "111111" } else { "000000" };
    let err = w.confirm(&token, &factor.id, wrong).await.unwrap_err();
    assert_eq!(reason(&err).as_deref(), Some("INVALID_CODE"));
    assert_eq!(w.failures("sam@example.com").await, 1);
    // Bad input names the field.
    let err = w.confirm(&token, &factor.id, "12ab").await.unwrap_err();
    assert_eq!(violated_fields(&err), ["code"]);

    let done = w.confirm(&token, &factor.id, &code).await.unwrap();
    assert_eq!(done.factor.unwrap().status, v1::FactorStatus::Active as i32);
    assert_eq!(
        done.recovery_codes.len(),
        10,
        "the first factor brings them"
    );
    // Now that Sam has a factor, this single-factor session cannot add or confirm another.
    let err = w.confirm(&token, &factor.id, &code).await.unwrap_err();
    assert_eq!(reason(&err).as_deref(), Some("STEP_UP_REQUIRED"));
    let listed = w
        .enrollment
        .list_factors(bearer(v1::ListFactorsRequest {}, &token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        listed.factors[0].masked_phone_number,
        begun.masked_phone_number
    );
    // Codes are stored only as keyed hashes.
    let stored = w
        .server
        .app
        .storage
        .sms_codes()
        .current(factor.id.parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    let factor_uuid: storage::Uuid = factor.id.parse().unwrap();
    let keyed = w.server.app.storage.hasher().hash(
        storage::crypto::HashPurpose::SmsCode,
        &[factor_uuid.as_bytes(), code.as_bytes()],
    );
    assert_eq!(stored.code_hash, keyed.0.to_vec());
    assert!(stored.consumed_at.is_some(), "the code is used up");
    assert!(!stored.code_hash.windows(6).any(|w| w == code.as_bytes()));
    w.server.stop().await.unwrap();
}

async fn bad_numbers_are_refused_and_send_nothing(backend: Backend) {
    let mut w = World::new(backend).await;
    let token = w.user("bad@example.com").await;
    let uk = format!("+44207946{}", &unique_phone()[8..]);
    let jamaica = format!("+1876{}", &unique_phone()[5..]);
    for (input, why) in [
        ("4155550100", "no country code"),
        ("+1 415 CALL-NOW", "letters"),
        ("+123", "too short"),
        ("+14155550", "too short for its country"),
        (uk.as_str(), "a country not on the allowlist"),
        (jamaica.as_str(), "a +1 country on the denylist"),
    ] {
        let err = w.begin(&token, input).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{why}");
        assert_eq!(violated_fields(&err), ["phone_number"], "{why}");
    }
    assert!(
        w.inbox(&uk).await.is_empty(),
        "nothing went to the refused country"
    );
    assert!(w.inbox(&jamaica).await.is_empty());
    let err = w
        .enrollment
        .begin_sms_enrollment(bearer(
            v1::BeginSmsEnrollmentRequest {
                phone_number: "not a number".into(),
                label: "x".repeat(65),
            },
            &token,
        ))
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&err), ["phone_number", "label"]);
    let err = w.confirm(&token, "not-a-uuid", "12").await.unwrap_err();
    assert_eq!(violated_fields(&err), ["factor_id", "code"]);
    let err = w
        .auth
        .send_sms_code(v1::SendSmsCodeRequest {
            challenge_token: "x".into(),
            factor_id: "not-a-uuid".into(),
            client_context: Some(v1::ClientContext {
                ip_address: "192.0.2.300".into(),
                user_agent: String::new(),
            }),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(
        violated_fields(&err),
        ["factor_id", "client_context.ip_address"]
    );
    let factors = w
        .enrollment
        .list_factors(bearer(v1::ListFactorsRequest {}, &token))
        .await
        .unwrap()
        .into_inner()
        .factors;
    assert!(factors.is_empty(), "nothing was created");
    w.server.stop().await.unwrap();
}

async fn journey_7_log_in_with_an_sms_code(backend: Backend) {
    let endpoint = sns_endpoint();
    let mut config = sms_config(&endpoint);
    // This test sends more codes in an hour than the default cap allows.
    config.sms.user_hourly_limit = 10;
    let mut w = World::with(backend, config, endpoint).await;
    let phone = w.user_with_phone("lea@example.com").await;
    let challenge = w.challenge("lea@example.com").await;
    assert!(
        challenge
            .methods
            .contains(&(v1::SecondFactorMethod::Sms as i32))
    );
    let sent = w.send(&challenge.challenge_token).await.unwrap();
    assert!(
        sent.masked_phone_number
            .ends_with(&phone[phone.len() - 2..])
    );
    let now = i64::try_from(w.now()).unwrap();
    assert_eq!(sent.resend_time.unwrap().seconds, now + 30);
    assert_eq!(sent.expire_time.unwrap().seconds, now + 300);
    let code = w.last_code(&phone).await;
    assert_eq!(
        w.inbox(&phone).await.len(),
        2,
        "enrollment, then this login"
    );
    // Its event keeps where the request came from.
    let sent_events = w
        .server
        .app
        .storage
        .audit()
        .list(
            &storage::repo::AuditFilter {
                kinds: vec!["sms.sent".into()],
                ..Default::default()
            },
            None,
            1,
        )
        .await
        .unwrap()
        .items;
    assert_eq!(sent_events[0].client_ip.as_deref(), Some("192.0.2.44"));
    assert_eq!(
        sent_events[0].client_user_agent.as_deref(),
        Some("SmsTest/1")
    );

    // A wrong code counts toward the same per-user budget as app codes.
    let wrong = if code == "000000" { "111111" } else { "000000" };
    let err = w
        .verify(&challenge.challenge_token, wrong)
        .await
        .unwrap_err();
    assert_eq!(reason(&err).as_deref(), Some("INVALID_CODE"));
    assert_eq!(w.failures("lea@example.com").await, 1);
    let session = session_of(w.verify(&challenge.challenge_token, &code).await.unwrap());
    assert_eq!(
        session.assurance_level,
        v1::AssuranceLevel::SecondFactor as i32
    );
    assert_eq!(
        w.failures("lea@example.com").await,
        0,
        "a success clears it"
    );

    // Used once: the same code cannot log in again.
    let again = w.challenge("lea@example.com").await;
    let err = w.verify(&again.challenge_token, &code).await.unwrap_err();
    assert_eq!(reason(&err).as_deref(), Some("INVALID_CODE"));

    // Expiry: a code is good for five minutes, and not a second more.
    w.clock.advance(31);
    w.send(&again.challenge_token).await.unwrap();
    let in_time = w.last_code(&phone).await;
    w.clock.advance(299);
    let boundary = w.challenge("lea@example.com").await;
    session_of(w.verify(&boundary.challenge_token, &in_time).await.unwrap());
    let boundary = w.challenge("lea@example.com").await;
    w.send(&boundary.challenge_token).await.unwrap();
    let late = w.last_code(&phone).await;
    w.clock.advance(300);
    let fresh = w.challenge("lea@example.com").await;
    let err = w.verify(&fresh.challenge_token, &late).await.unwrap_err();
    assert_eq!(reason(&err).as_deref(), Some("INVALID_CODE"), "expired");

    // A resend replaces the code, and does not reset the failure count.
    let before = w.failures("lea@example.com").await;
    assert!(before >= 1);
    w.send(&fresh.challenge_token).await.unwrap();
    let first = w.last_code(&phone).await;
    w.clock.advance(31);
    w.send(&fresh.challenge_token).await.unwrap();
    let second = w.last_code(&phone).await;
    assert_eq!(w.failures("lea@example.com").await, before);
    if first != second {
        let err = w.verify(&fresh.challenge_token, &first).await.unwrap_err();
        assert_eq!(reason(&err).as_deref(), Some("INVALID_CODE"), "replaced");
    }
    session_of(w.verify(&fresh.challenge_token, &second).await.unwrap());

    // Bad input and a bad challenge.
    let err = w.send("").await.unwrap_err();
    assert_eq!(violated_fields(&err), ["challenge_token"]);
    let err = w.send("not-a-challenge").await.unwrap_err();
    assert_eq!(reason(&err).as_deref(), Some("CHALLENGE_INVALID"));
    w.server.stop().await.unwrap();
}

/// A code allows a few attempts; then it is dead even if right, and the user must ask again.
async fn an_sms_code_allows_a_few_attempts(backend: Backend) {
    let mut w = World::new(backend).await;
    let phone = w.user_with_phone("try@example.com").await;
    let challenge = w.challenge("try@example.com").await;
    w.send(&challenge.challenge_token).await.unwrap();
    let code = w.last_code(&phone).await;
    let wrong = if code == "000000" { "111111" } else { "000000" };
    for _ in 0..3 {
        w.verify(&challenge.challenge_token, wrong)
            .await
            .unwrap_err();
    }
    let fresh = w.challenge("try@example.com").await;
    let err = w.verify(&fresh.challenge_token, &code).await.unwrap_err();
    assert_eq!(
        reason(&err).as_deref(),
        Some("INVALID_CODE"),
        "out of attempts"
    );
    w.clock.advance(31);
    w.send(&fresh.challenge_token).await.unwrap();
    let code = w.last_code(&phone).await;
    session_of(w.verify(&fresh.challenge_token, &code).await.unwrap());
    w.server.stop().await.unwrap();
}

async fn the_number_cooldown_refuses_with_retry_info_and_changes_nothing(backend: Backend) {
    let mut w = World::new(backend).await;
    let phone = w.user_with_phone("cool@example.com").await;
    let challenge = w.challenge("cool@example.com").await;
    w.send(&challenge.challenge_token).await.unwrap();
    let code = w.last_code(&phone).await;
    let texts = w.inbox(&phone).await.len();
    w.clock.advance(10);
    let err = w.send(&challenge.challenge_token).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert_eq!(reason(&err).as_deref(), Some("SMS_NUMBER_COOLDOWN"));
    assert_eq!(retry_after(&err), Duration::from_secs(20));
    // Nothing sent, nothing replaced: the first code still works.
    assert_eq!(w.inbox(&phone).await.len(), texts);
    session_of(w.verify(&challenge.challenge_token, &code).await.unwrap());
    // A new enrollment to the same number waits too.
    let token = w.user("other@example.com").await;
    let err = w.begin(&token, &phone).await.unwrap_err();
    assert_eq!(reason(&err).as_deref(), Some("SMS_NUMBER_COOLDOWN"));
    w.server.stop().await.unwrap();
}

async fn the_hourly_user_limit_holds(backend: Backend) {
    let endpoint = sns_endpoint();
    let mut config = sms_config(&endpoint);
    config.sms.user_hourly_limit = 3;
    let mut w = World::with(backend, config, endpoint).await;
    // Enrollment sent one.
    let phone = w.user_with_phone("hour@example.com").await;
    let challenge = w.challenge("hour@example.com").await;
    w.send(&challenge.challenge_token).await.unwrap();
    w.clock.advance(31);
    w.send(&challenge.challenge_token).await.unwrap();
    w.clock.advance(31);
    let texts = w.inbox(&phone).await.len();
    let err = w.send(&challenge.challenge_token).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert_eq!(reason(&err).as_deref(), Some("SMS_USER_LIMIT"));
    // The hour began at the enrollment, 93 seconds ago.
    assert_eq!(retry_after(&err), Duration::from_secs(3_600 - 93));
    assert_eq!(w.inbox(&phone).await.len(), texts);
    w.clock.advance(3_600);
    let challenge = w.challenge("hour@example.com").await;
    w.send(&challenge.challenge_token).await.unwrap();
    w.server.stop().await.unwrap();
}

async fn the_daily_organization_limit_holds(backend: Backend) {
    let endpoint = sns_endpoint();
    let mut config = sms_config(&endpoint);
    config.sms.org_daily_limit = 2;
    let mut w = World::with(backend, config, endpoint).await;
    let mut orgs = w.server.organizations().await;
    let owner = w.user("owner@example.com").await;
    let owner_id = w
        .server
        .app
        .storage
        .sessions()
        .find_valid(&owner, T0)
        .await
        .unwrap()
        .unwrap()
        .user_id;
    let org = orgs
        .create_organization(v1::CreateOrganizationRequest {
            name: "Acme Rockets".into(),
            owner_user_id: owner_id.to_string(),
        })
        .await
        .unwrap()
        .into_inner()
        .organization
        .unwrap()
        .id;
    // Two enrollments in the organization spend its day.
    let mut phones = Vec::new();
    for email in ["a@example.com", "b@example.com", "c@example.com"] {
        let token = w.user(email).await;
        let user_id = w
            .server
            .app
            .storage
            .users()
            .find_by_email(email)
            .await
            .unwrap()
            .unwrap()
            .id;
        orgs.add_member(v1::AddMemberRequest {
            organization_id: org.clone(),
            user_id: user_id.to_string(),
            role: v1::Role::Member as i32,
        })
        .await
        .unwrap();
        // Log in again, now as a member: the session names the organization.
        let token = match w.first_step(email).await {
            authenticate_response::Result::Authenticated(s) => s.token,
            other => panic!("{other:?} (first token {token})"),
        };
        phones.push((token, unique_phone()));
    }
    for (token, phone) in &phones[..2] {
        w.begin(token, phone).await.unwrap();
        assert!(w.inbox(phone).await[0].contains("Acme Rockets"));
    }
    let (token, phone) = &phones[2];
    let err = w.begin(token, phone).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert_eq!(reason(&err).as_deref(), Some("SMS_ORGANIZATION_LIMIT"));
    assert_eq!(retry_after(&err), Duration::from_secs(86_400));
    assert!(w.inbox(phone).await.is_empty());
    // Nothing is left pending for the refused phone.
    let factors = w
        .enrollment
        .list_factors(bearer(v1::ListFactorsRequest {}, token))
        .await
        .unwrap()
        .into_inner()
        .factors;
    assert!(factors.is_empty());
    w.server.stop().await.unwrap();
}

async fn the_pumping_guard_stops_sending_and_alerts(backend: Backend) {
    let endpoint = sns_endpoint();
    let mut config = sms_config(&endpoint);
    config.sms.pumping_min_sends = 3;
    config.sms.pumping_max_ratio = 1;
    let mut w = World::with(backend, config, endpoint).await;
    // One verified enrollment; then codes nobody uses, as a pumping bot would request.
    w.user_with_phone("real@example.com").await;
    let mut tokens = Vec::new();
    for i in 0..3 {
        let token = w.user(&format!("bot{i}@example.com")).await;
        tokens.push(token);
    }
    w.begin(&tokens[0], &unique_phone()).await.unwrap();
    w.begin(&tokens[1], &unique_phone()).await.unwrap();
    // Three sent, one verified: over the ratio, so the next is refused.
    let alerts = w.server.app.metrics.sms_pumping_alerts.get();
    let phone = unique_phone();
    let err = w.begin(&tokens[2], &phone).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert_eq!(reason(&err).as_deref(), Some("SMS_PUMPING_SUSPECTED"));
    assert!(retry_after(&err) <= Duration::from_secs(3_600));
    assert!(w.inbox(&phone).await.is_empty());
    let metrics = Arc::clone(&w.server.app.metrics);
    let count = move || metrics.sms_pumping_alerts.get();
    assert_eq!(count(), alerts + 1, "an alert is counted");
    // Once per window: a second refusal neither alerts nor audits again.
    let err = w.begin(&tokens[2], &phone).await.unwrap_err();
    assert_eq!(reason(&err).as_deref(), Some("SMS_PUMPING_SUSPECTED"));
    assert_eq!(count(), alerts + 1);
    let audited = w
        .server
        .app
        .storage
        .audit()
        .list(
            &storage::repo::AuditFilter {
                kinds: vec!["sms.pumping_suspected".into()],
                ..Default::default()
            },
            None,
            10,
        )
        .await
        .unwrap()
        .items;
    assert_eq!(audited.len(), 1);
    assert!(
        audited[0].details.contains(r#""sent":3"#),
        "{}",
        audited[0].details
    );
    // A new window lifts it.
    w.clock.advance(3_600);
    let token = w.user("late@example.com").await;
    w.begin(&token, &unique_phone()).await.unwrap();
    w.server.stop().await.unwrap();
}

/// SNS unreachable: UNAVAILABLE, no code left valid, no limit charged, no cooldown started,
/// nothing left pending.
async fn sns_down_leaves_nothing_behind(backend: Backend) {
    // An endpoint that is stopped: a port that nothing listens on.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    };
    let mut config = sms_config(&closed);
    config.sms.sns_timeout_ms = 500;
    let mut w = World::with(backend, config, closed).await;
    let token = w.user("down@example.com").await;
    let phone = unique_phone();
    let err = w.begin(&token, &phone).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert_eq!(reason(&err).as_deref(), Some("SMS_UNAVAILABLE"));
    // Straight away again: the same answer, not a cooldown.
    let err = w.begin(&token, &phone).await.unwrap_err();
    assert_eq!(reason(&err).as_deref(), Some("SMS_UNAVAILABLE"));
    let storage = w.server.app.storage.clone();
    let user = storage
        .users()
        .find_by_email("down@example.com")
        .await
        .unwrap()
        .unwrap();
    assert!(
        storage
            .factors()
            .of_user(user.id, false)
            .await
            .unwrap()
            .is_empty()
    );
    // No limit is charged for an SMS that surely was not sent: user, day, pumping count.
    for (key, window) in [
        (format!("sms:user:{}", user.id), 3_600),
        (format!("sms:user-day:{}", user.id), 86_400),
        ("sms:pumping:sent".to_owned(), 3_600),
    ] {
        let (charged, _) = storage
            .sms_limits()
            .current(&key, window, T0)
            .await
            .unwrap();
        assert_eq!(charged, 0, "{key}");
    }

    // A login with an enrolled phone: SendSmsCode fails the same way; no code is valid.
    let factor = storage
        .factors()
        .create_sms_pending(user.id, "phone", &phone, T0, T0 + 600, &[])
        .await
        .unwrap();
    storage
        .factors()
        .activate(factor.id, user.id, None, None, T0)
        .await
        .unwrap();
    let challenge = w.challenge("down@example.com").await;
    let err = w.send(&challenge.challenge_token).await.unwrap_err();
    assert_eq!(reason(&err).as_deref(), Some("SMS_UNAVAILABLE"));
    assert!(
        storage
            .sms_codes()
            .current(factor.id)
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        w.failures("down@example.com").await,
        0,
        "no attempt charged"
    );
    let err = w.send(&challenge.challenge_token).await.unwrap_err();
    assert_eq!(
        reason(&err).as_deref(),
        Some("SMS_UNAVAILABLE"),
        "no cooldown"
    );
    w.server.stop().await.unwrap();
}

/// SNS answering with throttling errors (a local endpoint that always says so): retried a
/// bounded number of times, then UNAVAILABLE with nothing charged.
async fn sns_throttling_is_unavailable(backend: Backend) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let requests = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let bodies = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let seen = Arc::clone(&requests);
    let kept = Arc::clone(&bodies);
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let kept = Arc::clone(&kept);
            tokio::spawn(async move {
                // The whole request: headers, then content-length bytes of body.
                let mut request = Vec::new();
                let mut buffer = [0u8; 4096];
                loop {
                    let Ok(n) = stream.read(&mut buffer).await else {
                        return;
                    };
                    if n == 0 {
                        break;
                    }
                    request.extend_from_slice(&buffer[..n]);
                    let text = String::from_utf8_lossy(&request).to_string();
                    if let Some((head, body)) = text.split_once("\r\n\r\n") {
                        let length = head
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                            })
                            .unwrap_or(0);
                        if body.len() >= length {
                            kept.lock().unwrap().push(body.to_owned());
                            break;
                        }
                    }
                }
                let body = "<ErrorResponse xmlns=\"http://sns.amazonaws.com/doc/2010-03-31/\"><Error><Type>Sender</Type><Code>Throttling</Code><Message>Rate exceeded</Message></Error><RequestId>x</RequestId></ErrorResponse>";
                let response = format!(
                    "HTTP/1.1 400 Bad Request\r\ncontent-type: text/xml\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(response.as_bytes()).await;
            });
        }
    });
    let mut config = sms_config(&endpoint);
    config.sms.sns_max_attempts = 3;
    config.sms.sns_sender_id = "Tollgate".to_owned();
    let mut w = World::with(backend, config, endpoint).await;
    let token = w.user("throttled@example.com").await;
    let phone = unique_phone();
    let err = w.begin(&token, &phone).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert_eq!(reason(&err).as_deref(), Some("SMS_UNAVAILABLE"));
    assert_eq!(
        requests.load(std::sync::atomic::Ordering::SeqCst),
        3,
        "bounded retries"
    );
    // What went to SNS: a Publish to the number, Transactional, with the sender id.
    let body = bodies.lock().unwrap()[0].clone();
    assert!(body.contains("Action=Publish"), "{body}");
    assert!(body.contains(&phone.replace('+', "%2B")), "{body}");
    assert!(
        body.contains("AWS.SNS.SMS.SMSType") && body.contains("Transactional"),
        "{body}"
    );
    assert!(
        body.contains("AWS.SNS.SMS.SenderID") && body.contains("Tollgate"),
        "{body}"
    );
    // Nothing was charged and nothing is pending: the next try is not a cooldown.
    let err = w.begin(&token, &phone).await.unwrap_err();
    assert_eq!(reason(&err).as_deref(), Some("SMS_UNAVAILABLE"));
    w.server.stop().await.unwrap();
}

async fn journey_8_from_sms_to_an_authenticator_app(backend: Backend) {
    let mut w = World::new(backend).await;
    let phone = w.user_with_phone("move@example.com").await;
    let challenge = w.challenge("move@example.com").await;
    w.send(&challenge.challenge_token).await.unwrap();
    let code = w.last_code(&phone).await;
    let session = session_of(w.verify(&challenge.challenge_token, &code).await.unwrap()).token;
    // An SMS code on demand with the session: proof of possession for a sensitive change.
    w.clock.advance(31);
    w.auth
        .send_sms_code(bearer(v1::SendSmsCodeRequest::default(), &session))
        .await
        .unwrap();
    let proof = w.last_code(&phone).await;
    let codes = w
        .enrollment
        .regenerate_recovery_codes(bearer(
            v1::RegenerateRecoveryCodesRequest {
                proof,
                webauthn_response_json: String::new(),
            },
            &session,
        ))
        .await
        .unwrap()
        .into_inner()
        .recovery_codes;
    assert_eq!(codes.len(), 10);
    // A challenge and the deprecated body field at once.
    #[allow(
        deprecated,
        reason = "the deprecated field is still accepted, and checked"
    )]
    let err = w
        .auth
        .send_sms_code(v1::SendSmsCodeRequest {
            challenge_token: "x".into(),
            factor_id: String::new(),
            session_token: session.clone(),
            client_context: None,
        })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&err), ["challenge_token"], "not both");
    // Enroll the app first…
    let begun = w
        .enrollment
        .begin_totp_enrollment(bearer(
            v1::BeginTotpEnrollmentRequest {
                label: "app".into(),
            },
            &session,
        ))
        .await
        .unwrap()
        .into_inner();
    let app = OtpAuthUri::parse(&begun.otpauth_uri)
        .unwrap()
        .to_totp(TotpParams::default())
        .unwrap()
        .unwrap();
    w.enrollment
        .confirm_totp_enrollment(bearer(
            v1::ConfirmTotpEnrollmentRequest {
                factor_id: begun.factor.unwrap().id,
                code: app.generate(w.now()).unwrap().to_string(),
                ..Default::default()
            },
            &session,
        ))
        .await
        .unwrap();
    w.clock.advance(30);
    // …then remove the phone, proving possession with the app.
    let factors = w
        .enrollment
        .list_factors(bearer(v1::ListFactorsRequest {}, &session))
        .await
        .unwrap()
        .into_inner()
        .factors;
    let sms = factors
        .iter()
        .find(|f| f.kind == v1::FactorKind::Sms as i32)
        .unwrap();
    w.enrollment
        .remove_factor(bearer(
            v1::RemoveFactorRequest {
                factor_id: sms.id.clone(),
                proof: app.generate(w.now()).unwrap().to_string(),
                webauthn_response_json: String::new(),
            },
            &session,
        ))
        .await
        .unwrap();
    w.clock.advance(30);
    // The next login offers the app, not SMS, and no SMS can be sent any more.
    let challenge = w.challenge("move@example.com").await;
    assert!(
        challenge
            .methods
            .contains(&(v1::SecondFactorMethod::Totp as i32))
    );
    assert!(
        !challenge
            .methods
            .contains(&(v1::SecondFactorMethod::Sms as i32))
    );
    let err = w.send(&challenge.challenge_token).await.unwrap_err();
    assert_eq!(reason(&err).as_deref(), Some("NO_SMS_FACTOR"));
    let code = app.generate(w.now()).unwrap().to_string();
    session_of(w.verify(&challenge.challenge_token, &code).await.unwrap());
    w.server.stop().await.unwrap();
}

/// Journey 8, a new phone: its confirmation replaces the old phone in one call. A wrong
/// replacement leaves both as they were; then the old number gets nothing more and logins go
/// to the new one.
async fn journey_8_a_new_phone_replaces_the_old_in_its_confirmation(backend: Backend) {
    let mut w = World::new(backend).await;
    let old_phone = w.user_with_phone("newphone@example.com").await;
    let challenge = w.challenge("newphone@example.com").await;
    w.send(&challenge.challenge_token).await.unwrap();
    let code = w.last_code(&old_phone).await;
    let session = session_of(w.verify(&challenge.challenge_token, &code).await.unwrap()).token;
    let listed = |w: &mut World| {
        let mut enrollment = w.enrollment.clone();
        let session = session.clone();
        async move {
            enrollment
                .list_factors(bearer(v1::ListFactorsRequest {}, &session))
                .await
                .unwrap()
                .into_inner()
                .factors
                .into_iter()
                .map(|f| (f.id, f.status))
                .collect::<Vec<_>>()
        }
    };
    let old_id = listed(&mut w).await[0].0.clone();
    let new_phone = unique_phone();
    let begun = w.begin(&session, &new_phone).await.unwrap();
    let new_id = begun.factor.unwrap().id;
    let code = w.last_code(&new_phone).await;
    let err = w
        .confirm_replacing(&session, &new_id, &code, "not a factor id")
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&err), ["replaces_factor_id"]);
    let (active, pending) = (
        v1::FactorStatus::Active as i32,
        v1::FactorStatus::Pending as i32,
    );
    assert_eq!(
        listed(&mut w).await,
        [(old_id.clone(), active), (new_id.clone(), pending)]
    );
    w.confirm_replacing(&session, &new_id, &code, &old_id)
        .await
        .unwrap();
    assert_eq!(listed(&mut w).await, [(new_id, active)]);
    // The next login's code goes to the new number only.
    w.clock.advance(31);
    let sent_before = w.inbox(&old_phone).await.len();
    let challenge = w.challenge("newphone@example.com").await;
    w.send(&challenge.challenge_token).await.unwrap();
    assert_eq!(w.inbox(&old_phone).await.len(), sent_before);
    let code = w.last_code(&new_phone).await;
    session_of(w.verify(&challenge.challenge_token, &code).await.unwrap());
    w.server.stop().await.unwrap();
}

/// The message text is configurable; a phone whose country is no longer allowed gets no more
/// codes (FAILED_PRECONDITION, nothing sent).
async fn the_message_is_configurable_and_the_allowlist_holds_at_send(backend: Backend) {
    let endpoint = sns_endpoint();
    let mut config = sms_config(&endpoint);
    config.sms.message = "Code {code} for {organization}. Tollgate will never call you.".into();
    config.sms.allowed_country_prefixes = vec!["+1".into(), "+44".into()];
    let mut w = World::with(backend, config, endpoint).await;
    let phone = w.user_with_phone("tpl@example.com").await;
    let text = w.inbox(&phone).await[0].clone();
    assert!(
        text.starts_with("Code ") && text.ends_with(" for Tollgate. Tollgate will never call you."),
        "{text}"
    );
    // A UK phone, allowed under this configuration.
    let session = match w.first_step("tpl@example.com").await {
        authenticate_response::Result::SecondFactorRequired(c) => {
            w.send(&c.challenge_token).await.unwrap();
            let code = w.last_code(&phone).await;
            session_of(w.verify(&c.challenge_token, &code).await.unwrap()).token
        }
        other => panic!("{other:?}"),
    };
    let uk = format!("+44207946{}", &unique_phone()[8..]);
    let begun = w.begin(&session, &uk).await.unwrap();
    let code = w.last_code(&uk).await;
    w.confirm(&session, &begun.factor.unwrap().id, &code)
        .await
        .unwrap();
    let storage = w.server.app.storage.clone();

    // A second replica on the same database, configured without +44: refused before anything
    // is sent.
    let endpoint = sns_endpoint();
    let mut config = sms_config(&endpoint);
    config.sms.allowed_country_prefixes = vec!["+1".into()];
    let passwords = server::password::Passwords::new(&config.passwords).unwrap();
    let app = server::App {
        storage: storage.clone(),
        sms: server::sms::from_config(&config.sms).await,
        config: Arc::new(config),
        passwords,
        clock: Arc::new(ManualClock::new(T0 + 3_600)) as Arc<dyn server::Clock>,
        metrics: Arc::default(),
        db_health: Default::default(),
        webauthn: None,
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let handle = tokio::spawn(server::serve(app, listener, async {
        let _ = stopped.await;
    }));
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut auth = AuthenticationServiceClient::new(channel);
    let challenge = match auth
        .authenticate(login("tpl@example.com"))
        .await
        .unwrap()
        .into_inner()
        .result
    {
        Some(authenticate_response::Result::SecondFactorRequired(c)) => c,
        other => panic!("{other:?}"),
    };
    let user = storage
        .users()
        .find_by_email("tpl@example.com")
        .await
        .unwrap()
        .unwrap();
    let uk_factor = storage
        .factors()
        .of_user(user.id, true)
        .await
        .unwrap()
        .into_iter()
        .find(|f| f.phone_e164.as_deref() == Some(uk.as_str()))
        .unwrap();
    let err = auth
        .send_sms_code(v1::SendSmsCodeRequest {
            challenge_token: challenge.challenge_token,
            factor_id: uk_factor.id.to_string(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(reason(&err).as_deref(), Some("SMS_COUNTRY_NOT_ALLOWED"));
    assert_eq!(
        sms_inbox(&endpoint, &uk).await.len(),
        1,
        "nothing more was sent"
    );
    let _ = stop.send(());
    handle.await.unwrap().unwrap();
    w.server.stop().await.unwrap();
}

/// SNS that never answers: UNAVAILABLE; since the message may have gone out, the cooldown
/// and caps stay taken (a slow provider cannot be used to send without limits), and no code
/// is valid.
async fn an_sns_timeout_keeps_the_limits_taken(backend: Backend) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    let mut config = sms_config(&endpoint);
    config.sms.sns_timeout_ms = 300;
    config.sms.sns_max_attempts = 1;
    let mut w = World::with(backend, config, endpoint).await;
    let token = w.user("slow@example.com").await;
    let phone = unique_phone();
    let err = w.begin(&token, &phone).await.unwrap_err();
    assert_eq!(reason(&err).as_deref(), Some("SMS_UNAVAILABLE"), "{err:?}");
    let err = w.begin(&token, &phone).await.unwrap_err();
    assert_eq!(reason(&err).as_deref(), Some("SMS_NUMBER_COOLDOWN"));
    let storage = w.server.app.storage.clone();
    let user = storage
        .users()
        .find_by_email("slow@example.com")
        .await
        .unwrap()
        .unwrap();
    assert!(
        storage
            .factors()
            .of_user(user.id, false)
            .await
            .unwrap()
            .is_empty()
    );
    w.server.stop().await.unwrap();
}

both!(
    the_message_is_configurable_and_the_allowlist_holds_at_send,
    an_sns_timeout_keeps_the_limits_taken,
    journey_6_enroll_a_phone_by_sms,
    bad_numbers_are_refused_and_send_nothing,
    journey_7_log_in_with_an_sms_code,
    an_sms_code_allows_a_few_attempts,
    the_number_cooldown_refuses_with_retry_info_and_changes_nothing,
    the_hourly_user_limit_holds,
    the_daily_organization_limit_holds,
    the_pumping_guard_stops_sending_and_alerts,
    sns_down_leaves_nothing_behind,
    sns_throttling_is_unavailable,
    journey_8_from_sms_to_an_authenticator_app,
    journey_8_a_new_phone_replaces_the_old_in_its_confirmation,
);
