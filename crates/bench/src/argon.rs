//! The machine's password-hashing limit: how many argon2id hashes per second its cores can
//! compute at the server's parameters. A login verifies one hash, so no server can log users
//! in faster than this.

use std::time::{Duration, Instant};

use argon2::{Algorithm, Argon2, Params, Version};
use serde::Serialize;
use server::config::PasswordConfig;

/// The limit, measured.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct HashLimit {
    /// Cores of this machine.
    pub cores: usize,
    /// Median time of one hash on one core, ms.
    pub hash_ms: f64,
    /// cores ÷ hash time: logins per second at most.
    pub logins_per_sec: f64,
    /// The parameters: memory KiB, iterations, lanes.
    pub params: (u32, u32, u32),
}

/// Times `samples` hashes (after two unmeasured ones) on one thread, while nothing else of
/// ours runs.
pub fn measure(config: &PasswordConfig, samples: usize) -> Result<HashLimit, String> {
    let params = Params::new(
        config.memory_kib,
        config.iterations,
        config.parallelism,
        Some(32),
    )
    .map_err(|e| format!("argon2 parameters: {e}"))?;
    let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
    let mut out = [0u8; 32];
    let mut times: Vec<Duration> = Vec::with_capacity(samples);
    for i in 0..samples.max(1) + 2 {
        let started = Instant::now();
        argon
            .hash_password_into(b"correct horse battery", b"sixteen byte salt", &mut out)
            .map_err(|e| format!("argon2: {e}"))?;
        if i >= 2 {
            times.push(started.elapsed());
        }
    }
    times.sort_unstable();
    let median = times.get(times.len() / 2).copied().unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let hash_ms = median.as_secs_f64() * 1000.0;
    Ok(HashLimit {
        cores,
        hash_ms,
        logins_per_sec: cores as f64 / median.as_secs_f64().max(1e-9),
        params: (config.memory_kib, config.iterations, config.parallelism),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_scales_with_the_cost() {
        let light = PasswordConfig {
            memory_kib: 1024,
            iterations: 1,
            ..PasswordConfig::default()
        };
        let heavy = PasswordConfig {
            memory_kib: 8192,
            iterations: 2,
            ..PasswordConfig::default()
        };
        let a = measure(&light, 5).unwrap();
        let b = measure(&heavy, 5).unwrap();
        assert!(a.hash_ms > 0.0 && b.hash_ms > a.hash_ms, "{a:?} {b:?}");
        assert!(a.logins_per_sec > b.logins_per_sec);
        let expected = a.cores as f64 * 1000.0 / a.hash_ms;
        assert!((a.logins_per_sec - expected).abs() / expected < 1e-6);
        assert!(
            measure(
                &PasswordConfig {
                    memory_kib: 1,
                    ..light
                },
                1
            )
            .is_err()
        );
    }
}
