//! CPU time and memory of a process on this machine, from /proc: the server's (when it runs
//! here) and the load generator's own, so a result shows what it cost and who was busy.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

/// A process to watch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pid(pub i32);

impl Pid {
    /// This process.
    pub fn myself() -> Self {
        Self(i32::try_from(std::process::id()).unwrap_or(i32::MAX))
    }

    /// CPU time used so far (user + system).
    pub fn cpu_time(self) -> Option<Duration> {
        let stat = procfs::process::Process::new(self.0).ok()?.stat().ok()?;
        let ticks = procfs::ticks_per_second().max(1);
        let used = stat.utime + stat.stime;
        Some(Duration::from_nanos(
            used.saturating_mul(1_000_000_000 / ticks),
        ))
    }

    /// Resident memory now, in bytes.
    pub fn rss(self) -> Option<u64> {
        let status = procfs::process::Process::new(self.0).ok()?.status().ok()?;
        status.vmrss.map(|kib| kib * 1024)
    }

    /// The highest resident memory since the process started, in bytes.
    pub fn peak_rss(self) -> Option<u64> {
        let status = procfs::process::Process::new(self.0).ok()?.status().ok()?;
        status.vmhwm.map(|kib| kib * 1024)
    }
}

/// What a process used over a measured window.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Usage {
    /// CPU time over the window divided by its length: 1.0 is one core busy all the time.
    pub cores: f64,
    /// Resident memory when the window started, MiB.
    pub rss_start_mib: f64,
    /// The highest resident memory sampled during the window (every 50 ms), MiB.
    pub rss_peak_mib: f64,
    /// The kernel's high-water mark of resident memory since the process started, MiB
    /// (includes set-up before the window).
    pub rss_high_water_mib: f64,
}

/// Samples a process's memory in the background between `start` and `finish`.
#[derive(Debug)]
pub struct Watch {
    pid: Pid,
    started: Instant,
    cpu_start: Option<Duration>,
    rss_start: u64,
    peak: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    sampler: tokio::task::JoinHandle<()>,
}

/// Bytes to MiB.
pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

impl Watch {
    /// Starts watching `pid`.
    pub fn start(pid: Pid) -> Self {
        let rss_start = pid.rss().unwrap_or(0);
        let peak = Arc::new(AtomicU64::new(rss_start));
        let stop = Arc::new(AtomicBool::new(false));
        let sampler = {
            let (peak, stop) = (Arc::clone(&peak), Arc::clone(&stop));
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    if let Some(rss) = pid.rss() {
                        peak.fetch_max(rss, Ordering::Relaxed);
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            })
        };
        Self {
            pid,
            started: Instant::now(),
            cpu_start: pid.cpu_time(),
            rss_start,
            peak,
            stop,
            sampler,
        }
    }

    /// Stops and reports; None when the process could not be read (it is gone, or not on
    /// this machine).
    pub async fn finish(self) -> Option<Usage> {
        let elapsed = self.started.elapsed();
        let cpu_end = self.pid.cpu_time();
        if let Some(rss) = self.pid.rss() {
            self.peak.fetch_max(rss, Ordering::Relaxed);
        }
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.sampler.await;
        let cpu = cpu_end?.checked_sub(self.cpu_start?)?;
        Some(Usage {
            cores: cpu.as_secs_f64() / elapsed.as_secs_f64().max(1e-9),
            rss_start_mib: mib(self.rss_start),
            rss_peak_mib: mib(self.peak.load(Ordering::Relaxed)),
            rss_high_water_mib: mib(self.pid.peak_rss().unwrap_or(0)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_busy_process_shows_its_cpu_and_memory() {
        let watch = Watch::start(Pid::myself());
        // Keep one core busy for 300 ms while holding 64 MiB, touched so it is resident.
        let held = tokio::task::spawn_blocking(|| {
            let block = vec![1u8; 64 * 1024 * 1024];
            let until = Instant::now() + Duration::from_millis(300);
            let mut x = 0usize;
            while Instant::now() < until {
                x = x.wrapping_add(usize::from(block[x % block.len()]));
            }
            std::hint::black_box((block, x))
        })
        .await
        .unwrap();
        let usage = watch.finish().await.unwrap();
        drop(held);
        // Other tests of this binary run beside this one, so the figures are bounds: at
        // least a quarter of a core (an idle process reads ~0), and at least the 64 MiB held.
        assert!(usage.cores > 0.25, "{usage:?}");
        assert!(usage.rss_peak_mib >= 64.0, "{usage:?}");
        assert!(
            usage.rss_high_water_mib >= usage.rss_peak_mib - 1.0,
            "{usage:?}"
        );
    }

    #[test]
    fn a_process_that_does_not_exist_reads_as_none() {
        let gone = Pid(i32::MAX);
        assert_eq!(gone.cpu_time(), None);
        assert_eq!(gone.rss(), None);
    }
}
