//! `tollgate-bench`: a load generator for Tollgate. It prepares its own accounts through the
//! API, drives the server with a chosen concurrency (closed loop) or rate (open loop), checks
//! every answer, and reports successes per second, latency percentiles, failures by status
//! code and reason, and the CPU and memory the server (and the generator) used.

pub mod argon;
pub mod client;
pub mod drive;
pub mod launch;
pub mod prepare;
pub mod process;
pub mod ratios;
pub mod report;
pub mod scenarios;
pub mod stats;

use std::sync::Arc;
use std::time::{Duration, Instant};

use server::config::PasswordConfig;

use crate::client::{Clients, Target};
use crate::drive::{Live, Window};
use crate::process::{Pid, Watch};
use crate::ratios::{Leg, Path, Ratios};
use crate::report::Report;
use crate::scenarios::{
    HealthWorker, HotpUser, LoginWorker, MixedWorker, OtpWorker, TotpPool, ValidateWorker,
};

/// What to measure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// The floor: the standard health check, closed loop (a gRPC call with no database).
    Health,
    /// ValidateSession of live sessions, as internal services call it on every request.
    Validate,
    /// Second-factor checks on the success path: VerifyStepUp with fresh HOTP codes.
    Otp,
    /// health, validate and otp in turn over --rounds rounds on one server, with each path's
    /// ratio to the floor of its round.
    Ratios,
    /// Password + TOTP logins (Authenticate, then VerifySecondFactor).
    Login,
    /// Health checks (100/s) while `login` saturates the cores.
    HealthUnderLoad,
    /// A blend of session validations, step-ups, logins and enrollments.
    Mixed,
    /// Start to SERVING (first start on a new database, then restarts) and idle memory.
    Startup,
}

/// A run's settings.
#[derive(Clone, Debug)]
pub struct Options {
    /// The scenario.
    pub scenario: Scenario,
    /// A running server to drive; None starts one with `launch`.
    pub target: Option<Target>,
    /// The running server's process on this machine, for its CPU and memory.
    pub server_pid: Option<Pid>,
    /// How to start a server when there is no `target`.
    pub launch: launch::Launch,
    /// Workers (requests in flight at most).
    pub concurrency: usize,
    /// HTTP/2 connections the workers share.
    pub connections: usize,
    /// Unmeasured time first.
    pub warmup: Duration,
    /// Measured time.
    pub duration: Duration,
    /// Open loop: operations per second for the whole run; None is closed loop.
    pub rate: Option<f64>,
    /// Accounts to create (default: what the scenario needs).
    pub users: Option<usize>,
    /// The server's argon2id parameters (its configuration file's, else the defaults).
    pub passwords: PasswordConfig,
    /// Starts for `startup`.
    pub starts: usize,
    /// Rounds of `ratios`.
    pub rounds: usize,
    /// Draw a progress bar.
    pub progress: bool,
}

impl Options {
    /// Which code times the argon2id limit: the binary of the server under test when it runs
    /// on this machine (the one started, or the `--server-pid` process's), else this tool.
    pub fn limit_timed_by(&self, pid: Option<Pid>) -> argon::By {
        let bin = match (&self.target, pid) {
            (None, _) => Some(self.launch.bin.clone()),
            (Some(_), Some(pid)) => std::fs::read_link(format!("/proc/{}/exe", pid.0)).ok(),
            (Some(_), None) => None,
        };
        bin.map_or(argon::By::Tool, |bin| argon::By::Server {
            bin,
            config: self.launch.config.clone(),
        })
    }

    /// Defaults for `scenario` against a server started from `bin`.
    pub fn new(scenario: Scenario, bin: std::path::PathBuf) -> Self {
        Self {
            scenario,
            target: None,
            server_pid: None,
            launch: launch::Launch {
                bin,
                db: launch::Db::Sqlite,
                config: None,
                log_level: "info".to_owned(),
            },
            concurrency: 32,
            connections: 4,
            warmup: Duration::from_secs(3),
            duration: Duration::from_secs(15),
            rate: None,
            users: None,
            passwords: PasswordConfig::default(),
            starts: 5,
            rounds: 3,
            progress: false,
        }
    }
}

