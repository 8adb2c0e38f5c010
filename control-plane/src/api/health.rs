//! `GET /healthz`: the control plane's own health (database and Docker),
//! for load balancers and orchestrators, and this replica's part in the
//! reconciler (leader or standby). Public; no secrets (replica ids are
//! random per process).

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

/// `{"status":"ok"|"degraded","database":"ok"|"error","docker":"ok"|"error",
/// "reconciler":"leader"|"standby","replica":"<id>","leader":"<id>"|null}`.
#[derive(Serialize)]
pub struct Health {
    pub status: &'static str,
    pub database: &'static str,
    pub docker: &'static str,
    /// `leader` while this replica reconciles, `standby` otherwise (a
    /// standby is healthy: it serves the API).
    pub reconciler: &'static str,
    /// This replica's id (random per process, logged at start with its
    /// host and pid).
    pub replica: String,
    /// The id of the replica holding the reconciler's lease, as the
    /// database says; `null` when none holds it (a takeover is under way)
    /// or the database did not answer.
    pub leader: Option<String>,
}

fn word(ok: bool) -> &'static str {
    if ok {
        "ok"
    } else {
        "error"
    }
}

/// 200 when both the database and Docker answer, 503 otherwise (leader or
/// standby alike).
async fn healthz(State(state): State<AppState>) -> (StatusCode, axum::Json<Health>) {
    // The lease's holder is read from the database: it answers the ping too.
    let db = async {
        match tokio::time::timeout(CHECK_TIMEOUT, state.reconciler.leader()).await {
            Ok(Ok(holder)) => (true, holder.map(|(id, _)| id)),
            _ => (false, None),
        }
    };
    let docker = async {
        matches!(
            tokio::time::timeout(CHECK_TIMEOUT, state.orchestrator.ping()).await,
            Ok(Ok(()))
        )
    };
    let ((db_ok, leader), docker_ok) = tokio::join!(db, docker);
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
        reconciler: if state.reconciler.is_leader() {
            "leader"
        } else {
            "standby"
        },
        replica: state.reconciler.replica_id().to_owned(),
        leader,
    };
    (status, axum::Json(body))
}
