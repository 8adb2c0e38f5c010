//! Client for the ZeroClaw gateway protocol (DESIGN.md §1) that every agent
//! container speaks: `/health`, `/pair`, `/pair/code`, `/api/status`, `/webhook`. It speaks
//! the protocol, not our runtime's implementation of it, so it drives the
//! stock upstream image too.
//!
//! Architecture invariant: a pairing code is sent at most once per
//! [`GatewayClient::pair`] call, and the client never retries a request by
//! itself: upstream's lockout counts failures per peer IP, and behind
//! Docker's port publishing every host caller shares one IP. Tokens never
//! appear in errors or logs.
//!
//! Architecture invariant: the agent is untrusted (its tenant controls the
//! code behind the gateway). The client never follows a redirect — a 3xx
//! would otherwise make the control plane send the pairing code or the bearer
//! token wherever the agent points, from the control plane's network
//! position — and never holds more of an answer than
//! [`SMALL_ANSWER_LIMIT`] (or [`WEBHOOK_ANSWER_LIMIT`]) plus one chunk. Both
//! are errors, so nothing of such an answer is stored or passed through.

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
    /// The agent answered with a redirect. Never followed; its `Location` is
    /// not kept (it is the agent's choice, not ours to log or echo).
    #[error("agent answered with a redirect (HTTP {status}); redirects are never followed")]
    Redirect { status: u16 },
    /// The agent's answer is longer than `limit` bytes (by its
    /// `Content-Length` or by what it sent); reading stopped there.
    #[error("agent's answer is larger than the {limit}-byte limit")]
    TooLarge { limit: usize },
}

/// The answer of `/webhook`, passed through to the API caller.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookReply {
    pub status: u16,
    pub body: serde_json::Value,
}

/// What `GET /pair/code` says ([`GatewayClient::pair_code`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PairCode {
    /// The runtime is unpaired and this is its current one-time code.
    Code(String),
    /// No code to hand out: the runtime is paired already (or pairing is
    /// off; [`GatewayClient::pairing_open`] tells which).
    None,
    /// The runtime does not answer `/pair/code` to us.
    Unavailable,
}

/// Connect timeout for every request.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Whole-request timeout of `/pair`, `/health`, `/api/status`.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Whole-request timeout of `/webhook` (the agent's own limit is 30 s).
pub const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(35);
/// Lockout assumed when a 429 carries no `retry_after` (upstream: 300 s).
pub const DEFAULT_LOCKOUT_SECS: u64 = 300;

/// How long an idle connection to an agent is kept for reuse. Short: the
/// stats and health poll reaches each agent once per period (10 s and more,
/// growing with the fleet), and with hyper's default 90 s every agent's
/// connection stayed open between polls — ≈ 50 KiB of buffers and a task
/// in this process, and a socket in the agent, per agent (BENCHMARKS.md,
/// density). A deploy's requests and a conversation's messages follow each
/// other within it.
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(2);

