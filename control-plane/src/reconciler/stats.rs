//! Stats polling: refreshes `memory_mb`, `cpu_percent`, `last_health_at`
//! and `channel_health` (each channel's component of the agent's `/health`,
//! [`crate::channel_health::parse`]) of every RUNNING agent, once per
//! *period*. An agent whose `/health` fails wakes the reconciler, which
//! decides what it means.
//!
//! Built to stay cheap with thousands of agents (issue 16):
//! - **paced**: the agents of a cycle are spread evenly over the period,
//!   one *tick* ([`TICK`]) at a time, never all at once; the period is
//!   [`STATS_INTERVAL`] while that keeps the fleet within
//!   [`POLL_BUDGET_PER_SECOND`] polls a second, and grows with the fleet
//!   beyond ([`period_for`]: 10 s up to 1 000 agents, 20 s at 2 000);
//! - **batched per tick**: one resource reading of the tick's workloads
//!   ([`crate::orchestrator::Orchestrator::poll_stats`]: on Docker the
//!   cgroup files, no engine call), in `network` addressing one listing of
//!   them for their addresses (no inspect per agent), and one store write
//!   of what was read ([`crate::store::lifecycle::LifecycleStore::record_polls`]);
//! - the health GETs of a tick run a bounded number at a time, each under its
//!   own timeout, so one slow or stuck agent delays no other.
//!
//! The CPU figure is the average since the agent's previous poll (the first
//! poll of a workload leaves the stored figure as it is).

use std::collections::HashMap;
use std::ops::Range;
use std::time::Duration;

use chrono::Utc;
use futures::StreamExt;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Context, ReconcilerHandle};
use crate::channel_health;
use crate::config::AgentAddress;
use crate::model::Agent;
use crate::orchestrator::{ListedWorkload, PolledStats};
use crate::status::Status;
use crate::store::lifecycle::PollRecord;

/// The shortest period: a fleet of up to `STATS_INTERVAL ×
/// POLL_BUDGET_PER_SECOND` agents has each polled this often.
pub const STATS_INTERVAL: Duration = Duration::from_secs(10);
/// Polls a second the pacing aims not to exceed: beyond 1 000 agents the
/// period grows instead (the dashboard's figures then age up to
/// `agents / 100` seconds; a dead agent is still noticed within a period,
/// and by the engine's event stream at once).
pub const POLL_BUDGET_PER_SECOND: usize = 100;
/// The period is cut into ticks; each agent is polled at its tick.
pub const TICK: Duration = Duration::from_secs(1);
/// How long one agent's `/health` may take before it is skipped this round.
const PER_AGENT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a tick's resource reading may take (on Docker only workloads
/// whose cgroup cannot be read ask the engine, ~1–2 s each, a few at once).
const STATS_BATCH_TIMEOUT: Duration = Duration::from_secs(30);
/// Health GETs in flight at once.
const CONCURRENCY: usize = 32;
/// Agents per batch in [`poll_once`].
const ONCE_CHUNK: usize = 100;

/// The period in which each of `agents` RUNNING agents is polled once:
/// [`STATS_INTERVAL`], or `agents / POLL_BUDGET_PER_SECOND` seconds when
/// that is longer (whole ticks, rounded up).
pub fn period_for(agents: usize) -> Duration {
    let ticks_per_second = (Duration::from_secs(1).as_millis() / TICK.as_millis()).max(1);
    let budget_ticks = agents
        .div_ceil(POLL_BUDGET_PER_SECOND)
        .saturating_mul(ticks_per_second as usize);
    let min_ticks = (STATS_INTERVAL.as_millis() / TICK.as_millis()) as usize;
    TICK * u32::try_from(budget_ticks.max(min_ticks)).unwrap_or(u32::MAX)
}

/// Ticks in `period` (at least one).
pub fn ticks_in(period: Duration) -> usize {
    ((period.as_millis() / TICK.as_millis()) as usize).max(1)
}

/// The agents (indices into the cycle's list of `agents`) polled at tick
/// `tick` of `ticks`: consecutive runs whose sizes differ by at most one,
/// together covering every agent exactly once.
pub fn tick_range(agents: usize, ticks: usize, tick: usize) -> Range<usize> {
    let ticks = ticks.max(1);
    let at = |k: usize| (k.min(ticks) * agents) / ticks;
    at(tick)..at(tick + 1)
}

