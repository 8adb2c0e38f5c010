//! [`ApiError`]: every non-2xx answer of the gateway, with its status and JSON body.
//!
//! The strings are the upstream ones (DESIGN §1) where upstream defines them; clients match on
//! them, so they are tested verbatim.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::config::BODY_LIMIT_BYTES;

/// The `401` text of `/webhook` and `/api/status`.
pub const UNAUTHORIZED: &str =
    "Unauthorized — pair first via POST /pair, then send Authorization: Bearer <token>";
/// The `400` text of `/webhook`.
pub const INVALID_JSON: &str = "Invalid JSON body. Expected: {\"message\": \"...\"}";
/// The `403` text of `/pair` for a wrong code.
pub const INVALID_CODE: &str = "Invalid pairing code";
/// The `500` text of `/webhook`.
pub const LLM_FAILED: &str = "LLM request failed";

/// An error answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiError {
    /// 401: missing or unknown bearer token.
    Unauthorized,
    /// 400: body is not `{"message": "<non-empty string>"}`.
    InvalidJson,
    /// 403: wrong, missing or used pairing code.
    InvalidPairingCode,
    /// 403: `require_pairing = false`.
    PairingDisabled,
    /// 429: pairing lockout; seconds left.
    LockedOut(u64),
    /// 429: webhook rate limit; seconds until a request is allowed.
    RateLimited(u64),
    /// 403: `/pair/code` asked from a non-loopback peer.
    LoopbackOnly,
    /// 413: body over 64 KiB.
    PayloadTooLarge,
    /// 408: request exceeded the gateway timeout.
    Timeout,
    /// 404: unknown route.
    NotFound,
    /// 500: the provider failed (details logged and in `/health`, never here).
    LlmFailed,
}

impl ApiError {
    /// The HTTP status.
    pub fn status_code(&self) -> StatusCode {
        match self {
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::InvalidJson => StatusCode::BAD_REQUEST,
            Self::InvalidPairingCode | Self::PairingDisabled | Self::LoopbackOnly => {
                StatusCode::FORBIDDEN
            }
            Self::LockedOut(_) | Self::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Timeout => StatusCode::REQUEST_TIMEOUT,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::LlmFailed => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The JSON body.
    pub fn body(&self) -> serde_json::Value {
        match self {
            Self::Unauthorized => json!({"error": UNAUTHORIZED}),
            Self::InvalidJson => json!({"error": INVALID_JSON}),
            Self::InvalidPairingCode => json!({"error": INVALID_CODE}),
            Self::PairingDisabled => {
                json!({"error": "Pairing is disabled (require_pairing = false)"})
            }
            Self::LockedOut(secs) => json!({
                "error": format!("Too many failed attempts. Try again in {secs}s."),
                "retry_after": secs,
            }),
            Self::RateLimited(secs) => json!({
                "error": format!("Too many webhook requests. Try again in {secs}s."),
                "retry_after": secs,
            }),
            Self::LoopbackOnly => {
                json!({"error": "Forbidden: /pair/code is only answered to loopback clients"})
            }
            Self::PayloadTooLarge => {
                json!({"error": format!("Request body too large (limit {BODY_LIMIT_BYTES} bytes)")})
            }
            Self::Timeout => json!({"error": "Request timed out"}),
            Self::NotFound => json!({"error": "Not found"}),
            Self::LlmFailed => json!({"error": LLM_FAILED}),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (self.status_code(), Json(self.body())).into_response();
        if let Self::LockedOut(secs) | Self::RateLimited(secs) = self {
            resp.headers_mut()
                .insert(axum::http::header::RETRY_AFTER, secs.into());
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lockout_body_is_the_upstream_text() {
        let e = ApiError::LockedOut(300);
        assert_eq!(e.status_code(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(
            e.body(),
            json!({"error": "Too many failed attempts. Try again in 300s.", "retry_after": 300})
        );
    }
}
