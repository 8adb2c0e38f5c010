//! [`Api`]: an HTTP client of one control plane with the calls tests make,
//! as verbs — `register`, `create_agent`, `wait_running`, `restart`,
//! `message`, `delete_agent`… — so that the API's paths are spelled here
//! once. `call` and `raw` remain for the requests that are the point of a
//! test (malformed paths and bodies, other routes).
//!
//! Every verb answers `(status, JSON body)` (`Value::Null` for an empty
//! body) and panics if the request cannot be sent or the body is not JSON:
//! every answer of the API is JSON, errors included. Verbs that assert an
//! outcome say so in their name (`create_pending_agent`, `wait_running`).

use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::sse::SseReader;

/// The password of every user the verbs register.
pub const PASSWORD: &str = "password-123";
/// Longest wait for a deploy, a restart or a start to settle.
pub const DEPLOY_TIMEOUT: Duration = Duration::from_secs(90);
/// How often the waits poll the agent's record.
const POLL: Duration = Duration::from_millis(100);

/// An HTTP client of one control plane.
pub struct Api {
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    pub http: reqwest::Client,
    /// The test's prefix: it makes the users [`Api::register`] creates unique.
    pub prefix: String,
    /// The provider of [`Api::agent_body`]: `custom:<url>` of the world's
    /// stand-in, or a plain provider name when agents never start.
    pub provider: String,
}

/// A RUNNING agent of a user of its own ([`Api::running_agent`]).
pub struct RunningAgent {
    /// The owner's bearer JWT.
    pub jwt: String,
    pub id: String,
    pub slug: String,
    /// The agent's record once RUNNING.
    pub record: Value,
}

impl RunningAgent {
    /// The name of the agent's container (`zeroclaw-<slug>`).
    pub fn container(&self) -> String {
        format!("zeroclaw-{}", self.slug)
    }
}

/// A minimal valid create body: name, provider and model only.
pub fn minimal_agent_body(name: &str) -> Value {
    json!({"name": name, "provider": "openai", "model": "gpt-4o-mini"})
}

/// Asserts an error answer: the status, the API's JSON error body (`code`
/// and `message`), and the field it names (when given).
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

fn agent_path(id: &str) -> String {
    format!("/api/agents/{id}")
}

impl Api {
    /// A client of the control plane at `base` (60 s per request).
    pub fn new(base: String, prefix: &str, provider: &str) -> Api {
        Api {
            base,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .expect("an HTTP client"),
            prefix: prefix.to_owned(),
            provider: provider.to_owned(),
        }
    }

    /// An `apiBaseUrl` for agents' channels that never leaves the test's
    /// network: the provider stand-in, which answers every platform path
    /// 404 (so a channel client fails at once instead of calling a real
    /// chat platform).
    pub fn local_channel_api(&self) -> String {
        let stub = self.provider.trim_start_matches("custom:");
        stub.trim_end_matches("/v1").to_owned()
    }

