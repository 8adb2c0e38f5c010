//! What is injected into an agent's data volume before it starts:
//! `.zeroclaw/config.toml` (rendered with a TOML serializer, never string
//! interpolation; mode 0600 because it holds the LLM key) and the persona files
//! `workspace/IDENTITY.md`, `USER.md`, `SOUL.md` (seed 003).
//!
//! The config is rendered in the dialect of the runtime profile
//! ([`crate::runtime_profile`]): upstream ZeroClaw's V1 keys here (our
//! runtime and upstream ≤ 0.7), V3 in [`v3`] (upstream ≥ 0.8). In V1
//! `[memory]` always carries both `backend` and `auto_save` (upstream
//! refuses the file otherwise); every channel section is rendered with
//! `enabled = true` and its allow-list (`"*"` = everyone; upstream reads an
//! empty list as nobody). Persona files are markdown for the model to read;
//! user text goes in verbatim as their body.

pub mod v3;

use crate::model::{Agent, Channels};
use crate::orchestrator::{FileEntry, AGENT_PORT};
use crate::runtime_profile::{ConfigDialect, RuntimeProfile};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Errors rendering an agent's files.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("rendering config.toml: {0}")]
    Toml(#[from] toml::ser::Error),
}

/// Path of the config file, relative to the data volume.
pub const CONFIG_PATH: &str = ".zeroclaw/config.toml";
/// Mode of the config file (it holds the LLM key and channel tokens).
pub const CONFIG_MODE: u32 = 0o600;
/// Mode of the persona files.
pub const PERSONA_MODE: u32 = 0o644;
/// Directory of the persona files, relative to the data volume: the
/// workspace every dialect points the runtime at (`ZEROCLAW_WORKSPACE` for
/// V1, `[agents.<alias>.workspace] path` for V3).
pub const WORKSPACE_DIR: &str = "workspace";

/// `config.toml`, upstream V1 schema (only the keys we set).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_url: Option<String>,
    pub default_provider: String,
    pub default_model: String,
    pub default_temperature: f64,
    pub memory: MemoryConfig,
    pub gateway: GatewayConfig,
    pub channels_config: ChannelsConfig,
}

/// `[memory]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemoryConfig {
    pub backend: String,
    pub auto_save: bool,
}

/// `[gateway]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    pub port: u16,
    pub host: String,
    pub allow_public_bind: bool,
    pub require_pairing: bool,
}

/// `[channels_config]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelsConfig {
    pub cli: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub telegram: Option<TelegramConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discord: Option<DiscordConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slack: Option<SlackConfig>,
}

/// `[channels_config.telegram]`. `allowed_users`: usernames or numeric ids,
/// `"*"` = everyone (upstream: an empty list prints a one-time `/bind`
/// code instead, which the API never lets happen).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelegramConfig {
    /// Always `true`: rendered explicitly, never left to a default.
    pub enabled: bool,
    pub bot_token: String,
    pub allowed_users: Vec<String>,
    /// Our runtime's API server override (upstream ignores the key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_base_url: Option<String>,
}

/// `[channels_config.discord]`. `allowed_users`: user ids (snowflakes),
/// `"*"` = everyone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiscordConfig {
    /// Always `true`.
    pub enabled: bool,
    pub bot_token: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guild_id: Option<String>,
    pub allowed_users: Vec<String>,
    /// Our runtime's API server override (upstream ignores the key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_base_url: Option<String>,
}

/// `[channels_config.slack]`. `allowed_users`: member ids (`U…`, `W…`),
/// `"*"` = everyone (upstream: an empty or missing list ignores every user).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlackConfig {
    /// Always `true`.
    pub enabled: bool,
    pub bot_token: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel_id: Option<String>,
    pub allowed_users: Vec<String>,
    /// Our runtime's API server override (upstream ignores the key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_base_url: Option<String>,
}

