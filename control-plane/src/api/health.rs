//! `GET /healthz`: the control plane's own health (database and Docker),
//! for load balancers and orchestrators. Public; no secrets.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use serde::Serialize;

use crate::api::AppState;

/// How long each dependency check may take.
const CHECK_TIMEOUT: Duration = Duration::from_secs(3);

/// The routes of this module.
pub fn router() -> Router<AppState> {
    Router::new().route("/healthz", get(healthz))
}

/// `{"status":"ok"|"degraded","database":"ok"|"error","docker":"ok"|"error"}`.
#[derive(Serialize)]
pub struct Health {
    pub status: &'static str,
    pub database: &'static str,
    pub docker: &'static str,
}

fn word(ok: bool) -> &'static str {
    if ok {
        "ok"
    } else {
        "error"
    }
}

/// 200 when both the database and Docker answer, 503 otherwise.
async fn healthz(State(state): State<AppState>) -> (StatusCode, axum::Json<Health>) {
    let db = async {
        matches!(
            tokio::time::timeout(CHECK_TIMEOUT, state.store.ping()).await,
            Ok(Ok(()))
        )
    };
    let docker = async {
        matches!(
            tokio::time::timeout(CHECK_TIMEOUT, state.orchestrator.ping()).await,
            Ok(Ok(()))
        )
    };
    let (db_ok, docker_ok) = tokio::join!(db, docker);
    let status = if db_ok && docker_ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = Health {
        status: if status == StatusCode::OK {
            "ok"
        } else {
            "degraded"
        },
        database: word(db_ok),
        docker: word(docker_ok),
    };
    (status, axum::Json(body))
}
