//! Reading a `config.toml` in upstream ZeroClaw's schema V3 (0.8 and later: `schema_version =
//! 3`) into the same [`FileConfig`] a V1 file gives, so a current-upstream config works with
//! this runtime.
//!
//! The shape (upstream `crates/zeroclaw-config/src/schema/v2.rs`, the V2→V3 migration):
//!
//! - `[agents.<alias>]`: the agent run is `default` if present, else the first; its
//!   `model_provider = "<type>.<alias>"` names `[providers.models.<type>.<alias>]` (`provider`,
//!   `model`, `temperature`, `api_key`, `api_url` (or upstream's `base_url` / `uri`); type
//!   `custom` with an `api_url` is
//!   `custom:<url>`), its `channels = ["<type>.<alias>", …]` the channel instances it serves
//!   (absent: every enabled one), `[agents.<alias>.workspace] path` the workspace;
//! - `[channels] cli` and `[channels.<type>.<alias>]` with `enabled` defaulting to **false**;
//! - `[peer_groups.<name>] channel, agents, external_peers`: the allow-list of channel type
//!   `channel` for the agents listed (absent: every agent); `"*"` = everyone;
//! - `[gateway]` and `[memory]` as in V1; `[risk_profiles]`, `[runtime_profiles]` accepted and
//!   not used; anything else is an unknown-key warning, as in V1.

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
    memory_and_gateway(&mut top, &mut out, &mut warnings)?;
    let _ = top.table("risk_profiles")?;
    let _ = top.table("runtime_profiles")?;

    let agent = pick_agent(&mut top)?;
    let mut served: Option<Vec<String>> = None;
    let mut agent_alias = None;
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
            ws.finish(&mut warnings);
        }
        for key in ["risk_profile", "runtime_profile", "identity", "memory"] {
            a.table.remove(key);
        }
        a.finish(&mut warnings);
        agent_alias = Some(alias);
    }
    // Providers not referenced by the agent are not used.
    let _ = top.table("providers")?;

    if let Some(t) = top.table("channels")? {
        channels_v3(t, served.as_deref(), &mut out, &mut warnings)?;
    }
    if let Some(groups) = top.table("peer_groups")? {
        peer_groups(groups, agent_alias.as_deref(), &mut out)?;
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
    let name = p.string("provider")?.unwrap_or_else(|| ty.to_owned());
    // Upstream's V3 has named the endpoint `base_url` and later `uri`; zcaas writes `api_url`.
    out.api_url = match p.string("api_url")? {
        Some(u) => Some(u),
        None => match p.string("base_url")? {
            Some(u) => Some(u),
            None => p.string("uri")?,
        },
    };
    out.default_provider = Some(match (&*name, &out.api_url) {
        ("custom", Some(url)) => format!("custom:{url}"),
        _ => name,
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

/// `[channels]`: `cli` and the instances the agent serves.
fn channels_v3(
    table: Table,
    served: Option<&[String]>,
    out: &mut FileConfig,
    warnings: &mut Vec<String>,
) -> Result<(), ConfigError> {
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
                }
                "discord" if out.channels.discord.is_none() => {
                    out.channels.discord = channels::discord(&mut s, false)?;
                }
                "slack" if out.channels.slack.is_none() => {
                    out.channels.slack = channels::slack(&mut s, false)?;
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
    Ok(())
}

/// `[peer_groups.*]`: adds each group's `external_peers` to the allow-list of its channel,
/// when the group names the agent (or no agents at all).
fn peer_groups(
    groups: Table,
    agent: Option<&str>,
    out: &mut FileConfig,
) -> Result<(), ConfigError> {
    for (name, value) in groups {
        let Value::Table(t) = value else {
            return Err(invalid(&format!("peer_groups.{name}"), "expected a table"));
        };
        let prefix = format!("peer_groups.{name}");
        let mut g = Section::new(t, &prefix);
        let channel = g
            .string("channel")?
            .ok_or_else(|| invalid(&g.path("channel"), "expected a channel type"))?;
        let agents = g.strings("agents")?;
        let peers = g.strings("external_peers")?.unwrap_or_default();
        if let (Some(agents), Some(me)) = (agents, agent) {
            if !agents.iter().any(|a| a == me) {
                continue;
            }
        }
        let list = match channel.as_str() {
            "telegram" => out.channels.telegram.as_mut().map(|c| &mut c.allowed_users),
            "discord" => out.channels.discord.as_mut().map(|c| &mut c.allowed_users),
            "slack" => out.channels.slack.as_mut().map(|c| &mut c.allowed_users),
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

[channels]
cli = true

[channels.slack.default]
enabled = true
bot_token = "xoxb-1"

[channels.telegram.default]
enabled = true
bot_token = "1:tg"

[channels.discord.default]
enabled = true
bot_token = "dc"

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
provider = "custom"
model = "stub-model"
temperature = 0.2
api_key = "sk-test"
api_url = "http://stub:8080/v1"

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
    }

    #[test]
    fn upstream_endpoint_names_are_read_as_api_url() {
        for key in ["base_url", "uri"] {
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
    fn peer_groups_of_other_agents_are_not_ours() {
        let text = "schema_version = 3\n[agents.default]\n\
                    [channels.telegram.default]\nenabled = true\nbot_token = \"1:tg\"\n\
                    [peer_groups.mine]\nchannel = \"telegram\"\nexternal_peers = [\"@alice\"]\n\
                    [peer_groups.theirs]\nchannel = \"telegram\"\nagents = [\"other\"]\nexternal_peers = [\"@mallory\"]\n";
        let (cfg, _) = parse(text).expect("parses");
        assert_eq!(
            cfg.channels.telegram.expect("tg").allowed_users,
            vec!["@alice"]
        );
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
                "schema_version = 3\n[channels.telegram.default]\nenabled = true\nbot_token = \"\"",
                "channels.telegram.default.bot_token",
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
