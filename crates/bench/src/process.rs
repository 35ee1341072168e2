//! CPU time and memory of a process on this machine, from /proc: the server's (when it runs
//! here) and the load generator's own, so a result shows what it cost and who was busy.

use std::collections::BTreeMap;
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

    /// CPU time used so far by each live thread, in nanoseconds from the scheduler's
    /// statistics (`cpu_time` reads the whole process in clock ticks), with whether it is one
    /// of the server's password-hashing threads. None when the process or its threads could
    /// not be read.
    pub fn thread_cpu(self) -> Option<Threads> {
        let process = procfs::process::Process::new(self.0).ok()?;
        let mut threads = Threads::new();
        // A thread that ends while it is read is skipped.
        for task in process.tasks().ok()?.flatten() {
            let (Ok(stat), Ok(sched)) = (task.stat(), task.schedstat()) else {
                continue;
            };
            threads.insert(
                (task.tid, stat.starttime),
                ThreadTime {
                    hashing: stat.comm.starts_with(server::password::HASH_THREAD_PREFIX),
                    ns: sched.sum_exec_runtime,
                },
            );
        }
        (!threads.is_empty()).then_some(threads)
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
    /// The CPU of the threads alive at the end of the window, from each thread's scheduler
    /// statistics, split between the server's password-hashing threads and the rest (None
    /// when the threads could not be read).
    pub threads: Option<ThreadSplit>,
}

/// One reading of a process's threads, keyed by thread id and start time (a thread id can
/// be reused once its thread ends).
pub type Threads = BTreeMap<(i32, u64), ThreadTime>;

/// A thread's CPU time so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ThreadTime {
    /// One of the server's password-hashing threads (`tg-hash-N`).
    pub hashing: bool,
    /// CPU time used, nanoseconds.
    pub ns: u64,
}

/// A process's CPU over the window by kind of thread, in cores.
#[derive(Clone, Copy, Debug, Serialize, PartialEq)]
pub struct ThreadSplit {
    /// The server's password-hashing threads (`tg-hash-N`); 0 for the load generator.
    pub hashing_cores: f64,
    /// Every other thread: request handling, database, runtime.
    pub other_cores: f64,
}

impl ThreadSplit {
    /// CPU between two readings of `Pid::thread_cpu` over `elapsed`. A thread started in
    /// between counts from 0. A thread that ended in between is left out, with the CPU it
    /// used in the window: the split can fall short of the process's whole CPU (the server's
    /// threads live as long as it does, apart from idle database connections closed).
    fn between(start: &Threads, end: &Threads, elapsed: Duration) -> Self {
        let (mut hashing, mut other) = (0u64, 0u64);
        for (key, now) in end {
            let before = start.get(key).map_or(0, |then| then.ns);
            let used = now.ns.saturating_sub(before);
            if now.hashing {
                hashing += used;
            } else {
                other += used;
            }
        }
        let secs = elapsed.as_secs_f64().max(1e-9);
        Self {
            hashing_cores: hashing as f64 / 1e9 / secs,
            other_cores: other as f64 / 1e9 / secs,
        }
    }

    /// Both kinds together, in cores.
    pub fn total_cores(&self) -> f64 {
        self.hashing_cores + self.other_cores
    }
}

/// Samples a process's memory in the background between `start` and `finish`.
#[derive(Debug)]
pub struct Watch {
    pid: Pid,
    started: Instant,
    cpu_start: Option<Duration>,
    threads_start: Option<Threads>,
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
            threads_start: pid.thread_cpu(),
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
        let threads_end = self.pid.thread_cpu();
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
            threads: self
                .threads_start
                .as_ref()
                .zip(threads_end.as_ref())
                .map(|(start, end)| ThreadSplit::between(start, end, elapsed)),
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

    /// This thread's own CPU time, from its scheduler statistics.
    fn own_cpu() -> Duration {
        let line = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap();
        let ns = line.split_whitespace().next().unwrap().parse().unwrap();
        Duration::from_nanos(ns)
    }

    #[test]
    fn the_hashing_threads_cpu_is_told_from_the_rest() {
        let me = Pid::myself();
        let before = me.thread_cpu().unwrap();
        let started = Instant::now();
        let (done, wait) = std::sync::mpsc::channel::<()>();
        let (spun, spinning) = std::sync::mpsc::channel::<Duration>();
        // A thread named as the server names its hashing threads spins until it has used
        // 200 ms of CPU (however busy the cores are with other tests), then stays alive
        // until it has been read.
        let hasher = std::thread::Builder::new()
            .name(format!("{}9", server::password::HASH_THREAD_PREFIX))
            .spawn(move || {
                let mut x = 0u64;
                while own_cpu() < Duration::from_millis(200) {
                    for _ in 0..10_000 {
                        x = std::hint::black_box(x.wrapping_add(1));
                    }
                }
                spun.send(own_cpu()).unwrap();
                wait.recv().unwrap();
            })
            .unwrap();
        let used = spinning.recv().unwrap();
        let during = me.thread_cpu().unwrap();
        let elapsed = started.elapsed();
        done.send(()).unwrap();
        hasher.join().unwrap();

        let hashing: Vec<&ThreadTime> = during.values().filter(|t| t.hashing).collect();
        assert_eq!(hashing.len(), 1, "{during:?}");
        // This test's own thread is not a hashing thread.
        assert!(during.values().any(|t| !t.hashing));
        // The new thread counts from 0: the split holds all it used, which was read later
        // than `used`, so at least that.
        let split = ThreadSplit::between(&before, &during, elapsed);
        let hashed = Duration::from_secs_f64(split.hashing_cores * elapsed.as_secs_f64());
        assert!(
            hashed + Duration::from_micros(1) >= used && hashed <= elapsed,
            "{split:?} {used:?} {elapsed:?}"
        );
    }

    #[test]
    fn a_split_counts_new_threads_from_zero_and_leaves_out_ended_ones() {
        let time = |hashing, ns| ThreadTime { hashing, ns };
        let start = Threads::from([
            ((1, 10), time(false, 1_000)),
            ((2, 10), time(true, 5_000)),
            ((3, 10), time(false, 7)),
        ]);
        // Thread 3 ended; thread 4 (hashing) started during the window, and so did a new
        // thread that reuses id 1 (its start time differs): it counts from 0.
        let end = Threads::from([
            ((1, 99), time(false, 500_000)),
            ((2, 10), time(true, 1_005_000)),
            ((4, 20), time(true, 500_000)),
        ]);
        let split = ThreadSplit::between(&start, &end, Duration::from_millis(1));
        assert!((split.hashing_cores - 1.5).abs() < 1e-9, "{split:?}");
        assert!((split.other_cores - 0.5).abs() < 1e-9, "{split:?}");
        assert!((split.total_cores() - 2.0).abs() < 1e-9);
    }

    #[test]
    fn a_process_that_does_not_exist_reads_as_none() {
        let gone = Pid(i32::MAX);
        assert_eq!(gone.cpu_time(), None);
        assert_eq!(gone.rss(), None);
        assert_eq!(gone.thread_cpu(), None);
    }
}
