//! Group commit of write chains on an SQLite file.
//!
//! SQLite commits one transaction at a time, and a commit is most of a code's acceptance:
//! the write-ahead log gets a frame for every page changed (the factor's row, the session's,
//! the audit table with its indexes). Under load acceptances wait for the write turn one
//! behind the other, each to write its own frames and hand the turn on. Here an acceptance
//! joins a queue before it waits for the turn; whoever gets the turn runs every chain
//! queued by then in one transaction ([`crate::on_thread::OnThread::transaction_chains`]),
//! each in a savepoint of its own, commits once, and tells each waiting caller what became
//! of its chain. Pages that several chains change are written once per commit.
//!
//! Nothing is weakened: the chains run one after the other as they would have in turns of
//! their own, so a second use of a step sees the first in the same transaction and is
//! refused; a chain's statements and its event still commit together or not at all; a
//! caller that gave up before its chain ran (its call cancelled) has nothing written.

use std::sync::{Mutex, PoisonError};

use sea_orm::{DbErr, Statement};
use tokio::sync::oneshot;

use crate::on_thread::ChainRan;
use crate::run::Run as _;
use crate::{Here, Result, Storage, StorageError};

/// Chains waiting for the write turn (an SQLite file's, in [`Here`]).
#[derive(Debug, Default)]
pub(crate) struct Queue(Mutex<Vec<Queued>>);

/// A chain and where to tell its caller what became of it.
#[derive(Debug)]
struct Queued {
    chain: Vec<Statement>,
    ran: oneshot::Sender<Ran>,
}

/// What became of a queued chain.
#[derive(Debug)]
enum Ran {
    /// It ran here: committed, or failed and undone.
    Here(std::result::Result<Vec<u64>, DbErr>),
    /// It did not run here (the chain comes back): run it on the pool.
    Pool(Vec<Statement>),
}

impl Queue {
    fn push(&self, queued: Queued) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(queued);
    }

    /// Every chain waiting whose caller still waits.
    fn take(&self) -> Vec<Queued> {
        let mut queued =
            std::mem::take(&mut *self.0.lock().unwrap_or_else(PoisonError::into_inner));
        queued.retain(|q| !q.ran.is_closed());
        queued
    }
}

impl Storage {
    /// Runs `chain` in a transaction that writes, each statement only when the one before
    /// changed a row, and commits what ran; returns the rows each changed, up to the first
    /// that changed none. On an SQLite file, committed together with the chains of other
    /// callers waiting for the write turn at the same time (see the module's documentation);
    /// elsewhere, or when it cannot run on the calling thread, in a transaction of its own
    /// on the pool.
    pub(crate) async fn write_chain(&self, chain: Vec<Statement>) -> Result<Vec<u64>> {
        let chain = match self.here.as_deref() {
            Some(here) => match self.queue_chain(here, chain).await? {
                Ran::Here(rows) => return Ok(rows?),
                Ran::Pool(chain) => chain,
            },
            None => chain,
        };
        let (_turn, txn) = self.begin_write().await?;
        let mut rows = Vec::with_capacity(chain.len());
        for stmt in chain {
            let changed = txn.change(stmt).await?;
            rows.push(changed);
            if changed == 0 {
                break;
            }
        }
        txn.commit().await?;
        Ok(rows)
    }

    /// Queues `chain` and waits for a writer in its turn to run it, or for the turn, then to
    /// run every chain queued.
    async fn queue_chain(&self, here: &Here, chain: Vec<Statement>) -> Result<Ran> {
        let (sender, mut ran) = oneshot::channel();
        here.chains.push(Queued { chain, ran: sender });
        tokio::select! {
            biased;
            by_another = &mut ran => return by_another.map_err(lost),
            writing = self.write() => {
                // Every chain queued before this turn was given is run by now, or queued
                // still: this one is run here or was by the writer before.
                let queued = here.chains.take();
                if !queued.is_empty() {
                    let chains: Vec<&[Statement]> =
                        queued.iter().map(|q| q.chain.as_slice()).collect();
                    let outcomes = writing.transaction_chains(&chains);
                    for (q, outcome) in queued.into_iter().zip(outcomes) {
                        let told = match outcome {
                            ChainRan::Done(rows) => Ran::Here(Ok(rows)),
                            ChainRan::Failed(e) => Ran::Here(Err(e)),
                            ChainRan::Pool => Ran::Pool(q.chain),
                        };
                        // A caller that has gone has nothing to be told.
                        let _ = q.ran.send(told);
                    }
                }
                writing.hand_on().await;
            }
        }
        ran.await.map_err(lost)
    }
}

/// The writer that took a chain ended without telling what became of it (it panicked).
fn lost(_: oneshot::error::RecvError) -> StorageError {
    StorageError::Db(DbErr::Custom(
        "the writer that took the chain ended without saying what became of it".to_owned(),
    ))
}

