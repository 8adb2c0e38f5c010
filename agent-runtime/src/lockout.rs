//! Brute-force protection for `POST /pair`: per client IP, 5 failures lock it out for 300 s.
//!
//! Arithmetic (matching upstream): the check runs before the code is compared; failures 1–5
//! are answered 403, and the 5th starts a 300 s lock, so attempts 6+ within it get 429 with
//! `retry_after` = whole seconds left (rounded up). When the lock expires the count restarts
//! from zero. A success clears the client's record. Failures older than the lock window are
//! forgotten, and the table is pruned so a flood of addresses cannot grow it without bound.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::clock::{secs_until, Clock};

/// Failures that trigger a lock.
pub const MAX_FAILED_ATTEMPTS: u32 = 5;
/// Length of a lock.
pub const LOCKOUT_DURATION: Duration = Duration::from_secs(300);
/// Above this many tracked clients, stale entries are pruned.
const MAX_TRACKED: usize = 10_000;

#[derive(Debug, Clone, Copy)]
struct Entry {
    failures: u32,
    last_failure: Instant,
    locked_until: Option<Instant>,
}

/// Per-IP failure counts and locks.
pub struct Lockout {
    clock: Arc<dyn Clock>,
    entries: Mutex<HashMap<IpAddr, Entry>>,
}

impl std::fmt::Debug for Lockout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lockout").finish_non_exhaustive()
    }
}

impl Lockout {
    /// An empty table on `clock`.
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self {
            clock,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// `Err(retry_after_secs)` while `ip` is locked; `Ok(())` otherwise.
    pub fn check(&self, ip: IpAddr) -> Result<(), u64> {
        let now = self.clock.now();
        let Ok(mut entries) = self.entries.lock() else {
            return Ok(());
        };
        match entries.get(&ip).and_then(|e| e.locked_until) {
            Some(until) if now < until => Err(secs_until(now, until)),
            Some(_) => {
                entries.remove(&ip);
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// Counts a failed attempt; the 5th starts the lock.
    ///
    /// Returns `true` for the one failure that started a lock (so the caller can log each
    /// lockout once), `false` otherwise.
    pub fn record_failure(&self, ip: IpAddr) -> bool {
        let now = self.clock.now();
        let Ok(mut entries) = self.entries.lock() else {
            return false;
        };
        if entries.len() >= MAX_TRACKED {
            entries.retain(|_, e| {
                e.locked_until.is_some_and(|u| u > now)
                    || now.duration_since(e.last_failure) < LOCKOUT_DURATION
            });
        }
        let entry = entries.entry(ip).or_insert(Entry {
            failures: 0,
            last_failure: now,
            locked_until: None,
        });
        if now.duration_since(entry.last_failure) >= LOCKOUT_DURATION {
            entry.failures = 0;
        }
        entry.failures += 1;
        entry.last_failure = now;
        if entry.failures >= MAX_FAILED_ATTEMPTS && entry.locked_until.is_none() {
            entry.locked_until = Some(now + LOCKOUT_DURATION);
            return true;
        }
        false
    }

    /// Forgets `ip`'s failures after a successful pairing.
    pub fn record_success(&self, ip: IpAddr) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.remove(&ip);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn five_failures_lock_for_300_seconds() {
        let clock = ManualClock::new();
        let l = Lockout::new(clock.clone());
        let a = ip("10.0.0.1");
        for _ in 0..4 {
            assert_eq!(l.check(a), Ok(()));
            assert!(!l.record_failure(a), "no lock before the 5th failure");
        }
        assert_eq!(l.check(a), Ok(()), "the 5th attempt is still compared");
        assert!(l.record_failure(a), "the 5th failure starts the lock");
        assert_eq!(l.check(a), Err(300));
        // A failure racing past `check` while locked does not start a second lock.
        assert!(!l.record_failure(a));
        clock.advance(Duration::from_millis(100_500));
        assert_eq!(l.check(a), Err(200), "199.5 s left rounds up to 200");
        // Other clients are unaffected.
        assert_eq!(l.check(ip("10.0.0.2")), Ok(()));
        clock.advance(Duration::from_millis(199_499));
        assert_eq!(l.check(a), Err(1));
        clock.advance(Duration::from_millis(1));
        assert_eq!(l.check(a), Ok(()), "lock over at exactly 300 s");
        // The count restarted: one more failure does not lock again.
        assert!(!l.record_failure(a));
        assert_eq!(l.check(a), Ok(()));
    }

    #[test]
    fn success_clears_and_old_failures_decay() {
        let clock = ManualClock::new();
        let l = Lockout::new(clock.clone());
        let a = ip("::1");
        for _ in 0..4 {
            l.record_failure(a);
        }
        l.record_success(a);
        l.record_failure(a);
        assert_eq!(l.check(a), Ok(()), "success reset the count");
        for _ in 0..3 {
            l.record_failure(a);
        }
        clock.advance(LOCKOUT_DURATION);
        l.record_failure(a);
        assert_eq!(
            l.check(a),
            Ok(()),
            "failures older than the window are forgotten"
        );
    }
}
