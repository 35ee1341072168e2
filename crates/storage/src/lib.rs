//! Tollgate's state on SQLite (the embedded default) and PostgreSQL (production, several
//! replicas): sea-orm entities and migrations, repositories of domain operations, and
//! secrets at rest.
//!
//! Every state change that must be exact across replicas (replay guard, attempt counters,
//! code and token consumption) is one conditional `UPDATE` (or an upsert) whose affected-row
//! count decides the outcome. Factor seeds are sealed with AES-256-GCM under a key ring,
//! bound to their row; tokens and codes are stored only as keyed hashes. Times are Unix
//! seconds passed in by the caller: this crate never reads the clock.

#![warn(missing_docs)]

mod batched;
pub mod crypto;
mod db;
pub mod entity;
mod error;
mod group_commit;
mod held;
mod migration;
mod on_thread;
pub mod repo;
mod run;
#[cfg(feature = "testing")]
pub mod testing;

use std::sync::Arc;

use sea_orm::DatabaseConnection;

pub use db::{DbConfig, connect, migrate_down, migrate_up, redact_url};
pub use error::{Result, StorageError};
pub use migration::Migrator;
pub use sea_orm;
pub use uuid::Uuid;

use crypto::{KeyRing, SecretHasher};

/// The database with the keys that protect what it holds. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Storage {
    db: DatabaseConnection,
    keyring: Arc<KeyRing>,
    hasher: Arc<SecretHasher>,
    /// SQLite: writers take turns here, in arrival order, instead of in SQLite's busy
    /// handler, which polls with sleeps of up to 100 ms and is not fair: under a steady write
    /// load a writer could lose the race for most of a second. None on PostgreSQL.
    write_turn: Option<Arc<tokio::sync::Mutex<()>>>,
    /// SQLite file: a pool of [`WRITE_CONNECTIONS`] that only write, so a writer in its turn
    /// never waits for a connection behind the readers (SQLite has one writer at a time).
    /// None on PostgreSQL and for an in-memory database: writes use `db`.
    writer: Option<DatabaseConnection>,
    /// Audit events waiting to be written together (see [`repo::Audit::append`]).
    audit_queue: Arc<repo::AuditQueue>,
    /// SQLite file: checkpoints the write-ahead log in the background (stops with the last
    /// clone).
    checkpointer: Option<Arc<Checkpointer>>,
    /// SQLite file: connections that read on the calling thread, and the one that writes
    /// there in the write turn and reads there when it is free (see [`on_thread`]). None on
    /// PostgreSQL and for an in-memory database.
    here: Option<Arc<Here>>,
    /// PostgreSQL: connections that single statements run on without sqlx's ping on
    /// release (see [`held`]). None on SQLite and for a pool given to [`Storage::new`].
    held: Option<Arc<held::Held>>,
    /// PostgreSQL: the reads of valid sessions, run together for the calls that make them at
    /// the same time (see [`batched`]). Where `held` is.
    session_reads: Option<Arc<repo::sessions::BatchedReads>>,
}

/// How often the SQLite write-ahead log is checkpointed.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(200);

/// Past this many frames (64 MiB of 4 KiB pages) the log is made to start over.
const WAL_RESTART_FRAMES: i64 = 16_384;

/// Checkpoints the SQLite write-ahead log in the background, every [`CHECKPOINT_EVERY`].
///
/// SQLite's own automatic checkpoint runs inside the commit that fills the log, copying
/// about a thousand pages and syncing the file while every other writer waits for its turn:
/// at 1,000 verifications/s those were the slowest 1%. Connections are opened with
/// `wal_autocheckpoint = 0` instead, and this task copies the log back on a reader
/// connection with a passive checkpoint, which takes no lock that writers wait for.
///
/// Under a steady load a passive checkpoint never catches up with the last writer, and a log
/// starts over only when a writer finds it wholly copied, so the file would grow without
/// end. Once it holds [`WAL_RESTART_FRAMES`], the task checkpoints once more in the write
/// turn, where no frame is being added (only those written since the last round are left to
/// copy), and the next write starts the log over. A reader still on an older snapshot can
/// hold that back; the next round tries again.
#[derive(Debug)]
struct Checkpointer(tokio::task::JoinHandle<()>);

