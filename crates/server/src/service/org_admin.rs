//! The administrative part of `tollgate.v1.OrganizationService`: changing the 2FA policy,
//! resetting a member's 2FA, reading the audit log. Each is done by an owner or admin of the
//! organization from their own session; `policy` decides, storage applies each change and its
//! audit event in one transaction.

use crate::error::ErrorReason;
use storage::Uuid;
use storage::entity::enums::{self, FactorStatus, SsoMode};
use storage::entity::{organization, session, user};
use storage::repo::{AuditFilter, AuditOf, PolicyUpdate, SessionsToRevoke};
use tollgate_proto::v1;
use tonic::Request;
use zeroize::Zeroizing;

use super::organizations::{Organizations, collect, decode_page_token, encode_page_token};
use super::{METHOD_BITS, org_policy, org_to_proto, parse_id, policy_role, timestamp};
use crate::auth::{bearer, caller};
use crate::error::{ApiError, ApiResult};

/// The owner or admin making an administrative call, as established from their session.
struct AdminCaller {
    user: user::Model,
    session: session::Model,
    role: enums::Role,
    has_mfa: bool,
    org: organization::Model,
}

impl AdminCaller {
    /// The facts `policy` decides on. The password is confirmed separately, where needed.
    fn actor(&self, password_confirmed: bool) -> policy::Actor {
        policy::Actor {
            role: policy_role(self.role),
            has_password: self.user.password_hash.is_some(),
            password_confirmed,
            has_mfa: self.has_mfa,
            // A remembered device let the login skip its factor: not a step-up.
            session_assurance: if super::sessions::proven_by_factor(&self.session) {
                policy::Assurance::Two
            } else {
                policy::Assurance::One
            },
        }
    }
}

/// A refusal of `policy` as the API answers it.
fn refusal(refusal: policy::AdminRefusal) -> ApiError {
    use policy::AdminRefusal as R;
    let message = refusal.to_string();
    match refusal {
        R::NotAnAdmin | R::CannotResetOwner | R::AdministersElsewhere => {
            ApiError::PermissionDenied {
                reason: refusal.reason(),
                message,
            }
        }
        R::PasswordConfirmationRequired => ApiError::field("password", message),
        R::NoMethodAllowed => ApiError::field("policy.allowed_methods", message),
        R::PasswordNotSet | R::SsoExempts | R::CannotResetSelf | R::StepUpRequired => {
            ApiError::FailedPrecondition {
                reason: refusal.reason(),
                message,
            }
        }
    }
}

/// The fields of `MfaPolicy` an update may name.
const POLICY_FIELDS: [&str; 5] = [
    "mfa_required",
    "allowed_methods",
    "sso_enabled",
    "sso_mode",
    "trusted_device_days",
];

/// The storage bit of a proto factor kind.
fn kind_bit(value: i32) -> Option<i32> {
    let kind = match v1::FactorKind::try_from(value) {
        Ok(v1::FactorKind::Totp) => policy::FactorKind::Totp,
        Ok(v1::FactorKind::Hotp) => policy::FactorKind::Hotp,
        Ok(v1::FactorKind::Sms) => policy::FactorKind::Sms,
        Ok(v1::FactorKind::Webauthn) => policy::FactorKind::WebAuthn,
        _ => return None,
    };
    METHOD_BITS
        .iter()
        .find(|(_, k, _)| *k == kind)
        .map(|(bit, _, _)| *bit)
}

