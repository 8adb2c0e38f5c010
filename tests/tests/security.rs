//! Issue 5 end to end, on the real Docker engine with the real agent image:
//!
//! - secrets (the LLM key, bot tokens, the agent bearer tokens, pairing
//!   codes) appear in no API response, in no control-plane log line at DEBUG
//!   level, in no `docker inspect`, and not in clear in the SQLite files; the
//!   injected `config.toml` is 0600 and owned by the agent's user;
//! - a deployed container is hardened, as inspected and as the kernel sees
//!   its process (`/proc/<pid>/status`, `/proc/<pid>/mountinfo`);
//! - a hostile display name becomes a safe slug, container name and set of
//!   Traefik labels;
//! - hostile persona and channel text lands verbatim and adds no key to the
//!   agent's config: the running agent still requires pairing;
//! - `zcaas keys rotate` under running agents, and a ciphertext moved to
//!   another agent's row is refused rather than used;
//! - tenant B gets 404 on tenant A's streams, and log streams are capped;
//! - an agent does not follow a provider's redirect (the provider URL check
//!   would otherwise be bypassed by a public host redirecting inward).
//!
//! The log assertions see everything the control plane would print: this
//! binary installs the service's own subscriber at TRACE first (`capture`).
//! Every test deploys agents named with its random prefix, so leftovers of an
//! interrupted run never collide with a later one on a shared engine.

#[path = "security/bad_input.rs"]
mod bad_input;
#[path = "security/capture.rs"]
mod capture;
#[path = "security/hardening.rs"]
mod hardening;
#[path = "security/keys.rs"]
mod keys;
#[path = "security/streams.rs"]
mod streams;
#[path = "security/support.rs"]
mod support;

use std::time::Duration;

use serde_json::json;
use zcaas_test_support::{docker_cli, docker_inspect, TestApp, DEPLOY_TIMEOUT, PASSWORD};

use capture::*;
use support::*;

