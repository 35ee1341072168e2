//! The `sessions` table.

use sea_orm::entity::prelude::*;

/// A session, found by the keyed hash of its token.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "sessions")]
pub struct Model {
    /// Id (UUIDv7).
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    /// HMAC-SHA256 of the token.
    #[sea_orm(unique)]
    pub token_hash: Vec<u8>,
    /// The user.
    pub user_id: Uuid,
    /// The organization the login named, if any.
    pub org_id: Option<Uuid>,
    /// 1: password or SSO only; 2: with a second factor.
    pub assurance: i16,
    /// Created (Unix seconds).
    pub created_at: i64,
    /// Last used (Unix seconds).
    pub last_seen_at: i64,
    /// Idle expiry, pushed forward on use (Unix seconds).
    pub idle_expires_at: i64,
    /// Absolute expiry (Unix seconds).
    pub expires_at: i64,
    /// When it was revoked (Unix seconds).
    pub revoked_at: Option<i64>,
    /// The client address its login's caller relayed (`ClientContext`), full or truncated
    /// as `clients.store_addresses` says; None when none was given.
    pub client_ip: Option<String>,
    /// The client's User-Agent as relayed; None when none was given.
    pub client_user_agent: Option<String>,
    /// The remembered device its login skipped the second factor with; None when a factor
    /// was used (or none was asked). A step-up with a real factor clears it.
    pub trusted_device_id: Option<Uuid>,
}

/// No relations: repositories join by id explicitly.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
