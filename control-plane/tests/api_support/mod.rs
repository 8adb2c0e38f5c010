//! Shared harness of the API tests: the real service built by `App::build`
//! on `127.0.0.1:0` with a fresh data directory (SQLite file, keys) and the
//! real Docker engine. Everything it creates in Docker carries
//! `io.zcaas.test=<random>` and is removed by label when the harness drops,
//! even if the test panics. The runtime image configured does not exist and
//! cannot be built, so an agent created here never starts a container: its
//! deploy fails fast to ERROR.
#![allow(dead_code)]

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use zcaas::app::App;
use zcaas::config::Config;
use zcaas::docker::CleanupOnDrop;

pub struct TestApp {
    pub app: Option<App>,
    pub base: String,
    pub http: reqwest::Client,
    pub label: String,
    _dir: tempfile::TempDir,
    _cleanup: CleanupOnDrop,
}

impl TestApp {
    /// Starts the service with `tweak` applied to the test configuration.
    pub async fn spawn_with(tweak: impl FnOnce(&mut Config)) -> TestApp {
        let dir = tempfile::tempdir().expect("tempdir");
        let label = format!("api{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let cleanup = CleanupOnDrop::new("io.zcaas.test", label.clone());
        let mut config = Config::with_data_dir(dir.path().join("data"));
        config.runtime_image = format!("zcaas-test/missing:{label}");
        config.agent_binary = dir.path().join("no-such-agent-runtime");
        config.network = format!("zcaas-test-{label}");
        config.domain = "test.local".into();
        config
            .extra_labels
            .insert("io.zcaas.test".into(), label.clone());
        tweak(&mut config);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let app = App::build(config, listener).await.expect("App::build");
        let base = format!("http://{}", app.addr());
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .expect("client");
        TestApp {
            app: Some(app),
            base,
            http,
            label,
            _dir: dir,
            _cleanup: cleanup,
        }
    }

    /// Starts the service with the test configuration.
    pub async fn spawn() -> TestApp {
        Self::spawn_with(|_| {}).await
    }

    pub fn app(&self) -> &App {
        self.app.as_ref().expect("running")
    }

    pub fn state(&self) -> &zcaas::api::AppState {
        self.app().state()
    }

    /// Stops the service (Docker objects go when `self` drops).
    pub async fn stop(mut self) {
        if let Some(app) = self.app.take() {
            app.shutdown().await;
        }
    }

    /// Sends a request; a JSON body is sent with `Content-Type: application/json`.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request");
        Self::read(resp).await
    }

    /// Sends raw bytes with the given content type.
    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> (StatusCode, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .body(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        Self::read(req.send().await.expect("request")).await
    }

    async fn read(resp: reqwest::Response) -> (StatusCode, Value) {
        let status = resp.status();
        let text = resp.text().await.expect("body");
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text)
                .unwrap_or_else(|_| panic!("non-JSON body for {status}: {text}"))
        };
        (status, value)
    }

    /// Registers `email` and returns its token.
    pub async fn register(&self, email: &str) -> String {
        let (status, body) = self
            .call(
                Method::POST,
                "/api/auth/register",
                None,
                Some(json!({"email": email, "password": "password-123"})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["token"].as_str().expect("token").to_owned()
    }

    /// Creates an admin directly in the store and returns its token.
    pub async fn admin(&self, email: &str) -> String {
        let hash = zcaas::auth::hash_password("password-123".into())
            .await
            .expect("hash");
        let new = zcaas::db::users::NewUser {
            email,
            password_hash: &hash,
            role: zcaas::model::Role::Admin,
            plan: zcaas::model::Plan::Enterprise,
        };
        zcaas::db::users::create(&self.state().db, &new)
            .await
            .expect("admin");
        let (status, body) = self
            .call(
                Method::POST,
                "/api/auth/login",
                None,
                Some(json!({"email": email, "password": "password-123"})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["token"].as_str().expect("token").to_owned()
    }

    /// Creates an agent and returns its JSON record (asserting 202).
    pub async fn create_agent(&self, token: &str, body: Value) -> Value {
        let (status, agent) = self
            .call(Method::POST, "/api/agents", Some(token), Some(body))
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{agent}");
        agent
    }
}

/// A minimal valid agent body.
pub fn agent_body(name: &str) -> Value {
    json!({"name": name, "provider": "openai", "model": "gpt-4o-mini"})
}

/// Asserts an error body: status, code, and field (when given).
pub fn assert_error(status: StatusCode, body: &Value, want: StatusCode, field: Option<&str>) {
    assert_eq!(status, want, "{body}");
    let err = &body["error"];
    assert!(
        err["code"].is_string() && err["message"].is_string(),
        "{body}"
    );
    if let Some(f) = field {
        assert_eq!(err["field"], f, "{body}");
    }
}
