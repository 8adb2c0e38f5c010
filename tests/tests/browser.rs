//! Issue 6: the web dashboard in a real browser (headless Chromium through
//! chromedriver) against the real control plane, the real Docker engine and
//! the real agent image: sign up, create an agent through the form (an
//! inline validation error first), watch it reach RUNNING without reloading,
//! chat with it, watch its logs and resources, see a Telegram channel added
//! through the API report `ok` on its page and in the list, stop it, see the transitions
//! on the admin page, see its public URL and issue and revoke an access token
//! for it (issue 13), delete it. Screenshots of every page are saved to
//! `tests/screenshots/`, at desktop and phone width.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use zcaas_test_support::{agent_containers, docker_cli, TestApp};
use zcaas_tests::browser::{Browser, DESKTOP, PHONE};

/// A step of the UI (a page loading, an answer arriving).
const UI: Duration = Duration::from_secs(15);
/// A deploy, a stop (the agent's graceful stop included).
const DEPLOY: Duration = Duration::from_secs(90);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_signup_create_watch_chat_stop_admin_delete() {
    let mut env = TestApp::in_world().await;
    let b = Browser::start().await.unwrap();
    let base = env.base.clone();
    let email = format!("browser-{}@example.test", env.prefix);

    // Anonymous: the page redirects to the login form.
    b.goto(&format!("{base}/")).await.unwrap();
    b.wait_hash("#/login", UI).await.unwrap();
    b.wait_visible("#auth-email", UI).await.unwrap();
    b.screenshot("01-login").await.unwrap();

    // Sign up.
    b.click("#auth-switch").await.unwrap();
    b.wait_hash("#/signup", UI).await.unwrap();
    b.wait_text("#auth-title", "Create your account", UI)
        .await
        .unwrap();
    b.fill("#auth-email", &email).await.unwrap();
    b.fill("#auth-password", "short").await.unwrap();
    b.click("#auth-submit").await.unwrap();
    let err = b
        .wait_text("#auth-password-error", "8 to 128", UI)
        .await
        .unwrap();
    assert!(err.contains("password"), "{err}");
    b.fill("#auth-password", "correct horse battery")
        .await
        .unwrap();
    b.click("#auth-submit").await.unwrap();
    b.wait_hash("#/agents", UI).await.unwrap();
    b.wait_text("#agent-list", "No agents yet", UI)
        .await
        .unwrap();
    b.wait_text("#live-state", "live", UI).await.unwrap();
    b.screenshot("02-agents-empty").await.unwrap();

    // The create form: every seed 003 field is there.
    b.click("#new-agent").await.unwrap();
    b.wait_hash("#/new", UI).await.unwrap();
    b.wait_visible("#f-name", UI).await.unwrap();
    for id in [
        "f-name",
        "f-slug",
        "f-agent-name",
        "f-user-name",
        "f-timezone",
        "f-style",
        "f-provider",
        "f-provider-url",
        "f-model",
        "f-temperature",
        "f-api-key",
        "f-memory",
        "f-auto-save",
        "f-tg-token",
        "f-tg-users",
        "f-dc-token",
        "f-dc-guild",
        "f-dc-users",
        "f-sl-token",
        "f-sl-app",
        "f-sl-channel",
        "f-sl-users",
    ] {
        let labelled = b
            .js(
                "const i = document.getElementById(arguments[0]); \
                 return !!i && !!document.querySelector(`label[for=\"${arguments[0]}\"]`);",
                vec![json!(id)],
            )
            .await
            .unwrap();
        assert_eq!(labelled, json!(true), "#{id} with its label");
    }
    b.screenshot("03-create-form").await.unwrap();
    b.resize(PHONE).await.unwrap();
    assert!(
        !b.overflows_horizontally().await.unwrap(),
        "create form at phone width"
    );
    b.screenshot("03-create-form-phone").await.unwrap();
    b.resize(DESKTOP).await.unwrap();

    // An invalid temperature: the API's 422 is shown under the field.
    let url = env.provider.strip_prefix("custom:").unwrap().to_owned();
    b.fill("#f-name", "Browser Bot").await.unwrap();
    b.fill("#f-agent-name", "Ada").await.unwrap();
    b.fill("#f-user-name", "Tester").await.unwrap();
    b.fill("#f-timezone", "Europe/Paris").await.unwrap();
    b.fill("#f-style", "brief").await.unwrap();
    b.select("#f-provider", "custom").await.unwrap();
    b.wait_visible("#f-custom-url", UI).await.unwrap();
    b.fill("#f-custom-url", &url).await.unwrap();
    b.fill("#f-model", "stub-model").await.unwrap();
    b.fill("#f-api-key", "sk-browser-test-key-123456")
        .await
        .unwrap();
    b.fill("#f-temperature", "5").await.unwrap();
    b.click("#create-submit").await.unwrap();
    let err = b
        .wait_text("#f-temperature-error", "temperature", UI)
        .await
        .unwrap();
    assert!(!err.is_empty());
    let focused = b
        .js("return document.activeElement.id;", vec![])
        .await
        .unwrap();
    assert_eq!(
        focused,
        json!("f-temperature"),
        "the field in error gets focus"
    );
    b.wait_visible("#create-error", UI).await.unwrap();
    b.screenshot("04-create-error").await.unwrap();

    // Fixed: 202, and the agent's page shows the deploy progressing.
    b.fill("#f-temperature", "0.3").await.unwrap();
    b.click("#create-submit").await.unwrap();
    let hash = b.wait_hash("#/agents/", UI).await.unwrap();
    let id = hash.trim_start_matches("#/agents/").to_owned();
    b.wait_text("#agent-name", "Browser Bot", UI).await.unwrap();
    b.screenshot("05-agent-deploying").await.unwrap();
    // No reload from here on (the marker would be lost): the status
    // arrives through the event stream.
    b.js("window.__noReload = true;", vec![]).await.unwrap();
    b.wait("the status badge to show RUNNING", DEPLOY, || async {
        let s = b.text("#agent-status").await?;
        Ok((s.as_deref() == Some("RUNNING")).then_some(()))
    })
    .await
    .unwrap();
    let path = b
        .js(
            "return [...document.querySelectorAll('#agent-history li')].map(l => l.dataset.to).reverse();",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(
        path,
        json!(["PENDING", "STARTING", "RUNNING"]),
        "status history"
    );
    b.wait_text("#agent-steps", "RUNNING", UI).await.unwrap();
    assert_eq!(
        b.js("return window.__noReload === true;", vec![])
            .await
            .unwrap(),
        json!(true)
    );

    // Chat: the provider stand-in echoes.
    b.fill("#chat-input", "hello browser").await.unwrap();
    b.click("#chat-send").await.unwrap();
    b.wait_text(
        "#chat-log .msg.agent",
        "echo: hello browser",
        Duration::from_secs(60),
    )
    .await
    .unwrap();

    // Live logs, with the pairing code redacted; CPU and memory polled.
    let logs = b
        .wait_text("#agent-logs", "X-Pairing-Code", UI)
        .await
        .unwrap();
    assert!(logs.contains("******"), "{logs}");
    let raw = docker_cli(&["logs", "zeroclaw-browser-bot"]).unwrap();
    let code = raw
        .lines()
        .find_map(|l| l.split("X-Pairing-Code:").nth(1))
        .map(|c| c.trim().chars().take(6).collect::<String>())
        .expect("the container printed a pairing code");
    assert!(code.chars().all(|c| c.is_ascii_digit()), "{code}");
    assert!(
        !logs.contains(&code),
        "pairing code {code} shown in the logs pane"
    );
    b.wait("CPU and memory figures", UI, || async {
        let mem = b.text("#agent-mem").await?.unwrap_or_default();
        Ok(mem.contains("MiB").then_some(()))
    })
    .await
    .unwrap();
    b.screenshot("06-agent-running").await.unwrap();
    b.resize(PHONE).await.unwrap();
    assert!(
        !b.overflows_horizontally().await.unwrap(),
        "agent page at phone width"
    );
    b.screenshot("06-agent-running-phone").await.unwrap();
    b.resize(DESKTOP).await.unwrap();

    // Channels: a Telegram channel added through the API (pointed at the
    // fake Bot API the provider stand-in serves on the test network) shows
    // its health on the agent page and in the list once the stats poll has
    // read it from the agent's /health.
    let jwt = b
        .js("return sessionStorage.getItem('zcaas.jwt');", vec![])
        .await
        .unwrap()
        .as_str()
        .expect("the JWT is in sessionStorage")
        .to_owned();
    let bot_token = format!("4242:{}", "b".repeat(35));
    let (code, body) = env
        .patch_agent(
            &jwt,
            &id,
            json!({"channels": {"telegram": {
                "botToken": bot_token,
                "allowedUsers": ["*"],
                "apiBaseUrl": env.local_channel_api(),
            }}}),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    env.wait_for(&jwt, &id, DEPLOY, |a| {
        a["status"] == "RUNNING" && a["channelHealth"]["telegram"]["status"] == "ok"
    })
    .await;
    // The list first (a new route: the page renders again), then the page.
    b.goto(&format!("{base}/#/agents")).await.unwrap();
    let card = b
        .wait_text(
            &format!("li[data-agent-id=\"{id}\"] [data-channel=\"telegram\"]"),
            "ok",
            UI,
        )
        .await
        .unwrap();
    assert_eq!(card, "telegram ok");
    b.goto(&format!("{base}/#/agents/{id}")).await.unwrap();
    let shown = b
        .wait_text("#agent-channels [data-channel=\"telegram\"]", "ok", UI)
        .await
        .unwrap();
    assert_eq!(shown, "telegram ok");
    b.wait_text("#agent-status", "RUNNING", UI).await.unwrap();
    b.screenshot("06-agent-channels").await.unwrap();

    // Stop: the badge, the steps and the logs pane follow.
    b.click("#btn-stop").await.unwrap();
    b.wait_text("#agent-status", "STOPPED", DEPLOY)
        .await
        .unwrap();
    b.wait_text("#agent-logs", "log stream ended (stopped)", UI)
        .await
        .unwrap();
    let disabled = b
        .js(
            "return document.getElementById('chat-send').disabled;",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(disabled, json!(true), "no chat while STOPPED");
    b.screenshot("07-agent-stopped").await.unwrap();

    // The list shows the live status too.
    b.goto(&format!("{base}/#/agents")).await.unwrap();
    b.wait_text(&format!("li[data-agent-id=\"{id}\"] .badge"), "STOPPED", UI)
        .await
        .unwrap();
    b.screenshot("08-agents-list").await.unwrap();

    // The list follows changes made elsewhere (here: the API), live.
    b.js("window.__noReload = true;", vec![]).await.unwrap();
    let card = format!("li[data-agent-id=\"{id}\"] .badge");
    for (op, shown) in [("start", "RUNNING"), ("stop", "STOPPED")] {
        let (code, body) = match op {
            "start" => env.start(&jwt, &id).await,
            _ => env.stop(&jwt, &id).await,
        };
        assert_eq!(code, 202, "{op}: {body}");
        b.wait_text(&card, shown, DEPLOY).await.unwrap();
    }
    assert_eq!(
        b.js("return window.__noReload === true;", vec![])
            .await
            .unwrap(),
        json!(true)
    );

    // Admin: promoted in the store; the page shows every transition.
    sqlx::query("UPDATE users SET role = 'admin' WHERE email = $1")
        .bind(&email)
        .execute(env.sql())
        .await
        .unwrap();
    b.goto(&format!("{base}/#/admin")).await.unwrap();
    b.wait_hash("#/admin", UI).await.unwrap();
    b.wait_text("#admin-agents", "browser-bot", UI)
        .await
        .unwrap();
    b.wait_text(
        "#admin-agents tr[data-slug=\"browser-bot\"] td:nth-child(3)",
        "STOPPED",
        UI,
    )
    .await
    .unwrap();
    let feed = b
        .js(
            "return [...document.querySelectorAll('#admin-feed li[data-slug=\"browser-bot\"]')]\
             .map(l => l.dataset.to).reverse();",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(
        feed,
        // Deploy; the restart that applied the channel (PATCH); stop; the
        // start and stop made through the API.
        json!([
            "PENDING", "STARTING", "RUNNING", "STOPPING", "STOPPED", "STARTING", "RUNNING",
            "STOPPING", "STOPPED", "STARTING", "RUNNING", "STOPPING", "STOPPED"
        ]),
        "admin feed"
    );
    b.wait_text("#nav", "Admin", UI).await.unwrap();
    b.screenshot("09-admin").await.unwrap();
    b.resize(PHONE).await.unwrap();
    assert!(
        !b.overflows_horizontally().await.unwrap(),
        "admin page at phone width"
    );
    b.screenshot("09-admin-phone").await.unwrap();
    b.resize(DESKTOP).await.unwrap();

    // The admin page is live too.
    let (code, body) = env.start(&jwt, &id).await;
    assert_eq!(code, 202, "{body}");
    b.wait_text(
        "#admin-agents tr[data-slug=\"browser-bot\"] td:nth-child(3)",
        "RUNNING",
        DEPLOY,
    )
    .await
    .unwrap();
    b.wait_text("#admin-feed li:first-child", "RUNNING", UI)
        .await
        .unwrap();

    // The public URL and its access tokens (issue 13): the page shows
    // https://<slug>.<domain> with a curl call of its /webhook; a token
    // issued through the form (an inline 422 first) is shown once, listed
    // by its last four, known to the API and accepted by the agent; revoked
    // with a confirmation, it is gone from the list and refused. Issuing
    // and revoking restart the RUNNING agent.
    b.goto(&format!("{base}/#/agents/{id}")).await.unwrap();
    b.wait_text("#agent-status", "RUNNING", UI).await.unwrap();
    let public = b
        .wait_text("#agent-public-url", "https://", UI)
        .await
        .unwrap();
    assert_eq!(public, "https://browser-bot.agents.test");
    let curl = b
        .js(
            "return document.getElementById('public-curl').textContent;",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(
        curl,
        json!(
            "curl https://browser-bot.agents.test/webhook -H \"Authorization: Bearer <token>\" \
             -H 'Content-Type: application/json' -d '{\"message\":\"hello\"}'"
        )
    );
    b.wait_text("#token-list", "No tokens yet", UI)
        .await
        .unwrap();
    let started = started_at().expect("the agent's container");
    b.click("#token-issue").await.unwrap();
    b.wait("the API's error under the token name", UI, || async {
        let err = b.text("#token-name-error").await?.unwrap_or_default();
        Ok((!err.is_empty()).then_some(()))
    })
    .await
    .unwrap();
    b.fill("#token-name", "laptop").await.unwrap();
    b.click("#token-issue").await.unwrap();
    b.wait_visible("#token-value", UI).await.unwrap();
    let token = b
        .js(
            "return document.getElementById('token-value').value;",
            vec![],
        )
        .await
        .unwrap()
        .as_str()
        .expect("the new token in its field")
        .to_owned();
    assert!(token.starts_with("zcp_"), "{token}");
    assert_eq!(
        b.text("#token-name-error").await.unwrap().as_deref(),
        Some(""),
        "the error is cleared"
    );
    b.wait_text("#token-once", "will not be shown again", UI)
        .await
        .unwrap();
    // The agent was RUNNING: the answer says a restart is pending, and so
    // does the page.
    b.wait_text("#token-restart", "restarting", UI)
        .await
        .unwrap();
    let last_four = &token[token.len() - 4..];
    let row = b
        .wait_text("#token-list li[data-token-id]", "laptop", UI)
        .await
        .unwrap();
    assert!(row.contains(&format!("…{last_four}")), "{row}");
    assert!(row.contains('—'), "never used yet: {row}");
    assert!(!row.contains(&token), "the list shows the token: {row}");
    let token_id = b
        .js(
            "return document.querySelector('#token-list li[data-token-id]').dataset.tokenId;",
            vec![],
        )
        .await
        .unwrap();
    let tokens_path = format!("/api/agents/{id}/tokens");
    let (code, listed) = env.call(Method::GET, &tokens_path, Some(&jwt), None).await;
    assert_eq!(code, 200, "{listed}");
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
    assert_eq!(listed[0]["id"], token_id, "{listed}");
    assert_eq!(listed[0]["name"], "laptop", "{listed}");
    assert_eq!(listed[0]["lastFour"], last_four, "{listed}");
    assert!(!listed.to_string().contains(&token), "{listed}");
    b.screenshot("10-agent-token-issued").await.unwrap();
    b.resize(PHONE).await.unwrap();
    assert!(
        !b.overflows_horizontally().await.unwrap(),
        "agent page with a new token at phone width"
    );
    b.js(
        "document.getElementById('agent-tokens').scrollIntoView();",
        vec![],
    )
    .await
    .unwrap();
    b.screenshot("10-agent-token-issued-phone").await.unwrap();
    b.resize(DESKTOP).await.unwrap();
    // The agent restarts with the token and accepts it.
    let started = wait_restarted(&b, &env, &jwt, &id, &started).await;
    let (code, reply) = webhook(&env, &jwt, &id, &token).await;
    assert_eq!(code, 200, "{reply}");
    assert_eq!(reply["response"], "echo: through a token", "{reply}");

    // Revoke: a confirmation first; then the list is empty and the agent,
    // restarted, refuses the token.
    b.click("#token-list li[data-token-id] .revoke")
        .await
        .unwrap();
    b.click("#token-list li[data-token-id] .confirm-revoke")
        .await
        .unwrap();
    b.wait_text("#token-list", "No tokens yet", UI)
        .await
        .unwrap();
    let gone = b
        .js(
            "return !document.querySelector('#token-list li[data-token-id]') \
             && document.getElementById('token-new').classList.contains('hidden');",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(gone, json!(true), "no token left on the page");
    let (code, listed) = env.call(Method::GET, &tokens_path, Some(&jwt), None).await;
    assert_eq!(code, 200, "{listed}");
    assert_eq!(listed, json!([]));
    b.screenshot("11-agent-token-revoked").await.unwrap();
    wait_restarted(&b, &env, &jwt, &id, &started).await;
    let (code, reply) = webhook(&env, &jwt, &id, &token).await;
    assert_eq!(code, 401, "a revoked token: {reply}");

    // Delete, with a confirmation step; back on the list, it is gone.
    b.goto(&format!("{base}/#/agents/{id}")).await.unwrap();
    b.wait_text("#agent-status", "RUNNING", UI).await.unwrap();
    b.click("#btn-delete").await.unwrap();
    b.click("#btn-confirm-delete").await.unwrap();
    b.wait_hash("#/agents", UI).await.unwrap();
    b.wait("the agent to leave the list", UI, || async {
        let gone = b
            .js(
                "return !document.querySelector(`li[data-agent-id=\"${arguments[0]}\"]`) \
                 && !!document.querySelector('#agent-list li');",
                vec![json!(id)],
            )
            .await?;
        Ok((gone == json!(true)).then_some(()))
    })
    .await
    .unwrap();
    assert!(
        agent_containers(&id).is_empty(),
        "container left after delete"
    );

    // Log out, and a wrong password is refused inline.
    b.click("#logout").await.unwrap();
    b.wait_hash("#/login", UI).await.unwrap();
    b.fill("#auth-email", &email).await.unwrap();
    b.fill("#auth-password", "wrong password!").await.unwrap();
    b.click("#auth-submit").await.unwrap();
    b.wait_text("#auth-error", "invalid email or password", UI)
        .await
        .unwrap();

    b.close().await;
    env.shutdown().await;
}

/// When the agent's container last started (`State.StartedAt`).
fn started_at() -> anyhow::Result<String> {
    docker_cli(&[
        "inspect",
        "-f",
        "{{.State.StartedAt}}",
        "zeroclaw-browser-bot",
    ])
}

/// Waits until the agent's container has started again since `before`
/// (the restart that applies issued or revoked tokens) and the agent is
/// RUNNING, for the API and on the page; returns the new start time.
async fn wait_restarted(b: &Browser, env: &TestApp, jwt: &str, id: &str, before: &str) -> String {
    b.wait("the agent restarted and RUNNING again", DEPLOY, || async {
        let now = started_at()?;
        let (_, agent) = env.get_agent(jwt, id).await;
        let shown = b.text("#agent-status").await?;
        Ok(
            (now != before && agent["status"] == "RUNNING" && shown.as_deref() == Some("RUNNING"))
                .then_some(now),
        )
    })
    .await
    .unwrap()
}

/// `POST /webhook` on the agent's gateway (its host port) with `token` as
/// the bearer token → (status, body).
async fn webhook(env: &TestApp, jwt: &str, id: &str, token: &str) -> (StatusCode, Value) {
    let (code, agent) = env.get_agent(jwt, id).await;
    assert_eq!(code, 200, "{agent}");
    let port = agent["containerPort"].as_u64().expect("a host port");
    let res = env
        .http
        .post(format!("http://127.0.0.1:{port}/webhook"))
        .bearer_auth(token)
        .json(&json!({"message": "through a token"}))
        .send()
        .await
        .expect("the agent's gateway answers");
    let code = res.status();
    let text = res.text().await.expect("a body");
    (
        code,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}
