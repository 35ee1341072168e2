//! The outcome of the first step of a login, and which organization's policy applies.

use enumset::EnumSet;
use thiserror::Error;
use tollgate_proto::v1::ErrorReason;

use crate::model::{AccountStatus, Assurance, FactorKind, LoginKind, Method, OrgPolicy, UserState};

/// What happens after the first step of a login (password or SSO) succeeded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LoginOutcome {
    /// A session may be issued now, at this assurance level.
    Authenticated {
        /// Always [`Assurance::One`]: no second factor was involved.
        assurance: Assurance,
        /// Why no second factor was needed.
        reason: NoSecondFactorReason,
    },
    /// The user must pass one of these second-factor methods first.
    SecondFactorRequired {
        /// The methods the user has that count here. Never empty.
        methods: EnumSet<Method>,
    },
    /// The user must enroll a factor of one of these kinds before any session.
    EnrollmentRequired {
        /// The kinds the organization allows. Never empty.
        methods: EnumSet<FactorKind>,
        /// Why enrollment is needed.
        reason: EnrollmentReason,
    },
    /// No session, no challenge.
    Denied(Denial),
}

/// Why a login needs no second factor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NoSecondFactorReason {
    /// The organization does not require 2FA and the user has not set it up.
    NotEnrolled,
    /// An SSO login in an organization whose SSO mode exempts it.
    SsoExempt,
    /// Not a reason for skipping: the second factor was passed (assurance 2).
    SecondFactorPassed,
    /// A device the user asked to be remembered, within the organization's days, stood in
    /// for the second factor (assurance 2, but never a step-up).
    RememberedDevice,
}

/// Why a login needs an enrollment first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EnrollmentReason {
    /// The organization requires 2FA and the user has no factor that counts.
    OrganizationRequires,
    /// The user's 2FA was reset, or their last recovery code was used.
    ReenrollmentPending,
    /// The user passed a factor of a kind the organization does not allow, and must now
    /// enroll one it allows.
    MethodNotAllowed,
}

/// Why a login is refused outright. Each has a stable reason string for the API.
#[derive(Clone, Copy, Debug, Error, PartialEq, Eq, Hash)]
pub enum Denial {
    /// The account is disabled.
    #[error("the account is disabled")]
    AccountDisabled,
    /// Too many failed attempts; try again after `until` (Unix seconds).
    #[error("too many failed attempts; try again later")]
    LockedOut {
        /// When the lockout ends.
        until: u64,
    },
    /// A password login for an account that has no password. The server must answer it
    /// exactly like a wrong password, or it tells who has an account.
    #[error("this account has no password; log in through SSO or set a password")]
    NoPassword,
    /// An SSO login for an organization that has SSO turned off.
    #[error("SSO is not enabled for this organization")]
    SsoNotEnabled,
    /// The requested organization is not one the user belongs to.
    #[error("the user is not a member of this organization")]
    NotAMember,
    /// The user belongs to several organizations and the login did not name one.
    #[error("the user belongs to several organizations; name one")]
    OrganizationRequired,
}

impl Denial {
    /// A stable machine-readable reason, for `google.rpc.ErrorInfo`.
    pub const fn reason(self) -> ErrorReason {
        match self {
            Self::AccountDisabled => ErrorReason::AccountDisabled,
            Self::LockedOut { .. } => ErrorReason::LockedOut,
            // Never told apart from a wrong password.
            Self::NoPassword => ErrorReason::InvalidCredentials,
            Self::SsoNotEnabled => ErrorReason::SsoNotEnabled,
            Self::NotAMember => ErrorReason::NotAMember,
            Self::OrganizationRequired => ErrorReason::OrganizationRequired,
        }
    }
}

