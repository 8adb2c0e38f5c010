//! The Docker layer against the real engine: network, image build, create
//! (and adopt, and refuse), putArchive into the data volume of a created
//! container with a read-only rootfs, start, inspect, logs, stats, events,
//! stop, restart, remove. Uses the provider-stub image (build the binary
//! first: `cargo build -p zcaas-tests --bin provider-stub`).
//!
//! Every object carries `io.zcaas.test=<prefix>` and is removed by label when
//! the test's scope drops, even on panic.

use bollard::query_parameters::{DownloadFromContainerOptions, UploadToContainerOptions};
use futures::StreamExt;
use std::io::Read;
use std::process::Command;
use std::time::Duration;
use zcaas::docker::{spec, DockerError, FileEntry, DATA_DIR};
use zcaas_test_support::{ensure_stub_image, free_port, TestScope, STUB_IMAGE};

/// One entry of a downloaded archive.
#[derive(Debug)]
struct Entry {
    path: String,
    dir: bool,
    mode: u32,
    uid: u64,
    gid: u64,
    contents: Vec<u8>,
}

/// `GET /containers/{id}/archive?path=…`, read in memory (never unpacked).
async fn download(scope: &TestScope, id: &str, path: &str) -> Vec<Entry> {
    let options = DownloadFromContainerOptions {
        path: path.to_owned(),
    };
    let mut stream = scope
        .docker
        .client()
        .download_from_container(id, Some(options));
    let mut bytes = Vec::new();
    while let Some(chunk) = stream.next().await {
        bytes.extend_from_slice(&chunk.expect("archive chunk"));
    }
    let mut archive = tar::Archive::new(bytes.as_slice());
    let mut out = Vec::new();
    for entry in archive.entries().expect("entries") {
        let mut entry = entry.expect("entry");
        let header = entry.header().clone();
        let mut contents = Vec::new();
        entry.read_to_end(&mut contents).expect("read entry");
        out.push(Entry {
            path: entry
                .path()
                .expect("path")
                .to_string_lossy()
                .trim_end_matches('/')
                .to_owned(),
            dir: header.entry_type().is_dir(),
            mode: header.mode().expect("mode") & 0o7777,
            uid: header.uid().expect("uid"),
            gid: header.gid().expect("gid"),
            contents,
        });
    }
    out
}

fn find<'a>(entries: &'a [Entry], path: &str) -> &'a Entry {
    entries.iter().find(|e| e.path == path).unwrap_or_else(|| {
        let paths: Vec<&str> = entries.iter().map(|e| e.path.as_str()).collect();
        panic!("{path} not in archive: {paths:?}")
    })
}

/// Removes a container we made *without* our label, by name, on drop.
struct Foreign(String);
impl Drop for Foreign {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["rm", "-f", &self.0]).output();
    }
}

async fn get(url: &str) -> Option<(u16, String)> {
    let response = reqwest::get(url).await.ok()?;
    let status = response.status().as_u16();
    Some((status, response.text().await.ok()?))
}

