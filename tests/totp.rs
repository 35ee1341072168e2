//! Authenticator-app 2FA end to end, with codes computed the way an app computes them: from
//! the otpauth:// URI the server returned, with the test's clock. On SQLite and PostgreSQL.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code: a panic is a failed test"
)]

use std::sync::Arc;

use otp_core::{OtpAuthUri, Totp, TotpParams};
use storage::repo::PolicyUpdate;
use tollgate_e2e::{Backend, ManualClock, TestServer, bearer, both, reason, verify_code as verify};
use tollgate_proto::v1::enrollment_service_client::EnrollmentServiceClient;
use tollgate_proto::v1::{self, authenticate_response, verify_second_factor_response};
use tonic::Code;
use tonic::transport::Channel;

const PASSWORD: &str = "correct horse battery staple";
const T0: i64 = 1_800_000_000;

fn login(email: &str) -> v1::AuthenticateRequest {
    tollgate_e2e::password_login(email, PASSWORD, "")
}

/// What an authenticator app does with the URI.
fn app_from(uri: &str) -> Totp {
    OtpAuthUri::parse(uri)
        .unwrap()
        .to_totp(TotpParams::default())
        .unwrap()
        .unwrap()
}

fn code(app: &Totp, clock: &ManualClock) -> String {
    app.generate(u64::try_from(server::Clock::now(clock)).unwrap())
        .unwrap()
        .to_string()
}

struct Enrolled {
    app: Totp,
    recovery_codes: Vec<String>,
    session: Option<v1::Session>,
}

async fn enroll(
    enrollment: &mut EnrollmentServiceClient<Channel>,
    token: &str,
    clock: &ManualClock,
) -> Enrolled {
    let begun = enrollment
        .begin_totp_enrollment(bearer(
            v1::BeginTotpEnrollmentRequest {
                label: "phone".into(),
            },
            token,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        begun.factor.as_ref().unwrap().status,
        v1::FactorStatus::Pending as i32
    );
    assert!(begun.otpauth_uri.starts_with("otpauth://totp/Tollgate:"));
    // The QR code (PNG) decodes to the same URI.
    assert_eq!(decode_qr(&begun.qr_code_png), begun.otpauth_uri);
    assert!(begun.qr_code_svg.starts_with("<?xml") && begun.qr_code_svg.ends_with("</svg>"));
    // The secret typed by hand gives the same codes as the QR code.
    let app = app_from(&begun.otpauth_uri);
    let typed = otp_core::Secret::from_base32(&begun.secret_base32).unwrap();
    assert_eq!(&typed, app.secret());
    let confirmed = enrollment
        .confirm_totp_enrollment(bearer(
            v1::ConfirmTotpEnrollmentRequest {
                factor_id: begun.factor.unwrap().id,
                code: code(&app, clock),
                ..Default::default()
            },
            token,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        confirmed.factor.unwrap().status,
        v1::FactorStatus::Active as i32
    );
    Enrolled {
        app,
        recovery_codes: confirmed.recovery_codes,
        session: confirmed.session,
    }
}

fn decode_qr(png_bytes: &[u8]) -> String {
    let mut decoder = png::Decoder::new(std::io::Cursor::new(png_bytes));
    // One bit per pixel, as 8-bit gray.
    decoder.set_transformations(png::Transformations::EXPAND);
    let mut reader = decoder.read_info().unwrap();
    let mut pixels = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut pixels).unwrap();
    let (w, h) = (info.width as usize, info.height as usize);
    let mut image = rqrr::PreparedImage::prepare_from_greyscale(w, h, |x, y| pixels[y * w + x]);
    let grids = image.detect_grids();
    assert_eq!(grids.len(), 1);
    grids[0].decode().unwrap().1
}

async fn setup(backend: Backend) -> (TestServer, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(T0));
    let server = TestServer::start_with_clock(backend, Arc::clone(&clock)).await;
    (server, clock)
}

async fn user_with_session(server: &TestServer, email: &str) -> v1::Session {
    server.create_user(email, PASSWORD).await;
    match server
        .authentication()
        .await
        .authenticate(login(email))
        .await
        .unwrap()
        .into_inner()
        .result
    {
        Some(authenticate_response::Result::Authenticated(session)) => session,
        other => panic!("{other:?}"),
    }
}

async fn challenge(server: &TestServer, email: &str) -> String {
    match server.first_step(login(email)).await {
        authenticate_response::Result::SecondFactorRequired(c) => c.challenge_token,
        other => panic!("expected a challenge: {other:?}"),
    }
}

