//! Prometheus metrics of the control plane (`GET /metrics`, text format):
//! agents by status, RUNNING agents with each channel up, deploy durations,
//! re-pairs, reconcile steps and errors by outcome, Docker API errors, HTTP
//! requests and latencies, password checks.
//! One [`Metrics`] is shared (cheaply cloned) by the reconciler and the API.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::status::Status;

/// Labels of `zcaas_agents`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabels {
    pub status: String,
}

/// Labels of `zcaas_agent_channel_up`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ChannelLabels {
    /// `telegram`, `discord` or `slack`.
    pub channel: String,
}

/// Labels of `zcaas_reconcile_steps_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StepLabels {
    /// The plan step: `start`, `stop`, `repair`, `delete`, …
    pub step: String,
    /// `ok` or `error`.
    pub outcome: String,
}

/// Labels of `zcaas_deploy_phase_duration_seconds`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    /// One of [`DEPLOY_PHASES`].
    pub phase: String,
}

/// The phases of a start, in order: `queue` (waiting for a deploy permit),
/// `prepare` (network, image, port, tokens, files rendered, the existing
/// container inspected), `create` (container created and its files
/// uploaded), `start` (the engine's start, then its address read), `pair`
/// (a token obtained or confirmed), `healthy` (`/health` answered).
pub const DEPLOY_PHASES: [&str; 6] = ["queue", "prepare", "create", "start", "pair", "healthy"];

/// Labels of `zcaas_docker_errors_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OperationLabels {
    pub operation: String,
}

/// Labels of the HTTP series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub method: String,
    /// The matched route template (`/api/agents/{id}`), never the raw path.
    pub route: String,
    pub status: u16,
}

/// Every series, registered once.
pub struct Metrics {
    registry: Registry,
    /// Agents by status (gauge, set from the store when scraped).
    pub agents: Family<StatusLabels, Gauge>,
    /// RUNNING agents whose channel was `ok` at its last health poll, by
    /// channel (gauge, set from the store when scraped). Labelled by
    /// channel only, like every agent series: no per-agent labels.
    pub agent_channel_up: Family<ChannelLabels, Gauge>,
    /// POST → RUNNING, seconds (each successful start, re-starts included).
    pub deploy_seconds: Histogram,
    /// Each phase of a start ([`DEPLOY_PHASES`]), seconds: where a deploy's
    /// time goes, and which phase slows down as the fleet grows.
    pub deploy_phase_seconds: Family<PhaseLabels, Histogram>,
    /// Tokens obtained or confirmed for a container start after the first.
    pub repairs: Counter,
    /// Reconcile steps executed, by step and outcome.
    pub reconcile_steps: Family<StepLabels, Counter>,
    /// Reconcile passes (one per agent per wake/resync).
    pub reconcile_passes: Counter,
    /// The periodic resync's comparison of the fleet with the engine's
    /// listing ([`crate::reconciler::resync`]), seconds.
    pub resync_seconds: Histogram,
    /// Agents the periodic resync woke (changed or never settled).
    pub resync_woken: Counter,
    /// Docker API calls that failed, by operation.
    pub docker_errors: Family<OperationLabels, Counter>,
    /// HTTP requests by method, route and status.
    pub http_requests: Family<HttpLabels, Counter>,
    /// HTTP request latency by method, route and status, seconds.
    pub http_seconds: Family<HttpLabels, Histogram>,
    /// Password checks (argon2 verifications) run by the login route.
    pub password_verifications: Counter,
    /// 1 while this replica leads the reconciler, 0 on a standby.
    pub reconciler_leader: Gauge,
    /// The stats poll's current period: each RUNNING agent's figures are
    /// refreshed once per this many seconds (it grows with the fleet).
    pub stats_poll_period_seconds: Gauge,
}

fn latency_histogram() -> Histogram {
    Histogram::new(
        [
            0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ]
        .into_iter(),
    )
}

