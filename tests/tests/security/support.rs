//! Helpers of the end-to-end security tests: deploys, restarts, files read
//! out of containers, `/proc` of their processes, and raw HTTP calls.

use std::io::Read as _;
use std::time::Duration;

use futures::StreamExt as _;
use reqwest::Method;
use serde_json::{json, Value};
use zcaas::secrets::SecretField;
use zcaas_tests::{docker_cli, TestEnv};

/// The provider stand-in binary of this package.
pub(crate) const STUB: &str = env!("CARGO_BIN_EXE_provider-stub");
/// Longest wait for a deploy, restart or start.
pub(crate) const DEPLOY_TIMEOUT: Duration = Duration::from_secs(90);

/// A random string that names its test, for secrets we can search for.
pub(crate) fn unique(prefix: &str) -> String {
    format!("{prefix}{}", uuid::Uuid::new_v4().simple())
}

/// The plaintext bearer token the control plane holds for `id`.
pub(crate) async fn stored_token(env: &TestEnv, id: &str) -> String {
    let state = env.app().state();
    let agent = zcaas::db::lifecycle::get(&state.db, id)
        .await
        .unwrap()
        .expect("agent row");
    let enc = agent.encrypted_token.expect("a token is stored");
    state.secrets.decrypt(id, SecretField::Token, &enc).unwrap()
}

