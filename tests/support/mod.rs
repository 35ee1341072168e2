//! Starts the real server in-process on 127.0.0.1:0 over a fresh database and hands out
//! generated clients. Shared by every end-to-end test.

#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test support: a panic is a failed test"
)]

pub mod own_postgres;

use std::net::SocketAddr;
use std::sync::Arc;

pub use server::ManualClock;
use server::config::Config;
use server::{App, Clock, ServeError, SystemClock};
pub use storage::testing::{Backend, TestDb};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tollgate_proto::v1::authentication_service_client::AuthenticationServiceClient;
use tollgate_proto::v1::organization_service_client::OrganizationServiceClient;
use tollgate_proto::v1::session_service_client::SessionServiceClient;
use tollgate_proto::v1::user_service_client::UserServiceClient;
use tonic::transport::{Channel, Endpoint};

/// A running server and the database under it (shared with its replicas, removed with the
/// last of them).
#[derive(Debug)]
pub struct TestServer {
    pub addr: SocketAddr,
    pub app: App,
    pub db: Arc<TestDb>,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<Result<(), ServeError>>>,
}

/// Gives `user` an active authenticator app (SHA-1, 6 digits, 30 s) with a seed the test
/// knows, straight through storage, its `last_step` recorded as used; with `recovery_codes`,
/// those replace the user's. Enrollment through the API draws a random seed. Returns the
/// row as created (still pending), for its id.
pub async fn active_totp(
    storage: &storage::Storage,
    user: storage::Uuid,
    seed: &[u8],
    last_step: Option<i64>,
    recovery_codes: Option<&[&str]>,
    now: i64,
) -> storage::entity::factor::Model {
    let factors = storage.factors();
    let factor = factors
        .create_otp_pending(
            user,
            storage::entity::enums::FactorKind::Totp,
            "phone",
            seed,
            storage::repo::OtpParams {
                algorithm: "SHA1",
                digits: 6,
                period: Some(30),
            },
            None,
            now,
            i64::MAX,
            &[],
        )
        .await
        .unwrap();
    factors
        .activate(factor.id, user, last_step, recovery_codes, now)
        .await
        .unwrap();
    factor
}

/// A configuration for tests: defaults, a fast health check, no clock-skew check (tests move
/// their clocks to wherever they need).
pub fn test_config() -> Config {
    let mut config = Config::default();
    config.health.check_interval_secs = 1;
    config.health.max_clock_skew_secs = 0;
    config.server.shutdown_grace_secs = 5;
    config
}

impl TestServer {
    pub async fn start(backend: Backend) -> Self {
        Self::start_with(backend, test_config()).await
    }

    pub async fn start_with(backend: Backend, config: Config) -> Self {
        Self::start_full(backend, config, Arc::new(SystemClock)).await
    }

    /// With a clock the test moves.
    pub async fn start_with_clock(backend: Backend, clock: Arc<ManualClock>) -> Self {
        Self::start_full(backend, test_config(), clock).await
    }

    pub async fn start_full(backend: Backend, config: Config, clock: Arc<dyn Clock>) -> Self {
        Self::start_on(TestDb::new(backend).await, config, clock).await
    }

    /// On a database the test made (on a PostgreSQL server of its own, say).
    pub async fn start_on(db: TestDb, config: Config, clock: Arc<dyn Clock>) -> Self {
        let passwords = server::password::Passwords::new(&config.passwords).unwrap();
        let sms = server::sms::from_config(&config.sms).await;
        let webauthn = server::webauthn::from_config(&config.webauthn).unwrap();
        let app = App {
            storage: db.storage.clone(),
            config: Arc::new(config),
            passwords,
            clock,
            sms,
            metrics: Default::default(),
            db_health: Default::default(),
            webauthn: webauthn.clone(),
        };
        Self::serve(app, Arc::new(db)).await
    }

    /// A second replica of this server, as a deployment runs them: the same database, opened
    /// anew (its own connections, and on SQLite its own writer), with its own socket, password
    /// hashing threads, SMS client and metrics; the same configuration, key ring and clock.
    pub async fn replica(&self) -> Self {
        self.replica_with(Arc::clone(&self.app.config), Arc::clone(&self.app.clock))
            .await
    }

