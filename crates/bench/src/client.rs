//! Connections to the server and the generated clients over them.

use std::time::Duration;

use tollgate_proto::v1::{
    authentication_service_client::AuthenticationServiceClient,
    enrollment_service_client::EnrollmentServiceClient,
    organization_service_client::OrganizationServiceClient,
    session_service_client::SessionServiceClient, user_service_client::UserServiceClient,
};
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};

/// How to reach the server: its address and the API key to send, if any.
#[derive(Clone)]
pub struct Target {
    /// `http://host:port`.
    pub url: String,
    /// Sent as `x-api-key`; not needed for a server without configured callers on loopback.
    pub api_key: Option<String>,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("url", &self.url)
            .field("api_key", &self.api_key.as_ref().map(|_| "[REDACTED]"))
            .finish()
    }
}

impl Target {
    /// Opens one HTTP/2 connection.
    pub async fn connect(&self) -> Result<Channel, String> {
        Endpoint::from_shared(self.url.clone())
            .map_err(|e| format!("{}: {e}", self.url))?
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            .connect()
            .await
            .map_err(|e| format!("connecting to {}: {e}", self.url))
    }

    /// The clients over `channel`.
    pub fn clients(&self, channel: Channel) -> Clients {
        Clients {
            api_key: self
                .api_key
                .as_deref()
                .and_then(|k| MetadataValue::try_from(k).ok()),
            channel,
        }
    }
}

/// The generated clients over one connection, with the caller's API key.
#[derive(Clone, Debug)]
pub struct Clients {
    channel: Channel,
    api_key: Option<MetadataValue<tonic::metadata::Ascii>>,
}

impl Clients {
    /// A request with the API key.
    pub fn req<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        if let Some(key) = &self.api_key {
            request.metadata_mut().insert("x-api-key", key.clone());
        }
        request
    }

    /// A request with the API key and a user's session or enrollment token as
    /// `authorization: Bearer`.
    pub fn bearer<T>(&self, message: T, token: &str) -> tonic::Request<T> {
        let mut request = self.req(message);
        if let Ok(value) = MetadataValue::try_from(format!("Bearer {token}")) {
            request.metadata_mut().insert("authorization", value);
        }
        request
    }

    /// AuthenticationService.
    pub fn authentication(&self) -> AuthenticationServiceClient<Channel> {
        AuthenticationServiceClient::new(self.channel.clone())
    }

    /// EnrollmentService.
    pub fn enrollment(&self) -> EnrollmentServiceClient<Channel> {
        EnrollmentServiceClient::new(self.channel.clone())
    }

    /// UserService.
    pub fn users(&self) -> UserServiceClient<Channel> {
        UserServiceClient::new(self.channel.clone())
    }

    /// OrganizationService.
    pub fn organizations(&self) -> OrganizationServiceClient<Channel> {
        OrganizationServiceClient::new(self.channel.clone())
    }

    /// SessionService.
    pub fn sessions(&self) -> SessionServiceClient<Channel> {
        SessionServiceClient::new(self.channel.clone())
    }

    /// The standard gRPC health service.
    pub fn health(&self) -> tonic_health::pb::health_client::HealthClient<Channel> {
        tonic_health::pb::health_client::HealthClient::new(self.channel.clone())
    }
}
