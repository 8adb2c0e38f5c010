//! Reading a `config.toml` in upstream ZeroClaw's schema V3 (0.8 and later: `schema_version =
//! 3`) into the same [`FileConfig`] a V1 file gives, so a current-upstream config works with
//! this runtime.
//!
//! The shape, as upstream 0.8 (zeroclaw-labs/zeroclaw v0.8.0–v0.8.4) defines it in
//! `crates/zeroclaw-config/src/` (`schema.rs`, `providers.rs`, `multi_agent.rs`):
//!
//! - `[agents.<alias>]` (`AliasedAgentConfig`): the agent run is `default` if present, else the
//!   first; its `model_provider = "<type>.<alias>"` names `[providers.models.<type>.<alias>]`
//!   (`ModelProviderConfig`: `model`, `temperature`, `api_key`, and `uri` the endpoint; type
//!   `custom` with a `uri` is `custom:<url>`, another type's `uri` replaces its base URL), its
//!   `channels = ["<type>.<alias>", …]` the channel instances it serves (absent: every enabled
//!   one), `[agents.<alias>.workspace] path` the workspace, `[agents.<alias>.memory] backend`
//!   its memory backend (over `[memory] backend`);
//! - `[channels] cli` and `[channels.<type>.<alias>]` with `enabled` defaulting to **false**;
//!   Discord's `guild_ids` and Slack's `channel_ids` are lists (their first entry is used);
//! - `[peer_groups.<name>] channel, external_peers`: the allow-list of channel `channel`, a type
//!   (`"telegram"`) or one instance (`"telegram.work"`), whatever its `agents`, as upstream's
//!   `Config::channel_external_peers`; `"*"` = everyone;
//! - `[gateway]` and `[memory]` as in V1 (`[memory] backend` may be upstream's dotted
//!   `<backend>.<alias>`); `[risk_profiles]`, `[runtime_profiles]` accepted and not used;
//!   anything else is an unknown-key warning, as in V1.
//!
//! Files zcaas rendered before it wrote `uri` named the endpoint `api_url`; that key (and
//! `base_url`) is still read when `uri` is absent.

use std::path::PathBuf;

use toml::{Table, Value};

use super::channels;
use super::file::{memory_and_gateway, FileConfig, Section};
use super::ConfigError;
use crate::secret::Secret;

/// The newest schema version read; a later one is read as this one, with a warning.
pub const SCHEMA_VERSION: i64 = 3;

fn invalid(key: &str, reason: &str) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_owned(),
        reason: reason.to_owned(),
    }
}

/// `(type, alias)` of a `<type>.<alias>` reference.
fn split_ref<'a>(key: &str, reference: &'a str) -> Result<(&'a str, &'a str), ConfigError> {
    reference
        .split_once('.')
        .filter(|(t, a)| !t.is_empty() && !a.is_empty())
        .ok_or_else(|| invalid(key, "expected a `<type>.<alias>` reference"))
}

/// The agent run: its alias and table (`default` if present, else the first).
fn pick_agent(top: &mut Section<'_>) -> Result<Option<(String, Table)>, ConfigError> {
    let Some(mut agents) = top.table("agents")? else {
        return Ok(None);
    };
    let alias = if agents.contains_key("default") {
        "default".to_owned()
    } else {
        match agents.keys().next() {
            Some(k) => k.clone(),
            None => return Ok(None),
        }
    };
    match agents.remove(&alias) {
        Some(Value::Table(t)) => Ok(Some((alias, t))),
        _ => Err(invalid(&format!("agents.{alias}"), "expected a table")),
    }
}

