//! The pure half of the Swarm backend's writes: one agent's
//! [`ContainerSpec`] and files → a Swarm service spec and its secrets.
//! No I/O; unit-tested field by field like [`crate::docker::spec`].
//!
//! What the Docker backend sets and Swarm (Engine API 1.41) cannot express
//! is listed in [`SWARM_GAPS`] and in SECURITY.md, each with the decision.

use std::collections::HashMap;

use base64::Engine as _;
use bollard::models::{
    EndpointSpec, EndpointSpecModeEnum, HealthConfig, Limit, Mount, MountTmpfsOptions, MountType,
    MountVolumeOptions, MountVolumeOptionsDriverConfig, NetworkAttachmentConfig, SecretSpec,
    ServiceSpec, ServiceSpecMode, ServiceSpecModeReplicated, ServiceSpecUpdateConfig,
    ServiceSpecUpdateConfigFailureActionEnum, ServiceSpecUpdateConfigOrderEnum, TaskSpec,
    TaskSpecContainerSpec, TaskSpecContainerSpecFile, TaskSpecContainerSpecSecrets,
    TaskSpecLogDriver, TaskSpecPlacement, TaskSpecResources, TaskSpecRestartPolicy,
    TaskSpecRestartPolicyConditionEnum,
};
use sha2::{Digest, Sha256};

use crate::config::VolumeDriver;
use crate::docker::spec::{
    AGENT_GID, AGENT_UID, LOG_DRIVER, LOG_MAX_FILE, LOG_MAX_SIZE, PIDS_LIMIT,
};
use crate::orchestrator::{
    ContainerSpec, FileEntry, Labels, AGENT_ID_LABEL, DATA_DIR, MANAGED_LABEL,
};

/// The network Traefik's `swarm` provider reaches a service's tasks on
/// (Traefik v3 spelling; the Docker provider's `traefik.docker.network` is
/// ignored by it).
pub use crate::orchestrator::TRAEFIK_SWARM_NETWORK_LABEL;
/// Label on each secret: the path (relative to the data volume) it is
/// mounted at.
pub const FILE_PATH_LABEL: &str = "io.zcaas.file";
/// Label on a service: the node its agent's data volume lives on (set at
/// its first start; its placement constraint says the same).
pub const NODE_LABEL: &str = "io.zcaas.node";
/// Label on a pin record: the data volume it is about.
pub const VOLUME_LABEL: &str = "io.zcaas.volume";
/// How long a task gets between SIGTERM and SIGKILL, ns (Docker: `docker
/// stop`'s 10 s).
pub const STOP_GRACE_NS: i64 = 10_000_000_000;
/// Swarm's restart delay after a task exits, ns. Fixed (Swarm has no
/// exponential backoff); the reconciler's own backoff covers crash loops.
pub const RESTART_DELAY_NS: i64 = 2_000_000_000;
/// `/tmp`: 16 MiB tmpfs (the daemon mounts every tmpfs `noexec,nosuid,nodev`).
pub const TMP_BYTES: i64 = 16 * 1024 * 1024;
/// `/dev/shm`: a 64 KiB tmpfs over the daemon's 64 MiB one (Swarm has no
/// `IpcMode: none`).
pub const SHM_BYTES: i64 = 64 * 1024;

/// What the Docker backend's container has that a Swarm task on Engine API
/// 1.41 cannot be given, and what is done instead (also in SECURITY.md).
pub const SWARM_GAPS: [(&str, &str); 4] = [
    (
        "IpcMode none",
        "no IPC field in a service's ContainerSpec: the task gets a private IPC namespace \
         (the daemon's default) and /dev/shm is covered by a 64 KiB tmpfs",
    ),
    (
        "no-new-privileges",
        "ContainerSpec.Privileges.NoNewPrivileges arrived after API 1.41: every node's dockerd \
         runs with --no-new-privileges (the daemon-wide default), which tasks inherit",
    ),
    (
        "port published on 127.0.0.1",
        "Swarm publishes on every address or not at all: nothing is published, agents are \
         reached at their task address on the overlay (agent_address = network)",
    ),
    (
        "State.OOMKilled",
        "a task reports only its exit code: 137 is reported as SIGKILL or out of memory",
    ),
];

/// One file delivered as a Swarm secret: the secret's name and spec, and
/// how the task mounts it.
#[derive(Debug, Clone, PartialEq)]
pub struct FileSecret {
    /// `zcaas-<24 hex>`: a digest of the agent id, the path and the
    /// contents, so a changed file is a new secret (secrets are immutable).
    pub name: String,
    pub spec: SecretSpec,
    /// Absolute path inside the task, under [`DATA_DIR`].
    pub target: String,
    pub mode: u32,
}

