//! Security rules through the API: no user enumeration, password throttling, caller
//! authentication by API key and by client certificate.

#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code: a panic is a failed test"
)]

use std::time::Duration;

use server::config::{ApiKeyConfig, TlsClientConfig};
use tollgate_e2e::{Backend, TestServer, both, reason, test_config};
use tollgate_proto::v1::user_service_client::UserServiceClient;
use tollgate_proto::v1::{self, authenticate_response};
use tonic::Code;
use tonic::metadata::MetadataValue;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
use tonic_types::StatusExt as _;

const PASSWORD: &str = "correct horse battery staple";

fn login(email: &str, password: &str) -> v1::AuthenticateRequest {
    tollgate_e2e::password_login(email, password, "")
}

async fn user(server: &TestServer, email: &str) {
    server.create_user(email, PASSWORD).await;
}

async fn an_unknown_email_looks_like_a_wrong_password(backend: Backend) {
    let server = TestServer::start(backend).await;
    user(&server, "alice@example.com").await;
    let mut auth = server.authentication().await;
    let passwords = &server.app.passwords;

    let before = passwords.verifications();
    let unknown = auth
        .authenticate(login("nobody@example.com", PASSWORD))
        .await
        .unwrap_err();
    let after_unknown = passwords.verifications();
    let wrong = auth
        .authenticate(login("alice@example.com", "wrong password here"))
        .await
        .unwrap_err();
    let after_wrong = passwords.verifications();

    // Same code, message and details…
    assert_eq!(unknown.code(), Code::Unauthenticated);
    assert_eq!(unknown.code(), wrong.code());
    assert_eq!(unknown.message(), wrong.message());
    assert_eq!(reason(&unknown), reason(&wrong));
    assert_eq!(reason(&unknown).as_deref(), Some("INVALID_CREDENTIALS"));
    // …and the same work: one full argon2id verification each (the unknown email against a
    // dummy hash with the same parameters), so the time is the same too.
    assert_eq!(after_unknown - before, 1);
    assert_eq!(after_wrong - after_unknown, 1);
    server.stop().await.unwrap();
}

async fn password_failures_lock_the_account_with_a_growing_delay(backend: Backend) {
    let server = TestServer::start(backend).await;
    user(&server, "bob@example.com").await;
    let mut auth = server.authentication().await;
    // Five free failures, then the sixth starts a 30 s lockout.
    for attempt in 1..=6 {
        let err = auth
            .authenticate(login("bob@example.com", "not the password"))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated, "attempt {attempt}");
        // The sixth says that it started the lockout, and for how long: 30 s from the
        // second the lockout starts, rounded up so that it never ends early.
        let retry = err.get_details_retry_info().and_then(|r| r.retry_delay);
        if attempt < 6 {
            assert_eq!(retry, None, "attempt {attempt}");
        } else {
            let retry = retry.unwrap().as_secs();
            assert!((30..=31).contains(&retry), "attempt {attempt}: {retry} s");
        }
    }
    // Locked: even the right password is refused, with RetryInfo, before it is checked.
    let before = server.app.passwords.verifications();
    let locked = auth
        .authenticate(login("bob@example.com", PASSWORD))
        .await
        .unwrap_err();
    assert_eq!(locked.code(), Code::ResourceExhausted);
    assert_eq!(reason(&locked).as_deref(), Some("LOCKED_OUT"));
    let retry = locked
        .get_details_retry_info()
        .unwrap()
        .retry_delay
        .unwrap();
    // The 30 s lockout starts at the second after the failure (never ending early), so the
    // wait is 30 s, or up to 31 s from within the second it began.
    assert!(
        retry > Duration::ZERO && retry <= Duration::from_secs(31),
        "{retry:?}"
    );
    assert_eq!(
        server.app.passwords.verifications(),
        before,
        "no verification while locked"
    );
    // A wrong password while locked gets the same answer: the lockout says nothing about it.
    let wrong = auth
        .authenticate(login("bob@example.com", "still wrong"))
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), Code::ResourceExhausted);
    // The lockout is recorded, and the next one would be longer.
    let throttle = server.app.throttle();
    assert!(throttle.lockout_after(7) > throttle.lockout_after(6));
    server.stop().await.unwrap();
}

