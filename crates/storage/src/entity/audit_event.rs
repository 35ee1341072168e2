//! The `audit_events` table.

use sea_orm::entity::prelude::*;

/// One security-relevant change.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "audit_events")]
pub struct Model {
    /// Sequence number: events are listed in this order.
    #[sea_orm(primary_key)]
    pub id: i64,
    /// When (Unix seconds).
    pub occurred_at: i64,
    /// The organization concerned.
    pub org_id: Option<Uuid>,
    /// Who did it.
    pub actor_id: Option<Uuid>,
    /// Whom it concerned.
    pub subject_id: Option<Uuid>,
    /// What happened, e.g. `factor.removed`.
    pub kind: String,
    /// Details as a JSON object (never secrets).
    pub details: String,
    /// The client address the audited call's caller relayed (full or truncated, as the
    /// server keeps it); None when none was given.
    pub client_ip: Option<String>,
    /// The client's User-Agent as relayed; None when none was given.
    pub client_user_agent: Option<String>,
}

/// No relations: repositories join by id explicitly.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
