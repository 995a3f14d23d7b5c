//! What the operator allows pgplane's connections to targets: the networks and ports targets
//! may be on, whether plaintext (`sslmode=disable`) may leave the machine, and the process's
//! budget of sessions per server ([`crate::budget`]). Every connection to a target, the
//! registration probe included, first resolves the host, checks every address it resolves to
//! against this policy, and then connects to the checked address itself (so that a DNS answer
//! that changes between the check and the connection cannot lead elsewhere). Anything outside is
//! refused before a packet is sent.

use std::net::IpAddr;
use std::ops::RangeInclusive;

use ipnet::IpNet;

use crate::budget::SessionBudget;
use crate::error::TargetError;

/// The networks allowed unless the operator says otherwise: loopback and the private ranges
/// (RFC 1918, unique local IPv6). Link-local (cloud metadata services) and public addresses
/// are not in it.
pub const DEFAULT_NETWORKS: &str = "127.0.0.0/8,::1/128,10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,fc00::/7";

/// The ports allowed unless the operator says otherwise: no well-known service ports.
pub const DEFAULT_PORTS: &str = "1024-65535";

/// The sessions allowed on one target server unless the operator says otherwise.
pub const DEFAULT_SESSIONS_PER_SERVER: usize = 10;

/// The networks and ports targets may be on, where plaintext may go, and the session budget.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetPolicy {
    networks: Vec<IpNet>,
    ports: Vec<RangeInclusive<u16>>,
    /// Plaintext connections to addresses other than loopback are allowed.
    plaintext_anywhere: bool,
    budget: SessionBudget,
}

impl Default for TargetPolicy {
    fn default() -> Self {
        Self::parse(DEFAULT_NETWORKS, DEFAULT_PORTS).expect("the default policy parses")
    }
}

