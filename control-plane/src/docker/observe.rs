//! Reading observed state from the engine: inspect and list, logs (tail,
//! follow, pairing code), stats and the event stream. The conversions from
//! the engine's shapes are pure functions, tested without an engine.

use super::logs::{LineSplitter, StreamKind};
use super::{
    cgroup, status_of, ContainerEvent, ContainerStats, DockerError, DockerRuntime, LogLine,
    ObservedContainer, AGENT_ID_LABEL, AGENT_PORT, INSTALLATION_LABEL, SPEC_HASH_LABEL,
};
use crate::orchestrator::{Endpoint, ListedWorkload, PolledStats};
use bollard::container::LogOutput;
use bollard::models::{
    ContainerCpuStats, ContainerInspectResponse, ContainerStatsResponse, ContainerSummary,
    EventMessage,
};
use bollard::query_parameters::{EventsOptions, ListContainersOptions, LogsOptions, StatsOptions};
use chrono::{DateTime, Datelike, Utc};
use futures::stream::{self, BoxStream, Stream, StreamExt};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Duration;

/// How many inspects [`DockerRuntime::list_managed`] runs at once.
const LIST_CONCURRENCY: usize = 8;
/// How many engine stats calls [`DockerRuntime::poll_stats`] runs at once
/// for containers whose cgroup cannot be read.
const ENGINE_STATS_CONCURRENCY: usize = 32;
/// Container ids per listing in [`DockerRuntime::running_endpoints`] (they
/// travel in the query string).
const LIST_IDS_PER_CALL: usize = 200;
/// How long [`DockerRuntime::stats`] measures CPU over when no earlier
/// reading of the container is kept (the engine's own span).
const CGROUP_CPU_SPAN: Duration = Duration::from_secs(1);

impl DockerRuntime {
    /// Inspects a container by id or name; `None` if it does not exist.
    pub async fn inspect(
        &self,
        id_or_name: &str,
    ) -> Result<Option<ObservedContainer>, DockerError> {
        Ok(self.inspect_raw(id_or_name).await?.map(observed))
    }

