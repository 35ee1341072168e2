//! Two replicas on one database, as a deployment runs them behind a load balancer: each with
//! its own connections, socket and hashing threads. What must be exact across replicas (the
//! replay guard, recovery codes, the failure budgets) holds when both are asked at the same
//! moment, and a challenge or session from one is honoured, or revoked, by the other. On
//! PostgreSQL (the engine for replicas) and on SQLite (two servers on one file).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code: a panic is a failed test"
)]

use std::collections::BTreeMap;
use std::sync::Arc;

use otp_core::{Secret, Totp, TotpParams};
use tollgate_e2e::{Backend, ManualClock, TestServer, both, reason, verify_code as verify};
use tollgate_proto::v1::{self, authenticate_response, verify_second_factor_response};
use tonic::Code;

const PASSWORD: &str = "correct horse battery staple";
/// RFC 6238's SHA-1 seed.
const SEED: &[u8] = b"12345678901234567890";
const T0: i64 = 1_800_000_000;

/// Replica `a` and replica `b` of one deployment, the clock they share, and a user of theirs
/// with an authenticator app on `SEED` (its enrollment step used) and two recovery codes.
struct Deployment {
    a: TestServer,
    b: TestServer,
    clock: Arc<ManualClock>,
    app: Totp,
    user: storage::Uuid,
}

const EMAIL: &str = "replicated@example.com";
const RECOVERY: [&str; 2] = ["RPLA-AAAA-BBBB-CCCC", "RPLB-DDDD-EEEE-FFFF"];

impl Deployment {
    async fn start(backend: Backend) -> Self {
        let clock = Arc::new(ManualClock::new(T0));
        let a = TestServer::start_with_clock(backend, Arc::clone(&clock)).await;
        let b = a.replica().await;
        assert_ne!(a.addr, b.addr);
        let user: storage::Uuid = a.create_user(EMAIL, PASSWORD).await.id.parse().unwrap();
        let step = T0 / 30;
        tollgate_e2e::active_totp(&a.app.storage, user, SEED, Some(step), Some(&RECOVERY), T0)
            .await;
        let app = Totp::new(Secret::from_bytes(SEED.to_vec()), TotpParams::default()).unwrap();
        Self {
            a,
            b,
            clock,
            app,
            user,
        }
    }

    fn code_now(&self) -> String {
        let now = u64::try_from(server::Clock::now(&*self.clock)).unwrap();
        self.app.generate(now).unwrap().to_string()
    }

    /// A code that is none of the codes the app accepts now (this step or either neighbour).
    fn wrong_code(&self) -> String {
        let now = u64::try_from(server::Clock::now(&*self.clock)).unwrap();
        let accepted: Vec<String> = [now - 30, now, now + 30]
            .iter()
            .map(|&t| self.app.generate(t).unwrap().to_string())
            .collect();
        ["000000", "111111", "222222", "333333"]
            .into_iter()
            .find(|code| !accepted.iter().any(|a| a == code))
            .unwrap()
            .to_owned()
    }

    /// The user's second-factor failure counter: (failures, locked until).
    async fn second_factor_counter(&self) -> Option<(i64, Option<i64>)> {
        self.a
            .app
            .storage
            .attempts()
            .get(&server::throttle::second_factor_key(self.user))
            .await
            .unwrap()
            .map(|c| (c.failures, c.locked_until))
    }

    /// The password step on `server`: a second-factor challenge.
    async fn challenge(server: &TestServer) -> String {
        match server.first_step(login(PASSWORD)).await {
            authenticate_response::Result::SecondFactorRequired(c) => c.challenge_token,
            other => panic!("expected a challenge: {other:?}"),
        }
    }

    /// The password step on `from`, then `code` on `to`: the second step's answer.
    async fn log_in(
        from: &TestServer,
        to: &TestServer,
        code: &str,
    ) -> Result<v1::VerifySecondFactorResponse, tonic::Status> {
        let token = Self::challenge(from).await;
        to.authentication()
            .await
            .verify_second_factor(verify(&token, code))
            .await
            .map(tonic::Response::into_inner)
    }

    async fn stop(self) {
        self.b.stop().await.unwrap();
        self.a.stop().await.unwrap();
    }
}

/// The right password on `server` is refused: LOCKED_OUT.
async fn assert_locked_out(server: &TestServer) {
    let err = server
        .authentication()
        .await
        .authenticate(login(PASSWORD))
        .await
        .unwrap_err();
    assert_eq!(reason(&err).as_deref(), Some("LOCKED_OUT"));
}

fn login(password: &str) -> v1::AuthenticateRequest {
    tollgate_e2e::password_login(EMAIL, password, "")
}

