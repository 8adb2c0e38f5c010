//! hostile-agent: an agent gateway written by a hostile tenant, for the
//! end-to-end tests of "a hostile agent cannot reach anything through the
//! control plane" (tests/tests/hostile_agent.rs).
//!
//! It looks enough like a ZeroClaw gateway to be deployed: it prints the
//! pairing-code banner on stdout at start (the box line and the `Send: POST
//! /pair …` line), listens on `0.0.0.0:$ZEROCLAW_GATEWAY_PORT` (default
//! 42617) and speaks `/pair`, `/health`, `/api/status` and `/webhook` (an
//! echo) correctly — except for the one route `HOSTILE_MODE` names:
//!
//! - `HOSTILE_MODE=<route>-<3xx>` (e.g. `pair-307`, `webhook-302`): that
//!   route answers the status with `Location: $HOSTILE_LOCATION`.
//! - `HOSTILE_MODE=<route>-flood` (e.g. `health-flood`): that route answers
//!   200 with a chunked body of `$HOSTILE_FLOOD_MIB` MiB (default 100),
//!   produced lazily, never held in memory.
//!
//! `<route>` is `pair`, `health`, `status` (`/api/status`) or `webhook`.
//! Unset, it behaves. The tests bake the variables into a FROM-scratch
//! image's `ENV`: the control plane passes no environment of the tenant's.

use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::StreamExt as _;
use serde_json::{json, Value};

/// Size of each chunk of a flood.
const FLOOD_CHUNK: usize = 64 * 1024;

/// What the named route does instead of its job.
#[derive(Clone, Debug)]
enum Misbehaviour {
    Redirect(StatusCode, String),
    Flood { bytes: usize },
}

struct Gateway {
    /// The one-time pairing code, until used.
    code: Mutex<Option<String>>,
    /// The token handed out by `/pair`.
    token: String,
    /// The route that misbehaves (`pair`, `health`, `status`, `webhook`), and how.
    hostile: Option<(String, Misbehaviour)>,
}

type Shared = Arc<Gateway>;

impl Gateway {
    /// The misbehaving answer if `route` is the hostile one.
    fn hostile_answer(&self, route: &str) -> Option<Response> {
        let (name, how) = self.hostile.as_ref()?;
        if name != route {
            return None;
        }
        println!("hostile-agent: {route}: {how:?}");
        Some(match how.clone() {
            Misbehaviour::Redirect(status, location) => {
                (status, [(header::LOCATION, location)]).into_response()
            }
            Misbehaviour::Flood { bytes } => {
                let chunk = Bytes::from(vec![b' '; FLOOD_CHUNK]);
                let body = futures::stream::repeat(chunk)
                    .take(bytes.div_ceil(FLOOD_CHUNK))
                    .map(Ok::<_, std::convert::Infallible>);
                (StatusCode::OK, Body::from_stream(body)).into_response()
            }
        })
    }

    fn bearer_ok(&self, headers: &HeaderMap) -> bool {
        headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            == Some(self.token.as_str())
    }
}

/// `HOSTILE_MODE` and friends, parsed.
fn misbehaviour() -> anyhow::Result<Option<(String, Misbehaviour)>> {
    let Ok(mode) = std::env::var("HOSTILE_MODE") else {
        return Ok(None);
    };
    let (route, how) = mode
        .split_once('-')
        .ok_or_else(|| anyhow::anyhow!("HOSTILE_MODE={mode:?}: expected <route>-<how>"))?;
    if !["pair", "health", "status", "webhook"].contains(&route) {
        anyhow::bail!("HOSTILE_MODE={mode:?}: unknown route {route:?}");
    }
    let how = if how == "flood" {
        let mib: usize = match std::env::var("HOSTILE_FLOOD_MIB") {
            Ok(v) => v.parse()?,
            Err(_) => 100,
        };
        Misbehaviour::Flood {
            bytes: mib * 1024 * 1024,
        }
    } else {
        let status = StatusCode::from_u16(how.parse()?)?;
        if !status.is_redirection() {
            anyhow::bail!("HOSTILE_MODE={mode:?}: {status} is not a redirect");
        }
        let location = std::env::var("HOSTILE_LOCATION")
            .map_err(|_| anyhow::anyhow!("a redirect needs HOSTILE_LOCATION"))?;
        Misbehaviour::Redirect(status, location)
    };
    Ok(Some((route.to_owned(), how)))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let port: u16 = match std::env::var("ZEROCLAW_GATEWAY_PORT") {
        Ok(p) => p.parse()?,
        Err(_) => 42617,
    };
    // Six decimal digits from a v4 UUID's random bits (bias irrelevant here).
    let code = format!("{:06}", uuid::Uuid::new_v4().as_u128() % 1_000_000);
    let token = format!(
        "zc_{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    let state: Shared = Arc::new(Gateway {
        code: Mutex::new(Some(code.clone())),
        token,
        hostile: misbehaviour()?,
    });
    let app = Router::new()
        .route("/pair", post(pair))
        .route("/health", get(health))
        .route("/api/status", get(status))
        .route("/webhook", post(webhook))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind(("0.0.0.0", port)).await?;
    println!("hostile-agent listening on {}", listener.local_addr()?);
    // The banner in the gateway's two forms (docker/pairing.rs reads both).
    println!("     ┌──────────────┐");
    println!("     │  {code}  │");
    println!("     └──────────────┘");
    println!("     Send: POST /pair with header X-Pairing-Code: {code}");
    axum::serve(listener, app)
        .with_graceful_shutdown(zcaas_tests::shutdown_signal())
        .await?;
    Ok(())
}

async fn pair(State(s): State<Shared>, headers: HeaderMap) -> Response {
    if let Some(answer) = s.hostile_answer("pair") {
        return answer;
    }
    let sent = headers.get("x-pairing-code").and_then(|v| v.to_str().ok());
    let mut code = s.code.lock().unwrap_or_else(|p| p.into_inner());
    if sent.is_some() && sent == code.as_deref() {
        *code = None;
        return Json(json!({"paired": true, "persisted": false, "token": s.token})).into_response();
    }
    (
        StatusCode::FORBIDDEN,
        Json(json!({"error": "Invalid pairing code"})),
    )
        .into_response()
}

async fn health(State(s): State<Shared>) -> Response {
    if let Some(answer) = s.hostile_answer("health") {
        return answer;
    }
    let paired = s.code.lock().unwrap_or_else(|p| p.into_inner()).is_none();
    Json(json!({"status": "ok", "paired": paired})).into_response()
}

async fn status(State(s): State<Shared>, headers: HeaderMap) -> Response {
    if !s.bearer_ok(&headers) {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": "Unauthorized"})),
        )
            .into_response();
    }
    if let Some(answer) = s.hostile_answer("status") {
        return answer;
    }
    Json(json!({"status": "ok"})).into_response()
}

async fn webhook(State(s): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    if !s.bearer_ok(&headers) {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": "Unauthorized — pair first"})),
        )
            .into_response();
    }
    if let Some(answer) = s.hostile_answer("webhook") {
        return answer;
    }
    let message = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v.get("message")?.as_str().map(str::to_owned))
        .unwrap_or_default();
    Json(json!({"response": format!("echo: {message}"), "model": "hostile"})).into_response()
}
