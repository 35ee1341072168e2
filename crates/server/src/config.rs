//! Configuration: defaults, then a TOML file, then `TOLLGATE_*` environment variables
//! (`TOLLGATE_DATABASE__URL` sets `database.url`). Every key is documented with its default
//! in `deploy/tollgate.example.toml`. A bad value stops start-up with an error naming the key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

/// The whole configuration.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Listening address and TLS.
    pub server: ServerConfig,
    /// The database.
    pub database: DatabaseConfig,
    /// Where the encryption and hash keys come from.
    pub keys: KeysConfig,
    /// argon2id parameters and concurrency.
    pub passwords: PasswordConfig,
    /// Session lifetimes.
    pub sessions: SessionConfig,
    /// Login challenges and throttling.
    pub login: LoginConfig,
    /// Where logins come from: the client context callers relay, and the failure budgets
    /// per client address and network.
    pub clients: ClientsConfig,
    /// Authenticator apps and recovery codes.
    pub otp: OtpConfig,
    /// Logs.
    pub log: LogConfig,
    /// Distributed traces (OpenTelemetry, OTLP); off while `otlp_endpoint` is empty.
    pub tracing: TracingConfig,
    /// Health checking.
    pub health: HealthConfig,
    /// SMS codes, how they are sent, and the limits against SMS pumping.
    pub sms: SmsConfig,
    /// Passkeys and security keys (WebAuthn); off while `rp_id` is empty.
    pub webauthn: WebAuthnConfig,
    /// The Prometheus endpoint.
    pub metrics: MetricsConfig,
    /// Callers authenticated by API key (`x-api-key`).
    pub api_keys: Vec<ApiKeyConfig>,
    /// Callers authenticated by client certificate (mTLS).
    pub tls_clients: Vec<TlsClientConfig>,
}

/// Which user verification (a PIN or biometric on the authenticator) second-factor keys need.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum UserVerification {
    /// Asked for when the authenticator can; a key without it still passes (the key is the
    /// second factor).
    #[default]
    Preferred,
    /// Always: keys without user verification are refused.
    Required,
}

/// Passkeys and security keys (WebAuthn).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct WebAuthnConfig {
    /// The relying party's domain (`example.com`; `localhost` for development). Empty:
    /// WebAuthn is off and its RPCs answer FAILED_PRECONDITION `WEBAUTHN_NOT_CONFIGURED`.
    pub rp_id: String,
    /// The name browsers show.
    pub rp_name: String,
    /// Every origin a browser may call from (`https://login.example.com`); each must be
    /// `rp_id` or a subdomain of it, over https (http only for `localhost`).
    pub origins: Vec<String>,
    /// User verification for second-factor keys; passkeys used to log in without a password
    /// always require it.
    pub user_verification: UserVerification,
    /// Seconds a registration or assertion ceremony may take.
    pub timeout_secs: u64,
    /// Attestation conveyance: `none` (the only one supported: no attestation is verified).
    pub attestation: String,
}

impl Default for WebAuthnConfig {
    fn default() -> Self {
        Self {
            rp_id: String::new(),
            rp_name: "Tollgate".to_owned(),
            origins: Vec::new(),
            user_verification: UserVerification::Preferred,
            timeout_secs: 300,
            attestation: "none".to_owned(),
        }
    }
}

impl WebAuthnConfig {
    /// Checks what types alone cannot; the error names the key.
    fn validate(&self) -> Result<(), ConfigError> {
        let err = |key: &str, why: String| Err(ConfigError(format!("webauthn.{key}: {why}")));
        if self.attestation != "none" {
            return err("attestation", "only \"none\" is supported".to_owned());
        }
        if !(10..=600).contains(&self.timeout_secs) {
            return err("timeout_secs", "must be 10 to 600".to_owned());
        }
        if self.rp_id.is_empty() {
            return Ok(());
        }
        let rp_id = self.rp_id.as_str();
        if rp_id.parse::<std::net::IpAddr>().is_ok()
            || rp_id.contains(['/', ':', ' '])
            || rp_id.starts_with('.')
            || rp_id.ends_with('.')
        {
            return err(
                "rp_id",
                "must be a domain name (browsers refuse an IP address)".to_owned(),
            );
        }
        if self.rp_name.trim().is_empty() {
            return err("rp_name", "must not be empty".to_owned());
        }
        if self.origins.is_empty() {
            return err(
                "origins",
                "at least one origin is needed with rp_id".to_owned(),
            );
        }
        for origin in &self.origins {
            let Ok(url) = url::Url::parse(origin) else {
                return err("origins", format!("{origin} is not a URL"));
            };
            let host = url.host_str().unwrap_or_default();
            let under = host == rp_id || host.ends_with(&format!(".{rp_id}"));
            if !under {
                return err(
                    "origins",
                    format!("{origin} is not {rp_id} or a subdomain of it"),
                );
            }
            let secure = url.scheme() == "https" || (url.scheme() == "http" && host == "localhost");
            if !secure || url.path() != "/" || url.query().is_some() {
                return err(
                    "origins",
                    format!("{origin} must be https://host[:port] (http only for localhost)"),
                );
            }
        }
        Ok(())
    }
}

/// Distributed traces.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct TracingConfig {
    /// The OTLP/gRPC collector spans go to (`http://otel-collector:4317`); empty: off.
    pub otlp_endpoint: String,
    /// Traces sampled, per thousand, when the caller's `traceparent` does not decide (a
    /// sampled parent is always followed): 1000 = every trace.
    pub sample_permille: u32,
    /// The `service.name` of the spans.
    pub service_name: String,
}

impl Default for TracingConfig {
    fn default() -> Self {
        Self {
            otlp_endpoint: String::new(),
            sample_permille: 1000,
            service_name: "tollgate".to_owned(),
        }
    }
}