/// Sends `code` to both replicas at once, each on a challenge of its own, and returns what
/// each answered.
async fn race(
    d: &Deployment,
    code: &str,
) -> [Result<v1::VerifySecondFactorResponse, tonic::Status>; 2] {
    let (token_a, token_b) = (
        Deployment::challenge(&d.a).await,
        Deployment::challenge(&d.b).await,
    );
    let (mut auth_a, mut auth_b) = (d.a.authentication().await, d.b.authentication().await);
    let (ra, rb) = tokio::join!(
        auth_a.verify_second_factor(verify(&token_a, code)),
        auth_b.verify_second_factor(verify(&token_b, code)),
    );
    [ra, rb].map(|r| r.map(tonic::Response::into_inner))
}

/// The one success of a race and the error of the other.
fn one_winner(
    results: [Result<v1::VerifySecondFactorResponse, tonic::Status>; 2],
) -> (v1::VerifySecondFactorResponse, tonic::Status) {
    match results {
        [Ok(won), Err(lost)] | [Err(lost), Ok(won)] => (won, lost),
        other => panic!("expected exactly one success: {other:?}"),
    }
}

async fn a_code_raced_to_both_replicas_logs_in_once(backend: Backend) {
    let d = Deployment::start(backend).await;
    let factors = d.a.app.storage.factors();
    // Several steps, so that the two calls overlap in more than one way.
    for round in 0..5 {
        d.clock.advance(30);
        let code = d.code_now();
        let (won, lost) = one_winner(race(&d, &code).await);
        assert!(
            matches!(
                won.result,
                Some(verify_second_factor_response::Result::Authenticated(_))
            ),
            "round {round}: {won:?}"
        );
        assert_eq!(
            reason(&lost).as_deref(),
            Some("CODE_REPLAYED"),
            "round {round}: {lost:?}"
        );
        let stored = factors.of_user(d.user, true).await.unwrap();
        assert_eq!(stored.len(), 1);
        assert_eq!(
            stored[0].last_step,
            Some(server::Clock::now(&*d.clock) / 30),
            "round {round}: the step is recorded once, as used"
        );
    }
    // Each loser's replay counts as a failed attempt (five here, inside the budget): the next
    // code still logs in, the challenge from one replica and the code on the other.
    d.clock.advance(30);
    Deployment::log_in(&d.b, &d.a, &d.code_now()).await.unwrap();
    d.stop().await;
}

async fn a_recovery_code_raced_to_both_replicas_is_spent_once(backend: Backend) {
    let d = Deployment::start(backend).await;
    let (won, lost) = one_winner(race(&d, RECOVERY[0]).await);
    assert!(
        matches!(
            won.result,
            Some(verify_second_factor_response::Result::Authenticated(_))
        ),
        "{won:?}"
    );
    assert_eq!(won.recovery_codes_remaining, 1);
    assert_eq!(lost.code(), Code::Unauthenticated);
    // The loser presented a code that is now used: a replay, as for an app code's step.
    assert_eq!(reason(&lost).as_deref(), Some("CODE_REPLAYED"));
    // Spent on both: typed again on either replica, it is refused; the other code still works.
    for server in [&d.a, &d.b] {
        let err = Deployment::log_in(server, server, RECOVERY[0])
            .await
            .unwrap_err();
        assert_eq!(reason(&err).as_deref(), Some("CODE_REPLAYED"));
    }
    let ok = Deployment::log_in(&d.a, &d.b, RECOVERY[1]).await.unwrap();
    assert_eq!(ok.recovery_codes_remaining, 0);
    d.stop().await;
}

async fn wrong_codes_on_either_replica_spend_one_budget(backend: Backend) {
    let d = Deployment::start(backend).await;
    d.clock.advance(30);
    let right = d.code_now();
    let wrong = if right == "000000" {
        "111111"
    } else {
        "000000"
    };
    // Six wrong codes, taking turns between the replicas: one budget, as on one server.
    for attempt in 0..6 {
        let server = if attempt % 2 == 0 { &d.a } else { &d.b };
        let err = Deployment::log_in(server, server, wrong).await.unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated, "attempt {attempt}");
    }
    // Locked out on both: even the right code is refused.
    for server in [&d.a, &d.b] {
        let err = Deployment::log_in(server, server, &right)
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::ResourceExhausted);
        assert_eq!(reason(&err).as_deref(), Some("LOCKED_OUT"));
    }
    // The lockout ends for both at once.
    d.clock.advance(30);
    Deployment::log_in(&d.b, &d.b, &d.code_now()).await.unwrap();
    d.stop().await;
}