/// Runs until `cancel` fires: a first cycle one [`STATS_INTERVAL`] after
/// start, then cycles back to back, each reading the RUNNING agents once
/// and spreading them over its period.
pub async fn run(handle: ReconcilerHandle, cancel: CancellationToken) {
    tokio::select! {
        _ = cancel.cancelled() => return,
        _ = tokio::time::sleep(STATS_INTERVAL) => {}
    }
    while !cancel.is_cancelled() {
        let started = Instant::now();
        let agents = running_agents(&handle.inner.ctx).await;
        let period = period_for(agents.len());
        handle
            .inner
            .ctx
            .metrics
            .stats_poll_period_seconds
            .set(i64::try_from(period.as_secs()).unwrap_or(i64::MAX));
        let ticks = ticks_in(period);
        for tick in 0..ticks {
            let range = tick_range(agents.len(), ticks, tick);
            if range.is_empty() {
                continue;
            }
            let at = started + TICK * u32::try_from(tick).unwrap_or(u32::MAX);
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep_until(at) => {}
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = poll_agents(&handle, &agents[range]) => {}
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep_until(started + period) => {}
        }
    }
}

/// Polls every RUNNING agent once, now (in batches, without pacing);
/// returns how many were refreshed.
pub async fn poll_once(handle: &ReconcilerHandle) -> usize {
    let agents = running_agents(&handle.inner.ctx).await;
    let mut refreshed = 0;
    for chunk in agents.chunks(ONCE_CHUNK) {
        refreshed += poll_agents(handle, chunk).await;
    }
    refreshed
}

/// The RUNNING agents with a container, in the store's order (oldest
/// first: an agent keeps its place, so its polls stay a period apart).
async fn running_agents(ctx: &Context) -> Vec<Agent> {
    match ctx.store.lifecycle().list_all().await {
        Ok(agents) => agents
            .into_iter()
            .filter(|a| a.status == Status::Running && a.container_id.is_some())
            .collect(),
        Err(e) => {
            tracing::warn!(error = %e, "stats: listing agents failed");
            Vec::new()
        }
    }
}

/// What the health GET of one agent came to.
enum Health {
    Answered(serde_json::Value),
    /// Failed or unreachable: wake the reconciler.
    Failed,
    /// Too slow, or its address could not be read: skipped this round.
    Skipped,
}

/// Polls `agents` (RUNNING, with containers) as one batch: one resource
/// reading, one listing of addresses (`network` mode), a health GET each
/// (bounded concurrency), one store write. Returns how many agents had
/// anything refreshed.
async fn poll_agents(handle: &ReconcilerHandle, agents: &[Agent]) -> usize {
    let ctx = &handle.inner.ctx;
    let ids: Vec<String> = agents
        .iter()
        .map(|a| a.container_id.clone().unwrap_or_default())
        .collect();
    let (stats, health) = tokio::join!(read_stats(ctx, &ids), check_health(ctx, agents, &ids));
    let now = Utc::now();
    let mut records = Vec::with_capacity(agents.len());
    for ((agent, stats), health) in agents.iter().zip(stats).zip(health) {
        let mut record = PollRecord {
            id: agent.id.clone(),
            ..PollRecord::default()
        };
        if let Some(s) = stats {
            record.memory_mb = Some(s.memory_mb);
            record.cpu_percent = s.cpu_percent;
        }
        match health {
            Health::Answered(body) => {
                record.healthy_at = Some(now);
                record.channel_health = channel_report(ctx, agent, &body);
            }
            Health::Failed => handle.wake(&agent.id),
            Health::Skipped => {}
        }
        if record
            != (PollRecord {
                id: agent.id.clone(),
                ..PollRecord::default()
            })
        {
            records.push(record);
        }
    }
    if let Err(e) = ctx.store.lifecycle().record_polls(&records).await {
        tracing::warn!(error = %e, agents = records.len(), "stats: storing a batch failed");
    }
    records.len()
}

/// The resource use of each workload of `ids` (same order); `None` where
/// it could not be read.
async fn read_stats(ctx: &Context, ids: &[String]) -> Vec<Option<PolledStats>> {
    let read = tokio::time::timeout(STATS_BATCH_TIMEOUT, ctx.orchestrator.poll_stats(ids)).await;
    let Ok(results) = read else {
        tracing::warn!(
            agents = ids.len(),
            "stats: reading resource use too slow; skipped this round"
        );
        return vec![None; ids.len()];
    };
    let mut out: Vec<Option<PolledStats>> = results
        .into_iter()
        .map(|r| {
            r.map_err(|e| {
                tracing::debug!(error = %e, "stats: reading resource use failed");
                ctx.metrics.docker_error("stats");
            })
            .ok()
        })
        .collect();
    out.resize(ids.len(), None);
    out
}

