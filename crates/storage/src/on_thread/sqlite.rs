//! One statement on a rusqlite connection: prepared from the connection's cache, its values
//! bound, its rows read, its failure told apart from "run it on the pool instead".

use std::sync::Arc;

use rusqlite::types::Value as Sql;
use rusqlite::{Connection, ErrorCode};
use sea_orm::{DbErr, RuntimeErr, Statement};

use super::ChainRan;
use super::connections::Access;
use super::values::{SqliteRow, to_sql};

/// Why a statement did not run here.
#[derive(Debug)]
pub(super) enum NotHere {
    /// Run it on the pool instead: every connection is in use, SQLite answered busy (it never
    /// waits for a lock here: its busy timeout is zero, as a task's thread must not sleep on
    /// another process), or it refused a change for a constraint (sea-orm tells a unique
    /// violation only from sqlx's error, so the pool runs it again to report it). Nothing was
    /// changed: a statement that fails is undone whole (SQLite's default `ABORT`; no
    /// statement of this crate asks for `OR FAIL` or `OR REPLACE`).
    Pool,
    /// The statement failed.
    Failed(DbErr),
}

/// A busy database or a refused constraint means "run it on the pool" ([`NotHere::Pool`]),
/// any other error is the statement's.
#[allow(clippy::needless_pass_by_value, reason = "the shape `map_err` takes")]
pub(super) fn not_here(e: rusqlite::Error) -> NotHere {
    match e.sqlite_error_code() {
        Some(
            ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked | ErrorCode::ConstraintViolation,
        ) => {
            tracing::debug!(error = %e, "SQLite statement goes to the pool");
            NotHere::Pool
        }
        _ => NotHere::Failed(failed(&e)),
    }
}

pub(super) fn query_error(message: String) -> DbErr {
    DbErr::Query(RuntimeErr::Internal(message))
}

/// A failed statement; busy, locked, I/O and disk failures are [`DbErr::Conn`], which the
/// server answers with UNAVAILABLE, as it does for sqlx's errors of the same codes.
pub(super) fn failed(e: &rusqlite::Error) -> DbErr {
    let message = format!("SQLite: {e}");
    match e.sqlite_error() {
        Some(ffi) if crate::error::sqlite_unavailable(ffi.extended_code) => {
            DbErr::Conn(RuntimeErr::Internal(message))
        }
        _ => query_error(message),
    }
}

/// Prepares `stmt` (from the connection's cache) with its values bound.
fn prepare<'c>(
    conn: &'c Connection,
    stmt: &Statement,
    access: Access,
) -> Result<(rusqlite::CachedStatement<'c>, Vec<Sql>), NotHere> {
    if access == Access::ReadOnly && !is_query(&stmt.sql) {
        // Before preparing: a PRAGMA takes effect as it is prepared, and SQLite calls `BEGIN`
        // read-only, though it would leave a transaction open on the writer's connection.
        return Err(NotHere::Failed(not_a_read()));
    }
    let prepared = conn.prepare_cached(&stmt.sql).map_err(not_here)?;
    if access == Access::ReadOnly && !prepared.readonly() {
        return Err(NotHere::Failed(not_a_read()));
    }
    let values = match &stmt.values {
        Some(values) => values
            .0
            .iter()
            .map(to_sql)
            .collect::<Result<Vec<_>, _>>()
            .map_err(NotHere::Failed)?,
        None => Vec::new(),
    };
    Ok((prepared, values))
}

/// Whether `sql` is a query (`SELECT` or `WITH`): the only statements a read may run on the
/// writer's connection, and then only if SQLite also says they do not write.
pub(super) fn is_query(sql: &str) -> bool {
    let first_word = sql
        .trim_start()
        .split(|c: char| !c.is_ascii_alphabetic())
        .next()
        .unwrap_or_default();
    first_word.eq_ignore_ascii_case("select") || first_word.eq_ignore_ascii_case("with")
}

/// A read given a statement that is not a query: refused, as a reader (`query_only`) would.
/// A write outside the write turn is a bug of the caller's.
fn not_a_read() -> DbErr {
    query_error(
        "attempt to write a readonly database (a read was given a statement that is not a query)"
            .to_owned(),
    )
}