/// The secret that delivers `file` for agent `agent_id`, labelled with
/// `labels` (ownership) plus the agent id and the file's path.
pub fn file_secret(agent_id: &str, file: &FileEntry, labels: &Labels) -> FileSecret {
    let mut digest = Sha256::new();
    digest.update(agent_id.as_bytes());
    digest.update([0]);
    digest.update(file.path.as_bytes());
    digest.update([0]);
    digest.update(file.mode.to_be_bytes());
    digest.update(&file.contents);
    let hex = format!("{:x}", digest.finalize());
    let name = format!("zcaas-{}", &hex[..24]);
    let mut all: HashMap<String, String> = labels.clone().into_iter().collect();
    all.insert(MANAGED_LABEL.to_owned(), "true".to_owned());
    all.insert(AGENT_ID_LABEL.to_owned(), agent_id.to_owned());
    all.insert(FILE_PATH_LABEL.to_owned(), file.path.clone());
    FileSecret {
        spec: SecretSpec {
            name: Some(name.clone()),
            labels: Some(all),
            data: Some(base64::engine::general_purpose::STANDARD.encode(&file.contents)),
            ..Default::default()
        },
        name,
        target: format!("{DATA_DIR}/{}", file.path),
        mode: file.mode,
    }
}

/// A secret as the service references it: `secret_id` is the engine's id
/// of the secret named `secret.name`.
pub fn secret_reference(secret: &FileSecret, secret_id: &str) -> TaskSpecContainerSpecSecrets {
    TaskSpecContainerSpecSecrets {
        file: Some(TaskSpecContainerSpecFile {
            name: Some(secret.target.clone()),
            uid: Some(AGENT_UID.to_string()),
            gid: Some(AGENT_GID.to_string()),
            mode: Some(secret.mode),
        }),
        secret_id: Some(secret_id.to_owned()),
        secret_name: Some(secret.name.clone()),
    }
}

/// The service spec of `spec`: replicas `replicas` (0 created or stopped,
/// 1 running), its files mounted from `secrets`, placed on `pinned_node`
/// when its data is pinned there. Pure.
pub fn service_spec(
    spec: &ContainerSpec,
    secrets: Vec<TaskSpecContainerSpecSecrets>,
    pinned_node: Option<&str>,
    replicas: i64,
    volume_driver: Option<&VolumeDriver>,
) -> ServiceSpec {
    let env = crate::docker::spec::workload_env(spec);

    let mut volume_labels: HashMap<String, String> = spec.labels.clone().into_iter().collect();
    volume_labels.insert(MANAGED_LABEL.to_owned(), "true".to_owned());
    volume_labels.insert(AGENT_ID_LABEL.to_owned(), spec.agent_id.clone());
    let container_labels = volume_labels.clone();
    let mounts = vec![
        Mount {
            target: Some(DATA_DIR.to_owned()),
            source: Some(spec.volume.clone()),
            typ: Some(MountType::VOLUME),
            read_only: Some(false),
            volume_options: Some(MountVolumeOptions {
                labels: Some(volume_labels),
                // A shared driver: every node's volume of this name is the
                // same data, so the task may start on any node.
                driver_config: volume_driver.map(|d| MountVolumeOptionsDriverConfig {
                    name: Some(d.name.clone()),
                    options: Some(d.options_for(&spec.volume).into_iter().collect()),
                }),
                ..Default::default()
            }),
            ..Default::default()
        },
        tmpfs("/tmp", TMP_BYTES),
        tmpfs("/dev/shm", SHM_BYTES),
    ];
    let container = TaskSpecContainerSpec {
        image: Some(spec.image.clone()),
        // `Args` with no `Command`: the image's entrypoint is kept and the
        // profile's command becomes its arguments (Docker's `Cmd`).
        args: Some(spec.command.clone()),
        env: Some(env),
        user: Some(format!("{AGENT_UID}:{AGENT_GID}")),
        labels: Some(container_labels),
        read_only: Some(true),
        init: Some(true),
        tty: Some(false),
        open_stdin: Some(false),
        mounts: Some(mounts),
        stop_grace_period: Some(STOP_GRACE_NS),
        // The control plane polls /health itself; the image's HEALTHCHECK
        // (30 s interval) would also hold every new task in `starting`.
        health_check: Some(HealthConfig {
            test: Some(vec!["NONE".to_owned()]),
            ..Default::default()
        }),
        secrets: Some(secrets),
        capability_drop: Some(vec!["ALL".to_owned()]),
        ..Default::default()
    };
    let task = TaskSpec {
        container_spec: Some(container),
        resources: Some(TaskSpecResources {
            limits: Some(Limit {
                nano_cpus: Some(spec.nano_cpus),
                memory_bytes: Some(spec.memory_bytes),
                pids: Some(PIDS_LIMIT),
            }),
            ..Default::default()
        }),
        restart_policy: Some(TaskSpecRestartPolicy {
            condition: Some(TaskSpecRestartPolicyConditionEnum::ANY),
            delay: Some(RESTART_DELAY_NS),
            max_attempts: Some(0),
            window: None,
        }),
        placement: Some(TaskSpecPlacement {
            constraints: pinned_node.map(|n| vec![format!("node.id=={n}")]),
            ..Default::default()
        }),
        networks: Some(vec![NetworkAttachmentConfig {
            target: Some(spec.network.clone()),
            ..Default::default()
        }]),
        log_driver: Some(TaskSpecLogDriver {
            name: Some(LOG_DRIVER.to_owned()),
            options: Some(HashMap::from([
                ("max-size".to_owned(), LOG_MAX_SIZE.to_owned()),
                ("max-file".to_owned(), LOG_MAX_FILE.to_owned()),
            ])),
        }),
        ..Default::default()
    };
    let mut labels = service_labels(spec);
    if let Some(node) = pinned_node {
        labels.insert(NODE_LABEL.to_owned(), node.to_owned());
    }
    ServiceSpec {
        name: Some(spec.name.clone()),
        labels: Some(labels),
        task_template: Some(task),
        mode: Some(ServiceSpecMode {
            replicated: Some(ServiceSpecModeReplicated {
                replicas: Some(replicas),
            }),
            ..Default::default()
        }),
        // One task at a time, the old one stopped first: two tasks of one
        // agent never run together (one bot token, one poller).
        update_config: Some(ServiceSpecUpdateConfig {
            parallelism: Some(1),
            order: Some(ServiceSpecUpdateConfigOrderEnum::STOP_FIRST),
            failure_action: Some(ServiceSpecUpdateConfigFailureActionEnum::CONTINUE),
            ..Default::default()
        }),
        // No virtual IP (this kernel, like many, has no IPVS) and no
        // published port: Traefik and zcaas reach task addresses.
        endpoint_spec: Some(EndpointSpec {
            mode: Some(EndpointSpecModeEnum::DNSRR),
            ports: None,
        }),
        ..Default::default()
    }
}

