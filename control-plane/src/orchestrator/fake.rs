//! An in-memory [`Orchestrator`] for tests (Plane keeps one beside its
//! Docker runtime): workloads with a run state (created, running, exited), a
//! start counter and strictly increasing start instants, labels, volumes and
//! networks, a scripted start ([`OnStart`]: print a pairing code, crash, or
//! print nothing), and knobs for what happens behind the control plane's
//! back: a crash ([`FakeOrchestrator::crash`]), a `docker rm`
//! ([`FakeOrchestrator::remove_behind_our_back`]) and a `docker restart`
//! ([`FakeOrchestrator::restart_behind_our_back`]).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::stream::{self, BoxStream, StreamExt};
use tokio::sync::broadcast;

use super::{
    ownership_of, ContainerEvent, ContainerSpec, ContainerStats, FileEntry, ImageInfo, Incarnation,
    Labels, LogLine, ObservedContainer, Orchestrator, OrchestratorError, Ownership, Result,
    AGENT_ID_LABEL, INSTALLATION_LABEL, MANAGED_LABEL, SPEC_HASH_LABEL, TRAEFIK_NETWORK_LABEL,
};

/// How often a follow of the fake's logs looks for new lines.
const FOLLOW_POLL: Duration = Duration::from_millis(5);

/// What a workload does when it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OnStart {
    /// Prints the pairing banner with this code and keeps running.
    PrintCode(String),
    /// Exits at once with this code (before printing anything).
    Crash(i64),
    /// Keeps running and prints nothing.
    Silent,
}

/// A workload's run state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunState {
    Created,
    Running,
    Exited,
}

impl RunState {
    fn word(self) -> &'static str {
        match self {
            RunState::Created => "created",
            RunState::Running => "running",
            RunState::Exited => "exited",
        }
    }
}

/// Decides each start: called with the workload's name and its start number
/// (1 for the first start).
type StartScript = Arc<dyn Fn(&str, u32) -> OnStart + Send + Sync>;

struct Workload {
    id: String,
    spec: ContainerSpec,
    files: Vec<FileEntry>,
    run: RunState,
    created_at: DateTime<Utc>,
    started_at: Option<DateTime<Utc>>,
    finished_at: Option<DateTime<Utc>>,
    exit_code: Option<i64>,
    starts: u32,
    logs: Vec<LogLine>,
}

impl Workload {
    fn observed(&self) -> ObservedContainer {
        let mut labels = self.spec.labels.clone();
        // As the engine's create body labels it (`docker/spec.rs`).
        labels.insert(TRAEFIK_NETWORK_LABEL.to_owned(), self.spec.network.clone());
        ObservedContainer {
            id: self.id.clone(),
            name: self.spec.name.clone(),
            agent_id: labels.get(AGENT_ID_LABEL).cloned(),
            spec_hash: labels.get(SPEC_HASH_LABEL).cloned(),
            installation: labels.get(INSTALLATION_LABEL).cloned(),
            labels,
            created_at: Some(self.created_at),
            state: self.run.word().to_owned(),
            running: self.run == RunState::Running,
            started_at: self.started_at,
            finished_at: self.finished_at,
            exit_code: self.exit_code,
            oom_killed: false,
            restart_count: 0,
            host_port: self.spec.host_port,
            ip_addresses: BTreeMap::from([(self.spec.network.clone(), "10.88.0.2".to_owned())]),
            node: None,
            status_message: None,
        }
    }
}

#[derive(Default)]
struct State {
    /// By id.
    workloads: BTreeMap<String, Workload>,
    volumes: BTreeMap<String, Labels>,
    networks: BTreeMap<String, Labels>,
    /// Containers that are not agents' (Traefik, zcaas's own), by name:
    /// the networks each is attached to ([`FakeOrchestrator::add_edge`]).
    attachments: BTreeMap<String, BTreeSet<String>>,
    images: BTreeSet<String>,
    /// Labels of images, by name (an image not listed has none).
    image_labels: BTreeMap<String, Labels>,
    next_id: u64,
    /// The last instant handed out: start and finish instants only grow.
    clock: Option<DateTime<Utc>>,
    on_start: Option<StartScript>,
}

impl State {
    fn find(&self, id_or_name: &str) -> Option<&Workload> {
        self.workloads
            .get(id_or_name)
            .or_else(|| self.workloads.values().find(|w| w.spec.name == id_or_name))
    }