#[cfg(test)]
impl Queue {
    /// Chains waiting.
    fn len(&self) -> usize {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).len()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]

    use sea_orm::{ConnectionTrait as _, DbBackend};

    use super::*;
    use crate::repo::{Acceptance, NewAuditEvent};
    use crate::testing::{Backend, NOW, TestDb};

    fn sql(sql: &str) -> Statement {
        Statement::from_string(DbBackend::Sqlite, sql)
    }

    /// A file database with a table `t` (`x` unique) holding row 1 (`x` = 1).
    async fn with_table() -> TestDb {
        let db = TestDb::new(Backend::Sqlite).await;
        let pool = db.storage.db();
        pool.execute_unprepared("CREATE TABLE t (id INTEGER PRIMARY KEY, x INTEGER UNIQUE)")
            .await
            .unwrap();
        pool.execute_unprepared("INSERT INTO t VALUES (1, 1)")
            .await
            .unwrap();
        db
    }

    /// Runs each chain in a task of its own while the write turn is held, and gives the
    /// turn up once every chain waits in the queue: the first to get it runs them all, in
    /// the order they were queued (the tasks', so the chains must not depend on it).
    async fn queued_together(
        storage: &Storage,
        chains: Vec<Vec<Statement>>,
    ) -> Vec<tokio::task::JoinHandle<Result<Vec<u64>>>> {
        let count = chains.len();
        let turn = storage.write().await;
        let tasks = chains
            .into_iter()
            .map(|chain| {
                let storage = storage.clone();
                tokio::spawn(async move { storage.write_chain(chain).await })
            })
            .collect();
        wait_for(storage, count).await;
        drop(turn);
        tasks
    }

    async fn wait_for(storage: &Storage, queued: usize) {
        let here = storage.here.as_deref().unwrap();
        while here.chains.len() < queued {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
    }

    async fn xs(storage: &Storage) -> Vec<(i64, i64)> {
        let rows = storage
            .db()
            .query_all_raw(sql("SELECT id, x FROM t ORDER BY id"))
            .await
            .unwrap();
        rows.iter()
            .map(|r| {
                (
                    r.try_get_by_index(0).unwrap(),
                    r.try_get_by_index(1).unwrap(),
                )
            })
            .collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn chains_waiting_together_commit_together_each_on_its_own() {
        let db = with_table().await;
        let s = &db.storage;
        let tasks = queued_together(
            s,
            vec![
                // Each statement only when the one before changed a row.
                vec![
                    sql("INSERT INTO t VALUES (2, 2)"),
                    sql("UPDATE t SET x = 20 WHERE id = 2"),
                ],
                vec![
                    sql("UPDATE t SET x = 30 WHERE id = 3"),
                    sql("INSERT INTO t VALUES (3, 3)"),
                ],
                // A statement that fails: its chain is undone whole, the others go on.
                vec![
                    sql("INSERT INTO t VALUES (4, 4)"),
                    sql("SELECT * FROM nowhere"),
                ],
                // A constraint refused: run again on the pool, which reports it.
                vec![
                    sql("INSERT INTO t VALUES (5, 5)"),
                    sql("INSERT INTO t VALUES (6, 1)"),
                ],
                vec![sql("INSERT INTO t VALUES (9, 9)")],
            ],
        )
        .await;
        let mut ran = Vec::new();
        for task in tasks {
            ran.push(task.await.unwrap());
        }
        assert_eq!(ran[0].as_ref().unwrap(), &[1, 1]);
        assert_eq!(ran[1].as_ref().unwrap(), &[0]);
        assert!(ran[2].is_err());
        let refused = ran[3].as_ref().unwrap_err();
        assert!(
            matches!(refused, StorageError::Db(e) if matches!(e.sql_err(), Some(sea_orm::SqlErr::UniqueConstraintViolation(_)))),
            "{refused:?}"
        );
        assert_eq!(ran[4].as_ref().unwrap(), &[1]);
        assert_eq!(xs(s).await, [(1, 1), (2, 20), (9, 9)]);
    }

    /// Two uses of one step in one commit: the second sees the first and is refused; each
    /// accepted code's event is written with it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_step_used_twice_in_one_commit_is_accepted_once() {
        let db = TestDb::new(Backend::Sqlite).await;
        let s = &db.storage;
        let uid = s
            .users()
            .create("a@example.com", None, NOW)
            .await
            .unwrap()
            .id;
        let factor = crate::testing::totp_factor(s, uid, true).await;
        let turn = s.write().await;
        let key = format!("mfa:{uid}");
        let tasks: Vec<_> = (0..4)
            .map(|_| {
                let (s, key) = (s.clone(), key.clone());
                tokio::spawn(async move {
                    let event = NewAuditEvent {
                        occurred_at: NOW,
                        org_id: None,
                        actor_id: Some(uid),
                        subject_id: Some(uid),
                        kind: "session.stepped_up",
                        details: "{}",
                        client: crate::repo::ClientInfo::default(),
                    };
                    let acceptance = Acceptance {
                        factor_id: factor,
                        step: 100,
                        now: NOW,
                        lock_key: &key,
                        raise: None,
                        audit: Some(event),
                    };
                    s.factors().accept_code(&acceptance).await.unwrap().accepted
                })
            })
            .collect();
        wait_for(s, 4).await;
        drop(turn);
        let mut accepted = 0;
        for task in tasks {
            accepted += usize::from(task.await.unwrap());
        }
        assert_eq!(accepted, 1);
        let events = s
            .db()
            .query_one_raw(sql(
                "SELECT count(*) FROM audit_events WHERE kind = 'session.stepped_up'",
            ))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(events.try_get_by_index::<i64>(0).unwrap(), 1);
    }

    /// A caller that gives up while its chain waits has nothing written.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_chain_whose_caller_gave_up_is_not_run() {
        let db = with_table().await;
        let s = &db.storage;
        let turn = s.write().await;
        let gone = {
            let s = s.clone();
            tokio::spawn(async move {
                s.write_chain(vec![sql("INSERT INTO t VALUES (7, 7)")])
                    .await
            })
        };
        wait_for(s, 1).await;
        gone.abort();
        assert!(gone.await.unwrap_err().is_cancelled());
        let stays = {
            let s = s.clone();
            tokio::spawn(async move {
                s.write_chain(vec![sql("INSERT INTO t VALUES (8, 8)")])
                    .await
            })
        };
        wait_for(s, 2).await;
        drop(turn);
        assert_eq!(stays.await.unwrap().unwrap(), [1]);
        assert_eq!(xs(s).await, [(1, 1), (8, 8)]);
    }
}
