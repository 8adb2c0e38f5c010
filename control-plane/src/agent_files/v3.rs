//! The agent's `config.toml` in upstream ZeroClaw's schema V3 (0.8 and
//! later; upstream `crates/zeroclaw-config/src/schema/v2.rs`, whose V2→V3
//! migration shows the shape): the same agent as the V1 file, rendered with
//! the TOML serializer, never a string template.
//!
//! ```toml
//! schema_version = 3
//! [providers.models.<type>.default]   # provider, model, temperature, api_key, api_url
//! [agents.default]                    # model_provider = "<type>.default", channels
//! [agents.default.workspace]          # path: where the persona files are written
//! [gateway]  [memory]
//! [channels.<type>.default]           # enabled = true (V3's default is false)
//! [peer_groups.<type>_default]        # channel, agents, external_peers (the allow-list)
//! ```
//!
//! A provider `custom:<url>` is split as upstream's migration splits it:
//! type `custom`, the URL as `api_url`. Allow-lists become peer groups
//! bound to the one agent; `"*"` is kept as `external_peers = ["*"]`
//! (upstream's migration drops it, which would let nobody in).

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
    pub gateway: GatewayConfig,
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

/// `[providers.models.<type>.<alias>]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelProvider {
    /// The provider type (`openrouter`, `openai`, `custom`, …).
    pub provider: String,
    pub model: String,
    pub temperature: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_url: Option<String>,
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
}

/// `[agents.<alias>.workspace]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Workspace {
    /// Absolute path in the container: the persona files are read here.
    pub path: String,
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

/// `[channels.telegram.<alias>]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelegramV3 {
    /// Always `true` (V3's default is `false`: the channel would not run).
    pub enabled: bool,
    pub bot_token: String,
}

/// `[channels.discord.<alias>]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiscordV3 {
    /// Always `true`.
    pub enabled: bool,
    pub bot_token: String,
    /// V3's plural of V1's `guild_id`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub guild_ids: Vec<String>,
}

/// `[channels.slack.<alias>]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlackV3 {
    /// Always `true`.
    pub enabled: bool,
    pub bot_token: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel_id: Option<String>,
}

/// `[peer_groups.<name>]`: the outside users (`external_peers`, `"*"` =
/// everyone) allowed to reach `agents` on channel type `channel`.
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

/// `(type, api_url)` of a provider: `custom:<url>` and
/// `anthropic-custom:<url>` are split, as upstream's migration does.
fn provider_type(provider: &str, api_url: Option<&str>) -> (String, Option<String>) {
    if let Some((prefix, url)) = provider.split_once(':') {
        if matches!(prefix, "custom" | "anthropic-custom")
            && (url.starts_with("http://") || url.starts_with("https://"))
        {
            return (
                prefix.to_owned(),
                api_url.map(str::to_owned).or(Some(url.to_owned())),
            );
        }
    }
    (provider.to_owned(), api_url.map(str::to_owned))
}

/// One instance under [`INSTANCE_ALIAS`].
fn one<T>(v: T) -> BTreeMap<String, T> {
    BTreeMap::from([(INSTANCE_ALIAS.to_owned(), v)])
}

