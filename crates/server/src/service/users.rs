//! `tollgate.v1.UserService`.

use crate::error::ErrorReason;
use tollgate_proto::v1::user_service_server::UserService;
use tollgate_proto::v1::{self, get_user_request::Lookup};
use tonic::{Request, Response, Status};
use zeroize::Zeroizing;

use super::{parse_id, timestamp};
use crate::App;
use crate::auth::{bearer, caller};
use crate::error::{ApiError, ApiResult};
use crate::telemetry::rpc;

/// The service.
#[derive(Debug, Clone)]
pub struct Users {
    app: App,
}

impl Users {
    /// Over the shared state.
    pub fn new(app: App) -> Self {
        Self { app }
    }
}

pub(crate) fn user_to_proto(user: &storage::entity::user::Model) -> v1::User {
    v1::User {
        id: user.id.to_string(),
        email: user.email.clone(),
        has_password: user.password_hash.is_some(),
        status: match user.status {
            storage::entity::enums::UserStatus::Active => v1::UserStatus::Active,
            storage::entity::enums::UserStatus::Disabled => v1::UserStatus::Disabled,
        } as i32,
        create_time: Some(timestamp(user.created_at)),
    }
}

#[tonic::async_trait]
impl UserService for Users {
    async fn create_user(
        &self,
        request: Request<v1::CreateUserRequest>,
    ) -> Result<Response<v1::CreateUserResponse>, Status> {
        rpc(&self.app, self.create(request)).await
    }

    async fn get_user(
        &self,
        request: Request<v1::GetUserRequest>,
    ) -> Result<Response<v1::GetUserResponse>, Status> {
        rpc(&self.app, self.get(request)).await
    }

    async fn set_password(
        &self,
        request: Request<v1::SetPasswordRequest>,
    ) -> Result<Response<v1::SetPasswordResponse>, Status> {
        rpc(&self.app, self.set_password_inner(request)).await
    }
}

impl Users {
    async fn create(
        &self,
        request: Request<v1::CreateUserRequest>,
    ) -> ApiResult<v1::CreateUserResponse> {
        caller(&request)?.require("users:write")?;
        let body = request.into_inner();
        let password = Zeroizing::new(body.password);
        let mut violations = Vec::new();
        if body.email.trim().is_empty() {
            violations.push(("email".to_owned(), "is required".to_owned()));
        }
        if !password.is_empty()
            && let Err(ApiError::InvalidArgument(mut v)) =
                self.app.passwords.check_new("password", &password)
        {
            violations.append(&mut v);
        }
        if !violations.is_empty() {
            return Err(ApiError::InvalidArgument(violations));
        }
        // The email's form is checked by storage before anything is written; check it before
        // paying for a hash too.
        if self
            .app
            .storage
            .users()
            .find_by_email(&body.email)
            .await?
            .is_some()
        {
            return Err(ApiError::AlreadyExists("user"));
        }
        let hash = if password.is_empty() {
            None
        } else {
            Some(self.app.passwords.hash(password).await?)
        };
        let now = self.app.now();
        // The user and the event that records it are one transaction.
        let user = self
            .app
            .storage
            .users()
            .create_with(
                &body.email,
                hash,
                now,
                storage::repo::AuditOf::by_caller("user.created"),
            )
            .await?;
        tracing::info!(user_id = %user.id, "user created");
        Ok(v1::CreateUserResponse {
            user: Some(user_to_proto(&user)),
        })
    }

    async fn get(&self, request: Request<v1::GetUserRequest>) -> ApiResult<v1::GetUserResponse> {
        caller(&request)?.require("users:read")?;
        let users = self.app.storage.users();
        let user = match request.into_inner().lookup {
            Some(Lookup::UserId(id)) => users.get(parse_id("user_id", &id)?).await?,
            Some(Lookup::Email(email)) if !email.trim().is_empty() => {
                users.find_by_email(&email).await?
            }
            Some(Lookup::Email(_)) => return Err(ApiError::field("email", "is required")),
            None => return Err(ApiError::field("lookup", "give user_id or email")),
        };
        let user = user.ok_or(ApiError::NotFound("user"))?;
        Ok(v1::GetUserResponse {
            user: Some(user_to_proto(&user)),
        })
    }

    async fn set_password_inner(
        &self,
        request: Request<v1::SetPasswordRequest>,
    ) -> ApiResult<v1::SetPasswordResponse> {
        caller(&request)?.require("users:write")?;
        let token = bearer(&request);
        let body = request.into_inner();
        let new_password = Zeroizing::new(body.new_password);
        let current = Zeroizing::new(body.current_password);
        let user_id = parse_id("user_id", &body.user_id)?;
        self.app
            .passwords
            .check_new("new_password", &new_password)?;
        let now = self.app.now();
        let user = self
            .app
            .storage
            .users()
            .get(user_id)
            .await?
            .ok_or(ApiError::NotFound("user"))?;
        let mut keep = None;
        if let Some(token) = token {
            // The user's own call: their session, and their current password if they have one.
            let session = self
                .app
                .storage
                .sessions()
                .find_valid(&token, now)
                .await?
                .ok_or_else(crate::service::sessions::invalid_session)?;
            if session.user_id != user.id {
                return Err(ApiError::PermissionDenied {
                    reason: ErrorReason::NotYourAccount,
                    message: "a session can only set its own user's password".to_owned(),
                });
            }
            keep = Some(session.id);
            if user.password_hash.is_some() {
                crate::service::authentication::verify_password_throttled(
                    &self.app,
                    &user.email,
                    user.password_hash.clone(),
                    Some(user.id),
                    current,
                    &crate::client::Budgets::default(),
                    Default::default(),
                    now,
                )
                .await?;
            }
        }
        let hash = self.app.passwords.hash(new_password).await?;
        // The new hash, the end of the user's other sessions (all of them when no session of
        // theirs made the change) and the event commit together, or none does.
        let event = storage::repo::AuditOf {
            actor_id: None,
            kind: "password.set",
            client: Default::default(),
        };
        let revoked = self
            .app
            .storage
            .users()
            .set_password_hash(user.id, hash, keep, event, now)
            .await?;
        tracing::info!(user_id = %user.id, sessions_revoked = revoked, "password set");
        Ok(v1::SetPasswordResponse {})
    }
}
