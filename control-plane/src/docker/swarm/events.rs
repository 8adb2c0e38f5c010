//! Events of a swarm, as the reconciler's watch expects them
//! ([`ContainerEvent`]): Swarm has no task events (the engine's event types
//! are builder, config, container, daemon, image, network, node, plugin,
//! secret, service, volume; container events stay on each node), so the
//! task list is read every [`super::EVENT_POLL`] and each service's
//! current task compared with the previous reading: a new running task is
//! a `start`, a task that ended a `die` (with its exit code), a service
//! that vanished a `destroy`. The reconciler's periodic resync backs this
//! up as it does for Docker's events.

use std::collections::HashMap;

use futures::stream::{self, BoxStream, StreamExt};

use super::tasks::current_task;
use super::{SwarmRuntime, EVENT_POLL};
use crate::docker::DockerError;
use crate::orchestrator::{ContainerEvent, INSTALLATION_LABEL};

/// What one reading saw of one service.
#[derive(Debug, Clone, PartialEq)]
pub struct Seen {
    pub agent_id: Option<String>,
    pub installation: Option<String>,
    /// The current task's id and whether it runs.
    pub task: Option<(String, bool)>,
    pub exit_code: Option<i64>,
}

/// The events between two readings (service id → what was seen). Pure.
pub fn diff(before: &HashMap<String, Seen>, after: &HashMap<String, Seen>) -> Vec<ContainerEvent> {
    let event = |id: &str, seen: &Seen, action: &str| ContainerEvent {
        container_id: id.to_owned(),
        action: action.to_owned(),
        agent_id: seen.agent_id.clone(),
        installation: seen.installation.clone(),
        exit_code: if action == "die" {
            seen.exit_code
        } else {
            None
        },
        at: Some(chrono::Utc::now()),
    };
    let mut out = Vec::new();
    for (id, now) in after {
        let was = before.get(id).and_then(|s| s.task.clone());
        match (&was, &now.task) {
            (Some((old, true)), Some((new, running))) if old != new || !running => {
                out.push(event(id, now, "die"));
                if *running {
                    out.push(event(id, now, "start"));
                }
            }
            (Some((_, false)), Some((_, true))) => out.push(event(id, now, "start")),
            (None, Some((_, true))) if before.contains_key(id) => out.push(event(id, now, "start")),
            (Some((_, true)), None) => out.push(event(id, now, "die")),
            _ => {}
        }
    }
    for (id, was) in before {
        if !after.contains_key(id) {
            out.push(event(id, was, "destroy"));
        }
    }
    out
}

impl SwarmRuntime {
    /// One reading: our services and each one's current task.
    async fn reading(&self) -> Result<HashMap<String, Seen>, DockerError> {
        Ok(self
            .services_with_tasks()
            .await?
            .into_iter()
            .map(|(v, tasks)| {
                let current = current_task(&tasks);
                let seen = Seen {
                    agent_id: v.agent_id().map(str::to_owned),
                    installation: v.labels.get(INSTALLATION_LABEL).cloned(),
                    task: current.map(|t| (t.id.clone(), t.is_running())),
                    exit_code: current
                        .and_then(|t| t.status.container_status.as_ref())
                        .and_then(|c| c.exit_code),
                };
                (v.id, seen)
            })
            .collect())
    }

    /// The poll-based event stream (see the module). It ends after a
    /// failed reading (the watch reconnects and resyncs).
    pub fn events(&self) -> BoxStream<'static, Result<ContainerEvent, DockerError>> {
        let this = self.clone();
        stream::unfold(
            (this, None::<HashMap<String, Seen>>, false),
            |(this, before, failed)| async move {
                if failed {
                    return None;
                }
                if before.is_some() {
                    tokio::time::sleep(EVENT_POLL).await;
                }
                match this.reading().await {
                    Ok(after) => {
                        let events = before.as_ref().map(|b| diff(b, &after)).unwrap_or_default();
                        Some((
                            stream::iter(events.into_iter().map(Ok)).boxed(),
                            (this, Some(after), false),
                        ))
                    }
                    Err(e) => Some((stream::once(async { Err(e) }).boxed(), (this, None, true))),
                }
            },
        )
        .flatten()
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(task: Option<(&str, bool)>) -> Seen {
        Seen {
            agent_id: Some("a1".into()),
            installation: None,
            task: task.map(|(id, r)| (id.to_owned(), r)),
            exit_code: Some(137),
        }
    }

    fn actions(before: &[(&str, Seen)], after: &[(&str, Seen)]) -> Vec<String> {
        let map = |xs: &[(&str, Seen)]| {
            xs.iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect::<HashMap<_, _>>()
        };
        diff(&map(before), &map(after))
            .into_iter()
            .map(|e| format!("{}:{}", e.container_id, e.action))
            .collect()
    }

    #[test]
    fn a_replaced_task_is_a_die_then_a_start() {
        assert_eq!(
            actions(
                &[("s", seen(Some(("t1", true))))],
                &[("s", seen(Some(("t2", true))))]
            ),
            ["s:die", "s:start"]
        );
        assert_eq!(
            actions(
                &[("s", seen(Some(("t1", true))))],
                &[("s", seen(Some(("t1", false))))]
            ),
            ["s:die"]
        );
        assert_eq!(
            actions(
                &[("s", seen(Some(("t1", false))))],
                &[("s", seen(Some(("t2", true))))]
            ),
            ["s:start"]
        );
        assert!(actions(
            &[("s", seen(Some(("t1", true))))],
            &[("s", seen(Some(("t1", true))))]
        )
        .is_empty());
        assert_eq!(actions(&[("s", seen(None))], &[]), ["s:destroy"]);
        assert!(actions(&[], &[("s", seen(Some(("t1", true))))]).is_empty());
    }
}
