//! A Docker Swarm of several nodes on this one machine (issue 15, phase 4 of
//! the swarm design): one `dockerd` per network namespace, the namespaces
//! joined by a host bridge, the daemons joined into one swarm, and the
//! test's images loaded into every node. Root only (it creates namespaces,
//! links and firewall rules); [`unsupported`] says why a test should skip.
//!
//! # Shape of a run
//!
//! Every run has an id `R` (4 hex digits) and a tag `zcsw-R` ([`PREFIX`]);
//! everything it creates carries the tag, so leftovers of a killed run are
//! found by name ([`sweep_stale`], [`leftovers`]). Node `i` (0-based; node 0
//! is the manager, the others are workers) is called `n<i+1>` on disk and in
//! names:
//!
//! | object | name / place |
//! |---|---|
//! | state directory (owner pid, state file) | `/tmp/zcsw-R/` — short on purpose: unix socket paths are limited to 108 bytes |
//! | node directory | `/tmp/zcsw-R/nK/{daemon.json, data/, exec/, docker.pid, key.json, dockerd.log}` |
//! | node API socket | `/tmp/zcsw-R/nK.sock` ([`SwarmCluster::node_socket`]) |
//! | host bridge, address `10.213.S.1/24` | link `zcsw-R` |
//! | node network namespace | `/run/netns/zcsw-R-nK` |
//! | veth pair | host end `zcsw-R-K` on the bridge, `eth0` in the namespace with `10.213.S.(10+K)/24`, default route via the bridge ([`SwarmCluster::node_addr`]) |
//! | firewall | `ACCEPT` for `-s`/`-d 10.213.S.0/24` at the top of `DOCKER-USER` (when it exists) and `FORWARD`, each with `-m comment --comment zcsw-R` |
//! | containers' cgroups | `/sys/fs/cgroup/<hierarchy>/zcsw-R-nK/<container>` |
//! | swarm address pool | `10.(214+S).0.0/16`, `/24` per overlay network |
//!
//! `S` is the first of `0..32` for which neither `10.213.S.0/24` nor the
//! pool overlaps a route or an address of the host (`ip -4 route`,
//! `ip -4 addr`); a concurrent run's bridge route makes the next run take
//! another `S`.
//!
//! # The daemons, and why each flag is there
//!
//! `nsenter --net=/run/netns/zcsw-R-nK dockerd …` with
//! `DOCKER_SERVICE_PREFER_OFFLINE_IMAGE=1` in its environment (Swarm would
//! otherwise look the image up in a registry at every task start — a lookup
//! that fails here, slowly — before falling back to the local image), stdin
//! closed, stdout and stderr to `nK/dockerd.log`:
//!
//! - `nsenter --net` rather than `ip netns exec`: the latter also remounts
//!   `/sys` for the namespace, and dockerd then fails with "Devices cgroup
//!   isn't mounted". Only the network namespace differs from the host's;
//!   mount, PID and UTS namespaces are shared (all nodes have the host's
//!   hostname: tell nodes apart by id, or by the node label
//!   `zcsw.node=nK` the harness adds).
//! - `--config-file nK/daemon.json`: the machine's `/etc/docker/daemon.json`
//!   sets `data-root` and `storage-driver`, which clash with the flags
//!   below ("directives are specified both as a flag and in the
//!   configuration file"). The node's own file holds one key only,
//!   `{"deprecated-key-path": "nK/key.json"}` (a configuration-file key; 20.10
//!   has no such flag): the engine's identity key, which would otherwise be
//!   read from — or, when missing, created in — `/etc/docker/key.json`,
//!   shared with the machine's daemon.
//! - `--data-root`, `--exec-root`, `--pidfile`, `-H unix://…`: nothing shared
//!   with the machine's own daemon or with the other nodes (images, Raft
//!   state, containerd, runc state, network sandboxes, metrics socket).
//! - `--storage-driver=vfs`: works on any file system, needs no kernel
//!   overlay support inside `/tmp`; layers are copied per container, fine
//!   for the scratch-sized images the tests run.
//! - `--bridge=none`: no `docker0` in the namespace (swarm tasks use overlay
//!   networks and `docker_gwbridge`).
//! - `--iptables=false`: the node programs no NAT or filter rules of its
//!   own; the only rules on the machine are the harness's four.
//! - `--no-new-privileges`: the daemon-wide default every swarm node of
//!   zcaas needs (OPERATIONS.md): a service's spec cannot carry it on API
//!   1.41, so agents' tasks get it from the daemon.
//! - `--cgroup-parent=/zcsw-R-nK`: the node's containers live in cgroups
//!   that carry the tag, so a container left by a killed shim is found and
//!   its cgroups removed, not mixed with the machine's daemon's `/docker`.
//! - `--containerd-namespace=zcsw-R-nK`, `--containerd-plugins-namespace=…-p`:
//!   each dockerd supervises its own containerd under its exec-root (no
//!   system containerd socket on this machine); should a system containerd
//!   appear, the namespaces keep the nodes' containers apart from the
//!   machine daemon's `moby` namespace.
//!
//! # Start ([`SwarmCluster::start`])
//!
//! [`sweep_stale`] first; then the state directory (created under a
//! temporary name with the owner's pid and start time inside, then renamed:
//! a sweep never sees a run's directory without its owner), bridge,
//! namespaces and links, firewall rules, then every dockerd at once, each
//! waited for (≤ 60 s, `docker version`); `swarm init` on node 0 (listen and
//! advertise on its namespace address, the pool above, task history 1),
//! `swarm join` of the others as workers, the node labels, a wait (≤ 60 s)
//! until every node is `ready`/`active`, and `docker save <images> | docker
//! -H <node> load` for each node (≤ 120 s each). A step that fails tears the
//! run down and returns the step's error (a daemon that does not answer:
//! with the tail of its log).
//!
//! # Teardown ([`SwarmCluster::shutdown`], and `Drop`, also on panic)
//!
//! Each step best effort, each bounded, problems collected:
//! SIGTERM to every dockerd (pid from its pidfile; ≤ 20 s, then SIGKILL) —
//! no `swarm leave`: the Raft state lives in the data root, which goes;
//! SIGKILL to any process whose command line names the run's directory
//! (containerd, shims, docker-proxy) or that sits in one of the run's
//! cgroups (task processes of a killed shim); shim sockets of the run's
//! containers in `/run/containerd/s` (containerd names them
//! `sha256(<containerd address>/<namespace>/<container id>)`) removed when
//! a killed shim left them; `umount -n -l` of every mount under the run's
//! directory and of `/run/netns/zcsw-R-*`, deepest first (`-n`: no utab
//! update, which would create `/run/mount`); `ip netns del`;
//! the veth ends (gone with their namespace) and the bridge; exactly the
//! firewall rules added (`iptables -D` with the remembered arguments); the
//! cgroups (`rmdir`, deepest first); `/run/netns` unmounted and removed when
//! the run created it and it is empty; the directory
//! (`rm -rf --one-file-system`, refused while anything is mounted below
//! it). Finally [`leftovers`] must be empty, or `shutdown` fails with what
//! is left. The machine's own Docker daemon is only read from
//! (`docker save`).
//!
//! # Seen on this machine (dockerd 20.10.24, kernel 6.18, cgroup v1)
//!
//! Start of 3 nodes (a 7 MB image loaded into each) ≈ 4–8 s on an idle
//! machine, ≈ 15–18 s beside two cargo builds; teardown ≈ 4 s (≈ 10 s); a
//! 3-replica service spreads one task per node, tasks answer each other
//! across nodes over an attachable overlay (VXLAN between the namespaces:
//! each node's VXLAN socket lives in its own namespace), the manager's
//! service and task logs carry the workers' tasks' lines, and a drained
//! worker's task is replaced on another node within ≈ 5 s
//! (`tests/tests/swarm_harness.rs`). A run killed with SIGKILL (test and
//! daemons) is removed entirely by the next run's [`sweep_stale`].
//!
//! # Errors
//!
//! Every external command runs with a time bound and fails with its command
//! line, exit status and stderr. Nodes are addressed by index; an index out
//! of range panics (a test bug).

