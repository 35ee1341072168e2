//! PostgreSQL statements on connections this crate holds, beside sqlx's pool.
//!
//! sqlx's pool pings every connection handed back to it (a `Sync` and its `ReadyForQuery`,
//! not configurable in sqlx 0.9), so that a statement or transaction cut short by a
//! cancelled call is flushed before the next user. On the hot paths, one statement per call,
//! that doubled the round trips to PostgreSQL: the ping was a fifth of the server's CPU
//! during validations, and as much again of PostgreSQL's (BENCHMARKS.md).
//!
//! [`Held`] lends a connection to one statement at a time and takes it back without a ping,
//! because it takes back only a connection whose statement ran to its end: its rows read, or
//! refused by the database for the statement's own sake (data, a constraint, a conflict,
//! the SQL; [`refused_by_statement`]). Any other failure closes the connection. A statement
//! cut short (its call cancelled) leaves its connection to a task that waits for the
//! statement to end (a ping, up to the acquire timeout) and then closes it, keeping its
//! place until then, so that the connections open on PostgreSQL do not outnumber
//! `max_connections` (unless a statement cut short runs on past that timeout: PostgreSQL
//! ends it only when it next writes to the closed connection). A connection idle for longer than [`crate::db::PING_IDLE_AFTER`] is
//! pinged before it is lent, as the pool does, so that one cut by a restart is replaced
//! before a statement fails on it; one idle longer than the idle timeout, or open longer
//! than [`MAX_LIFETIME`], is closed. Transactions, lists, migrations and writes that may
//! touch many rows stay on sqlx's pool.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use sea_orm::sqlx::postgres::{PgConnectOptions, PgConnection, PgDatabaseError, PgRow, PgSeverity};
use sea_orm::sqlx::{self, ConnectOptions as _, Connection as _};
use sea_orm::{ConnAcquireErr, DbErr, RuntimeErr, Statement};
use sea_query_sqlx::SqlxValues;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::Instrument as _;

use crate::db::{DbConfig, PING_IDLE_AFTER};

/// A connection open this long is closed when it is next given back (as sqlx's pool does by
/// default): statements it prepared before a migration are prepared again on a new one.
pub(crate) const MAX_LIFETIME: Duration = Duration::from_secs(30 * 60);

/// Connections to PostgreSQL lent to one statement at a time.
pub(crate) struct Held {
    options: PgConnectOptions,
    /// Idle connections, the longest idle first.
    idle: Mutex<VecDeque<Idle>>,
    /// One per connection that may be open (`max_connections`), lent or draining.
    permits: Arc<Semaphore>,
    /// That number.
    max: usize,
    /// How long to wait for a connection (a free place, a ping, opening one), and for a
    /// statement cut short to end.
    acquire_timeout: Duration,
    /// An idle connection older than this is closed.
    idle_timeout: Duration,
    /// An idle connection older than this is pinged before it is lent.
    ping_idle_after: Duration,
    /// A connection open longer than this is closed when given back.
    max_lifetime: Duration,
}

impl std::fmt::Debug for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Held")
            .field("available", &self.permits.available_permits())
            .finish_non_exhaustive()
    }
}

/// An open connection, and since when.
struct Conn {
    conn: PgConnection,
    opened: Instant,
}

/// A connection waiting to be lent.
struct Idle {
    conn: Conn,
    since: Instant,
}

/// A connection lent to one statement. Given back when the statement ended; else, when
/// dropped (the statement cut short), left to a task that waits for it to end and closes it.
struct Lease<'a> {
    held: &'a Held,
    conn: Option<Conn>,
    permit: Option<OwnedSemaphorePermit>,
}

impl Held {
    /// Connections to the PostgreSQL database of `config` (none opened yet: the first
    /// statements open them), at most `max_connections` (default 8) at once.
    pub(crate) fn new(config: &DbConfig) -> Result<Arc<Self>, DbErr> {
        let options: PgConnectOptions = config
            .url
            .parse()
            .map_err(|e| DbErr::Conn(RuntimeErr::SqlxError(Arc::new(e))))?;
        let max = usize::try_from(config.max_connections.unwrap_or(crate::db::POSTGRES_POOL))
            .unwrap_or(1);
        Ok(Arc::new(Self {
            // As the pool's (`sqlx_logging(false)`): statements are traced, not logged.
            options: options.disable_statement_logging(),
            idle: Mutex::default(),
            permits: Arc::new(Semaphore::new(max)),
            max,
            acquire_timeout: config.connect_timeout,
            idle_timeout: config.idle_timeout,
            ping_idle_after: PING_IDLE_AFTER,
            max_lifetime: MAX_LIFETIME,
        }))
    }

