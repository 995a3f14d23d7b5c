//! Limits on failed authentication, checked before any token lookup or argon2 work: each
//! client address, and each real token id, may fail only so many times a minute (GCRA, from
//! `governor`, all of them in a burst). Once over, further attempts from that address or
//! against that token id are refused with 429 and `Retry-After` until the allowance is back,
//! without touching argon2. Successes are not counted.
//!
//! The allowances hold across replicas: every failure is also counted in the metadata database
//! (one windowed counter per address and per token id), and an attempt whose address or token
//! id has failed its allowance there within the last minute is refused, whichever replica
//! counted the failures. The in-process limiters stay as a first filter that refuses without a
//! store query; they count only this process's failures, so they never refuse later than the
//! shared count would.
//!
//! The client address is the TCP peer: behind a reverse proxy it is the proxy's address, so
//! the proxy should limit failures itself. IPv6 addresses count per /64, the block one
//! subscriber usually holds.

use std::net::{IpAddr, Ipv6Addr};
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use moka::sync::Cache;
use pgplane_core::Store;

use crate::error::ApiError;

/// Failures a minute allowed, per client address and per token id (0: no limit).
#[derive(Debug, Clone, Copy)]
pub struct FailureLimits {
    pub per_address: u32,
    pub per_token: u32,
}

impl Default for FailureLimits {
    fn default() -> Self {
        Self { per_address: 30, per_token: 10 }
    }
}

/// Whose failures are counted.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
enum Subject {
    Address(IpAddr),
    Token(String),
}

/// The failure counters and who is refused until when.
pub(crate) struct FailureLimiter {
    per_address: Option<DefaultKeyedRateLimiter<IpAddr>>,
    per_token: Option<DefaultKeyedRateLimiter<String>>,
    /// Subjects over their allowance, with the moment they may try again.
    blocked: Cache<Subject, Instant>,
    limits: FailureLimits,
    /// Where the failures of every replica are counted (None: in this process only).
    store: Option<Store>,
}

/// The window of the shared counts.
const MINUTE: Duration = Duration::from_secs(60);

impl Subject {
    /// The subject's name in the shared counters.
    fn key(&self) -> String {
        match self {
            Subject::Address(a) => format!("auth:address:{a}"),
            Subject::Token(id) => format!("auth:token:{id}"),
        }
    }
}

fn keyed<K: std::hash::Hash + Eq + Clone>(per_minute: u32) -> Option<DefaultKeyedRateLimiter<K>> {
    NonZeroU32::new(per_minute).map(|n| RateLimiter::keyed(Quota::per_minute(n)))
}

impl FailureLimiter {
    /// Limits counted in this process and, with `store`, across every replica using it.
    pub fn new(limits: FailureLimits, store: Option<Store>) -> Self {
        Self {
            per_address: keyed(limits.per_address),
            per_token: keyed(limits.per_token),
            blocked: Cache::builder().max_capacity(100_000).time_to_live(Duration::from_secs(3600)).build(),
            limits,
            store,
        }
    }

    /// The subjects of an attempt, each with its allowance (limited ones only).
    fn subjects(&self, address: IpAddr, token_id: Option<&str>) -> Vec<(Subject, u32)> {
        let address = (Subject::Address(counted(address)), self.limits.per_address);
        let token = token_id.map(|id| (Subject::Token(id.to_owned()), self.limits.per_token));
        [Some(address), token].into_iter().flatten().filter(|(_, allowance)| *allowance > 0).collect()
    }

    /// Whether `address` may attempt a verification of `token_id`: 429 while either is over
    /// its allowance of failures, in this process or across replicas.
    pub async fn admit(&self, address: IpAddr, token_id: &str) -> Result<(), ApiError> {
        let now = Instant::now();
        let subjects = self.subjects(address, Some(token_id));
        let until = subjects
            .iter()
            .filter_map(|(subject, _)| self.blocked.get(subject))
            .filter(|until| *until > now)
            .max();
        if let Some(until) = until {
            return Err(too_many(until - now));
        }
        let Some(store) = &self.store else { return Ok(()) };
        if subjects.is_empty() {
            return Ok(());
        }
        let keys: Vec<(String, u32)> = subjects.iter().map(|(s, n)| (s.key(), *n)).collect();
        let keys: Vec<(&str, u32)> = keys.iter().map(|(k, n)| (k.as_str(), *n)).collect();
        match store.allowance_used_up(&keys, MINUTE).await? {
            Some(wait) => Err(too_many(wait)),
            None => Ok(()),
        }
    }

