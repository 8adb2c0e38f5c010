//! Parsing `config.toml` into [`FileConfig`]: the upstream V1 keys here, and a file with
//! `schema_version = 3` or later (upstream 0.8) through [`super::v3`].
//!
//! The TOML is walked by hand rather than through `serde` so that an unknown key becomes a
//! warning naming its full path (`gateway.foo`), a bad value becomes an error naming its key,
//! and no error message ever echoes a value (the file holds the API key).

use std::path::PathBuf;

use toml::{Table, Value};

use super::channels::{self, ChannelsConfig};
use super::ConfigError;
use crate::memory::MemoryBackend;
use crate::secret::Secret;

/// Everything `config.toml` may set; `None` means "not in the file".
#[derive(Debug, Default, Clone)]
pub struct FileConfig {
    /// `api_key`.
    pub api_key: Option<Secret>,
    /// `api_url`: overrides the provider's base URL.
    pub api_url: Option<String>,
    /// `default_provider`.
    pub default_provider: Option<String>,
    /// `default_model`.
    pub default_model: Option<String>,
    /// `default_temperature` (checked later to be in 0.0–2.0).
    pub default_temperature: Option<f64>,
    /// `[memory] backend`.
    pub memory_backend: Option<MemoryBackend>,
    /// `[memory] auto_save`.
    pub auto_save: Option<bool>,
    /// `[gateway] port`.
    pub port: Option<u16>,
    /// `[gateway] host`.
    pub host: Option<String>,
    /// `[gateway] require_pairing`.
    pub require_pairing: Option<bool>,
    /// `[gateway] allow_public_bind`.
    pub allow_public_bind: Option<bool>,
    /// `[gateway] paired_tokens`: SHA-256 hex digests or raw tokens, as written.
    pub paired_tokens: Vec<String>,
    /// `[gateway] persist_tokens`.
    pub persist_tokens: Option<bool>,
    /// `[gateway] webhook_rate_limit_per_minute` (an upstream key; 0 = unlimited).
    pub webhook_rate_limit_per_minute: Option<u32>,
    /// `[channels_config]` (V3: the agent's `[channels.<type>.<alias>]` and peer groups).
    pub channels: ChannelsConfig,
    /// The workspace (V3 `[agents.<alias>.workspace] path`; V1 has none). The environment's
    /// `ZEROCLAW_WORKSPACE` wins over it.
    pub workspace: Option<PathBuf>,
}

/// Takes typed values out of a TOML table, naming `prefix.key` in every error.
pub(super) struct Section<'a> {
    pub(super) table: Table,
    pub(super) prefix: &'a str,
}

impl<'a> Section<'a> {
    pub(super) fn new(table: Table, prefix: &'a str) -> Self {
        Self { table, prefix }
    }