fn say(options: &Options, line: &str) {
    if options.progress {
        #[allow(clippy::print_stderr, reason = "progress notes of a command-line tool")]
        {
            eprintln!("{line}");
        }
    }
}

/// Runs the scenario and reports. Set-up failures are errors; failures during the run are in
/// the report (and make [`Report::failures`] non-zero).
pub async fn run(options: &Options) -> Result<Report, String> {
    match &options.target {
        Some(target) => {
            let mut report = measure(options, target, options.server_pid).await?;
            report.database = "external".to_owned();
            Ok(report)
        }
        None if options.scenario == Scenario::Startup => startup(options).await,
        None => {
            launch::Workspace::within(options.launch.clone(), async |ws| {
                let srv = launch::Server::start(ws).await?;
                say(
                    options,
                    &format!(
                        "server {} on {} ({}), SERVING after {:.0} ms",
                        srv.pid.0,
                        srv.target.url,
                        ws.database(),
                        srv.startup.as_secs_f64() * 1000.0
                    ),
                );
                // Idle: after start-up settles, before any request.
                tokio::time::sleep(Duration::from_secs(1)).await;
                let idle = srv.pid.rss().map(process::mib);
                let measured = measure(options, &srv.target, Some(srv.pid)).await;
                let stopped = srv.stop().await;
                let mut report = measured?;
                stopped?;
                report.database = ws.database().to_owned();
                report.idle_rss_mib = idle;
                Ok(report)
            })
            .await
        }
    }
}

async fn connect(target: &Target, n: usize) -> Result<Vec<Clients>, String> {
    let mut clients = Vec::with_capacity(n);
    for _ in 0..n.max(1) {
        clients.push(target.clients(target.connect().await?));
    }
    Ok(clients)
}

/// Hashes timed per core for the argon2id limit (about 0.6 s at the default parameters): a
/// median of 15 moved by up to a third between back-to-back measurements on a shared VM.
const LIMIT_SAMPLES: usize = 40;

