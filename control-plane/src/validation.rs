//! Validation of user input: slugs (DNS labels, reserved words), names,
//! providers, models, provider URLs, persona text, secrets and channels.
//!
//! Each rule returns the value to store (trimmed or normalised) or a
//! [`FieldError`] naming the field in the API's camelCase JSON path, so the
//! caller can answer with the first error and its field.
//!
//! Architecture invariant: a slug that passes [`slug`] is a DNS label, so no
//! user text reaches a container name, a volume name, a Traefik rule or a
//! label key unescaped.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::LazyLock;
use std::time::Duration;

use regex::Regex;

use crate::model::Channels;

/// One refused input field: its JSON path and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct FieldError {
    /// JSON path of the field, e.g. `slug` or `channels.telegram.botToken`.
    pub field: String,
    /// Human-readable reason, starting with the field name.
    pub message: String,
}

impl FieldError {
    /// A refusal of `field`; the message is prefixed with the field name.
    pub fn new(field: &str, reason: impl std::fmt::Display) -> Self {
        FieldError {
            field: field.to_owned(),
            message: format!("{field}: {reason}"),
        }
    }
}

/// Result of one rule.
pub type Checked<T> = Result<T, FieldError>;

/// Slugs that would collide with our own host names or look official.
pub const RESERVED_SLUGS: &[&str] = &[
    "www",
    "api",
    "admin",
    "administrator",
    "traefik",
    "dashboard",
    "mail",
    "smtp",
    "imap",
    "pop",
    "ftp",
    "app",
    "static",
    "assets",
    "cdn",
    "zcaas",
    "zeroone",
    "zeroclaw",
    "localhost",
    "root",
    "status",
    "metrics",
    "health",
    "healthz",
    "auth",
    "login",
    "register",
    "support",
    "help",
    "docs",
    "blog",
    "dev",
    "staging",
    "test",
    "ns1",
    "ns2",
    "mx",
    "webmail",
    "proxy",
    "internal",
    "system",
];

/// Providers an agent may use (DESIGN.md §1); `custom:<url>` is handled apart.
pub const PROVIDERS: &[&str] = &[
    "openrouter",
    "openai",
    "anthropic",
    "ollama",
    "groq",
    "gemini",
    "mistral",
    "deepseek",
    "together",
];

/// Memory backends of the agent runtime.
pub const MEMORY_BACKENDS: &[&str] = &["sqlite", "markdown", "none"];

/// Longest message proxied to an agent, in bytes.
pub const MAX_MESSAGE_BYTES: usize = 32 * 1024;