#[tokio::test]
async fn container_lifecycle_with_injected_files() {
    let scope = TestScope::new().await;
    let docker = &scope.docker;
    docker.ping().await.expect("ping");
    ensure_stub_image(docker).await;
    assert!(docker.image_exists(STUB_IMAGE).await.expect("image"));
    assert!(!docker
        .image_exists("zcaas/no-such-image:never")
        .await
        .expect("image"));

    // Network: idempotent, and concurrent callers make exactly one.
    let network = format!("{}-net", scope.prefix);
    let ensures = (0..4).map(|_| docker.ensure_network(&network));
    for result in futures::future::join_all(ensures).await {
        result.expect("ensure_network");
    }
    docker
        .ensure_network(&network)
        .await
        .expect("ensure_network again");
    let listed = Command::new("docker")
        .args([
            "network",
            "ls",
            "-q",
            "--filter",
            &format!("name=^{network}$"),
        ])
        .output()
        .expect("docker network ls");
    assert_eq!(String::from_utf8_lossy(&listed.stdout).lines().count(), 1);

    // Create: not started, port and labels as specified.
    let port = free_port().expect("port");
    let mut spec = scope.spec("life", STUB_IMAGE, &network, port);
    spec.env = vec!["PORT=42617".into()]; // the stub listens where an agent would
    let id = docker.create_container(&spec).await.expect("create");
    let created = docker.inspect(&id).await.expect("inspect").expect("exists");
    assert_eq!(created.name, spec.name);
    assert_eq!(created.state, "created");
    assert!(!created.running);
    assert_eq!(created.started_at, None);
    assert_eq!(created.host_port, Some(port));
    assert_eq!(created.agent_id.as_deref(), Some(spec.agent_id.as_str()));
    assert_eq!(created.spec_hash.as_deref(), Some("test"));
    assert!(docker.is_owned(&created.labels));

    // The engine kept the hardening.
    let raw = docker
        .client()
        .inspect_container(&id, None)
        .await
        .expect("raw inspect");
    let host = raw.host_config.expect("host config");
    assert_eq!(host.readonly_rootfs, Some(true));
    assert_eq!(host.cap_drop, Some(vec!["ALL".to_owned()]));
    assert_eq!(
        host.security_opt,
        Some(vec!["no-new-privileges".to_owned()])
    );
    assert_eq!(host.pids_limit, Some(256));
    assert_eq!(host.memory, Some(64 * 1024 * 1024));
    assert_eq!(host.nano_cpus, Some(500_000_000));
    // Logs rotate: json-file with the spec's size and count limits.
    let log = host.log_config.clone().expect("log config");
    assert_eq!(log.typ.as_deref(), Some(spec::LOG_DRIVER));
    let log_opts = log.config.unwrap_or_default();
    assert_eq!(
        log_opts.get("max-size").map(String::as_str),
        Some(spec::LOG_MAX_SIZE)
    );
    assert_eq!(
        log_opts.get("max-file").map(String::as_str),
        Some(spec::LOG_MAX_FILE)
    );
    let binding = host.port_bindings.expect("bindings")["42617/tcp"]
        .clone()
        .expect("binding");
    assert_eq!(binding[0].host_ip.as_deref(), Some("127.0.0.1"));
    assert_eq!(
        raw.config.and_then(|c| c.user).as_deref(),
        Some("65534:65534")
    );

    // Create again: adopted. Same name, another agent: refused.
    assert_eq!(docker.create_container(&spec).await.expect("adopt"), id);
    let mut other = spec.clone();
    other.agent_id = "someone-else".into();
    other.volume = format!("zeroclaw-{}-other-data", scope.prefix);
    assert!(matches!(
        docker.create_container(&other).await,
        Err(DockerError::NameConflict(_))
    ));
    // The volume of another agent is refused too.
    let mut thief = scope.spec("thief", STUB_IMAGE, &network, free_port().expect("port"));
    thief.volume = spec.volume.clone();
    assert!(matches!(
        docker.create_container(&thief).await,
        Err(DockerError::NameConflict(_))
    ));

    // putArchive into the volume of the created (never started) container
    // with a read-only rootfs: owner 65534, modes kept.
    let files = vec![
        FileEntry {
            path: ".zeroclaw/config.toml".into(),
            contents: b"api_key = \"k1\"\n".to_vec(),
            mode: 0o600,
        },
        FileEntry {
            path: "workspace/IDENTITY.md".into(),
            contents: "# Ada ✓\n".into(),
            mode: 0o644,
        },
    ];
    docker
        .upload_files(&id, &files)
        .await
        .expect("upload before start");
    let entries = download(&scope, &id, DATA_DIR).await;
    let config = find(&entries, "zeroclaw-data/.zeroclaw/config.toml");
    assert_eq!((config.uid, config.gid, config.mode), (65534, 65534, 0o600));
    assert_eq!(config.contents, b"api_key = \"k1\"\n");
    let identity = find(&entries, "zeroclaw-data/workspace/IDENTITY.md");
    assert_eq!(
        (identity.uid, identity.gid, identity.mode),
        (65534, 65534, 0o644)
    );
    assert_eq!(identity.contents, "# Ada ✓\n".as_bytes());
    for dir in [
        "zeroclaw-data",
        "zeroclaw-data/.zeroclaw",
        "zeroclaw-data/workspace",
    ] {
        let d = find(&entries, dir);
        assert!(d.dir, "{dir}");
        assert_eq!((d.uid, d.gid), (65534, 65534), "{dir} owner");
    }
    // Writing outside the volume, on the read-only rootfs, is refused.
    let outside = docker
        .client()
        .upload_to_container(
            &id,
            Some(UploadToContainerOptions {
                path: "/".to_owned(),
                ..Default::default()
            }),
            bollard::body_full(
                zcaas::docker::archive::build_tar(&files, 0, 0)
                    .expect("tar")
                    .into(),
            ),
        )
        .await;
    assert!(
        outside.is_err(),
        "putArchive onto a read-only rootfs must fail"
    );

    // Start: reachable on the loopback port; the files survived the start.
    let mut events = docker.events();
    docker.start(&id).await.expect("start");
    docker.start(&id).await.expect("start is idempotent");
    let running = docker.inspect(&id).await.expect("inspect").expect("exists");
    assert!(running.running);
    let started = running.started_at.expect("started_at");
    assert!((chrono::Utc::now() - started).num_seconds().abs() < 30);
    assert_eq!(running.host_port, Some(port));
    let health = format!("http://127.0.0.1:{port}/health");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some((200, body)) = get(&health).await {
            assert_eq!(body, "ok");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "stub never answered on {health}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let after_start = download(&scope, &id, "/zeroclaw-data/.zeroclaw/config.toml").await;
    assert_eq!(after_start[0].contents, b"api_key = \"k1\"\n");
    // Re-injection into the running container overwrites.
    let mut changed = files.clone();
    changed[0].contents = b"api_key = \"k2\"\n".to_vec();
    docker
        .upload_files(&id, &changed)
        .await
        .expect("upload while running");
    let rewritten = download(&scope, &id, "/zeroclaw-data/.zeroclaw/config.toml").await;
    assert_eq!(
        (rewritten[0].contents.as_slice(), rewritten[0].mode),
        (&b"api_key = \"k2\"\n"[..], 0o600)
    );

    // The start event, with the agent id.
    let event = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let e = events
                .next()
                .await
                .expect("event stream open")
                .expect("event");
            if e.action == "start" {
                return e;
            }
        }
    })
    .await
    .expect("a start event");
    assert_eq!(event.container_id, id);
    assert_eq!(event.agent_id.as_deref(), Some(spec.agent_id.as_str()));

    // Logs: lines with stamps, both streams requested.
    let logs = docker.logs_tail(&id, 50).await.expect("logs");
    let line = logs
        .iter()
        .find(|l| l.text.contains("provider-stub listening on 0.0.0.0:42617"));
    let line = line.unwrap_or_else(|| panic!("no listening line in {logs:?}"));
    assert_eq!(line.stream, "stdout");
    assert!(line.at.expect("stamp") >= started - chrono::Duration::seconds(2));
    assert_eq!(docker.logs_tail(&id, 0).await.expect("logs").len(), 0);

    // Stats: some memory, under the limit.
    let stats = docker.stats(&id).await.expect("stats");
    assert!(stats.memory_mb > 0.0 && stats.memory_mb < 64.0, "{stats:?}");
    assert!(
        stats.cpu_percent >= 0.0 && stats.cpu_percent.is_finite(),
        "{stats:?}"
    );

    // Listed as ours.
    let managed = docker.list_managed().await.expect("list");
    assert_eq!(
        managed.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(),
        vec![id.as_str()]
    );
    let volumes = docker.list_managed_volumes().await.expect("volumes");
    let (name, labels) = volumes
        .iter()
        .find(|(n, _)| *n == spec.volume)
        .expect("our volume");
    assert_eq!(
        labels.get("io.zcaas.agent-id"),
        Some(&spec.agent_id),
        "{name}"
    );

    // Stop (twice), restart, stop event.
    docker
        .stop(&id, Duration::from_secs(5))
        .await
        .expect("stop");
    docker
        .stop(&id, Duration::from_secs(5))
        .await
        .expect("stop is idempotent");
    let stopped = docker.inspect(&id).await.expect("inspect").expect("exists");
    assert!(!stopped.running);
    assert_eq!(stopped.state, "exited");
    assert_eq!(
        stopped.exit_code,
        Some(0),
        "the stub exits cleanly on SIGTERM"
    );
    let die = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let e = events
                .next()
                .await
                .expect("event stream open")
                .expect("event");
            if e.action == "die" {
                return e;
            }
        }
    })
    .await
    .expect("a die event");
    assert_eq!(die.exit_code, Some(0));
    docker
        .restart(&id, Duration::from_secs(5))
        .await
        .expect("restart");
    let restarted = docker.inspect(&id).await.expect("inspect").expect("exists");
    assert!(restarted.running);
    assert!(restarted.started_at.expect("started") > started);

    // Remove: container, then volume; both idempotent.
    docker.remove_container(&id).await.expect("remove");
    assert_eq!(docker.inspect(&id).await.expect("inspect"), None);
    docker.remove_container(&id).await.expect("remove again");
    docker
        .remove_volume(&spec.volume)
        .await
        .expect("remove volume");
    docker
        .remove_volume(&spec.volume)
        .await
        .expect("remove volume again");
    let volumes = docker.list_managed_volumes().await.expect("volumes");
    assert!(volumes.iter().all(|(n, _)| *n != spec.volume));
}

