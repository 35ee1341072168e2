//! A user's own factor management: removing a factor, resetting their own 2FA, and what
//! using a recovery code implies.

use thiserror::Error;
use tollgate_proto::v1::ErrorReason;

use crate::model::{FactorKind, Factors, OrgPolicy, Proof, UserState};

/// Why a change to one's own factors is refused. Each has a stable reason string.
#[derive(Clone, Copy, Debug, Error, PartialEq, Eq, Hash)]
pub enum FactorRefusal {
    /// The change needs a current code or a recovery code.
    #[error("prove possession with a current code or a recovery code")]
    ProofRequired,
    /// The user has no active factor of that kind.
    #[error("no such active factor")]
    NoSuchFactor,
    /// An organization the user belongs to requires 2FA, and this is the user's last
    /// factor that counts there. Only an admin can reset it.
    #[error(
        "an organization you belong to requires 2FA: this is your last factor; ask an admin to reset it"
    )]
    LastRequiredFactor,
    /// The organization does not allow this kind of factor.
    #[error("your organization does not allow this kind of second factor")]
    MethodNotAllowed,
}

impl FactorRefusal {
    /// A stable machine-readable reason, for `google.rpc.ErrorInfo`.
    pub const fn reason(self) -> ErrorReason {
        match self {
            Self::ProofRequired => ErrorReason::ProofRequired,
            Self::NoSuchFactor => ErrorReason::NoSuchFactor,
            Self::LastRequiredFactor => ErrorReason::LastRequiredFactor,
            Self::MethodNotAllowed => ErrorReason::MethodNotAllowed,
        }
    }
}

/// What removing a factor implies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Removal {
    /// No factor is left: the recovery codes go too (they only stand in for factors).
    pub delete_recovery_codes: bool,
}

/// Decides whether `user` may remove one active factor of `kind`, given `proof` and the
/// policies of every organization they belong to.
///
/// A proof of possession is always needed. While an organization the user belongs to requires
/// 2FA, the user's last factor cannot be removed, nor their last factor of a kind that
/// organization allows.
pub fn remove_factor(
    user: &UserState,
    kind: FactorKind,
    proof: Proof,
    organizations: &[OrgPolicy],
) -> Result<Removal, FactorRefusal> {
    if user.factors.count(kind) == 0 {
        return Err(FactorRefusal::NoSuchFactor);
    }
    if !proof.is_present() {
        return Err(FactorRefusal::ProofRequired);
    }
    let after = user.factors.without_one(kind);
    let strands = organizations.iter().any(|org| {
        org.mfa_required
            && (after.total() == 0
                || (user.factors.count_in(org.allowed_methods) > 0
                    && after.count_in(org.allowed_methods) == 0))
    });
    if strands {
        return Err(FactorRefusal::LastRequiredFactor);
    }
    Ok(Removal {
        delete_recovery_codes: after.total() == 0,
    })
}

/// Decides whether `user` may replace one active factor of kind `old` by a newly confirmed
/// one of kind `new` (a change of method, journey 8): as [`remove_factor`] would decide for
/// the old factor once the new one is counted, the confirming code being the proof. So an
/// organization that requires 2FA is never left without a factor of a kind it allows.
pub fn replace_factor(
    user: &UserState,
    old: FactorKind,
    new: FactorKind,
    organizations: &[OrgPolicy],
) -> Result<(), FactorRefusal> {
    let with_new = UserState {
        factors: user.factors.with_one(new),
        ..*user
    };
    remove_factor(&with_new, old, Proof::FactorCode, organizations).map(|_| ())
}

/// What an accepted own reset implies: the server removes every factor and recovery code,
/// revokes the user's other sessions and sets [`UserState::must_reenroll`]. The one session
/// left is the one that has just proved possession, where the new phone gets enrolled; any
/// later login asks for enrollment before it gives a session. Under enforcement this keeps
/// the rule of journey 9 (no new session without 2FA) while letting the user move to a new
/// phone (journey 11).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct OwnReset {
    /// Revoke the user's other sessions.
    pub revoke_other_sessions: bool,
    /// Set [`UserState::must_reenroll`].
    pub must_reenroll: bool,
}

/// Decides whether `user` may reset their own 2FA (to move to a new phone): a proof of
/// possession from the old device or a recovery code.
pub fn reset_own_mfa(user: &UserState, proof: Proof) -> Result<OwnReset, FactorRefusal> {
    if user.factors.total() == 0 {
        return Err(FactorRefusal::NoSuchFactor);
    }
    if !proof.is_present() {
        return Err(FactorRefusal::ProofRequired);
    }
    Ok(OwnReset {
        revoke_other_sessions: true,
        must_reenroll: true,
    })
}

/// Decides whether the user may enroll a factor of `kind` for the organization `org` (the
/// one whose login or session the enrollment happens in): only kinds it allows.
pub fn enroll_factor(org: &OrgPolicy, kind: FactorKind) -> Result<(), FactorRefusal> {
    if org.allowed_methods.contains(kind) {
        Ok(())
    } else {
        Err(FactorRefusal::MethodNotAllowed)
    }
}

/// What follows the use of a recovery code that left `remaining` codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AfterRecoveryCode {
    /// Codes remain: nothing changes.
    Continue {
        /// How many remain, to show the user.
        remaining: u32,
    },
    /// The last code was used: the user must set up 2FA again before this login completes.
    MustReenroll,
}

/// Decides what the use of a recovery code that left `remaining` codes implies for a user
/// with `factors`. Someone using recovery codes has lost their factor: when the last code is
/// gone they must set up 2FA again — at once, in the login the code just passed (the server
/// answers with an enrollment token, not a session), and at every later login until they do
/// (after the second factor, never on a password alone). The factors they had then are
/// retired by that enrollment.
pub fn after_recovery_code(remaining: u32, _factors: &Factors) -> AfterRecoveryCode {
    if remaining == 0 {
        AfterRecoveryCode::MustReenroll
    } else {
        AfterRecoveryCode::Continue { remaining }
    }
}
