//! Client for the ZeroClaw gateway protocol (DESIGN.md §1) that every agent
//! container speaks: `/health`, `/pair`, `/api/status`, `/webhook`. It speaks
//! the protocol, not our runtime's implementation of it, so it drives the
//! stock upstream image too.
//!
//! Architecture invariant: a pairing code is sent at most once per
//! [`GatewayClient::pair`] call, and the client never retries a request by
//! itself: upstream's lockout counts failures per peer IP, and behind
//! Docker's port publishing every host caller shares one IP. Tokens never
//! appear in errors or logs.

use std::time::Duration;

/// Errors talking to an agent gateway.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// Connection refused, reset, DNS, TLS…: the agent is not reachable.
    #[error("agent unreachable: {0}")]
    Unreachable(String),
    #[error("agent did not answer within {0:?}")]
    Timeout(Duration),
    /// `/pair` answered 403: wrong or already used code.
    #[error("pairing code rejected")]
    CodeRejected,
    /// `/pair` answered 429 (lockout), with `retry_after` seconds.
    #[error("pairing locked out for {0} s")]
    LockedOut(u64),
    /// Any other unexpected status or body.
    #[error("unexpected answer from agent: HTTP {status}: {body}")]
    Unexpected { status: u16, body: String },
}

/// The answer of `/webhook`, passed through to the API caller.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookReply {
    pub status: u16,
    pub body: serde_json::Value,
}

/// Connect timeout for every request.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Whole-request timeout of `/pair`, `/health`, `/api/status`.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Whole-request timeout of `/webhook` (the agent's own limit is 30 s).
pub const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(35);
/// Lockout assumed when a 429 carries no `retry_after` (upstream: 300 s).
pub const DEFAULT_LOCKOUT_SECS: u64 = 300;
/// Longest body excerpt kept in [`GatewayError::Unexpected`].
const BODY_EXCERPT: usize = 512;

/// HTTP client for agent gateways. Cheap to clone.
#[derive(Clone)]
pub struct GatewayClient {
    http: reqwest::Client,
    request_timeout: Duration,
    webhook_timeout: Duration,
}

impl GatewayClient {
    /// A client with sane connect/request timeouts ([`CONNECT_TIMEOUT`],
    /// [`REQUEST_TIMEOUT`], [`WEBHOOK_TIMEOUT`]).
    pub fn new() -> Self {
        Self::with_timeouts(CONNECT_TIMEOUT, REQUEST_TIMEOUT, WEBHOOK_TIMEOUT)
    }

    /// A client with explicit timeouts (tests use short ones).
    pub fn with_timeouts(connect: Duration, request: Duration, webhook: Duration) -> Self {
        // Agents are reached on the host's loopback: never through a proxy
        // from the environment.
        let builder = || {
            reqwest::Client::builder()
                .connect_timeout(connect)
                .no_proxy()
        };
        let http = builder()
            .build()
            // Without a usable native root store (only https needs one).
            .or_else(|_| builder().tls_built_in_root_certs(false).build())
            .expect("an HTTP client without TLS roots always builds");
        GatewayClient {
            http,
            request_timeout: request,
            webhook_timeout: webhook,
        }
    }

