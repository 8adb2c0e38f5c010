//! The bodies of `POST /api/agents` and `PATCH /api/agents/{id}` (seed 003's
//! camelCase names, unknown fields refused) and their validation into what
//! the store takes. The first refused field wins.

use serde::{Deserialize, Deserializer};

use crate::channel_health;
use crate::config::Config;
use crate::error::ApiError;
use crate::model::Channels;
use crate::secrets::{Redacted, SecretBox, SecretField};
use crate::store::agents::{AgentChanges, NewAgent};
use crate::validation::{self as v, FieldError};

/// Default sampling temperature.
pub const DEFAULT_TEMPERATURE: f64 = 0.7;

/// Longest `communicationStyle`, in characters.
const MAX_STYLE: usize = 2000;

/// `POST /api/agents`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateAgent {
    /// Display name, 1..=64 characters.
    pub name: String,
    /// DNS label; derived from `name` when absent.
    #[serde(default)]
    pub slug: Option<String>,
    /// Persona name (IDENTITY.md), 1..=64; default `name`.
    #[serde(default)]
    pub agent_name: Option<String>,
    /// The user's name (USER.md), ≤ 64.
    #[serde(default)]
    pub user_name: Option<String>,
    /// IANA zone; default `UTC`.
    #[serde(default)]
    pub timezone: Option<String>,
    /// SOUL.md, ≤ 2000 characters.
    #[serde(default)]
    pub communication_style: Option<String>,
    pub provider: String,
    #[serde(default)]
    pub provider_url: Option<String>,
    pub model: String,
    /// 0.0..=2.0; default 0.7.
    #[serde(default)]
    pub temperature: Option<f64>,
    /// sqlite | markdown | none; default sqlite.
    #[serde(default)]
    pub memory_backend: Option<String>,
    /// Default true.
    #[serde(default)]
    pub auto_save: Option<bool>,
    #[serde(default)]
    pub api_key: Option<Redacted<String>>,
    #[serde(default)]
    pub channels: Option<Redacted<Channels>>,
}

/// Absent → `None` (unchanged); `null` → `Some(None)` (cleared).
fn nullable<'de, T: Deserialize<'de>, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// Absent → `None`; `null` is refused (the field cannot be cleared).
fn non_null<'de, T: Deserialize<'de>, D: Deserializer<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// `PATCH /api/agents/{id}`: every field optional; nullable ones accept
/// `null` to clear. `slug` cannot change (container, volume and route hang
/// on it).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PatchAgent {
    #[serde(default, deserialize_with = "non_null")]
    pub name: Option<String>,
    #[serde(default)]
    pub slug: Option<serde_json::Value>,
    #[serde(default, deserialize_with = "non_null")]
    pub agent_name: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub user_name: Option<Option<String>>,
    #[serde(default, deserialize_with = "non_null")]
    pub timezone: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub communication_style: Option<Option<String>>,
    #[serde(default, deserialize_with = "non_null")]
    pub provider: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub provider_url: Option<Option<String>>,
    #[serde(default, deserialize_with = "non_null")]
    pub model: Option<String>,
    #[serde(default, deserialize_with = "non_null")]
    pub temperature: Option<f64>,
    #[serde(default, deserialize_with = "non_null")]
    pub memory_backend: Option<String>,
    #[serde(default, deserialize_with = "non_null")]
    pub auto_save: Option<bool>,
    #[serde(default, deserialize_with = "nullable")]
    pub api_key: Option<Option<Redacted<String>>>,
    #[serde(default, deserialize_with = "nullable")]
    pub channels: Option<Option<Redacted<Channels>>>,
}

fn optional_line(
    field: &str,
    value: Option<&str>,
    max: usize,
) -> Result<Option<String>, FieldError> {
    match value {
        None => Ok(None),
        Some(s) if s.trim().is_empty() => Ok(None),
        Some(s) => v::line(field, s, 1, max).map(Some),
    }
}

fn optional_text(field: &str, value: Option<&str>) -> Result<Option<String>, FieldError> {
    match value {
        None => Ok(None),
        Some(s) if s.trim().is_empty() => Ok(None),
        Some(s) => v::text(field, s, MAX_STYLE).map(Some),
    }
}

async fn check_provider(provider: &str, allow_private: bool) -> Result<String, FieldError> {
    let p = v::provider(provider)?;
    if let Some(url) = p.strip_prefix("custom:") {
        v::base_url("provider", url, allow_private).await?;
    }
    Ok(p)
}

fn encrypt_channels(
    secrets: &SecretBox,
    agent_id: &str,
    c: &Channels,
) -> Result<Option<String>, ApiError> {
    if c.telegram.is_none() && c.discord.is_none() && c.slack.is_none() {
        return Ok(None);
    }
    let json = serde_json::to_string(c).map_err(ApiError::internal)?;
    Ok(Some(secrets.encrypt(
        agent_id,
        SecretField::Channels,
        &json,
    )?))
}

