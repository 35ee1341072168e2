//! The Prometheus endpoint on its own port: scraped before and after a flow (a wrong
//! password, a login, an SMS enrollment, a refused resend, a lockout), the counters move by
//! exactly what happened; no user, number or secret appears in it. On both engines.

#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code: a panic is a failed test"
)]

use tollgate_e2e::{Backend, TestServer, both, reason, unique_phone};
use tollgate_proto::v1::enrollment_service_client::EnrollmentServiceClient;
use tollgate_proto::v1::{self, authenticate_response};
use tonic::metadata::MetadataValue;

const PASSWORD: &str = "correct horse battery staple";

async fn scrape(address: std::net::SocketAddr) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let request = format!("GET /metrics HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let text = String::from_utf8(response).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_lowercase().contains("application/openmetrics-text"),
        "{head}"
    );
    body.to_owned()
}

/// The value of one sample (`name{labels}`), 0 when absent.
fn value(text: &str, sample: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(sample)?.trim().parse().ok())
        .unwrap_or(0.0)
}

fn login(password: &str) -> v1::AuthenticateRequest {
    tollgate_e2e::password_login("metrics@example.com", password, "")
}

async fn counters_move_with_a_flow(backend: Backend) {
    // The default (development) SMS sender: the counts do not depend on the provider.
    let server = TestServer::start(backend).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let metrics = tokio::spawn(server::metrics::serve(
        server.app.clone(),
        listener,
        std::future::pending(),
    ));
    let before = scrape(address).await;
    assert!(
        before.contains("tollgate_build_info{version=\""),
        "{before}"
    );
    assert!(
        before.contains("tollgate_db_connections{state=\"idle\"}"),
        "{before}"
    );

    server.create_user("metrics@example.com", PASSWORD).await;
    let mut auth = server.authentication().await;
    auth.authenticate(login("not the password"))
        .await
        .unwrap_err();
    let session = match auth
        .authenticate(login(PASSWORD))
        .await
        .unwrap()
        .into_inner()
        .result
    {
        Some(authenticate_response::Result::Authenticated(s)) => s.token,
        other => panic!("{other:?}"),
    };
    let mut enrollment = EnrollmentServiceClient::new(server.channel().await);
    let phone = unique_phone();
    let begin = || {
        let mut request = tonic::Request::new(v1::BeginSmsEnrollmentRequest {
            phone_number: phone.clone(),
            label: "phone".into(),
        });
        request.metadata_mut().insert(
            "authorization",
            MetadataValue::try_from(format!("Bearer {session}")).unwrap(),
        );
        request
    };
    enrollment.begin_sms_enrollment(begin()).await.unwrap();
    let err = enrollment.begin_sms_enrollment(begin()).await.unwrap_err();
    assert_eq!(reason(&err).as_deref(), Some("SMS_NUMBER_COOLDOWN"));
    // Wrong passwords until the lockout.
    for _ in 0..10 {
        let err = auth.authenticate(login("still wrong")).await.unwrap_err();
        if err.code() == tonic::Code::ResourceExhausted {
            break;
        }
    }

    let after = scrape(address).await;
    let delta = |sample: &str| value(&after, sample) - value(&before, sample);
    let rpc = |method: &str, code: &str| {
        format!(
            "tollgate_rpc_requests_total{{method=\"AuthenticationService/{method}\",code=\"{code}\"}}"
        )
    };
    assert!(delta(&rpc("Authenticate", "OK")) >= 1.0, "{after}");
    assert!(
        delta(&rpc("Authenticate", "UNAUTHENTICATED")) >= 1.0,
        "{after}"
    );
    assert!(
        delta(&rpc("Authenticate", "RESOURCE_EXHAUSTED")) >= 1.0,
        "{after}"
    );
    assert!(
        after.contains(
            "tollgate_rpc_duration_seconds_count{method=\"AuthenticationService/Authenticate\",code=\"OK\"}"
        ),
        "latency histograms: {after}"
    );
    assert_eq!(
        delta("tollgate_logins_total{method=\"password\",outcome=\"authenticated\"}"),
        1.0
    );
    assert!(
        delta("tollgate_logins_total{method=\"password\",outcome=\"invalid_credentials\"}") >= 5.0
    );
    assert!(delta("tollgate_logins_total{method=\"password\",outcome=\"locked_out\"}") >= 1.0);
    assert_eq!(delta("tollgate_sms_sent_total"), 1.0);
    assert_eq!(
        delta("tollgate_sms_refused_total{reason=\"SMS_NUMBER_COOLDOWN\"}"),
        1.0
    );
    assert_eq!(delta("tollgate_lockouts_total{factor=\"password\"}"), 1.0);
    // Counts only: no email, number, token or password.
    for secret in [
        "metrics@example.com",
        phone.as_str(),
        session.as_str(),
        PASSWORD,
    ] {
        assert!(!after.contains(secret), "{secret} in the metrics");
    }
    metrics.abort();
    server.stop().await.unwrap();
}

both!(counters_move_with_a_flow);

/// Calls refused before a handler runs are counted like every other: no API key, a wrong
/// one, a body that does not decode, a method the server does not have.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_refused_before_a_handler_are_counted() {
    let mut config = tollgate_e2e::test_config();
    config.api_keys = vec![server::config::ApiKeyConfig {
        name: "reader".into(),
        sha256: server::auth::hash_api_key("reader-key"),
        scopes: vec!["users:read".into()],
    }];
    let server = TestServer::start_with(Backend::Sqlite, config).await;
    let channel = server.channel().await;
    let create = "/tollgate.v1.UserService/CreateUser";
    let with_key = |key: Option<&'static str>, body: Vec<u8>| {
        let mut request = tonic::Request::new(body);
        if let Some(key) = key {
            request
                .metadata_mut()
                .insert("x-api-key", MetadataValue::from_static(key));
        }
        request
    };
    let garbage = vec![0xff, 0xff, 0xff];
    let calls = [
        (create, with_key(None, Vec::new()), "UNAUTHENTICATED"),
        (
            create,
            with_key(Some("wrong-key"), Vec::new()),
            "UNAUTHENTICATED",
        ),
        (
            create,
            with_key(Some("reader-key"), garbage.clone()),
            "INVALID_ARGUMENT",
        ),
        (
            create,
            with_key(Some("reader-key"), Vec::new()),
            "PERMISSION_DENIED",
        ),
        (
            "/tollgate.v1.UserService/Nope",
            with_key(Some("reader-key"), Vec::new()),
            "UNIMPLEMENTED",
        ),
    ];
    for (path, request, code) in calls {
        let status = tollgate_e2e::call_raw(channel.clone(), path, request)
            .await
            .unwrap_err();
        assert_eq!(
            server::metrics::code_name(status.code()),
            code,
            "{path}: {status:?}"
        );
    }
    let text = server.app.metrics.render(&server.app.storage);
    let count = |method: &str, code: &str| {
        value(
            &text,
            &format!("tollgate_rpc_requests_total{{method=\"{method}\",code=\"{code}\"}}"),
        )
    };
    assert_eq!(
        count("UserService/CreateUser", "UNAUTHENTICATED"),
        2.0,
        "{text}"
    );
    assert_eq!(
        count("UserService/CreateUser", "INVALID_ARGUMENT"),
        1.0,
        "{text}"
    );
    assert_eq!(
        count("UserService/CreateUser", "PERMISSION_DENIED"),
        1.0,
        "{text}"
    );
    assert_eq!(count("unknown", "UNIMPLEMENTED"), 1.0, "{text}");
    server.stop().await.unwrap();
}