    /// Counts a failed attempt from `address`, against `token_id` when the id is real (made-up
    /// ids are counted against the address only, so that they cannot fill the counters), here
    /// and in the shared counters.
    pub async fn record(&self, address: IpAddr, token_id: Option<&str>) {
        if let Some(store) = &self.store {
            for (subject, _) in self.subjects(address, token_id) {
                if let Err(e) = store.count_event(&subject.key(), MINUTE).await {
                    tracing::warn!(error = %e, "cannot count a failed authentication in the store");
                }
            }
        }
        let address = counted(address);
        if let Some(limiter) = &self.per_address {
            if let Err(not_until) = limiter.check_key(&address) {
                self.block(
                    Subject::Address(address),
                    not_until.wait_time_from(DefaultClock::default().now()),
                );
            }
        }
        if let (Some(limiter), Some(id)) = (&self.per_token, token_id) {
            if let Err(not_until) = limiter.check_key(&id.to_owned()) {
                self.block(
                    Subject::Token(id.to_owned()),
                    not_until.wait_time_from(DefaultClock::default().now()),
                );
            }
        }
    }

    fn block(&self, subject: Subject, wait: Duration) {
        if !self.blocked.contains_key(&subject) {
            match &subject {
                Subject::Address(a) => {
                    tracing::warn!(address = %a, "too many failed authentications from an address")
                }
                Subject::Token(id) => {
                    tracing::warn!(token_id = %id, "too many failed authentications for a token")
                }
            }
        }
        self.blocked.insert(subject, Instant::now() + wait);
    }

    /// Forgets the counters of subjects that have not failed for a while (keeps memory, and the
    /// shared table, bounded).
    pub async fn forget_quiet(&self) {
        if let Some(store) = &self.store {
            if let Err(e) = store.forget_quiet_counters().await {
                tracing::debug!(error = %e, "cannot forget quiet limit counters");
            }
        }
        if let Some(l) = &self.per_address {
            l.retain_recent();
            l.shrink_to_fit();
        }
        if let Some(l) = &self.per_token {
            l.retain_recent();
            l.shrink_to_fit();
        }
    }
}

fn too_many(wait: Duration) -> ApiError {
    ApiError::too_many_requests("Too many failed authentication attempts; try again later.", wait)
}

/// The address failures are counted under: IPv4 as is (also when mapped into IPv6), IPv6 by
/// its /64 prefix.
fn counted(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V4(_) => address,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !u128::from(u64::MAX))),
        },
    }
}

#[cfg(test)]
mod tests {
    use axum::http::StatusCode;

    use super::*;

    const HERE: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    #[tokio::test]
    async fn an_address_is_refused_after_its_allowance_of_failures() {
        let limiter = FailureLimiter::new(FailureLimits { per_address: 3, per_token: 0 }, None);
        for _ in 0..3 {
            assert!(limiter.admit(HERE, "aaaaaaaaaaaa").await.is_ok());
            limiter.record(HERE, None).await;
        }
        limiter.record(HERE, None).await;
        let refused = limiter.admit(HERE, "bbbbbbbbbbbb").await.expect_err("over the allowance");
        assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
        assert!(refused.retry_after.is_some_and(|s| (1..=20).contains(&s)));
        let other: IpAddr = "127.0.0.2".parse().unwrap();
        assert!(limiter.admit(other, "bbbbbbbbbbbb").await.is_ok(), "addresses are counted apart");
    }

    #[tokio::test]
    async fn a_token_id_is_refused_from_every_address_after_its_allowance() {
        let limiter = FailureLimiter::new(FailureLimits { per_address: 0, per_token: 2 }, None);
        for i in 0..3u8 {
            limiter.record(IpAddr::V4([10, 0, 0, i].into()), Some("aaaaaaaaaaaa")).await;
        }
        assert!(limiter.admit("192.0.2.1".parse().unwrap(), "aaaaaaaaaaaa").await.is_err());
        assert!(limiter.admit("192.0.2.1".parse().unwrap(), "bbbbbbbbbbbb").await.is_ok());
    }

    #[test]
    fn ipv6_addresses_count_per_64_and_mapped_ipv4_as_ipv4() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        assert_eq!(counted(a), counted(b));
        assert_eq!(counted("::ffff:127.0.0.1".parse().unwrap()), HERE);
    }
}
