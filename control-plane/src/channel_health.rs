//! Channels seen from the control plane (issue 12): which tokens an agent's
//! channels carry (each one serves one agent across the installation, kept
//! as keyed hashes in `channel_tokens`), and each channel's health as the
//! agent's `/health` reports it (`runtime.components["channel:<name>"]`),
//! read by the stats poll and stored as JSON in `agents.channel_health`.
//!
//! Everything here is pure: parsing, the stored form, what the API shows
//! and what `/metrics` counts.
//!
//! Architecture invariant: a channel token never leaves this module other
//! than hashed ([`token_rows`]) or redacted ([`parse`] replaces the agent's
//! own tokens in `last_error`, though the runtime already keeps them out).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::model::Channels;
use crate::secrets::SecretBox;
use crate::store::agents::ChannelToken;

/// The channels the control plane configures, in display order.
pub const CHANNELS: [&str; 3] = ["telegram", "discord", "slack"];

/// Longest `lastError` kept, in characters.
const MAX_ERROR: usize = 300;

/// One channel's health: `status` is `ok`, `starting` or `error` as the
/// runtime reports it (anything else reads `unknown`); the API also shows
/// `unknown` (configured, no report yet) and `offline` (the agent is not
/// RUNNING; the last report's error and restart count are kept).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChannelHealth {
    pub status: String,
    pub last_error: Option<String>,
    pub restart_count: u64,
}

/// The stored report: channel name → health (only channels the agent's
/// `/health` reported).
pub type Report = BTreeMap<String, ChannelHealth>;

/// Every token `channels` carries, with the API field it came from.
pub fn tokens(c: &Channels) -> Vec<(&'static str, &str)> {
    let mut out = Vec::new();
    if let Some(t) = &c.telegram {
        out.push(("channels.telegram.botToken", t.bot_token.as_str()));
    }
    if let Some(d) = &c.discord {
        out.push(("channels.discord.botToken", d.bot_token.as_str()));
    }
    if let Some(s) = &c.slack {
        out.push(("channels.slack.botToken", s.bot_token.as_str()));
        if let Some(app) = &s.app_token {
            out.push(("channels.slack.appToken", app.as_str()));
        }
    }
    out
}

/// The `channel_tokens` rows of `c`: every token's keyed hashes (one per
/// master key), each hash once (a token given twice is claimed once, under
/// its first field).
pub fn token_rows(secrets: &SecretBox, c: &Channels) -> Vec<ChannelToken> {
    let mut rows: Vec<ChannelToken> = Vec::new();
    for (field, token) in tokens(c) {
        for hash in secrets.token_hashes(token) {
            if !rows.iter().any(|r| r.hash == hash) {
                rows.push(ChannelToken {
                    hash,
                    field: field.to_owned(),
                });
            }
        }
    }
    rows
}

/// The configured channels of `c`, in [`CHANNELS`] order.
pub fn configured(c: &Channels) -> Vec<&'static str> {
    let on = [c.telegram.is_some(), c.discord.is_some(), c.slack.is_some()];
    CHANNELS
        .iter()
        .zip(on)
        .filter_map(|(name, on)| on.then_some(*name))
        .collect()
}

/// The channel report of an agent's `/health` body: each of [`CHANNELS`]
/// present as `runtime.components["channel:<name>"]`, its `last_error`
/// with every one of `secrets` (the agent's own tokens) replaced and cut to
/// [`MAX_ERROR`] characters. Absent or malformed parts are skipped.
pub fn parse(health: &serde_json::Value, secrets: &[&str]) -> Report {
    let components = &health["runtime"]["components"];
    let mut report = Report::new();
    for name in CHANNELS {
        let c = &components[format!("channel:{name}")];
        let Some(status) = c["status"].as_str() else {
            continue;
        };
        let last_error = c["last_error"].as_str().map(|e| redact(e, secrets));
        report.insert(
            name.to_owned(),
            ChannelHealth {
                status: known_status(status).to_owned(),
                last_error,
                restart_count: c["restart_count"].as_u64().unwrap_or(0),
            },
        );
    }
    report
}

fn known_status(status: &str) -> &'static str {
    match status {
        "ok" => "ok",
        "starting" => "starting",
        "error" => "error",
        _ => "unknown",
    }
}

fn redact(error: &str, secrets: &[&str]) -> String {
    let mut out = error.to_owned();
    for s in secrets.iter().filter(|s| s.len() >= 6) {
        out = out.replace(s, "***");
    }
    out.chars().take(MAX_ERROR).collect()
}

/// The stored form of `report`: JSON, or `None` when it is empty.
pub fn to_stored(report: &Report) -> Option<String> {
    if report.is_empty() {
        return None;
    }
    serde_json::to_string(report).ok()
}

/// A stored report; an unreadable one reads as empty.
pub fn from_stored(stored: Option<&str>) -> Report {
    stored
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or_default()
}

/// What the API shows: one entry per `configured` channel, from the stored
/// report (`unknown` where it has none), `offline` unless `running`.
pub fn view(stored: Option<&str>, configured: &[&str], running: bool) -> Report {
    let mut report = from_stored(stored);
    configured
        .iter()
        .map(|name| {
            let mut h = report.remove(*name).unwrap_or(ChannelHealth {
                status: "unknown".into(),
                last_error: None,
                restart_count: 0,
            });
            if !running {
                h.status = "offline".into();
            }
            ((*name).to_owned(), h)
        })
        .collect()
}