use std::collections::BTreeSet;
use std::fs;
use std::io::Read;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _};

/// The name prefix of everything the harness creates: `zcsw-<4 hex>` is a
/// run's tag.
pub const PREFIX: &str = "zcsw";
/// The most nodes one run may have (names `n1`…`n9`).
pub const MAX_NODES: usize = 9;

/// How long each dockerd may take to answer, from its start.
const DAEMON_START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the dockerds may take to stop after SIGTERM, together.
const DAEMON_STOP_TIMEOUT: Duration = Duration::from_secs(20);
/// How long processes may take to vanish after SIGKILL.
const KILL_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the veth ends may take to vanish with their namespace.
const LINK_GONE_TIMEOUT: Duration = Duration::from_secs(10);
/// `swarm init` and each `swarm join`.
const JOIN_TIMEOUT: Duration = Duration::from_secs(60);
/// Until every node is `ready` and `active`.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// One `docker save | docker load` into one node.
const LOAD_TIMEOUT: Duration = Duration::from_secs(120);
/// Any other docker CLI call ([`SwarmCluster::docker`]).
const DOCKER_TIMEOUT: Duration = Duration::from_secs(60);
/// `ip`, `iptables`, `umount`, `kill`, `rm`, `sha256sum`.
const HOST_TOOL_TIMEOUT: Duration = Duration::from_secs(15);
/// Lines of a dockerd log quoted in errors.
const LOG_TAIL_LINES: usize = 25;

/// Where network namespaces are bound (`ip netns`).
const NETNS_DIR: &str = "/run/netns";
/// Where containerd's shims put their sockets.
const SHIM_SOCKET_DIR: &str = "/run/containerd/s";
/// The cgroup file systems' root: one hierarchy per subdirectory (v1), or
/// the unified hierarchy itself (v2).
const CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// The swarm management port on each node address.
const SWARM_PORT: u16 = 2377;

/// Why the harness cannot run here (a test should print it and skip), or
/// `None`: it needs root and `nsenter`, `ip` and `iptables` on `PATH`.
pub fn unsupported() -> Option<String> {
    match effective_uid() {
        Some(0) => {}
        Some(uid) => return Some(format!("needs root (running as uid {uid})")),
        None => return Some("cannot read the effective uid from /proc/self/status".into()),
    }
    let missing: Vec<&str> = ["nsenter", "ip", "iptables"]
        .into_iter()
        .filter(|tool| on_path(tool).is_none())
        .collect();
    (!missing.is_empty()).then(|| format!("{} not found on PATH", missing.join(", ")))
}

/// `/run/netns` as it is now: `"absent"`, `"dir"` (a plain directory) or
/// `"mount"` (a mount point, as `ip netns add` leaves it). A run restores
/// what it found; tests compare it before and after.
pub fn netns_dir_state() -> &'static str {
    if !Path::new(NETNS_DIR).exists() {
        "absent"
    } else if mount_points().iter().any(|m| m == NETNS_DIR) {
        "mount"
    } else {
        "dir"
    }
}

/// A swarm of namespaced dockerds; torn down by [`Self::shutdown`] or on
/// drop (panics included).
pub struct SwarmCluster {
    tag: String,
    dir: PathBuf,
    net: Subnets,
    nodes: Vec<Node>,
    /// The firewall rules this run inserted, exactly as inserted.
    rules: Vec<Rule>,
    down: bool,
}

/// A service's task as the manager reports it ([`SwarmCluster::tasks`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskInfo {
    pub id: String,
    /// The index of its node in the cluster (`None`: a node not of this
    /// cluster, or not assigned yet).
    pub node: Option<usize>,
    pub node_id: String,
    /// `running`, `pending`, `shutdown`, …
    pub state: String,
    /// Its container's id on its node (empty before it has one).
    pub container: String,
    /// Its address on the network asked for, without the prefix length.
    pub addr: Option<String>,
}

/// One node: its names, address, daemon process and swarm node id.
struct Node {
    /// `nK`.
    name: String,
    /// `zcsw-R-nK`: the network namespace, cgroup parent and containerd
    /// namespace.
    netns: String,
    /// `zcsw-R-K`: the veth end on the host bridge.
    veth: String,
    addr: Ipv4Addr,
    /// `/tmp/zcsw-R/nK`.
    dir: PathBuf,
    /// `/tmp/zcsw-R/nK.sock`.
    socket: PathBuf,
    /// The dockerd process (nsenter execs it: same pid).
    daemon: Option<Child>,
    /// The swarm node id (empty until joined).
    id: String,
}

impl SwarmCluster {
    /// Starts `nodes` (1..=[`MAX_NODES`]) dockerds in their own network
    /// namespaces, joins them into one swarm (node 0 the manager), waits
    /// until every node is ready and loads `images` (tags on the machine's
    /// daemon) into each. Cleans stale runs first ([`sweep_stale`]; what it
    /// cannot remove is printed, not fatal: it carries another tag).
    ///
    /// # Errors
    /// The first step that failed (the run is torn down before returning),
    /// with the tail of the daemon's log when a dockerd did not answer.
    pub fn start(nodes: usize, images: &[&str]) -> anyhow::Result<SwarmCluster> {
        ensure!(
            (1..=MAX_NODES).contains(&nodes),
            "a swarm run has 1 to {MAX_NODES} nodes, not {nodes}"
        );
        if let Some(why) = unsupported() {
            bail!("the swarm harness cannot run here: {why}");
        }
        if let Err(e) = sweep_stale() {
            eprintln!("swarm harness: cleaning up after an earlier run: {e:#}");
        }
        let net = pick_subnets()?;
        let (tag, dir) = new_run()?;
        let mut cluster = SwarmCluster {
            tag,
            dir,
            net,
            nodes: Vec::new(),
            rules: Vec::new(),
            down: false,
        };
        match cluster.bring_up(nodes, images) {
            Ok(()) => Ok(cluster),
            Err(e) => {
                let e = e.context(format!("starting swarm run {}", cluster.tag));
                match cluster.teardown() {
                    Ok(()) => Err(e),
                    Err(cleanup) => Err(e.context(format!("and its cleanup failed: {cleanup:#}"))),
                }
            }
        }
    }

    /// The run's tag, `zcsw-<4 hex>`: the name (or name prefix) of
    /// everything it created; see [`leftovers`].
    pub fn tag(&self) -> &str {
        &self.tag
    }

    /// The run's state directory, `/tmp/<tag>`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// How many nodes the swarm has.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the swarm has no node (never, once started).
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Node `i`'s API socket (`/tmp/<tag>/n<i+1>.sock`).
    pub fn node_socket(&self, i: usize) -> &Path {
        &self.nodes[i].socket
    }

    /// Node `i`'s API endpoint for `docker -H` / `DOCKER_HOST`:
    /// `unix:///tmp/<tag>/n<i+1>.sock`.
    pub fn node_host(&self, i: usize) -> String {
        format!("unix://{}", self.nodes[i].socket.display())
    }

    /// Node `i`'s address on the bridge (its swarm advertise address).
    pub fn node_addr(&self, i: usize) -> Ipv4Addr {
        self.nodes[i].addr
    }

    /// Node `i`'s swarm node id.
    pub fn node_id(&self, i: usize) -> &str {
        &self.nodes[i].id
    }

