//! PostgreSQL statements on connections this crate holds, beside sqlx's pool.
//!
//! sqlx's pool pings every connection handed back to it (a `Sync` and its `ReadyForQuery`,
//! not configurable in sqlx 0.9), so that a statement or transaction cut short by a
//! cancelled call is flushed before the next user. On the hot paths, one statement per call,
//! that doubled the round trips to PostgreSQL: the ping was a fifth of the server's CPU
//! during validations, and as much again of PostgreSQL's (BENCHMARKS.md).
//!
//! [`Held`] lends a connection to one statement at a time and takes it back without a ping,
//! because it takes back only a connection whose statement ran to its end (its rows read, or
//! a database error: either way nothing of it is left on the connection). A statement cut
//! short (its call cancelled) or an I/O failure drops the connection instead, which closes
//! it. A connection idle for longer than [`crate::db::PING_IDLE_AFTER`] is pinged before it
//! is lent, as the pool does, so that one cut by a restart is replaced before a statement
//! fails on it. Transactions, lists and migrations stay on sqlx's pool.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use sea_orm::sqlx::postgres::{PgConnectOptions, PgConnection, PgRow};
use sea_orm::sqlx::{self, Connection as _};
use sea_orm::{ConnAcquireErr, DbErr, RuntimeErr, Statement};
use sea_query_sqlx::SqlxValues;
use tokio::sync::{Semaphore, SemaphorePermit};
use tracing::Instrument as _;

use crate::db::{DbConfig, PING_IDLE_AFTER};
use crate::error::sqlx_unavailable;

/// Connections to PostgreSQL lent to one statement at a time.
pub(crate) struct Held {
    options: PgConnectOptions,
    /// Idle connections, the longest idle first.
    idle: Mutex<VecDeque<Idle>>,
    /// One per connection that may be open (`max_connections`).
    permits: Semaphore,
    /// That number.
    max: usize,
    /// How long to wait for a connection, and to open one.
    acquire_timeout: Duration,
    /// An idle connection older than this is closed.
    idle_timeout: Duration,
    /// An idle connection older than this is pinged before it is lent.
    ping_idle_after: Duration,
}

impl std::fmt::Debug for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Held")
            .field("available", &self.permits.available_permits())
            .finish_non_exhaustive()
    }
}

/// A connection waiting to be lent.
struct Idle {
    conn: PgConnection,
    since: Instant,
}