/// Listening address and TLS.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// The gRPC address.
    pub listen: SocketAddr,
    /// Serve TLS with this certificate chain (PEM). Requires `tls_key_file`.
    pub tls_cert_file: Option<PathBuf>,
    /// The private key of `tls_cert_file` (PEM).
    pub tls_key_file: Option<PathBuf>,
    /// Require client certificates signed by this CA (PEM): mutual TLS.
    pub tls_client_ca_file: Option<PathBuf>,
    /// Seconds that in-flight calls get to finish on SIGTERM/SIGINT.
    pub shutdown_grace_secs: u64,
    /// A production deployment: refuse development-only settings (the log SMS sender, a
    /// generated key file).
    pub production: bool,
    /// Which CPUs the server's threads run on (see [`crate::placement`]).
    pub thread_placement: ThreadPlacement,
}

/// Which CPUs the server's threads run on.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ThreadPlacement {
    /// The request threads (async workers, database connections, everything but hashing)
    /// share the first CPU the process may use; the hashing threads spread over its CPUs,
    /// the request CPU last. Not under a CPU quota (see [`crate::placement`]).
    Pinned,
    /// The kernel places every thread.
    #[default]
    Free,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 50051)),
            tls_cert_file: None,
            tls_key_file: None,
            tls_client_ca_file: None,
            shutdown_grace_secs: 20,
            production: false,
            thread_placement: ThreadPlacement::default(),
        }
    }
}

/// The database.
#[derive(Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `sqlite://PATH` or `postgres://USER:PASSWORD@HOST:PORT/DB`.
    pub url: String,
    /// Pool size; 0 means the engine's default (8 on PostgreSQL, where as many again run
    /// single statements, so up to twice this many connections per replica; 4 readers on
    /// SQLite, which also keeps 2 connections for its writes, one writing at a time, and as
    /// many readers again plus one writer for the statements it runs on the calling thread).
    pub max_connections: u32,
    /// Seconds to wait to connect or for a pooled connection.
    pub connect_timeout_secs: u64,
}

impl std::fmt::Debug for DatabaseConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseConfig")
            .field("url", &storage::redact_url(&self.url))
            .field("max_connections", &self.max_connections)
            .field("connect_timeout_secs", &self.connect_timeout_secs)
            .finish()
    }
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: "sqlite://data/tollgate.db".to_owned(),
            max_connections: 0,
            connect_timeout_secs: 5,
        }
    }
}

/// Where the keys come from.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct KeysConfig {
    /// A TOML file with `primary`, `[[encryption]] id/key` (base64, 32 bytes) and `hash_key`.
    pub file: PathBuf,
    /// Create a development key file (mode 0600, with a loud warning) when it is missing.
    /// Turn off in production, so that a missing secret stops start-up.
    pub generate_if_missing: bool,
}

impl Default for KeysConfig {
    fn default() -> Self {
        Self {
            file: PathBuf::from("data/keys.toml"),
            generate_if_missing: true,
        }
    }
}

/// argon2id parameters and concurrency.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct PasswordConfig {
    /// Memory cost in KiB (OWASP's argon2id minimum is 19456).
    pub memory_kib: u32,
    /// Passes over memory.
    pub iterations: u32,
    /// Lanes.
    pub parallelism: u32,
    /// Hashes computed at once, each on a hashing thread of its own; 0 means the number of
    /// cores, at most 256. Others wait, so a flood of logins never starves the other RPCs or
    /// the health service.
    pub max_concurrent: usize,
    /// Shortest password accepted.
    pub min_length: usize,
}

impl Default for PasswordConfig {
    fn default() -> Self {
        Self {
            memory_kib: 19_456,
            iterations: 2,
            parallelism: 1,
            max_concurrent: 0,
            min_length: 12,
        }
    }
}

/// Session lifetimes.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct SessionConfig {
    /// Seconds of inactivity after which a session expires.
    pub idle_ttl_secs: i64,
    /// Seconds after which a session expires whatever happens.
    pub absolute_ttl_secs: i64,
    /// How far, in seconds, a session's recorded idle expiry (and last use) may fall behind
    /// before a validation writes it: validations within this of the last write only read.
    /// At most a tenth of `idle_ttl_secs` is used ([`SessionConfig::idle_tolerance`]). A
    /// session therefore ends after between `idle_ttl_secs` minus that and `idle_ttl_secs`
    /// without use, never later. 0 writes on every validation in a new second. 0 to 3600.
    pub idle_tolerance_secs: i64,
}

impl SessionConfig {
    /// The tolerance in force: `idle_tolerance_secs`, at most a tenth of `idle_ttl_secs`.
    pub fn idle_tolerance(&self) -> i64 {
        self.idle_tolerance_secs.min(self.idle_ttl_secs / 10)
    }
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            idle_ttl_secs: 30 * 60,
            absolute_ttl_secs: 12 * 60 * 60,
            idle_tolerance_secs: 60,
        }
    }
}

/// Login challenges and throttling.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct LoginConfig {
    /// Seconds a second-factor challenge lives.
    pub challenge_ttl_secs: i64,
    /// Seconds an enrollment token lives.
    pub enrollment_ttl_secs: i64,
    /// Failures allowed before the first lockout.
    pub free_failures: u32,
    /// The first lockout, in seconds; it doubles with each further failure.
    pub base_lockout_secs: u64,
    /// The longest lockout, in seconds.
    pub max_lockout_secs: u64,
    /// Failed second-factor attempts in a row (no successful second factor in between) after
    /// which the user's app, token and SMS codes are suspended until a recovery code is used,
    /// an admin resets the member or an operator runs `tollgate unlock` (NIST SP 800-63B
    /// §5.2.2 allows at most 100).
    pub max_consecutive_failures: u32,
}

impl Default for LoginConfig {
    fn default() -> Self {
        Self {
            challenge_ttl_secs: 300,
            enrollment_ttl_secs: 900,
            free_failures: 5,
            base_lockout_secs: 30,
            max_lockout_secs: 3_600,
            max_consecutive_failures: 100,
        }
    }
}

/// How client addresses are kept at rest.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum AddressStorage {
    /// The address as given.
    #[default]
    Full,
    /// Its IPv4 /24 or IPv6 /48.
    Truncated,
}

