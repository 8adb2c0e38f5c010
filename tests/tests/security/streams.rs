//! Tenant isolation of the streaming routes and their per-user cap; and the
//! agents' refusal to follow a provider's redirect.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;

use reqwest::Method;
use serde_json::{json, Value};
use zcaas_test_support::{docker_inspect, TestApp, DEPLOY_TIMEOUT};

use super::capture::*;
use super::support::*;

/// Tenant B gets 404 on tenant A's streams (bearer and ticket alike), B's own
/// event stream carries nothing of A's, tickets are single-use and only for
/// streams, and log streams are capped per user.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_are_isolated_and_capped() {
    let logs = capture();
    let mut env = TestApp::in_world().await;
    let alice = env.register("alice").await;
    let bob = env.register("bob").await;
    let a = env
        .create_running_agent(
            &alice,
            env.agent_body(&format!("Alice Streams {}", env.prefix)),
        )
        .await;
    let a = a["id"].as_str().unwrap().to_owned();
    let mut tickets = Vec::new();

    // B on A's streams: 404 with a bearer token and with B's own tickets.
    for path in [
        format!("/api/agents/{a}/events"),
        format!("/api/agents/{a}/events?history=100"),
        format!("/api/agents/{a}/logs?follow=true"),
        format!("/api/agents/{a}/logs?follow=true&tail=10"),
    ] {
        let (code, body) = env.call(Method::GET, &path, Some(&bob), None).await;
        assert_eq!(code, 404, "bearer: {path}: {body}");
        assert_eq!(body["error"]["code"], "not_found");
        let t = ticket(&env, &bob).await;
        let sep = if path.contains('?') { '&' } else { '?' };
        let (code, body) = get_anonymous(&env, &format!("{path}{sep}ticket={t}")).await;
        assert_eq!(code, 404, "ticket: {path}: {body}");
        tickets.push(t);
    }
    let (code, _) = env
        .call(Method::GET, "/api/admin/events", Some(&bob), None)
        .await;
    assert_eq!(code, 403);

    // Tickets: once, and only on streams.
    let t = ticket(&env, &alice).await;
    let events = format!("/api/agents/{a}/events?ticket={t}");
    let (code, _) = read_stream(&env, &events, "not-a-jwt", Duration::from_millis(300)).await;
    assert_eq!(code, 200, "a ticket opens the owner's stream");
    let (code, body) = get_anonymous(&env, &events).await;
    assert_eq!(code, 401, "a spent ticket: {body}");
    tickets.push(t);
    for path in [
        "/api/agents",
        &format!("/api/agents/{a}"),
        &format!("/api/agents/{a}/logs"),
    ] {
        let t = ticket(&env, &alice).await;
        let (code, body) = get_anonymous(&env, &format!("{path}?ticket={t}")).await;
        assert_eq!(code, 401, "a ticket is not a JWT: {path}: {body}");
        tickets.push(t);
    }

    // B's own event stream carries nothing of A's, while A's owner sees A move.
    let done = Arc::new(tokio::sync::Notify::new());
    let watch = |jwt: String, until_running: bool| {
        let http = env.http.clone();
        let url = env.url("/api/events");
        let done = done.clone();
        tokio::spawn(async move {
            let res = http.get(url).bearer_auth(jwt).send().await.unwrap();
            assert_eq!(res.status(), 200);
            let mut text = Vec::new();
            let mut body = res.bytes_stream();
            let read = async {
                while let Some(Ok(chunk)) = body.next().await {
                    text.extend_from_slice(&chunk);
                    if until_running
                        && String::from_utf8_lossy(&text).contains("\"to\":\"RUNNING\"")
                    {
                        break;
                    }
                }
            };
            tokio::select! {
                _ = read => {}
                _ = done.notified(), if !until_running => {}
                _ = tokio::time::sleep(DEPLOY_TIMEOUT) => {}
            }
            String::from_utf8_lossy(&text).into_owned()
        })
    };
    let (bob_watch, alice_watch) = (watch(bob.clone(), false), watch(alice.clone(), true));
    tokio::time::sleep(Duration::from_millis(300)).await;
    restart(&env, &alice, &a).await;
    let alice_saw = alice_watch.await.unwrap();
    assert!(
        alice_saw.contains(&a) && alice_saw.contains("STOPPING"),
        "{alice_saw}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    done.notify_waiters();
    let bob_saw = bob_watch.await.unwrap();
    assert!(
        !bob_saw.contains(&a) && !bob_saw.contains("alice-streams"),
        "{bob_saw}"
    );

    // Log streams: a few per user, then 429; another user is not affected.
    let max = zcaas::api::streams::MAX_LOG_STREAMS;
    let follow = env.url(&format!("/api/agents/{a}/logs?follow=true&tail=1"));
    let mut open = Vec::new();
    for _ in 0..max {
        let res = env
            .http
            .get(&follow)
            .bearer_auth(&alice)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        open.push(res);
    }
    let res = env
        .http
        .get(&follow)
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 429);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "too_many_streams", "{body}");
    let b = env
        .create_running_agent(&bob, env.agent_body(&format!("Bob Streams {}", env.prefix)))
        .await;
    let (code, _) = read_stream(
        &env,
        &format!(
            "/api/agents/{}/logs?follow=true&tail=1",
            b["id"].as_str().unwrap()
        ),
        &bob,
        Duration::from_millis(300),
    )
    .await;
    assert_eq!(code, 200, "the cap is per user");
    drop(open);

    // Tickets are never logged (they travel in URLs).
    let text = logs.text();
    for t in &tickets {
        assert!(!text.contains(t.as_str()), "a stream ticket in the logs");
    }
    env.shutdown().await;
}

