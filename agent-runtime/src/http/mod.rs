//! The HTTP surface: routes, shared state and the layers around them.
//!
//! Routes: `GET /health`, `GET /metrics` ([`observe`]), `POST /pair`, `GET /pair/code`
//! ([`pair`]), `POST /webhook` ([`webhook`]), `GET /api/status` ([`status`]). Around all of
//! them: a request deadline (408, JSON body) and a 64 KiB body limit (413, JSON body, checked
//! on `Content-Length` up front and while reading). Unknown paths answer 404 JSON.

pub mod error;
pub mod observe;
pub mod pair;
pub mod status;
pub mod webhook;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderMap};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

pub use error::ApiError;

use crate::config::BODY_LIMIT_BYTES;
use crate::health::Health;
use crate::idempotency::IdempotencyCache;
use crate::memory::MemoryHandle;
use crate::metrics::Metrics;
use crate::pairing::PairingGuard;
use crate::providers::Provider;
use crate::ratelimit::RateLimiter;

/// Everything the handlers share. Cheap to clone (one `Arc`).
pub type AppState = Arc<Shared>;

/// The shared state behind [`AppState`].
#[derive(Debug)]
pub struct Shared {
    /// Pairing code, tokens and lockout.
    pub pairing: PairingGuard,
    /// `/webhook` rate limit.
    pub rate: RateLimiter,
    /// `X-Idempotency-Key` cache.
    pub idempotency: IdempotencyCache,
    /// The LLM provider.
    pub provider: Provider,
    /// The memory backend (opened lazily).
    pub memory: Arc<MemoryHandle>,
    /// Component health.
    pub health: Health,
    /// Prometheus metrics.
    pub metrics: Metrics,
    /// The workspace (persona files).
    pub workspace: PathBuf,
    /// `[memory] auto_save`.
    pub auto_save: bool,
    /// Names of the configured channels.
    pub channels: Vec<&'static str>,
}

impl Shared {
    /// The `/health` component name of the provider.
    pub fn provider_component(&self) -> String {
        format!("provider:{}", self.provider.name())
    }
}

/// The bearer token of `Authorization: Bearer <t>`, if any.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// The client's address, with IPv4-mapped IPv6 folded back to IPv4.
pub fn client_ip(peer: SocketAddr) -> IpAddr {
    peer.ip().to_canonical()
}

async fn deadline(State(limit): State<Duration>, req: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(resp) => resp,
        Err(_) => ApiError::Timeout.into_response(),
    }
}

async fn content_length_limit(req: Request, next: Next) -> Response {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > BODY_LIMIT_BYTES as u64) {
        return ApiError::PayloadTooLarge.into_response();
    }
    next.run(req).await
}

async fn not_found() -> ApiError {
    ApiError::NotFound
}

/// The full router with its layers.
pub fn router(state: AppState, request_timeout: Duration) -> Router {
    Router::new()
        .route("/health", get(observe::health))
        .route("/metrics", get(observe::metrics))
        .route("/pair", post(pair::pair))
        .route("/pair/code", get(pair::code))
        .route("/webhook", post(webhook::webhook))
        .route("/api/status", get(status::status))
        .fallback(not_found)
        .with_state(state)
        .layer(DefaultBodyLimit::max(BODY_LIMIT_BYTES))
        .layer(middleware::from_fn(content_length_limit))
        .layer(middleware::from_fn_with_state(request_timeout, deadline))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn bearer_parsing() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer(&h), None);
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer zc_abc"),
        );
        assert_eq!(bearer(&h), Some("zc_abc"));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("bearer   zc_abc "),
        );
        assert_eq!(bearer(&h), Some("zc_abc"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert_eq!(bearer(&h), None);
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer "));
        assert_eq!(bearer(&h), None);
    }

    #[test]
    fn mapped_ipv4_is_folded() {
        let peer: SocketAddr = "[::ffff:127.0.0.1]:5".parse().expect("addr");
        assert_eq!(client_ip(peer), "127.0.0.1".parse::<IpAddr>().expect("ip"));
        assert!(client_ip(peer).is_loopback());
    }
}
