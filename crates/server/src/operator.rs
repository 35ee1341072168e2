//! What an operator does from the command line when no one in the product can: lift an
//! account's lockouts (`tollgate unlock`, in [`crate::throttle::unlock`]) and reset the 2FA
//! of a user whom no admin can reset, such as an organization's only owner who lost both the
//! phone and the recovery codes (`tollgate reset-mfa`). Both are audited.

use storage::repo::{AuditOf, ResetPlan, SessionsToRevoke};

/// What [`reset_mfa`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OperatorReset {
    /// The user.
    pub user_id: storage::Uuid,
    /// What the reset removed and revoked.
    pub outcome: storage::repo::MfaReset,
}

/// Resets the 2FA of the account of `email` as one transaction: every factor, recovery code
/// and second-factor failure count removed, every session revoked, and the user set to enroll
/// again at the next login; audited as `mfa.reset` with the operator's name (`by`) and no
/// user as actor. `None` when no account has that email (nothing is written).
pub async fn reset_mfa(
    storage: &storage::Storage,
    email: &str,
    operator: &str,
    now: i64,
) -> Result<Option<OperatorReset>, storage::StorageError> {
    let Some(user) = storage.users().find_by_email(email).await? else {
        return Ok(None);
    };
    let outcome = storage
        .factors()
        .reset(
            user.id,
            ResetPlan {
                org_id: None,
                must_reenroll: true,
                revoke: SessionsToRevoke::All,
            },
            AuditOf::by_caller("mfa.reset"),
            |r| {
                serde_json::json!({
                    "by": "operator",
                    "operator": operator,
                    "factors_removed": r.factors_removed,
                    "recovery_codes_removed": r.recovery_codes_removed,
                    "sessions_revoked": r.sessions_revoked,
                    "trusted_devices_revoked": r.trusted_devices_revoked,
                })
                .to_string()
            },
            now,
        )
        .await?;
    tracing::warn!(user_id = %user.id, operator, factors_removed = outcome.factors_removed, "2FA reset by an operator");
    Ok(Some(OperatorReset {
        user_id: user.id,
        outcome,
    }))
}
