//! Unit tests of the validation rules (kept apart to keep `validation.rs` short).

use super::*;
use crate::model::{DiscordChannel, SlackChannel, TelegramChannel};

/// Tokens in each platform's shape (not real ones).
const TG_TOKEN: &str = "123456789:AAE0testTokenNotReal-0123456789_ab";
const DISCORD_TOKEN: &str = "MTIzNDU2Nzg5MDEyMzQ1Njc4.GtestA.not-a-real-token_0123456789abcdefghij";
const SLACK_BOT: &str = "xoxb-1234567890-1234567890123-NotARealToken0123456789";
const SLACK_APP: &str = "xapp-1-A0123456789-1234567890123-0123456789abcdef";

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
            bot_token: TG_TOKEN.into(),
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
        bot_token: SLACK_BOT.into(),
        app_token: None,
        channel_id: Some("C 1".into()),
        allowed_users: vec!["*".into()],
    });
    assert_eq!(channels(&ch).unwrap_err().field, "channels.slack.channelId");
}

#[test]
fn channel_tokens_have_their_platform_shape() {
    let telegram = |t: &str| Channels {
        telegram: Some(TelegramChannel {
            api_base_url: None,
            bot_token: t.into(),
            allowed_users: vec!["*".into()],
        }),
        ..Default::default()
    };
    let discord = |t: &str| Channels {
        discord: Some(DiscordChannel {
            api_base_url: None,
            bot_token: t.into(),
            guild_id: None,
            allowed_users: vec!["*".into()],
        }),
        ..Default::default()
    };
    let slack = |bot: &str, app: Option<&str>| Channels {
        slack: Some(SlackChannel {
            api_base_url: None,
            bot_token: bot.into(),
            app_token: app.map(str::to_owned),
            channel_id: None,
            allowed_users: vec!["*".into()],
        }),
        ..Default::default()
    };
    for ok in [
        telegram(TG_TOKEN),
        // Telegram's own example (34 characters after the colon).
        telegram("123456:ABC-DEF1234ghIkl-zyx57W2v1u123ew11"),
        telegram(&format!("7{}:{}", "0".repeat(9), "A".repeat(30))),
        discord(DISCORD_TOKEN),
        // Older tokens: a 6-character timestamp and a 27-character HMAC.
        discord("MTk4NjIyNDgzNDcxOTI1MjQ4.Cl2FMQ.ZnCjm1XVW7vRze4b7Cq4se7kKWs"),
        slack(SLACK_BOT, None),
        slack(SLACK_BOT, Some(SLACK_APP)),
        // Only the prefix and alphabet are held: Slack may change the rest.
        slack("xoxb-T0123-NotReal", None),
    ] {
        assert!(channels(&ok).is_ok(), "{ok:?}");
    }
    let tg = "channels.telegram.botToken";
    let dc = "channels.discord.botToken";
    let sb = "channels.slack.botToken";
    let sa = "channels.slack.appToken";
    let short = format!("123456:{}", "A".repeat(29));
    let huge = format!("123456:{}", "A".repeat(600));
    let secret = "SuperSecretTokenValue0123456789";
    let no_colon = format!("123456{secret}");
    let letters_id = format!("bot123:{secret}");
    let slack_secret = format!("xoxb-{secret}");
    let slack_app_in_bot = format!("xapp-{secret}");
    let slack_user = format!("xoxp-{secret}");
    let slack_bot_in_app = format!("xoxb-{secret}");
    for (bad, field) in [
        (telegram(""), tg),
        (telegram("123:tok"), tg),
        (telegram("1:abc"), tg),
        (telegram(&short), tg),
        (telegram(&huge), tg),
        (telegram(&no_colon), tg),
        (telegram(&letters_id), tg),
        (telegram(&format!(":{secret}")), tg),
        (telegram(&format!("123456:{secret}!")), tg),
        (telegram(&format!("123456:{secret}=")), tg),
        (telegram(&format!("123456:{secret} ")), tg),
        (telegram("123…ab"), tg),
        (discord("t0ken"), dc),
        (discord("discord-token-123"), dc),
        (discord(&format!("Bot {DISCORD_TOKEN}")), dc),
        (discord("MTIzNDU2Nzg5MDEyMzQ1Njc4.GtestA"), dc),
        (
            discord("MTIzNDU2.GtestA.not-a-real-token_0123456789abcdefghij"),
            dc,
        ),
        (
            discord("MTIzNDU2Nzg5MDEyMzQ1Njc4.Gt.not-a-real-token_0123456789ab"),
            dc,
        ),
        (discord("MTIzNDU2Nzg5MDEyMzQ1Njc4.GtestA.short"), dc),
        (discord(&format!("{DISCORD_TOKEN}.extra")), dc),
        (
            discord("MTIzNDU2Nzg5MDEyMzQ1Njc4.GtestA.not+a/real=token0123456789abc"),
            dc,
        ),
        (slack("xoxb-1", None), sb),
        (slack(secret, None), sb),
        (slack(&slack_app_in_bot, None), sb),
        (slack(&slack_user, None), sb),
        (slack(&format!("XOXB-{secret}"), None), sb),
        (slack(&format!("{slack_secret}_x"), None), sb),
        (slack(SLACK_BOT, Some("")), sa),
        (slack(SLACK_BOT, Some("xapp-1")), sa),
        (slack(SLACK_BOT, Some(&slack_bot_in_app)), sa),
        (slack(SLACK_BOT, Some(secret)), sa),
    ] {
        let err = channels(&bad).unwrap_err();
        assert_eq!(err.field, field, "{bad:?}");
        // The reason says what is expected, never the value.
        assert!(err.message.starts_with(&format!("{field}: ")), "{err:?}");
        for part in [secret, "t0ken", "0123456789abcdefghij", "AAAAAAAAAA"] {
            assert!(!err.message.contains(part), "{part} echoed: {err:?}");
        }
    }
    for (bad, shape) in [
        (telegram("123:tok"), "numeric id, a colon"),
        (discord("t0ken"), "separated by dots"),
        (slack("xoxb-1", None), "xoxb-"),
        (slack(SLACK_BOT, Some("xapp-1")), "xapp-"),
    ] {
        let err = channels(&bad).unwrap_err();
        assert!(err.message.contains(shape), "{err:?}");
    }
}

#[test]
fn allow_lists_are_checked_per_platform() {
    let telegram = |users: &[&str]| Channels {
        telegram: Some(TelegramChannel {
            api_base_url: None,
            bot_token: TG_TOKEN.into(),
            allowed_users: users.iter().map(|u| (*u).to_owned()).collect(),
        }),
        ..Default::default()
    };
    let discord = |users: &[&str]| Channels {
        discord: Some(DiscordChannel {
            api_base_url: None,
            bot_token: DISCORD_TOKEN.into(),
            guild_id: None,
            allowed_users: users.iter().map(|u| (*u).to_owned()).collect(),
        }),
        ..Default::default()
    };
    let slack = |users: &[&str]| Channels {
        slack: Some(SlackChannel {
            api_base_url: None,
            bot_token: SLACK_BOT.into(),
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