    /// `POST {base}/pair` with `X-Pairing-Code: code` once; returns the bearer token.
    ///
    /// Errors: 403 → [`GatewayError::CodeRejected`]; 429 →
    /// [`GatewayError::LockedOut`] with `retry_after` (body, else the
    /// `Retry-After` header, else 300 s); a 200 without a `token` string →
    /// [`GatewayError::Unexpected`] (its body is not echoed).
    pub async fn pair(&self, base: &str, code: &str) -> Result<String, GatewayError> {
        let request = self
            .http
            .post(format!("{base}/pair"))
            .header("X-Pairing-Code", code)
            .timeout(self.request_timeout);
        let response = request
            .send()
            .await
            .map_err(|e| self.map_err(e, self.request_timeout))?;
        let status = response.status().as_u16();
        let header_retry = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        let body = response
            .bytes()
            .await
            .map_err(|e| self.map_err(e, self.request_timeout))?;
        match status {
            200 => serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| {
                    v.get("token")?
                        .as_str()
                        .filter(|t| !t.is_empty())
                        .map(str::to_owned)
                })
                .ok_or(GatewayError::Unexpected {
                    status,
                    body: format!("200 without a token ({} bytes)", body.len()),
                }),
            403 => Err(GatewayError::CodeRejected),
            429 => {
                let from_body = serde_json::from_slice::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| v.get("retry_after")?.as_u64());
                Err(GatewayError::LockedOut(
                    from_body.or(header_retry).unwrap_or(DEFAULT_LOCKOUT_SECS),
                ))
            }
            _ => Err(unexpected(status, &body)),
        }
    }

    /// `GET {base}/health`; the JSON body when it answers 200.
    pub async fn health(&self, base: &str) -> Result<serde_json::Value, GatewayError> {
        let response = self
            .http
            .get(format!("{base}/health"))
            .timeout(self.request_timeout)
            .send()
            .await
            .map_err(|e| self.map_err(e, self.request_timeout))?;
        let status = response.status().as_u16();
        let body = response
            .bytes()
            .await
            .map_err(|e| self.map_err(e, self.request_timeout))?;
        if status != 200 {
            return Err(unexpected(status, &body));
        }
        serde_json::from_slice(&body).map_err(|_| unexpected(status, &body))
    }

    /// `GET {base}/api/status` with the bearer token: `Ok(true)` on 200,
    /// `Ok(false)` on 401, an error otherwise.
    pub async fn token_valid(&self, base: &str, token: &str) -> Result<bool, GatewayError> {
        let response = self
            .http
            .get(format!("{base}/api/status"))
            .bearer_auth(token)
            .timeout(self.request_timeout)
            .send()
            .await
            .map_err(|e| self.map_err(e, self.request_timeout))?;
        let status = response.status().as_u16();
        match status {
            200 => Ok(true),
            401 => Ok(false),
            _ => {
                let body = response.bytes().await.unwrap_or_default();
                Err(unexpected(status, &body))
            }
        }
    }

    /// `POST {base}/webhook` with `{"message": message}` and the bearer token;
    /// the agent's status and JSON body are returned as they are (a body that
    /// is not JSON comes back as `{"error": "<text>"}`). Only transport
    /// failures are errors.
    pub async fn webhook(
        &self,
        base: &str,
        token: &str,
        message: &str,
        idempotency_key: Option<&str>,
    ) -> Result<WebhookReply, GatewayError> {
        let mut request = self
            .http
            .post(format!("{base}/webhook"))
            .bearer_auth(token)
            .json(&serde_json::json!({ "message": message }))
            .timeout(self.webhook_timeout);
        if let Some(key) = idempotency_key {
            request = request.header("X-Idempotency-Key", key);
        }
        let response = request
            .send()
            .await
            .map_err(|e| self.map_err(e, self.webhook_timeout))?;
        let status = response.status().as_u16();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| self.map_err(e, self.webhook_timeout))?;
        let body = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| serde_json::json!({ "error": excerpt(&bytes) }));
        Ok(WebhookReply { status, body })
    }

    fn map_err(&self, e: reqwest::Error, limit: Duration) -> GatewayError {
        if e.is_timeout() {
            GatewayError::Timeout(limit)
        } else {
            // Without the URL: it is ours, and errors should stay short.
            GatewayError::Unreachable(error_chain(&e.without_url()))
        }
    }
}

impl Default for GatewayClient {
    fn default() -> Self {
        Self::new()
    }
}

fn unexpected(status: u16, body: &[u8]) -> GatewayError {
    GatewayError::Unexpected {
        status,
        body: excerpt(body),
    }
}

/// At most [`BODY_EXCERPT`] bytes of `body`, lossily decoded, on a char boundary.
fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut end = text.len().min(BODY_EXCERPT);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

/// `e: cause: cause…`, so "connection refused" is visible.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}

#[cfg(test)]
mod tests {
    //! Against an in-process gateway on 127.0.0.1:0 speaking DESIGN.md §1.
    use super::*;
    use axum::extract::State;
    use axum::http::{HeaderMap, StatusCode};
    use axum::routing::{get, post};
    use axum::{Json, Router};
    use serde_json::{json, Value};
    use std::sync::{Arc, Mutex};

