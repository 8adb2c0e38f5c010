//! The one Engine API read bollard does not model fully: `GET /tasks`
//! (bollard's `Task` has no `NetworksAttachments`). Sent over the same
//! endpoint as the bollard client (a unix socket through `hyperlocal`, or
//! HTTP through reqwest) and decoded into [`RawTask`].

use std::path::PathBuf;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyperlocal::{UnixClientExt as _, UnixConnector};

use super::tasks::RawTask;
use crate::docker::DockerError;

/// How long one raw request may take.
const RAW_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// An Engine API endpoint for raw GETs.
#[derive(Clone)]
pub enum RawEngine {
    /// `unix:///var/run/docker.sock`.
    Unix {
        path: PathBuf,
        client: Client<UnixConnector, Full<Bytes>>,
    },
    /// `tcp://host:port` or `http://host:port`, as `http://host:port`.
    Http {
        base: String,
        client: reqwest::Client,
    },
}

impl RawEngine {
    /// The endpoint `host` names (`unix://…`, `tcp://…`, `http://…`); `None`:
    /// `DOCKER_HOST`, else `/var/run/docker.sock` (bollard's defaults).
    ///
    /// Errors: a scheme other than those three.
    pub fn new(host: Option<&str>) -> Result<RawEngine, DockerError> {
        let host = host
            .map(str::to_owned)
            .or_else(|| std::env::var("DOCKER_HOST").ok().filter(|h| !h.is_empty()))
            .unwrap_or_else(|| "unix:///var/run/docker.sock".to_owned());
        if let Some(path) = host.strip_prefix("unix://") {
            return Ok(RawEngine::Unix {
                path: PathBuf::from(path),
                client: Client::unix(),
            });
        }
        let rest = host
            .strip_prefix("tcp://")
            .or_else(|| host.strip_prefix("http://"))
            .ok_or_else(|| {
                DockerError::Other(format!(
                    "docker_host {host:?}: only unix://, tcp:// and http:// endpoints are supported"
                ))
            })?;
        Ok(RawEngine::Http {
            base: format!("http://{}", rest.trim_end_matches('/')),
            client: reqwest::Client::builder()
                .no_proxy()
                .timeout(RAW_TIMEOUT)
                .build()
                .map_err(|e| DockerError::Other(format!("an HTTP client: {e}")))?,
        })
    }

    /// `GET path_and_query` → the body, or the engine's error.
    async fn get(&self, path_and_query: &str) -> Result<Bytes, DockerError> {
        self.send("GET", path_and_query, None).await
    }

    /// `method path_and_query` with an optional JSON `body` → the answer's
    /// body, or the engine's error.
    async fn send(
        &self,
        method: &str,
        path_and_query: &str,
        json: Option<&serde_json::Value>,
    ) -> Result<Bytes, DockerError> {
        let fail = |e: String| DockerError::Other(format!("{method} {path_and_query}: {e}"));
        let payload = json.map(|j| Bytes::from(j.to_string())).unwrap_or_default();
        let (status, body) = match self {
            RawEngine::Unix { path, client } => {
                let uri: hyper::Uri = hyperlocal::Uri::new(path, path_and_query).into();
                let request = hyper::Request::builder()
                    .method(method)
                    .uri(uri)
                    .header("content-type", "application/json")
                    .body(Full::new(payload))
                    .map_err(|e| fail(e.to_string()))?;
                let resp = tokio::time::timeout(RAW_TIMEOUT, client.request(request))
                    .await
                    .map_err(|_| fail("timed out".into()))?
                    .map_err(|e| fail(e.to_string()))?;
                let status = resp.status().as_u16();
                let body = tokio::time::timeout(RAW_TIMEOUT, resp.into_body().collect())
                    .await
                    .map_err(|_| fail("timed out".into()))?
                    .map_err(|e| fail(e.to_string()))?
                    .to_bytes();
                (status, body)
            }
            RawEngine::Http { base, client } => {
                let method = reqwest::Method::from_bytes(method.as_bytes())
                    .map_err(|e| fail(e.to_string()))?;
                let resp = client
                    .request(method, format!("{base}{path_and_query}"))
                    .header("content-type", "application/json")
                    .body(payload)
                    .send()
                    .await
                    .map_err(|e| fail(e.to_string()))?;
                let status = resp.status().as_u16();
                (status, resp.bytes().await.map_err(|e| fail(e.to_string()))?)
            }
        };
        if !(200..300).contains(&status) {
            return Err(DockerError::Api(
                bollard::errors::Error::DockerResponseServerError {
                    status_code: status,
                    message: String::from_utf8_lossy(&body).trim().to_owned(),
                },
            ));
        }
        Ok(body)
    }

    /// `GET /services/{id}` as the engine wrote it: the spec's fields keep
    /// the engine's own names, so a read-modify-write loses none (bollard's
    /// model names some differently from a 20.10 engine, e.g.
    /// `Healthcheck`, and would drop them on the way back).
    pub async fn service(&self, id: &str) -> Result<serde_json::Value, DockerError> {
        let body = self.get(&format!("/services/{id}")).await?;
        serde_json::from_slice(&body)
            .map_err(|e| DockerError::Other(format!("decoding GET /services/{id}: {e}")))
    }

    /// `GET /nodes/{id}` as the engine wrote it.
    pub async fn node(&self, id: &str) -> Result<serde_json::Value, DockerError> {
        let body = self.get(&format!("/nodes/{id}")).await?;
        serde_json::from_slice(&body)
            .map_err(|e| DockerError::Other(format!("decoding GET /nodes/{id}: {e}")))
    }

    /// `POST /services/{id}/update?version=<version>` with `spec`.
    pub async fn update_service(
        &self,
        id: &str,
        version: u64,
        spec: &serde_json::Value,
    ) -> Result<(), DockerError> {
        self.send(
            "POST",
            &format!("/services/{id}/update?version={version}"),
            Some(spec),
        )
        .await
        .map(drop)
    }

    /// `GET /tasks?filters=<filters>` (`filters`: the engine's JSON map,
    /// e.g. `{"service": ["<id>"]}`; empty: every task).
    pub async fn tasks(&self, filters: &serde_json::Value) -> Result<Vec<RawTask>, DockerError> {
        let mut url = url::Url::parse("http://engine/tasks").expect("a static URL");
        if filters.as_object().is_some_and(|m| !m.is_empty()) {
            url.query_pairs_mut()
                .append_pair("filters", &filters.to_string());
        }
        let path = match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_owned(),
        };
        let body = self.get(&path).await?;
        serde_json::from_slice(&body)
            .map_err(|e| DockerError::Other(format!("decoding GET /tasks: {e}")))
    }
}
