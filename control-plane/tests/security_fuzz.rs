//! Bad input on every route (issue 5), beyond `api_fuzz` (which sends JSON
//! values to create and PATCH, and random ids to the agent routes): random
//! methods, tokens (owner, another tenant, admin, none, garbage), content
//! types and raw bodies — bytes that are not UTF-8, JSON nested thousands
//! deep, lone surrogates, huge numbers, duplicate keys, valid bodies with one
//! field broken — on every route, the lifecycle POSTs, the message proxy and
//! the auth routes included; and malformed paths (`%00`, bad UTF-8, very
//! long, unicode, traversal shapes; `..` itself is resolved by the client's
//! URL parser before it is sent, so it is not among them).
//!
//! Every answer must be below 500; every 4xx must carry the API's JSON error.
//! Afterwards the store holds exactly the agents and accounts the accepted
//! requests created (none half-made, no port claimed without a container),
//! and Docker holds nothing for them (the harness's runtime image does not
//! exist, so no deploy gets as far as a container).

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use zcaas_test_support::{labelled, minimal_agent_body, TestApp};

/// Who sends a request.
#[derive(Debug, Clone, Copy)]
enum Caller {
    Owner,
    OtherTenant,
    Admin,
    Anonymous,
    Garbage,
}

/// Which agent a path names.
#[derive(Debug, Clone)]
enum Target {
    Mine,
    Theirs,
    Raw(String),
}

struct Fixture {
    app: TestApp,
    /// No connection reuse: the server closes a connection whose request
    /// body it did not read, and a pooled connection could race that close.
    http: reqwest::Client,
    owner: String,
    other: String,
    admin: String,
    mine: String,
    theirs: String,
    created_agents: AtomicI64,
    deleted_agents: AtomicI64,
    registered: AtomicI64,
    sent: AtomicI64,
}

impl Fixture {
    fn token(&self, c: Caller) -> Option<&str> {
        match c {
            Caller::Owner => Some(&self.owner),
            Caller::OtherTenant => Some(&self.other),
            Caller::Admin => Some(&self.admin),
            Caller::Anonymous => None,
            Caller::Garbage => Some("eyJhbGciOiJub25lIn0.e30."),
        }
    }

    fn id(&self, t: &Target) -> String {
        match t {
            Target::Mine => self.mine.clone(),
            Target::Theirs => self.theirs.clone(),
            Target::Raw(s) => s.clone(),
        }
    }
}

/// Route templates; `{id}` is replaced by the target.
const ROUTES: &[&str] = &[
    "/api/auth/register",
    "/api/auth/login",
    "/api/auth/stream-ticket",
    "/api/me",
    "/api/events?history=5",
    "/api/events?ticket=not-a-ticket",
    "/api/admin/events",
    "/api/agents",
    "/api/agents/{id}",
    "/api/agents/{id}/start",
    "/api/agents/{id}/stop",
    "/api/agents/{id}/restart",
    "/api/agents/{id}/retry",
    "/api/agents/{id}/message",
    "/api/agents/{id}/logs",
    "/api/agents/{id}/logs?follow=true",
    "/api/agents/{id}/logs?tail=-1&follow=%00",
    "/api/agents/{id}/events",
    "/api/agents/{id}/events?history=999999&after=x",
    "/api/agents/{id}/stats",
    "/api/agents/{id}/health",
    "/api/admin/agents",
    "/healthz",
    "/api/agents/{id}/start/extra",
];

fn method() -> impl Strategy<Value = Method> {
    prop_oneof![
        4 => Just(Method::POST),
        3 => Just(Method::GET),
        2 => Just(Method::PATCH),
        1 => Just(Method::DELETE),
        1 => Just(Method::PUT),
        1 => Just(Method::OPTIONS),
    ]
}

fn caller() -> impl Strategy<Value = Caller> {
    prop_oneof![
        5 => Just(Caller::Owner),
        2 => Just(Caller::OtherTenant),
        1 => Just(Caller::Admin),
        1 => Just(Caller::Anonymous),
        1 => Just(Caller::Garbage),
    ]
}