    async fn inspect_raw(
        &self,
        id_or_name: &str,
    ) -> Result<Option<ContainerInspectResponse>, DockerError> {
        match self.docker.inspect_container(id_or_name, None).await {
            Ok(resp) => Ok(Some(resp)),
            Err(e) if status_of(&e) == Some(404) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Every container (running or not) carrying our label and the extra
    /// labels, sorted by name. Containers removed while listing are skipped.
    pub async fn list_managed(&self) -> Result<Vec<ObservedContainer>, DockerError> {
        let options = ListContainersOptions {
            all: true,
            filters: Some(HashMap::from([("label".to_owned(), self.label_filters())])),
            ..Default::default()
        };
        let summaries = self.docker.list_containers(Some(options)).await?;
        let ids: Vec<String> = summaries.into_iter().filter_map(|s| s.id).collect();
        let results: Vec<Result<Option<ObservedContainer>, DockerError>> = stream::iter(ids)
            .map(|id| async move { self.inspect(&id).await })
            .buffer_unordered(LIST_CONCURRENCY)
            .collect()
            .await;
        let mut out = Vec::with_capacity(results.len());
        for result in results {
            if let Some(c) = result? {
                out.push(c);
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Every container (running or not) carrying our label and the extra
    /// labels, sorted by name, from one listing (no inspect per container).
    pub async fn list_workloads(&self) -> Result<Vec<ListedWorkload>, DockerError> {
        let options = ListContainersOptions {
            all: true,
            filters: Some(HashMap::from([("label".to_owned(), self.label_filters())])),
            ..Default::default()
        };
        let summaries = self.docker.list_containers(Some(options)).await?;
        let mut out: Vec<ListedWorkload> = summaries.into_iter().filter_map(listed).collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// The last `lines` log lines of both streams, oldest first, each with
    /// the engine's timestamp; lines are capped at
    /// [`super::logs::MAX_LINE_BYTES`] and decoded lossily.
    pub async fn logs_tail(&self, id: &str, lines: usize) -> Result<Vec<LogLine>, DockerError> {
        let options = tail_options(lines);
        let mut out: Vec<LogLine> = Vec::new();
        let mut stream = into_lines(self.docker.logs(id, Some(options)));
        while let Some(line) = stream.next().await {
            out.push(line?);
        }
        if out.len() > lines {
            out.drain(..out.len() - lines);
        }
        Ok(out)
    }

    /// Follows the logs of both streams, starting with the last `tail` lines.
    /// The stream ends when the container stops (the engine does not follow
    /// a restart): inspect then, do not assume.
    pub fn logs_follow(
        &self,
        id: &str,
        tail: usize,
    ) -> BoxStream<'static, Result<LogLine, DockerError>> {
        into_lines(self.docker.logs(id, Some(follow_options(tail))))
    }

    /// Follows the logs of both streams from `since` on (whole seconds:
    /// lines of the same second before it come too).
    pub fn logs_since(
        &self,
        id: &str,
        since: DateTime<Utc>,
    ) -> BoxStream<'static, Result<LogLine, DockerError>> {
        let options = since_options(since);
        into_lines(self.docker.logs(id, Some(options)))
    }

    /// One sample of CPU and memory use: from the container's cgroup files
    /// where they can be read ([`super::cgroup`]), the CPU share over the
    /// time since the last reading kept for it, or over a second when there
    /// is none that old; otherwise from the engine, which takes two
    /// readings about a second apart (`stream=false`, `one-shot=false`).
    /// Expect the call to take up to ~1–2 s.
    pub async fn stats(&self, id: &str) -> Result<ContainerStats, DockerError> {
        if self.cgroup.layout().is_some() {
            let first = self.cgroup_sample(id).await;
            if let Some(first) = first {
                let sample = match first.cpu_percent {
                    Some(_) => Some(first),
                    None => {
                        tokio::time::sleep(CGROUP_CPU_SPAN).await;
                        self.cgroup_sample(id).await
                    }
                };
                if let Some(cgroup::Sample {
                    memory_mb,
                    cpu_percent: Some(cpu_percent),
                }) = sample
                {
                    return Ok(ContainerStats {
                        cpu_percent,
                        memory_mb,
                    });
                }
            }
        }
        self.engine_stats(id).await
    }

    /// Whether this host's cgroup files can be read here at all (the
    /// layout is known); each container may still fall back to the engine.
    pub fn reads_cgroups(&self) -> bool {
        self.cgroup.layout().is_some()
    }

    /// [`Self::stats`] as the engine computes it, never from cgroup files.
    pub async fn engine_stats(&self, id: &str) -> Result<ContainerStats, DockerError> {
        let options = StatsOptions {
            stream: false,
            one_shot: false,
        };
        let mut stream = self.docker.stats(id, Some(options));
        match stream.next().await {
            Some(Ok(stats)) => Ok(compute_stats(&stats)),
            Some(Err(e)) => Err(e.into()),
            None => Err(DockerError::Other(format!("no stats for container {id}"))),
        }
    }

    /// One cgroup reading of `id`, off the async threads.
    async fn cgroup_sample(&self, id: &str) -> Option<cgroup::Sample> {
        let cgroup = self.cgroup.clone();
        let id = id.to_owned();
        tokio::task::spawn_blocking(move || cgroup.sample(&id))
            .await
            .ok()
            .flatten()
    }

    /// Resource use of each container of `ids` (same order) for a poll that
    /// repeats: every cgroup-readable one read in one blocking batch, with
    /// the CPU share since its previous poll (`None` on the first); the
    /// others through the engine's stats ([`Self::engine_stats`], a few at
    /// a time).
    pub async fn poll_stats(&self, ids: &[String]) -> Vec<Result<PolledStats, DockerError>> {
        let read: Vec<Option<cgroup::Sample>> = if self.cgroup.layout().is_some() {
            let cgroup = self.cgroup.clone();
            let batch = ids.to_vec();
            tokio::task::spawn_blocking(move || batch.iter().map(|id| cgroup.sample(id)).collect())
                .await
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        let mut out: Vec<Option<Result<PolledStats, DockerError>>> = (0..ids.len())
            .map(|i| {
                let s = read.get(i).copied().flatten()?;
                Some(Ok(PolledStats {
                    memory_mb: s.memory_mb,
                    cpu_percent: s.cpu_percent,
                }))
            })
            .collect();
        let misses: Vec<(usize, String)> = out
            .iter()
            .enumerate()
            .filter(|(_, r)| r.is_none())
            .map(|(i, _)| (i, ids[i].clone()))
            .collect();
        let this = self.clone();
        let fetched: Vec<(usize, Result<ContainerStats, DockerError>)> = stream::iter(misses)
            .map(move |(i, id)| {
                let this = this.clone();
                async move { (i, this.engine_stats(&id).await) }
            })
            .buffer_unordered(ENGINE_STATS_CONCURRENCY)
            .collect()
            .await;
        for (i, stats) in fetched {
            out[i] = Some(stats.map(|s| PolledStats {
                memory_mb: s.memory_mb,
                cpu_percent: Some(s.cpu_percent),
            }));
        }
        out.into_iter()
            .map(|r| r.unwrap_or_else(|| Err(DockerError::Other("stats not read".to_owned()))))
            .collect()
    }

    /// The running containers among `ids` that this installation may act
    /// on, with their endpoints, from one listing filtered on those ids
    /// (the engine answers it from memory; no inspect per container).
    pub async fn running_endpoints(
        &self,
        ids: &[String],
    ) -> Result<Vec<ListedWorkload>, DockerError> {
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(LIST_IDS_PER_CALL) {
            let options = ListContainersOptions {
                all: false,
                filters: Some(HashMap::from([
                    ("label".to_owned(), self.label_filters()),
                    ("id".to_owned(), chunk.to_vec()),
                ])),
                ..Default::default()
            };
            let summaries = self.docker.list_containers(Some(options)).await?;
            // The engine's `id` filter also matches prefixes: keep exact ids.
            out.extend(
                summaries
                    .into_iter()
                    .filter_map(listed)
                    .filter(|w| chunk.contains(&w.id) && self.is_owned(&w.labels)),
            );
        }
        Ok(out)
    }

    /// Events about our containers (`type=container`, filtered on our
    /// ownership labels) from the moment of this call on. The request only
    /// goes out when the stream is first polled, so it asks the engine for
    /// events `since` the call (the engine replays them from its last-256
    /// buffer): subscribing, then resyncing, misses nothing in between.
    ///
    /// The stream ends when the daemon restarts or the connection is cut:
    /// reconnect with backoff and resync (list by label) after every
    /// reconnect; an end is not "done".
    pub fn events(&self) -> BoxStream<'static, Result<ContainerEvent, DockerError>> {
        let now = Utc::now();
        let options = EventsOptions {
            since: Some(format!(
                "{}.{:09}",
                now.timestamp(),
                now.timestamp_subsec_nanos()
            )),
            until: None,
            filters: Some(HashMap::from([
                ("type".to_owned(), vec!["container".to_owned()]),
                ("label".to_owned(), self.label_filters()),
            ])),
        };
        self.docker
            .events(Some(options))
            .filter_map(|item| async move {
                match item {
                    Ok(message) => container_event(message).map(Ok),
                    Err(e) => Some(Err(DockerError::from(e))),
                }
            })
            .boxed()
    }
}

/// Both streams' last `lines` lines, stamped, not followed (the logs
/// options of every engine call here, containers' and Swarm's alike).
pub(crate) fn tail_options(lines: usize) -> LogsOptions {
    LogsOptions {
        follow: false,
        stdout: true,
        stderr: true,
        since: 0,
        until: 0,
        timestamps: true,
        tail: lines.to_string(),
    }
}

/// Both streams from the last `tail` lines on, stamped, followed.
pub(crate) fn follow_options(tail: usize) -> LogsOptions {
    LogsOptions {
        follow: true,
        ..tail_options(tail)
    }
}

/// Both streams from `since` on (whole seconds), stamped, followed.
pub(crate) fn since_options(since: DateTime<Utc>) -> LogsOptions {
    LogsOptions {
        // The engine's field is an `i32` of seconds (until 2038).
        since: i32::try_from(since.timestamp().max(0)).unwrap_or(i32::MAX),
        tail: "all".to_owned(),
        ..follow_options(0)
    }
}

/// Turns a stream of log frames into a stream of lines.
pub(crate) fn into_lines<S>(frames: S) -> BoxStream<'static, Result<LogLine, DockerError>>
where
    S: Stream<Item = Result<LogOutput, bollard::errors::Error>> + Send + 'static,
{
    struct State<S> {
        frames: std::pin::Pin<Box<S>>,
        splitter: LineSplitter,
        pending: VecDeque<LogLine>,
        done: bool,
    }
    let state = State {
        frames: Box::pin(frames),
        splitter: LineSplitter::new(true),
        pending: VecDeque::new(),
        done: false,
    };
    stream::unfold(state, |mut st| async move {
        loop {
            if let Some(line) = st.pending.pop_front() {
                return Some((Ok(line), st));
            }
            if st.done {
                return None;
            }
            match st.frames.next().await {
                Some(Ok(frame)) => {
                    if let Some((kind, bytes)) = StreamKind::of(&frame) {
                        st.pending.extend(st.splitter.push(kind, bytes));
                    }
                }
                Some(Err(e)) => {
                    st.done = true;
                    return Some((Err(DockerError::from(e)), st));
                }
                None => {
                    st.done = true;
                    st.pending.extend(st.splitter.finish());
                }
            }
        }
    })
    .boxed()
}

/// Parses an engine timestamp (RFC 3339, nanoseconds); the engine's zero
/// time (`0001-01-01T00:00:00Z`, "never") and garbage are `None`.
pub fn parse_docker_time(s: &str) -> Option<DateTime<Utc>> {
    let at = DateTime::parse_from_rfc3339(s).ok()?.with_timezone(&Utc);
    (at.year() > 1).then_some(at)
}

/// The observed state of one inspected container.
pub fn observed(resp: ContainerInspectResponse) -> ObservedContainer {
    let labels: BTreeMap<String, String> = resp
        .config
        .as_ref()
        .and_then(|c| c.labels.clone())
        .unwrap_or_default()
        .into_iter()
        .collect();
    let state = resp.state.unwrap_or_default();
    let port_key = super::spec::agent_port_key();
    let first_port = |map: Option<&HashMap<String, Option<Vec<bollard::models::PortBinding>>>>| {
        map.and_then(|m| m.get(&port_key))
            .and_then(|b| b.as_ref())
            .and_then(|b| {
                b.iter()
                    .find_map(|p| p.host_port.as_deref()?.parse::<u16>().ok())
            })
    };
    let host_port = first_port(
        resp.network_settings
            .as_ref()
            .and_then(|n| n.ports.as_ref()),
    )
    .or_else(|| {
        first_port(
            resp.host_config
                .as_ref()
                .and_then(|h| h.port_bindings.as_ref()),
        )
    });
    ObservedContainer {
        id: resp.id.unwrap_or_default(),
        name: resp
            .name
            .unwrap_or_default()
            .trim_start_matches('/')
            .to_owned(),
        agent_id: labels.get(AGENT_ID_LABEL).cloned(),
        spec_hash: labels.get(SPEC_HASH_LABEL).cloned(),
        installation: labels.get(INSTALLATION_LABEL).cloned(),
        created_at: resp.created.as_deref().and_then(parse_docker_time),
        ip_addresses: resp
            .network_settings
            .as_ref()
            .and_then(|n| n.networks.as_ref())
            .map(|networks| {
                networks
                    .iter()
                    .filter_map(|(name, endpoint)| {
                        let ip = endpoint.ip_address.as_deref().filter(|ip| !ip.is_empty())?;
                        Some((name.clone(), ip.to_owned()))
                    })
                    .collect()
            })
            .unwrap_or_default(),
        labels,
        state: state.status.map(|s| s.to_string()).unwrap_or_default(),
        running: state.running.unwrap_or(false),
        started_at: state.started_at.as_deref().and_then(parse_docker_time),
        finished_at: state.finished_at.as_deref().and_then(parse_docker_time),
        exit_code: state.exit_code,
        oom_killed: state.oom_killed.unwrap_or(false),
        restart_count: resp.restart_count.unwrap_or(0),
        host_port,
        node: None,
        status_message: None,
    }
}

/// A listed container as [`ListedWorkload`]; `None` without an id.
fn listed(s: ContainerSummary) -> Option<ListedWorkload> {
    let labels: BTreeMap<String, String> = s.labels.unwrap_or_default().into_iter().collect();
    let host_port = s.ports.unwrap_or_default().iter().find_map(|p| {
        (p.private_port == AGENT_PORT)
            .then_some(p.public_port)
            .flatten()
    });
    let ip_addresses = s
        .network_settings
        .and_then(|n| n.networks)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(name, endpoint)| {
            let ip = endpoint.ip_address.filter(|ip| !ip.is_empty())?;
            Some((name, ip))
        })
        .collect();
    Some(ListedWorkload {
        id: s.id?,
        name: s
            .names
            .unwrap_or_default()
            .first()
            .map(|n| n.trim_start_matches('/').to_owned())
            .unwrap_or_default(),
        agent_id: labels.get(AGENT_ID_LABEL).cloned(),
        state: s.state.map(|s| s.to_string()).unwrap_or_default(),
        created_at: s
            .created
            .and_then(|secs| DateTime::<Utc>::from_timestamp(secs, 0)),
        labels,
        endpoint: Endpoint {
            host_port,
            ip_addresses,
        },
    })
}

/// CPU and memory as `docker stats` computes them: CPU % = container delta
/// / system delta × online CPUs × 100 (0 without a previous reading);
/// memory = usage − inactive page cache (cgroup v1 `total_inactive_file`,
/// v2 `inactive_file`), MiB — the Docker CLI's
/// `calculateMemUsageUnixNoCache`, as [`super::cgroup`] computes it.
pub fn compute_stats(stats: &ContainerStatsResponse) -> ContainerStats {
    let none = ContainerCpuStats::default();
    let cpu = stats.cpu_stats.as_ref().unwrap_or(&none);
    let pre = stats.precpu_stats.as_ref().unwrap_or(&none);
    let total_usage = |c: &ContainerCpuStats| {
        c.cpu_usage
            .as_ref()
            .and_then(|u| u.total_usage)
            .unwrap_or(0)
    };
    let cpu_delta = total_usage(cpu).saturating_sub(total_usage(pre)) as f64;
    let system_delta = cpu
        .system_cpu_usage
        .unwrap_or(0)
        .saturating_sub(pre.system_cpu_usage.unwrap_or(0)) as f64;
    let online = cpu
        .online_cpus
        .filter(|n| *n > 0)
        .map(u64::from)
        .or_else(|| {
            cpu.cpu_usage
                .as_ref()
                .and_then(|u| u.percpu_usage.as_ref())
                .map(|p| p.len() as u64)
        })
        .unwrap_or(1) as f64;
    let cpu_percent = if cpu_delta > 0.0 && system_delta > 0.0 {
        cpu_delta / system_delta * online * 100.0
    } else {
        0.0
    };
    let usage = stats
        .memory_stats
        .as_ref()
        .and_then(|m| m.usage)
        .unwrap_or(0);
    // The engine's raw map: cgroup v1 has `total_inactive_file` (and a
    // non-hierarchical `inactive_file`), v2 only `inactive_file`.
    let inactive_file = stats
        .memory_stats
        .as_ref()
        .and_then(|m| m.stats.as_ref())
        .and_then(|s| {
            s.get("total_inactive_file")
                .or_else(|| s.get("inactive_file"))
        })
        .copied();
    let used = cgroup::memory_no_cache(usage, inactive_file);
    ContainerStats {
        cpu_percent,
        memory_mb: used as f64 / (1024.0 * 1024.0),
    }
}

/// Our view of one engine event; `None` for events without an actor id.
pub fn container_event(message: EventMessage) -> Option<ContainerEvent> {
    let actor = message.actor?;
    let container_id = actor.id?;
    let attributes = actor.attributes.unwrap_or_default();
    let at = message
        .time_nano
        .map(DateTime::from_timestamp_nanos)
        .or_else(|| message.time.and_then(|s| DateTime::from_timestamp(s, 0)));
    Some(ContainerEvent {
        container_id,
        action: message.action.unwrap_or_default(),
        agent_id: attributes.get(AGENT_ID_LABEL).cloned(),
        installation: attributes.get(INSTALLATION_LABEL).cloned(),
        exit_code: attributes.get("exitCode").and_then(|c| c.parse().ok()),
        at,
    })
}

#[cfg(test)]
#[path = "observe_tests.rs"]
mod tests;