async fn wrong_passwords_on_either_replica_spend_one_budget(backend: Backend) {
    let d = Deployment::start(backend).await;
    for attempt in 0..6 {
        let server = if attempt % 2 == 0 { &d.a } else { &d.b };
        let err = server
            .authentication()
            .await
            .authenticate(login("not the password"))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated, "attempt {attempt}");
        assert_eq!(reason(&err).as_deref(), Some("INVALID_CREDENTIALS"));
    }
    for server in [&d.a, &d.b] {
        let before = server.app.passwords.verifications();
        assert_locked_out(server).await;
        assert_eq!(
            server.app.passwords.verifications(),
            before,
            "refused before the password is hashed"
        );
    }
    d.stop().await;
}

/// How many requests a burst sends at once, half to each replica.
const BURST: usize = 24;

/// Runs `BURST` calls released at one moment, and counts their answers by reason.
async fn burst<F, Fut>(calls: Vec<F>) -> BTreeMap<String, usize>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), tonic::Status>> + Send + 'static,
{
    let barrier = Arc::new(tokio::sync::Barrier::new(calls.len()));
    let tasks: Vec<_> = calls
        .into_iter()
        .map(|call| {
            let barrier = Arc::clone(&barrier);
            tokio::spawn(async move {
                barrier.wait().await;
                call().await
            })
        })
        .collect();
    let mut answers = BTreeMap::new();
    for task in tasks {
        let answer = match task.await.unwrap() {
            Ok(()) => "OK".to_owned(),
            Err(status) => reason(&status).unwrap_or_else(|| format!("{status:?}")),
        };
        *answers.entry(answer).or_insert(0) += 1;
    }
    answers
}

/// A burst's answers: the budget's six with `answered`, every other one LOCKED_OUT.
#[track_caller]
fn only_the_budget_answered(answers: &BTreeMap<String, usize>, answered: &str) {
    assert_eq!(
        *answers,
        BTreeMap::from([
            (answered.to_owned(), 6),
            ("LOCKED_OUT".to_owned(), BURST - 6)
        ])
    );
}

/// Wrong codes sent all at once, each on a login challenge of its own (so no challenge's
/// own limit of five stops them), half to each replica: the budget's six are compared and
/// answered, every other one is refused as locked out — whether it came before the lockout
/// was written or after — and the right code right after is refused too. The budget is a
/// budget of guesses, not of guesses per moment.
async fn a_burst_of_wrong_codes_gets_only_the_budget_answered(backend: Backend) {
    let d = Deployment::start(backend).await;
    d.clock.advance(30);
    let wrong = d.wrong_code();
    let mut calls = Vec::new();
    for i in 0..BURST {
        let server = if i % 2 == 0 { &d.a } else { &d.b };
        let token = Deployment::challenge(server).await;
        let mut client = server.authentication().await;
        let wrong = wrong.clone();
        calls.push(move || async move {
            client
                .verify_second_factor(verify(&token, &wrong))
                .await
                .map(drop)
        });
    }
    only_the_budget_answered(&burst(calls).await, "INVALID_CODE");
    // Six failures on record, the sixth's lockout in force: nothing else was counted.
    let now = server::Clock::now(&*d.clock);
    assert_eq!(d.second_factor_counter().await, Some((6, Some(now + 30))));
    for server in [&d.a, &d.b] {
        let err = Deployment::log_in(server, server, &d.code_now())
            .await
            .unwrap_err();
        assert_eq!(reason(&err).as_deref(), Some("LOCKED_OUT"));
    }
    // When the lockout is over, the right code logs in and clears the count.
    d.clock.advance(30);
    Deployment::log_in(&d.a, &d.b, &d.code_now()).await.unwrap();
    assert_eq!(d.second_factor_counter().await, None);
    d.stop().await;
}

/// Wrong passwords sent all at once, half to each replica: six are hashed and answered
/// INVALID_CREDENTIALS, the rest LOCKED_OUT, and the right password after them is refused.
async fn a_burst_of_wrong_passwords_gets_only_the_budget_answered(backend: Backend) {
    let d = Deployment::start(backend).await;
    let mut calls = Vec::new();
    for i in 0..BURST {
        let server = if i % 2 == 0 { &d.a } else { &d.b };
        let mut client = server.authentication().await;
        calls.push(move || async move {
            client
                .authenticate(login(&format!("guess number {i}")))
                .await
                .map(drop)
        });
    }
    only_the_budget_answered(&burst(calls).await, "INVALID_CREDENTIALS");
    for server in [&d.a, &d.b] {
        assert_locked_out(server).await;
    }
    d.clock.advance(30);
    Deployment::challenge(&d.b).await;
    d.stop().await;
}