impl Checkpointer {
    fn spawn(
        readers: DatabaseConnection,
        writer: DatabaseConnection,
        turn: Arc<tokio::sync::Mutex<()>>,
    ) -> Self {
        Self::spawn_with(readers, writer, turn, CHECKPOINT_EVERY, WAL_RESTART_FRAMES)
    }

    fn spawn_with(
        readers: DatabaseConnection,
        writer: DatabaseConnection,
        turn: Arc<tokio::sync::Mutex<()>>,
        period: std::time::Duration,
        restart_frames: i64,
    ) -> Self {
        Self(tokio::spawn(async move {
            let mut every = tokio::time::interval(period);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                let frames = match checkpoint(&readers).await {
                    Ok(frames) => frames,
                    Err(error) => {
                        tracing::warn!(%error, "SQLite checkpoint failed; the next one retries");
                        continue;
                    }
                };
                if frames >= restart_frames {
                    let _turn = turn.lock().await;
                    if let Err(error) = checkpoint(&writer).await {
                        tracing::warn!(%error, "SQLite checkpoint failed; the next one retries");
                    }
                }
            }
        }))
    }
}

/// A passive checkpoint; returns the frames in the log.
async fn checkpoint(db: &DatabaseConnection) -> std::result::Result<i64, sea_orm::DbErr> {
    use sea_orm::ConnectionTrait as _;
    let row = db
        .query_one_raw(sea_orm::Statement::from_string(
            db.get_database_backend(),
            "PRAGMA wal_checkpoint(PASSIVE)",
        ))
        .await?;
    Ok(match row {
        Some(row) => row.try_get_by_index::<i64>(1)?,
        None => 0,
    })
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The pool of SQLite's writes. Two, though writes take turns: sqlx pings a connection when
/// it is handed back, and the next writer need not wait for that.
const WRITE_CONNECTIONS: u32 = 2;

/// An SQLite file's connections used on the calling thread (see [`on_thread`]).
#[derive(Debug)]
struct Here {
    readers: on_thread::Connections,
    writer: on_thread::Connections,
    /// Write chains waiting for the write turn, to be committed together ([`group_commit`]).
    chains: group_commit::Queue,
}

/// The SQLite write turn while held (None on PostgreSQL).
pub(crate) type WriteTurn<'a> = Option<tokio::sync::MutexGuard<'a, ()>>;

/// A write's turn on SQLite (nothing on PostgreSQL): derefs to where a write statement runs
/// (on an SQLite file, the calling thread first); writing ends when it is dropped.
#[derive(Debug)]
pub(crate) struct Writing<'a> {
    db: on_thread::OnThread<'a>,
    _turn: WriteTurn<'a>,
}

impl Writing<'_> {
    /// Ends the write turn and lets the writer it goes to run first. That writer's task was
    /// woken on this thread, in tokio's slot for the next task to run, which other threads
    /// do not take from: it would wait, and every writer behind it, until this call had
    /// written its response. A verification's acceptance ends its turn so, which took
    /// closed-loop verifications on SQLite from 7,000 to 8,200/s (BENCHMARKS.md).
    pub(crate) async fn hand_on(self) {
        let held = self._turn.is_some();
        drop(self);
        if held {
            tokio::task::yield_now().await;
        }
    }
}

impl<'a> std::ops::Deref for Writing<'a> {
    type Target = on_thread::OnThread<'a>;

    fn deref(&self) -> &on_thread::OnThread<'a> {
        &self.db
    }
}