    /// [`TestServer::replica`] with a configuration and a clock of its own.
    pub async fn replica_with(&self, config: Arc<Config>, clock: Arc<dyn Clock>) -> Self {
        let storage = self.db.reopen(self.app.storage.keyring().clone()).await;
        let webauthn = server::webauthn::from_config(&config.webauthn).unwrap();
        let app = App {
            storage,
            passwords: server::password::Passwords::new(&config.passwords).unwrap(),
            sms: server::sms::from_config(&config.sms).await,
            config,
            clock,
            metrics: Default::default(),
            db_health: Default::default(),
            webauthn: webauthn.clone(),
        };
        Self::serve(app, Arc::clone(&self.db)).await
    }

    async fn serve(app: App, db: Arc<TestDb>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel();
        let handle = tokio::spawn(server::serve(app.clone(), listener, async {
            let _ = rx.await;
        }));
        Self {
            addr,
            app,
            db,
            shutdown: Some(tx),
            handle: Some(handle),
        }
    }

    pub fn endpoint(&self) -> Endpoint {
        Endpoint::from_shared(format!("http://{}", self.addr)).unwrap()
    }

    pub async fn channel(&self) -> Channel {
        self.endpoint().connect().await.unwrap()
    }

    pub async fn users(&self) -> UserServiceClient<Channel> {
        UserServiceClient::new(self.channel().await)
    }

    pub async fn organizations(&self) -> OrganizationServiceClient<Channel> {
        OrganizationServiceClient::new(self.channel().await)
    }

    pub async fn authentication(&self) -> AuthenticationServiceClient<Channel> {
        AuthenticationServiceClient::new(self.channel().await)
    }

    /// Creates a user through the API (`password` empty: none) and returns them.
    pub async fn create_user(&self, email: &str, password: &str) -> tollgate_proto::v1::User {
        self.users()
            .await
            .create_user(tollgate_proto::v1::CreateUserRequest {
                email: email.to_owned(),
                password: password.to_owned(),
            })
            .await
            .unwrap()
            .into_inner()
            .user
            .unwrap()
    }

    /// The first step of a login (`Authenticate`), which must answer: what it answered.
    pub async fn first_step(
        &self,
        request: tollgate_proto::v1::AuthenticateRequest,
    ) -> tollgate_proto::v1::authenticate_response::Result {
        self.authentication()
            .await
            .authenticate(request)
            .await
            .unwrap()
            .into_inner()
            .result
            .unwrap()
    }

    /// A new organization named `name` owned by `owner`, with `members` as members: its id.
    pub async fn organization(&self, name: &str, owner: &str, members: &[&str]) -> String {
        let mut orgs = self.organizations().await;
        let org = orgs
            .create_organization(tollgate_proto::v1::CreateOrganizationRequest {
                name: name.into(),
                owner_user_id: owner.to_owned(),
            })
            .await
            .unwrap()
            .into_inner()
            .organization
            .unwrap()
            .id;
        for member in members {
            orgs.add_member(tollgate_proto::v1::AddMemberRequest {
                organization_id: org.clone(),
                user_id: (*member).to_owned(),
                role: tollgate_proto::v1::Role::Member as i32,
            })
            .await
            .unwrap();
        }
        org
    }

    pub async fn sessions(&self) -> SessionServiceClient<Channel> {
        SessionServiceClient::new(self.channel().await)
    }

    /// Signals shutdown and waits for the server to stop, after checking that every audit
    /// event kind the server wrote is one the contract lists (`AuditEvent.kind`).
    pub async fn stop(mut self) -> Result<(), ServeError> {
        let documented = documented_audit_kinds();
        let written =
            <storage::entity::audit_event::Entity as storage::sea_orm::EntityTrait>::find()
                .all(self.app.storage.db())
                .await;
        // A test that broke the database on purpose cannot be read back; it checks nothing.
        if let Ok(written) = written {
            for event in written {
                assert!(
                    documented.contains(&event.kind),
                    "the server wrote the audit event kind {:?}, which AuditEvent.kind does not list",
                    event.kind
                );
            }
        }
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        match self.handle.take() {
            Some(handle) => handle.await.unwrap(),
            None => Ok(()),
        }
    }

    /// Signals shutdown without waiting.
    pub fn signal_shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }

    /// Waits for a server whose shutdown was signalled.
    pub async fn join(mut self) -> Result<(), ServeError> {
        match self.handle.take() {
            Some(handle) => handle.await.unwrap(),
            None => Ok(()),
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(handle) = self.handle.take() {
            handle.abort();
        }
    }
}

