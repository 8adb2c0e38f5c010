//! A monotonic clock that tests can move by hand.
//!
//! The lockout, the webhook rate limit and the idempotency cache all measure windows of
//! minutes; they take an `Arc<dyn Clock>` so unit tests can jump 300 s without sleeping.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A source of monotonic time.
pub trait Clock: Send + Sync + 'static {
    /// The current instant.
    fn now(&self) -> Instant;
}

/// The real clock ([`Instant::now`]).
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// A clock that only moves when [`ManualClock::advance`] is called.
#[derive(Debug)]
pub struct ManualClock {
    base: Instant,
    offset_ms: AtomicU64,
}

impl ManualClock {
    /// A clock frozen at the moment of creation.
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            base: Instant::now(),
            offset_ms: AtomicU64::new(0),
        })
    }

    /// Moves the clock forward by `by` (millisecond resolution).
    pub fn advance(&self, by: Duration) {
        let ms = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
        self.offset_ms.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        self.base + Duration::from_millis(self.offset_ms.load(Ordering::SeqCst))
    }
}

/// Whole seconds left until `until`, rounded up and at least 1 (for `retry_after`).
pub fn secs_until(now: Instant, until: Instant) -> u64 {
    let left = until.saturating_duration_since(now);
    let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
    secs.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_told() {
        let c = ManualClock::new();
        let t0 = c.now();
        assert_eq!(c.now(), t0);
        c.advance(Duration::from_millis(1500));
        assert_eq!(c.now() - t0, Duration::from_millis(1500));
    }

    #[test]
    fn secs_until_rounds_up_and_floors_at_one() {
        let t = Instant::now();
        assert_eq!(secs_until(t, t + Duration::from_millis(299_001)), 300);
        assert_eq!(secs_until(t, t + Duration::from_secs(300)), 300);
        assert_eq!(secs_until(t, t), 1);
        assert_eq!(secs_until(t + Duration::from_secs(5), t), 1);
    }
}
