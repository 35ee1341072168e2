//! Which CPUs the server's threads run on (`server.thread_placement`).
//!
//! The request threads (async workers, and the database threads sqlx still uses for
//! PostgreSQL, transactions and lists) wake each other and are woken by the hashing threads
//! as each hash completes. When they sit on different CPUs, each wake-up interrupts the other
//! CPU, which on a virtual machine is costly and preempts the password hash running there.
//! `pinned` keeps the request threads together on one CPU, where a wake-up is a plain
//! switch, and spreads the hashing threads over the CPUs, the request CPU last. It trades
//! the requests' other CPUs for a few points of login throughput (on two CPUs a quarter of
//! the HOTP checks per second at full load, BENCHMARKS.md points 12 and 15), so it is a
//! choice, not the default.
//!
//! The request CPU is set on the thread that starts the runtime, before it starts any other:
//! every thread inherits its creator's affinity, so the async workers, the blocking pool and
//! the database threads sqlx starts later all land there. Each hashing thread then moves
//! itself to its CPU. Counts of threads that follow the number of cores (async workers,
//! hashing slots) take it from [`Placement::cpus`], since the pinned thread sees one.

use crate::config::ThreadPlacement;

/// The CPUs chosen at start.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Placement {
    /// The CPU of every thread but the hashing ones; None: wherever the kernel puts them.
    pub requests: Option<usize>,
    /// Hashing thread i runs on `hashing[i % len]`; empty: wherever the kernel puts it.
    pub hashing: Vec<usize>,
}

/// The cores the process may use: its CPUs, or fewer under a cgroup CPU quota.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

impl Placement {
    /// The placement `setting` asks for, given the CPUs the process may run on (ascending)
    /// and its [`cores`]. The hashing threads take the CPUs other than the request CPU
    /// first, so that with fewer slots than CPUs no hash shares a CPU with the requests.
    /// Under a CPU quota (fewer cores than CPUs) nothing is pinned, and the error says why:
    /// every replica would crowd onto the same first CPUs of the host.
    pub fn plan(setting: ThreadPlacement, allowed: &[usize], cores: usize) -> Result<Self, String> {
        if setting == ThreadPlacement::Free {
            return Ok(Self::default());
        }
        if cores < allowed.len() {
            return Err(format!(
                "a CPU quota of {cores} cores over {} CPUs: pinning needs the CPUs themselves \
                 (a cpuset, or taskset)",
                allowed.len()
            ));
        }
        let Some((&first, others)) = allowed.split_first() else {
            return Err("no CPU to pin to".to_owned());
        };
        let mut hashing = others.to_vec();
        hashing.push(first);
        Ok(Self {
            requests: Some(first),
            hashing,
        })
    }

    /// Whether any thread is pinned.
    pub fn is_pinned(&self) -> bool {
        self.requests.is_some()
    }

    /// How many CPUs the threads were placed over, if pinned: what the number of cores reads
    /// as for the pinned thread and those it starts.
    pub fn cpus(&self) -> Option<usize> {
        self.is_pinned().then_some(self.hashing.len())
    }

    /// The CPU of hashing thread `slot`, if pinned.
    pub fn hashing_cpu(&self, slot: usize) -> Option<usize> {
        self.hashing
            .get(slot.checked_rem(self.hashing.len())?)
            .copied()
    }

    /// Plans `setting` for this process and pins the calling thread (which must start the
    /// runtime afterwards) to the request CPU. Pinning nothing is the answer when the plan
    /// or the system refuses; the error says why, for a warning: placement only affects
    /// speed.
    pub fn apply(setting: ThreadPlacement) -> (Self, Option<String>) {
        if setting == ThreadPlacement::Free {
            return (Self::default(), None);
        }
        let plan = allowed_cpus()
            .map_err(|error| format!("reading the CPUs: {error}"))
            .and_then(|allowed| Self::plan(setting, &allowed, cores()));
        let plan = match plan {
            Ok(plan) => plan,
            Err(why) => return (Self::default(), Some(why)),
        };
        if let Some(cpu) = plan.requests
            && let Err(error) = pin_current_thread(cpu)
        {
            return (
                Self::default(),
                Some(format!("pinning to CPU {cpu}: {error}")),
            );
        }
        (plan, None)
    }
}

