//! Per-client rate limit of `POST /webhook`: a token bucket per IP address.
//!
//! Each client may burst up to `per_minute` requests and is refilled at `per_minute / 60`
//! requests per second (default 60/min, `[gateway] webhook_rate_limit_per_minute`, 0 turns the
//! limit off). A refused request learns `retry_after`: whole seconds until one token is back.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::clock::Clock;

/// Above this many tracked clients, full (idle) buckets are dropped.
const MAX_TRACKED: usize = 10_000;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    refilled_at: Instant,
}

/// The buckets of all clients.
pub struct RateLimiter {
    per_minute: u32,
    clock: Arc<dyn Clock>,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter")
            .field("per_minute", &self.per_minute)
            .finish_non_exhaustive()
    }
}

impl RateLimiter {
    /// A limiter allowing `per_minute` requests per client per minute (0 = unlimited).
    pub fn new(per_minute: u32, clock: Arc<dyn Clock>) -> Self {
        Self {
            per_minute,
            clock,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one request's worth from `client`'s bucket: `Ok(())`, or `Err(retry_after_secs)`.
    pub fn check(&self, client: IpAddr) -> Result<(), u64> {
        if self.per_minute == 0 {
            return Ok(());
        }
        let capacity = f64::from(self.per_minute);
        let per_sec = capacity / 60.0;
        let now = self.clock.now();
        let Ok(mut buckets) = self.buckets.lock() else {
            return Ok(());
        };
        if buckets.len() >= MAX_TRACKED {
            buckets.retain(|_, b| {
                b.tokens + now.duration_since(b.refilled_at).as_secs_f64() * per_sec < capacity
            });
        }
        let b = buckets.entry(client).or_insert(Bucket {
            tokens: capacity,
            refilled_at: now,
        });
        let elapsed = now.duration_since(b.refilled_at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * per_sec).min(capacity);
        b.refilled_at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - b.tokens) / per_sec;
            // Seconds, rounded up, at least 1.
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            Err((wait.ceil() as u64).max(1))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use std::time::Duration;

    #[test]
    fn burst_then_refill() {
        let clock = ManualClock::new();
        let rl = RateLimiter::new(60, clock.clone());
        let a: IpAddr = "10.1.1.1".parse().expect("ip");
        for i in 0..60 {
            assert_eq!(rl.check(a), Ok(()), "request {i}");
        }
        assert_eq!(rl.check(a), Err(1));
        assert_eq!(rl.check("10.1.1.2".parse().expect("ip")), Ok(()));
        clock.advance(Duration::from_millis(1000));
        assert_eq!(rl.check(a), Ok(()));
        assert_eq!(rl.check(a), Err(1));
        let slow = RateLimiter::new(6, clock.clone());
        for _ in 0..6 {
            slow.check(a).expect("burst");
        }
        assert_eq!(slow.check(a), Err(10), "6/min refills one every 10 s");
    }

    #[test]
    fn zero_means_unlimited() {
        let rl = RateLimiter::new(0, ManualClock::new());
        let a: IpAddr = "10.1.1.1".parse().expect("ip");
        for _ in 0..1000 {
            assert_eq!(rl.check(a), Ok(()));
        }
    }
}
