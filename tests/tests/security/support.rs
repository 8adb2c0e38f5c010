//! Helpers of the end-to-end security tests only (the shared ones are in
//! `zcaas-test-support`): restarts that must re-pair, files read out of
//! containers, `/proc` of their processes, stored ciphertexts, and raw
//! HTTP reads.

use std::io::Read as _;
use std::time::Duration;

use futures::StreamExt as _;
use serde_json::Value;
use zcaas_test_support::TestApp;

/// A random string that names its test, for secrets we can search for.
pub(crate) fn unique(prefix: &str) -> String {
    format!("{prefix}{}", uuid::Uuid::new_v4().simple())
}

/// An admin account (created in the store) and its JWT.
pub(crate) async fn admin_jwt(env: &TestApp) -> String {
    env.admin(&format!("admin-{}@example.test", env.prefix))
        .await
}

/// `GET path` → (status, body text).
pub(crate) async fn get_text(env: &TestApp, path: &str, jwt: &str) -> (u16, String) {
    let res = env.open_stream(path, Some(jwt), &[]).await;
    let status = res.status().as_u16();
    (status, res.text().await.unwrap())
}

/// Opens a stream and reads what arrives within `window` → (status, text).
pub(crate) async fn read_stream(
    env: &TestApp,
    path: &str,
    jwt: &str,
    window: Duration,
) -> (u16, String) {
    let res = env.open_stream(path, Some(jwt), &[]).await;
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

/// POST …/restart and wait until RUNNING with a new token → (the answer to
/// the restart, the new token).
pub(crate) async fn restart(env: &TestApp, jwt: &str, id: &str) -> (Value, String) {
    let before = env.stored_token(id).await;
    let (code, body) = env.restart(jwt, id).await;
    assert_eq!(code, 202, "{body}");
    env.wait_running(jwt, id).await;
    // RUNNING is written after the token: it is the new one by now.
    let after = env.stored_token(id).await;
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
    env: &TestApp,
    id: &str,
) -> (Option<String>, Option<String>, Option<String>) {
    sqlx::query_as(
        "SELECT encrypted_token, encrypted_api_key, encrypted_channels FROM agents WHERE id = $1",
    )
    .bind(id)
    .fetch_one(env.sql())
    .await
    .unwrap()
}

/// Writes API key ciphertexts straight into the store, as a database writer could.
pub(crate) async fn set_api_keys(env: &TestApp, rows: [(&String, &Option<String>); 2]) {
    for (id, ct) in rows {
        sqlx::query("UPDATE agents SET encrypted_api_key = $1 WHERE id = $2")
            .bind(ct)
            .bind(id)
            .execute(env.sql())
            .await
            .unwrap();
    }
}

/// A stream ticket for the holder of `jwt`.
pub(crate) async fn ticket(env: &TestApp, jwt: &str) -> String {
    let (code, body) = env.stream_ticket(jwt).await;
    assert_eq!(code, 201, "{body}");
    body["ticket"].as_str().unwrap().to_owned()
}

/// `GET path` without a bearer token → (status, JSON error or Null).
pub(crate) async fn get_anonymous(env: &TestApp, path: &str) -> (u16, Value) {
    let res = env.open_stream(path, None, &[]).await;
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
