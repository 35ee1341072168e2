//! SQLite statements on the calling thread.
//!
//! sqlx runs every SQLite statement on its connection's own thread: the statement is handed
//! to that thread and its rows handed back, and the pool pings the connection (one more
//! round trip) each time it is handed back. During logins those hand-offs woke threads onto
//! the CPUs that were hashing passwords, and took more of the machine than the statements
//! themselves (BENCHMARKS.md, points 10 to 14). An SQLite statement takes microseconds, so
//! on an SQLite file [`OnThread`] runs it on the task's own thread instead, on a connection
//! of its own ([`Connections`]): single write statements, in the write turn, on the one that
//! writes; reads on that one too when it is free (its page cache mostly current), else on one
//! of a few that refuse to write ([`Route`]). It falls back to sqlx's pool whenever
//! running here would wait (every connection busy, or the database busy: another process
//! writing; a write waits here only for a read on the writer's connection, microseconds)
//! and when SQLite refuses a constraint, so that the pool reports it as sea-orm
//! expects. Transactions stay on sqlx, in the write turn, as does everything on PostgreSQL.
//!
//! Only short statements run here, on a key: reads and writes that may touch many rows
//! (lists, clean-ups, key rotation, a policy's revocations) go to the pool, whose thread
//! may take its time (`Storage::db`, `Storage::write_on_pool`).
//!
//! The statements are the ones sea-orm builds for SQLite. The rows go back to sea-orm as
//! rows of values, each typed as its entity's field (found by the table and column the
//! result column comes from; SQLite declares `integer` for both 32- and 64-bit integers), so
//! every entity reads as it does from sqlx. sea-orm builds a [`QueryResult`] and an
//! [`ExecResult`] only in its drivers; of the two that take results from outside, its proxy
//! does not build beside sqlx-sqlite in sea-orm 2.0.4 (a type error in its SQLite row
//! conversion), so the results pass through its mock database's, the other
//! ([`into_results`], [`into_exec_result`]). Two limits of those rows: their columns are
//! kept by name, so a column read by its position would be the wrong one (this crate reads
//! by name); and sea-orm reads a value of the wrong type in an `Option` field as None, so a
//! test compares every entity and projection read both ways.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError, TryLockError};

use rusqlite::types::{Value as Sql, ValueRef};
use rusqlite::{Connection, ErrorCode, OpenFlags};
use sea_orm::sea_query::{ColumnType, OptionEnum, Value};
use sea_orm::{
    ColumnTrait as _, ConnectionTrait, DatabaseConnection, DbBackend, DbErr, EntityTrait,
    ExecResult, IdenStatic as _, Iterable as _, MockDatabase, MockDatabaseTrait as _,
    MockExecResult, QueryResult, RuntimeErr, Statement,
};

use crate::entity;

/// Prepared statements each connection keeps (a login runs about ten distinct statements).
const STATEMENT_CACHE: usize = 64;

/// SQLite connections used on the calling thread: a few that read, or the one that writes.
pub(crate) struct Connections {
    connections: Vec<Mutex<Connection>>,
    /// Where the next statement starts looking for a free connection.
    next: AtomicUsize,
    /// Writes waiting for the first connection ([`Connections::first`]): reads leave it to
    /// them, so that a write in the turn (every other writer queued behind it) is not kept
    /// waiting by a stream of reads.
    waiting: AtomicUsize,
}

impl std::fmt::Debug for Connections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connections")
            .field("connections", &self.connections.len())
            .finish_non_exhaustive()
    }
}