async fn challenges_and_sessions_from_one_replica_hold_on_the_other(backend: Backend) {
    let d = Deployment::start(backend).await;
    d.clock.advance(30);
    // The password step on A, the code on B.
    let token = Deployment::challenge(&d.a).await;
    let done =
        d.b.authentication()
            .await
            .verify_second_factor(verify(&token, &d.code_now()))
            .await
            .unwrap()
            .into_inner();
    let Some(verify_second_factor_response::Result::Authenticated(session)) = done.result else {
        panic!("{done:?}")
    };
    // The challenge is used up on A too.
    let err =
        d.a.authentication()
            .await
            .verify_second_factor(verify(&token, &d.code_now()))
            .await
            .unwrap_err();
    assert_eq!(reason(&err).as_deref(), Some("CHALLENGE_INVALID"));
    // B's session is valid on A, with its assurance; revoked on A, it is gone on B.
    let valid =
        d.a.sessions()
            .await
            .validate_session(v1::ValidateSessionRequest {
                token: session.token.clone(),
            })
            .await
            .unwrap()
            .into_inner();
    assert_eq!(valid.user_id, d.user.to_string());
    assert_eq!(
        valid.assurance_level,
        v1::AssuranceLevel::SecondFactor as i32
    );
    d.a.sessions()
        .await
        .revoke_session(v1::RevokeSessionRequest {
            token: session.token.clone(),
        })
        .await
        .unwrap();
    let err =
        d.b.sessions()
            .await
            .validate_session(v1::ValidateSessionRequest {
                token: session.token,
            })
            .await
            .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert_eq!(reason(&err).as_deref(), Some("SESSION_INVALID"));
    d.stop().await;
}

/// A replica whose clock runs ahead of the database server's (and so of its peers') would end
/// lockouts early and expire sessions too soon: beyond `health.max_clock_skew_secs` it
/// reports NOT_SERVING and refuses calls (UNAVAILABLE, CLOCK_SKEW), while a replica with the
/// right clock on the same database serves. The skew is in the metrics.
async fn a_replica_whose_clock_is_off_stops_serving(backend: Backend) {
    use tonic_health::pb::health_check_response::ServingStatus;
    let mut config = tollgate_e2e::test_config();
    config.health.max_clock_skew_secs = 5;
    let config = Arc::new(config);
    let right =
        TestServer::start_full(backend, (*config).clone(), Arc::new(server::SystemClock)).await;
    let system_now = server::Clock::now(&server::SystemClock);
    let ahead = right
        .replica_with(
            Arc::clone(&config),
            Arc::new(ManualClock::new(system_now + 120)),
        )
        .await;
    let health = async |server: &TestServer| {
        let mut client = tonic_health::pb::health_client::HealthClient::new(server.channel().await);
        client
            .check(tonic_health::pb::HealthCheckRequest::default())
            .await
            .unwrap()
            .into_inner()
            .status()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    // NOT_SERVING for the skew itself (a replica also starts out NOT_SERVING until its
    // first check), and the right one serving.
    while ahead.app.db_health.refusal() != Some(server::health::Refusal::ClockSkew)
        || health(&ahead).await != ServingStatus::NotServing
        || health(&right).await != ServingStatus::Serving
    {
        assert!(std::time::Instant::now() < deadline, "health never settled");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let err = ahead
        .users()
        .await
        .get_user(v1::GetUserRequest {
            lookup: Some(v1::get_user_request::Lookup::Email("x@example.com".into())),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert_eq!(reason(&err).as_deref(), Some("CLOCK_SKEW"));
    // The replica with the right clock serves.
    right.create_user("clock@example.com", PASSWORD).await;
    let skew = ahead.app.metrics.clock_skew_seconds.get();
    assert!((115..=125).contains(&skew), "{skew}");
    assert!(right.app.metrics.clock_skew_seconds.get().abs() <= 5);
    ahead.stop().await.unwrap();
    right.stop().await.unwrap();
}

both!(
    a_replica_whose_clock_is_off_stops_serving,
    a_code_raced_to_both_replicas_logs_in_once,
    a_recovery_code_raced_to_both_replicas_is_spent_once,
    wrong_codes_on_either_replica_spend_one_budget,
    wrong_passwords_on_either_replica_spend_one_budget,
    a_burst_of_wrong_codes_gets_only_the_budget_answered,
    a_burst_of_wrong_passwords_gets_only_the_budget_answered,
    challenges_and_sessions_from_one_replica_hold_on_the_other,
);