    /// The index of the node with swarm node id `id`.
    pub fn node_index(&self, id: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.id == id)
    }

    /// The manager's API socket (node 0's).
    pub fn manager_socket(&self) -> &Path {
        self.node_socket(0)
    }

    /// The address pool overlay networks take their subnets from (a `/16`).
    pub fn address_pool(&self) -> String {
        self.net.pool()
    }

    /// Runs `docker -H <node i> <args>` (≤ 60 s) and returns its trimmed
    /// stdout.
    ///
    /// # Errors
    /// A non-zero exit (with stderr) or the time bound.
    pub fn docker(&self, i: usize, args: &[&str]) -> anyhow::Result<String> {
        self.docker_within(i, args, DOCKER_TIMEOUT)
    }

    /// [`Self::docker`] with another time bound.
    ///
    /// # Errors
    /// As [`Self::docker`].
    pub fn docker_within(
        &self,
        i: usize,
        args: &[&str],
        timeout: Duration,
    ) -> anyhow::Result<String> {
        run(
            Command::new("docker")
                .arg("-H")
                .arg(self.node_host(i))
                .args(args),
            timeout,
        )
    }

    /// The last `lines` lines of node `i`'s dockerd log.
    pub fn daemon_log_tail(&self, i: usize, lines: usize) -> String {
        log_tail(&self.nodes[i].dir.join("dockerd.log"), lines)
    }

    /// Tears the run down (see the module docs) and checks that nothing of
    /// it is left.
    ///
    /// # Errors
    /// Every step that failed and everything left behind.
    pub fn shutdown(mut self) -> anyhow::Result<()> {
        self.teardown()
    }

    /// The tasks of `services` whose desired state is `running` (any
    /// current state), as the manager's `docker service ps` + `docker
    /// inspect --type task` report them, with each one's address on
    /// `network` when given.
    ///
    /// # Errors
    /// A docker CLI call failed or answered something that is not task JSON.
    pub fn tasks(&self, services: &[&str], network: Option<&str>) -> anyhow::Result<Vec<TaskInfo>> {
        let mut args = vec![
            "service",
            "ps",
            "-q",
            "--no-trunc",
            "--filter",
            "desired-state=running",
        ];
        args.extend(services);
        let ids = self.docker(0, &args)?;
        if ids.trim().is_empty() {
            return Ok(Vec::new());
        }
        let mut inspect = vec!["inspect", "--type", "task"];
        inspect.extend(ids.lines());
        let json = self.docker(0, &inspect)?;
        let tasks: Vec<serde_json::Value> =
            serde_json::from_str(&json).context("task inspect JSON")?;
        Ok(tasks
            .iter()
            .map(|t| {
                let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_owned();
                let addr = network.and_then(|network| {
                    t["NetworksAttachments"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .find(|a| a["Network"]["Spec"]["Name"] == network)
                        .and_then(|a| a["Addresses"][0].as_str())
                        .map(|a| a.split('/').next().unwrap_or(a).to_owned())
                });
                let node_id = text(&t["NodeID"]);
                TaskInfo {
                    id: text(&t["ID"]),
                    node: self.node_index(&node_id),
                    node_id,
                    state: text(&t["Status"]["State"]),
                    container: text(&t["Status"]["ContainerStatus"]["ContainerID"]),
                    addr,
                }
            })
            .collect())
    }

    /// The one running task of `service` ([`Self::tasks`]).
    ///
    /// # Errors
    /// None runs now, or a docker CLI call failed.
    pub fn running_task(&self, service: &str, network: Option<&str>) -> anyhow::Result<TaskInfo> {
        let tasks = self.tasks(&[service], network)?;
        tasks
            .iter()
            .find(|t| t.state == "running" && t.node.is_some())
            .cloned()
            .with_context(|| format!("no running task of {service}: {tasks:?}"))
    }

    /// Loses node `i` as a machine would: SIGKILL to its dockerd and to
    /// every process of that node (containerd, shims, its tasks: command
    /// lines under its directory, or in its cgroups `/<tag>-n<i+1>`), with
    /// no goodbye to the swarm. The node's namespace, address and files
    /// stay for the teardown. Not the manager (node 0).
    ///
    /// # Errors
    /// `i` is 0 or out of range.
    pub fn kill_node(&mut self, i: usize) -> anyhow::Result<()> {
        ensure!(
            i > 0 && i < self.nodes.len(),
            "node {i} cannot be killed (0 is the manager)"
        );
        let node = &mut self.nodes[i];
        if let Some(mut child) = node.daemon.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let dir = node.dir.to_string_lossy().into_owned();
        let under = format!("{dir}/");
        let (cgroup, inside) = (format!("/{}", node.netns), format!("/{}/", node.netns));
        let pids: Vec<u32> = processes()
            .into_iter()
            .filter(|(pid, cmdline)| {
                cmdline.contains(&under)
                    || fs::read_to_string(format!("/proc/{pid}/cgroup"))
                        .unwrap_or_default()
                        .lines()
                        .any(|l| {
                            l.splitn(3, ':')
                                .nth(2)
                                .is_some_and(|p| p == cgroup || p.starts_with(&inside))
                        })
            })
            .map(|(pid, _)| pid)
            .collect();
        signal(&pids, "KILL");
        Ok(())
    }

    fn bring_up(&mut self, nodes: usize, images: &[&str]) -> anyhow::Result<()> {
        let bridge = self.tag.clone();
        let gateway = self.net.gateway();
        ip(&["link", "add", &bridge, "type", "bridge"])?;
        ip(&["addr", "add", &format!("{gateway}/24"), "dev", &bridge])?;
        ip(&["link", "set", &bridge, "up"])?;
        for i in 0..nodes {
            let name = format!("n{}", i + 1);
            let node = Node {
                netns: format!("{}-{name}", self.tag),
                veth: format!("{}-{}", self.tag, i + 1),
                addr: self.net.node(i),
                dir: self.dir.join(&name),
                socket: self.dir.join(format!("{name}.sock")),
                name,
                daemon: None,
                id: String::new(),
            };
            let (ns, veth) = (node.netns.clone(), node.veth.clone());
            let addr = node.addr;
            self.nodes.push(node);
            ip(&["netns", "add", &ns])?;
            ip(&[
                "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns,
            ])?;
            ip(&["link", "set", &veth, "master", &bridge, "up"])?;
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{addr}/24"),
                "dev",
                "eth0",
            ])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            ip(&[
                "-n",
                &ns,
                "route",
                "add",
                "default",
                "via",
                &gateway.to_string(),
            ])?;
        }
        self.allow_forwarding()?;
        let started = Instant::now();
        for i in 0..nodes {
            let child = self.spawn_daemon(i)?;
            self.nodes[i].daemon = Some(child);
        }
        for i in 0..nodes {
            self.wait_daemon(i, started + DAEMON_START_TIMEOUT)?;
        }
        self.form_swarm()?;
        self.load_images(images)
    }

    /// Accepts the nodes' subnet in `DOCKER-USER` (when the machine's
    /// daemon made it) and `FORWARD`: bridged frames pass through iptables
    /// (`bridge-nf-call-iptables`) and the machine's `FORWARD` policy is
    /// DROP.
    fn allow_forwarding(&mut self) -> anyhow::Result<()> {
        let subnet = self.net.nodes_cidr();
        let mut chains = Vec::new();
        if iptables(&["-S", "DOCKER-USER"]).is_ok() {
            chains.push("DOCKER-USER");
        }
        chains.push("FORWARD");
        for chain in chains {
            for side in ["-s", "-d"] {
                let tagged: [&str; 6] = [side, &subnet, "-m", "comment", "--comment", &self.tag];
                let rule = Rule::new(chain, &tagged, "ACCEPT");
                let inserted = match iptables(&rule.args("-I")) {
                    Ok(_) => rule,
                    // No comment match (an iptables without xt_comment): the
                    // same rule untagged; still removed exactly.
                    Err(_) => {
                        let plain = Rule::new(chain, &[side, &subnet], "ACCEPT");
                        iptables(&plain.args("-I"))?;
                        plain
                    }
                };
                self.rules.push(inserted);
            }
        }
        Ok(())
    }

    fn spawn_daemon(&self, i: usize) -> anyhow::Result<Child> {
        let node = &self.nodes[i];
        fs::create_dir_all(&node.dir)
            .with_context(|| format!("creating {}", node.dir.display()))?;
        let config = node.dir.join("daemon.json");
        let settings = serde_json::json!({ "deprecated-key-path": node.dir.join("key.json") });
        fs::write(&config, format!("{settings}\n"))
            .with_context(|| format!("writing {}", config.display()))?;
        let log_path = node.dir.join("dockerd.log");
        let log = fs::File::create(&log_path)
            .with_context(|| format!("creating {}", log_path.display()))?;
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={NETNS_DIR}/{}", node.netns))
            .arg("dockerd")
            .arg("--config-file")
            .arg(&config)
            .arg("--data-root")
            .arg(node.dir.join("data"))
            .arg("--exec-root")
            .arg(node.dir.join("exec"))
            .arg("--pidfile")
            .arg(node.dir.join("docker.pid"))
            .arg("-H")
            .arg(format!("unix://{}", node.socket.display()))
            .args(["--storage-driver=vfs", "--bridge=none", "--iptables=false"])
            // What OPERATIONS.md asks of every swarm node: Swarm on API
            // 1.41 cannot set no-new-privileges per service.
            .arg("--no-new-privileges")
            .arg(format!("--cgroup-parent=/{}", node.netns))
            .arg(format!("--containerd-namespace={}", node.netns))
            .arg(format!("--containerd-plugins-namespace={}-p", node.netns))
            .env("DOCKER_SERVICE_PREFER_OFFLINE_IMAGE", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        cmd.spawn()
            .with_context(|| format!("{}: starting {}", node.name, describe(&cmd)))
    }

    /// Waits until node `i`'s dockerd answers, it exits, or `deadline`.
    fn wait_daemon(&mut self, i: usize, deadline: Instant) -> anyhow::Result<()> {
        let log = self.nodes[i].dir.join("dockerd.log");
        loop {
            let exited = match self.nodes[i].daemon.as_mut() {
                Some(child) => child.try_wait()?,
                None => None,
            };
            if let Some(status) = exited {
                self.nodes[i].daemon = None;
                let node = &self.nodes[i];
                bail!(
                    "{} ({}): dockerd exited ({status}) before answering; last lines of {}:\n{}",
                    node.name,
                    node.addr,
                    log.display(),
                    log_tail(&log, LOG_TAIL_LINES)
                );
            }
            if self.nodes[i].socket.exists()
                && self
                    .docker_within(
                        i,
                        &["version", "--format", "{{.Server.Version}}"],
                        Duration::from_secs(5),
                    )
                    .is_ok()
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let node = &self.nodes[i];
                bail!(
                    "{} ({}): dockerd did not answer on {} within {} s; last lines of {}:\n{}",
                    node.name,
                    node.addr,
                    node.socket.display(),
                    DAEMON_START_TIMEOUT.as_secs(),
                    log.display(),
                    log_tail(&log, LOG_TAIL_LINES)
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// `swarm init` on node 0, `swarm join` of the others, node labels
    /// `zcsw.node=nK` and `io.zcaas.docker-socket=<its socket>`, then waits
    /// until all are ready and active.
    fn form_swarm(&mut self) -> anyhow::Result<()> {
        let manager = self.nodes[0].addr;
        let manager_listen = format!("{manager}:{SWARM_PORT}");
        self.docker_within(
            0,
            &[
                "swarm",
                "init",
                "--advertise-addr",
                &manager.to_string(),
                "--listen-addr",
                &manager_listen,
                "--default-addr-pool",
                &self.net.pool(),
                "--default-addr-pool-mask-length",
                "24",
                "--task-history-limit",
                "1",
            ],
            JOIN_TIMEOUT,
        )
        .context("swarm init on n1")?;
        let token = self.docker(0, &["swarm", "join-token", "-q", "worker"])?;
        for i in 1..self.nodes.len() {
            let addr = self.nodes[i].addr.to_string();
            self.docker_within(
                i,
                &[
                    "swarm",
                    "join",
                    "--token",
                    &token,
                    "--advertise-addr",
                    &addr,
                    "--listen-addr",
                    &format!("{addr}:{SWARM_PORT}"),
                    &manager_listen,
                ],
                JOIN_TIMEOUT,
            )
            .with_context(|| format!("swarm join of {}", self.nodes[i].name))?;
        }
        for i in 0..self.nodes.len() {
            let id = self.docker(i, &["info", "--format", "{{.Swarm.NodeID}}"])?;
            ensure!(
                !id.is_empty(),
                "{} has no swarm node id",
                self.nodes[i].name
            );
            self.nodes[i].id = id;
        }
        for i in 0..self.nodes.len() {
            let label = format!("{PREFIX}.node={}", self.nodes[i].name);
            // Where that node's engine socket is, for zcaas's janitor jobs
            // (every node's is elsewhere than /var/run/docker.sock here).
            let socket = format!(
                "{}={}",
                zcaas::docker::swarm::DOCKER_SOCKET_LABEL,
                self.nodes[i].socket.display()
            );
            self.docker(
                0,
                &[
                    "node",
                    "update",
                    "--label-add",
                    &label,
                    "--label-add",
                    &socket,
                    &self.nodes[i].id,
                ],
            )?;
        }
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut args = vec![
            "node",
            "inspect",
            "--format",
            "{{.Status.State}}/{{.Spec.Availability}}",
        ];
        args.extend(self.nodes.iter().map(|n| n.id.as_str()));
        loop {
            let states = self.docker(0, &args)?;
            if states.lines().filter(|s| *s == "ready/active").count() == self.nodes.len() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "the swarm's nodes were not all ready/active within {} s: {}",
                    READY_TIMEOUT.as_secs(),
                    states.replace('\n', ", ")
                );
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// `docker save <images> | docker -H <node> load` for every node, then
    /// checks that each node has each image.
    fn load_images(&self, images: &[&str]) -> anyhow::Result<()> {
        if images.is_empty() {
            return Ok(());
        }
        for i in 0..self.nodes.len() {
            let mut save_cmd = Command::new("docker");
            save_cmd.arg("save").args(images);
            let save_what = describe(&save_cmd);
            let mut save = save_cmd
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .with_context(|| format!("starting {save_what}"))?;
            let pipe = save.stdout.take().context("docker save has no stdout")?;
            let mut load_cmd = Command::new("docker");
            load_cmd
                .arg("-H")
                .arg(self.node_host(i))
                .args(["load", "-q"]);
            let load_what = describe(&load_cmd);
            let load = load_cmd
                .stdin(Stdio::from(pipe))
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn();
            let load = match load {
                Ok(load) => load,
                Err(e) => {
                    let _ = save.kill();
                    let _ = save.wait();
                    return Err(e).with_context(|| format!("starting {load_what}"));
                }
            };
            let loaded = wait_bounded(load, LOAD_TIMEOUT, &load_what);
            let saved = wait_bounded(save, HOST_TOOL_TIMEOUT, &save_what)?;
            ensure!(
                saved.status.success(),
                "{save_what}: {}: {}",
                saved.status,
                saved.stderr.trim()
            );
            let loaded = loaded?;
            ensure!(
                loaded.status.success(),
                "{load_what}: {}: {}",
                loaded.status,
                loaded.stderr.trim()
            );
            let mut inspect = vec!["image", "inspect", "--format", "{{.Id}}"];
            inspect.extend_from_slice(images);
            self.docker(i, &inspect)
                .with_context(|| format!("{} lacks an image after loading", self.nodes[i].name))?;
        }
        Ok(())
    }

    /// Stops every dockerd of the run: SIGTERM (pid from its pidfile, else
    /// the child's), ≤ 20 s for all, then SIGKILL. Reaps them.
    fn stop_daemons(&mut self) {
        for node in &self.nodes {
            if let Some(child) = &node.daemon {
                let pid = read_pidfile(&node.dir.join("docker.pid")).unwrap_or_else(|| child.id());
                signal(&[pid], "TERM");
            }
        }
        let deadline = Instant::now() + DAEMON_STOP_TIMEOUT;
        loop {
            let mut running = false;
            for node in &mut self.nodes {
                if let Some(child) = node.daemon.as_mut() {
                    match child.try_wait() {
                        Ok(None) => running = true,
                        Ok(Some(_)) | Err(_) => node.daemon = None,
                    }
                }
            }
            if !running || Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        for node in &mut self.nodes {
            if let Some(mut child) = node.daemon.take() {
                eprintln!(
                    "[{}] {}: dockerd still running {} s after SIGTERM: SIGKILL",
                    self.tag,
                    node.name,
                    DAEMON_STOP_TIMEOUT.as_secs()
                );
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }

    fn teardown(&mut self) -> anyhow::Result<()> {
        if self.down {
            return Ok(());
        }
        self.down = true;
        self.stop_daemons();
        let rules = std::mem::take(&mut self.rules);
        let mut problems = Vec::new();
        purge(&self.tag, &self.dir, &rules, &mut problems);
        for rule in &rules {
            if iptables(&rule.args("-C")).is_ok() {
                problems.push(format!(
                    "firewall rule still present: {}",
                    rule.args("-A").join(" ")
                ));
            }
        }
        problems.extend(leftovers(&self.tag));
        if problems.is_empty() {
            Ok(())
        } else {
            bail!(
                "tearing down swarm run {}: {}",
                self.tag,
                problems.join("; ")
            )
        }
    }
}

impl Drop for SwarmCluster {
    fn drop(&mut self) {
        if self.down {
            return;
        }
        if std::thread::panicking() {
            for i in 0..self.nodes.len() {
                eprintln!(
                    "--- [{}] {} dockerd log (last lines) ---\n{}",
                    self.tag,
                    self.nodes[i].name,
                    self.daemon_log_tail(i, LOG_TAIL_LINES)
                );
            }
        }
        if let Err(e) = self.teardown() {
            eprintln!("{e:#}");
        }
    }
}

/// Cleans up after runs whose owner process is gone (killed tests): finds
/// run tags in `/tmp`, `/run/netns`, link names, firewall comments, cgroups
/// and process command lines, and purges each stale one as a teardown would
/// (daemons from their pidfiles). Runs of live processes are left alone;
/// only objects named with [`PREFIX`] are touched. Returns the tags swept.
///
/// # Errors
/// What could not be removed.
pub fn sweep_stale() -> anyhow::Result<Vec<String>> {
    let mut tags = BTreeSet::new();
    let mut staging = Vec::new();
    for entry in fs::read_dir("/tmp").into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(tag) = tag_of(&name) {
            tags.insert(tag.to_owned());
        } else if let Some(rest) = name.strip_prefix(&format!(".{PREFIX}-")) {
            // A staging directory `.zcsw-R-<pid>` of a run that died while
            // creating it.
            if let Some(pid) = rest.rsplit('-').next().and_then(|p| p.parse::<u32>().ok()) {
                if process_start_time(pid).is_none() {
                    staging.push(entry.path());
                }
            }
        }
    }
    for entry in fs::read_dir(NETNS_DIR).into_iter().flatten().flatten() {
        if let Some(tag) = tag_of(&entry.file_name().to_string_lossy()) {
            tags.insert(tag.to_owned());
        }
    }
    for link in link_names() {
        if let Some(tag) = tag_of(&link) {
            tags.insert(tag.to_owned());
        }
    }
    for (_, comment) in commented_rules() {
        if let Some(tag) = tag_of(&comment) {
            tags.insert(tag.to_owned());
        }
    }
    for dir in cgroup_dirs(PREFIX) {
        if let Some(tag) = dir.file_name().and_then(|n| n.to_str()).and_then(tag_of) {
            tags.insert(tag.to_owned());
        }
    }
    let marker = format!("/tmp/{PREFIX}-");
    for (_, cmdline) in processes() {
        if let Some(at) = cmdline.find(&marker) {
            let rest = &cmdline[at + "/tmp/".len()..];
            let name = rest.split(['/', ' ']).next().unwrap_or_default();
            if let Some(tag) = tag_of(name) {
                tags.insert(tag.to_owned());
            }
        }
    }
    let mut problems = Vec::new();
    for dir in staging {
        if let Err(e) = fs::remove_dir_all(&dir) {
            problems.push(format!("removing {}: {e}", dir.display()));
        }
    }
    let mut swept = Vec::new();
    for tag in tags {
        let dir = run_dir(&tag);
        if run_owner_alive(&dir) {
            continue;
        }
        eprintln!("swarm harness: cleaning up stale run {tag}");
        stop_daemons_by_pidfile(&dir);
        purge(&tag, &dir, &[], &mut problems);
        problems.extend(leftovers(&tag));
        swept.push(tag);
    }
    if problems.is_empty() {
        Ok(swept)
    } else {
        bail!("{}", problems.join("; "))
    }
}

/// Everything of run `tag` still on the machine, one description each:
/// its directory, network namespaces, links, firewall rules (by their
/// comment), processes (by command line or cgroup), mounts and cgroups.
/// Empty after a complete teardown.
pub fn leftovers(tag: &str) -> Vec<String> {
    let mut left = Vec::new();
    let dir = run_dir(tag);
    if dir.exists() {
        left.push(format!("directory {}", dir.display()));
    }
    for entry in fs::read_dir(NETNS_DIR).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if belongs(&name, tag) {
            left.push(format!("network namespace {name}"));
        }
    }
    for link in run_links(tag) {
        left.push(format!("link {link}"));
    }
    for (rule, comment) in commented_rules() {
        if comment == tag {
            left.push(format!("firewall rule {}", rule.args("-A").join(" ")));
        }
    }
    for (pid, cmdline) in run_processes(tag, &dir) {
        left.push(format!("process {pid} ({cmdline})"));
    }
    for mount in run_mounts(tag, &dir) {
        left.push(format!("mount {mount}"));
    }
    for cgroup in cgroup_dirs(tag) {
        left.push(format!("cgroup {}", cgroup.display()));
    }
    left
}

/// Removes what run `tag` left, discovering it by name: processes, shim
/// sockets, mounts, namespaces, links, firewall rules (`rules` exactly, then
/// any carrying the tag), cgroups, `/run/netns` if the run created it, and
/// the directory. Daemons must be stopped first. Problems are appended.
fn purge(tag: &str, dir: &Path, rules: &[Rule], problems: &mut Vec<String>) {
    let shim_sockets = shim_sockets(tag, dir);
    let netns_before = fs::read_to_string(dir.join("state")).ok().and_then(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("netns_dir=").map(str::to_owned))
    });

    // Processes: containerd, shims, docker-proxy (by command line) and task
    // processes of a killed shim (by cgroup).
    let deadline = Instant::now() + KILL_TIMEOUT;
    loop {
        let pids: Vec<u32> = run_processes(tag, dir)
            .into_iter()
            .map(|(p, _)| p)
            .collect();
        if pids.is_empty() {
            break;
        }
        if Instant::now() >= deadline {
            problems.push(format!("processes {pids:?} survived SIGKILL"));
            break;
        }
        signal(&pids, "KILL");
        std::thread::sleep(Duration::from_millis(100));
    }
    for socket in shim_sockets {
        match fs::remove_file(&socket) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => problems.push(format!("removing {}: {e}", socket.display())),
        }
    }

    // Mounts under the directory and the namespaces' bind mounts, deepest
    // first; a mount point may be stacked, hence the rounds.
    for _ in 0..5 {
        let mut mounts = run_mounts(tag, dir);
        if mounts.is_empty() {
            break;
        }
        mounts.sort_by_key(|m| std::cmp::Reverse((m.matches('/').count(), m.len())));
        for mount in mounts {
            // `-n`: no utab update (which would create `/run/mount`).
            if let Err(e) = run(
                Command::new("umount").args(["-n", "-l"]).arg(&mount),
                HOST_TOOL_TIMEOUT,
            ) {
                problems.push(format!("{e:#}"));
            }
        }
    }
    for entry in fs::read_dir(NETNS_DIR).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if belongs(&name, tag) {
            if let Err(e) = ip(&["netns", "del", &name]) {
                problems.push(format!("{e:#}"));
            }
        }
    }

    // Links: the veth ends go with their namespace (asynchronously), the
    // bridge is deleted.
    let deadline = Instant::now() + LINK_GONE_TIMEOUT;
    loop {
        let veths: Vec<String> = run_links(tag).into_iter().filter(|l| l != tag).collect();
        if veths.is_empty() {
            break;
        }
        if Instant::now() >= deadline {
            for veth in veths {
                if let Err(e) = ip(&["link", "del", &veth]) {
                    problems.push(format!("{e:#}"));
                }
            }
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    if link_exists(tag) {
        if let Err(e) = ip(&["link", "del", tag]) {
            problems.push(format!("{e:#}"));
        }
    }

    // Firewall: exactly the rules inserted, then any other carrying the tag
    // (a stale run's).
    for rule in rules {
        if let Err(e) = iptables(&rule.args("-D")) {
            problems.push(format!("{e:#}"));
        }
    }
    for (rule, comment) in commented_rules() {
        if comment == tag {
            if let Err(e) = iptables(&rule.args("-D")) {
                problems.push(format!("{e:#}"));
            }
        }
    }

    for cgroup in cgroup_dirs(tag) {
        if let Err(e) = remove_cgroup(&cgroup) {
            problems.push(format!("{e:#}"));
        }
    }

    // `/run/netns`: as the run found it, when no other namespace uses it.
    if let Some(before) = netns_before.as_deref() {
        let empty = fs::read_dir(NETNS_DIR)
            .map(|mut d| d.next().is_none())
            .unwrap_or(false);
        if empty && before != "mount" && netns_dir_state() == "mount" {
            if let Err(e) = run(
                Command::new("umount").args(["-n", NETNS_DIR]),
                HOST_TOOL_TIMEOUT,
            ) {
                problems.push(format!("{e:#}"));
            }
        }
        if empty && before == "absent" && netns_dir_state() == "dir" {
            if let Err(e) = fs::remove_dir(NETNS_DIR) {
                problems.push(format!("removing {NETNS_DIR}: {e}"));
            }
        }
    }

    if dir.exists() {
        let mounted = run_mounts(tag, dir);
        if mounted.is_empty() {
            if let Err(e) = run(
                Command::new("rm")
                    .arg("-rf")
                    .arg("--one-file-system")
                    .arg(dir),
                Duration::from_secs(60),
            ) {
                problems.push(format!("{e:#}"));
            }
        } else {
            problems.push(format!(
                "{} not removed: still mounted below it: {}",
                dir.display(),
                mounted.join(", ")
            ));
        }
    }
}

/// SIGTERM to the dockerds named by the pidfiles `<dir>/n*/docker.pid`
/// (only a live dockerd whose command line names `dir`), ≤ 20 s, then
/// SIGKILL.
fn stop_daemons_by_pidfile(dir: &Path) {
    let marker = dir.to_string_lossy().into_owned();
    let mut pids = Vec::new();
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        if let Some(pid) = read_pidfile(&entry.path().join("docker.pid")) {
            let cmdline = cmdline(pid).unwrap_or_default();
            if cmdline.contains("dockerd") && cmdline.contains(&marker) {
                pids.push(pid);
            }
        }
    }
    if pids.is_empty() {
        return;
    }
    signal(&pids, "TERM");
    let deadline = Instant::now() + DAEMON_STOP_TIMEOUT;
    while Instant::now() < deadline && pids.iter().any(|p| process_start_time(*p).is_some()) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let alive: Vec<u32> = pids
        .into_iter()
        .filter(|p| process_start_time(*p).is_some())
        .collect();
    if !alive.is_empty() {
        signal(&alive, "KILL");
    }
}

/// Creates the run's directory atomically with its owner file (`<pid>
/// <start time>`) and state file (`netns_dir=<absent|dir|mount>`): built
/// under `/tmp/.zcsw-R-<pid>`, then renamed to `/tmp/zcsw-R`.
fn new_run() -> anyhow::Result<(String, PathBuf)> {
    let me = std::process::id();
    let started = process_start_time(me).context("reading this process's start time")?;
    for _ in 0..32 {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let tag = format!("{PREFIX}-{}", &id[..4]);
        let dir = run_dir(&tag);
        if dir.exists() || !leftovers(&tag).is_empty() {
            continue;
        }
        let staging = PathBuf::from(format!("/tmp/.{tag}-{me}"));
        fs::create_dir(&staging).with_context(|| format!("creating {}", staging.display()))?;
        fs::write(staging.join("owner"), format!("{me} {started}\n"))?;
        fs::write(
            staging.join("state"),
            format!("netns_dir={}\n", netns_dir_state()),
        )?;
        match fs::rename(&staging, &dir) {
            Ok(()) => return Ok((tag, dir)),
            Err(e) => {
                let _ = fs::remove_dir_all(&staging);
                return Err(e).with_context(|| format!("creating {}", dir.display()));
            }
        }
    }
    bail!("found no free run id")
}

fn run_dir(tag: &str) -> PathBuf {
    PathBuf::from(format!("/tmp/{tag}"))
}

/// Whether the process that created run directory `dir` is still alive
/// (same pid, same start time).
fn run_owner_alive(dir: &Path) -> bool {
    let Ok(owner) = fs::read_to_string(dir.join("owner")) else {
        return false;
    };
    let mut fields = owner.split_whitespace();
    let pid = fields.next().and_then(|p| p.parse::<u32>().ok());
    let started = fields.next().and_then(|s| s.parse::<u64>().ok());
    match (pid, started) {
        (Some(pid), Some(started)) => process_start_time(pid) == Some(started),
        _ => false,
    }
}

/// `name`'s run tag when `name` is a tag or starts with `<tag>-`.
fn tag_of(name: &str) -> Option<&str> {
    let tag = name.get(..PREFIX.len() + 5)?;
    let id = tag.strip_prefix(PREFIX)?.strip_prefix('-')?;
    let rest = &name[tag.len()..];
    (id.bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        && (rest.is_empty() || rest.starts_with('-')))
    .then_some(tag)
}

/// Whether `name` is run `tag`'s: the tag itself or `<tag>-…`.
fn belongs(name: &str, tag: &str) -> bool {
    name == tag
        || name
            .strip_prefix(tag)
            .is_some_and(|rest| rest.starts_with('-'))
}

/// The subnets of a run: nodes in `10.213.S.0/24`, overlay networks from
/// `10.(214+S).0.0/16`.
#[derive(Debug, Clone, Copy)]
struct Subnets {
    s: u8,
}

impl Subnets {
    fn nodes_cidr(self) -> String {
        format!("10.213.{}.0/24", self.s)
    }

    fn gateway(self) -> Ipv4Addr {
        Ipv4Addr::new(10, 213, self.s, 1)
    }

    fn node(self, i: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, 213, self.s, 11 + i as u8)
    }

    fn pool(self) -> String {
        format!("10.{}.0.0/16", 214 + u16::from(self.s))
    }
}

/// The first [`Subnets`] clashing with no route and no address of the host.
fn pick_subnets() -> anyhow::Result<Subnets> {
    let mut taken = Vec::new();
    for line in ip(&["-4", "route", "show"])?.lines() {
        if let Some(net) = line.split_whitespace().next().and_then(parse_cidr) {
            taken.push(net);
        }
    }
    for line in ip(&["-4", "-o", "addr", "show"])?.lines() {
        let mut words = line.split_whitespace();
        if words.any(|w| w == "inet") {
            if let Some(net) = words.next().and_then(parse_cidr) {
                taken.push(net);
            }
        }
    }
    for s in 0..32u8 {
        let candidate = Subnets { s };
        let ours = [
            parse_cidr(&candidate.nodes_cidr()),
            parse_cidr(&candidate.pool()),
        ];
        let clash = ours
            .iter()
            .flatten()
            .any(|a| taken.iter().any(|b| overlaps(*a, *b)));
        if !clash {
            return Ok(candidate);
        }
    }
    bail!("no free test subnet: 10.213.0-31.0/24 and 10.214-245.0.0/16 all clash with `ip route`")
}

/// `a.b.c.d/n` or `a.b.c.d` (a /32) as (network, prefix length).
fn parse_cidr(s: &str) -> Option<(u32, u8)> {
    let (addr, len) = match s.split_once('/') {
        Some((a, l)) => (a, l.parse::<u8>().ok()?),
        None => (s, 32),
    };
    let addr: Ipv4Addr = addr.parse().ok()?;
    (len <= 32).then_some((u32::from(addr), len))
}

fn overlaps(a: (u32, u8), b: (u32, u8)) -> bool {
    let len = a.1.min(b.1);
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    a.0 & mask == b.0 & mask
}

/// One iptables rule: chain, match arguments and target.
#[derive(Debug, Clone)]
struct Rule {
    chain: String,
    spec: Vec<String>,
}

impl Rule {
    fn new(chain: &str, matches: &[&str], target: &str) -> Rule {
        let mut spec: Vec<String> = matches.iter().map(|s| (*s).to_owned()).collect();
        spec.extend(["-j".to_owned(), target.to_owned()]);
        Rule {
            chain: chain.to_owned(),
            spec,
        }
    }

    /// `<op> <chain> <spec…>` (op `-I`, `-D`, `-C`, `-A`).
    fn args(&self, op: &str) -> Vec<String> {
        let mut args = vec![op.to_owned(), self.chain.clone()];
        args.extend(self.spec.iter().cloned());
        args
    }
}

/// Every filter rule with a `--comment` starting with [`PREFIX`], and that
/// comment (`iptables -S`).
fn commented_rules() -> Vec<(Rule, String)> {
    let Ok(listing) = iptables(&["-S"]) else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for line in listing.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.len() < 3 || words[0] != "-A" {
            continue;
        }
        let comment = words
            .windows(2)
            .find(|w| w[0] == "--comment")
            .map(|w| w[1].trim_matches('"').to_owned());
        if let Some(comment) = comment.filter(|c| c.starts_with(PREFIX)) {
            let spec = words[2..]
                .iter()
                .map(|s| s.trim_matches('"').to_owned())
                .collect();
            found.push((
                Rule {
                    chain: words[1].to_owned(),
                    spec,
                },
                comment,
            ));
        }
    }
    found
}

