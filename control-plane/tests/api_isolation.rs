//! Tenant isolation: user B gets 404 (never 403, never data) on every route
//! of user A's agent, and cannot change it; an unknown id is the same 404.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use zcaas_test_support::{assert_error, minimal_agent_body, TestApp};

/// Every per-agent route with a body that would be valid for its owner.
fn routes(id: &str) -> Vec<(Method, String, Option<Value>)> {
    let p = format!("/api/agents/{id}");
    vec![
        (Method::GET, p.clone(), None),
        (Method::PATCH, p.clone(), Some(json!({"name": "stolen"}))),
        (Method::POST, format!("{p}/start"), None),
        (Method::POST, format!("{p}/stop"), None),
        (Method::POST, format!("{p}/restart"), None),
        (Method::POST, format!("{p}/retry"), None),
        (
            Method::POST,
            format!("{p}/message"),
            Some(json!({"message": "hello"})),
        ),
        (Method::GET, format!("{p}/logs"), None),
        (Method::GET, format!("{p}/stats"), None),
        (Method::GET, format!("{p}/health"), None),
        (Method::DELETE, p, None),
    ]
}

#[tokio::test]
async fn other_users_agents_are_404_on_every_route() {
    let mut app = TestApp::spawn().await;
    let alice = app.register_email("alice@example.com").await;
    let bob = app.register_email("bob@example.com").await;
    let mut body = minimal_agent_body("Alice Agent");
    body["apiKey"] = json!("sk-alice-0123456789abcdef");
    let agent = app.create_pending_agent(&alice, body).await;
    let id = agent["id"].as_str().unwrap().to_owned();

    for (method, path, body) in routes(&id) {
        let (status, resp) = app.call(method.clone(), &path, Some(&bob), body).await;
        assert_error(status, &resp, StatusCode::NOT_FOUND, None);
        assert!(
            !resp.to_string().contains("Alice"),
            "{method} {path}: {resp}"
        );
    }
    for (method, path, body) in routes("00000000-0000-4000-8000-000000000000") {
        let (status, resp) = app.call(method.clone(), &path, Some(&alice), body).await;
        assert_error(status, &resp, StatusCode::NOT_FOUND, None);
    }
    // Without a token: 401 everywhere.
    for (method, path, body) in routes(&id) {
        let (status, resp) = app.call(method.clone(), &path, None, body).await;
        assert_error(status, &resp, StatusCode::UNAUTHORIZED, None);
    }

    // Bob's list is empty; Alice's agent is untouched and still hers.
    let (_, list) = app.list_agents(&bob).await;
    assert_eq!(list, json!([]));
    let (status, mine) = app.get_agent(&alice, &id).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(mine["name"], "Alice Agent");
    assert_eq!(mine["apiKey"], "sk-…cdef");

    // The owner's routes answer (state-dependent codes, never 404).
    let (status, resp) = app.logs(&alice, &id).await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    assert!(resp["lines"].is_array());

    // Admins see every agent with its owner.
    let admin = app.admin("root@example.com").await;
    let (status, all) = app
        .call(Method::GET, "/api/admin/agents", Some(&admin), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let row = all
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["id"] == id.as_str())
        .expect("listed");
    assert_eq!(row["ownerEmail"], "alice@example.com");
    assert!(!all.to_string().contains("sk-alice"));

    let (status, _) = app.delete_agent(&alice, &id).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, resp) = app.get_agent(&alice, &id).await;
    assert_error(status, &resp, StatusCode::NOT_FOUND, None);
    app.shutdown().await;
}