fn tmpfs(target: &str, size: i64) -> Mount {
    Mount {
        target: Some(target.to_owned()),
        typ: Some(MountType::TMPFS),
        tmpfs_options: Some(MountTmpfsOptions {
            size_bytes: Some(size),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Ownership labels, agent id, spec hash and Traefik's swarm-provider
/// labels (the router as the Docker backend's,
/// [`crate::orchestrator::router_rule`], with
/// [`TRAEFIK_SWARM_NETWORK_LABEL`]).
pub fn service_labels(spec: &ContainerSpec) -> HashMap<String, String> {
    crate::docker::spec::workload_labels(spec, TRAEFIK_SWARM_NETWORK_LABEL)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> ContainerSpec {
        ContainerSpec {
            agent_id: "a1".into(),
            name: "zeroclaw-ada".into(),
            slug: "ada".into(),
            image: "zcaas/agent-runtime:latest".into(),
            network: "zeroone-net".into(),
            host_port: None,
            memory_bytes: 256 * 1024 * 1024,
            nano_cpus: 500_000_000,
            command: vec!["daemon".into()],
            env: vec!["HOME=/elsewhere".into(), "ZEROCLAW_X=1".into()],
            volume: "zeroclaw-ada-data".into(),
            host: "ada.example.com".into(),
            traefik_entrypoint: "websecure".into(),
            traefik_cert_resolver: String::new(),
            public_paths: vec!["/webhook".into(), "/health".into()],
            spec_hash: "h1".into(),
            labels: Labels::from([("io.zcaas.installation".into(), "i1".into())]),
        }
    }

    #[test]
    fn service_carries_limits_hardening_and_labels() {
        let s = service_spec(&spec(), Vec::new(), None, 0, None);
        assert_eq!(s.name.as_deref(), Some("zeroclaw-ada"));
        let labels = s.labels.unwrap();
        assert_eq!(labels["io.zcaas.managed"], "true");
        assert_eq!(labels["io.zcaas.agent-id"], "a1");
        assert_eq!(labels["io.zcaas.installation"], "i1");
        assert_eq!(labels["traefik.swarm.network"], "zeroone-net");
        assert_eq!(
            labels["traefik.http.services.ada.loadbalancer.server.port"],
            "42617"
        );
        assert!(!labels.contains_key(NODE_LABEL));
        assert_eq!(s.mode.unwrap().replicated.unwrap().replicas, Some(0));
        assert_eq!(
            s.endpoint_spec.unwrap().mode,
            Some(EndpointSpecModeEnum::DNSRR)
        );
        let task = s.task_template.unwrap();
        let limits = task.resources.unwrap().limits.unwrap();
        assert_eq!(limits.nano_cpus, Some(500_000_000));
        assert_eq!(limits.memory_bytes, Some(256 * 1024 * 1024));
        assert_eq!(limits.pids, Some(PIDS_LIMIT));
        assert_eq!(task.placement.unwrap().constraints, None);
        let c = task.container_spec.unwrap();
        assert_eq!(c.args, Some(vec!["daemon".to_owned()]));
        assert_eq!(c.command, None, "the image's entrypoint is kept");
        assert_eq!(c.user.as_deref(), Some("65534:65534"));
        assert_eq!(c.read_only, Some(true));
        assert_eq!(c.init, Some(true));
        assert_eq!(c.capability_drop, Some(vec!["ALL".to_owned()]));
        assert_eq!(c.health_check.unwrap().test, Some(vec!["NONE".to_owned()]));
        let env = c.env.unwrap();
        assert!(env.contains(&"HOME=/zeroclaw-data".to_owned()));
        assert!(!env.contains(&"HOME=/elsewhere".to_owned()));
        assert!(env.contains(&"ZEROCLAW_X=1".to_owned()));
        let mounts = c.mounts.unwrap();
        assert_eq!(mounts[0].source.as_deref(), Some("zeroclaw-ada-data"));
        assert_eq!(mounts[0].target.as_deref(), Some(DATA_DIR));
        let shm = mounts
            .iter()
            .find(|m| m.target.as_deref() == Some("/dev/shm"));
        assert_eq!(
            shm.and_then(|m| m.tmpfs_options.as_ref())
                .and_then(|t| t.size_bytes),
            Some(SHM_BYTES)
        );
        assert_eq!(task.log_driver.unwrap().name.as_deref(), Some("json-file"));
    }

    #[test]
    fn pinned_service_is_constrained_to_its_node() {
        let s = service_spec(&spec(), Vec::new(), Some("node-x"), 1, None);
        assert_eq!(s.labels.unwrap()[NODE_LABEL], "node-x");
        assert_eq!(
            s.task_template.unwrap().placement.unwrap().constraints,
            Some(vec!["node.id==node-x".to_owned()])
        );
    }

    #[test]
    fn a_shared_volume_driver_gets_its_options_per_volume() {
        let driver = VolumeDriver {
            name: "local".into(),
            options: [("device".to_owned(), "/srv/shared/{volume}".to_owned())].into(),
        };
        let s = service_spec(&spec(), Vec::new(), None, 1, Some(&driver));
        let mounts = s
            .task_template
            .unwrap()
            .container_spec
            .unwrap()
            .mounts
            .unwrap();
        let config = mounts[0]
            .volume_options
            .clone()
            .unwrap()
            .driver_config
            .unwrap();
        assert_eq!(config.name.as_deref(), Some("local"));
        assert_eq!(
            config.options.unwrap()["device"],
            "/srv/shared/zeroclaw-ada-data"
        );
    }

    #[test]
    fn a_changed_file_is_a_new_secret_mounted_at_its_path() {
        let labels = Labels::new();
        let file = FileEntry {
            path: ".zeroclaw/config.toml".into(),
            contents: b"a = 1\n".to_vec(),
            mode: 0o600,
        };
        let one = file_secret("a1", &file, &labels);
        let same = file_secret("a1", &file, &labels);
        let changed = file_secret(
            "a1",
            &FileEntry {
                contents: b"a = 2\n".to_vec(),
                ..file.clone()
            },
            &labels,
        );
        let other_agent = file_secret("a2", &file, &labels);
        assert_eq!(one.name, same.name);
        assert_ne!(one.name, changed.name);
        assert_ne!(one.name, other_agent.name);
        assert!(one.name.len() <= 64 && one.name.starts_with("zcaas-"));
        assert_eq!(one.target, "/zeroclaw-data/.zeroclaw/config.toml");
        assert_eq!(one.spec.data.as_deref(), Some("YSA9IDEK"));
        let r = secret_reference(&one, "sid");
        let f = r.file.unwrap();
        assert_eq!(
            f.name.as_deref(),
            Some("/zeroclaw-data/.zeroclaw/config.toml")
        );
        assert_eq!((f.uid.as_deref(), f.mode), (Some("65534"), Some(0o600)));
    }
}