/// The V3 config for `agent` (pure).
pub fn config_file(agent: &Agent, api_key: Option<&str>, channels: &Channels) -> ConfigFileV3 {
    let v1 = super::config_file(agent, api_key, channels);
    let (ty, api_url) = provider_type(&agent.provider, agent.provider_url.as_deref());
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
        });
        group("telegram", &t.allowed_users);
        served.push(alias("telegram"));
    }
    if let Some(d) = &channels.discord {
        out_channels.discord = one(DiscordV3 {
            enabled: true,
            bot_token: d.bot_token.clone(),
            guild_ids: d.guild_id.iter().cloned().collect(),
        });
        group("discord", &d.allowed_users);
        served.push(alias("discord"));
    }
    if let Some(s) = &channels.slack {
        out_channels.slack = one(SlackV3 {
            enabled: true,
            bot_token: s.bot_token.clone(),
            app_token: s.app_token.clone(),
            channel_id: s.channel_id.clone(),
        });
        group("slack", &s.allowed_users);
        served.push(alias("slack"));
    }

    let provider = ModelProvider {
        provider: ty.clone(),
        model: agent.model.clone(),
        temperature: agent.temperature,
        api_key: api_key.map(str::to_owned),
        api_url,
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
                bot_token: "1:tg".into(),
                allowed_users: vec!["*".into()],
            }),
            discord: Some(DiscordChannel {
                bot_token: "dc".into(),
                guild_id: Some("42".into()),
                allowed_users: vec!["123456789012345678".into()],
            }),
            slack: Some(SlackChannel {
                bot_token: "xoxb-1".into(),
                app_token: Some("xapp-1".into()),
                channel_id: None,
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

    #[test]
    fn the_v3_shape() {
        let (text, t) = rendered(&agent(), Some("sk-or-1"), &channels());
        assert_eq!(t["schema_version"].as_integer(), Some(3), "{text}");
        let p = &t["providers"]["models"]["openrouter"]["default"];
        assert_eq!(p["provider"].as_str(), Some("openrouter"));
        assert_eq!(p["model"].as_str(), Some("anthropic/claude-sonnet-4"));
        assert_eq!(p["temperature"].as_float(), Some(0.3));
        assert_eq!(p["api_key"].as_str(), Some("sk-or-1"));
        let a = &t["agents"]["default"];
        assert_eq!(a["model_provider"].as_str(), Some("openrouter.default"));
        assert_eq!(
            a["workspace"]["path"].as_str(),
            Some("/zeroclaw-data/workspace")
        );
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
        assert_eq!(gw["require_pairing"].as_bool(), Some(true));
        assert_eq!(t["memory"]["backend"].as_str(), Some("sqlite"));
        assert_eq!(t["memory"]["auto_save"].as_bool(), Some(false));
        assert!(t.get("default_provider").is_none() && t.get("channels_config").is_none());
        // Typed round trip (deny_unknown_fields everywhere).
        let typed: ConfigFileV3 = toml::from_str(&text).expect("typed");
        assert_eq!(typed, config_file(&agent(), Some("sk-or-1"), &channels()));
    }

    #[test]
    fn channels_are_enabled_and_allow_lists_are_peer_groups() {
        let (text, t) = rendered(&agent(), None, &channels());
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
            t["channels"]["discord"]["default"]["guild_ids"],
            toml::Value::Array(vec!["42".into()])
        );
        assert_eq!(t["channels"]["cli"].as_bool(), Some(true));
    }

    #[test]
    fn no_channels_no_peer_groups_and_no_key() {
        let (text, t) = rendered(&agent(), None, &Channels::default());
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
    fn a_custom_provider_is_split_into_type_and_url() {
        let mut a = agent();
        a.provider = "custom:http://stub:8080/v1".into();
        let (_, t) = rendered(&a, None, &Channels::default());
        let p = &t["providers"]["models"]["custom"]["default"];
        assert_eq!(p["provider"].as_str(), Some("custom"));
        assert_eq!(p["api_url"].as_str(), Some("http://stub:8080/v1"));
        assert_eq!(
            t["agents"]["default"]["model_provider"].as_str(),
            Some("custom.default")
        );
        // An explicit provider URL wins over the one in the name.
        a.provider_url = Some("http://other:1/v1".into());
        let (_, t) = rendered(&a, None, &Channels::default());
        assert_eq!(
            t["providers"]["models"]["custom"]["default"]["api_url"].as_str(),
            Some("http://other:1/v1")
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
        assert_eq!(
            t["gateway"]["require_pairing"].as_bool(),
            Some(true),
            "{text}"
        );
        let typed: ConfigFileV3 = toml::from_str(&text).expect("typed");
        assert_eq!(typed.providers.models["openrouter"]["default"].model, value);
        assert_eq!(
            typed.peer_groups["telegram_default"].external_peers,
            vec![value.to_owned()]
        );
    }
}
