//! `tollgate`: run the server, apply migrations, check a configuration, hash an API key,
//! generate a key file.

#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a command-line tool"
)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use server::config::Config;
use server::placement::Placement;
use server::{App, SystemClock};

/// Tollgate, the two-factor authentication service.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// A TOML configuration file (see deploy/tollgate.example.toml). TOLLGATE_* variables
    /// override it.
    #[arg(long, short, global = true, env = "TOLLGATE_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs the gRPC server (applies pending migrations first).
    Serve,
    /// Applies pending database migrations and exits.
    Migrate,
    /// Loads and checks the configuration (and the key file), prints it without secrets.
    CheckConfig,
    /// Reads an API key on standard input and prints the SHA-256 to put in `api_keys`.
    HashApiKey,
    /// Prints a new key file (one encryption key and a hash key) for `keys.file`.
    GenerateKeys,
    /// Lifts the lockouts of an account (its password and its second factors) after a
    /// support check; audited as `user.unlocked`.
    Unlock {
        /// The account's email.
        #[arg(long)]
        email: String,
    },
    /// Resets the 2FA of an account that no admin can reset (an organization's only owner
    /// who lost the phone and the recovery codes): removes every factor and recovery code,
    /// revokes every session, and has the user enroll again at the next login; audited as
    /// `mfa.reset` with the operator's name.
    ResetMfa {
        /// The account's email.
        #[arg(long)]
        email: String,
        /// Who runs it, for the audit log (your name or ticket).
        #[arg(long)]
        operator: String,
    },
    /// Re-seals every factor seed under the key file's primary key, in batches; safe to run
    /// while the servers run, to interrupt and to run again.
    RotateKeys {
        /// Seeds per batch.
        #[arg(long, default_value_t = 500)]
        batch: u64,
    },
    /// Times argon2id at the configured `passwords` parameters on every core at once and
    /// prints the median and fastest hash as JSON: this machine's login limit for this
    /// binary's code. The load generator runs it to measure the limit with the code the
    /// server hashes with.
    HashLimit {
        /// Hashes timed on each core (after two untimed ones).
        #[arg(long, default_value_t = 40)]
        samples: usize,
    },
    /// Asks a running server's standard gRPC health service whether it is SERVING; exits 0 if
    /// so, 1 otherwise (a container HEALTHCHECK).
    Probe {
        /// The server's gRPC address (plaintext).
        #[arg(long, default_value = "127.0.0.1:50051")]
        addr: String,
        /// The service to ask about; empty for the whole server.
        #[arg(long, default_value = "")]
        service: String,
        /// Connect over TLS, trusting this CA (PEM) for the server's certificate.
        #[arg(long)]
        tls_ca: Option<PathBuf>,
        /// The name the server's certificate is for (default: the host of --addr).
        #[arg(long, requires = "tls_ca")]
        tls_domain: Option<String>,
        /// Under mutual TLS: the client certificate (PEM), one of `tls_clients`.
        #[arg(long, requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// The client certificate's private key (PEM).
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<PathBuf>,
    },
}

fn load(cli: &Cli) -> Result<Config, String> {
    Config::load(cli.config.as_deref(), std::env::vars()).map_err(|e| e.to_string())
}

async fn open_storage(config: &Config) -> Result<(storage::Storage, bool), String> {
    let keys = server::keys::load_or_generate(&config.keys.file, config.keys.generate_if_missing)
        .map_err(|e| e.to_string())?;
    let mut db = storage::DbConfig::from_url(config.database.url.clone());
    if config.database.max_connections > 0 {
        db.max_connections = Some(config.database.max_connections);
    }
    db.connect_timeout = std::time::Duration::from_secs(config.database.connect_timeout_secs);
    let storage = storage::Storage::open(&db, keys.keyring, keys.hasher)
        .await
        .map_err(|e| {
            format!(
                "database {}: {e}",
                storage::redact_url(&config.database.url)
            )
        })?;
    Ok((storage, keys.generated))
}

