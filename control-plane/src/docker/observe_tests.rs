//! Unit tests of the engine-shape conversions in `observe.rs`, on JSON
//! captured from Docker 20.10.

use super::*;
use chrono::{TimeZone, Timelike};

fn inspect(json: serde_json::Value) -> ContainerInspectResponse {
    serde_json::from_value(json).expect("inspect fixture")
}

fn created_fixture() -> serde_json::Value {
    serde_json::json!({
        "Id": "969add37cf02",
        "Name": "/zeroclaw-ada",
        "RestartCount": 0,
        "State": {"Status": "created", "Running": false, "Paused": false, "Restarting": false,
                  "OOMKilled": false, "Dead": false, "Pid": 0, "ExitCode": 0, "Error": "",
                  "StartedAt": "0001-01-01T00:00:00Z", "FinishedAt": "0001-01-01T00:00:00Z"},
        "Config": {"Labels": {"io.zcaas.managed": "true", "io.zcaas.agent-id": "a1",
                              "io.zcaas.spec-hash": "h1"}},
        "HostConfig": {"PortBindings": {"42617/tcp": [{"HostIp": "127.0.0.1", "HostPort": "40999"}]}},
        "NetworkSettings": {"Ports": {}}
    })
}

#[test]
fn created_container_has_no_start_and_port_from_bindings() {
    let c = observed(inspect(created_fixture()));
    assert_eq!(c.id, "969add37cf02");
    assert_eq!(c.name, "zeroclaw-ada");
    assert_eq!(c.state, "created");
    assert!(!c.running);
    assert_eq!(c.started_at, None);
    assert_eq!(c.host_port, Some(40999));
    assert_eq!(c.agent_id.as_deref(), Some("a1"));
    assert_eq!(c.spec_hash.as_deref(), Some("h1"));
    assert_eq!(c.labels.len(), 3);
    assert_eq!(c.exit_code, Some(0));
    assert!(!c.oom_killed);
}

#[test]
fn running_container_keeps_nanoseconds_and_live_port() {
    let mut json = created_fixture();
    json["State"]["Status"] = "running".into();
    json["State"]["Running"] = true.into();
    json["State"]["StartedAt"] = "2026-11-21T08:40:06.535226413Z".into();
    json["RestartCount"] = 3.into();
    json["HostConfig"]["PortBindings"] = serde_json::json!({});
    json["NetworkSettings"]["Ports"] =
        serde_json::json!({"42617/tcp": [{"HostIp": "127.0.0.1", "HostPort": "41000"}]});
    let c = observed(inspect(json));
    assert!(c.running);
    assert_eq!(c.state, "running");
    let started = c.started_at.expect("started");
    assert_eq!(started.nanosecond(), 535_226_413);
    assert_eq!(started.timestamp(), 1_795_250_406);
    assert_eq!(c.restart_count, 3);
    assert_eq!(c.host_port, Some(41000));
}

#[test]
fn installation_created_time_and_network_addresses() {
    let mut json = created_fixture();
    json["Config"]["Labels"]["io.zcaas.installation"] = "inst-a".into();
    json["Created"] = "2026-11-21T08:40:05.000000001Z".into();
    json["NetworkSettings"]["Networks"] = serde_json::json!({
        "zeroone-net": {"IPAddress": "172.30.0.7"},
        "other": {"IPAddress": ""}
    });
    let c = observed(inspect(json));
    assert_eq!(c.installation.as_deref(), Some("inst-a"));
    assert_eq!(c.created_at.map(|t| t.nanosecond()), Some(1));
    assert_eq!(
        c.ip_addresses,
        BTreeMap::from([("zeroone-net".to_owned(), "172.30.0.7".to_owned())]),
        "a network without an address yet is left out"
    );
}

#[test]
fn exited_oom_container() {
    let mut json = created_fixture();
    json["State"]["Status"] = "exited".into();
    json["State"]["ExitCode"] = 137.into();
    json["State"]["OOMKilled"] = true.into();
    json["Config"]["Labels"] = serde_json::Value::Null;
    json["HostConfig"] = serde_json::json!({});
    let c = observed(inspect(json));
    assert_eq!(c.exit_code, Some(137));
    assert!(c.oom_killed);
    assert_eq!(c.host_port, None);
    assert!(c.labels.is_empty());
    assert_eq!(c.agent_id, None);
}

#[test]
fn docker_zero_time_is_none() {
    assert_eq!(parse_docker_time("0001-01-01T00:00:00Z"), None);
    assert_eq!(parse_docker_time(""), None);
    assert_eq!(parse_docker_time("yesterday"), None);
    let at = parse_docker_time("2026-11-21T08:40:06.5Z").expect("time");
    assert_eq!(
        at,
        Utc.with_ymd_and_hms(2026, 11, 21, 8, 40, 6)
            .single()
            .expect("date")
            + chrono::Duration::milliseconds(500)
    );
}

