//! Where logins come from: the client context's validation, and the failure budgets per
//! client address and network that stop password spraying, exact across replicas; on
//! SQLite and PostgreSQL.

#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code: a panic is a failed test"
)]

use std::sync::Arc;
use std::time::Duration;

use server::config::Config;
use tollgate_e2e::{Backend, TestServer, both, reason, test_config, violated_fields};
use tollgate_proto::v1::{self, authenticate_response};
use tonic::Code;
use tonic_types::StatusExt as _;

const PASSWORD: &str = "correct horse battery staple";

/// Budgets small enough to spend in a test: 10 failures per address, 15 per network, a
/// first lockout of 60 s.
fn config() -> Config {
    let mut config = test_config();
    config.clients.address_free_failures = 10;
    config.clients.network_free_failures = 15;
    config
}

fn login(email: &str, password: &str, ip: &str, user_agent: &str) -> v1::AuthenticateRequest {
    let mut request = tollgate_e2e::password_login(email, password, "");
    request.client_context = Some(v1::ClientContext {
        ip_address: ip.to_owned(),
        user_agent: user_agent.to_owned(),
    });
    request
}

/// What a login answered: "ok", or its reason.
async fn attempt(server: &TestServer, request: v1::AuthenticateRequest) -> String {
    answer(server.authentication().await.authenticate(request).await)
}

/// "ok" for a session, else the refusal's reason (a client lockout checked for RetryInfo).
fn answer(result: Result<tonic::Response<v1::AuthenticateResponse>, tonic::Status>) -> String {
    match result {
        Ok(response) => {
            assert!(matches!(
                response.into_inner().result,
                Some(authenticate_response::Result::Authenticated(_))
            ));
            "ok".to_owned()
        }
        Err(status) => {
            let reason = reason(&status).unwrap();
            if reason == "CLIENT_LOCKED_OUT" {
                assert_eq!(status.code(), Code::ResourceExhausted);
                let retry = status
                    .get_details_retry_info()
                    .unwrap()
                    .retry_delay
                    .unwrap();
                assert!(
                    retry > Duration::ZERO && retry <= Duration::from_secs(3_600),
                    "{retry:?}"
                );
            }
            reason
        }
    }
}

/// The wait a CLIENT_LOCKED_OUT refusal of `request` announces, in seconds.
async fn locked_for(server: &TestServer, request: v1::AuthenticateRequest) -> u64 {
    let status = server
        .authentication()
        .await
        .authenticate(request)
        .await
        .unwrap_err();
    assert_eq!(reason(&status).as_deref(), Some("CLIENT_LOCKED_OUT"));
    let retry = status
        .get_details_retry_info()
        .unwrap()
        .retry_delay
        .unwrap();
    retry.as_secs()
}

/// How many per-email password counters exist: an attempt refused for its client never
/// reaches one (nor the password hash that comes before it).
async fn email_counters(server: &TestServer) -> usize {
    use storage::sea_orm::EntityTrait as _;
    storage::entity::attempt_counter::Entity::find()
        .all(server.app.storage.db())
        .await
        .unwrap()
        .iter()
        .filter(|c| !c.key.starts_with("client:"))
        .count()
}

