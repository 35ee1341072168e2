//! SQLite statements on the calling thread.
//!
//! sqlx runs every SQLite statement on its connection's own thread: the statement is handed
//! to that thread and its rows handed back, and the pool pings the connection (one more
//! round trip) each time it is handed back. During logins those hand-offs woke threads onto
//! the CPUs that were hashing passwords, and took more of the machine than the statements
//! themselves; on the hot paths they cost a third of a validation's and half of a
//! verification's rate (BENCHMARKS.md, "What made the paths fast"). An SQLite statement
//! takes microseconds, so on an SQLite file [`OnThread`] runs it on the task's own thread
//! instead, with rusqlite, on a connection of its own:
//!
//! - [`connections`]: which connection a statement takes. Single write statements, in the
//!   write turn, on the one that writes; reads on that one too when it is free (its page
//!   cache mostly current), else on one of a few that refuse to write ([`Route`]).
//! - [`sqlite`]: one statement on a connection, from its statement cache. It falls back to
//!   sqlx's pool whenever running here would wait (every connection busy, or the database
//!   busy: another process writing; a write waits here only for a read on the writer's
//!   connection, microseconds) and when SQLite refuses a constraint, so that the pool
//!   reports it as sea-orm expects.
//! - [`values`]: values bound as sqlx binds them, and rows read as sea-orm reads them: each
//!   column as the type of the field it goes to (an entity's, through its `ActiveModel`, or
//!   the variable's, [`crate::run::Row::get`]).
//!
//! Repositories do not see the difference: they run statements through [`crate::run::Run`],
//! which both sea-orm's connections and [`OnThread`] implement (on PostgreSQL, it runs them
//! on [`crate::held`]'s connections). Transactions stay on sqlx, in the write turn, but for
//! one: chains of single-row writes, each statement only if the one before took, several
//! chains committed together ([`OnThread::transaction_chains`]: codes' acceptances,
//! `crate::group_commit`). Only short statements run here, on a key: reads and writes that
//! may touch many rows (lists, clean-ups, key rotation, a policy's revocations) go to the
//! pool, whose thread may take its time (`Storage::db`, `Storage::write_on_pool`).
//!
//! The contract with sea-orm, that every entity and projection reads the same both ways and
//! that writes and their refusals are reported alike, is tested in `tests`.

mod connections;
mod sqlite;
mod values;

#[cfg(test)]
mod tests;

use rusqlite::Connection;
use sea_orm::{DatabaseConnection, DbBackend, DbErr, Statement};

pub(crate) use connections::{Connections, Route};
pub(crate) use values::SqliteRow;

use crate::held::Held;
use crate::run::{Row, Run, statement_span};
use connections::Access;
use sqlite::NotHere;

/// OpenTelemetry's `db.system` for the statements run here.
const SQLITE: &str = "sqlite";

/// Where repositories run statements: the pool, or on an SQLite file the calling thread
/// first (see the module's documentation). Not `Copy`: a [`crate::Writing`]'s may not outlive
/// its write turn.
#[derive(Debug)]
pub(crate) struct OnThread<'a> {
    /// sqlx's pool: the fallback, and everything on PostgreSQL without `held`.
    pub(crate) pool: &'a DatabaseConnection,
    /// Where statements run on the calling thread, if they may.
    pub(crate) here: Option<Route<'a>>,
    /// PostgreSQL: the connections single statements run on instead of the pool's.
    pub(crate) held: Option<&'a Held>,
}

/// What became of one chain of [`OnThread::transaction_chains`].
#[derive(Debug)]
pub(crate) enum ChainRan {
    /// Committed: the rows each statement changed, up to the first that changed none.
    Done(Vec<u64>),
    /// It failed and is undone; the chains beside it were not affected.
    Failed(DbErr),
    /// Nothing of it was written here: run it on the pool.
    Pool,
}

