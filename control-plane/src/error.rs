//! The HTTP error type: one enum, one status mapping, one JSON body shape
//! `{"error":{"code","message","field"}}`.
//!
//! `field` is present only when one input field is to blame (its JSON path,
//! e.g. `channels.telegram.botToken`). Server-side failures (5xx) carry an
//! `errorId` that is also logged with the cause, so an operator can find the
//! log line from a user's report; only they are logged at error level, and
//! their cause never reaches the response.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::auth::{AuthError, HASH_RETRY_AFTER_SECS};
use crate::gateway::GatewayError;
use crate::orchestrator::OrchestratorError;
use crate::reconciler::RequestError;
use crate::secrets::SecretError;
use crate::validation::FieldError;

/// Every error the HTTP API answers with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the request is malformed (bad JSON syntax, bad path).
    #[error("{message}")]
    BadRequest {
        message: String,
        field: Option<String>,
    },
    /// 422: a field has a wrong type or a value the rules refuse.
    #[error("{message}")]
    Validation { field: String, message: String },
    /// 401: no, a bad, an expired token, or bad credentials (generic message).
    #[error("{0}")]
    Unauthorized(&'static str),
    /// 403: authenticated but not allowed (admin routes).
    #[error("{0}")]
    Forbidden(&'static str),
    /// 403: the owner's plan allows no more agents.
    #[error("your plan allows at most {max} agents")]
    QuotaExceeded { max: u32 },
    /// 404: no such resource, or not the caller's (same answer on purpose).
    #[error("{0} not found")]
    NotFound(&'static str),
    /// 405: the route exists, the method does not.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// 408: the request took longer than the route's timeout.
    #[error("request timed out")]
    Timeout,
    /// 409: a state or uniqueness conflict.
    #[error("{message}")]
    Conflict {
        message: String,
        field: Option<String>,
    },
    /// 413: the body is larger than the limit.
    #[error("request body too large")]
    PayloadTooLarge,
    /// 415: the body is not `application/json`.
    #[error("expected a request body with Content-Type: application/json")]
    UnsupportedMediaType,
    /// 429: too many attempts; retry after the given seconds.
    #[error("too many attempts; try again in {retry_after} s")]
    TooManyRequests { retry_after: u64 },
    /// 429: the caller already has `max` streams of this kind open.
    #[error("at most {max} {what} streams may be open at once; close one first")]
    TooManyStreams { what: &'static str, max: usize },
    /// 502: an agent or the container runtime failed; `source` is logged only.
    #[error("{message}")]
    BadGateway {
        code: &'static str,
        message: &'static str,
        source: Option<anyhow::Error>,
    },
    /// 503: a dependency is down.
    #[error("{0}")]
    Unavailable(&'static str),
    /// 503: too much work queued (password hashing); retry after the given
    /// seconds. Logged at warn: a flood would otherwise fill the error log.
    #[error("the server is busy; try again in {retry_after} s")]
    Busy { retry_after: u64 },
    /// 500: a bug or an infrastructure failure; the cause is logged only.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

#[derive(Serialize)]
struct Body<'a> {
    error: ErrorBody<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ErrorBody<'a> {
    code: &'a str,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error_id: Option<String>,
}

impl ApiError {
    /// A 422 naming `field`.
    pub fn validation(field: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError::Validation {
            field: field.into(),
            message: message.into(),
        }
    }

    /// A 409 with a message and no field.
    pub fn conflict(message: impl Into<String>) -> Self {
        ApiError::Conflict {
            message: message.into(),
            field: None,
        }
    }

    /// A 500 from any error; the cause is logged, never returned.
    pub fn internal(err: impl Into<anyhow::Error>) -> Self {
        ApiError::Internal(err.into())
    }

    /// The one status mapping.
    pub fn status_code(&self) -> StatusCode {
        match self {
            ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::Validation { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) | ApiError::QuotaExceeded { .. } => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Timeout => StatusCode::REQUEST_TIMEOUT,
            ApiError::Conflict { .. } => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::TooManyRequests { .. } | ApiError::TooManyStreams { .. } => {
                StatusCode::TOO_MANY_REQUESTS
            }
            ApiError::BadGateway { .. } => StatusCode::BAD_GATEWAY,
            ApiError::Unavailable(_) | ApiError::Busy { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The machine-readable `code` of the body.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest { .. } => "bad_request",
            ApiError::Validation { .. } => "invalid_field",
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::QuotaExceeded { .. } => "quota_exceeded",
            ApiError::NotFound(_) => "not_found",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::Timeout => "timeout",
            ApiError::Conflict { .. } => "conflict",
            ApiError::PayloadTooLarge => "payload_too_large",
            ApiError::UnsupportedMediaType => "unsupported_media_type",
            ApiError::TooManyRequests { .. } => "too_many_requests",
            ApiError::TooManyStreams { .. } => "too_many_streams",
            ApiError::BadGateway { code, .. } => code,
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Busy { .. } => "busy",
            ApiError::Internal(_) => "internal",
        }
    }

    fn field(&self) -> Option<&str> {
        match self {
            ApiError::BadRequest { field, .. } | ApiError::Conflict { field, .. } => {
                field.as_deref()
            }
            ApiError::Validation { field, .. } => Some(field),
            _ => None,
        }
    }

    /// The error for a bare status produced outside our handlers (tower
    /// layers, axum's method router), so every error has the same body.
    pub fn from_status(status: StatusCode) -> Self {
        match status {
            StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge,
            StatusCode::REQUEST_TIMEOUT => ApiError::Timeout,
            StatusCode::METHOD_NOT_ALLOWED => ApiError::MethodNotAllowed,
            StatusCode::NOT_FOUND => ApiError::NotFound("route"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::UnsupportedMediaType,
            StatusCode::UNAUTHORIZED => ApiError::Unauthorized("authentication required"),
            s if s.is_server_error() => {
                ApiError::Internal(anyhow::anyhow!("HTTP {s} from a layer"))
            }
            s => ApiError::BadRequest {
                message: s.canonical_reason().unwrap_or("bad request").to_owned(),
                field: None,
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status_code();
        let error_id = status
            .is_server_error()
            .then(|| uuid::Uuid::new_v4().to_string());
        if let Some(id) = &error_id {
            match &self {
                ApiError::Internal(e) => {
                    tracing::error!(error_id = %id, error = %format!("{e:#}"), "internal error")
                }
                ApiError::BadGateway {
                    source: Some(e),
                    code,
                    ..
                } => {
                    tracing::error!(error_id = %id, code, error = %format!("{e:#}"), "upstream error")
                }
                ApiError::Busy { .. } => tracing::warn!(error_id = %id, "refused: server busy"),
                other => tracing::error!(error_id = %id, error = %other, "server error"),
            }
        }
        let body = Body {
            error: ErrorBody {
                code: self.code(),
                message: self.to_string(),
                field: self.field(),
                error_id,
            },
        };
        let mut response = (status, axum::Json(body)).into_response();
        if let ApiError::TooManyRequests { retry_after } | ApiError::Busy { retry_after } = &self {
            if let Ok(v) = HeaderValue::from_str(&retry_after.to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        response
    }
}

impl From<FieldError> for ApiError {
    fn from(e: FieldError) -> Self {
        ApiError::Validation {
            field: e.field,
            message: e.message,
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        ApiError::Internal(anyhow::Error::new(e).context("database"))
    }
}

impl From<SecretError> for ApiError {
    fn from(e: SecretError) -> Self {
        ApiError::Internal(anyhow::Error::new(e).context("secrets"))
    }
}

impl From<RequestError> for ApiError {
    fn from(e: RequestError) -> Self {
        match e {
            RequestError::NotFound => ApiError::NotFound("agent"),
            e @ RequestError::Conflict { .. } => ApiError::conflict(e.to_string()),
            RequestError::Db(e) => e.into(),
        }
    }
}

impl From<GatewayError> for ApiError {
    fn from(e: GatewayError) -> Self {
        let (code, message) = match &e {
            GatewayError::Timeout(_) => ("agent_timeout", "the agent did not answer in time"),
            GatewayError::Unreachable(_) => ("agent_unreachable", "the agent is not reachable"),
            GatewayError::Redirect { .. } => (
                "agent_redirect",
                "the agent answered with a redirect; the control plane never follows one",
            ),
            GatewayError::TooLarge { .. } => (
                "agent_answer_too_large",
                "the agent's answer is larger than the control plane accepts",
            ),
            _ => ("agent_error", "the agent answered unexpectedly"),
        };
        ApiError::BadGateway {
            code,
            message,
            source: Some(e.into()),
        }
    }
}

impl From<AuthError> for ApiError {
    /// Busy hashing is a 503 with `Retry-After`; anything else is internal.
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::Busy => ApiError::Busy {
                retry_after: HASH_RETRY_AFTER_SECS,
            },
            e => ApiError::internal(e),
        }
    }
}

impl From<OrchestratorError> for ApiError {
    fn from(e: OrchestratorError) -> Self {
        ApiError::BadGateway {
            code: "runtime_error",
            message: "the container runtime failed",
            source: Some(e.into()),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    async fn body_of(e: ApiError) -> (StatusCode, serde_json::Value) {
        let resp = e.into_response();
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 16)
            .await
            .unwrap();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    #[tokio::test]
    async fn field_is_present_only_when_set() {
        let (status, body) = body_of(ApiError::validation("slug", "bad slug")).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(body["error"]["field"], "slug");
        assert_eq!(body["error"]["code"], "invalid_field");
        let (_, body) = body_of(ApiError::NotFound("agent")).await;
        assert!(body["error"].get("field").is_none());
        assert!(body["error"].get("errorId").is_none());
    }

    #[tokio::test]
    async fn server_errors_hide_the_cause_and_carry_an_id() {
        let (status, body) = body_of(ApiError::internal(anyhow::anyhow!("secret detail"))).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(body["error"]["message"], "internal error");
        assert!(body["error"]["errorId"].is_string());
        assert!(!body.to_string().contains("secret detail"));
    }
}