/// Why a statement did not run here: the caller runs it on the pool instead.
#[derive(Debug)]
enum NotHere {
    /// Every connection is in use, SQLite answered busy (it never waits for a lock here: its
    /// busy timeout is zero, as a task's thread must not sleep on another process), or it
    /// refused a change for a constraint (sea-orm tells a
    /// unique violation only from sqlx's error, so the pool runs it again to report it).
    /// Nothing was changed: a statement that fails is undone whole (SQLite's default
    /// `ABORT`; no statement of this crate asks for `OR FAIL` or `OR REPLACE`).
    Pool,
    /// The statement failed.
    Failed(DbErr),
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
        // A statement runs whole or not at all (no transaction spans two): a panic left
        // nothing half-done.
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
enum Access {
    /// Anything (a write in the turn, or on a reader, which refuses writes itself).
    Any,
    /// Only read: a read on the writer's connection.
    ReadOnly,
}

impl Route<'_> {
    /// Runs `f` on this route's connection; [`NotHere::Pool`] when none is free.
    fn run<T>(
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

/// A busy database or a refused constraint means "run it on the pool" ([`NotHere::Pool`]),
/// any other error is the statement's.
#[allow(clippy::needless_pass_by_value, reason = "the shape `map_err` takes")]
fn not_here(e: rusqlite::Error) -> NotHere {
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
fn is_query(sql: &str) -> bool {
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
fn query(
    conn: &Connection,
    access: Access,
    stmt: &Statement,
    limit: usize,
) -> Result<Vec<QueryResult>, NotHere> {
    let (mut prepared, values) = prepare(conn, stmt, access)?;
    // A write's RETURNING columns have no table of origin: they are its target's.
    let target = target_table(&stmt.sql);
    let columns: Vec<(String, Kind)> = prepared
        .columns_with_metadata()
        .iter()
        .map(|c| {
            let kind = match (c.table_name(), c.origin_name(), target) {
                (Some(table), Some(column), _) => Kind::of(table, column),
                (_, _, Some(table)) => Kind::of(table, c.name()),
                _ => Kind::Any,
            };
            (c.name().to_owned(), kind)
        })
        .collect();
    let mut rows = prepared
        .query(rusqlite::params_from_iter(values))
        .map_err(not_here)?;
    let mut results = Vec::new();
    loop {
        let Some(row) = rows.next().map_err(not_here)? else {
            break;
        };
        if results.len() >= limit {
            // A write commits when its statement runs to the end: step a RETURNING write
            // there, so that a failed commit is an error, not a row that was never written.
            if target.is_some() {
                continue;
            }
            break;
        }
        let mut values = BTreeMap::new();
        for (i, (name, kind)) in columns.iter().enumerate() {
            let value = from_sql(row.get_ref(i).map_err(not_here)?, *kind).map_err(|reason| {
                NotHere::Failed(query_error(format!("column {name}: {reason}")))
            })?;
            // The last of two columns of one name wins, as with sqlx.
            values.insert(name.clone(), value);
        }
        results.push(values);
    }
    into_results(results).map_err(NotHere::Failed)
}

/// Runs a statement that returns no rows on `conn`.
fn execute(conn: &Connection, access: Access, stmt: &Statement) -> Result<ExecResult, NotHere> {
    let (mut prepared, values) = prepare(conn, stmt, access)?;
    let rows_affected = prepared
        .execute(rusqlite::params_from_iter(values))
        .map_err(not_here)?;
    into_exec_result(MockExecResult {
        last_insert_id: u64::try_from(conn.last_insert_rowid()).unwrap_or(0),
        rows_affected: u64::try_from(rows_affected).unwrap_or(u64::MAX),
    })
    .map_err(NotHere::Failed)
}

/// The table an `INSERT INTO`, `UPDATE` or `DELETE FROM` statement of sea-query's writes to.
fn target_table(sql: &str) -> Option<&str> {
    let rest = ["INSERT INTO \"", "UPDATE \"", "DELETE FROM \""]
        .iter()
        .find_map(|verb| sql.strip_prefix(verb))?;
    rest.split('"').next()
}

/// sea-orm's rows for these values: its mock database hands back, as query results, the rows
/// it was given.
fn into_results(rows: Vec<BTreeMap<String, Value>>) -> Result<Vec<QueryResult>, DbErr> {
    MockDatabase::new(DbBackend::Sqlite)
        .append_query_results([rows])
        .query(0, Statement::from_string(DbBackend::Sqlite, String::new()))
}

/// sea-orm's outcome of a statement, through its mock database likewise.
fn into_exec_result(result: MockExecResult) -> Result<ExecResult, DbErr> {
    MockDatabase::new(DbBackend::Sqlite)
        .append_exec_results([result])
        .execute(0, Statement::from_string(DbBackend::Sqlite, String::new()))
}

/// What sea-orm expects of a column: the type of its entity's field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Bool,
    TinyInt,
    SmallInt,
    Int,
    BigInt,
    Double,
    Text,
    Bytes,
    Uuid,
    /// An expression (no table column behind it): by what SQLite holds, a NULL as a 64-bit
    /// integer (the counts of this crate's queries).
    Any,
}

impl Kind {
    /// The kind of `table.column`, from the entities (`Any` for a table or column none has).
    fn of(table: &str, column: &str) -> Self {
        static KINDS: OnceLock<HashMap<&'static str, HashMap<&'static str, Kind>>> =
            OnceLock::new();
        KINDS
            .get_or_init(entity_kinds)
            .get(table)
            .and_then(|columns| columns.get(column))
            .copied()
            .unwrap_or(Self::Any)
    }

    fn of_type(column_type: &ColumnType) -> Self {
        match column_type {
            ColumnType::Boolean => Self::Bool,
            ColumnType::TinyInteger => Self::TinyInt,
            ColumnType::SmallInteger => Self::SmallInt,
            ColumnType::Integer => Self::Int,
            ColumnType::BigInteger => Self::BigInt,
            ColumnType::Float | ColumnType::Double => Self::Double,
            ColumnType::Char(_)
            | ColumnType::String(_)
            | ColumnType::Text
            | ColumnType::Enum { .. } => Self::Text,
            ColumnType::Binary(_) | ColumnType::VarBinary(_) | ColumnType::Blob => Self::Bytes,
            ColumnType::Uuid => Self::Uuid,
            _ => Self::Any,
        }
    }

    /// NULL of this kind (sea-orm tells an `Option`'s None by its type).
    fn null(self) -> Value {
        match self {
            Self::Bool => Value::Bool(None),
            Self::TinyInt => Value::TinyInt(None),
            Self::SmallInt => Value::SmallInt(None),
            Self::Int => Value::Int(None),
            Self::BigInt | Self::Any => Value::BigInt(None),
            Self::Double => Value::Double(None),
            Self::Text => Value::String(None),
            Self::Bytes => Value::Bytes(None),
            Self::Uuid => Value::Uuid(None),
        }
    }
}

/// Every entity's table, its columns and their kinds.
fn entity_kinds() -> HashMap<&'static str, HashMap<&'static str, Kind>> {
    fn add<E: EntityTrait>(kinds: &mut HashMap<&'static str, HashMap<&'static str, Kind>>) {
        let columns = E::Column::iter()
            .map(|c| (c.as_str(), Kind::of_type(c.def().get_column_type())))
            .collect();
        kinds.insert(E::default().table_name(), columns);
    }
    let mut kinds = HashMap::new();
    add::<entity::attempt_counter::Entity>(&mut kinds);
    add::<entity::audit_event::Entity>(&mut kinds);
    add::<entity::factor::Entity>(&mut kinds);
    add::<entity::login_challenge::Entity>(&mut kinds);
    add::<entity::membership::Entity>(&mut kinds);
    add::<entity::organization::Entity>(&mut kinds);
    add::<entity::recovery_code::Entity>(&mut kinds);
    add::<entity::session::Entity>(&mut kinds);
    add::<entity::sms_code::Entity>(&mut kinds);
    add::<entity::sms_counter::Entity>(&mut kinds);
    add::<entity::sms_send::Entity>(&mut kinds);
    add::<entity::user::Entity>(&mut kinds);
    add::<entity::webauthn_ceremony::Entity>(&mut kinds);
    kinds
}

/// A column's value as sea-orm reads it for a field of `kind`.
fn from_sql(value: ValueRef<'_>, kind: Kind) -> Result<Value, String> {
    let out_of_range = |_| "out of range".to_owned();
    Ok(match (value, kind) {
        (ValueRef::Null, kind) => kind.null(),
        (ValueRef::Integer(i), Kind::Bool) => Value::Bool(Some(i != 0)),
        (ValueRef::Integer(i), Kind::TinyInt) => {
            Value::TinyInt(Some(i8::try_from(i).map_err(out_of_range)?))
        }
        (ValueRef::Integer(i), Kind::SmallInt) => {
            Value::SmallInt(Some(i16::try_from(i).map_err(out_of_range)?))
        }
        (ValueRef::Integer(i), Kind::Int) => {
            Value::Int(Some(i32::try_from(i).map_err(out_of_range)?))
        }
        (ValueRef::Integer(i), _) => Value::BigInt(Some(i)),
        (ValueRef::Real(f), _) => Value::Double(Some(f)),
        (ValueRef::Blob(bytes), Kind::Uuid) => Value::Uuid(Some(
            uuid::Uuid::from_slice(bytes).map_err(|e| e.to_string())?,
        )),
        (ValueRef::Text(text), Kind::Uuid) => Value::Uuid(Some(
            uuid::Uuid::try_parse_ascii(text).map_err(|e| e.to_string())?,
        )),
        (ValueRef::Text(text), _) => Value::String(Some(
            String::from_utf8(text.to_vec()).map_err(|e| e.to_string())?,
        )),
        (ValueRef::Blob(bytes), _) => Value::Bytes(Some(bytes.to_vec())),
    })
}

/// A bound value as sqlx binds it on SQLite (a UUID as its 16 bytes, a bool as 0 or 1).
fn to_sql(value: &Value) -> Result<Sql, DbErr> {
    fn or_null<T>(value: Option<T>, to: impl FnOnce(T) -> Sql) -> Sql {
        value.map_or(Sql::Null, to)
    }
    Ok(match value {
        Value::Bool(v) => or_null(*v, |v| Sql::Integer(i64::from(v))),
        Value::TinyInt(v) => or_null(*v, |v| Sql::Integer(v.into())),
        Value::SmallInt(v) => or_null(*v, |v| Sql::Integer(v.into())),
        Value::Int(v) => or_null(*v, |v| Sql::Integer(v.into())),
        Value::BigInt(v) => or_null(*v, Sql::Integer),
        Value::TinyUnsigned(v) => or_null(*v, |v| Sql::Integer(v.into())),
        Value::SmallUnsigned(v) => or_null(*v, |v| Sql::Integer(v.into())),
        Value::Unsigned(v) => or_null(*v, |v| Sql::Integer(v.into())),
        Value::BigUnsigned(Some(v)) => Sql::Integer(
            i64::try_from(*v).map_err(|_| query_error("an unsigned value over i64".into()))?,
        ),
        Value::BigUnsigned(None) => Sql::Null,
        Value::Float(v) => or_null(*v, |v| Sql::Real(v.into())),
        Value::Double(v) => or_null(*v, Sql::Real),
        Value::String(v) => or_null(v.clone(), Sql::Text),
        Value::Enum(OptionEnum::Some(v)) => Sql::Text(v.value.clone().into_owned()),
        Value::Enum(OptionEnum::None(_)) => Sql::Null,
        Value::Char(v) => or_null(*v, |v| Sql::Text(v.to_string())),
        Value::Bytes(v) => or_null(v.clone(), Sql::Blob),
        Value::Uuid(v) => or_null(*v, |v| Sql::Blob(v.as_bytes().to_vec())),
        #[allow(
            unreachable_patterns,
            reason = "the variants sea-query's features add, none of which this crate binds"
        )]
        other => return Err(query_error(format!("cannot bind {other:?} on SQLite"))),
    })
}

fn query_error(message: String) -> DbErr {
    DbErr::Query(RuntimeErr::Internal(message))
}

/// A failed statement; busy, locked, I/O and disk failures are [`DbErr::Conn`], which the
/// server answers with UNAVAILABLE, as it does for sqlx's errors of the same codes.
fn failed(e: &rusqlite::Error) -> DbErr {
    let message = format!("SQLite: {e}");
    match e.sqlite_error() {
        Some(ffi) if crate::error::sqlite_unavailable(ffi.extended_code) => {
            DbErr::Conn(RuntimeErr::Internal(message))
        }
        _ => query_error(message),
    }
}

/// Where repositories run statements: the pool, or on an SQLite file the calling thread
/// first (see the module's documentation). Not `Copy`: a [`crate::Writing`]'s may not outlive
/// its write turn.
#[derive(Debug)]
pub(crate) struct OnThread<'a> {
    /// sqlx's pool: the fallback, and everything on PostgreSQL.
    pub(crate) pool: &'a DatabaseConnection,
    /// Where statements run on the calling thread, if they may.
    pub(crate) here: Option<Route<'a>>,
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
}