/// An admin account (created in the store) and its JWT.
pub(crate) async fn admin_jwt(env: &TestEnv) -> String {
    let email = format!("admin-{}@example.test", env.prefix);
    let hash = zcaas::auth::hash_password("admin password 1".into())
        .await
        .unwrap();
    zcaas::db::users::create(
        &env.app().state().db,
        &zcaas::db::users::NewUser {
            email: &email,
            password_hash: &hash,
            role: zcaas::model::Role::Admin,
            plan: zcaas::model::Plan::Enterprise,
        },
    )
    .await
    .unwrap();
    let res = env
        .http
        .post(format!("{}/api/auth/login", env.base))
        .json(&json!({"email": email, "password": "admin password 1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    body["token"].as_str().unwrap().to_owned()
}

/// `GET path` → (status, body text).
pub(crate) async fn get_text(env: &TestEnv, path: &str, jwt: &str) -> (u16, String) {
    let res = env
        .http
        .get(format!("{}{path}", env.base))
        .bearer_auth(jwt)
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    (status, res.text().await.unwrap())
}

/// Opens a stream and reads what arrives within `window` → (status, text).
pub(crate) async fn read_stream(
    env: &TestEnv,
    path: &str,
    jwt: &str,
    window: Duration,
) -> (u16, String) {
    let res = env
        .http
        .get(format!("{}{path}", env.base))
        .bearer_auth(jwt)
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    let mut text = Vec::new();
    let mut body = res.bytes_stream();
    let _ = tokio::time::timeout(window, async {
        while let Some(Ok(chunk)) = body.next().await {
            text.extend_from_slice(&chunk);
        }
    })
    .await;
    (status, String::from_utf8_lossy(&text).into_owned())
}

/// Creates an agent and waits for RUNNING → its record.
pub(crate) async fn deploy(env: &TestEnv, jwt: &str, body: Value) -> Value {
    let (code, created) = env
        .call(Method::POST, "/api/agents", jwt, Some(body))
        .await
        .unwrap();
    assert_eq!(code, 202, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    let agent = env
        .wait_status(jwt, &id, &["RUNNING", "ERROR"], DEPLOY_TIMEOUT)
        .await
        .unwrap();
    assert_eq!(agent["status"], "RUNNING", "{agent}");
    agent
}

/// POST …/restart and wait until RUNNING with a new token → the new token.
pub(crate) async fn restart(env: &TestEnv, jwt: &str, id: &str) -> (Value, String) {
    let before = stored_token(env, id).await;
    let (code, body) = env
        .call(
            Method::POST,
            &format!("/api/agents/{id}/restart"),
            jwt,
            None,
        )
        .await
        .unwrap();
    assert_eq!(code, 202, "{body}");
    let agent = env
        .wait_for(jwt, id, DEPLOY_TIMEOUT, |a| {
            a["status"] == "RUNNING" || a["status"] == "ERROR"
        })
        .await
        .unwrap();
    assert_eq!(agent["status"], "RUNNING", "{agent}");
    // RUNNING is written after the token: it is the new one by now.
    let after = stored_token(env, id).await;
    assert_ne!(before, after, "a restart re-pairs");
    (body, after)
}

/// One file of a container, through `docker cp` (a tar on stdout), read in
/// memory; links and anything but one regular file are refused.
pub(crate) fn container_file(container: &str, path: &str) -> (tar::Header, Vec<u8>) {
    let out = std::process::Command::new("docker")
        .args(["cp", &format!("{container}:{path}"), "-"])
        .output()
        .expect("docker cp");
    assert!(
        out.status.success(),
        "docker cp {path}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut archive = tar::Archive::new(out.stdout.as_slice());
    let mut entries = archive.entries().expect("tar");
    let mut entry = entries.next().expect("one entry").expect("entry");
    let header = entry.header().clone();
    assert_eq!(
        header.entry_type(),
        tar::EntryType::Regular,
        "{path} is a regular file"
    );
    let mut contents = Vec::new();
    entry.read_to_end(&mut contents).expect("contents");
    assert!(entries.next().is_none(), "{path}: one entry only");
    (header, contents)
}

/// `/proc/<pid>/status` and `/proc/<pid>/mountinfo` of a container's process
/// (the engine runs on this host: the harness reaches agents on 127.0.0.1).
pub(crate) fn proc_of(pid: i64, file: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/{file}"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/{file}: {e} (is the engine on this host?)"))
}

/// One line of mountinfo: (mount point, per-mount options, fs type,
/// fs root, super options).
pub(crate) fn mounts(mountinfo: &str) -> Vec<(String, Vec<String>, String, String, String)> {
    mountinfo
        .lines()
        .map(|line| {
            let (left, right) = line.split_once(" - ").expect("mountinfo separator");
            let l: Vec<&str> = left.split(' ').collect();
            let r: Vec<&str> = right.split(' ').collect();
            (
                l[4].to_owned(),
                l[5].split(',').map(str::to_owned).collect(),
                r[0].to_owned(),
                l[3].to_owned(),
                r.get(2).copied().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

/// The stored secrets of `id`: (token, api key, channels).
pub(crate) async fn stored(
    env: &TestEnv,
    id: &str,
) -> (Option<String>, Option<String>, Option<String>) {
    sqlx::query_as(
        "SELECT encrypted_token, encrypted_api_key, encrypted_channels FROM agents WHERE id = ?1",
    )
    .bind(id)
    .fetch_one(&env.app().state().db)
    .await
    .unwrap()
}

/// Writes API key ciphertexts straight into the store, as a database writer could.
pub(crate) async fn set_api_keys(env: &TestEnv, rows: [(&String, &Option<String>); 2]) {
    for (id, ct) in rows {
        sqlx::query("UPDATE agents SET encrypted_api_key = ?1 WHERE id = ?2")
            .bind(ct)
            .bind(id)
            .execute(&env.app().state().db)
            .await
            .unwrap();
    }
}

/// A stream ticket for the holder of `jwt`.
pub(crate) async fn ticket(env: &TestEnv, jwt: &str) -> String {
    let (code, body) = env
        .call(Method::POST, "/api/auth/stream-ticket", jwt, None)
        .await
        .unwrap();
    assert_eq!(code, 201, "{body}");
    body["ticket"].as_str().unwrap().to_owned()
}

/// `GET path` without a bearer token → (status, JSON error or Null).
pub(crate) async fn get_anonymous(env: &TestEnv, path: &str) -> (u16, Value) {
    let res = env
        .http
        .get(format!("{}{path}", env.base))
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    let is_json = res
        .headers()
        .get("content-type")
        .is_some_and(|v| v.to_str().unwrap_or("").starts_with("application/json"));
    (
        status,
        if is_json {
            res.json().await.unwrap()
        } else {
            Value::Null
        },
    )
}

/// Docker objects of kind (`ps -aq`, `volume ls -q`) labelled with this test.
pub(crate) fn labelled(env: &TestEnv, kind: &[&str]) -> Vec<String> {
    let mut args = kind.to_vec();
    let filter = format!("label=io.zcaas.test={}", env.prefix);
    args.extend(["--filter", filter.as_str()]);
    docker_cli(&args)
        .unwrap()
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}
