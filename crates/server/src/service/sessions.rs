//! `tollgate.v1.SessionService`.

use crate::error::ErrorReason;
use tollgate_proto::v1;
use tollgate_proto::v1::session_service_server::SessionService;
use tonic::{Request, Response, Status};

use super::organizations::{decode_page_token, encode_page_token};
use super::{page_size, parse_id, timestamp};
use crate::auth::{bearer, caller};
use crate::error::{ApiError, ApiResult};
use crate::telemetry::rpc;
use crate::{App, audit};

/// The service.
#[derive(Debug, Clone)]
pub struct Sessions {
    app: App,
}

impl Sessions {
    /// Over the shared state.
    pub fn new(app: App) -> Self {
        Self { app }
    }
}

pub(crate) fn invalid_session() -> ApiError {
    ApiError::Unauthenticated {
        reason: ErrorReason::SessionInvalid,
        message: "the session is unknown, expired or revoked".to_owned(),
    }
}

pub(crate) fn assurance_to_proto(level: i16) -> v1::AssuranceLevel {
    match level {
        2 => v1::AssuranceLevel::SecondFactor,
        _ => v1::AssuranceLevel::SingleFactor,
    }
}

/// Whether a second factor established or raised the session: assurance 2, and not by a
/// remembered device (which skips the factor at login, but never counts as a step-up).
pub(crate) fn proven_by_factor(session: &storage::entity::session::Model) -> bool {
    session.assurance >= 2 && session.trusted_device_id.is_none()
}

/// The idle expiry a session used at `now` keeps: `now + idle_ttl` (never past its absolute
/// expiry) when the recorded one has fallen behind that by more than `tolerance` seconds, so
/// that the caller writes it; else the recorded one, and nothing is written. The idle rule
/// thus holds within `tolerance`: a session ends at most that much early, never late.
fn idle_expiry(
    session: &storage::entity::session::Model,
    now: i64,
    idle_ttl: i64,
    tolerance: i64,
) -> i64 {
    let strict = now.saturating_add(idle_ttl).min(session.expires_at);
    if strict - session.idle_expires_at > tolerance {
        strict
    } else {
        session.idle_expires_at
    }
}

fn token_field(token: &str) -> ApiResult<&str> {
    let token = token.trim();
    if token.is_empty() {
        return Err(ApiError::field("token", "is required"));
    }
    if token.len() > 256 {
        return Err(ApiError::field("token", "is too long"));
    }
    Ok(token)
}

#[tonic::async_trait]
impl SessionService for Sessions {
    async fn validate_session(
        &self,
        request: Request<v1::ValidateSessionRequest>,
    ) -> Result<Response<v1::ValidateSessionResponse>, Status> {
        rpc(&self.app, self.validate(request)).await
    }

    async fn revoke_session(
        &self,
        request: Request<v1::RevokeSessionRequest>,
    ) -> Result<Response<v1::RevokeSessionResponse>, Status> {
        rpc(&self.app, self.revoke(request)).await
    }

    async fn list_sessions(
        &self,
        request: Request<v1::ListSessionsRequest>,
    ) -> Result<Response<v1::ListSessionsResponse>, Status> {
        rpc(&self.app, self.list(request)).await
    }

    async fn revoke_other_sessions(
        &self,
        request: Request<v1::RevokeOtherSessionsRequest>,
    ) -> Result<Response<v1::RevokeOtherSessionsResponse>, Status> {
        rpc(&self.app, self.revoke_others(request)).await
    }

    async fn list_trusted_devices(
        &self,
        request: Request<v1::ListTrustedDevicesRequest>,
    ) -> Result<Response<v1::ListTrustedDevicesResponse>, Status> {
        rpc(&self.app, self.list_devices(request)).await
    }

    async fn revoke_trusted_device(
        &self,
        request: Request<v1::RevokeTrustedDeviceRequest>,
    ) -> Result<Response<v1::RevokeTrustedDeviceResponse>, Status> {
        rpc(&self.app, self.revoke_device(request)).await
    }
}

/// The user's own session that a call carries as `authorization: Bearer`, valid now.
async fn acting_session<T>(
    app: &App,
    request: &Request<T>,
) -> ApiResult<storage::entity::session::Model> {
    let token = bearer(request).ok_or_else(|| ApiError::Unauthenticated {
        reason: ErrorReason::UserTokenMissing,
        message: "send the user's session as authorization: Bearer".to_owned(),
    })?;
    app.storage
        .sessions()
        .find_valid(&token, app.now())
        .await?
        .ok_or_else(|| ApiError::Unauthenticated {
            reason: ErrorReason::UserTokenInvalid,
            message: "the bearer token is not a valid session".to_owned(),
        })
}

/// ListSessions' refusal of another user's sessions, the same whether that user exists, is
/// a member elsewhere, or the caller is no admin: nothing is learnt from it.
fn not_yours() -> ApiError {
    ApiError::PermissionDenied {
        reason: ErrorReason::NotYourAccount,
        message: "a session lists its own user's sessions, or, from an owner's or admin's \
                  session of an organization, its members'"
            .to_owned(),
    }
}

