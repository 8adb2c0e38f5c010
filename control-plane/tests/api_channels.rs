//! Channels through the API (issue 12), on the run's backend: one bot token
//! serves one agent across the installation (409 naming the field, kept as
//! a keyed hash, freed by a delete), and each configured channel's health
//! is shown on the agent, in the admin list and in `/metrics`.

use reqwest::StatusCode;
use serde_json::{json, Value};
use sqlx::Row;
use zcaas_test_support::{assert_error, minimal_agent_body, TestApp};

const TG: &str = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw";
const SLACK_APP: &str = "xapp-1-A0123456789-0123456789012-abcdefabcdef";
const SLACK_BOT: &str = "xoxb-1111111111-2222222222222-NotARealToken0123456789";
const DISCORD: &str = "MTIzNDU2Nzg5MDEyMzQ1Njc4.GtestA.not-a-real-token_0123456789abcdefghij";

fn with_channels(name: &str, channels: Value) -> Value {
    let mut b = minimal_agent_body(name);
    b["channels"] = channels;
    b
}

fn telegram(token: &str) -> Value {
    json!({"telegram": {"botToken": token, "allowedUsers": ["*"]}})
}

/// The `channel_tokens` rows of agent `id`: (hash, field).
async fn token_rows(app: &TestApp, id: &str) -> Vec<(String, String)> {
    sqlx::query("SELECT token_hash, field FROM channel_tokens WHERE agent_id = $1")
        .bind(id)
        .fetch_all(app.sql())
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

#[tokio::test]
async fn one_bot_token_serves_one_agent() {
    let app = TestApp::spawn().await;
    let alice = app.register_email("alice@example.com").await;
    let bob = app.register_email("bob@example.com").await;

    let (status, first) = app
        .create_agent(&alice, with_channels("First", telegram(TG)))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{first}");
    let first_id = first["id"].as_str().unwrap().to_owned();
    // Kept as a keyed hash: never the token, nor any part of it.
    let rows = token_rows(&app, &first_id).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    let (hash, field) = &rows[0];
    assert_eq!(field, "channels.telegram.botToken");
    assert_eq!(hash.len(), 64);
    assert!(hash.chars().all(|c| c.is_ascii_hexdigit()), "{hash}");
    assert!(!hash.contains("AAHdqTcv") && !hash.contains("123456789"));

    // Another user's agent with the same token: 409 naming the field,
    // nothing created, and the token not echoed.
    let (status, body) = app
        .create_agent(&bob, with_channels("Second", telegram(TG)))
        .await;
    assert_error(
        status,
        &body,
        StatusCode::CONFLICT,
        Some("channels.telegram.botToken"),
    );
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("already used by another agent"), "{body}");
    assert!(!body.to_string().contains(TG), "{body}");
    let (_, bobs) = app.list_agents(&bob).await;
    assert_eq!(bobs, json!([]));
    let (slug_free, _) = app
        .create_agent(&bob, {
            let mut b = with_channels(
                "Second",
                telegram("987654321:AAF0other-token-not-real_0123456789"),
            );
            b["slug"] = json!("second");
            b
        })
        .await;
    assert_eq!(
        slug_free,
        StatusCode::ACCEPTED,
        "the refused create left nothing"
    );

    // The same token in a PATCH of another agent: 409, nothing changed.
    let (_, second) = app.list_agents(&bob).await;
    let second_id = second[0]["id"].as_str().unwrap().to_owned();
    let slack = json!({"slack": {"botToken": SLACK_BOT, "appToken": SLACK_APP,
        "allowedUsers": ["U0123ABCD"]}, "telegram": {"botToken": TG, "allowedUsers": ["*"]}});
    let (status, body) = app
        .patch_agent(
            &bob,
            &second_id,
            json!({"name": "Thief", "channels": slack}),
        )
        .await;
    assert_error(
        status,
        &body,
        StatusCode::CONFLICT,
        Some("channels.telegram.botToken"),
    );
    let (_, unchanged) = app.get_agent(&bob, &second_id).await;
    assert_eq!(unchanged["name"], "Second");
    assert!(unchanged["channels"]["slack"].is_null(), "{unchanged}");

    // The holder PATCHing its own token (and adding Slack) is fine.
    let (status, body) = app
        .patch_agent(&alice, &first_id, json!({"channels": slack}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let mut fields: Vec<String> = token_rows(&app, &first_id)
        .await
        .into_iter()
        .map(|(_, f)| f)
        .collect();
    fields.sort();
    assert_eq!(
        fields,
        [
            "channels.slack.appToken",
            "channels.slack.botToken",
            "channels.telegram.botToken"
        ]
    );
    let (status, body) = app
        .create_agent(
            &bob,
            with_channels(
                "Third",
                json!({"slack": {"botToken": "xoxb-9999999999-9999999999999-AnotherBotNotReal0123", "appToken": SLACK_APP,
                "allowedUsers": ["*"]}}),
            ),
        )
        .await;
    assert_error(
        status,
        &body,
        StatusCode::CONFLICT,
        Some("channels.slack.appToken"),
    );

    // After DELETE the tokens are free again.
    let (status, body) = app.delete_agent(&alice, &first_id).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    assert!(token_rows(&app, &first_id).await.is_empty());
    let (status, body) = app
        .patch_agent(&bob, &second_id, json!({"channels": telegram(TG)}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // Clearing the channels frees them too.
    let (status, _) = app
        .patch_agent(&bob, &second_id, json!({"channels": null}))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(token_rows(&app, &second_id).await.is_empty());
}

#[tokio::test]
async fn channel_health_is_shown_for_configured_channels() {
    let app = TestApp::spawn().await;
    let jwt = app.register_email("carol@example.com").await;
    let (_, agent) = app
        .create_agent(
            &jwt,
            with_channels(
                "Chatty",
                json!({"telegram": {"botToken": TG, "allowedUsers": ["*"]},
                       "discord": {"botToken": DISCORD, "allowedUsers": ["*"]}}),
            ),
        )
        .await;
    let id = agent["id"].as_str().unwrap().to_owned();
    let (_, plain) = app.create_agent(&jwt, minimal_agent_body("Plain")).await;
    assert!(plain["channelHealth"].is_null(), "{plain}");

    // A report as the stats poll stores it (Slack is not configured).
    let report = json!({
        "telegram": {"status": "error", "lastError": "409 Conflict: another poller", "restartCount": 2},
        "slack": {"status": "ok", "lastError": null, "restartCount": 0},
    });
    sqlx::query("UPDATE agents SET channel_health = $1 WHERE id = $2")
        .bind(report.to_string())
        .bind(&id)
        .execute(app.sql())
        .await
        .unwrap();
    let (status, shown) = app.get_agent(&jwt, &id).await;
    assert_eq!(status, StatusCode::OK);
    let health = &shown["channelHealth"];
    assert_eq!(
        health.as_object().unwrap().keys().collect::<Vec<_>>(),
        ["discord", "telegram"],
        "{shown}"
    );
    // This agent never reached RUNNING here: the last report's error stays
    // visible, its status reads `offline`.
    assert_eq!(health["telegram"]["status"], "offline");
    assert_eq!(
        health["telegram"]["lastError"],
        "409 Conflict: another poller"
    );
    assert_eq!(health["telegram"]["restartCount"], 2);
    assert_eq!(health["discord"]["status"], "offline");
    assert!(!shown.to_string().contains(TG));
    let (_, list) = app.list_agents(&jwt).await;
    let listed = list
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["id"] == id.as_str())
        .unwrap();
    assert_eq!(listed["channelHealth"], *health);

    // The admin list carries the field and its filter; `/metrics` the gauge.
    let admin = app.admin("root@example.com").await;
    let (status, all) = app
        .call(
            reqwest::Method::GET,
            "/api/admin/agents",
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(all[0]["channelErrors"].is_array(), "{all}");
    let (status, failing) = app
        .call(
            reqwest::Method::GET,
            "/api/admin/agents?channelError=true",
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(failing, json!([]), "only RUNNING agents' reports count");
    let metrics = app.metrics().await;
    assert!(
        metrics.contains("zcaas_agent_channel_up{channel=\"telegram\"} 0"),
        "{metrics}"
    );
}
