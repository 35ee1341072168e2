//! Who must use 2FA and what each role may do, as pure decisions.
//!
//! The server gathers the facts (the organization's policy, the user's state, the caller's
//! role, what was proved) and asks; this crate answers with a value that carries its reason,
//! never panics, does no I/O and never reads the clock: time comes in as a parameter.
//!
//! | decision | function |
//! | --- | --- |
//! | what follows the first login step | [`login_outcome`] |
//! | whose policy applies to a login | [`choose_organization`] |
//! | changing the organization's 2FA policy | [`update_mfa_policy`] |
//! | sessions revoked by a policy change | [`sessions_to_revoke`] |
//! | the lockout check before the password | [`check_lockout`] |
//! | what follows a passed second factor | [`after_second_factor`] |
//! | a remembered device instead of the second factor | [`with_remembered_device`] |
//! | an admin resetting a member's 2FA | [`reset_member_mfa`] |
//! | an admin reading the audit log | [`read_audit_log`] |
//! | enrolling a factor of a kind | [`enroll_factor`] |
//! | removing one's own factor | [`remove_factor`] |
//! | resetting one's own 2FA | [`reset_own_mfa`] |
//! | after a recovery code is used | [`after_recovery_code`] |
//! | lockouts after failures | [`Throttle`] |

#![warn(missing_docs)]

mod admin;
mod factors;
mod login;
mod model;
mod throttle;

pub use admin::{
    Actor, AdminRefusal, MemberReset, PolicyChange, read_audit_log, reset_member_mfa,
    sessions_to_revoke, update_mfa_policy,
};
pub use enumset::EnumSet;
pub use factors::{
    AfterRecoveryCode, FactorRefusal, OwnReset, Removal, after_recovery_code, enroll_factor,
    remove_factor, replace_factor, reset_own_mfa,
};
pub use login::{
    Denial, EnrollmentReason, LoginOutcome, NoSecondFactorReason, after_second_factor,
    check_lockout, choose_organization, login_outcome, with_remembered_device,
};
pub use model::{
    AccountStatus, Assurance, FactorKind, Factors, LoginKind, Method, OrgPolicy, Proof, Role,
    SsoMode, UserState,
};
pub use throttle::Throttle;
