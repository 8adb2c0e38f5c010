//! Test harness: a stand-in LLM provider (in-process axum server that records every request
//! and answers in a given wire format) and the real gateway built on `127.0.0.1:0`.

#![allow(dead_code, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agent_runtime::clock::Clock;
use agent_runtime::config::{Config, Paths};
use agent_runtime::providers::ProviderSpec;
use agent_runtime::secret::Secret;
use agent_runtime::App;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::IntoResponse;
use serde_json::{json, Value};
use tempfile::TempDir;

/// The API key the tests configure; must never show up in any answer or log.
pub const TEST_KEY: &str = "sk-test-SECRET-0123456789";

/// One request received by the stub.
#[derive(Debug, Clone)]
pub struct Call {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Call {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    }
}

type Responder = Arc<dyn Fn(&Call) -> axum::response::Response + Send + Sync>;

/// A fake provider.
pub struct Stub {
    pub addr: SocketAddr,
    calls: Arc<Mutex<Vec<Call>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Stub {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Stub {
    /// Starts on `bind` (e.g. `127.0.0.1:0`); answers each request after `delay` with
    /// `responder(call)`.
    pub async fn start(
        bind: &str,
        delay: Duration,
        responder: impl Fn(&Call) -> (u16, Value) + Send + Sync + 'static,
    ) -> Self {
        Self::start_raw(bind, delay, move |call| {
            let (status, body) = responder(call);
            (StatusCode::from_u16(status).unwrap(), axum::Json(body)).into_response()
        })
        .await
    }

    /// Like [`Stub::start`], with full control of the answer (headers, streamed bodies).
    pub async fn start_raw(
        bind: &str,
        delay: Duration,
        responder: impl Fn(&Call) -> axum::response::Response + Send + Sync + 'static,
    ) -> Self {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let responder: Responder = Arc::new(responder);
        let recorded = calls.clone();
        let handler = move |uri: Uri, headers: HeaderMap, body: Bytes| {
            let recorded = recorded.clone();
            let responder = responder.clone();
            async move {
                let call = Call {
                    path: uri.path().to_owned(),
                    headers,
                    body: serde_json::from_slice(&body).unwrap_or(Value::Null),
                };
                recorded.lock().unwrap().push(call.clone());
                tokio::time::sleep(delay).await;
                responder(&call)
            }
        };
        let router = axum::Router::new().fallback(handler);
        let listener = tokio::net::TcpListener::bind(bind).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Self { addr, calls, task }
    }

    /// A stub answering every request at once with `status` and `body`.
    pub async fn fixed(status: u16, body: Value) -> Self {
        Self::start("127.0.0.1:0", Duration::ZERO, move |_| {
            (status, body.clone())
        })
        .await
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.addr.port())
    }

    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }
}

pub fn openai_reply(text: &str) -> Value {
    json!({"id": "chatcmpl-1", "object": "chat.completion",
           "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
           "usage": {"prompt_tokens": 11, "completion_tokens": 5, "total_tokens": 16}})
}

pub fn anthropic_reply(text: &str) -> Value {
    json!({"id": "msg_1", "type": "message", "role": "assistant",
           "content": [{"type": "text", "text": text}], "stop_reason": "end_turn",
           "usage": {"input_tokens": 12, "output_tokens": 6}})
}

pub fn gemini_reply(text: &str) -> Value {
    json!({"candidates": [{"content": {"role": "model", "parts": [{"text": text}]}, "finishReason": "STOP"}],
           "usageMetadata": {"promptTokenCount": 13, "candidatesTokenCount": 7, "totalTokenCount": 20}})
}

pub fn ollama_reply(text: &str) -> Value {
    json!({"model": "llama3.2", "message": {"role": "assistant", "content": text}, "done": true,
           "prompt_eval_count": 14, "eval_count": 8})
}

/// Defaults rooted in `dir`, provider `provider` pointed at `base_url`, key [`TEST_KEY`].
pub fn config_for(dir: &Path, provider: &str, base_url: &str) -> Config {
    let mut c = Config::defaults(Paths::under(dir));
    c.provider.spec = ProviderSpec::parse(provider).unwrap();
    c.provider.api_url = Some(base_url.to_owned());
    c.provider.api_key = Some(Secret::new(TEST_KEY));
    c.provider.model = "test-model".into();
    c.gateway.port = 0;
    c
}

/// A running gateway plus a client.
pub struct TestApp {
    pub app: Option<App>,
    pub dir: TempDir,
    pub base: String,
    pub http: reqwest::Client,
}

impl TestApp {
    pub async fn start(config: Config, dir: TempDir) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let app = App::build(&config, listener).await.unwrap();
        Self::wrap(app, dir)
    }

    pub async fn start_with_clock(config: Config, dir: TempDir, clock: Arc<dyn Clock>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let app = App::build_with_clock(&config, listener, clock)
            .await
            .unwrap();
        Self::wrap(app, dir)
    }

    fn wrap(app: App, dir: TempDir) -> Self {
        Self {
            base: format!("http://{}", app.addr()),
            app: Some(app),
            dir,
            http: reqwest::Client::new(),
        }
    }

    /// A gateway for `provider` at the stub, in a fresh temp dir, after `tweak`.
    pub async fn with(provider: &str, stub: &Stub, tweak: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = config_for(dir.path(), provider, &stub.url());
        tweak(&mut cfg);
        Self::start(cfg, dir).await
    }

    pub fn app(&self) -> &App {
        self.app.as_ref().unwrap()
    }

    pub fn workspace(&self) -> std::path::PathBuf {
        self.dir.path().join("workspace")
    }

    pub async fn shutdown(&mut self) -> bool {
        self.app
            .take()
            .unwrap()
            .shutdown(Duration::from_secs(2))
            .await
    }

    /// POST /pair with `code`; returns (status, body).
    pub async fn pair_with(&self, code: Option<&str>) -> (u16, Value) {
        let mut req = self.http.post(format!("{}/pair", self.base));
        if let Some(c) = code {
            req = req.header("X-Pairing-Code", c);
        }
        into_parts(req.send().await.unwrap()).await
    }

    /// Pairs with the current code; returns the token.
    pub async fn pair(&self) -> String {
        let code = self.app().pairing_code().expect("a pairing code");
        let (status, body) = self.pair_with(Some(&code)).await;
        assert_eq!(status, 200, "{body}");
        body["token"].as_str().unwrap().to_owned()
    }

    /// POST /webhook with a raw body and optional token/idempotency key.
    pub async fn webhook_raw(
        &self,
        token: Option<&str>,
        body: impl Into<reqwest::Body>,
        idem: Option<&str>,
    ) -> (u16, Value) {
        let mut req = self
            .http
            .post(format!("{}/webhook", self.base))
            .header("content-type", "application/json")
            .body(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(k) = idem {
            req = req.header("X-Idempotency-Key", k);
        }
        into_parts(req.send().await.unwrap()).await
    }

    pub async fn webhook(&self, token: &str, message: &str) -> (u16, Value) {
        self.webhook_raw(Some(token), json!({"message": message}).to_string(), None)
            .await
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        let mut req = self.http.get(format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        into_parts(req.send().await.unwrap()).await
    }

    pub async fn metrics(&self) -> String {
        self.http
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

/// Status and JSON body (`Value::String` of the raw text when not JSON).
pub async fn into_parts(resp: reqwest::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, body)
}