/// Where logins come from: the `ClientContext` callers relay, and the failure budgets per
/// client address and per network against password spraying and credential stuffing (many
/// emails tried from one place, which per-email lockouts never see).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct ClientsConfig {
    /// Whether `Authenticate` must carry `client_context.ip_address` (INVALID_ARGUMENT
    /// naming it otherwise). Off: a login without it is throttled per email only.
    pub require_context: bool,
    /// Failed password logins from one address, across all emails (unknown ones included),
    /// before its first lockout. 1 to 10000.
    pub address_free_failures: u32,
    /// The same for one network: an IPv4 /24 or an IPv6 /56. 1 to 100000, at least
    /// `address_free_failures`.
    pub network_free_failures: u32,
    /// The first lockout of an address or network, in seconds; it doubles with each further
    /// failure, up to `max_lockout_secs`.
    pub base_lockout_secs: u64,
    /// The longest lockout, in seconds.
    pub max_lockout_secs: u64,
    /// Seconds without a failure after which an address's or network's count starts over.
    /// A success does not clear it: one valid account must not reset a sprayer's budget.
    /// 1 to 86400.
    pub window_secs: i64,
    /// How sessions and login challenges keep the client's address: `full`, or `truncated`
    /// to its IPv4 /24 or IPv6 /48 (`192.0.2.0/24`) for less personal data at rest. The
    /// budgets above count full addresses either way, in memory and under keyed counters.
    pub store_addresses: AddressStorage,
    /// Addresses (`192.0.2.7`) and networks (`10.0.0.0/8`, `2001:db8::/32`) exempt from the
    /// address and network budgets: known shared egress (a corporate NAT, a partner's
    /// proxy). Their logins are still throttled per email.
    pub allowlist: Vec<String>,
}

impl Default for ClientsConfig {
    fn default() -> Self {
        Self {
            require_context: false,
            address_free_failures: 20,
            network_free_failures: 100,
            base_lockout_secs: 60,
            max_lockout_secs: 3_600,
            window_secs: 3_600,
            store_addresses: AddressStorage::Full,
            allowlist: Vec::new(),
        }
    }
}

impl ClientsConfig {
    /// The allowlist, parsed (an address alone is a network of one).
    pub fn allowed_networks(&self) -> Result<Vec<ipnet::IpNet>, ConfigError> {
        self.allowlist
            .iter()
            .enumerate()
            .map(|(i, entry)| {
                let entry = entry.trim();
                entry
                    .parse::<ipnet::IpNet>()
                    .or_else(|_| entry.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                    .map_err(|_| {
                        ConfigError(format!(
                            "clients.allowlist[{i}]: {entry:?} is not an IP address or a network \
                             such as 10.0.0.0/8"
                        ))
                    })
            })
            .collect()
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let err = |key: &str, why: &str| Err(ConfigError(format!("clients.{key}: {why}")));
        if !(1..=10_000).contains(&self.address_free_failures) {
            return err("address_free_failures", "must be 1 to 10000");
        }
        if !(self.address_free_failures..=100_000).contains(&self.network_free_failures) {
            return err(
                "network_free_failures",
                "must be at least address_free_failures and at most 100000",
            );
        }
        if self.base_lockout_secs == 0 || self.base_lockout_secs > self.max_lockout_secs {
            return err(
                "base_lockout_secs",
                "must be at least 1 and at most max_lockout_secs",
            );
        }
        if self.max_lockout_secs > 86_400 {
            return err("max_lockout_secs", "must be at most 86400");
        }
        if !(1..=86_400).contains(&self.window_secs) {
            return err("window_secs", "must be 1 to 86400");
        }
        self.allowed_networks().map(|_| ())
    }
}

/// Authenticator apps and recovery codes.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct OtpConfig {
    /// The issuer shown by authenticator apps above the code.
    pub issuer: String,
    /// Seconds an unconfirmed enrollment lives.
    pub pending_enrollment_ttl_secs: i64,
    /// Codes one second-factor challenge may check before the login must start over.
    pub challenge_max_attempts: i32,
    /// Recovery codes in a set: handed out on the first activation, on an activation when none
    /// are left, and by `RegenerateRecoveryCodes`.
    pub recovery_codes: usize,
    /// Time steps an authenticator app's code may lag behind the server's clock (RFC 6238
    /// section 5.2's allowance for clock drift and transmission delay).
    pub totp_steps_behind: u32,
    /// Time steps an authenticator app's code may run ahead of the server's clock.
    pub totp_steps_ahead: u32,
    /// Counters past the expected one an OATH token's code may be and still log in (RFC 4226
    /// section 7.4's look-ahead window `s`): presses that never reached the server.
    pub hotp_look_ahead: u32,
    /// How far `ResyncHotp` searches ahead for two consecutive codes.
    pub hotp_resync_window: u32,
}

impl Default for OtpConfig {
    fn default() -> Self {
        Self {
            issuer: "Tollgate".to_owned(),
            pending_enrollment_ttl_secs: 600,
            challenge_max_attempts: 5,
            recovery_codes: 10,
            totp_steps_behind: 1,
            totp_steps_ahead: 1,
            hotp_look_ahead: 10,
            hotp_resync_window: 100,
        }
    }
}

/// Log output.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `text` or `json`.
    pub format: LogFormat,
    /// A tracing filter, e.g. `info` or `info,server=debug`.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: "info".to_owned(),
        }
    }
}

/// Log line format.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Health checking.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct HealthConfig {
    /// Seconds between database checks.
    pub check_interval_secs: u64,
    /// The most seconds this replica's clock may differ from the database server's before
    /// the replica stops serving (lockouts and expiries are times this replica writes and
    /// another reads); 0 turns the check off.
    pub max_clock_skew_secs: u64,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            check_interval_secs: 5,
            max_clock_skew_secs: 5,
        }
    }
}

/// The Prometheus endpoint: `GET /metrics` on its own port, off the gRPC one.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Serve it.
    pub enabled: bool,
    /// Its address. It shows counts, never users or secrets, and needs no API key.
    pub listen: SocketAddr,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 9464)),
        }
    }
}

/// Which SMS sender to use.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SmsSenderKind {
    /// Development only: each message is written to the log (with its code), loudly marked.
    /// Refused when `server.production` is on.
    Log,
    /// AWS SNS (Publish to a phone number, SMS type Transactional).
    Sns,
}

