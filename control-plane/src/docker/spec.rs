//! The container spec of one agent, and the pure function that turns it into
//! bollard's create body (seed 003's `createContainer`, hardened).

use super::{router_rule, AGENT_ID_LABEL, AGENT_PORT, DATA_DIR, MANAGED_LABEL, SPEC_HASH_LABEL};
use crate::orchestrator::TRAEFIK_NETWORK_LABEL;
use bollard::models::{
    ContainerCreateBody, HealthConfig, HostConfig, HostConfigLogConfig, Mount, MountType,
    PortBinding, RestartPolicy, RestartPolicyNameEnum,
};
use std::collections::HashMap;

pub use crate::orchestrator::ContainerSpec;

/// The user every agent process runs as (`nobody:nogroup`); injected files
/// are owned by it.
pub const AGENT_UID: u64 = 65534;
/// See [`AGENT_UID`].
pub const AGENT_GID: u64 = 65534;
/// Host address agent ports are published on: never a public interface.
pub const PUBLISH_IP: &str = "127.0.0.1";
/// Max processes/threads in one agent container.
pub const PIDS_LIMIT: i64 = 256;
/// The writable, non-executable scratch space of a read-only rootfs.
pub const TMPFS_OPTIONS: &str = "rw,noexec,nosuid,size=16m";
/// Log driver of every agent container: `json-file`, which `docker logs` and
/// the control plane's log reader (pairing codes, the logs API) read, set
/// explicitly so a daemon default of another driver cannot take them away.
pub const LOG_DRIVER: &str = "json-file";
/// Size at which an agent's log file is rotated (`json-file`'s `max-size`).
/// Without it a chatty or hostile agent fills the host's disk: json-file
/// keeps everything by default.
pub const LOG_MAX_SIZE: &str = "10m";
/// Log files kept per agent, the current one included (`max-file`): at most
/// 3 × 10 MB of logs per agent on the host.
pub const LOG_MAX_FILE: &str = "3";

/// `42617/tcp`, the key of the agent port in Docker's port maps.
pub fn agent_port_key() -> String {
    format!("{AGENT_PORT}/tcp")
}

/// The environment every agent gets, after [`ContainerSpec::env`] (the
/// runtime profile's gateway overrides): where its home and workspace are.
/// These keys cannot be overridden by the spec (entries of `spec.env` with
/// the same key are dropped: duplicates in `Env` are ambiguous to the
/// process).
pub fn fixed_env() -> Vec<String> {
    vec![
        format!("HOME={DATA_DIR}"),
        format!("ZEROCLAW_WORKSPACE={DATA_DIR}/workspace"),
    ]
}

/// `spec.env` without the keys [`fixed_env`] sets, then [`fixed_env`]:
/// the workload's environment on either engine.
pub(crate) fn workload_env(spec: &ContainerSpec) -> Vec<String> {
    let fixed = fixed_env();
    let fixed_keys: Vec<&str> = fixed
        .iter()
        .filter_map(|kv| kv.split_once('=').map(|(k, _)| k))
        .collect();
    let mut env: Vec<String> = spec
        .env
        .iter()
        .filter(|kv| {
            let key = kv.split_once('=').map_or(kv.as_str(), |(k, _)| k);
            !fixed_keys.contains(&key)
        })
        .cloned()
        .collect();
    env.extend(fixed);
    env
}