/// The configuration `serve` runs with, and the placement of its threads, which must be
/// decided before the runtime starts them.
struct Serving {
    config: Config,
    placement: Placement,
    /// Why nothing was pinned although the setting asked for it.
    unplaced: Option<String>,
}

async fn serve(serving: Serving) -> Result<(), String> {
    let Serving {
        config,
        placement,
        unplaced,
    } = serving;
    // Held to the end of `serve`: dropping it sends the spans still batched.
    let _traces = server::telemetry::init(&config.log, &config.tracing)?;
    match (&unplaced, placement.requests) {
        (Some(why), _) => tracing::warn!(
            setting = ?config.server.thread_placement,
            "threads not pinned, the kernel places them: {why}"
        ),
        (None, Some(cpu)) => tracing::info!(
            requests_cpu = cpu,
            hashing_cpus = ?placement.hashing,
            "threads pinned: request threads on one CPU, hashing threads spread over the CPUs, the request CPU last"
        ),
        (None, None) => {}
    }
    if !config.callers_configured() && !config.server.listen.ip().is_loopback() {
        return Err(format!(
            "server.listen: {} is not a loopback address, and no api_keys or tls_clients are \
             configured: anyone could call. Configure callers, or listen on 127.0.0.1",
            config.server.listen
        ));
    }
    let started = std::time::Instant::now();
    let (storage, generated) = open_storage(&config).await?;
    if generated {
        tracing::warn!(
            file = %config.keys.file.display(),
            "!!! DEVELOPMENT KEYS GENERATED: factor secrets are encrypted with a key created just \
             now on this machine. Back it up, or set keys.file to your real key file and \
             keys.generate_if_missing = false in production !!!"
        );
    }
    if !config.callers_configured() {
        tracing::warn!("no api_keys or tls_clients configured: every local caller has every scope");
    }
    if !config.api_keys.is_empty()
        && config.server.tls_cert_file.is_none()
        && !config.server.listen.ip().is_loopback()
    {
        tracing::warn!(
            "API keys are accepted over plaintext on a non-loopback address: configure \
             server.tls_cert_file, or terminate TLS in front of Tollgate"
        );
    }
    let passwords = server::password::Passwords::placed(&config.passwords, &placement)
        .map_err(|e| e.to_string())?;
    let listener = tokio::net::TcpListener::bind(config.server.listen)
        .await
        .map_err(|e| format!("server.listen {}: {e}", config.server.listen))?;
    // Prometheus metrics on their own port; they stop with the process.
    let metrics_listener = if config.metrics.enabled {
        let address = config.metrics.listen;
        Some(
            tokio::net::TcpListener::bind(address)
                .await
                .map_err(|e| format!("metrics.listen {address}: {e}"))?,
        )
    } else {
        None
    };
    let metrics_address = match &metrics_listener {
        Some(l) => l.local_addr().map_err(|e| e.to_string())?.to_string(),
        None => "off".to_owned(),
    };
    tracing::info!(
        address = %listener.local_addr().map_err(|e| e.to_string())?,
        metrics = %metrics_address,
        database = %storage::redact_url(&config.database.url),
        tls = config.server.tls_cert_file.is_some(),
        startup_ms = started.elapsed().as_millis(),
        "tollgate listening"
    );
    let sms = server::sms::from_config(&config.sms).await;
    let webauthn = server::webauthn::from_config(&config.webauthn).map_err(|e| e.to_string())?;
    let app = App {
        storage,
        config: Arc::new(config),
        passwords,
        clock: Arc::new(SystemClock),
        sms,
        metrics: Default::default(),
        db_health: Default::default(),
        webauthn,
    };
    let metrics = metrics_listener.map(|listener| {
        tokio::spawn(server::metrics::serve(
            app.clone(),
            listener,
            std::future::pending(),
        ))
    });
    let served = server::serve(app, listener, shutdown_signal())
        .await
        .map_err(|e| e.to_string());
    if let Some(task) = metrics {
        task.abort();
    }
    if served.is_ok() {
        // Written before exit with every line queued before it: dropping `_traces` waits for
        // the log writer (only the trace exporter's warning, if its last spans fail, follows).
        tracing::info!(
            uptime_s = started.elapsed().as_secs(),
            "stopped: in-flight calls finished"
        );
    }
    served
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}

