//! What every streaming (SSE) route shares: authentication by a short-lived
//! stream ticket, and a cap on the streams one user holds open.
//!
//! A browser's `EventSource` cannot send an `Authorization` header, and the
//! long-lived JWT must never travel in a URL (URLs end up in logs, history
//! and proxies). So the dashboard first calls `POST /api/auth/stream-ticket`
//! with its JWT and receives a ticket: 32 random bytes, valid for
//! [`TICKET_TTL`], usable **once**, and accepted only by the SSE routes (as
//! `?ticket=…`). Only its SHA-256 is kept, in the store
//! ([`crate::store::TicketStore`]), so a ticket issued by one replica is
//! redeemed on any other. A ticket seen in a log line or a proxy's history
//! is therefore already spent or about to expire.
//! `EventSource` reconnects with the same URL after a dropped connection;
//! that reconnect is refused (401, the ticket is spent), and the dashboard
//! opens a new stream with a new ticket and `?after=<last id>`.
//!
//! Streams are not bounded by the request timeout, so each user may hold at
//! most a few of each kind ([`StreamLimits`]); the slot is released when the
//! response body (the stream) is dropped — when it ends or the client goes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use base64::Engine as _;
use futures::{Stream, StreamExt};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::api::AppState;
use crate::api::AuthUser;
use crate::error::ApiError;
use crate::store::Store;

/// How long a stream ticket stays valid.
pub const TICKET_TTL: Duration = Duration::from_secs(60);
/// Unspent tickets one user may hold at once.
pub const MAX_TICKETS_PER_USER: u32 = 16;
/// Status-event streams one user may hold open at once.
pub const MAX_EVENT_STREAMS: usize = 8;
/// Log streams one user may hold open at once.
pub const MAX_LOG_STREAMS: usize = 4;
/// Status-event streams open at once, all users together (accounts are
/// free to create, so per-user caps alone do not bound the total).
pub const MAX_EVENT_STREAMS_TOTAL: usize = 2048;
/// Log streams open at once, all users together (each holds a connection
/// to the Docker engine).
pub const MAX_LOG_STREAMS_TOTAL: usize = 256;

/// The route of this module (bounded by the normal request timeout).
pub fn router() -> Router<AppState> {
    Router::new().route("/api/auth/stream-ticket", post(issue))
}

/// `{"ticket","expiresIn"}`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TicketReply {
    /// 43 URL-safe characters, for `?ticket=` on one SSE route.
    pub ticket: String,
    /// Seconds until the ticket expires.
    pub expires_in: u64,
}

/// `POST /api/auth/stream-ticket` (bearer JWT) → 201 `{"ticket","expiresIn"}`;
/// 401 without a valid JWT; 429 with more than [`MAX_TICKETS_PER_USER`]
/// unspent tickets.
async fn issue(
    State(state): State<AppState>,
    user: AuthUser,
) -> Result<(StatusCode, axum::Json<TicketReply>), ApiError> {
    let ticket = issue_ticket(&state.store, &user.id).await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(TicketReply {
            ticket,
            expires_in: TICKET_TTL.as_secs(),
        }),
    ))
}

/// The state shared by the streaming routes: per-user caps on open
/// streams (this replica's; each replica bounds what it holds open).
#[derive(Debug)]
pub struct StreamHub {
    /// Status-event streams ([`MAX_EVENT_STREAMS`] per user).
    pub events: StreamLimits,
    /// Log streams ([`MAX_LOG_STREAMS`] per user).
    pub logs: StreamLimits,
}

impl StreamHub {
    /// A hub with the default caps.
    pub fn new() -> Arc<Self> {
        Arc::new(StreamHub {
            events: StreamLimits::new("event", MAX_EVENT_STREAMS, MAX_EVENT_STREAMS_TOTAL),
            logs: StreamLimits::new("log", MAX_LOG_STREAMS, MAX_LOG_STREAMS_TOTAL),
        })
    }
}

fn digest(ticket: &str) -> [u8; 32] {
    Sha256::digest(ticket.as_bytes()).into()
}

/// A new ticket for `user_id`, stored as its digest; 429 when the user
/// holds [`MAX_TICKETS_PER_USER`] unspent ones.
pub async fn issue_ticket(store: &Store, user_id: &str) -> Result<String, ApiError> {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let ticket = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let stored = store
        .tickets()
        .issue(&digest(&ticket), user_id, TICKET_TTL, MAX_TICKETS_PER_USER)
        .await?;
    if !stored {
        return Err(ApiError::TooManyRequests {
            retry_after: TICKET_TTL.as_secs(),
        });
    }
    Ok(ticket)
}

/// Spends `ticket`: the user id it was issued to, if it is known and
/// unexpired (on any replica). A ticket is accepted once.
pub async fn redeem_ticket(store: &Store, ticket: &str) -> Result<Option<String>, ApiError> {
    Ok(store.tickets().redeem(&digest(ticket)).await?)
}

/// Open streams of one kind, capped per user and in total.
#[derive(Debug)]
pub struct StreamLimits {
    what: &'static str,
    max: usize,
    max_total: usize,
    open: Arc<Mutex<HashMap<String, usize>>>,
}

