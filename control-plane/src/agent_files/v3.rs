//! The agent's `config.toml` in upstream ZeroClaw's schema V3 (0.8 and
//! later), rendered with the TOML serializer, never a string template: the
//! same agent as the V1 file.
//!
//! ```toml
//! schema_version = 3
//! [providers.models.<type>.default]   # model, temperature, api_key, uri
//! [agents.default]                    # model_provider = "<type>.default",
//!                                     # risk_profile, runtime_profile, channels
//! [agents.default.workspace]          # path: where the persona files are written
//! [agents.default.memory]             # backend: the agent's memory (sqlite|markdown|none)
//! [risk_profiles.default]  [runtime_profiles.default]
//! [gateway]  [memory]
//! [channels]                          # cli
//! [channels.<type>.default]           # enabled = true (V3's default is false), tokens, ids
//! [peer_groups.<type>_default]        # channel, agents, external_peers (the allow-list)
//! ```
//!
//! Where upstream (zeroclaw-labs/zeroclaw, tags v0.8.0 to v0.8.4) defines
//! each key, under `crates/zeroclaw-config/src/`:
//! - `schema.rs` `Config`: the top-level tables; `ModelProviderConfig`
//!   (flattened into every `*ModelProviderConfig` family slot): `api_key`,
//!   `uri` (the endpoint; there is no `api_url`, `base_url` or `provider`
//!   key, and unknown keys are dropped silently), `model`, `temperature`;
//!   `AliasedAgentConfig`: `model_provider`, `risk_profile`,
//!   `runtime_profile`, `channels`, `workspace`, `memory`; `GatewayConfig`;
//!   `MemoryConfig`; `ChannelsConfig` (`cli`, `telegram`, `discord`,
//!   `slack`, each a map alias → config); `TelegramConfig` (`enabled`,
//!   `bot_token`), `DiscordConfig` (`enabled`, `bot_token`, `guild_ids`),
//!   `SlackConfig` (`enabled`, `bot_token`, `app_token`, `channel_ids`);
//! - `providers.rs` `ModelProviders`: the provider types (`openrouter`,
//!   `openai`, `anthropic`, `custom`, …; a type with no slot is dropped);
//! - `multi_agent.rs` `AgentWorkspaceConfig` (`path`), `AgentMemoryConfig`
//!   (`backend`), `PeerGroupConfig` (`channel`, `agents`, `external_peers`);
//! - `schema/v2.rs`, the V2→V3 migration, for the conventions followed
//!   here: alias `default`, `custom:<url>` split into type `custom` and
//!   `uri`, `anthropic-custom:<url>` into type `anthropic` and `uri`, a
//!   channel's allow-list as `[peer_groups.<type>_default]`.
//!
//! Allow-lists: upstream authorizes a sender on a channel when a peer group
//! of that channel lists it in `external_peers` (`Config::
//! channel_external_peers` in `schema.rs`), and `"*"` there lets everyone in
//! (`crates/zeroclaw-channels/src/allowlist.rs`). Its migration drops `"*"`
//! (which would let nobody in); we keep it: `external_peers = ["*"]`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{GatewayConfig, MemoryConfig, WORKSPACE_DIR};
use crate::model::{Agent, Channels};
use crate::orchestrator::{AGENT_PORT, DATA_DIR};

/// The one agent's alias (`[agents.default]`), as upstream's migration
/// names the agent of a single-agent config.
pub const AGENT_ALIAS: &str = "default";
/// The alias of the provider entry and of each channel instance.
pub const INSTANCE_ALIAS: &str = "default";

