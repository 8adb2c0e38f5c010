//! [`LeaseStore`], [`TicketStore`] and [`LimitStore`] on PostgreSQL, timed
//! by the database's clock (`clock_timestamp()`: the server's time when
//! evaluated, not the transaction's start). Durations travel as
//! milliseconds (`$n * INTERVAL '1 millisecond'`).

use std::borrow::Cow;
use std::time::Duration;

use super::{millis, PgStore, TICKETS_LOCK_CLASS};
use crate::store::{LeaseStore, LimitStore, TicketStore};

#[async_trait::async_trait]
impl LeaseStore for PgStore {
    /// One conditional upsert: the row is taken over only if `holder`
    /// already holds it or its lease has expired by the database's clock
    /// (a concurrent upsert of the same name waits for the row lock, then
    /// re-checks the condition against what committed).
    async fn try_acquire(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<bool, sqlx::Error> {
        let row: Option<String> = sqlx::query_scalar(
            "INSERT INTO leases (name, holder, expires_at)
             VALUES ($1, $2, clock_timestamp() + $3 * INTERVAL '1 millisecond')
             ON CONFLICT (name) DO UPDATE
                 SET holder = excluded.holder, expires_at = excluded.expires_at
                 WHERE leases.holder = excluded.holder OR leases.expires_at <= clock_timestamp()
             RETURNING holder",
        )
        .bind(name)
        .bind(holder)
        .bind(millis(ttl))
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.is_some())
    }

    async fn release(&self, name: &str, holder: &str) -> Result<(), sqlx::Error> {
        sqlx::query("DELETE FROM leases WHERE name = $1 AND holder = $2")
            .bind(name)
            .bind(holder)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn holder(&self, name: &str) -> Result<Option<(String, f64)>, sqlx::Error> {
        sqlx::query_as(
            "SELECT holder, EXTRACT(EPOCH FROM expires_at - n.now)::DOUBLE PRECISION
             FROM leases, (SELECT clock_timestamp() AS now) n
             WHERE name = $1 AND expires_at > n.now",
        )
        .bind(name)
        .fetch_optional(&self.pool)
        .await
    }
}

#[async_trait::async_trait]
impl TicketStore for PgStore {
    /// In one transaction: the user's advisory lock (two-key form:
    /// [`TICKETS_LOCK_CLASS`], `hashtext(user_id)`), so one user's issues
    /// count and insert one at a time; then expired tickets are deleted and
    /// the ticket inserted only under the cap.
    async fn issue(
        &self,
        digest: &[u8; 32],
        user_id: &str,
        ttl: Duration,
        max_per_user: u32,
    ) -> Result<bool, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext($2))")
            .bind(TICKETS_LOCK_CLASS)
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        // Expired tickets of anyone; rows another issue is deleting right
        // now are skipped rather than waited for (no lock-order deadlock).
        sqlx::query(
            "DELETE FROM stream_tickets WHERE digest IN (
                 SELECT digest FROM stream_tickets WHERE expires_at <= clock_timestamp()
                 FOR UPDATE SKIP LOCKED)",
        )
        .execute(&mut *tx)
        .await?;
        // A fresh snapshot (READ COMMITTED): every issue of this user that
        // held the lock before is counted.
        let done = sqlx::query(
            "INSERT INTO stream_tickets (digest, user_id, expires_at)
             SELECT $1, $2, clock_timestamp() + $3 * INTERVAL '1 millisecond'
             WHERE (SELECT COUNT(*) FROM stream_tickets
                    WHERE user_id = $2 AND expires_at > clock_timestamp()) < $4",
        )
        .bind(&digest[..])
        .bind(user_id)
        .bind(millis(ttl))
        .bind(i64::from(max_per_user))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    async fn redeem(&self, digest: &[u8; 32]) -> Result<Option<String>, sqlx::Error> {
        let row: Option<(String, bool)> = sqlx::query_as(
            "DELETE FROM stream_tickets WHERE digest = $1
             RETURNING user_id, expires_at > clock_timestamp()",
        )
        .bind(&digest[..])
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.and_then(|(user, live)| live.then_some(user)))
    }
}

/// A rate-limit key as stored: `%` and NUL (which `TEXT` cannot hold)
/// percent-encoded, so distinct keys stay distinct (`login:<email>` keys
/// carry what was typed at the login form).
fn limit_key(key: &str) -> Cow<'_, str> {
    if key.contains(['%', '\0']) {
        Cow::Owned(key.replace('%', "%25").replace('\0', "%00"))
    } else {
        Cow::Borrowed(key)
    }
}

#[async_trait::async_trait]
impl LimitStore for PgStore {
    async fn count(&self, key: &str) -> Result<(u32, u64), sqlx::Error> {
        let row: Option<(i64, i64)> = sqlx::query_as(
            "SELECT count, CEIL(EXTRACT(EPOCH FROM window_end - n.now) * 1000)::BIGINT
             FROM rate_limits, (SELECT clock_timestamp() AS now) n
             WHERE key = $1 AND window_end > n.now",
        )
        .bind(limit_key(key))
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map_or((0, 0), |(count, left_ms)| {
            let secs = u64::try_from(left_ms).unwrap_or(0).div_ceil(1000);
            (u32::try_from(count).unwrap_or(u32::MAX), secs)
        }))
    }

    /// One upsert. "Now" is read once, as the new row's window end minus
    /// the window (`excluded.window_end - $2`), so both columns of an
    /// existing row are decided on the same instant.
    async fn hit(&self, key: &str, window: Duration) -> Result<u32, sqlx::Error> {
        let count: i64 = sqlx::query_scalar(
            "INSERT INTO rate_limits (key, window_end, count)
             VALUES ($1, clock_timestamp() + $2 * INTERVAL '1 millisecond', 1)
             ON CONFLICT (key) DO UPDATE SET
                 count = CASE
                     WHEN rate_limits.window_end <= excluded.window_end - $2 * INTERVAL '1 millisecond'
                     THEN 1 ELSE rate_limits.count + 1 END,
                 window_end = CASE
                     WHEN rate_limits.window_end <= excluded.window_end - $2 * INTERVAL '1 millisecond'
                     THEN excluded.window_end ELSE rate_limits.window_end END
             RETURNING count",
        )
        .bind(limit_key(key))
        .bind(millis(window))
        .fetch_one(&self.pool)
        .await?;
        Ok(u32::try_from(count).unwrap_or(u32::MAX))
    }

    async fn clear(&self, key: &str) -> Result<(), sqlx::Error> {
        sqlx::query("DELETE FROM rate_limits WHERE key = $1")
            .bind(limit_key(key))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn sweep(&self) -> Result<u64, sqlx::Error> {
        let done = sqlx::query("DELETE FROM rate_limits WHERE window_end <= clock_timestamp()")
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }
}