async fn measure(options: &Options, target: &Target, pid: Option<Pid>) -> Result<Report, String> {
    let clients = connect(target, options.connections).await?;
    let names = prepare::RunNames::new();
    let concurrency = options.concurrency.max(1);
    let parallel = concurrency.min(16);
    let mut report = Report::new(options);
    let set_up = Instant::now();
    // The code that times the limit, chosen once: before and after the run alike.
    let timed_by = options.limit_timed_by(pid);
    // This first measurement sizes the login pool; the limit itself is measured next to the
    // window (below), since the set-up between takes half a minute of hashing and a shared
    // host's speed moves by up to 15% over that.
    let sizing = match options.scenario {
        Scenario::Login | Scenario::HealthUnderLoad | Scenario::Mixed => {
            say(options, "measuring the argon2id limit of this machine…");
            Some(argon::measure(
                &options.passwords,
                LIMIT_SAMPLES,
                &timed_by,
            )?)
        }
        _ => None,
    };
    let window_secs = (options.warmup + options.duration).as_secs_f64();
    let before_run;
    let live = Arc::new(Live::default());
    let progress = |window: Window| {
        options
            .progress
            .then(|| drive::progress(format!("{:?}", options.scenario), window, Arc::clone(&live)))
    };
    let (recorded, extra, starved, server_usage, generator_usage, window) = match options.scenario {
        Scenario::Health => {
            report.setup_secs = set_up.elapsed().as_secs_f64();
            before_run = None;
            let window = Window::starting_now(options.warmup, options.duration);
            let bar = progress(window);
            let watches = watch(pid, window);
            let workers = vec![HealthWorker; concurrency];
            let recorded =
                drive::run(workers, &clients, window, options.rate, Arc::clone(&live)).await;
            let (s, g) = watches.finish().await;
            finish_bar(bar).await;
            (recorded, None, 0, s, g, window)
        }
        Scenario::Validate | Scenario::Ratios => {
            let n = options.users.unwrap_or(concurrency).max(1);
            say(options, &format!("creating {n} accounts with HOTP tokens…"));
            let users = scenarios::hotp_users(&clients, &names, n, parallel).await?;
            report.accounts = n;
            report.setup_secs = set_up.elapsed().as_secs_f64();
            before_run = None;
            if options.scenario == Scenario::Ratios {
                let (recorded, ratios, window) = ratios(options, &clients, users, pid, &live).await;
                report.ratios = Some(ratios);
                (recorded, None, 0, None, None, window)
            } else {
                let window = Window::starting_now(options.warmup, options.duration);
                let bar = progress(window);
                let watches = watch(pid, window);
                let workers = ValidateWorker::many(&users);
                let recorded =
                    drive::run(workers, &clients, window, options.rate, Arc::clone(&live)).await;
                let (s, g) = watches.finish().await;
                finish_bar(bar).await;
                (recorded, None, 0, s, g, window)
            }
        }
        Scenario::Otp | Scenario::Mixed => {
            let mixed = options.scenario == Scenario::Mixed;
            // otp: tokens split among the workers; mixed: at least one account per worker.
            let n = options.users.unwrap_or(concurrency);
            let n = if mixed { n.max(concurrency) } else { n };
            say(options, &format!("creating {n} accounts with HOTP tokens…"));
            let users = scenarios::hotp_users(&clients, &names, n, parallel).await?;
            report.accounts = n;
            report.setup_secs = set_up.elapsed().as_secs_f64();
            before_run = limit_before_run(options, sizing.is_some(), &timed_by)?;
            let window = Window::starting_now(options.warmup, options.duration);
            let bar = progress(window);
            let watches = watch(pid, window);
            let live = Arc::clone(&live);
            let recorded = if mixed {
                let workers = MixedWorker::many(users, &names.password);
                drive::run(workers, &clients, window, options.rate, live).await
            } else {
                let workers = OtpWorker::split(users, concurrency);
                drive::run(workers, &clients, window, options.rate, live).await
            };
            let (s, g) = watches.finish().await;
            finish_bar(bar).await;
            (recorded, None, 0, s, g, window)
        }
        Scenario::Login | Scenario::HealthUnderLoad => {
            let n = options.users.unwrap_or_else(|| {
                login_accounts(sizing.as_ref(), window_secs).max(concurrency * 2)
            });
            say(
                options,
                &format!("creating {n} accounts with authenticator apps…"),
            );
            let pool = TotpPool::create(&clients, &names, n, parallel).await?;
            report.accounts = n;
            report.setup_secs = set_up.elapsed().as_secs_f64();
            before_run = limit_before_run(options, sizing.is_some(), &timed_by)?;
            let workers = LoginWorker::many(&pool, concurrency);
            let window = Window::starting_now(options.warmup, options.duration);
            let bar = progress(window);
            let watches = watch(pid, window);
            let (recorded, extra) = if options.scenario == Scenario::HealthUnderLoad {
                // The prober has its own connection, as a load balancer's would be.
                let probe = connect(target, 1).await?;
                let (logins, health) = tokio::join!(
                    drive::run(workers, &clients, window, options.rate, Arc::clone(&live)),
                    drive::run(
                        vec![HealthWorker],
                        &probe,
                        window,
                        Some(100.0),
                        Arc::clone(&live)
                    ),
                );
                (logins, Some(health))
            } else {
                (
                    drive::run(workers, &clients, window, options.rate, Arc::clone(&live)).await,
                    None,
                )
            };
            let (s, g) = watches.finish().await;
            finish_bar(bar).await;
            let starved = pool.starved.load(std::sync::atomic::Ordering::Relaxed);
            (recorded, extra, starved, s, g, window)
        }
        Scenario::Startup => {
            return Err("startup needs a server of its own: leave out --target".to_owned());
        }
    };
    let mut measured = recorded.measured;
    let mut warmup = recorded.warmup;
    if let Some(extra) = extra {
        measured.merge(&extra.measured);
        warmup.merge(&extra.warmup);
    }
    let measured_for = if options.scenario == Scenario::Ratios {
        // Every round's windows: the operations' figures are over all of them.
        options.duration.mul_f64(options.rounds.max(1) as f64)
    } else {
        window.measured()
    };
    report.fill(&mut measured, &mut warmup, measured_for);
    report.starved = starved;
    report.server = server_usage;
    report.generator = generator_usage;
    // Measured again after the run, the faster of the two next to the window is the limit: a
    // machine that hashed slowly at the start (a busy neighbour) must not flatter the logins.
    let hashing = match (sizing, before_run) {
        (Some(sizing), Some(before)) => {
            say(options, "measuring the argon2id limit again…");
            let after = argon::measure(&options.passwords, LIMIT_SAMPLES, &timed_by)?;
            let achieved = report.ops.get("login").map_or(0.0, |s| s.rate);
            Some(report::Hashing::of(sizing.hash_ms, before, after, achieved))
        }
        _ => None,
    };
    if matches!(
        options.scenario,
        Scenario::Login | Scenario::HealthUnderLoad
    ) && let (Some(server), Some(generator), Some(login)) =
        (&report.server, &report.generator, report.ops.get("login"))
    {
        // The cores the limit was measured on: the share and the limit speak of one machine.
        let cores = hashing
            .as_ref()
            .map_or_else(server::placement::cores, |h| h.limit.cores);
        report.cpu_per_login = report::CpuPerLogin::new(server, generator, login.rate, cores);
    }
    report.hashing = hashing;
    Ok(report)
}