/// A connection lent to one statement; dropped (closed) unless given back.
struct Lease<'a> {
    held: &'a Held,
    conn: PgConnection,
    _permit: SemaphorePermit<'a>,
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
            options,
            idle: Mutex::default(),
            permits: Semaphore::new(max),
            max,
            acquire_timeout: config.connect_timeout,
            idle_timeout: config.idle_timeout,
            ping_idle_after: PING_IDLE_AFTER,
        }))
    }

    /// The first row `stmt` returns, if any.
    pub(crate) async fn row(&self, stmt: &Statement) -> Result<Option<PgRow>, DbErr> {
        let span = span("sea_orm.query_one", stmt);
        async {
            let mut lease = self.lease().await?;
            let row = query(stmt).fetch_optional(&mut lease.conn).await;
            lease.settle(row, DbErr::Query)
        }
        .instrument(span)
        .await
    }

    /// Every row `stmt` returns.
    pub(crate) async fn rows(&self, stmt: &Statement) -> Result<Vec<PgRow>, DbErr> {
        let span = span("sea_orm.query_all", stmt);
        async {
            let mut lease = self.lease().await?;
            let rows = query(stmt).fetch_all(&mut lease.conn).await;
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
            let done = query(stmt).execute(&mut lease.conn).await;
            lease
                .settle(done, DbErr::Exec)
                .map(|done| done.rows_affected())
        }
        .instrument(span)
        .await
    }

    /// A connection: an idle one (pinged first when it has been idle a while), else a new
    /// one. Waits up to the acquire timeout for one to be free.
    async fn lease(&self) -> Result<Lease<'_>, DbErr> {
        let permit = tokio::time::timeout(self.acquire_timeout, self.permits.acquire())
            .await
            .map_err(|_| DbErr::ConnectionAcquire(ConnAcquireErr::Timeout))?
            .map_err(|_| DbErr::ConnectionAcquire(ConnAcquireErr::ConnectionClosed))?;
        loop {
            let idle = self.idle().pop_back();
            let Some(Idle { mut conn, since }) = idle else {
                break;
            };
            if since.elapsed() < self.ping_idle_after || conn.ping().await.is_ok() {
                return Ok(Lease {
                    held: self,
                    conn,
                    _permit: permit,
                });
            }
        }
        let conn = tokio::time::timeout(
            self.acquire_timeout,
            PgConnection::connect_with(&self.options),
        )
        .await
        .map_err(|_| DbErr::ConnectionAcquire(ConnAcquireErr::Timeout))?
        .map_err(|e| DbErr::Conn(RuntimeErr::SqlxError(Arc::new(e))))?;
        Ok(Lease {
            held: self,
            conn,
            _permit: permit,
        })
    }

    /// Connections open (lent or idle) and idle, for metrics.
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
    /// What the statement gave, the connection given back when it is fit for the next: the
    /// statement ended, its rows read or refused by the database (but not for the server
    /// shutting down or the connection failing, [`crate::error::sqlx_unavailable`]).
    fn settle<T>(
        self,
        out: Result<T, sqlx::Error>,
        err: fn(RuntimeErr) -> DbErr,
    ) -> Result<T, DbErr> {
        match out {
            Ok(out) => {
                self.give_back();
                Ok(out)
            }
            Err(e) => {
                if matches!(e, sqlx::Error::Database(_)) && !sqlx_unavailable(&e) {
                    self.give_back();
                }
                Err(err(RuntimeErr::SqlxError(Arc::new(e))))
            }
        }
    }

    /// Back among the idle, closing those idle longer than the idle timeout.
    fn give_back(self) {
        let Lease {
            held,
            conn,
            _permit,
        } = self;
        let mut idle = held.idle();
        while idle
            .front()
            .is_some_and(|oldest| oldest.since.elapsed() > held.idle_timeout)
        {
            idle.pop_front();
        }
        idle.push_back(Idle {
            conn,
            since: Instant::now(),
        });
    }
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
    crate::run::statement_span(name, "postgresql", stmt)
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

    /// The backend process of the connection a statement was lent.
    async fn pid(held: &Held) -> i32 {
        let row = held.row(&sql("SELECT pg_backend_pid()")).await.unwrap();
        row.unwrap().get(0)
    }

    /// Held connections to a new database, `tune`d.
    async fn held(db: &TestDb, tune: impl FnOnce(&mut Held)) -> Held {
        let mut held = Arc::into_inner(Held::new(&db.config).unwrap()).unwrap();
        tune(&mut held);
        held
    }

    /// Ends the backend process `pid` and waits until it is gone.
    async fn terminate(db: &TestDb, pid: i32) {
        let pool = db.storage.db();
        pool.execute_unprepared(&format!("SELECT pg_terminate_backend({pid})"))
            .await
            .unwrap();
        for _ in 0..100 {
            let alive = pool
                .query_one_raw(sql(&format!(
                    "SELECT 1 AS one FROM pg_stat_activity WHERE pid = {pid}"
                )))
                .await
                .unwrap();
            if alive.is_none() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("backend {pid} still there");
    }

    #[tokio::test]
    async fn a_connection_is_lent_again_without_a_ping_and_counted() {
        let db = TestDb::new(Backend::Postgres).await;
        let held = held(&db, |_| {}).await;
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
        assert_eq!(pid(&held).await, first);
        assert_eq!(held.state(), (1, 1));
        // And through the storage: on PostgreSQL single statements run on held connections.
        let (open, idle) = db.storage.pool_state().unwrap();
        db.storage.reads().row(sql("SELECT 1")).await.unwrap();
        let storage_held = db.storage.held.as_deref().unwrap();
        assert_eq!(storage_held.state(), (1, 1));
        assert_eq!(db.storage.pool_state().unwrap(), (open + 1, idle + 1));
    }

    #[tokio::test]
    async fn a_statement_refused_by_the_database_keeps_its_connection() {
        let db = TestDb::new(Backend::Postgres).await;
        let held = held(&db, |_| {}).await;
        let first = pid(&held).await;
        let err = held.row(&sql("SELECT 1 / 0")).await.unwrap_err();
        assert!(err.to_string().contains("division by zero"), "{err}");
        assert!(!StorageError::Db(err).is_unavailable());
        assert_eq!(pid(&held).await, first);
    }

    #[tokio::test]
    async fn a_statement_cut_short_closes_its_connection() {
        let db = TestDb::new(Backend::Postgres).await;
        let held = held(&db, |_| {}).await;
        let first = pid(&held).await;
        let cut = tokio::time::timeout(
            Duration::from_millis(200),
            held.row(&sql("SELECT pg_sleep(30)")),
        )
        .await;
        assert!(cut.is_err(), "the sleep was not cut short");
        // The connection still runs the sleep: it is closed, not lent to the next statement.
        assert_eq!(held.state(), (0, 0));
        assert_ne!(pid(&held).await, first);
    }

    #[tokio::test]
    async fn an_idle_connection_cut_off_is_replaced_before_a_statement_runs() {
        let db = TestDb::new(Backend::Postgres).await;
        let held = held(&db, |held| held.ping_idle_after = Duration::ZERO).await;
        let first = pid(&held).await;
        terminate(&db, first).await;
        // Pinged, found closed, replaced: the statement does not fail.
        let second = pid(&held).await;
        assert_ne!(second, first);
        assert_eq!(held.state(), (1, 1));
    }

    #[tokio::test]
    async fn a_connection_cut_off_in_use_fails_unavailable_and_is_not_lent_again() {
        let db = TestDb::new(Backend::Postgres).await;
        let held = held(&db, |held| held.ping_idle_after = Duration::from_secs(3600)).await;
        let first = pid(&held).await;
        terminate(&db, first).await;
        // Not pinged (idle only briefly): the statement finds the connection closed.
        let err = held.row(&sql("SELECT 1")).await.unwrap_err();
        assert!(StorageError::Db(err).is_unavailable());
        assert_eq!(held.state(), (0, 0));
        assert_ne!(pid(&held).await, first);
    }

    #[tokio::test]
    async fn statements_wait_for_a_free_connection_up_to_the_timeout() {
        let db = TestDb::new(Backend::Postgres).await;
        let held = held(&db, |held| {
            held.permits = Semaphore::new(1);
            held.max = 1;
            held.acquire_timeout = Duration::from_millis(300);
        })
        .await;
        let lease = held.lease().await.unwrap();
        let err = held.row(&sql("SELECT 1")).await.unwrap_err();
        assert!(
            matches!(err, DbErr::ConnectionAcquire(ConnAcquireErr::Timeout)),
            "{err:?}"
        );
        assert!(StorageError::Db(err).is_unavailable());
        lease.give_back();
        assert!(held.row(&sql("SELECT 1")).await.unwrap().is_some());
    }
}