impl Metrics {
    /// A fresh registry with every series registered.
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::default();
        let agents = Family::<StatusLabels, Gauge>::default();
        registry.register("zcaas_agents", "Agents by status", agents.clone());
        let agent_channel_up = Family::<ChannelLabels, Gauge>::default();
        registry.register(
            "zcaas_agent_channel_up",
            "RUNNING agents whose channel reported ok at the last health poll, by channel",
            agent_channel_up.clone(),
        );
        let deploy_seconds = Histogram::new(
            [
                0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 20.0, 30.0, 60.0,
            ]
            .into_iter(),
        );
        registry.register(
            "zcaas_deploy_duration_seconds",
            "Time from STARTING to RUNNING",
            deploy_seconds.clone(),
        );
        let deploy_phase_seconds = Family::<PhaseLabels, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        registry.register(
            "zcaas_deploy_phase_duration_seconds",
            "Each phase of a container start (queue, prepare, create, start, pair, healthy)",
            deploy_phase_seconds.clone(),
        );
        let repairs = Counter::default();
        registry.register(
            "zcaas_repairs",
            "Agents re-paired after a container start",
            repairs.clone(),
        );
        let reconcile_steps = Family::<StepLabels, Counter>::default();
        registry.register(
            "zcaas_reconcile_steps",
            "Reconcile steps executed, by step and outcome",
            reconcile_steps.clone(),
        );
        let reconcile_passes = Counter::default();
        registry.register(
            "zcaas_reconcile_passes",
            "Reconcile passes run",
            reconcile_passes.clone(),
        );
        let resync_seconds = latency_histogram();
        registry.register(
            "zcaas_resync_duration_seconds",
            "Periodic resync: one listing of the engine compared with every agent's last settled pass",
            resync_seconds.clone(),
        );
        let resync_woken = Counter::default();
        registry.register(
            "zcaas_resync_woken",
            "Agents woken by the periodic resync (changed, or never settled)",
            resync_woken.clone(),
        );
        let docker_errors = Family::<OperationLabels, Counter>::default();
        registry.register(
            "zcaas_docker_errors",
            "Failed Docker API calls, by operation",
            docker_errors.clone(),
        );
        let http_requests = Family::<HttpLabels, Counter>::default();
        registry.register(
            "zcaas_http_requests",
            "HTTP requests",
            http_requests.clone(),
        );
        let http_seconds = Family::<HttpLabels, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        registry.register(
            "zcaas_http_request_duration_seconds",
            "HTTP request latency",
            http_seconds.clone(),
        );
        let password_verifications = Counter::default();
        registry.register(
            "zcaas_password_verifications",
            "Password checks (argon2 verifications) run by the login route",
            password_verifications.clone(),
        );
        let reconciler_leader = Gauge::default();
        registry.register(
            "zcaas_reconciler_leader",
            "1 while this replica leads the reconciler (holds its lease), 0 on a standby",
            reconciler_leader.clone(),
        );
        let stats_poll_period_seconds = Gauge::default();
        registry.register(
            "zcaas_stats_poll_period_seconds",
            "Seconds between two stats and health polls of one RUNNING agent (grows with the fleet)",
            stats_poll_period_seconds.clone(),
        );
        Arc::new(Metrics {
            registry,
            agents,
            agent_channel_up,
            deploy_seconds,
            deploy_phase_seconds,
            repairs,
            reconcile_steps,
            reconcile_passes,
            resync_seconds,
            resync_woken,
            docker_errors,
            http_requests,
            http_seconds,
            password_verifications,
            reconciler_leader,
            stats_poll_period_seconds,
        })
    }

    /// Counts one reconcile step and its outcome.
    pub fn step(&self, step: &str, ok: bool) {
        self.reconcile_steps
            .get_or_create(&StepLabels {
                step: step.to_owned(),
                outcome: if ok { "ok" } else { "error" }.to_owned(),
            })
            .inc();
    }

    /// Records that a start's `phase` (one of [`DEPLOY_PHASES`]) took the
    /// time since `*since`, and moves `*since` to now.
    pub fn deploy_phase(&self, phase: &str, since: &mut std::time::Instant) {
        let now = std::time::Instant::now();
        self.deploy_phase_seconds
            .get_or_create(&PhaseLabels {
                phase: phase.to_owned(),
            })
            .observe(now.duration_since(*since).as_secs_f64());
        *since = now;
    }

    /// Counts a failed Docker call.
    pub fn docker_error(&self, operation: &str) {
        self.docker_errors
            .get_or_create(&OperationLabels {
                operation: operation.to_owned(),
            })
            .inc();
    }

    /// Sets the agents-by-status gauge from `counts` (every status present,
    /// zero where absent).
    pub fn set_agent_counts(&self, counts: &[(Status, i64)]) {
        for st in Status::ALL {
            let n = counts.iter().find(|(s, _)| *s == st).map_or(0, |(_, n)| *n);
            self.agents
                .get_or_create(&StatusLabels {
                    status: st.as_str().to_owned(),
                })
                .set(n);
        }
    }

    /// Sets `zcaas_agent_channel_up` from `counts` (every channel present).
    pub fn set_channel_up(&self, counts: &[(&str, i64)]) {
        for (channel, n) in counts {
            self.agent_channel_up
                .get_or_create(&ChannelLabels {
                    channel: (*channel).to_owned(),
                })
                .set(*n);
        }
    }

    /// The text exposition of every series.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_are_exposed_with_their_labels() {
        let m = Metrics::new();
        m.set_agent_counts(&[(Status::Running, 3)]);
        m.step("start", true);
        m.step("start", false);
        m.docker_error("inspect");
        m.deploy_seconds.observe(0.6);
        let mut since = std::time::Instant::now() - std::time::Duration::from_millis(30);
        m.deploy_phase("create", &mut since);
        assert!(since.elapsed() < std::time::Duration::from_millis(30));
        m.repairs.inc();
        m.password_verifications.inc();
        m.reconciler_leader.set(1);
        m.set_channel_up(&[("telegram", 2), ("discord", 0)]);
        let text = m.encode().unwrap();
        for needle in [
            "zcaas_agents{status=\"RUNNING\"} 3",
            "zcaas_agents{status=\"ERROR\"} 0",
            "zcaas_reconcile_steps_total{step=\"start\",outcome=\"ok\"} 1",
            "zcaas_reconcile_steps_total{step=\"start\",outcome=\"error\"} 1",
            "zcaas_docker_errors_total{operation=\"inspect\"} 1",
            "zcaas_deploy_duration_seconds_count 1",
            "zcaas_deploy_phase_duration_seconds_count{phase=\"create\"} 1",
            "zcaas_deploy_phase_duration_seconds_bucket{le=\"0.05\",phase=\"create\"} 1",
            "zcaas_repairs_total 1",
            "zcaas_password_verifications_total 1",
            "zcaas_reconciler_leader 1",
            "zcaas_agent_channel_up{channel=\"telegram\"} 2",
            "zcaas_agent_channel_up{channel=\"discord\"} 0",
        ] {
            assert!(text.contains(needle), "missing {needle} in\n{text}");
        }
    }
}