    fn id_of(&self, id_or_name: &str) -> Option<String> {
        self.find(id_or_name).map(|w| w.id.clone())
    }

    /// Now, but strictly after every instant handed out before.
    fn tick(&mut self) -> DateTime<Utc> {
        let now = Utc::now();
        let at = match self.clock {
            Some(last) if now <= last => last + chrono::Duration::microseconds(1),
            _ => now,
        };
        self.clock = Some(at);
        at
    }
}

/// The in-memory orchestrator. Cheap to clone (clones share the engine).
#[derive(Clone)]
pub struct FakeOrchestrator {
    state: Arc<Mutex<State>>,
    base: Labels,
    installation: Option<String>,
    events: broadcast::Sender<ContainerEvent>,
}

impl FakeOrchestrator {
    /// An empty engine for installation `installation`, holding `images`.
    pub fn new(installation: &str, images: &[&str]) -> Self {
        let state = State {
            images: images.iter().map(|i| (*i).to_owned()).collect(),
            ..State::default()
        };
        FakeOrchestrator {
            state: Arc::new(Mutex::new(state)),
            base: Labels::from([(MANAGED_LABEL.to_owned(), "true".to_owned())]),
            installation: Some(installation.to_owned()),
            events: broadcast::channel(256).0,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Scripts every start from now on (by default a start prints nothing).
    pub fn on_start(&self, script: impl Fn(&str, u32) -> OnStart + Send + Sync + 'static) {
        self.lock().on_start = Some(Arc::new(script));
    }

    /// Gives image `image` (present or added now) these `labels`.
    pub fn set_image_labels(&self, image: &str, labels: Labels) {
        let mut st = self.lock();
        st.images.insert(image.to_owned());
        st.image_labels.insert(image.to_owned(), labels);
    }

    /// The spec the workload was created from.
    pub fn spec(&self, id_or_name: &str) -> Option<ContainerSpec> {
        self.lock().find(id_or_name).map(|w| w.spec.clone())
    }

    /// The workload named (or with id) `id_or_name`, as observed now.
    pub fn workload(&self, id_or_name: &str) -> Option<ObservedContainer> {
        self.lock().find(id_or_name).map(Workload::observed)
    }

    /// How often the workload was started.
    pub fn starts(&self, id_or_name: &str) -> u32 {
        self.lock().find(id_or_name).map_or(0, |w| w.starts)
    }

    /// The files last written into the workload's volume.
    pub fn files(&self, id_or_name: &str) -> Vec<FileEntry> {
        self.lock()
            .find(id_or_name)
            .map(|w| w.files.clone())
            .unwrap_or_default()
    }

    /// Whether volume `name` exists.
    pub fn volume_exists(&self, name: &str) -> bool {
        self.lock().volumes.contains_key(name)
    }

    /// Adds a container that is not an agent's (Traefik, zcaas's own), on
    /// no network, for [`Orchestrator::attach_to_networks`].
    pub fn add_edge(&self, name: &str) {
        self.lock().attachments.entry(name.to_owned()).or_default();
    }

    /// The networks the edge container `name` is attached to (sorted).
    pub fn edge_networks(&self, name: &str) -> Vec<String> {
        self.lock()
            .attachments
            .get(name)
            .map(|n| n.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// The networks that exist (sorted).
    pub fn networks(&self) -> Vec<String> {
        self.lock().networks.keys().cloned().collect()
    }

    /// Creates a workload as a previous process would have left it: created
    /// from `spec`, with `files`, not started.
    pub fn preexisting(&self, spec: &ContainerSpec, files: &[FileEntry]) -> String {
        let mut st = self.lock();
        self.create_locked(&mut st, spec, files)
            .expect("a fresh name in the fake")
    }

    /// The workload's process exits with `exit_code` (a crash).
    pub fn crash(&self, id_or_name: &str, exit_code: i64) {
        let mut st = self.lock();
        if let Some(id) = st.id_of(id_or_name) {
            self.exit_locked(&mut st, &id, exit_code);
        }
    }

    /// `docker rm -f` behind the control plane's back.
    pub fn remove_behind_our_back(&self, id_or_name: &str) {
        let mut st = self.lock();
        if let Some(id) = st.id_of(id_or_name) {
            self.remove_locked(&mut st, &id);
        }
    }

    /// `docker restart` behind the control plane's back: a new incarnation
    /// (new start instant, the start script runs again).
    pub fn restart_behind_our_back(&self, id_or_name: &str) {
        let mut st = self.lock();
        if let Some(id) = st.id_of(id_or_name) {
            if st
                .workloads
                .get(&id)
                .is_some_and(|w| w.run == RunState::Running)
            {
                self.exit_locked(&mut st, &id, 0);
            }
            self.start_locked(&mut st, &id);
        }
    }

    fn event(&self, w: &Workload, action: &str, at: DateTime<Utc>) {
        // Nobody listening is fine.
        let _ = self.events.send(ContainerEvent {
            container_id: w.id.clone(),
            action: action.to_owned(),
            agent_id: w.spec.labels.get(AGENT_ID_LABEL).cloned(),
            installation: w.spec.labels.get(INSTALLATION_LABEL).cloned(),
            exit_code: w.exit_code,
            at: Some(at),
        });
    }

    fn create_locked(
        &self,
        st: &mut State,
        spec: &ContainerSpec,
        files: &[FileEntry],
    ) -> Result<String> {
        let mut volume_labels = self.ownership_labels();
        volume_labels.insert(AGENT_ID_LABEL.to_owned(), spec.agent_id.clone());
        let volume = st
            .volumes
            .entry(spec.volume.clone())
            .or_insert(volume_labels);
        if !self.is_owned(volume) || volume.get(AGENT_ID_LABEL) != Some(&spec.agent_id) {
            return Err(OrchestratorError::NameConflict(spec.volume.clone()));
        }
        if let Some(existing) = st.workloads.values_mut().find(|w| w.spec.name == spec.name) {
            let ours = ownership_of(
                &self.base,
                self.installation.as_deref(),
                &existing.spec.labels,
            )
            .may_act();
            if !ours || existing.spec.agent_id != spec.agent_id {
                return Err(OrchestratorError::NameConflict(spec.name.clone()));
            }
            existing.files = files.to_vec();
            return Ok(existing.id.clone());
        }
        st.next_id += 1;
        let id = format!("fake{:04}", st.next_id);
        let created_at = st.tick();
        let mut spec = spec.clone();
        spec.labels
            .insert(SPEC_HASH_LABEL.to_owned(), spec.spec_hash.clone());
        let w = Workload {
            id: id.clone(),
            spec,
            files: files.to_vec(),
            run: RunState::Created,
            created_at,
            started_at: None,
            finished_at: None,
            exit_code: None,
            starts: 0,
            logs: Vec::new(),
        };
        self.event(&w, "create", created_at);
        st.workloads.insert(id.clone(), w);
        Ok(id)
    }

    fn start_locked(&self, st: &mut State, id: &str) -> Option<Incarnation> {
        let at = st.tick();
        let script = st.on_start.clone();
        let w = st.workloads.get_mut(id)?;
        if w.run == RunState::Running {
            return w.started_at.map(|started_at| Incarnation { started_at });
        }
        w.starts += 1;
        w.run = RunState::Running;
        w.started_at = Some(at);
        w.exit_code = None;
        let what = script.map_or(OnStart::Silent, |s| s(&w.spec.name, w.starts));
        self.event(w, "start", at);
        match what {
            OnStart::PrintCode(code) => {
                let stamp = at + chrono::Duration::milliseconds(1);
                for text in [
                    "     ┌──────────────┐".to_owned(),
                    format!("     │  {code}  │"),
                    "     └──────────────┘".to_owned(),
                    format!("     Send: POST /pair with header X-Pairing-Code: {code}"),
                ] {
                    w.logs.push(LogLine {
                        at: Some(stamp),
                        stream: "stdout",
                        text,
                    });
                }
            }
            OnStart::Crash(code) => {
                let id = w.id.clone();
                self.exit_locked(st, &id, code);
            }
            OnStart::Silent => {}
        }
        Some(Incarnation { started_at: at })
    }

    fn exit_locked(&self, st: &mut State, id: &str, exit_code: i64) {
        let at = st.tick();
        if let Some(w) = st.workloads.get_mut(id) {
            if w.run == RunState::Running {
                w.run = RunState::Exited;
                w.finished_at = Some(at);
                w.exit_code = Some(exit_code);
                self.event(w, "die", at);
            }
        }
    }

    fn remove_locked(&self, st: &mut State, id: &str) {
        let at = st.tick();
        if let Some(w) = st.workloads.remove(id) {
            self.event(&w, "destroy", at);
        }
    }

    /// Follows workload `id`'s lines from index `from` (or those stamped at
    /// or after `since`) until its current incarnation ends.
    fn follow(
        &self,
        id: &str,
        tail: Option<usize>,
        since: Option<DateTime<Utc>>,
    ) -> BoxStream<'static, Result<LogLine>> {
        let (id, start, starts) = {
            let st = self.lock();
            let Some(w) = st.find(id) else {
                return stream::iter([Err(OrchestratorError::NotFound(
                    format!("no workload {id}").into(),
                ))])
                .boxed();
            };
            let start = match (tail, since) {
                (Some(n), _) => w.logs.len().saturating_sub(n),
                (None, Some(since)) => w
                    .logs
                    .iter()
                    .position(|l| l.at.is_some_and(|at| at >= since))
                    .unwrap_or(w.logs.len()),
                (None, None) => 0,
            };
            (w.id.clone(), start, w.starts)
        };
        let state = self.state.clone();
        stream::unfold(start, move |cursor| {
            let state = state.clone();
            let id = id.clone();
            async move {
                loop {
                    {
                        let st = state.lock().unwrap_or_else(|e| e.into_inner());
                        let w = st.workloads.get(&id)?;
                        if let Some(line) = w.logs.get(cursor) {
                            return Some((Ok(line.clone()), cursor + 1));
                        }
                        // The engine does not follow into the next start.
                        if w.run != RunState::Running || w.starts != starts {
                            return None;
                        }
                    }
                    tokio::time::sleep(FOLLOW_POLL).await;
                }
            }
        })
        .boxed()
    }
}

fn gone(id: &str) -> OrchestratorError {
    OrchestratorError::NotFound(format!("no workload {id}").into())
}

#[async_trait]
impl Orchestrator for FakeOrchestrator {
    fn installation(&self) -> Option<&str> {
        self.installation.as_deref()
    }

    fn ownership_labels(&self) -> Labels {
        let mut labels = self.base.clone();
        if let Some(id) = &self.installation {
            labels.insert(INSTALLATION_LABEL.to_owned(), id.clone());
        }
        labels
    }

    fn ownership(&self, labels: &Labels) -> Ownership {
        ownership_of(&self.base, self.installation.as_deref(), labels)
    }

    async fn ping(&self) -> Result<()> {
        Ok(())
    }

    async fn ensure_network(&self, name: &str) -> Result<()> {
        let labels = self.ownership_labels();
        self.lock()
            .networks
            .entry(name.to_owned())
            .or_insert(labels);
        Ok(())
    }

    async fn attach_to_networks(
        &self,
        container: &str,
        networks: &[String],
    ) -> Result<Vec<String>> {
        let mut st = self.lock();
        if let Some(missing) = networks.iter().find(|n| !st.networks.contains_key(*n)) {
            return Err(OrchestratorError::NotFound(
                format!("no network {missing}").into(),
            ));
        }
        let attached = st.attachments.get_mut(container).ok_or_else(|| {
            OrchestratorError::NotFound(format!("no container {container}").into())
        })?;
        Ok(networks
            .iter()
            .filter(|n| attached.insert((*n).clone()))
            .cloned()
            .collect())
    }

    async fn image_exists(&self, image: &str) -> Result<bool> {
        Ok(self.lock().images.contains(image))
    }

    async fn image_labels(&self, image: &str) -> Result<Option<ImageInfo>> {
        use sha2::Digest;
        let st = self.lock();
        if !st.images.contains(image) {
            return Ok(None);
        }
        let labels = st.image_labels.get(image).cloned().unwrap_or_default();
        // Content-addressed like an engine's: same name and labels, same id.
        let digest = sha2::Sha256::digest(format!("{image}\n{labels:?}").as_bytes());
        Ok(Some(ImageInfo {
            id: format!("sha256:{}", hex::encode(digest)),
            labels,
        }))
    }

    async fn build_agent_image(&self, tag: &str, _binary: &Path) -> Result<()> {
        self.lock().images.insert(tag.to_owned());
        Ok(())
    }

    async fn inspect(&self, id_or_name: &str) -> Result<Option<ObservedContainer>> {
        Ok(self.workload(id_or_name))
    }

    async fn create(&self, spec: &ContainerSpec, files: &[FileEntry]) -> Result<String> {
        let mut st = self.lock();
        self.create_locked(&mut st, spec, files)
    }

    async fn write_files(&self, id: &str, files: &[FileEntry]) -> Result<()> {
        let mut st = self.lock();
        let id = st.id_of(id).ok_or_else(|| gone(id))?;
        let w = st.workloads.get_mut(&id).ok_or_else(|| gone(&id))?;
        w.files = files.to_vec();
        Ok(())
    }

    async fn start(&self, id: &str) -> Result<Incarnation> {
        let mut st = self.lock();
        let id = st.id_of(id).ok_or_else(|| gone(id))?;
        self.start_locked(&mut st, &id).ok_or_else(|| gone(&id))
    }

    async fn stop(&self, id: &str, _timeout: Duration) -> Result<()> {
        let mut st = self.lock();
        if let Some(id) = st.id_of(id) {
            self.exit_locked(&mut st, &id, 0);
        }
        Ok(())
    }

    async fn restart(&self, id: &str, _timeout: Duration) -> Result<Incarnation> {
        let mut st = self.lock();
        let id = st.id_of(id).ok_or_else(|| gone(id))?;
        self.exit_locked(&mut st, &id, 0);
        self.start_locked(&mut st, &id).ok_or_else(|| gone(&id))
    }

    async fn remove(&self, id_or_name: &str) -> Result<()> {
        let mut st = self.lock();
        if let Some(id) = st.id_of(id_or_name) {
            self.remove_locked(&mut st, &id);
        }
        Ok(())
    }

    async fn remove_agent_volume(&self, name: &str, agent_id: &str) -> Result<()> {
        let mut st = self.lock();
        let mine = st.volumes.get(name).is_some_and(|labels| {
            self.is_owned(labels)
                && labels.get(AGENT_ID_LABEL).map(String::as_str) == Some(agent_id)
        });
        if mine {
            st.volumes.remove(name);
        }
        Ok(())
    }

    async fn logs_tail(&self, id: &str, lines: usize) -> Result<Vec<LogLine>> {
        let st = self.lock();
        let w = st.find(id).ok_or_else(|| gone(id))?;
        Ok(w.logs[w.logs.len().saturating_sub(lines)..].to_vec())
    }

    fn logs_follow(&self, id: &str, tail: usize) -> BoxStream<'static, Result<LogLine>> {
        self.follow(id, Some(tail), None)
    }

    fn logs_since(&self, id: &str, since: DateTime<Utc>) -> BoxStream<'static, Result<LogLine>> {
        self.follow(id, None, Some(since))
    }

    async fn stats(&self, id: &str) -> Result<ContainerStats> {
        let st = self.lock();
        st.find(id).ok_or_else(|| gone(id))?;
        Ok(ContainerStats {
            cpu_percent: 1.0,
            memory_mb: 10.0,
        })
    }

    fn events(&self) -> BoxStream<'static, Result<ContainerEvent>> {
        tokio_stream::wrappers::BroadcastStream::new(self.events.subscribe())
            .filter_map(|e| async move { e.ok().map(Ok) })
            .boxed()
    }

    async fn list_managed(&self) -> Result<Vec<ObservedContainer>> {
        let st = self.lock();
        let mut out: Vec<ObservedContainer> = st
            .workloads
            .values()
            .filter(|w| self.ownership(&w.spec.labels) != Ownership::NotManaged)
            .map(Workload::observed)
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    async fn list_managed_volumes(&self) -> Result<Vec<(String, Labels)>> {
        let st = self.lock();
        Ok(st
            .volumes
            .iter()
            .filter(|(_, l)| self.ownership(l) != Ownership::NotManaged)
            .map(|(n, l)| (n.clone(), l.clone()))
            .collect())
    }

    async fn list_managed_networks(&self) -> Result<Vec<(String, Labels)>> {
        let st = self.lock();
        Ok(st
            .networks
            .iter()
            .filter(|(_, l)| self.ownership(l) != Ownership::NotManaged)
            .map(|(n, l)| (n.clone(), l.clone()))
            .collect())
    }
}