async fn spraying_from_one_address_is_stopped_while_another_logs_in(backend: Backend) {
    let server = TestServer::start_with(backend, config()).await;
    server.create_user("real@example.com", PASSWORD).await;
    for i in 0..5 {
        server
            .create_user(&format!("user{i}@example.com"), PASSWORD)
            .await;
    }
    // One password tried against 50 emails, known and unknown, from one address.
    let mut answers = Vec::new();
    for i in 0..50 {
        let email = format!("user{i}@example.com");
        answers.push(
            attempt(
                &server,
                login(&email, "Summer2026!!", "192.0.2.7", "spray/1.0"),
            )
            .await,
        );
    }
    let wrong = answers
        .iter()
        .filter(|a| *a == "INVALID_CREDENTIALS")
        .count();
    let locked = answers.iter().filter(|a| *a == "CLIENT_LOCKED_OUT").count();
    // Ten free failures, the eleventh starts the lockout (and is answered as a wrong
    // password), every one after is refused.
    assert_eq!((wrong, locked), (11, 39), "{answers:?}");
    assert!(answers[11..].iter().all(|a| a == "CLIENT_LOCKED_OUT"));
    assert_eq!(
        email_counters(&server).await,
        11,
        "refused before the password step"
    );
    // Even the right password, from there, waits.
    assert_eq!(
        attempt(
            &server,
            login("real@example.com", PASSWORD, "192.0.2.7", "")
        )
        .await,
        "CLIENT_LOCKED_OUT"
    );
    // Another address (another network too) logs in; so does a login without context.
    assert_eq!(
        attempt(
            &server,
            login("real@example.com", PASSWORD, "198.51.100.9", "")
        )
        .await,
        "ok"
    );
    let without = tollgate_e2e::password_login("real@example.com", PASSWORD, "");
    assert_eq!(attempt(&server, without).await, "ok");
    server.stop().await.unwrap();
}

async fn a_network_shares_a_budget_and_the_allowlist_is_exempt(backend: Backend) {
    let mut config = config();
    config.clients.allowlist = vec!["203.0.113.0/24".into(), "2001:db8:ffff::1".into()];
    let server = TestServer::start_with(backend, config).await;
    let wrong = |i: usize, ip: &str| login(&format!("n{i}@example.com"), "wrong password!", ip, "");
    // Ten from .7 (its address budget), then five from .8: the /24's fifteen are spent.
    for i in 0..10 {
        assert_eq!(
            attempt(&server, wrong(i, "192.0.2.7")).await,
            "INVALID_CREDENTIALS"
        );
    }
    for i in 10..16 {
        assert_eq!(
            attempt(&server, wrong(i, "192.0.2.8")).await,
            "INVALID_CREDENTIALS",
            "{i}"
        );
    }
    // .9 never failed, but its network is locked; the next /24 is not.
    assert_eq!(
        attempt(&server, wrong(20, "192.0.2.9")).await,
        "CLIENT_LOCKED_OUT"
    );
    assert_eq!(
        attempt(&server, wrong(21, "192.0.3.9")).await,
        "INVALID_CREDENTIALS"
    );
    // IPv6 counts by /56: two addresses of one /56 share it, and an IPv4-mapped address is
    // its IPv4 address.
    for i in 30..46 {
        let ip = if i % 2 == 0 {
            "2001:db8:1:100::1"
        } else {
            "2001:db8:1:1ff::2"
        };
        assert_eq!(
            attempt(&server, wrong(i, ip)).await,
            "INVALID_CREDENTIALS",
            "{i}"
        );
    }
    assert_eq!(
        attempt(&server, wrong(46, "2001:db8:1:180::3")).await,
        "CLIENT_LOCKED_OUT"
    );
    assert_eq!(
        attempt(&server, wrong(47, "2001:db8:1:200::3")).await,
        "INVALID_CREDENTIALS"
    );
    assert_eq!(
        attempt(&server, wrong(48, "::ffff:192.0.2.10")).await,
        "CLIENT_LOCKED_OUT"
    );
    // Allowlisted networks and addresses: never locked for their address (each email
    // is still throttled on its own).
    for i in 100..130 {
        assert_eq!(
            attempt(&server, wrong(i, "203.0.113.5")).await,
            "INVALID_CREDENTIALS",
            "{i}"
        );
        assert_eq!(
            attempt(&server, wrong(i + 100, "2001:db8:ffff::1")).await,
            "INVALID_CREDENTIALS"
        );
    }
    server.stop().await.unwrap();
}

