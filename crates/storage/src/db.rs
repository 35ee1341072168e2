//! Connecting to SQLite or PostgreSQL from a URL.

use std::path::Path;
use std::time::Duration;

use sea_orm::{ConnectOptions, Database, DatabaseConnection, DbErr};
use sea_orm_migration::MigratorTrait;

use crate::migration::Migrator;

/// How to reach the database. `Default` is an SQLite file `./data/tollgate.db`. `Debug`
/// hides the password in the URL.
#[derive(Clone, PartialEq, Eq)]
pub struct DbConfig {
    /// `sqlite://PATH` (the file and its folder are created when missing) or
    /// `postgres://USER@HOST:PORT/DB`.
    pub url: String,
    /// Pool size. SQLite: concurrent readers; `Storage::open` adds a pool of 2 for writes,
    /// which take turns, and as many readers again plus one writer used on the calling
    /// thread. PostgreSQL: `Storage::open` holds as many again for single statements
    /// (`crate::held`). Default 8 on PostgreSQL, 4 on SQLite.
    pub max_connections: Option<u32>,
    /// Connections kept open when idle. Default 1.
    pub min_connections: u32,
    /// How long to wait to connect or for a pooled connection. Default 5 s.
    pub connect_timeout: Duration,
    /// How long an idle connection is kept. Default 10 min.
    pub idle_timeout: Duration,
    /// SQLite: how long a writer waits for the write lock. Default 5 s.
    pub sqlite_busy_timeout: Duration,
}

impl Default for DbConfig {
    fn default() -> Self {
        Self {
            url: "sqlite://data/tollgate.db".to_owned(),
            max_connections: None,
            min_connections: 1,
            connect_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(600),
            sqlite_busy_timeout: Duration::from_secs(5),
        }
    }
}

impl std::fmt::Debug for DbConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DbConfig")
            .field("url", &redact_url(&self.url))
            .field("max_connections", &self.max_connections)
            .field("min_connections", &self.min_connections)
            .field("connect_timeout", &self.connect_timeout)
            .field("idle_timeout", &self.idle_timeout)
            .field("sqlite_busy_timeout", &self.sqlite_busy_timeout)
            .finish()
    }
}

/// The URL with any password replaced by `***` (`postgres://user:***@host/db`).
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let masked = match userinfo.split_once(':') {
                Some((user, _)) => format!("{user}:***"),
                None => userinfo.to_owned(),
            };
            format!("{scheme}://{masked}@{host}{tail}")
        }
        None => url.to_owned(),
    }
}

impl DbConfig {
    /// The configuration for `url` with every other setting at its default.
    pub fn from_url(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            ..Self::default()
        }
    }

    fn is_sqlite(&self) -> bool {
        self.url.starts_with("sqlite:")
    }

    /// An SQLite database in a file (not in memory), which several pools can share.
    pub(crate) fn is_sqlite_file(&self) -> bool {
        self.is_sqlite() && sqlite_path(&self.url).is_some() && !self.url.contains("mode=memory")
    }
}

/// SQLite: a write-ahead log that starts over is cut back to this size (64 MiB) when
/// `Storage`'s checkpointer checkpoints it.
pub(crate) const JOURNAL_SIZE_LIMIT: i64 = 64 * 1024 * 1024;

/// PostgreSQL's pool size when `max_connections` is not set (sqlx's pool, and as many again
/// held for single statements, `crate::held`).
pub(crate) const POSTGRES_POOL: u32 = 8;

/// SQLite's readers when `max_connections` is not set.
pub(crate) const SQLITE_READERS: u32 = 4;

/// A pooled PostgreSQL connection idle for this long is pinged before it is handed out: a
/// connection that sat idle through a server restart (which takes longer than this) is found
/// broken and replaced before a statement fails on it. Under load connections are reused
/// sooner and go unpinged; a connection that fails in use is closed when it is returned.
pub(crate) const PING_IDLE_AFTER: Duration = Duration::from_millis(100);

/// Opens a pool. SQLite: the file (and its folder) is created when missing, with WAL
/// journaling, foreign keys on and a busy timeout. PostgreSQL: the pool settings above.
pub async fn connect(config: &DbConfig) -> Result<DatabaseConnection, DbErr> {
    connect_pool(config, Checkpoints::InCommit).await
}

/// Who checkpoints an SQLite write-ahead log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Checkpoints {
    /// SQLite itself, in the commit that fills the log (its default).
    InCommit,
    /// A task of the caller's (`Storage`'s checkpointer): `wal_autocheckpoint = 0`.
    InBackground,
}