/// The policy after applying the fields of `update` named by `mask` to `current`, or the
/// field violations of the request. As AIP-134 says: no mask (or an empty one) means the
/// fields `update` populates (a value other than the default), and `*` means all of them
/// (the policy replaced). An SSO mode left unspecified keeps the stored one while SSO is off (a
/// policy read back while SSO is off says unspecified); with SSO on it must be chosen.
fn apply_update(
    current: &organization::Model,
    update: Option<&v1::MfaPolicy>,
    mask: Option<&prost_types::FieldMask>,
    violations: &mut Vec<(String, String)>,
) -> Option<PolicyUpdate> {
    let Some(update) = update else {
        violations.push(("policy".to_owned(), "is required".to_owned()));
        return None;
    };
    let paths: Vec<&str> = match mask {
        Some(mask) if mask.paths.iter().any(|path| path == "*") => POLICY_FIELDS.to_vec(),
        Some(mask) if !mask.paths.is_empty() => mask.paths.iter().map(String::as_str).collect(),
        _ => {
            let populated = [
                update.mfa_required,
                !update.allowed_methods.is_empty(),
                update.sso_enabled,
                update.sso_mode != v1::SsoMode::Unspecified as i32,
                update.trusted_device_days != 0,
            ];
            let paths: Vec<&str> = POLICY_FIELDS
                .iter()
                .zip(populated)
                .filter_map(|(path, set)| set.then_some(*path))
                .collect();
            if paths.is_empty() {
                violations.push((
                    "update_mask".to_owned(),
                    "nothing to change: the policy sets no field; name the fields to change \
                     (a field set to false or empty needs the mask)"
                        .to_owned(),
                ));
                return None;
            }
            paths
        }
    };
    if let Some(bad) = paths.iter().find(|p| !POLICY_FIELDS.contains(p)) {
        violations.push((
            "update_mask".to_owned(),
            format!(
                "unknown path {bad:?}; the paths are {}",
                POLICY_FIELDS.join(", ")
            ),
        ));
        return None;
    }
    let mut new = PolicyUpdate::of(current);
    let before = violations.len();
    let mut sso_mode = None;
    for path in paths {
        match path {
            "mfa_required" => new.mfa_required = update.mfa_required,
            "sso_enabled" => new.sso_enabled = update.sso_enabled,
            "allowed_methods" => {
                let mut bits = 0;
                for &value in &update.allowed_methods {
                    match kind_bit(value) {
                        Some(bit) => bits |= bit,
                        None => {
                            violations.push((
                                "policy.allowed_methods".to_owned(),
                                "each must be FACTOR_KIND_TOTP, FACTOR_KIND_HOTP, \
                                 FACTOR_KIND_SMS or FACTOR_KIND_WEBAUTHN"
                                    .to_owned(),
                            ));
                            break;
                        }
                    }
                }
                new.allowed_methods = bits;
            }
            "trusted_device_days" => match i16::try_from(update.trusted_device_days) {
                Ok(days) if (0..=storage::repo::MAX_TRUSTED_DEVICE_DAYS).contains(&days) => {
                    new.trusted_device_days = days;
                }
                _ => violations.push((
                    "policy.trusted_device_days".to_owned(),
                    "must be 0 (off) to 90".to_owned(),
                )),
            },
            _ => sso_mode = Some(update.sso_mode),
        }
    }
    // After the loop: whether an unspecified mode may stand depends on `sso_enabled`.
    if let Some(mode) = sso_mode {
        match v1::SsoMode::try_from(mode) {
            Ok(v1::SsoMode::Exempt) => new.sso_mode = SsoMode::Exempt,
            Ok(v1::SsoMode::Enforce) => new.sso_mode = SsoMode::Enforce,
            Ok(v1::SsoMode::Unspecified) if !new.sso_enabled => {}
            _ => violations.push((
                "policy.sso_mode".to_owned(),
                "must be SSO_MODE_EXEMPT or SSO_MODE_ENFORCE while SSO is on".to_owned(),
            )),
        }
    }
    (violations.len() == before).then_some(new)
}

/// The policy as the audit log records it.
fn policy_json(policy: &PolicyUpdate) -> serde_json::Value {
    let methods: Vec<&str> = METHOD_BITS
        .iter()
        .filter(|(bit, _, _)| policy.allowed_methods & bit != 0)
        .map(|(_, _, name)| *name)
        .collect();
    serde_json::json!({
        "mfa_required": policy.mfa_required,
        "allowed_methods": methods,
        "sso_enabled": policy.sso_enabled,
        "sso_mode": match policy.sso_mode {
            SsoMode::Exempt => "exempt",
            SsoMode::Enforce => "enforce",
        },
        "trusted_device_days": policy.trusted_device_days,
    })
}

/// An optional user id filter.
fn optional_id(
    violations: &mut Vec<(String, String)>,
    field: &str,
    value: &str,
) -> Option<Option<Uuid>> {
    if value.trim().is_empty() {
        Some(None)
    } else {
        collect(violations, parse_id(field, value)).map(Some)
    }
}

/// An optional time filter, in Unix seconds (rounded up when it has nanoseconds, so that
/// "at or after" and "before" keep their meaning at second resolution).
fn optional_time(
    violations: &mut Vec<(String, String)>,
    field: &str,
    value: Option<&prost_types::Timestamp>,
) -> Option<Option<i64>> {
    match value {
        None => Some(None),
        Some(t) if valid_time(t) => Some(Some(t.seconds + i64::from(t.nanos > 0))),
        Some(_) => {
            violations.push((field.to_owned(), "must be a valid time".to_owned()));
            None
        }
    }
}

