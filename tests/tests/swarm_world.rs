//! The swarm world's self-test (issue 15): a 2-node [`SwarmWorld`] — the
//! swarm, its overlay network, the provider stand-in on the manager — is
//! reachable from the host, which is in none of the nodes' namespaces:
//! through the world's HTTP proxy the stand-in answers at its overlay
//! address, a service task on the worker answers `/health` at its overlay
//! address (node 0's container → VXLAN → node 1), also through a `CONNECT`
//! tunnel; a TCP relay from the stand-in's namespace reaches the task, and
//! one into the task's own namespace reaches its loopback; a host name is
//! refused with a 502. The shutdown leaves nothing of the run.
//!
//! Skipped, with a message, when the swarm harness cannot run here (not
//! root, or `nsenter`, `ip` or `iptables` missing).

use std::future::Future;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use serde_json::Value;
use zcaas_test_support::swarm;
use zcaas_test_support::{SwarmWorld, AGENT_IMAGE, STUB_PORT, TEST_LABEL};

/// Until the provider stand-in answers through the proxy.
const PROVIDER_TIMEOUT: Duration = Duration::from_secs(30);
/// Until the service's task runs on the worker.
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(60);
/// Until the task's gateway answers across the overlay.
const OVERLAY_TIMEOUT: Duration = Duration::from_secs(30);
/// One HTTP request through the proxy or a relay.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The agent gateway's port.
const GATEWAY_PORT: u16 = 42617;
/// The worker the task is placed on.
const WORKER: usize = 1;

/// Polls `probe` every 500 ms until it returns `Ok`; panics after `timeout`
/// with `what` and the last observation.
async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        match probe().await {
            Ok(value) => return value,
            Err(last) if Instant::now() >= deadline => {
                panic!(
                    "{what}: not within {} s; last seen: {last}",
                    timeout.as_secs()
                )
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}

/// `GET url` with `client`: its status and body, or the error as text.
async fn get(client: &reqwest::Client, url: &str) -> Result<(u16, String), String> {
    let response = client.get(url).send().await.map_err(|e| format!("{e:#}"))?;
    let status = response.status().as_u16();
    let body = response.text().await.map_err(|e| format!("{e:#}"))?;
    Ok((status, body))
}

/// `GET url` until it answers 200; returns the body.
async fn get_ok(client: &reqwest::Client, url: &str, what: &str, timeout: Duration) -> String {
    wait_for(what, timeout, || async {
        match get(client, url).await? {
            (200, body) => Ok(body),
            (status, body) => Err(format!("{status}: {body}")),
        }
    })
    .await
}

/// The service's one task, once running: its node id, container id and
/// address on the world's network.
fn the_task(world: &SwarmWorld, service: &str) -> Result<(String, String, IpAddr), String> {
    let cluster = &world.cluster;
    let ids = cluster
        .docker(
            0,
            &[
                "service",
                "ps",
                "-q",
                "--no-trunc",
                "--filter",
                "desired-state=running",
                service,
            ],
        )
        .map_err(|e| format!("{e:#}"))?;
    let id = match ids.lines().collect::<Vec<_>>()[..] {
        [id] => id.to_owned(),
        ref other => return Err(format!("tasks {other:?}")),
    };
    let json = cluster
        .docker(0, &["inspect", "--type", "task", &id])
        .map_err(|e| format!("{e:#}"))?;
    let tasks: Vec<Value> = serde_json::from_str(&json).map_err(|e| e.to_string())?;
    let task = &tasks[0];
    let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    let state = text(&task["Status"]["State"]);
    if state != "running" {
        return Err(format!("task {id} {state}: {}", task["Status"]));
    }
    let addr = task["NetworksAttachments"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|a| a["Network"]["Spec"]["Name"] == world.network.as_str())
        .and_then(|a| a["Addresses"][0].as_str())
        .and_then(|a| a.split('/').next())
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| format!("task {id} has no address on {}", world.network))?;
    Ok((
        text(&task["NodeID"]),
        text(&task["Status"]["ContainerStatus"]["ContainerID"]),
        addr,
    ))
}