/// `config.toml`, schema V3 (only the keys we set).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFileV3 {
    /// Always 3.
    pub schema_version: u32,
    pub providers: Providers,
    /// Alias → agent; one entry, [`AGENT_ALIAS`].
    pub agents: BTreeMap<String, AgentV3>,
    /// `[risk_profiles.default]`, referenced by the agent (left to the
    /// runtime's defaults; V3 refuses a dangling reference).
    pub risk_profiles: BTreeMap<String, toml::Table>,
    /// `[runtime_profiles.default]`, likewise.
    pub runtime_profiles: BTreeMap<String, toml::Table>,
    /// `[gateway]` as in V1 (upstream `GatewayConfig`: `port`, `host`,
    /// `allow_public_bind`, `require_pairing`).
    pub gateway: GatewayConfig,
    /// `[memory]` as in V1: `auto_save`, and `backend` (upstream: the
    /// storage instance, a bare name standing for `<name>.default`; the
    /// agent's own backend is [`AgentMemory`]).
    pub memory: MemoryConfig,
    pub channels: ChannelsV3,
    /// `[peer_groups.<type>_default]`: who may talk to the agent on each
    /// channel.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub peer_groups: BTreeMap<String, PeerGroup>,
}

/// `[providers]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Providers {
    /// `[providers.models.<type>.<alias>]`.
    pub models: BTreeMap<String, BTreeMap<String, ModelProvider>>,
}

/// `[providers.models.<type>.<alias>]` (upstream `ModelProviderConfig`,
/// `crates/zeroclaw-config/src/schema.rs`). The type is the table's key,
/// not a field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelProvider {
    pub model: String,
    pub temperature: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
    /// The endpoint (V1's `api_url`, or the URL of `custom:<url>`); absent:
    /// the type's own. Upstream appends `/chat/completions` to a base URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
}

/// `[agents.<alias>]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentV3 {
    /// `<type>.<alias>` of its entry in `[providers.models]`.
    pub model_provider: String,
    pub risk_profile: String,
    pub runtime_profile: String,
    /// `<type>.<alias>` of each channel instance it serves.
    pub channels: Vec<String>,
    pub workspace: Workspace,
    pub memory: AgentMemory,
}

/// `[agents.<alias>.workspace]` (upstream `AgentWorkspaceConfig`,
/// `crates/zeroclaw-config/src/multi_agent.rs`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Workspace {
    /// Absolute path in the container: the persona files are read here.
    pub path: String,
}

/// `[agents.<alias>.memory]` (upstream `AgentMemoryConfig`,
/// `crates/zeroclaw-config/src/multi_agent.rs`): the backend the agent's
/// turns use (`create_memory_for_agent` in `crates/zeroclaw-memory`);
/// absent, upstream uses `sqlite` whatever `[memory] backend` says.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentMemory {
    /// `sqlite`, `markdown` or `none` (upstream's `MemoryBackendKind`).
    pub backend: String,
}

/// `[channels]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelsV3 {
    pub cli: bool,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub telegram: BTreeMap<String, TelegramV3>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub discord: BTreeMap<String, DiscordV3>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub slack: BTreeMap<String, SlackV3>,
}

/// `[channels.telegram.<alias>]` (upstream `TelegramConfig`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelegramV3 {
    /// Always `true` (V3's default is `false`: the channel would not run).
    pub enabled: bool,
    pub bot_token: String,
    /// Our runtime's API server override; not an upstream key (upstream
    /// drops unknown keys), rendered only when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_base_url: Option<String>,
}

/// `[channels.discord.<alias>]` (upstream `DiscordConfig`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiscordV3 {
    /// Always `true`.
    pub enabled: bool,
    pub bot_token: String,
    /// V3's plural of V1's `guild_id` (empty: every guild).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub guild_ids: Vec<String>,
    /// Our runtime's API server override; not an upstream key (upstream
    /// drops unknown keys), rendered only when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_base_url: Option<String>,
}

/// `[channels.slack.<alias>]` (upstream `SlackConfig`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlackV3 {
    /// Always `true`.
    pub enabled: bool,
    pub bot_token: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_token: Option<String>,
    /// V3's plural of V1's `channel_id` (empty: every channel).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub channel_ids: Vec<String>,
    /// Our runtime's API server override; not an upstream key (upstream
    /// drops unknown keys), rendered only when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_base_url: Option<String>,
}

