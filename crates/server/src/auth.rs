//! Who is calling: an internal service identified by API key (`x-api-key`) or by its client
//! certificate under mutual TLS, with scopes. When no caller is configured the server only
//! listens on loopback and every local caller gets every scope.

use crate::error::ErrorReason;
use std::sync::Arc;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tonic::{Request, Status};

use crate::config::{Config, SCOPES};
use crate::error::ApiError;

/// An authenticated calling service, put into each request's extensions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    /// The configured name (`local` when no caller is configured).
    pub name: String,
    /// What it may do.
    pub scopes: Vec<String>,
}

impl Caller {
    /// Refuses with PERMISSION_DENIED unless the caller has `scope`.
    pub fn require(&self, scope: &str) -> Result<(), ApiError> {
        if self.scopes.iter().any(|s| s == scope) {
            Ok(())
        } else {
            Err(ApiError::PermissionDenied {
                reason: ErrorReason::MissingScope,
                message: format!("the caller {} lacks the scope {scope}", self.name),
            })
        }
    }
}

#[derive(Debug)]
struct Credential {
    name: String,
    sha256: [u8; 32],
    scopes: Vec<String>,
}

/// Checks callers against the configured API keys and client certificates.
#[derive(Clone, Debug)]
pub struct CallerAuth {
    api_keys: Arc<Vec<Credential>>,
    tls_clients: Arc<Vec<Credential>>,
    open: bool,
    db_health: crate::health::DbHealth,
}

fn parse_hex(hex_text: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    // Validated by `Config::validate`; a bad value simply never matches.
    let _ = hex::decode_to_slice(hex_text, &mut out);
    out
}

/// SHA-256 of an API key, hex: what the configuration stores.
pub fn hash_api_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.trim().as_bytes()))
}

impl CallerAuth {
    /// From the configuration; calls fail fast while `db_health` says the database is down.
    pub fn new(config: &Config, db_health: crate::health::DbHealth) -> Self {
        let convert = |name: &str, sha: &str, scopes: &[String]| Credential {
            name: name.to_owned(),
            sha256: parse_hex(sha),
            scopes: scopes.to_vec(),
        };
        Self {
            api_keys: Arc::new(
                config
                    .api_keys
                    .iter()
                    .map(|k| convert(&k.name, &k.sha256, &k.scopes))
                    .collect(),
            ),
            tls_clients: Arc::new(
                config
                    .tls_clients
                    .iter()
                    .map(|c| convert(&c.name, &c.sha256, &c.scopes))
                    .collect(),
            ),
            open: !config.callers_configured(),
            db_health,
        }
    }

    /// The interceptor: identifies the caller or refuses with UNAUTHENTICATED; then, while
    /// the health check knows the database is down, refuses at once with UNAVAILABLE
    /// (`DATABASE_UNAVAILABLE`) rather than let the call wait for a connection, and while it
    /// finds this replica's clock off from the database's, with UNAVAILABLE (`CLOCK_SKEW`).
    #[allow(clippy::result_large_err, reason = "tonic's interceptor signature")]
    pub fn intercept(&self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let caller = self.identify(&request).map_err(Status::from)?;
        tracing::Span::current().record("caller", caller.name.as_str());
        match self.db_health.refusal() {
            None => {}
            Some(crate::health::Refusal::DatabaseDown) => {
                return Err(ApiError::Unavailable(
                    "the health check found the database down".to_owned(),
                )
                .into());
            }
            Some(crate::health::Refusal::ClockSkew) => {
                return Err(ApiError::Upstream {
                    reason: ErrorReason::ClockSkew,
                    message: "this replica's clock is off; try another replica".to_owned(),
                    detail: "the health check found the clock off from the database's".to_owned(),
                }
                .into());
            }
        }
        request.extensions_mut().insert(caller);
        Ok(request)
    }