/// Decides what follows a successful first login step of `kind` for `user` under the
/// organization policy `org` (the default policy for a user in no organization), at Unix time
/// `now`.
///
/// The rules, in order:
/// 1. a disabled account, a lockout still running, a password login without a password, or
///    an SSO login where SSO is off: denied;
/// 2. an SSO login that the organization exempts: authenticated at assurance 1;
/// 3. a pending re-enrollment of a user with no factor left: enrollment required;
/// 4. a user with active factors must pass one (recovery codes offered beside them). When
///    the organization requires 2FA, factors of allowed kinds are offered; if the user has
///    none of those, all their factors are, and [`after_second_factor`] then asks for an
///    allowed one to be enrolled: a password alone never replaces a factor the user has;
/// 5. a user without factors: enrollment when the organization requires 2FA, else
///    authenticated.
///
/// Lockouts: the server checks [`check_lockout`] *before* it verifies the password, and
/// answers the same whatever the password, so a lockout never confirms a guessed password.
pub fn login_outcome(org: &OrgPolicy, user: &UserState, kind: LoginKind, now: u64) -> LoginOutcome {
    if user.status == AccountStatus::Disabled {
        return LoginOutcome::Denied(Denial::AccountDisabled);
    }
    if let Err(denial) = check_lockout(user, now) {
        return LoginOutcome::Denied(denial);
    }
    match kind {
        LoginKind::Password if !user.has_password => {
            return LoginOutcome::Denied(Denial::NoPassword);
        }
        LoginKind::Sso if !org.sso_enabled => return LoginOutcome::Denied(Denial::SsoNotEnabled),
        _ => {}
    }
    if org.exempts(kind) {
        return LoginOutcome::Authenticated {
            assurance: Assurance::One,
            reason: NoSecondFactorReason::SsoExempt,
        };
    }
    // `update_mfa_policy` refuses a policy without an allowed method, so this set is never
    // empty for a policy that went through it.
    let enroll = |reason| LoginOutcome::EnrollmentRequired {
        methods: org.allowed_methods,
        reason,
    };
    // A pending re-enrollment never lets a password alone stand in for a factor the user
    // still has: with factors, the second factor comes first (then `after_second_factor`
    // asks for the enrollment); without, enrollment is all that is left.
    if user.must_reenroll && user.factors.total() == 0 {
        return enroll(EnrollmentReason::ReenrollmentPending);
    }
    let allowed_here = user.factors.kinds() & org.allowed_methods;
    let counted = if org.mfa_required && !allowed_here.is_empty() {
        allowed_here
    } else {
        user.factors.kinds()
    };
    let mut methods: EnumSet<Method> = counted.iter().map(Method::from).collect();
    // Recovery codes stand in for the user's factors; they never replace enrolling one.
    if user.recovery_codes_left > 0 && !methods.is_empty() {
        methods |= Method::RecoveryCode;
    }
    if !methods.is_empty() {
        LoginOutcome::SecondFactorRequired { methods }
    } else if org.mfa_required {
        enroll(EnrollmentReason::OrganizationRequires)
    } else {
        LoginOutcome::Authenticated {
            assurance: Assurance::One,
            reason: NoSecondFactorReason::NotEnrolled,
        }
    }
}

/// Refuses a login step while the user is locked out. The server calls this before verifying
/// the password, so that the answer does not depend on it.
pub fn check_lockout(user: &UserState, now: u64) -> Result<(), Denial> {
    match user.locked_until {
        Some(until) if until > now => Err(Denial::LockedOut { until }),
        _ => Ok(()),
    }
}

/// What follows a passed second factor: a session at assurance 2, unless the user must enroll
/// again (`must_reenroll`), or the organization requires 2FA and the user has no factor of an
/// allowed kind (they passed one it does not allow); in both cases they must now enroll an
/// allowed kind.
pub fn after_second_factor(org: &OrgPolicy, user: &UserState) -> LoginOutcome {
    if user.must_reenroll {
        return LoginOutcome::EnrollmentRequired {
            methods: org.allowed_methods,
            reason: EnrollmentReason::ReenrollmentPending,
        };
    }
    if org.mfa_required && (user.factors.kinds() & org.allowed_methods).is_empty() {
        LoginOutcome::EnrollmentRequired {
            methods: org.allowed_methods,
            reason: EnrollmentReason::MethodNotAllowed,
        }
    } else {
        LoginOutcome::Authenticated {
            assurance: Assurance::Two,
            reason: NoSecondFactorReason::SecondFactorPassed,
        }
    }
}

/// What a valid remembered device makes of a login's `outcome`: it stands in for the second
/// factor the login is asked for, and for nothing else (no session where an enrollment, a
/// lockout or a refusal stands). What follows is what follows a passed second factor
/// ([`after_second_factor`]: a user who must enroll again, or whose factors the organization
/// no longer allows, enrolls), the session marked as the remembered device's.
pub fn with_remembered_device(
    outcome: LoginOutcome,
    org: &OrgPolicy,
    user: &UserState,
) -> LoginOutcome {
    match outcome {
        LoginOutcome::SecondFactorRequired { .. } => match after_second_factor(org, user) {
            LoginOutcome::Authenticated { assurance, .. } => LoginOutcome::Authenticated {
                assurance,
                reason: NoSecondFactorReason::RememberedDevice,
            },
            other => other,
        },
        other => other,
    }
}

/// Chooses the organization whose policy applies to a login: the one the login names, which
/// must be one of the user's, or the user's only one when it names none. `Ok(None)` for a
/// user in no organization who names none (the default policy applies).
pub fn choose_organization<Id: PartialEq + Copy>(
    memberships: &[Id],
    requested: Option<Id>,
) -> Result<Option<Id>, Denial> {
    match (requested, memberships) {
        (Some(id), _) if memberships.contains(&id) => Ok(Some(id)),
        (Some(_), _) => Err(Denial::NotAMember),
        (None, []) => Ok(None),
        (None, [only]) => Ok(Some(*only)),
        (None, _) => Err(Denial::OrganizationRequired),
    }
}
