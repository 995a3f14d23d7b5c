//! Retry timing after failed passes.

use std::time::Duration;

use rand::Rng;

/// Retry delay after `attempts` failed passes: 1 s doubling to 5 minutes, with ±20% jitter so
/// that many clusters failing together do not retry in lockstep.
pub(super) fn backoff(attempts: i32) -> Duration {
    let base = Duration::from_secs(1).saturating_mul(1 << attempts.clamp(0, 9) as u32);
    let capped = base.min(Duration::from_secs(300));
    capped.mul_f64(rand::rng().random_range(0.8..1.2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        assert!(backoff(0) <= Duration::from_millis(1200));
        assert!(backoff(3) >= Duration::from_millis(6400));
        assert!(backoff(30) <= Duration::from_secs(360));
        assert!(backoff(-1) <= Duration::from_millis(1200));
    }
}