/// The links of run `tag` that exist: the bridge `tag`, the veth ends
/// `tag-1`…`tag-9`, and any other `tag-…` in the link list. Each is checked
/// by name, since a dump of a busy machine's thousands of links can come
/// back "interrupted" and incomplete.
fn run_links(tag: &str) -> Vec<String> {
    let mut names: BTreeSet<String> = link_names()
        .into_iter()
        .filter(|l| belongs(l, tag))
        .collect();
    names.insert(tag.to_owned());
    names.extend((1..=MAX_NODES).map(|k| format!("{tag}-{k}")));
    names.into_iter().filter(|l| link_exists(l)).collect()
}

fn link_exists(name: &str) -> bool {
    ip(&["link", "show", "dev", name]).is_ok()
}

/// Link names (`ip -o link show`), without the `@peer` suffix.
fn link_names() -> Vec<String> {
    ip(&["-o", "link", "show"])
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_owned())
        .collect()
}

/// Mount points (`/proc/self/mountinfo`, octal escapes decoded).
fn mount_points() -> Vec<String> {
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(unescape_mount)
        .collect()
}

fn unescape_mount(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|b| (b'0'..=b'7').contains(b)));
        match octal {
            Some(d) => {
                let value = d.iter().fold(0u32, |v, b| v * 8 + u32::from(b - b'0'));
                out.push(u8::try_from(value).unwrap_or(b'?'));
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Mounts of run `tag`: under `dir`, and its namespaces' in `/run/netns`.
fn run_mounts(tag: &str, dir: &Path) -> Vec<String> {
    let dir = dir.to_string_lossy().into_owned();
    let under = format!("{dir}/");
    mount_points()
        .into_iter()
        .filter(|m| {
            *m == dir
                || m.starts_with(&under)
                || m.strip_prefix(NETNS_DIR)
                    .and_then(|r| r.strip_prefix('/'))
                    .is_some_and(|name| belongs(name, tag))
        })
        .collect()
}

/// Live processes (pid, command line with spaces for NULs), this one
/// excluded; zombies have an empty command line and are skipped.
fn processes() -> Vec<(u32, String)> {
    let me = std::process::id();
    fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != me)
        .filter_map(|pid| Some((pid, cmdline(pid)?)))
        .filter(|(_, c)| !c.is_empty())
        .collect()
}

fn cmdline(pid: u32) -> Option<String> {
    let raw = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(
        String::from_utf8_lossy(&raw)
            .replace('\0', " ")
            .trim()
            .to_owned(),
    )
}

/// Processes of run `tag`: command line naming `dir`, or in one of its
/// cgroups (`/<tag>-nK/…`).
fn run_processes(tag: &str, dir: &Path) -> Vec<(u32, String)> {
    let dir = dir.to_string_lossy().into_owned();
    let under = format!("{dir}/");
    let cgroup = format!("/{tag}-");
    processes()
        .into_iter()
        .filter(|(pid, cmdline)| {
            cmdline.contains(&under)
                || cmdline.split(' ').any(|w| w == dir)
                || fs::read_to_string(format!("/proc/{pid}/cgroup"))
                    .unwrap_or_default()
                    .lines()
                    .any(|l| {
                        l.splitn(3, ':')
                            .nth(2)
                            .is_some_and(|p| p.starts_with(&cgroup))
                    })
        })
        .collect()
}

/// A process's start time (clock ticks after boot, `/proc/<pid>/stat`
/// field 22); `None` when it does not exist or is a zombie.
fn process_start_time(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    if fields.first() == Some(&"Z") {
        return None;
    }
    fields.get(19)?.parse().ok()
}

fn read_pidfile(path: &Path) -> Option<u32> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// `kill -s <sig> <pids…>`; a pid that is gone is not an error.
fn signal(pids: &[u32], sig: &str) {
    if pids.is_empty() {
        return;
    }
    let mut cmd = Command::new("kill");
    cmd.args(["-s", sig]).args(pids.iter().map(u32::to_string));
    let _ = run(&mut cmd, HOST_TOOL_TIMEOUT);
}

/// Cgroup directories named `<prefix>-…` (or `prefix` itself) at the top
/// of every cgroup hierarchy.
fn cgroup_dirs(prefix: &str) -> Vec<PathBuf> {
    let mut roots = vec![PathBuf::from(CGROUP_ROOT)];
    roots.extend(
        fs::read_dir(CGROUP_ROOT)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| e.path()),
    );
    let mut found = Vec::new();
    for root in roots {
        for entry in fs::read_dir(&root).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if belongs(&name, prefix) && entry.file_type().is_ok_and(|t| t.is_dir()) {
                found.push(entry.path());
            }
        }
    }
    found
}

