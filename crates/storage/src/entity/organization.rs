//! The `organizations` table.

use sea_orm::entity::prelude::*;

use super::enums::SsoMode;

/// An organization and its 2FA policy.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "organizations")]
pub struct Model {
    /// Id (UUIDv7).
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    /// Display name.
    pub name: String,
    /// 2FA required for every member.
    pub mfa_required: bool,
    /// Since when (Unix seconds), if required.
    pub mfa_required_since: Option<i64>,
    /// Allowed factor kinds: bit 0 TOTP, bit 1 HOTP, bit 2 SMS.
    pub allowed_methods: i32,
    /// SSO logins enabled.
    pub sso_enabled: bool,
    /// Whether SSO logins skip 2FA.
    pub sso_mode: SsoMode,
    /// Created (Unix seconds).
    pub created_at: i64,
    /// How long a device members ask to be remembered skips the second factor (days, 0 to
    /// 90); 0 turns remembering off.
    pub trusted_device_days: i16,
}

/// No relations: repositories join by id explicitly.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
