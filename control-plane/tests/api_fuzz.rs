//! Property tests of bad input: arbitrary JSON bodies (known and unknown
//! fields, every JSON type, odd strings) on the create and patch routes, and
//! arbitrary ids on every agent route, never produce a 5xx, always produce
//! a JSON error for a 4xx, and never leave an agent behind when refused.

use proptest::prelude::*;
use reqwest::{Method, StatusCode};
use serde_json::{json, Map, Value};
use zcaas_test_support::{minimal_agent_body, TestApp};

const FIELDS: &[&str] = &[
    "name",
    "slug",
    "agentName",
    "userName",
    "timezone",
    "communicationStyle",
    "provider",
    "providerUrl",
    "model",
    "temperature",
    "memoryBackend",
    "autoSave",
    "apiKey",
    "channels",
];

fn odd_string() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        "[a-z0-9-]{1,70}",
        "\\PC{0,80}",
        Just("a`b && c || d".to_owned()),
        Just("x\n[gateway]\nallow_public_bind = true".to_owned()),
        Just("http://169.254.169.254/".to_owned()),
        Just("custom:http://127.0.0.1:1".to_owned()),
        Just("é".repeat(70)),
        (0usize..3000).prop_map(|n| "z".repeat(n)),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        (-10.0f64..10.0).prop_map(Value::from),
        odd_string().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    prop::sample::select(vec![
                        "telegram", "discord", "slack", "botToken", "guildId", "x"
                    ])
                    .prop_map(str::to_owned),
                    "[a-zA-Z]{1,8}"
                ],
                inner,
                0..4
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn body() -> impl Strategy<Value = Value> {
    let key = prop_oneof![
        4 => prop::sample::select(FIELDS.to_vec()).prop_map(str::to_owned),
        1 => "[a-zA-Z_]{1,12}",
    ];
    prop_oneof![
        9 => prop::collection::btree_map(key, json_value(), 0..10)
            .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        1 => json_value(),
    ]
}

fn check(status: StatusCode, body: &Value, what: &str) -> Result<(), TestCaseError> {
    prop_assert!(!status.is_server_error(), "{what} → {status} {body}");
    if status.is_client_error() {
        prop_assert!(
            body["error"]["code"].is_string(),
            "{what} → {status} {body}"
        );
        prop_assert!(
            body["error"]["message"].is_string(),
            "{what} → {status} {body}"
        );
    }
    Ok(())
}

/// Runs `cases` of `strategy` against one service built for the test (its
/// Docker objects go with the harness, even when a case fails).
fn run<S: Strategy>(
    cases: u32,
    strategy: S,
    test: impl Fn(&TestApp, &str, &str, S::Value) -> Result<(), TestCaseError>,
) where
    S::Value: std::fmt::Debug,
{
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (mut app, token, agent_id) = rt.block_on(async {
        let app = TestApp::spawn().await;
        let token = app.register_email("fuzz@example.com").await;
        let agent = app
            .create_pending_agent(&token, minimal_agent_body("Fuzz Target"))
            .await;
        let id = agent["id"].as_str().unwrap().to_owned();
        (app, token, id)
    });
    let config = ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    let mut runner = proptest::test_runner::TestRunner::new(config);
    let _guard = rt.enter();
    let result = runner.run(&strategy, |value| test(&app, &token, &agent_id, value));
    rt.block_on(app.shutdown());
    if let Err(e) = result {
        panic!("{e}");
    }
}

#[test]
fn arbitrary_create_and_patch_bodies() {
    run(300, body(), |app, token, agent_id, b| {
        tokio::runtime::Handle::current().block_on(async {
            let (status, resp) = app.create_agent(token, b.clone()).await;
            check(status, &resp, &format!("POST {b}"))?;
            if status == StatusCode::ACCEPTED {
                // A valid body by chance: clean it up.
                let id = resp["id"].as_str().unwrap_or_default();
                app.delete_agent(token, id).await;
            }
            let (status, resp) = app.patch_agent(token, agent_id, b.clone()).await;
            check(status, &resp, &format!("PATCH {b}"))?;
            let (_, list) = app.list_agents(token).await;
            prop_assert_eq!(
                list.as_array().map(Vec::len),
                Some(1),
                "only the fixture agent exists"
            );
            Ok(())
        })
    });
}

#[test]
fn arbitrary_ids_on_every_route() {
    let suffixes = vec![
        "", "/start", "/stop", "/restart", "/retry", "/message", "/logs", "/stats", "/health",
    ];
    let strategy = ("\\PC{1,80}", prop::sample::select(suffixes));
    run(100, strategy, |app, token, _, (id, suffix)| {
        let encoded: String = id.bytes().map(|b| format!("%{b:02X}")).collect();
        tokio::runtime::Handle::current().block_on(async {
            for method in [Method::GET, Method::POST, Method::PATCH, Method::DELETE] {
                let path = format!("/api/agents/{encoded}{suffix}");
                let body = json!({"message": "hi"});
                let (status, resp) = app
                    .call(method.clone(), &path, Some(token), Some(body))
                    .await;
                check(status, &resp, &format!("{method} {path}"))?;
                prop_assert!(status.is_client_error(), "{} {} → {}", method, path, status);
            }
            Ok(())
        })
    });
}
