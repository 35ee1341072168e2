//! The summary of a run, as text for people and JSON for records.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use crate::argon::HashLimit;
use crate::process::Usage;
use crate::stats::{Recorders, Summary};
use crate::{Options, Scenario};

/// The password-hashing limit beside the login rate.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Hashing {
    /// The measured limit: the faster of the two measurements next to the window.
    pub limit: HashLimit,
    /// The time of one hash measured right before (after the set-up) and right after the
    /// run, ms.
    pub measured_ms: (f64, f64),
    /// The time of one hash measured before the set-up, ms: it sized the accounts, and does
    /// not count toward the limit.
    pub before_setup_ms: f64,
    /// Logins per second achieved ÷ the limit.
    pub fraction: f64,
}

impl Hashing {
    /// The limit a run at `achieved` logins per second is judged against: the faster of the
    /// measurements right before (`before`) and right after (`after`) the window, so a host
    /// that hashed slowly at one end cannot flatter the logins. The one before the set-up
    /// (`before_setup_ms`) sized the accounts and is shown, not counted: half a minute of
    /// set-up lies between it and the window.
    pub fn of(before_setup_ms: f64, before: HashLimit, after: HashLimit, achieved: f64) -> Self {
        let measured_ms = (before.hash_ms, after.hash_ms);
        let limit = if after.hash_ms < before.hash_ms {
            after
        } else {
            before
        };
        Self {
            fraction: achieved / limit.logins_per_sec.max(1e-9),
            limit,
            measured_ms,
            before_setup_ms,
        }
    }
}

/// Where a login's CPU goes on this machine: each kind of thread's exact CPU over the
/// measured window ÷ logins per second. Beside the limit's hash, it shows what keeps the
/// logins below the limit: the hash costing more in the server, or the work around it.
#[derive(Clone, Copy, Debug, Serialize, PartialEq)]
pub struct CpuPerLogin {
    /// The server's password-hashing threads, ms per login (one hash each).
    pub hashing_ms: f64,
    /// The server's other threads (requests, database, runtime), ms per login.
    pub server_other_ms: f64,
    /// The load generator, ms per login.
    pub generator_ms: f64,
    /// The share of the machine's cores the server's hashing threads used (0 to 1). It does
    /// not depend on the limit's measurement, so it holds where the host's speed drifts
    /// during a run; logins reach at most this share of the limit unless the server hashes
    /// faster than the measurement did.
    pub machine_hashing: f64,
}

impl CpuPerLogin {
    /// From the server's and the generator's thread splits, the login rate and the
    /// machine's cores; None without either split, without logins or without cores.
    pub fn new(
        server: &Usage,
        generator: &Usage,
        logins_per_sec: f64,
        cores: usize,
    ) -> Option<Self> {
        let (server, generator) = (server.threads?, generator.threads?);
        if logins_per_sec <= 0.0 || cores == 0 {
            return None;
        }
        let ms = |cores: f64| cores * 1000.0 / logins_per_sec;
        Some(Self {
            hashing_ms: ms(server.hashing_cores),
            server_other_ms: ms(server.other_cores),
            generator_ms: ms(generator.total_cores()),
            machine_hashing: server.hashing_cores / cores as f64,
        })
    }
}

/// What a run measured.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Report {
    /// The scenario.
    pub scenario: Scenario,
    /// `sqlite` or `postgres` for a server the generator started, else `external`.
    pub database: String,
    /// Workers.
    pub concurrency: usize,
    /// Connections.
    pub connections: usize,
    /// Open-loop rate asked for, if any.
    pub rate: Option<f64>,
    /// Warm-up, seconds.
    pub warmup_secs: f64,
    /// Measured window, seconds.
    pub measured_secs: f64,
    /// Accounts created for the run.
    pub accounts: usize,
    /// Time to create them (and measure the hashing limit), seconds.
    pub setup_secs: f64,
    /// Figures per operation.
    pub ops: BTreeMap<String, Summary>,
    /// Failures during the warm-up, by cause.
    pub warmup_failures: BTreeMap<String, u64>,
    /// Times the login workers found no account with an unused code.
    pub starved: u64,
    /// The server's CPU and memory during the measured window.
    pub server: Option<Usage>,
    /// The load generator's.
    pub generator: Option<Usage>,
    /// The started server's resident memory after start-up, idle, MiB (the highest over
    /// the starts for `startup`).
    pub idle_rss_mib: Option<f64>,
    /// `startup`: start to SERVING of each start, ms; the first applied the migrations.
    pub starts_ms: Vec<f64>,
    /// The machine's argon2id limit and the share of it the logins reached.
    pub hashing: Option<Hashing>,
    /// `login` and `health-under-load` against a server on this machine: CPU per login by
    /// kind of thread (in `health-under-load`, the health checks' small share is in the
    /// server's other threads and in the generator's).
    pub cpu_per_login: Option<CpuPerLogin>,
    /// `ratios`: each path against the floor, round by round.
    pub ratios: Option<crate::ratios::Ratios>,
}