/// Parses a V3 document (already known to carry `schema_version`).
///
/// # Errors
/// [`ConfigError::Invalid`] naming the key, as the V1 parser; never echoing a value.
pub fn parse(root: Table) -> Result<(FileConfig, Vec<String>), ConfigError> {
    let mut warnings = Vec::new();
    let mut top = Section::new(root, "");
    let version = top
        .integer("schema_version")?
        .ok_or_else(|| invalid("schema_version", "expected an integer"))?;
    if version < SCHEMA_VERSION {
        return Err(invalid(
            "schema_version",
            "only 3 or later is read with `schema_version`; a V1 file has no such key",
        ));
    }
    if version > SCHEMA_VERSION {
        warnings.push(format!(
            "config schema_version {version} is newer than 3; read as version 3"
        ));
    }
    let mut out = FileConfig::default();
    undot_memory_backend(&mut top.table);
    memory_and_gateway(&mut top, &mut out, &mut warnings)?;
    for key in ["risk_profiles", "runtime_profiles", "storage"] {
        let _ = top.table(key)?;
    }

    let agent = pick_agent(&mut top)?;
    let mut served: Option<Vec<String>> = None;
    if let Some((alias, table)) = agent {
        let prefix = format!("agents.{alias}");
        let mut a = Section::new(table, &prefix);
        if let Some(reference) = a.string("model_provider")? {
            provider(&mut top, &a.path("model_provider"), &reference, &mut out)?;
        }
        served = a.strings("channels")?;
        if let Some(ws) = a.table("workspace")? {
            let ws_prefix = format!("{prefix}.workspace");
            let mut ws = Section::new(ws, &ws_prefix);
            out.workspace = ws
                .string("path")?
                .filter(|p| !p.is_empty())
                .map(PathBuf::from);
            // Cross-agent grants: there is one agent here.
            for key in ["access", "unrestricted_filesystem", "read_memory_from"] {
                ws.table.remove(key);
            }
            ws.finish(&mut warnings);
        }
        if let Some(memory) = a.table("memory")? {
            let memory_prefix = format!("{prefix}.memory");
            let mut memory = Section::new(memory, &memory_prefix);
            // Upstream runs the agent's turns on this backend, not on `[memory] backend`.
            if let Some(b) = memory.string("backend")? {
                out.memory_backend = Some(
                    b.parse()
                        .map_err(|reason: String| invalid(&memory.path("backend"), &reason))?,
                );
            }
            memory.finish(&mut warnings);
        }
        for key in ["enabled", "risk_profile", "runtime_profile", "identity"] {
            a.table.remove(key);
        }
        a.finish(&mut warnings);
    }
    // Providers not referenced by the agent are not used.
    let _ = top.table("providers")?;

    let mut run = RunAliases::default();
    if let Some(t) = top.table("channels")? {
        run = channels_v3(t, served.as_deref(), &mut out, &mut warnings)?;
    }
    if let Some(groups) = top.table("peer_groups")? {
        peer_groups(groups, &run, &mut out)?;
    }
    top.finish(&mut warnings);
    Ok((out, warnings))
}

/// Fills the provider fields from `[providers.models.<type>.<alias>]`.
fn provider(
    top: &mut Section<'_>,
    key: &str,
    reference: &str,
    out: &mut FileConfig,
) -> Result<(), ConfigError> {
    let (ty, alias) = split_ref(key, reference)?;
    let entry = top
        .table
        .get("providers")
        .and_then(|p| p.get("models"))
        .and_then(|m| m.get(ty))
        .and_then(|t| t.get(alias))
        .and_then(Value::as_table)
        .cloned()
        .ok_or_else(|| invalid(key, "names no [providers.models.<type>.<alias>] table"))?;
    let prefix = format!("providers.models.{ty}.{alias}");
    let mut p = Section::new(entry, &prefix);
    // The type is the table's key (upstream has no `provider` field). The endpoint is `uri`;
    // zcaas wrote `api_url` before it knew, and `base_url` is read for the same reason.
    let mut uri = None;
    for key in ["uri", "api_url", "base_url"] {
        let value = p.string(key)?.filter(|u| !u.trim().is_empty());
        uri = uri.or(value);
    }
    out.api_url = uri;
    out.default_provider = Some(match &out.api_url {
        Some(url) if ty == "custom" => format!("custom:{url}"),
        _ => ty.to_owned(),
    });
    out.default_model = p.string("model")?;
    out.default_temperature = p.float("temperature")?;
    out.api_key = p
        .string("api_key")?
        .filter(|k| !k.is_empty())
        .map(Secret::new);
    // Other tunables of the entry (pricing, timeouts) are upstream's alone.
    Ok(())
}

/// The alias of the instance run for each channel type.
#[derive(Debug, Default)]
struct RunAliases {
    telegram: Option<String>,
    discord: Option<String>,
    slack: Option<String>,
}