fn valid_time(t: &prost_types::Timestamp) -> bool {
    (0..1_000_000_000).contains(&t.nanos) && t.seconds >= 0
}

impl Organizations {
    /// The owner or admin behind `request`: a valid session (UNAUTHENTICATED otherwise) of
    /// organization `org_id` (which must exist), whose user is active and holds a role in it.
    /// Whether the role suffices is `policy`'s to decide.
    async fn admin_caller<T>(&self, request: &Request<T>, org_id: Uuid) -> ApiResult<AdminCaller> {
        let app = &self.app;
        let now = app.now();
        let token = bearer(request).ok_or_else(|| ApiError::Unauthenticated {
            reason: ErrorReason::UserTokenMissing,
            message: "send the administrator's session as authorization: Bearer".to_owned(),
        })?;
        let session = app
            .storage
            .sessions()
            .find_valid(&token, now)
            .await?
            .ok_or_else(super::sessions::invalid_session)?;
        let org = app
            .storage
            .organizations()
            .get(org_id)
            .await?
            .ok_or(ApiError::NotFound("organization"))?;
        if session.org_id != Some(org_id) {
            return Err(ApiError::PermissionDenied {
                reason: ErrorReason::SessionOfAnotherOrganization,
                message: "log in to this organization to administer it".to_owned(),
            });
        }
        let user = app
            .storage
            .users()
            .get(session.user_id)
            .await?
            .ok_or_else(super::sessions::invalid_session)?;
        if user.status == enums::UserStatus::Disabled {
            return Err(ApiError::PermissionDenied {
                reason: ErrorReason::AccountDisabled,
                message: "the account is disabled".to_owned(),
            });
        }
        let role = app
            .storage
            .memberships()
            .get(org_id, user.id)
            .await?
            .map(|m| m.role)
            .ok_or_else(|| refusal(policy::AdminRefusal::NotAnAdmin))?;
        let has_mfa = app
            .storage
            .factors()
            .of_user(user.id, true)
            .await?
            .iter()
            .any(|f| f.status == FactorStatus::Active);
        Ok(AdminCaller {
            user,
            session,
            role,
            has_mfa,
            org,
        })
    }

    pub(super) async fn update_policy(
        &self,
        request: Request<v1::UpdateMfaPolicyRequest>,
    ) -> ApiResult<v1::UpdateMfaPolicyResponse> {
        caller(&request)?.require("organizations:write")?;
        let org_id = parse_id("organization_id", &request.get_ref().organization_id)?;
        let admin = self.admin_caller(&request, org_id).await?;
        let body = request.into_inner();
        let password = Zeroizing::new(body.password);
        let mut violations = Vec::new();
        let new = apply_update(
            &admin.org,
            body.policy.as_ref(),
            body.update_mask.as_ref(),
            &mut violations,
        );
        if password.chars().count() > 256 {
            violations.push(("password".to_owned(), "at most 256 characters".to_owned()));
        }
        let client = crate::client::parse(body.client_context.as_ref(), false, &mut violations);
        let (Some(new), true) = (new, violations.is_empty()) else {
            return Err(ApiError::InvalidArgument(violations));
        };
        let client = client.stored(&self.app.config.clients);
        let current = org_policy(&admin.org);
        let wanted = org_policy(&organization::Model {
            mfa_required: new.mfa_required,
            allowed_methods: new.allowed_methods,
            sso_enabled: new.sso_enabled,
            sso_mode: new.sso_mode,
            ..admin.org.clone()
        });
        // Every refusal that does not depend on the password comes before it is checked, so
        // a request that cannot succeed costs no hashing and counts no failure.
        policy::update_mfa_policy(&admin.actor(true), &current, &wanted).map_err(refusal)?;
        if password.is_empty() {
            return Err(refusal(policy::AdminRefusal::PasswordConfirmationRequired));
        }
        let app = &self.app;
        let now = app.now();
        super::authentication::verify_password_throttled(
            app,
            &admin.user.email,
            admin.user.password_hash.clone(),
            Some(admin.user.id),
            password,
            &crate::client::Budgets::default(),
            client.info(),
            now,
        )
        .await
        .map_err(|e| match e {
            ApiError::Unauthenticated { .. } | ApiError::UnauthenticatedLocked { .. } => {
                ApiError::PermissionDenied {
                    reason: ErrorReason::PasswordConfirmationFailed,
                    message: "the password is wrong".to_owned(),
                }
            }
            other => other,
        })?;
        let change =
            policy::update_mfa_policy(&admin.actor(true), &current, &wanted).map_err(refusal)?;
        let before = policy_json(&PolicyUpdate::of(&admin.org));
        let after = policy_json(&new);
        let changed = app
            .storage
            .organizations()
            .change_policy(
                &admin.org,
                new,
                change.revoke_sessions_below.map(|level| level as i16),
                AuditOf {
                    actor_id: Some(admin.user.id),
                    kind: "mfa_policy.updated",
                    client: client.info(),
                },
                |revoked, devices| {
                    serde_json::json!({
                        "before": before,
                        "after": after,
                        "sessions_revoked": revoked,
                        "trusted_devices_revoked": devices,
                    })
                    .to_string()
                },
                now,
            )
            .await
            .map_err(|e| match e {
                storage::StorageError::Stale(_) => ApiError::Aborted {
                    reason: ErrorReason::PolicyChanged,
                    message: "the policy changed meanwhile: read it and try again".to_owned(),
                },
                other => other.into(),
            })?;
        tracing::info!(
            org_id = %org_id,
            actor = %admin.user.id,
            mfa_required = new.mfa_required,
            sessions_revoked = changed.sessions_revoked,
            trusted_devices_revoked = changed.trusted_devices_revoked,
            "2FA policy updated"
        );
        Ok(v1::UpdateMfaPolicyResponse {
            organization: Some(org_to_proto(&changed.organization)),
            sessions_revoked: i32::try_from(changed.sessions_revoked).unwrap_or(i32::MAX),
            trusted_devices_revoked: i32::try_from(changed.trusted_devices_revoked)
                .unwrap_or(i32::MAX),
        })
    }