/// A burst sent at once gets no more answers than the budget: the failures in flight after
/// the one that locked are refused as locked, and so is a right password settled after it.
async fn a_burst_gets_no_more_than_the_budget(backend: Backend) {
    let server = TestServer::start_with(backend, config()).await;
    server.create_user("burst@example.com", PASSWORD).await;
    let auth = server.authentication().await;
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..30 {
        let request = if i == 29 {
            login("burst@example.com", PASSWORD, "192.0.2.80", "")
        } else {
            login(
                &format!("b{i}@example.com"),
                "wrong password!",
                "192.0.2.80",
                "",
            )
        };
        let mut auth = auth.clone();
        calls.spawn(async move { answer(auth.authenticate(request).await) });
    }
    let answers = calls.join_all().await;
    let wrong = answers
        .iter()
        .filter(|a| *a == "INVALID_CREDENTIALS")
        .count();
    let ok = answers.iter().filter(|a| *a == "ok").count();
    // Exactly the budget's failures and the one that locked are answered, however the
    // burst interleaves; the right password only if it was settled before the lockout.
    assert_eq!(wrong, 11, "{answers:?}");
    assert!(ok <= 1, "{answers:?}");
    assert!(
        answers
            .iter()
            .all(|a| ["INVALID_CREDENTIALS", "CLIENT_LOCKED_OUT", "ok"].contains(&a.as_str())),
        "{answers:?}"
    );
    server.stop().await.unwrap();
}

async fn two_replicas_share_the_address_budget(backend: Backend) {
    let first = TestServer::start_with(backend, config()).await;
    let second = first.replica().await;
    let mut answers = Vec::new();
    for i in 0..14 {
        let server = if i % 2 == 0 { &first } else { &second };
        let request = login(
            &format!("r{i}@example.com"),
            "wrong password!",
            "192.0.2.50",
            "",
        );
        answers.push(attempt(server, request).await);
    }
    let expected: Vec<&str> = std::iter::repeat_n("INVALID_CREDENTIALS", 11)
        .chain(std::iter::repeat_n("CLIENT_LOCKED_OUT", 3))
        .collect();
    assert_eq!(answers, expected);
    second.stop().await.unwrap();
    first.stop().await.unwrap();
}

async fn a_quiet_window_forgets_and_a_lockout_ends(backend: Backend) {
    let clock = Arc::new(server::ManualClock::new(1_900_000_000));
    let server = TestServer::start_full(
        backend,
        config(),
        Arc::clone(&clock) as Arc<dyn server::Clock>,
    )
    .await;
    let wrong = |i: usize| {
        login(
            &format!("w{i}@example.com"),
            "wrong password!",
            "192.0.2.60",
            "",
        )
    };
    for i in 0..10 {
        assert_eq!(attempt(&server, wrong(i)).await, "INVALID_CREDENTIALS");
    }
    // An hour without failures (clients.window_secs): the count starts over, and the
    // clean-up deletes the counters that say nothing any more.
    clock.advance(3_600);
    let counters = server.app.storage.attempts();
    let keys = ["client:ip:192.0.2.60", "client:net:192.0.2.0/24"];
    server::clean_up_expired(&server.app).await.unwrap();
    for key in keys {
        assert!(counters.get(key).await.unwrap().is_none(), "{key}");
    }
    for i in 10..20 {
        assert_eq!(
            attempt(&server, wrong(i)).await,
            "INVALID_CREDENTIALS",
            "{i}"
        );
    }
    assert_eq!(attempt(&server, wrong(20)).await, "INVALID_CREDENTIALS");
    // The first lockout lasts 60 s (clients.base_lockout_secs); the next failure locks for
    // 120 s, the one after for 240 s.
    assert!((60..=61).contains(&locked_for(&server, wrong(21)).await));
    clock.advance(61);
    assert_eq!(attempt(&server, wrong(22)).await, "INVALID_CREDENTIALS");
    assert!((120..=121).contains(&locked_for(&server, wrong(23)).await));
    clock.advance(61);
    assert!((59..=60).contains(&locked_for(&server, wrong(24)).await));
    clock.advance(60);
    assert_eq!(attempt(&server, wrong(25)).await, "INVALID_CREDENTIALS");
    assert!((240..=241).contains(&locked_for(&server, wrong(26)).await));
    // Counters in use stay (the address's locked now).
    server::clean_up_expired(&server.app).await.unwrap();
    for key in keys {
        assert!(counters.get(key).await.unwrap().is_some(), "{key}");
    }
    let address = counters.get(keys[0]).await.unwrap().unwrap();
    assert!(
        address
            .locked_until
            .is_some_and(|until| until > clock_now(&clock))
    );
    server.stop().await.unwrap();
}

