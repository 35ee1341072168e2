//! Reads by a session's token that calls make at the same time, run together as one
//! statement on PostgreSQL.
//!
//! Every internal service validates a session per request, so validations arrive many at
//! once, and a step-up reads the session with its factors the same way. On PostgreSQL each
//! statement costs a round trip (a write to the socket that wakes a backend, a read of its
//! answer) and the backend's executor set-up, and on a few cores those cost more than the
//! indexed read itself: one statement that looks up eight tokens ran about six times as
//! many lookups per second as eight statements of one (`pgbench -M prepared`).
//!
//! Here a read joins a queue, and a task of its own takes every read queued by then, up to
//! [`MOST`], runs them as one statement on a held connection ([`crate::held`]) and hands
//! each caller its rows. One statement runs at a time: reads that come meanwhile wait for it
//! to end and go in the next, so a statement never waits to fill, and a read that finds
//! none running runs at once, alone. Closed-loop validations went from 0.23-0.26 of the
//! floor to 0.34-0.46 (server CPU 37-54 → 24-36 µs per call), in alternated runs; two
//! statements at a time measured 0.32-0.33 and four 0.26, the batches smaller.
//!
//! The rules are those of a statement per read: each token is read with its own time, by
//! the same conditions, in a statement that begins after the call asked, so a revocation
//! or a policy committed before the call is seen. What changes is the waiting: a read may
//! wait for the statement before its own, and one statement that hangs holds up the reads
//! behind it, so each is bounded ([`Held::acquire_timeout`] for a connection, as long again
//! for the statement) and then fails UNAVAILABLE. A statement that fails, or a batch that
//! panics, fails only the reads in it.

use std::sync::Arc;

use sea_orm::sqlx::postgres::PgRow;
use sea_orm::sqlx::{self, Row as _};
use sea_orm::{ConnAcquireErr, DbErr};
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument as _;

use crate::held::Held;

/// The most reads in one statement.
const MOST: usize = 64;

/// Reads run together by one query ([`Batched::rows`]).
#[derive(Debug)]
pub(crate) struct Batched {
    wanted: mpsc::UnboundedSender<Wanted>,
    /// The query, for each read's span.
    sql: &'static str,
    /// The most reads one statement answered (tests check that reads waiting together went
    /// in one).
    #[cfg(test)]
    pub(crate) largest: Arc<std::sync::atomic::AtomicUsize>,
}

/// A read and where to hand its rows.
struct Wanted {
    /// The keyed hash of the token.
    hash: Vec<u8>,
    now: i64,
    /// The read's statement span, in its caller's trace (given the statement's size).
    span: tracing::Span,
    rows: oneshot::Sender<Result<Vec<PgRow>, DbErr>>,
}

impl std::fmt::Debug for Wanted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the token's hash: it finds the session.
        f.debug_struct("Wanted")
            .field("now", &self.now)
            .finish_non_exhaustive()
    }
}

/// A read that got no answer: the statement it went in was cut short by a panic, or the
/// runtime is shutting down. UNAVAILABLE, as when no connection can be had.
fn unanswered() -> DbErr {
    DbErr::ConnectionAcquire(ConnAcquireErr::ConnectionClosed)
}

impl Batched {
    /// Starts the task that runs `sql` on `held` for the reads queued: `$1` their tokens'
    /// hashes (`bytea[]`), `$2` each one's now (`int8[]`); each row names in its `wanted`
    /// column (`int8`, from 1) which read it answers.
    pub(crate) fn spawn(held: Arc<Held>, sql: &'static str) -> Self {
        let (wanted, queue) = mpsc::unbounded_channel();
        #[cfg(test)]
        let largest = Arc::default();
        tokio::spawn(serve(
            held,
            sql,
            queue,
            #[cfg(test)]
            Arc::clone(&largest),
        ));
        Self {
            wanted,
            sql,
            #[cfg(test)]
            largest,
        }
    }

    /// The rows that answer the read of the token hashed as `hash` at `now`.
    pub(crate) async fn rows(&self, hash: Vec<u8>, now: i64) -> Result<Vec<PgRow>, DbErr> {
        // The read's own span, the child of its call: its wait and the statement it went in.
        let span = crate::run::statement_span("sea_orm.query_all", "postgresql", self.sql);
        let (rows, answer) = oneshot::channel();
        let wanted = Wanted {
            hash,
            now,
            span: span.clone(),
            rows,
        };
        self.wanted.send(wanted).map_err(|_| unanswered())?;
        answer.instrument(span).await.map_err(|_| unanswered())?
    }
}