/// The channels of a RUNNING agent's stored report that are in `error`.
pub fn in_error(stored: Option<&str>) -> Vec<String> {
    from_stored(stored)
        .into_iter()
        .filter(|(_, h)| h.status == "error")
        .map(|(name, _)| name)
        .collect()
}

/// For `zcaas_agent_channel_up{channel}`: per channel of [`CHANNELS`], how
/// many of `reports` (RUNNING agents' stored reports) say `ok`.
pub fn count_up(reports: &[String]) -> [(&'static str, i64); 3] {
    let mut counts = CHANNELS.map(|c| (c, 0));
    for r in reports {
        let r = from_stored(Some(r));
        for (name, n) in counts.iter_mut() {
            if r.get(*name).is_some_and(|h| h.status == "ok") {
                *n += 1;
            }
        }
    }
    counts
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::model::{SlackChannel, TelegramChannel};
    use serde_json::json;

    fn health() -> serde_json::Value {
        json!({
            "status": "ok",
            "runtime": {"components": {
                "gateway": {"status": "ok"},
                "channel:telegram": {"status": "ok", "last_error": null, "restart_count": 0,
                    "updated_at": "2026-01-01T00:00:00Z"},
                "channel:slack": {"status": "error",
                    "last_error": "auth.test: invalid_auth for xoxb-1111111111111-secret",
                    "restart_count": 3},
                "channel:irc": {"status": "ok"},
            }}
        })
    }

    #[test]
    fn health_is_parsed_per_channel_and_redacted() {
        let r = parse(&health(), &["xoxb-1111111111111-secret"]);
        assert_eq!(r.len(), 2, "{r:?}");
        assert_eq!(
            r["telegram"],
            ChannelHealth {
                status: "ok".into(),
                last_error: None,
                restart_count: 0
            }
        );
        assert_eq!(r["slack"].status, "error");
        assert_eq!(r["slack"].restart_count, 3);
        assert_eq!(
            r["slack"].last_error.as_deref(),
            Some("auth.test: invalid_auth for ***")
        );
        // Nothing to read: an empty report, stored as NULL.
        assert!(parse(&json!({"status": "ok"}), &[]).is_empty());
        assert!(parse(&json!("garbage"), &[]).is_empty());
        assert_eq!(to_stored(&Report::new()), None);
        let odd = json!({"runtime": {"components": {"channel:discord":
            {"status": "weird", "last_error": "x".repeat(1000), "restart_count": -1}}}});
        let d = &parse(&odd, &[])["discord"];
        assert_eq!(d.status, "unknown");
        assert_eq!(d.last_error.as_ref().unwrap().len(), MAX_ERROR);
        assert_eq!(d.restart_count, 0);
    }

    #[test]
    fn stored_round_trip_view_and_counts() {
        let stored = to_stored(&parse(&health(), &[])).unwrap();
        assert!(stored.contains("\"lastError\""), "camelCase: {stored}");
        assert_eq!(from_stored(Some(&stored)), parse(&health(), &[]));
        assert!(from_stored(Some("not json")).is_empty());

        let v = view(Some(&stored), &["telegram", "discord"], true);
        assert_eq!(v.keys().collect::<Vec<_>>(), ["discord", "telegram"]);
        assert_eq!(v["telegram"].status, "ok");
        assert_eq!(v["discord"].status, "unknown");
        let off = view(Some(&stored), &["slack"], false);
        assert_eq!(off["slack"].status, "offline");
        assert_eq!(off["slack"].restart_count, 3);

        assert_eq!(in_error(Some(&stored)), ["slack"]);
        assert!(in_error(None).is_empty());
        let counts = count_up(&[stored.clone(), stored, "{}".into()]);
        assert_eq!(counts, [("telegram", 2), ("discord", 0), ("slack", 0)]);
    }

    #[test]
    fn token_rows_hash_every_token_once() {
        let c = Channels {
            telegram: Some(TelegramChannel {
                bot_token: "123:abc".into(),
                allowed_users: vec![],
                api_base_url: None,
            }),
            discord: None,
            slack: Some(SlackChannel {
                bot_token: "xoxb-1".into(),
                app_token: Some("123:abc".into()),
                channel_id: None,
                allowed_users: vec![],
                api_base_url: None,
            }),
        };
        assert_eq!(configured(&c), ["telegram", "slack"]);
        let sb = SecretBox::ephemeral();
        let rows = token_rows(&sb, &c);
        let fields: Vec<_> = rows.iter().map(|r| r.field.as_str()).collect();
        assert_eq!(
            fields,
            ["channels.telegram.botToken", "channels.slack.botToken"]
        );
        // Digests, never the tokens: (a bare `!contains("abc")` would fail
        // whenever a random hex digest happens to hold those three letters.)
        for r in &rows {
            assert!(
                r.hash.len() >= 64 && r.hash.chars().all(|c| c.is_ascii_hexdigit()),
                "{}",
                r.hash
            );
            assert!(!r.hash.contains("123:abc") && !r.hash.contains("xoxb-1"));
        }
    }
}
