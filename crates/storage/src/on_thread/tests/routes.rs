//! Where a statement runs: the writer's connection, a reader, or the pool; and what never
//! runs on a connection that reads.

use std::sync::MutexGuard;
use std::sync::atomic::Ordering;

use rusqlite::Connection;
use sea_orm::{DbBackend, EntityTrait as _, Statement};

use super::populated;
use crate::entity;
use crate::entity::enums::ChallengePurpose;
use crate::on_thread::sqlite::is_query;
use crate::run::Run as _;
use crate::testing::NOW;

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
    let row = reads.row(probe()).await.unwrap().unwrap();
    assert_eq!(row.get::<i64>("x").unwrap(), 7);
    // The writer's held: a reader answers (it has no such table).
    let writer = hold_the_writer(storage);
    let err = reads.row(probe()).await.unwrap_err();
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
        Default::default(),
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
    let err = reads.rows(delete()).await.unwrap_err();
    assert!(err.to_string().contains("not a query"), "{err}");
    let writer = hold_the_writer(&db.storage);
    let err = reads.rows(delete()).await.unwrap_err();
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
        let err = reads.rows(stmt).await.unwrap_err();
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

/// A transaction on the writer's connection is rolled back whatever ends the code that
/// opened it, a panic included: the next write does not run inside it, uncommitted.
#[test]
fn a_transaction_left_open_by_a_panic_is_rolled_back() {
    let conn = Connection::open_in_memory().unwrap();
    conn.execute_batch("CREATE TABLE t (x INTEGER); BEGIN; INSERT INTO t VALUES (1)")
        .unwrap();
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _open = super::super::sqlite::EndsOpenTransaction(&conn);
        panic!("mid-transaction");
    }));
    assert!(panicked.is_err());
    assert!(conn.is_autocommit());
    let rows: i64 = conn
        .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 0);
}
