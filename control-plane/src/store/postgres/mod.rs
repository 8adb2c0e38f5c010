//! The PostgreSQL backend: several replicas on one server. Its migrations
//! are `migrations/postgres/` (append-only).
//!
//! How each trait guarantee is kept here:
//!
//! - event ids become visible in increasing order: every transaction that
//!   inserts into `agent_events` first takes the transaction-scoped advisory
//!   lock [`EVENTS_LOCK`], so ids are drawn and committed one transaction at
//!   a time (`lifecycle.rs`);
//! - the plan quota: the owner's `users` row is locked `FOR UPDATE` before
//!   the count and the insert, in one transaction (`agents.rs`);
//! - status transitions: one conditional `UPDATE … WHERE status = $from`;
//! - port claims, slugs and emails: UNIQUE constraints;
//! - leases, tickets and rate limits: single statements timed by the
//!   database's clock (`clock_timestamp()`), tickets under a per-user
//!   advisory lock (`shared.rs`);
//! - notifications: `NOTIFY` / `LISTEN`.
//!
//! `TEXT` cannot hold NUL characters: lookups by a key containing one
//! answer "absent", rate-limit keys are stored percent-encoded, and free
//! text has NULs replaced ([`has_nul`], [`text`]).
//!
//! Instants are `TIMESTAMPTZ`, which keeps microseconds: the instants this
//! backend writes from Rust are truncated to microseconds first (so what a
//! write returns equals what a later read gives), except a pairing's
//! container start, which is rounded *up* (so a container start is never
//! later than the start its pairing was recorded for).

mod agent_tokens;
mod agents;
mod history;
mod lifecycle;
mod shared;
mod users;

use std::borrow::Cow;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SubsecRound, Utc};
use futures::stream::{BoxStream, StreamExt};
use sqlx::migrate::{MigrateError, Migrator};
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use sqlx::PgPool;

use super::{AdminStore, Backend, Notification, Parts, Store};

/// The embedded migrations (`migrations/postgres`, append-only).
pub static MIGRATOR: Migrator = sqlx::migrate!("../migrations/postgres");

/// Most connections one replica's pool opens.
pub const MAX_CONNECTIONS: u32 = 16;

/// How long a query waits for a pooled connection before it fails.
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

/// The key of the transaction-scoped advisory lock every transaction that
/// inserts into `agent_events` takes before its insert (ASCII `zcaasev1`):
/// ids are then drawn and committed in the same order, so a reader resuming
/// "after N" never skips an id committed later below it. The single-key
/// advisory lock space; nothing else of zcaas uses this key.
pub const EVENTS_LOCK: i64 = 0x7a63_6161_7365_7631;

/// The key of the transaction-scoped advisory lock every agents' network
/// claim takes before it counts (ASCII `zcaanet1`), so two claims never
/// both see room for one last agent on a network (single-key space).
pub const NETWORKS_LOCK: i64 = 0x7a63_6161_6e65_7431;

/// The first key of the two-key advisory locks serialising one user's
/// ticket issues (the second is `hashtext(user_id)`); ASCII `zctk`. The
/// two-key space never overlaps the single-key one.
pub const TICKETS_LOCK_CLASS: i32 = 0x7a63_746b;

/// Every table of the store on one PostgreSQL pool.
pub struct PgStore {
    pool: PgPool,
}

/// Opens a pool on `url` (`postgres://user:password@host:port/database`) of
/// at most [`MAX_CONNECTIONS`] connections with an [`ACQUIRE_TIMEOUT`]; does
/// not migrate.
///
/// Errors: the URL cannot be parsed, or the server cannot be reached or
/// refuses the credentials.
pub async fn connect(url: &str) -> Result<Store, sqlx::Error> {
    let options = PgConnectOptions::from_str(url)?.application_name("zcaas");
    let pool = PgPoolOptions::new()
        .max_connections(MAX_CONNECTIONS)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .connect_with(options)
        .await?;
    let s = Arc::new(PgStore { pool });
    Ok(Store::from_parts(Parts {
        backend: Backend::Postgres,
        agents: s.clone(),
        agent_tokens: s.clone(),
        lifecycle: s.clone(),
        users: s.clone(),
        history: s.clone(),
        leases: s.clone(),
        tickets: s.clone(),
        limits: s.clone(),
        admin: s,
    }))
}

