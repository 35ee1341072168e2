//! Connections to the server and the generated clients over them.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tollgate_proto::v1::{
    authentication_service_client::AuthenticationServiceClient,
    enrollment_service_client::EnrollmentServiceClient,
    organization_service_client::OrganizationServiceClient,
    session_service_client::SessionServiceClient, user_service_client::UserServiceClient,
};
use tonic::body::Body;
use tonic::metadata::MetadataValue;

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
    /// Opens one HTTP/2 connection (plain text: the generator speaks no TLS).
    pub async fn connect(&self) -> Result<Conn, String> {
        let uri: http::Uri = self.url.parse().map_err(|e| format!("{}: {e}", self.url))?;
        if uri.scheme() != Some(&http::uri::Scheme::HTTP) {
            return Err(format!("{}: only http:// targets are supported", self.url));
        }
        let authority = uri
            .authority()
            .cloned()
            .ok_or_else(|| format!("{}: no host and port", self.url))?;
        let port = authority.port_u16().unwrap_or(80);
        // An IPv6 host comes bracketed (`[::1]`), which name resolution does not take.
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        let connecting = async {
            let stream = tokio::net::TcpStream::connect((host, port)).await?;
            stream.set_nodelay(true)?;
            Ok::<_, std::io::Error>(stream)
        };
        let stream = tokio::time::timeout(Duration::from_secs(5), connecting)
            .await
            .map_err(|_| format!("connecting to {}: timed out", self.url))?
            .map_err(|e| format!("connecting to {}: {e}", self.url))?;
        Conn::handshake(stream, authority)
            .await
            .map_err(|e| format!("HTTP/2 with {}: {e}", self.url))
    }

    /// The clients over `conn`.
    pub fn clients(&self, conn: Conn) -> Clients {
        Clients {
            api_key: self
                .api_key
                .as_deref()
                .and_then(|k| MetadataValue::try_from(k).ok()),
            conn,
        }
    }
}

/// One HTTP/2 connection, which the generated clients send on directly. tonic's `Channel`
/// first queues each call to a task of its own, which costs one more wake-up per call, and
/// on the machine under test every wake-up of the generator takes CPU from the server
/// (measured while the load generator was tuned; see git history of BENCHMARKS.md).
#[derive(Clone, Debug)]
pub struct Conn {
    send: SendRequest<Body>,
    authority: http::uri::Authority,
}

impl Conn {
    /// Starts HTTP/2 over `io`, a connection to `authority`, and spawns the connection's
    /// task (it ends when the server closes the connection or every sender is dropped).
    async fn handshake<T>(io: T, authority: http::uri::Authority) -> Result<Self, hyper::Error>
    where
        T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
    {
        let (send, connection) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .handshake(TokioIo::new(io))
            .await?;
        tokio::spawn(connection);
        Ok(Self { send, authority })
    }

    /// A connection to nothing, in memory, for tests of workers that never call it: the
    /// other end is returned and must be kept.
    #[cfg(test)]
    pub(crate) async fn unused() -> (Self, tokio::io::DuplexStream) {
        let (ours, theirs) = tokio::io::duplex(1 << 16);
        let authority = http::uri::Authority::from_static("unused.invalid:1");
        match Self::handshake(ours, authority).await {
            Ok(conn) => (conn, theirs),
            Err(e) => panic!("an in-memory HTTP/2 handshake failed: {e}"),
        }
    }
}

impl tower_service::Service<http::Request<Body>> for Conn {
    type Response = http::Response<hyper::body::Incoming>;
    type Error = hyper::Error;
    type Future =
        Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send + 'static>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.send.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        // The generated clients send the path alone; HTTP/2 needs the scheme and authority.
        let mut parts = request.uri().clone().into_parts();
        parts.scheme = Some(http::uri::Scheme::HTTP);
        parts.authority = Some(self.authority.clone());
        if let Ok(uri) = http::Uri::from_parts(parts) {
            *request.uri_mut() = uri;
        }
        Box::pin(self.send.send_request(request))
    }
}

/// The generated clients over one connection, with the caller's API key.
#[derive(Clone, Debug)]
pub struct Clients {
    conn: Conn,
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
    pub fn authentication(&self) -> AuthenticationServiceClient<Conn> {
        AuthenticationServiceClient::new(self.conn.clone())
    }

    /// EnrollmentService.
    pub fn enrollment(&self) -> EnrollmentServiceClient<Conn> {
        EnrollmentServiceClient::new(self.conn.clone())
    }

    /// UserService.
    pub fn users(&self) -> UserServiceClient<Conn> {
        UserServiceClient::new(self.conn.clone())
    }

    /// OrganizationService.
    pub fn organizations(&self) -> OrganizationServiceClient<Conn> {
        OrganizationServiceClient::new(self.conn.clone())
    }

    /// SessionService.
    pub fn sessions(&self) -> SessionServiceClient<Conn> {
        SessionServiceClient::new(self.conn.clone())
    }

    /// The standard gRPC health service.
    pub fn health(&self) -> tonic_health::pb::health_client::HealthClient<Conn> {
        tonic_health::pb::health_client::HealthClient::new(self.conn.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn connects_to_ipv4_and_bracketed_ipv6_hosts_and_refuses_other_schemes() {
        for bind in ["127.0.0.1:0", "[::1]:0"] {
            let Ok(listener) = tokio::net::TcpListener::bind(bind).await else {
                continue; // no IPv6 on this machine
            };
            let target = Target {
                url: format!("http://{}", listener.local_addr().unwrap()),
                api_key: None,
            };
            assert!(target.connect().await.is_ok(), "{target:?}");
        }
        let tls = Target {
            url: "https://127.0.0.1:1".to_owned(),
            api_key: None,
        };
        let err = tls.connect().await.unwrap_err();
        assert!(err.contains("only http://"), "{err}");
    }
}
