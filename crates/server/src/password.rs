//! argon2id password hashing, run off the async runtime on dedicated threads (one per
//! hashing slot), and verification that costs the same whether or not the account exists.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};

use argon2::password_hash::PasswordHasher as _;
use argon2::{Algorithm, Argon2, Block, Params, PasswordHash, Version};
use subtle::ConstantTimeEq as _;
use tokio::sync::Semaphore;
use zeroize::Zeroizing;

use crate::config::PasswordConfig;
use crate::error::ApiError;
use crate::placement::Placement;

/// A hash to compute, with the hashing thread's own argon2 memory.
type Job = Box<dyn FnOnce(&mut Vec<Block>) + Send>;

/// Hashes and verifies passwords.
#[derive(Debug)]
pub struct Passwords {
    params: Params,
    /// The queue of the hashing threads, one per slot: no more hashes run at once than
    /// there are threads. A thread that ends a hash takes the next queued one itself, with
    /// no hand-off through the async runtime in between.
    jobs: mpsc::Sender<Job>,
    /// One more than the slots: calls running or past their lockout check, hashing or queued
    /// to hash.
    /// The extra one has its check done while every slot hashes, so a core never waits for
    /// the database between two hashes.
    admitted: Arc<Semaphore>,
    /// A hash of a random password with the same parameters: verified against when the
    /// account does not exist or has no password, so those cases cost a real verification.
    dummy: String,
    verifications: AtomicU64,
    in_flight: AtomicU64,
    max_in_flight: AtomicU64,
    limit: usize,
    min_length: usize,
}

/// The name of every hashing thread starts with this, followed by its slot (`tg-hash-0`).
/// Linux keeps 15 bytes of a thread's name: `tg-hash-255` fits. The load generator tells the
/// hashing threads' CPU from the rest by it.
pub const HASH_THREAD_PREFIX: &str = "tg-hash-";

/// Starts `slots` hashing threads on one queue. Each keeps argon2's working memory (19 MiB
/// at the default parameters) for its next hash: allocating it for every hash lets the
/// allocator keep freed copies in per-thread arenas, and a login flood then held hundreds of
/// MiB. The threads end when the queue's sender is dropped.
/// With `placement` pinned, thread i moves to its CPU first.
fn start_hashers(slots: usize, placement: &Placement) -> Result<mpsc::Sender<Job>, ApiError> {
    let (sender, receiver) = mpsc::channel::<Job>();
    let receiver = Arc::new(Mutex::new(receiver));
    for slot in 0..slots {
        let receiver = Arc::clone(&receiver);
        let cpu = placement.hashing_cpu(slot);
        std::thread::Builder::new()
            .name(format!("{HASH_THREAD_PREFIX}{slot}"))
            .spawn(move || {
                if let Some(cpu) = cpu
                    && let Err(error) = crate::placement::pin_current_thread(cpu)
                {
                    tracing::warn!(slot, cpu, %error, "hashing thread not moved to its CPU");
                }
                let mut memory = Vec::new();
                loop {
                    // The lock is released before the job runs: the other threads wait for
                    // the next job meanwhile.
                    let next = match receiver.lock() {
                        Ok(queue) => queue.recv(),
                        Err(_) => return,
                    };
                    let Ok(job) = next else { return };
                    // A panicking job drops its answer (its caller gets an error), not the
                    // thread; its memory is not trusted again.
                    let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        job(&mut memory);
                    }));
                    if ran.is_err() {
                        memory = Vec::new();
                    }
                }
            })
            .map_err(|e| ApiError::Internal(format!("hashing thread: {e}")))?;
    }
    Ok(sender)
}

/// `memory` resized to `blocks` argon2 blocks (a thread's buffer is replaced for a hash
/// made with other parameters, and stays at that size until the next such hash).
fn blocks_of(memory: &mut Vec<Block>, blocks: usize) -> &mut [Block] {
    if memory.len() != blocks {
        *memory = vec![Block::default(); blocks];
    }
    memory
}

impl Passwords {
    /// With the configured parameters; `max_concurrent` 0 means the number of cores.
    pub fn new(config: &PasswordConfig) -> Result<Arc<Self>, ApiError> {
        Self::placed(config, &Placement::default())
    }