async fn bad_context_names_its_field_and_counts_nothing(backend: Backend) {
    let server = TestServer::start_with(backend, config()).await;
    server.create_user("ctx@example.com", PASSWORD).await;
    let mut auth = server.authentication().await;
    for (ip, user_agent, fields) in [
        ("192.0.2.7:443", "", vec!["client_context.ip_address"]),
        ("fe80::1%eth0", "", vec!["client_context.ip_address"]),
        ("192.0.2.7", "a\u{7}b", vec!["client_context.user_agent"]),
        (
            "nope",
            &*"x".repeat(513),
            vec!["client_context.ip_address", "client_context.user_agent"],
        ),
    ] {
        let err = auth
            .authenticate(login("ctx@example.com", "wrong password!", ip, user_agent))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{ip}");
        assert_eq!(violated_fields(&err), fields, "{ip}");
    }
    assert_eq!(email_counters(&server).await, 0, "nothing was counted");
    // 512 printable characters are fine.
    let long = "é".repeat(512);
    assert_eq!(
        attempt(
            &server,
            login("ctx@example.com", PASSWORD, "2001:db8::7", &long)
        )
        .await,
        "ok"
    );
    server.stop().await.unwrap();

    // A server that requires the context refuses a login without an address.
    let mut config = config();
    config.clients.require_context = true;
    let server = TestServer::start_with(backend, config).await;
    server.create_user("ctx@example.com", PASSWORD).await;
    let err = server
        .authentication()
        .await
        .authenticate(tollgate_e2e::password_login(
            "ctx@example.com",
            PASSWORD,
            "",
        ))
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&err), ["client_context.ip_address"]);
    assert_eq!(
        attempt(&server, login("ctx@example.com", PASSWORD, "192.0.2.1", "")).await,
        "ok"
    );
    server.stop().await.unwrap();
}

fn context(ip: &str, user_agent: &str) -> Option<v1::ClientContext> {
    Some(v1::ClientContext {
        ip_address: ip.to_owned(),
        user_agent: user_agent.to_owned(),
    })
}

fn clock_now(clock: &server::ManualClock) -> i64 {
    server::Clock::now(clock)
}

/// The newest audit event of `kind`.
async fn last_event(server: &TestServer, kind: &str) -> storage::entity::audit_event::Model {
    let filter = storage::repo::AuditFilter {
        kinds: vec![kind.to_owned()],
        ..Default::default()
    };
    let audit = server.app.storage.audit();
    let mut page = audit.list(&filter, None, 1).await.unwrap();
    page.items.pop().unwrap()
}

