//! `stream_tickets`: one-use tickets for the SSE routes, kept in the store
//! so a ticket issued by one replica is redeemed on any other. Only the
//! SHA-256 of a ticket is stored.

use std::time::Duration;

/// Stream tickets.
#[async_trait::async_trait]
pub trait TicketStore: Send + Sync {
    /// Stores ticket `digest` for `user_id`, valid for `ttl`, unless the user
    /// already holds `max_per_user` unspent, unexpired tickets (then
    /// `false`). Expired tickets are deleted on the way.
    async fn issue(
        &self,
        digest: &[u8; 32],
        user_id: &str,
        ttl: Duration,
        max_per_user: u32,
    ) -> Result<bool, sqlx::Error>;

    /// Spends ticket `digest`: the user id if it existed and had not
    /// expired. Guarantee: a ticket is spent once (one `DELETE … RETURNING`).
    async fn redeem(&self, digest: &[u8; 32]) -> Result<Option<String>, sqlx::Error>;
}
