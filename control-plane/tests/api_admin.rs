//! Admin API: the SSE feed of status transitions (admins only, exempt from
//! the request timeout, ended by shutdown) and the all-agents list.

use std::time::{Duration, Instant};

use futures::StreamExt;
use reqwest::{Method, StatusCode};
use zcaas_test_support::{assert_error, minimal_agent_body, TestApp};

#[tokio::test]
async fn admins_see_transitions_live() {
    let mut app = TestApp::spawn().await;
    let user = app.register_email("user@example.com").await;
    let admin = app.admin("root@example.com").await;

    let (status, body) = app
        .call(Method::GET, "/api/admin/events", Some(&user), None)
        .await;
    assert_error(status, &body, StatusCode::FORBIDDEN, None);

    let resp = app
        .open_stream("/api/admin/events", Some(&admin), &[])
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let mut stream = resp.bytes_stream();

    let agent = app
        .create_pending_agent(&user, minimal_agent_body("Watched"))
        .await;
    let id = agent["id"].as_str().unwrap().to_owned();

    let mut seen = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while !(seen.contains("event: transition")
        && seen.contains(&id)
        && seen.contains("\"to\":\"PENDING\""))
    {
        let chunk = tokio::time::timeout_at(deadline, stream.next())
            .await
            .expect("a transition event in time")
            .expect("stream open")
            .unwrap();
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(seen.contains("\"reason\":\"created\""), "{seen}");

    let (status, _) = app.delete_agent(&user, &id).await;
    assert_eq!(status, StatusCode::NO_CONTENT);

    // Shutdown is not held up by the open stream, and the stream ends.
    let started = Instant::now();
    app.shutdown().await;
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    let rest = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(Ok(_)) = stream.next().await {}
    })
    .await;
    assert!(rest.is_ok(), "the event stream ended at shutdown");
}
