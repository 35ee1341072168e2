//! Where a call comes from: the `ClientContext` a caller relays, validated, and the failure
//! budgets per client address and per network that stop password spraying (one password
//! tried against many emails from one place, which per-email lockouts never see).
//!
//! The budgets use the same single-statement counters as the per-email budget, so they are
//! exact across replicas. A count starts over after `clients.window_secs` without a failure;
//! a success does not clear it (one valid account must not reset a sprayer's budget).

use std::net::IpAddr;

use tollgate_proto::v1;

use crate::App;
use crate::error::{ApiError, ApiResult, ErrorReason};

/// The longest user agent kept.
const USER_AGENT_MAX: usize = 512;

/// A call's client, as its caller relayed it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Client {
    /// The end user's address, if given.
    pub(crate) ip: Option<IpAddr>,
    /// The end user's User-Agent, if given.
    pub(crate) user_agent: Option<String>,
}

/// Reads `context`, adding a violation for each field in the wrong form (and for a missing
/// address when `required`); what is valid is kept.
pub(crate) fn parse(
    context: Option<&v1::ClientContext>,
    required: bool,
    violations: &mut Vec<(String, String)>,
) -> Client {
    let mut client = Client::default();
    let (ip, user_agent) =
        context.map_or(("", ""), |c| (c.ip_address.as_str(), c.user_agent.as_str()));
    if ip.is_empty() {
        if required {
            violations.push((
                "client_context.ip_address".to_owned(),
                "is required by this server (clients.require_context)".to_owned(),
            ));
        }
    } else {
        match ip.parse::<IpAddr>() {
            Ok(ip) => client.ip = Some(ip),
            Err(_) => violations.push((
                "client_context.ip_address".to_owned(),
                "must be an IPv4 or IPv6 address such as 192.0.2.7 or 2001:db8::7".to_owned(),
            )),
        }
    }
    if !user_agent.is_empty() {
        if user_agent.chars().count() > USER_AGENT_MAX || user_agent.chars().any(char::is_control) {
            violations.push((
                "client_context.user_agent".to_owned(),
                format!("at most {USER_AGENT_MAX} printable characters"),
            ));
        } else {
            client.user_agent = Some(user_agent.to_owned());
        }
    }
    client
}

/// The client of a call whose other fields were checked already, as it is stored:
/// INVALID_ARGUMENT naming `client_context.ip_address` or `client_context.user_agent` when
/// malformed (before the call changes anything).
pub(crate) fn checked(app: &App, context: Option<&v1::ClientContext>) -> ApiResult<Stored> {
    let mut violations = Vec::new();
    let client = parse(context, false, &mut violations);
    if violations.is_empty() {
        Ok(client.stored(&app.config.clients))
    } else {
        Err(ApiError::InvalidArgument(violations))
    }
}

impl Client {
    /// What is stored of this client: the address, full or truncated to its IPv4 /24 or IPv6
    /// /48 as `clients.store_addresses` says, and the User-Agent.
    pub(crate) fn stored(&self, config: &crate::config::ClientsConfig) -> Stored {
        let ip = self.ip.map(|ip| {
            let ip = ip.to_canonical();
            match config.store_addresses {
                crate::config::AddressStorage::Full => ip.to_string(),
                crate::config::AddressStorage::Truncated => {
                    let prefix = if ip.is_ipv4() { 24 } else { 48 };
                    ipnet::IpNet::new(ip, prefix)
                        .map_or_else(|_| ip.to_string(), |net| net.trunc().to_string())
                }
            }
        });
        Stored {
            ip,
            user_agent: self.user_agent.clone(),
        }
    }
}

/// A client as sessions and challenges keep it (`client_ip`, `client_user_agent`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Stored {
    ip: Option<String>,
    user_agent: Option<String>,
}

impl Stored {
    /// The client a login challenge kept.
    pub(crate) fn of_challenge(challenge: &storage::entity::login_challenge::Model) -> Self {
        Self {
            ip: challenge.client_ip.clone(),
            user_agent: challenge.client_user_agent.clone(),
        }
    }

    /// This one if it says anything, else `other`.
    pub(crate) fn or(self, other: Self) -> Self {
        if self.ip.is_none() && self.user_agent.is_none() {
            other
        } else {
            self
        }
    }

    /// As storage takes it.
    pub(crate) fn info(&self) -> storage::repo::ClientInfo<'_> {
        storage::repo::ClientInfo {
            ip: self.ip.as_deref(),
            user_agent: self.user_agent.as_deref(),
        }
    }
}

/// A stored client as the API shows it; None when nothing was kept.
pub(crate) fn to_proto(ip: Option<&str>, user_agent: Option<&str>) -> Option<v1::ClientContext> {
    (ip.is_some() || user_agent.is_some()).then(|| v1::ClientContext {
        ip_address: ip.unwrap_or_default().to_owned(),
        user_agent: user_agent.unwrap_or_default().to_owned(),
    })
}

/// The network an address counts in: its IPv4 /24 or IPv6 /56 (an IPv4 address mapped into
/// IPv6 counts as the IPv4 address).
pub(crate) fn network(ip: IpAddr) -> ipnet::IpNet {
    let ip = ip.to_canonical();
    let prefix = if ip.is_ipv4() { 24 } else { 56 };
    ipnet::IpNet::new(ip, prefix).map_or_else(|_| ipnet::IpNet::from(ip), |net| net.trunc())
}