/// `ratios`: health, validate and otp in turn, `options.rounds` times, each in a window of
/// its own (warm-up, then measured), on the same connections and accounts; the sessions of
/// `users` stay at assurance 2 after the first otp window, which validation does not mind.
/// Returns every window's operations together, the rounds, and the last window.
async fn ratios(
    options: &Options,
    clients: &[Clients],
    users: Vec<HotpUser>,
    pid: Option<Pid>,
    live: &Arc<Live>,
) -> (drive::Recorded, Ratios, Window) {
    let mut validate = ValidateWorker::many(&users);
    let mut otp = OtpWorker::split(users, options.concurrency.max(1));
    let health = vec![HealthWorker; options.concurrency.max(1)];
    let mut all = drive::Recorded::default();
    let mut ratios = Ratios::default();
    let mut last = Window::starting_now(Duration::ZERO, Duration::ZERO);
    for round in 0..options.rounds.max(1) {
        let mut legs = Vec::new();
        for path in Path::ALL {
            say(
                options,
                &format!("round {} of {}: {}", round + 1, options.rounds, path.op()),
            );
            let window = Window::starting_now(options.warmup, options.duration);
            let watches = watch(pid, window);
            let live = Arc::clone(live);
            let recorded = match path {
                Path::Health => {
                    drive::run(health.clone(), clients, window, options.rate, live).await
                }
                Path::Validate => {
                    let (recorded, back) = drive::run_returning(
                        std::mem::take(&mut validate),
                        clients,
                        window,
                        options.rate,
                        live,
                    )
                    .await;
                    validate = back;
                    recorded
                }
                Path::Otp => {
                    let (recorded, back) = drive::run_returning(
                        std::mem::take(&mut otp),
                        clients,
                        window,
                        options.rate,
                        live,
                    )
                    .await;
                    otp = back;
                    recorded
                }
            };
            let (server, _) = watches.finish().await;
            let summary = recorded
                .measured
                .0
                .get(path.op())
                .map(|r| r.summary(window.measured()));
            if let Some(s) = summary {
                legs.push(Leg {
                    path,
                    rate: s.rate,
                    p50_ms: s.p50_ms,
                    p99_ms: s.p99_ms,
                    server_cpu_us: server
                        .filter(|_| s.rate > 0.0)
                        .map(|u| u.cores * 1e6 / s.rate),
                });
            }
            all.measured.merge(&recorded.measured);
            all.warmup.merge(&recorded.warmup);
            last = window;
        }
        ratios.rounds.push(legs);
    }
    (all, ratios, last)
}