/// The config for `agent` (pure).
pub fn config_file(agent: &Agent, api_key: Option<&str>, channels: &Channels) -> ConfigFile {
    ConfigFile {
        api_key: api_key.map(str::to_owned),
        api_url: agent.provider_url.clone(),
        default_provider: agent.provider.clone(),
        default_model: agent.model.clone(),
        default_temperature: agent.temperature,
        memory: MemoryConfig {
            backend: agent.memory_backend.clone(),
            auto_save: matches!(
                agent.auto_save.trim().to_ascii_lowercase().as_str(),
                "true" | "1"
            ),
        },
        gateway: GatewayConfig {
            port: AGENT_PORT,
            host: "0.0.0.0".to_owned(),
            allow_public_bind: true,
            require_pairing: true,
        },
        channels_config: ChannelsConfig {
            cli: true,
            telegram: channels.telegram.as_ref().map(|t| TelegramConfig {
                enabled: true,
                bot_token: t.bot_token.clone(),
                allowed_users: t.allowed_users.clone(),
                api_base_url: t.api_base_url.clone(),
            }),
            discord: channels.discord.as_ref().map(|d| DiscordConfig {
                enabled: true,
                bot_token: d.bot_token.clone(),
                guild_id: d.guild_id.clone(),
                allowed_users: d.allowed_users.clone(),
                api_base_url: d.api_base_url.clone(),
            }),
            slack: channels.slack.as_ref().map(|s| SlackConfig {
                enabled: true,
                bot_token: s.bot_token.clone(),
                app_token: s.app_token.clone(),
                channel_id: s.channel_id.clone(),
                allowed_users: s.allowed_users.clone(),
                api_base_url: s.api_base_url.clone(),
            }),
        },
    }
}

/// The files for `agent`, with its decrypted API key and channels, the
/// config in `dialect`: `.zeroclaw/config.toml` (0600) and
/// `workspace/IDENTITY.md`, `USER.md`, `SOUL.md` (0644), in that order. No
/// paired token is seeded ([`render_seeded`] with [`SeededTokens::none`]).
pub fn render(
    agent: &Agent,
    api_key: Option<&str>,
    channels: &Channels,
    dialect: ConfigDialect,
) -> Result<Vec<FileEntry>, RenderError> {
    render_seeded(agent, api_key, channels, dialect, &SeededTokens::none())
}

/// Path of our runtime's store of paired-token hashes, relative to the data
/// volume (`agent-runtime/src/tokens.rs`, written with `persist_tokens`);
/// upstream keeps paired tokens in `config.toml` itself.
pub const TOKEN_STORE_PATH: &str = ".zeroclaw/paired_tokens.txt";

/// The bearer tokens pre-seeded into an agent's `[gateway] paired_tokens`,
/// as SHA-256 hex digests (the gateway protocol, DESIGN.md §1): the tokens
/// its owner issued for its public URL (`agent_tokens`) and, with them, the
/// control plane's own token.
///
/// Why the control plane's own token must be seeded too: a runtime prints a
/// pairing code only while it holds no token, so seeded hashes suppress the
/// code the control plane would pair with. Both runtimes accept a digest as
/// it is: ours in `agent-runtime/src/tokens.rs` (`normalize_configured`:
/// a 64-hex entry is kept, anything else hashed; `TokenStore::is_empty`
/// decides the code); upstream `zeroclawlabs` 0.6.9 builds its guard from
/// `[gateway] paired_tokens` (`src/gateway/mod.rs:696`,
/// `PairingGuard::new(config.gateway.require_pairing,
/// &config.gateway.paired_tokens)`), where an entry for which
/// `is_token_hash` holds (64 hex digits, `src/security/pairing.rs:310`) is
/// stored as it is and any other hashed (`pairing.rs:65-75`), and a code is
/// generated only when `require_pairing && tokens.is_empty()`
/// (`pairing.rs:76`); `is_authenticated` (`pairing.rs:201`) compares the
/// SHA-256 lowercase hex (`{:x}`) of the presented token with the set — so
/// digests must be lowercase, as `hex::encode` writes them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SeededTokens {
    /// Digests of the tokens the owner issued (any order).
    pub issued: Vec<String>,
    /// Digest of the control plane's own token: seeded only along with
    /// issued tokens (without them the agent pairs with a code, as always).
    pub own: Option<String>,
}

impl SeededTokens {
    /// Nothing seeded: the agent prints a pairing code.
    pub fn none() -> Self {
        Self::default()
    }

    /// Whether anything is seeded (the owner issued at least one token).
    pub fn any(&self) -> bool {
        !self.issued.is_empty()
    }

