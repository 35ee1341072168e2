//! The `sms_codes` table.

use sea_orm::entity::prelude::*;

/// An SMS code sent for a factor, stored only as a keyed hash.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "sms_codes")]
pub struct Model {
    /// Id (UUIDv7).
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    /// The SMS factor.
    pub factor_id: Uuid,
    /// HMAC-SHA256 of the code, bound to the factor.
    pub code_hash: Vec<u8>,
    /// Expiry (Unix seconds).
    pub expires_at: i64,
    /// Failed attempts so far.
    pub attempts: i32,
    /// Sent (Unix seconds).
    pub sent_at: i64,
    /// When it was used (Unix seconds).
    pub consumed_at: Option<i64>,
}

/// No relations: repositories join by id explicitly.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
