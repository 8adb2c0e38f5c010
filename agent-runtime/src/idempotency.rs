//! `X-Idempotency-Key` on `/webhook`: a key seen in the last 300 s marks a duplicate.
//!
//! A key is recorded when its request passes the earlier checks (before the provider is
//! called), so a retry that arrives while the first call is still running is a duplicate too.
//! Keys are global to the agent (one conversation per agent), at most 256 bytes are compared,
//! and the cache holds at most 10 000 keys, oldest evicted first.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::clock::Clock;

/// How long a key is remembered.
pub const IDEMPOTENCY_TTL: Duration = Duration::from_secs(300);
/// Most keys held at once.
const MAX_KEYS: usize = 10_000;
/// Longest key considered (longer keys are truncated on a char boundary).
const MAX_KEY_BYTES: usize = 256;

#[derive(Default)]
struct Inner {
    seen: HashMap<String, Instant>,
    order: VecDeque<(String, Instant)>,
}

/// Recently seen idempotency keys.
pub struct IdempotencyCache {
    clock: Arc<dyn Clock>,
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for IdempotencyCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdempotencyCache").finish_non_exhaustive()
    }
}

fn clip(key: &str) -> &str {
    if key.len() <= MAX_KEY_BYTES {
        return key;
    }
    let mut end = MAX_KEY_BYTES;
    while !key.is_char_boundary(end) {
        end -= 1;
    }
    &key[..end]
}

impl IdempotencyCache {
    /// An empty cache on `clock`.
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self {
            clock,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// Records `key`; returns `true` if it was already seen within the TTL (a duplicate).
    pub fn check_and_record(&self, key: &str) -> bool {
        let key = clip(key);
        let now = self.clock.now();
        let Ok(mut inner) = self.inner.lock() else {
            return false;
        };
        // Drop expired (and, past the cap, the oldest) keys.
        while let Some((k, at)) = inner.order.front().cloned() {
            let expired = now.duration_since(at) >= IDEMPOTENCY_TTL;
            if !expired && inner.order.len() < MAX_KEYS {
                break;
            }
            inner.order.pop_front();
            if inner.seen.get(&k) == Some(&at) {
                inner.seen.remove(&k);
            }
        }
        if let Some(at) = inner.seen.get(key) {
            if now.duration_since(*at) < IDEMPOTENCY_TTL {
                return true;
            }
        }
        inner.seen.insert(key.to_owned(), now);
        inner.order.push_back((key.to_owned(), now));
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    #[test]
    fn repeat_within_ttl_is_a_duplicate() {
        let clock = ManualClock::new();
        let c = IdempotencyCache::new(clock.clone());
        assert!(!c.check_and_record("k1"));
        assert!(c.check_and_record("k1"));
        assert!(!c.check_and_record("k2"));
        clock.advance(Duration::from_secs(299));
        assert!(c.check_and_record("k1"));
        clock.advance(Duration::from_secs(1));
        assert!(
            !c.check_and_record("k1"),
            "300 s later the key is new again"
        );
        assert!(c.check_and_record("k1"));
    }

    #[test]
    fn long_keys_are_clipped_and_the_cache_is_bounded() {
        let c = IdempotencyCache::new(ManualClock::new());
        let long = "é".repeat(300);
        assert!(!c.check_and_record(&long));
        assert!(c.check_and_record(&(long.clone() + "tail")));
        for i in 0..(MAX_KEYS + 10) {
            c.check_and_record(&format!("key-{i}"));
        }
        let inner = c.inner.lock().expect("lock");
        assert!(inner.order.len() <= MAX_KEYS && inner.seen.len() <= MAX_KEYS);
    }
}
