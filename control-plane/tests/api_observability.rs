//! Issue 6 without agent containers (the test image does not exist, so
//! every deploy fails fast to ERROR — which still makes transitions): the
//! event streams' history and live feed joined without gaps or duplicates,
//! their authentication (JWT or one-use ticket) and scoping rules, the
//! per-user stream cap, `/metrics`, and the dashboard's headers.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::Value;
use zcaas_test_support::{assert_error, minimal_agent_body, SseReader, TestApp};

const WAIT: Duration = Duration::from_secs(20);

/// Every `agent_events` id of `user_id`'s agents, ascending.
async fn stored_ids(app: &TestApp, user_id: &str) -> Vec<i64> {
    sqlx::query_scalar("SELECT id FROM agent_events WHERE user_id = $1 ORDER BY id")
        .bind(user_id)
        .fetch_all(app.sql())
        .await
        .unwrap()
}

async fn user_id(app: &TestApp, token: &str) -> String {
    let (_, me) = app.me(token).await;
    me["id"].as_str().unwrap().to_owned()
}

/// Waits until agent `id` is in ERROR (its deploy failed).
async fn wait_error(app: &TestApp, token: &str, id: &str) {
    app.wait_status(token, id, &["ERROR"], WAIT).await;
}

fn ids(events: &[Value]) -> Vec<i64> {
    events.iter().map(|e| e["id"].as_i64().unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_and_live_join_without_gaps_or_duplicates() {
    let mut app = TestApp::spawn().await;
    let alice = app.register_email("alice@example.com").await;
    let uid = user_id(&app, &alice).await;
    let a = app
        .create_pending_agent(&alice, minimal_agent_body("Alpha"))
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let b = app
        .create_pending_agent(&alice, minimal_agent_body("Beta"))
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    wait_error(&app, &alice, &a).await;
    wait_error(&app, &alice, &b).await;
    let before = stored_ids(&app, &uid).await;
    assert!(before.len() >= 6, "{before:?}");

    // History first, in order, each with its fields.
    let mut all = app.events("/api/events?history=500", &alice, &[]).await;
    let replayed = all.transitions(before.len()).await;
    assert_eq!(ids(&replayed), before);
    let first = &replayed[0];
    for key in ["agentId", "userId", "slug", "to", "reason", "at"] {
        assert!(first[key].is_string(), "{key} in {first}");
    }
    assert!(first["from"].is_null() && first["to"] == "PENDING" && first["reason"] == "created");

    // Streams opened while transitions are being made, with full history,
    // all end up with exactly the stored list: nothing lost, nothing twice.
    let mut racing = Vec::new();
    for round in 0..4 {
        for id in [&a, &b] {
            let (s, body) = app.retry(&alice, id).await;
            assert_eq!(s, StatusCode::ACCEPTED, "{body}");
        }
        if round < 3 {
            racing.push(app.events("/api/events?history=500", &alice, &[]).await);
        }
        wait_error(&app, &alice, &a).await;
        wait_error(&app, &alice, &b).await;
    }
    let after = stored_ids(&app, &uid).await;
    assert!(after.len() > before.len() + 8, "{after:?}");
    let live = all.transitions(after.len() - before.len()).await;
    assert_eq!(
        [ids(&replayed), ids(&live)].concat(),
        after,
        "history then live"
    );
    for mut s in racing {
        assert_eq!(
            ids(&s.transitions(after.len()).await),
            after,
            "a stream opened mid-burst"
        );
    }

    // Resuming: Last-Event-ID (as EventSource sends it) or ?after= replay
    // exactly what came after.
    let mid = after[after.len() / 2];
    let want: Vec<i64> = after.iter().copied().filter(|i| *i > mid).collect();
    let mut resumed = app
        .events(
            "/api/events",
            &alice,
            &[("last-event-id", &mid.to_string())],
        )
        .await;
    assert_eq!(ids(&resumed.transitions(want.len()).await), want);
    let mut resumed = app
        .events(&format!("/api/events?after={mid}"), &alice, &[])
        .await;
    assert_eq!(ids(&resumed.transitions(want.len()).await), want);

    // One agent's stream carries only that agent; history=N is the newest N.
    let mut one = app
        .events(&format!("/api/agents/{a}/events?history=2"), &alice, &[])
        .await;
    let two = one.transitions(2).await;
    assert!(two.iter().all(|e| e["agentId"] == a.as_str()), "{two:?}");
    let a_ids: Vec<i64> =
        sqlx::query_scalar("SELECT id FROM agent_events WHERE agent_id = $1 ORDER BY id")
            .bind(&a)
            .fetch_all(app.sql())
            .await
            .unwrap();
    assert_eq!(ids(&two), a_ids[a_ids.len() - 2..]);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_are_scoped_authenticated_and_capped() {
    let mut app = TestApp::spawn().await;
    let alice = app.register_email("alice@example.com").await;
    let bob = app.register_email("bob@example.com").await;
    let admin = app.admin("root@example.com").await;
    let a = app
        .create_pending_agent(&alice, minimal_agent_body("Alpha"))
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let get = |path: String, token: Option<String>| {
        let app = &app;
        async move { app.call(Method::GET, &path, token.as_deref(), None).await }
    };
    let (s, body) = get("/api/events".into(), None).await;
    assert_error(s, &body, StatusCode::UNAUTHORIZED, None);
    let (s, body) = get("/api/admin/events".into(), Some(alice.clone())).await;
    assert_error(s, &body, StatusCode::FORBIDDEN, None);
    let (s, body) = get(format!("/api/agents/{a}/events"), Some(bob.clone())).await;
    assert_error(s, &body, StatusCode::NOT_FOUND, None);
    let (s, body) = get(
        format!("/api/agents/{a}/logs?follow=true"),
        Some(bob.clone()),
    )
    .await;
    assert_error(s, &body, StatusCode::NOT_FOUND, None);
    let (s, body) = get("/api/events?history=501".into(), Some(alice.clone())).await;
    assert_error(s, &body, StatusCode::UNPROCESSABLE_ENTITY, Some("history"));
    let resp = app
        .open_stream("/api/events", Some(&alice), &[("last-event-id", "abc")])
        .await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);

    // The admin feed sees everyone's agents.
    let mut feed = app
        .events("/api/admin/events?history=10", &admin, &[])
        .await;
    assert_eq!(feed.transition().await["agentId"], a.as_str());

    // Tickets: one use, SSE routes only, never the long-lived JWT in a URL.
    let ticket = |token: String| {
        let app = &app;
        async move {
            let (s, body) = app.stream_ticket(&token).await;
            assert_eq!(s, StatusCode::CREATED, "{body}");
            assert_eq!(body["expiresIn"], 60);
            body["ticket"].as_str().unwrap().to_owned()
        }
    };
    let (s, _) = app
        .call(Method::POST, "/api/auth/stream-ticket", None, None)
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let t = ticket(alice.clone()).await;
    assert_eq!(t.len(), 43);
    let by_url = format!("/api/agents/{a}/events?history=1&ticket={t}");
    let first = app.open_stream(&by_url, None, &[]).await;
    assert_eq!(first.status(), StatusCode::OK);
    let mut by_ticket = SseReader::new(first);
    assert_eq!(by_ticket.transition().await["agentId"], a.as_str());
    let again = app.open_stream(&by_url, None, &[]).await;
    assert_eq!(
        again.status(),
        StatusCode::UNAUTHORIZED,
        "a ticket is spent once"
    );
    let t = ticket(bob.clone()).await;
    let theirs = app
        .open_stream(&format!("/api/agents/{a}/events?ticket={t}"), None, &[])
        .await;
    assert_eq!(
        theirs.status(),
        StatusCode::NOT_FOUND,
        "a ticket carries its user's rights"
    );
    let t = ticket(alice.clone()).await;
    for path in [
        format!("/api/agents?ticket={t}"),
        format!("/api/agents/{a}/logs?ticket={t}"),
    ] {
        let r = app.open_stream(&path, None, &[]).await;
        assert_eq!(
            r.status(),
            StatusCode::UNAUTHORIZED,
            "{path}: tickets are for streams only"
        );
    }
    let t = ticket(alice.clone()).await;
    let r = app
        .open_stream(&format!("/api/admin/events?ticket={t}"), None, &[])
        .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);

    // A log stream of an agent without a container ends at once, saying why.
    let mut logs = app
        .events(&format!("/api/agents/{a}/logs?follow=true"), &alice, &[])
        .await;
    let end = logs.next().await.unwrap();
    assert_eq!(
        (end.event.as_str(), end.data.as_str()),
        ("end", "{\"reason\":\"no container\"}")
    );
    assert!(logs.next().await.is_none(), "the stream closes after `end`");

    // At most 8 event streams per user (by_ticket is one); 429 beyond, and
    // a slot comes back when a stream is dropped.
    let mut held = Vec::new();
    for _ in 0..7 {
        held.push(app.events("/api/events", &alice, &[]).await);
    }
    let (s, body) = get("/api/events".into(), Some(alice.clone())).await;
    assert_error(s, &body, StatusCode::TOO_MANY_REQUESTS, None);
    assert_eq!(body["error"]["code"], "too_many_streams");
    let resp = app.open_stream("/api/events", Some(&bob), &[]).await;
    assert_eq!(resp.status(), StatusCode::OK, "caps are per user");
    drop(held.pop());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let resp = app.open_stream("/api/events", Some(&alice), &[]).await;
        if resp.status() == StatusCode::OK {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the dropped stream's slot never came back"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop((held, by_ticket, feed));
    app.shutdown().await;
}

#[tokio::test]
async fn metrics_are_public_and_labelled_by_route_template() {
    let mut app = TestApp::spawn().await;
    let alice = app.register_email("alice@example.com").await;
    let id = app
        .create_pending_agent(&alice, minimal_agent_body("Counted"))
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    wait_error(&app, &alice, &id).await;
    let (s, _) = app.get_agent(&alice, &id).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = app
        .call(Method::GET, "/no/such/path/1234", None, None)
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    let resp = app.http.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    let text = resp.text().await.unwrap();
    for needle in [
        "zcaas_agents{status=\"ERROR\"} 1",
        "zcaas_agents{status=\"RUNNING\"} 0",
        "# TYPE zcaas_deploy_duration_seconds histogram",
        "# TYPE zcaas_repairs counter",
        "zcaas_reconcile_passes_total",
        "zcaas_reconcile_steps_total{",
        "# TYPE zcaas_docker_errors counter",
        "zcaas_http_requests_total{method=\"POST\",route=\"/api/agents\",status=\"202\"} 1",
        "zcaas_http_requests_total{method=\"GET\",route=\"/api/agents/{id}\",status=\"200\"}",
        "zcaas_http_requests_total{method=\"GET\",route=\"unmatched\",status=\"404\"} 1",
        "zcaas_http_request_duration_seconds_count{method=\"POST\",route=\"/api/auth/register\",status=\"201\"} 1",
    ] {
        assert!(text.contains(needle), "missing {needle} in\n{text}");
    }
    assert!(!text.contains(&id), "an agent id in a metric label");
    assert!(
        !text.contains("/no/such/path"),
        "a raw path in a metric label"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn the_dashboard_is_served_with_a_strict_policy() {
    let mut app = TestApp::spawn().await;
    for (path, ct) in [
        ("/", "text/html"),
        ("/static/app.css", "text/css"),
        ("/static/js/main.js", "text/javascript"),
        ("/static/favicon.svg", "image/svg+xml"),
    ] {
        let res = app.http.get(app.url(path)).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK, "{path}");
        let h = res.headers().clone();
        assert!(
            h["content-type"].to_str().unwrap().starts_with(ct),
            "{path}: {:?}",
            h["content-type"]
        );
        let csp = h["content-security-policy"].to_str().unwrap();
        assert!(csp.starts_with("default-src 'self'"), "{csp}");
        assert!(
            !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
            "{csp}"
        );
        assert_eq!(h["x-content-type-options"], "nosniff");
        let again = app
            .http
            .get(app.url(path))
            .header("if-none-match", h["etag"].clone())
            .send()
            .await
            .unwrap();
        assert_eq!(
            again.status(),
            StatusCode::NOT_MODIFIED,
            "{path} revalidates"
        );
    }
    let (s, body) = app.call(Method::GET, "/static/nope.js", None, None).await;
    assert_error(s, &body, StatusCode::NOT_FOUND, None);
    app.shutdown().await;
}