impl TargetPolicy {
    /// Parses comma-separated networks (CIDR, or a bare address for one host) and ports
    /// (`5432`, `5432-5439`).
    pub fn parse(networks: &str, ports: &str) -> Result<Self, String> {
        let networks = split(networks)
            .map(|n| {
                n.parse::<IpNet>()
                    .or_else(|_| n.parse::<IpAddr>().map(IpNet::from))
                    .map(|net| net.trunc())
                    .map_err(|_| format!("{n:?} is not a network (CIDR such as 10.0.0.0/8) or an address"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let ports = split(ports)
            .map(|p| {
                let (low, high) = p.split_once('-').unwrap_or((p, p));
                match (low.trim().parse::<u16>(), high.trim().parse::<u16>()) {
                    (Ok(low), Ok(high)) if low >= 1 && low <= high => Ok(low..=high),
                    _ => Err(format!("{p:?} is not a port or a range of ports (1-65535)")),
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            networks,
            ports,
            plaintext_anywhere: false,
            budget: SessionBudget::new(DEFAULT_SESSIONS_PER_SERVER),
        })
    }

    /// This policy, allowing plaintext connections to addresses other than loopback or not
    /// (`--allow-plaintext-targets`).
    pub fn with_plaintext_anywhere(self, allowed: bool) -> Self {
        Self { plaintext_anywhere: allowed, ..self }
    }

    /// This policy, counting sessions against `budget` (the process's, shared by every part).
    pub fn with_budget(self, budget: SessionBudget) -> Self {
        Self { budget, ..self }
    }

    /// The process's budget of sessions per server.
    pub fn budget(&self) -> &SessionBudget {
        &self.budget
    }

    /// Refuses a plaintext connection (`sslmode=disable`) to `addrs` unless they are all
    /// loopback or the operator allows plaintext anywhere; nothing is sent before this check.
    pub fn check_plaintext(&self, host: &str, sslmode: &str, addrs: &[IpAddr]) -> Result<(), TargetError> {
        if sslmode != "disable"
            || self.plaintext_anywhere
            || addrs.iter().all(|a| a.to_canonical().is_loopback())
        {
            return Ok(());
        }
        Err(TargetError::Refused(format!(
            "sslmode disable sends everything in plaintext, and {host} is not a loopback address: \
             use sslmode require or verify-full (its operator can allow plaintext targets with \
             --allow-plaintext-targets)"
        )))
    }

    /// Whether pgplane may connect to `addr` on `port`.
    pub fn allows(&self, addr: IpAddr, port: u16) -> bool {
        let addr = addr.to_canonical();
        self.ports.iter().any(|r| r.contains(&port)) && self.networks.iter().any(|n| n.contains(&addr))
    }

    /// Resolves `host` and returns the addresses to connect to (tried in order), if every
    /// address it resolves to is allowed on `port`; refused otherwise, before any connection is
    /// tried.
    pub async fn resolve(&self, host: &str, port: u16) -> Result<Vec<IpAddr>, TargetError> {
        pgplane_core::names::check_host(host).map_err(TargetError::Refused)?;
        if !self.ports.iter().any(|r| r.contains(&port)) {
            return Err(self.refusal(host, port));
        }
        let addrs: Vec<IpAddr> = match host.parse::<IpAddr>() {
            Ok(ip) => vec![ip],
            Err(_) => tokio::net::lookup_host((host, port))
                .await
                .map_err(|_| TargetError::Connect(format!("the host name {host:?} cannot be resolved")))?
                .map(|a| a.ip())
                .collect(),
        };
        if addrs.is_empty() {
            return Err(TargetError::Connect(format!("the host name {host:?} cannot be resolved")));
        }
        if !addrs.iter().all(|a| self.allows(*a, port)) {
            return Err(self.refusal(host, port));
        }
        // In a stable order, so that a round-robin DNS answer does not look like a new target
        // (whose sessions would not be reused).
        let mut addrs: Vec<IpAddr> = addrs.into_iter().map(|a| a.to_canonical()).collect();
        addrs.sort();
        addrs.dedup();
        Ok(addrs)
    }

    fn refusal(&self, host: &str, port: u16) -> TargetError {
        TargetError::Refused(format!(
            "{host}:{port} is outside the networks and ports this pgplane may connect to \
             (its operator sets them with --allowed-target-networks and --allowed-target-ports)"
        ))
    }
}

fn split(list: &str) -> impl Iterator<Item = &str> {
    list.split(',').map(str::trim).filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_default_allows_loopback_and_private_networks_on_unprivileged_ports() {
        let p = TargetPolicy::default();
        assert!(p.allows(ip("127.0.0.1"), 5432));
        assert!(p.allows(ip("::1"), 5432));
        assert!(p.allows(ip("10.1.2.3"), 5432));
        assert!(p.allows(ip("::ffff:192.168.1.1"), 6432), "IPv4-mapped addresses are checked as IPv4");
        assert!(!p.allows(ip("169.254.169.254"), 5432), "no cloud metadata service");
        assert!(!p.allows(ip("8.8.8.8"), 5432));
        assert!(!p.allows(ip("127.0.0.1"), 22));
        assert!(!p.allows(ip("127.0.0.1"), 80));
    }

    #[test]
    fn networks_and_ports_parse_or_say_what_is_wrong() {
        let p = TargetPolicy::parse("127.0.0.1, 10.0.0.0/8", "5432,6000-6010").unwrap();
        assert!(p.allows(ip("127.0.0.1"), 5432));
        assert!(!p.allows(ip("127.0.0.2"), 5432));
        assert!(p.allows(ip("10.9.9.9"), 6005));
        assert!(!p.allows(ip("10.9.9.9"), 6011));
        assert!(TargetPolicy::parse("10.0.0.0/33", "5432").unwrap_err().contains("10.0.0.0/33"));
        assert!(TargetPolicy::parse("10.0.0.0/8", "0").is_err());
        assert!(TargetPolicy::parse("10.0.0.0/8", "6000-5000").is_err());
        assert!(TargetPolicy::parse("10.0.0.0/8", "x").is_err());
    }

    #[test]
    fn plaintext_goes_only_to_loopback_unless_allowed() {
        let p = TargetPolicy::default();
        for addrs in [vec![ip("127.0.0.1")], vec![ip("::1"), ip("127.0.0.2")], vec![ip("::ffff:127.0.0.1")]] {
            assert!(p.check_plaintext("localhost", "disable", &addrs).is_ok(), "{addrs:?}");
        }
        for addrs in [vec![ip("10.0.0.1")], vec![ip("127.0.0.1"), ip("192.168.1.1")]] {
            let refused = p.check_plaintext("db", "disable", &addrs).unwrap_err();
            assert!(matches!(refused, TargetError::Refused(_)), "{addrs:?}");
            assert!(refused.to_string().contains("--allow-plaintext-targets"), "{refused}");
            assert!(p.check_plaintext("db", "require", &addrs).is_ok(), "TLS goes anywhere allowed");
            assert!(p.clone().with_plaintext_anywhere(true).check_plaintext("db", "disable", &addrs).is_ok());
        }
    }

    #[tokio::test]
    async fn refusals_come_before_any_connection() {
        let p = TargetPolicy::parse("127.0.0.1/32", "1024-65535").unwrap();
        assert_eq!(p.resolve("127.0.0.1", 5432).await.unwrap(), [ip("127.0.0.1")]);
        for (host, port) in [("10.0.0.1", 5432), ("127.0.0.2", 5432), ("127.0.0.1", 22), ("/tmp", 5432)] {
            assert!(matches!(p.resolve(host, port).await, Err(TargetError::Refused(_))), "{host}:{port}");
        }
    }
}