/// The password step of a login: `email` and `password`, into `org` (empty: no organization).
pub fn password_login(
    email: &str,
    password: &str,
    org: &str,
) -> tollgate_proto::v1::AuthenticateRequest {
    use tollgate_proto::v1;
    v1::AuthenticateRequest {
        credentials: Some(v1::authenticate_request::Credentials::Password(
            v1::PasswordCredentials {
                email: email.to_owned(),
                password: password.to_owned(),
            },
        )),
        organization_id: org.to_owned(),
        client_context: None,
        device_token: String::new(),
    }
}

/// The second step of a login: `code` (an app, SMS or recovery code) for the challenge.
pub fn verify_code(
    challenge_token: &str,
    code: &str,
) -> tollgate_proto::v1::VerifySecondFactorRequest {
    tollgate_proto::v1::VerifySecondFactorRequest {
        challenge_token: challenge_token.to_owned(),
        code: code.to_owned(),
        webauthn_response_json: String::new(),
        client_context: None,
        remember_device: false,
    }
}

/// A request carrying a user's session or enrollment token as `authorization: Bearer`.
pub fn bearer<T>(body: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(body);
    request.metadata_mut().insert(
        "authorization",
        tonic::metadata::MetadataValue::try_from(format!("Bearer {token}")).unwrap(),
    );
    request
}

/// A codec that sends and receives bodies as they are, for tests that write the protobuf
/// bytes themselves (garbage, or fields built from the descriptor set).
#[derive(Clone, Copy, Debug, Default)]
pub struct RawCodec;

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> Self {
        Self
    }
    fn decoder(&mut self) -> Self {
        Self
    }
}

impl tonic::codec::Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(
        &mut self,
        item: Vec<u8>,
        buf: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        bytes::BufMut::put_slice(buf, &item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn decode(
        &mut self,
        buf: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Vec<u8>>, tonic::Status> {
        let n = bytes::Buf::remaining(buf);
        Ok(Some(bytes::Buf::copy_to_bytes(buf, n).to_vec()))
    }
}

/// Calls `path` (`/tollgate.v1.UserService/CreateUser`) with `body` as it is.
pub async fn call_raw(
    channel: Channel,
    path: &str,
    request: tonic::Request<Vec<u8>>,
) -> Result<Vec<u8>, tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    grpc.unary(request, path.parse().unwrap(), RawCodec)
        .await
        .map(tonic::Response::into_inner)
}

/// The field names of a status's BadRequest violations.
pub fn violated_fields(status: &tonic::Status) -> Vec<String> {
    use tonic_types::StatusExt as _;
    status
        .get_details_bad_request()
        .map(|b| b.field_violations.into_iter().map(|v| v.field).collect())
        .unwrap_or_default()
}

/// The ErrorInfo reason of a status, if any.
///
/// Every reason read here is checked against the contract: the domain is `tollgate.v1`, the
/// reason is a value of `ErrorReason`, and the status code is the one its comment in
/// error_reason.proto names (so every test that looks at a reason also checks the pair).
pub fn reason(status: &tonic::Status) -> Option<String> {
    use tonic_types::StatusExt as _;
    let info = status.get_details_error_info()?;
    assert_eq!(info.domain, "tollgate.v1", "{status:?}");
    let known = tollgate_proto::v1::ErrorReason::from_str_name(&info.reason);
    assert!(
        known.is_some_and(|reason| reason != tollgate_proto::v1::ErrorReason::Unspecified),
        "{} is not a value of the contract's ErrorReason: {status:?}",
        info.reason
    );
    let code = upper_snake(&format!("{:?}", status.code()));
    let documented = reason_codes()
        .get(&info.reason)
        .unwrap_or_else(|| panic!("no comment for {}", info.reason));
    assert!(
        documented.contains(&code),
        "{} comes with {code}, but error_reason.proto says {documented:?}",
        info.reason
    );
    Some(info.reason)
}

/// `PermissionDenied` as `PERMISSION_DENIED`.
fn upper_snake(camel: &str) -> String {
    let mut out = String::new();
    for (i, c) in camel.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

/// Each ErrorReason value with the status codes its comment starts with
/// (`// PERMISSION_DENIED or FAILED_PRECONDITION: …`).
fn reason_codes() -> &'static std::collections::BTreeMap<String, Vec<String>> {
    static CODES: std::sync::OnceLock<std::collections::BTreeMap<String, Vec<String>>> =
        std::sync::OnceLock::new();
    CODES.get_or_init(|| {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../proto/tollgate/v1/error_reason.proto");
        let text = std::fs::read_to_string(path).unwrap();
        let mut codes = std::collections::BTreeMap::new();
        let mut first_line: Option<String> = None;
        for line in text.lines().map(str::trim) {
            if let Some(comment) = line.strip_prefix("// ") {
                first_line.get_or_insert_with(|| comment.to_owned());
            } else if let Some((name, _)) = line.split_once(" = ") {
                if let Some(first) = first_line.take() {
                    let head = first.split(':').next().unwrap_or_default();
                    let names = head.split(" or ").map(|code| code.trim().to_owned());
                    codes.insert(name.to_owned(), names.collect());
                }
            } else {
                first_line = None;
            }
        }
        assert!(codes.len() > 40, "{codes:?}");
        codes
    })
}

/// Runs an async test body on both engines: `both!(name)` for `async fn name(backend: Backend)`.
#[macro_export]
macro_rules! both {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                use $crate::Backend;

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$name(Backend::Sqlite).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    super::$name(Backend::Postgres).await;
                }
            }
        )*
    };
}