/// The calls that take a client context beside a login (an enrollment's confirmation, the
/// admin RPCs) keep it on their events, and so does the lockout a failed login starts; a
/// malformed one names its field and changes nothing.
async fn the_calls_around_a_login_keep_their_client_on_their_events(backend: Backend) {
    use tollgate_proto::v1::enrollment_service_client::EnrollmentServiceClient;
    let server = TestServer::start_with(backend, config()).await;
    let owner = server.create_user("owner@example.com", PASSWORD).await.id;
    let mia = server.create_user("mia@example.com", PASSWORD).await.id;
    let org = server.organization("Acme", &owner, &[&mia]).await;
    let mut orgs = server.organizations().await;
    let session = |email: &'static str| {
        let request = tollgate_e2e::password_login(email, PASSWORD, &org);
        let server = &server;
        async move {
            match server.first_step(request).await {
                authenticate_response::Result::Authenticated(s) => s.token,
                other => panic!("{other:?}"),
            }
        }
    };
    let mia_session = session("mia@example.com").await;
    let mut enrollment = EnrollmentServiceClient::new(server.channel().await);

    // An enrollment's confirmation: its events keep the client.
    let begun = enrollment
        .begin_totp_enrollment(tollgate_e2e::bearer(
            v1::BeginTotpEnrollmentRequest {
                label: "app".into(),
            },
            &mia_session,
        ))
        .await
        .unwrap()
        .into_inner();
    let totp = otp_core::OtpAuthUri::parse(&begun.otpauth_uri)
        .unwrap()
        .to_totp(otp_core::TotpParams::default())
        .unwrap()
        .unwrap();
    let now = u64::try_from(server::Clock::now(&*server.app.clock)).unwrap();
    let confirm = |client| v1::ConfirmTotpEnrollmentRequest {
        factor_id: begun.factor.as_ref().unwrap().id.clone(),
        code: totp.generate(now).unwrap().to_string(),
        replaces_factor_id: String::new(),
        client_context: client,
    };
    // Every confirmation checks it before anything else is looked at.
    let long = "x".repeat(513);
    let id = storage::Uuid::now_v7().to_string();
    let refusals = [
        enrollment
            .confirm_hotp_enrollment(tollgate_e2e::bearer(
                v1::ConfirmHotpEnrollmentRequest {
                    factor_id: id.clone(),
                    code: "123456".into(),
                    replaces_factor_id: String::new(),
                    client_context: context("", &long),
                },
                &mia_session,
            ))
            .await
            .unwrap_err(),
        enrollment
            .confirm_sms_enrollment(tollgate_e2e::bearer(
                v1::ConfirmSmsEnrollmentRequest {
                    factor_id: id.clone(),
                    code: "123456".into(),
                    replaces_factor_id: String::new(),
                    client_context: context("", &long),
                },
                &mia_session,
            ))
            .await
            .unwrap_err(),
        enrollment
            .confirm_web_authn_registration(tollgate_e2e::bearer(
                v1::ConfirmWebAuthnRegistrationRequest {
                    factor_id: id.clone(),
                    registration_response_json: "{}".into(),
                    replaces_factor_id: String::new(),
                    client_context: context("", &long),
                },
                &mia_session,
            ))
            .await
            .unwrap_err(),
    ];
    for refused in refusals {
        assert_eq!(refused.code(), Code::InvalidArgument);
        assert_eq!(violated_fields(&refused), ["client_context.user_agent"]);
    }

    let refused = enrollment
        .confirm_totp_enrollment(tollgate_e2e::bearer(
            confirm(context("not an address", "")),
            &mia_session,
        ))
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&refused), ["client_context.ip_address"]);
    let listed = enrollment
        .list_factors(tollgate_e2e::bearer(
            v1::ListFactorsRequest {},
            &mia_session,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        listed.factors[0].status,
        v1::FactorStatus::Pending as i32,
        "nothing changed"
    );
    enrollment
        .confirm_totp_enrollment(tollgate_e2e::bearer(
            confirm(context("203.0.113.5", "Confirm/1")),
            &mia_session,
        ))
        .await
        .unwrap();
    for kind in ["factor.enrolled", "recovery_codes.issued"] {
        let event = last_event(&server, kind).await;
        assert_eq!(event.client_ip.as_deref(), Some("203.0.113.5"), "{kind}");
        assert_eq!(event.client_user_agent.as_deref(), Some("Confirm/1"));
    }
    // The admin RPCs: a policy change and a member's reset.
    let owner_session = session("owner@example.com").await;
    let policy = |client| v1::UpdateMfaPolicyRequest {
        organization_id: org.clone(),
        policy: Some(v1::MfaPolicy {
            trusted_device_days: 7,
            ..Default::default()
        }),
        update_mask: None,
        password: PASSWORD.into(),
        client_context: client,
    };
    let refused = orgs
        .update_mfa_policy(tollgate_e2e::bearer(
            policy(context("2001:db8::1%eth0", "")),
            &owner_session,
        ))
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&refused), ["client_context.ip_address"]);
    let read = orgs
        .get_organization(v1::GetOrganizationRequest {
            organization_id: org.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let unchanged = read.organization.unwrap().mfa_policy.unwrap();
    assert_eq!(unchanged.trusted_device_days, 0);
    orgs.update_mfa_policy(tollgate_e2e::bearer(
        policy(context("2001:db8::1", "Admin/2")),
        &owner_session,
    ))
    .await
    .unwrap();
    let event = last_event(&server, "mfa_policy.updated").await;
    assert_eq!(event.client_ip.as_deref(), Some("2001:db8::1"));
    assert_eq!(event.client_user_agent.as_deref(), Some("Admin/2"));
    let reset = |client| v1::ResetMemberMfaRequest {
        organization_id: org.clone(),
        user_id: mia.clone(),
        client_context: client,
    };
    let refused = orgs
        .reset_member_mfa(tollgate_e2e::bearer(
            reset(context("10.0.0.300", "")),
            &owner_session,
        ))
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&refused), ["client_context.ip_address"]);
    let mia_id = mia.parse().unwrap();
    let factors = server.app.storage.factors();
    assert_eq!(factors.of_user(mia_id, true).await.unwrap().len(), 1);
    orgs.reset_member_mfa(tollgate_e2e::bearer(
        reset(context("198.51.100.9", "Admin/2")),
        &owner_session,
    ))
    .await
    .unwrap();
    assert!(factors.of_user(mia_id, true).await.unwrap().is_empty());
    let event = last_event(&server, "member.mfa_reset").await;
    assert_eq!(event.client_ip.as_deref(), Some("198.51.100.9"));

    // The lockout a wrong password starts keeps the failing login's client.
    let free = server.app.config.login.free_failures;
    for _ in 0..=free {
        let wrong = login(
            "mia@example.com",
            "wrong password!!",
            "192.0.2.99",
            "Guess/1",
        );
        let answer = attempt(&server, wrong).await;
        assert_eq!(answer, "INVALID_CREDENTIALS");
    }
    let event = last_event(&server, "user.locked_out").await;
    assert_eq!(event.client_ip.as_deref(), Some("192.0.2.99"));
    assert_eq!(event.client_user_agent.as_deref(), Some("Guess/1"));

    // So do the events wrong codes write (the lockout, the suspected password).
    let ned = server.create_user("ned@example.com", PASSWORD).await.id;
    let seed = b"12345678901234567890";
    let now = server::Clock::now(&*server.app.clock);
    tollgate_e2e::active_totp(
        &server.app.storage,
        ned.parse().unwrap(),
        seed,
        None,
        None,
        now,
    )
    .await;
    let app = otp_core::Totp::new(
        otp_core::Secret::from_bytes(seed.to_vec()),
        otp_core::TotpParams::default(),
    )
    .unwrap();
    let at = u64::try_from(now).unwrap();
    let valid: Vec<String> = [at - 60, at - 30, at, at + 30, at + 60]
        .iter()
        .map(|t| app.generate(*t).unwrap().to_string())
        .collect();
    let wrong = ["000000", "111111", "222222"]
        .into_iter()
        .find(|code| !valid.iter().any(|v| v == code))
        .unwrap();
    for _ in 0..=free {
        let challenge = match server
            .first_step(tollgate_e2e::password_login(
                "ned@example.com",
                PASSWORD,
                "",
            ))
            .await
        {
            authenticate_response::Result::SecondFactorRequired(c) => c.challenge_token,
            other => panic!("{other:?}"),
        };
        let request = v1::VerifySecondFactorRequest {
            client_context: context("192.0.2.77", "Codes/1"),
            ..tollgate_e2e::verify_code(&challenge, wrong)
        };
        let refused = server
            .authentication()
            .await
            .verify_second_factor(request)
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::Unauthenticated);
    }
    for kind in ["user.locked_out", "password.suspected_compromised"] {
        let event = last_event(&server, kind).await;
        assert_eq!(event.subject_id.map(|id| id.to_string()), Some(ned.clone()));
        assert_eq!(event.client_ip.as_deref(), Some("192.0.2.77"), "{kind}");
        assert_eq!(event.client_user_agent.as_deref(), Some("Codes/1"));
    }
}

both!(
    spraying_from_one_address_is_stopped_while_another_logs_in,
    a_network_shares_a_budget_and_the_allowlist_is_exempt,
    two_replicas_share_the_address_budget,
    a_burst_gets_no_more_than_the_budget,
    a_quiet_window_forgets_and_a_lockout_ends,
    bad_context_names_its_field_and_counts_nothing,
    the_calls_around_a_login_keep_their_client_on_their_events,
);
