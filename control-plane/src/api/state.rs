//! The HTTP layer's shared state: what every handler and extractor of
//! [`crate::api`] gets. Built once by `App::build` (`app.rs`), the wiring.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::auth::{LoginLimiter, RegistrationLimiter};
use crate::auth::JwtKeys;
use crate::config::Config;
use crate::events::EventBus;
use crate::gateway::GatewayClient;
use crate::orchestrator::Orchestrator;
use crate::reconciler::Reconciler;
use crate::secrets::SecretBox;
use crate::store::Store;

/// Everything a request handler needs. Cheap to clone; no locks around data
/// the database owns.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    /// The engine agents run on.
    pub orchestrator: Arc<dyn Orchestrator>,
    pub gateway: GatewayClient,
    pub secrets: Arc<SecretBox>,
    pub config: Arc<Config>,
    /// This replica's door to the reconciler (leader or standby).
    pub reconciler: Reconciler,
    pub events: EventBus,
    pub jwt: Arc<JwtKeys>,
    /// Prometheus series shared with the reconciler.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Failed-login counters (per email) for the login rate limit.
    pub login_limiter: Arc<LoginLimiter>,
    /// Registration counters (per client address) for the registration limit.
    pub registration_limiter: Arc<RegistrationLimiter>,
    /// Fires when the service shuts down; long-lived responses (SSE) end on it.
    pub shutdown: CancellationToken,
    /// Stream tickets and per-user caps of the SSE routes.
    pub streams: Arc<crate::api::streams::StreamHub>,
}