impl StreamLimits {
    /// A cap of `max` streams of kind `what` (for the error message) per
    /// user, and `max_total` for everyone.
    pub fn new(what: &'static str, max: usize, max_total: usize) -> Self {
        StreamLimits {
            what,
            max,
            max_total,
            open: Arc::default(),
        }
    }

    /// Takes a slot for `user_id`: 429 `too_many_streams` when the user's
    /// are all taken, 503 when everyone's are. The slot is freed when the
    /// guard drops.
    pub fn acquire(&self, user_id: &str) -> Result<StreamGuard, ApiError> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if open.values().sum::<usize>() >= self.max_total {
            return Err(ApiError::Unavailable(
                "too many streams are open; retry later",
            ));
        }
        let n = open.entry(user_id.to_owned()).or_insert(0);
        if *n >= self.max {
            return Err(ApiError::TooManyStreams {
                what: self.what,
                max: self.max,
            });
        }
        *n += 1;
        Ok(StreamGuard {
            open: self.open.clone(),
            user_id: user_id.to_owned(),
        })
    }

    /// How many streams `user_id` holds open now.
    pub fn open_for(&self, user_id: &str) -> usize {
        let open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.get(user_id).copied().unwrap_or(0)
    }
}

/// One taken stream slot; freed on drop.
#[derive(Debug)]
pub struct StreamGuard {
    open: Arc<Mutex<HashMap<String, usize>>>,
    user_id: String,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = open.get_mut(&self.user_id) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.user_id);
            }
        }
    }
}

/// `inner`, holding `guard` (its stream slot) for as long as it lives.
pub fn guarded<S: Stream>(inner: S, guard: StreamGuard) -> impl Stream<Item = S::Item> {
    inner.map(move |item| {
        let _slot = &guard;
        item
    })
}

#[derive(Deserialize)]
struct TicketQuery {
    ticket: Option<String>,
}

/// The caller of a streaming route: a bearer JWT (`Authorization` header)
/// or a stream ticket (`?ticket=`, spent by this request). 401 when
/// neither is valid or the user no longer exists.
#[derive(Debug, Clone)]
pub struct StreamUser(pub AuthUser);

impl FromRequestParts<AppState> for StreamUser {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let query = Query::<TicketQuery>::try_from_uri(&parts.uri)
            .map(|q| q.0.ticket)
            .unwrap_or(None);
        let Some(ticket) = query else {
            return Ok(StreamUser(
                AuthUser::from_request_parts(parts, state).await?,
            ));
        };
        let user_id = redeem_ticket(&state.store, &ticket)
            .await?
            .ok_or(ApiError::Unauthorized(
                "invalid, spent or expired stream ticket",
            ))?;
        let user = state
            .store
            .users()
            .get_by_id(&user_id)
            .await?
            .ok_or(ApiError::Unauthorized(
                "invalid, spent or expired stream ticket",
            ))?;
        Ok(StreamUser(user.into()))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    async fn store() -> (Store, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("zcaas.db").display());
        (Store::open(&url).await.unwrap(), dir)
    }

    async fn user(store: &Store, name: &str) -> String {
        let new = crate::store::users::NewUser {
            email: &format!("{name}@example.test"),
            password_hash: "x",
            role: crate::model::Role::User,
            plan: crate::model::Plan::Free,
        };
        store.users().create(&new).await.unwrap().id
    }

    #[tokio::test]
    async fn tickets_are_spent_once_and_bound_to_their_user() {
        let (store, _dir) = store().await;
        let (alice, bob) = (user(&store, "alice").await, user(&store, "bob").await);
        let a = issue_ticket(&store, &alice).await.unwrap();
        let b = issue_ticket(&store, &bob).await.unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
        assert_eq!(redeem_ticket(&store, &a).await.unwrap(), Some(alice));
        assert_eq!(
            redeem_ticket(&store, &a).await.unwrap(),
            None,
            "a ticket is accepted once"
        );
        assert_eq!(redeem_ticket(&store, "not-a-ticket").await.unwrap(), None);
        assert_eq!(redeem_ticket(&store, &b).await.unwrap(), Some(bob));
    }

    #[tokio::test]
    async fn unspent_tickets_per_user_are_capped() {
        let (store, _dir) = store().await;
        let (alice, bob) = (user(&store, "alice").await, user(&store, "bob").await);
        for _ in 0..MAX_TICKETS_PER_USER {
            issue_ticket(&store, &alice).await.unwrap();
        }
        assert!(matches!(
            issue_ticket(&store, &alice).await,
            Err(ApiError::TooManyRequests { .. })
        ));
        assert!(issue_ticket(&store, &bob).await.is_ok());
    }

    #[test]
    fn stream_slots_are_capped_and_freed_on_drop() {
        let limits = StreamLimits::new("log", 2, 3);
        let a = limits.acquire("u").unwrap();
        let b = limits.acquire("u").unwrap();
        assert!(matches!(
            limits.acquire("u"),
            Err(ApiError::TooManyStreams { max: 2, .. })
        ));
        let v = limits.acquire("v").unwrap();
        assert!(
            matches!(limits.acquire("w"), Err(ApiError::Unavailable(_))),
            "the total is capped too"
        );
        drop(v);
        drop(a);
        assert_eq!(limits.open_for("u"), 1);
        let _c = limits.acquire("u").unwrap();
        drop(b);
        assert_eq!(limits.open_for("u"), 1);
    }
}
