//! [`LeaseStore`], [`TicketStore`] and [`LimitStore`] on SQLite, timed by
//! SQLite's clock ([`NOW_MS`]).

use std::time::Duration;

use super::{SqliteStore, NOW_MS};
use crate::store::{LeaseStore, LimitStore, TicketStore};

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

#[async_trait::async_trait]
impl LeaseStore for SqliteStore {
    async fn try_acquire(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<bool, sqlx::Error> {
        let sql = format!(
            "INSERT INTO leases (name, holder, expires_at_ms) VALUES (?1, ?2, {NOW_MS} + ?3)
             ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at_ms = excluded.expires_at_ms
             WHERE leases.holder = excluded.holder OR leases.expires_at_ms <= {NOW_MS}
             RETURNING holder"
        );
        let row: Option<String> = sqlx::query_scalar(&sql)
            .bind(name)
            .bind(holder)
            .bind(millis(ttl))
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.is_some())
    }

    async fn release(&self, name: &str, holder: &str) -> Result<(), sqlx::Error> {
        sqlx::query("DELETE FROM leases WHERE name = ?1 AND holder = ?2")
            .bind(name)
            .bind(holder)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn holder(&self, name: &str) -> Result<Option<(String, f64)>, sqlx::Error> {
        let sql = format!(
            "SELECT holder, (expires_at_ms - {NOW_MS}) / 1000.0 FROM leases
             WHERE name = ?1 AND expires_at_ms > {NOW_MS}"
        );
        sqlx::query_as(&sql)
            .bind(name)
            .fetch_optional(&self.pool)
            .await
    }
}

#[async_trait::async_trait]
impl TicketStore for SqliteStore {
    async fn issue(
        &self,
        digest: &[u8; 32],
        user_id: &str,
        ttl: Duration,
        max_per_user: u32,
    ) -> Result<bool, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        // A write first: the transaction holds SQLite's write lock from here.
        sqlx::query(&format!(
            "DELETE FROM stream_tickets WHERE expires_at_ms <= {NOW_MS}"
        ))
        .execute(&mut *tx)
        .await?;
        let done = sqlx::query(&format!(
            "INSERT INTO stream_tickets (digest, user_id, expires_at_ms)
             SELECT ?1, ?2, {NOW_MS} + ?3
             WHERE (SELECT COUNT(*) FROM stream_tickets WHERE user_id = ?2) < ?4"
        ))
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
        let row: Option<(String, i64)> = sqlx::query_as(&format!(
            "DELETE FROM stream_tickets WHERE digest = ?1
             RETURNING user_id, expires_at_ms > {NOW_MS}"
        ))
        .bind(&digest[..])
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.and_then(|(user, live)| (live != 0).then_some(user)))
    }
}

#[async_trait::async_trait]
impl LimitStore for SqliteStore {
    async fn count(&self, key: &str) -> Result<(u32, u64), sqlx::Error> {
        let row: Option<(i64, i64)> = sqlx::query_as(&format!(
            "SELECT count, window_end_ms - {NOW_MS} FROM rate_limits
             WHERE key = ?1 AND window_end_ms > {NOW_MS}"
        ))
        .bind(key)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map_or((0, 0), |(count, left_ms)| {
            let secs = u64::try_from(left_ms).unwrap_or(0).div_ceil(1000);
            (u32::try_from(count).unwrap_or(u32::MAX), secs)
        }))
    }

    async fn hit(&self, key: &str, window: Duration) -> Result<u32, sqlx::Error> {
        let count: i64 = sqlx::query_scalar(&format!(
            "INSERT INTO rate_limits (key, window_end_ms, count) VALUES (?1, {NOW_MS} + ?2, 1)
             ON CONFLICT (key) DO UPDATE SET
                 count = CASE WHEN rate_limits.window_end_ms <= {NOW_MS} THEN 1 ELSE rate_limits.count + 1 END,
                 window_end_ms = CASE WHEN rate_limits.window_end_ms <= {NOW_MS}
                                      THEN excluded.window_end_ms ELSE rate_limits.window_end_ms END
             RETURNING count"
        ))
        .bind(key)
        .bind(millis(window))
        .fetch_one(&self.pool)
        .await?;
        Ok(u32::try_from(count).unwrap_or(u32::MAX))
    }

    async fn clear(&self, key: &str) -> Result<(), sqlx::Error> {
        sqlx::query("DELETE FROM rate_limits WHERE key = ?1")
            .bind(key)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn sweep(&self) -> Result<u64, sqlx::Error> {
        let done = sqlx::query(&format!(
            "DELETE FROM rate_limits WHERE window_end_ms <= {NOW_MS}"
        ))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }
}
