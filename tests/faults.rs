//! Database faults against a PostgreSQL server the test starts itself: killed under load
//! (every answer UNAVAILABLE with DATABASE_UNAVAILABLE and RetryInfo, never INTERNAL; fast
//! once health says NOT_SERVING), started again (the server recovers on its own, nothing
//! lost), and restarted in under a second with the connections idle (no call fails on a
//! connection the restart broke: validations run on the connections storage holds for
//! single statements, the health check on sqlx's pool).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::print_stderr,
    reason = "test code: a panic is a failed test"
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tollgate_e2e::own_postgres::OwnPostgres;
use tollgate_e2e::{TestDb, TestServer, password_login, reason, test_config};
use tollgate_proto::v1;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
use tonic_types::StatusExt as _;

/// One answer seen during the outage.
#[derive(Debug)]
struct Answer {
    started: Instant,
    took: Duration,
    code: Code,
    reason: Option<String>,
    retry_info: bool,
}

async fn health(server: &TestServer) -> Option<ServingStatus> {
    let mut client = HealthClient::new(server.channel().await);
    let mut request = tonic::Request::new(HealthCheckRequest::default());
    request.set_timeout(Duration::from_secs(2));
    let answer = client.check(request).await.ok()?;
    Some(answer.into_inner().status())
}