/// TLS for `tollgate probe`: the CA, the server name, and a client certificate under mTLS.
#[derive(Debug, Default)]
struct ProbeTls {
    ca: Option<PathBuf>,
    domain: Option<String>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
}

async fn probe(addr: &str, service: &str, tls: ProbeTls) -> Result<(), String> {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let read = |path: &std::path::Path, flag: &str| {
        std::fs::read(path).map_err(|e| format!("{flag} {}: {e}", path.display()))
    };
    let scheme = if tls.ca.is_some() { "https" } else { "http" };
    let mut endpoint = tonic::transport::Endpoint::from_shared(format!("{scheme}://{addr}"))
        .map_err(|e| format!("--addr {addr}: {e}"))?
        .connect_timeout(std::time::Duration::from_secs(2))
        .timeout(std::time::Duration::from_secs(2));
    if let Some(ca) = &tls.ca {
        let mut config = tonic::transport::ClientTlsConfig::new().ca_certificate(
            tonic::transport::Certificate::from_pem(read(ca, "--tls-ca")?),
        );
        if let Some(domain) = &tls.domain {
            config = config.domain_name(domain.clone());
        }
        if let (Some(cert), Some(key)) = (&tls.cert, &tls.key) {
            config = config.identity(tonic::transport::Identity::from_pem(
                read(cert, "--tls-cert")?,
                read(key, "--tls-key")?,
            ));
        }
        endpoint = endpoint
            .tls_config(config)
            .map_err(|e| format!("TLS: {e}"))?;
    }
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| format!("{addr}: {e}"))?;
    let status = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: service.to_owned(),
        })
        .await
        .map_err(|e| format!("health check: {}", e.message()))?
        .into_inner()
        .status();
    if status == ServingStatus::Serving {
        println!("SERVING");
        Ok(())
    } else {
        Err(format!("{status:?}"))
    }
}