/// Where a page of `user`'s list starts: after the id in `page_token` (None for the first
/// page, or when the token is not one of this list's, which is a violation of `page_token`).
fn page_position(
    user: storage::Uuid,
    page_token: &str,
    violations: &mut Vec<(String, String)>,
) -> ApiResult<Option<storage::Uuid>> {
    if page_token.is_empty() {
        return Ok(None);
    }
    let position = decode_page_token(user, page_token).and_then(|after| {
        storage::Uuid::from_slice(&after)
            .map_err(|_| ApiError::field("page_token", "is not a page token of this list"))
    });
    match position {
        Ok(id) => Ok(Some(id)),
        Err(ApiError::InvalidArgument(mut v)) => {
            violations.append(&mut v);
            Ok(None)
        }
        Err(other) => Err(other),
    }
}

/// A session as ListSessions shows it.
fn session_to_proto(
    session: &storage::entity::session::Model,
    current: storage::Uuid,
) -> v1::ActiveSession {
    v1::ActiveSession {
        session_id: session.id.to_string(),
        organization_id: session.org_id.map(|id| id.to_string()).unwrap_or_default(),
        assurance_level: assurance_to_proto(session.assurance) as i32,
        create_time: Some(timestamp(session.created_at)),
        last_seen_time: Some(timestamp(session.last_seen_at)),
        expire_time: Some(timestamp(session.expires_at)),
        idle_expire_time: Some(timestamp(session.idle_expires_at)),
        current: session.id == current,
        client_context: crate::client::to_proto(
            session.client_ip.as_deref(),
            session.client_user_agent.as_deref(),
        ),
        remembered_device: session.trusted_device_id.is_some(),
    }
}

/// A remembered device as ListTrustedDevices shows it.
fn device_to_proto(device: &storage::entity::trusted_device::Model) -> v1::TrustedDevice {
    v1::TrustedDevice {
        device_id: device.id.to_string(),
        organization_id: device.org_id.to_string(),
        create_time: Some(timestamp(device.created_at)),
        expire_time: Some(timestamp(device.expires_at)),
        last_used_time: device.last_used_at.map(timestamp),
        client_context: crate::client::to_proto(
            device.client_ip.as_deref(),
            device.client_user_agent.as_deref(),
        ),
    }
}

impl Sessions {
    async fn validate(
        &self,
        request: Request<v1::ValidateSessionRequest>,
    ) -> ApiResult<v1::ValidateSessionResponse> {
        caller(&request)?.require("sessions")?;
        let body = request.into_inner();
        let token = token_field(&body.token)?;
        let now = self.app.now();
        let config = &self.app.config.sessions;
        let sessions = self.app.storage.sessions();
        // One read by the token's hash: revocation, expiry and the organization's policy are
        // seen at once, on every replica.
        let session = sessions
            .find_valid(token, now)
            .await?
            .ok_or_else(invalid_session)?;
        let idle = idle_expiry(&session, now, config.idle_ttl_secs, config.idle_tolerance());
        if idle != session.idle_expires_at {
            match sessions.touch(session.id, now, config.idle_ttl_secs).await {
                Ok(()) => {}
                // Expired or revoked between the lookup and now.
                Err(storage::StorageError::NotFound(_)) => return Err(invalid_session()),
                // A database outage is not the user's fault: UNAVAILABLE, not a logout.
                Err(other) => return Err(other.into()),
            }
        }
        Ok(v1::ValidateSessionResponse {
            session_id: session.id.to_string(),
            user_id: session.user_id.to_string(),
            organization_id: session.org_id.map(|id| id.to_string()).unwrap_or_default(),
            assurance_level: assurance_to_proto(session.assurance) as i32,
            expire_time: Some(timestamp(session.expires_at)),
            idle_expire_time: Some(timestamp(idle)),
            remembered_device: session.trusted_device_id.is_some(),
        })
    }

    async fn revoke(
        &self,
        request: Request<v1::RevokeSessionRequest>,
    ) -> ApiResult<v1::RevokeSessionResponse> {
        caller(&request)?.require("sessions")?;
        let body = request.into_inner();
        let token = token_field(&body.token)?;
        let now = self.app.now();
        let session = self
            .app
            .storage
            .sessions()
            .find(token)
            .await?
            .ok_or_else(invalid_session)?;
        // The revocation and its event are one transaction; a session revoked already (or
        // meanwhile) is not recorded twice.
        let event = audit::own_event(
            session.org_id,
            session.user_id,
            "session.revoked",
            "{}",
            now,
        );
        self.app
            .storage
            .sessions()
            .revoke(session.id, now, &[event])
            .await?;
        Ok(v1::RevokeSessionResponse {})
    }

