//! What the API shows of an agent: the camelCase view of seed 003's fields,
//! with the API key and channel tokens masked and the bearer token (and
//! every ciphertext) never included; and the redaction of log lines.
//!
//! `autoSave` is a JSON boolean here (the row stores seed 003's
//! `"true"`/`"false"` string).

use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use regex::Regex;
use serde::Serialize;

use crate::channel_health;
use crate::model::{Agent, Channels};
use crate::secrets::{SecretBox, SecretField};
use crate::status::{DesiredState, Status};

/// One agent as the owner sees it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentView {
    pub id: String,
    pub user_id: String,
    pub name: String,
    pub slug: String,
    pub agent_name: String,
    pub user_name: Option<String>,
    pub timezone: String,
    pub communication_style: Option<String>,
    pub container_id: Option<String>,
    /// Host port on 127.0.0.1 mapped to the agent's gateway.
    pub container_port: Option<i64>,
    pub status: Status,
    pub provider: String,
    pub provider_url: Option<String>,
    pub model: String,
    pub temperature: f64,
    pub memory_backend: String,
    pub auto_save: bool,
    /// `<slug>.<domain>`.
    pub subdomain: Option<String>,
    /// The agent's public URL, `https://<slug>.<domain>` (its
    /// `subdomain`, written from the `domain` setting at creation), where
    /// the owner's issued tokens (`/api/agents/{id}/tokens`) are accepted.
    pub public_url: Option<String>,
    /// Last polled memory use, MiB.
    pub memory_mb: Option<f64>,
    /// Last polled CPU use, percent of one core.
    pub cpu_percent: Option<f64>,
    pub last_health_at: Option<DateTime<Utc>>,
    pub desired_state: DesiredState,
    pub last_error: Option<String>,
    pub attempts: i64,
    /// Whether the control plane holds a bearer token for the agent.
    pub paired: bool,
    /// The LLM API key, masked (`sk-…abcd`), or null.
    pub api_key: Option<String>,
    /// Channels with their tokens masked, or null.
    pub channels: Option<Channels>,
    /// Each configured channel's health from the agent's last polled
    /// `/health` (`ok`, `starting`, `error`; `unknown` before a report,
    /// `offline` while the agent is not RUNNING), or null without channels.
    pub channel_health: Option<channel_health::Report>,
    pub image: String,
    /// Container memory limit, MiB.
    pub memory_limit_mb: i64,
    /// Container CPU limit, CPUs.
    pub cpus: f64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Shown instead of a secret that exists but cannot be shown at all.
const HIDDEN: &str = "***";

/// Masks a secret: the first 3 and last 4 characters of one of 16 or more
/// (`sk-…abcd`), `***` for anything shorter.
pub fn mask(secret: &str) -> String {
    let chars: Vec<char> = secret.chars().collect();
    if chars.len() < 16 {
        return HIDDEN.to_owned();
    }
    let head: String = chars[..3].iter().collect();
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("{head}…{tail}")
}

/// `channels` with every token masked.
pub fn mask_channels(mut c: Channels) -> Channels {
    if let Some(t) = c.telegram.as_mut() {
        t.bot_token = mask(&t.bot_token);
    }
    if let Some(d) = c.discord.as_mut() {
        d.bot_token = mask(&d.bot_token);
    }
    if let Some(s) = c.slack.as_mut() {
        s.bot_token = mask(&s.bot_token);
        s.app_token = s.app_token.as_deref().map(mask);
    }
    c
}

impl AgentView {
    /// The view of `agent`; secrets that cannot be decrypted show as `***`
    /// (and are logged without their value).
    pub fn new(agent: Agent, secrets: &SecretBox) -> Self {
        let api_key = agent.encrypted_api_key.as_ref().map(|c| match secrets.decrypt(&agent.id, SecretField::ApiKey, c) {
            Ok(k) => mask(&k),
            Err(e) => {
                tracing::warn!(agent_id = %agent.id, slug = %agent.slug, error = %e, "cannot decrypt the API key for display");
                HIDDEN.to_owned()
            }
        });
        let channels = match agent.channels(secrets) {
            Ok(c) => c.map(mask_channels),
            Err(e) => {
                tracing::warn!(agent_id = %agent.id, slug = %agent.slug, error = %e, "cannot decrypt channels for display");
                Some(Channels::default())
            }
        };
        let channel_health = channels.as_ref().map(|c| {
            channel_health::view(
                agent.channel_health.as_deref(),
                &channel_health::configured(c),
                agent.status == Status::Running,
            )
        });
        AgentView {
            channel_health,
            paired: agent.encrypted_token.is_some(),
            api_key,
            channels,
            auto_save: agent.auto_save == "true",
            cpus: agent.nano_cpus as f64 / 1e9,
            id: agent.id,
            user_id: agent.user_id,
            name: agent.name,
            slug: agent.slug,
            agent_name: agent.agent_name,
            user_name: agent.user_name,
            timezone: agent.timezone,
            communication_style: agent.communication_style,
            container_id: agent.container_id,
            container_port: agent.container_port,
            status: agent.status,
            provider: agent.provider,
            provider_url: agent.provider_url,
            model: agent.model,
            temperature: agent.temperature,
            memory_backend: agent.memory_backend,
            public_url: agent.subdomain.as_ref().map(|s| format!("https://{s}")),
            subdomain: agent.subdomain,
            memory_mb: agent.memory_mb,
            cpu_percent: agent.cpu_percent,
            last_health_at: agent.last_health_at,
            desired_state: agent.desired_state,
            last_error: agent.last_error,
            attempts: agent.attempts,
            image: agent.image,
            memory_limit_mb: agent.memory_limit_mb,
            created_at: agent.created_at,
            updated_at: agent.updated_at,
        }
    }
}

