//! Repositories: the domain operations on each table.

mod attempts;
mod audit;
mod ceremonies;
mod challenges;
mod factors;
mod memberships;
mod organizations;
mod recovery_codes;
pub(crate) mod sessions;
mod sms_codes;
mod sms_limits;
mod trusted_devices;
mod users;

pub use attempts::{Attempts, Failure, FailureAudit, Lockouts, second_factor_counter};
pub(crate) use audit::AuditQueue;
pub use audit::{Audit, AuditFilter, AuditOf, NewAuditEvent};
pub use ceremonies::{Ceremonies, NewCeremony};
pub use challenges::Challenges;
pub use factors::{
    Acceptance, Accepted, Activation, Factors, MfaReset, OtpParams, ResetPlan, RotationProgress,
    SessionsToRevoke,
};
pub use memberships::Memberships;
pub use organizations::{Organizations, PolicyChanged, PolicyUpdate};
pub use recovery_codes::RecoveryCodes;
pub use sessions::{NewSession, SessionFactors, Sessions};
pub use sms_codes::SmsCodes;
pub use sms_limits::{Limit, LimitReached, PumpingGuard, Refused, SmsLimits, Taken};
pub use trusted_devices::{MAX_TRUSTED_DEVICE_DAYS, NewTrustedDevice, SeenUser, TrustedDevices};
pub use users::{MfaSummary, OrganizationsToRead, Users};

/// Where a login came from, as it is stored: the client address its caller relayed (full,
/// or truncated to its network, as the caller decides) and the User-Agent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClientInfo<'a> {
    /// The address (at most 45 characters); None when none was given.
    pub ip: Option<&'a str>,
    /// The User-Agent (at most 512 characters); None when none was given.
    pub user_agent: Option<&'a str>,
}

impl ClientInfo<'_> {
    /// Refuses values longer than their columns hold.
    pub(crate) fn check(&self) -> crate::Result<()> {
        let too_long =
            |value: Option<&str>, max: usize| value.is_some_and(|v| v.chars().count() > max);
        if too_long(self.ip, 45) {
            return Err(crate::StorageError::Invalid {
                field: "client_ip",
                reason: "at most 45 characters",
            });
        }
        if too_long(self.user_agent, 512) {
            return Err(crate::StorageError::Invalid {
                field: "client_user_agent",
                reason: "at most 512 characters",
            });
        }
        Ok(())
    }
}

/// A page of results and the cursor of the next page, if there is one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page<T, C> {
    /// The items.
    pub items: Vec<T>,
    /// Pass this to get the next page; `None` on the last page.
    pub next: Option<C>,
}

/// The page sizes repositories accept: at least 1, at most 1,000.
pub(crate) fn clamp_limit(limit: u64) -> u64 {
    limit.clamp(1, 1_000)
}

/// Splits one extra fetched row off to decide whether a next page exists.
pub(crate) fn page<T, C>(mut items: Vec<T>, limit: u64, cursor: impl Fn(&T) -> C) -> Page<T, C> {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let next = if items.len() > limit {
        items.truncate(limit);
        items.last().map(cursor)
    } else {
        None
    };
    Page { items, next }
}
