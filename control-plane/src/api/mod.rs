//! The HTTP surface: one router per resource (auth, agents, agent
//! operations, admin, health, metrics, the web dashboard), merged here under
//! three timeout classes: normal routes ([`REQUEST_TIMEOUT`]), the message
//! proxy ([`MESSAGE_TIMEOUT`], an LLM answer is slow) and streaming routes
//! (SSE: no timeout; they end at shutdown and are capped per user, see
//! [`streams`]). A global body limit ([`BODY_LIMIT`]) applies to all, every
//! request is counted in the HTTP metrics by its route template, and every
//! error — ours, axum's or a tower layer's — has the JSON body of
//! [`ApiError`].

pub mod admin;
pub mod agent_input;
pub mod agent_ops;
pub mod agent_tokens;
pub mod agents;
pub mod auth;
pub mod events;
pub mod extract;
pub mod health;
pub mod identity;
pub mod logs_stream;
pub mod metrics;
mod state;
pub mod streams;
pub mod view;
pub mod web;

use std::time::Duration;

use axum::http::header::CONTENT_TYPE;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Router;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::error::ApiError;
pub use identity::{AdminUser, AuthUser, BearerSubject};
pub use state::AppState;

/// Largest request body, in bytes (64 KiB; a message is at most 32 KiB).
pub const BODY_LIMIT: usize = 64 * 1024;
/// Time limit of a normal request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Time limit of a proxied message (the agent's own limit is 30 s by default).
pub const MESSAGE_TIMEOUT: Duration = Duration::from_secs(90);

/// The whole API with its state.
pub fn router(state: AppState) -> Router {
    let normal = Router::new()
        .merge(auth::router())
        .merge(agents::router())
        .merge(agent_ops::router())
        .merge(agent_tokens::router())
        .merge(admin::router())
        .merge(health::router())
        .merge(metrics::router())
        .merge(streams::router())
        .merge(web::router())
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            REQUEST_TIMEOUT,
        ));
    let slow = agent_ops::message_router().layer(TimeoutLayer::with_status_code(
        StatusCode::REQUEST_TIMEOUT,
        MESSAGE_TIMEOUT,
    ));
    let streaming = Router::new()
        .merge(events::router())
        .merge(logs_stream::router());
    Router::new()
        .merge(normal)
        .merge(slow)
        .merge(streaming)
        .fallback(not_found)
        .layer(RequestBodyLimitLayer::new(BODY_LIMIT))
        .layer(axum::middleware::map_response(json_errors))
        // Outside the error mapping, so what is counted is what was sent;
        // `Router::layer` wraps each route, so the matched path is known.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            metrics::record,
        ))
        // The span names the path without its query: a stream ticket
        // (`?ticket=`) is spent at once, but still never logged.
        .layer(TraceLayer::new_for_http().make_span_with(
            |request: &axum::http::Request<axum::body::Body>| {
                tracing::debug_span!(
                    "request",
                    method = %request.method(),
                    path = %request.uri().path(),
                )
            },
        ))
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::NotFound("route")
}

/// Gives error responses made outside our handlers (body limit, timeout,
/// method not allowed) the API's JSON error body.
async fn json_errors(response: Response) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let is_json = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/json"));
    if is_json {
        return response;
    }
    ApiError::from_status(status).into_response()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use axum::routing::get;
    use tower::ServiceExt;

    #[tokio::test]
    async fn layer_errors_get_the_json_body() {
        let app: Router = Router::new()
            .route(
                "/slow",
                get(|| async { tokio::time::sleep(Duration::from_secs(5)).await }),
            )
            .route(
                "/plain",
                get(|| async { (StatusCode::BAD_REQUEST, "plain text") }),
            )
            .layer(TimeoutLayer::with_status_code(
                StatusCode::REQUEST_TIMEOUT,
                Duration::from_millis(20),
            ))
            .layer(axum::middleware::map_response(json_errors));
        for (path, status, code) in [
            ("/slow", StatusCode::REQUEST_TIMEOUT, "timeout"),
            ("/plain", StatusCode::BAD_REQUEST, "bad_request"),
        ] {
            let resp = app
                .clone()
                .oneshot(Request::get(path).body(Body::empty()).unwrap())
                .await
                .unwrap();
            assert_eq!(resp.status(), status);
            let bytes = axum::body::to_bytes(resp.into_body(), 1 << 16)
                .await
                .unwrap();
            let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
            assert_eq!(body["error"]["code"], code, "{path}");
        }
    }
}