#[tokio::test]
async fn containers_that_are_not_ours_are_never_touched() {
    let scope = TestScope::new().await;
    let docker = &scope.docker;
    ensure_stub_image(docker).await;
    let name = format!("zeroclaw-{}-foreign", scope.prefix);
    let _guard = Foreign(name.clone());
    let out = Command::new("docker")
        .args([
            "create",
            "--name",
            &name,
            "--label",
            &format!("io.zcaas.test={}", scope.prefix),
            STUB_IMAGE,
        ])
        .output()
        .expect("docker create");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let network = scope.network().await;
    let mut spec = scope.spec("foreign", STUB_IMAGE, &network, free_port().expect("port"));
    spec.name = name.clone();
    assert!(
        matches!(docker.create_container(&spec).await, Err(DockerError::NameConflict(n)) if n == name)
    );
    docker.remove_container(&name).await.expect("refusal is Ok");
    assert!(
        docker.inspect(&name).await.expect("inspect").is_some(),
        "still there"
    );
    assert!(docker.start(&name).await.is_err());
    assert!(docker.stop(&name, Duration::from_secs(1)).await.is_err());
    assert!(docker.upload_files(&name, &[]).await.is_err());
    assert!(docker
        .list_managed()
        .await
        .expect("list")
        .iter()
        .all(|c| c.name != name));

    // remove_all_with_label leaves it too, and takes what is ours.
    let ours = docker
        .create_container(&spec_with_name(&scope, &network))
        .await
        .expect("create");
    docker
        .remove_all_with_label("io.zcaas.test", &scope.prefix)
        .await
        .expect("cleanup");
    assert_eq!(docker.inspect(&ours).await.expect("inspect"), None);
    assert!(docker.inspect(&name).await.expect("inspect").is_some());
    assert!(docker
        .list_managed_volumes()
        .await
        .expect("volumes")
        .is_empty());
    let networks = Command::new("docker")
        .args([
            "network",
            "ls",
            "-q",
            "--filter",
            &format!("name=^{network}$"),
        ])
        .output()
        .expect("docker network ls");
    assert_eq!(
        String::from_utf8_lossy(&networks.stdout).trim(),
        "",
        "network removed"
    );
}

