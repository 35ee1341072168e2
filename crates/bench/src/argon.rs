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
    /// Median time of one hash while every core hashes, ms.
    pub hash_ms: f64,
    /// The fastest of those hashes, ms: the least a hash took here, so `cores ÷ fastest_ms`
    /// bounds the login rate from above even when a busy neighbour slowed the median.
    pub fastest_ms: f64,
    /// cores ÷ hash time: logins per second at most.
    pub logins_per_sec: f64,
    /// The parameters: memory KiB, iterations, lanes.
    pub params: (u32, u32, u32),
}

/// Times `samples` hashes (after two unmeasured ones) on each core at once, while nothing
/// else of ours runs; the median is the time of one hash.
pub fn measure(config: &PasswordConfig, samples: usize) -> Result<HashLimit, String> {
    let params = Params::new(
        config.memory_kib,
        config.iterations,
        config.parallelism,
        Some(32),
    )
    .map_err(|e| format!("argon2 parameters: {e}"))?;
    let cores = server::placement::cores();
    // One hashing thread per core, as under a login flood: argon2 is memory-bound, and a hash
    // alone on an idle machine runs faster than one beside others.
    let threads: Vec<_> = (0..cores)
        .map(|_| {
            let params = params.clone();
            std::thread::spawn(move || {
                let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
                let mut out = [0u8; 32];
                // The server hashes in reused memory; so does this (fresh 19 MiB per hash
                // would add page faults the server does not pay).
                let mut memory = vec![argon2::Block::default(); params.block_count()];
                let mut times = Vec::with_capacity(samples);
                for i in 0..samples.max(1) + 2 {
                    let started = Instant::now();
                    argon
                        .hash_password_into_with_memory(
                            b"correct horse battery",
                            b"sixteen byte salt",
                            &mut out,
                            &mut memory,
                        )
                        .map_err(|e| format!("argon2: {e}"))?;
                    if i >= 2 {
                        times.push(started.elapsed());
                    }
                }
                Ok::<_, String>(times)
            })
        })
        .collect();
    let mut times: Vec<Duration> = Vec::new();
    for thread in threads {
        times.extend(
            thread
                .join()
                .map_err(|_| "a hashing thread panicked".to_owned())??,
        );
    }
    times.sort_unstable();
    let median = times.get(times.len() / 2).copied().unwrap_or_default();
    let hash_ms = median.as_secs_f64() * 1000.0;
    let fastest_ms = times.first().copied().unwrap_or_default().as_secs_f64() * 1000.0;
    Ok(HashLimit {
        cores,
        hash_ms,
        fastest_ms,
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
        assert!(0.0 < a.fastest_ms && a.fastest_ms <= a.hash_ms, "{a:?}");
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
