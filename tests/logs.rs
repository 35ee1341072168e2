//! No password, code, secret or token ever appears in a log line: the logs of a whole flow
//! are captured (at the most verbose level, text and JSON alike) and searched.

#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code: a panic is a failed test"
)]

use std::io::Write;
use std::sync::{Arc, Mutex};

use server::config::{LogConfig, LogFormat};
use tollgate_e2e::{
    Backend, TestServer, code_in, sms_config, sms_inbox, sns_endpoint, unique_phone,
};
use tollgate_proto::v1::{self, authenticate_response};

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_flow_logs_no_secret() {
    let capture = Capture::default();
    let sink = capture.clone();
    server::telemetry::init_with_writer(
        &LogConfig {
            format: LogFormat::Json,
            level: "trace".into(),
        },
        move || sink.clone(),
    )
    .unwrap();

    const PASSWORD: &str = "Tr0ub4dor&3-horse-battery";
    const NEW_PASSWORD: &str = "an-entirely-new-passphrase-42";
    // SMS go through the real SNS client (to moto), at trace level too.
    let endpoint = sns_endpoint();
    let mut config = sms_config(&endpoint);
    // The first failure from the client's address locks it (logged as a lockout).
    config.clients.address_free_failures = 1;
    let server = TestServer::start_with(Backend::Sqlite, config).await;
    let mut users = server.users().await;
    let user = users
        .create_user(v1::CreateUserRequest {
            email: "logs@example.com".into(),
            password: PASSWORD.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    let mut auth = server.authentication().await;
    let login = |password: &str| v1::AuthenticateRequest {
        credentials: Some(v1::authenticate_request::Credentials::Password(
            v1::PasswordCredentials {
                email: "logs@example.com".into(),
                password: password.into(),
            },
        )),
        organization_id: String::new(),
        // The client's full address never reaches the logs, even when it is locked out.
        client_context: Some(v1::ClientContext {
            ip_address: "203.0.113.77".into(),
            user_agent: "LogTest/1.0".into(),
        }),
        device_token: String::new(),
    };
    let _ = auth
        .authenticate(login("a-wrong-password-guess"))
        .await
        .unwrap_err();
    let _ = auth
        .authenticate(login("a-second-wrong-guess"))
        .await
        .unwrap_err();
    let mut right = login(PASSWORD);
    right.client_context = None;
    let response = auth.authenticate(right).await.unwrap().into_inner();
    let Some(authenticate_response::Result::Authenticated(session)) = response.result else {
        panic!()
    };
    let mut sessions = server.sessions().await;
    sessions
        .validate_session(v1::ValidateSessionRequest {
            token: session.token.clone(),
        })
        .await
        .unwrap();
    // Enroll a phone by SMS: neither the number nor the code may be logged.
    let phone = unique_phone();
    let mut enrollment =
        v1::enrollment_service_client::EnrollmentServiceClient::new(server.channel().await);
    let with_session = |body| {
        let mut request = tonic::Request::new(body);
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {}", session.token).parse().unwrap(),
        );
        request
    };
    let begun = enrollment
        .begin_sms_enrollment(with_session(v1::BeginSmsEnrollmentRequest {
            phone_number: phone.clone(),
            label: "phone".into(),
        }))
        .await
        .unwrap()
        .into_inner();
    let sms_code = code_in(&sms_inbox(&endpoint, &phone).await[0]);
    let mut request = tonic::Request::new(v1::ConfirmSmsEnrollmentRequest {
        factor_id: begun.factor.unwrap().id,
        code: sms_code.clone(),
        ..Default::default()
    });
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {}", session.token).parse().unwrap(),
    );
    let confirmed = enrollment
        .confirm_sms_enrollment(request)
        .await
        .unwrap()
        .into_inner();
    users
        .set_password(v1::SetPasswordRequest {
            user_id: user.id.clone(),
            new_password: NEW_PASSWORD.into(),
            current_password: String::new(),
        })
        .await
        .unwrap();
    sessions
        .revoke_session(v1::RevokeSessionRequest {
            token: session.token.clone(),
        })
        .await
        .unwrap();
    let _ = sessions
        .validate_session(v1::ValidateSessionRequest {
            token: session.token.clone(),
        })
        .await
        .unwrap_err();
    let stored = server
        .app
        .storage
        .users()
        .get(user.id.parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    // A body that does not decode is logged like every other call.
    let garbage = tollgate_e2e::call_raw(
        server.channel().await,
        "/tollgate.v1.UserService/CreateUser",
        tonic::Request::new(vec![0xff, 0xff, 0xff]),
    )
    .await
    .unwrap_err();
    assert_eq!(garbage.code(), tonic::Code::InvalidArgument);
    server.stop().await.unwrap();

    let logs = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.lines().any(
            |line| line.contains("\"method\":\"UserService/CreateUser\"")
                && line.contains("\"code\":\"INVALID_ARGUMENT\"")
        ),
        "{logs}"
    );
    // The flow was logged: one line per RPC with its method and code.
    assert!(
        logs.contains("AuthenticationService/Authenticate"),
        "{logs}"
    );
    assert!(logs.contains("\"code\":\"UNAUTHENTICATED\""), "{logs}");
    assert!(
        logs.contains("client lockout") && logs.contains("203.0.113.0/24"),
        "the lockout is logged with the client's network: {logs}"
    );
    assert!(logs.contains(&user.id), "identifiers may be logged");
    // Secrets never are.
    assert!(logs.contains("SMS code sent"), "the SMS flow was logged");
    let mut secrets = vec![
        PASSWORD,
        NEW_PASSWORD,
        "a-wrong-password-guess",
        "a-second-wrong-guess",
        "203.0.113.77",
        session.token.as_str(),
        phone.as_str(),
        &phone[2..],
        "verification code",
    ];
    // The 6-digit code alone could match a timestamp's microseconds by chance: look for it
    // as a value instead.
    let quoted = [
        format!("\"{sms_code}\""),
        format!("={sms_code}"),
        format!(" {sms_code} "),
        format!("%3D{sms_code}"),
    ];
    secrets.extend(quoted.iter().map(String::as_str));
    secrets.extend(confirmed.recovery_codes.iter().map(String::as_str));
    for secret in secrets {
        assert!(!logs.contains(secret), "{secret} leaked into the logs");
    }
    // Nor the stored hashes.
    assert!(!logs.contains(stored.password_hash.as_deref().unwrap()));
    assert!(!logs.contains("$argon2id$"));

    // The JSON line's field set (deploy/README.md, "Logs"): every line an object with
    // timestamp, level and target (and, for Tollgate's own, a message); each call's line with
    // method, code (as the
    // metrics write it) and latency_ms.
    let codes = [
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    ];
    let mut calls = 0;
    for line in logs.lines().filter(|l| !l.trim().is_empty()) {
        let value: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        for key in ["timestamp", "level", "target"] {
            assert!(value.get(key).is_some(), "no {key}: {line}");
        }
        // Tollgate's own lines always say something (a library's trace events may not).
        let ours = value["target"]
            .as_str()
            .is_some_and(|t| t.starts_with("server") || t.starts_with("storage"));
        assert!(!ours || value["message"].is_string(), "no message: {line}");
        if value["message"] == "rpc" {
            calls += 1;
            assert!(
                value["method"].as_str().is_some_and(|m| m.contains('/')),
                "{line}"
            );
            assert!(value["latency_ms"].is_number(), "{line}");
            let code = value["code"].as_str().unwrap_or_default();
            assert!(
                codes.contains(&code),
                "code {code:?} is not a canonical name: {line}"
            );
        }
    }
    assert!(calls >= 10, "{calls} call lines");
}
