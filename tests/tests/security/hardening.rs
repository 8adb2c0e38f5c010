//! What a deployed agent is allowed to do, and what user text can change:
//! container hardening (as created and as running), a hostile display name,
//! hostile persona and channel text.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;
use zcaas_test_support::{agent_containers, assert_error, docker_inspect, TestApp, DEPLOY_TIMEOUT};

use super::capture::*;
use super::support::*;

/// A hostile display name deploys as a safe slug; the container is hardened
/// as created, and as the kernel sees its process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployed_agent_is_hardened() {
    capture();
    let mut env = TestApp::in_world().await;
    let jwt = env.register("hardened").await;
    // The test's prefix keeps the slug unique on a shared engine.
    let name = format!("Ünï `Bot` && Co. v2 @home * {}", env.prefix);
    let agent = env.create_running_agent(&jwt, env.agent_body(&name)).await;
    let slug = format!("n-bot-co-v2-home-{}", env.prefix);
    let slug = slug.as_str();
    assert_eq!(agent["slug"], slug);
    let id = agent["id"].as_str().unwrap();
    let port = agent["containerPort"].as_u64().unwrap();
    let c = docker_inspect(&format!("zeroclaw-{slug}")).expect("container named after the slug");
    assert_eq!(
        agent_containers(id),
        vec![c["Id"].as_str().unwrap()[..12].to_owned()]
    );
    let h = &c["HostConfig"];

    // As created.
    assert_eq!(c["Config"]["User"], "65534:65534", "non-root");
    assert_eq!(h["CapDrop"], json!(["ALL"]));
    assert!(h["CapAdd"].is_null(), "{}", h["CapAdd"]);
    assert_eq!(h["SecurityOpt"], json!(["no-new-privileges"]));
    assert_eq!(h["ReadonlyRootfs"], true);
    assert_eq!(h["Privileged"], false);
    assert_eq!(h["PublishAllPorts"], false);
    assert!(
        h["PidsLimit"]
            .as_i64()
            .is_some_and(|n| (1..=1024).contains(&n)),
        "{}",
        h["PidsLimit"]
    );
    let plan = env.config.limits(zcaas::model::Plan::Free);
    assert_eq!(h["Memory"], plan.memory_mb * 1024 * 1024);
    assert_eq!(h["NanoCpus"], (plan.cpus * 1e9) as i64);
    assert_eq!(h["Tmpfs"], json!({"/tmp": "rw,noexec,nosuid,size=16m"}));
    assert!(
        h["Binds"].as_array().is_none_or(Vec::is_empty),
        "{}",
        h["Binds"]
    );
    assert!(
        h["Devices"].as_array().is_none_or(Vec::is_empty),
        "{}",
        h["Devices"]
    );
    // (CgroupnsMode follows the engine's default: `host` on cgroup v1.)
    for mode in ["PidMode", "IpcMode", "UTSMode", "UsernsMode"] {
        assert_ne!(h[mode], "host", "{mode}");
    }
    assert_eq!(h["NetworkMode"], env.config.network.as_str());
    assert_eq!(
        h["PortBindings"],
        json!({"42617/tcp": [{"HostIp": "127.0.0.1", "HostPort": port.to_string()}]})
    );
    let published = &c["NetworkSettings"]["Ports"]["42617/tcp"];
    assert!(
        published
            .as_array()
            .is_some_and(|b| b.iter().all(|b| b["HostIp"] == "127.0.0.1")),
        "{published}"
    );
    let mounts_created = c["Mounts"].as_array().unwrap();
    assert_eq!(mounts_created.len(), 1, "{mounts_created:?}");
    assert_eq!(mounts_created[0]["Type"], "volume");
    assert_eq!(mounts_created[0]["Name"], format!("zeroclaw-{slug}-data"));
    assert_eq!(mounts_created[0]["Destination"], "/zeroclaw-data");
    assert!(
        !c.to_string().contains("docker.sock"),
        "the Docker socket is never mounted"
    );
    // No user text in a label key; the rule names the slug only.
    let labels = c["Config"]["Labels"].as_object().unwrap();
    for key in labels.keys() {
        assert!(
            key.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-'),
            "label key {key:?}"
        );
    }
    assert_eq!(
        labels[&format!("traefik.http.routers.{slug}.rule")],
        format!("Host(`{slug}.agents.test`) && (Path(`/webhook`) || Path(`/health`))")
    );

    // As the kernel sees the agent's process.
    let pid = c["State"]["Pid"].as_i64().unwrap();
    let status = proc_of(pid, "status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}:")))
            .unwrap_or_else(|| panic!("{name} in {status}"))
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert_eq!(field("Uid"), "65534 65534 65534 65534");
    assert_eq!(field("Gid"), "65534 65534 65534 65534");
    assert_eq!(field("NoNewPrivs"), "1");
    for caps in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert_eq!(field(caps), "0000000000000000", "{caps}");
    }
    let mountinfo = proc_of(pid, "mountinfo");
    assert!(!mountinfo.contains("docker.sock"), "{mountinfo}");
    let mounts = mounts(&mountinfo);
    let root = mounts.iter().find(|m| m.0 == "/").expect("root mount");
    assert!(
        root.1.contains(&"ro".to_owned()),
        "root filesystem is read-only: {root:?}"
    );
    let pseudo = ["proc", "sysfs", "devpts", "mqueue", "cgroup", "cgroup2"];
    let mut writable_disks = Vec::new();
    for (point, opts, fstype, fsroot, superopts) in &mounts {
        if !opts.contains(&"rw".to_owned()) || pseudo.contains(&fstype.as_str()) {
            continue;
        }
        if fstype == "tmpfs" {
            let ok = (point == "/tmp"
                && superopts.contains("size=16384k")
                && opts.contains(&"noexec".to_owned())
                && opts.contains(&"nosuid".to_owned()))
                // Root-owned 0755 directories the agent's user cannot write,
                // and /dev/null masks over /proc files.
                || superopts.contains("mode=755")
                || fsroot == "/null";
            assert!(
                ok,
                "writable tmpfs {point} ({opts:?}, {superopts}):\n{mountinfo}"
            );
        } else {
            writable_disks.push(point.clone());
        }
    }
    assert_eq!(
        writable_disks,
        vec!["/zeroclaw-data".to_owned()],
        "{mountinfo}"
    );

    // And it works, hardened: a message goes through.
    let (code, reply) = env.message(&jwt, id, "hello, hardened").await;
    assert_eq!(code, 200, "{reply}");
    env.shutdown().await;
}

