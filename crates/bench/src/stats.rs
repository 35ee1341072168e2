//! What a run measured: per-operation latency histograms, successes and failures by cause.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Latencies are recorded in microseconds, from 1 µs to 60 s, with 3 significant digits.
const MAX_MICROS: u64 = 60_000_000;

/// Why an answer did not count as a success: the gRPC code (with the ErrorInfo reason when
/// the server gave one), or an answer of the wrong shape.
pub fn failure_of_status(status: &tonic::Status) -> String {
    use tonic_types::StatusExt;
    let code = format!("{:?}", status.code());
    match status.get_error_details().error_info() {
        Some(info) if !info.reason.is_empty() => format!("{code}/{}", info.reason),
        _ => code,
    }
}

/// The successes, failures and latencies of one operation.
#[derive(Clone, Debug)]
pub struct Recorder {
    latencies: Histogram<u64>,
    ok: u64,
    failures: BTreeMap<String, u64>,
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

impl Recorder {
    /// An empty recorder.
    pub fn new() -> Self {
        Self {
            #[allow(clippy::expect_used, reason = "constant bounds that are valid")]
            latencies: Histogram::new_with_bounds(1, MAX_MICROS, 3).expect("valid bounds"),
            ok: 0,
            failures: BTreeMap::new(),
        }
    }

    /// A success that took `latency`.
    pub fn ok(&mut self, latency: Duration) {
        self.ok += 1;
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.latencies
            .saturating_record(micros.clamp(1, MAX_MICROS));
    }

    /// A failure, by cause. Failures are counted, not timed: a fast error must not make the
    /// latency figures look better.
    pub fn fail(&mut self, cause: impl Into<String>) {
        *self.failures.entry(cause.into()).or_default() += 1;
    }

    /// Successes so far.
    pub fn successes(&self) -> u64 {
        self.ok
    }

    /// Failures so far.
    pub fn failures(&self) -> u64 {
        self.failures.values().sum()
    }

    /// Adds another recorder's counts (another worker's).
    pub fn merge(&mut self, other: &Self) {
        self.ok += other.ok;
        // Same bounds on both sides: adding cannot fail.
        let _ = self.latencies.add(&other.latencies);
        for (cause, n) in &other.failures {
            *self.failures.entry(cause.clone()).or_default() += n;
        }
    }

    /// The summary over `elapsed`.
    pub fn summary(&self, elapsed: Duration) -> Summary {
        let ms = |micros: u64| micros as f64 / 1000.0;
        let q = |quantile: f64| {
            if self.ok == 0 {
                0.0
            } else {
                ms(self.latencies.value_at_quantile(quantile))
            }
        };
        let secs = elapsed.as_secs_f64();
        Summary {
            ok: self.ok,
            failed: self.failures(),
            rate: if secs > 0.0 {
                self.ok as f64 / secs
            } else {
                0.0
            },
            p50_ms: q(0.50),
            p90_ms: q(0.90),
            p99_ms: q(0.99),
            max_ms: if self.ok == 0 {
                0.0
            } else {
                ms(self.latencies.max())
            },
            failures: self.failures.clone(),
        }
    }
}

/// One operation's figures.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Summary {
    /// Successful requests (answers checked).
    pub ok: u64,
    /// Failed requests: errors and wrong answers.
    pub failed: u64,
    /// Successes per second.
    pub rate: f64,
    /// Latency percentiles of the successes, in milliseconds.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Slowest success.
    pub max_ms: f64,
    /// Failures by cause (`Unauthenticated/CODE_REPLAYED`, `wrong answer: …`).
    pub failures: BTreeMap<String, u64>,
}

/// The recorders of a worker, one per operation name.
#[derive(Clone, Debug, Default)]
pub struct Recorders(pub BTreeMap<&'static str, Recorder>);

impl Recorders {
    /// The recorder of `op`.
    pub fn op(&mut self, op: &'static str) -> &mut Recorder {
        self.0.entry(op).or_default()
    }

    /// Adds another worker's recorders.
    pub fn merge(&mut self, other: &Self) {
        for (op, recorder) in &other.0 {
            self.op(op).merge(recorder);
        }
    }

    /// Successes and failures over every operation.
    pub fn totals(&self) -> (u64, u64) {
        self.0.values().fold((0, 0), |(ok, failed), r| {
            (ok + r.successes(), failed + r.failures())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_come_from_successes_only() {
        let mut r = Recorder::new();
        for ms in 1..=100 {
            r.ok(Duration::from_millis(ms));
        }
        r.fail("Unavailable");
        r.fail("Unavailable");
        r.fail("wrong answer: no session");
        let s = r.summary(Duration::from_secs(10));
        assert_eq!((s.ok, s.failed), (100, 3));
        assert!((s.rate - 10.0).abs() < 1e-9, "{}", s.rate);
        // Within the histogram's 3 significant digits.
        assert!((s.p50_ms - 50.0).abs() < 0.1, "{}", s.p50_ms);
        assert!((s.p90_ms - 90.0).abs() < 0.1, "{}", s.p90_ms);
        assert!((s.p99_ms - 99.0).abs() < 0.1, "{}", s.p99_ms);
        assert!((s.max_ms - 100.0).abs() < 0.1, "{}", s.max_ms);
        assert_eq!(s.failures["Unavailable"], 2);
        assert_eq!(s.failures["wrong answer: no session"], 1);
    }

    #[test]
    fn an_empty_or_all_failed_run_reports_no_rate_and_no_latency() {
        let mut r = Recorder::new();
        r.fail("Unavailable");
        let s = r.summary(Duration::from_secs(1));
        assert_eq!(
            (s.ok, s.failed, s.rate, s.p99_ms, s.max_ms),
            (0, 1, 0.0, 0.0, 0.0)
        );
        assert_eq!(Recorder::new().summary(Duration::ZERO).rate, 0.0);
    }

    #[test]
    fn workers_merge() {
        let mut a = Recorders::default();
        let mut b = Recorders::default();
        a.op("otp").ok(Duration::from_millis(1));
        b.op("otp").ok(Duration::from_millis(3));
        b.op("otp").fail("Internal");
        b.op("health").ok(Duration::from_micros(200));
        a.merge(&b);
        assert_eq!(a.totals(), (3, 1));
        let otp = a.op("otp").summary(Duration::from_secs(1));
        assert_eq!((otp.ok, otp.failed), (2, 1));
        assert!((otp.max_ms - 3.0).abs() < 0.01);
        // Latencies outside the histogram's range are clamped, not lost.
        a.op("slow").ok(Duration::from_secs(3600));
        a.op("fast").ok(Duration::ZERO);
        assert_eq!(a.op("slow").successes() + a.op("fast").successes(), 2);
    }

    #[test]
    fn failures_name_the_code_and_the_reason() {
        let plain = tonic::Status::unavailable("down");
        assert_eq!(failure_of_status(&plain), "Unavailable");
        use tonic_types::{ErrorDetails, StatusExt};
        let detailed = tonic::Status::with_error_details(
            tonic::Code::Unauthenticated,
            "replayed",
            ErrorDetails::with_error_info("CODE_REPLAYED", "tollgate", []),
        );
        assert_eq!(
            failure_of_status(&detailed),
            "Unauthenticated/CODE_REPLAYED"
        );
    }
}