static SLUG_RE: LazyLock<Regex> = LazyLock::new(|| re(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"));
static TIMEZONE_RE: LazyLock<Regex> = LazyLock::new(|| re(r"^[A-Za-z_]+(/[A-Za-z0-9_+\-]+)*$"));
static MODEL_RE: LazyLock<Regex> = LazyLock::new(|| re(r"^[A-Za-z0-9._:/@-]{1,128}$"));
static CHANNEL_ID_RE: LazyLock<Regex> = LazyLock::new(|| re(r"^[A-Za-z0-9_-]{1,64}$"));
/// A Telegram bot token as @BotFather issues it: the bot's numeric id, a
/// colon, then the secret (35 characters of base64url today; 30 or more
/// accepted).
static TELEGRAM_TOKEN_RE: LazyLock<Regex> =
    LazyLock::new(|| re(r"^[0-9]{1,20}:[A-Za-z0-9_-]{30,}$"));
/// A Discord bot token: three dot-separated base64url parts — the bot's
/// user id in base64, a timestamp, an HMAC (lengths have grown over time).
static DISCORD_TOKEN_RE: LazyLock<Regex> =
    LazyLock::new(|| re(r"^[A-Za-z0-9_-]{20,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{20,}$"));
/// A Slack bot token: `xoxb-` then at least 10 letters, digits or hyphens
/// (today `xoxb-<team>-<bot user>-<secret>`; Slack reserves the right to
/// change the rest, so only the prefix and alphabet are held).
static SLACK_BOT_TOKEN_RE: LazyLock<Regex> = LazyLock::new(|| re(r"^xoxb-[A-Za-z0-9-]{10,}$"));
/// A Slack app-level token (Socket Mode): `xapp-` then at least 10 letters,
/// digits or hyphens.
static SLACK_APP_TOKEN_RE: LazyLock<Regex> = LazyLock::new(|| re(r"^xapp-[A-Za-z0-9-]{10,}$"));
/// A Telegram username (5–32 letters, digits, `_`, starting with a letter;
/// an optional leading `@`) or a numeric user id.
static TELEGRAM_USER_RE: LazyLock<Regex> =
    LazyLock::new(|| re(r"^(@?[A-Za-z][A-Za-z0-9_]{4,31}|[0-9]{1,20})$"));
/// A Discord user id: a snowflake, 17 to 20 digits.
static DISCORD_USER_RE: LazyLock<Regex> = LazyLock::new(|| re(r"^[0-9]{17,20}$"));
/// A Slack member id: `U` or `W` and 2 to 20 upper-case letters or digits.
static SLACK_USER_RE: LazyLock<Regex> = LazyLock::new(|| re(r"^[UW][A-Z0-9]{2,20}$"));
static EMAIL_LOCAL_RE: LazyLock<Regex> =
    LazyLock::new(|| re(r"^[a-z0-9!#$%&'*+/=?^_`{|}~.-]{1,64}$"));
static DNS_LABEL_RE: LazyLock<Regex> =
    LazyLock::new(|| re(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"));

#[allow(clippy::expect_used)]
fn re(pattern: &str) -> Regex {
    Regex::new(pattern).expect("static regex")
}

fn has_control(s: &str, allow_newlines: bool) -> bool {
    s.chars()
        .any(|c| c.is_control() && !(allow_newlines && (c == '\n' || c == '\t' || c == '\r')))
}

/// A single-line text of `min..=max` characters after trimming, without
/// control characters.
pub fn line(field: &str, value: &str, min: usize, max: usize) -> Checked<String> {
    let v = value.trim();
    let n = v.chars().count();
    if n < min {
        return Err(FieldError::new(
            field,
            if min == 1 {
                "must not be empty".into()
            } else {
                format!("must be at least {min} characters")
            },
        ));
    }
    if n > max {
        return Err(FieldError::new(
            field,
            format!("must be at most {max} characters"),
        ));
    }
    if has_control(v, false) {
        return Err(FieldError::new(
            field,
            "must not contain control characters or line breaks",
        ));
    }
    Ok(v.to_owned())
}

/// A multi-line text of at most `max` characters (newlines and tabs allowed).
pub fn text(field: &str, value: &str, max: usize) -> Checked<String> {
    if value.chars().count() > max {
        return Err(FieldError::new(
            field,
            format!("must be at most {max} characters"),
        ));
    }
    if has_control(value, true) {
        return Err(FieldError::new(
            field,
            "must not contain control characters",
        ));
    }
    Ok(value.to_owned())
}

/// An email address: at most 254 characters, `local@domain` with DNS-label
/// domain parts (a dot is not required: `admin@localhost` is valid).
/// Returns it trimmed and lower-cased, the stored form.
pub fn email(value: &str) -> Checked<String> {
    let v = value.trim().to_lowercase();
    if v.is_empty() {
        return Err(FieldError::new("email", "must not be empty"));
    }
    if v.len() > 254 {
        return Err(FieldError::new("email", "must be at most 254 characters"));
    }
    let ok = v.split_once('@').is_some_and(|(local, domain)| {
        EMAIL_LOCAL_RE.is_match(local)
            && !local.starts_with('.')
            && !local.ends_with('.')
            && !local.contains("..")
            && domain.split('.').all(|label| DNS_LABEL_RE.is_match(label))
    });
    if !ok {
        return Err(FieldError::new("email", "is not a valid email address"));
    }
    Ok(v)
}

/// A password of 8 to 128 characters.
pub fn password(value: &str) -> Checked<()> {
    let n = value.chars().count();
    if !(8..=128).contains(&n) {
        return Err(FieldError::new("password", "must be 8 to 128 characters"));
    }
    Ok(())
}

/// A slug: a DNS label (`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`) that is not
/// reserved.
pub fn slug(value: &str) -> Checked<String> {
    if !SLUG_RE.is_match(value) {
        return Err(FieldError::new(
            "slug",
            "must be 1 to 63 lower-case letters, digits or hyphens, starting and ending with a letter or digit",
        ));
    }
    if RESERVED_SLUGS.contains(&value) {
        return Err(FieldError::new("slug", format!("\"{value}\" is reserved")));
    }
    Ok(value.to_owned())
}

/// The slug derived from a display name: lower-cased, every run of other
/// characters than `[a-z0-9]` turned into one `-`, trimmed of `-`, cut to 63
/// characters. Validate the result with [`slug`].
pub fn derive_slug(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.to_lowercase().chars() {
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            out.push(c);
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    let trimmed: String = out.trim_matches('-').chars().take(63).collect();
    trimmed.trim_end_matches('-').to_owned()
}

/// An IANA-like time zone name (`Europe/Paris`, `America/Argentina/Buenos_Aires`, `UTC`).
pub fn timezone(value: &str) -> Checked<String> {
    let v = value.trim();
    if v.len() > 64 || !TIMEZONE_RE.is_match(v) {
        return Err(FieldError::new(
            "timezone",
            "must be an IANA time zone name such as Europe/Paris or UTC",
        ));
    }
    Ok(v.to_owned())
}

/// A provider name from [`PROVIDERS`] or `custom:<http(s) url>`. The URL's
/// host is checked separately with [`base_url`].
pub fn provider(value: &str) -> Checked<String> {
    let v = value.trim();
    if PROVIDERS.contains(&v) {
        return Ok(v.to_owned());
    }
    if let Some(url) = v.strip_prefix("custom:") {
        parse_http_url("provider", url)?;
        return Ok(v.to_owned());
    }
    Err(FieldError::new(
        "provider",
        format!(
            "must be one of {} or custom:<http(s) url>",
            PROVIDERS.join(", ")
        ),
    ))
}

/// A model name: 1 to 128 of `[A-Za-z0-9._:/@-]`.
pub fn model(value: &str) -> Checked<String> {
    if !MODEL_RE.is_match(value) {
        return Err(FieldError::new(
            "model",
            "must be 1 to 128 letters, digits or . _ : / @ -",
        ));
    }
    Ok(value.to_owned())
}

/// A sampling temperature in `0.0..=2.0`.
pub fn temperature(value: f64) -> Checked<f64> {
    if !(0.0..=2.0).contains(&value) {
        return Err(FieldError::new(
            "temperature",
            "must be between 0.0 and 2.0",
        ));
    }
    Ok(value)
}

/// `sqlite`, `markdown` or `none`.
pub fn memory_backend(value: &str) -> Checked<String> {
    if !MEMORY_BACKENDS.contains(&value) {
        return Err(FieldError::new(
            "memoryBackend",
            "must be one of sqlite, markdown, none",
        ));
    }
    Ok(value.to_owned())
}

/// A secret token (API key, bot token): 1 to `max` characters, no
/// whitespace or control characters, and not a masked value sent back.
pub fn token(field: &str, value: &str, max: usize) -> Checked<String> {
    if value.is_empty() {
        return Err(FieldError::new(field, "must not be empty"));
    }
    if value.chars().count() > max {
        return Err(FieldError::new(
            field,
            format!("must be at most {max} characters"),
        ));
    }
    if value.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(FieldError::new(
            field,
            "must not contain whitespace or control characters",
        ));
    }
    if value.contains('…') {
        return Err(FieldError::new(
            field,
            "looks like a masked value; send the full secret",
        ));
    }
    Ok(value.to_owned())
}

/// The user's LLM API key (at most 512 characters).
pub fn api_key(value: &str) -> Checked<String> {
    token("apiKey", value, 512)
}

/// A channel token: a [`token`] (at most 512 characters) that also has its
/// platform's shape `re`; the refusal says the `expected` shape and never
/// echoes the value.
fn channel_token(field: &str, value: &str, re: &Regex, expected: &str) -> Checked<()> {
    token(field, value, 512)?;
    if !re.is_match(value) {
        return Err(FieldError::new(field, format!("must be {expected}")));
    }
    Ok(())
}

/// Who may talk to an agent on one platform: the user ids it accepts.
struct AllowList {
    re: &'static LazyLock<Regex>,
    /// What an entry must be, for the error message.
    expected: &'static str,
}

/// Messaging channels: tokens in their platform's shape (Telegram
/// `<bot id>:<secret>` with 30+ of `[A-Za-z0-9_-]`; Discord three
/// dot-separated base64url parts; Slack `xoxb-…` for the bot, `xapp-…` for
/// the app-level token), bounded ids, and allow-lists of 1 to 100 entries,
/// each `"*"` (everyone) or a user id in the platform's form — Telegram: a
/// username or numeric id; Discord: a user id (the snowflake; upstream
/// matches ids only); Slack: a member id (`U…`/`W…`).
/// An empty list is refused: upstream reads it as nobody (Slack, Discord)
/// or prints a `/bind` code that lets anyone in (Telegram).
pub fn channels(value: &Channels) -> Checked<()> {
    fn users(field: &str, list: &[String], allow: &AllowList) -> Checked<()> {
        if list.is_empty() {
            return Err(FieldError::new(
                field,
                "must list the users allowed to talk to the agent; \
                 to allow everyone, send [\"*\"]",
            ));
        }
        if list.len() > 100 {
            return Err(FieldError::new(field, "must list at most 100 users"));
        }
        for (i, u) in list.iter().enumerate() {
            if u != "*" && !allow.re.is_match(u) {
                return Err(FieldError::new(
                    &format!("{field}[{i}]"),
                    format!("must be {} (or \"*\" for everyone)", allow.expected),
                ));
            }
        }
        Ok(())
    }
    const TELEGRAM: AllowList = AllowList {
        re: &TELEGRAM_USER_RE,
        expected: "a Telegram username (5 to 32 letters, digits or _) or a numeric user id",
    };
    const DISCORD: AllowList = AllowList {
        re: &DISCORD_USER_RE,
        expected: "a Discord user id (17 to 20 digits)",
    };
    const SLACK: AllowList = AllowList {
        re: &SLACK_USER_RE,
        expected: "a Slack member id (U or W, then letters and digits, e.g. U0123ABCD)",
    };
    fn id(field: &str, v: &Option<String>) -> Checked<()> {
        match v {
            Some(v) if !CHANNEL_ID_RE.is_match(v) => Err(FieldError::new(
                field,
                "must be 1 to 64 letters, digits, _ or -",
            )),
            _ => Ok(()),
        }
    }
    if let Some(t) = &value.telegram {
        channel_token(
            "channels.telegram.botToken",
            &t.bot_token,
            &TELEGRAM_TOKEN_RE,
            "a Telegram bot token from @BotFather: the bot's numeric id, a colon, \
             then at least 30 letters, digits, _ or -",
        )?;
        users(
            "channels.telegram.allowedUsers",
            &t.allowed_users,
            &TELEGRAM,
        )?;
    }
    if let Some(d) = &value.discord {
        channel_token(
            "channels.discord.botToken",
            &d.bot_token,
            &DISCORD_TOKEN_RE,
            "a Discord bot token (the Developer Portal's Bot page): three parts of \
             letters, digits, _ or - separated by dots",
        )?;
        id("channels.discord.guildId", &d.guild_id)?;
        users("channels.discord.allowedUsers", &d.allowed_users, &DISCORD)?;
    }
    if let Some(s) = &value.slack {
        channel_token(
            "channels.slack.botToken",
            &s.bot_token,
            &SLACK_BOT_TOKEN_RE,
            "a Slack bot token: xoxb- then at least 10 letters, digits or -",
        )?;
        if let Some(app) = &s.app_token {
            channel_token(
                "channels.slack.appToken",
                app,
                &SLACK_APP_TOKEN_RE,
                "a Slack app-level token: xapp- then at least 10 letters, digits or -",
            )?;
        }
        id("channels.slack.channelId", &s.channel_id)?;
        users("channels.slack.allowedUsers", &s.allowed_users, &SLACK)?;
    }
    Ok(())
}

/// A message for an agent: 1 byte to [`MAX_MESSAGE_BYTES`].
pub fn message(value: &str) -> Checked<()> {
    if value.trim().is_empty() {
        return Err(FieldError::new("message", "must not be empty"));
    }
    if value.len() > MAX_MESSAGE_BYTES {
        return Err(FieldError::new(
            "message",
            format!("must be at most {MAX_MESSAGE_BYTES} bytes"),
        ));
    }
    Ok(())
}

/// Each channel's `apiBaseUrl`, when given: the [`base_url`] policy (the
/// agent's client would call it from the agents' network).
pub async fn channel_base_urls(value: &Channels, allow_private: bool) -> Checked<()> {
    let urls = [
        (
            "channels.telegram.apiBaseUrl",
            value
                .telegram
                .as_ref()
                .and_then(|c| c.api_base_url.as_deref()),
        ),
        (
            "channels.discord.apiBaseUrl",
            value
                .discord
                .as_ref()
                .and_then(|c| c.api_base_url.as_deref()),
        ),
        (
            "channels.slack.apiBaseUrl",
            value.slack.as_ref().and_then(|c| c.api_base_url.as_deref()),
        ),
    ];
    for (field, url) in urls {
        if let Some(url) = url {
            base_url(field, url.trim(), allow_private).await?;
        }
    }
    Ok(())
}

fn parse_http_url(field: &str, value: &str) -> Checked<reqwest::Url> {
    if value.len() > 2048 {
        return Err(FieldError::new(
            field,
            "URL must be at most 2048 characters",
        ));
    }
    let url = reqwest::Url::parse(value)
        .map_err(|e| FieldError::new(field, format!("is not a valid URL ({e})")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(FieldError::new(field, "URL must use http or https"));
    }
    if url.host().is_none() {
        return Err(FieldError::new(field, "URL must have a host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(FieldError::new(field, "URL must not contain credentials"));
    }
    Ok(url)
}

/// A provider base URL given by a user (`providerUrl`, or the URL of
/// `custom:<url>`): http(s), no credentials, and unless `allow_private`, a
/// host that neither is nor resolves to a loopback, private, link-local
/// (cloud metadata) or otherwise internal address. A host that does not
/// resolve is refused too (it could resolve anywhere later).
pub async fn base_url(field: &str, value: &str, allow_private: bool) -> Checked<String> {
    let url = parse_http_url(field, value)?;
    if allow_private {
        return Ok(value.to_owned());
    }
    let refused = || {
        FieldError::new(
            field,
            "URL host is a loopback, private or link-local address",
        )
    };
    let port = url.port_or_known_default().unwrap_or(443);
    match url.host() {
        Some(url::Host::Ipv4(ip)) if is_internal(IpAddr::V4(ip)) => Err(refused()),
        Some(url::Host::Ipv6(ip)) if is_internal(IpAddr::V6(ip)) => Err(refused()),
        Some(url::Host::Domain(host)) => {
            let host = host.trim_end_matches('.').to_ascii_lowercase();
            if host == "localhost" || host.ends_with(".localhost") || host.ends_with(".internal") {
                return Err(refused());
            }
            let lookup = tokio::time::timeout(
                Duration::from_secs(3),
                tokio::net::lookup_host((host.as_str(), port)),
            )
            .await;
            match lookup {
                Ok(Ok(addrs)) => {
                    let addrs: Vec<_> = addrs.collect();
                    if addrs.is_empty() {
                        Err(FieldError::new(field, "URL host does not resolve"))
                    } else if addrs.iter().any(|a| is_internal(a.ip())) {
                        Err(refused())
                    } else {
                        Ok(value.to_owned())
                    }
                }
                _ => Err(FieldError::new(field, "URL host does not resolve")),
            }
        }
        _ => Ok(value.to_owned()),
    }
}

/// Whether `ip` is an address a tenant must not make an agent call:
/// loopback, private, link-local (169.254.169.254 included), shared (CGNAT),
/// unspecified, broadcast, multicast, unique-local, or an IPv6 form of one.
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_internal_v4(v4),
        IpAddr::V6(v6) => is_internal_v6(v6),
    }
}

fn is_internal_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || a == 0
        || (a == 100 && (64..128).contains(&b))
        || (a == 192 && b == 0 && ip.octets()[2] == 0)
        || (a == 198 && (b == 18 || b == 19))
}

fn is_internal_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_internal_v4(v4);
    }
    let seg = ip.segments();
    // ::/96 (IPv4-compatible, deprecated; `::` and `::1` included): nothing
    // public lives there, and `::127.0.0.1` must not slip through.
    if seg[..6] == [0; 6] {
        return true;
    }
    // NAT64 (64:ff9b::/96) embeds an IPv4 address.
    if seg[0] == 0x64 && seg[1] == 0xff9b && seg[2..6] == [0, 0, 0, 0] {
        let [.., a, b, c, d] = ip.octets();
        return is_internal_v4(Ipv4Addr::new(a, b, c, d));
    }
    ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (seg[0] & 0xfe00) == 0xfc00
        || (seg[0] & 0xffc0) == 0xfe80
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
#[path = "validation_tests.rs"]
mod tests;
