//! The `factors` table.

use sea_orm::entity::prelude::*;

use super::enums::{FactorKind, FactorStatus};

/// A second factor. The seed is sealed (`crate::crypto::KeyRing`), bound to the row id.
#[derive(Clone, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "factors")]
pub struct Model {
    /// Id (UUIDv7).
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    /// The owner.
    pub user_id: Uuid,
    /// TOTP, HOTP, SMS or WebAuthn.
    pub kind: FactorKind,
    /// Pending or active.
    pub status: FactorStatus,
    /// The user's name for it.
    pub label: String,
    /// The sealed seed (TOTP/HOTP).
    pub secret_sealed: Option<Vec<u8>>,
    /// The id of the key that sealed it, for rotation.
    pub secret_key_id: Option<i64>,
    /// SHA1, SHA256 or SHA512 (TOTP/HOTP).
    pub algorithm: Option<String>,
    /// 6 to 8 (TOTP/HOTP).
    pub digits: Option<i16>,
    /// Seconds per step (TOTP).
    pub period: Option<i32>,
    /// The last accepted time step (TOTP) or counter (HOTP); never accepted again.
    pub last_step: Option<i64>,
    /// E.164 phone number (SMS).
    pub phone_e164: Option<String>,
    /// Created (Unix seconds).
    pub created_at: i64,
    /// When a pending enrollment expires (Unix seconds).
    pub pending_expires_at: Option<i64>,
    /// Activated (Unix seconds).
    pub activated_at: Option<i64>,
    /// Last used to log in (Unix seconds).
    pub last_used_at: Option<i64>,
    /// The WebAuthn credential's id (unique across users); set when the registration is
    /// confirmed.
    pub credential_id: Option<Vec<u8>>,
    /// The WebAuthn credential (webauthn-rs's JSON: public key, signature counter, flags;
    /// nothing secret).
    pub webauthn_credential: Option<String>,
    /// A WebAuthn passkey the user can log in with alone.
    pub discoverable: bool,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("factor::Model")
            .field("id", &self.id)
            .field("user_id", &self.user_id)
            .field("kind", &self.kind)
            .field("status", &self.status)
            .field("label", &self.label)
            .field("secret_key_id", &self.secret_key_id)
            .field("last_step", &self.last_step)
            .finish_non_exhaustive()
    }
}

/// No relations: repositories join by id explicitly.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
