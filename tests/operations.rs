//! What SREs rely on: the standard health service (per service, NOT_SERVING while the
//! database does not answer and while shutting down), reflection, graceful shutdown.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code: a panic is a failed test"
)]

use std::time::Duration;

use tokio_stream::StreamExt as _;
use tollgate_e2e::{Backend, TestServer, both};
use tollgate_proto::v1;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

async fn status(server: &TestServer, service: &str) -> Result<i32, tonic::Status> {
    let mut health = HealthClient::new(server.channel().await);
    health
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await
        .map(|r| r.into_inner().status)
}

async fn wait_for(server: &TestServer, service: &str, want: ServingStatus) {
    for _ in 0..50 {
        if status(server, service).await.ok() == Some(want as i32) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{service:?} never became {want:?}");
}

async fn health_reports_every_service(backend: Backend) {
    let server = TestServer::start(backend).await;
    wait_for(&server, "", ServingStatus::Serving).await;
    for name in server::SERVICE_NAMES {
        assert_eq!(
            status(&server, name).await.unwrap(),
            ServingStatus::Serving as i32,
            "{name}"
        );
    }
    let unknown = status(&server, "tollgate.v1.NoSuchService")
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound);
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_goes_not_serving_while_the_database_is_gone() {
    let server = TestServer::start(Backend::Postgres).await;
    wait_for(&server, "", ServingStatus::Serving).await;
    // Take the database away under the server (the same as an outage to its pool).
    let admin = storage::sea_orm::Database::connect(std::env::var("TEST_DATABASE_URL").unwrap())
        .await
        .unwrap();
    let name = server.db.config.url.rsplit('/').next().unwrap().to_owned();
    storage::sea_orm::ConnectionTrait::execute_unprepared(
        &admin,
        &format!("DROP DATABASE \"{name}\" WITH (FORCE)"),
    )
    .await
    .unwrap();
    wait_for(&server, "", ServingStatus::NotServing).await;
    wait_for(
        &server,
        "tollgate.v1.AuthenticationService",
        ServingStatus::NotServing,
    )
    .await;
    // Calls that need it fail as UNAVAILABLE or INTERNAL, never hang.
    let err = server
        .users()
        .await
        .get_user(v1::GetUserRequest {
            lookup: Some(v1::get_user_request::Lookup::Email("a@b.c".into())),
        })
        .await
        .unwrap_err();
    assert!(
        matches!(err.code(), tonic::Code::Unavailable | tonic::Code::Internal),
        "{err:?}"
    );
    assert!(
        !err.message().contains("tollgate_test"),
        "no internal detail leaks: {err:?}"
    );
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_lists_the_services() {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let server = TestServer::start(Backend::Sqlite).await;
    let mut client = ServerReflectionClient::new(server.channel().await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let response = stream.next().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("unexpected {response:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for expected in server::SERVICE_NAMES
        .into_iter()
        .chain(["grpc.health.v1.Health"])
    {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} missing from {names:?}"
        );
    }
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_goes_not_serving_and_lets_in_flight_calls_finish() {
    let mut server = TestServer::start(Backend::Sqlite).await;
    wait_for(&server, "", ServingStatus::Serving).await;
    let mut users = server.users().await;
    let mut health = HealthClient::new(server.channel().await);
    let mut watch = health
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        watch.next().await.unwrap().unwrap().status,
        ServingStatus::Serving as i32
    );
    // A call that hashes a password is in flight when the signal comes.
    let in_flight = tokio::spawn(async move {
        users
            .create_user(v1::CreateUserRequest {
                email: "late@example.com".into(),
                password: "correct horse battery staple".into(),
            })
            .await
    });
    tokio::time::sleep(Duration::from_millis(5)).await;
    server.signal_shutdown();
    // Watchers see NOT_SERVING before the stream ends.
    let update = tokio::time::timeout(Duration::from_secs(5), watch.next())
        .await
        .unwrap();
    let update = update
        .expect("a NOT_SERVING update, not the end of the stream")
        .unwrap();
    assert_eq!(update.status, ServingStatus::NotServing as i32);
    // The call in flight completes normally.
    let created = in_flight.await.unwrap().unwrap().into_inner().user.unwrap();
    assert_eq!(created.email, "late@example.com");
    tokio::time::timeout(Duration::from_secs(10), server.join())
        .await
        .unwrap()
        .unwrap();
}

/// The SRE's unlock (`tollgate unlock --email`): a user locked out by wrong passwords logs in
/// again at once, and the audit log says so.
async fn an_operator_unlocks_a_locked_out_user(backend: Backend) {
    let server = TestServer::start(backend).await;
    let password = "correct horse battery staple";
    let user = server.create_user("locked@example.com", password).await;
    let login = |password: &str| v1::AuthenticateRequest {
        credentials: Some(v1::authenticate_request::Credentials::Password(
            v1::PasswordCredentials {
                email: "locked@example.com".into(),
                password: password.into(),
            },
        )),
        organization_id: String::new(),
        client_context: None,
        device_token: String::new(),
    };
    let mut auth = server.authentication().await;
    let mut locked = false;
    for _ in 0..20 {
        let err = auth.authenticate(login("wrong guess")).await.unwrap_err();
        if err.code() == tonic::Code::ResourceExhausted {
            locked = true;
            break;
        }
    }
    assert!(locked);
    let err = auth.authenticate(login(password)).await.unwrap_err();
    assert_eq!(
        err.code(),
        tonic::Code::ResourceExhausted,
        "even the right one"
    );
    let unlocked = server::throttle::unlock(&server.app.storage, "Locked@Example.com", 0)
        .await
        .unwrap();
    assert_eq!(unlocked.map(|id| id.to_string()), Some(user.id.clone()));
    auth.authenticate(login(password)).await.unwrap();
    let events = server
        .app
        .storage
        .audit()
        .list(
            &storage::repo::AuditFilter {
                kinds: vec!["user.unlocked".into()],
                ..Default::default()
            },
            None,
            10,
        )
        .await
        .unwrap()
        .items;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].subject_id.map(|id| id.to_string()), Some(user.id));
    server.stop().await.unwrap();
}

both!(
    health_reports_every_service,
    an_operator_unlocks_a_locked_out_user
);
