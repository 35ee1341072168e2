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
use tollgate_e2e::{Backend, TestServer};
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
    let server = TestServer::start(Backend::Sqlite).await;
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
    };
    let _ = auth
        .authenticate(login("a-wrong-password-guess"))
        .await
        .unwrap_err();
    let response = auth
        .authenticate(login(PASSWORD))
        .await
        .unwrap()
        .into_inner();
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
    server.stop().await.unwrap();

    let logs = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    // The flow was logged: one line per RPC with its method and code.
    assert!(
        logs.contains("AuthenticationService/Authenticate"),
        "{logs}"
    );
    assert!(logs.contains("\"code\":\"Unauthenticated\""), "{logs}");
    assert!(logs.contains(&user.id), "identifiers may be logged");
    // Secrets never are.
    for secret in [
        PASSWORD,
        NEW_PASSWORD,
        "a-wrong-password-guess",
        session.token.as_str(),
    ] {
        assert!(!logs.contains(secret), "{secret} leaked into the logs");
    }
    // Nor the stored hashes.
    assert!(!logs.contains(stored.password_hash.as_deref().unwrap()));
    assert!(!logs.contains("$argon2id$"));
}
