//! Migrations up, down and up again, and the connection settings, on both engines.

#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test bodies may panic: that is a failed test"
)]

mod common;

use common::{NOW, TestDb};
use sea_orm::{ConnectionTrait, DbBackend, Statement};
use storage::{migrate_down, migrate_up};

async fn migrations_go_up_down_and_up_again(db: &TestDb) {
    let storage = &db.storage;
    storage
        .users()
        .create("a@example.com", None, NOW)
        .await
        .unwrap();
    migrate_down(storage.db()).await.unwrap();
    // Every table is gone.
    for table in [
        "organizations",
        "users",
        "memberships",
        "factors",
        "recovery_codes",
        "login_challenges",
        "sms_codes",
        "sessions",
        "audit_events",
        "attempt_counters",
        "trusted_devices",
    ] {
        let sql = format!("SELECT COUNT(*) FROM {table}");
        let result = storage
            .db()
            .query_one_raw(Statement::from_string(
                storage.db().get_database_backend(),
                sql,
            ))
            .await;
        assert!(result.is_err(), "{table} still exists");
    }
    migrate_up(storage.db()).await.unwrap();
    // Back, empty, and usable.
    assert!(
        storage
            .users()
            .find_by_email("a@example.com")
            .await
            .unwrap()
            .is_none()
    );
    storage
        .users()
        .create("a@example.com", None, NOW)
        .await
        .unwrap();
    // Up again applies nothing and keeps the data.
    migrate_up(storage.db()).await.unwrap();
    assert!(
        storage
            .users()
            .find_by_email("a@example.com")
            .await
            .unwrap()
            .is_some()
    );
}

async fn connection_settings_are_applied(db: &TestDb) {
    let conn = db.storage.db();
    match conn.get_database_backend() {
        DbBackend::Sqlite => {
            let pragma = |name: &'static str| async move {
                let row = conn
                    .query_one_raw(Statement::from_string(
                        DbBackend::Sqlite,
                        format!("PRAGMA {name}"),
                    ))
                    .await
                    .unwrap()
                    .unwrap();
                row.try_get_by_index::<String>(0)
                    .or_else(|_| row.try_get_by_index::<i64>(0).map(|v| v.to_string()))
                    .unwrap()
            };
            assert_eq!(pragma("journal_mode").await, "wal");
            assert_eq!(pragma("foreign_keys").await, "1");
            assert_eq!(pragma("busy_timeout").await, "5000");
            // The file was created, folder included.
            let path = db.config.url.strip_prefix("sqlite://").unwrap();
            assert!(std::path::Path::new(path).exists());
        }
        DbBackend::Postgres => {
            assert!(db.storage.ping().await.is_ok());
        }
        other => panic!("unexpected backend {other:?}"),
    }
    // Foreign keys hold on both: a membership of unknown rows is refused.
    let err = db
        .storage
        .memberships()
        .add(
            uuid::Uuid::now_v7(),
            uuid::Uuid::now_v7(),
            storage::entity::enums::Role::Member,
            NOW,
            storage::repo::AuditOf::by_caller("member.added"),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, storage::StorageError::NotFound(_)), "{err:?}");
}

async fn pool_size_and_acquire_timeout_are_honoured(db: &TestDb) {
    use sea_orm::TransactionTrait;
    use std::time::{Duration, Instant};
    let mut config = db.config.clone();
    config.max_connections = Some(1);
    config.min_connections = 1;
    config.connect_timeout = Duration::from_millis(300);
    let conn = storage::connect(&config).await.unwrap();
    // The only connection is held by an open transaction: the next query waits, then fails.
    let txn = conn.begin().await.unwrap();
    let started = Instant::now();
    let err = conn.execute_unprepared("SELECT 1").await.unwrap_err();
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(250),
        "waited {waited:?}: {err}"
    );
    assert!(
        waited < Duration::from_secs(5),
        "the timeout applied: {waited:?}"
    );
    txn.rollback().await.unwrap();
    conn.execute_unprepared("SELECT 1").await.unwrap();
}

both!(
    migrations_go_up_down_and_up_again,
    connection_settings_are_applied,
    pool_size_and_acquire_timeout_are_honoured,
);