/// SMS codes, how they are sent, and the limits against SMS pumping.
#[derive(Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct SmsConfig {
    /// `log` (development) or `sns`.
    pub sender: SmsSenderKind,
    /// The message; `{code}` is replaced by the code, `{organization}` by the organization's
    /// name (`otp.issuer` for users in none).
    pub message: String,
    /// Seconds a code stays valid.
    pub code_ttl_secs: i64,
    /// Codes checked against one sent code before a new one must be requested.
    pub code_max_attempts: i32,
    /// Country calling-code prefixes SMS may go to, like `+1` or `+44`.
    pub allowed_country_prefixes: Vec<String>,
    /// Prefixes refused even when allowed above, like `+1876` (Jamaica shares `+1`).
    pub denied_country_prefixes: Vec<String>,
    /// Seconds before another code may go to the same number.
    pub number_cooldown_secs: i64,
    /// Codes sent per user per hour.
    pub user_hourly_limit: i64,
    /// Codes sent per organization per day (users in no organization share one budget).
    pub org_daily_limit: i64,
    /// The pumping guard's window, in seconds.
    pub pumping_window_secs: i64,
    /// Sends in the window before the guard judges.
    pub pumping_min_sends: i64,
    /// The guard stops sending while sends exceed this many per successful verification in
    /// the window.
    pub pumping_max_ratio: i64,
    /// SNS region; empty = the AWS chain (`AWS_REGION`, profile).
    pub sns_region: String,
    /// SNS endpoint; empty = AWS's. Set for an SNS-compatible service (moto, LocalStack).
    pub sns_endpoint_url: String,
    /// Access key id; empty = the AWS credentials chain (environment, profile, web identity,
    /// ECS or instance role).
    pub sns_access_key_id: String,
    /// The secret access key that goes with `sns_access_key_id`.
    pub sns_secret_access_key: String,
    /// An alphanumeric sender id where the destination country supports one; empty = none.
    pub sns_sender_id: String,
    /// Milliseconds one Publish attempt may take (connection included).
    pub sns_timeout_ms: u64,
    /// Attempts per message, retries included (throttling and transient errors).
    pub sns_max_attempts: u32,
}

impl std::fmt::Debug for SmsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmsConfig")
            .field("sender", &self.sender)
            .field("message", &self.message)
            .field("code_ttl_secs", &self.code_ttl_secs)
            .field("code_max_attempts", &self.code_max_attempts)
            .field("allowed_country_prefixes", &self.allowed_country_prefixes)
            .field("denied_country_prefixes", &self.denied_country_prefixes)
            .field("number_cooldown_secs", &self.number_cooldown_secs)
            .field("user_hourly_limit", &self.user_hourly_limit)
            .field("org_daily_limit", &self.org_daily_limit)
            .field("pumping_window_secs", &self.pumping_window_secs)
            .field("pumping_min_sends", &self.pumping_min_sends)
            .field("pumping_max_ratio", &self.pumping_max_ratio)
            .field("sns_region", &self.sns_region)
            .field("sns_endpoint_url", &self.sns_endpoint_url)
            .field("sns_access_key_id", &self.sns_access_key_id)
            .field(
                "sns_secret_access_key",
                &if self.sns_secret_access_key.is_empty() {
                    ""
                } else {
                    "<redacted>"
                },
            )
            .field("sns_sender_id", &self.sns_sender_id)
            .field("sns_timeout_ms", &self.sns_timeout_ms)
            .field("sns_max_attempts", &self.sns_max_attempts)
            .finish()
    }
}

impl Default for SmsConfig {
    fn default() -> Self {
        Self {
            sender: SmsSenderKind::Log,
            message: "{code} is your {organization} verification code. Never share it.".to_owned(),
            code_ttl_secs: 300,
            code_max_attempts: 3,
            allowed_country_prefixes: vec!["+1".to_owned()],
            // The +1 countries outside the US and Canada: premium-rate and pumping targets.
            denied_country_prefixes: NANP_OUTSIDE_US_CA.iter().map(|p| (*p).to_owned()).collect(),
            number_cooldown_secs: 30,
            user_hourly_limit: 5,
            org_daily_limit: 500,
            pumping_window_secs: 3_600,
            pumping_min_sends: 20,
            pumping_max_ratio: 3,
            sns_region: String::new(),
            sns_endpoint_url: String::new(),
            sns_access_key_id: String::new(),
            sns_secret_access_key: String::new(),
            sns_sender_id: String::new(),
            sns_timeout_ms: 5_000,
            sns_max_attempts: 2,
        }
    }
}

/// The area codes of the +1 countries other than the United States (and its territories) and
/// Canada, in the Caribbean and the Atlantic: denied by default, since `+1` alone would let
/// SMS go there.
const NANP_OUTSIDE_US_CA: [&str; 20] = [
    "+1242", "+1246", "+1264", "+1268", "+1284", "+1345", "+1441", "+1473", "+1649", "+1658",
    "+1664", "+1721", "+1758", "+1767", "+1784", "+1809", "+1829", "+1849", "+1868", "+1876",
];

/// A caller authenticated by API key.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    /// A name for logs and audit.
    pub name: String,
    /// SHA-256 of the key, hex (`tollgate hash-api-key` prints it). The key itself is never
    /// stored.
    pub sha256: String,
    /// What the caller may do: `users:read`, `users:write`, `organizations:read`,
    /// `organizations:write`, `authentication`, `sessions`, `factors`, `sso`.
    pub scopes: Vec<String>,
}

/// A caller authenticated by client certificate.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TlsClientConfig {
    /// A name for logs and audit.
    pub name: String,
    /// SHA-256 of the client certificate (DER), hex.
    pub sha256: String,
    /// As for API keys.
    pub scopes: Vec<String>,
}

/// Why the configuration is unusable. The message names the key.
#[derive(Debug, thiserror::Error)]
#[error("configuration: {0}")]
pub struct ConfigError(pub String);