impl CreateAgent {
    /// Validates every field (first error wins), encrypts the secrets for
    /// `id`, and fills in the plan's limits and the config's image and domain.
    pub async fn into_new_agent(
        self,
        id: String,
        user_id: String,
        limits: crate::config::PlanLimits,
        config: &Config,
        secrets: &SecretBox,
    ) -> Result<NewAgent, ApiError> {
        let name = v::line("name", &self.name, 1, 64)?;
        let slug = match &self.slug {
            Some(s) => v::slug(s)?,
            None => {
                let derived = v::derive_slug(&name);
                if derived.is_empty() {
                    return Err(FieldError::new(
                        "slug",
                        "cannot be derived from name; provide one",
                    )
                    .into());
                }
                v::slug(&derived)?
            }
        };
        let agent_name = match &self.agent_name {
            Some(a) => v::line("agentName", a, 1, 64)?,
            None => name.clone(),
        };
        let user_name = optional_line("userName", self.user_name.as_deref(), 64)?;
        let timezone = match &self.timezone {
            Some(t) => v::timezone(t)?,
            None => "UTC".to_owned(),
        };
        let communication_style =
            optional_text("communicationStyle", self.communication_style.as_deref())?;
        let provider = check_provider(&self.provider, config.allow_private_provider_urls).await?;
        let provider_url = match &self.provider_url {
            Some(u) if !u.trim().is_empty() => Some(
                v::base_url("providerUrl", u.trim(), config.allow_private_provider_urls).await?,
            ),
            _ => None,
        };
        let model = v::model(&self.model)?;
        let temperature = v::temperature(self.temperature.unwrap_or(DEFAULT_TEMPERATURE))?;
        let memory_backend = v::memory_backend(self.memory_backend.as_deref().unwrap_or("sqlite"))?;
        let api_key = self
            .api_key
            .as_ref()
            .map(|k| v::api_key(k.expose()))
            .transpose()?;
        if let Some(c) = &self.channels {
            v::channels(c.expose())?;
            v::channel_base_urls(c.expose(), config.allow_private_provider_urls).await?;
        }
        let encrypted_api_key = api_key
            .map(|k| secrets.encrypt(&id, SecretField::ApiKey, &k))
            .transpose()?;
        let encrypted_channels = match &self.channels {
            Some(c) => encrypt_channels(secrets, &id, c.expose())?,
            None => None,
        };
        let channel_tokens = self
            .channels
            .as_ref()
            .map(|c| channel_health::token_rows(secrets, c.expose()))
            .unwrap_or_default();
        Ok(NewAgent {
            subdomain: format!("{slug}.{}", config.domain),
            id,
            user_id,
            name,
            slug,
            agent_name,
            user_name,
            timezone,
            communication_style,
            provider,
            provider_url,
            model,
            temperature,
            memory_backend,
            auto_save: self.auto_save.unwrap_or(true),
            encrypted_api_key,
            encrypted_channels,
            channel_tokens,
            image: config.runtime_image.clone(),
            memory_limit_mb: limits.memory_mb,
            nano_cpus: (limits.cpus * 1e9).round() as i64,
        })
    }
}

impl PatchAgent {
    /// Validates the fields present (first error wins) and encrypts new
    /// secrets for `agent_id`.
    pub async fn into_changes(
        self,
        agent_id: &str,
        config: &Config,
        secrets: &SecretBox,
    ) -> Result<AgentChanges, ApiError> {
        if self.slug.is_some() {
            return Err(
                FieldError::new("slug", "cannot be changed; create a new agent instead").into(),
            );
        }
        let allow_private = config.allow_private_provider_urls;
        let mut c = AgentChanges {
            name: self
                .name
                .as_deref()
                .map(|n| v::line("name", n, 1, 64))
                .transpose()?,
            agent_name: self
                .agent_name
                .as_deref()
                .map(|n| v::line("agentName", n, 1, 64))
                .transpose()?,
            user_name: self
                .user_name
                .map(|u| optional_line("userName", u.as_deref(), 64))
                .transpose()?,
            timezone: self.timezone.as_deref().map(v::timezone).transpose()?,
            communication_style: self
                .communication_style
                .map(|s| optional_text("communicationStyle", s.as_deref()))
                .transpose()?,
            ..Default::default()
        };
        if let Some(p) = &self.provider {
            c.provider = Some(check_provider(p, allow_private).await?);
        }
        c.provider_url = match self.provider_url {
            None => None,
            Some(None) => Some(None),
            Some(Some(u)) if u.trim().is_empty() => Some(None),
            Some(Some(u)) => Some(Some(
                v::base_url("providerUrl", u.trim(), allow_private).await?,
            )),
        };
        c.model = self.model.as_deref().map(v::model).transpose()?;
        c.temperature = self.temperature.map(v::temperature).transpose()?;
        c.memory_backend = self
            .memory_backend
            .as_deref()
            .map(v::memory_backend)
            .transpose()?;
        c.auto_save = self.auto_save;
        c.encrypted_api_key = match self.api_key {
            None => None,
            Some(None) => Some(None),
            Some(Some(k)) => {
                let k = v::api_key(k.expose())?;
                Some(Some(secrets.encrypt(agent_id, SecretField::ApiKey, &k)?))
            }
        };
        c.encrypted_channels = match &self.channels {
            None => None,
            Some(None) => Some(None),
            Some(Some(ch)) => {
                v::channels(ch.expose())?;
                v::channel_base_urls(ch.expose(), allow_private).await?;
                Some(encrypt_channels(secrets, agent_id, ch.expose())?)
            }
        };
        // The agent's claimed tokens follow its channels (none when cleared).
        c.channel_tokens = self.channels.as_ref().map(|ch| {
            ch.as_ref()
                .map(|ch| channel_health::token_rows(secrets, ch.expose()))
                .unwrap_or_default()
        });
        Ok(c)
    }
}