impl Report {
    /// An empty report for `options`.
    pub fn new(options: &Options) -> Self {
        Self {
            scenario: options.scenario,
            database: String::new(),
            concurrency: options.concurrency,
            connections: options.connections,
            rate: options.rate,
            warmup_secs: options.warmup.as_secs_f64(),
            measured_secs: options.duration.as_secs_f64(),
            accounts: 0,
            setup_secs: 0.0,
            ops: BTreeMap::new(),
            warmup_failures: BTreeMap::new(),
            starved: 0,
            server: None,
            generator: None,
            idle_rss_mib: None,
            starts_ms: Vec::new(),
            hashing: None,
            cpu_per_login: None,
            ratios: None,
        }
    }

    /// Fills in the operations' figures.
    pub fn fill(&mut self, measured: &mut Recorders, warmup: &mut Recorders, window: Duration) {
        self.measured_secs = window.as_secs_f64();
        for (op, recorder) in &measured.0 {
            self.ops.insert((*op).to_owned(), recorder.summary(window));
        }
        for recorder in warmup.0.values() {
            for (cause, n) in recorder.summary(window).failures {
                *self.warmup_failures.entry(cause).or_default() += n;
            }
        }
    }

    /// Every failure, warm-up included: a run with any is not a valid measurement.
    pub fn failures(&self) -> u64 {
        self.ops.values().map(|s| s.failed).sum::<u64>()
            + self.warmup_failures.values().sum::<u64>()
    }

