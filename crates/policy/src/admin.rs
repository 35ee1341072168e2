//! Organization administration: changing the 2FA policy, resetting a member's 2FA, and the
//! sessions a change revokes.

use thiserror::Error;
use tollgate_proto::v1::ErrorReason;

use crate::model::{Assurance, LoginKind, OrgPolicy, Role, SsoMode};

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
    /// The member administers another organization: their 2FA is not this one's to reset.
    #[error("this member administers another organization; an owner there must reset them")]
    AdministersElsewhere,
    /// The caller has 2FA but this session was not established with it: step up first.
    #[error("confirm with your second factor first (step up this session)")]
    StepUpRequired,
}

impl AdminRefusal {
    /// A stable machine-readable reason, for `google.rpc.ErrorInfo`.
    pub const fn reason(self) -> ErrorReason {
        match self {
            Self::NotAnAdmin => ErrorReason::NotAnAdmin,
            Self::PasswordNotSet => ErrorReason::PasswordNotSet,
            // Sent as INVALID_ARGUMENT naming `password`.
            Self::PasswordConfirmationRequired => ErrorReason::InvalidArgument,
            Self::SsoExempts => ErrorReason::SsoExempts,
            // Sent as INVALID_ARGUMENT naming `policy.allowed_methods`.
            Self::NoMethodAllowed => ErrorReason::InvalidArgument,
            Self::CannotResetSelf => ErrorReason::CannotResetSelf,
            Self::CannotResetOwner => ErrorReason::CannotResetOwner,
            Self::AdministersElsewhere => ErrorReason::AdministersElsewhere,
            Self::StepUpRequired => ErrorReason::StepUpRequired,
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
    /// The caller has an active second factor.
    pub has_mfa: bool,
    /// The assurance level of the caller's session.
    pub session_assurance: Assurance,
}

impl Actor {
    /// An admin who has 2FA must have used it for this session; one who has none (yet) can
    /// still act, for example to turn on the requirement that will make them enroll.
    fn check_assurance(&self) -> Result<(), AdminRefusal> {
        if self.has_mfa && self.session_assurance < Assurance::Two {
            Err(AdminRefusal::StepUpRequired)
        } else {
            Ok(())
        }
    }
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
/// first), with a session at assurance 2 if they have 2FA; the new policy must not require
/// 2FA while SSO logins are exempt, and must allow at least one method. Turning 2FA off needs
/// the same authority as turning it on.
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
    actor.check_assurance()?;
    if new.mfa_required && new.sso_enabled && new.sso_mode == SsoMode::Exempt {
        return Err(AdminRefusal::SsoExempts);
    }
    if new.allowed_methods.is_empty() {
        return Err(AdminRefusal::NoMethodAllowed);
    }
    Ok(PolicyChange {
        enforcement_turned_on: new.mfa_required && !current.mfa_required,
        revoke_sessions_below: sessions_to_revoke(current, new),
    })
}

/// The sessions a policy change revokes: every session of the organization that was not
/// established with a second factor (below [`Assurance::Two`]) when 2FA becomes required, or
/// when SSO logins stop being exempt (SSO turned to enforce, or off): single-factor SSO
/// sessions of members who have 2FA skipped it, and a session does not record how it began.
pub fn sessions_to_revoke(current: &OrgPolicy, new: &OrgPolicy) -> Option<Assurance> {
    let enforcement_on = new.mfa_required && !current.mfa_required;
    let exemption_ended = current.exempts(LoginKind::Sso) && !new.exempts(LoginKind::Sso);
    (enforcement_on || exemption_ended).then_some(Assurance::Two)
}

/// Decides whether `actor` may read the organization's audit log: owners and admins, with a
/// session at assurance 2 if they have 2FA (the log shows who did what to whom). No password
/// confirmation: reading changes nothing.
pub fn read_audit_log(actor: &Actor) -> Result<(), AdminRefusal> {
    if !actor.role.is_admin() {
        return Err(AdminRefusal::NotAnAdmin);
    }
    actor.check_assurance()
}

/// What an accepted member reset implies. The server removes every factor and recovery
/// code of the member and, as told here, revokes their sessions and makes them enroll again
/// at their next login (even where the organization does not require 2FA: they had it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MemberReset {
    /// Revoke every session of the member.
    pub revoke_sessions: bool,
    /// Set [`crate::UserState::must_reenroll`].
    pub must_reenroll: bool,
}

/// Decides whether `actor` may reset the 2FA of a member whose role here is `target_role`
/// and who also holds `target_roles_elsewhere` in other organizations. `is_self` is true when
/// the actor and the member are the same user.
///
/// Owners reset anyone else here, admins reset admins and members; nobody resets themselves
/// this way (the own reset needs proof of possession instead); a member who is an owner or
/// admin of another organization is that organization's to reset, since factors belong to
/// the user, not to one organization.
pub fn reset_member_mfa(
    actor: &Actor,
    target_role: Role,
    target_roles_elsewhere: &[Role],
    is_self: bool,
) -> Result<MemberReset, AdminRefusal> {
    if !actor.role.is_admin() {
        return Err(AdminRefusal::NotAnAdmin);
    }
    if is_self {
        return Err(AdminRefusal::CannotResetSelf);
    }
    actor.check_assurance()?;
    if actor.role == Role::Admin && target_role == Role::Owner {
        return Err(AdminRefusal::CannotResetOwner);
    }
    if target_roles_elsewhere.iter().any(|role| role.is_admin()) {
        return Err(AdminRefusal::AdministersElsewhere);
    }
    Ok(MemberReset {
        revoke_sessions: true,
        must_reenroll: true,
    })
}