async fn wait_for_health(server: &TestServer, wanted: ServingStatus, within: Duration) -> Instant {
    let deadline = Instant::now() + within;
    loop {
        if health(server).await == Some(wanted) {
            return Instant::now();
        }
        assert!(Instant::now() < deadline, "health never became {wanted:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A session token, from a password login of a new user.
async fn session(server: &TestServer, email: &str) -> String {
    server.create_user(email, "correct horse battery").await;
    match server
        .first_step(password_login(email, "correct horse battery", ""))
        .await
    {
        v1::authenticate_response::Result::Authenticated(session) => session.token,
        other => panic!("{other:?}"),
    }
}

/// A PostgreSQL server of the test's own, a Tollgate server SERVING on it, and a session of
/// `email`'s.
async fn on_own_postgres(email: &str) -> (OwnPostgres, TestServer, String) {
    let pg = OwnPostgres::start();
    let db = TestDb::postgres_at(&pg.url(), storage::testing::keyring(1, &[1])).await;
    let server = TestServer::start_on(db, test_config(), Arc::new(server::SystemClock)).await;
    wait_for_health(&server, ServingStatus::Serving, Duration::from_secs(10)).await;
    let token = session(&server, email).await;
    (pg, server, token)
}

/// `workers` tasks that validate `token` (and, one call in four, create a user) until
/// `stop`, recording every answer; the users created are returned with the answers.
async fn load(
    server: &TestServer,
    token: &str,
    workers: usize,
    stop: Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<(Vec<Answer>, Vec<String>)>> {
    let mut tasks = Vec::new();
    for worker in 0..workers {
        let channel = server.channel().await;
        let token = token.to_owned();
        let stop = Arc::clone(&stop);
        tasks.push(tokio::spawn(async move {
            let mut sessions =
                v1::session_service_client::SessionServiceClient::new(channel.clone());
            let mut users = v1::user_service_client::UserServiceClient::new(channel);
            let (mut answers, mut created) = (Vec::new(), Vec::new());
            let mut n = 0u32;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let started = Instant::now();
                let email = format!("load-{worker}-{n}@example.com");
                let result = if n.is_multiple_of(4) {
                    let mut request = tonic::Request::new(v1::CreateUserRequest {
                        email: email.clone(),
                        password: String::new(),
                    });
                    request.set_timeout(Duration::from_secs(20));
                    users
                        .create_user(request)
                        .await
                        .map(|_| created.push(email))
                } else {
                    let mut request = tonic::Request::new(v1::ValidateSessionRequest {
                        token: token.clone(),
                    });
                    request.set_timeout(Duration::from_secs(20));
                    sessions.validate_session(request).await.map(drop)
                };
                let (code, reason, retry_info) = match &result {
                    Ok(()) => (Code::Ok, None, false),
                    Err(status) => (
                        status.code(),
                        reason(status),
                        status.get_details_retry_info().is_some(),
                    ),
                };
                answers.push(Answer {
                    started,
                    took: started.elapsed(),
                    code,
                    reason,
                    retry_info,
                });
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            (answers, created)
        }));
    }
    tasks
}

async fn gather(
    tasks: Vec<tokio::task::JoinHandle<(Vec<Answer>, Vec<String>)>>,
) -> (Vec<Answer>, Vec<String>) {
    let (mut answers, mut created) = (Vec::new(), Vec::new());
    for task in tasks {
        let (a, c) = task.await.unwrap();
        answers.extend(a);
        created.extend(c);
    }
    (answers, created)
}

/// Every answer is OK or UNAVAILABLE with the database reason and RetryInfo.
fn only_ok_or_unavailable(answers: &[Answer], pg: &OwnPostgres) {
    for answer in answers {
        match answer.code {
            Code::Ok => {}
            Code::Unavailable => {
                assert_eq!(
                    answer.reason.as_deref(),
                    Some("DATABASE_UNAVAILABLE"),
                    "{answer:?}"
                );
                assert!(
                    answer.retry_info,
                    "UNAVAILABLE without RetryInfo: {answer:?}"
                );
            }
            _ => panic!("{answer:?}\nPostgreSQL's log:\n{}", pg.log()),
        }
    }
}

async fn all_exist(server: &TestServer, emails: &[String]) {
    let mut users = server.users().await;
    for email in emails {
        users
            .get_user(v1::GetUserRequest {
                lookup: Some(v1::get_user_request::Lookup::Email(email.clone())),
            })
            .await
            .unwrap_or_else(|e| panic!("{email} was created (OK) and is gone: {e:?}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_database_answers_unavailable_fast_and_the_server_recovers_alone() {
    let (pg, server, token) = on_own_postgres("kill@example.com").await;

    // Under load from four tasks, the database dies.
    let stop = Arc::new(AtomicBool::new(false));
    let tasks = load(&server, &token, 4, Arc::clone(&stop)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    pg.kill();
    let killed = Instant::now();
    let not_serving =
        wait_for_health(&server, ServingStatus::NotServing, Duration::from_secs(15)).await;
    eprintln!(
        "health NOT_SERVING {:?} after the kill",
        not_serving - killed
    );
    // Calls go on while it is down: they must fail, fast.
    tokio::time::sleep(Duration::from_secs(1)).await;
    pg.start_again();
    let restarted = Instant::now();
    let serving = wait_for_health(&server, ServingStatus::Serving, Duration::from_secs(15)).await;
    eprintln!("health SERVING {:?} after the restart", serving - restarted);
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let (answers, created) = gather(tasks).await;

    only_ok_or_unavailable(&answers, &pg);
    let during: Vec<&Answer> = answers
        .iter()
        .filter(|a| a.started > not_serving && a.started + a.took < restarted)
        .collect();
    assert!(
        during.len() >= 20,
        "too few calls while down: {}",
        during.len()
    );
    for answer in &during {
        assert_eq!(answer.code, Code::Unavailable, "{answer:?}");
        // Refused at once, not after the pool's 5 s connect timeout.
        assert!(
            answer.took < Duration::from_secs(1),
            "slow while known down: {answer:?}"
        );
    }
    let slowest = during.iter().map(|a| a.took).max().unwrap();
    eprintln!(
        "{} calls while NOT_SERVING, the slowest {slowest:?}",
        during.len()
    );
    let after: Vec<&Answer> = answers.iter().filter(|a| a.started > serving).collect();
    assert!(
        !after.is_empty() && after.iter().all(|a| a.code == Code::Ok),
        "{after:?}"
    );

    // Nothing acknowledged was lost, and the session from before the crash still holds.
    all_exist(&server, &created).await;
    let mut sessions = server.sessions().await;
    let valid = sessions
        .validate_session(v1::ValidateSessionRequest { token })
        .await
        .unwrap()
        .into_inner();
    assert!(!valid.session_id.is_empty());
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sub_second_restart_fails_no_call_on_a_stale_connection() {
    let (pg, server, token) = on_own_postgres("blip@example.com").await;

    // Sixteen calls at once open connections held for single statements: one or a few,
    // since validations that come together share a statement (`storage::batched`).
    let validate_all = |n: usize| {
        let token = token.clone();
        let server = &server;
        async move {
            let mut calls = Vec::new();
            for _ in 0..n {
                let mut client = server.sessions().await;
                let token = token.clone();
                calls.push(tokio::spawn(async move {
                    client
                        .validate_session(v1::ValidateSessionRequest { token })
                        .await
                        .map(drop)
                }));
            }
            let mut results = Vec::new();
            for call in calls {
                results.push(call.await.unwrap());
            }
            results
        }
    };
    assert!(validate_all(16).await.iter().all(Result::is_ok));

    // With the connections idle, the database restarts in well under a second.
    let started = Instant::now();
    pg.kill();
    pg.start_again();
    eprintln!("restart took {:?}", started.elapsed());
    // Whether or not the health check saw the blip, once it says SERVING every call works:
    // none is handed a connection the restart broke.
    wait_for_health(&server, ServingStatus::Serving, Duration::from_secs(10)).await;
    let results = validate_all(16).await;
    let failed: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(failed.is_empty(), "{failed:?}");

    // The same under load: every answer OK or UNAVAILABLE, and all OK once it is back.
    let stop = Arc::new(AtomicBool::new(false));
    let tasks = load(&server, &token, 4, Arc::clone(&stop)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    pg.kill();
    pg.start_again();
    let back = Instant::now();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let serving = wait_for_health(&server, ServingStatus::Serving, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let (answers, created) = gather(tasks).await;
    only_ok_or_unavailable(&answers, &pg);
    let after: Vec<&Answer> = answers
        .iter()
        .filter(|a| a.started > serving.max(back))
        .collect();
    assert!(
        !after.is_empty() && after.iter().all(|a| a.code == Code::Ok),
        "{after:?}"
    );
    all_exist(&server, &created).await;
    server.stop().await.unwrap();
}