async fn journey_4_5_7_enroll_an_app_then_log_in_with_its_codes(backend: Backend) {
    let (server, clock) = setup(backend).await;
    let session = user_with_session(&server, "app@example.com").await;
    let mut enrollment = EnrollmentServiceClient::new(server.channel().await);
    let enrolled = enroll(&mut enrollment, &session.token, &clock).await;
    // Journey 5: ten recovery codes, shown once, 80 bits each (16 base32 characters).
    assert_eq!(enrolled.recovery_codes.len(), 10);
    assert!(
        enrolled
            .recovery_codes
            .iter()
            .all(|c| c.len() == 19 && c.matches('-').count() == 3)
    );
    let listed = enrollment
        .list_factors(bearer(v1::ListFactorsRequest {}, &session.token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.factors.len(), 1);
    assert_eq!(listed.recovery_codes_remaining, 10);

    // Journey 7: password, then a code from the app.
    let mut auth = server.authentication().await;
    let token = challenge(&server, "app@example.com").await;
    // The code that confirmed the enrollment cannot log in (same time step).
    let err = auth
        .verify_second_factor(verify(&token, &code(&enrolled.app, &clock)))
        .await
        .unwrap_err();
    assert_eq!(reason(&err).as_deref(), Some("CODE_REPLAYED"));
    clock.advance(30);
    let ok = auth
        .verify_second_factor(verify(&token, &code(&enrolled.app, &clock)))
        .await
        .unwrap()
        .into_inner();
    let Some(verify_second_factor_response::Result::Authenticated(s)) = ok.result else {
        panic!("{ok:?}")
    };
    assert_eq!(s.assurance_level, v1::AssuranceLevel::SecondFactor as i32);
    // The challenge is used up.
    let err = auth
        .verify_second_factor(verify(&token, "123456"))
        .await
        .unwrap_err();
    assert_eq!(reason(&err).as_deref(), Some("CHALLENGE_INVALID"));

    // A recovery code, typed loosely, works once.
    let token = challenge(&server, "app@example.com").await;
    let recovery = enrolled.recovery_codes[0].to_lowercase().replace('-', " ");
    let ok = auth
        .verify_second_factor(verify(&token, &recovery))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ok.recovery_codes_remaining, 9);
    let token = challenge(&server, "app@example.com").await;
    let err = auth
        .verify_second_factor(verify(&token, &enrolled.recovery_codes[0]))
        .await
        .unwrap_err();
    // Used once: presented again it is a replay, as an app code's step would be.
    assert_eq!(reason(&err).as_deref(), Some("CODE_REPLAYED"));
    server.stop().await.unwrap();
}

async fn a_code_is_accepted_once_even_by_concurrent_calls(backend: Backend) {
    let (server, clock) = setup(backend).await;
    let session = user_with_session(&server, "race@example.com").await;
    let mut enrollment = EnrollmentServiceClient::new(server.channel().await);
    let enrolled = enroll(&mut enrollment, &session.token, &clock).await;
    clock.advance(30);
    let current = code(&enrolled.app, &clock);
    // Two logins racing with the same code: exactly one gets a session.
    let (a, b) = (
        challenge(&server, "race@example.com").await,
        challenge(&server, "race@example.com").await,
    );
    let (mut auth_a, mut auth_b) = (server.authentication().await, server.authentication().await);
    let (ra, rb) = tokio::join!(
        auth_a.verify_second_factor(verify(&a, &current)),
        auth_b.verify_second_factor(verify(&b, &current)),
    );
    assert_eq!(
        usize::from(ra.is_ok()) + usize::from(rb.is_ok()),
        1,
        "{ra:?} {rb:?}"
    );
    let loser = ra.err().or(rb.err()).unwrap();
    assert_eq!(reason(&loser).as_deref(), Some("CODE_REPLAYED"));
    // Sent again later on a new challenge: still refused.
    let c = challenge(&server, "race@example.com").await;
    let err = server
        .authentication()
        .await
        .verify_second_factor(verify(&c, &current))
        .await
        .unwrap_err();
    assert_eq!(reason(&err).as_deref(), Some("CODE_REPLAYED"));
    server.stop().await.unwrap();
}

async fn wrong_codes_lock_the_user_across_challenges(backend: Backend) {
    let (server, clock) = setup(backend).await;
    let session = user_with_session(&server, "guess@example.com").await;
    let mut enrollment = EnrollmentServiceClient::new(server.channel().await);
    let enrolled = enroll(&mut enrollment, &session.token, &clock).await;
    clock.advance(30);
    let mut auth = server.authentication().await;
    let right = code(&enrolled.app, &clock);
    let wrong = if right == "000000" {
        "111111"
    } else {
        "000000"
    };
    // Six wrong codes over six challenges: the per-user budget spans challenges.
    for i in 0..6 {
        let token = challenge(&server, "guess@example.com").await;
        let err = auth
            .verify_second_factor(verify(&token, wrong))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated, "attempt {i}");
    }
    // Locked out: even the right code is refused, with RetryInfo.
    let token = challenge(&server, "guess@example.com").await;
    let err = auth
        .verify_second_factor(verify(&token, &right))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert_eq!(reason(&err).as_deref(), Some("LOCKED_OUT"));
    {
        use tonic_types::StatusExt as _;
        let delay = err.get_details_retry_info().unwrap().retry_delay.unwrap();
        assert_eq!(
            delay,
            std::time::Duration::from_secs(30),
            "the first lockout"
        );
    }
    // After the delay the right code works.
    clock.advance(30);
    let token = challenge(&server, "guess@example.com").await;
    auth.verify_second_factor(verify(&token, &code(&enrolled.app, &clock)))
        .await
        .unwrap();
    // One challenge allows five codes only: the sixth is refused before it is compared, even
    // the right one (the per-user budget, five failures here, is not spent yet).
    let token = challenge(&server, "guess@example.com").await;
    for _ in 0..5 {
        let err = auth
            .verify_second_factor(verify(&token, wrong))
            .await
            .unwrap_err();
        assert_eq!(reason(&err).as_deref(), Some("INVALID_CODE"));
    }
    clock.advance(30);
    let err = auth
        .verify_second_factor(verify(&token, &code(&enrolled.app, &clock)))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert_eq!(reason(&err).as_deref(), Some("CHALLENGE_EXHAUSTED"));
    server.stop().await.unwrap();
}

