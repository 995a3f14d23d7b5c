//! Per-token rate limiting (GCRA, from `governor`), with DigitalOcean's headers on every
//! authenticated answer: `ratelimit-limit`, `ratelimit-remaining` and `ratelimit-reset` (Unix
//! time at which the full allowance is back), all integers; over the limit, 429
//! `too_many_requests` with `Retry-After`, the only answer that ever carries it.

use std::num::NonZeroU32;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::{HeaderMap, HeaderValue};
use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::{Quota, RateLimiter};

use crate::error::ApiError;

type KeyedLimiter = RateLimiter<
    String,
    governor::state::keyed::DefaultKeyedStateStore<String>,
    DefaultClock,
    StateInformationMiddleware,
>;

/// The limiter shared by all requests; `None` inside when limiting is off.
pub(crate) struct Limiter {
    per_minute: u32,
    limiter: Option<KeyedLimiter>,
}

/// What a passed check reports, to be put in the answer's headers.
pub(crate) struct Allowance {
    limit: u32,
    remaining: u32,
}

impl Limiter {
    /// A limiter allowing `per_minute` requests a minute per token, all of them in a burst;
    /// 0 turns limiting off.
    pub fn new(per_minute: u32) -> Self {
        let limiter = NonZeroU32::new(per_minute).map(|n| {
            RateLimiter::keyed(Quota::per_minute(n)).with_middleware::<StateInformationMiddleware>()
        });
        Self { per_minute, limiter }
    }

    /// Counts one request of `token_id`; 429 when over the limit.
    pub fn check(&self, token_id: &str) -> Result<Allowance, ApiError> {
        let Some(limiter) = &self.limiter else {
            return Ok(Allowance { limit: 0, remaining: 0 });
        };
        match limiter.check_key(&token_id.to_string()) {
            Ok(snapshot) => {
                Ok(Allowance { limit: self.per_minute, remaining: snapshot.remaining_burst_capacity() })
            }
            Err(not_until) => {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                let mut error = ApiError::too_many_requests("API rate limit exceeded.", wait);
                error.rate_limit = Some((self.per_minute, 0, reset_at(wait)));
                Err(error)
            }
        }
    }
}

/// Unix time `after` from now, rounded up to a second.
fn reset_at(after: Duration) -> u64 {
    let at = SystemTime::now() + after;
    let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    since.as_secs() + u64::from(since.subsec_nanos() > 0)
}

impl Allowance {
    /// Adds the `ratelimit-*` headers (nothing when limiting is off).
    pub fn add_headers(&self, headers: &mut HeaderMap) {
        if self.limit == 0 {
            return;
        }
        let refill = Duration::from_secs(60) * (self.limit - self.remaining.min(self.limit)) / self.limit;
        set_rate_headers(headers, self.limit, self.remaining, reset_at(refill));
    }
}

/// Writes the three integer `ratelimit-*` headers.
pub(crate) fn set_rate_headers(headers: &mut HeaderMap, limit: u32, remaining: u32, reset: u64) {
    headers.insert("ratelimit-limit", HeaderValue::from(limit));
    headers.insert("ratelimit-remaining", HeaderValue::from(remaining));
    headers.insert("ratelimit-reset", HeaderValue::from(reset));
}

#[cfg(test)]
mod tests {
    use axum::http::StatusCode;

    use super::*;

    #[test]
    fn a_token_gets_its_allowance_then_429_with_retry_after() {
        let limiter = Limiter::new(3);
        for expected in [2, 1, 0] {
            assert_eq!(limiter.check("a").ok().map(|a| a.remaining), Some(expected));
        }
        let refused = limiter.check("a").err().expect("over the limit");
        assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
        assert!(refused.retry_after.is_some_and(|s| (1..=20).contains(&s)));
        assert!(limiter.check("b").is_ok(), "tokens are limited separately");
    }

    #[test]
    fn limiting_can_be_turned_off() {
        let limiter = Limiter::new(0);
        for _ in 0..1000 {
            assert!(limiter.check("a").is_ok());
        }
    }
}