/// Takes the reads queued, up to [`MOST`], and runs them ([`run`]), one statement at a
/// time; stops when every sender is gone.
async fn serve(
    held: Arc<Held>,
    sql: &'static str,
    mut queue: mpsc::UnboundedReceiver<Wanted>,
    #[cfg(test)] largest: Arc<std::sync::atomic::AtomicUsize>,
) {
    while let Some(first) = queue.recv().await {
        let mut batch = vec![first];
        while batch.len() < MOST {
            match queue.try_recv() {
                Ok(wanted) => batch.push(wanted),
                Err(_) => break,
            }
        }
        #[cfg(test)]
        largest.fetch_max(batch.len(), std::sync::atomic::Ordering::Relaxed);
        // On a task of its own, so that a panic drops only this batch's answers
        // ([`unanswered`]) and the queue goes on.
        let _ran = tokio::spawn(run(Arc::clone(&held), sql, batch)).await;
    }
}

/// Runs the reads of `batch` whose callers still wait as one statement and hands each its
/// rows, or the statement's error.
async fn run(held: Arc<Held>, sql: &'static str, mut batch: Vec<Wanted>) {
    batch.retain(|wanted| !wanted.rows.is_closed());
    if batch.is_empty() {
        return;
    }
    for wanted in &batch {
        wanted.span.record("db.operation.batch.size", batch.len());
    }
    let (hashes, nows): (Vec<_>, Vec<_>) = batch
        .iter_mut()
        .map(|wanted| (std::mem::take(&mut wanted.hash), wanted.now))
        .unzip();
    let query = sqlx::query(sql).bind(hashes).bind(nows);
    // The wait for a connection is bounded inside; the statement gets as long again. One cut
    // short leaves its connection to be closed (`Held`'s lease).
    let limit = held.acquire_timeout().saturating_mul(2);
    let read = tokio::time::timeout(limit, held.fetch_all(query, tracing::Span::none()))
        .await
        .unwrap_or(Err(DbErr::ConnectionAcquire(ConnAcquireErr::Timeout)));
    let mut answers: Vec<Vec<PgRow>> = batch.iter().map(|_| Vec::new()).collect();
    let read = read.and_then(|rows| {
        for row in rows {
            let wanted: i64 = row
                .try_get("wanted")
                .map_err(|e| DbErr::Type(e.to_string()))?;
            let answer = usize::try_from(wanted)
                .ok()
                .and_then(|i| answers.get_mut(i.checked_sub(1)?))
                .ok_or_else(|| DbErr::Type(format!("no read {wanted} in the batch")))?;
            answer.push(row);
        }
        Ok(())
    });
    for (wanted, rows) in batch.into_iter().zip(answers) {
        // A caller that gave up meanwhile is not waiting for its rows.
        let _gone = wanted.rows.send(read.clone().map(|()| rows));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]

    use std::sync::atomic::Ordering;

    use super::*;
    use crate::testing::{Backend, TestDb};

    /// Echoes each read: `at` rows (none for 0), each with the read's hash.
    const ECHO: &str = "SELECT wanted.i AS wanted, wanted.hash, n
FROM unnest($1::bytea[], $2::int8[]) WITH ORDINALITY AS wanted(hash, at, i),
     generate_series(1, wanted.at) AS n";

    /// A row per read, each after `at` tenths of a second.
    const SLOW: &str = "SELECT wanted.i AS wanted, wanted.hash, n
FROM unnest($1::bytea[], $2::int8[]) WITH ORDINALITY AS wanted(hash, at, i),
     LATERAL (SELECT 1::int8 AS n FROM pg_sleep(wanted.at / 10.0)) AS slept";

    /// A read of `ECHO`'s that divides by zero.
    const FAILS: &str = "SELECT wanted.i AS wanted, 1 / (wanted.at - wanted.at) AS boom
FROM unnest($1::bytea[], $2::int8[]) WITH ORDINALITY AS wanted(hash, at, i)";

    fn batched(db: &TestDb, sql: &'static str) -> Arc<Batched> {
        Arc::new(Batched::spawn(Held::new(&db.config).unwrap(), sql))
    }

    /// `ECHO`'s read `i`: its hash (the same for every fifth, so that some are wanted twice
    /// at once) and `at`.
    fn read(i: usize) -> (Vec<u8>, i64) {
        (
            format!("token {}", i % 5).into_bytes(),
            i64::try_from(i % 4).unwrap(),
        )
    }

    /// Whether `rows` answer `ECHO`'s read `i`.
    fn answers(i: usize, rows: &[PgRow]) -> bool {
        let (hash, at) = read(i);
        let ns: Vec<i64> = rows.iter().map(|row| row.get("n")).collect();
        let hashes: Vec<Vec<u8>> = rows.iter().map(|row| row.get("hash")).collect();
        ns == (1..=at).collect::<Vec<_>>() && hashes.iter().all(|h| *h == hash)
    }

    /// `n` reads of `ECHO` made at the same moment; their answers.
    async fn race(batched: &Arc<Batched>, n: usize) -> Vec<Result<Vec<PgRow>, DbErr>> {
        let barrier = Arc::new(tokio::sync::Barrier::new(n));
        let tasks: Vec<_> = (0..n)
            .map(|i| {
                let (batched, barrier) = (Arc::clone(batched), Arc::clone(&barrier));
                tokio::spawn(async move {
                    barrier.wait().await;
                    let (hash, at) = read(i);
                    batched.rows(hash, at).await
                })
            })
            .collect();
        let mut out = Vec::new();
        for task in tasks {
            out.push(task.await.unwrap());
        }
        out
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn reads_waiting_together_run_as_one_statement_each_answered_alone() {
        let db = TestDb::new(Backend::Postgres).await;
        let batched = batched(&db, ECHO);
        // The first read runs alone; those that come while it runs wait and go in the next
        // statement. Tried a few times, in case the tasks came one by one.
        for _ in 0..5 {
            for (i, rows) in race(&batched, 48).await.into_iter().enumerate() {
                assert!(answers(i, &rows.unwrap()), "read {i}");
            }
            if batched.largest.load(Ordering::Relaxed) > 1 {
                break;
            }
        }
        assert!(batched.largest.load(Ordering::Relaxed) > 1);
        assert!(batched.largest.load(Ordering::Relaxed) <= MOST);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_statement_that_fails_fails_each_read_in_it_and_the_next_runs() {
        let db = TestDb::new(Backend::Postgres).await;
        let held = Held::new(&db.config).unwrap();
        let (batch, waiting): (Vec<_>, Vec<_>) = (0..3)
            .map(|i| {
                let (rows, answer) = oneshot::channel();
                let (hash, now) = read(i);
                let span = tracing::Span::none();
                (
                    Wanted {
                        hash,
                        now,
                        span,
                        rows,
                    },
                    answer,
                )
            })
            .unzip();
        run(Arc::clone(&held), FAILS, batch).await;
        for answer in waiting {
            let err = answer.await.unwrap().unwrap_err();
            assert!(err.to_string().contains("division by zero"), "{err}");
            assert!(!crate::error::db_unavailable(&err), "{err}");
        }
        // The statement's own failure kept the connection, and reads go on.
        let echo = Batched::spawn(held, ECHO);
        let (hash, at) = read(3);
        assert!(answers(3, &echo.rows(hash, at).await.unwrap()));
    }

    /// A read of `SLOW`'s, on a task: `at` tenths of a second.
    fn slow(batched: &Arc<Batched>, i: u8, at: i64) -> tokio::task::JoinHandle<Vec<PgRow>> {
        let batched = Arc::clone(batched);
        tokio::spawn(async move { batched.rows(vec![i], at).await.unwrap() })
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn reads_given_up_while_queued_leave_the_others_answered() {
        let db = TestDb::new(Backend::Postgres).await;
        let batched = batched(&db, SLOW);
        let first = slow(&batched, 0, 3);
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        // Queued behind the first statement, which runs for 0.3 s; every other one gives up.
        let queued: Vec<_> = (1..=16).map(|i| (i, slow(&batched, i, 0))).collect();
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        for (i, task) in &queued {
            if i % 2 == 0 {
                task.abort();
            }
        }
        assert_eq!(first.await.unwrap().len(), 1);
        for (i, task) in queued {
            match task.await {
                Ok(rows) => {
                    let hashes: Vec<Vec<u8>> = rows.iter().map(|row| row.get("hash")).collect();
                    assert_eq!(hashes, vec![vec![i]]);
                }
                Err(e) => assert!(e.is_cancelled() && i % 2 == 0, "read {i}: {e}"),
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_statement_that_hangs_fails_its_reads_unavailable_and_the_next_runs() {
        let db = TestDb::new(Backend::Postgres).await;
        let config = crate::db::DbConfig {
            connect_timeout: std::time::Duration::from_millis(300),
            ..db.config.clone()
        };
        let batched = Arc::new(Batched::spawn(Held::new(&config).unwrap(), SLOW));
        let started = std::time::Instant::now();
        // Would sleep 3 s; given up after twice the 0.3 s the wait for a connection may take.
        let err = batched.rows(vec![1], 30).await.unwrap_err();
        assert!(crate::error::db_unavailable(&err), "{err}");
        assert!(started.elapsed() < std::time::Duration::from_millis(2500));
        assert_eq!(batched.rows(vec![2], 0).await.unwrap().len(), 1);
    }
}
