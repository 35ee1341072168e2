//! Running workers against the server for a warm-up and a measured window, closed loop (each
//! worker sends its next request when the previous answer came) or open loop at a fixed rate.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use crate::client::Clients;
use crate::stats::Recorders;

/// One simulated client: each step is one operation (possibly several RPCs), whose answer the
/// worker checks. `Err` names why the answer did not count.
pub trait Worker: Send + 'static {
    /// Does one operation; returns its name and whether it succeeded.
    fn step(
        &mut self,
        clients: &Clients,
    ) -> impl Future<Output = (&'static str, Result<(), String>)> + Send;
}

/// The phases of a run, shared by every worker.
#[derive(Clone, Copy, Debug)]
pub struct Window {
    /// When requests start.
    pub start: Instant,
    /// From here on, requests are measured.
    pub measure_from: Instant,
    /// No request starts after this.
    pub end: Instant,
}

impl Window {
    /// A window starting now.
    pub fn starting_now(warmup: Duration, duration: Duration) -> Self {
        let start = Instant::now();
        Self {
            start,
            measure_from: start + warmup,
            end: start + warmup + duration,
        }
    }

    /// The measured part's length.
    pub fn measured(&self) -> Duration {
        self.end - self.measure_from
    }
}

/// Counters the progress bar reads while the run goes on.
#[derive(Debug, Default)]
pub struct Live {
    /// Successes so far (warm-up included).
    pub ok: AtomicU64,
    /// Failures so far (warm-up included).
    pub failed: AtomicU64,
}

/// What the workers of one group recorded.
#[derive(Debug, Default)]
pub struct Recorded {
    /// The measured window's operations.
    pub measured: Recorders,
    /// Failures during the warm-up (a healthy run has none).
    pub warmup: Recorders,
}

/// Runs `workers` in `window`, worker `i` on `clients[i % clients.len()]`. With `rate`, the
/// group as a whole starts `rate` operations per second, spread evenly over its workers, and
/// latency counts from when an operation was due, not when it was sent: a server that falls
/// behind shows it in its latency (no coordinated omission).
pub async fn run<W: Worker>(
    workers: Vec<W>,
    clients: &[Clients],
    window: Window,
    rate: Option<f64>,
    live: Arc<Live>,
) -> Recorded {
    run_returning(workers, clients, window, rate, live).await.0
}

