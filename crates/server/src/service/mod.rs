//! The gRPC services, one module each, and the conversions they share.

pub mod authentication;
pub mod enrollment;
mod factors;
mod org_admin;
pub mod organizations;
pub mod sessions;
mod sms_enrollment;
pub mod users;
mod webauthn_enrollment;

use prost_types::Timestamp;
use storage::Uuid;
use storage::entity::enums;
use tollgate_proto::v1;

use crate::error::{ApiError, ApiResult};

/// Parses a UUID field, naming it when it is empty or malformed.
pub(crate) fn parse_id(field: &str, value: &str) -> ApiResult<Uuid> {
    if value.trim().is_empty() {
        return Err(ApiError::field(field, "is required"));
    }
    Uuid::parse_str(value.trim()).map_err(|_| ApiError::field(field, "must be a UUID"))
}

/// A list's `page_size`: 0 means 50, else 1 to `max`; anything else is a violation of the
/// field (and 50 stands in, so that the other fields are still checked).
pub(crate) fn page_size(violations: &mut Vec<(String, String)>, value: i32, max: i32) -> u64 {
    match value {
        0 => 50,
        n if (1..=max).contains(&n) => u64::try_from(n).unwrap_or(50),
        _ => {
            violations.push(("page_size".to_owned(), format!("must be 0 to {max}")));
            50
        }
    }
}

/// A Unix time as a protobuf timestamp.
pub(crate) fn timestamp(unix: i64) -> Timestamp {
    Timestamp {
        seconds: unix,
        nanos: 0,
    }
}

pub(crate) fn role_to_proto(role: enums::Role) -> v1::Role {
    match role {
        enums::Role::Owner => v1::Role::Owner,
        enums::Role::Admin => v1::Role::Admin,
        enums::Role::Member => v1::Role::Member,
    }
}

pub(crate) fn role_from_proto(field: &str, value: i32) -> ApiResult<enums::Role> {
    match v1::Role::try_from(value) {
        Ok(v1::Role::Owner) => Ok(enums::Role::Owner),
        Ok(v1::Role::Admin) => Ok(enums::Role::Admin),
        Ok(v1::Role::Member) => Ok(enums::Role::Member),
        _ => Err(ApiError::field(
            field,
            "must be ROLE_OWNER, ROLE_ADMIN or ROLE_MEMBER",
        )),
    }
}

pub(crate) fn kind_to_proto(kind: enums::FactorKind) -> v1::FactorKind {
    match kind {
        enums::FactorKind::Totp => v1::FactorKind::Totp,
        enums::FactorKind::Hotp => v1::FactorKind::Hotp,
        enums::FactorKind::Sms => v1::FactorKind::Sms,
        enums::FactorKind::Webauthn => v1::FactorKind::Webauthn,
    }
}

pub(crate) fn policy_kind_to_proto(kind: policy::FactorKind) -> v1::FactorKind {
    match kind {
        policy::FactorKind::Totp => v1::FactorKind::Totp,
        policy::FactorKind::Hotp => v1::FactorKind::Hotp,
        policy::FactorKind::Sms => v1::FactorKind::Sms,
        policy::FactorKind::WebAuthn => v1::FactorKind::Webauthn,
    }
}

/// The allowed-methods bits of the storage layer, each with its kind and its name in audit
/// details: the one table every conversion reads.
pub(crate) const METHOD_BITS: [(i32, policy::FactorKind, &str); 4] = [
    (1, policy::FactorKind::Totp, "totp"),
    (2, policy::FactorKind::Hotp, "hotp"),
    (4, policy::FactorKind::Sms, "sms"),
    (8, policy::FactorKind::WebAuthn, "webauthn"),
];

/// The allowed-methods bit set of the storage layer as policy kinds.
pub(crate) fn allowed_kinds(bits: i32) -> policy::EnumSet<policy::FactorKind> {
    METHOD_BITS
        .iter()
        .filter(|(bit, _, _)| bits & bit != 0)
        .map(|(_, kind, _)| *kind)
        .collect()
}

/// A stored role as the policy crate sees it.
pub(crate) fn policy_role(role: enums::Role) -> policy::Role {
    match role {
        enums::Role::Owner => policy::Role::Owner,
        enums::Role::Admin => policy::Role::Admin,
        enums::Role::Member => policy::Role::Member,
    }
}

pub(crate) fn org_to_proto(org: &storage::entity::organization::Model) -> v1::Organization {
    v1::Organization {
        id: org.id.to_string(),
        name: org.name.clone(),
        mfa_policy: Some(v1::MfaPolicy {
            mfa_required: org.mfa_required,
            mfa_required_time: org.mfa_required_since.map(timestamp),
            allowed_methods: allowed_kinds(org.allowed_methods)
                .iter()
                .map(|k| policy_kind_to_proto(k) as i32)
                .collect(),
            sso_enabled: org.sso_enabled,
            // A mode only means something while SSO is on.
            sso_mode: match (org.sso_enabled, org.sso_mode) {
                (false, _) => v1::SsoMode::Unspecified,
                (true, enums::SsoMode::Exempt) => v1::SsoMode::Exempt,
                (true, enums::SsoMode::Enforce) => v1::SsoMode::Enforce,
            } as i32,
            trusted_device_days: i32::from(org.trusted_device_days),
        }),
        create_time: Some(timestamp(org.created_at)),
    }
}

pub(crate) fn org_policy(org: &storage::entity::organization::Model) -> policy::OrgPolicy {
    policy::OrgPolicy {
        mfa_required: org.mfa_required,
        allowed_methods: allowed_kinds(org.allowed_methods),
        sso_enabled: org.sso_enabled,
        sso_mode: match org.sso_mode {
            enums::SsoMode::Exempt => policy::SsoMode::Exempt,
            enums::SsoMode::Enforce => policy::SsoMode::Enforce,
        },
    }
}
