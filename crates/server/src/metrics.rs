//! What the server counts, and the Prometheus endpoint that shows it (on its own port, off
//! the gRPC one): RPCs by method and status code with latency histograms, logins by outcome,
//! second-factor checks by method and result, SMS sent, refused and failed, lockouts, the
//! database pool, build information. Labels never carry a user, a number or a secret.

use std::future::Future;

use prometheus_client::encoding::{EncodeLabelSet, text::encode};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;
use tonic::Code;

use crate::App;

/// An RPC's labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RpcLabels {
    /// `Service/Method`.
    pub method: &'static str,
    /// The gRPC status code, like `OK` or `UNAUTHENTICATED`.
    pub code: &'static str,
}

/// A login's labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LoginLabels {
    /// `password` or `sso`.
    pub method: &'static str,
    /// `authenticated`, `second_factor_required`, `enrollment_required`, `denied`,
    /// `invalid_credentials` or `locked_out`.
    pub outcome: &'static str,
}

/// A second-factor check's labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CheckLabels {
    /// `totp`, `hotp`, `sms`, `recovery_code`, or `code` when no factor matched.
    pub method: &'static str,
    /// `accepted`, `rejected` or `replayed`.
    pub result: &'static str,
}

/// A labelled reason.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// A stable reason, like `SMS_NUMBER_COOLDOWN`.
    pub reason: &'static str,
}

/// What a lockout locked.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LockoutLabels {
    /// `password` or `second_factor`.
    pub factor: &'static str,
}

/// The database pool's connections.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PoolLabels {
    /// `idle` or `in_use`.
    pub state: &'static str,
}

fn latency_histogram() -> Histogram {
    // 0.5 ms to about 4 s: OTP checks sit at the bottom, argon2id logins in the middle.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.000_5, 2.0, 14,
    ))
}

