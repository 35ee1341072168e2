//! argon2id password hashing, run off the async runtime with bounded concurrency, and
//! verification that costs the same whether or not the account exists.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _};
use argon2::{Algorithm, Argon2, Params, Version};
use tokio::sync::Semaphore;
use zeroize::Zeroizing;

use crate::config::PasswordConfig;
use crate::error::ApiError;

/// Hashes and verifies passwords.
#[derive(Debug)]
pub struct Passwords {
    params: Params,
    permits: Arc<Semaphore>,
    /// A hash of a random password with the same parameters: verified against when the
    /// account does not exist or has no password, so those cases cost a real verification.
    dummy: String,
    verifications: AtomicU64,
    in_flight: AtomicU64,
    max_in_flight: AtomicU64,
    limit: usize,
    min_length: usize,
}

impl Passwords {
    /// With the configured parameters; `max_concurrent` 0 means the number of cores.
    pub fn new(config: &PasswordConfig) -> Result<Arc<Self>, ApiError> {
        let params = Params::new(
            config.memory_kib,
            config.iterations,
            config.parallelism,
            None,
        )
        .map_err(|e| ApiError::Internal(format!("argon2 parameters: {e}")))?;
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        let permits = if config.max_concurrent == 0 {
            cores
        } else {
            config.max_concurrent
        };
        let mut random = Zeroizing::new([0u8; 32]);
        getrandom::fill(random.as_mut()).map_err(|e| ApiError::Internal(e.to_string()))?;
        let dummy = argon2(&params)
            .hash_password(random.as_ref())
            .map_err(|e| ApiError::Internal(format!("argon2: {e}")))?
            .to_string();
        Ok(Arc::new(Self {
            params,
            permits: Arc::new(Semaphore::new(permits)),
            dummy,
            verifications: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            max_in_flight: AtomicU64::new(0),
            limit: permits,
            min_length: config.min_length,
        }))
    }

    /// Checks a new password's length (in characters), naming `field` when it is refused.
    pub fn check_new(&self, field: &str, password: &str) -> Result<(), ApiError> {
        let len = password.chars().count();
        if len < self.min_length || len > 256 {
            return Err(ApiError::field(
                field,
                format!("must be {} to 256 characters", self.min_length),
            ));
        }
        Ok(())
    }

    /// The argon2id PHC string of `password`.
    pub async fn hash(self: &Arc<Self>, password: Zeroizing<String>) -> Result<String, ApiError> {
        let this = Arc::clone(self);
        self.blocking(async { Ok(()) }, move || {
            argon2(&this.params)
                .hash_password(password.as_bytes())
                .map(|h| h.to_string())
                .map_err(|e| ApiError::Internal(format!("argon2: {e}")))
        })
        .await
    }

    /// Whether `password` matches `hash`. With no hash (unknown account, or one without a
    /// password) the dummy hash is verified instead, at the same cost, and the answer is no.
    /// `precheck` (the lockout check) runs once a hashing slot is held, right before the
    /// hash, so guesses queued behind a flood see a lockout that started while they waited.
    pub async fn verify(
        self: &Arc<Self>,
        password: Zeroizing<String>,
        hash: Option<String>,
        precheck: impl Future<Output = Result<(), ApiError>>,
    ) -> Result<bool, ApiError> {
        let this = Arc::clone(self);
        self.blocking(precheck, move || {
            this.verifications.fetch_add(1, Ordering::Relaxed);
            let target = hash.as_deref().unwrap_or(&this.dummy);
            let ok = argon2(&this.params)
                .verify_password(password.as_bytes(), target)
                .is_ok();
            Ok(ok && hash.is_some())
        })
        .await
    }

    /// How many verifications ran (for tests of the no-enumeration rule, and metrics).
    pub fn verifications(&self) -> u64 {
        self.verifications.load(Ordering::Relaxed)
    }

    /// The most hashes that ever ran at once, and the limit they may not exceed.
    pub fn concurrency(&self) -> (u64, usize) {
        (self.max_in_flight.load(Ordering::Relaxed), self.limit)
    }

    async fn blocking<T: Send + 'static>(
        self: &Arc<Self>,
        precheck: impl Future<Output = Result<(), ApiError>>,
        work: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
    ) -> Result<T, ApiError> {
        // Waiting for a permit is async: a flood of logins queues here, not on the runtime.
        let permit = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .map_err(|_| ApiError::Internal("password hashing is shut down".to_owned()))?;
        precheck.await?;
        let this = Arc::clone(self);
        // The permit travels with the work: a cancelled call does not free its slot until
        // the hash really ends, so cancelled logins cannot exceed the limit either.
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let running = this.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            this.max_in_flight.fetch_max(running, Ordering::SeqCst);
            let result = work();
            this.in_flight.fetch_sub(1, Ordering::SeqCst);
            result
        })
        .await
        .map_err(|e| ApiError::Internal(format!("password task: {e}")))?
    }
}

fn argon2(params: &Params) -> Argon2<'static> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
}
