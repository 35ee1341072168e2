//! The `sms_sends` table.

use sea_orm::entity::prelude::*;

/// One SMS send (or verification) counted under a key, at a time: what the sliding-window
/// limits count.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "sms_sends")]
pub struct Model {
    /// Sequence.
    #[sea_orm(primary_key)]
    pub id: i64,
    /// What is counted, e.g. `sms:user:<user id>`.
    pub key: String,
    /// When (Unix seconds).
    pub at: i64,
}

/// No relations.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
