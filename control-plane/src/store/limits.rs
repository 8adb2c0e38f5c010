//! `rate_limits`: fixed-window counters keyed by a string (`login:<email>`,
//! `register:<address>`), shared by every replica.

use std::time::Duration;

/// Counters of a fixed-window rate limit.
#[async_trait::async_trait]
pub trait LimitStore: Send + Sync {
    /// The count of `key` in its current window and the seconds until that
    /// window ends (0 and 0 when there is none, or it ended).
    async fn count(&self, key: &str) -> Result<(u32, u64), sqlx::Error>;

    /// Adds one to `key`'s window (a new window of `window` starts when there
    /// is none or it ended) and returns the new count. Guarantee: atomic
    /// (one upsert): concurrent hits on any replicas are all counted.
    async fn hit(&self, key: &str, window: Duration) -> Result<u32, sqlx::Error>;

    /// Forgets `key` (a successful login clears its failures).
    async fn clear(&self, key: &str) -> Result<(), sqlx::Error>;

    /// Deletes every ended window (bounded table size).
    async fn sweep(&self) -> Result<u64, sqlx::Error>;
}