    /// `base` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Sends a request (a JSON body as `application/json`, with the bearer
    /// token when given) → (status, body).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        jwt: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        self.try_call(method.clone(), path, jwt, body)
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e:#}"))
    }

    /// Sends raw bytes with the given content type (none: no header).
    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        jwt: Option<&str>,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> (StatusCode, Value) {
        let mut req = self.http.request(method.clone(), self.url(path)).body(body);
        if let Some(t) = jwt {
            req = req.bearer_auth(t);
        }
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        let sent = async { read(req.send().await?).await };
        sent.await
            .unwrap_or_else(|e| panic!("{method} {path}: {e:#}"))
    }

    async fn try_call(
        &self,
        method: Method,
        path: &str,
        jwt: Option<&str>,
        body: Option<Value>,
    ) -> anyhow::Result<(StatusCode, Value)> {
        let mut req = self.http.request(method, self.url(path));
        if let Some(t) = jwt {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        read(req.send().await?).await
    }

    /// Registers `<name>-<prefix>@example.test` (unique to the test) with
    /// [`PASSWORD`]; returns the bearer JWT.
    pub async fn register(&self, name: &str) -> String {
        self.register_email(&format!("{name}-{}@example.test", self.prefix))
            .await
    }

    /// Registers exactly `email` with [`PASSWORD`] (asserting 201); returns
    /// the bearer JWT.
    pub async fn register_email(&self, email: &str) -> String {
        let creds = json!({"email": email, "password": PASSWORD});
        let (status, body) = self
            .call(Method::POST, "/api/auth/register", None, Some(creds))
            .await;
        assert_eq!(status, StatusCode::CREATED, "register {email}: {body}");
        body["token"].as_str().expect("a token").to_owned()
    }

    /// Logs `email` in with [`PASSWORD`] (asserting 200); returns the JWT.
    pub async fn login(&self, email: &str) -> String {
        let creds = json!({"email": email, "password": PASSWORD});
        let (status, body) = self
            .call(Method::POST, "/api/auth/login", None, Some(creds))
            .await;
        assert_eq!(status, StatusCode::OK, "login {email}: {body}");
        body["token"].as_str().expect("a token").to_owned()
    }

    /// `GET /api/me`.
    pub async fn me(&self, jwt: &str) -> (StatusCode, Value) {
        self.call(Method::GET, "/api/me", Some(jwt), None).await
    }

    /// `POST /api/auth/stream-ticket`.
    pub async fn stream_ticket(&self, jwt: &str) -> (StatusCode, Value) {
        self.call(Method::POST, "/api/auth/stream-ticket", Some(jwt), None)
            .await
    }

    /// A full create body for an agent named `name` using [`Api::provider`]
    /// (persona, memory, and an API key that is not a real one).
    pub fn agent_body(&self, name: &str) -> Value {
        json!({
            "name": name,
            "agentName": "Test Agent",
            "userName": "Tester",
            "timezone": "Europe/Paris",
            "communicationStyle": "brief",
            "provider": self.provider,
            "model": "stub-model",
            "temperature": 0.2,
            "memoryBackend": "sqlite",
            "autoSave": true,
            "apiKey": "sk-test-not-a-real-key-1234"
        })
    }

    /// `POST /api/agents`.
    pub async fn create_agent(&self, jwt: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, "/api/agents", Some(jwt), Some(body))
            .await
    }

    /// Creates an agent, asserting 202; returns its (PENDING) record.
    pub async fn create_pending_agent(&self, jwt: &str, body: Value) -> Value {
        let (status, agent) = self.create_agent(jwt, body).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{agent}");
        agent
    }

    /// Creates an agent and waits until it is RUNNING ([`Api::wait_running`]);
    /// returns its record.
    pub async fn create_running_agent(&self, jwt: &str, body: Value) -> Value {
        let created = self.create_pending_agent(jwt, body).await;
        let id = created["id"].as_str().expect("an id");
        self.wait_running(jwt, id).await
    }

    /// A new user (named after the agent) with a RUNNING agent named `name`
    /// ([`Api::agent_body`]).
    pub async fn running_agent(&self, name: &str) -> RunningAgent {
        let jwt = self.register(&name.replace(' ', "-")).await;
        let record = self.create_running_agent(&jwt, self.agent_body(name)).await;
        RunningAgent {
            id: record["id"].as_str().expect("an id").to_owned(),
            slug: record["slug"].as_str().expect("a slug").to_owned(),
            jwt,
            record,
        }
    }

    /// `GET /api/agents`.
    pub async fn list_agents(&self, jwt: &str) -> (StatusCode, Value) {
        self.call(Method::GET, "/api/agents", Some(jwt), None).await
    }

    /// `GET /api/agents/:id`.
    pub async fn get_agent(&self, jwt: &str, id: &str) -> (StatusCode, Value) {
        self.call(Method::GET, &agent_path(id), Some(jwt), None)
            .await
    }

    /// `PATCH /api/agents/:id`.
    pub async fn patch_agent(&self, jwt: &str, id: &str, patch: Value) -> (StatusCode, Value) {
        self.call(Method::PATCH, &agent_path(id), Some(jwt), Some(patch))
            .await
    }

    /// `DELETE /api/agents/:id`.
    pub async fn delete_agent(&self, jwt: &str, id: &str) -> (StatusCode, Value) {
        self.call(Method::DELETE, &agent_path(id), Some(jwt), None)
            .await
    }

    /// `POST /api/agents/:id/<op>` (a lifecycle request, no body).
    async fn lifecycle(&self, jwt: &str, id: &str, op: &str) -> (StatusCode, Value) {
        let path = format!("{}/{op}", agent_path(id));
        self.call(Method::POST, &path, Some(jwt), None).await
    }

    /// `POST /api/agents/:id/start`.
    pub async fn start(&self, jwt: &str, id: &str) -> (StatusCode, Value) {
        self.lifecycle(jwt, id, "start").await
    }

    /// `POST /api/agents/:id/stop`.
    pub async fn stop(&self, jwt: &str, id: &str) -> (StatusCode, Value) {
        self.lifecycle(jwt, id, "stop").await
    }

    /// `POST /api/agents/:id/restart`.
    pub async fn restart(&self, jwt: &str, id: &str) -> (StatusCode, Value) {
        self.lifecycle(jwt, id, "restart").await
    }

    /// `POST /api/agents/:id/retry`.
    pub async fn retry(&self, jwt: &str, id: &str) -> (StatusCode, Value) {
        self.lifecycle(jwt, id, "retry").await
    }

    /// `POST /api/agents/:id/message` with `{"message": text}`.
    pub async fn message(&self, jwt: &str, id: &str, text: &str) -> (StatusCode, Value) {
        let path = format!("{}/message", agent_path(id));
        let body = json!({ "message": text });
        self.call(Method::POST, &path, Some(jwt), Some(body)).await
    }

    /// `POST /api/agents/:id/tokens` with `{"name": name}`: issues a bearer
    /// token for the agent's public URL (201 with `token`, shown once).
    pub async fn issue_token(&self, jwt: &str, agent_id: &str, name: &str) -> (StatusCode, Value) {
        let path = format!("{}/tokens", agent_path(agent_id));
        let body = json!({ "name": name });
        self.call(Method::POST, &path, Some(jwt), Some(body)).await
    }

    /// `GET /api/agents/:id/tokens`.
    pub async fn list_tokens(&self, jwt: &str, agent_id: &str) -> (StatusCode, Value) {
        let path = format!("{}/tokens", agent_path(agent_id));
        self.call(Method::GET, &path, Some(jwt), None).await
    }

    /// `DELETE /api/agents/:id/tokens/:tokenId`.
    pub async fn revoke_token(
        &self,
        jwt: &str,
        agent_id: &str,
        token_id: &str,
    ) -> (StatusCode, Value) {
        let path = format!("{}/tokens/{token_id}", agent_path(agent_id));
        self.call(Method::DELETE, &path, Some(jwt), None).await
    }

    /// `GET /api/agents/:id/logs` (the one-shot form).
    pub async fn logs(&self, jwt: &str, id: &str) -> (StatusCode, Value) {
        let path = format!("{}/logs", agent_path(id));
        self.call(Method::GET, &path, Some(jwt), None).await
    }

    /// `GET /api/agents/:id/stats`.
    pub async fn stats(&self, jwt: &str, id: &str) -> (StatusCode, Value) {
        let path = format!("{}/stats", agent_path(id));
        self.call(Method::GET, &path, Some(jwt), None).await
    }

    /// `GET /api/agents/:id/health`.
    pub async fn health(&self, jwt: &str, id: &str) -> (StatusCode, Value) {
        let path = format!("{}/health", agent_path(id));
        self.call(Method::GET, &path, Some(jwt), None).await
    }

    /// `GET /healthz` (`status`, `database`, `docker`, and the replica's
    /// part: `reconciler` = `leader`|`standby`, `replica`, `leader`).
    pub async fn healthz(&self) -> (StatusCode, Value) {
        self.call(Method::GET, "/healthz", None, None).await
    }

    /// `GET /metrics` → its text.
    pub async fn metrics(&self) -> String {
        let res = self.http.get(self.url("/metrics")).send().await;
        res.expect("GET /metrics")
            .text()
            .await
            .expect("the metrics text")
    }

    /// `GET path` (a stream, usually) with the bearer token and extra
    /// headers, not read: the caller decides what to do with the answer.
    pub async fn open_stream(
        &self,
        path: &str,
        jwt: Option<&str>,
        headers: &[(&str, &str)],
    ) -> reqwest::Response {
        let mut req = self.http.get(self.url(path));
        if let Some(t) = jwt {
            req = req.bearer_auth(t);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req.send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    /// Opens `path` as a server-sent event stream (asserting 200 and
    /// `text/event-stream`).
    pub async fn events(&self, path: &str, jwt: &str, headers: &[(&str, &str)]) -> SseReader {
        SseReader::new(self.open_stream(path, Some(jwt), headers).await)
    }

    /// Polls `GET /api/agents/:id` until `done(record)`; panics after
    /// `timeout` with the last answer seen.
    pub async fn wait_for(
        &self,
        jwt: &str,
        id: &str,
        timeout: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            // Not `call`: an answer that does not come is a reason to poll
            // again, not to fail, until the deadline.
            let res = self
                .try_call(Method::GET, &agent_path(id), Some(jwt), None)
                .await;
            if let Ok((StatusCode::OK, agent)) = &res {
                if done(agent) {
                    return agent.clone();
                }
            }
            assert!(
                Instant::now() <= deadline,
                "agent {id}: condition not met within {timeout:?}; last answer {res:?}"
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// Polls until the agent's `status` is one of `wanted`; returns the
    /// record. Panics after `timeout`.
    pub async fn wait_status(
        &self,
        jwt: &str,
        id: &str,
        wanted: &[&str],
        timeout: Duration,
    ) -> Value {
        self.wait_for(jwt, id, timeout, |a| {
            wanted.iter().any(|w| a["status"] == *w)
        })
        .await
    }

    /// Waits until the agent settles (RUNNING or ERROR, within
    /// [`DEPLOY_TIMEOUT`]) and asserts it is RUNNING; returns the record.
    pub async fn wait_running(&self, jwt: &str, id: &str) -> Value {
        let agent = self
            .wait_status(jwt, id, &["RUNNING", "ERROR"], DEPLOY_TIMEOUT)
            .await;
        assert_eq!(agent["status"], "RUNNING", "{agent}");
        agent
    }
}

/// (status, JSON body) of an answer; an empty body is `Value::Null`, any
/// other body must be JSON.
async fn read(resp: reqwest::Response) -> anyhow::Result<(StatusCode, Value)> {
    let status = resp.status();
    let text = resp.text().await.context("reading the body")?;
    if text.is_empty() {
        return Ok((status, Value::Null));
    }
    match serde_json::from_str(&text) {
        Ok(value) => Ok((status, value)),
        Err(_) => bail!("non-JSON body for {status}: {text}"),
    }
}

/// `zcaas_deploy_phase_duration_seconds` by phase: (sum in seconds, count).
pub type PhaseSums = std::collections::HashMap<String, (f64, f64)>;

impl Api {
    /// The deploy-phase histogram's sums and counts from `/metrics`
    /// (empty when it does not answer): two readings give each phase's
    /// mean over the deploys between them ([`phase_means`]).
    pub async fn deploy_phases(&self) -> PhaseSums {
        let mut out = PhaseSums::new();
        let Ok(res) = self.http.get(self.url("/metrics")).send().await else {
            return out;
        };
        let text = res.text().await.unwrap_or_default();
        let series = "zcaas_deploy_phase_duration_seconds_";
        for line in text.lines() {
            let Some(rest) = line.strip_prefix(series) else {
                continue;
            };
            let (kind, rest) = rest.split_once("{phase=\"").unwrap_or(("", ""));
            let Some((phase, value)) = rest.split_once("\"} ") else {
                continue;
            };
            let Ok(value) = value.trim().parse::<f64>() else {
                continue;
            };
            let entry = out.entry(phase.to_owned()).or_default();
            match kind {
                "sum" => entry.0 = value,
                "count" => entry.1 = value,
                _ => {}
            }
        }
        out
    }
}

/// The mean ms of each deploy phase between two readings of
/// [`Api::deploy_phases`]: `queue 12, prepare 3, …` (`-` for a phase no
/// deploy reached).
pub fn phase_means(before: &PhaseSums, after: &PhaseSums) -> String {
    zcaas::metrics::DEPLOY_PHASES
        .iter()
        .map(|&phase| {
            let (s0, n0) = before.get(phase).copied().unwrap_or_default();
            let (s1, n1) = after.get(phase).copied().unwrap_or_default();
            match n1 - n0 {
                n if n > 0.0 => format!("{phase} {:.0}", (s1 - s0) / n * 1000.0),
                _ => format!("{phase} -"),
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}