/// The limit's measurement next to the window, once the set-up is done, in the scenarios
/// that hash (`hashes`).
fn limit_before_run(
    options: &Options,
    hashes: bool,
    timed_by: &argon::By,
) -> Result<Option<argon::HashLimit>, String> {
    if !hashes {
        return Ok(None);
    }
    say(options, "measuring the argon2id limit next to the run…");
    argon::measure(&options.passwords, LIMIT_SAMPLES, timed_by).map(Some)
}

/// How many accounts the `login` pool needs so that it never runs dry during a window of
/// `window_secs` (warm-up included), at the most logins per second `limit` allows.
fn login_accounts(limit: Option<&argon::HashLimit>, window_secs: f64) -> usize {
    // The most logins per second this machine could reach: from the fastest hash measured,
    // not the median, so a neighbour that slowed the measurement (other tests, a build)
    // cannot leave the pool short once it stops.
    let most = limit.map_or(100.0, |h| h.cores as f64 * 1000.0 / h.fastest_ms.max(1e-6));
    // An account logs in about (window / 30 s + 1) times: once per TOTP step after the one
    // its enrollment used (the server also takes the next step's code). Half as many again,
    // so the pool never runs dry.
    let per_account = window_secs / 30.0 + 1.0;
    count((most * window_secs / per_account * 1.5).ceil())
}

/// A positive, rounded-up account count as usize (capped at a million).
#[allow(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "clamped to 0..=1e6 first"
)]
fn count(n: f64) -> usize {
    n.clamp(0.0, 1e6) as usize
}

/// Watches the server and this process during the measured window only.
struct Watches(Option<Watch>, Option<Watch>);

impl Watches {
    async fn finish(self) -> (Option<process::Usage>, Option<process::Usage>) {
        let server = match self.0 {
            Some(w) => w.finish().await,
            None => None,
        };
        let generator = match self.1 {
            Some(w) => w.finish().await,
            None => None,
        };
        (server, generator)
    }
}

/// Starts watching when the measured window starts, without holding up the caller (the
/// workers must start with the warm-up, or an open-loop run would begin with a backlog).
fn watch(pid: Option<Pid>, window: Window) -> WatchesLater {
    WatchesLater(tokio::spawn(async move {
        tokio::time::sleep_until(window.measure_from).await;
        Watches(pid.map(Watch::start), Some(Watch::start(Pid::myself())))
    }))
}

/// Watches that start with the measured window.
struct WatchesLater(tokio::task::JoinHandle<Watches>);

impl WatchesLater {
    async fn finish(self) -> (Option<process::Usage>, Option<process::Usage>) {
        match self.0.await {
            Ok(watches) => watches.finish().await,
            Err(_) => (None, None),
        }
    }
}

async fn finish_bar(bar: Option<tokio::task::JoinHandle<()>>) {
    if let Some(bar) = bar {
        let _ = bar.await;
    }
}

