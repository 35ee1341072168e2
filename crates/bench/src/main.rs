//! `tollgate-bench`: see the crate documentation and BENCHMARKS.md.

#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a command-line tool"
)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use tollgate_bench::client::Target;
use tollgate_bench::process::Pid;
use tollgate_bench::{Options, Scenario, launch};

/// Drives a Tollgate server and reports throughput, latency, failures and resource use.
/// Without --target it starts the `tollgate` binary beside it on a new database, measures
/// it, stops it and removes the database.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// What to measure.
    #[arg(value_enum)]
    scenario: Scenario,
    /// A running server to drive (`http://host:port`) instead of starting one.
    #[arg(long)]
    target: Option<String>,
    /// The API key to send to --target (not needed for a server on loopback without
    /// configured callers).
    #[arg(long, env = "TOLLGATE_BENCH_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// The --target server's process id, to report its CPU and memory (same machine only).
    #[arg(long)]
    server_pid: Option<i32>,
    /// The server binary to start.
    #[arg(long)]
    server_bin: Option<PathBuf>,
    /// The database of the started server: `sqlite` (a new file) or `postgres` (a new
    /// database on --postgres-url, dropped afterwards).
    #[arg(long, default_value = "sqlite", value_parser = ["sqlite", "postgres"])]
    database: String,
    /// The PostgreSQL server to create the database on.
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    postgres_url: String,
    /// A configuration file for the started server, also read for the argon2id parameters
    /// (use the --target server's file with --target).
    #[arg(long)]
    server_config: Option<PathBuf>,
    /// The started server's log level.
    #[arg(long, default_value = "info")]
    server_log_level: String,
    /// Workers: requests in flight at most.
    #[arg(long, short = 'c', default_value_t = 32)]
    concurrency: usize,
    /// HTTP/2 connections the workers share.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Measured seconds.
    #[arg(long, short = 'd', default_value_t = 15.0)]
    duration: f64,
    /// Unmeasured seconds first.
    #[arg(long, default_value_t = 3.0)]
    warmup: f64,
    /// Open loop: operations per second in all (latency then counts from when each was
    /// due). Default: closed loop, as fast as the server answers.
    #[arg(long)]
    rate: Option<f64>,
    /// Accounts to create (default: what the scenario needs).
    #[arg(long)]
    users: Option<usize>,
    /// `startup`: how many starts.
    #[arg(long, default_value_t = 5)]
    starts: usize,
    /// `ratios`: how many rounds of health, validate, otp.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// No progress bar or notes.
    #[arg(long, short = 'q')]
    quiet: bool,
}

fn options(cli: Cli) -> Result<(Options, Option<PathBuf>), String> {
    let passwords = server::config::Config::load(cli.server_config.as_deref(), std::env::vars())
        .map_err(|e| format!("--server-config: {e}"))?
        .passwords;
    let positive = |name: &str, secs: f64| {
        if secs.is_finite() && secs >= 0.0 {
            Ok(Duration::from_secs_f64(secs))
        } else {
            Err(format!("{name} must be a number of seconds ≥ 0"))
        }
    };
    if cli.concurrency == 0 || cli.connections == 0 {
        return Err("--concurrency and --connections must be at least 1".to_owned());
    }
    if cli.rate.is_some_and(|r| !(r.is_finite() && r > 0.0)) {
        return Err("--rate must be a positive number".to_owned());
    }
    let mut o = Options::new(
        cli.scenario,
        cli.server_bin.unwrap_or_else(launch::default_bin),
    );
    o.target = cli.target.map(|url| Target {
        url,
        api_key: cli.api_key,
    });
    o.server_pid = cli.server_pid.map(Pid);
    o.launch.db = match cli.database.as_str() {
        "postgres" => launch::Db::Postgres(cli.postgres_url),
        _ => launch::Db::Sqlite,
    };
    o.launch.config = cli.server_config;
    o.launch.log_level = cli.server_log_level;
    o.concurrency = cli.concurrency;
    o.connections = cli.connections.min(cli.concurrency);
    o.duration = positive("--duration", cli.duration)?;
    o.warmup = positive("--warmup", cli.warmup)?;
    o.rate = cli.rate;
    o.users = cli.users;
    o.passwords = passwords;
    o.starts = cli.starts;
    o.rounds = cli.rounds.max(1);
    o.progress = !cli.quiet;
    Ok((o, cli.json))
}

#[tokio::main]
async fn main() -> ExitCode {
    let (options, json) = match options(Cli::parse()) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("tollgate-bench: {e}");
            return ExitCode::from(2);
        }
    };
    let report = match tollgate_bench::run(&options).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("tollgate-bench: {e}");
            return ExitCode::FAILURE;
        }
    };
    print!("{}", report.render());
    if let Some(path) = json {
        let written = serde_json::to_string_pretty(&report)
            .map_err(|e| e.to_string())
            .and_then(|text| std::fs::write(&path, text + "\n").map_err(|e| e.to_string()));
        if let Err(e) = written {
            eprintln!("tollgate-bench: {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    }
    if report.failures() > 0 {
        eprintln!(
            "tollgate-bench: {} failed requests: not a valid measurement",
            report.failures()
        );
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
