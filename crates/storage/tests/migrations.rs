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
    // The tables are gone.
    assert!(
        storage
            .users()
            .find_by_email("a@example.com")
            .await
            .is_err()
    );
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
    // Up again is a no-op.
    migrate_up(storage.db()).await.unwrap();
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
        )
        .await
        .unwrap_err();
    assert!(matches!(err, storage::StorageError::NotFound(_)), "{err:?}");
}

both!(
    migrations_go_up_down_and_up_again,
    connection_settings_are_applied
);
