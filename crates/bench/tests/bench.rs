//! The load generator against the real server binary (on SQLite and PostgreSQL): every
//! scenario runs briefly and must finish without a failed request, and answers that are
//! wrong must show up as failures, never as speed.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests"
)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tollgate_bench::drive::{self, Live, Window};
use tollgate_bench::launch::{Db, Server, Workspace};
use tollgate_bench::scenarios::{self, OtpWorker};
use tollgate_bench::{Options, Scenario, prepare};

/// The `tollgate` binary of this build (target/<profile>/tollgate): `cargo test --workspace`
/// builds it for the server's own binary tests.
fn server_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let bin = exe
        .parent()
        .and_then(|deps| deps.parent())
        .unwrap()
        .join("tollgate");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build -p server` first (the workspace tests build it)",
        bin.display()
    );
    bin
}

/// The tests of this file run one at a time. Each starts a server and saturates it, and the
/// `login` pool is sized from the argon2id limit measured at its start: beside another
/// test's server, that measurement (and every rate) would be of a shared machine.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn postgres() -> Db {
    Db::Postgres(
        std::env::var("TEST_DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned()),
    )
}

fn short(scenario: Scenario) -> Options {
    let mut o = Options::new(scenario, server_bin());
    o.concurrency = 4;
    o.connections = 2;
    o.warmup = Duration::from_millis(300);
    o.duration = Duration::from_millis(1500);
    o.launch.log_level = "warn".to_owned();
    o
}

fn assert_clean(report: &tollgate_bench::report::Report, ops: &[&str]) {
    assert_eq!(report.failures(), 0, "{}", report.render());
    for op in ops {
        let s = report
            .ops
            .get(*op)
            .unwrap_or_else(|| panic!("no {op}: {}", report.render()));
        assert!(s.ok > 0 && s.rate > 0.0, "{op}: {s:?}");
        assert!(
            s.p50_ms > 0.0 && s.p50_ms <= s.p99_ms && s.p99_ms <= s.max_ms,
            "{s:?}"
        );
    }
    let server = report.server.as_ref().expect("server usage");
    assert!(
        server.cores > 0.0 && server.rss_peak_mib > 1.0,
        "{server:?}"
    );
    assert!(report.generator.is_some());
    assert!(report.render().contains("failures: none"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otp_runs_clean_on_sqlite_and_postgres() {
    let _serial = ONE_AT_A_TIME.lock().await;
    for (db, label) in [(Db::Sqlite, "sqlite"), (postgres(), "postgres")] {
        let mut o = short(Scenario::Otp);
        o.launch.db = db;
        o.rate = Some(200.0);
        let report = tollgate_bench::run(&o).await.unwrap();
        assert_eq!(report.database, label);
        assert_eq!(report.accounts, 4);
        assert_clean(&report, &["verify_otp"]);
        // Open loop at 200/s: the rate is what was asked for, not more.
        let rate = report.ops["verify_otp"].rate;
        assert!((150.0..=210.0).contains(&rate), "{rate}");
        assert!(report.idle_rss_mib.unwrap() > 1.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_and_health_under_load_run_clean() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let o = short(Scenario::Login);
    let report = tollgate_bench::run(&o).await.unwrap();
    assert_clean(&report, &["login"]);
    let hashing = report.hashing.as_ref().unwrap();
    assert!(hashing.limit.logins_per_sec > 0.0);
    let expected = report.ops["login"].rate / hashing.limit.logins_per_sec;
    assert!((hashing.fraction - expected).abs() < 1e-9);
    assert!(report.render().contains("of that limit"));
    // The limit is the faster of the measurements on either side of the window; the one
    // before the set-up is shown beside them.
    let (before, after) = hashing.measured_ms;
    assert_eq!(hashing.limit.hash_ms, before.min(after), "{hashing:?}");
    assert!(hashing.before_setup_ms > 0.0, "{hashing:?}");
    assert!(report.render().contains(&format!(
        "right before the run {before:.1}, after {after:.1}: the faster counts; {:.1} before the set-up",
        hashing.before_setup_ms
    )));
    // The limit is the server binary's own: the code that hashes the logins.
    let by_server = format!("the server's binary ({})", server_bin().display());
    assert_eq!(hashing.limit.timed_by, by_server);
    assert!(
        report
            .render()
            .contains(&format!("(hashes timed by {by_server})"))
    );
    // Each login hashes one password on the server's hashing threads, so they show a good
    // part of a hash per login. The limit's hash is wall time with every core hashing (and
    // other tests may share the cores then), so the bound is loose; a split that missed the
    // hashing threads would show 0.
    let per_login = report.cpu_per_login.unwrap();
    assert!(
        per_login.hashing_ms > 0.2 * hashing.limit.hash_ms,
        "{per_login:?} {hashing:?}"
    );
    assert!(per_login.server_other_ms > 0.0 && per_login.generator_ms > 0.0);
    // A closed loop of logins keeps the hashing threads busy: a good part of the machine.
    assert!(
        (0.2..=1.0).contains(&per_login.machine_hashing),
        "{per_login:?}"
    );
    assert!(report.render().contains("% of the machine's cores"));
    assert!(
        report
            .render()
            .contains("CPU per login: the server's hashing threads")
    );

    let o = short(Scenario::HealthUnderLoad);
    let report = tollgate_bench::run(&o).await.unwrap();
    assert_clean(&report, &["login", "health"]);
    assert!(report.cpu_per_login.unwrap().hashing_ms > 0.0);
    let health = &report.ops["health"];
    assert!(health.rate > 50.0, "{health:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_runs_every_operation_clean() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let mut o = short(Scenario::Mixed);
    o.duration = Duration::from_secs(3);
    let report = tollgate_bench::run(&o).await.unwrap();
    assert_clean(
        &report,
        &["validate_session", "step_up", "login", "enroll_app"],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_times_every_start() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let mut o = short(Scenario::Startup);
    o.starts = 2;
    let report = tollgate_bench::run(&o).await.unwrap();
    assert_eq!(report.starts_ms.len(), 2);
    assert!(
        report
            .starts_ms
            .iter()
            .all(|ms| *ms > 0.0 && *ms < 60_000.0)
    );
    assert!(report.idle_rss_mib.unwrap() > 1.0);
    assert!(report.render().contains("start to SERVING"));
}

/// Wrong codes: the run must show failures, with the server's reasons, and no successes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_answers_are_failures_not_throughput() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let ws = Workspace::create(short(Scenario::Otp).launch)
        .await
        .unwrap();
    let server = Server::start(&ws).await.unwrap();
    let clients = vec![
        server
            .target
            .clients(server.target.connect().await.unwrap()),
    ];
    let names = prepare::RunNames::new();
    let mut tokens = scenarios::hotp_users(&clients, &names, 2, 2).await.unwrap();
    for t in &mut tokens {
        // Far beyond the server's look-ahead: every code is wrong.
        t.next += 1_000;
    }
    let window = Window::starting_now(Duration::ZERO, Duration::from_millis(500));
    let recorded = drive::run(
        OtpWorker::split(tokens, 2),
        &clients,
        window,
        Some(40.0),
        Arc::new(Live::default()),
    )
    .await;
    let mut measured = recorded.measured;
    let s = measured.op("verify_otp").summary(window.measured());
    assert_eq!(s.ok, 0, "{s:?}");
    assert_eq!(s.rate, 0.0);
    assert!(s.failed >= 10, "{s:?}");
    assert!(
        s.failures.contains_key("Unauthenticated/INVALID_CODE"),
        "{s:?}"
    );
    // Then the per-user lockout.
    assert!(
        s.failures.contains_key("ResourceExhausted/LOCKED_OUT"),
        "{s:?}"
    );
    server.stop().await.unwrap();
    ws.remove().await.unwrap();
}

#[test]
fn the_command_line_runs_and_writes_json() {
    let _serial = ONE_AT_A_TIME.blocking_lock();
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("report.json");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tollgate-bench"))
        .args(["otp", "-q", "-c", "2", "--duration", "1", "--warmup", "0.2"])
        .arg("--server-bin")
        .arg(server_bin())
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("verify_otp"), "{stdout}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(report["scenario"], "otp");
    assert!(report["ops"]["verify_otp"]["ok"].as_u64().unwrap() > 0);

    for bad in [
        &["otp", "--rate", "-1"][..],
        &["otp", "--concurrency", "0"],
        &["otp", "--duration", "NaN"],
        &["nonsense"],
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_tollgate-bench"))
            .args(bad)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{bad:?}");
    }
}

#[tokio::test]
async fn the_limit_is_timed_by_the_server_binary_at_the_parameters_of_the_run() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let by = tollgate_bench::argon::By::Server {
        bin: server_bin(),
        config: None,
    };
    let defaults = server::config::PasswordConfig::default();
    let limit = tollgate_bench::argon::measure(&defaults, 2, &by).unwrap();
    assert!(
        0.0 < limit.fastest_ms && limit.fastest_ms <= limit.hash_ms,
        "{limit:?}"
    );
    assert_eq!(
        limit.params,
        (
            defaults.memory_kib,
            defaults.iterations,
            defaults.parallelism
        )
    );
    // The server's configuration says other parameters than the run expects: an error, never
    // a limit of other hashes.
    let heavier = server::config::PasswordConfig {
        memory_kib: defaults.memory_kib * 2,
        ..defaults
    };
    let err = tollgate_bench::argon::measure(&heavier, 1, &by).unwrap_err();
    assert!(err.contains("but the run expects"), "{err}");
}