/// The scopes a caller can be given.
pub const SCOPES: [&str; 8] = [
    "users:read",
    "users:write",
    "organizations:read",
    "organizations:write",
    "authentication",
    "sessions",
    "factors",
    "sso",
];

impl Config {
    /// Defaults, then `file` (if given; it must exist), then `TOLLGATE_*` variables from `env`
    /// (pass `std::env::vars()` in the binary, a fixed list in tests).
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Self::default()));
        if let Some(file) = file {
            if !file.exists() {
                return Err(ConfigError(format!(
                    "file {} does not exist",
                    file.display()
                )));
            }
            figment = figment.merge(Toml::file(file));
        }
        // Collect the variables first so tests never touch the process environment.
        // Only TOLLGATE_<TABLE>__<KEY>: every setting lives in a table, and other TOLLGATE_*
        // variables (Kubernetes injects TOLLGATE_SERVICE_HOST and TOLLGATE_PORT for a Service
        // named tollgate) are not ours.
        let vars: Vec<(String, String)> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with("TOLLGATE_") && k.contains("__"))
            .collect();
        // `TOLLGATE_DATABASE__URL` is `database.url`: grouped by table into one TOML document.
        let mut tables: std::collections::BTreeMap<String, Vec<String>> = Default::default();
        for (key, value) in &vars {
            let path = key
                .trim_start_matches("TOLLGATE_")
                .to_lowercase()
                .replace("__", ".");
            let (table, leaf) = path.rsplit_once('.').unwrap_or(("", path.as_str()));
            tables
                .entry(table.to_owned())
                .or_default()
                .push(format!("{leaf} = {}", env_value(value)));
        }
        let mut toml = String::new();
        for (table, lines) in &tables {
            if !table.is_empty() {
                toml.push_str(&format!("[{table}]\n"));
            }
            for line in lines {
                toml.push_str(line);
                toml.push('\n');
            }
        }
        figment = figment.merge(Toml::string(&toml));
        let config: Self = figment
            .extract()
            .map_err(|e| ConfigError(format_figment_error(&e)))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what types alone cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |key: &str, why: &str| Err(ConfigError(format!("{key}: {why}")));
        if !(self.database.url.starts_with("sqlite:")
            || self.database.url.starts_with("postgres://")
            || self.database.url.starts_with("postgresql://"))
        {
            return err("database.url", "must start with sqlite:// or postgres://");
        }
        match (&self.server.tls_cert_file, &self.server.tls_key_file) {
            (Some(_), None) => return err("server.tls_key_file", "required with tls_cert_file"),
            (None, Some(_)) => return err("server.tls_cert_file", "required with tls_key_file"),
            _ => {}
        }
        if self.server.tls_client_ca_file.is_some() && self.server.tls_cert_file.is_none() {
            return err(
                "server.tls_client_ca_file",
                "mutual TLS needs server.tls_cert_file",
            );
        }
        if !self.tls_clients.is_empty() && self.server.tls_client_ca_file.is_none() {
            return err(
                "tls_clients",
                "client certificates need server.tls_client_ca_file",
            );
        }
        let p = &self.passwords;
        if p.iterations == 0 {
            return err("passwords.iterations", "must be at least 1");
        }
        if p.parallelism == 0 {
            return err("passwords.parallelism", "must be at least 1");
        }
        if let Err(e) = argon2::Params::new(p.memory_kib, p.iterations, p.parallelism, None) {
            return err(
                "passwords.memory_kib",
                &format!("argon2 refuses these parameters: {e}"),
            );
        }
        if !(8..=256).contains(&p.min_length) {
            return err("passwords.min_length", "must be 8 to 256");
        }
        // Each slot is a thread started at start-up with its own argon2 memory.
        if p.max_concurrent > 256 {
            return err(
                "passwords.max_concurrent",
                "must be 0 (one per core) to 256",
            );
        }
        for (key, value) in [
            ("sessions.idle_ttl_secs", self.sessions.idle_ttl_secs),
            (
                "sessions.absolute_ttl_secs",
                self.sessions.absolute_ttl_secs,
            ),
            ("login.challenge_ttl_secs", self.login.challenge_ttl_secs),
            ("login.enrollment_ttl_secs", self.login.enrollment_ttl_secs),
        ] {
            if value <= 0 {
                return err(key, "must be a positive number of seconds");
            }
        }
        if !(0..=3600).contains(&self.sessions.idle_tolerance_secs) {
            return err("sessions.idle_tolerance_secs", "must be 0 to 3600");
        }
        if self.login.max_consecutive_failures <= self.login.free_failures
            || self.login.max_consecutive_failures > 100
        {
            return err(
                "login.max_consecutive_failures",
                "must be more than login.free_failures and at most 100",
            );
        }
        if self.otp.issuer.trim().is_empty() || self.otp.issuer.contains(':') {
            return err("otp.issuer", "must be non-empty and contain no ':'");
        }
        if self.otp.pending_enrollment_ttl_secs <= 0 {
            return err(
                "otp.pending_enrollment_ttl_secs",
                "must be a positive number of seconds",
            );
        }
        if !(1..=20).contains(&self.otp.challenge_max_attempts) {
            return err("otp.challenge_max_attempts", "must be 1 to 20");
        }
        if !(5..=20).contains(&self.otp.recovery_codes) {
            return err("otp.recovery_codes", "must be 5 to 20");
        }
        // Each step or counter a window adds is one more code a guess can hit.
        if self.otp.totp_steps_behind > 5 {
            return err("otp.totp_steps_behind", "must be 0 to 5");
        }
        if self.otp.totp_steps_ahead > 5 {
            return err("otp.totp_steps_ahead", "must be 0 to 5");
        }
        if !(1..=otp_core::HotpParams::MAX_LOOK_AHEAD).contains(&self.otp.hotp_look_ahead) {
            return err("otp.hotp_look_ahead", "must be 1 to 100");
        }
        if !(self.otp.hotp_look_ahead..=otp_core::HotpParams::MAX_RESYNC_WINDOW)
            .contains(&self.otp.hotp_resync_window)
        {
            return err(
                "otp.hotp_resync_window",
                "must be at least hotp_look_ahead and at most 10000",
            );
        }
        self.webauthn.validate()?;
        self.clients.validate()?;
        if self.tracing.sample_permille > 1000 {
            return err("tracing.sample_permille", "must be 0 to 1000");
        }
        let endpoint = self.tracing.otlp_endpoint.as_str();
        let http = endpoint.starts_with("http://") || endpoint.starts_with("https://");
        if !endpoint.is_empty() && !http {
            return err(
                "tracing.otlp_endpoint",
                "must be an http:// or https:// URL of an OTLP/gRPC collector",
            );
        }
        if self.tracing.service_name.trim().is_empty() {
            return err("tracing.service_name", "must not be empty");
        }
        if self.health.check_interval_secs == 0 {
            return err("health.check_interval_secs", "must be at least 1");
        }
        if self.server.production && self.keys.generate_if_missing {
            return err(
                "keys.generate_if_missing",
                "must be false in production (server.production): a missing key file must stop start-up",
            );
        }
        self.sms.validate(self.server.production)?;
        if self.metrics.enabled
            && self.metrics.listen == self.server.listen
            && self.server.listen.port() != 0
        {
            return err("metrics.listen", "must differ from server.listen");
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            return err("log.level", &e.to_string());
        }
        for (i, key) in self.api_keys.iter().enumerate() {
            check_caller(&format!("api_keys[{i}]"), &key.sha256, &key.scopes)?;
        }
        for (i, client) in self.tls_clients.iter().enumerate() {
            check_caller(&format!("tls_clients[{i}]"), &client.sha256, &client.scopes)?;
        }
        Ok(())
    }

    /// Whether callers must authenticate (any API key or client certificate configured).
    pub fn callers_configured(&self) -> bool {
        !self.api_keys.is_empty() || !self.tls_clients.is_empty()
    }
}

