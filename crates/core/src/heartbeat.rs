//! A heartbeat: how a long-running loop (the reconciler) tells others (the API's `/readyz`)
//! that it is still turning, without either knowing the other.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// When the loop last turned. Shared as an `Arc`.
#[derive(Debug, Default)]
pub struct Heartbeat {
    /// Unix time in milliseconds of the last beat (0: never).
    last_ms: AtomicI64,
}

impl Heartbeat {
    /// The loop turned now.
    pub fn beat(&self) {
        self.last_ms.store(now_ms(), Ordering::Relaxed);
    }

    /// Whether the loop has turned within `within`.
    pub fn is_alive(&self, within: Duration) -> bool {
        let last = self.last_ms.load(Ordering::Relaxed);
        last > 0 && now_ms() - last <= within.as_millis() as i64
    }
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loop_is_alive_only_after_a_recent_beat() {
        let heart = Heartbeat::default();
        assert!(!heart.is_alive(Duration::from_secs(15)), "never beaten");
        heart.beat();
        assert!(heart.is_alive(Duration::from_secs(15)));
        heart.last_ms.store(now_ms() - 20_000, Ordering::Relaxed);
        assert!(!heart.is_alive(Duration::from_secs(15)), "beaten too long ago");
    }
}