/// The health of each of `agents` (same order; `ids` their containers).
async fn check_health(ctx: &Context, agents: &[Agent], ids: &[String]) -> Vec<Health> {
    let endpoints = match ctx.config.agent_address {
        AgentAddress::HostPort => Some(HashMap::new()),
        AgentAddress::Network => match ctx.orchestrator.running_endpoints(ids).await {
            Ok(listed) => Some(
                listed
                    .into_iter()
                    .map(|w| (w.id.clone(), w))
                    .collect::<HashMap<String, ListedWorkload>>(),
            ),
            Err(e) => {
                // The engine, not the agents, is failing: nothing to wake.
                tracing::warn!(error = %e, "stats: listing workloads failed; health skipped");
                ctx.metrics.docker_error("list");
                None
            }
        },
    };
    let Some(endpoints) = endpoints else {
        return agents.iter().map(|_| Health::Skipped).collect();
    };
    let endpoints = &endpoints;
    let mut results: Vec<(usize, Health)> = futures::stream::iter(0..agents.len())
        .map(|i| async move {
            let agent = &agents[i];
            // Network mode: only the workload this row names, run for this
            // agent, counts.
            let endpoint = endpoints
                .get(&ids[i])
                .filter(|w| w.agent_id.as_deref() == Some(agent.id.as_str()))
                .map(|w| &w.endpoint);
            let Some(base) = crate::addressing::agent_gateway_base(&ctx.config, agent, endpoint)
            else {
                return (i, Health::Failed);
            };
            let health = match tokio::time::timeout(PER_AGENT_TIMEOUT, ctx.gateway.health(&base)).await {
                Ok(Ok(body)) => Health::Answered(body),
                Ok(Err(_)) => Health::Failed,
                Err(_) => {
                    tracing::warn!(agent_id = %agent.id, slug = %agent.slug, "stats: agent too slow; skipped this round");
                    Health::Skipped
                }
            };
            (i, health)
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    results.sort_by_key(|(i, _)| *i);
    results.into_iter().map(|(_, h)| h).collect()
}

/// The channel report of `agent`'s `/health` `body` to store: `None` when
/// it equals the stored one (most polls change nothing).
fn channel_report(
    ctx: &Context,
    agent: &Agent,
    body: &serde_json::Value,
) -> Option<Option<String>> {
    let channels = agent
        .channels(&ctx.secrets)
        .ok()
        .flatten()
        .unwrap_or_default();
    let tokens: Vec<&str> = channel_health::tokens(&channels)
        .into_iter()
        .map(|(_, t)| t)
        .collect();
    let report = channel_health::to_stored(&channel_health::parse(body, &tokens));
    (report != agent.channel_health).then_some(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_period_stays_at_the_interval_until_the_budget_and_grows_beyond() {
        assert_eq!(period_for(0), STATS_INTERVAL);
        assert_eq!(period_for(1), STATS_INTERVAL);
        assert_eq!(period_for(200), STATS_INTERVAL);
        assert_eq!(period_for(1_000), STATS_INTERVAL);
        assert_eq!(period_for(1_001), Duration::from_secs(11));
        assert_eq!(period_for(2_000), Duration::from_secs(20));
        assert_eq!(period_for(5_000), Duration::from_secs(50));
        // Never more polls a second than the budget (once past the interval).
        for n in [1, 10, 999, 1_000, 1_001, 1_999, 2_000, 2_001, 10_000] {
            let per_second = n as f64 / period_for(n).as_secs_f64();
            assert!(
                per_second <= POLL_BUDGET_PER_SECOND as f64,
                "{n}: {per_second}"
            );
        }
        assert_eq!(ticks_in(STATS_INTERVAL), 10);
        assert_eq!(ticks_in(Duration::ZERO), 1);
    }

    #[test]
    fn ticks_spread_the_agents_evenly_and_cover_each_once() {
        for (agents, ticks) in [
            (0, 10),
            (1, 10),
            (7, 10),
            (10, 10),
            (95, 10),
            (2_000, 20),
            (2_001, 20),
            (5, 1),
        ] {
            let mut next = 0;
            let sizes: Vec<usize> = (0..ticks)
                .map(|k| {
                    let r = tick_range(agents, ticks, k);
                    assert_eq!(r.start, next, "{agents}/{ticks}: contiguous");
                    next = r.end;
                    r.len()
                })
                .collect();
            assert_eq!(next, agents, "{agents}/{ticks}: every agent");
            let (min, max) = (sizes.iter().min().unwrap(), sizes.iter().max().unwrap());
            assert!(max - min <= 1, "{agents}/{ticks}: {sizes:?}");
        }
        // 2 000 agents over 20 one-second ticks: 100 a second.
        assert_eq!(tick_range(2_000, 20, 0), 0..100);
        assert_eq!(tick_range(2_000, 20, 19), 1_900..2_000);
        // A few agents land on separate ticks, not all on the first.
        let ticks_used = (0..10)
            .filter(|k| !tick_range(3, 10, *k).is_empty())
            .count();
        assert_eq!(ticks_used, 3);
        // Past the last tick: nothing.
        assert!(tick_range(10, 10, 10).is_empty());
    }
}
