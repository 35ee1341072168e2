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
        let sessions = self.app.storage.sessions();
        let session = sessions
            .find_valid(token, now)
            .await?
            .ok_or_else(invalid_session)?;
        match sessions
            .touch(session.id, now, self.app.config.sessions.idle_ttl_secs)
            .await
        {
            Ok(()) => {}
            // Expired or revoked between the lookup and now.
            Err(storage::StorageError::NotFound(_)) => return Err(invalid_session()),
            // A database outage is not the user's fault: UNAVAILABLE, not a logout.
            Err(other) => return Err(other.into()),
        }
        let idle = (now + self.app.config.sessions.idle_ttl_secs).min(session.expires_at);
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