impl OnThread<'_> {
    /// Runs `chain` in one transaction on the writer's connection (a write in the turn:
    /// [`Route::Write`]), each statement only when the one before changed a row, and commits
    /// what ran. Returns the rows each changed, up to the first that changed none. None when
    /// it cannot run here (no such connection, the database busy, a constraint refused):
    /// nothing was written, and the caller runs it on the pool.
    pub(crate) fn transaction_chain(&self, chain: &[Statement]) -> Option<Result<Vec<u64>, DbErr>> {
        let Some(Route::Write(writer)) = self.here else {
            return None;
        };
        let first = chain.first()?;
        let _span = statement_span("sea_orm.transaction", first).entered();
        Route::Write(writer)
            .run(|conn, access| {
                let control = |sql: &str| {
                    conn.prepare_cached(sql)
                        .and_then(|mut s| s.execute([]))
                        .map(|_| ())
                };
                control("BEGIN IMMEDIATE").map_err(not_here)?;
                let ran = run_chain(conn, access, chain);
                let end = if ran.is_ok() { "COMMIT" } else { "ROLLBACK" };
                match control(end).map_err(not_here) {
                    Ok(()) => ran,
                    Err(e) => {
                        // A commit that failed leaves the transaction open: end it.
                        let _ = conn.execute_batch("ROLLBACK");
                        Err(e)
                    }
                }
            })
            .map_or_else(
                |e| match e {
                    NotHere::Pool => None,
                    NotHere::Failed(e) => Some(Err(e)),
                },
                |rows| Some(Ok(rows)),
            )
    }
}

