//! The `recovery_codes` table.

use sea_orm::entity::prelude::*;

/// A recovery code, stored only as a keyed hash.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "recovery_codes")]
pub struct Model {
    /// Id (UUIDv7).
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    /// The owner.
    pub user_id: Uuid,
    /// HMAC-SHA256 of the code, bound to the user.
    #[sea_orm(unique)]
    pub code_hash: Vec<u8>,
    /// When it was used (Unix seconds); a code is used once.
    pub used_at: Option<i64>,
    /// Created (Unix seconds).
    pub created_at: i64,
}

/// No relations: repositories join by id explicitly.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
