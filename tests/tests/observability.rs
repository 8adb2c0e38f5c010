//! Issue 6 against the real engine and the real agent image: status events
//! and `/metrics` across a real deploy and stop, and the container's log
//! stream (redacted, capped per user, ended when the container stops).
//! Stream rules that need no container are tested in
//! `control-plane/tests/api_observability.rs`.

use std::time::Duration;

use serde_json::Value;
use zcaas_test_support::{docker_cli, Sse, SseReader, TestApp};

const DEPLOY: Duration = Duration::from_secs(90);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_and_metrics_follow_a_real_deploy_and_stop() {
    let mut env = TestApp::in_world().await;
    let jwt = env.register("olive").await;
    // Live only (no history), opened before the agent exists.
    let mut live = env.events("/api/events", &jwt, &[]).await;

    let created = env
        .create_pending_agent(&jwt, env.agent_body("Watched"))
        .await;
    let id = created["id"].as_str().unwrap().to_owned();
    let mut seen = Vec::new();
    while seen.last().map(|e: &Value| e["to"].clone()) != Some("RUNNING".into()) {
        let ev = live.transition().await;
        assert_eq!(ev["agentId"], id.as_str());
        assert_eq!(ev["slug"], "watched");
        assert_ne!(ev["to"], "ERROR", "{ev}");
        seen.push(ev);
    }
    let path: Vec<&str> = seen.iter().map(|e| e["to"].as_str().unwrap()).collect();
    assert_eq!(path, ["PENDING", "STARTING", "RUNNING"]);
    let running_id = seen[2]["id"].as_i64().unwrap();

    // Metrics after a deploy: every family, with real values.
    let text = env.metrics().await;
    for needle in [
        "zcaas_agents{status=\"RUNNING\"} 1",
        "zcaas_agents{status=\"PENDING\"} 0",
        "zcaas_http_requests_total{method=\"POST\",route=\"/api/agents\",status=\"202\"} 1",
        "zcaas_http_requests_total{method=\"GET\",route=\"/api/events\",status=\"200\"} 1",
        "zcaas_reconcile_steps_total{",
        "# TYPE zcaas_repairs counter",
        "# TYPE zcaas_docker_errors counter",
        "zcaas_http_request_duration_seconds_count{",
    ] {
        assert!(text.contains(needle), "missing {needle} in\n{text}");
    }
    let count = |name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|r| r.trim().parse().ok()))
            .unwrap_or_else(|| panic!("no {name} in\n{text}"))
    };
    assert!(count("zcaas_deploy_duration_seconds_count") >= 1.0);
    assert!(count("zcaas_reconcile_passes_total") >= 1.0);
    assert!(!text.contains(&id), "an agent id in a label");

    // Stop; then a reconnect after RUNNING (Last-Event-ID) replays exactly
    // what followed it.
    let (code, _) = env.stop(&jwt, &id).await;
    assert_eq!(code, 202);
    let stopping = live.transition().await;
    let stopped = live.transition().await;
    assert_eq!(
        (stopping["to"].as_str(), stopped["to"].as_str()),
        (Some("STOPPING"), Some("STOPPED"))
    );
    let mut resumed = env
        .events(
            &format!("/api/agents/{id}/events"),
            &jwt,
            &[("last-event-id", &running_id.to_string())],
        )
        .await;
    assert_eq!(resumed.transition().await, stopping);
    assert_eq!(resumed.transition().await, stopped);
    let stored: Vec<i64> =
        sqlx::query_scalar("SELECT id FROM agent_events WHERE agent_id = $1 ORDER BY id")
            .bind(&id)
            .fetch_all(env.sql())
            .await
            .unwrap();
    let got: Vec<i64> = seen
        .iter()
        .chain([&stopping, &stopped])
        .map(|e| e["id"].as_i64().unwrap())
        .collect();
    assert_eq!(got, stored, "the live feed missed or repeated an event");

    // Shutdown ends open streams.
    env.shutdown().await;
    let rest = tokio::time::timeout(Duration::from_secs(10), async {
        while live.next().await.is_some() {}
    })
    .await;
    assert!(rest.is_ok(), "the stream ended at shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_stream_is_redacted_capped_and_ends_when_the_container_stops() {
    let mut env = TestApp::in_world().await;
    let jwt = env.register("logan").await;
    let (_, created) = env.create_agent(&jwt, env.agent_body("Logged")).await;
    let id = created["id"].as_str().unwrap().to_owned();
    env.wait_status(&jwt, &id, &["RUNNING"], DEPLOY).await;
    let logs_path = format!("/api/agents/{id}/logs?follow=true&tail=500");

    // The banner arrives redacted; the real code is in Docker's logs only.
    let mut follow = env.events(&logs_path, &jwt, &[]).await;
    let mut streamed = String::new();
    while !streamed.contains("X-Pairing-Code") {
        let Sse { event, data, .. } = follow.next().await.expect("log lines");
        assert_eq!(event, "line", "{data}");
        let line: Value = serde_json::from_str(&data).unwrap();
        assert!(
            line["stream"] == "stdout" || line["stream"] == "stderr",
            "{line}"
        );
        assert!(line["at"].is_string(), "{line}");
        streamed.push_str(line["text"].as_str().unwrap());
        streamed.push('\n');
    }
    let raw = docker_cli(&["logs", "zeroclaw-logged"]).unwrap();
    let code: String = raw
        .lines()
        .find_map(|l| l.split("X-Pairing-Code:").nth(1))
        .map(|c| c.trim().chars().take(6).collect())
        .expect("a pairing code in Docker's logs");
    assert!(
        code.chars().all(|c| c.is_ascii_digit()) && code.len() == 6,
        "{code}"
    );
    assert!(streamed.contains("X-Pairing-Code: ******"), "{streamed}");
    assert!(
        !streamed.contains(&code),
        "pairing code {code} streamed:\n{streamed}"
    );

    // The one-shot form is unchanged (and redacted the same way).
    let (code_json, body) = env.logs(&jwt, &id).await;
    assert_eq!(code_json, 200);
    assert!(
        body["lines"].as_array().is_some_and(|l| !l.is_empty()),
        "{body}"
    );
    assert!(!body.to_string().contains(&code));

    // Four log streams per user; the fifth is refused with 429.
    let mut extra = Vec::new();
    for _ in 0..3 {
        extra.push(env.events(&logs_path, &jwt, &[]).await);
    }
    let refused = env.open_stream(&logs_path, Some(&jwt), &[]).await;
    assert_eq!(refused.status(), 429);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "too_many_streams", "{body}");
    drop(extra);

    // Stopping the container ends the stream with a final `end` event.
    let (code_stop, _) = env.stop(&jwt, &id).await;
    assert_eq!(code_stop, 202);
    let end = loop {
        let Sse { event, data, .. } = follow
            .next()
            .await
            .expect("an end event before the stream closes");
        if event == "end" {
            break data;
        }
        assert_eq!(event, "line");
    };
    assert_eq!(end, "{\"reason\":\"stopped\"}");
    assert!(
        follow.next().await.is_none(),
        "the stream closes after `end`"
    );
    env.wait_status(&jwt, &id, &["STOPPED"], DEPLOY).await;

    // Every slot is free again: a follow of the stopped container replays
    // its tail and ends at once.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut again = loop {
        let resp = env.open_stream(&logs_path, Some(&jwt), &[]).await;
        if resp.status() == 200 {
            break SseReader::new(resp);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "log stream slots were not released"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let mut last = None;
    while let Some(Sse { event, data, .. }) = again.next().await {
        last = Some((event, data));
    }
    assert_eq!(
        last,
        Some(("end".to_owned(), "{\"reason\":\"stopped\"}".to_owned()))
    );
    env.shutdown().await;
}