    fn identify(&self, request: &Request<()>) -> Result<Caller, ApiError> {
        if let Some(certs) = request.peer_certs()
            && let Some(cert) = certs.first()
        {
            let digest: [u8; 32] = Sha256::digest(cert.as_ref()).into();
            if let Some(found) = find(&self.tls_clients, &digest) {
                return Ok(found);
            }
        }
        if let Some(key) = request.metadata().get("x-api-key") {
            let key = key.to_str().unwrap_or_default();
            let digest: [u8; 32] = Sha256::digest(key.trim().as_bytes()).into();
            return find(&self.api_keys, &digest).ok_or(ApiError::Unauthenticated {
                reason: ErrorReason::InvalidApiKey,
                message: "the API key is not valid".to_owned(),
            });
        }
        if self.open {
            return Ok(Caller {
                name: "local".to_owned(),
                scopes: SCOPES.iter().map(|s| (*s).to_owned()).collect(),
            });
        }
        Err(ApiError::Unauthenticated {
            reason: ErrorReason::CallerUnauthenticated,
            message: "send an API key in x-api-key, or a client certificate".to_owned(),
        })
    }
}

/// Compares against every credential in constant time, so timing says nothing about which
/// key (or how much of one) matched.
fn find(credentials: &[Credential], digest: &[u8; 32]) -> Option<Caller> {
    let mut found = None;
    for credential in credentials {
        if bool::from(credential.sha256.ct_eq(digest)) {
            found = Some(Caller {
                name: credential.name.clone(),
                scopes: credential.scopes.clone(),
            });
        }
    }
    found
}

/// The caller of a request (the interceptor always sets it).
pub fn caller<T>(request: &Request<T>) -> Result<Caller, ApiError> {
    request
        .extensions()
        .get::<Caller>()
        .cloned()
        .ok_or_else(|| ApiError::Internal("no caller identity on the request".to_owned()))
}

/// Whose call this is, from `authorization: Bearer`: a session, or the enrollment token of a
/// login that requires enrollment.
#[derive(Clone, Debug)]
pub enum UserContext {
    /// A valid session.
    Session(storage::entity::session::Model),
    /// A valid, unused enrollment token.
    Enrollment(storage::entity::login_challenge::Model),
}

impl UserContext {
    /// The user.
    pub fn user_id(&self) -> storage::Uuid {
        match self {
            Self::Session(s) => s.user_id,
            Self::Enrollment(c) => c.user_id,
        }
    }

    /// The organization whose policy applies.
    pub fn org_id(&self) -> Option<storage::Uuid> {
        match self {
            Self::Session(s) => s.org_id,
            Self::Enrollment(c) => c.org_id,
        }
    }
}

/// Resolves the user's own token: a valid session, else a valid enrollment token.
pub async fn user_context<T>(
    app: &crate::App,
    request: &Request<T>,
) -> Result<UserContext, ApiError> {
    let token = bearer(request).ok_or_else(|| ApiError::Unauthenticated {
        reason: ErrorReason::UserTokenMissing,
        message: "send the user's session or enrollment token as authorization: Bearer".to_owned(),
    })?;
    let unauthenticated = || ApiError::Unauthenticated {
        reason: ErrorReason::UserTokenInvalid,
        message: "the bearer token is not a valid session or enrollment token".to_owned(),
    };
    let now = app.now();
    if let Some(session) = app.storage.sessions().find_valid(&token, now).await? {
        return Ok(UserContext::Session(session));
    }
    match app.storage.challenges().find_active(&token, now).await? {
        Some(c) if c.purpose == storage::entity::enums::ChallengePurpose::Enrollment => {
            // Void once the user has activated a factor since it was issued (through any
            // token or session): it was issued for a user without that factor, and would
            // otherwise still add one of its holder's and open a session beside it. The
            // user's factor generation orders the two exactly.
            let superseded = match c.factor_generation {
                Some(issued) => app
                    .storage
                    .users()
                    .get(c.user_id)
                    .await?
                    .is_none_or(|user| user.factor_generation != issued),
                // Issued by a replica older than the generation (during a rolling upgrade):
                // by the times, which cannot tell the order within one second.
                None => app
                    .storage
                    .factors()
                    .of_user(c.user_id, true)
                    .await?
                    .iter()
                    .any(|f| f.activated_at.is_some_and(|at| at >= c.created_at)),
            };
            if superseded {
                return Err(unauthenticated());
            }
            Ok(UserContext::Enrollment(c))
        }
        _ => Err(unauthenticated()),
    }
}

/// The bearer token of a user's own call, if any.
pub fn bearer<T>(request: &Request<T>) -> Option<String> {
    let value = request.metadata().get("authorization")?.to_str().ok()?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))?;
    let token = token.trim();
    // An empty token is no token: USER_TOKEN_MISSING, as without the header.
    (!token.is_empty()).then(|| token.to_owned())
}
