//! The Tollgate gRPC server: the `tollgate.v1` services over the `storage`, `policy` and
//! `otp-core` crates, callers authenticated by API key or client certificate, the standard
//! health service and reflection, graceful shutdown. `main.rs` is the `tollgate` binary.

#![warn(missing_docs)]

pub mod audit;
pub mod auth;
pub(crate) mod client;
pub mod config;
pub mod error;
pub mod health;
pub mod keys;
pub mod metrics;
pub(crate) mod mfa;
pub mod operator;
pub mod password;
pub mod placement;
pub mod qr;
pub mod service;
pub mod sms;
pub mod sms_flow;
pub mod telemetry;
#[cfg(test)]
mod test_support;
pub mod throttle;
pub mod webauthn;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use storage::Storage;
use tokio::net::TcpListener;
use tollgate_proto::v1::authentication_service_server::AuthenticationServiceServer;
use tollgate_proto::v1::enrollment_service_server::EnrollmentServiceServer;
use tollgate_proto::v1::organization_service_server::OrganizationServiceServer;
use tollgate_proto::v1::session_service_server::SessionServiceServer;
use tollgate_proto::v1::user_service_server::UserServiceServer;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use tonic_health::ServingStatus;

use crate::auth::CallerAuth;
use crate::config::Config;
use crate::password::Passwords;

/// A health service name that is SERVING as long as the process serves gRPC, whatever the
/// database does: for liveness probes (a database outage must not restart every replica).
pub const LIVENESS_SERVICE: &str = "liveness";

/// The most bytes of metadata (HTTP/2 header list, uncompressed) one call may send.
pub const MAX_HEADER_LIST_BYTES: u32 = 256 * 1024;

/// The names the health service reports on, besides "" (the whole server).
pub const SERVICE_NAMES: [&str; 5] = [
    "tollgate.v1.UserService",
    "tollgate.v1.EnrollmentService",
    "tollgate.v1.OrganizationService",
    "tollgate.v1.AuthenticationService",
    "tollgate.v1.SessionService",
];

/// The source of the current time. Only the server reads the clock; tests can move it.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Unix seconds.
    fn now(&self) -> i64;

    /// Unix milliseconds (a clock that moves in whole seconds: `now() * 1000`).
    fn now_ms(&self) -> i64 {
        self.now().saturating_mul(1_000)
    }
}

/// The system clock.
#[derive(Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> i64 {
        self.now_ms().div_euclid(1_000)
    }

    fn now_ms(&self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
    }
}

/// A clock that only moves when told to: for tests of expiry and lockouts.
#[derive(Debug)]
pub struct ManualClock(std::sync::atomic::AtomicI64);

impl ManualClock {
    /// Stopped at `now` (Unix seconds).
    pub fn new(now: i64) -> Self {
        Self(std::sync::atomic::AtomicI64::new(now))
    }

