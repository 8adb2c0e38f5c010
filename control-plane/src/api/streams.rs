//! What every streaming (SSE) route shares: authentication by a short-lived
//! stream ticket, and a cap on the streams one user holds open.
//!
//! A browser's `EventSource` cannot send an `Authorization` header, and the
//! long-lived JWT must never travel in a URL (URLs end up in logs, history
//! and proxies). So the dashboard first calls `POST /api/auth/stream-ticket`
//! with its JWT and receives a ticket: 32 random bytes, valid for
//! [`TICKET_TTL`], usable **once**, and accepted only by the SSE routes (as
//! `?ticket=…`). Only its SHA-256 is kept, in memory. A ticket seen in a log
//! line or a proxy's history is therefore already spent or about to expire.
//! `EventSource` reconnects with the same URL after a dropped connection;
//! that reconnect is refused (401, the ticket is spent), and the dashboard
//! opens a new stream with a new ticket and `?after=<last id>`.
//!
//! Streams are not bounded by the request timeout, so each user may hold at
//! most a few of each kind ([`StreamLimits`]); the slot is released when the
//! response body (the stream) is dropped — when it ends or the client goes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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

/// How long a stream ticket stays valid.
pub const TICKET_TTL: Duration = Duration::from_secs(60);
/// Unspent tickets one user may hold at once.
pub const MAX_TICKETS_PER_USER: usize = 16;
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
/// Tickets kept before expired ones are swept.
const SWEEP_AT: usize = 1024;

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
    let ticket = state.streams.tickets.issue(&user.id)?;
    Ok((
        StatusCode::CREATED,
        axum::Json(TicketReply {
            ticket,
            expires_in: TICKET_TTL.as_secs(),
        }),
    ))
}

/// The state shared by the streaming routes: tickets and per-user caps.
#[derive(Debug)]
pub struct StreamHub {
    pub tickets: Tickets,
    /// Status-event streams ([`MAX_EVENT_STREAMS`] per user).
    pub events: StreamLimits,
    /// Log streams ([`MAX_LOG_STREAMS`] per user).
    pub logs: StreamLimits,
}

impl StreamHub {
    /// A hub with the default caps.
    pub fn new() -> Arc<Self> {
        Arc::new(StreamHub {
            tickets: Tickets::default(),
            events: StreamLimits::new("event", MAX_EVENT_STREAMS, MAX_EVENT_STREAMS_TOTAL),
            logs: StreamLimits::new("log", MAX_LOG_STREAMS, MAX_LOG_STREAMS_TOTAL),
        })
    }
}

/// Unspent stream tickets: SHA-256 of the ticket → (user id, expiry).
#[derive(Debug, Default)]
pub struct Tickets {
    map: Mutex<HashMap<[u8; 32], (String, Instant)>>,
}

fn digest(ticket: &str) -> [u8; 32] {
    Sha256::digest(ticket.as_bytes()).into()
}

impl Tickets {
    /// A new ticket for `user_id`; 429 when the user holds too many.
    pub fn issue(&self, user_id: &str) -> Result<String, ApiError> {
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        let ticket = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        let now = Instant::now();
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= SWEEP_AT {
            map.retain(|_, (_, expires)| *expires > now);
        }
        let held = map
            .values()
            .filter(|(owner, expires)| owner == user_id && *expires > now)
            .count();
        if held >= MAX_TICKETS_PER_USER {
            return Err(ApiError::TooManyRequests {
                retry_after: TICKET_TTL.as_secs(),
            });
        }
        map.insert(digest(&ticket), (user_id.to_owned(), now + TICKET_TTL));
        Ok(ticket)
    }

    /// Spends `ticket`: the user id it was issued to, if it is known and
    /// unexpired. A ticket is accepted once.
    pub fn redeem(&self, ticket: &str) -> Option<String> {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let (user, expires) = map.remove(&digest(ticket))?;
        (expires > Instant::now()).then_some(user)
    }
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
        let user_id = state
            .streams
            .tickets
            .redeem(&ticket)
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

    #[test]
    fn tickets_are_spent_once_and_bound_to_their_user() {
        let t = Tickets::default();
        let a = t.issue("alice").unwrap();
        let b = t.issue("bob").unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
        assert_eq!(t.redeem(&a).as_deref(), Some("alice"));
        assert_eq!(t.redeem(&a), None, "a ticket is accepted once");
        assert_eq!(t.redeem("not-a-ticket"), None);
        assert_eq!(t.redeem(&b).as_deref(), Some("bob"));
    }

    #[test]
    fn unspent_tickets_per_user_are_capped() {
        let t = Tickets::default();
        for _ in 0..MAX_TICKETS_PER_USER {
            t.issue("alice").unwrap();
        }
        assert!(matches!(
            t.issue("alice"),
            Err(ApiError::TooManyRequests { .. })
        ));
        assert!(t.issue("bob").is_ok());
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