/// Removes a cgroup tree, deepest first (`rmdir`: cgroup files are not
/// removable); an emptied cgroup may stay busy briefly, hence the retries.
fn remove_cgroup(top: &Path) -> anyhow::Result<()> {
    let mut dirs = vec![top.to_path_buf()];
    let mut i = 0;
    while i < dirs.len() {
        let children: Vec<PathBuf> = fs::read_dir(&dirs[i])
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| e.path())
            .collect();
        dirs.extend(children);
        i += 1;
    }
    dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
    for dir in dirs {
        let mut tries = 0;
        loop {
            match fs::remove_dir(&dir) {
                Ok(()) => break,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                Err(_) if tries < 20 => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => return Err(e).with_context(|| format!("rmdir {}", dir.display())),
            }
        }
    }
    Ok(())
}

/// The shim sockets the run's containers would have in
/// `/run/containerd/s`: `sha256(<containerd address>/<namespace>/<id>)`
/// for every container id in each node's data root.
fn shim_sockets(tag: &str, dir: &Path) -> Vec<PathBuf> {
    let mut sockets = Vec::new();
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !(name.starts_with('n') && name[1..].parse::<usize>().is_ok()) {
            continue;
        }
        let node = entry.path();
        let address = node.join("exec/containerd/containerd.sock");
        let namespace = format!("{tag}-{name}");
        for container in fs::read_dir(node.join("data/containers"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let id = container.file_name().to_string_lossy().into_owned();
            let key = format!("{}/{namespace}/{id}", address.display());
            if let Ok(hash) = sha256_hex(&key) {
                sockets.push(Path::new(SHIM_SOCKET_DIR).join(hash));
            }
        }
    }
    sockets
}