    const TOKEN: &str = "zc_0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[derive(Default)]
    struct Fake {
        code: Option<String>,
        failures: u32,
        pair_calls: u32,
        webhook_calls: u32,
    }
    type Shared = Arc<Mutex<Fake>>;

    fn bearer_ok(headers: &HeaderMap) -> bool {
        headers.get("authorization").and_then(|v| v.to_str().ok())
            == Some(&format!("Bearer {TOKEN}"))
    }

    async fn pair(State(s): State<Shared>, headers: HeaderMap) -> (StatusCode, Json<Value>) {
        let mut s = s.lock().expect("lock");
        s.pair_calls += 1;
        if s.failures >= 5 {
            return (
                StatusCode::TOO_MANY_REQUESTS,
                Json(
                    json!({"error": "Too many failed attempts. Try again in 277s.", "retry_after": 277}),
                ),
            );
        }
        let sent = headers.get("x-pairing-code").and_then(|v| v.to_str().ok());
        if sent.is_some() && sent == s.code.as_deref() {
            s.code = None; // one-time
            return (
                StatusCode::OK,
                Json(json!({"paired": true, "persisted": false, "token": TOKEN, "message": "ok"})),
            );
        }
        s.failures += 1;
        (
            StatusCode::FORBIDDEN,
            Json(json!({"error": "Invalid pairing code"})),
        )
    }

    async fn status(headers: HeaderMap) -> (StatusCode, Json<Value>) {
        if bearer_ok(&headers) {
            (StatusCode::OK, Json(json!({"status": "ok"})))
        } else {
            (
                StatusCode::UNAUTHORIZED,
                Json(json!({"error": "Unauthorized"})),
            )
        }
    }

