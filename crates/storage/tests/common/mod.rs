//! Shared by the integration tests: the test database comes from `storage::testing`.

#![allow(dead_code, unused_imports, unreachable_pub)]

pub use storage::testing::{Backend, NOW, TestDb, hasher, keyring, race, totp_factor};

/// Runs a test body on both engines: `both!(name)` expects `async fn name(db: &TestDb)`.
#[macro_export]
macro_rules! both {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                use super::common::{Backend, TestDb};

                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn sqlite() {
                    let db = TestDb::new(Backend::Sqlite).await;
                    super::$name(&db).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn postgres() {
                    let db = TestDb::new(Backend::Postgres).await;
                    super::$name(&db).await;
                }
            }
        )*
    };
}