fn sha256_hex(text: &str) -> anyhow::Result<String> {
    use std::io::Write as _;
    let mut child = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting sha256sum")?;
    child
        .stdin
        .take()
        .context("sha256sum has no stdin")?
        .write_all(text.as_bytes())?;
    let out = wait_bounded(child, HOST_TOOL_TIMEOUT, "sha256sum")?;
    ensure!(out.status.success(), "sha256sum: {}", out.stderr.trim());
    out.stdout
        .split_whitespace()
        .next()
        .map(str::to_owned)
        .context("sha256sum printed nothing")
}

fn effective_uid() -> Option<u32> {
    fs::read_to_string("/proc/self/status")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn on_path(tool: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(tool))
        .find(|p| p.is_file())
}

/// The last `lines` lines of a log file (or why it cannot be read).
fn log_tail(path: &Path, lines: usize) -> String {
    match fs::read(path) {
        Ok(raw) => {
            let text = String::from_utf8_lossy(&raw);
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

fn ip(args: &[&str]) -> anyhow::Result<String> {
    run(Command::new("ip").args(args), HOST_TOOL_TIMEOUT)
}

/// `iptables -w 10 <args>` (waits for the xtables lock the machine's
/// daemon may hold).
fn iptables<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> anyhow::Result<String> {
    run(
        Command::new("iptables").args(["-w", "10"]).args(args),
        HOST_TOOL_TIMEOUT,
    )
}

/// The command line of `cmd`, for messages.
fn describe(cmd: &Command) -> String {
    let mut text = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        text.push(' ');
        text.push_str(&arg.to_string_lossy());
    }
    text
}

/// A finished command's status and output.
struct Captured {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

fn drain<R: Read + Send + 'static>(pipe: Option<R>) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut buf);
        }
        buf
    })
}