impl Storage {
    /// Connects (see [`connect`]) and applies pending migrations.
    /// On an SQLite file it also opens the pool that writes, the checkpointer, and the
    /// connections used on the calling thread ([`on_thread`]).
    pub async fn open(config: &DbConfig, keyring: KeyRing, hasher: SecretHasher) -> Result<Self> {
        let background = config.is_sqlite_file();
        let checkpoints = if background {
            db::Checkpoints::InBackground
        } else {
            db::Checkpoints::InCommit
        };
        let db = db::connect_pool(config, checkpoints).await?;
        migrate_up(&db).await?;
        let mut storage = Self::new(db, keyring, hasher);
        if storage.db.get_database_backend() == sea_orm::DbBackend::Postgres {
            let held = held::Held::new(config)?;
            storage.session_reads = Some(Arc::new(repo::sessions::BatchedReads::spawn(&held)));
            storage.held = Some(held);
        }
        if background {
            let writer = DbConfig {
                max_connections: Some(WRITE_CONNECTIONS),
                min_connections: WRITE_CONNECTIONS,
                ..config.clone()
            };
            let writer = db::connect_pool(&writer, checkpoints).await?;
            if let Some(turn) = &storage.write_turn {
                storage.checkpointer = Some(Arc::new(Checkpointer::spawn(
                    storage.db.clone(),
                    writer.clone(),
                    Arc::clone(turn),
                )));
            }
            storage.writer = Some(writer);
            if let Some(path) = db::sqlite_path(&config.url) {
                let count = config.max_connections.unwrap_or(db::SQLITE_READERS);
                storage.here = Some(Arc::new(Here {
                    readers: on_thread::Connections::readers(
                        path,
                        usize::try_from(count).unwrap_or(1),
                    )?,
                    writer: on_thread::Connections::writer(path)?,
                    chains: group_commit::Queue::default(),
                }));
            }
        }
        Ok(storage)
    }

    /// Wraps an open connection (migrations are the caller's business).
    pub fn new(db: DatabaseConnection, keyring: KeyRing, hasher: SecretHasher) -> Self {
        let write_turn = (db.get_database_backend() == sea_orm::DbBackend::Sqlite)
            .then(|| Arc::new(tokio::sync::Mutex::new(())));
        Self {
            db,
            keyring: Arc::new(keyring),
            hasher: Arc::new(hasher),
            write_turn,
            writer: None,
            audit_queue: Arc::default(),
            checkpointer: None,
            here: None,
            held: None,
            session_reads: None,
        }
    }