/// Longest body excerpt kept in [`GatewayError::Unexpected`].
const BODY_EXCERPT: usize = 512;
/// Most bytes read of an answer of `/pair`, `/health` or `/api/status`.
/// Their legitimate answers are a few hundred bytes of JSON; anything beyond
/// this is refused with [`GatewayError::TooLarge`].
pub const SMALL_ANSWER_LIMIT: usize = 64 * 1024;
/// Most bytes read of a `/webhook` answer, which is passed through to the API
/// caller: room for a long model reply (the message itself is capped at
/// 32 KiB), not for an agent trying to exhaust the control plane's memory.
pub const WEBHOOK_ANSWER_LIMIT: usize = 1024 * 1024;

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
        Self::build(connect, request, webhook, None).expect("a client without a proxy builds")
    }

    /// [`GatewayClient::new`] reaching every agent through the HTTP proxy
    /// `proxy` (`http://host:port`, [`crate::config::Config::agent_proxy`]):
    /// for a control plane that is not on the agents' networks itself.
    ///
    /// Errors: `proxy` is not a proxy URL reqwest accepts.
    pub fn with_proxy(proxy: &str) -> anyhow::Result<Self> {
        Self::build(
            CONNECT_TIMEOUT,
            REQUEST_TIMEOUT,
            WEBHOOK_TIMEOUT,
            Some(proxy),
        )
    }

    fn build(
        connect: Duration,
        request: Duration,
        webhook: Duration,
        proxy: Option<&str>,
    ) -> anyhow::Result<Self> {
        let proxy = proxy.map(reqwest::Proxy::all).transpose()?;
        // Agents are reached directly or through the configured proxy:
        // never through a proxy from the environment. Redirects are answers
        // like any other (see the module's invariant), never followed.
        let builder = || {
            let b = reqwest::Client::builder()
                .connect_timeout(connect)
                .pool_idle_timeout(POOL_IDLE_TIMEOUT)
                .no_proxy()
                .redirect(reqwest::redirect::Policy::none());
            match &proxy {
                Some(p) => b.proxy(p.clone()),
                None => b,
            }
        };
        let http = builder()
            .build()
            // Without a usable native root store (only https needs one).
            .or_else(|_| builder().tls_built_in_root_certs(false).build())
            .expect("an HTTP client without TLS roots always builds");
        Ok(GatewayClient {
            http,
            request_timeout: request,
            webhook_timeout: webhook,
        })
    }

    /// `POST {base}/pair` with `X-Pairing-Code: code` once; returns the bearer token.
    ///
    /// Errors: 403 → [`GatewayError::CodeRejected`]; 429 →
    /// [`GatewayError::LockedOut`] with `retry_after` (body, else the
    /// `Retry-After` header, else 300 s); a 200 without a `token` string →
    /// [`GatewayError::Unexpected`] (its body is not echoed); a 3xx →
    /// [`GatewayError::Redirect`]; an answer over [`SMALL_ANSWER_LIMIT`] →
    /// [`GatewayError::TooLarge`].
    pub async fn pair(&self, base: &str, code: &str) -> Result<String, GatewayError> {
        let request = self
            .http
            .post(format!("{base}/pair"))
            .header("X-Pairing-Code", code);
        let response = self.send(request, self.request_timeout).await?;
        let status = response.status().as_u16();
        let header_retry = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        let body = self
            .read_capped(response, SMALL_ANSWER_LIMIT, self.request_timeout)
            .await?;
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

    /// `GET {base}/health`; the JSON body when it answers 200. A 3xx or an
    /// answer over [`SMALL_ANSWER_LIMIT`] is an error like any other.
    pub async fn health(&self, base: &str) -> Result<serde_json::Value, GatewayError> {
        let request = self.http.get(format!("{base}/health"));
        let (status, body) = self.small(request).await?;
        if status != 200 {
            return Err(unexpected(status, &body));
        }
        serde_json::from_slice(&body).map_err(|_| unexpected(status, &body))
    }

    /// `GET {base}/api/status` with the bearer token: `Ok(true)` on 200,
    /// `Ok(false)` on 401, an error otherwise (a 3xx, or an answer over
    /// [`SMALL_ANSWER_LIMIT`], included).
    pub async fn token_valid(&self, base: &str, token: &str) -> Result<bool, GatewayError> {
        self.status_admits(base, Some(token)).await
    }

    /// `GET {base}/api/status` without credentials: `Ok(true)` when it
    /// answers 200, i.e. the runtime does not enforce pairing (upstream's
    /// `require_auth` lets everyone in when `require_pairing = false`),
    /// `Ok(false)` on 401. Upstream does not count a 401 of `/api/status`
    /// towards its failed-attempt lockout, so asking is free.
    pub async fn pairing_open(&self, base: &str) -> Result<bool, GatewayError> {
        self.status_admits(base, None).await
    }

    /// `GET {base}/api/status`, with `token` as bearer if any: 200 →
    /// `Ok(true)`, 401 → `Ok(false)`, anything else an error.
    async fn status_admits(&self, base: &str, token: Option<&str>) -> Result<bool, GatewayError> {
        let mut request = self.http.get(format!("{base}/api/status"));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let (status, body) = self.small(request).await?;
        match status {
            200 => Ok(true),
            401 => Ok(false),
            _ => Err(unexpected(status, &body)),
        }
    }

    /// `GET {base}/pair/code`: the runtime's current one-time code while it
    /// is unpaired (upstream 0.6+, `src/gateway/mod.rs` `handle_pair_code`:
    /// `{"success":true,"pairing_required":bool,"pairing_code":"123456"|null}`).
    ///
    /// [`PairCode::Unavailable`] when the runtime does not answer it (404,
    /// 405, or our runtime's 403 to non-loopback peers); a code that is not
    /// six digits is [`GatewayError::Unexpected`], never sent anywhere.
    pub async fn pair_code(&self, base: &str) -> Result<PairCode, GatewayError> {
        let request = self.http.get(format!("{base}/pair/code"));
        let (status, body) = self.small(request).await?;
        match status {
            200 => {}
            403..=405 => return Ok(PairCode::Unavailable),
            _ => return Err(unexpected(status, &body)),
        }
        let value: serde_json::Value =
            serde_json::from_slice(&body).map_err(|_| unexpected(status, &body))?;
        match value.get("pairing_code") {
            None | Some(serde_json::Value::Null) => Ok(PairCode::None),
            Some(serde_json::Value::String(code))
                if code.len() == 6 && code.bytes().all(|b| b.is_ascii_digit()) =>
            {
                Ok(PairCode::Code(code.clone()))
            }
            Some(_) => Err(GatewayError::Unexpected {
                status,
                body: "pairing_code is not six digits".into(),
            }),
        }
    }

    /// `POST {base}/webhook` with `{"message": message}` and the bearer token;
    /// the agent's status and JSON body are returned as they are (a body that
    /// is not JSON comes back as `{"error": "<text>"}`). Errors: transport
    /// failures, a 3xx ([`GatewayError::Redirect`]: never passed through,
    /// the API caller would follow it) and an answer over
    /// [`WEBHOOK_ANSWER_LIMIT`] ([`GatewayError::TooLarge`]).
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
            .json(&serde_json::json!({ "message": message }));
        if let Some(key) = idempotency_key {
            request = request.header("X-Idempotency-Key", key);
        }
        let response = self.send(request, self.webhook_timeout).await?;
        let status = response.status().as_u16();
        let bytes = self
            .read_capped(response, WEBHOOK_ANSWER_LIMIT, self.webhook_timeout)
            .await?;
        let body = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| serde_json::json!({ "error": excerpt(&bytes) }));
        Ok(WebhookReply { status, body })
    }

    /// Sends `request` with the request timeout and reads its answer, up to
    /// [`SMALL_ANSWER_LIMIT`]: `(status, body)`.
    async fn small(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<(u16, Vec<u8>), GatewayError> {
        let response = self.send(request, self.request_timeout).await?;
        let status = response.status().as_u16();
        let body = self
            .read_capped(response, SMALL_ANSWER_LIMIT, self.request_timeout)
            .await?;
        Ok((status, body))
    }

    /// Sends `request` with the whole-request `timeout` (which also bounds
    /// reading the body); a 3xx is [`GatewayError::Redirect`], its body
    /// unread.
    async fn send(
        &self,
        request: reqwest::RequestBuilder,
        timeout: Duration,
    ) -> Result<reqwest::Response, GatewayError> {
        let response = request
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| self.map_err(e, timeout))?;
        if response.status().is_redirection() {
            return Err(GatewayError::Redirect {
                status: response.status().as_u16(),
            });
        }
        Ok(response)
    }

    /// The body of `response`, or [`GatewayError::TooLarge`] as soon as it
    /// is known to pass `limit` bytes: from `Content-Length` before reading
    /// anything, else from the chunks read so far. Never holds more than
    /// `limit` bytes plus the chunk in hand; the rest is never read (the
    /// connection is dropped with the response).
    async fn read_capped(
        &self,
        mut response: reqwest::Response,
        limit: usize,
        timeout: Duration,
    ) -> Result<Vec<u8>, GatewayError> {
        let declared = response.content_length();
        if declared.is_some_and(|n| n > limit as u64) {
            return Err(GatewayError::TooLarge { limit });
        }
        let mut body = Vec::with_capacity(declared.unwrap_or(0) as usize);
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| self.map_err(e, timeout))?
        {
            let needed = body.len() + chunk.len();
            if needed > limit {
                return Err(GatewayError::TooLarge { limit });
            }
            if needed > body.capacity() {
                // Doubling, but never past the limit.
                let want = (body.capacity() * 2).clamp(needed, limit);
                body.reserve_exact(want - body.len());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
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
#[path = "gateway_tests.rs"]
mod tests;