/// Deploy, message, restart, stop, start; then look for the secrets in every
/// place the issue names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_stay_secret() {
    let logs = capture();
    let mut env = TestApp::in_world().await;
    let jwt = env.register("keeper").await;
    let admin = admin_jwt(&env).await;

    let mut s = Secrets::default();
    let api_key = unique("sk-e2e-llm-key-");
    let telegram = format!("123456789:{}", unique("TG"));
    // Discord's shape: base64 of the bot's user id, a timestamp, an HMAC.
    let discord = format!("MTIzNDU2Nzg5MDEyMzQ1Njc4.GtestA.{}", unique("discord-bot-"));
    let slack_bot = unique("xoxb-slack-bot-");
    let slack_app = unique("xapp-slack-app-");
    for (what, value) in [
        ("LLM API key", &api_key),
        ("telegram bot token", &telegram),
        ("discord bot token", &discord),
        ("slack bot token", &slack_bot),
        ("slack app token", &slack_app),
    ] {
        s.add(what, value.as_str());
    }
    let mut body = env.agent_body(&format!("Secret Keeper {}", env.prefix));
    body["apiKey"] = json!(api_key);
    let local = env.local_channel_api();
    body["channels"] = json!({
        "telegram": {"botToken": telegram, "allowedUsers": ["@alice"], "apiBaseUrl": local},
        "discord": {"botToken": discord, "guildId": "1234567890", "allowedUsers": ["*"],
                    "apiBaseUrl": local},
        "slack": {"botToken": slack_bot, "appToken": slack_app, "channelId": "C0123",
                  "allowedUsers": ["U0123ABCD"], "apiBaseUrl": local}
    });
    let agent = env.create_running_agent(&jwt, body).await;
    let id = agent["id"].as_str().unwrap().to_owned();
    let container = agent["containerId"].as_str().unwrap().to_owned();
    s.add("bearer token (first start)", env.stored_token(&id).await);
    // The owner sees that secrets are set, masked; the token not at all.
    let tail = |v: &str| v[v.len() - 4..].to_owned();
    assert_eq!(agent["apiKey"], format!("sk-…{}", tail(&api_key)));
    assert_eq!(
        agent["channels"]["slack"]["appToken"],
        format!("xap…{}", tail(&slack_app))
    );
    assert_eq!(agent["paired"], true);
    let mut responses: Vec<(String, String)> =
        vec![("POST /api/agents → RUNNING".into(), agent.to_string())];

    // A message, a restart (re-pair), stop and start (re-pair again).
    let (code, reply) = env.message(&jwt, &id, "hello, keeper").await;
    assert_eq!(code, 200, "{reply}");
    responses.push(("POST …/message".into(), reply.to_string()));
    let (restarted, token) = restart(&env, &jwt, &id).await;
    s.add("bearer token (after restart)", token);
    responses.push(("POST …/restart".into(), restarted.to_string()));
    let (code, stopped) = env.stop(&jwt, &id).await;
    assert_eq!(code, 202, "{stopped}");
    responses.push(("POST …/stop".into(), stopped.to_string()));
    env.wait_status(&jwt, &id, &["STOPPED"], DEPLOY_TIMEOUT)
        .await;
    let (code, started) = env.start(&jwt, &id).await;
    assert_eq!(code, 202, "{started}");
    responses.push(("POST …/start".into(), started.to_string()));
    env.wait_status(&jwt, &id, &["RUNNING"], DEPLOY_TIMEOUT)
        .await;
    s.add("bearer token (after start)", env.stored_token(&id).await);
    let (code, patched) = env
        .patch_agent(&jwt, &id, json!({"name": "Secret Keeper Renamed"}))
        .await;
    assert_eq!(code, 200, "{patched}");
    responses.push(("PATCH /api/agents/{id}".into(), patched.to_string()));
    let (code, reply) = env.message(&jwt, &id, "still there?").await;
    assert_eq!(code, 200, "{reply}");
    s.codes = pairing_codes(&container);
    assert_eq!(s.codes.len(), 3, "three starts, three codes: {:?}", s.codes);

    // (a) Every GET route, the admin's and the streams included.
    let a = format!("/api/agents/{id}");
    for path in [
        "/api/me".to_owned(),
        "/api/agents".to_owned(),
        a.clone(),
        format!("{a}/logs"),
        format!("{a}/stats"),
        format!("{a}/health"),
        "/healthz".to_owned(),
    ] {
        let (status, text) = get_text(&env, &path, &jwt).await;
        assert_eq!(status, 200, "GET {path}: {text}");
        responses.push((format!("GET {path}"), text));
    }
    for path in ["/api/admin/agents", "/metrics"] {
        let (status, text) = get_text(&env, path, &admin).await;
        assert_eq!(status, 200, "GET {path}: {text}");
        responses.push((format!("GET {path} (admin)"), text));
    }
    let window = Duration::from_millis(1500);
    for (path, who) in [
        (format!("{a}/events?history=100"), &jwt),
        ("/api/events?history=100".to_owned(), &jwt),
        (format!("{a}/logs?follow=true&tail=1000"), &jwt),
        ("/api/admin/events?history=500".to_owned(), &admin),
    ] {
        let (status, text) = read_stream(&env, &path, who, window).await;
        assert_eq!(status, 200, "GET {path}: {text}");
        assert!(!text.is_empty(), "GET {path}: nothing streamed");
        responses.push((format!("GET {path} (stream)"), text));
    }
    // The log views show the agent's output, with the codes redacted.
    let one_shot_logs = &responses
        .iter()
        .find(|(p, _)| p.ends_with("/logs"))
        .unwrap()
        .1;
    assert!(
        one_shot_logs.contains("X-Pairing-Code: ******"),
        "{one_shot_logs}"
    );
    for (place, text) in &responses {
        s.assert_absent(place, text);
        assert!(!text.contains("v1:k"), "a ciphertext in {place}: {text}");
    }

    // (c) docker inspect: the container, its volume and its network.
    let inspected = docker_inspect(&container).expect("container");
    s.assert_absent("docker inspect (container)", &inspected.to_string());
    for var in inspected["Config"]["Env"].as_array().unwrap() {
        let name = var
            .as_str()
            .unwrap()
            .split('=')
            .next()
            .unwrap()
            .to_uppercase();
        assert!(
            !["KEY", "TOKEN", "SECRET", "PASSWORD"]
                .iter()
                .any(|w| name.contains(w)),
            "secret-looking variable in Env: {var}"
        );
    }
    let volume_name = format!("zeroclaw-{}-data", agent["slug"].as_str().unwrap());
    let volume = docker_cli(&["volume", "inspect", &volume_name]).unwrap();
    s.assert_absent("docker volume inspect", &volume);
    let network = docker_cli(&["network", "inspect", &env.config.network]).unwrap();
    s.assert_absent("docker network inspect", &network);

    // (e) The injected config holds the key (by design), 0600, the agent's own.
    let (header, config) = container_file(&container, "/zeroclaw-data/.zeroclaw/config.toml");
    assert_eq!(header.mode().unwrap() & 0o7777, 0o600, "config.toml mode");
    assert_eq!(
        (header.uid().unwrap(), header.gid().unwrap()),
        (65534, 65534)
    );
    let config = String::from_utf8(config).unwrap();
    assert!(config.contains(&api_key), "the LLM key reaches the agent");
    assert!(config.contains(&telegram) && config.contains(&slack_app));

    // (d) The SQLite files hold ciphertexts, never a secret in clear.
    let state = env.app().state();
    let kid = state.secrets.current_key_id();
    let row: (Option<String>, Option<String>, Option<String>) = sqlx::query_as(
        "SELECT encrypted_token, encrypted_api_key, encrypted_channels FROM agents WHERE id = $1",
    )
    .bind(&id)
    .fetch_one(env.sql())
    .await
    .unwrap();
    for stored in [row.0, row.1, row.2] {
        let stored = stored.expect("stored");
        assert!(stored.starts_with(&format!("v1:{kid}:")), "{stored}");
    }
    let db_file = env.config.data_dir.join("zcaas.db");
    let mut found_files = 0;
    for suffix in ["", "-wal", "-shm"] {
        let path = format!("{}{suffix}", db_file.display());
        let Ok(bytes) = std::fs::read(&path) else {
            continue;
        };
        found_files += 1;
        s.assert_absent(&path, &String::from_utf8_lossy(&bytes));
    }
    assert!(found_files >= 2, "the database and its WAL were read");
    let keyring = std::fs::read_to_string(env.config.master_key_path()).unwrap();
    for line in keyring
        .lines()
        .filter(|l| l.contains(" = \"") && !l.starts_with("current"))
    {
        let key = line.split('"').nth(1).unwrap();
        let db = std::fs::read(&db_file).unwrap();
        assert!(
            !String::from_utf8_lossy(&db).contains(key),
            "a master key in the database"
        );
    }

    // (b) The control plane's own logs, at DEBUG, for all of the above.
    let text = logs.text();
    assert!(
        text.contains("DEBUG") && text.contains("TRACE"),
        "the capture runs at TRACE"
    );
    assert!(text.contains(&id), "the capture saw this test's agent");
    assert!(
        text.contains("bollard"),
        "the capture includes bollard's `log` records"
    );
    s.add("user JWT", jwt.clone());
    s.add("admin JWT", admin.clone());
    s.add("user password", PASSWORD);
    s.assert_absent("the control plane's logs", &text);

    let (code, _) = env.delete_agent(&jwt, &id).await;
    assert_eq!(code, 204);
    env.shutdown().await;
    // Shutdown logs too.
    s.assert_absent("the control plane's logs", &logs.text());
}