    /// Moves the time forward by `secs`.
    pub fn advance(&self, secs: i64) {
        self.0.fetch_add(secs, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> i64 {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Whole seconds at or after `ms` milliseconds.
fn seconds_rounded_up(ms: i64) -> i64 {
    ms.div_euclid(1_000) + i64::from(ms.rem_euclid(1_000) != 0)
}

/// What every service shares. Cheap to clone.
#[derive(Clone, Debug)]
pub struct App {
    /// The database and its keys.
    pub storage: Storage,
    /// The configuration.
    pub config: Arc<Config>,
    /// Password hashing.
    pub passwords: Arc<Passwords>,
    /// The clock.
    pub clock: Arc<dyn Clock>,
    /// Delivers SMS codes.
    pub sms: Arc<dyn sms::SmsSender>,
    /// What the server counts.
    pub metrics: Arc<metrics::Metrics>,
    /// Whether the database answers, as the health check last found.
    pub db_health: health::DbHealth,
    /// The WebAuthn relying party (`webauthn::from_config`); `None` while it is off.
    pub webauthn: Option<Arc<::webauthn_rs::Webauthn>>,
}

impl App {
    /// Unix seconds now.
    pub fn now(&self) -> i64 {
        self.clock.now()
    }

    /// Unix seconds now, rounded up: where a lockout starts, so that one of N seconds (stored
    /// in whole seconds) lasts at least N seconds, never less.
    pub fn now_rounded_up(&self) -> i64 {
        seconds_rounded_up(self.clock.now_ms())
    }

    /// The lockout schedule.
    pub fn throttle(&self) -> policy::Throttle {
        policy::Throttle {
            free_failures: self.config.login.free_failures,
            base_delay_secs: self.config.login.base_lockout_secs,
            max_delay_secs: self.config.login.max_lockout_secs,
        }
    }
}

/// Deletes what expired: pending enrollments never confirmed, login challenges and
/// enrollment tokens, remembered devices, per-client failure counters past their window. Runs with the health check; callable directly (tests, operators).
pub async fn clean_up_expired(app: &App) -> Result<(u64, u64), storage::StorageError> {
    let now = app.now();
    let factors = app.storage.factors().delete_expired_pending(now).await?;
    let challenges = app.storage.challenges().delete_expired(now).await?
        + app.storage.ceremonies().delete_expired(now).await?;
    let devices = app.storage.trusted_devices().delete_expired(now).await?;
    // Per-client counters (one per address and network ever seen failing) start over after
    // `clients.window_secs` without a failure: once that has passed and no lockout is in
    // force, the row says nothing and goes.
    let window = app.config.clients.window_secs;
    let attempts = app.storage.attempts();
    let clients = attempts.delete_forgotten("client:", window, now).await?;
    // SMS counters: every window is at most a day long.
    app.storage
        .sms_limits()
        .delete_older_than(now - 2 * 86_400)
        .await?;
    if factors + challenges + devices + clients > 0 {
        tracing::info!(
            factors,
            challenges,
            devices,
            client_counters = clients,
            "expired enrollments, challenges, remembered devices and client counters deleted"
        );
    }
    Ok((factors, challenges))
}

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// TLS files could not be read or used.
    #[error("TLS: {0}")]
    Tls(String),
    /// The transport failed.
    #[error("transport: {0}")]
    Transport(#[from] tonic::transport::Error),
}

fn read(path: &std::path::Path, key: &str) -> Result<Vec<u8>, ServeError> {
    std::fs::read(path).map_err(|e| ServeError::Tls(format!("{key} {}: {e}", path.display())))
}

/// The TLS settings of the configuration, if TLS is on.
pub fn tls_config(config: &Config) -> Result<Option<ServerTlsConfig>, ServeError> {
    let (Some(cert), Some(key)) = (&config.server.tls_cert_file, &config.server.tls_key_file)
    else {
        return Ok(None);
    };
    let identity = Identity::from_pem(
        read(cert, "server.tls_cert_file")?,
        read(key, "server.tls_key_file")?,
    );
    let mut tls = ServerTlsConfig::new().identity(identity);
    if let Some(ca) = &config.server.tls_client_ca_file {
        tls = tls
            .client_ca_root(Certificate::from_pem(read(
                ca,
                "server.tls_client_ca_file",
            )?))
            .client_auth_optional(false);
    }
    Ok(Some(tls))
}

/// The connections accepted on `listener`, with TCP_NODELAY: tonic sets it only on sockets
/// it binds itself. Without it a response written in two parts waited for the client's
/// delayed ACK of the first: at 300 HOTP checks per second the median call took 14 ms
/// instead of 1.6 ms.
fn incoming(listener: TcpListener) -> tonic::transport::server::TcpIncoming {
    tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true))
}

/// Serves every service on `listener` until `shutdown` completes, then reports NOT_SERVING,
/// stops accepting calls and lets in-flight calls finish (up to the configured grace).
pub async fn serve(
    app: App,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    // Without configured callers every local caller has every scope: never beyond loopback.
    let address = listener
        .local_addr()
        .map_err(|e| ServeError::Tls(e.to_string()))?;
    if !app.config.callers_configured() && !address.ip().is_loopback() {
        return Err(ServeError::Config(config::ConfigError(format!(
            "server.listen: {address} is not loopback and no api_keys or tls_clients are configured"
        ))));
    }
    let (reporter, health) = tonic_health::server::health_reporter();
    // NOT_SERVING until the first database check says otherwise.
    health::set_not_serving(&reporter).await;
    reporter
        .set_service_status(LIVENESS_SERVICE, ServingStatus::Serving)
        .await;
    // SERVING only while the database answers, checked now and then periodically.
    let checker = tokio::spawn(health::run_checker(app.clone(), reporter.clone()));
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(tollgate_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| ServeError::Tls(format!("reflection: {e}")))?;

    let auth = CallerAuth::new(&app.config, app.db_health.clone());
    let intercept = move |request| auth.intercept(request);
    let mut builder = Server::builder()
        // Headers up to this size are read whole, so that one call's oversized metadata
        // (a forwarded cookie or user agent) fails that call alone; h2 answers a larger
        // header block by closing the connection.
        .http2_max_header_list_size(MAX_HEADER_LIST_BYTES)
        .layer(telemetry::RpcLayer::new(Arc::clone(&app.metrics)));
    if let Some(tls) = tls_config(&app.config)? {
        builder = builder.tls_config(tls)?;
    }
    let grace = Duration::from_secs(app.config.server.shutdown_grace_secs);
    let router = builder
        .add_service(health)
        .add_service(reflection)
        .add_service(UserServiceServer::with_interceptor(
            service::users::Users::new(app.clone()),
            intercept.clone(),
        ))
        .add_service(OrganizationServiceServer::with_interceptor(
            service::organizations::Organizations::new(app.clone()),
            intercept.clone(),
        ))
        .add_service(AuthenticationServiceServer::with_interceptor(
            service::authentication::Authentication::new(app.clone()),
            intercept.clone(),
        ))
        .add_service(EnrollmentServiceServer::with_interceptor(
            service::enrollment::Enrollment::new(app.clone()),
            intercept.clone(),
        ))
        .add_service(SessionServiceServer::with_interceptor(
            service::sessions::Sessions::new(app.clone()),
            intercept,
        ));

    let (stopped_tx, stopped_rx) = tokio::sync::oneshot::channel::<()>();
    let stop_reporter = reporter.clone();
    let signal = async move {
        shutdown.await;
        checker.abort();
        tracing::info!("shutting down: NOT_SERVING, finishing in-flight calls");
        health::set_not_serving(&stop_reporter).await;
        let _ = stopped_tx.send(());
    };
    let serving = router.serve_with_incoming_shutdown(incoming(listener), signal);
    tokio::pin!(serving);
    // Past the grace period after the signal, in-flight calls are cut off.
    tokio::select! {
        result = &mut serving => result?,
        () = async {
            let _ = stopped_rx.await;
            tokio::time::sleep(grace).await;
        } => tracing::warn!("grace period over; stopping with calls in flight"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]

    use tokio_stream::StreamExt as _;

    #[test]
    fn lockouts_start_at_the_second_rounded_up() {
        assert_eq!(super::seconds_rounded_up(100_000), 100);
        assert_eq!(super::seconds_rounded_up(100_001), 101);
        assert_eq!(super::seconds_rounded_up(100_999), 101);
        use super::Clock as _;
        let clock = super::ManualClock::new(100);
        assert_eq!(clock.now_ms(), 100_000);
        let system = super::SystemClock;
        let (ms, secs) = (system.now_ms(), system.now());
        assert!(
            (0..=1).contains(&(secs - ms.div_euclid(1_000))),
            "{ms} {secs}"
        );
    }

    #[tokio::test]
    async fn accepted_connections_send_without_delay() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut incoming = super::incoming(listener);
        let _client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let accepted = incoming.next().await.unwrap().unwrap();
        assert!(
            accepted.nodelay().unwrap(),
            "TCP_NODELAY on the accepted socket"
        );
    }
}
