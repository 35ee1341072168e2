//! The enumerations stored as short strings.

use sea_orm::entity::prelude::*;

/// A member's role in an organization.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::N(16))")]
pub enum Role {
    /// Owner.
    #[sea_orm(string_value = "owner")]
    Owner,
    /// Admin.
    #[sea_orm(string_value = "admin")]
    Admin,
    /// Member.
    #[sea_orm(string_value = "member")]
    Member,
}

/// A kind of second factor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::N(16))")]
pub enum FactorKind {
    /// Authenticator app.
    #[sea_orm(string_value = "totp")]
    Totp,
    /// Counter-based token.
    #[sea_orm(string_value = "hotp")]
    Hotp,
    /// SMS phone.
    #[sea_orm(string_value = "sms")]
    Sms,
    /// Passkey or security key (WebAuthn).
    #[sea_orm(string_value = "webauthn")]
    Webauthn,
}

/// A factor's lifecycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::N(16))")]
pub enum FactorStatus {
    /// Enrollment begun, not confirmed; expires.
    #[sea_orm(string_value = "pending")]
    Pending,
    /// Confirmed and usable.
    #[sea_orm(string_value = "active")]
    Active,
}

/// Whether SSO logins skip 2FA.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::N(16))")]
pub enum SsoMode {
    /// SSO logins skip 2FA.
    #[sea_orm(string_value = "exempt")]
    Exempt,
    /// 2FA on top of SSO.
    #[sea_orm(string_value = "enforce")]
    Enforce,
}

/// Whether an account may log in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::N(16))")]
pub enum UserStatus {
    /// Can log in.
    #[sea_orm(string_value = "active")]
    Active,
    /// Disabled by an operator.
    #[sea_orm(string_value = "disabled")]
    Disabled,
}

/// What a login challenge token lets its holder do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::N(16))")]
pub enum ChallengePurpose {
    /// Pass the second factor.
    #[sea_orm(string_value = "second_factor")]
    SecondFactor,
    /// Enroll a first factor.
    #[sea_orm(string_value = "enrollment")]
    Enrollment,
}

/// What a WebAuthn ceremony is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::N(16))")]
pub enum CeremonyPurpose {
    /// Registering a credential for a pending factor.
    #[sea_orm(string_value = "registration")]
    Registration,
    /// An assertion by one of the user's credentials (a login's second factor, a step-up, a
    /// proof).
    #[sea_orm(string_value = "assertion")]
    Assertion,
    /// A passwordless login with a discoverable passkey: no user named.
    #[sea_orm(string_value = "passkey_login")]
    PasskeyLogin,
}
