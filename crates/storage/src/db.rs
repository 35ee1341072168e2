//! Connecting to SQLite or PostgreSQL from a URL.

use std::path::Path;
use std::time::Duration;

use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend, DbErr};
use sea_orm_migration::MigratorTrait;

use crate::migration::Migrator;

/// How to reach the database. `Default` is an SQLite file `./data/tollgate.db`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DbConfig {
    /// `sqlite://PATH` (the file and its folder are created when missing) or
    /// `postgres://USER@HOST:PORT/DB`.
    pub url: String,
    /// Pool size. SQLite: concurrent readers (writes take turns). Default 8 on PostgreSQL,
    /// 4 on SQLite.
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
}

/// Opens a pool. SQLite: the file (and its folder) is created when missing, with WAL
/// journaling, foreign keys on and a busy timeout. PostgreSQL: the pool settings above.
pub async fn connect(config: &DbConfig) -> Result<DatabaseConnection, DbErr> {
    let mut options = ConnectOptions::new(config.url.clone());
    let sqlite = config.is_sqlite();
    options
        .max_connections(config.max_connections.unwrap_or(if sqlite { 4 } else { 8 }))
        .min_connections(config.min_connections)
        .connect_timeout(config.connect_timeout)
        .acquire_timeout(config.connect_timeout)
        .idle_timeout(config.idle_timeout)
        .sqlx_logging(false);
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
            opts.create_if_missing(true)
                .journal_mode(sea_orm::sqlx::sqlite::SqliteJournalMode::Wal)
                .synchronous(sea_orm::sqlx::sqlite::SqliteSynchronous::Normal)
                .foreign_keys(true)
                .busy_timeout(busy)
        });
    }
    let db = Database::connect(options).await?;
    if db.get_database_backend() == DbBackend::Postgres {
        // Fail early and clearly on a server too old for what the schema relies on.
        db.execute_unprepared("SELECT 1").await?;
    }
    Ok(db)
}

/// The file path of an `sqlite://PATH?options` URL, unless it is in memory.
fn sqlite_path(url: &str) -> Option<&Path> {
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

/// Reverts every applied migration (drops every table).
pub async fn migrate_down(db: &DatabaseConnection) -> Result<(), DbErr> {
    Migrator::down(db, None).await
}

#[cfg(test)]
mod tests {
    use super::*;

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
