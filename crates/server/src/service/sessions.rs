//! `tollgate.v1.SessionService`.

use crate::error::ErrorReason;
use tollgate_proto::v1;
use tollgate_proto::v1::session_service_server::SessionService;
use tonic::{Request, Response, Status};

use super::timestamp;
use crate::auth::caller;
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
}