/// The counters of one server, and the registry that shows them.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// RPCs by method and code.
    pub rpcs: Family<RpcLabels, Counter>,
    /// RPC latency by method and code, in seconds.
    pub rpc_seconds: Family<RpcLabels, Histogram, fn() -> Histogram>,
    /// First login steps by method and outcome.
    pub logins: Family<LoginLabels, Counter>,
    /// Second-factor checks (logins, step-ups, proofs) by method and result.
    pub second_factor_checks: Family<CheckLabels, Counter>,
    /// SMS handed to the provider.
    pub sms_sent: Counter,
    /// SMS refused by a limit, by reason.
    pub sms_refused: Family<ReasonLabels, Counter>,
    /// SMS the provider failed to take, by error kind.
    pub sms_failed: Family<ReasonLabels, Counter>,
    /// Times the SMS pumping guard raised its alert (once per window).
    pub sms_pumping_alerts: Counter,
    /// Lockouts started, by what was locked.
    pub lockouts: Family<LockoutLabels, Counter>,
    /// Streaks of wrong second-factor codes after a right password (or from a session) that
    /// reached the first lockout: the password is probably known to someone else.
    pub passwords_suspected_compromised: Counter,
    /// Users whose code factors were suspended after too many wrong codes in a row.
    pub factors_suspended: Counter,
    /// This replica's clock minus the database server's, in seconds, at the last check.
    pub clock_skew_seconds: Gauge,
    db_connections: Family<PoolLabels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("tollgate");
        let rpcs = Family::<RpcLabels, Counter>::default();
        let rpc_seconds = Family::<RpcLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram,
        );
        let logins = Family::<LoginLabels, Counter>::default();
        let second_factor_checks = Family::<CheckLabels, Counter>::default();
        let sms_sent = Counter::default();
        let sms_refused = Family::<ReasonLabels, Counter>::default();
        let sms_failed = Family::<ReasonLabels, Counter>::default();
        let sms_pumping_alerts = Counter::default();
        let lockouts = Family::<LockoutLabels, Counter>::default();
        let passwords_suspected_compromised = Counter::default();
        let factors_suspended = Counter::default();
        let clock_skew_seconds = Gauge::default();
        let db_connections = Family::<PoolLabels, Gauge>::default();
        registry.register(
            "rpc_requests",
            "gRPC calls by method and status code",
            rpcs.clone(),
        );
        registry.register(
            "rpc_duration_seconds",
            "gRPC call latency by method and status code",
            rpc_seconds.clone(),
        );
        registry.register(
            "logins",
            "first login steps (password or SSO) by outcome",
            logins.clone(),
        );
        registry.register(
            "second_factor_checks",
            "second-factor codes checked, by method and result",
            second_factor_checks.clone(),
        );
        registry.register(
            "sms_sent",
            "SMS codes handed to the provider",
            sms_sent.clone(),
        );
        registry.register(
            "sms_refused",
            "SMS codes refused by a sending limit, by reason",
            sms_refused.clone(),
        );
        registry.register(
            "sms_failed",
            "SMS the provider did not take, by error kind",
            sms_failed.clone(),
        );
        registry.register(
            "sms_pumping_alerts",
            "alerts of the SMS pumping guard (sending paused)",
            sms_pumping_alerts.clone(),
        );
        registry.register(
            "lockouts",
            "lockouts started after too many failures",
            lockouts.clone(),
        );
        registry.register(
            "passwords_suspected_compromised",
            "streaks of wrong second-factor codes that reached a lockout (once per streak)",
            passwords_suspected_compromised.clone(),
        );
        registry.register(
            "factors_suspended",
            "users whose app, token and SMS codes were suspended after too many wrong codes",
            factors_suspended.clone(),
        );
        registry.register(
            "clock_skew_seconds",
            "this replica's clock minus the database server's, at the last health check",
            clock_skew_seconds.clone(),
        );
        registry.register(
            "db_connections",
            "database pool connections by state",
            db_connections.clone(),
        );
        registry.register(
            "build",
            "build information",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
        Self {
            registry,
            rpcs,
            rpc_seconds,
            logins,
            second_factor_checks,
            sms_sent,
            sms_refused,
            sms_failed,
            sms_pumping_alerts,
            lockouts,
            passwords_suspected_compromised,
            factors_suspended,
            clock_skew_seconds,
            db_connections,
        }
    }
}

impl Metrics {
    /// Counts one RPC.
    pub fn record_rpc(&self, method: &'static str, code: Code, seconds: f64) {
        let labels = RpcLabels {
            method,
            code: code_name(code),
        };
        self.rpcs.get_or_create(&labels).inc();
        self.rpc_seconds.get_or_create(&labels).observe(seconds);
    }

    /// Counts a first login step.
    pub fn login(&self, method: &'static str, outcome: &'static str) {
        self.logins
            .get_or_create(&LoginLabels { method, outcome })
            .inc();
    }

    /// Counts a second-factor check.
    pub fn check(&self, method: &'static str, result: &'static str) {
        self.second_factor_checks
            .get_or_create(&CheckLabels { method, result })
            .inc();
    }

    /// The Prometheus text exposition, with the pool's state read now.
    pub fn render(&self, storage: &storage::Storage) -> String {
        if let Some((size, idle)) = storage.pool_state() {
            let in_use = i64::from(size).saturating_sub(i64::try_from(idle).unwrap_or(0));
            self.db_connections
                .get_or_create(&PoolLabels { state: "in_use" })
                .set(in_use);
            self.db_connections
                .get_or_create(&PoolLabels { state: "idle" })
                .set(i64::try_from(idle).unwrap_or(i64::MAX));
        }
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// The canonical name of a gRPC status code.
pub const fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// Serves `GET /metrics` (Prometheus text format) on `listener` until `shutdown` completes.
pub async fn serve(
    app: App,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let router = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let app = app.clone();
            async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    app.metrics.render(&app.storage),
                )
            }
        }),
    );
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}
