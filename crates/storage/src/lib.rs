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

pub mod crypto;
mod db;
pub mod entity;
mod error;
mod migration;
pub mod repo;
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
    /// SQLite file: a pool of one connection that only writes, so a writer in its turn never
    /// waits for a connection behind the readers (SQLite has one writer at a time anyway).
    /// None on PostgreSQL and for an in-memory database: writes use `db`.
    writer: Option<DatabaseConnection>,
    /// Audit events waiting to be written together (see [`repo::Audit::append`]).
    audit_queue: Arc<repo::AuditQueue>,
}

/// A write's turn on SQLite (nothing on PostgreSQL): derefs to the pool; writing ends when
/// it is dropped.
#[derive(Debug)]
pub(crate) struct Writing<'a> {
    db: &'a DatabaseConnection,
    _turn: Option<tokio::sync::MutexGuard<'a, ()>>,
}

impl std::ops::Deref for Writing<'_> {
    type Target = DatabaseConnection;

    fn deref(&self) -> &DatabaseConnection {
        self.db
    }
}

impl Storage {
    /// Connects (see [`connect`]) and applies pending migrations.
    /// On an SQLite file it also opens the connection that writes.
    pub async fn open(config: &DbConfig, keyring: KeyRing, hasher: SecretHasher) -> Result<Self> {
        let db = connect(config).await?;
        migrate_up(&db).await?;
        let mut storage = Self::new(db, keyring, hasher);
        if config.is_sqlite_file() {
            let writer = DbConfig {
                max_connections: Some(1),
                min_connections: 1,
                ..config.clone()
            };
            storage.writer = Some(connect(&writer).await?);
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
        }
    }

    /// The pool, for one write statement: waits for the SQLite write turn first.
    pub(crate) async fn write(&self) -> Writing<'_> {
        let turn = match &self.write_turn {
            Some(turn) => Some(turn.lock().await),
            None => None,
        };
        Writing {
            db: self.writer.as_ref().unwrap_or(&self.db),
            _turn: turn,
        }
    }

    /// A transaction that writes, begun in the SQLite write turn (held until the returned
    /// turn is dropped: keep it bound for the transaction's whole life).
    pub(crate) async fn begin_write(&self) -> Result<(Writing<'_>, sea_orm::DatabaseTransaction)> {
        use sea_orm::TransactionTrait as _;
        let turn = self.write().await;
        let txn = turn.begin().await?;
        Ok((turn, txn))
    }

    /// The connection pool (on an SQLite file, the readers': writes go through the
    /// repositories, which use the connection that writes).
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

    /// Organizations and their 2FA policy.
    pub fn organizations(&self) -> repo::Organizations<'_> {
        repo::Organizations::new(self)
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

    /// The audit log.
    pub fn audit(&self) -> repo::Audit<'_> {
        repo::Audit::new(self)
    }

    /// Failure counters and lockouts.
    pub fn attempts(&self) -> repo::Attempts<'_> {
        repo::Attempts::new(self)
    }

    /// The connection pool's size and idle connections, for metrics.
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
                Some((pool.size(), pool.num_idle()))
            }
            _ => None,
        }
    }

    /// Windowed SMS sending limits.
    pub fn sms_limits(&self) -> repo::SmsLimits<'_> {
        repo::SmsLimits::new(self)
    }
}
