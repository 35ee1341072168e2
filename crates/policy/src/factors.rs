//! A user's own factor management: removing a factor, resetting their own 2FA, and what
//! using a recovery code implies.

use thiserror::Error;

use crate::model::{FactorKind, OrgPolicy, Proof, UserState};

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
}

impl FactorRefusal {
    /// A stable machine-readable reason, for `google.rpc.ErrorInfo`.
    pub const fn reason(self) -> &'static str {
        match self {
            Self::ProofRequired => "PROOF_REQUIRED",
            Self::NoSuchFactor => "NO_SUCH_FACTOR",
            Self::LastRequiredFactor => "LAST_REQUIRED_FACTOR",
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
/// A proof of possession is always needed. The factor cannot be removed when an organization
/// that requires 2FA would be left with none of the user's factors that it allows, unless the
/// user already had none that it allows.
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
            && user.factors.count_in(org.allowed_methods) > 0
            && after.count_in(org.allowed_methods) == 0
    });
    if strands {
        return Err(FactorRefusal::LastRequiredFactor);
    }
    Ok(Removal {
        delete_recovery_codes: after.total() == 0,
    })
}

/// Decides whether `user` may reset their own 2FA (to move to a new phone): a proof of
/// possession from the old device or a recovery code. Every factor and recovery code is then
/// removed and the user must enroll again before their next session. Allowed whatever the
/// organizations require, because the user re-enrolls at once.
pub fn reset_own_mfa(user: &UserState, proof: Proof) -> Result<(), FactorRefusal> {
    if user.factors.total() == 0 {
        return Err(FactorRefusal::NoSuchFactor);
    }
    if !proof.is_present() {
        return Err(FactorRefusal::ProofRequired);
    }
    Ok(())
}

/// What follows the use of a recovery code that left `remaining` codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AfterRecoveryCode {
    /// Codes remain: nothing changes.
    Continue {
        /// How many remain, to show the user.
        remaining: u32,
    },
    /// The last code was used: the user must set up 2FA again at the next login
    /// ([`UserState::must_reenroll`]).
    MustReenroll,
}

/// Decides what the use of a recovery code implies.
pub const fn after_recovery_code(remaining: u32) -> AfterRecoveryCode {
    if remaining == 0 {
        AfterRecoveryCode::MustReenroll
    } else {
        AfterRecoveryCode::Continue { remaining }
    }
}