/// The create body for `spec`. The name goes separately in
/// `CreateContainerOptions`. Pure: no I/O, unit-tested field by field.
pub fn container_config(spec: &ContainerSpec) -> ContainerCreateBody {
    let env = workload_env(spec);

    let port_key = agent_port_key();
    // No host port (`network` address mode): nothing is published, so the
    // engine runs no `docker-proxy` for the agent. The body is then exactly
    // what it was with a port, minus `PortBindings`.
    let port_bindings = spec.host_port.map(|port| {
        HashMap::from([(
            port_key.clone(),
            Some(vec![PortBinding {
                host_ip: Some(PUBLISH_IP.to_owned()),
                host_port: Some(port.to_string()),
            }]),
        )])
    });

    let host_config = HostConfig {
        // Docker's init (tini) as PID 1: it forwards SIGTERM to the agent and
        // reaps zombies. Upstream ZeroClaw's `gateway` does not handle SIGTERM
        // as PID 1, so without it every stop waited the full timeout and
        // ended in SIGKILL (exit 137, ~10 s; issue 11).
        init: Some(true),
        port_bindings,
        memory: Some(spec.memory_bytes),
        nano_cpus: Some(spec.nano_cpus),
        restart_policy: Some(RestartPolicy {
            name: Some(RestartPolicyNameEnum::UNLESS_STOPPED),
            maximum_retry_count: None,
        }),
        network_mode: Some(spec.network.clone()),
        mounts: Some(vec![Mount {
            target: Some(DATA_DIR.to_owned()),
            source: Some(spec.volume.clone()),
            typ: Some(MountType::VOLUME),
            read_only: Some(false),
            ..Default::default()
        }]),
        cap_drop: Some(vec!["ALL".to_owned()]),
        security_opt: Some(vec!["no-new-privileges".to_owned()]),
        readonly_rootfs: Some(true),
        tmpfs: Some(HashMap::from([(
            "/tmp".to_owned(),
            TMPFS_OPTIONS.to_owned(),
        )])),
        pids_limit: Some(PIDS_LIMIT),
        // A private IPC namespace without /dev/shm: otherwise a 64 MiB
        // world-writable tmpfs, and only the data volume and /tmp are to be
        // writable.
        ipc_mode: Some("none".to_owned()),
        log_config: Some(HostConfigLogConfig {
            typ: Some(LOG_DRIVER.to_owned()),
            config: Some(HashMap::from([
                ("max-size".to_owned(), LOG_MAX_SIZE.to_owned()),
                ("max-file".to_owned(), LOG_MAX_FILE.to_owned()),
            ])),
        }),
        ..Default::default()
    };

    ContainerCreateBody {
        image: Some(spec.image.clone()),
        cmd: Some(spec.command.clone()),
        env: Some(env),
        // Sent as `{"42617/tcp": {}}`, the engine's map shape.
        exposed_ports: Some(vec![port_key]),
        tty: Some(false),
        attach_stdin: Some(false),
        open_stdin: Some(false),
        user: Some(format!("{AGENT_UID}:{AGENT_GID}")),
        labels: Some(labels(spec)),
        // The image's HEALTHCHECK is for running it on its own; here the
        // control plane polls /health itself, and Docker's check costs a
        // `runc exec` per agent every 30 s (~0.4 core per 200 agents,
        // BENCHMARKS.md).
        healthcheck: Some(HealthConfig {
            test: Some(vec!["NONE".to_owned()]),
            ..Default::default()
        }),
        host_config: Some(host_config),
        ..Default::default()
    }
}

/// Ownership labels, agent id, spec hash and Traefik's router labels. The
/// router is named after the slug, which validation keeps a DNS label, so no
/// user text can change a key or a rule. The router always serves TLS
/// (`tls=true`: with no certificate resolver configured, Traefik's default
/// certificate or the entrypoint's), and its rule admits only the public
/// paths ([`router_rule`]).
fn labels(spec: &ContainerSpec) -> HashMap<String, String> {
    workload_labels(spec, TRAEFIK_NETWORK_LABEL)
}

