//! The `sms_counters` table.

use sea_orm::entity::prelude::*;

/// A key's lock row: taking a slot of a limit updates it first, so that takes of one key
/// happen one at a time (the count itself is in `sms_sends`). `window_start` is when it was
/// last taken; `count` is unused since the sliding windows (migration 4).
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "sms_counters")]
pub struct Model {
    /// What is counted, e.g. `sms:user:<user id>`.
    #[sea_orm(primary_key, auto_increment = false)]
    pub key: String,
    /// When the current window began (Unix seconds).
    pub window_start: i64,
    /// Events in the current window.
    pub count: i64,
}

/// No relations.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