/// [`connect`], saying who checkpoints.
pub(crate) async fn connect_pool(
    config: &DbConfig,
    checkpoints: Checkpoints,
) -> Result<DatabaseConnection, DbErr> {
    let mut options = ConnectOptions::new(config.url.clone());
    let sqlite = config.is_sqlite();
    options
        .max_connections(config.max_connections.unwrap_or(if sqlite {
            SQLITE_READERS
        } else {
            POSTGRES_POOL
        }))
        .min_connections(config.min_connections)
        .connect_timeout(config.connect_timeout)
        .acquire_timeout(config.connect_timeout)
        .idle_timeout(config.idle_timeout)
        .sqlx_logging(false);
    // sqlx pings a pooled connection on every acquire by default: one more round trip (or, on
    // SQLite, one more hand-off to the connection's thread) per statement. An SQLite
    // connection lives in this process and cannot drop; a PostgreSQL one is pinged only once
    // it has been idle long enough for a restart, a proxy or a firewall to have cut it.
    if sqlite {
        options.test_before_acquire(false);
    } else {
        options.test_before_acquire_if_idle_for(PING_IDLE_AFTER);
    }
    if sqlite {
        if let Some(parent) = sqlite_path(&config.url)
            .and_then(Path::parent)
            .filter(|p| !p.as_os_str().is_empty())
        {
            std::fs::create_dir_all(parent)
                .map_err(|e| DbErr::Custom(format!("creating {}: {e}", parent.display())))?;
        }
        let busy = config.sqlite_busy_timeout;
        options.map_sqlx_sqlite_opts(move |opts| {
            let opts = opts
                .create_if_missing(true)
                .journal_mode(sea_orm::sqlx::sqlite::SqliteJournalMode::Wal)
                .synchronous(sea_orm::sqlx::sqlite::SqliteSynchronous::Normal)
                .foreign_keys(true)
                .busy_timeout(busy);
            match checkpoints {
                Checkpoints::InCommit => opts,
                // No checkpoint inside a commit; a log that starts over is cut back to
                // 64 MiB.
                Checkpoints::InBackground => opts
                    .pragma("wal_autocheckpoint", "0")
                    .pragma("journal_size_limit", JOURNAL_SIZE_LIMIT.to_string()),
            }
        });
    }
    Database::connect(options).await
}

/// The file path of an `sqlite://PATH?options` URL, unless it is in memory.
pub(crate) fn sqlite_path(url: &str) -> Option<&Path> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next()?;
    (!path.is_empty() && path != ":memory:").then(|| Path::new(path))
}

/// Applies every pending migration.
pub async fn migrate_up(db: &DatabaseConnection) -> Result<(), DbErr> {
    Migrator::up(db, None).await
}

/// Reverts every applied migration (drops every table). On SQLite, on one connection in one
/// transaction: a pooled connection that read the schema before a column was added still
/// knows the old one, and SQLite checks `DROP COLUMN` against the schema a connection knows
/// without reloading it first; the migrator's own first read on the same connection does.
pub async fn migrate_down(db: &DatabaseConnection) -> Result<(), DbErr> {
    use sea_orm::TransactionTrait as _;
    if db.get_database_backend() != sea_orm::DbBackend::Sqlite {
        return Migrator::down(db, None).await;
    }
    let txn = db.begin().await?;
    Migrator::down(&txn, None).await?;
    txn.commit().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_show_in_debug() {
        let config = DbConfig::from_url("postgres://app:s3cret@db.internal:5432/tollgate?x=1");
        let shown = format!("{config:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(
            shown.contains("postgres://app:***@db.internal:5432/tollgate?x=1"),
            "{shown}"
        );
        assert_eq!(redact_url("postgres://app@h/db"), "postgres://app@h/db");
        assert_eq!(redact_url("sqlite://data/t.db"), "sqlite://data/t.db");
    }

    #[test]
    fn sqlite_paths() {
        assert_eq!(
            sqlite_path("sqlite://data/t.db"),
            Some(Path::new("data/t.db"))
        );
        assert_eq!(
            sqlite_path("sqlite:///abs/t.db?mode=rwc"),
            Some(Path::new("/abs/t.db"))
        );
        assert_eq!(sqlite_path("sqlite::memory:"), None);
        assert_eq!(sqlite_path("postgres://x"), None);
    }
}
