//! Organization administration: changing the 2FA policy, resetting a member's 2FA, and the
//! sessions a change revokes.

use thiserror::Error;

use crate::model::{Assurance, OrgPolicy, Role, SsoMode};

/// Why an administrative action is refused. Each has a stable reason string for the API.
#[derive(Clone, Copy, Debug, Error, PartialEq, Eq, Hash)]
pub enum AdminRefusal {
    /// Only owners and admins may do this.
    #[error("only owners and admins of the organization may do this")]
    NotAnAdmin,
    /// The caller has no password, so cannot confirm with one: they must set one first.
    #[error("set a password first: this change must be confirmed with it")]
    PasswordNotSet,
    /// The caller did not confirm with their (correct) password.
    #[error("confirm this change with your password")]
    PasswordConfirmationRequired,
    /// 2FA cannot be required while SSO logins are exempt from it.
    #[error(
        "2FA cannot be required while SSO logins are exempt; enforce 2FA on SSO or turn SSO off"
    )]
    SsoExempts,
    /// A policy that requires 2FA must allow at least one method.
    #[error("requiring 2FA needs at least one allowed method")]
    NoMethodAllowed,
    /// Resetting one's own 2FA goes through the own-reset flow, which needs proof.
    #[error("use your own 2FA reset, not the member reset")]
    CannotResetSelf,
    /// An admin cannot reset an owner's 2FA.
    #[error("an admin cannot reset an owner's 2FA")]
    CannotResetOwner,
}

impl AdminRefusal {
    /// A stable machine-readable reason, for `google.rpc.ErrorInfo`.
    pub const fn reason(self) -> &'static str {
        match self {
            Self::NotAnAdmin => "NOT_AN_ADMIN",
            Self::PasswordNotSet => "PASSWORD_NOT_SET",
            Self::PasswordConfirmationRequired => "PASSWORD_CONFIRMATION_REQUIRED",
            Self::SsoExempts => "SSO_EXEMPTS",
            Self::NoMethodAllowed => "NO_METHOD_ALLOWED",
            Self::CannotResetSelf => "CANNOT_RESET_SELF",
            Self::CannotResetOwner => "CANNOT_RESET_OWNER",
        }
    }
}

/// The caller of an administrative action.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Actor {
    /// The caller's role in the organization concerned.
    pub role: Role,
    /// The caller has a password.
    pub has_password: bool,
    /// The request carried the caller's password and the server verified it.
    pub password_confirmed: bool,
}

/// What an accepted policy change implies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PolicyChange {
    /// 2FA goes from not required to required.
    pub enforcement_turned_on: bool,
    /// Revoke the organization's sessions below this assurance level, if any.
    pub revoke_sessions_below: Option<Assurance>,
}

/// Decides whether `actor` may change the organization's policy from `current` to `new`.
///
/// Owners and admins only, confirmed with their password (a caller without one must set one
/// first); the new policy must not require 2FA while SSO logins are exempt, and must allow a
/// method when it requires 2FA. Turning 2FA off needs the same authority as turning it on.
pub fn update_mfa_policy(
    actor: &Actor,
    current: &OrgPolicy,
    new: &OrgPolicy,
) -> Result<PolicyChange, AdminRefusal> {
    if !actor.role.is_admin() {
        return Err(AdminRefusal::NotAnAdmin);
    }
    if !actor.has_password {
        return Err(AdminRefusal::PasswordNotSet);
    }
    if !actor.password_confirmed {
        return Err(AdminRefusal::PasswordConfirmationRequired);
    }
    if new.mfa_required && new.sso_enabled && new.sso_mode == SsoMode::Exempt {
        return Err(AdminRefusal::SsoExempts);
    }
    if new.mfa_required && new.allowed_methods.is_empty() {
        return Err(AdminRefusal::NoMethodAllowed);
    }
    Ok(PolicyChange {
        enforcement_turned_on: new.mfa_required && !current.mfa_required,
        revoke_sessions_below: sessions_to_revoke(current, new),
    })
}

/// The sessions a policy change revokes: when 2FA becomes required, every session of the
/// organization that was not established with a second factor (below [`Assurance::Two`]).
pub fn sessions_to_revoke(current: &OrgPolicy, new: &OrgPolicy) -> Option<Assurance> {
    (new.mfa_required && !current.mfa_required).then_some(Assurance::Two)
}

/// Decides whether `actor_role` may reset the 2FA of a member with `target_role`.
/// `is_self` is true when the actor and the member are the same user.
///
/// Owners reset anyone else, admins reset admins and members, nobody resets themselves this
/// way (the own reset needs proof of possession instead).
pub fn reset_member_mfa(
    actor_role: Role,
    target_role: Role,
    is_self: bool,
) -> Result<(), AdminRefusal> {
    if !actor_role.is_admin() {
        return Err(AdminRefusal::NotAnAdmin);
    }
    if is_self {
        return Err(AdminRefusal::CannotResetSelf);
    }
    if actor_role == Role::Admin && target_role == Role::Owner {
        return Err(AdminRefusal::CannotResetOwner);
    }
    Ok(())
}