fn with_key(
    key: &'static str,
) -> impl FnMut(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> + Clone {
    move |mut request: tonic::Request<()>| {
        request
            .metadata_mut()
            .insert("x-api-key", MetadataValue::from_static(key));
        Ok(request)
    }
}

async fn api_keys_authenticate_callers_and_scopes_limit_them(backend: Backend) {
    const WEB: &str = "web-frontend-key-0123456789abcdef0123456789";
    const READER: &str = "read-only-key-0123456789abcdef0123456789abc";
    let mut config = test_config();
    config.api_keys = vec![
        ApiKeyConfig {
            name: "web".into(),
            sha256: server::auth::hash_api_key(WEB),
            scopes: vec![
                "users:write".into(),
                "users:read".into(),
                "authentication".into(),
            ],
        },
        ApiKeyConfig {
            name: "reader".into(),
            sha256: server::auth::hash_api_key(READER),
            scopes: vec!["users:read".into()],
        },
    ];
    let server = TestServer::start_with(backend, config).await;
    let channel = server.channel().await;

    // No key, a wrong key: UNAUTHENTICATED, nothing written.
    let mut anonymous = UserServiceClient::new(channel.clone());
    let request = || v1::CreateUserRequest {
        email: "c@example.com".into(),
        password: PASSWORD.into(),
    };
    let err = anonymous.create_user(request()).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert_eq!(reason(&err).as_deref(), Some("CALLER_UNAUTHENTICATED"));
    let mut wrong = UserServiceClient::with_interceptor(
        channel.clone(),
        with_key("not-a-configured-key-at-all-000000000000"),
    );
    let err = wrong.create_user(request()).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert_eq!(reason(&err).as_deref(), Some("INVALID_API_KEY"));
    // A key without the scope: PERMISSION_DENIED.
    let mut reader = UserServiceClient::with_interceptor(channel.clone(), with_key(READER));
    let err = reader.create_user(request()).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert_eq!(reason(&err).as_deref(), Some("MISSING_SCOPE"));
    assert!(
        server
            .app
            .storage
            .users()
            .find_by_email("c@example.com")
            .await
            .unwrap()
            .is_none()
    );
    // The right key works, and the reader can then read.
    let mut web = UserServiceClient::with_interceptor(channel.clone(), with_key(WEB));
    let created = web
        .create_user(request())
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    let got = reader
        .get_user(v1::GetUserRequest {
            lookup: Some(v1::get_user_request::Lookup::UserId(created.id.clone())),
        })
        .await
        .unwrap();
    assert_eq!(got.into_inner().user.unwrap().email, "c@example.com");
    // Health needs no key: probes must work.
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let status = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap();
    assert_eq!(
        status.into_inner().status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    server.stop().await.unwrap();
}

struct Pki {
    ca_pem: String,
    server_cert: String,
    server_key: String,
    client_cert: String,
    client_key: String,
    client_der_sha256: String,
    stranger_cert: String,
    stranger_key: String,
}

fn pki() -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf = |names: Vec<String>| {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(names)
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        (cert, key)
    };
    let (server_cert, server_key) = leaf(vec!["localhost".into()]);
    let (client_cert, client_key) = leaf(vec!["billing.internal".into()]);
    let (stranger_cert, stranger_key) = leaf(vec!["stranger.internal".into()]);
    use sha2::Digest as _;
    Pki {
        ca_pem: ca.pem(),
        server_cert: server_cert.pem(),
        server_key: server_key.serialize_pem(),
        client_der_sha256: hex::encode(sha2::Sha256::digest(client_cert.der())),
        client_cert: client_cert.pem(),
        client_key: client_key.serialize_pem(),
        stranger_cert: stranger_cert.pem(),
        stranger_key: stranger_key.serialize_pem(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_identifies_callers_by_certificate() {
    let pki = pki();
    let dir = std::env::temp_dir().join(format!("tollgate-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let mut config = test_config();
    config.server.tls_cert_file = Some(write("server.pem", &pki.server_cert));
    config.server.tls_key_file = Some(write("server.key", &pki.server_key));
    config.server.tls_client_ca_file = Some(write("ca.pem", &pki.ca_pem));
    config.tls_clients = vec![TlsClientConfig {
        name: "billing".into(),
        sha256: pki.client_der_sha256.clone(),
        scopes: vec!["users:write".into()],
    }];
    let server = TestServer::start_with(Backend::Sqlite, config).await;
    let endpoint = |cert: &str, key: &str| {
        Endpoint::from_shared(format!("https://localhost:{}", server.addr.port()))
            .unwrap()
            .tls_config(
                ClientTlsConfig::new()
                    .ca_certificate(Certificate::from_pem(&pki.ca_pem))
                    .domain_name("localhost")
                    .identity(Identity::from_pem(cert, key)),
            )
            .unwrap()
    };
    // The configured client certificate: identified as "billing", with its scopes.
    let channel = endpoint(&pki.client_cert, &pki.client_key)
        .connect()
        .await
        .unwrap();
    let mut users = UserServiceClient::new(channel);
    users
        .create_user(v1::CreateUserRequest {
            email: "d@example.com".into(),
            password: PASSWORD.into(),
        })
        .await
        .unwrap();
    let err = users
        .get_user(v1::GetUserRequest {
            lookup: Some(v1::get_user_request::Lookup::Email("d@example.com".into())),
        })
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Code::PermissionDenied,
        "billing lacks users:read"
    );
    // A certificate from the same CA that is not configured: no identity.
    let channel = endpoint(&pki.stranger_cert, &pki.stranger_key)
        .connect()
        .await
        .unwrap();
    let err = UserServiceClient::new(channel)
        .create_user(v1::CreateUserRequest {
            email: "e@example.com".into(),
            password: PASSWORD.into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    // No client certificate at all: the handshake is refused.
    let bare = Endpoint::from_shared(format!("https://localhost:{}", server.addr.port()))
        .unwrap()
        .tls_config(
            ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(&pki.ca_pem))
                .domain_name("localhost"),
        )
        .unwrap();
    let refused = match bare.connect().await {
        Err(_) => true,
        Ok(channel) => UserServiceClient::new(channel)
            .create_user(v1::CreateUserRequest {
                email: "f@example.com".into(),
                password: PASSWORD.into(),
            })
            .await
            .is_err(),
    };
    assert!(refused);
    assert!(
        server
            .app
            .storage
            .users()
            .find_by_email("f@example.com")
            .await
            .unwrap()
            .is_none()
    );
    server.stop().await.unwrap();
    std::fs::remove_dir_all(dir).unwrap();
}

async fn a_session_is_only_issued_after_the_right_password(backend: Backend) {
    let server = TestServer::start(backend).await;
    user(&server, "g@example.com").await;
    let mut auth = server.authentication().await;
    for wrong in [
        "",
        " correct horse battery staple",
        "CORRECT HORSE BATTERY STAPLE",
    ] {
        assert!(
            auth.authenticate(login("g@example.com", wrong))
                .await
                .is_err(),
            "{wrong:?}"
        );
    }
    let none = storage::sea_orm::PaginatorTrait::count(
        <storage::entity::session::Entity as storage::sea_orm::EntityTrait>::find(),
        server.app.storage.db(),
    )
    .await
    .unwrap();
    assert_eq!(none, 0, "no session for a wrong password");
    let ok = auth
        .authenticate(login("G@EXAMPLE.COM", PASSWORD))
        .await
        .unwrap()
        .into_inner();
    assert!(matches!(
        ok.result,
        Some(authenticate_response::Result::Authenticated(_))
    ));
    let sessions = storage::sea_orm::PaginatorTrait::count(
        <storage::entity::session::Entity as storage::sea_orm::EntityTrait>::find(),
        server.app.storage.db(),
    )
    .await
    .unwrap();
    assert_eq!(sessions, 1);
    server.stop().await.unwrap();
}

async fn a_flood_of_logins_is_bounded_and_health_still_answers(backend: Backend) {
    let server = TestServer::start(backend).await;
    user(&server, "flood@example.com").await;
    let mut logins = Vec::new();
    for i in 0..24 {
        let mut auth = server.authentication().await;
        logins.push(tokio::spawn(async move {
            let password = if i % 2 == 0 {
                PASSWORD
            } else {
                "wrong password, wrong"
            };
            let _ = auth
                .authenticate(login("flood@example.com", password))
                .await;
        }));
    }
    // While they run, health checks are answered (they never wait for a hash).
    let mut health = tonic_health::pb::health_client::HealthClient::new(server.channel().await);
    for _ in 0..5 {
        let status = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: String::new(),
            })
            .await
            .unwrap();
        assert_eq!(
            status.into_inner().status,
            tonic_health::pb::health_check_response::ServingStatus::Serving as i32
        );
    }
    for login in logins {
        login.await.unwrap();
    }
    // Never more hashes at once than the limit (the number of cores by default).
    let (max, limit) = server.app.passwords.concurrency();
    assert!(
        max >= 1 && max <= limit as u64,
        "{max} at once, limit {limit}"
    );
    assert_eq!(
        limit,
        std::thread::available_parallelism().map_or(1, usize::from)
    );
    server.stop().await.unwrap();
}

/// The code of the test's app (seed `SEED`, SHA-1, 6 digits, 30 s) at the clock's time, and
/// a code that is surely wrong then.
fn app_codes(clock: &tollgate_e2e::ManualClock) -> (String, String) {
    let totp = otp_core::Totp::new(
        otp_core::Secret::from_bytes(SEED.to_vec()),
        otp_core::TotpParams::default(),
    )
    .unwrap();
    let now = u64::try_from(server::Clock::now(clock)).unwrap();
    let right = totp.generate(now).unwrap().to_string();
    let wrong = if right == "000000" {
        "000001"
    } else {
        "000000"
    };
    (right, wrong.to_owned())
}

const SEED: &[u8] = b"12345678901234567890";

/// A second-factor login of `email` with `code`: the password step, then the code.
async fn second_step(
    server: &TestServer,
    email: &str,
    code: &str,
) -> Result<v1::VerifySecondFactorResponse, tonic::Status> {
    let authenticate_response::Result::SecondFactorRequired(challenge) =
        server.first_step(login(email, PASSWORD)).await
    else {
        panic!("a second factor is required");
    };
    server
        .authentication()
        .await
        .verify_second_factor(tollgate_e2e::verify_code(&challenge.challenge_token, code))
        .await
        .map(tonic::Response::into_inner)
}

async fn kinds_of(server: &TestServer, user: storage::Uuid, kind: &str) -> usize {
    let filter = storage::repo::AuditFilter {
        subject_id: Some(user),
        kinds: vec![kind.to_owned()],
        ..Default::default()
    };
    server
        .app
        .storage
        .audit()
        .list(&filter, None, 1_000)
        .await
        .unwrap()
        .items
        .len()
}

/// At the defaults, 100 wrong codes in a row (each after its lockout ended) suspend the
/// user's code factors: the 100th answers FACTORS_SUSPENDED, and so does a right app code
/// after it, uncounted. The streak is audited once as a suspected password compromise (at
/// the first lockout) and once as the suspension, in metrics too. A recovery code still logs
/// in and lifts the suspension; an operator's unlock and an admin's reset lift it as well.
async fn guessing_is_bounded_in_total(backend: Backend) {
    let clock = std::sync::Arc::new(tollgate_e2e::ManualClock::new(1_800_000_000));
    let server = TestServer::start_with_clock(backend, std::sync::Arc::clone(&clock)).await;
    let email = "guessed@example.com";
    let user: storage::Uuid = server
        .create_user(email, PASSWORD)
        .await
        .id
        .parse()
        .unwrap();
    let config = &server.app.config.login;
    assert_eq!(config.max_consecutive_failures, 100, "the default");
    tollgate_e2e::active_totp(
        &server.app.storage,
        user,
        SEED,
        None,
        Some(&["AAAA-BBBB-CCCC-DDDD", "EEEE-FFFF-GGGG-HHHH"]),
        server::Clock::now(clock.as_ref()),
    )
    .await;
    for n in 1..=100 {
        // Past any lockout the last failure started.
        clock.advance(3_601);
        let (_, wrong) = app_codes(&clock);
        let status = second_step(&server, email, &wrong).await.unwrap_err();
        if n < 100 {
            assert_eq!(
                status.code(),
                Code::Unauthenticated,
                "failure {n}: {status:?}"
            );
            assert_eq!(reason(&status).as_deref(), Some("INVALID_CODE"));
            // The failure that starts a lockout says how long it lasts (30 s doubling to an
            // hour), so that the person learns of it before trying again.
            let retry = status.get_details_retry_info().and_then(|r| r.retry_delay);
            let expected =
                (n > 5).then(|| Duration::from_secs((30_u64 << (n - 6).min(7)).min(3_600)));
            assert_eq!(retry, expected, "failure {n}");
        } else {
            assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
            assert_eq!(reason(&status).as_deref(), Some("FACTORS_SUSPENDED"));
        }
    }
    // A right app code is not even compared now, nor counted.
    clock.advance(3_601);
    let (right, _) = app_codes(&clock);
    let status = second_step(&server, email, &right).await.unwrap_err();
    assert_eq!(
        reason(&status).as_deref(),
        Some("FACTORS_SUSPENDED"),
        "{status:?}"
    );
    let counter = server
        .app
        .storage
        .attempts()
        .get(&storage::repo::second_factor_counter(user))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(counter.failures, 100);
    assert_eq!(
        kinds_of(&server, user, "password.suspected_compromised").await,
        1
    );
    assert_eq!(kinds_of(&server, user, "factors.suspended").await, 1);
    // Failures 6 to 100 each started a lockout, audited with its count.
    assert_eq!(kinds_of(&server, user, "user.locked_out").await, 95);
    assert_eq!(server.app.metrics.passwords_suspected_compromised.get(), 1);
    assert_eq!(server.app.metrics.factors_suspended.get(), 1);

    // A recovery code logs in, and lifts the suspension.
    let answer = second_step(&server, email, "AAAA-BBBB-CCCC-DDDD")
        .await
        .unwrap();
    assert!(answer.result.is_some());
    clock.advance(30);
    let (right, _) = app_codes(&clock);
    second_step(&server, email, &right).await.unwrap();

    // Suspended again (as after 100 wrong codes), an operator's unlock lifts it.
    let suspend = |server: &TestServer| {
        let storage = server.app.storage.clone();
        async move {
            let never = storage::repo::Lockouts::new(0, &[]);
            for _ in 0..100 {
                storage
                    .attempts()
                    .record_failure(&storage::repo::second_factor_counter(user), 0, &never, None)
                    .await
                    .unwrap();
            }
        }
    };
    suspend(&server).await;
    clock.advance(30);
    let (right, _) = app_codes(&clock);
    let status = second_step(&server, email, &right).await.unwrap_err();
    assert_eq!(reason(&status).as_deref(), Some("FACTORS_SUSPENDED"));
    server::throttle::unlock(
        &server.app.storage,
        email,
        server::Clock::now(clock.as_ref()),
    )
    .await
    .unwrap();
    second_step(&server, email, &right).await.unwrap();

    // And a reset of the user's 2FA (an admin's, an own one) clears the count with the
    // factors it was counted against.
    suspend(&server).await;
    server
        .app
        .storage
        .factors()
        .reset(
            user,
            storage::repo::ResetPlan {
                org_id: None,
                must_reenroll: true,
                revoke: storage::repo::SessionsToRevoke::All,
            },
            storage::repo::AuditOf::by_caller("mfa.reset"),
            |_| "{}".to_owned(),
            server::Clock::now(clock.as_ref()),
        )
        .await
        .unwrap();
    let counter = server
        .app
        .storage
        .attempts()
        .get(&storage::repo::second_factor_counter(user))
        .await
        .unwrap();
    assert!(counter.is_none(), "{counter:?}");
    server.stop().await.unwrap();
}

both!(
    guessing_is_bounded_in_total,
    a_flood_of_logins_is_bounded_and_health_still_answers,
    an_unknown_email_looks_like_a_wrong_password,
    password_failures_lock_the_account_with_a_growing_delay,
    api_keys_authenticate_callers_and_scopes_limit_them,
    a_session_is_only_issued_after_the_right_password,
);