/// The provider URL check (no internal hosts) would be bypassed if an agent
/// followed a public provider's redirect inward: it must not follow any.
/// The "provider" here is a server of the test's own on the agents' network
/// gateway, answering every chat with a 307 to a second path that counts hits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_do_not_follow_provider_redirects() {
    capture();
    let mut env = TestApp::in_world().await;
    let jwt = env.register("redirect").await;
    let gateway = docker_inspect(&env.config.network).expect("network")["IPAM"]["Config"][0]
        ["Gateway"]
        .as_str()
        .unwrap()
        .to_owned();
    let listener = tokio::net::TcpListener::bind((gateway.as_str(), 0))
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let outer = Arc::new(AtomicUsize::new(0));
    let inner = Arc::new(AtomicUsize::new(0));
    let app = {
        let (outer, inner) = (outer.clone(), inner.clone());
        axum::Router::new()
            .route(
                "/v1/chat/completions",
                axum::routing::post(move || async move {
                    outer.fetch_add(1, Ordering::SeqCst);
                    (
                        axum::http::StatusCode::TEMPORARY_REDIRECT,
                        [(
                            "location",
                            format!("http://{addr}/internal/v1/chat/completions"),
                        )],
                    )
                }),
            )
            .route(
                "/internal/v1/chat/completions",
                axum::routing::post(move || async move {
                    inner.fetch_add(1, Ordering::SeqCst);
                    axum::Json(json!({
                        "id": "x", "object": "chat.completion", "model": "m",
                        "choices": [{"index": 0, "finish_reason": "stop",
                            "message": {"role": "assistant", "content": "from the inside"}}],
                        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}
                    }))
                }),
            )
    };
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let served: SocketAddr = addr;

    let mut body = env.agent_body(&format!("Redirected {}", env.prefix));
    body["provider"] = json!(format!("custom:http://{served}/v1"));
    let agent = env.create_running_agent(&jwt, body).await;
    let id = agent["id"].as_str().unwrap();
    let (code, reply) = env.message(&jwt, id, "follow me").await;
    assert_eq!(
        outer.load(Ordering::SeqCst),
        1,
        "the agent called the provider"
    );
    assert_eq!(
        inner.load(Ordering::SeqCst),
        0,
        "and did not follow its redirect: {code} {reply}"
    );
    assert_ne!(code, 200, "{reply}");
    assert!(!reply.to_string().contains("from the inside"), "{reply}");
    server.abort();
    env.shutdown().await;
}