fn target() -> impl Strategy<Value = Target> {
    prop_oneof![
        5 => Just(Target::Mine),
        2 => Just(Target::Theirs),
        2 => "\\PC{1,40}".prop_map(|s| Target::Raw(s.bytes().map(|b| format!("%{b:02X}")).collect())),
        1 => prop::sample::select(vec![
            "%00", "%FF%FE", "%C0%AF", "..%2F..%2Fapi%2Fadmin%2Fagents", "%2e%2e", "a%2Fb",
            "%F0%9F%A6%80", "%E6%97%A5%E6%9C%AC", "%0D%0ASet-Cookie:%20x=y", "%", "%ZZ",
            "'%20OR%201=1--", "00000000-0000-4000-8000-000000000000",
        ]).prop_map(|s| Target::Raw(s.to_owned())),
        1 => (65usize..5000).prop_map(|n| Target::Raw("a".repeat(n))),
    ]
}

fn content_type() -> impl Strategy<Value = Option<&'static str>> {
    prop::sample::select(vec![
        Some("application/json"),
        Some("application/json"),
        Some("application/json; charset=utf-8"),
        Some("application/merge-patch+json"),
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        Some("multipart/form-data; boundary=x"),
        Some("application/json; charset=utf-16"),
        Some("*/*"),
        None,
    ])
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        "\\PC{0,40}".prop_map(Value::String),
        // Large but under the body limit: oversized bodies are refused before
        // they are read, and the client may then see a broken pipe instead of
        // the 413 (security_limits covers the 413 with bodies the socket takes).
        (0usize..40_000).prop_map(|n| Value::String("z".repeat(n))),
    ];
    leaf.prop_recursive(3, 12, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-zA-Z]{1,12}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A valid body of one route with one field replaced by junk.
fn broken_valid_body() -> impl Strategy<Value = Value> {
    let bases = vec![
        json!({"email": "fuzz-new@example.com", "password": "password-123"}),
        json!({"message": "hello"}),
        json!({"name": "Fuzz New", "provider": "openai", "model": "gpt-4o-mini", "apiKey": "sk-fuzz-0123456789", "channels": {"telegram": {"botToken": "123456789:AAE0fuzzTokenNotReal-0123456789_ab", "allowedUsers": ["*"]}}}),
        json!({"communicationStyle": "Terse.", "temperature": 1.0}),
    ];
    (
        prop::sample::select(bases),
        prop::sample::select(vec![
            "email",
            "password",
            "message",
            "name",
            "slug",
            "provider",
            "providerUrl",
            "model",
            "temperature",
            "apiKey",
            "channels",
            "autoSave",
            "memoryBackend",
            "timezone",
        ]),
        json_value(),
    )
        .prop_map(|(mut base, field, junk)| {
            base[field] = junk;
            base
        })
}

