//! The outcome of the first step of a login, and which organization's policy applies.

use enumset::EnumSet;
use thiserror::Error;

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
}

/// Why a login needs an enrollment first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EnrollmentReason {
    /// The organization requires 2FA and the user has no factor that counts.
    OrganizationRequires,
    /// The user's 2FA was reset, or their last recovery code was used.
    ReenrollmentPending,
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
    /// A password login for an account that has no password.
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
    pub const fn reason(self) -> &'static str {
        match self {
            Self::AccountDisabled => "ACCOUNT_DISABLED",
            Self::LockedOut { .. } => "LOCKED_OUT",
            Self::NoPassword => "NO_PASSWORD",
            Self::SsoNotEnabled => "SSO_NOT_ENABLED",
            Self::NotAMember => "NOT_A_MEMBER",
            Self::OrganizationRequired => "ORGANIZATION_REQUIRED",
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
/// 3. a pending re-enrollment: enrollment required;
/// 4. when the organization requires 2FA only factors of allowed kinds count: second factor
///    required if the user has one (recovery codes offered beside it), else enrollment;
/// 5. otherwise a user who set up 2FA must use it (all their factors and recovery codes
///    count), and a user who did not is authenticated.
pub fn login_outcome(org: &OrgPolicy, user: &UserState, kind: LoginKind, now: u64) -> LoginOutcome {
    if user.status == AccountStatus::Disabled {
        return LoginOutcome::Denied(Denial::AccountDisabled);
    }
    if let Some(until) = user.locked_until.filter(|&until| until > now) {
        return LoginOutcome::Denied(Denial::LockedOut { until });
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
    let enroll = |reason| {
        // An organization policy with no allowed method is refused when it is set
        // (`update_mfa_policy`); should one reach here anyway, offer every kind rather
        // than lock the user out with nothing to enroll.
        let methods = if org.allowed_methods.is_empty() {
            EnumSet::all()
        } else {
            org.allowed_methods
        };
        LoginOutcome::EnrollmentRequired { methods, reason }
    };
    if user.must_reenroll {
        return enroll(EnrollmentReason::ReenrollmentPending);
    }
    let counted = if org.mfa_required {
        user.factors.kinds() & org.allowed_methods
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