/// `[memory] backend`: upstream's dotted `<backend>.<alias>` (a storage instance) is read as
/// `<backend>`.
fn undot_memory_backend(root: &mut Table) {
    if let Some(Value::String(b)) = root
        .get_mut("memory")
        .and_then(Value::as_table_mut)
        .and_then(|m| m.get_mut("backend"))
    {
        if let Some((kind, _alias)) = b.split_once('.') {
            *b = kind.to_owned();
        }
    }
}

/// Slack's `channel_ids` (upstream's list, `"*"` or empty = every channel) as the
/// `channel_id` the channel reader takes: the first real entry.
fn slack_channel_ids(s: &mut Section<'_>, warnings: &mut Vec<String>) -> Result<(), ConfigError> {
    let Some(ids) = s.strings("channel_ids")? else {
        return Ok(());
    };
    let mut ids: Vec<String> = ids
        .into_iter()
        .filter(|c| !c.trim().is_empty() && c != "*")
        .collect();
    if ids.len() > 1 {
        warnings.push(format!(
            "`{}` lists {} channels; only the first is watched",
            s.path("channel_ids"),
            ids.len()
        ));
    }
    if !ids.is_empty() && !s.table.contains_key("channel_id") {
        s.table
            .insert("channel_id".to_owned(), Value::String(ids.swap_remove(0)));
    }
    Ok(())
}

/// `[channels]`: `cli` and the instances the agent serves; returns the alias run per type.
fn channels_v3(
    table: Table,
    served: Option<&[String]>,
    out: &mut FileConfig,
    warnings: &mut Vec<String>,
) -> Result<RunAliases, ConfigError> {
    let mut run = RunAliases::default();
    let mut top = Section::new(table, "channels");
    out.channels.cli = top.bool("cli")?.unwrap_or(true);
    for ty in ["telegram", "discord", "slack"] {
        let Some(instances) = top.table(ty)? else {
            continue;
        };
        for (alias, value) in instances {
            let reference = format!("{ty}.{alias}");
            if served.is_some_and(|s| !s.contains(&reference)) {
                continue;
            }
            let Value::Table(t) = value else {
                return Err(invalid(
                    &format!("channels.{reference}"),
                    "expected a table",
                ));
            };
            let prefix = format!("channels.{reference}");
            let mut s = Section::new(t, &prefix);
            // Allow-lists live in [peer_groups]; a V1-style list here is read too.
            match ty {
                "telegram" if out.channels.telegram.is_none() => {
                    out.channels.telegram = channels::telegram(&mut s, false)?;
                    if out.channels.telegram.is_some() {
                        run.telegram = Some(alias);
                    }
                }
                "discord" if out.channels.discord.is_none() => {
                    out.channels.discord = channels::discord(&mut s, false)?;
                    if out.channels.discord.is_some() {
                        run.discord = Some(alias);
                    }
                }
                "slack" if out.channels.slack.is_none() => {
                    if s.table.get("enabled").and_then(Value::as_bool) == Some(true) {
                        slack_channel_ids(&mut s, warnings)?;
                    }
                    out.channels.slack = channels::slack(&mut s, false)?;
                    if out.channels.slack.is_some() {
                        run.slack = Some(alias);
                    }
                }
                _ => {
                    warnings.push(format!(
                        "channel `{prefix}` ignored: one instance per channel type is run"
                    ));
                    continue;
                }
            }
            for key in [
                "archive",
                "mention_only",
                "stream_mode",
                "draft_update_interval_ms",
            ] {
                s.table.remove(key);
            }
            s.finish(warnings);
        }
    }
    top.finish(warnings);
    Ok(run)
}