async fn run(cli: Cli, serving: Option<Serving>) -> Result<(), String> {
    match cli.command {
        // `prepare` loaded the configuration and placed the threads.
        Command::Serve => serve(serving.ok_or("serve: not prepared")?).await,
        Command::Migrate => {
            let config = load(&cli)?;
            let (_, generated) = open_storage(&config).await?;
            if generated {
                eprintln!(
                    "tollgate: DEVELOPMENT KEYS GENERATED in {}: back them up, or point keys.file \
                     at your real key file",
                    config.keys.file.display()
                );
            }
            println!(
                "migrations applied to {}",
                storage::redact_url(&config.database.url)
            );
            Ok(())
        }
        Command::CheckConfig => {
            let config = load(&cli)?;
            server::keys::load_or_generate(&config.keys.file, false).map_err(|e| e.to_string())?;
            // The TLS files must be readable and usable, as `serve` will need them.
            server::tls_config(&config).map_err(|e| e.to_string())?;
            println!("configuration OK\n{config:#?}");
            Ok(())
        }
        Command::HashApiKey => {
            let mut key = String::new();
            std::io::stdin()
                .read_line(&mut key)
                .map_err(|e| e.to_string())?;
            if key.trim().len() < 32 {
                return Err("an API key should be at least 32 random characters".to_owned());
            }
            println!("{}", server::auth::hash_api_key(&key));
            Ok(())
        }
        Command::Probe {
            addr,
            service,
            tls_ca,
            tls_domain,
            tls_cert,
            tls_key,
        } => {
            let tls = ProbeTls {
                ca: tls_ca,
                domain: tls_domain,
                cert: tls_cert,
                key: tls_key,
            };
            probe(&addr, &service, tls).await
        }
        Command::HashLimit { samples } => {
            let config = load(&cli)?;
            let times = server::password::time_hashes(&config.passwords, samples)?;
            println!(
                "{}",
                serde_json::to_string(&times).map_err(|e| e.to_string())?
            );
            Ok(())
        }
        Command::Unlock { ref email } => {
            let config = load(&cli)?;
            let (storage, _) = open_storage(&config).await?;
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
            match server::throttle::unlock(&storage, email, now)
                .await
                .map_err(|e| e.to_string())?
            {
                Some(user) => println!("unlocked user {user}"),
                None => println!("no account with that email; its password lockout is cleared"),
            }
            Ok(())
        }
        Command::ResetMfa {
            ref email,
            ref operator,
        } => {
            if operator.trim().is_empty() || operator.chars().any(char::is_control) {
                return Err("--operator: name who runs the reset, for the audit log".to_owned());
            }
            let config = load(&cli)?;
            let (storage, _) = open_storage(&config).await?;
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
            match server::operator::reset_mfa(&storage, email, operator, now)
                .await
                .map_err(|e| e.to_string())?
            {
                Some(reset) => println!(
                    "reset the 2FA of user {}: {} factors and {} recovery codes removed, {} sessions revoked, {} remembered devices forgotten; they enroll again at their next login",
                    reset.user_id,
                    reset.outcome.factors_removed,
                    reset.outcome.recovery_codes_removed,
                    reset.outcome.sessions_revoked,
                    reset.outcome.trusted_devices_revoked
                ),
                None => return Err("no account with that email; nothing was changed".to_owned()),
            }
            Ok(())
        }
        Command::RotateKeys { batch } => {
            let config = load(&cli)?;
            let (storage, _) = open_storage(&config).await?;
            let (mut after, mut resealed, mut failed) = (None, 0u64, Vec::new());
            loop {
                let progress = storage
                    .factors()
                    .reseal_batch(after, batch.max(1))
                    .await
                    .map_err(|e| e.to_string())?;
                resealed += progress.resealed;
                failed.extend(progress.failed);
                if progress.last_seen.is_none() || progress.remaining == 0 {
                    break;
                }
                after = progress.last_seen;
            }
            println!("re-sealed {resealed} seeds under the primary key");
            if !failed.is_empty() {
                return Err(format!(
                    "{} seeds did not open (their key is missing from the key file): {failed:?}",
                    failed.len()
                ));
            }
            Ok(())
        }
        Command::GenerateKeys => {
            print!(
                "{}",
                server::keys::generate_key_file()
                    .map_err(|e| e.to_string())?
                    .as_str()
            );
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = prepare(&cli).and_then(|serving| {
        let mut runtime = tokio::runtime::Builder::new_multi_thread();
        // Pinned, this thread sees one CPU: as many workers as there are CPUs, as unpinned
        // (unless TOKIO_WORKER_THREADS says otherwise).
        if let Some(cpus) = serving.as_ref().and_then(|s| s.placement.cpus())
            && std::env::var_os("TOKIO_WORKER_THREADS").is_none()
        {
            runtime.worker_threads(cpus);
        }
        runtime
            .enable_all()
            .build()
            .map_err(|e| format!("starting the async runtime: {e}"))?
            .block_on(run(cli, serving))
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("tollgate: {message}");
            ExitCode::FAILURE
        }
    }
}

/// For `serve`: the configuration, and this thread placed before it starts the runtime's
/// threads, which inherit its CPU (`server.thread_placement`).
fn prepare(cli: &Cli) -> Result<Option<Serving>, String> {
    if !matches!(cli.command, Command::Serve) {
        return Ok(None);
    }
    let config = load(cli)?;
    let (placement, unplaced) = Placement::apply(config.server.thread_placement);
    Ok(Some(Serving {
        config,
        placement,
        unplaced,
    }))
}
