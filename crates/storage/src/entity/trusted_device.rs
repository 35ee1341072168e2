//! The `trusted_devices` table.

use sea_orm::entity::prelude::*;

/// A device a user asked to be remembered after a second factor: its token's keyed hash,
/// bound to the user and to the organization whose policy allowed it.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "trusted_devices")]
pub struct Model {
    /// Id (UUIDv7).
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    /// HMAC-SHA256 of the device token.
    #[sea_orm(unique)]
    pub token_hash: Vec<u8>,
    /// The user.
    pub user_id: Uuid,
    /// The organization whose `trusted_device_days` allowed it.
    pub org_id: Uuid,
    /// Created (Unix seconds).
    pub created_at: i64,
    /// Expiry (Unix seconds); lowered when the organization lowers its days.
    pub expires_at: i64,
    /// Last login it skipped the second factor for (Unix seconds).
    pub last_used_at: Option<i64>,
    /// The client address of the login that remembered it (full or truncated, as
    /// `clients.store_addresses` says); None when none was given.
    pub client_ip: Option<String>,
    /// The client's User-Agent as relayed; None when none was given.
    pub client_user_agent: Option<String>,
}

/// No relations: repositories join by id explicitly.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
