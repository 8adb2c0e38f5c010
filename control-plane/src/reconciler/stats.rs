//! Stats polling: refreshes `memory_mb`, `cpu_percent`, `last_health_at`
//! and `channel_health` (each channel's component of the agent's `/health`,
//! [`crate::channel_health::parse`]) of every RUNNING agent on an interval. Agents are polled concurrently, each
//! under its own timeout, so one slow or stuck agent delays no other. An agent
//! whose `/health` fails wakes the reconciler, which decides what it means.

use std::time::Duration;

use chrono::Utc;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use super::{Context, ReconcilerHandle};
use crate::channel_health;
use crate::model::Agent;
use crate::status::Status;

/// How often running agents are polled.
pub const STATS_INTERVAL: Duration = Duration::from_secs(10);
/// How long one agent's stats and health may take before it is skipped.
const PER_AGENT_TIMEOUT: Duration = Duration::from_secs(5);
/// Agents polled at once.
const CONCURRENCY: usize = 32;

/// Runs until `cancel` fires.
pub async fn run(handle: ReconcilerHandle, cancel: CancellationToken) {
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(STATS_INTERVAL) => {}
        }
        poll_once(&handle).await;
    }
}

/// Polls every RUNNING agent once; returns how many were refreshed.
pub async fn poll_once(handle: &ReconcilerHandle) -> usize {
    let ctx = &handle.inner.ctx;
    let agents = match ctx.store.lifecycle().list_all().await {
        Ok(agents) => agents,
        Err(e) => {
            tracing::warn!(error = %e, "stats: listing agents failed");
            return 0;
        }
    };
    let running = agents
        .into_iter()
        .filter(|a| a.status == Status::Running && a.container_id.is_some());
    futures::stream::iter(running)
        .map(|agent| async move {
            let Some(container_id) = agent.container_id.as_deref() else {
                return false;
            };
            let polled = tokio::time::timeout(PER_AGENT_TIMEOUT, async {
                let stats = ctx.orchestrator.stats(container_id).await;
                let health = match crate::addressing::agent_base_url(ctx.orchestrator.as_ref(), &ctx.config, &agent).await {
                    Ok(Some(base)) => ctx.gateway.health(&base).await.ok(),
                    _ => None,
                };
                (stats, health)
            })
            .await;
            match polled {
                Ok((stats, health)) => {
                    if let Ok(s) = stats {
                        if let Err(e) = ctx.store.lifecycle().set_stats(&agent.id, s.memory_mb, s.cpu_percent).await {
                            tracing::warn!(agent_id = %agent.id, error = %e, "stats: storing failed");
                        }
                    } else {
                        ctx.metrics.docker_error("stats");
                    }
                    if let Some(body) = health {
                        let _ = ctx.store.lifecycle().set_healthy(&agent.id, Utc::now()).await;
                        store_channel_health(ctx, &agent, &body).await;
                    } else {
                        handle.wake(&agent.id);
                    }
                    true
                }
                Err(_) => {
                    tracing::warn!(agent_id = %agent.id, slug = %agent.slug, "stats: agent too slow; skipped this round");
                    false
                }
            }
        })
        .buffer_unordered(CONCURRENCY)
        .filter(|refreshed| futures::future::ready(*refreshed))
        .count()
        .await
}

/// Stores the channel report of `agent`'s `/health` `body` when it differs
/// from the stored one (most polls change nothing: no write then).
async fn store_channel_health(ctx: &Context, agent: &Agent, body: &serde_json::Value) {
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
    if report == agent.channel_health {
        return;
    }
    if let Err(e) = ctx
        .store
        .lifecycle()
        .set_channel_health(&agent.id, report.as_deref())
        .await
    {
        tracing::warn!(agent_id = %agent.id, error = %e, "stats: storing channel health failed");
    }
}