/// Whether a database error is a UNIQUE violation of `constraint`.
pub(crate) fn violates(e: &sqlx::Error, constraint: &str) -> bool {
    matches!(e, sqlx::Error::Database(d)
        if d.is_unique_violation() && d.constraint() == Some(constraint))
}

/// Whether `key` holds a NUL character. PostgreSQL's `TEXT` cannot hold
/// one (binding it is an error), so no stored id, email or key contains
/// it: a lookup by such a key answers "absent" without asking the server,
/// as SQLite would. Ids in request paths reach the store unvalidated.
pub(crate) fn has_nul(key: &str) -> bool {
    key.contains('\0')
}

/// Free text the control plane writes (errors, reasons), with each NUL
/// (which `TEXT` cannot hold) replaced by U+FFFD.
pub(crate) fn text(s: &str) -> Cow<'_, str> {
    if has_nul(s) {
        Cow::Owned(s.replace('\0', "\u{FFFD}"))
    } else {
        Cow::Borrowed(s)
    }
}

/// Now, truncated to what `TIMESTAMPTZ` keeps (microseconds).
pub(crate) fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

/// A duration in milliseconds for SQL (`$n * INTERVAL '1 millisecond'`),
/// saturating.
pub(crate) fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

#[async_trait::async_trait]
impl AdminStore for PgStore {
    async fn migrate(&self) -> Result<(), MigrateError> {
        MIGRATOR.run(&self.pool).await
    }

    async fn ping(&self) -> Result<(), sqlx::Error> {
        sqlx::query_scalar::<_, i32>("SELECT 1")
            .fetch_one(&self.pool)
            .await?;
        Ok(())
    }

    async fn close(&self) {
        self.pool.close().await
    }

    async fn installation_id(&self) -> Result<String, sqlx::Error> {
        sqlx::query(
            "INSERT INTO installation (singleton, id, created_at) VALUES (1, $1, $2)
             ON CONFLICT (singleton) DO NOTHING",
        )
        .bind(uuid::Uuid::new_v4().to_string())
        .bind(now())
        .execute(&self.pool)
        .await?;
        sqlx::query_scalar("SELECT id FROM installation WHERE singleton = 1")
            .fetch_one(&self.pool)
            .await
    }

    async fn now(&self) -> Result<DateTime<Utc>, sqlx::Error> {
        sqlx::query_scalar("SELECT clock_timestamp()")
            .fetch_one(&self.pool)
            .await
    }

    async fn notify(&self, channel: &str, payload: &str) -> Result<(), sqlx::Error> {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(channel)
            .bind(payload)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// One of the pool's connections, taken for as long as the stream
    /// lives, `LISTEN`ing on `channels`. Unlike `PgListener::into_stream`,
    /// which reconnects silently (losing what was sent meanwhile), the
    /// stream ends when the connection is lost (after an `Err` if there was
    /// one, e.g. the pool closing), as the trait promises.
    async fn listen(
        &self,
        channels: &[&str],
    ) -> Result<Option<BoxStream<'static, Result<Notification, sqlx::Error>>>, sqlx::Error> {
        let mut listener = PgListener::connect_with(&self.pool).await?;
        // Lost means lost: no reconnect behind the caller's back.
        listener.eager_reconnect(false);
        listener.listen_all(channels.iter().copied()).await?;
        let stream = futures::stream::unfold(Some(listener), |listener| async move {
            let mut listener = listener?;
            match listener.try_recv().await {
                Ok(Some(n)) => {
                    let n = Notification {
                        channel: n.channel().to_owned(),
                        payload: n.payload().to_owned(),
                    };
                    Some((Ok(n), Some(listener)))
                }
                // The connection was lost: the stream ends.
                Ok(None) => None,
                // Reported once, then the stream ends (and the connection
                // goes back to the pool with the listener).
                Err(e) => Some((Err(e), None)),
            }
        });
        Ok(Some(stream.boxed()))
    }
}
