//! Unit tests of the validation rules (kept apart to keep `validation.rs` short).

use super::*;
use crate::model::{DiscordChannel, SlackChannel, TelegramChannel};

#[test]
fn slugs_are_dns_labels_and_not_reserved() {
    for ok in ["a", "my-agent", "agent-1", "0abc", &"a".repeat(63)] {
        assert_eq!(slug(ok).as_deref(), Ok(ok), "{ok}");
    }
    for bad in [
        "",
        "-a",
        "a-",
        "A",
        "a.b",
        "a b",
        "a`b",
        "a&&b",
        "a||b",
        "a@b",
        "a*",
        "a\nb",
        "é",
        "a_b",
        &"a".repeat(64),
        "admin",
        "www",
        "traefik",
        "localhost",
        "api",
    ] {
        let err = slug(bad).unwrap_err();
        assert_eq!(err.field, "slug", "{bad:?}");
    }
}

#[test]
fn slugs_derive_from_names() {
    assert_eq!(derive_slug("My Agent!"), "my-agent");
    assert_eq!(derive_slug("  --Hello__World--  "), "hello-world");
    assert_eq!(derive_slug("Ünïcode"), "n-code");
    assert_eq!(derive_slug("日本"), "");
    let long = derive_slug(&format!("{}-x", "a".repeat(62)));
    assert_eq!(long, "a".repeat(62));
    assert!(slug(&derive_slug(&"ab ".repeat(40))).is_ok());
}

#[test]
fn emails() {
    assert_eq!(email(" Alice@Example.COM ").unwrap(), "alice@example.com");
    assert!(email("admin@localhost").is_ok());
    for bad in [
        "", "a", "a@", "@b", "a@b@c", "a b@c.d", "a@-b.c", "a@b..c", ".a@b.c", "a@b\n.c",
    ] {
        assert_eq!(email(bad).unwrap_err().field, "email", "{bad:?}");
    }
    assert!(email(&format!("{}@{}.com", "a".repeat(60), "b".repeat(200))).is_err());
}

#[test]
fn passwords() {
    assert!(password("12345678").is_ok());
    assert!(password("1234567").is_err());
    assert!(password(&"x".repeat(129)).is_err());
    assert!(password(&"x".repeat(128)).is_ok());
}

#[test]
fn lines_and_texts() {
    assert_eq!(line("name", "  Bob  ", 1, 64).unwrap(), "Bob");
    assert!(line("name", "   ", 1, 64).is_err());
    assert!(line("name", &"é".repeat(64), 1, 64).is_ok());
    assert!(line("name", &"é".repeat(65), 1, 64).is_err());
    assert!(line("name", "a\nb", 1, 64).is_err());
    assert!(text("communicationStyle", "line one\nline two\t", 2000).is_ok());
    assert!(text("communicationStyle", "bell\u{7}", 2000).is_err());
    assert!(text("communicationStyle", &"x".repeat(2001), 2000).is_err());
}

#[test]
fn timezones() {
    for ok in [
        "UTC",
        "Europe/Paris",
        "America/Argentina/Buenos_Aires",
        "Etc/GMT+5",
    ] {
        assert!(timezone(ok).is_ok(), "{ok}");
    }
    for bad in [
        "",
        "Europe/",
        "/Paris",
        "Europe Paris",
        "../etc",
        &"A".repeat(65),
    ] {
        assert_eq!(timezone(bad).unwrap_err().field, "timezone", "{bad:?}");
    }
}

#[test]
fn providers_and_models() {
    assert!(provider("openai").is_ok());
    assert!(provider("custom:https://llm.example.com/v1").is_ok());
    for bad in [
        "",
        "OpenAI",
        "custom:",
        "custom:ftp://x",
        "custom:not a url",
        "foo",
    ] {
        assert_eq!(provider(bad).unwrap_err().field, "provider", "{bad:?}");
    }
    assert!(model("anthropic/claude-3.5-sonnet:beta@v1").is_ok());
    for bad in ["", "a b", "a\"b", &"m".repeat(129)] {
        assert_eq!(model(bad).unwrap_err().field, "model", "{bad:?}");
    }
}

#[test]
fn numbers_and_enums() {
    assert!(temperature(0.0).is_ok() && temperature(2.0).is_ok());
    assert!(
        temperature(-0.1).is_err() && temperature(2.01).is_err() && temperature(f64::NAN).is_err()
    );
    assert!(memory_backend("markdown").is_ok());
    assert_eq!(memory_backend("redis").unwrap_err().field, "memoryBackend");
}