fn raw_body() -> impl Strategy<Value = Option<Vec<u8>>> {
    let nested =
        |open: &str, close: &str, n: usize| format!("{}{}", open.repeat(n), close.repeat(n));
    let pathological: Vec<Vec<u8>> = vec![
        nested("[", "]", 5000).into_bytes(),
        format!(r#"{{"name":{}}}"#, nested("[", "]", 300)).into_bytes(),
        nested(r#"{"a":"#, "}", 3000).into_bytes(),
        br#"{"name":"\ud800","provider":"openai","model":"m"}"#.to_vec(),
        br#"{"message":"\udfff"}"#.to_vec(),
        br#"{"temperature":1e999999}"#.to_vec(),
        br#"{"temperature":NaN}"#.to_vec(),
        br#"{"name":"a","name":"b","provider":"openai","model":"m"}"#.to_vec(),
        br#"{"message":"hi","message":"again"}"#.to_vec(),
        "\u{feff}{}".as_bytes().to_vec(),
        b"{} trailing".to_vec(),
        b"null".to_vec(),
        b"\"string\"".to_vec(),
        b"[]".to_vec(),
        b"{".to_vec(),
        b"\xff\xfe{\x00}\x00".to_vec(),
        b"email=a%40b&password=x".to_vec(),
        vec![0u8; 1000],
    ];
    prop_oneof![
        2 => Just(None),
        3 => prop::collection::vec(any::<u8>(), 0..600).prop_map(Some),
        4 => json_value().prop_map(|v| Some(serde_json::to_vec(&v).unwrap_or_default())),
        4 => broken_valid_body().prop_map(|v| Some(serde_json::to_vec(&v).unwrap_or_default())),
        2 => prop::sample::select(pathological).prop_map(Some),
    ]
}

/// Sends one request; returns its status and whether the 4xx carried the
/// API's JSON error (streams are not read: their status is what matters).
async fn send(
    fx: &Fixture,
    method: Method,
    path: &str,
    caller: Caller,
    ct: Option<&str>,
    body: Option<Vec<u8>>,
) -> Result<(StatusCode, String), TestCaseError> {
    let mut req = fx
        .http
        .request(method.clone(), fx.app.url(path))
        .timeout(Duration::from_secs(30));
    if let Some(t) = fx.token(caller) {
        req = req.bearer_auth(t);
    }
    if let Some(ct) = ct {
        req = req.header("content-type", ct);
    }
    if let Some(b) = body {
        req = req.body(b);
    }
    fx.sent.fetch_add(1, Ordering::SeqCst);
    let resp = req
        .send()
        .await
        .map_err(|e| TestCaseError::fail(format!("{method} {path}: {e:?}")))?;
    let status = resp.status();
    let streaming = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    if streaming {
        return Ok((status, String::new()));
    }
    let text = resp
        .text()
        .await
        .map_err(|e| TestCaseError::fail(format!("{method} {path}: body: {e}")))?;
    prop_assert!(
        !status.is_server_error(),
        "{} {} → {} {}",
        method,
        path,
        status,
        text
    );
    if status.is_client_error() {
        let v: Value = serde_json::from_str(&text).map_err(|_| {
            TestCaseError::fail(format!("{method} {path} → {status}: not JSON: {text:?}"))
        })?;
        prop_assert!(
            v["error"]["code"].is_string() && v["error"]["message"].is_string(),
            "{} {} → {} {}",
            method,
            path,
            status,
            v
        );
    }
    Ok((status, text))
}

fn count(fx: &Fixture, method: &Method, template: &str, status: StatusCode) {
    match (method, template, status) {
        (&Method::POST, "/api/agents", StatusCode::ACCEPTED) => {
            fx.created_agents.fetch_add(1, Ordering::SeqCst);
        }
        (&Method::DELETE, "/api/agents/{id}", StatusCode::NO_CONTENT) => {
            fx.deleted_agents.fetch_add(1, Ordering::SeqCst);
        }
        (&Method::POST, "/api/auth/register", StatusCode::CREATED) => {
            fx.registered.fetch_add(1, Ordering::SeqCst);
        }
        _ => {}
    }
}

async fn fixture() -> Fixture {
    let app = TestApp::spawn().await;
    let owner = app.register_email("owner@example.com").await;
    let other = app.register_email("tenant-b@example.com").await;
    let admin = app.admin("fuzz-admin@example.com").await;
    let mut mine_body = minimal_agent_body("Owner Agent");
    mine_body["apiKey"] = json!("sk-owner-0123456789abcdef");
    let mine = app.create_pending_agent(&owner, mine_body).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let theirs = app
        .create_pending_agent(&other, minimal_agent_body("Tenant B Agent"))
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    Fixture {
        app,
        http: reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .build()
            .unwrap(),
        owner,
        other,
        admin,
        mine,
        theirs,
        created_agents: AtomicI64::new(2),
        deleted_agents: AtomicI64::new(0),
        registered: AtomicI64::new(3),
        sent: AtomicI64::new(0),
    }
}

/// The store and Docker hold exactly what accepted requests made.
async fn assert_nothing_half_made(fx: &Fixture) {
    let db = fx.app.sql();
    // Let in-flight deploys fail (no image) and settle.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let busy: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM agents WHERE status IN ('PENDING','STARTING','STOPPING')",
        )
        .fetch_one(db)
        .await
        .unwrap();
        if busy == 0 || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let expected_agents =
        fx.created_agents.load(Ordering::SeqCst) - fx.deleted_agents.load(Ordering::SeqCst);
    let agents: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM agents")
        .fetch_one(db)
        .await
        .unwrap();
    assert_eq!(agents, expected_agents, "agents in the store");
    let with_container_or_port: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM agents WHERE container_id IS NOT NULL OR container_port IS NOT NULL",
    )
    .fetch_one(db)
    .await
    .unwrap();
    assert_eq!(with_container_or_port, 0, "no container or port claimed");
    let users: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users")
        .fetch_one(db)
        .await
        .unwrap();
    // The bootstrap admin is not counted by the fixture.
    assert_eq!(users, fx.registered.load(Ordering::SeqCst) + 1, "accounts");
    assert!(
        labelled(&["ps", "-aq"], &fx.app.prefix).is_empty(),
        "containers"
    );
    assert!(
        labelled(&["volume", "ls", "-q"], &fx.app.prefix).is_empty(),
        "volumes"
    );
}