    async fn list(
        &self,
        request: Request<v1::ListSessionsRequest>,
    ) -> ApiResult<v1::ListSessionsResponse> {
        caller(&request)?.require("sessions")?;
        let app = &self.app;
        let actor = acting_session(app, &request).await?;
        let body = request.into_inner();
        let mut violations = Vec::new();
        let user = if body.user_id.trim().is_empty() {
            actor.user_id
        } else {
            match parse_id("user_id", &body.user_id) {
                Ok(id) => id,
                Err(ApiError::InvalidArgument(mut v)) => {
                    violations.append(&mut v);
                    actor.user_id
                }
                Err(other) => return Err(other),
            }
        };
        let limit = page_size(&mut violations, body.page_size, 100);
        let before = page_position(user, &body.page_token, &mut violations)?;
        if !violations.is_empty() {
            return Err(ApiError::InvalidArgument(violations));
        }
        // Another user's: a member of the organization of the caller's session, who is one
        // of its owners or admins; only the member's sessions in that organization.
        let org = if user == actor.user_id {
            None
        } else {
            let org = actor.org_id.ok_or_else(not_yours)?;
            let memberships = app.storage.memberships();
            let role = memberships.get(org, actor.user_id).await?.map(|m| m.role);
            if !matches!(
                role,
                Some(storage::entity::enums::Role::Owner | storage::entity::enums::Role::Admin)
            ) {
                return Err(not_yours());
            }
            if memberships.get(org, user).await?.is_none() {
                return Err(not_yours());
            }
            Some(org)
        };
        let page = app
            .storage
            .sessions()
            .list_active(user, org, app.now(), before, limit)
            .await?;
        Ok(v1::ListSessionsResponse {
            sessions: page
                .items
                .iter()
                .map(|s| session_to_proto(s, actor.id))
                .collect(),
            next_page_token: page
                .next
                .map(|id| encode_page_token(user, id.as_bytes()))
                .unwrap_or_default(),
        })
    }

    async fn revoke_others(
        &self,
        request: Request<v1::RevokeOtherSessionsRequest>,
    ) -> ApiResult<v1::RevokeOtherSessionsResponse> {
        caller(&request)?.require("sessions")?;
        let app = &self.app;
        let session = acting_session(app, &request).await?;
        let now = app.now();
        // The revocations and their event are one transaction.
        let revoked = app
            .storage
            .sessions()
            .revoke_others(session.user_id, session.id, now, |details| {
                audit::own_event(
                    session.org_id,
                    session.user_id,
                    "session.others_revoked",
                    details,
                    now,
                )
            })
            .await?;
        tracing::info!(user_id = %session.user_id, sessions_revoked = revoked, "other sessions revoked");
        Ok(v1::RevokeOtherSessionsResponse {
            revoked_count: i64::try_from(revoked).unwrap_or(i64::MAX),
        })
    }

    async fn list_devices(
        &self,
        request: Request<v1::ListTrustedDevicesRequest>,
    ) -> ApiResult<v1::ListTrustedDevicesResponse> {
        caller(&request)?.require("sessions")?;
        let app = &self.app;
        let session = acting_session(app, &request).await?;
        let body = request.into_inner();
        let user = session.user_id;
        let mut violations = Vec::new();
        let limit = page_size(&mut violations, body.page_size, 100);
        let before = page_position(user, &body.page_token, &mut violations)?;
        if !violations.is_empty() {
            return Err(ApiError::InvalidArgument(violations));
        }
        let page = app
            .storage
            .trusted_devices()
            .list(user, app.now(), before, limit)
            .await?;
        Ok(v1::ListTrustedDevicesResponse {
            devices: page.items.iter().map(device_to_proto).collect(),
            next_page_token: page
                .next
                .map(|id| encode_page_token(user, id.as_bytes()))
                .unwrap_or_default(),
        })
    }

    async fn revoke_device(
        &self,
        request: Request<v1::RevokeTrustedDeviceRequest>,
    ) -> ApiResult<v1::RevokeTrustedDeviceResponse> {
        caller(&request)?.require("sessions")?;
        let app = &self.app;
        let session = acting_session(app, &request).await?;
        let device = parse_id("device_id", &request.get_ref().device_id)?;
        let now = app.now();
        let details = serde_json::json!({ "device_id": device.to_string() }).to_string();
        // The removal and its event (about the device's organization) are one transaction;
        // another user's device, or an expired one, is as unknown as a made-up id.
        if !app
            .storage
            .trusted_devices()
            .revoke(session.user_id, device, now, |found| {
                audit::own_event(
                    Some(found.org_id),
                    session.user_id,
                    "trusted_device.revoked",
                    &details,
                    now,
                )
            })
            .await?
        {
            return Err(ApiError::NotFound("trusted device"));
        }
        tracing::info!(user_id = %session.user_id, device_id = %device, "trusted device revoked");
        Ok(v1::RevokeTrustedDeviceResponse {})
    }
}