/// Runs a statement that returns rows (a query, or a write with `RETURNING`) on `conn`, at
/// most `limit` of them.
pub(super) fn query(
    conn: &Connection,
    access: Access,
    stmt: &Statement,
    limit: usize,
) -> Result<Vec<SqliteRow>, NotHere> {
    let (mut prepared, values) = prepare(conn, stmt, access)?;
    let columns: Arc<[String]> = prepared
        .column_names()
        .into_iter()
        .map(str::to_owned)
        .collect();
    let writes = !prepared.readonly();
    let mut rows = prepared
        .query(rusqlite::params_from_iter(values))
        .map_err(not_here)?;
    let mut results = Vec::new();
    while let Some(row) = rows.next().map_err(not_here)? {
        if results.len() >= limit {
            // A write commits when its statement runs to the end: step a RETURNING write
            // there, so that a failed commit is an error, not a row that was never written.
            if writes {
                continue;
            }
            break;
        }
        let values = (0..columns.len())
            .map(|i| row.get::<_, Sql>(i))
            .collect::<Result<_, _>>()
            .map_err(not_here)?;
        results.push(SqliteRow {
            columns: Arc::clone(&columns),
            values,
        });
    }
    Ok(results)
}

/// Runs a statement that returns no rows on `conn`: the rows it changed.
pub(super) fn execute(conn: &Connection, access: Access, stmt: &Statement) -> Result<u64, NotHere> {
    let (mut prepared, values) = prepare(conn, stmt, access)?;
    let changed = prepared
        .execute(rusqlite::params_from_iter(values))
        .map_err(not_here)?;
    Ok(u64::try_from(changed).unwrap_or(u64::MAX))
}

/// Runs `chain` on `conn` (in a transaction the caller opened), each statement only when the
/// one before changed a row: the rows each changed, up to the first that changed none.
pub(super) fn run_chain(
    conn: &Connection,
    access: Access,
    chain: &[Statement],
) -> Result<Vec<u64>, NotHere> {
    let mut changed = Vec::with_capacity(chain.len());
    for stmt in chain {
        let rows = execute(conn, access, stmt)?;
        changed.push(rows);
        if rows == 0 {
            break;
        }
    }
    Ok(changed)
}

/// `chain` ([`run_chain`]) in a savepoint, undone if it fails (what became of it). Err when
/// the transaction itself is lost (SQLite ends one on an I/O error or a full disk) or a
/// savepoint could not be made or ended: the caller ends the transaction.
pub(super) fn run_in_savepoint(
    conn: &Connection,
    access: Access,
    chain: &[Statement],
) -> Result<ChainRan, NotHere> {
    control(conn, "SAVEPOINT chain")?;
    match run_chain(conn, access, chain) {
        Ok(rows) => {
            control(conn, "RELEASE chain")?;
            Ok(ChainRan::Done(rows))
        }
        Err(failure) if conn.is_autocommit() => Err(failure),
        Err(failure) => {
            control(conn, "ROLLBACK TO chain")?;
            control(conn, "RELEASE chain")?;
            Ok(match failure {
                NotHere::Pool => ChainRan::Pool,
                NotHere::Failed(e) => ChainRan::Failed(e),
            })
        }
    }
}

/// Rolls back the transaction open on its connection, if one is, when dropped.
pub(super) struct EndsOpenTransaction<'c>(pub(super) &'c Connection);

impl Drop for EndsOpenTransaction<'_> {
    fn drop(&mut self) {
        if !self.0.is_autocommit() {
            let _ = self.0.execute_batch("ROLLBACK");
        }
    }
}

/// A statement without values or rows (`BEGIN`, `COMMIT`, a savepoint), from the cache.
pub(super) fn control(conn: &Connection, sql: &str) -> Result<(), NotHere> {
    conn.prepare_cached(sql)
        .and_then(|mut s| s.execute([]))
        .map(|_| ())
        .map_err(not_here)
}