    /// [`Passwords::new`], each hashing thread on its CPU when `placement` pins them.
    pub fn placed(config: &PasswordConfig, placement: &Placement) -> Result<Arc<Self>, ApiError> {
        let params = Params::new(
            config.memory_kib,
            config.iterations,
            config.parallelism,
            None,
        )
        .map_err(|e| ApiError::Internal(format!("argon2 parameters: {e}")))?;
        let cores = placement
            .cpus()
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from));
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
            jobs: start_hashers(permits, placement)?,
            admitted: Arc::new(Semaphore::new(permits + 1)),
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

    /// The argon2id PHC string of `password` (random 16-byte salt, 32-byte output), computed
    /// on the hashing threads in their reused memory like verifications: a flood of sign-ups
    /// or password changes must not grow the heap either.
    pub async fn hash(self: &Arc<Self>, password: Zeroizing<String>) -> Result<String, ApiError> {
        let this = Arc::clone(self);
        let (hash, ()) = self
            .blocking(async { Ok(()) }, move |memory| {
                this.hash_in_place(password.as_bytes(), memory)
            })
            .await?;
        Ok(hash)
    }

    fn hash_in_place(&self, password: &[u8], memory: &mut Vec<Block>) -> Result<String, ApiError> {
        use base64::Engine as _;
        let mut salt = [0u8; 16];
        getrandom::fill(&mut salt).map_err(|e| ApiError::Internal(e.to_string()))?;
        let mut out = Zeroizing::new([0u8; 32]);
        argon2(&self.params)
            .hash_password_into_with_memory(
                password,
                &salt,
                out.as_mut(),
                blocks_of(memory, self.params.block_count()),
            )
            .map_err(|e| ApiError::Internal(format!("argon2: {e}")))?;
        let b64 = base64::engine::general_purpose::STANDARD_NO_PAD;
        Ok(format!(
            "$argon2id$v=19$m={},t={},p={}${}${}",
            self.params.m_cost(),
            self.params.t_cost(),
            self.params.p_cost(),
            b64.encode(salt),
            b64.encode(out.as_ref()),
        ))
    }

    /// Whether `password` matches `hash`, with what `precheck` returned. With no hash
    /// (unknown account, or one without a password) the dummy hash is verified instead, at
    /// the same cost, and the answer is no.
    /// `precheck` (the lockout check) runs once the call is among the next to hash (the ones
    /// in the slots and one more), so guesses queued behind a flood see a lockout that
    /// started while they waited; the one beyond the slots waits at most about one hash
    /// between its check and its own hash.
    pub async fn verify<P>(
        self: &Arc<Self>,
        password: Zeroizing<String>,
        hash: Option<String>,
        precheck: impl Future<Output = Result<P, ApiError>>,
    ) -> Result<(bool, P), ApiError> {
        let this = Arc::clone(self);
        self.blocking(precheck, move |memory| {
            this.verifications.fetch_add(1, Ordering::Relaxed);
            let target = hash.as_deref().unwrap_or(&this.dummy);
            let ok = this.verify_in_place(password.as_bytes(), target, memory);
            Ok(ok && hash.is_some())
        })
        .await
    }

    /// Verifies `password` against the PHC string `target` in the hashing thread's `memory`
    /// (argon2id or any variant and parameters the string names); constant-time comparison
    /// of the outputs. A string that does not parse never matches.
    fn verify_in_place(&self, password: &[u8], target: &str, memory: &mut Vec<Block>) -> bool {
        let Ok(parsed) = PasswordHash::new(target) else {
            return false;
        };
        let (Some(salt), Some(expected)) = (&parsed.salt, &parsed.hash) else {
            return false;
        };
        let Ok(algorithm) = Algorithm::try_from(parsed.algorithm.as_str()) else {
            return false;
        };
        let Ok(version) = parsed
            .version
            .map(Version::try_from)
            .transpose()
            .map(Option::unwrap_or_default)
        else {
            return false;
        };
        let Ok(params) = Params::try_from(&parsed) else {
            return false;
        };
        let blocks = params.block_count();
        let expected = expected.as_bytes();
        let mut out = Zeroizing::new(vec![0u8; expected.len()]);
        let computed = Argon2::new(algorithm, version, params)
            .hash_password_into_with_memory(
                password,
                salt.as_ref(),
                &mut out,
                blocks_of(memory, blocks),
            )
            .is_ok();
        computed && bool::from(out.as_slice().ct_eq(expected))
    }

    /// How many verifications ran (for tests of the no-enumeration rule, and metrics).
    pub fn verifications(&self) -> u64 {
        self.verifications.load(Ordering::Relaxed)
    }

    /// The most hashes that ever ran at once, and the limit they may not exceed.
    pub fn concurrency(&self) -> (u64, usize) {
        (self.max_in_flight.load(Ordering::Relaxed), self.limit)
    }

    async fn blocking<T: Send + 'static, P>(
        self: &Arc<Self>,
        precheck: impl Future<Output = Result<P, ApiError>>,
        work: impl FnOnce(&mut Vec<Block>) -> Result<T, ApiError> + Send + 'static,
    ) -> Result<(T, P), ApiError> {
        let shut = || ApiError::Internal("password hashing is shut down".to_owned());
        // Waiting is async: a flood of logins queues here, not on the runtime. The check runs
        // once admitted, while the slots may still be busy; then the hash is queued for the
        // next free hashing thread.
        let admission = tracing::Instrument::instrument(
            Arc::clone(&self.admitted).acquire_owned(),
            tracing::info_span!("password.queue_wait"),
        )
        .await
        .map_err(|_| shut())?;
        let checked = precheck.await?;
        let this = Arc::clone(self);
        // The hash's span starts on the hashing thread, under the caller's.
        let caller_span = tracing::Span::current();
        let (answer, answered) = tokio::sync::oneshot::channel();
        // The admission travels with the work: a cancelled call is not replaced by the next
        // until its hash really ends, so cancelled logins cannot queue more hashes either.
        let job: Job = Box::new(move |memory| {
            // A call cancelled while queued (its client gave up) is not hashed: nobody would
            // read the answer, and its caller records nothing either way.
            if answer.is_closed() {
                return;
            }
            let result = {
                let _hashing = tracing::info_span!(parent: &caller_span, "password.hash").entered();
                let _running = Running::start(&this.in_flight, &this.max_in_flight);
                work(memory)
            };
            drop(admission);
            // The caller may have gone meanwhile: nobody to answer.
            let _ = answer.send(result);
        });
        self.jobs.send(job).map_err(|_| shut())?;
        answered
            .await
            .map_err(|_| ApiError::Internal("a password hash ended without an answer".to_owned()))?
            .map(|done| (done, checked))
    }
}

