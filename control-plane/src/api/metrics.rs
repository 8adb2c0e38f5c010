//! `GET /metrics` (Prometheus text exposition) and the middleware that
//! counts every HTTP request into it.
//!
//! Decision: `/metrics` is public, as Prometheus expects of a scrape target.
//! It carries counts and latencies only — no agent names, slugs, ids, user
//! data or secrets; HTTP series are labelled by the matched route template
//! (`/api/agents/{id}`), never the raw path. The service listens on
//! `127.0.0.1` by default; an operator who exposes the listen address
//! beyond the host should keep `/metrics` off the public entry point (the
//! reverse proxy routes only the dashboard and `/api`).

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::api::AppState;
use crate::error::ApiError;
use crate::metrics::HttpLabels;

/// Content type of the text exposition format.
pub const CONTENT_TYPE_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Route label of requests that matched no route (404s of unknown paths),
/// so scanning for random paths cannot grow the series without bound.
pub const UNMATCHED: &str = "unmatched";

/// The route of this module.
pub fn router() -> Router<AppState> {
    Router::new().route("/metrics", get(metrics))
}

/// `GET /metrics` → 200 text exposition. `zcaas_agents` and
/// `zcaas_agent_channel_up` are set from the store at each scrape (every
/// status and channel, zero where none); 500 if the store
/// cannot be read.
async fn metrics(State(state): State<AppState>) -> Result<Response, ApiError> {
    let counts = state.store.agents().count_by_status().await?;
    state.metrics.set_agent_counts(&counts);
    let reports = state.store.agents().running_channel_health().await?;
    state
        .metrics
        .set_channel_up(&crate::channel_health::count_up(&reports));
    let text = state.metrics.encode().map_err(ApiError::internal)?;
    Ok(([(CONTENT_TYPE, CONTENT_TYPE_TEXT)], text).into_response())
}

/// The method label: the standard methods by name, anything else `other`
/// (so invented methods cannot grow the series either).
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// Middleware: counts each request in `zcaas_http_requests_total` and
/// observes its latency (to the response head; a stream's lifetime is not
/// included) in `zcaas_http_request_duration_seconds`, labelled by method,
/// matched route template and status.
pub async fn record(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = method_label(request.method()).to_owned();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or(UNMATCHED.to_owned(), |p| p.as_str().to_owned());
    let response = next.run(request).await;
    let labels = HttpLabels {
        method,
        route,
        status: response.status().as_u16(),
    };
    state.metrics.http_requests.get_or_create(&labels).inc();
    state
        .metrics
        .http_seconds
        .get_or_create(&labels)
        .observe(started.elapsed().as_secs_f64());
    response
}
