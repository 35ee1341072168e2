//! What the server's own database tests share: an [`App`] over a test database at a manual
//! clock, and TOTP factors on a known seed.

#![allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]

use crate::error::ErrorReason;
use std::sync::Arc;

use otp_core::{Secret, Totp};
use storage::Uuid;
use storage::testing::{NOW, TestDb};

use crate::App;
use crate::error::ApiError;
use crate::mfa::{storage_params, totp_params};

/// The app with the default configuration over `db`, its clock stopped at `NOW`.
pub(crate) async fn app(db: &TestDb) -> App {
    let config = crate::config::Config::default();
    App {
        storage: db.storage.clone(),
        passwords: crate::password::Passwords::new(&config.passwords).unwrap(),
        sms: crate::sms::from_config(&config.sms).await,
        config: Arc::new(config),
        clock: Arc::new(crate::ManualClock::new(NOW)),
        metrics: Arc::default(),
        db_health: Default::default(),
        webauthn: None,
    }
}

/// A new user without a password.
pub(crate) async fn user(db: &TestDb, email: &str) -> Uuid {
    db.storage
        .users()
        .create(email, None, NOW)
        .await
        .unwrap()
        .id
}

const SEED: &[u8] = b"12345678901234567890";

/// A pending TOTP factor of `user` on a known seed.
pub(crate) async fn pending_totp(db: &TestDb, user: Uuid) -> storage::entity::factor::Model {
    db.storage
        .factors()
        .create_otp_pending(
            user,
            storage::entity::enums::FactorKind::Totp,
            "phone",
            SEED,
            storage_params(),
            None,
            NOW,
            i64::MAX,
            &[],
        )
        .await
        .unwrap()
}

/// An active TOTP factor of `user` on the same seed, no step used yet.
pub(crate) async fn active_totp(db: &TestDb, user: Uuid) -> storage::entity::factor::Model {
    let factors = db.storage.factors();
    let factor = pending_totp(db, user).await;
    factors
        .activate(factor.id, user, None, None, NOW)
        .await
        .unwrap();
    factors.get(factor.id).await.unwrap().unwrap()
}

/// The code of those factors at `now`.
pub(crate) fn app_code(now: i64) -> String {
    let totp = Totp::new(Secret::from_bytes(SEED.to_vec()), totp_params()).unwrap();
    totp.generate(u64::try_from(now).unwrap())
        .unwrap()
        .to_string()
}

/// Whether `e` is the LOCKED_OUT answer.
pub(crate) fn is_locked_out(e: &ApiError) -> bool {
    matches!(
        e,
        ApiError::ResourceExhausted {
            reason: ErrorReason::LockedOut,
            ..
        }
    )
}
