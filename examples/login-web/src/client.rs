//! The end user's address and browser, relayed to Tollgate's `Authenticate` as its
//! `client_context`, so that failed logins count against the client's address and network
//! (password spraying) as well as the email.
//!
//! The address is the TCP peer's, unless `--client-ip-header` names a header that a reverse
//! proxy in front of this app sets (such as `x-forwarded-for`): then its last entry, the one
//! that proxy appended. Only name a header a proxy you run overwrites or appends to; one a
//! browser could set would let anyone pick the address they are counted under.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderName, header};
use tollgate_proto::v1::ClientContext;

use crate::App;

/// The longest User-Agent Tollgate takes.
const USER_AGENT_MAX: usize = 512;

/// The client of a request, as Tollgate's `ClientContext`.
#[derive(Clone, Debug, Default)]
pub(crate) struct Client(pub(crate) ClientContext);

impl FromRequestParts<App> for Client {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip());
        let ip = match &app.client_ip_header {
            Some(name) => from_header(parts, name),
            None => peer,
        };
        let user_agent = parts
            .headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|ua| {
                ua.chars()
                    .filter(|c| !c.is_control())
                    .take(USER_AGENT_MAX)
                    .collect()
            })
            .unwrap_or_default();
        Ok(Self(ClientContext {
            ip_address: ip
                .map(|ip| ip.to_canonical().to_string())
                .unwrap_or_default(),
            user_agent,
        }))
    }
}

/// The last address in the header `name` (a proxy appends the peer it saw), if it is one.
fn from_header(parts: &Parts, name: &HeaderName) -> Option<IpAddr> {
    let value = parts
        .headers
        .get_all(name)
        .iter()
        .next_back()?
        .to_str()
        .ok()?;
    value.rsplit(',').next()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]

    use super::*;

    fn parts(headers: &[(&str, &str)]) -> Parts {
        let mut request = axum::http::Request::builder();
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.body(()).unwrap().into_parts().0
    }

    #[test]
    fn a_proxy_header_gives_its_last_address() {
        let name = HeaderName::from_static("x-forwarded-for");
        let forwarded = parts(&[("x-forwarded-for", "198.51.100.1, 203.0.113.9")]);
        assert_eq!(
            from_header(&forwarded, &name),
            Some("203.0.113.9".parse().unwrap())
        );
        assert_eq!(
            from_header(&parts(&[("x-forwarded-for", "junk")]), &name),
            None
        );
        assert_eq!(from_header(&parts(&[]), &name), None);
    }
}
