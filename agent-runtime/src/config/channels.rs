//! `[channels_config]`: the messaging channels an agent is configured for.
//!
//! agent-runtime accepts and validates the upstream tables (`cli`, `telegram`, `discord`,
//! `slack`); each enabled channel runs its client ([`crate::channels`]) and is the `/health`
//! component `channel:<name>`. `api_base_url` (ours, not upstream's) points a client at
//! another server: a self-hosted Bot API, or a test's fake. `enabled` defaults
//! to true in V1 (a present table is a configured channel); the V3 reader
//! ([`super::v3`]) fills these same structs, where it defaults to false as upstream's does.

use super::file::Section;
use super::ConfigError;
use crate::secret::Secret;

/// `[channels_config.telegram]`.
#[derive(Debug, Clone)]
pub struct TelegramConfig {
    /// `bot_token` (non-empty).
    pub bot_token: Secret,
    /// `allowed_users`: `@names` or numeric ids, `"*"` = everyone.
    pub allowed_users: Vec<String>,
    /// `api_base_url`: the Bot API server (default `https://api.telegram.org`; a self-hosted
    /// Bot API server, or a test's fake).
    pub api_base_url: Option<String>,
}

/// `[channels_config.discord]`.
#[derive(Debug, Clone)]
pub struct DiscordConfig {
    /// `bot_token` (non-empty).
    pub bot_token: Secret,
    /// `guild_id`: restrict to one server.
    pub guild_id: Option<String>,
    /// `allowed_users`: user ids, `"*"` = everyone.
    pub allowed_users: Vec<String>,
    /// `api_base_url`: the REST API (default `https://discord.com/api/v10`); the gateway's
    /// WebSocket URL comes from its `GET /gateway/bot`.
    pub api_base_url: Option<String>,
}

/// `[channels_config.slack]`.
#[derive(Debug, Clone)]
pub struct SlackConfig {
    /// `bot_token` (`xoxb-…`, non-empty).
    pub bot_token: Secret,
    /// `app_token` (`xapp-…`) for Socket Mode.
    pub app_token: Option<Secret>,
    /// `channel_id`: restrict to one channel.
    pub channel_id: Option<String>,
    /// `allowed_users`: member ids (`U…`), `"*"` = everyone.
    pub allowed_users: Vec<String>,
    /// `api_base_url`: the Web API (default `https://slack.com/api`).
    pub api_base_url: Option<String>,
}

/// `[channels_config]` as a whole.
#[derive(Debug, Clone, Default)]
pub struct ChannelsConfig {
    /// `cli`: the local CLI channel (always on upstream; recorded, no component).
    pub cli: bool,
    /// Telegram, when its table is present.
    pub telegram: Option<TelegramConfig>,
    /// Discord, when its table is present.
    pub discord: Option<DiscordConfig>,
    /// Slack, when its table is present.
    pub slack: Option<SlackConfig>,
}

impl ChannelsConfig {
    /// Names of the configured network channels, in a fixed order (`telegram`, `discord`,
    /// `slack`): each becomes the `/health` component `channel:<name>`.
    pub fn configured(&self) -> Vec<&'static str> {
        let mut names = Vec::new();
        if self.telegram.is_some() {
            names.push("telegram");
        }
        if self.discord.is_some() {
            names.push("discord");
        }
        if self.slack.is_some() {
            names.push("slack");
        }
        names
    }
}

fn required_token(section: &mut Section<'_>, key: &str) -> Result<Secret, ConfigError> {
    match section.string(key)? {
        Some(v) if !v.trim().is_empty() => Ok(Secret::new(v)),
        _ => Err(ConfigError::Invalid {
            key: section.path(key),
            reason: "must be a non-empty string".into(),
        }),
    }
}

fn optional_token(section: &mut Section<'_>, key: &str) -> Result<Option<Secret>, ConfigError> {
    match section.string(key)? {
        None => Ok(None),
        Some(v) if v.trim().is_empty() => Ok(None),
        Some(v) => Ok(Some(Secret::new(v))),
    }
}