/// `GET /health` to `target` through a `CONNECT` tunnel of the proxy at
/// `proxy` (blocking): the tunnel's status line and the response.
fn health_through_connect(proxy: SocketAddr, target: SocketAddr) -> (String, String) {
    let mut s = TcpStream::connect(proxy).expect("connecting to the proxy");
    s.set_read_timeout(Some(REQUEST_TIMEOUT)).unwrap();
    write!(s, "CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").unwrap();
    // The proxy's answer is exactly this line and an empty line.
    let established = b"HTTP/1.1 200 Connection established\r\n\r\n";
    let mut answer = vec![0u8; established.len()];
    s.read_exact(&mut answer)
        .expect("the proxy's answer to CONNECT");
    let answer = String::from_utf8_lossy(&answer).into_owned();
    write!(
        s,
        "GET /health HTTP/1.1\r\nHost: {target}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    s.read_to_string(&mut response)
        .expect("the gateway's response through the tunnel");
    (answer, response)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_host_reaches_overlay_addresses_on_every_node_through_the_world() {
    if let Some(why) = swarm::unsupported() {
        eprintln!("SKIPPED the_host_reaches_overlay_addresses…: {why}");
        return;
    }
    let started = Instant::now();
    let secs = |t: Instant| format!("{:.1} s", t.elapsed().as_secs_f64());
    let netns_dir_before = swarm::netns_dir_state();

    let world = SwarmWorld::start(2)
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let tag = world.tag().to_owned();
    eprintln!(
        "[{tag}] world up: network {}, provider {} (proxy {}): {}",
        world.network,
        world.provider,
        world.proxy_url(),
        secs(started)
    );
    assert_eq!(
        world.provider,
        format!("custom:http://{}:{STUB_PORT}/v1", world.provider_ip)
    );
    assert!(world.manager_host().starts_with("unix:///tmp/zcsw-"));

    let via_proxy = reqwest::Client::builder()
        .proxy(reqwest::Proxy::http(world.proxy_url()).expect("the proxy URL"))
        .timeout(REQUEST_TIMEOUT)
        .build()
        .expect("an HTTP client");

    // The provider stand-in at its overlay address, as the agents will
    // call it: a health check, then a chat completion (a body through the
    // proxy).
    let t = Instant::now();
    let provider = format!("http://{}:{STUB_PORT}", world.provider_ip);
    let health = get_ok(
        &via_proxy,
        &format!("{provider}/health"),
        "the provider stand-in answering through the proxy",
        PROVIDER_TIMEOUT,
    )
    .await;
    assert_eq!(health, "ok");
    let completion: Value = via_proxy
        .post(format!("{provider}/v1/chat/completions"))
        .bearer_auth("test-key")
        .json(&serde_json::json!({
            "model": "stub-model",
            "messages": [{"role": "user", "content": "hello through the proxy"}],
        }))
        .send()
        .await
        .expect("a chat completion through the proxy")
        .error_for_status()
        .expect("a successful chat completion")
        .json()
        .await
        .expect("a JSON completion");
    assert_eq!(
        completion["choices"][0]["message"]["content"], "echo: hello through the proxy",
        "{completion}"
    );
    // No DNS in the namespace: a name is refused, not resolved.
    let (status, body) = get(
        &via_proxy,
        &format!("http://{}:{STUB_PORT}/health", world.provider_container),
    )
    .await
    .expect("the proxy's answer to a host name");
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("not an IP literal"), "{body}");
    eprintln!("[{tag}] provider stand-in through the proxy: {}", secs(t));

    // A 1-replica service on the worker.
    let t = Instant::now();
    let service = format!("{tag}-probe");
    let worker_id = world.cluster.node_id(WORKER).to_owned();
    let label = format!("{TEST_LABEL}={}", world.prefix);
    world
        .cluster
        .docker(
            0,
            &[
                "service",
                "create",
                "--detach",
                "--no-resolve-image",
                "--name",
                &service,
                "--replicas",
                "1",
                "--constraint",
                &format!("node.id=={worker_id}"),
                "--label",
                &label,
                "--container-label",
                &label,
                "--no-healthcheck",
                "--endpoint-mode",
                "dnsrr",
                "--network",
                &world.network,
                "--stop-grace-period",
                "5s",
                AGENT_IMAGE,
                "gateway",
            ],
        )
        .unwrap_or_else(|e| panic!("{e:#}"));
    let (node, container, task_ip) = wait_for(
        "the service's task running on the worker",
        CONVERGE_TIMEOUT,
        || async { the_task(&world, &service) },
    )
    .await;
    assert_eq!(node, worker_id, "the task is not on the worker");
    eprintln!(
        "[{tag}] task {} on n{} at {task_ip}: {}",
        &container[..12.min(container.len())],
        WORKER + 1,
        secs(t)
    );

    // Across nodes from the host: proxy (root namespace) → the stand-in's
    // namespace on node 0 → VXLAN → the task on node 1.
    let t = Instant::now();
    let gateway = SocketAddr::new(task_ip, GATEWAY_PORT);
    get_ok(
        &via_proxy,
        &format!("http://{gateway}/health"),
        "the worker's task answering /health through the proxy",
        OVERLAY_TIMEOUT,
    )
    .await;
    eprintln!("[{tag}] the task's /health through the proxy: {}", secs(t));

    // The same through a CONNECT tunnel (what an https:// URL would use).
    let proxy_addr = world.proxy().addr();
    let (answer, response) =
        tokio::task::spawn_blocking(move || health_through_connect(proxy_addr, gateway))
            .await
            .expect("the CONNECT exchange");
    assert_eq!(answer, "HTTP/1.1 200 Connection established\r\n\r\n");
    assert!(response.starts_with("HTTP/1.1 200 "), "{response}");

    // TCP relays: from the stand-in's namespace to the task's overlay
    // address, and into the task's own namespace to its loopback.
    let direct = reqwest::Client::builder()
        .no_proxy()
        .timeout(REQUEST_TIMEOUT)
        .build()
        .expect("an HTTP client");
    let to_task = world
        .relay_into(0, &world.provider_container, gateway)
        .unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(to_task.target(), gateway);
    get_ok(
        &direct,
        &format!("http://{}/health", to_task.addr()),
        "the task's /health through a relay from the stand-in's namespace",
        REQUEST_TIMEOUT,
    )
    .await;
    let into_task = world
        .relay_to(WORKER, &container, GATEWAY_PORT)
        .unwrap_or_else(|e| panic!("{e:#}"));
    get_ok(
        &direct,
        &format!("http://{}/health", into_task.addr()),
        "the task's /health through a relay into its own namespace",
        REQUEST_TIMEOUT,
    )
    .await;
    eprintln!("[{tag}] CONNECT tunnel and both relays: {}", secs(t));

    // Shutdown: nothing of the run left on the machine.
    let t = Instant::now();
    drop((via_proxy, direct, to_task, into_task));
    tokio::task::spawn_blocking(move || world.shutdown())
        .await
        .expect("the shutdown")
        .unwrap_or_else(|e| panic!("{e:#}"));
    let left = swarm::leftovers(&tag);
    assert!(left.is_empty(), "left behind by {tag}: {left:#?}");
    assert_eq!(
        swarm::netns_dir_state(),
        netns_dir_before,
        "/run/netns not as before"
    );
    eprintln!("[{tag}] shut down, nothing left: {}", secs(t));
    eprintln!("[{tag}] total: {}", secs(started));
}