impl SmsConfig {
    fn validate(&self, production: bool) -> Result<(), ConfigError> {
        let err = |key: &str, why: &str| Err(ConfigError(format!("sms.{key}: {why}")));
        if production && self.sender == SmsSenderKind::Log {
            return err(
                "sender",
                "the log sender writes codes to the log and is for development only; use sns in production (server.production)",
            );
        }
        if !self.message.contains("{code}") || self.message.chars().count() > 300 {
            return err(
                "message",
                "must contain {code} and be at most 300 characters",
            );
        }
        if !(60..=3_600).contains(&self.code_ttl_secs) {
            return err("code_ttl_secs", "must be 60 to 3600");
        }
        if !(1..=10).contains(&self.code_max_attempts) {
            return err("code_max_attempts", "must be 1 to 10");
        }
        for (key, prefixes) in [
            ("allowed_country_prefixes", &self.allowed_country_prefixes),
            ("denied_country_prefixes", &self.denied_country_prefixes),
        ] {
            for prefix in prefixes {
                let digits = prefix.strip_prefix('+').unwrap_or_default();
                if !(1..=6).contains(&digits.len()) || !digits.bytes().all(|b| b.is_ascii_digit()) {
                    return err(
                        key,
                        &format!("{prefix:?} is not a calling-code prefix like \"+44\""),
                    );
                }
            }
        }
        for (key, value) in [
            ("number_cooldown_secs", self.number_cooldown_secs),
            ("user_hourly_limit", self.user_hourly_limit),
            ("org_daily_limit", self.org_daily_limit),
            ("pumping_window_secs", self.pumping_window_secs),
            ("pumping_min_sends", self.pumping_min_sends),
            ("pumping_max_ratio", self.pumping_max_ratio),
        ] {
            if value < 1 {
                return err(key, "must be at least 1");
            }
        }
        if self.sns_access_key_id.is_empty() != self.sns_secret_access_key.is_empty() {
            return err(
                "sns_secret_access_key",
                "sns_access_key_id and sns_secret_access_key go together",
            );
        }
        let url = &self.sns_endpoint_url;
        if !(url.is_empty() || url.starts_with("http://") || url.starts_with("https://")) {
            return err("sns_endpoint_url", "must be an http:// or https:// URL");
        }
        if self.sns_timeout_ms < 100 {
            return err("sns_timeout_ms", "must be at least 100");
        }
        if !(1..=5).contains(&self.sns_max_attempts) {
            return err("sns_max_attempts", "must be 1 to 5");
        }
        Ok(())
    }
}

fn check_caller(key: &str, sha256: &str, scopes: &[String]) -> Result<(), ConfigError> {
    if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ConfigError(format!(
            "{key}.sha256: must be 64 hexadecimal characters"
        )));
    }
    if let Some(bad) = scopes.iter().find(|s| !SCOPES.contains(&s.as_str())) {
        return Err(ConfigError(format!(
            "{key}.scopes: unknown scope {bad:?} (known: {})",
            SCOPES.join(", ")
        )));
    }
    Ok(())
}

/// An environment value as a TOML value: numbers and booleans as they are, anything else as
/// a string (so `TOLLGATE_DATABASE__URL=postgres://…` needs no quoting).
fn env_value(value: &str) -> String {
    let bare = value.parse::<i64>().is_ok() || value == "true" || value == "false";
    if bare || value.starts_with('[') {
        value.to_owned()
    } else {
        format!("{value:?}")
    }
}