impl OnThread<'_> {
    /// Runs `f` here; None when it has to run on the pool.
    fn here<T>(
        &self,
        f: impl FnOnce(&Connection, Access) -> Result<T, NotHere>,
    ) -> Option<Result<T, DbErr>> {
        match self.here?.run(f) {
            Ok(out) => Some(Ok(out)),
            Err(NotHere::Failed(e)) => Some(Err(e)),
            Err(NotHere::Pool) => None,
        }
    }

    /// Runs `chains` in one transaction on the writer's connection (a write in the turn:
    /// [`Route::Write`]) and commits what ran, once for all: in each chain every statement
    /// only when the one before changed a row, each chain in a savepoint of its own, so that
    /// one that fails is undone alone. Returns what became of each, in order: every one
    /// [`ChainRan::Pool`] when the transaction could not run here or commit (no such
    /// connection, the database busy, SQLite ending the transaction; nothing was written).
    pub(crate) fn transaction_chains(&self, chains: &[&[Statement]]) -> Vec<ChainRan> {
        let to_pool = || chains.iter().map(|_| ChainRan::Pool).collect();
        let (Some(route @ Route::Write(_)), Some(first)) =
            (self.here, chains.iter().find_map(|chain| chain.first()))
        else {
            return to_pool();
        };
        // One span for the group, in the trace of the call that ran it (the other callers'
        // traces have none); its size says why it lasts longer than one acceptance.
        let span = statement_span("sea_orm.transaction", SQLITE, &first.sql);
        span.record("db.operation.batch.size", chains.len());
        let _span = span.entered();
        let ran = route.run(|conn, access| {
            sqlite::control(conn, "BEGIN IMMEDIATE")?;
            // Whatever ends this closure, a panic included, leaves no transaction open on
            // the writer's connection (the next write would run inside it, uncommitted).
            let _open = sqlite::EndsOpenTransaction(conn);
            let ran: Result<Vec<_>, _> = chains
                .iter()
                .map(|chain| sqlite::run_in_savepoint(conn, access, chain))
                .collect();
            // A transaction lost, or a commit that failed (busy), leaves it open for `_open`
            // to roll back.
            ran.and_then(|ran| sqlite::control(conn, "COMMIT").map(|()| ran))
        });
        ran.unwrap_or_else(|_| to_pool())
    }
}

impl Run for OnThread<'_> {
    fn backend(&self) -> DbBackend {
        self.pool.backend()
    }

    async fn row(&self, stmt: Statement) -> Result<Option<Row>, DbErr> {
        if let Some(held) = self.held {
            return Ok(held.row(&stmt).await?.map(|row| Row::Pool(row.into())));
        }
        let here = self.here(|conn, access| {
            statement_span("sea_orm.query_one", SQLITE, &stmt.sql)
                .in_scope(|| sqlite::query(conn, access, &stmt, 1))
        });
        match here {
            Some(rows) => Ok(rows?.into_iter().next().map(Row::Here)),
            None => self.pool.row(stmt).await,
        }
    }

    async fn rows(&self, stmt: Statement) -> Result<Vec<Row>, DbErr> {
        if let Some(held) = self.held {
            let rows = held.rows(&stmt).await?;
            return Ok(rows.into_iter().map(|row| Row::Pool(row.into())).collect());
        }
        let here = self.here(|conn, access| {
            statement_span("sea_orm.query_all", SQLITE, &stmt.sql)
                .in_scope(|| sqlite::query(conn, access, &stmt, usize::MAX))
        });
        match here {
            Some(rows) => Ok(rows?.into_iter().map(Row::Here).collect()),
            None => self.pool.rows(stmt).await,
        }
    }

    async fn change(&self, stmt: Statement) -> Result<u64, DbErr> {
        if let Some(held) = self.held {
            return held.change(&stmt).await;
        }
        let here = self.here(|conn, access| {
            statement_span("sea_orm.execute", SQLITE, &stmt.sql)
                .in_scope(|| sqlite::execute(conn, access, &stmt))
        });
        match here {
            Some(changed) => changed,
            None => self.pool.change(stmt).await,
        }
    }
}
