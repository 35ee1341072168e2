//! Shared by the integration tests: the test database comes from `storage::testing`.

#![allow(dead_code, unused_imports, unreachable_pub)]

pub use storage::testing::{Backend, NOW, TestDb, hasher, keyring, race};

use storage::entity::enums::FactorKind;
use storage::repo::OtpParams;
use storage::{Storage, Uuid};

/// A TOTP factor of `user` (RFC 6238's SHA-1 seed), activated at [`NOW`] when `active`;
/// its id.
pub async fn totp_factor(storage: &Storage, user: Uuid, active: bool) -> Uuid {
    let params = OtpParams {
        algorithm: "SHA1",
        digits: 6,
        period: Some(30),
    };
    let factors = storage.factors();
    let pending = factors
        .create_otp_pending(
            user,
            FactorKind::Totp,
            "app",
            b"12345678901234567890",
            params,
            None,
            NOW,
            NOW + 600,
            &[],
        )
        .await
        .unwrap();
    if active {
        factors
            .activate(pending.id, user, None, None, NOW)
            .await
            .unwrap();
    }
    pending.id
}

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