/// `[peer_groups.<name>]` (upstream `PeerGroupConfig`): the outside users
/// (`external_peers`, `"*"` = everyone) allowed in on channel type
/// `channel`; `agents` must serve a channel of that type (upstream's
/// `Config::validate`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerGroup {
    pub channel: String,
    pub agents: Vec<String>,
    pub external_peers: Vec<String>,
}

/// Where the persona files are, absolute in the container.
pub fn workspace_path() -> String {
    format!("{DATA_DIR}/{WORKSPACE_DIR}")
}

/// `(type, uri)` of a provider, split as upstream's migration splits it
/// (`split_colon_url_provider` and `normalize_provider_type` in
/// `schema/v2.rs`): `custom:<url>` is type `custom`, `anthropic-custom:<url>`
/// type `anthropic` (upstream has no `anthropic-custom` slot), the URL going
/// to `uri`; an explicit provider URL wins over the one in the name.
fn provider_type(provider: &str, provider_url: Option<&str>) -> (String, Option<String>) {
    if let Some((prefix, url)) = provider.split_once(':') {
        let ty = match prefix {
            "custom" => Some("custom"),
            "anthropic-custom" => Some("anthropic"),
            _ => None,
        };
        if let Some(ty) = ty {
            if url.starts_with("http://") || url.starts_with("https://") {
                return (
                    ty.to_owned(),
                    provider_url.map(str::to_owned).or(Some(url.to_owned())),
                );
            }
        }
    }
    (provider.to_owned(), provider_url.map(str::to_owned))
}

/// One instance under [`INSTANCE_ALIAS`].
fn one<T>(v: T) -> BTreeMap<String, T> {
    BTreeMap::from([(INSTANCE_ALIAS.to_owned(), v)])
}