/// `[peer_groups.*]`: adds each group's `external_peers` to the allow-list of its channel,
/// a type (`telegram`: every instance) or one instance (`telegram.<alias>`). As upstream's
/// `Config::channel_external_peers` (`crates/zeroclaw-config/src/schema.rs`), the group's
/// `agents` play no part in who may talk on the channel, nor does its `ignore`.
fn peer_groups(groups: Table, run: &RunAliases, out: &mut FileConfig) -> Result<(), ConfigError> {
    for (name, value) in groups {
        let Value::Table(t) = value else {
            return Err(invalid(&format!("peer_groups.{name}"), "expected a table"));
        };
        let prefix = format!("peer_groups.{name}");
        let mut g = Section::new(t, &prefix);
        let channel = g
            .string("channel")?
            .ok_or_else(|| invalid(&g.path("channel"), "expected a channel type"))?;
        let _ = g.strings("agents")?;
        let peers = g.strings("external_peers")?.unwrap_or_default();
        let (ty, alias) = match channel.split_once('.') {
            Some((ty, alias)) => (ty, Some(alias)),
            None => (channel.as_str(), None),
        };
        let is_run = |run: &Option<String>| alias.is_none() || run.as_deref() == alias;
        let list = match ty {
            "telegram" if is_run(&run.telegram) => {
                out.channels.telegram.as_mut().map(|c| &mut c.allowed_users)
            }
            "discord" if is_run(&run.discord) => {
                out.channels.discord.as_mut().map(|c| &mut c.allowed_users)
            }
            "slack" if is_run(&run.slack) => {
                out.channels.slack.as_mut().map(|c| &mut c.allowed_users)
            }
            _ => None,
        };
        if let Some(list) = list {
            for p in peers {
                if !list.contains(&p) {
                    list.push(p);
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::config::file::parse;
    use crate::memory::MemoryBackend;

    /// What zcaas renders for upstream 0.8 (`control-plane/src/agent_files/v3.rs`).
    const ZCAAS_V3: &str = r#"
schema_version = 3

[agents.default]
model_provider = "custom.default"
risk_profile = "default"
runtime_profile = "default"
channels = ["telegram.default", "slack.default"]

[agents.default.workspace]
path = "/zeroclaw-data/workspace"

[agents.default.memory]
backend = "markdown"

[channels]
cli = true

[channels.slack.default]
enabled = true
bot_token = "xoxb-1"
app_token = "xapp-1"
channel_ids = ["C0123ABCD"]

[channels.telegram.default]
enabled = true
bot_token = "1:tg"

[channels.discord.default]
enabled = true
bot_token = "dc"
guild_ids = ["42"]

[gateway]
port = 42617
host = "0.0.0.0"
allow_public_bind = true
require_pairing = true

[memory]
backend = "markdown"
auto_save = false

[peer_groups.slack_default]
channel = "slack"
agents = ["default"]
external_peers = ["U0123ABCD"]

[peer_groups.telegram_default]
channel = "telegram"
agents = ["default"]
external_peers = ["*"]

[providers.models.custom.default]
model = "stub-model"
temperature = 0.2
api_key = "sk-test"
uri = "http://stub:8080/v1"

[risk_profiles.default]

[runtime_profiles.default]
"#;

    #[test]
    fn a_v3_file_gives_what_its_v1_twin_gives() {
        let (cfg, warnings) = parse(ZCAAS_V3).expect("parses");
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(
            cfg.default_provider.as_deref(),
            Some("custom:http://stub:8080/v1")
        );
        assert_eq!(cfg.api_url.as_deref(), Some("http://stub:8080/v1"));
        assert_eq!(cfg.default_model.as_deref(), Some("stub-model"));
        assert_eq!(cfg.default_temperature, Some(0.2));
        assert_eq!(
            cfg.api_key.as_ref().map(|k| k.expose().to_owned()),
            Some("sk-test".into())
        );
        assert_eq!(cfg.memory_backend, Some(MemoryBackend::Markdown));
        assert_eq!(cfg.auto_save, Some(false));
        assert_eq!(cfg.port, Some(42617));
        assert_eq!(cfg.require_pairing, Some(true));
        assert_eq!(
            cfg.workspace.as_deref(),
            Some(std::path::Path::new("/zeroclaw-data/workspace"))
        );
        // Discord is enabled but not served by the agent.
        assert_eq!(cfg.channels.configured(), vec!["telegram", "slack"]);
        let tg = cfg.channels.telegram.expect("telegram");
        assert_eq!(tg.allowed_users, vec!["*"]);
        let sl = cfg.channels.slack.expect("slack");
        assert_eq!(sl.allowed_users, vec!["U0123ABCD"]);
        assert_eq!(sl.channel_id.as_deref(), Some("C0123ABCD"));
        assert!(sl.app_token.is_some());
    }

    /// A config as upstream 0.8 writes one: dotted storage reference, a non-custom provider
    /// with its own endpoint, keys of upstream's that this runtime has no use for.
    #[test]
    fn an_upstream_written_v3_file_is_read() {
        let text = r#"
schema_version = 3
[providers.models.openrouter.main]
api_key = "sk-or"
uri = "https://proxy.example/api/v1"
model = "anthropic/claude-sonnet-4"
temperature = 0.5
timeout_secs = 90
[agents.assistant]
enabled = true
model_provider = "openrouter.main"
risk_profile = "default"
runtime_profile = "default"
channels = ["discord.work"]
[agents.assistant.workspace]
path = "/srv/assistant"
access = {}
unrestricted_filesystem = false
read_memory_from = []
[agents.assistant.memory]
backend = "sqlite"
[memory]
backend = "sqlite.default"
auto_save = true
[storage.sqlite.default]
[channels]
cli = false
[channels.discord.work]
enabled = true
bot_token = "dc"
guild_ids = ["42", "43"]
[peer_groups.discord_work]
channel = "discord.work"
agents = ["assistant"]
external_peers = ["123456789012345678"]
ignore = []
[risk_profiles.default]
level = "supervised"
[runtime_profiles.default]
agentic = true
"#;
        let (cfg, warnings) = parse(text).expect("parses");
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(cfg.default_provider.as_deref(), Some("openrouter"));
        assert_eq!(cfg.api_url.as_deref(), Some("https://proxy.example/api/v1"));
        assert_eq!(
            cfg.default_model.as_deref(),
            Some("anthropic/claude-sonnet-4")
        );
        assert_eq!(cfg.default_temperature, Some(0.5));
        assert_eq!(cfg.memory_backend, Some(MemoryBackend::Sqlite));
        assert_eq!(cfg.auto_save, Some(true));
        assert_eq!(
            cfg.workspace.as_deref(),
            Some(std::path::Path::new("/srv/assistant"))
        );
        assert!(!cfg.channels.cli);
        let dc = cfg.channels.discord.expect("discord");
        assert_eq!(dc.guild_id.as_deref(), Some("42"));
        assert_eq!(dc.allowed_users, vec!["123456789012345678"]);
    }

    #[test]
    fn the_endpoint_is_uri_and_older_names_are_still_read() {
        for key in ["uri", "api_url", "base_url"] {
            let text = format!(
                "schema_version = 3\n[agents.default]\nmodel_provider = \"custom.default\"\n\
                 [providers.models.custom.default]\n{key} = \"http://llm:1/v1\"\n"
            );
            let (cfg, warnings) = parse(&text).expect("parses");
            assert!(warnings.is_empty(), "{warnings:?}");
            assert_eq!(cfg.api_url.as_deref(), Some("http://llm:1/v1"), "{key}");
            assert_eq!(
                cfg.default_provider.as_deref(),
                Some("custom:http://llm:1/v1")
            );
        }
        // `uri` wins; upstream has no `provider` key (the type is the table's).
        let text = "schema_version = 3\n[agents.default]\nmodel_provider = \"openai.x\"\n\
                    [providers.models.openai.x]\nprovider = \"groq\"\napi_url = \"http://old:1\"\n\
                    uri = \"http://new:1\"\n";
        let (cfg, _) = parse(text).expect("parses");
        assert_eq!(cfg.api_url.as_deref(), Some("http://new:1"));
        assert_eq!(cfg.default_provider.as_deref(), Some("openai"));
    }

    #[test]
    fn the_agents_memory_backend_wins() {
        let text = "schema_version = 3\n[memory]\nbackend = \"sqlite\"\n\
                    [agents.default.memory]\nbackend = \"none\"\n";
        let (cfg, warnings) = parse(text).expect("parses");
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(cfg.memory_backend, Some(MemoryBackend::None));
        let text = "schema_version = 3\n[memory]\nbackend = \"markdown.notes\"\n";
        let (cfg, _) = parse(text).expect("parses");
        assert_eq!(cfg.memory_backend, Some(MemoryBackend::Markdown));
    }

    #[test]
    fn channels_default_to_disabled_in_v3() {
        let text = "schema_version = 3\n[channels.telegram.default]\nbot_token = \"1:tg\"\n\
                    [channels.slack.default]\nenabled = true\nbot_token = \"xoxb\"\n";
        let (cfg, warnings) = parse(text).expect("parses");
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(cfg.channels.configured(), vec!["slack"]);
        assert!(cfg.channels.slack.expect("slack").allowed_users.is_empty());
    }

    #[test]
    fn slack_channel_ids_give_the_first_channel() {
        let slack = |ids: &str| {
            let text = format!(
                "schema_version = 3\n[channels.slack.default]\nenabled = true\n\
                 bot_token = \"xoxb\"\nchannel_ids = {ids}\n"
            );
            parse(&text).expect("parses")
        };
        let (cfg, warnings) = slack("[\"*\"]");
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(cfg.channels.slack.expect("slack").channel_id, None);
        let (cfg, warnings) = slack("[\"C1\", \"C2\"]");
        assert_eq!(
            cfg.channels.slack.expect("slack").channel_id.as_deref(),
            Some("C1")
        );
        assert_eq!(
            warnings,
            vec![
                "`channels.slack.default.channel_ids` lists 2 channels; only the first is watched"
            ]
        );
    }

    #[test]
    fn peer_groups_bind_a_channel_not_an_agent() {
        // As upstream: a group adds its peers to its channel whatever agents it names; a
        // dotted channel only to that instance.
        let text = "schema_version = 3\n[agents.default]\n\
                    [channels.telegram.default]\nenabled = true\nbot_token = \"1:tg\"\n\
                    [peer_groups.mine]\nchannel = \"telegram\"\nexternal_peers = [\"@alice\"]\n\
                    [peer_groups.theirs]\nchannel = \"telegram\"\nagents = [\"other\"]\nexternal_peers = [\"@bob\"]\n\
                    [peer_groups.here]\nchannel = \"telegram.default\"\nexternal_peers = [\"@carol\"]\n\
                    [peer_groups.elsewhere]\nchannel = \"telegram.work\"\nexternal_peers = [\"@mallory\"]\n";
        let (cfg, _) = parse(text).expect("parses");
        let mut users = cfg.channels.telegram.expect("tg").allowed_users;
        users.sort();
        assert_eq!(users, vec!["@alice", "@bob", "@carol"]);
    }

    #[test]
    fn bad_v3_values_name_their_key() {
        let cases = [
            ("schema_version = \"three\"", "schema_version"),
            ("schema_version = 2", "schema_version"),
            (
                "schema_version = 3\n[agents.default]\nmodel_provider = \"nodot\"",
                "agents.default.model_provider",
            ),
            (
                "schema_version = 3\n[agents.default]\nmodel_provider = \"openai.missing\"",
                "agents.default.model_provider",
            ),
            (
                "schema_version = 3\n[agents.a]\nmodel_provider = \"openai.x\"\n\
                 [providers.models.openai.x]\ntemperature = \"hot\"",
                "providers.models.openai.x.temperature",
            ),
            (
                "schema_version = 3\n[agents.a]\nmodel_provider = \"openai.x\"\n\
                 [providers.models.openai.x]\nuri = 1",
                "providers.models.openai.x.uri",
            ),
            (
                "schema_version = 3\n[agents.a.memory]\nbackend = \"postgres\"",
                "agents.a.memory.backend",
            ),
            (
                "schema_version = 3\n[channels.telegram.default]\nenabled = true\nbot_token = \"\"",
                "channels.telegram.default.bot_token",
            ),
            (
                "schema_version = 3\n[channels.slack.default]\nenabled = true\n\
                 bot_token = \"x\"\nchannel_ids = \"C1\"",
                "channels.slack.default.channel_ids",
            ),
            (
                "schema_version = 3\n[peer_groups.x]\nexternal_peers = []",
                "peer_groups.x.channel",
            ),
        ];
        for (text, key) in cases {
            let err = parse(text).expect_err(text);
            assert!(
                err.to_string().contains(&format!("`{key}`")),
                "{text}: {err}"
            );
        }
    }

    #[test]
    fn unknown_v3_keys_are_warnings_and_newer_versions_are_read() {
        let text = "schema_version = 4\n[agents.default]\nfoo = 1\n[cost]\nbudget = 1\n";
        let (_, warnings) = parse(text).expect("parses");
        assert_eq!(
            warnings,
            vec![
                "config schema_version 4 is newer than 3; read as version 3",
                "unknown config key `agents.default.foo` ignored",
                "unknown config key `cost` ignored",
            ]
        );
    }
}