    async fn webhook(
        State(s): State<Shared>,
        headers: HeaderMap,
        body: String,
    ) -> (StatusCode, Json<Value>) {
        s.lock().expect("lock").webhook_calls += 1;
        if !bearer_ok(&headers) {
            return (
                StatusCode::UNAUTHORIZED,
                Json(json!({"error": "Unauthorized — pair first"})),
            );
        }
        let Ok(Value::Object(body)) = serde_json::from_str::<Value>(&body) else {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({"error": "Invalid JSON body"})),
            );
        };
        let idem = headers
            .get("x-idempotency-key")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let message = body
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or_default();
        (
            StatusCode::OK,
            Json(json!({"response": format!("echo: {message}"), "model": "m", "idem": idem})),
        )
    }

    async fn serve(router: Router) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, router).await });
        format!("http://{addr}")
    }

    async fn fake(code: &str) -> (String, Shared) {
        let state: Shared = Arc::new(Mutex::new(Fake {
            code: Some(code.into()),
            ..Default::default()
        }));
        let router = Router::new()
            .route("/pair", post(pair))
            .route(
                "/health",
                get(|| async { Json(json!({"status": "ok", "paired": false})) }),
            )
            .route("/api/status", get(status))
            .route("/webhook", post(webhook))
            .route(
                "/slow/health",
                get(|| async {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    "late"
                }),
            )
            .route("/odd/pair", post(|| async { "not json" }))
            .route(
                "/odd/health",
                get(|| async { (StatusCode::IM_A_TEAPOT, "short and stout") }),
            )
            .route(
                "/odd/webhook",
                post(|| async { (StatusCode::PAYLOAD_TOO_LARGE, "length limit exceeded") }),
            )
            .route(
                "/header/pair",
                post(|| async { (StatusCode::TOO_MANY_REQUESTS, [("retry-after", "12")], "") }),
            )
            .with_state(state.clone());
        (serve(router).await, state)
    }

    #[tokio::test]
    async fn pair_returns_the_token_once_and_the_code_is_one_time() {
        let (base, state) = fake("123456").await;
        let client = GatewayClient::new();
        assert_eq!(client.pair(&base, "123456").await.expect("paired"), TOKEN);
        assert!(matches!(
            client.pair(&base, "123456").await,
            Err(GatewayError::CodeRejected)
        ));
        assert_eq!(
            state.lock().expect("lock").pair_calls,
            2,
            "one request per call"
        );
    }

    #[tokio::test]
    async fn wrong_codes_then_lockout_with_retry_after() {
        let (base, state) = fake("123456").await;
        let client = GatewayClient::new();
        for _ in 0..5 {
            assert!(matches!(
                client.pair(&base, "000000").await,
                Err(GatewayError::CodeRejected)
            ));
        }
        assert!(matches!(
            client.pair(&base, "123456").await,
            Err(GatewayError::LockedOut(277))
        ));
        assert_eq!(state.lock().expect("lock").pair_calls, 6);
        let header_only = format!("{base}/header");
        assert!(matches!(
            client.pair(&header_only, "1").await,
            Err(GatewayError::LockedOut(12))
        ));
    }

    #[tokio::test]
    async fn pair_200_without_token_is_unexpected() {
        let (base, _) = fake("123456").await;
        let err = GatewayClient::new()
            .pair(&format!("{base}/odd"), "123456")
            .await;
        assert!(
            matches!(err, Err(GatewayError::Unexpected { status: 200, .. })),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn health_and_token_validity() {
        let (base, _) = fake("123456").await;
        let client = GatewayClient::new();
        assert_eq!(client.health(&base).await.expect("health")["status"], "ok");
        assert!(client.token_valid(&base, TOKEN).await.expect("status"));
        assert!(!client.token_valid(&base, "zc_wrong").await.expect("status"));
        let err = client.health(&format!("{base}/odd")).await;
        match err {
            Err(GatewayError::Unexpected { status: 418, body }) => {
                assert_eq!(body, "short and stout")
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn webhook_passes_status_and_body_through() {
        let (base, state) = fake("123456").await;
        let client = GatewayClient::new();
        let ok = client
            .webhook(&base, TOKEN, "hi \"there\" ✓", Some("k-1"))
            .await
            .expect("reply");
        assert_eq!(ok.status, 200);
        assert_eq!(ok.body["response"], "echo: hi \"there\" ✓");
        assert_eq!(ok.body["idem"], "k-1");
        let denied = client
            .webhook(&base, "zc_wrong", "hi", None)
            .await
            .expect("reply");
        assert_eq!(denied.status, 401);
        assert!(denied.body["error"]
            .as_str()
            .expect("error")
            .starts_with("Unauthorized"));
        let odd = client
            .webhook(&format!("{base}/odd"), TOKEN, "x", None)
            .await
            .expect("reply");
        assert_eq!(
            (odd.status, odd.body.clone()),
            (413, json!({"error": "length limit exceeded"}))
        );
        assert_eq!(state.lock().expect("lock").webhook_calls, 2);
    }

    #[tokio::test]
    async fn timeouts_and_unreachable() {
        let (base, _) = fake("123456").await;
        let client = GatewayClient::with_timeouts(
            Duration::from_millis(500),
            Duration::from_millis(200),
            Duration::from_millis(200),
        );
        let started = std::time::Instant::now();
        let err = client.health(&format!("{base}/slow")).await;
        assert!(
            matches!(err, Err(GatewayError::Timeout(d)) if d == Duration::from_millis(200)),
            "{err:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(2));

        // A port nothing listens on.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let closed = format!("http://{}", listener.local_addr().expect("addr"));
        drop(listener);
        let err = client.pair(&closed, "123456").await;
        assert!(matches!(err, Err(GatewayError::Unreachable(_))), "{err:?}");
    }

    #[tokio::test]
    async fn connection_closed_mid_request_is_unreachable_and_not_retried() {
        // What docker-proxy does while the container is not listening yet.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let accepted = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let counter = accepted.clone();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let mut buf = [0u8; 1024];
                let _ = tokio::io::AsyncReadExt::read(&mut socket, &mut buf).await;
                drop(socket);
            }
        });
        let err = GatewayClient::new().pair(&base, "123456").await;
        assert!(matches!(err, Err(GatewayError::Unreachable(_))), "{err:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            accepted.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "the code was sent once"
        );
    }
}
