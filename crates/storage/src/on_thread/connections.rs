//! The SQLite connections used on the calling thread, and which one a statement takes.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError, TryLockError};

use rusqlite::{Connection, OpenFlags};
use sea_orm::DbErr;

use super::sqlite::{NotHere, failed};

/// Prepared statements each connection keeps (a login runs about ten distinct statements).
const STATEMENT_CACHE: usize = 64;

/// SQLite connections used on the calling thread: a few that read, or the one that writes.
pub(crate) struct Connections {
    pub(super) connections: Vec<Mutex<Connection>>,
    /// Where the next statement starts looking for a free connection.
    next: AtomicUsize,
    /// Writes waiting for the first connection ([`Connections::first`]): reads leave it to
    /// them, so that a write in the turn (every other writer queued behind it) is not kept
    /// waiting by a stream of reads.
    pub(super) waiting: AtomicUsize,
}

impl std::fmt::Debug for Connections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connections")
            .field("connections", &self.connections.len())
            .finish_non_exhaustive()
    }
}

impl Connections {
    /// Opens `count` connections to the SQLite file at `path` (already created and migrated
    /// by the pool) that refuse to write (`query_only`).
    pub(crate) fn readers(path: &Path, count: usize) -> Result<Self, DbErr> {
        Self::open(path, count, |conn| {
            conn.pragma_update(None, "query_only", true)
        })
    }

    /// Opens the connection that writes to the SQLite file at `path`, set up as sqlx's
    /// writers are (`db::connect_pool`): normal sync, foreign keys, and checkpoints left to
    /// `Storage`'s checkpointer.
    pub(crate) fn writer(path: &Path) -> Result<Self, DbErr> {
        Self::open(path, 1, |conn| {
            conn.pragma_update(None, "synchronous", "NORMAL")?;
            conn.pragma_update(None, "foreign_keys", true)?;
            conn.pragma_update(None, "wal_autocheckpoint", 0)?;
            conn.pragma_update(None, "journal_size_limit", crate::db::JOURNAL_SIZE_LIMIT)
        })
    }

    /// `count` connections that never wait for a lock, each set up by `setup`.
    fn open(
        path: &Path,
        count: usize,
        setup: impl Fn(&Connection) -> rusqlite::Result<()>,
    ) -> Result<Self, DbErr> {
        let connections = (0..count.max(1))
            .map(|_| {
                let conn = Connection::open_with_flags(
                    path,
                    OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )?;
                conn.busy_timeout(std::time::Duration::ZERO)?;
                setup(&conn)?;
                conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
                Ok(Mutex::new(conn))
            })
            .collect::<rusqlite::Result<_>>()
            .map_err(|e| failed(&e))?;
        Ok(Self {
            connections,
            next: AtomicUsize::new(0),
            waiting: AtomicUsize::new(0),
        })
    }

    /// The first free connection, if any.
    fn free(&self) -> Option<MutexGuard<'_, Connection>> {
        let count = self.connections.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..count).find_map(|i| take(self.connections.get((start + i) % count)?))
    }

    /// The first connection, waited for: the writer's, which a write in the turn shares only
    /// with reads of a row or a few (microseconds each). No new read takes it meanwhile.
    fn first(&self) -> Option<MutexGuard<'_, Connection>> {
        let first = self.connections.first()?;
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let conn = first.lock().unwrap_or_else(PoisonError::into_inner);
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        Some(conn)
    }

    /// The first connection if it is free and no write waits for it.
    fn first_if_unwanted(&self) -> Option<MutexGuard<'_, Connection>> {
        if self.waiting.load(Ordering::SeqCst) > 0 {
            return None;
        }
        take(self.connections.first()?)
    }
}

/// `slot`'s connection if no statement is running on it.
fn take(slot: &Mutex<Connection>) -> Option<MutexGuard<'_, Connection>> {
    match slot.try_lock() {
        Ok(conn) => Some(conn),
        Err(TryLockError::WouldBlock) => None,
        // A statement runs whole or not at all, and a transaction run here is rolled back
        // if it panics (`OnThread::transaction_chains`): a panic left nothing half-done.
        Err(TryLockError::Poisoned(poisoned)) => Some(poisoned.into_inner()),
    }
}

/// Where a statement runs on the calling thread.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Route<'a> {
    /// A write statement, in the write turn: on the writer's connection.
    Write(&'a Connections),
    /// A read: on the writer's connection when it is free and no write waits for it, else on
    /// a reader. A connection's page cache is dropped whenever another connection has
    /// written; most writes are the writer's own (single statements in the turn), so its
    /// cache mostly stays current, where a reader's is dropped after every write and its
    /// pages read again from the file (61 page reads per login before, BENCHMARKS.md point
    /// 16). Transactions, which run on the pool, and other processes still clear it. Only a
    /// `SELECT` (or `WITH`) that SQLite says does not write runs there.
    Read {
        /// The connection that writes.
        writer: &'a Connections,
        /// The connections that refuse to write.
        readers: &'a Connections,
    },
}

/// What a statement may do on the connection it was given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Access {
    /// Anything (a write in the turn, or on a reader, which refuses writes itself).
    Any,
    /// Only read: a read on the writer's connection.
    ReadOnly,
}

impl Route<'_> {
    /// Runs `f` on this route's connection; [`NotHere::Pool`] when none is free.
    pub(super) fn run<T>(
        self,
        f: impl FnOnce(&Connection, Access) -> Result<T, NotHere>,
    ) -> Result<T, NotHere> {
        let (conn, access) = match self {
            Self::Write(writer) => (writer.first(), Access::Any),
            Self::Read { writer, readers } => match writer.first_if_unwanted() {
                Some(conn) => (Some(conn), Access::ReadOnly),
                None => (readers.free(), Access::Any),
            },
        };
        match conn {
            Some(conn) => f(&conn, access),
            None => {
                tracing::debug!("every connection in use: SQLite statement goes to the pool");
                Err(NotHere::Pool)
            }
        }
    }
}
