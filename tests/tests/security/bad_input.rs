//! Bad input on every route of a running agent leaves nothing behind.

use reqwest::Method;
use serde_json::{json, Value};
use zcaas_test_support::{labelled, TestApp};

use super::capture::*;

/// Bad input on every route of a RUNNING agent, from its owner and from
/// another tenant: only 4xx JSON errors, and afterwards exactly one agent,
/// one port claim, one container (the same), one volume, the same token,
/// and the agent still answering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_leaves_a_running_agent_and_nothing_else() {
    capture();
    let mut env = TestApp::in_world().await;
    let owner = env.register("owner").await;
    let other = env.register("other").await;
    let name = format!("Steady Agent {}", env.prefix);
    let agent = env
        .create_running_agent(&owner, env.agent_body(&name))
        .await;
    let id = agent["id"].as_str().unwrap().to_owned();
    let container = agent["containerId"].as_str().unwrap().to_owned();
    let token = env.stored_token(&id).await;
    let containers_before = labelled(&["ps", "-aq"], &env.prefix);
    assert_eq!(
        containers_before.len(),
        2,
        "the agent and the provider stand-in"
    );

    let nested = format!("{}{}", "[".repeat(3000), "]".repeat(3000));
    let bodies: Vec<(&str, Vec<u8>)> = vec![
        ("application/json", b"{".to_vec()),
        ("application/json", b"[]".to_vec()),
        ("application/json", b"null".to_vec()),
        ("application/json", nested.into_bytes()),
        ("application/json", b"\xff\xfe\x00{".to_vec()),
        ("application/json", br#"{"message":"\ud800"}"#.to_vec()),
        ("application/json", br#"{"message":5}"#.to_vec()),
        (
            "application/json",
            json!({"message": "m".repeat(40_000)})
                .to_string()
                .into_bytes(),
        ),
        ("application/json", vec![b' '; 64 * 1024 + 1]),
        ("application/json", br#"{"name":null}"#.to_vec()),
        ("application/json", br#"{"slug":"other"}"#.to_vec()),
        (
            "application/json",
            r#"{"apiKey":"sk-…abcd"}"#.as_bytes().to_vec(),
        ),
        // (The harness allows private provider hosts, for its stand-in.)
        (
            "application/json",
            br#"{"providerUrl":"file:///etc/passwd"}"#.to_vec(),
        ),
        (
            "application/json",
            br#"{"provider":"custom:unix:///var/run/docker.sock"}"#.to_vec(),
        ),
        (
            "application/json",
            br#"{"temperature":"hot","status":"RUNNING"}"#.to_vec(),
        ),
        ("application/json", br#"{"channels":{"irc":{}}}"#.to_vec()),
        (
            "application/json",
            br#"{"encryptedToken":"v1:k:x","containerPort":2375}"#.to_vec(),
        ),
        ("text/plain", br#"{"message":"hi"}"#.to_vec()),
        ("application/x-www-form-urlencoded", b"message=hi".to_vec()),
    ];
    let a = format!("/api/agents/{id}");
    let owner_routes = [
        (Method::POST, "/api/agents".to_owned()),
        (Method::PATCH, a.clone()),
        (Method::POST, format!("{a}/message")),
        (Method::PUT, a.clone()),
        (Method::GET, format!("{a}/restart")),
        (Method::POST, format!("{a}/logs")),
        (Method::POST, format!("{a}%00/stop")),
        (Method::DELETE, format!("{a}x")),
    ];
    let other_routes = [
        (Method::PATCH, a.clone()),
        (Method::DELETE, a.clone()),
        (Method::POST, format!("{a}/stop")),
        (Method::POST, format!("{a}/restart")),
        (Method::POST, format!("{a}/message")),
    ];
    // No connection reuse: the server closes a connection whose body it did
    // not read, and a pooled one could race that close.
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let mut sent = 0;
    for (jwt, routes) in [(&owner, &owner_routes[..]), (&other, &other_routes[..])] {
        for (method, path) in routes {
            for (ct, body) in &bodies {
                let res = http
                    .request(method.clone(), env.url(path))
                    .bearer_auth(jwt)
                    .header("content-type", *ct)
                    .body(body.clone())
                    .send()
                    .await
                    .unwrap();
                let status = res.status();
                let text = res.text().await.unwrap();
                assert!(
                    status.is_client_error(),
                    "{method} {path} → {status} {text}"
                );
                let v: Value = serde_json::from_str(&text)
                    .unwrap_or_else(|_| panic!("{method} {path} → {status}: {text}"));
                assert!(v["error"]["code"].is_string(), "{v}");
                sent += 1;
            }
        }
    }
    assert_eq!(
        sent,
        (owner_routes.len() + other_routes.len()) * bodies.len()
    );

    // Nothing was created, claimed, changed or restarted.
    let db = env.sql();
    let agents: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM agents")
        .fetch_one(db)
        .await
        .unwrap();
    let ports: Vec<i64> =
        sqlx::query_scalar("SELECT container_port FROM agents WHERE container_port IS NOT NULL")
            .fetch_all(db)
            .await
            .unwrap();
    assert_eq!(
        (agents, ports),
        (1, vec![agent["containerPort"].as_i64().unwrap()])
    );
    let mut after = labelled(&["ps", "-aq"], &env.prefix);
    let mut before = containers_before.clone();
    after.sort();
    before.sort();
    assert_eq!(after, before, "no container added or replaced");
    let volume = format!("zeroclaw-{}-data", agent["slug"].as_str().unwrap());
    assert_eq!(labelled(&["volume", "ls", "-q"], &env.prefix), vec![volume]);
    let now = env.get_agent(&owner, &id).await.1;
    assert_eq!(
        (now["status"].as_str(), now["containerId"].as_str()),
        (Some("RUNNING"), Some(container.as_str()))
    );
    assert_eq!(now["name"], name.as_str());
    assert_eq!(env.stored_token(&id).await, token, "not re-paired");
    let (code, reply) = env.message(&owner, &id, "still steady").await;
    assert_eq!(code, 200, "{reply}");
    env.shutdown().await;
}