/// The local SNS-compatible endpoint (moto) that the test command starts, from
/// `TOLLGATE_TEST_SNS_ENDPOINT`. SMS tests fail, never skip, without it.
pub fn sns_endpoint() -> String {
    std::env::var("TOLLGATE_TEST_SNS_ENDPOINT").unwrap_or_else(|_| {
        panic!(
            "TOLLGATE_TEST_SNS_ENDPOINT is not set: the SMS tests need moto's SNS server. \
             Run ./scripts/test (it starts one), or start `moto_server -p 5055` and set \
             TOLLGATE_TEST_SNS_ENDPOINT=http://127.0.0.1:5055"
        )
    })
}

/// A test configuration that sends SMS through the real aws-sdk-sns client to `endpoint`.
pub fn sms_config(endpoint: &str) -> Config {
    let mut config = test_config();
    config.sms.sender = server::config::SmsSenderKind::Sns;
    config.sms.sns_endpoint_url = endpoint.to_owned();
    config.sms.sns_region = "us-east-1".to_owned();
    config.sms.sns_access_key_id = "testing".to_owned();
    config.sms.sns_secret_access_key = "testing".to_owned();
    // Generous: one moto serves every test, on two busy cores.
    config.sms.sns_timeout_ms = 10_000;
    config
}

/// The texts moto's SNS received for `phone`, oldest first: what the phone would show. Read
/// from moto's `/moto-api/data.json` (`sns.SMS`).
pub async fn sms_inbox(endpoint: &str, phone: &str) -> Vec<String> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let authority = endpoint
        .strip_prefix("http://")
        .expect("an http:// endpoint")
        .trim_end_matches('/');
    let mut stream = tokio::net::TcpStream::connect(authority).await.unwrap();
    // HTTP/1.0: the body comes whole, then the connection closes.
    let request = format!("GET /moto-api/data.json HTTP/1.0\r\nHost: {authority}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let text = String::from_utf8(response).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    assert!(
        head.starts_with("HTTP/1.") && head.contains(" 200 "),
        "{head}"
    );
    let data: serde_json::Value = serde_json::from_str(body).unwrap();
    data["sns"]["SMS"]
        .as_array()
        .map(|messages| {
            messages
                .iter()
                .filter(|m| m["phone_number"] == phone)
                .filter_map(|m| m["message"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// The 6-digit code in an SMS text.
pub fn code_in(text: &str) -> String {
    text.split(|c: char| !c.is_ascii_digit())
        .find(|word| word.len() == 6)
        .unwrap_or_else(|| panic!("no code in {text:?}"))
        .to_owned()
}

/// A valid US number nobody else's test uses: +1 415, an exchange from 200 to 999, then four
/// random digits.
pub fn unique_phone() -> String {
    let n = u64::from_le_bytes(
        storage::Uuid::now_v7().as_bytes()[8..16]
            .try_into()
            .unwrap(),
    );
    format!("+1415{}{:06}", 2 + n % 8, (n / 8) % 1_000_000)
}

/// The audit event kinds the contract lists: the backquoted `a.b` names of the comment on
/// `AuditEvent.kind` in organization_service.proto.
pub fn documented_audit_kinds() -> std::collections::BTreeSet<String> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../proto/tollgate/v1/organization_service.proto");
    let text = std::fs::read_to_string(path).unwrap();
    let message = text.split("message AuditEvent {").nth(1).unwrap();
    let comment = message.split("string kind = 3;").next().unwrap();
    let kinds: std::collections::BTreeSet<String> = comment
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|word| {
            word.contains('.')
                && word
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c == '.' || c == '_')
        })
        .map(str::to_owned)
        .collect();
    assert!(kinds.len() >= 20, "{kinds:?}");
    kinds
}