#[test]
fn random_requests_on_every_route() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut fx = rt.block_on(fixture());
    let strategy = (
        method(),
        prop::sample::select(ROUTES.to_vec()),
        target(),
        caller(),
        content_type(),
        raw_body(),
    );
    let config = ProptestConfig {
        cases: 400,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    let mut runner = proptest::test_runner::TestRunner::new(config);
    let result = runner.run(&strategy, |(method, template, target, caller, ct, body)| {
        let path = template.replace("{id}", &fx.id(&target));
        rt.block_on(async {
            let (status, _) = send(&fx, method.clone(), &path, caller, ct, body).await?;
            count(&fx, &method, template, status);
            Ok(())
        })
    });
    rt.block_on(assert_nothing_half_made(&fx));
    let sent = fx.sent.load(Ordering::SeqCst);
    rt.block_on(fx.app.shutdown());
    if let Err(e) = result {
        panic!("{e}");
    }
    assert!(sent >= 400, "only {sent} requests sent");
}

#[test]
fn malformed_paths_on_every_agent_route() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut fx = rt.block_on(fixture());
    let ids: Vec<String> = vec![
        "%00".into(),
        "%00%00%00".into(),
        "a%00b".into(),
        "%FF".into(),
        "%C0%80".into(),
        "%ED%A0%80".into(),
        "日本語".into(),
        "%F0%9F%A6%80".into(),
        "\u{202e}".into(),
        "..%2F..%2Fadmin".into(),
        "%2F".into(),
        "%5C..%5C".into(),
        "%0A".into(),
        "%20".into(),
        "*".into(),
        "'".into(),
        "%22%3E%3Cscript%3E".into(),
        "a".repeat(65),
        "a".repeat(8_000),
        format!("{}%00", fx.mine),
        fx.mine.to_uppercase(),
        format!("{}%20", fx.mine),
        fx.theirs.clone(),
    ];
    let suffixes = [
        "",
        "/start",
        "/stop",
        "/restart",
        "/retry",
        "/message",
        "/logs",
        "/logs?follow=true",
        "/events",
        "/stats",
        "/health",
    ];
    let result: Result<(), TestCaseError> = rt.block_on(async {
        for id in &ids {
            for suffix in suffixes {
                for method in [Method::GET, Method::POST, Method::PATCH, Method::DELETE] {
                    let path = format!("/api/agents/{id}{suffix}");
                    let body = serde_json::to_vec(&json!({"message": "hi", "name": "x"})).ok();
                    let (status, text) = send(
                        &fx,
                        method.clone(),
                        &path,
                        Caller::Owner,
                        Some("application/json"),
                        body,
                    )
                    .await?;
                    prop_assert!(
                        status.is_client_error(),
                        "{} {} → {} {}",
                        method,
                        path,
                        status,
                        text
                    );
                }
            }
        }
        // The owner's agent is untouched by all of it.
        let (status, agent) = fx.app.get_agent(&fx.owner, &fx.mine).await;
        prop_assert_eq!(status, StatusCode::OK);
        prop_assert_eq!(&agent["name"], "Owner Agent");
        Ok(())
    });
    rt.block_on(assert_nothing_half_made(&fx));
    rt.block_on(fx.app.shutdown());
    if let Err(e) = result {
        panic!("{e}");
    }
}