    pub(super) fn path(&self, key: &str) -> String {
        if self.prefix.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.prefix)
        }
    }

    fn invalid(&self, key: &str, reason: &str) -> ConfigError {
        ConfigError::Invalid {
            key: self.path(key),
            reason: reason.to_owned(),
        }
    }

    pub(super) fn string(&mut self, key: &str) -> Result<Option<String>, ConfigError> {
        match self.table.remove(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(self.invalid(key, "expected a string")),
        }
    }

    /// A string, or an integer written without quotes (Discord/Telegram ids).
    pub(super) fn id(&mut self, key: &str) -> Result<Option<String>, ConfigError> {
        match self.table.remove(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(Value::Integer(i)) => Ok(Some(i.to_string())),
            Some(_) => Err(self.invalid(key, "expected a string or an integer id")),
        }
    }

    pub(super) fn bool(&mut self, key: &str) -> Result<Option<bool>, ConfigError> {
        match self.table.remove(key) {
            None => Ok(None),
            Some(Value::Boolean(b)) => Ok(Some(b)),
            Some(_) => Err(self.invalid(key, "expected true or false")),
        }
    }

    pub(super) fn integer(&mut self, key: &str) -> Result<Option<i64>, ConfigError> {
        match self.table.remove(key) {
            None => Ok(None),
            Some(Value::Integer(i)) => Ok(Some(i)),
            Some(_) => Err(self.invalid(key, "expected an integer")),
        }
    }

    pub(super) fn float(&mut self, key: &str) -> Result<Option<f64>, ConfigError> {
        match self.table.remove(key) {
            None => Ok(None),
            Some(Value::Float(f)) => Ok(Some(f)),
            // An integer temperature (`default_temperature = 1`) is fine; the range check
            // happens after overrides.
            #[allow(clippy::cast_precision_loss)]
            Some(Value::Integer(i)) => Ok(Some(i as f64)),
            Some(_) => Err(self.invalid(key, "expected a number")),
        }
    }

    pub(super) fn strings(&mut self, key: &str) -> Result<Option<Vec<String>>, ConfigError> {
        let Some(value) = self.table.remove(key) else {
            return Ok(None);
        };
        let Value::Array(items) = value else {
            return Err(self.invalid(key, "expected an array of strings"));
        };
        items
            .into_iter()
            .map(|v| match v {
                Value::String(s) => Ok(s),
                Value::Integer(i) => Ok(i.to_string()),
                _ => Err(self.invalid(key, "expected an array of strings")),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }

    pub(super) fn table(&mut self, key: &str) -> Result<Option<Table>, ConfigError> {
        match self.table.remove(key) {
            None => Ok(None),
            Some(Value::Table(t)) => Ok(Some(t)),
            Some(_) => Err(self.invalid(key, "expected a table")),
        }
    }

    /// Turns every key not taken yet into an "unknown key" warning.
    pub(super) fn finish(self, warnings: &mut Vec<String>) {
        for key in self.table.keys() {
            warnings.push(format!("unknown config key `{}` ignored", self.path(key)));
        }
    }
}

/// Parses the text of `config.toml`.
///
/// Returns the values found and the warnings (unknown keys), in file order.
///
/// # Errors
/// [`ConfigError::Syntax`] for malformed TOML (line number and parser message, no source
/// excerpt), [`ConfigError::Invalid`] naming the key for a value of the wrong type or out of range.
pub fn parse(text: &str) -> Result<(FileConfig, Vec<String>), ConfigError> {
    let root: Table = text.parse().map_err(|e: toml::de::Error| {
        let line = e
            .span()
            .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
        ConfigError::Syntax {
            line,
            message: e.message().trim().to_owned(),
        }
    })?;
    if root.contains_key("schema_version") {
        return super::v3::parse(root);
    }
    let mut warnings = Vec::new();
    let mut top = Section::new(root, "");
    let mut out = FileConfig {
        api_key: top
            .string("api_key")?
            .filter(|k| !k.is_empty())
            .map(Secret::new),
        api_url: top.string("api_url")?,
        default_provider: top.string("default_provider")?,
        default_model: top.string("default_model")?,
        default_temperature: top.float("default_temperature")?,
        ..FileConfig::default()
    };

    memory_and_gateway(&mut top, &mut out, &mut warnings)?;

    if let Some(t) = top.table("channels_config")? {
        out.channels = channels::parse(Section::new(t, "channels_config"), &mut warnings)?;
    }

    top.finish(&mut warnings);
    Ok((out, warnings))
}

/// `[memory]` and `[gateway]`, the same in V1 and V3.
pub(super) fn memory_and_gateway(
    top: &mut Section<'_>,
    out: &mut FileConfig,
    warnings: &mut Vec<String>,
) -> Result<(), ConfigError> {
    if let Some(t) = top.table("memory")? {
        let mut memory = Section::new(t, "memory");
        if let Some(b) = memory.string("backend")? {
            out.memory_backend =
                Some(b.parse().map_err(|reason: String| ConfigError::Invalid {
                    key: "memory.backend".into(),
                    reason,
                })?);
        }
        out.auto_save = memory.bool("auto_save")?;
        memory.finish(warnings);
    }

    if let Some(t) = top.table("gateway")? {
        let mut gw = Section::new(t, "gateway");
        if let Some(p) = gw.integer("port")? {
            out.port = Some(u16::try_from(p).map_err(|_| ConfigError::Invalid {
                key: "gateway.port".into(),
                reason: "expected a port number 0-65535".into(),
            })?);
        }
        out.host = gw.string("host")?;
        out.require_pairing = gw.bool("require_pairing")?;
        out.allow_public_bind = gw.bool("allow_public_bind")?;
        out.persist_tokens = gw.bool("persist_tokens")?;
        out.paired_tokens = gw.strings("paired_tokens")?.unwrap_or_default();
        if out.paired_tokens.iter().any(|t| t.trim().is_empty()) {
            return Err(ConfigError::Invalid {
                key: "gateway.paired_tokens".into(),
                reason: "entries must be non-empty".into(),
            });
        }
        if let Some(n) = gw.integer("webhook_rate_limit_per_minute")? {
            out.webhook_rate_limit_per_minute =
                Some(u32::try_from(n).map_err(|_| ConfigError::Invalid {
                    key: "gateway.webhook_rate_limit_per_minute".into(),
                    reason: "expected a non-negative integer".into(),
                })?);
        }
        // Upstream V3 gateways carry `enabled`; ours always runs.
        let _ = gw.bool("enabled")?;
        gw.finish(warnings);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_config_parses_without_warnings() {
        let text = r#"
default_temperature = 0.7
[memory]
backend = "sqlite" # sqlite | markdown | none
auto_save = true
[gateway]
port = 42617
[channels_config]
cli = true
[channels_config.telegram]
bot_token = "123456:ABC-DEF"
allowed_users = ["@alice", "123456789"]
[channels_config.discord]
bot_token = "MTk4NjIy"
guild_id = "123456789012345678"
allowed_users = []
[channels_config.slack]
bot_token = "xoxb-1"
app_token = "xapp-1"
channel_id = "C1234567890"
"#;
        let (cfg, warnings) = parse(text).expect("parses");
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(cfg.default_temperature, Some(0.7));
        assert_eq!(cfg.memory_backend, Some(MemoryBackend::Sqlite));
        assert_eq!(cfg.auto_save, Some(true));
        assert_eq!(cfg.port, Some(42617));
        assert!(cfg.channels.cli);
        assert_eq!(
            cfg.channels.configured(),
            vec!["telegram", "discord", "slack"]
        );
    }

    #[test]
    fn unknown_keys_are_warnings_with_full_paths() {
        let text = "foo = 1\n[gateway]\nbar = true\n[observability]\nbackend = \"prometheus\"\n";
        let (_, warnings) = parse(text).expect("parses");
        assert_eq!(
            warnings,
            vec![
                "unknown config key `gateway.bar` ignored",
                "unknown config key `foo` ignored",
                "unknown config key `observability` ignored",
            ]
        );
    }

    #[test]
    fn bad_values_name_their_key_and_never_echo_the_value() {
        let cases = [
            ("default_temperature = \"hot\"", "default_temperature"),
            ("[gateway]\nport = 70000", "gateway.port"),
            ("[gateway]\nport = \"x\"", "gateway.port"),
            (
                "[gateway]\nrequire_pairing = \"yes\"",
                "gateway.require_pairing",
            ),
            (
                "[gateway]\npaired_tokens = \"abc\"",
                "gateway.paired_tokens",
            ),
            ("[memory]\nbackend = \"redis\"", "memory.backend"),
            ("memory = 3", "memory"),
            ("api_key = 12345678", "api_key"),
            (
                "[channels_config.telegram]\nbot_token = \"\"",
                "channels_config.telegram.bot_token",
            ),
            (
                "[channels_config.slack]\napp_token = \"xapp\"",
                "channels_config.slack.bot_token",
            ),
        ];
        for (text, key) in cases {
            let err = parse(text).expect_err(text);
            let msg = err.to_string();
            assert!(msg.contains(&format!("`{key}`")), "{text}: {msg}");
            assert!(!msg.contains("12345678") && !msg.contains("70000"), "{msg}");
        }
    }

    #[test]
    fn syntax_errors_give_a_line_but_no_excerpt() {
        let text = "api_key = \"sk-secret-value\"\n\n[gateway\nport = 1\n";
        let err = parse(text).expect_err("bad toml");
        let msg = err.to_string();
        assert!(
            matches!(err, ConfigError::Syntax { line: Some(3), .. }),
            "{msg}"
        );
        assert!(!msg.contains("sk-secret-value"), "{msg}");
    }

    #[test]
    fn integer_temperature_and_paired_tokens() {
        let text = "default_temperature = 1\n[gateway]\npaired_tokens = [\"zc_abc\"]\n";
        let (cfg, _) = parse(text).expect("parses");
        assert_eq!(cfg.default_temperature, Some(1.0));
        assert_eq!(cfg.paired_tokens, vec!["zc_abc"]);
    }
}