fn spec_with_name(scope: &TestScope, network: &str) -> zcaas::docker::ContainerSpec {
    scope.spec("ours", STUB_IMAGE, network, free_port().expect("port"))
}

#[tokio::test]
async fn a_failed_build_is_an_error_with_the_engine_message() {
    let scope = TestScope::new().await;
    let tag = format!("zcaas/broken-{}:test", scope.prefix);
    let err = scope
        .docker
        .build_image_from_context(&tag, "FROM scratch\nCOPY missing-file /x\n", &[])
        .await
        .expect_err("a COPY of a missing file fails");
    match err {
        DockerError::Build(message) => assert!(message.contains("missing-file"), "{message}"),
        other => panic!("{other:?}"),
    }
    assert!(!scope.docker.image_exists(&tag).await.expect("image"));
}

#[test]
fn cleanup_runs_even_when_a_test_panics() {
    let (tx, rx) = std::sync::mpsc::channel();
    let joined = std::thread::spawn(move || {
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        runtime.block_on(async {
            let scope = TestScope::new().await;
            ensure_stub_image(&scope.docker).await;
            let network = scope.network().await;
            let port = free_port().expect("port");
            let spec = scope.spec("doomed", STUB_IMAGE, &network, port);
            let id = scope.docker.create_container(&spec).await.expect("create");
            scope.docker.start(&id).await.expect("start");
            tx.send(scope.prefix.clone()).expect("send");
            panic!("deliberate panic with a running container");
        })
    })
    .join();
    assert!(joined.is_err(), "the test body panicked");
    let prefix = rx.recv().expect("prefix");
    let label = format!("label=io.zcaas.test={prefix}");
    for what in [
        &["ps", "-aq"][..],
        &["volume", "ls", "-q"],
        &["network", "ls", "-q"],
    ] {
        let out = Command::new("docker")
            .args(what)
            .args(["--filter", &label])
            .output()
            .expect("docker");
        let left = String::from_utf8_lossy(&out.stdout);
        assert_eq!(left.trim(), "", "{what:?} left behind");
    }
}