    /// For one write statement of a row or a few, or a group of short chains of them
    /// ([`group_commit`]): waits for the SQLite write turn, then writes on the calling thread
    /// (SQLite file), the held connections (PostgreSQL, [`held`]) or the pool.
    pub(crate) async fn write(&self) -> Writing<'_> {
        self.writing(
            self.here
                .as_deref()
                .map(|here| on_thread::Route::Write(&here.writer)),
            self.held.as_deref(),
        )
        .await
    }

    /// For one write statement that may touch many rows (clean-ups, a policy's revocations):
    /// waits for the SQLite write turn, then writes on the pool, whose thread may take its
    /// time, never on the calling thread (nor, on PostgreSQL, on the held connections, which
    /// serve the hot paths).
    pub(crate) async fn write_on_pool(&self) -> Writing<'_> {
        self.writing(None, None).await
    }

    /// A write in the turn, on `here` or `held` first when given, else on the pool that
    /// writes.
    async fn writing<'a>(
        &'a self,
        here: Option<on_thread::Route<'a>>,
        held: Option<&'a held::Held>,
    ) -> Writing<'a> {
        Writing {
            db: on_thread::OnThread {
                pool: self.write_pool(),
                here,
                held,
            },
            _turn: self.write_turn().await,
        }
    }

    /// The pool that writes: on an SQLite file its own, else the one pool.
    fn write_pool(&self) -> &DatabaseConnection {
        self.writer.as_ref().unwrap_or(&self.db)
    }

    /// The SQLite write turn (None on PostgreSQL).
    async fn write_turn(&self) -> WriteTurn<'_> {
        match &self.write_turn {
            Some(turn) => Some(turn.lock().await),
            None => None,
        }
    }

    /// A transaction that writes, on the pool, begun in the SQLite write turn (held until
    /// the returned turn is dropped: keep it bound for the transaction's whole life).
    pub(crate) async fn begin_write(
        &self,
    ) -> Result<(WriteTurn<'_>, sea_orm::DatabaseTransaction)> {
        use sea_orm::TransactionTrait as _;
        let turn = self.write_turn().await;
        let txn = self.write_pool().begin().await?;
        Ok((turn, txn))
    }

    /// Where repositories read a row or a few (by a key): on an SQLite file, on the calling
    /// thread when a connection of its own is free (the writer's first, [`on_thread::Route`]),
    /// else the pool; on PostgreSQL, on the held connections ([`held`]). Reads
    /// that may scan many rows (lists, rotation) use [`Storage::db`].
    pub(crate) fn reads(&self) -> on_thread::OnThread<'_> {
        on_thread::OnThread {
            pool: &self.db,
            here: self.here.as_deref().map(|here| on_thread::Route::Read {
                writer: &here.writer,
                readers: &here.readers,
            }),
            held: self.held.as_deref(),
        }
    }

    /// The connection pool (on an SQLite file, the readers': writes go through the
    /// repositories, which use the pool that writes or the calling thread's writer).
    pub fn db(&self) -> &DatabaseConnection {
        &self.db
    }

    /// The key ring that seals factor seeds.
    pub fn keyring(&self) -> &KeyRing {
        &self.keyring
    }

    /// The hasher of tokens and codes.
    pub fn hasher(&self) -> &SecretHasher {
        &self.hasher
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> Result<()> {
        Ok(self.db.ping().await?)
    }

    /// The database server's clock, in Unix seconds: one statement, which also shows that
    /// the database answers. Replicas compare their own clocks with it.
    pub async fn database_time(&self) -> Result<i64> {
        use sea_orm::ConnectionTrait as _;
        let backend = self.db.get_database_backend();
        let sql = match backend {
            sea_orm::DbBackend::Postgres => {
                "SELECT CAST(FLOOR(EXTRACT(EPOCH FROM clock_timestamp())) AS BIGINT) AS now"
            }
            _ => "SELECT CAST(strftime('%s', 'now') AS INTEGER) AS now",
        };
        let row = self
            .db
            .query_one_raw(sea_orm::Statement::from_string(backend, sql))
            .await?
            .ok_or_else(|| sea_orm::DbErr::Custom("the clock query returned no row".to_owned()))?;
        Ok(row.try_get::<i64>("", "now")?)
    }

    /// Organizations and their 2FA policy.
    pub fn organizations(&self) -> repo::Organizations<'_> {
        repo::Organizations::new(self)
    }

    /// WebAuthn ceremonies in progress.
    pub fn ceremonies(&self) -> repo::Ceremonies<'_> {
        repo::Ceremonies::new(self)
    }

    /// User accounts.
    pub fn users(&self) -> repo::Users<'_> {
        repo::Users::new(self)
    }

    /// Memberships of organizations.
    pub fn memberships(&self) -> repo::Memberships<'_> {
        repo::Memberships::new(self)
    }

    /// Second factors, their sealed seeds and the replay guard.
    pub fn factors(&self) -> repo::Factors<'_> {
        repo::Factors::new(self)
    }

    /// Recovery codes.
    pub fn recovery_codes(&self) -> repo::RecoveryCodes<'_> {
        repo::RecoveryCodes::new(self)
    }

    /// Login challenges (and enrollment tokens).
    pub fn challenges(&self) -> repo::Challenges<'_> {
        repo::Challenges::new(self)
    }

    /// SMS codes.
    pub fn sms_codes(&self) -> repo::SmsCodes<'_> {
        repo::SmsCodes::new(self)
    }

    /// Sessions.
    pub fn sessions(&self) -> repo::Sessions<'_> {
        repo::Sessions::new(self)
    }

    /// Remembered devices.
    pub fn trusted_devices(&self) -> repo::TrustedDevices<'_> {
        repo::TrustedDevices::new(self)
    }

    /// The audit log.
    pub fn audit(&self) -> repo::Audit<'_> {
        repo::Audit::new(self)
    }

    /// Failure counters and lockouts.
    pub fn attempts(&self) -> repo::Attempts<'_> {
        repo::Attempts::new(self)
    }

    /// The connections open and idle, for metrics: on an SQLite file, the pool that reads
    /// when the calling thread's connections are busy, and lists; on PostgreSQL, sqlx's pool
    /// (transactions, lists) and the connections held for single statements ([`held`])
    /// together.
    pub fn pool_state(&self) -> Option<(u32, usize)> {
        use sea_orm::DbBackend;
        let db = self.db();
        match db.get_database_backend() {
            DbBackend::Sqlite => {
                let pool = db.get_sqlite_connection_pool();
                Some((pool.size(), pool.num_idle()))
            }
            DbBackend::Postgres => {
                let pool = db.get_postgres_connection_pool();
                let (held, held_idle) = self.held.as_ref().map_or((0, 0), |held| held.state());
                Some((
                    pool.size().saturating_add(held),
                    pool.num_idle().saturating_add(held_idle),
                ))
            }
            _ => None,
        }
    }

    /// Windowed SMS sending limits.
    pub fn sms_limits(&self) -> repo::SmsLimits<'_> {
        repo::SmsLimits::new(self)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]

    use sea_orm::ConnectionTrait as _;

    use super::*;

    /// Writes `n` rows, one commit each, in the write turn as `Storage` does; returns the
    /// frames in the log afterwards.
    async fn write(
        readers: &DatabaseConnection,
        writer: &DatabaseConnection,
        turn: &tokio::sync::Mutex<()>,
        n: usize,
    ) -> i64 {
        for i in 0..n {
            {
                let _turn = turn.lock().await;
                writer
                    .execute_unprepared(&format!("INSERT INTO t (x) VALUES ({i})"))
                    .await
                    .unwrap();
            }
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
        checkpoint(readers).await.unwrap()
    }

    /// The one value `sql` answers.
    async fn scalar(db: &DatabaseConnection, sql: &str) -> i64 {
        let row = db
            .query_one_raw(sea_orm::Statement::from_string(
                sea_orm::DbBackend::Sqlite,
                sql,
            ))
            .await
            .unwrap()
            .unwrap();
        row.try_get_by_index::<i64>(0).unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_log_is_copied_back_and_starts_over_without_commits_waiting() {
        let dir = tempfile::tempdir().unwrap();
        let config = DbConfig::from_url(format!("sqlite://{}/t.db", dir.path().display()));
        let readers = db::connect_pool(&config, db::Checkpoints::InBackground)
            .await
            .unwrap();
        let writer = db::connect_pool(
            &DbConfig {
                max_connections: Some(1),
                ..config.clone()
            },
            db::Checkpoints::InBackground,
        )
        .await
        .unwrap();
        let turn = Arc::new(tokio::sync::Mutex::new(()));
        readers
            .execute_unprepared("CREATE TABLE t (x INTEGER)")
            .await
            .unwrap();
        assert_eq!(scalar(&writer, "PRAGMA wal_autocheckpoint").await, 0);
        // A pool opened by `connect` alone has no such task: SQLite checkpoints itself.
        let plain = connect(&config).await.unwrap();
        assert_eq!(scalar(&plain, "PRAGMA wal_autocheckpoint").await, 1000);

        // Without the task, commits never checkpoint: the log only grows.
        let grown = write(&readers, &writer, &turn, 100).await;
        assert!(grown >= 100, "{grown} frames");

        // With it, the log is copied back and starts over once it holds enough frames.
        let task = Checkpointer::spawn_with(
            readers.clone(),
            writer.clone(),
            Arc::clone(&turn),
            std::time::Duration::from_millis(10),
            8,
        );
        let after = write(&readers, &writer, &turn, 100).await;
        assert!(after < grown, "{after} frames, {grown} before the task");
        drop(task);
        assert_eq!(scalar(&readers, "SELECT COUNT(*) FROM t").await, 200);
    }
}