fn format_figment_error(e: &figment::Error) -> String {
    let key = e.path.join(".");
    let mut message = e.kind.to_string();
    if let Some(first) = e.clone().into_iter().nth(1) {
        message.push_str(&format!("; also {}", first.kind));
    }
    if key.is_empty() {
        message
    } else {
        format!("{key}: {message}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn defaults_need_no_file() {
        let config = Config::load(None, env(&[])).unwrap();
        assert_eq!(config.server.listen.to_string(), "127.0.0.1:50051");
        assert_eq!(config.database.url, "sqlite://data/tollgate.db");
        assert_eq!(config.passwords.memory_kib, 19_456);
        assert!(!config.callers_configured());
    }

    #[test]
    fn file_then_environment() {
        let dir = std::env::temp_dir().join(format!("tollgate-config-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("t.toml");
        std::fs::write(
            &file,
            "[database]\nurl = \"postgres://u@h/db\"\n[sessions]\nidle_ttl_secs = 60\n\
             [[api_keys]]\nname = \"web\"\nsha256 = \""
                .to_owned()
                + &"ab".repeat(32)
                + "\"\nscopes = [\"authentication\"]\n",
        )
        .unwrap();
        let config = Config::load(
            Some(&file),
            env(&[
                ("TOLLGATE_SESSIONS__IDLE_TTL_SECS", "120"),
                ("TOLLGATE_SERVER__LISTEN", "0.0.0.0:7000"),
                ("TOLLGATE_LOG__FORMAT", "json"),
                ("UNRELATED", "x"),
            ]),
        )
        .unwrap();
        assert_eq!(config.database.url, "postgres://u@h/db");
        assert_eq!(config.sessions.idle_ttl_secs, 120, "the environment wins");
        assert_eq!(config.server.listen.to_string(), "0.0.0.0:7000");
        assert_eq!(config.log.format, LogFormat::Json);
        assert_eq!(config.api_keys.len(), 1);
        assert!(config.callers_configured());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn bad_values_name_their_key() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (
                &[("TOLLGATE_SERVER__LISTEN", "not an address")],
                "server.listen",
            ),
            (
                &[("TOLLGATE_SESSIONS__IDLE_TTL_SECS", "soon")],
                "sessions.idle_ttl_secs",
            ),
            (
                &[("TOLLGATE_SESSIONS__IDLE_TOLERANCE_SECS", "3601")],
                "sessions.idle_tolerance_secs",
            ),
            (
                &[("TOLLGATE_SESSIONS__IDLE_TOLERANCE_SECS", "-1")],
                "sessions.idle_tolerance_secs",
            ),
            (
                &[(
                    "TOLLGATE_CLIENTS__ALLOWLIST",
                    r#"["10.0.0.0/8", "not a network"]"#,
                )],
                "clients.allowlist[1]",
            ),
            (
                &[
                    ("TOLLGATE_CLIENTS__ADDRESS_FREE_FAILURES", "50"),
                    ("TOLLGATE_CLIENTS__NETWORK_FREE_FAILURES", "49"),
                ],
                "clients.network_free_failures",
            ),
            (
                &[("TOLLGATE_CLIENTS__WINDOW_SECS", "0")],
                "clients.window_secs",
            ),
            (
                &[("TOLLGATE_CLIENTS__BASE_LOCKOUT_SECS", "7200")],
                "clients.base_lockout_secs",
            ),
            (&[("TOLLGATE_DATABASE__URL", "mysql://x")], "database.url"),
            (&[("TOLLGATE_LOG__FORMAT", "xml")], "log.format"),
            (&[("TOLLGATE_SERVER__NO_SUCH_KEY", "1")], "no_such_key"),
            (
                &[("TOLLGATE_PASSWORDS__ITERATIONS", "0")],
                "passwords.iterations",
            ),
            (
                &[("TOLLGATE_SERVER__TLS_CERT_FILE", "/x.pem")],
                "server.tls_key_file",
            ),
            (
                &[("TOLLGATE_SESSIONS__ABSOLUTE_TTL_SECS", "0")],
                "sessions.absolute_ttl_secs",
            ),
            (
                &[("TOLLGATE_LOGIN__ENROLLMENT_TTL_SECS", "-5")],
                "login.enrollment_ttl_secs",
            ),
            (
                &[
                    ("TOLLGATE_WEBAUTHN__RP_ID", "127.0.0.1"),
                    ("TOLLGATE_WEBAUTHN__ORIGINS", "[\"http://127.0.0.1:8080\"]"),
                ],
                "webauthn.rp_id",
            ),
            (
                &[("TOLLGATE_WEBAUTHN__RP_ID", "example.com")],
                "webauthn.origins",
            ),
            (
                &[
                    ("TOLLGATE_WEBAUTHN__RP_ID", "example.com"),
                    ("TOLLGATE_WEBAUTHN__ORIGINS", "[\"https://example.org\"]"),
                ],
                "webauthn.origins",
            ),
            (
                &[
                    ("TOLLGATE_WEBAUTHN__RP_ID", "example.com"),
                    (
                        "TOLLGATE_WEBAUTHN__ORIGINS",
                        "[\"http://login.example.com\"]",
                    ),
                ],
                "webauthn.origins",
            ),
            (
                &[("TOLLGATE_WEBAUTHN__ATTESTATION", "direct")],
                "webauthn.attestation",
            ),
            (
                &[("TOLLGATE_WEBAUTHN__TIMEOUT_SECS", "1")],
                "webauthn.timeout_secs",
            ),
            (
                &[("TOLLGATE_LOGIN__MAX_CONSECUTIVE_FAILURES", "101")],
                "login.max_consecutive_failures",
            ),
            (
                &[("TOLLGATE_LOGIN__MAX_CONSECUTIVE_FAILURES", "5")],
                "login.max_consecutive_failures",
            ),
            (
                &[("TOLLGATE_PASSWORDS__PARALLELISM", "0")],
                "passwords.parallelism",
            ),
            (
                &[("TOLLGATE_PASSWORDS__MEMORY_KIB", "1")],
                "passwords.memory_kib",
            ),
            (
                &[("TOLLGATE_PASSWORDS__MAX_CONCURRENT", "100000")],
                "passwords.max_concurrent",
            ),
            (
                &[("TOLLGATE_HEALTH__CHECK_INTERVAL_SECS", "0")],
                "health.check_interval_secs",
            ),
            (&[("TOLLGATE_LOG__LEVEL", "info,=[")], "log.level"),
            // Development-only settings are refused in production.
            (
                &[
                    ("TOLLGATE_SERVER__PRODUCTION", "true"),
                    ("TOLLGATE_KEYS__GENERATE_IF_MISSING", "false"),
                ],
                "sms.sender",
            ),
            (
                &[
                    ("TOLLGATE_SERVER__PRODUCTION", "true"),
                    ("TOLLGATE_SMS__SENDER", "sns"),
                ],
                "keys.generate_if_missing",
            ),
            (&[("TOLLGATE_SMS__SENDER", "carrier-pigeon")], "sms.sender"),
            (&[("TOLLGATE_SMS__MESSAGE", "no code here")], "sms.message"),
            (
                &[("TOLLGATE_SMS__ALLOWED_COUNTRY_PREFIXES", r#"["44"]"#)],
                "sms.allowed_country_prefixes",
            ),
            (
                &[("TOLLGATE_SMS__USER_HOURLY_LIMIT", "0")],
                "sms.user_hourly_limit",
            ),
            (
                &[("TOLLGATE_SMS__SNS_ACCESS_KEY_ID", "AKIA...")],
                "sms.sns_secret_access_key",
            ),
            (
                &[("TOLLGATE_SMS__SNS_ENDPOINT_URL", "localhost:4566")],
                "sms.sns_endpoint_url",
            ),
            (
                &[("TOLLGATE_SMS__SNS_MAX_ATTEMPTS", "0")],
                "sms.sns_max_attempts",
            ),
        ];
        for (vars, key) in cases {
            let err = Config::load(None, env(vars)).unwrap_err().to_string();
            assert!(err.contains(key), "{vars:?}: {err}");
        }
        let err = Config::load(Some(Path::new("/no/such/file.toml")), env(&[])).unwrap_err();
        assert!(err.to_string().contains("does not exist"));
    }

    #[test]
    fn a_production_configuration_with_sns_loads_and_hides_the_aws_secret() {
        let config = Config::load(
            None,
            env(&[
                ("TOLLGATE_SERVER__PRODUCTION", "true"),
                ("TOLLGATE_KEYS__GENERATE_IF_MISSING", "false"),
                ("TOLLGATE_SMS__SENDER", "sns"),
                ("TOLLGATE_SMS__SNS_ACCESS_KEY_ID", "AKIAEXAMPLE"),
                ("TOLLGATE_SMS__SNS_SECRET_ACCESS_KEY", "aws-secret-value"),
                ("TOLLGATE_SMS__ALLOWED_COUNTRY_PREFIXES", r#"["+1","+44"]"#),
            ]),
        )
        .unwrap();
        assert_eq!(config.sms.allowed_country_prefixes, ["+1", "+44"]);
        assert!(!format!("{config:?}").contains("aws-secret-value"));
    }

    #[test]
    fn other_tollgate_variables_are_not_settings() {
        // What Kubernetes injects for a Service named `tollgate`.
        let config = Config::load(
            None,
            env(&[
                ("TOLLGATE_SERVICE_HOST", "10.0.0.1"),
                ("TOLLGATE_PORT", "tcp://10.0.0.1:50051"),
                ("TOLLGATE_CONFIG", "/etc/tollgate.toml"),
            ]),
        )
        .unwrap();
        assert_eq!(config, Config::default());
    }

    #[test]
    fn database_passwords_stay_out_of_debug() {
        let config = Config::load(
            None,
            env(&[(
                "TOLLGATE_DATABASE__URL",
                "postgres://app:hunter2@db/tollgate",
            )]),
        )
        .unwrap();
        assert!(!format!("{config:?}").contains("hunter2"));
    }
}

#[cfg(test)]
mod example {
    use super::*;

    /// The configuration the Kubernetes kit ships (the ConfigMap) loads and validates.
    #[test]
    fn the_kubernetes_configmap_loads_and_validates() {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/kubernetes/configmap.yaml");
        let yaml = std::fs::read_to_string(path).unwrap();
        // The block scalar under `tollgate.toml: |`, its four spaces of indentation removed.
        let block = yaml.split("tollgate.toml: |\n").nth(1).unwrap();
        let toml: String = block
            .lines()
            .take_while(|line| line.is_empty() || line.starts_with("    "))
            .map(|line| format!("{}\n", line.strip_prefix("    ").unwrap_or(line)))
            .collect();
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), &toml).unwrap();
        let config = Config::load(Some(file.path()), Vec::new())
            .unwrap_or_else(|e| panic!("the ConfigMap's tollgate.toml: {e}\n{toml}"));
        assert!(config.server.production);
        assert!(!config.keys.generate_if_missing);
        assert_eq!(config.api_keys.len(), 2);
    }

    /// The documented reference must load, and must hold exactly the defaults.
    #[test]
    fn the_example_file_is_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/tollgate.example.toml");
        let loaded = Config::load(Some(&path), Vec::new()).unwrap();
        assert_eq!(loaded, Config::default());
        // And document every key: each leaf of the defaults appears as `key =` (possibly
        // commented out) under its table, with its environment variable named.
        let text = std::fs::read_to_string(&path).unwrap();
        let dict: figment::value::Dict = Figment::from(Serialized::defaults(Config::default()))
            .extract()
            .unwrap();
        let mut checked = 0;
        for (table, value) in &dict {
            let Some(inner) = value.as_dict() else {
                continue;
            };
            // The table's own text: from its header to the next header.
            let section = text
                .split(&format!("[{table}]\n"))
                .nth(1)
                .unwrap_or_else(|| panic!("[{table}]"));
            let section = section.split("\n[").next().unwrap_or(section);
            for key in inner.keys() {
                assert!(
                    section.contains(&format!("{key} =")),
                    "{table}.{key} is not documented"
                );
                let env = format!("TOLLGATE_{}__{}", table.to_uppercase(), key.to_uppercase());
                let short = format!("__{}", key.to_uppercase());
                assert!(
                    text.contains(&env) || section.contains(&short),
                    "{env} is not named"
                );
                checked += 1;
            }
        }
        assert!(checked >= 20, "{checked}");
    }

    /// The configurations shipped in deploy/ load and pass validation: the container image's
    /// and the local trial's.
    #[test]
    fn the_shipped_configurations_load() {
        let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy");
        let image =
            Config::load(Some(&deploy.join("tollgate.container.toml")), Vec::new()).unwrap();
        assert!(image.server.production && image.sms.sender == SmsSenderKind::Sns);
        assert!(!image.keys.generate_if_missing);
        let trial = Config::load(Some(&deploy.join("compose/tollgate.toml")), Vec::new()).unwrap();
        assert!(trial.callers_configured(), "it listens beyond loopback");
    }
}
