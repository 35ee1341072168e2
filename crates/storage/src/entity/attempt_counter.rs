//! The `attempt_counters` table.

use sea_orm::entity::prelude::*;

/// A failure counter and lockout, per key (e.g. a user's second-factor attempts).
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "attempt_counters")]
pub struct Model {
    /// What is counted, e.g. `mfa:<user id>`.
    #[sea_orm(primary_key, auto_increment = false)]
    pub key: String,
    /// Consecutive failures.
    pub failures: i64,
    /// Locked until (Unix seconds).
    pub locked_until: Option<i64>,
    /// Last changed (Unix seconds).
    pub updated_at: i64,
}

/// No relations: repositories join by id explicitly.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