/// [`run`], handing the workers back for another window (a worker that crashed is lost).
pub async fn run_returning<W: Worker>(
    workers: Vec<W>,
    clients: &[Clients],
    window: Window,
    rate: Option<f64>,
    live: Arc<Live>,
) -> (Recorded, Vec<W>) {
    let n = workers.len().max(1);
    let interval = rate
        .filter(|r| *r > 0.0)
        .map(|r| Duration::from_secs_f64(n as f64 / r));
    let mut tasks = Vec::with_capacity(n);
    for (i, mut worker) in workers.into_iter().enumerate() {
        let Some(c) = clients.get(i % clients.len().max(1)).cloned() else {
            break;
        };
        let live = Arc::clone(&live);
        // Open loop: workers start staggered over one interval.
        let mut due = interval.map(|every| window.start + every.mul_f64(i as f64 / n as f64));
        tasks.push(tokio::spawn(async move {
            let mut recorded = Recorded::default();
            loop {
                let started = match (due, interval) {
                    (Some(at), Some(every)) => {
                        if at >= window.end {
                            break;
                        }
                        tokio::time::sleep_until(at).await;
                        due = Some(at + every);
                        at
                    }
                    _ => Instant::now(),
                };
                if started >= window.end {
                    break;
                }
                let (op, result) = worker.step(&c).await;
                let latency = started.elapsed();
                let into = if started >= window.measure_from {
                    &mut recorded.measured
                } else {
                    &mut recorded.warmup
                };
                match result {
                    Ok(()) => {
                        into.op(op).ok(latency);
                        live.ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(cause) => {
                        into.op(op).fail(cause);
                        live.failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            (recorded, worker)
        }));
    }
    let mut all = Recorded::default();
    let mut back = Vec::with_capacity(n);
    for task in tasks {
        match task.await {
            Ok((recorded, worker)) => {
                all.measured.merge(&recorded.measured);
                all.warmup.merge(&recorded.warmup);
                back.push(worker);
            }
            Err(e) => all
                .measured
                .op("worker")
                .fail(format!("worker crashed: {e}")),
        }
    }
    (all, back)
}

/// Draws a progress bar (on a terminal) until `window` ends.
pub fn progress(label: String, window: Window, live: Arc<Live>) -> tokio::task::JoinHandle<()> {
    use indicatif::{ProgressBar, ProgressStyle};
    let total = (window.end - window.start).as_millis();
    let bar = ProgressBar::new(u64::try_from(total).unwrap_or(u64::MAX));
    if let Ok(style) = ProgressStyle::with_template("{prefix} [{bar:30}] {elapsed:>3} {msg}") {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_prefix(label);
    tokio::spawn(async move {
        let mut last = (Instant::now(), 0u64);
        loop {
            tokio::time::sleep(Duration::from_millis(250)).await;
            let now = Instant::now();
            let ok = live.ok.load(Ordering::Relaxed);
            let failed = live.failed.load(Ordering::Relaxed);
            let rate = (ok - last.1) as f64 / (now - last.0).as_secs_f64().max(1e-9);
            last = (now, ok);
            let phase = if now < window.measure_from {
                "warm-up"
            } else {
                "measuring"
            };
            bar.set_position(u64::try_from((now - window.start).as_millis()).unwrap_or(0));
            bar.set_message(format!("{phase}: {rate:.0} ok/s, {failed} failed"));
            if now >= window.end {
                bar.finish_and_clear();
                break;
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A worker that answers at once (no server): the driver's own pacing and accounting.
    struct Instant0(u64);

    impl Worker for Instant0 {
        async fn step(&mut self, _: &Clients) -> (&'static str, Result<(), String>) {
            self.0 += 1;
            if self.0.is_multiple_of(10) {
                ("op", Err("every tenth".to_owned()))
            } else {
                ("op", Ok(()))
            }
        }
    }

    async fn clients() -> Vec<Clients> {
        let target = crate::client::Target {
            url: "http://unused.invalid:1".to_owned(),
            api_key: None,
        };
        // Connected to nothing, in memory: these workers do not call it. The other end is
        // leaked so that the connection stays open for the test's length.
        let (conn, other_end) = crate::client::Conn::unused().await;
        Box::leak(Box::new(other_end));
        vec![target.clients(conn)]
    }

    #[tokio::test(start_paused = true)]
    async fn open_loop_keeps_the_rate_and_splits_warmup_from_measurement() {
        let window = Window::starting_now(Duration::from_secs(1), Duration::from_secs(2));
        let live = Arc::new(Live::default());
        let workers = (0..4).map(|_| Instant0(0)).collect();
        let recorded = run(
            workers,
            &clients().await,
            window,
            Some(200.0),
            Arc::clone(&live),
        )
        .await;
        let (ok, failed) = recorded.measured.totals();
        // 200/s for 2 s measured; the paused clock makes it exact.
        assert_eq!(ok + failed, 400, "{ok} {failed}");
        assert_eq!(failed, 40);
        let (w_ok, w_failed) = recorded.warmup.totals();
        assert_eq!(w_ok + w_failed, 200);
        assert_eq!(live.ok.load(Ordering::Relaxed), ok + w_ok);
        assert_eq!(live.failed.load(Ordering::Relaxed), failed + w_failed);
        assert_eq!(window.measured(), Duration::from_secs(2));
    }

    /// A worker that takes 10 ms per answer.
    struct Slow;

    impl Worker for Slow {
        async fn step(&mut self, _: &Clients) -> (&'static str, Result<(), String>) {
            tokio::time::sleep(Duration::from_millis(10)).await;
            ("op", Ok(()))
        }
    }

    #[tokio::test(start_paused = true)]
    async fn latency_counts_from_when_a_request_was_due() {
        // One worker asked for 200/s (every 5 ms) answers every 10 ms: each request starts
        // later than due, and the latency must show the growing backlog.
        let window = Window::starting_now(Duration::ZERO, Duration::from_secs(1));
        let recorded = run(
            vec![Slow],
            &clients().await,
            window,
            Some(200.0),
            Arc::new(Live::default()),
        )
        .await;
        let mut measured = recorded.measured;
        let s = measured.op("op").summary(window.measured());
        assert!(s.max_ms > 400.0, "{s:?}");
        assert!(s.p50_ms > 200.0, "{s:?}");
        // Closed loop, the same worker shows its 10 ms.
        let window = Window::starting_now(Duration::ZERO, Duration::from_secs(1));
        let mut closed = run(
            vec![Slow],
            &clients().await,
            window,
            None,
            Arc::new(Live::default()),
        )
        .await
        .measured;
        let s = closed.op("op").summary(window.measured());
        assert_eq!(s.ok, 100);
        assert!((s.max_ms - 10.0).abs() < 0.1, "{s:?}");
    }
}