async fn enrollment_required_at_login_then_the_confirmation_completes_it(backend: Backend) {
    let (server, clock) = setup(backend).await;
    let owner = user_with_session(&server, "owner@example.com").await;
    let mut orgs = server.organizations().await;
    let org = orgs
        .create_organization(v1::CreateOrganizationRequest {
            name: "Strict".into(),
            owner_user_id: owner.user_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .organization
        .unwrap();
    server
        .app
        .storage
        .organizations()
        .update_policy(
            org.id.parse().unwrap(),
            PolicyUpdate {
                mfa_required: true,
                allowed_methods: 0b001,
                sso_enabled: false,
                sso_mode: storage::entity::enums::SsoMode::Exempt,
                trusted_device_days: 0,
            },
            T0,
        )
        .await
        .unwrap();
    let response = server
        .authentication()
        .await
        .authenticate(login("owner@example.com"))
        .await
        .unwrap()
        .into_inner();
    let Some(authenticate_response::Result::EnrollmentRequired(required)) = response.result else {
        panic!("{response:?}")
    };
    // The enrollment token authorizes enrollment, and its confirmation returns the session.
    let mut enrollment = EnrollmentServiceClient::new(server.channel().await);
    let enrolled = enroll(&mut enrollment, &required.enrollment_token, &clock).await;
    let session = enrolled.session.expect("the login completes");
    assert_eq!(
        session.assurance_level,
        v1::AssuranceLevel::SecondFactor as i32
    );
    assert_eq!(session.organization_id, org.id);
    // The token is used up.
    let err = enrollment
        .begin_totp_enrollment(bearer(
            v1::BeginTotpEnrollmentRequest {
                label: "again".into(),
            },
            &required.enrollment_token,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    // No token at all, or a bad code: refused.
    let err = enrollment
        .list_factors(v1::ListFactorsRequest {})
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    server.stop().await.unwrap();
}

/// RFC 4226's secret gives time steps 910737 and 910738 the same six digits, 911617. Once
/// they have logged in as step 910737, the same digits are refused for the rest of that
/// step, though they are also the code of the step ahead (inside the window): a replay of
/// what was just typed must never pass, and a user whose clock runs a step ahead waits one
/// period in this rare case.
async fn the_digits_just_used_are_refused_though_the_step_ahead_shares_them(backend: Backend) {
    const SHARED: &str = "911617";
    let clock = Arc::new(ManualClock::new(910_737 * 30 + 7));
    let server = TestServer::start_with_clock(backend, Arc::clone(&clock)).await;
    let user_id: storage::Uuid = server
        .create_user("twice@example.com", PASSWORD)
        .await
        .id
        .parse()
        .unwrap();
    let now = server::Clock::now(&*clock);
    let factor = tollgate_e2e::active_totp(
        &server.app.storage,
        user_id,
        b"12345678901234567890",
        None,
        None,
        now,
    )
    .await;
    let factors = server.app.storage.factors();

    let mut auth = server.authentication().await;
    let token = challenge(&server, "twice@example.com").await;
    let ok = auth
        .verify_second_factor(verify(&token, SHARED))
        .await
        .unwrap()
        .into_inner();
    assert!(
        matches!(
            ok.result,
            Some(verify_second_factor_response::Result::Authenticated(_))
        ),
        "{ok:?}"
    );
    let token = challenge(&server, "twice@example.com").await;
    let err = auth
        .verify_second_factor(verify(&token, SHARED))
        .await
        .unwrap_err();
    assert_eq!(reason(&err).as_deref(), Some("CODE_REPLAYED"));
    let stored = factors.get(factor.id).await.unwrap().unwrap();
    assert_eq!(stored.last_step, Some(910_737));
    // In the next step the digits are that step's code, used by nobody yet.
    clock.advance(30);
    auth.verify_second_factor(verify(&token, SHARED))
        .await
        .unwrap();
    let stored = factors.get(factor.id).await.unwrap().unwrap();
    assert_eq!(stored.last_step, Some(910_738));
    server.stop().await.unwrap();
}

both!(
    journey_4_5_7_enroll_an_app_then_log_in_with_its_codes,
    a_code_is_accepted_once_even_by_concurrent_calls,
    wrong_codes_lock_the_user_across_challenges,
    enrollment_required_at_login_then_the_confirmation_completes_it,
    the_digits_just_used_are_refused_though_the_step_ahead_shares_them,
);