/// Persona and channel text full of quotes, newlines and TOML syntax lands
/// verbatim, adds no key to the config, and leaves pairing required — at
/// the first deploy and after a PATCH re-renders everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_persona_and_channel_text_cannot_change_the_config() {
    capture();
    let mut env = TestApp::in_world().await;
    let jwt = env.register("toml").await;
    let style = "\"\n[gateway]\nrequire_pairing = false\nallow_public_bind = true\n]] ''' \"\"\" \\u0041 \\\" # = [x]\n[[channels_config.telegram]]\n\tapi_key = \"stolen\"";
    let user_name = "\"] ]] ''' \"\"\" = [gateway] require_pairing = false #";
    let agent_name = "Ada''' \"]]\\";
    let name = format!("Eve \"]] [gateway] x {}", env.prefix);
    let name = name.as_str();
    // Channel text cannot carry TOML: allow-list entries are user ids and a
    // bot token must have its platform's shape, so validation refuses a
    // hostile token (naming the field, not echoing it); a token in shape
    // lands verbatim.
    let hostile_token = "123456789:tok\"en'''[]]=#\\u0041-and-then-some";
    let mut refused = env.agent_body(name);
    refused["channels"] = json!({"telegram": {"botToken": hostile_token, "allowedUsers": ["*"]}});
    let (code, body) = env.create_agent(&jwt, refused).await;
    assert_error(
        code,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        Some("channels.telegram.botToken"),
    );
    assert!(!body.to_string().contains("'''[]]=#"), "{body}");
    let bot_token = format!("123456789:{}", unique("AAE0toml-"));
    let bot_token = bot_token.as_str();
    let allowed = ["@alice_b", "123456789", "*"];
    let mut body = env.agent_body(name);
    body["communicationStyle"] = json!(style);
    body["userName"] = json!(user_name);
    body["agentName"] = json!(agent_name);
    body["channels"] = json!({"telegram": {"botToken": bot_token, "allowedUsers": allowed,
        "apiBaseUrl": env.local_channel_api()}});
    let agent = env.create_running_agent(&jwt, body).await;
    assert_eq!(agent["slug"], format!("eve-gateway-x-{}", env.prefix));
    assert_eq!(agent["communicationStyle"], style, "stored verbatim");
    let id = agent["id"].as_str().unwrap().to_owned();
    let port = agent["containerPort"].as_u64().unwrap();

    let check = |container: &str, style: &str| {
        let (header, config) = container_file(container, "/zeroclaw-data/.zeroclaw/config.toml");
        assert_eq!(header.mode().unwrap() & 0o7777, 0o600);
        let config = String::from_utf8(config).unwrap();
        let table: toml::Table = config.parse().expect("config.toml parses");
        let keys: Vec<&str> = table.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "api_key",
                "channels_config",
                "default_model",
                "default_provider",
                "default_temperature",
                "gateway",
                "memory"
            ],
            "{config}"
        );
        let gateway = table["gateway"].as_table().unwrap();
        let gateway_keys: Vec<&str> = gateway.keys().map(String::as_str).collect();
        assert_eq!(
            gateway_keys,
            ["allow_public_bind", "host", "port", "require_pairing"],
            "{config}"
        );
        assert_eq!(gateway["require_pairing"].as_bool(), Some(true), "{config}");
        assert_eq!(gateway["port"].as_integer(), Some(42617));
        assert_eq!(
            table["api_key"].as_str(),
            Some("sk-test-not-a-real-key-1234")
        );
        let channels = table["channels_config"].as_table().unwrap();
        let channel_keys: Vec<&str> = channels.keys().map(String::as_str).collect();
        assert_eq!(channel_keys, ["cli", "telegram"], "{config}");
        let telegram = channels["telegram"].as_table().unwrap();
        assert_eq!(telegram["bot_token"].as_str(), Some(bot_token));
        assert_eq!(telegram["enabled"].as_bool(), Some(true), "{config}");
        let users: Vec<&str> = telegram["allowed_users"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert_eq!(users, allowed);
        let file = |path: &str| {
            let (_, bytes) = container_file(container, &format!("/zeroclaw-data/workspace/{path}"));
            String::from_utf8(bytes).unwrap()
        };
        assert_eq!(
            file("SOUL.md"),
            format!("# Soul\n\n## Communication style\n\n{style}\n")
        );
        assert!(file("USER.md").contains(&format!("- Name: {user_name}\n")));
        let identity = file("IDENTITY.md");
        assert!(
            identity.contains(agent_name) && identity.contains(name),
            "{identity}"
        );
    };
    let container = agent["containerId"].as_str().unwrap().to_owned();
    check(&container, style);

    // The running agent itself still requires pairing: its /health says so,
    // and its webhook refuses a caller without the token.
    let (code, health) = env.health(&jwt, &id).await;
    assert_eq!(code, 200, "{health}");
    assert_eq!(
        (health["require_pairing"].clone(), health["paired"].clone()),
        (json!(true), json!(true)),
        "{health}"
    );
    let direct = env
        .http
        .post(format!("http://127.0.0.1:{port}/webhook"))
        .json(&json!({"message": "no token"}))
        .send()
        .await
        .unwrap();
    assert_eq!(direct.status(), 401);
    let (code, reply) = env.message(&jwt, &id, "hello, toml").await;
    assert_eq!(code, 200, "{reply}");

    // A PATCH re-renders and re-injects; the agent re-pairs.
    let token = env.stored_token(&id).await;
    let style2 = "]]\n[gateway]\nrequire_pairing=false\n'''";
    let (code, patched) = env
        .patch_agent(&jwt, &id, json!({"communicationStyle": style2}))
        .await;
    assert_eq!(code, 200, "{patched}");
    // Re-paired (a new token for the new start), then RUNNING again.
    let deadline = std::time::Instant::now() + DEPLOY_TIMEOUT;
    while env.stored_token(&id).await == token {
        assert!(
            std::time::Instant::now() < deadline,
            "not re-paired after PATCH"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let agent = env.wait_running(&jwt, &id).await;
    assert_eq!(agent["communicationStyle"], style2);
    let container = docker_inspect(&format!("zeroclaw-{}", agent["slug"].as_str().unwrap()))
        .unwrap()["Id"]
        .as_str()
        .unwrap()
        .to_owned();
    check(&container, style2);
    let (code, reply) = env.message(&jwt, &id, "after the patch").await;
    assert_eq!(code, 200, "{reply}");
    env.shutdown().await;
}
