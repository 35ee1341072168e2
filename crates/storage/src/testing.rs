//! Test support (feature `testing`): a fresh, migrated database per test, on SQLite (a file
//! in a temporary folder) or PostgreSQL (a uniquely named database on the server at
//! `TEST_DATABASE_URL`, dropped afterwards even when the test fails). Used by this crate's
//! tests and by the end-to-end tests of the server.

#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stderr,
    clippy::indexing_slicing,
    reason = "test support: a panic is a failed test"
)]

use std::sync::atomic::{AtomicU64, Ordering};

use crate::crypto::{KeyRing, SecretHasher};
use crate::{DbConfig, Storage};
use sea_orm::{ConnectionTrait, Database};
use zeroize::Zeroizing;

/// Which engine a test runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A migrated database, removed when dropped.
#[derive(Debug)]
pub struct TestDb {
    pub storage: Storage,
    pub config: DbConfig,
    pub backend: Backend,
    _cleanup: Cleanup,
}

/// Held only to be dropped: removes the folder or the database.
#[allow(dead_code)]
#[derive(Debug)]
enum Cleanup {
    Nothing,
    Sqlite(tempfile::TempDir),
    Postgres(PgGuard),
}

/// Drops a PostgreSQL test database, also when the test (or its set-up) panics.
#[derive(Debug)]
struct PgGuard {
    admin_url: String,
    name: String,
}

impl Drop for PgGuard {
    fn drop(&mut self) {
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        // Drop may run inside the test's runtime, so the clean-up gets a runtime of its own.
        let done = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let admin = Database::connect(&admin_url).await?;
                admin
                    .execute_unprepared(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                    .await?;
                admin.close().await
            })
        });
        match done.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("could not drop test database {}: {e}", self.name),
            Err(_) => eprintln!(
                "could not drop test database {}: the clean-up panicked",
                self.name
            ),
        }
    }
}

pub const HOW_TO_START_POSTGRES: &str = "PostgreSQL tests need a server: set TEST_DATABASE_URL \
(the README test command uses postgres://postgres@127.0.0.1:5432/postgres) and start it, e.g. \
`pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`";

pub fn keyring(primary: u32, ids: &[u32]) -> KeyRing {
    KeyRing::new(
        primary,
        ids.iter()
            .map(|&id| (id, Zeroizing::new([id.to_be_bytes()[3] ^ 0x5a; 32]))),
    )
    .unwrap()
}

pub fn hasher() -> SecretHasher {
    SecretHasher::new(&Zeroizing::new([7; 32]))
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

fn unique_name() -> String {
    format!(
        "tollgate_test_{}_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        uuid::Uuid::new_v4().simple()
    )
}

/// Replaces the database name (the path) of a PostgreSQL URL.
pub fn with_database(url: &str, name: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let path_start = base[scheme_end..]
        .find('/')
        .map_or(base.len(), |i| scheme_end + i);
    let mut out = format!("{}/{}", &base[..path_start], name);
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    out
}

impl TestDb {
    pub async fn new(backend: Backend) -> Self {
        Self::with_keyring(backend, keyring(1, &[1])).await
    }

    pub async fn with_keyring(backend: Backend, ring: KeyRing) -> Self {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().unwrap();
                let url = format!("sqlite://{}/nested/tollgate.db", dir.path().display());
                let config = DbConfig::from_url(url);
                let storage = Storage::open(&config, ring, hasher()).await.unwrap();
                Self {
                    storage,
                    config,
                    backend,
                    _cleanup: Cleanup::Sqlite(dir),
                }
            }
            Backend::Postgres => {
                let admin_url = std::env::var("TEST_DATABASE_URL").unwrap_or_else(|_| {
                    panic!("TEST_DATABASE_URL is not set. {HOW_TO_START_POSTGRES}")
                });
                Self::postgres_at(&admin_url, ring).await
            }
        }
    }

    /// An SQLite database in memory, on one connection: every write runs on sqlx's pool, the
    /// way a file's does when it cannot run on the calling thread (the database busy).
    pub async fn sqlite_in_memory() -> Self {
        let config = DbConfig {
            max_connections: Some(1),
            ..DbConfig::from_url("sqlite::memory:".to_owned())
        };
        let storage = Storage::open(&config, keyring(1, &[1]), hasher())
            .await
            .unwrap();
        Self {
            storage,
            config,
            backend: Backend::Sqlite,
            _cleanup: Cleanup::Nothing,
        }
    }

    /// A fresh database on the PostgreSQL server of `admin_url` (a server the test started
    /// itself, say), dropped afterwards.
    pub async fn postgres_at(admin_url: &str, ring: KeyRing) -> Self {
        let admin = Database::connect(admin_url).await.unwrap_or_else(|e| {
            panic!("cannot reach PostgreSQL at {admin_url}: {e}. {HOW_TO_START_POSTGRES}")
        });
        let name = unique_name();
        admin
            .execute_unprepared(&format!("CREATE DATABASE \"{name}\""))
            .await
            .unwrap();
        admin.close().await.unwrap();
        // From here on the database is dropped whatever happens.
        let guard = PgGuard {
            admin_url: admin_url.to_owned(),
            name: name.clone(),
        };
        let config = DbConfig::from_url(with_database(admin_url, &name));
        let storage = Storage::open(&config, ring, hasher()).await.unwrap();
        Self {
            storage,
            config,
            backend: Backend::Postgres,
            _cleanup: Cleanup::Postgres(guard),
        }
    }

    /// Another `Storage` on the same database (a second replica, or the same one restarted
    /// with another key ring).
    pub async fn reopen(&self, ring: KeyRing) -> Storage {
        Storage::open(&self.config, ring, hasher()).await.unwrap()
    }
}

/// Runs `f` in `n` tasks released at the same moment, and returns their results.
pub async fn race<T, F, Fut>(storage: &Storage, n: usize, f: F) -> Vec<T>
where
    T: Send + 'static,
    F: Fn(Storage, usize) -> Fut,
    Fut: Future<Output = T> + Send + 'static,
{
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(n));
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let barrier = std::sync::Arc::clone(&barrier);
            let fut = f(storage.clone(), i);
            tokio::spawn(async move {
                barrier.wait().await;
                fut.await
            })
        })
        .collect();
    let mut out = Vec::with_capacity(n);
    for task in tasks {
        out.push(task.await.unwrap());
    }
    out
}

pub const NOW: i64 = 1_700_000_000;

/// A TOTP factor of `user` (RFC 6238's SHA-1 seed), activated at [`NOW`] when `active`;
/// its id.
pub async fn totp_factor(storage: &Storage, user: crate::Uuid, active: bool) -> crate::Uuid {
    let params = crate::repo::OtpParams {
        algorithm: "SHA1",
        digits: 6,
        period: Some(30),
    };
    let factors = storage.factors();
    let pending = factors
        .create_otp_pending(
            user,
            crate::entity::enums::FactorKind::Totp,
            "app",
            b"12345678901234567890",
            params,
            None,
            NOW,
            NOW + 600,
            &[],
        )
        .await
        .unwrap();
    if active {
        factors
            .activate(pending.id, user, None, None, NOW)
            .await
            .unwrap();
    }
    pending.id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_urls_are_rewritten() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/postgres", "t1"),
            "postgres://postgres@127.0.0.1:5432/t1"
        );
        assert_eq!(
            with_database("postgres://h:1?sslmode=disable", "t"),
            "postgres://h:1/t?sslmode=disable"
        );
    }
}