/// The V3 config for `agent` (pure).
pub fn config_file(agent: &Agent, api_key: Option<&str>, channels: &Channels) -> ConfigFileV3 {
    let v1 = super::config_file(agent, api_key, channels);
    let (ty, uri) = provider_type(&agent.provider, agent.provider_url.as_deref());
    let alias = |t: &str| format!("{t}.{INSTANCE_ALIAS}");

    let mut out_channels = ChannelsV3 {
        cli: true,
        telegram: BTreeMap::new(),
        discord: BTreeMap::new(),
        slack: BTreeMap::new(),
    };
    let mut peer_groups = BTreeMap::new();
    let mut served = Vec::new();
    let mut group = |channel: &str, users: &[String]| {
        peer_groups.insert(
            format!("{channel}_{INSTANCE_ALIAS}"),
            PeerGroup {
                channel: channel.to_owned(),
                agents: vec![AGENT_ALIAS.to_owned()],
                external_peers: users.to_vec(),
            },
        );
    };
    if let Some(t) = &channels.telegram {
        out_channels.telegram = one(TelegramV3 {
            enabled: true,
            bot_token: t.bot_token.clone(),
            api_base_url: t.api_base_url.clone(),
        });
        group("telegram", &t.allowed_users);
        served.push(alias("telegram"));
    }
    if let Some(d) = &channels.discord {
        out_channels.discord = one(DiscordV3 {
            enabled: true,
            bot_token: d.bot_token.clone(),
            guild_ids: d.guild_id.iter().cloned().collect(),
            api_base_url: d.api_base_url.clone(),
        });
        group("discord", &d.allowed_users);
        served.push(alias("discord"));
    }
    if let Some(s) = &channels.slack {
        out_channels.slack = one(SlackV3 {
            enabled: true,
            bot_token: s.bot_token.clone(),
            app_token: s.app_token.clone(),
            channel_ids: s.channel_id.iter().cloned().collect(),
            api_base_url: s.api_base_url.clone(),
        });
        group("slack", &s.allowed_users);
        served.push(alias("slack"));
    }

    let provider = ModelProvider {
        model: agent.model.clone(),
        temperature: agent.temperature,
        api_key: api_key.map(str::to_owned),
        uri,
    };
    ConfigFileV3 {
        schema_version: 3,
        providers: Providers {
            models: BTreeMap::from([(ty.clone(), one(provider))]),
        },
        agents: BTreeMap::from([(
            AGENT_ALIAS.to_owned(),
            AgentV3 {
                model_provider: alias(&ty),
                risk_profile: "default".to_owned(),
                runtime_profile: "default".to_owned(),
                channels: served,
                workspace: Workspace {
                    path: workspace_path(),
                },
                memory: AgentMemory {
                    backend: v1.memory.backend.clone(),
                },
            },
        )]),
        risk_profiles: BTreeMap::from([("default".to_owned(), toml::Table::new())]),
        runtime_profiles: BTreeMap::from([("default".to_owned(), toml::Table::new())]),
        gateway: GatewayConfig {
            port: AGENT_PORT,
            ..v1.gateway
        },
        memory: v1.memory,
        channels: out_channels,
        peer_groups,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent_files::{render, CONFIG_PATH};
    use crate::model::{DiscordChannel, SlackChannel, TelegramChannel};
    use crate::runtime_profile::ConfigDialect;
    use crate::status::Status;

    fn agent() -> Agent {
        let mut a = crate::reconciler::testing::agent(Status::Pending);
        a.agent_name = "Ada".into();
        a.provider = "openrouter".into();
        a.model = "anthropic/claude-sonnet-4".into();
        a.temperature = 0.3;
        a.auto_save = "false".into();
        a
    }

    fn channels() -> Channels {
        Channels {
            telegram: Some(TelegramChannel {
                api_base_url: None,
                bot_token: "1:tg".into(),
                allowed_users: vec!["*".into()],
            }),
            discord: Some(DiscordChannel {
                api_base_url: None,
                bot_token: "dc".into(),
                guild_id: Some("42".into()),
                allowed_users: vec!["123456789012345678".into()],
            }),
            slack: Some(SlackChannel {
                api_base_url: None,
                bot_token: "xoxb-1".into(),
                app_token: Some("xapp-1".into()),
                channel_id: Some("C0123ABCD".into()),
                allowed_users: vec!["U0123ABCD".into()],
            }),
        }
    }

    /// The rendered V3 file, as text and as a bare TOML table.
    fn rendered(a: &Agent, key: Option<&str>, ch: &Channels) -> (String, toml::Table) {
        let files = render(a, key, ch, ConfigDialect::V3).expect("render");
        let config = files
            .iter()
            .find(|f| f.path == CONFIG_PATH)
            .expect("config");
        let text = String::from_utf8(config.contents.clone()).expect("utf8");
        let table = text.parse().expect("parses back");
        (text, table)
    }

    /// Upstream's V3 keys (zeroclaw-labs/zeroclaw v0.8.0–v0.8.4), for the
    /// tables we write: `crates/zeroclaw-config/src/schema.rs` (`Config`,
    /// `ModelProviderConfig`, `AliasedAgentConfig`, `GatewayConfig`,
    /// `MemoryConfig`, `ChannelsConfig`, `TelegramConfig`, `DiscordConfig`,
    /// `SlackConfig`), `providers.rs` (`ModelProviders` slots) and
    /// `multi_agent.rs` (`AgentWorkspaceConfig`, `AgentMemoryConfig`,
    /// `PeerGroupConfig`). Not exhaustive: enough to catch a key upstream
    /// does not have, which it would drop without a word. `*` is any alias.
    const UPSTREAM_KEYS: &[(&str, &[&str])] = &[
        (
            "",
            &[
                "schema_version",
                "providers",
                "agents",
                "risk_profiles",
                "runtime_profiles",
                "gateway",
                "memory",
                "storage",
                "channels",
                "peer_groups",
            ],
        ),
        ("providers", &["models", "tts", "transcription"]),
        // Slots of the types zcaas accepts (upstream has more).
        (
            "providers.models",
            &[
                "openrouter",
                "openai",
                "anthropic",
                "ollama",
                "groq",
                "gemini",
                "mistral",
                "deepseek",
                "together",
                "custom",
            ],
        ),
        (
            "providers.models.*.*",
            &[
                "api_key",
                "kind",
                "uri",
                "model",
                "fallback",
                "fallback_models",
                "temperature",
                "timeout_secs",
                "max_tokens",
                "extra_headers",
                "wire_api",
            ],
        ),
        (
            "agents.*",
            &[
                "enabled",
                "channels",
                "model_provider",
                "risk_profile",
                "runtime_profile",
                "workspace",
                "memory",
                "identity",
            ],
        ),
        (
            "agents.*.workspace",
            &[
                "path",
                "access",
                "unrestricted_filesystem",
                "read_memory_from",
            ],
        ),
        ("agents.*.memory", &["backend"]),
        // Empty: every field of upstream's profiles has a default.
        ("risk_profiles.*", &[]),
        ("runtime_profiles.*", &[]),
        (
            "gateway",
            &[
                "port",
                "host",
                "require_pairing",
                "allow_public_bind",
                "paired_tokens",
            ],
        ),
        ("memory", &["backend", "auto_save"]),
        ("channels", &["cli", "telegram", "discord", "slack"]),
        (
            "channels.telegram.*",
            &["enabled", "bot_token", "api_base_url", "mention_only"],
        ),
        (
            "channels.discord.*",
            &[
                "enabled",
                "bot_token",
                "guild_ids",
                "channel_ids",
                "mention_only",
            ],
        ),
        (
            "channels.slack.*",
            &[
                "enabled",
                "bot_token",
                "app_token",
                "channel_ids",
                "mention_only",
            ],
        ),
        (
            "peer_groups.*",
            &["channel", "agents", "external_peers", "ignore"],
        ),
    ];

    /// The keys upstream has in the table at `path`, if it is one we know.
    fn upstream_keys(path: &[&str]) -> Option<&'static [&'static str]> {
        UPSTREAM_KEYS.iter().find_map(|(pattern, keys)| {
            let pattern: Vec<&str> = pattern.split('.').filter(|p| !p.is_empty()).collect();
            let matches = pattern.len() == path.len()
                && pattern.iter().zip(path).all(|(p, k)| *p == "*" || p == k);
            matches.then_some(*keys)
        })
    }

    /// Every key of every table in `t` is one upstream has; names the
    /// offenders.
    fn unknown_to_upstream(t: &toml::Table, path: &mut Vec<String>, out: &mut Vec<String>) {
        let here: Vec<&str> = path.iter().map(String::as_str).collect();
        let known = upstream_keys(&here);
        for (key, value) in t {
            let full = if path.is_empty() {
                key.clone()
            } else {
                format!("{}.{key}", path.join("."))
            };
            match known {
                Some(keys) if keys.contains(&key.as_str()) => {}
                // An alias level (`providers.models.openrouter`, whose keys
                // are aliases) is not in the list: only its children are.
                None if value.is_table() => {}
                _ => out.push(full),
            }
            if let toml::Value::Table(inner) = value {
                path.push(key.clone());
                unknown_to_upstream(inner, path, out);
                path.pop();
            }
        }
    }

    fn assert_upstream_shape(text: &str) {
        let t: toml::Table = text.parse().expect("toml");
        let mut unknown = Vec::new();
        unknown_to_upstream(&t, &mut Vec::new(), &mut unknown);
        assert!(
            unknown.is_empty(),
            "keys upstream lacks: {unknown:?}\n{text}"
        );
        // Every `<type>.<alias>` reference resolves, as upstream's
        // `Config::validate` demands.
        for (alias, a) in t["agents"].as_table().expect("agents") {
            let mp = a["model_provider"].as_str().expect("model_provider");
            let (ty, pa) = mp.split_once('.').expect("dotted");
            assert!(t["providers"]["models"][ty].get(pa).is_some(), "{mp}");
            for ch in a["channels"].as_array().expect("channels") {
                let (ty, ca) = ch.as_str().and_then(|c| c.split_once('.')).expect("ref");
                assert!(t["channels"][ty].get(ca).is_some(), "{ch}");
            }
            for profile in ["risk_profiles", "runtime_profiles"] {
                let key = &profile[..profile.len() - 1];
                let name = a[key].as_str().expect("profile");
                assert!(t[profile].get(name).is_some(), "{alias}: {profile}.{name}");
            }
            let backend = a["memory"]["backend"].as_str().expect("backend");
            assert!(
                ["none", "sqlite", "postgres", "qdrant", "markdown", "lucid"].contains(&backend),
                "{backend}"
            );
        }
        // A peer group's agents serve a channel of its type.
        if let Some(groups) = t.get("peer_groups").and_then(toml::Value::as_table) {
            for (name, g) in groups {
                let ty = g["channel"].as_str().expect("channel");
                assert!(t["channels"].get(ty).is_some(), "{name}");
                for member in g["agents"].as_array().expect("agents") {
                    let served = t["agents"][member.as_str().expect("alias")]["channels"]
                        .as_array()
                        .expect("channels")
                        .iter()
                        .filter_map(toml::Value::as_str)
                        .any(|c| c.starts_with(&format!("{ty}.")));
                    assert!(served, "{name}: {member}");
                }
            }
        }
    }

    #[test]
    fn the_shape_check_catches_keys_upstream_lacks() {
        let (text, _) = rendered(&agent(), Some("k"), &channels());
        for (good, bad) in [
            ("uri = ", "api_url = "),
            ("model = ", "provider = \"openrouter\"\nmodel = "),
            ("channel_ids = ", "channel_id = "),
            ("[providers.models.openrouter", "[providers.models.or"),
        ] {
            let mut a = agent();
            a.provider_url = Some("http://u/v1".into());
            let (text, _) = rendered(&a, Some("k"), &channels());
            assert!(text.contains(good), "{good}: {text}");
            let broken = text.replacen(good, bad, 1);
            let caught = std::panic::catch_unwind(|| assert_upstream_shape(&broken));
            assert!(caught.is_err(), "{bad} not caught:\n{broken}");
        }
        assert_upstream_shape(&text);
    }

    #[test]
    fn the_v3_shape() {
        let (text, t) = rendered(&agent(), Some("sk-or-1"), &channels());
        assert_upstream_shape(&text);
        assert_eq!(t["schema_version"].as_integer(), Some(3), "{text}");
        let p = &t["providers"]["models"]["openrouter"]["default"];
        assert_eq!(p["model"].as_str(), Some("anthropic/claude-sonnet-4"));
        assert_eq!(p["temperature"].as_float(), Some(0.3));
        assert_eq!(p["api_key"].as_str(), Some("sk-or-1"));
        assert!(p.get("uri").is_none(), "the type's own endpoint: {text}");
        let a = &t["agents"]["default"];
        assert_eq!(a["model_provider"].as_str(), Some("openrouter.default"));
        assert_eq!(
            a["workspace"]["path"].as_str(),
            Some("/zeroclaw-data/workspace")
        );
        assert_eq!(a["memory"]["backend"].as_str(), Some("sqlite"));
        let ch: Vec<&str> = a["channels"]
            .as_array()
            .expect("channels")
            .iter()
            .filter_map(toml::Value::as_str)
            .collect();
        assert_eq!(ch, ["telegram.default", "discord.default", "slack.default"]);
        assert!(t["risk_profiles"]["default"].is_table());
        assert!(t["runtime_profiles"]["default"].is_table());
        let gw = &t["gateway"];
        assert_eq!(gw["port"].as_integer(), Some(42617));
        assert_eq!(gw["host"].as_str(), Some("0.0.0.0"));
        assert_eq!(gw["allow_public_bind"].as_bool(), Some(true));
        assert_eq!(gw["require_pairing"].as_bool(), Some(true));
        assert_eq!(t["memory"]["backend"].as_str(), Some("sqlite"));
        assert_eq!(t["memory"]["auto_save"].as_bool(), Some(false));
        // Typed round trip (deny_unknown_fields everywhere).
        let typed: ConfigFileV3 = toml::from_str(&text).expect("typed");
        assert_eq!(typed, config_file(&agent(), Some("sk-or-1"), &channels()));
    }

    #[test]
    fn every_accepted_provider_is_an_upstream_slot() {
        for name in crate::validation::PROVIDERS {
            let mut a = agent();
            a.provider = (*name).to_owned();
            let (text, t) = rendered(&a, Some("k"), &Channels::default());
            assert_upstream_shape(&text);
            assert!(
                t["providers"]["models"][*name]["default"].is_table(),
                "{text}"
            );
            assert_eq!(
                t["agents"]["default"]["model_provider"].as_str(),
                Some(format!("{name}.default").as_str())
            );
        }
    }

    #[test]
    fn the_memory_backend_is_the_agents_too() {
        for backend in crate::validation::MEMORY_BACKENDS {
            let mut a = agent();
            a.memory_backend = (*backend).to_owned();
            let (text, t) = rendered(&a, None, &Channels::default());
            assert_upstream_shape(&text);
            assert_eq!(t["memory"]["backend"].as_str(), Some(*backend));
            assert_eq!(
                t["agents"]["default"]["memory"]["backend"].as_str(),
                Some(*backend)
            );
        }
    }

    #[test]
    fn channels_are_enabled_and_allow_lists_are_peer_groups() {
        let (text, t) = rendered(&agent(), None, &channels());
        assert_upstream_shape(&text);
        for ty in ["telegram", "discord", "slack"] {
            let c = &t["channels"][ty]["default"];
            assert_eq!(c["enabled"].as_bool(), Some(true), "{ty}: {text}");
            assert!(c.get("allowed_users").is_none(), "{ty}");
            let g = &t["peer_groups"][&format!("{ty}_default")];
            assert_eq!(g["channel"].as_str(), Some(ty));
            assert_eq!(g["agents"], toml::Value::Array(vec!["default".into()]));
        }
        let peers = |ty: &str| t["peer_groups"][&format!("{ty}_default")]["external_peers"].clone();
        assert_eq!(peers("telegram"), toml::Value::Array(vec!["*".into()]));
        assert_eq!(
            peers("discord"),
            toml::Value::Array(vec!["123456789012345678".into()])
        );
        assert_eq!(peers("slack"), toml::Value::Array(vec!["U0123ABCD".into()]));
        assert_eq!(
            t["channels"]["telegram"]["default"]["bot_token"].as_str(),
            Some("1:tg")
        );
        let dc = &t["channels"]["discord"]["default"];
        assert_eq!(dc["bot_token"].as_str(), Some("dc"));
        assert_eq!(dc["guild_ids"], toml::Value::Array(vec!["42".into()]));
        let sl = &t["channels"]["slack"]["default"];
        assert_eq!(sl["bot_token"].as_str(), Some("xoxb-1"));
        assert_eq!(sl["app_token"].as_str(), Some("xapp-1"));
        assert_eq!(
            sl["channel_ids"],
            toml::Value::Array(vec!["C0123ABCD".into()])
        );
        assert_eq!(t["channels"]["cli"].as_bool(), Some(true));
    }

    #[test]
    fn unset_ids_are_left_out() {
        let mut ch = channels();
        if let Some(d) = ch.discord.as_mut() {
            d.guild_id = None;
        }
        if let Some(s) = ch.slack.as_mut() {
            s.channel_id = None;
            s.app_token = None;
        }
        let (text, t) = rendered(&agent(), None, &ch);
        assert_upstream_shape(&text);
        assert!(t["channels"]["discord"]["default"]
            .get("guild_ids")
            .is_none());
        let sl = &t["channels"]["slack"]["default"];
        assert!(sl.get("channel_ids").is_none() && sl.get("app_token").is_none());
    }

    #[test]
    fn no_channels_no_peer_groups_and_no_key() {
        let (text, t) = rendered(&agent(), None, &Channels::default());
        assert_upstream_shape(&text);
        assert!(t.get("peer_groups").is_none(), "{text}");
        assert!(!text.contains("api_key"), "{text}");
        let keys: Vec<&str> = t["channels"]
            .as_table()
            .expect("channels")
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(keys, ["cli"]);
    }

    #[test]
    fn a_custom_provider_is_split_into_type_and_uri() {
        let mut a = agent();
        a.provider = "custom:http://stub:8080/v1".into();
        let (text, t) = rendered(&a, None, &Channels::default());
        assert_upstream_shape(&text);
        let p = &t["providers"]["models"]["custom"]["default"];
        assert_eq!(p["uri"].as_str(), Some("http://stub:8080/v1"));
        assert!(p.get("api_url").is_none() && p.get("provider").is_none());
        assert_eq!(
            t["agents"]["default"]["model_provider"].as_str(),
            Some("custom.default")
        );
        // An explicit provider URL wins over the one in the name.
        a.provider_url = Some("http://other:1/v1".into());
        let (_, t) = rendered(&a, None, &Channels::default());
        assert_eq!(
            t["providers"]["models"]["custom"]["default"]["uri"].as_str(),
            Some("http://other:1/v1")
        );
    }

    #[test]
    fn a_provider_url_is_the_uri_of_any_type() {
        let mut a = agent();
        a.provider_url = Some("https://proxy.example/v1".into());
        let (text, t) = rendered(&a, None, &Channels::default());
        assert_upstream_shape(&text);
        assert_eq!(
            t["providers"]["models"]["openrouter"]["default"]["uri"].as_str(),
            Some("https://proxy.example/v1")
        );
        // `anthropic-custom:<url>` has no slot of its own upstream.
        a.provider = "anthropic-custom:https://claude.example".into();
        a.provider_url = None;
        let (text, t) = rendered(&a, None, &Channels::default());
        assert_upstream_shape(&text);
        assert_eq!(
            t["providers"]["models"]["anthropic"]["default"]["uri"].as_str(),
            Some("https://claude.example")
        );
        assert_eq!(
            t["agents"]["default"]["model_provider"].as_str(),
            Some("anthropic.default")
        );
    }

    #[test]
    fn the_persona_lands_in_the_workspace_the_config_names() {
        let files = render(&agent(), None, &channels(), ConfigDialect::V3).expect("render");
        let (_, t) = rendered(&agent(), None, &channels());
        let workspace = t["agents"]["default"]["workspace"]["path"]
            .as_str()
            .expect("path")
            .to_owned();
        for name in ["IDENTITY.md", "USER.md", "SOUL.md"] {
            let f = files
                .iter()
                .find(|f| f.path.ends_with(name))
                .expect("persona file");
            // Files are written relative to the data volume.
            assert_eq!(
                format!("{DATA_DIR}/{}", f.path),
                format!("{workspace}/{name}")
            );
        }
    }

    #[test]
    fn hostile_values_stay_values() {
        let value = "x\"\n[gateway]\nrequire_pairing = false\n#";
        let mut a = agent();
        a.model = value.into();
        a.provider_url = Some(value.into());
        let mut ch = channels();
        if let Some(t) = ch.telegram.as_mut() {
            t.bot_token = value.into();
            t.allowed_users = vec![value.into()];
        }
        let (text, t) = rendered(&a, Some(value), &ch);
        assert_upstream_shape(&text);
        assert_eq!(
            t["gateway"]["require_pairing"].as_bool(),
            Some(true),
            "{text}"
        );
        let typed: ConfigFileV3 = toml::from_str(&text).expect("typed");
        let p = &typed.providers.models["openrouter"]["default"];
        assert_eq!(p.model, value);
        assert_eq!(p.uri.as_deref(), Some(value));
        assert_eq!(
            typed.peer_groups["telegram_default"].external_peers,
            vec![value.to_owned()]
        );
    }
}