/// Waits for `child` at most `timeout` (then SIGKILLs it) and collects its
/// piped stdout and stderr.
fn wait_bounded(mut child: Child, timeout: Duration, what: &str) -> anyhow::Result<Captured> {
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(2);
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() < deadline => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(50));
            }
            Ok(None) | Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    let stdout = String::from_utf8_lossy(&stdout.join().unwrap_or_default()).into_owned();
    let stderr = String::from_utf8_lossy(&stderr.join().unwrap_or_default()).into_owned();
    match status {
        Some(status) => Ok(Captured {
            status,
            stdout,
            stderr,
        }),
        None => bail!(
            "{what}: no result within {} s (killed); stderr: {}",
            timeout.as_secs(),
            stderr.trim()
        ),
    }
}

/// Runs `cmd` (stdin closed) for at most `timeout`; its trimmed stdout, or
/// an error with the command line, exit status and stderr.
fn run(cmd: &mut Command, timeout: Duration) -> anyhow::Result<String> {
    let what = describe(cmd);
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {what}"))?;
    let out = wait_bounded(child, timeout, &what)?;
    if !out.status.success() {
        bail!("{what}: {}: {}", out.status, out.stderr.trim());
    }
    Ok(out.stdout.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_recognised_only_with_their_exact_shape() {
        assert_eq!(tag_of("zcsw-0a9f"), Some("zcsw-0a9f"));
        assert_eq!(tag_of("zcsw-0a9f-n1"), Some("zcsw-0a9f"));
        assert_eq!(tag_of("zcsw-0a9f-2"), Some("zcsw-0a9f"));
        assert_eq!(tag_of("zcsw-0a9fx"), None);
        assert_eq!(tag_of("zcsw-0A9F"), None);
        assert_eq!(tag_of("zcsw-0a9"), None);
        assert_eq!(tag_of("br-0a9f"), None);
        assert!(belongs("zcsw-0a9f-n1", "zcsw-0a9f"));
        assert!(belongs("zcsw-0a9f", "zcsw-0a9f"));
        assert!(!belongs("zcsw-0a9f1", "zcsw-0a9f"));
    }

    #[test]
    fn subnets_overlap_by_their_shorter_prefix() {
        let net = |s| parse_cidr(s).unwrap();
        assert!(overlaps(net("10.213.0.0/24"), net("10.0.0.0/8")));
        assert!(overlaps(net("10.213.0.0/24"), net("10.213.0.7")));
        assert!(!overlaps(net("10.213.0.0/24"), net("10.213.1.0/24")));
        assert!(!overlaps(net("10.214.0.0/16"), net("172.17.0.0/16")));
        assert!(overlaps(net("10.214.0.0/16"), net("0.0.0.0/0")));
        let s = Subnets { s: 3 };
        assert_eq!(s.nodes_cidr(), "10.213.3.0/24");
        assert_eq!(s.node(0), Ipv4Addr::new(10, 213, 3, 11));
        assert_eq!(s.pool(), "10.217.0.0/16");
    }

    #[test]
    fn mount_points_decode_octal_escapes() {
        assert_eq!(unescape_mount(r"/tmp/a\040b"), "/tmp/a b");
        assert_eq!(unescape_mount("/tmp/plain"), "/tmp/plain");
        assert_eq!(unescape_mount(r"/tmp/x\"), r"/tmp/x\");
    }
}