    /// The `paired_tokens` list: the issued digests and the control plane's,
    /// sorted and distinct; empty without issued tokens.
    pub fn paired_tokens(&self) -> Vec<String> {
        if !self.any() {
            return Vec::new();
        }
        let mut all: Vec<String> = self
            .issued
            .iter()
            .chain(self.own.as_ref())
            .map(|h| h.to_ascii_lowercase())
            .collect();
        all.sort();
        all.dedup();
        all
    }

    /// The issued digests, sorted and distinct (what the spec hash sees).
    fn issued_sorted(&self) -> Vec<String> {
        let mut issued: Vec<String> = self.issued.iter().map(|h| h.to_ascii_lowercase()).collect();
        issued.sort();
        issued.dedup();
        issued
    }
}

/// `toml` rendered from `config` with `[gateway] paired_tokens = tokens`
/// added (the gateway table is top-level in both dialects).
fn with_paired_tokens<T: Serialize>(
    config: &T,
    tokens: Vec<String>,
) -> Result<String, RenderError> {
    let mut table = toml::Table::try_from(config)?;
    if let Some(toml::Value::Table(gateway)) = table.get_mut("gateway") {
        gateway.insert(
            "paired_tokens".to_owned(),
            toml::Value::Array(tokens.into_iter().map(toml::Value::String).collect()),
        );
    }
    Ok(toml::to_string(&table)?)
}

/// [`render`] with `seeded` tokens: with issued tokens, `config.toml` gains
/// `[gateway] paired_tokens` ([`SeededTokens::paired_tokens`]) and an
/// emptied token store ([`TOKEN_STORE_PATH`]) is shipped with the files, so
/// that no token persisted there by an earlier start (a revoked one)
/// survives on the volume. Without issued tokens the files are exactly
/// [`render`]'s of before (the agent pairs with a code).
pub fn render_seeded(
    agent: &Agent,
    api_key: Option<&str>,
    channels: &Channels,
    dialect: ConfigDialect,
    seeded: &SeededTokens,
) -> Result<Vec<FileEntry>, RenderError> {
    let paired = seeded.paired_tokens();
    let config = match (dialect, paired.is_empty()) {
        (ConfigDialect::V1, true) => toml::to_string(&config_file(agent, api_key, channels))?,
        (ConfigDialect::V3, true) => toml::to_string(&v3::config_file(agent, api_key, channels))?,
        (ConfigDialect::V1, false) => {
            with_paired_tokens(&config_file(agent, api_key, channels), paired)?
        }
        (ConfigDialect::V3, false) => {
            with_paired_tokens(&v3::config_file(agent, api_key, channels), paired)?
        }
    };
    let identity = format!(
        "# Identity\n\nYour name is {}.\n\nYou are the agent \"{}\", hosted on zcaas.\n",
        agent.agent_name, agent.name
    );
    let user = format!(
        "# User\n\n- Name: {}\n- Timezone: {}\n",
        agent
            .user_name
            .as_deref()
            .filter(|n| !n.trim().is_empty())
            .unwrap_or("(not given)"),
        agent.timezone
    );
    let soul = format!(
        "# Soul\n\n## Communication style\n\n{}\n",
        agent
            .communication_style
            .as_deref()
            .filter(|s| !s.trim().is_empty())
            .unwrap_or("Helpful, clear and concise.")
    );
    let file = |path: &str, contents: String, mode| FileEntry {
        path: path.to_owned(),
        contents: contents.into_bytes(),
        mode,
    };
    let persona = |name: &str| format!("{WORKSPACE_DIR}/{name}");
    let mut files = vec![
        file(CONFIG_PATH, config, CONFIG_MODE),
        file(&persona("IDENTITY.md"), identity, PERSONA_MODE),
        file(&persona("USER.md"), user, PERSONA_MODE),
        file(&persona("SOUL.md"), soul, PERSONA_MODE),
    ];
    if seeded.any() {
        files.push(file(
            TOKEN_STORE_PATH,
            EMPTIED_TOKEN_STORE.to_owned(),
            CONFIG_MODE,
        ));
    }
    Ok(files)
}

/// What an emptied token store holds (a comment: no hash).
pub const EMPTIED_TOKEN_STORE: &str =
    "# emptied by zcaas: the agent's tokens are its config's paired_tokens\n";

/// Keys of `config.toml` whose values are secrets, redacted before hashing.
const SECRET_KEYS: [&str; 3] = ["api_key", "bot_token", "app_token"];