/// [`OnThread::transaction_chain`]'s statements, in its transaction.
fn run_chain(conn: &Connection, access: Access, chain: &[Statement]) -> Result<Vec<u64>, NotHere> {
    let mut changed = Vec::with_capacity(chain.len());
    for stmt in chain {
        let (mut prepared, values) = prepare(conn, stmt, access)?;
        let rows = prepared
            .execute(rusqlite::params_from_iter(values))
            .map_err(not_here)?;
        changed.push(u64::try_from(rows).unwrap_or(u64::MAX));
        if rows == 0 {
            break;
        }
    }
    Ok(changed)
}

/// The span of a statement run on the calling thread, named and shaped as sea-orm's own
/// (`tracing-spans`) for the pool's statements: the SQL with its placeholders (never a
/// bound value). A statement that goes to the pool gets sea-orm's span instead.
fn statement_span(name: &'static str, stmt: &Statement) -> tracing::Span {
    tracing::info_span!(
        "sea_orm.statement",
        otel.name = name,
        otel.kind = "client",
        db.system = "sqlite",
        db.statement = stmt.sql.as_str(),
    )
}

#[async_trait::async_trait]
impl ConnectionTrait for OnThread<'_> {
    fn get_database_backend(&self) -> DbBackend {
        self.pool.get_database_backend()
    }

    async fn execute_raw(&self, stmt: Statement) -> Result<ExecResult, DbErr> {
        match self.here(|conn, access| {
            statement_span("sea_orm.execute", &stmt).in_scope(|| execute(conn, access, &stmt))
        }) {
            Some(result) => result,
            None => self.pool.execute_raw(stmt).await,
        }
    }

    async fn execute_unprepared(&self, sql: &str) -> Result<ExecResult, DbErr> {
        self.pool.execute_unprepared(sql).await
    }

    async fn query_one_raw(&self, stmt: Statement) -> Result<Option<QueryResult>, DbErr> {
        match self.here(|conn, access| {
            statement_span("sea_orm.query_one", &stmt).in_scope(|| query(conn, access, &stmt, 1))
        }) {
            Some(rows) => Ok(rows?.into_iter().next()),
            None => self.pool.query_one_raw(stmt).await,
        }
    }

    async fn query_all_raw(&self, stmt: Statement) -> Result<Vec<QueryResult>, DbErr> {
        match self.here(|conn, access| {
            statement_span("sea_orm.query_all", &stmt)
                .in_scope(|| query(conn, access, &stmt, usize::MAX))
        }) {
            Some(rows) => rows,
            None => self.pool.query_all_raw(stmt).await,
        }
    }

    fn support_returning(&self) -> bool {
        self.pool.support_returning()
    }
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        clippy::indexing_slicing,
        reason = "a failed unwrap is a failed test"
    )]

    use sea_orm::{EntityTrait, QueryOrder as _};

    use super::*;
    use crate::entity::enums::{ChallengePurpose, FactorKind, Role};
    use crate::repo::{NewAuditEvent, NewSession, OrganizationsToRead, OtpParams};
    use crate::testing::{Backend, NOW, TestDb};

    /// A database on an SQLite file with a row in most tables, NULLs and values alike.
    async fn populated() -> TestDb {
        let db = TestDb::new(Backend::Sqlite).await;
        let s = &db.storage;
        let alice = s
            .users()
            .create("alice@example.com", Some("hash".into()), NOW)
            .await;
        let alice = alice.unwrap().id;
        let bob = s
            .users()
            .create("bob@example.com", None, NOW)
            .await
            .unwrap()
            .id;
        let org = s
            .organizations()
            .create_with_owner(
                "Acme",
                alice,
                NOW,
                crate::repo::AuditOf::by_caller("organization.created"),
            )
            .await;
        let org = org.unwrap().id;
        s.memberships()
            .add(
                org,
                bob,
                Role::Member,
                NOW,
                crate::repo::AuditOf::by_caller("member.added"),
            )
            .await
            .unwrap();
        let totp = OtpParams {
            algorithm: "SHA1",
            digits: 6,
            period: Some(30),
        };
        let seed = b"12345678901234567890";
        let factors = s.factors();
        let app = factors
            .create_otp_pending(
                alice,
                FactorKind::Totp,
                "app",
                seed,
                totp,
                None,
                NOW,
                NOW + 60,
                &[],
            )
            .await
            .unwrap();
        factors
            .activate(app.id, alice, Some(100), None, NOW)
            .await
            .unwrap();
        let hotp = OtpParams {
            period: None,
            ..totp
        };
        factors
            .create_otp_pending(
                bob,
                FactorKind::Hotp,
                "key",
                seed,
                hotp,
                Some(7),
                NOW,
                NOW + 60,
                &[],
            )
            .await
            .unwrap();
        let phone = factors
            .create_sms_pending(bob, "phone", "+14155550100", NOW, NOW + 60, &[])
            .await
            .unwrap();
        s.sms_codes()
            .issue(phone.id, "123456", NOW, NOW + 300)
            .await
            .unwrap();
        s.sms_limits()
            .count_event("sms:org:x", 3600, NOW)
            .await
            .unwrap();
        let limit = crate::repo::Limit {
            key: "sms:user:x",
            max: 3,
            window_secs: 3600,
        };
        s.sms_limits().take(&[limit], NOW).await.unwrap().unwrap();
        s.recovery_codes()
            .replace(alice, &["aaaa-bbbb"], NOW, &[])
            .await
            .unwrap();
        s.attempts()
            .record_failure("user:x", NOW, &crate::repo::Lockouts::new(0, &[30]), None)
            .await
            .unwrap();
        let session = NewSession {
            user_id: alice,
            org_id: Some(org),
            assurance: 2,
            now: NOW,
            idle_ttl: 60,
            absolute_ttl: 600,
        };
        s.sessions().create("token-1", session).await.unwrap();
        s.challenges()
            .create(
                "challenge-1",
                bob,
                None,
                ChallengePurpose::SecondFactor,
                NOW,
                NOW + 60,
                None,
            )
            .await
            .unwrap();
        s.audit()
            .append(NewAuditEvent {
                org_id: Some(org),
                actor_id: Some(alice),
                subject_id: None,
                kind: "test.event",
                details: "{}",
                occurred_at: NOW,
            })
            .await
            .unwrap();
        db
    }

    /// Every row of `E` as the pool reads it and as the calling thread does.
    async fn both<E: EntityTrait>(storage: &crate::Storage) -> (Vec<E::Model>, Vec<E::Model>)
    where
        E::Column: sea_orm::ColumnTrait,
    {
        let order = E::Column::iter().next().unwrap();
        let pool = E::find()
            .order_by_asc(order)
            .all(storage.db())
            .await
            .unwrap();
        let here = E::find()
            .order_by_asc(order)
            .all(&storage.reads())
            .await
            .unwrap();
        (pool, here)
    }

    macro_rules! same_rows {
        ($storage:expr, $($entity:ident),+ $(,)?) => {$(
            let (pool, here) = both::<entity::$entity::Entity>($storage).await;
            assert!(!pool.is_empty(), "no {} row to compare", stringify!($entity));
            assert!(pool == here, "{} differs", stringify!($entity));
        )+};
    }

    #[tokio::test]
    async fn the_calling_thread_reads_every_entity_as_the_pool_does() {
        let db = populated().await;
        assert!(
            db.storage.reads().here.is_some(),
            "an SQLite file reads here"
        );
        same_rows!(
            &db.storage,
            user,
            organization,
            membership,
            factor,
            recovery_code,
            attempt_counter,
            session,
            login_challenge,
            audit_event,
            sms_code,
            sms_counter,
            sms_send,
        );
    }

    #[tokio::test]
    async fn the_calling_thread_reads_every_projection_as_the_pool_does() {
        let db = populated().await;
        let here = &db.storage;
        assert!(here.reads().here.is_some());
        // The same database, read through the pool only.
        let pool = crate::Storage::new(
            here.db().clone(),
            crate::testing::keyring(1, &[1]),
            crate::testing::hasher(),
        );
        assert!(pool.reads().here.is_none());
        let alice = here.users().find_by_email("alice@example.com").await;
        let alice = alice.unwrap().unwrap().id;
        for storage in [here, &pool] {
            let (factors, counter) = storage
                .factors()
                .active_with_counter(alice, "user:x")
                .await
                .unwrap();
            assert_eq!(factors.len(), 1);
            let counter = counter.expect("the counter rides on the factor row");
            assert_eq!(
                (counter.failures, counter.locked_until),
                (1, Some(NOW + 30))
            );
        }
        let both = |which: OrganizationsToRead| {
            let (here, pool) = (here.users(), pool.users());
            async move {
                let a = here.get_with_mfa(alice, which).await.unwrap().unwrap();
                let b = pool.get_with_mfa(alice, which).await.unwrap().unwrap();
                assert!(a == b, "get_with_mfa({which:?}) differs");
                a
            }
        };
        let (_, mfa, orgs) = both(OrganizationsToRead::Memberships).await;
        assert_eq!((mfa.totp, mfa.recovery_codes_left, orgs.len()), (1, 1, 1));
        let (_, _, orgs) = both(OrganizationsToRead::Only(crate::Uuid::nil())).await;
        assert!(
            orgs.is_empty(),
            "no such organization: the LEFT JOIN's NULLs"
        );
        both(OrganizationsToRead::None).await;
    }

    /// Holds every connection that reads on the calling thread (the readers and the
    /// writer's), as busy tasks would.
    fn hold_every_reader(storage: &crate::Storage) -> Vec<MutexGuard<'_, Connection>> {
        let here = storage.here.as_deref().unwrap();
        here.readers
            .connections
            .iter()
            .chain(&here.writer.connections)
            .map(|c| c.lock().unwrap())
            .collect()
    }

    /// Closes sqlx's pool of writers: only the calling thread's writer can write then.
    async fn close_the_writers_pool(storage: &crate::Storage) {
        storage
            .writer
            .as_ref()
            .unwrap()
            .close_by_ref()
            .await
            .unwrap();
    }

    /// Holds the writer's connection used on the calling thread.
    fn hold_the_writer(storage: &crate::Storage) -> MutexGuard<'_, Connection> {
        let here = storage.here.as_deref().unwrap();
        here.writer.connections[0].lock().unwrap()
    }

    /// Reads alice by her email: whether she was found, or the read's failure.
    async fn read_alice(storage: &crate::Storage) -> crate::Result<bool> {
        let found = storage.users().find_by_email("alice@example.com").await?;
        Ok(found.is_some())
    }

    /// Holds the connections that refuse to write.
    fn hold_the_readers(storage: &crate::Storage) -> Vec<MutexGuard<'_, Connection>> {
        let here = storage.here.as_deref().unwrap();
        here.readers
            .connections
            .iter()
            .map(|c| c.lock().unwrap())
            .collect()
    }

    #[tokio::test]
    #[allow(
        clippy::await_holding_lock,
        reason = "a held connection stands for another task's statement in progress"
    )]
    async fn reads_take_the_writers_connection_when_it_is_free_and_a_reader_when_not() {
        let db = populated().await;
        let storage = &db.storage;
        storage.db().close_by_ref().await.unwrap();
        // A table only the writer's connection has (TEMP tables belong to their connection):
        // reading it says which connection a read ran on.
        hold_the_writer(storage)
            .execute_batch("CREATE TEMP TABLE probe (x INTEGER); INSERT INTO probe VALUES (7)")
            .unwrap();
        let probe = || Statement::from_string(DbBackend::Sqlite, "SELECT x FROM probe");
        let reads = storage.reads();
        // Nothing held: the writer's connection answers, though every reader is free.
        let row = reads.query_one_raw(probe()).await.unwrap().unwrap();
        assert_eq!(row.try_get::<i64>("", "x").unwrap(), 7);
        // The writer's held: a reader answers (it has no such table).
        let writer = hold_the_writer(storage);
        let err = reads.query_one_raw(probe()).await.unwrap_err();
        assert!(err.to_string().contains("no such table"), "{err}");
        assert!(read_alice(storage).await.unwrap());
        // Every connection held: the pool, closed, is all that is left.
        let readers = hold_the_readers(storage);
        assert!(read_alice(storage).await.is_err());
        // Only the readers held: the writer's connection answers.
        drop(writer);
        assert!(read_alice(storage).await.unwrap());
        drop(readers);
    }

    #[tokio::test]
    async fn reads_leave_the_writers_connection_to_a_waiting_write() {
        let db = populated().await;
        let storage = &db.storage;
        storage.db().close_by_ref().await.unwrap();
        let here = storage.here.as_deref().unwrap();
        here.writer.waiting.fetch_add(1, Ordering::SeqCst);
        // A write waits: with every reader held, a read has nowhere to run but the (closed)
        // pool, though the writer's connection is free.
        let readers = hold_the_readers(storage);
        assert!(read_alice(storage).await.is_err());
        here.writer.waiting.fetch_sub(1, Ordering::SeqCst);
        assert!(read_alice(storage).await.unwrap());
        drop(readers);
    }

    #[test]
    fn only_queries_may_read_on_the_writers_connection() {
        for sql in [
            "SELECT 1",
            "  select x FROM t",
            "WITH a AS (SELECT 1) SELECT * FROM a",
        ] {
            assert!(is_query(sql), "{sql}");
        }
        for sql in [
            "BEGIN",
            "PRAGMA query_only = 1",
            "SAVEPOINT a",
            "INSERT INTO t VALUES (1)",
            "",
            "selected",
        ] {
            assert!(!is_query(sql), "{sql}");
        }
    }

    #[tokio::test]
    async fn a_write_waits_for_a_read_on_the_writers_connection() {
        let db = populated().await;
        let storage = &db.storage;
        // With the writers' pool closed, a write that did not wait would fail.
        close_the_writers_pool(storage).await;
        // A read holds the writer's connection for 100 ms.
        let here = std::sync::Arc::clone(storage.here.as_ref().unwrap());
        let held = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            let _read = here.writer.connections[0].lock().unwrap();
            held.0.send(()).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(100));
        });
        held.1.recv().unwrap();
        let created = storage.users().create("erin@example.com", None, NOW).await;
        assert_eq!(created.unwrap().email_normalized, "erin@example.com");
        reader.join().unwrap();
    }

    #[tokio::test]
    async fn reads_run_on_the_calling_thread_while_a_connection_is_free() {
        let db = populated().await;
        let storage = &db.storage;
        // With the pool closed, only the connections of the calling thread can answer.
        storage.db().close_by_ref().await.unwrap();
        let alice = storage
            .users()
            .find_by_email("alice@example.com")
            .await
            .unwrap();
        assert!(alice.is_some());
        // All of them busy: the read goes to the pool, which is closed, and fails.
        let _held = hold_every_reader(storage);
        assert!(
            storage
                .users()
                .find_by_email("alice@example.com")
                .await
                .is_err()
        );
    }

    #[tokio::test]
    async fn reads_fall_back_to_the_pool_when_every_connection_is_busy() {
        let db = populated().await;
        let storage = &db.storage;
        let _held = hold_every_reader(storage);
        let alice = storage
            .users()
            .find_by_email("alice@example.com")
            .await
            .unwrap();
        assert_eq!(alice.unwrap().email_normalized, "alice@example.com");
    }

    #[tokio::test]
    async fn writes_run_on_the_calling_thread_in_the_write_turn() {
        let db = populated().await;
        let storage = &db.storage;
        // With the writers' pool closed, only the calling thread's writer can write.
        close_the_writers_pool(storage).await;
        let carol = storage.users().create("carol@example.com", None, NOW).await;
        let carol = carol.unwrap();
        assert_eq!(carol.email_normalized, "carol@example.com");
        assert!(
            !carol.must_reenroll,
            "RETURNING rows read as the entity's types"
        );
        let challenges = storage.challenges();
        let created = challenges.create(
            "challenge-2",
            carol.id,
            None,
            ChallengePurpose::SecondFactor,
            NOW,
            NOW + 60,
            None,
        );
        let challenge = created.await.unwrap();
        assert_eq!(challenge.attempts, 0, "an i32 column of a RETURNING row");
        assert!(
            storage
                .challenges()
                .take_attempt(challenge.id, 3, NOW)
                .await
                .unwrap()
        );
        let read = storage
            .challenges()
            .find_active("challenge-2", NOW)
            .await
            .unwrap();
        assert_eq!(read.unwrap().attempts, 1);
    }

    #[tokio::test]
    async fn a_refused_write_is_reported_as_sqlx_reports_it() {
        let db = populated().await;
        let err = db
            .storage
            .users()
            .create("ALICE@example.com", None, NOW)
            .await;
        assert!(
            matches!(err, Err(crate::StorageError::Conflict("user"))),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn the_calling_thread_never_waits_for_the_write_lock() {
        let db = populated().await;
        let path = crate::db::sqlite_path(&db.config.url).unwrap().to_owned();
        // Another process holds the write lock for a moment: the write goes to the pool,
        // which waits for it on its own thread (busy timeout), and lands.
        let (locked, release) = (std::sync::mpsc::channel(), std::sync::mpsc::channel::<()>());
        let holder = std::thread::spawn(move || {
            let conn = Connection::open(path).unwrap();
            conn.execute_batch("BEGIN IMMEDIATE").unwrap();
            locked.0.send(()).unwrap();
            release.1.recv().unwrap();
            conn.execute_batch("COMMIT").unwrap();
        });
        locked.1.recv().unwrap();
        let users = db.storage.users();
        let writing = users.create("dave@example.com", None, NOW);
        let release_soon = async {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            release.0.send(()).unwrap();
        };
        let (created, ()) = tokio::join!(writing, release_soon);
        assert_eq!(created.unwrap().email_normalized, "dave@example.com");
        holder.join().unwrap();
    }

    #[tokio::test]
    #[allow(
        clippy::await_holding_lock,
        reason = "a held connection stands for another task's statement in progress"
    )]
    async fn the_readers_never_write() {
        let db = populated().await;
        let reads = db.storage.reads();
        let delete = || Statement::from_string(DbBackend::Sqlite, "DELETE FROM users RETURNING id");
        // On the writer's connection (free), refused before it runs; then on a reader (the
        // writer's held), refused by SQLite (`query_only`).
        let err = reads.query_all_raw(delete()).await.unwrap_err();
        assert!(err.to_string().contains("not a query"), "{err}");
        let writer = hold_the_writer(&db.storage);
        let err = reads.query_all_raw(delete()).await.unwrap_err();
        assert!(
            err.to_string().contains("readonly") && !err.to_string().contains("not a query"),
            "{err}"
        );
        drop(writer);
        // A query that writes (a CTE may), and statements that would change the writer's
        // connection itself: none runs there.
        for sql in [
            "WITH gone AS (SELECT 1) DELETE FROM users",
            "BEGIN",
            "PRAGMA foreign_keys = OFF",
        ] {
            let stmt = Statement::from_string(DbBackend::Sqlite, sql);
            let err = reads.query_all_raw(stmt).await.unwrap_err();
            assert!(err.to_string().contains("not a query"), "{sql}: {err}");
        }
        let writer = hold_the_writer(&db.storage);
        assert!(writer.is_autocommit(), "no transaction left open");
        let foreign_keys: bool = writer
            .query_row("PRAGMA foreign_keys", [], |row| row.get(0))
            .unwrap();
        assert!(foreign_keys, "the writer's settings are unchanged");
        drop(writer);
        let users = entity::user::Entity::find()
            .all(db.storage.db())
            .await
            .unwrap();
        assert_eq!(users.len(), 2, "nothing was deleted");
    }

    #[test]
    fn values_bind_as_sqlx_binds_them() {
        let id = uuid::Uuid::now_v7();
        assert_eq!(
            to_sql(&Value::Uuid(Some(id))).unwrap(),
            Sql::Blob(id.as_bytes().to_vec())
        );
        assert_eq!(to_sql(&Value::Bool(Some(true))).unwrap(), Sql::Integer(1));
        assert_eq!(to_sql(&Value::BigInt(None)).unwrap(), Sql::Null);
        assert_eq!(to_sql(&Value::BigUnsigned(Some(u64::MAX))).ok(), None);
    }

    #[test]
    fn columns_take_their_entity_field_type() {
        assert_eq!(Kind::of("factors", "digits"), Kind::SmallInt);
        assert_eq!(Kind::of("factors", "period"), Kind::Int);
        assert_eq!(Kind::of("factors", "last_step"), Kind::BigInt);
        assert_eq!(Kind::of("users", "id"), Kind::Uuid);
        assert_eq!(Kind::of("users", "must_reenroll"), Kind::Bool);
        assert_eq!(Kind::of("users", "nope"), Kind::Any);
        assert_eq!(
            from_sql(ValueRef::Integer(70_000), Kind::SmallInt).ok(),
            None,
            "out of range is an error, not a wrapped number"
        );
        assert_eq!(
            from_sql(ValueRef::Null, Kind::Uuid).unwrap(),
            Value::Uuid(None)
        );
    }
}