    /// The first row `stmt` returns, if any.
    pub(crate) async fn row(&self, stmt: &Statement) -> Result<Option<PgRow>, DbErr> {
        let span = span("sea_orm.query_one", stmt);
        async {
            let mut lease = self.lease().await?;
            let row = query(stmt).fetch_optional(lease.conn()).await;
            lease.settle(row, DbErr::Query)
        }
        .instrument(span)
        .await
    }

    /// Every row `stmt` returns.
    pub(crate) async fn rows(&self, stmt: &Statement) -> Result<Vec<PgRow>, DbErr> {
        self.fetch_all(query(stmt), span("sea_orm.query_all", stmt))
            .await
    }

    /// Every row `query` returns, in `span`: also for a statement with values sea-query does
    /// not bind (the arrays of [`crate::batched`]).
    pub(crate) async fn fetch_all<A>(
        &self,
        query: sqlx::query::Query<'_, sqlx::Postgres, A>,
        span: tracing::Span,
    ) -> Result<Vec<PgRow>, DbErr>
    where
        A: Send + sqlx::IntoArguments<sqlx::Postgres>,
    {
        async {
            let mut lease = self.lease().await?;
            let rows = query.fetch_all(lease.conn()).await;
            lease.settle(rows, DbErr::Query)
        }
        .instrument(span)
        .await
    }

    /// Runs `stmt`, which returns no rows: the rows it changed.
    pub(crate) async fn change(&self, stmt: &Statement) -> Result<u64, DbErr> {
        let span = span("sea_orm.execute", stmt);
        async {
            let mut lease = self.lease().await?;
            let done = query(stmt).execute(lease.conn()).await;
            lease
                .settle(done, DbErr::Exec)
                .map(|done| done.rows_affected())
        }
        .instrument(span)
        .await
    }

    /// How long a statement waits for a connection.
    pub(crate) fn acquire_timeout(&self) -> Duration {
        self.acquire_timeout
    }

    /// A connection: the most recently idle one (pinged first when it has been idle a
    /// while), else a new one; the whole wait bounded by the acquire timeout.
    async fn lease(&self) -> Result<Lease<'_>, DbErr> {
        tokio::time::timeout(self.acquire_timeout, self.lease_now())
            .await
            .map_err(|_| DbErr::ConnectionAcquire(ConnAcquireErr::Timeout))?
    }

    async fn lease_now(&self) -> Result<Lease<'_>, DbErr> {
        let permit = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .map_err(|_| DbErr::ConnectionAcquire(ConnAcquireErr::ConnectionClosed))?;
        let lease = move |conn| Lease {
            held: self,
            conn: Some(conn),
            permit: Some(permit),
        };
        loop {
            let idle = {
                let mut idle = self.idle();
                while idle
                    .front()
                    .is_some_and(|oldest| oldest.since.elapsed() > self.idle_timeout)
                {
                    idle.pop_front();
                }
                idle.pop_back()
            };
            let Some(Idle { mut conn, since }) = idle else {
                break;
            };
            if since.elapsed() < self.ping_idle_after || conn.conn.ping().await.is_ok() {
                return Ok(lease(conn));
            }
        }
        let conn = PgConnection::connect_with(&self.options)
            .await
            .map_err(|e| DbErr::Conn(RuntimeErr::SqlxError(Arc::new(e))))?;
        Ok(lease(Conn {
            conn,
            opened: Instant::now(),
        }))
    }

    /// Connections open (lent, draining or idle) and idle, for metrics.
    pub(crate) fn state(&self) -> (u32, usize) {
        let idle = self.idle().len();
        let lent = self.max.saturating_sub(self.permits.available_permits());
        (u32::try_from(lent + idle).unwrap_or(u32::MAX), idle)
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, VecDeque<Idle>> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Lease<'_> {
    /// The connection lent.
    fn conn(&mut self) -> &mut PgConnection {
        match &mut self.conn {
            Some(conn) => &mut conn.conn,
            None => unreachable!("a lease holds its connection until it is settled"),
        }
    }

    /// What the statement gave; the connection given back when it ended (rows read, or
    /// [`refused_by_statement`]), else closed.
    fn settle<T>(
        mut self,
        out: Result<T, sqlx::Error>,
        err: fn(RuntimeErr) -> DbErr,
    ) -> Result<T, DbErr> {
        let ended = match &out {
            Ok(_) => true,
            Err(e) => refused_by_statement(e),
        };
        let conn = self.conn.take();
        if let Some(conn) =
            conn.filter(|conn| ended && conn.opened.elapsed() < self.held.max_lifetime)
        {
            self.held.give_back(conn);
        }
        out.map_err(|e| err(RuntimeErr::SqlxError(Arc::new(e))))
    }
}