fn stats_fixture() -> serde_json::Value {
    // Captured from Docker 20.10 on cgroup v1, trimmed to what `compute_stats` reads.
    let v1: serde_json::Map<String, serde_json::Value> = [
        "active_anon",
        "active_file",
        "cache",
        "dirty",
        "hierarchical_memory_limit",
        "inactive_anon",
        "inactive_file",
        "mapped_file",
        "pgfault",
        "pgmajfault",
        "pgpgin",
        "pgpgout",
        "rss",
        "rss_huge",
        "total_active_anon",
        "total_active_file",
        "total_cache",
        "total_dirty",
        "total_inactive_anon",
        "total_inactive_file",
        "total_mapped_file",
        "total_pgfault",
        "total_pgmajfault",
        "total_pgpgin",
        "total_pgpgout",
        "total_rss",
        "total_rss_huge",
        "total_unevictable",
        "total_writeback",
        "unevictable",
        "writeback",
    ]
    .iter()
    .map(|k| {
        (
            k.to_string(),
            // Page cache 3 MiB, 2 MiB of it inactive: `docker stats`
            // subtracts only the inactive part.
            serde_json::json!(match *k {
                "cache" | "total_cache" => 3 * 1024 * 1024,
                "total_inactive_file" => 2 * 1024 * 1024,
                _ => 0,
            }),
        )
    })
    .collect();
    let cpu = |total: u64, system: u64| {
        serde_json::json!({
            "cpu_usage": {"total_usage": total, "percpu_usage": [1, 2],
                          "usage_in_kernelmode": 0, "usage_in_usermode": 0},
            "system_cpu_usage": system, "online_cpus": 2,
            "throttling_data": {"periods": 0, "throttled_periods": 0, "throttled_time": 0}
        })
    };
    serde_json::json!({
        "read": "2026-11-21T08:40:07.5Z", "preread": "2026-11-21T08:40:06.5Z",
        "num_procs": 0,
        "pids_stats": {"current": 3},
        "memory_stats": {"usage": 12 * 1024 * 1024, "max_usage": 1, "limit": 1, "stats": v1},
        "blkio_stats": {},
        "cpu_stats": cpu(1_250_000_000, 11_000_000_000),
        "precpu_stats": cpu(1_000_000_000, 10_000_000_000),
        "storage_stats": {},
        "name": "/zeroclaw-ada", "id": "abc"
    })
}

#[test]
fn stats_like_docker_stats() {
    let stats: ContainerStatsResponse =
        serde_json::from_value(stats_fixture()).expect("stats fixture");
    let s = compute_stats(&stats);
    // 0.25 s of CPU over 1 s of system time on 2 CPUs = 50 % of one core.
    assert!((s.cpu_percent - 50.0).abs() < 1e-9, "{}", s.cpu_percent);
    assert!((s.memory_mb - 10.0).abs() < 1e-9, "{}", s.memory_mb);
}

#[test]
fn stats_without_previous_reading_is_zero_cpu() {
    let mut json = stats_fixture();
    json["precpu_stats"]["cpu_usage"]["total_usage"] = 0.into();
    json["precpu_stats"]["system_cpu_usage"] = serde_json::Value::Null;
    json["cpu_stats"]["system_cpu_usage"] = serde_json::Value::Null;
    json["memory_stats"] = serde_json::json!({});
    let s = compute_stats(&serde_json::from_value(json).expect("stats"));
    assert_eq!(s.cpu_percent, 0.0);
    assert_eq!(s.memory_mb, 0.0);
}

#[test]
fn events_carry_agent_id_exit_code_and_nanosecond_time() {
    let message: EventMessage = serde_json::from_value(serde_json::json!({
        "Type": "container", "Action": "die", "scope": "local",
        "Actor": {"ID": "c0ffee", "Attributes": {"exitCode": "137", "io.zcaas.agent-id": "a1",
                                                 "name": "zeroclaw-ada"}},
        "time": 1_795_250_406, "timeNano": 1_795_250_406_535_226_413_i64
    }))
    .expect("event");
    let e = container_event(message).expect("event");
    assert_eq!(e.container_id, "c0ffee");
    assert_eq!(e.action, "die");
    assert_eq!(e.agent_id.as_deref(), Some("a1"));
    assert_eq!(e.exit_code, Some(137));
    assert_eq!(e.at.expect("at").nanosecond(), 535_226_413);

    let bare: EventMessage = serde_json::from_value(serde_json::json!({
        "Type": "container", "Action": "start", "Actor": {"ID": "c0ffee"}, "time": 5
    }))
    .expect("event");
    let e = container_event(bare).expect("event");
    assert_eq!((e.agent_id, e.exit_code), (None, None));
    assert_eq!(e.at.map(|t| t.timestamp()), Some(5));

    let no_actor: EventMessage =
        serde_json::from_value(serde_json::json!({"Action": "start"})).expect("event");
    assert_eq!(container_event(no_actor), None);
}