    /// The report as text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let mode = match self.rate {
            Some(rate) => format!("open loop at {rate:.0}/s"),
            None => "closed loop".to_owned(),
        };
        let _ = writeln!(
            out,
            "scenario {:?} on {} · {} workers over {} connections · {mode} · {:.0} s measured after {:.0} s warm-up",
            self.scenario,
            self.database,
            self.concurrency,
            self.connections,
            self.measured_secs,
            self.warmup_secs
        );
        if self.accounts > 0 {
            let _ = writeln!(
                out,
                "set-up: {} accounts in {:.1} s",
                self.accounts, self.setup_secs
            );
        }
        if !self.ops.is_empty() {
            let _ = writeln!(
                out,
                "{:<18} {:>9} {:>10} {:>9} {:>9} {:>9} {:>9} {:>8}",
                "operation", "ok", "ok/s", "p50 ms", "p90 ms", "p99 ms", "max ms", "failed"
            );
            for (op, s) in &self.ops {
                let _ = writeln!(
                    out,
                    "{op:<18} {:>9} {:>10.1} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>8}",
                    s.ok, s.rate, s.p50_ms, s.p90_ms, s.p99_ms, s.max_ms, s.failed
                );
            }
            let total: f64 = self.ops.values().map(|s| s.rate).sum();
            if self.ops.len() > 1 {
                let _ = writeln!(out, "{:<18} {:>9} {total:>10.1}", "all", "");
            }
        }
        let failures: BTreeMap<&String, u64> = self
            .ops
            .values()
            .flat_map(|s| s.failures.iter())
            .fold(BTreeMap::new(), |mut m, (cause, n)| {
                *m.entry(cause).or_default() += n;
                m
            });
        if failures.is_empty() && self.warmup_failures.is_empty() {
            if !self.ops.is_empty() {
                let _ = writeln!(out, "failures: none (every answer checked)");
            }
        } else {
            let _ = writeln!(out, "FAILURES (this run is not a valid measurement):");
            for (cause, n) in failures {
                let _ = writeln!(out, "  {n:>8}  {cause}");
            }
            for (cause, n) in &self.warmup_failures {
                let _ = writeln!(out, "  {n:>8}  {cause} (during warm-up)");
            }
        }
        if let Some(h) = &self.hashing {
            let (m, t, p) = h.limit.params;
            let _ = writeln!(
                out,
                "argon2id (m={m} KiB, t={t}, p={p}): {:.1} ms per hash (right before the run {:.1}, after {:.1}: the faster counts; {:.1} before the set-up); limit {} cores ÷ {:.1} ms = {:.1} logins/s",
                h.limit.hash_ms,
                h.measured_ms.0,
                h.measured_ms.1,
                h.before_setup_ms,
                h.limit.cores,
                h.limit.hash_ms,
                h.limit.logins_per_sec
            );
            let _ = writeln!(out, "  (hashes timed by {})", h.limit.timed_by);
            if self.ops.contains_key("login") && self.scenario != Scenario::Mixed {
                let _ = writeln!(
                    out,
                    "logins reached {:.0}% of that limit",
                    h.fraction * 100.0
                );
            }
        }
        if let Some(c) = &self.cpu_per_login {
            let hash = self
                .hashing
                .as_ref()
                .map(|h| format!(" (the limit's hash: {:.2} ms)", h.limit.hash_ms))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "CPU per login: the server's hashing threads {:.2} ms{hash}, its other threads {:.2} ms, the load generator {:.2} ms",
                c.hashing_ms, c.server_other_ms, c.generator_ms
            );
            let _ = writeln!(
                out,
                "the hashing threads used {:.1}% of the machine's cores (the rest went to the work beside the hashes)",
                c.machine_hashing * 100.0
            );
        }
        if self.starved > 0 {
            let _ = writeln!(
                out,
                "the login workers ran out of unused TOTP codes {} times: raise --users",
                self.starved
            );
        }
        for (who, usage) in [
            ("server", &self.server),
            ("load generator", &self.generator),
        ] {
            if let Some(u) = usage {
                let _ = writeln!(
                    out,
                    "{who}: CPU {:.2} cores; RSS {:.1} MiB at start of window, {:.1} MiB peak (high-water mark {:.1} MiB)",
                    u.cores, u.rss_start_mib, u.rss_peak_mib, u.rss_high_water_mib
                );
            }
        }
        if !self.starts_ms.is_empty() {
            let starts: Vec<String> = self.starts_ms.iter().map(|ms| format!("{ms:.1}")).collect();
            let _ = writeln!(
                out,
                "start to SERVING, ms: {} (the first on a new database, with its migrations)",
                starts.join(", ")
            );
        }
        if let Some(r) = &self.ratios {
            out.push_str(&r.render(&self.database));
        }
        if let Some(idle) = self.idle_rss_mib {
            let _ = writeln!(out, "server idle RSS: {idle:.1} MiB");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::ThreadSplit;

    fn usage(hashing_cores: f64, other_cores: f64) -> Usage {
        Usage {
            cores: hashing_cores + other_cores,
            rss_start_mib: 1.0,
            rss_peak_mib: 1.0,
            rss_high_water_mib: 1.0,
            threads: Some(ThreadSplit {
                hashing_cores,
                other_cores,
            }),
        }
    }

    #[test]
    fn a_logins_cpu_is_split_by_kind_and_the_hashing_share_of_the_machine_follows() {
        // 100 logins/s on 2 cores: hashing threads on 1.75 cores, other server threads on
        // 0.2, the generator on 0.05.
        let c = CpuPerLogin::new(&usage(1.75, 0.2), &usage(0.0, 0.05), 100.0, 2).unwrap();
        assert!((c.hashing_ms - 17.5).abs() < 1e-9, "{c:?}");
        assert!((c.server_other_ms - 2.0).abs() < 1e-9, "{c:?}");
        assert!((c.generator_ms - 0.5).abs() < 1e-9, "{c:?}");
        assert!((c.machine_hashing - 0.875).abs() < 1e-9, "{c:?}");
        // Nothing to divide by: no figure rather than infinity.
        assert!(CpuPerLogin::new(&usage(1.75, 0.2), &usage(0.0, 0.05), 0.0, 2).is_none());
        assert!(CpuPerLogin::new(&usage(1.75, 0.2), &usage(0.0, 0.05), 100.0, 0).is_none());
        let unsplit = Usage {
            threads: None,
            ..usage(1.75, 0.2)
        };
        assert!(CpuPerLogin::new(&unsplit, &usage(0.0, 0.05), 100.0, 2).is_none());
    }
}