/// `startup`: the first start on a new database (it applies the migrations), then restarts
/// on the same one; each timed from starting the process to SERVING, with the resident
/// memory after a second of idling.
async fn startup(options: &Options) -> Result<Report, String> {
    launch::Workspace::within(options.launch.clone(), async |ws| {
        let mut report = Report::new(options);
        report.database = ws.database().to_owned();
        for i in 0..options.starts.max(1) {
            let srv = launch::Server::start(ws).await?;
            tokio::time::sleep(Duration::from_secs(1)).await;
            let idle = srv.pid.rss().map(process::mib);
            let started = srv.startup;
            srv.stop().await?;
            say(
                options,
                &format!(
                    "start {}: SERVING after {:.1} ms, idle RSS {:.1} MiB",
                    i + 1,
                    started.as_secs_f64() * 1000.0,
                    idle.unwrap_or(0.0)
                ),
            );
            report.starts_ms.push(started.as_secs_f64() * 1000.0);
            report.idle_rss_mib = match (report.idle_rss_mib, idle) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            };
        }
        Ok(report)
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_is_timed_by_the_binary_of_the_server_under_test() {
        let mut o = Options::new(Scenario::Login, "/opt/tollgate".into());
        o.launch.config = Some("/etc/tollgate.toml".into());
        // A server the tool starts: its binary, with its configuration file.
        assert_eq!(
            o.limit_timed_by(None),
            argon::By::Server {
                bin: "/opt/tollgate".into(),
                config: Some("/etc/tollgate.toml".into()),
            }
        );
        // A running server on this machine: the binary of its process.
        o.target = Some(Target {
            url: "http://127.0.0.1:1".to_owned(),
            api_key: None,
        });
        let me = Pid(i32::try_from(std::process::id()).unwrap());
        assert_eq!(
            o.limit_timed_by(Some(me)),
            argon::By::Server {
                bin: std::env::current_exe().unwrap(),
                config: Some("/etc/tollgate.toml".into()),
            }
        );
        // A server elsewhere: the tool's own copy.
        assert_eq!(o.limit_timed_by(None), argon::By::Tool);
    }

    fn limit(hash_ms: f64, fastest_ms: f64) -> argon::HashLimit {
        argon::HashLimit {
            cores: 2,
            hash_ms,
            fastest_ms,
            logins_per_sec: 2000.0 / hash_ms,
            params: (19_456, 2, 1),
            timed_by: "a test".to_owned(),
        }
    }

    #[test]
    fn the_login_pool_is_sized_from_the_fastest_hash() {
        // 2 cores at 10 ms: 200 logins/s at most; 1.8 s at about 1.06 logins per account,
        // half as many again.
        assert_eq!(login_accounts(Some(&limit(10.0, 10.0)), 1.8), 510);
        // A median slowed by a busy neighbour (CI ran the same run at 37.8 ms before and
        // 15.9 ms after) does not shrink the pool while the fastest hash stays fast.
        assert_eq!(
            login_accounts(Some(&limit(37.8, 10.0)), 1.8),
            login_accounts(Some(&limit(10.0, 10.0)), 1.8)
        );
        // Longer windows: each account logs in once more per 30 s step.
        assert_eq!(login_accounts(Some(&limit(10.0, 10.0)), 60.0), 6000);
        assert_eq!(login_accounts(None, 30.0), 2250);
    }

    #[test]
    fn the_limit_is_the_faster_measurement_next_to_the_window() {
        // The host slowed during the run: the measurement before it counts.
        let m = report::Hashing::of(16.0, limit(14.0, 13.5), limit(15.5, 15.0), 100.0);
        assert_eq!(m.limit, limit(14.0, 13.5));
        assert_eq!(m.measured_ms, (14.0, 15.5));
        assert_eq!(m.before_setup_ms, 16.0);
        // 100 logins/s against 2 cores ÷ 14 ms.
        assert!((m.fraction - 0.7).abs() < 1e-9, "{m:?}");
        // It sped up: the one after counts.
        let m = report::Hashing::of(14.0, limit(15.6, 15.0), limit(13.6, 13.0), 100.0);
        assert_eq!(m.limit, limit(13.6, 13.0));
        // The measurement before the set-up sized the pool but is not the limit, however fast
        // it was: half a minute of set-up lies between it and the window.
        let m = report::Hashing::of(12.0, limit(14.5, 14.0), limit(15.4, 15.0), 100.0);
        assert_eq!(m.limit.hash_ms, 14.5);
    }
}
