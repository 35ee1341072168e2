//! The `login_challenges` table.

use sea_orm::entity::prelude::*;

use super::enums::ChallengePurpose;

/// The state between the password step and the second factor (or enrollment).
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "login_challenges")]
pub struct Model {
    /// Id (UUIDv7).
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    /// HMAC-SHA256 of the token.
    #[sea_orm(unique)]
    pub token_hash: Vec<u8>,
    /// The user logging in.
    pub user_id: Uuid,
    /// The organization whose policy applies.
    pub org_id: Option<Uuid>,
    /// Second factor or enrollment.
    pub purpose: ChallengePurpose,
    /// Expiry (Unix seconds).
    pub expires_at: i64,
    /// Failed attempts so far.
    pub attempts: i32,
    /// When it was used up (Unix seconds).
    pub consumed_at: Option<i64>,
    /// Created (Unix seconds).
    pub created_at: i64,
    /// The user's `factor_generation` when the login that issued it read their factors: an
    /// enrollment token is void once the user activated a factor since.
    pub factor_generation: Option<i64>,
    /// The client address its login's caller relayed (`ClientContext`), full or truncated
    /// as `clients.store_addresses` says; None when none was given.
    pub client_ip: Option<String>,
    /// The client's User-Agent as relayed; None when none was given.
    pub client_user_agent: Option<String>,
}

/// No relations: repositories join by id explicitly.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