impl Drop for Lease<'_> {
    /// A statement cut short: its connection keeps its place until the statement has ended
    /// (a ping waits for that, up to the acquire timeout), then is closed.
    fn drop(&mut self) {
        let (Some(Conn { mut conn, .. }), Some(permit)) = (self.conn.take(), self.permit.take())
        else {
            return;
        };
        let wait = self.held.acquire_timeout;
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _ended = tokio::time::timeout(wait, conn.ping()).await;
                drop(conn);
                drop(permit);
            });
        }
    }
}

impl Held {
    /// Back among the idle.
    fn give_back(&self, conn: Conn) {
        self.idle().push_back(Idle {
            conn,
            since: Instant::now(),
        });
    }
}

/// Whether the database refused the statement for its own sake, the connection fit for the
/// next: an error of severity ERROR (not FATAL: a session the server ended, a hot standby's
/// conflict with recovery among them) in SQLSTATE classes 22 (data), 23 (a constraint), 40 (a
/// serialization failure or deadlock, the statement rolled back) and 42 (the SQL or a
/// privilege). Anything else (a connection or protocol error, the server shutting down, a
/// cached plan a migration made stale) closes the connection.
fn refused_by_statement(err: &sqlx::Error) -> bool {
    let sqlx::Error::Database(db) = err else {
        return false;
    };
    let Some(pg) = db.try_downcast_ref::<PgDatabaseError>() else {
        return false;
    };
    statements_own(pg.severity(), pg.code())
}

/// Whether an error of `severity` and SQLSTATE `code` is the statement's own refusal
/// ([`refused_by_statement`]).
fn statements_own(severity: PgSeverity, code: &str) -> bool {
    severity == PgSeverity::Error
        && ["22", "23", "40", "42"]
            .iter()
            .any(|class| code.starts_with(class))
}

/// `stmt` as sqlx runs it (prepared once per connection, then from its statement cache).
fn query(stmt: &Statement) -> sqlx::query::Query<'_, sqlx::Postgres, SqlxValues> {
    let values = stmt
        .values
        .clone()
        .unwrap_or_else(|| sea_orm::sea_query::Values(Vec::new()));
    sqlx::query_with(sqlx::AssertSqlSafe(stmt.sql.as_str()), SqlxValues(values))
}