/// A stable hash (hex SHA-256) of everything that shapes the container and
/// the injected files, so a change is visible as drift. Secrets enter only
/// through their ciphertexts' presence, never in clear.
///
/// Hashed: a format version, the runtime profile (its command and env), the
/// image, memory and CPU limits, the slug
/// (container, volume, router and host names derive from it), whether an API
/// key is stored, and every file's path, mode and contents — with the values
/// of `api_key`, `bot_token` and `app_token` in `config.toml` replaced by a
/// marker. The hash is put in a container label that `docker inspect` shows,
/// so it must not confirm a guessed secret; a secret rotation is therefore
/// not drift, and whoever changes a secret re-injects the files. The host
/// port is left out (the reconciler compares it on its own, and it is
/// claimed after the first hash is computed).
pub fn spec_hash(agent: &Agent, profile: RuntimeProfile, files: &[FileEntry]) -> String {
    spec_hash_seeded(agent, profile, files, &SeededTokens::none())
}

/// [`spec_hash`] of files rendered with `seeded` tokens
/// ([`render_seeded`]). `[gateway] paired_tokens` is left out of the
/// config's hash, and the *issued* digests are hashed on their own: issuing
/// or revoking a token is drift (the container is recreated with the new
/// set), while the control plane's own token — which changes at a pairing,
/// not with the configuration — never is. Without issued tokens the hash is
/// exactly [`spec_hash`]'s of before.
pub fn spec_hash_seeded(
    agent: &Agent,
    profile: RuntimeProfile,
    files: &[FileEntry],
    seeded: &SeededTokens,
) -> String {
    let mut sorted: Vec<&FileEntry> = files.iter().collect();
    sorted.sort_by(|a, b| a.path.cmp(&b.path));
    let files: Vec<serde_json::Value> = sorted
        .into_iter()
        .map(|f| {
            let contents = if f.path == CONFIG_PATH {
                redact_config(&f.contents)
            } else {
                f.contents.clone()
            };
            serde_json::json!({
                "path": f.path,
                "mode": f.mode,
                "sha256": hex::encode(Sha256::digest(&contents)),
            })
        })
        .collect();
    let canonical = serde_json::json!({
        // 2: containers gained log rotation and the installation label; a
        // container created from an older spec is recreated at its next
        // start (its volume kept), so it gets both.
        // 3: containers run with an init process (`HostConfig.Init`).
        "v": 3,
        "profile": profile.name(),
        "image": agent.image,
        "memory_limit_mb": agent.memory_limit_mb,
        "nano_cpus": agent.nano_cpus,
        "slug": agent.slug,
        "has_api_key": agent.encrypted_api_key.is_some(),
        "files": files,
    });
    let mut canonical = canonical;
    if seeded.any() {
        canonical["issued_tokens"] = serde_json::json!(seeded.issued_sorted());
    }
    hex::encode(Sha256::digest(canonical.to_string().as_bytes()))
}

/// `config.toml` with secret values replaced; a file that does not parse is
/// hashed as a digest of nothing but its length (it holds secrets in clear).
fn redact_config(contents: &[u8]) -> Vec<u8> {
    let parsed = std::str::from_utf8(contents)
        .ok()
        .and_then(|s| s.parse::<toml::Table>().ok());
    match parsed {
        Some(mut table) => {
            redact_table(&mut table);
            // Hashed apart, the issued ones only (see `spec_hash_seeded`).
            if let Some(toml::Value::Table(gateway)) = table.get_mut("gateway") {
                gateway.remove("paired_tokens");
            }
            toml::to_string(&table).unwrap_or_default().into_bytes()
        }
        None => format!("unparsable config of {} bytes", contents.len()).into_bytes(),
    }
}

