//! The machine's password-hashing limit: how many argon2id hashes per second its cores can
//! compute at the server's parameters. A login verifies one hash, so no server can log users
//! in faster than this.

use std::path::{Path, PathBuf};

use serde::Serialize;
use server::config::PasswordConfig;
use server::password::HashTimes;

/// The limit, measured.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct HashLimit {
    /// Cores of this machine.
    pub cores: usize,
    /// Median time of one hash while every core hashes, ms.
    pub hash_ms: f64,
    /// The fastest of those hashes, ms: the least a hash took here, so `cores ÷ fastest_ms`
    /// bounds the login rate from above even when a busy neighbour slowed the median.
    pub fastest_ms: f64,
    /// cores ÷ hash time: logins per second at most.
    pub logins_per_sec: f64,
    /// The parameters: memory KiB, iterations, lanes.
    pub params: (u32, u32, u32),
    /// Which code timed the hashes (see [`By`]).
    pub timed_by: String,
}

/// Which code times the hashes. Two builds of the same argon2 source can hash at speeds 10-20%
/// apart on one machine (the hot loop lands at other addresses), so the limit is the server
/// binary's own wherever it runs here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum By {
    /// The server's binary (`tollgate hash-limit`), with the configuration file the server
    /// reads, if any, and this process's environment (its `TOLLGATE_*` variables).
    Server {
        /// The `tollgate` binary.
        bin: PathBuf,
        /// Its configuration file.
        config: Option<PathBuf>,
    },
    /// This tool's own copy of argon2: for a server that does not run on this machine.
    Tool,
}

/// Times `samples` hashes on each core at once (after two untimed ones), while nothing else
/// of ours runs, with the code `by` names; the median is the time of one hash. The server's
/// binary must time the parameters this run expects (`config`).
pub fn measure(config: &PasswordConfig, samples: usize, by: &By) -> Result<HashLimit, String> {
    let (times, timed_by) = match by {
        By::Server { bin, config: file } => (
            run_hash_limit(bin, file.as_deref(), samples)?,
            format!("the server's binary ({})", bin.display()),
        ),
        By::Tool => (
            server::password::time_hashes(config, samples)?,
            "the load generator's own argon2 (no server binary on this machine)".to_owned(),
        ),
    };
    let params = (config.memory_kib, config.iterations, config.parallelism);
    if (times.memory_kib, times.iterations, times.parallelism) != params {
        return Err(format!(
            "the server's binary timed argon2id at m={} KiB, t={}, p={}, but the run expects \
             m={} KiB, t={}, p={}: give the tool the server's --server-config",
            times.memory_kib, times.iterations, times.parallelism, params.0, params.1, params.2
        ));
    }
    Ok(HashLimit {
        cores: times.cores,
        hash_ms: times.hash_ms,
        fastest_ms: times.fastest_ms,
        logins_per_sec: times.cores as f64 * 1000.0 / times.hash_ms.max(1e-9),
        params,
        timed_by,
    })
}

/// `bin hash-limit`: the server's binary times the hashes and prints them as JSON.
fn run_hash_limit(bin: &Path, config: Option<&Path>, samples: usize) -> Result<HashTimes, String> {
    let mut command = std::process::Command::new(bin);
    if let Some(file) = config {
        command.arg("--config").arg(file);
    }
    let output = command
        .args(["hash-limit", "--samples", &samples.max(1).to_string()])
        .output()
        .map_err(|e| format!("{} hash-limit: {e}", bin.display()))?;
    if !output.status.success() {
        return Err(format!(
            "{} hash-limit: {}",
            bin.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    serde_json::from_slice(&output.stdout).map_err(|e| {
        format!(
            "{} hash-limit printed {:?}: {e}",
            bin.display(),
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn light() -> PasswordConfig {
        PasswordConfig {
            memory_kib: 1024,
            iterations: 1,
            ..PasswordConfig::default()
        }
    }

    #[test]
    fn the_tool_times_its_own_copy_when_no_server_runs_here() {
        let a = measure(&light(), 5, &By::Tool).unwrap();
        assert!(0.0 < a.fastest_ms && a.fastest_ms <= a.hash_ms, "{a:?}");
        let expected = a.cores as f64 * 1000.0 / a.hash_ms;
        assert!((a.logins_per_sec - expected).abs() / expected < 1e-6);
        assert_eq!(a.params, (1024, 1, light().parallelism));
        assert!(a.timed_by.contains("load generator"), "{}", a.timed_by);
    }

    #[test]
    fn a_server_binary_that_cannot_time_is_an_error() {
        let missing = By::Server {
            bin: PathBuf::from("/nonexistent/tollgate"),
            config: None,
        };
        let err = measure(&light(), 1, &missing).unwrap_err();
        assert!(err.contains("/nonexistent/tollgate hash-limit"), "{err}");
        // A binary that answers something else than the times.
        let wrong = By::Server {
            bin: PathBuf::from("/bin/echo"),
            config: None,
        };
        let err = measure(&light(), 1, &wrong).unwrap_err();
        assert!(err.contains("hash-limit printed"), "{err}");
    }
}