    pub(super) async fn reset_member(
        &self,
        request: Request<v1::ResetMemberMfaRequest>,
    ) -> ApiResult<v1::ResetMemberMfaResponse> {
        caller(&request)?.require("organizations:write")?;
        let mut violations = Vec::new();
        let org_id = collect(
            &mut violations,
            parse_id("organization_id", &request.get_ref().organization_id),
        );
        let target = collect(
            &mut violations,
            parse_id("user_id", &request.get_ref().user_id),
        );
        let client = crate::client::parse(
            request.get_ref().client_context.as_ref(),
            false,
            &mut violations,
        );
        let (Some(org_id), Some(target), true) = (org_id, target, violations.is_empty()) else {
            return Err(ApiError::InvalidArgument(violations));
        };
        let client = client.stored(&self.app.config.clients);
        let admin = self.admin_caller(&request, org_id).await?;
        // What depends on the caller alone (an admin, stepped up) comes before anything about
        // the member is looked at.
        policy::reset_member_mfa(&admin.actor(true), policy::Role::Member, &[], false)
            .map_err(refusal)?;
        let app = &self.app;
        let now = app.now();
        let actor = admin.actor(true);
        let self_reset = target == admin.user.id;
        // What the member's roles allow, on their memberships.
        let decide = |memberships: &[storage::entity::membership::Model]| {
            let Some(membership) = memberships.iter().find(|m| m.org_id == org_id) else {
                // Only a member's 2FA is this organization's business; an admin learns no
                // more about other users than that they are not members.
                return Err(ApiError::NotFound("member"));
            };
            let elsewhere: Vec<policy::Role> = memberships
                .iter()
                .filter(|m| m.org_id != org_id)
                .map(|m| policy_role(m.role))
                .collect();
            let plan = policy::reset_member_mfa(
                &actor,
                policy_role(membership.role),
                &elsewhere,
                self_reset,
            )
            .map_err(refusal)?;
            Ok(storage::repo::ResetPlan {
                org_id: Some(org_id),
                must_reenroll: plan.must_reenroll,
                revoke: if plan.revoke_sessions {
                    SessionsToRevoke::All
                } else {
                    SessionsToRevoke::None
                },
            })
        };
        // Decided first on the roles as read now, to refuse without writing; then again inside
        // the reset's transaction, on the roles as they are once it holds the member's row,
        // so that a promotion racing the reset is either seen there or waits for it.
        decide(&app.storage.memberships().of_user(target).await?)?;
        let has_factors = !app
            .storage
            .factors()
            .of_user(target, false)
            .await?
            .is_empty();
        if !has_factors && app.storage.recovery_codes().remaining(target).await? == 0 {
            return Err(ApiError::FailedPrecondition {
                reason: ErrorReason::NoFactor,
                message: "the member has no 2FA to reset".to_owned(),
            });
        }
        let outcome = app
            .storage
            .factors()
            .reset_if(
                target,
                &decide,
                AuditOf {
                    actor_id: Some(admin.user.id),
                    kind: "member.mfa_reset",
                    client: client.info(),
                },
                |r| {
                    serde_json::json!({
                        "factors_removed": r.factors_removed,
                        "recovery_codes_removed": r.recovery_codes_removed,
                        "sessions_revoked": r.sessions_revoked,
                        "trusted_devices_revoked": r.trusted_devices_revoked,
                    })
                    .to_string()
                },
                now,
            )
            .await??;
        tracing::info!(
            org_id = %org_id,
            actor = %admin.user.id,
            member = %target,
            factors_removed = outcome.factors_removed,
            "member 2FA reset"
        );
        Ok(v1::ResetMemberMfaResponse {
            factors_removed: i32::try_from(outcome.factors_removed).unwrap_or(i32::MAX),
            sessions_revoked: i32::try_from(outcome.sessions_revoked).unwrap_or(i32::MAX),
        })
    }