/// The CPUs the calling thread may run on, ascending.
#[cfg(target_os = "linux")]
pub fn allowed_cpus() -> Result<Vec<usize>, String> {
    use nix::sched::{CpuSet, sched_getaffinity};
    use nix::unistd::Pid;
    let set = sched_getaffinity(Pid::from_raw(0)).map_err(|e| e.to_string())?;
    Ok((0..CpuSet::count())
        .filter(|&cpu| set.is_set(cpu).unwrap_or(false))
        .collect())
}

/// Runs the calling thread on `cpu` only (threads it starts later inherit that).
#[cfg(target_os = "linux")]
pub fn pin_current_thread(cpu: usize) -> Result<(), String> {
    use nix::sched::{CpuSet, sched_setaffinity};
    use nix::unistd::Pid;
    let mut set = CpuSet::new();
    set.set(cpu).map_err(|e| e.to_string())?;
    sched_setaffinity(Pid::from_raw(0), &set).map_err(|e| e.to_string())
}

/// Why nothing is pinned elsewhere than Linux.
#[cfg(not(target_os = "linux"))]
const LINUX_ONLY: &str = "thread placement is supported on Linux only";

/// Elsewhere than Linux nothing is pinned.
#[cfg(not(target_os = "linux"))]
pub fn allowed_cpus() -> Result<Vec<usize>, String> {
    Err(LINUX_ONLY.to_owned())
}

/// Elsewhere than Linux nothing is pinned.
#[cfg(not(target_os = "linux"))]
pub fn pin_current_thread(_cpu: usize) -> Result<(), String> {
    Err(LINUX_ONLY.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pinned_puts_the_hashing_threads_off_the_request_cpu_first() {
        let two = Placement::plan(ThreadPlacement::Pinned, &[0, 1], 2).unwrap();
        assert_eq!((two.requests, two.cpus()), (Some(0), Some(2)));
        // One hashing slot: alone on CPU 1. Two: the second shares the request CPU.
        assert_eq!((two.hashing_cpu(0), two.hashing_cpu(1)), (Some(1), Some(0)));
        let plan = Placement::plan(ThreadPlacement::Pinned, &[2, 3, 5], 3).unwrap();
        assert_eq!((plan.requests, plan.cpus()), (Some(2), Some(3)));
        let cpus: Vec<_> = (0..5).map(|slot| plan.hashing_cpu(slot)).collect();
        assert_eq!(cpus, [Some(3), Some(5), Some(2), Some(3), Some(5)]);
        // One CPU: everything on it.
        let one = Placement::plan(ThreadPlacement::Pinned, &[4], 1).unwrap();
        assert_eq!((one.requests, one.hashing_cpu(1)), (Some(4), Some(4)));
    }

    #[test]
    fn pinned_refuses_a_cpu_quota_and_no_cpus() {
        // A quota of two cores on a machine of eight: every replica would pin to CPUs 0
        // and 1 of the host.
        let quota = Placement::plan(ThreadPlacement::Pinned, &[0, 1, 2, 3, 4, 5, 6, 7], 2);
        assert!(quota.unwrap_err().contains("quota of 2 cores over 8 CPUs"));
        assert!(Placement::plan(ThreadPlacement::Pinned, &[], 1).is_err());
    }

    #[test]
    fn free_pins_nothing() {
        for allowed in [&[][..], &[0], &[0, 1], &[0, 1, 2, 3]] {
            let plan = Placement::plan(ThreadPlacement::Free, allowed, 1).unwrap();
            assert_eq!(plan, Placement::default());
            assert_eq!((plan.cpus(), plan.hashing_cpu(0)), (None, None));
        }
        assert_eq!(
            Placement::apply(ThreadPlacement::Free),
            (Placement::default(), None)
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_process_may_run_on_some_cpu() {
        let allowed = allowed_cpus().unwrap();
        assert!(!allowed.is_empty());
        assert!(allowed.windows(2).all(|w| w[0] < w[1]), "{allowed:?}");
        assert!(cores() <= allowed.len());
    }
}