/// The failure budgets a call counts against: its address's and its network's, unless the
/// address is allowlisted or was not given.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Budgets {
    /// Each budget's counter key, its scope (the metric's `factor`), and the network the
    /// address belongs to (what logs may show of it).
    keys: Vec<(String, &'static str, String)>,
}

impl Budgets {
    /// The budgets of `client`'s address.
    pub(crate) fn of(app: &App, client: &Client) -> Self {
        let Some(ip) = client.ip.map(|ip| ip.to_canonical()) else {
            return Self::default();
        };
        // Checked when the configuration loads; a few entries, parsed per call.
        let allowed = app.config.clients.allowed_networks().unwrap_or_default();
        if allowed.iter().any(|net| net.contains(&ip)) {
            return Self::default();
        }
        let network = network(ip).to_string();
        Self {
            keys: vec![
                (format!("client:ip:{ip}"), "client_address", network.clone()),
                (format!("client:net:{network}"), "client_network", network),
            ],
        }
    }

    /// Refuses, before any password is hashed, while the address or its network is locked
    /// out: RESOURCE_EXHAUSTED `CLIENT_LOCKED_OUT` with RetryInfo.
    pub(crate) async fn check(&self, app: &App, now: i64) -> ApiResult<()> {
        for (key, ..) in &self.keys {
            if let Some(until) = app
                .storage
                .attempts()
                .get(key)
                .await?
                .and_then(|c| c.locked_until)
                .filter(|&until| until > now)
            {
                return Err(locked(until, now));
            }
        }
        Ok(())
    }

    /// Counts a failed login against the address and its network; a lockout it starts is
    /// counted in `tollgate_lockouts_total` (`factor` `client_address` or `client_network`)
    /// and logged with the network only, never the address. A lockout already in force (a
    /// failure in flight alongside spent the budget first) is refused as CLIENT_LOCKED_OUT,
    /// as for an attempt after it: of a burst sent at once, no more than the budget's worth
    /// is answered.
    pub(crate) async fn fail(&self, app: &App, now: i64) -> ApiResult<()> {
        let config = &app.config.clients;
        let throttle = policy::Throttle {
            free_failures: 0,
            base_delay_secs: config.base_lockout_secs,
            max_delay_secs: config.max_lockout_secs,
        };
        for (key, scope, network) in &self.keys {
            let free = if *scope == "client_address" {
                config.address_free_failures
            } else {
                config.network_free_failures
            };
            let lockouts = storage::repo::Lockouts::new(free, &throttle.lockouts())
                .starting_at(app.now_rounded_up().max(now))
                .forgetting_after(config.window_secs);
            let counted = app
                .storage
                .attempts()
                .record_failure(key, now, &lockouts, None)
                .await?;
            if let storage::repo::Failure::Locked { until } = counted {
                return Err(locked(until, now));
            }
            if let storage::repo::Failure::Counted {
                failures,
                locked_until: Some(until),
            } = counted
                && until > now
            {
                app.metrics
                    .lockouts
                    .get_or_create(&crate::metrics::LockoutLabels { factor: scope })
                    .inc();
                // The network only: logs never carry a client's full address.
                tracing::warn!(
                    scope = *scope,
                    network = network.as_str(),
                    failures,
                    locked_until = until,
                    "client lockout"
                );
            }
        }
        Ok(())
    }
}

/// The answer while the client is locked out until `until`.
fn locked(until: i64, now: i64) -> ApiError {
    crate::throttle::refused_until(
        ErrorReason::ClientLockedOut,
        "too many failed logins from this address or its network; try again later",
        until,
        now,
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]

    use super::*;

    fn context(ip: &str, user_agent: &str) -> v1::ClientContext {
        v1::ClientContext {
            ip_address: ip.to_owned(),
            user_agent: user_agent.to_owned(),
        }
    }

    #[test]
    fn addresses_and_user_agents_are_checked_field_by_field() {
        let mut violations = Vec::new();
        let client = parse(
            Some(&context("2001:db8::7", "Firefox/140")),
            true,
            &mut violations,
        );
        assert!(violations.is_empty());
        assert_eq!(client.ip, Some("2001:db8::7".parse().unwrap()));
        for bad in [
            "192.0.2.7:443",
            "fe80::1%eth0",
            "192.0.2",
            "localhost",
            " 192.0.2.7",
        ] {
            let mut violations = Vec::new();
            let client = parse(Some(&context(bad, "")), false, &mut violations);
            assert_eq!(violations.len(), 1, "{bad}");
            assert_eq!(violations[0].0, "client_context.ip_address");
            assert_eq!(client.ip, None);
        }
        let mut violations = Vec::new();
        parse(Some(&context("", &"x".repeat(513))), false, &mut violations);
        parse(Some(&context("", "a\nb")), false, &mut violations);
        let fields: Vec<&str> = violations.iter().map(|v| v.0.as_str()).collect();
        assert_eq!(fields, ["client_context.user_agent"; 2]);
        let mut violations = Vec::new();
        parse(None, true, &mut violations);
        assert_eq!(violations[0].0, "client_context.ip_address", "required");
        let mut violations = Vec::new();
        assert_eq!(parse(None, false, &mut violations), Client::default());
        assert!(violations.is_empty());
    }

    #[test]
    fn an_address_counts_in_its_24_or_56() {
        let net = |ip: &str| network(ip.parse().unwrap()).to_string();
        assert_eq!(net("192.0.2.77"), "192.0.2.0/24");
        assert_eq!(net("::ffff:192.0.2.77"), "192.0.2.0/24");
        assert_eq!(net("2001:db8:1:2ff:3::7"), "2001:db8:1:200::/56");
    }
}