static PAIRING_LINE: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(r"X-Pairing-Code:\s*(\d{6})|│\s+(\d{6})\s+│").ok());
static SIX_DIGITS: LazyLock<Option<Regex>> = LazyLock::new(|| Regex::new(r"\b\d{6}\b").ok());
static AGENT_TOKEN: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(r"zc_[0-9a-fA-F]{64}").ok());
/// Upstream's Telegram channel, with no allowed user, prints a one-time
/// `/bind <code>` that lets whoever sends it add themselves: the code after
/// `/bind` is hidden, whatever its form.
static BIND_CODE: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(r#"(?i)(/bind)(\s+)[^\s`'"]+"#).ok());

/// A log line safe to show: pairing codes (six digits on a line matching
/// either pairing pattern), upstream's Telegram `/bind <code>` (the code,
/// and any six digits on that line), agent bearer tokens (`zc_<64 hex>`)
/// and any of `secrets` (the agent's own API key and bot tokens) are
/// replaced.
pub fn redact_line(text: &str, secrets: &[String]) -> String {
    let mut out = text.to_owned();
    for s in secrets.iter().filter(|s| s.len() >= 6) {
        if out.contains(s.as_str()) {
            out = out.replace(s.as_str(), HIDDEN);
        }
    }
    if let Some(re) = AGENT_TOKEN.as_ref() {
        out = re.replace_all(&out, "zc_***").into_owned();
    }
    if let (Some(line), Some(digits)) = (PAIRING_LINE.as_ref(), SIX_DIGITS.as_ref()) {
        if line.is_match(&out) {
            out = digits.replace_all(&out, "******").into_owned();
        }
    }
    if let (Some(bind), Some(digits)) = (BIND_CODE.as_ref(), SIX_DIGITS.as_ref()) {
        if bind.is_match(&out) {
            out = bind.replace_all(&out, "${1}${2}******").into_owned();
            out = digits.replace_all(&out, "******").into_owned();
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::model::{SlackChannel, TelegramChannel};

    #[test]
    fn masking() {
        assert_eq!(mask("sk-or-v1-0123456789abcdef"), "sk-…cdef");
        assert_eq!(mask("short-secret"), "***");
        assert_eq!(mask(""), "***");
        let c = mask_channels(Channels {
            telegram: Some(TelegramChannel {
                api_base_url: None,
                bot_token: "123456:ABCDEFGHIJKLMNOP".into(),
                allowed_users: vec![],
            }),
            slack: Some(SlackChannel {
                api_base_url: None,
                bot_token: "xoxb-1111111111111-secret".into(),
                app_token: Some("xapp-1-secret-app-token".into()),
                channel_id: Some("C1".into()),
                allowed_users: vec!["U012345".into()],
            }),
            discord: None,
        });
        let json = serde_json::to_string(&c).unwrap();
        assert!(
            !json.contains("ABCDEFGHIJKLMNOP") && !json.contains("secret"),
            "{json}"
        );
        assert!(json.contains("botToken"), "{json}");
    }

    #[test]
    fn the_bind_code_is_redacted() {
        for (line, code) in [
            ("Send `/bind 482913` from your Telegram account", "482913"),
            (
                "telegram: to bind, send /bind AbC-9x7_kq to the bot",
                "AbC-9x7_kq",
            ),
            ("/BIND\tz9z9z9z9", "z9z9z9z9"),
            ("{\"msg\":\"send /bind 123456 (code 123456)\"}", "123456"),
        ] {
            let out = redact_line(line, &[]);
            assert!(!out.contains(code), "{line} -> {out}");
            assert!(out.to_lowercase().contains("/bind"), "{out}");
        }
        assert_eq!(redact_line("bound 123456 users", &[]), "bound 123456 users");
    }

    #[test]
    fn redaction() {
        let token = format!("zc_{}", "ab".repeat(32));
        assert_eq!(redact_line("     │  123456  │", &[]), "     │  ******  │");
        assert_eq!(
            redact_line("Send: POST /pair with header X-Pairing-Code: 654321", &[]),
            "Send: POST /pair with header X-Pairing-Code: ******"
        );
        assert_eq!(
            redact_line("listening on 123456", &[]),
            "listening on 123456"
        );
        assert_eq!(
            redact_line(&format!("paired {token} ok"), &[]),
            "paired zc_*** ok"
        );
        assert_eq!(
            redact_line("key sk-secret-key leaked", &["sk-secret-key".into()]),
            "key *** leaked"
        );
    }
}
