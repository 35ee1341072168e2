//! Throughput of the two hottest writes: accepting a time step (the replay guard of every
//! second-factor check) and inserting a session (every login), on SQLite and PostgreSQL.
//!
//! ```sh
//! TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres cargo bench -p storage --bench throughput
//! ```
//!
//! Without `TEST_DATABASE_URL` only SQLite is measured. Under `cargo test` (no `--bench`
//! argument) each measurement runs a few operations only, as a smoke test.

#![allow(
    clippy::unwrap_used,
    clippy::print_stdout,
    clippy::cast_precision_loss,
    missing_docs,
    reason = "a benchmark binary that prints its results"
)]

use std::time::Instant;

use sea_orm::{ConnectionTrait, Database};
use storage::crypto::{KeyRing, SecretHasher};
use storage::entity::enums::FactorKind;
use storage::repo::{NewSession, OtpParams};
use storage::{DbConfig, Storage, Uuid};
use zeroize::Zeroizing;

const NOW: i64 = 1_700_000_000;

async fn open(url: &str) -> Storage {
    let ring = KeyRing::new(1, [(1, Zeroizing::new([1; 32]))]).unwrap();
    let hasher = SecretHasher::new(&Zeroizing::new([2; 32]));
    Storage::open(&DbConfig::from_url(url), ring, hasher)
        .await
        .unwrap()
}

async fn factors(storage: &Storage, n: usize) -> (Uuid, Vec<Uuid>) {
    let user = storage
        .users()
        .create(&format!("{}@bench.example", Uuid::now_v7()), None, NOW)
        .await
        .unwrap()
        .id;
    let params = OtpParams {
        algorithm: "SHA1",
        digits: 6,
        period: Some(30),
    };
    let mut ids = Vec::new();
    for _ in 0..n {
        let f = storage
            .factors()
            .create_otp_pending(
                user,
                FactorKind::Totp,
                "bench",
                &[7; 20],
                params,
                None,
                NOW,
                NOW + 600,
                &[],
            )
            .await
            .unwrap();
        storage
            .factors()
            .activate(f.id, user, Some(0), None, NOW)
            .await
            .unwrap();
        ids.push(f.id);
    }
    (user, ids)
}

/// Runs `per_task` operations in each of `tasks` tasks; returns operations per second.
async fn measure<F, Fut>(tasks: usize, per_task: usize, op: F) -> f64
where
    F: Fn(usize, usize) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let start = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|t| {
            let futs: Vec<_> = (0..per_task).map(|i| op(t, i)).collect();
            tokio::spawn(async move {
                for fut in futs {
                    fut.await;
                }
            })
        })
        .collect();
    for h in handles {
        h.await.unwrap();
    }
    (tasks * per_task) as f64 / start.elapsed().as_secs_f64()
}

async fn run(name: &str, storage: Storage, ops: usize) {
    for tasks in [1usize, 16] {
        let per_task = ops / tasks;
        let (_, ids) = factors(&storage, tasks).await;
        let s = storage.clone();
        let rate = measure(tasks, per_task, move |t, i| {
            let s = s.clone();
            let id = *ids.get(t).unwrap();
            async move {
                assert!(
                    s.factors()
                        .accept_step(id, i as i64 + 1, NOW)
                        .await
                        .unwrap()
                );
            }
        })
        .await;
        println!("{name:<10} accept_step     {tasks:>2} task(s) {rate:>9.0} /s");

        let (user, _) = factors(&storage, 0).await;
        let s = storage.clone();
        let rate = measure(tasks, per_task, move |t, i| {
            let s = s.clone();
            async move {
                let token = format!("bench-{t}-{i}-{}", Uuid::now_v7());
                let new = NewSession {
                    user_id: user,
                    org_id: None,
                    assurance: 2,
                    now: NOW,
                    idle_ttl: 600,
                    absolute_ttl: 3_600,
                    client: Default::default(),
                    trusted_device_id: None,
                };
                s.sessions().create(&token, new).await.unwrap();
            }
        })
        .await;
        println!("{name:<10} session insert  {tasks:>2} task(s) {rate:>9.0} /s");
    }
}

/// Replaces the database name (the path) of a PostgreSQL URL, keeping any query string.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let path_start = base
        .get(scheme_end..)
        .and_then(|rest| rest.find('/'))
        .map_or(base.len(), |i| scheme_end + i);
    let host = base.get(..path_start).unwrap_or(base);
    match query {
        Some(query) => format!("{host}/{name}?{query}"),
        None => format!("{host}/{name}"),
    }
}

#[tokio::main]
async fn main() {
    let benching = std::env::args().any(|a| a == "--bench");
    let ops = if benching { 4_000 } else { 32 };

    let dir = tempfile::tempdir().unwrap();
    let sqlite = open(&format!("sqlite://{}/bench.db", dir.path().display())).await;
    run("sqlite", sqlite, ops).await;

    match std::env::var("TEST_DATABASE_URL") {
        Ok(admin_url) => {
            let name = format!("tollgate_bench_{}", Uuid::now_v7().simple());
            let admin = Database::connect(&admin_url).await.unwrap();
            admin
                .execute_unprepared(&format!("CREATE DATABASE \"{name}\""))
                .await
                .unwrap();
            let url = with_database(&admin_url, &name);
            let pg = open(&url).await;
            run("postgres", pg.clone(), ops).await;
            pg.db().clone().close().await.unwrap();
            admin
                .execute_unprepared(&format!("DROP DATABASE \"{name}\" WITH (FORCE)"))
                .await
                .unwrap();
        }
        Err(_) => println!("postgres   skipped: set TEST_DATABASE_URL to measure it"),
    }
}