#[test]
fn secrets_and_channels() {
    assert!(api_key("sk-abc").is_ok());
    for bad in ["", "sk abc", "sk\u{0}", "sk-…abcd", &"k".repeat(513)] {
        assert_eq!(api_key(bad).unwrap_err().field, "apiKey", "{bad:?}");
    }
    let mut ch = Channels {
        telegram: Some(TelegramChannel {
            api_base_url: None,
            bot_token: "123:abc".into(),
            allowed_users: vec!["@alice".into()],
        }),
        ..Default::default()
    };
    assert!(channels(&ch).is_ok());
    ch.telegram = Some(TelegramChannel {
        api_base_url: None,
        bot_token: String::new(),
        allowed_users: vec![],
    });
    assert_eq!(
        channels(&ch).unwrap_err().field,
        "channels.telegram.botToken"
    );
    ch.telegram = None;
    ch.slack = Some(SlackChannel {
        api_base_url: None,
        bot_token: "xoxb-1".into(),
        app_token: None,
        channel_id: Some("C 1".into()),
        allowed_users: vec!["*".into()],
    });
    assert_eq!(channels(&ch).unwrap_err().field, "channels.slack.channelId");
}

#[test]
fn allow_lists_are_checked_per_platform() {
    let telegram = |users: &[&str]| Channels {
        telegram: Some(TelegramChannel {
            api_base_url: None,
            bot_token: "123:abc".into(),
            allowed_users: users.iter().map(|u| (*u).to_owned()).collect(),
        }),
        ..Default::default()
    };
    let discord = |users: &[&str]| Channels {
        discord: Some(DiscordChannel {
            api_base_url: None,
            bot_token: "t0ken".into(),
            guild_id: None,
            allowed_users: users.iter().map(|u| (*u).to_owned()).collect(),
        }),
        ..Default::default()
    };
    let slack = |users: &[&str]| Channels {
        slack: Some(SlackChannel {
            api_base_url: None,
            bot_token: "xoxb-1".into(),
            app_token: None,
            channel_id: None,
            allowed_users: users.iter().map(|u| (*u).to_owned()).collect(),
        }),
        ..Default::default()
    };
    for ok in [
        telegram(&["*"]),
        telegram(&["@alice_b", "alice_b", "123456789"]),
        discord(&["*"]),
        discord(&["123456789012345678"]),
        slack(&["*"]),
        slack(&["U0123ABCD", "W9ZZ"]),
    ] {
        assert!(channels(&ok).is_ok(), "{ok:?}");
    }
    for (bad, field) in [
        (telegram(&["@bob"]), "channels.telegram.allowedUsers[0]"),
        (
            telegram(&["@alice", "x y"]),
            "channels.telegram.allowedUsers[1]",
        ),
        (telegram(&["**"]), "channels.telegram.allowedUsers[0]"),
        (discord(&["alice#1234"]), "channels.discord.allowedUsers[0]"),
        (discord(&["12345"]), "channels.discord.allowedUsers[0]"),
        (slack(&["@alice"]), "channels.slack.allowedUsers[0]"),
        (slack(&["u0123abcd"]), "channels.slack.allowedUsers[0]"),
    ] {
        assert_eq!(channels(&bad).unwrap_err().field, field, "{bad:?}");
    }
    for (empty, field) in [
        (telegram(&[]), "channels.telegram.allowedUsers"),
        (discord(&[]), "channels.discord.allowedUsers"),
        (slack(&[]), "channels.slack.allowedUsers"),
    ] {
        let err = channels(&empty).unwrap_err();
        assert_eq!(err.field, field);
        assert!(err.message.contains(r#"["*"]"#), "{}", err.message);
    }
}

#[test]
fn internal_addresses() {
    for ip in [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "0.0.0.0",
        "100.64.0.1",
        "::1",
        "::",
        "fe80::1",
        "fd00:ec2::254",
        "::ffff:127.0.0.1",
        "64:ff9b::a9fe:a9fe",
    ] {
        assert!(is_internal(ip.parse().unwrap()), "{ip}");
    }
    for ip in ["1.1.1.1", "8.8.8.8", "2606:4700::1111"] {
        assert!(!is_internal(ip.parse().unwrap()), "{ip}");
    }
}

#[tokio::test]
async fn base_urls() {
    for bad in [
        "http://127.0.0.1:11434",
        "http://localhost:8080",
        "http://169.254.169.254/latest",
        "http://[::1]/",
        "http://10.0.0.1",
        "http://metadata.google.internal",
        "ftp://example.com",
        "https://user:pw@example.com",
        "not a url",
    ] {
        assert_eq!(
            base_url("providerUrl", bad, false).await.unwrap_err().field,
            "providerUrl",
            "{bad}"
        );
    }
    assert!(base_url("providerUrl", "http://127.0.0.1:11434", true)
        .await
        .is_ok());
    assert!(base_url("providerUrl", "ftp://127.0.0.1", true)
        .await
        .is_err());
}