/// The span of a statement, named and shaped as sea-orm's for the pool's statements.
fn span(name: &'static str, stmt: &Statement) -> tracing::Span {
    crate::run::statement_span(name, "postgresql", &stmt.sql)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]

    use sea_orm::sqlx::Row as _;
    use sea_orm::{ConnectionTrait as _, DbBackend};

    use super::*;
    use crate::StorageError;
    use crate::run::Run as _;
    use crate::testing::{Backend, TestDb};

    fn sql(sql: &str) -> Statement {
        Statement::from_string(DbBackend::Postgres, sql)
    }

    /// The rule behind [`refused_by_statement`], for what PostgreSQL here cannot be made to
    /// send: a FATAL error in a class whose ERRORs keep the connection (a hot standby's
    /// conflict with recovery, 40001) closes it.
    #[test]
    fn only_errors_of_the_statements_own_classes_keep_a_connection() {
        for code in ["22P02", "23505", "40001", "40P01", "42601", "42501"] {
            assert!(statements_own(PgSeverity::Error, code), "{code}");
            assert!(!statements_own(PgSeverity::Fatal, code), "FATAL {code}");
            assert!(!statements_own(PgSeverity::Panic, code), "PANIC {code}");
        }
        for code in [
            "0A000", "57P01", "57014", "08006", "25P02", "53300", "XX000",
        ] {
            assert!(!statements_own(PgSeverity::Error, code), "{code}");
        }
    }

    /// The backend process of the connection a statement was lent.
    async fn pid(held: &Held) -> i32 {
        let row = held.row(&sql("SELECT pg_backend_pid()")).await.unwrap();
        row.unwrap().get(0)
    }

    /// Held connections to the test's database, `tune`d.
    fn held(db: &TestDb, tune: impl FnOnce(&mut Held)) -> Held {
        let mut held = Arc::into_inner(Held::new(&db.config).unwrap()).unwrap();
        tune(&mut held);
        held
    }

    /// At most one connection.
    fn one(held: &mut Held) {
        held.permits = Arc::new(Semaphore::new(1));
        held.max = 1;
    }

    /// Whether the backend process `pid` is still there, asked on sqlx's pool.
    async fn alive(db: &TestDb, pid: i32) -> bool {
        let query = format!("SELECT 1 AS one FROM pg_stat_activity WHERE pid = {pid}");
        let row = db.storage.db().query_one_raw(sql(&query)).await.unwrap();
        row.is_some()
    }

    /// Waits (up to 2 s) until the backend process `pid` is gone.
    async fn gone(db: &TestDb, pid: i32) {
        for _ in 0..100 {
            if !alive(db, pid).await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("backend {pid} still there");
    }

    /// Ends the backend process `pid` and waits until it is gone.
    async fn terminate(db: &TestDb, pid: i32) {
        let stop = format!("SELECT pg_terminate_backend({pid})");
        db.storage.db().execute_unprepared(&stop).await.unwrap();
        gone(db, pid).await;
    }

    #[tokio::test]
    async fn a_connection_is_lent_again_and_counted() {
        let db = TestDb::new(Backend::Postgres).await;
        let held = held(&db, |_| {});
        assert_eq!(held.state(), (0, 0));
        let first = pid(&held).await;
        assert_eq!(held.state(), (1, 1));
        assert_eq!(pid(&held).await, first);
        let changed = held
            .change(&sql("CREATE TABLE t (x INTEGER PRIMARY KEY)"))
            .await
            .unwrap();
        assert_eq!(changed, 0);
        let rows = held
            .rows(&sql("INSERT INTO t VALUES (1), (2) RETURNING x"))
            .await
            .unwrap();
        assert_eq!(rows.len(), 2);
        // One row of several read: the rest are read to the end, the connection is clean.
        let first_of_two = held.row(&sql("SELECT x FROM t ORDER BY x")).await.unwrap();
        assert_eq!(first_of_two.unwrap().get::<i32, _>(0), 1);
        assert_eq!(pid(&held).await, first);
        assert_eq!(held.state(), (1, 1));
        // And through the storage: on PostgreSQL single statements run on held connections,
        // counted with the pool's.
        let (open, idle) = db.storage.pool_state().unwrap();
        db.storage.reads().row(sql("SELECT 1")).await.unwrap();
        let storage_held = db.storage.held.as_deref().unwrap();
        assert_eq!(storage_held.state(), (1, 1));
        assert_eq!(db.storage.pool_state().unwrap(), (open + 1, idle + 1));
        // But not writes that may touch many rows: those run on sqlx's pool.
        let on_held = pid(storage_held).await;
        let row = db
            .storage
            .write_on_pool()
            .await
            .row(sql("SELECT pg_backend_pid() AS pid"))
            .await
            .unwrap();
        let on_pool: i32 = row.unwrap().get("pid").unwrap();
        assert_ne!(on_pool, on_held);
        assert_eq!(storage_held.state(), (1, 1));
    }

    #[tokio::test]
    async fn a_statement_refused_for_its_own_sake_keeps_its_connection_and_others_close_it() {
        let db = TestDb::new(Backend::Postgres).await;
        let held = held(&db, |_| {});
        let first = pid(&held).await;
        let err = held.row(&sql("SELECT 1 / 0")).await.unwrap_err();
        assert!(err.to_string().contains("division by zero"), "{err}");
        assert!(!StorageError::Db(err).is_unavailable());
        assert_eq!(pid(&held).await, first);
        // 0A000, as a statement prepared before a migration changed its result gets.
        let stale = "DO $$ BEGIN RAISE EXCEPTION 'stale' USING ERRCODE = '0A000'; END $$";
        let err = held.change(&sql(stale)).await.unwrap_err();
        assert!(err.to_string().contains("stale"), "{err}");
        assert_eq!(held.state(), (0, 0));
        assert_ne!(pid(&held).await, first);
    }

    #[tokio::test]
    async fn a_statement_cut_short_keeps_its_place_until_it_ends_then_closes_its_connection() {
        let db = TestDb::new(Backend::Postgres).await;
        let held = held(&db, one);
        let first = pid(&held).await;
        let cut = tokio::time::timeout(
            Duration::from_millis(100),
            held.row(&sql("SELECT pg_sleep(1)")),
        )
        .await;
        assert!(cut.is_err(), "the sleep was not cut short");
        // Its backend still sleeps: the one place stays taken (the task that waits for the
        // sleep has had time to start), no second connection opens.
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(held.state(), (1, 0));
        assert!(alive(&db, first).await);
        // The next statement waits for the sleep to end, on a new connection.
        assert_ne!(pid(&held).await, first);
        gone(&db, first).await;
        assert_eq!(held.state(), (1, 1));
    }

    #[tokio::test]
    async fn an_idle_connection_cut_off_is_replaced_before_a_statement_runs() {
        let db = TestDb::new(Backend::Postgres).await;
        let held = held(&db, |held| held.ping_idle_after = Duration::ZERO);
        let first = pid(&held).await;
        terminate(&db, first).await;
        // Pinged, found closed, replaced: the statement does not fail.
        let second = pid(&held).await;
        assert_ne!(second, first);
        assert_eq!(held.state(), (1, 1));
    }

    #[tokio::test]
    async fn a_connection_a_statement_finds_closed_fails_unavailable_and_is_not_lent_again() {
        let db = TestDb::new(Backend::Postgres).await;
        let held = held(&db, |held| held.ping_idle_after = Duration::from_secs(3600));
        let first = pid(&held).await;
        terminate(&db, first).await;
        // Not pinged (idle only briefly): the statement finds the connection closed.
        let err = held.row(&sql("SELECT 1")).await.unwrap_err();
        assert!(StorageError::Db(err).is_unavailable());
        assert_eq!(held.state(), (0, 0));
        assert_ne!(pid(&held).await, first);
    }

    #[tokio::test]
    async fn connections_idle_too_long_or_open_too_long_are_closed() {
        let db = TestDb::new(Backend::Postgres).await;
        let idle = held(&db, |held| held.idle_timeout = Duration::from_millis(300));
        // Two connections, then only the newer one kept busy: the older one is closed once
        // it has been idle too long, though the newer one never is.
        let (shorter, longer) = (
            sql("SELECT pg_sleep(0.1), pg_backend_pid()"),
            sql("SELECT pg_sleep(0.2), pg_backend_pid()"),
        );
        let (older, newer) = tokio::join!(idle.row(&shorter), idle.row(&longer));
        let older: i32 = older.unwrap().unwrap().get(1);
        let newer: i32 = newer.unwrap().unwrap().get(1);
        assert_eq!(idle.state(), (2, 2));
        for _ in 0..6 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            assert_eq!(pid(&idle).await, newer);
        }
        assert_eq!(idle.state(), (1, 1));
        gone(&db, older).await;
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_ne!(pid(&idle).await, newer);
        gone(&db, newer).await;

        let old = held(&db, |held| held.max_lifetime = Duration::ZERO);
        let first = pid(&old).await;
        assert_eq!(old.state(), (0, 0));
        assert_ne!(pid(&old).await, first);
    }

    #[tokio::test]
    async fn statements_wait_for_a_free_connection_up_to_the_timeout() {
        let db = TestDb::new(Backend::Postgres).await;
        let mut held = held(&db, one);
        // Opened before the short timeout, which a slow connect could outlast.
        let opened = pid(&held).await;
        held.acquire_timeout = Duration::from_secs(1);
        let mut lease = held.lease().await.unwrap();
        let taken: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(lease.conn())
            .await
            .unwrap();
        let err = held.row(&sql("SELECT 1")).await.unwrap_err();
        assert!(
            matches!(err, DbErr::ConnectionAcquire(ConnAcquireErr::Timeout)),
            "{err:?}"
        );
        assert!(StorageError::Db(err).is_unavailable());
        // A statement waiting gets the connection once it is given back.
        let (waiter, ()) = tokio::join!(pid(&held), async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            lease.settle(Ok(()), DbErr::Query).unwrap();
        });
        assert_eq!(waiter, taken);
        assert_eq!(taken, opened);
    }
}