fn redact_table(table: &mut toml::Table) {
    for (key, value) in table.iter_mut() {
        match value {
            toml::Value::Table(inner) => redact_table(inner),
            v if SECRET_KEYS.contains(&key.as_str()) => {
                *v = toml::Value::String("<secret>".to_owned());
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{DiscordChannel, SlackChannel, TelegramChannel};
    use crate::status::Status;

    /// The profile the hash tests render for.
    const P: RuntimeProfile = RuntimeProfile::Zcaas;

    /// The reconciler's fixture row (kept in step with the model), made
    /// distinctive.
    fn agent() -> Agent {
        let mut a = crate::reconciler::testing::agent(Status::Pending);
        a.name = "Ada's helper".into();
        a.slug = "ada".into();
        a.agent_name = "Ada".into();
        a.user_name = Some("Grace".into());
        a.timezone = "Europe/Paris".into();
        a.communication_style = Some("Warm and brief.".into());
        a.provider = "openrouter".into();
        a.model = "anthropic/claude-sonnet-4".into();
        a.encrypted_api_key = Some("v1:k1:ciphertext".into());
        a
    }

    fn config_of(files: &[FileEntry]) -> (String, ConfigFile) {
        let text = String::from_utf8(files[0].contents.clone()).expect("utf8");
        let parsed = toml::from_str(&text).expect("config parses back");
        (text, parsed)
    }

    fn text(files: &[FileEntry], path: &str) -> String {
        let f = files.iter().find(|f| f.path == path).expect("file present");
        String::from_utf8(f.contents.clone()).expect("utf8")
    }

    #[test]
    fn files_paths_and_modes() {
        let files = render(
            &agent(),
            Some("sk-or-key"),
            &Channels::default(),
            ConfigDialect::V1,
        )
        .expect("render");
        let shape: Vec<(&str, u32)> = files.iter().map(|f| (f.path.as_str(), f.mode)).collect();
        assert_eq!(
            shape,
            vec![
                (".zeroclaw/config.toml", 0o600),
                ("workspace/IDENTITY.md", 0o644),
                ("workspace/USER.md", 0o644),
                ("workspace/SOUL.md", 0o644),
            ]
        );
    }

    #[test]
    fn config_has_the_upstream_v1_keys() {
        let mut a = agent();
        a.provider_url = Some("http://stub:8080/v1".into());
        a.auto_save = "false".into();
        let files = render(
            &a,
            Some("sk-or-key"),
            &Channels::default(),
            ConfigDialect::V1,
        )
        .expect("render");
        let (_, config) = config_of(&files);
        assert_eq!(
            config,
            ConfigFile {
                api_key: Some("sk-or-key".into()),
                api_url: Some("http://stub:8080/v1".into()),
                default_provider: "openrouter".into(),
                default_model: "anthropic/claude-sonnet-4".into(),
                default_temperature: 0.7,
                memory: MemoryConfig {
                    backend: "sqlite".into(),
                    auto_save: false
                },
                gateway: GatewayConfig {
                    port: 42617,
                    host: "0.0.0.0".into(),
                    allow_public_bind: true,
                    require_pairing: true,
                },
                channels_config: ChannelsConfig {
                    cli: true,
                    telegram: None,
                    discord: None,
                    slack: None
                },
            }
        );
    }

    #[test]
    fn absent_key_and_url_are_omitted_and_memory_always_has_both_keys() {
        let files =
            render(&agent(), None, &Channels::default(), ConfigDialect::V1).expect("render");
        let (text, config) = config_of(&files);
        assert!(!text.contains("api_key"), "{text}");
        assert!(!text.contains("api_url"), "{text}");
        assert!(!text.contains("telegram") && !text.contains("discord") && !text.contains("slack"));
        let raw: toml::Table = text.parse().expect("table");
        let memory = raw["memory"].as_table().expect("[memory]");
        assert_eq!(memory["backend"].as_str(), Some("sqlite"));
        assert_eq!(memory["auto_save"].as_bool(), Some(true));
        assert_eq!(raw["channels_config"]["cli"].as_bool(), Some(true));
        assert_eq!(config.api_key, None);
    }

    #[test]
    fn v1_channels_are_enabled_with_their_allow_lists() {
        let channels = Channels {
            telegram: Some(TelegramChannel {
                api_base_url: None,
                bot_token: "1:tg".into(),
                allowed_users: vec!["*".into()],
            }),
            discord: None,
            slack: Some(SlackChannel {
                api_base_url: None,
                bot_token: "xoxb-1".into(),
                app_token: None,
                channel_id: None,
                allowed_users: vec!["U0123ABCD".into()],
            }),
        };
        let files = render(&agent(), None, &channels, ConfigDialect::V1).expect("render");
        let (text, _) = config_of(&files);
        let raw: toml::Table = text.parse().expect("table");
        let tg = raw["channels_config"]["telegram"]
            .as_table()
            .expect("telegram");
        assert_eq!(tg["enabled"].as_bool(), Some(true), "{text}");
        assert_eq!(tg["allowed_users"], toml::Value::Array(vec!["*".into()]));
        let sl = raw["channels_config"]["slack"].as_table().expect("slack");
        assert_eq!(sl["enabled"].as_bool(), Some(true));
        assert_eq!(
            sl["allowed_users"],
            toml::Value::Array(vec!["U0123ABCD".into()])
        );
    }

    fn hostile() -> Vec<&'static str> {
        vec![
            "plain",
            "quote \" and 'single' and \"\"\" triple",
            "new\nline\r\nand\ttab",
            "]\n[gateway]\nrequire_pairing = false\n",
            "x\"\nrequire_pairing = false\n[gateway]\nport = 1\n#",
            "back\\slash \\u0041 \\\"",
            "unicode ✓ Ünïcödé 日本語 🦀 \u{202e}rtl \u{0}nul",
            "= [ { } ] , #",
        ]
    }

    #[test]
    fn hostile_channel_and_key_values_round_trip_and_add_no_keys() {
        for value in hostile() {
            let channels = Channels {
                telegram: Some(TelegramChannel {
                    api_base_url: None,
                    bot_token: value.into(),
                    allowed_users: vec![value.into(), "@alice".into()],
                }),
                discord: Some(DiscordChannel {
                    api_base_url: None,
                    bot_token: value.into(),
                    guild_id: Some(value.into()),
                    allowed_users: vec![],
                }),
                slack: Some(SlackChannel {
                    api_base_url: None,
                    bot_token: value.into(),
                    app_token: None,
                    channel_id: Some(value.into()),
                    allowed_users: vec![value.into()],
                }),
            };
            let mut a = agent();
            a.model = value.into();
            a.provider_url = Some(value.into());
            let files = render(&a, Some(value), &channels, ConfigDialect::V1).expect("render");
            // deny_unknown_fields on every table: an injected key fails here.
            let (text, config) = config_of(&files);
            assert_eq!(config.api_key.as_deref(), Some(value), "{text}");
            assert_eq!(config.api_url.as_deref(), Some(value));
            assert_eq!(config.default_model, value);
            assert!(config.gateway.require_pairing, "{text}");
            assert_eq!(config.gateway.port, 42617);
            let tg = config.channels_config.telegram.expect("telegram");
            assert_eq!(
                (tg.bot_token.as_str(), tg.allowed_users[0].as_str()),
                (value, value)
            );
            let dc = config.channels_config.discord.expect("discord");
            assert_eq!(dc.guild_id.as_deref(), Some(value));
            assert!(dc.allowed_users.is_empty());
            let sl = config.channels_config.slack.expect("slack");
            assert_eq!(
                (sl.app_token, sl.channel_id.as_deref()),
                (None, Some(value))
            );
            assert_eq!(sl.allowed_users, vec![value.to_owned()]);
            assert!(tg.enabled && dc.enabled && sl.enabled, "{text}");
            let raw: toml::Table = text.parse().expect("table");
            let keys: Vec<&str> = raw.keys().map(String::as_str).collect();
            assert_eq!(
                keys,
                vec![
                    "api_key",
                    "api_url",
                    "channels_config",
                    "default_model",
                    "default_provider",
                    "default_temperature",
                    "gateway",
                    "memory"
                ]
            );
        }
    }

    #[test]
    fn persona_text_goes_in_verbatim() {
        for value in hostile() {
            let mut a = agent();
            a.agent_name = value.into();
            a.name = value.into();
            a.user_name = Some(value.into());
            a.timezone = value.into();
            a.communication_style = Some(value.into());
            let files = render(&a, None, &Channels::default(), ConfigDialect::V1).expect("render");
            assert!(text(&files, "workspace/IDENTITY.md").contains(value));
            let user = text(&files, "workspace/USER.md");
            assert!(user.starts_with("# User\n"));
            assert!(user.contains(&format!("- Name: {value}\n")));
            assert!(user.contains(&format!("- Timezone: {value}\n")));
            assert!(text(&files, "workspace/SOUL.md").contains(value));
            // The config is untouched by persona text.
            assert_eq!(
                files[0],
                render(&agent(), None, &Channels::default(), ConfigDialect::V1).expect("r")[0]
            );
        }
    }

    #[test]
    fn persona_defaults_when_optional_fields_are_missing() {
        let mut a = agent();
        a.user_name = None;
        a.communication_style = Some("  ".into());
        let files = render(&a, None, &Channels::default(), ConfigDialect::V1).expect("render");
        assert_eq!(text(&files, "workspace/IDENTITY.md"),
            "# Identity\n\nYour name is Ada.\n\nYou are the agent \"Ada's helper\", hosted on zcaas.\n");
        assert_eq!(
            text(&files, "workspace/USER.md"),
            "# User\n\n- Name: (not given)\n- Timezone: Europe/Paris\n"
        );
        assert_eq!(
            text(&files, "workspace/SOUL.md"),
            "# Soul\n\n## Communication style\n\nHelpful, clear and concise.\n"
        );
    }

    #[test]
    fn spec_hash_is_stable_and_sees_what_matters() {
        let a = agent();
        let files =
            render(&a, Some("sk-1"), &Channels::default(), ConfigDialect::V1).expect("render");
        let base = spec_hash(&a, P, &files);
        assert_eq!(base.len(), 64);
        assert_eq!(base, spec_hash(&a, P, &files), "deterministic");
        let mut reversed = files.clone();
        reversed.reverse();
        assert_eq!(
            base,
            spec_hash(&a, P, &reversed),
            "file order does not matter"
        );

        // Not drift: the port (compared on its own), row state, re-encryption.
        let mut same = a.clone();
        same.container_port = Some(40001);
        same.status = Status::Running;
        same.encrypted_api_key = Some("v1:k2:other-ciphertext".into());
        assert_eq!(base, spec_hash(&same, P, &files));

        // Drift: image, limits, slug, config, persona, modes.
        let changed = |f: &dyn Fn(&mut Agent)| {
            let mut b = a.clone();
            f(&mut b);
            let files =
                render(&b, Some("sk-1"), &Channels::default(), ConfigDialect::V1).expect("render");
            spec_hash(&b, P, &files)
        };
        for h in [
            changed(&|b| b.image = "other:1".into()),
            changed(&|b| b.memory_limit_mb = 512),
            changed(&|b| b.nano_cpus = 1_000_000_000),
            changed(&|b| b.slug = "bob".into()),
            changed(&|b| b.model = "gpt-4o".into()),
            changed(&|b| b.temperature = 0.2),
            changed(&|b| b.communication_style = Some("Terse.".into())),
            changed(&|b| b.encrypted_api_key = None),
        ] {
            assert_ne!(h, base);
        }
        let mut modes = files.clone();
        modes[0].mode = 0o644;
        assert_ne!(spec_hash(&a, P, &modes), base);
        // Another runtime profile (another command or env) is drift too.
        assert_ne!(spec_hash(&a, RuntimeProfile::ZeroclawV1, &files), base);
    }

    #[test]
    fn spec_hash_does_not_depend_on_secret_values() {
        let a = agent();
        let channels = |token: &str| Channels {
            telegram: Some(TelegramChannel {
                api_base_url: None,
                bot_token: token.into(),
                allowed_users: vec![],
            }),
            ..Default::default()
        };
        let one =
            render(&a, Some("sk-secret-1"), &channels("t1"), ConfigDialect::V1).expect("render");
        let two =
            render(&a, Some("sk-secret-2"), &channels("t2"), ConfigDialect::V1).expect("render");
        assert_eq!(spec_hash(&a, P, &one), spec_hash(&a, P, &two));
        // A non-secret channel field is drift.
        let mut users = channels("t1");
        if let Some(t) = users.telegram.as_mut() {
            t.allowed_users.push("@bob".into());
        }
        let three = render(&a, Some("sk-secret-1"), &users, ConfigDialect::V1).expect("render");
        assert_ne!(spec_hash(&a, P, &one), spec_hash(&a, P, &three));
    }

    fn seeded(issued: &[&str], own: Option<&str>) -> SeededTokens {
        SeededTokens {
            issued: issued
                .iter()
                .map(|t| hex::encode(Sha256::digest(t)))
                .collect(),
            own: own.map(|t| hex::encode(Sha256::digest(t))),
        }
    }

    fn paired_tokens_of(files: &[FileEntry]) -> Option<Vec<String>> {
        let raw: toml::Table = text(files, CONFIG_PATH).parse().expect("table");
        raw["gateway"].get("paired_tokens").map(|v| {
            v.as_array()
                .expect("an array")
                .iter()
                .map(|h| h.as_str().expect("a string").to_owned())
                .collect()
        })
    }

    #[test]
    fn issued_tokens_are_seeded_as_hashes_with_the_control_planes_own() {
        for dialect in [ConfigDialect::V1, ConfigDialect::V3] {
            let s = seeded(&["zcp_one", "zcp_two"], Some("zc_own"));
            let files = render_seeded(&agent(), Some("sk-1"), &Channels::default(), dialect, &s)
                .expect("render");
            let mut want: Vec<String> = ["zcp_one", "zcp_two", "zc_own"]
                .iter()
                .map(|t| hex::encode(Sha256::digest(t)))
                .collect();
            want.sort();
            assert_eq!(paired_tokens_of(&files), Some(want), "{dialect:?}");
            let config = text(&files, CONFIG_PATH);
            assert!(
                !config.contains("zcp_one") && !config.contains("zc_own"),
                "{config}"
            );
            // Still requires pairing, and everything else is as without tokens.
            let raw: toml::Table = config.parse().expect("table");
            assert_eq!(raw["gateway"]["require_pairing"].as_bool(), Some(true));
            let plain = render(&agent(), Some("sk-1"), &Channels::default(), dialect).expect("r");
            let mut plain_raw: toml::Table = text(&plain, CONFIG_PATH).parse().expect("table");
            let mut seeded_raw = raw.clone();
            if let Some(toml::Value::Table(g)) = seeded_raw.get_mut("gateway") {
                g.remove("paired_tokens");
            }
            if let Some(toml::Value::Table(g)) = plain_raw.get_mut("gateway") {
                assert!(!g.contains_key("paired_tokens"));
            }
            assert_eq!(seeded_raw, plain_raw, "{dialect:?}");
            // An emptied token store ships with them (no hash in it).
            let store = text(&files, TOKEN_STORE_PATH);
            assert!(store.lines().all(|l| l.starts_with('#')), "{store}");
            assert_eq!(files.len(), plain.len() + 1);
        }
    }

    #[test]
    fn without_issued_tokens_nothing_is_seeded_and_files_are_unchanged() {
        for dialect in [ConfigDialect::V1, ConfigDialect::V3] {
            let plain = render(&agent(), Some("sk-1"), &Channels::default(), dialect).expect("r");
            // The control plane's own token alone is never seeded: the agent
            // pairs with a code as before.
            let own_only = render_seeded(
                &agent(),
                Some("sk-1"),
                &Channels::default(),
                dialect,
                &seeded(&[], Some("zc_own")),
            )
            .expect("render");
            assert_eq!(plain, own_only, "{dialect:?}");
            assert_eq!(paired_tokens_of(&plain), None);
            assert!(plain.iter().all(|f| f.path != TOKEN_STORE_PATH));
            assert_eq!(
                spec_hash(&agent(), P, &plain),
                spec_hash_seeded(&agent(), P, &own_only, &seeded(&[], Some("zc_own")))
            );
        }
    }

    #[test]
    fn spec_hash_sees_issued_tokens_but_not_the_control_planes_own() {
        let a = agent();
        let hash = |s: &SeededTokens| {
            let files = render_seeded(&a, Some("sk-1"), &Channels::default(), ConfigDialect::V1, s)
                .expect("render");
            spec_hash_seeded(&a, P, &files, s)
        };
        let none = hash(&SeededTokens::none());
        let one = hash(&seeded(&["zcp_one"], Some("zc_own")));
        let two = hash(&seeded(&["zcp_one", "zcp_two"], Some("zc_own")));
        let other = hash(&seeded(&["zcp_other"], Some("zc_own")));
        // Issuing and revoking are drift…
        assert_ne!(none, one);
        assert_ne!(one, two);
        assert_ne!(one, other);
        assert_eq!(
            none,
            spec_hash(
                &a,
                P,
                &render(&a, Some("sk-1"), &Channels::default(), ConfigDialect::V1).expect("r")
            )
        );
        // …the control plane's own token (a new pairing) is not, nor order.
        assert_eq!(one, hash(&seeded(&["zcp_one"], Some("zc_another"))));
        assert_eq!(one, hash(&seeded(&["zcp_one"], None)));
        assert_eq!(two, hash(&seeded(&["zcp_two", "zcp_one"], Some("zc_own"))));
    }
}
