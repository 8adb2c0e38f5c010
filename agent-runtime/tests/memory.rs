//! Memory per conversation through the real gateway: `/webhook` and channel chats
//! ([`ChannelContext::answer`]) each replay only their own history to the provider, and a
//! database written before conversations existed is the webhook's history.

#![allow(clippy::unwrap_used)]

mod common;

use agent_runtime::channels::ChannelContext;
use agent_runtime::memory::MemoryBackend;
use common::{config_for, openai_reply, Stub, TestApp};
use serde_json::{json, Value};

/// The texts of the user and assistant messages of a provider call (the system prompt left
/// out), and the system prompt.
fn history(body: &Value) -> (Vec<String>, String) {
    let msgs = body["messages"].as_array().unwrap();
    let system = msgs[0]["content"].as_str().unwrap_or_default().to_owned();
    let rest = msgs[1..]
        .iter()
        .map(|m| m["content"].as_str().unwrap().to_owned())
        .collect();
    (rest, system)
}

#[tokio::test]
async fn webhook_and_chats_keep_separate_histories() {
    for backend in [MemoryBackend::Sqlite, MemoryBackend::Markdown] {
        let stub = Stub::start("127.0.0.1:0", std::time::Duration::ZERO, |call| {
            let last = call.body["messages"]
                .as_array()
                .and_then(|m| m.last())
                .and_then(|m| m["content"].as_str())
                .unwrap_or_default()
                .to_owned();
            (200, openai_reply(&format!("re: {last}")))
        })
        .await;
        let t = TestApp::with("openai", &stub, |c| c.memory.backend = backend).await;
        let token = t.pair().await;
        let ctx = ChannelContext::new(t.app().state().clone());

        assert_eq!(t.webhook(&token, "webhook one").await.0, 200);
        ctx.answer("telegram:-100123", "telegram one")
            .await
            .unwrap();
        ctx.answer("slack:C1", "slack one").await.unwrap();
        assert_eq!(t.webhook(&token, "webhook two").await.0, 200);
        ctx.answer("telegram:-100123", "telegram two")
            .await
            .unwrap();
        ctx.answer("slack:C1", "slack two").await.unwrap();

        let calls = stub.calls();
        assert_eq!(calls.len(), 6, "{backend:?}");
        for (call, own, others) in [
            (&calls[3], "webhook one", ["telegram", "slack"]),
            (&calls[4], "telegram one", ["webhook", "slack"]),
            (&calls[5], "slack one", ["webhook", "telegram"]),
        ] {
            let (turns, system) = history(&call.body);
            let seen = format!("{system}\n{}", turns.join("\n"));
            assert!(seen.contains(own), "{backend:?}: {seen}");
            assert!(seen.contains(&format!("re: {own}")), "{backend:?}: {seen}");
            for other in others {
                assert!(
                    !seen.contains(other),
                    "{backend:?}: {own} saw {other}: {seen}"
                );
            }
            if backend == MemoryBackend::Sqlite {
                // Replayed as chat history: the earlier exchange, then the new message.
                assert_eq!(turns.len(), 3, "{backend:?}: {turns:?}");
                assert_eq!(turns[0], own);
            }
        }

        let ws = t.workspace();
        let day = chrono::Utc::now().format("%Y-%m-%d").to_string();
        if backend == MemoryBackend::Markdown {
            // The webhook's log stays where it always was; chats get their own directory.
            let webhook = std::fs::read_to_string(ws.join(format!("memory/{day}.md"))).unwrap();
            assert!(webhook.contains("webhook two") && !webhook.contains("telegram"));
            let telegram = ws.join(format!("memory/conversations/telegram_3A-100123/{day}.md"));
            assert!(std::fs::read_to_string(telegram)
                .unwrap()
                .contains("**User:** telegram two"));
        } else {
            let db = rusqlite::Connection::open(ws.join("memory/brain.db")).unwrap();
            let mut stmt = db
                .prepare("SELECT DISTINCT conversation FROM turns ORDER BY conversation")
                .unwrap();
            let rows = stmt.query_map([], |r| r.get(0)).unwrap();
            let conversations: Vec<String> = rows.collect::<Result<_, _>>().unwrap();
            assert_eq!(conversations, ["slack:C1", "telegram:-100123", "webhook"]);
        }
    }
}

#[tokio::test]
async fn the_webhook_recalls_a_database_from_before_conversations() {
    let stub = Stub::fixed(200, openai_reply("Ada")).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config_for(dir.path(), "openai", &stub.url());
    let memory = dir.path().join("workspace/memory");
    std::fs::create_dir_all(&memory).unwrap();
    {
        // brain.db as earlier versions left it in an agent's volume.
        let db = rusqlite::Connection::open(memory.join("brain.db")).unwrap();
        db.pragma_update(None, "journal_mode", "WAL").unwrap();
        db.execute_batch(
            "CREATE TABLE turns (
                 id INTEGER PRIMARY KEY AUTOINCREMENT,
                 created_at TEXT NOT NULL,
                 role TEXT NOT NULL CHECK (role IN ('user', 'assistant')),
                 content TEXT NOT NULL
             );
             INSERT INTO turns (created_at, role, content) VALUES
                 ('2026-01-01T00:00:00+00:00', 'user', 'my name is Ada'),
                 ('2026-01-01T00:00:00+00:00', 'assistant', 'hello Ada');",
        )
        .unwrap();
    }
    let t = TestApp::start(cfg, dir).await;
    let token = t.pair().await;
    assert_eq!(t.webhook(&token, "what is my name?").await.0, 200);
    let ctx = ChannelContext::new(t.app().state().clone());
    ctx.answer("discord:42", "what is my name?").await.unwrap();

    let calls = stub.calls();
    let (webhook, _) = history(&calls[0].body);
    assert_eq!(webhook, ["my name is Ada", "hello Ada", "what is my name?"]);
    let (discord, _) = history(&calls[1].body);
    assert_eq!(discord, ["what is my name?"]);
    assert_eq!(
        calls[0].body["messages"][1],
        json!({"role": "user", "content": "my name is Ada"})
    );
}