/// A hash counted as running until dropped, even when its job panics.
struct Running<'a>(&'a AtomicU64);

impl<'a> Running<'a> {
    fn start(running: &'a AtomicU64, most: &AtomicU64) -> Self {
        let now = running.fetch_add(1, Ordering::SeqCst) + 1;
        most.fetch_max(now, Ordering::SeqCst);
        Self(running)
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

fn argon2(params: &Params) -> Argon2<'static> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
}

/// argon2id at some parameters, timed on every core at once: the machine's password-hashing
/// limit for this binary's code (`tollgate hash-limit`, which the load generator runs).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct HashTimes {
    /// Cores hashed on (one thread each).
    pub cores: usize,
    /// The median time of one hash, ms.
    pub hash_ms: f64,
    /// The fastest hash, ms.
    pub fastest_ms: f64,
    /// Memory, KiB.
    pub memory_kib: u32,
    /// Passes.
    pub iterations: u32,
    /// Lanes.
    pub parallelism: u32,
}

/// Times `samples` argon2id hashes at `config`'s parameters on each core at once, after two
/// untimed ones, each thread in memory it reuses as the hashing threads do (argon2 is
/// memory-bound: a hash alone on an idle machine runs faster than one beside others, and
/// fresh memory for each hash would add page faults the server does not pay).
pub fn time_hashes(config: &PasswordConfig, samples: usize) -> Result<HashTimes, String> {
    let params = Params::new(
        config.memory_kib,
        config.iterations,
        config.parallelism,
        Some(32),
    )
    .map_err(|e| format!("argon2 parameters: {e}"))?;
    let cores = crate::placement::cores();
    let threads: Vec<_> = (0..cores)
        .map(|_| {
            let argon = argon2(&params);
            let blocks = params.block_count();
            std::thread::spawn(move || {
                let mut memory = Vec::new();
                let mut out = [0u8; 32];
                let mut times = Vec::with_capacity(samples);
                for i in 0..samples.max(1) + 2 {
                    let started = std::time::Instant::now();
                    argon
                        .hash_password_into_with_memory(
                            b"correct horse battery",
                            b"sixteen byte salt",
                            &mut out,
                            blocks_of(&mut memory, blocks),
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
    let mut times = Vec::new();
    for thread in threads {
        times.extend(
            thread
                .join()
                .map_err(|_| "a hashing thread panicked".to_owned())??,
        );
    }
    times.sort_unstable();
    let ms = |t: Option<&std::time::Duration>| t.map_or(0.0, |t| t.as_secs_f64() * 1000.0);
    Ok(HashTimes {
        cores,
        hash_ms: ms(times.get(times.len() / 2)),
        fastest_ms: ms(times.first()),
        memory_kib: config.memory_kib,
        iterations: config.iterations,
        parallelism: config.parallelism,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_times_grow_with_the_cost_and_name_the_parameters() {
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
        let a = time_hashes(&light, 5).unwrap();
        let b = time_hashes(&heavy, 5).unwrap();
        assert!(a.hash_ms > 0.0 && b.hash_ms > a.hash_ms, "{a:?} {b:?}");
        assert!(0.0 < a.fastest_ms && a.fastest_ms <= a.hash_ms, "{a:?}");
        assert_eq!(a.cores, crate::placement::cores());
        assert_eq!(
            (b.memory_kib, b.iterations, b.parallelism),
            (8192, 2, heavy.parallelism)
        );
        let too_little = PasswordConfig {
            memory_kib: 1,
            ..light
        };
        assert!(time_hashes(&too_little, 1).is_err());
    }

    fn passwords(memory_kib: u32) -> Arc<Passwords> {
        Passwords::new(&PasswordConfig {
            memory_kib,
            iterations: 1,
            parallelism: 1,
            max_concurrent: 1,
            min_length: 12,
        })
        .unwrap()
    }

    /// The password the tests hash.
    const PASSWORD: &str = "correct horse battery";

    /// `password` hashed by `passwords`.
    async fn hash_of(password: &str, passwords: &Arc<Passwords>) -> String {
        passwords
            .hash(Zeroizing::new(password.to_owned()))
            .await
            .unwrap()
    }

    /// With one slot, the next call's lockout check runs while the slot hashes (no core
    /// waits for the database between two hashes), and the call after it is not admitted
    /// until a hash ends: a check is never more than about one hash ahead of its own hash.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_next_check_overlaps_the_running_hash_and_no_more() {
        let passwords = Passwords::new(&PasswordConfig {
            memory_kib: 32_768,
            iterations: 3,
            parallelism: 1,
            max_concurrent: 1,
            min_length: 12,
        })
        .unwrap();
        let hash = hash_of(PASSWORD, &passwords).await;
        let call = |precheck: std::pin::Pin<Box<dyn Future<Output = _> + Send>>| {
            let passwords = Arc::clone(&passwords);
            let hash = hash.clone();
            tokio::spawn(async move {
                passwords
                    .verify(Zeroizing::new("wrong".to_owned()), Some(hash), precheck)
                    .await
            })
        };
        let first = call(Box::pin(async { Ok(()) }));
        // Waits for the first hash to be running; under a one-call-at-a-time design this
        // check would only start after it, and would see nothing running.
        let observer = Arc::clone(&passwords);
        let overlapped = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let seen = Arc::clone(&overlapped);
        let second = call(Box::pin(async move {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while std::time::Instant::now() < deadline {
                if observer.in_flight.load(Ordering::SeqCst) == 1 {
                    seen.store(true, Ordering::SeqCst);
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            }
            Ok(())
        }));
        // The third comes while the first hash still runs (it takes tens of ms).
        while !overlapped.load(Ordering::SeqCst) && !second.is_finished() {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        let observer = Arc::clone(&passwords);
        let finished_before_third = Arc::new(AtomicU64::new(0));
        let finished = Arc::clone(&finished_before_third);
        let third = call(Box::pin(async move {
            // Running first: a hash that starts between the two reads cannot make an ended
            // one look unfinished.
            let running = observer.in_flight.load(Ordering::SeqCst);
            let started = observer.verifications.load(Ordering::SeqCst);
            finished.store(started.saturating_sub(running), Ordering::SeqCst);
            Ok(())
        }));
        for call in [first, second, third] {
            assert_eq!(call.await.unwrap().unwrap(), (false, ()));
        }
        assert!(
            overlapped.load(Ordering::SeqCst),
            "the second check ran while the first hash did"
        );
        assert!(
            finished_before_third.load(Ordering::SeqCst) >= 1,
            "the third call was admitted before any hash ended"
        );
        assert_eq!(passwords.concurrency().0, 1, "one hash at a time");
    }

    /// Hashes run on the slots' own threads, each in one buffer it keeps: after its first
    /// job, a thread's buffer is already the right size (no allocation per hash).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn hashes_run_on_the_slot_threads_in_memory_they_keep() {
        let passwords = Passwords::new(&PasswordConfig {
            memory_kib: 1_024,
            iterations: 1,
            parallelism: 1,
            max_concurrent: 2,
            min_length: 12,
        })
        .unwrap();
        let blocks = passwords.params.block_count();
        let calls: Vec<_> = (0..24)
            .map(|_| {
                let passwords = Arc::clone(&passwords);
                let params = passwords.params.clone();
                tokio::spawn(async move {
                    passwords
                        .blocking(async { Ok(()) }, move |memory| {
                            let had = memory.len();
                            let ok = argon2(&params)
                                .hash_password_into_with_memory(
                                    b"password",
                                    b"sixteen byte salt",
                                    &mut [0u8; 32],
                                    blocks_of(memory, blocks),
                                )
                                .is_ok();
                            assert!(ok, "hashed in the thread's buffer");
                            Ok((std::thread::current().name().map(str::to_owned), had))
                        })
                        .await
                })
            })
            .collect();
        let mut jobs = std::collections::HashMap::<String, (usize, usize)>::new();
        for call in calls {
            let ((thread, had), ()) = call.await.unwrap().unwrap();
            let thread = thread.expect("a named thread");
            assert!(thread.starts_with(HASH_THREAD_PREFIX), "{thread}");
            let (count, allocations) = jobs.entry(thread).or_default();
            *count += 1;
            *allocations += usize::from(had != blocks);
        }
        assert!(jobs.len() <= 2, "two slots, two threads: {jobs:?}");
        for (thread, (count, allocations)) in &jobs {
            assert!(
                *allocations <= 1,
                "{thread} allocated {allocations} times in {count} jobs"
            );
        }
        assert!(passwords.concurrency().0 <= 2);
    }

    /// A job that panics costs its caller an error, not the slot's only thread, and the
    /// hash is no longer counted as running.
    #[tokio::test]
    async fn a_panicking_job_leaves_the_thread_hashing() {
        let passwords = passwords(1_024);
        let hash = hash_of(PASSWORD, &passwords).await;
        let panicked = passwords
            .blocking(async { Ok(()) }, |_| -> Result<(), ApiError> {
                panic!("a hashing job panicked on purpose")
            })
            .await;
        assert!(
            matches!(panicked, Err(ApiError::Internal(_))),
            "{panicked:?}"
        );
        for _ in 0..2 {
            let ok = passwords
                .verify(
                    Zeroizing::new(PASSWORD.to_owned()),
                    Some(hash.clone()),
                    async { Ok(()) },
                )
                .await
                .unwrap();
            assert_eq!(ok, (true, ()), "the one thread still hashes");
        }
        assert_eq!(passwords.in_flight.load(Ordering::SeqCst), 0);
        assert_eq!(passwords.concurrency(), (1, 1), "never counted as two");
    }

    /// A call cancelled while its hash waits in the queue is not hashed; the slot goes on
    /// to the next.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_call_cancelled_while_queued_is_not_hashed() {
        let passwords = passwords(1_024);
        let hash = hash_of(PASSWORD, &passwords).await;
        // The only slot is held by a job that waits for the test.
        let (release, held) = mpsc::channel::<()>();
        let holder = {
            let passwords = Arc::clone(&passwords);
            tokio::spawn(async move {
                passwords
                    .blocking(async { Ok(()) }, move |_| {
                        held.recv().ok();
                        Ok(())
                    })
                    .await
            })
        };
        while passwords.in_flight.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        let call = |checked: Arc<std::sync::atomic::AtomicBool>| {
            let passwords = Arc::clone(&passwords);
            let hash = hash.clone();
            tokio::spawn(async move {
                passwords
                    .verify(Zeroizing::new("wrong".to_owned()), Some(hash), async move {
                        checked.store(true, Ordering::SeqCst);
                        Ok(())
                    })
                    .await
            })
        };
        // Admitted beside the held slot, checked, queued; then cancelled.
        let checked = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let queued = call(Arc::clone(&checked));
        while !checked.load(Ordering::SeqCst) {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        queued.abort();
        assert!(queued.await.unwrap_err().is_cancelled());
        let before = passwords.verifications();
        release.send(()).unwrap();
        holder.await.unwrap().unwrap();
        let next = call(Arc::new(std::sync::atomic::AtomicBool::new(false)));
        assert_eq!(next.await.unwrap().unwrap(), (false, ()));
        assert_eq!(
            passwords.verifications(),
            before + 1,
            "only the call after it was hashed, not the cancelled one"
        );
    }

    /// The in-place verification agrees with the argon2 crate's own, for the parameters in
    /// use and for hashes made with others (older settings).
    #[tokio::test]
    async fn verification_in_reused_memory_agrees_with_argon2() {
        use argon2::password_hash::PasswordVerifier as _;
        let current = passwords(1_024);
        let older = passwords(2_048);
        for hasher in [&current, &older] {
            let hash = hash_of(PASSWORD, hasher).await;
            for (password, expected) in [(PASSWORD, true), ("wrong", false)] {
                let reference = argon2(&hasher.params)
                    .verify_password(password.as_bytes(), hash.as_str())
                    .is_ok();
                assert_eq!(reference, expected);
                let ok = current
                    .verify(
                        Zeroizing::new(password.to_owned()),
                        Some(hash.clone()),
                        async { Ok(()) },
                    )
                    .await
                    .unwrap();
                assert_eq!(
                    ok,
                    (expected, ()),
                    "{password} against m={:?}",
                    hasher.params
                );
            }
        }
        // The check's answer comes back with the verdict; a refusal stops before the hash.
        let before = current.verifications();
        let hash = hash_of(PASSWORD, &current).await;
        let answer = current
            .verify(
                Zeroizing::new(PASSWORD.to_owned()),
                Some(hash.clone()),
                async { Ok(7) },
            )
            .await
            .unwrap();
        assert_eq!(answer, (true, 7));
        let refused = current
            .verify(Zeroizing::new(PASSWORD.to_owned()), Some(hash), async {
                Err::<(), _>(ApiError::NotFound("counter"))
            })
            .await;
        assert!(matches!(refused, Err(ApiError::NotFound("counter"))));
        assert_eq!(
            current.verifications(),
            before + 1,
            "no hash after a refusal"
        );
        let fresh = current
            .hash(Zeroizing::new("another password".to_owned()))
            .await
            .unwrap();
        assert!(
            fresh.starts_with("$argon2id$v=19$m=1024,t=1,p=1$"),
            "{fresh}"
        );
        let mut memory = Vec::new();
        assert!(!current.verify_in_place(b"x", "not a PHC string", &mut memory));
        assert!(!current.verify_in_place(
            b"x",
            "$argon2id$v=19$m=1024,t=1,p=1$c2FsdHNhbHQ",
            &mut memory
        ));
    }
}