/// `api_base_url`: an `http://` or `https://` URL (a trailing `/` dropped), or absent.
fn base_url(s: &mut Section<'_>) -> Result<Option<String>, ConfigError> {
    match s.string("api_base_url")? {
        None => Ok(None),
        Some(v) if v.starts_with("http://") || v.starts_with("https://") => {
            Ok(Some(v.trim_end_matches('/').to_owned()))
        }
        Some(_) => Err(ConfigError::Invalid {
            key: s.path("api_base_url"),
            reason: "must be an http:// or https:// URL".into(),
        }),
    }
}

/// Parses the `[channels_config]` table; unknown channels and keys become warnings.
pub(super) fn parse(
    mut top: Section<'_>,
    warnings: &mut Vec<String>,
) -> Result<ChannelsConfig, ConfigError> {
    let mut out = ChannelsConfig {
        cli: top.bool("cli")?.unwrap_or(true),
        ..ChannelsConfig::default()
    };
    if let Some(t) = top.table("telegram")? {
        let mut s = Section::new(t, "channels_config.telegram");
        out.telegram = telegram(&mut s, true)?;
        s.finish(warnings);
    }
    if let Some(t) = top.table("discord")? {
        let mut s = Section::new(t, "channels_config.discord");
        out.discord = discord(&mut s, true)?;
        s.finish(warnings);
    }
    if let Some(t) = top.table("slack")? {
        let mut s = Section::new(t, "channels_config.slack");
        out.slack = slack(&mut s, true)?;
        s.finish(warnings);
    }
    top.finish(warnings);
    Ok(out)
}

/// Reads `enabled` (absent: `default`). A disabled table is not read
/// further: its other keys are dropped without warnings or checks.
fn enabled(s: &mut Section<'_>, default: bool) -> Result<bool, ConfigError> {
    let on = s.bool("enabled")?.unwrap_or(default);
    if !on {
        s.table.clear();
    }
    Ok(on)
}

/// One Telegram table (V1 `[channels_config.telegram]` or V3
/// `[channels.telegram.<alias>]`); `None` when `enabled = false` (absent:
/// `enabled_default`).
pub(super) fn telegram(
    s: &mut Section<'_>,
    enabled_default: bool,
) -> Result<Option<TelegramConfig>, ConfigError> {
    if !enabled(s, enabled_default)? {
        return Ok(None);
    }
    Ok(Some(TelegramConfig {
        bot_token: required_token(s, "bot_token")?,
        allowed_users: s.strings("allowed_users")?.unwrap_or_default(),
        api_base_url: base_url(s)?,
    }))
}

/// One Discord table; see [`telegram`]. V3's `guild_ids` (first entry)
/// stands for V1's `guild_id`.
pub(super) fn discord(
    s: &mut Section<'_>,
    enabled_default: bool,
) -> Result<Option<DiscordConfig>, ConfigError> {
    if !enabled(s, enabled_default)? {
        return Ok(None);
    }
    let guild_id = match s.id("guild_id")? {
        Some(g) => Some(g),
        None => s.strings("guild_ids")?.and_then(|g| g.into_iter().next()),
    };
    Ok(Some(DiscordConfig {
        bot_token: required_token(s, "bot_token")?,
        guild_id: guild_id.filter(|g| !g.is_empty()),
        allowed_users: s.strings("allowed_users")?.unwrap_or_default(),
        api_base_url: base_url(s)?,
    }))
}

/// One Slack table; see [`telegram`].
pub(super) fn slack(
    s: &mut Section<'_>,
    enabled_default: bool,
) -> Result<Option<SlackConfig>, ConfigError> {
    if !enabled(s, enabled_default)? {
        return Ok(None);
    }
    Ok(Some(SlackConfig {
        bot_token: required_token(s, "bot_token")?,
        app_token: optional_token(s, "app_token")?,
        channel_id: s.id("channel_id")?.filter(|c| !c.is_empty()),
        allowed_users: s.strings("allowed_users")?.unwrap_or_default(),
        api_base_url: base_url(s)?,
    }))
}