    pub(super) async fn audit_events(
        &self,
        request: Request<v1::ListAuditEventsRequest>,
    ) -> ApiResult<v1::ListAuditEventsResponse> {
        caller(&request)?.require("organizations:read")?;
        let org_id = parse_id("organization_id", &request.get_ref().organization_id)?;
        let admin = self.admin_caller(&request, org_id).await?;
        policy::read_audit_log(&admin.actor(true)).map_err(refusal)?;
        let body = request.into_inner();
        let mut violations = Vec::new();
        let actor = optional_id(&mut violations, "actor_user_id", &body.actor_user_id);
        let subject = optional_id(&mut violations, "subject_user_id", &body.subject_user_id);
        let since = optional_time(&mut violations, "start_time", body.start_time.as_ref());
        let until = optional_time(&mut violations, "end_time", body.end_time.as_ref());
        // Ordered on the times as given (before rounding to seconds).
        if let (Some(start), Some(end)) = (body.start_time.as_ref(), body.end_time.as_ref())
            && valid_time(start)
            && valid_time(end)
            && (start.seconds, start.nanos) >= (end.seconds, end.nanos)
        {
            violations.push(("end_time".to_owned(), "must be after start_time".to_owned()));
        }
        let valid_kind = |k: &String| {
            (1..=64).contains(&k.len())
                && k.bytes()
                    .all(|b| b.is_ascii_lowercase() || b == b'_' || b == b'.')
        };
        if body.kinds.len() > 50 || !body.kinds.iter().all(valid_kind) {
            violations.push((
                "kinds".to_owned(),
                "at most 50 kinds, each like factor.enrolled".to_owned(),
            ));
        }
        let limit = super::page_size(&mut violations, body.page_size, 500);
        let before = if body.page_token.is_empty() {
            None
        } else {
            collect(
                &mut violations,
                decode_page_token(org_id, &body.page_token).and_then(|bytes| {
                    <[u8; 8]>::try_from(bytes.as_slice())
                        .map(i64::from_be_bytes)
                        .map_err(|_| {
                            ApiError::field("page_token", "is not a page token of this list")
                        })
                }),
            )
        };
        let (Some(actor_id), Some(subject_id), Some(since), Some(until), true) =
            (actor, subject, since, until, violations.is_empty())
        else {
            return Err(ApiError::InvalidArgument(violations));
        };
        let filter = AuditFilter {
            org_id: Some(org_id),
            with_members_account_events: true,
            kinds: body.kinds,
            actor_id,
            subject_id,
            since,
            until,
        };
        let page = self
            .app
            .storage
            .audit()
            .list(&filter, before, limit)
            .await?;
        let id = |id: Option<Uuid>| id.map(|u| u.to_string()).unwrap_or_default();
        Ok(v1::ListAuditEventsResponse {
            events: page
                .items
                .into_iter()
                .map(|e| v1::AuditEvent {
                    sequence: e.id,
                    occur_time: Some(timestamp(e.occurred_at)),
                    kind: e.kind,
                    actor_user_id: id(e.actor_id),
                    subject_user_id: id(e.subject_id),
                    organization_id: id(e.org_id),
                    client_context: crate::client::to_proto(
                        e.client_ip.as_deref(),
                        e.client_user_agent.as_deref(),
                    ),
                    details: e.details,
                })
                .collect(),
            next_page_token: page
                .next
                .map(|seq| encode_page_token(org_id, &seq.to_be_bytes()))
                .unwrap_or_default(),
        })
    }
}
