//! Watches the Docker event stream (filtered on our label) and wakes the
//! reconciler for the agent an event is about, so a restart by Docker's
//! restart policy, `docker restart`, a crash or a removal is noticed at once
//! rather than at the next periodic resync.
//!
//! The stream ends when the daemon restarts or an idle connection is cut, and
//! the daemon keeps only its last 256 events: every (re)connect is followed by
//! a full resync, and a clean end of stream means "reconnect", never "done".

use std::time::Duration;

use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use super::ReconcilerHandle;

/// First and longest wait between reconnect attempts.
const RECONNECT_MIN: Duration = Duration::from_millis(200);
const RECONNECT_MAX: Duration = Duration::from_secs(10);

/// Runs until `cancel` fires.
pub async fn run(handle: ReconcilerHandle, cancel: CancellationToken) {
    let mut backoff = RECONNECT_MIN;
    loop {
        let docker = handle.inner.ctx.orchestrator.clone();
        let mut events = Box::pin(docker.events());
        // Subscribe first, then resync: nothing that happens in between is missed.
        handle.resync_all().await;
        let mut healthy = false;
        loop {
            let next = tokio::select! {
                _ = cancel.cancelled() => return,
                next = events.next() => next,
            };
            match next {
                Some(Ok(event)) => {
                    healthy = true;
                    // The engine filters on our label; other installations'
                    // containers carry it too and are none of our business.
                    let foreign = matches!(
                        (docker.installation(), event.installation.as_deref()),
                        (Some(mine), Some(theirs)) if mine != theirs
                    );
                    if foreign {
                        continue;
                    }
                    if let Some(agent_id) = event.agent_id.as_deref() {
                        tracing::debug!(agent_id, action = %event.action, "docker event");
                        if event.action == "oom" {
                            handle.note_oom(agent_id);
                        }
                        handle.wake(agent_id);
                    }
                }
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "docker event stream failed; reconnecting");
                    break;
                }
                None => {
                    tracing::info!("docker event stream ended; reconnecting");
                    break;
                }
            }
        }
        backoff = if healthy {
            RECONNECT_MIN
        } else {
            (backoff * 2).min(RECONNECT_MAX)
        };
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
    }
}