/// Ownership labels, agent id, spec hash and Traefik's router labels of
/// `spec`'s workload, the network Traefik reaches it on under
/// `network_label` (the Docker provider's `traefik.docker.network`, the
/// swarm provider's `traefik.swarm.network`). The server port is always
/// given: the swarm provider sees no container ports.
pub(crate) fn workload_labels(
    spec: &ContainerSpec,
    network_label: &str,
) -> HashMap<String, String> {
    let mut labels: HashMap<String, String> = spec
        .labels
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    labels.insert(MANAGED_LABEL.to_owned(), "true".to_owned());
    labels.insert(AGENT_ID_LABEL.to_owned(), spec.agent_id.clone());
    labels.insert(SPEC_HASH_LABEL.to_owned(), spec.spec_hash.clone());
    let router = format!("traefik.http.routers.{}", spec.slug);
    labels.insert("traefik.enable".to_owned(), "true".to_owned());
    labels.insert(
        format!("{router}.rule"),
        router_rule(&spec.host, &spec.public_paths),
    );
    labels.insert(
        format!("{router}.entrypoints"),
        spec.traefik_entrypoint.clone(),
    );
    labels.insert(format!("{router}.tls"), "true".to_owned());
    if !spec.traefik_cert_resolver.is_empty() {
        labels.insert(
            format!("{router}.tls.certresolver"),
            spec.traefik_cert_resolver.clone(),
        );
    }
    labels.insert(
        format!(
            "traefik.http.services.{}.loadbalancer.server.port",
            spec.slug
        ),
        AGENT_PORT.to_string(),
    );
    labels.insert(network_label.to_owned(), spec.network.clone());
    labels
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn spec() -> ContainerSpec {
        ContainerSpec {
            agent_id: "0b9d1c5e-agent".into(),
            name: "zeroclaw-ada".into(),
            slug: "ada".into(),
            image: "zcaas/agent-runtime:latest".into(),
            network: "zeroone-net".into(),
            host_port: Some(40123),
            memory_bytes: 256 * 1024 * 1024,
            nano_cpus: 500_000_000,
            command: vec!["daemon".into()],
            env: vec![
                "RUST_LOG=info".into(),
                "HOME=/root".into(),
                "NOVALUE".into(),
                "ZEROCLAW_GATEWAY_PORT=42617".into(),
            ],
            volume: "zeroclaw-ada-data".into(),
            host: "ada.example.com".into(),
            traefik_entrypoint: "websecure".into(),
            traefik_cert_resolver: "le".into(),
            public_paths: vec!["/webhook".into(), "/health".into(), "/_app/*".into()],
            spec_hash: "abc123".into(),
            labels: BTreeMap::from([
                ("io.zcaas.managed".into(), "true".into()),
                ("io.zcaas.test".into(), "t1".into()),
            ]),
        }
    }

    fn host(config: &ContainerCreateBody) -> &HostConfig {
        config.host_config.as_ref().expect("host config")
    }

    #[test]
    fn the_image_healthcheck_is_disabled() {
        let c = container_config(&spec());
        let hc = c.healthcheck.expect("healthcheck set");
        assert_eq!(hc.test, Some(vec!["NONE".to_owned()]));
    }

    #[test]
    fn image_cmd_tty_user() {
        let c = container_config(&spec());
        assert_eq!(c.image.as_deref(), Some("zcaas/agent-runtime:latest"));
        assert_eq!(c.cmd, Some(vec!["daemon".to_owned()]), "the spec's command");
        assert_eq!(c.tty, Some(false));
        assert_eq!(c.open_stdin, Some(false));
        assert_eq!(c.user.as_deref(), Some("65534:65534"));
        assert_eq!(c.entrypoint, None, "the image's entrypoint is kept");
    }

    #[test]
    fn env_is_spec_env_then_fixed_keys_which_win() {
        let c = container_config(&spec());
        assert_eq!(
            c.env.expect("env"),
            vec![
                "RUST_LOG=info",
                "NOVALUE",
                "ZEROCLAW_GATEWAY_PORT=42617",
                "HOME=/zeroclaw-data",
                "ZEROCLAW_WORKSPACE=/zeroclaw-data/workspace",
            ]
        );
    }

    #[test]
    fn port_is_exposed_and_published_on_loopback_only() {
        let c = container_config(&spec());
        let exposed = c.exposed_ports.expect("exposed");
        assert_eq!(exposed, vec!["42617/tcp"]);
        let bindings = host(&container_config(&spec()))
            .port_bindings
            .clone()
            .expect("bindings");
        assert_eq!(bindings.len(), 1);
        let b = bindings["42617/tcp"].clone().expect("binding list");
        assert_eq!(
            b,
            vec![PortBinding {
                host_ip: Some("127.0.0.1".into()),
                host_port: Some("40123".into())
            }]
        );
    }

    #[test]
    fn no_host_port_publishes_nothing_and_keeps_the_rest() {
        let mut s = spec();
        s.host_port = None;
        let c = container_config(&s);
        assert_eq!(host(&c).port_bindings, None, "no port published");
        let json = serde_json::to_value(&c).expect("json");
        assert!(json["HostConfig"].get("PortBindings").is_none(), "{json}");
        assert_eq!(json["ExposedPorts"], serde_json::json!({"42617/tcp": {}}));
        // Everything else is the body with a port, PortBindings aside.
        let mut with_port = serde_json::to_value(container_config(&spec())).expect("json");
        with_port["HostConfig"]
            .as_object_mut()
            .expect("host config")
            .remove("PortBindings");
        assert_eq!(json, with_port);
    }

    #[test]
    fn the_agents_network_is_its_own() {
        let mut s = spec();
        s.network = "zeroone-net-2".into();
        let c = container_config(&s);
        assert_eq!(host(&c).network_mode.as_deref(), Some("zeroone-net-2"));
        let labels = c.labels.expect("labels");
        assert_eq!(labels["traefik.docker.network"], "zeroone-net-2");
    }

    #[test]
    fn limits_restart_policy_and_network() {
        let c = container_config(&spec());
        let h = host(&c);
        assert_eq!(h.memory, Some(256 * 1024 * 1024));
        assert_eq!(h.nano_cpus, Some(500_000_000));
        assert_eq!(
            h.restart_policy.as_ref().and_then(|r| r.name),
            Some(RestartPolicyNameEnum::UNLESS_STOPPED)
        );
        assert_eq!(h.network_mode.as_deref(), Some("zeroone-net"));
    }

    #[test]
    fn data_volume_is_mounted_writable() {
        let c = container_config(&spec());
        let mounts = host(&c).mounts.clone().expect("mounts");
        assert_eq!(mounts.len(), 1);
        assert_eq!(mounts[0].typ, Some(MountType::VOLUME));
        assert_eq!(mounts[0].source.as_deref(), Some("zeroclaw-ada-data"));
        assert_eq!(mounts[0].target.as_deref(), Some("/zeroclaw-data"));
        assert_eq!(mounts[0].read_only, Some(false));
    }

    #[test]
    fn hardening() {
        let c = container_config(&spec());
        let h = host(&c);
        assert_eq!(h.cap_drop, Some(vec!["ALL".to_owned()]));
        assert_eq!(h.cap_add, None);
        assert_eq!(h.security_opt, Some(vec!["no-new-privileges".to_owned()]));
        assert_eq!(h.readonly_rootfs, Some(true));
        assert_eq!(
            h.tmpfs,
            Some(HashMap::from([(
                "/tmp".to_owned(),
                "rw,noexec,nosuid,size=16m".to_owned()
            )]))
        );
        assert_eq!(h.pids_limit, Some(256));
        assert_eq!(h.ipc_mode.as_deref(), Some("none"), "no /dev/shm");
        assert_eq!(h.privileged, None);
        assert_eq!(h.binds, None, "no host paths");
    }

    #[test]
    fn an_init_process_runs_as_pid_1() {
        let c = container_config(&spec());
        assert_eq!(host(&c).init, Some(true));
        let json = serde_json::to_value(&c).expect("json");
        assert_eq!(json["HostConfig"]["Init"], true);
    }

    #[test]
    fn logs_are_json_file_and_rotated() {
        let c = container_config(&spec());
        assert_eq!(
            host(&c).log_config,
            Some(HostConfigLogConfig {
                typ: Some("json-file".to_owned()),
                config: Some(HashMap::from([
                    ("max-size".to_owned(), "10m".to_owned()),
                    ("max-file".to_owned(), "3".to_owned()),
                ])),
            })
        );
    }

    #[test]
    fn ownership_and_traefik_labels() {
        let c = container_config(&spec());
        let labels = c.labels.expect("labels");
        let expected: HashMap<String, String> = [
            ("io.zcaas.managed", "true"),
            ("io.zcaas.test", "t1"),
            ("io.zcaas.agent-id", "0b9d1c5e-agent"),
            ("io.zcaas.spec-hash", "abc123"),
            ("traefik.enable", "true"),
            (
                "traefik.http.routers.ada.rule",
                "Host(`ada.example.com`) && (Path(`/webhook`) || Path(`/health`) || PathPrefix(`/_app/`))",
            ),
            ("traefik.http.routers.ada.entrypoints", "websecure"),
            ("traefik.http.routers.ada.tls", "true"),
            ("traefik.http.routers.ada.tls.certresolver", "le"),
            (
                "traefik.http.services.ada.loadbalancer.server.port",
                "42617",
            ),
            ("traefik.docker.network", "zeroone-net"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        assert_eq!(labels, expected);
    }

    #[test]
    fn no_cert_resolver_label_when_none_is_configured() {
        let mut s = spec();
        s.traefik_cert_resolver.clear();
        let labels = container_config(&s).labels.expect("labels");
        assert!(!labels.contains_key("traefik.http.routers.ada.tls.certresolver"));
        assert_eq!(
            labels
                .get("traefik.http.routers.ada.tls")
                .map(String::as_str),
            Some("true")
        );
    }

    #[test]
    fn managed_label_is_set_even_if_the_caller_forgot_it() {
        let mut s = spec();
        s.labels.clear();
        let labels = container_config(&s).labels.expect("labels");
        assert_eq!(labels.get(MANAGED_LABEL).map(String::as_str), Some("true"));
    }

    #[test]
    fn serialized_body_uses_docker_field_names() {
        let json = serde_json::to_value(container_config(&spec())).expect("json");
        assert_eq!(json["Cmd"], serde_json::json!(["daemon"]));
        assert_eq!(json["HostConfig"]["ReadonlyRootfs"], true);
        assert_eq!(
            json["HostConfig"]["RestartPolicy"]["Name"],
            "unless-stopped"
        );
        assert_eq!(json["HostConfig"]["Mounts"][0]["Type"], "volume");
        assert_eq!(json["ExposedPorts"], serde_json::json!({"42617/tcp": {}}));
        assert_eq!(
            json["HostConfig"]["LogConfig"],
            serde_json::json!({"Type": "json-file", "Config": {"max-size": "10m", "max-file": "3"}})
        );
        assert!(
            json["HostConfig"].get("Annotations").is_none(),
            "no fields newer than API 1.41"
        );
    }
}
