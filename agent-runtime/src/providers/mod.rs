//! LLM providers: one client, four wire formats.
//!
//! | `default_provider` | wire | default base URL |
//! |---|---|---|
//! | `openai`, `openrouter`, `groq`, `mistral`, `deepseek`, `together`, `custom:<url>` | OpenAI chat completions: `POST {base}/chat/completions`, `Authorization: Bearer` | per provider, `<url>` for custom |
//! | `anthropic` | Messages: `POST {base}/v1/messages`, `x-api-key`, `anthropic-version: 2023-06-01` | `https://api.anthropic.com` |
//! | `gemini` (`google`) | `POST {base}/v1beta/models/{model}:generateContent`, `x-goog-api-key` | `https://generativelanguage.googleapis.com` |
//! | `ollama` | `POST {base}/api/chat`, `stream: false`, no key | `http://localhost:11434` |
//!
//! `api_url` / `ZEROCLAW_PROVIDER_URL` replaces the base URL. Every reply body, whatever the
//! wire format, is read through [`body::read_capped`] and refused past [`MAX_REPLY_BYTES`]
//! (1 MiB). Errors are reduced to [`ProviderError`], whose messages never contain the API key
//! or the request URL.

mod anthropic;
mod body;
mod gemini;
mod ollama;
mod openai;

use std::sync::OnceLock;
use std::time::Duration;

use serde_json::Value;

use crate::config::ProviderSettings;
use crate::memory::Turn;
use crate::secret::Secret;

pub use body::MAX_REPLY_BYTES;

/// A wire format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    /// OpenAI chat completions (and compatible APIs).
    OpenAi,
    /// Anthropic Messages.
    Anthropic,
    /// Google Gemini `generateContent`.
    Gemini,
    /// Ollama `/api/chat`.
    Ollama,
}

/// A named provider: its wire format, default base URL and default model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderSpec {
    /// Canonical name, used in `provider:<name>` and metric labels (`custom` for `custom:<url>`).
    pub name: String,
    /// Wire format.
    pub wire: Wire,
    /// Base URL without trailing slash.
    pub base_url: String,
    /// Model used when none is configured.
    pub default_model: &'static str,
    /// Whether a request without an API key is refused before it is sent.
    pub needs_key: bool,
}

impl ProviderSpec {
    /// `openrouter`, the upstream default.
    pub fn default_provider() -> Self {
        Self::known("openrouter").unwrap_or_else(|| Self {
            name: "openrouter".into(),
            wire: Wire::OpenAi,
            base_url: "https://openrouter.ai/api/v1".into(),
            default_model: "anthropic/claude-sonnet-4",
            needs_key: true,
        })
    }

    fn known(name: &str) -> Option<Self> {
        let (canonical, wire, base, model, needs_key) = match name {
            "openai" => (
                "openai",
                Wire::OpenAi,
                "https://api.openai.com/v1",
                "gpt-4o-mini",
                true,
            ),
            "openrouter" => (
                "openrouter",
                Wire::OpenAi,
                "https://openrouter.ai/api/v1",
                "anthropic/claude-sonnet-4",
                true,
            ),
            "groq" => (
                "groq",
                Wire::OpenAi,
                "https://api.groq.com/openai/v1",
                "llama-3.3-70b-versatile",
                true,
            ),
            "mistral" => (
                "mistral",
                Wire::OpenAi,
                "https://api.mistral.ai/v1",
                "mistral-large-latest",
                true,
            ),
            "deepseek" => (
                "deepseek",
                Wire::OpenAi,
                "https://api.deepseek.com/v1",
                "deepseek-chat",
                true,
            ),
            "together" | "together-ai" => (
                "together",
                Wire::OpenAi,
                "https://api.together.xyz/v1",
                "meta-llama/Llama-3.3-70B-Instruct-Turbo",
                true,
            ),
            "anthropic" => (
                "anthropic",
                Wire::Anthropic,
                "https://api.anthropic.com",
                "claude-sonnet-4-20250514",
                true,
            ),
            "gemini" | "google" | "google-gemini" => (
                "gemini",
                Wire::Gemini,
                "https://generativelanguage.googleapis.com",
                "gemini-2.0-flash",
                true,
            ),
            "ollama" => (
                "ollama",
                Wire::Ollama,
                "http://localhost:11434",
                "llama3.2",
                false,
            ),
            _ => return None,
        };
        Some(Self {
            name: canonical.into(),
            wire,
            base_url: base.into(),
            default_model: model,
            needs_key,
        })
    }

    /// Parses a provider name (case-insensitive; `custom:<http(s) url>` keeps the URL's case).
    ///
    /// # Errors
    /// A message listing the accepted names.
    pub fn parse(name: &str) -> Result<Self, String> {
        if let Some(url) = name.strip_prefix("custom:") {
            let url = url.trim();
            if !(url.starts_with("http://") || url.starts_with("https://")) || url.len() < 10 {
                return Err("custom provider needs a URL: custom:https://host/v1".into());
            }
            return Ok(Self {
                name: "custom".into(),
                wire: Wire::OpenAi,
                base_url: url.trim_end_matches('/').to_owned(),
                default_model: "default",
                needs_key: false,
            });
        }
        Self::known(&name.to_ascii_lowercase()).ok_or_else(|| {
            "unknown provider; expected one of openrouter, openai, anthropic, gemini, ollama, \
             groq, mistral, deepseek, together, custom:<url>"
                .into()
        })
    }
}

/// One request to the model.
#[derive(Debug, Clone, Copy)]
pub struct ChatRequest<'a> {
    /// The system prompt (persona + notes).
    pub system: &'a str,
    /// Recalled history, oldest first.
    pub history: &'a [Turn],
    /// The new user message.
    pub message: &'a str,
}

/// The model's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatReply {
    /// Text of the answer.
    pub text: String,
    /// Prompt tokens, when reported.
    pub input_tokens: Option<u64>,
    /// Completion tokens, when reported.
    pub output_tokens: Option<u64>,
}

/// Why a provider call failed. `Display` is safe to log and to put in `/health`.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ProviderError {
    /// No API key configured for a provider that needs one.
    #[error("no API key configured (api_key / ZEROCLAW_API_KEY)")]
    MissingApiKey,
    /// The HTTP client could not be built (CA bundle).
    #[error("HTTP client unavailable: {0}")]
    Client(String),
    /// No answer within the provider deadline.
    #[error("provider timed out after {0} ms")]
    Timeout(u128),
    /// Connection-level failure.
    #[error("provider unreachable: {0}")]
    Transport(String),
    /// Non-2xx answer.
    #[error("provider answered HTTP {0}")]
    Status(u16),
    /// The body was not the expected JSON.
    #[error("unexpected provider response: {0}")]
    Decode(String),
    /// The reply body passed the cap (bytes; [`MAX_REPLY_BYTES`]); it was abandoned unread.
    #[error("provider reply larger than {0} bytes")]
    TooLarge(usize),
}

pub(crate) fn u64_at(v: &Value, path: &[&str]) -> Option<u64> {
    let mut cur = v;
    for p in path {
        cur = cur.get(p)?;
    }
    cur.as_u64()
}

/// A configured provider with its HTTP client (built on first use: loading the CA bundle
/// takes milliseconds that must not delay the banner).
#[derive(Debug)]
pub struct Provider {
    settings: ProviderSettings,
    client: OnceLock<Result<reqwest::Client, String>>,
}

impl Provider {
    /// A provider for `settings`; nothing is loaded yet.
    pub fn new(settings: ProviderSettings) -> Self {
        Self {
            settings,
            client: OnceLock::new(),
        }
    }

    /// Canonical provider name.
    pub fn name(&self) -> &str {
        &self.settings.spec.name
    }

    /// Model name sent to the provider.
    pub fn model(&self) -> &str {
        &self.settings.model
    }

    /// Builds the HTTP client now (idempotent); used to warm up after start.
    pub fn warm_up(&self) {
        let _ = self.client();
    }

    fn client(&self) -> Result<&reqwest::Client, ProviderError> {
        self.client
            .get_or_init(|| {
                reqwest::Client::builder()
                    // A provider API never redirects; following one would let
                    // a public base URL (the only kind the control plane
                    // accepts) send this agent, its key and its prompt to an
                    // internal address.
                    .redirect(reqwest::redirect::Policy::none())
                    .timeout(self.settings.timeout)
                    .connect_timeout(self.settings.timeout.min(Duration::from_secs(10)))
                    .user_agent(concat!("agent-runtime/", env!("CARGO_PKG_VERSION")))
                    .build()
                    .map_err(|e| e.without_url().to_string())
            })
            .as_ref()
            .map_err(|e| ProviderError::Client(e.clone()))
    }

    fn scrub(&self, text: String) -> String {
        match &self.settings.api_key {
            Some(k) => k.redact(&text),
            None => text,
        }
    }

    /// Sends one chat request and parses the answer (the reply body is read to at most
    /// [`MAX_REPLY_BYTES`]).
    ///
    /// # Errors
    /// [`ProviderError`], never containing the key; [`ProviderError::TooLarge`] for a reply
    /// body over [`MAX_REPLY_BYTES`].
    pub async fn chat(&self, req: ChatRequest<'_>) -> Result<ChatReply, ProviderError> {
        let s = &self.settings;
        let key: Option<&Secret> = s.api_key.as_ref();
        if s.spec.needs_key && key.is_none() {
            return Err(ProviderError::MissingApiKey);
        }
        let client = self.client()?;
        let base = s.base_url().trim_end_matches('/');
        let (url, body) = match s.spec.wire {
            Wire::OpenAi => openai::request(base, &s.model, s.temperature, req),
            Wire::Anthropic => anthropic::request(base, &s.model, s.temperature, req),
            Wire::Gemini => gemini::request(base, &s.model, s.temperature, req),
            Wire::Ollama => ollama::request(base, &s.model, s.temperature, req),
        };
        let mut builder = client.post(url).json(&body);
        if let Some(k) = key {
            builder = match s.spec.wire {
                Wire::OpenAi | Wire::Ollama => builder.bearer_auth(k.expose()),
                Wire::Anthropic => builder
                    .header("x-api-key", k.expose())
                    .header("anthropic-version", anthropic::API_VERSION),
                Wire::Gemini => builder.header("x-goog-api-key", k.expose()),
            };
        } else if s.spec.wire == Wire::Anthropic {
            builder = builder.header("anthropic-version", anthropic::API_VERSION);
        }
        let started = std::time::Instant::now();
        let map_err = |e: reqwest::Error| {
            if e.is_timeout() {
                ProviderError::Timeout(started.elapsed().as_millis())
            } else {
                ProviderError::Transport(self.scrub(e.without_url().to_string()))
            }
        };
        let resp = builder.send().await.map_err(map_err)?;
        let status = resp.status();
        if !status.is_success() {
            return Err(ProviderError::Status(status.as_u16()));
        }
        let bytes = body::read_capped(resp, MAX_REPLY_BYTES, map_err).await?;
        let value: Value = serde_json::from_slice(&bytes)
            .map_err(|_| ProviderError::Decode("body is not JSON".into()))?;
        match s.spec.wire {
            Wire::OpenAi => openai::parse(&value),
            Wire::Anthropic => anthropic::parse(&value),
            Wire::Gemini => gemini::parse(&value),
            Wire::Ollama => ollama::parse(&value),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_resolve_to_wire_and_base() {
        let cases = [
            ("openai", Wire::OpenAi, "https://api.openai.com/v1"),
            ("OpenRouter", Wire::OpenAi, "https://openrouter.ai/api/v1"),
            ("groq", Wire::OpenAi, "https://api.groq.com/openai/v1"),
            ("mistral", Wire::OpenAi, "https://api.mistral.ai/v1"),
            ("deepseek", Wire::OpenAi, "https://api.deepseek.com/v1"),
            ("together", Wire::OpenAi, "https://api.together.xyz/v1"),
            ("anthropic", Wire::Anthropic, "https://api.anthropic.com"),
            (
                "gemini",
                Wire::Gemini,
                "https://generativelanguage.googleapis.com",
            ),
            (
                "google",
                Wire::Gemini,
                "https://generativelanguage.googleapis.com",
            ),
            ("ollama", Wire::Ollama, "http://localhost:11434"),
            (
                "custom:http://10.0.0.5:8000/v1/",
                Wire::OpenAi,
                "http://10.0.0.5:8000/v1",
            ),
        ];
        for (name, wire, base) in cases {
            let s = ProviderSpec::parse(name).expect(name);
            assert_eq!((s.wire, s.base_url.as_str()), (wire, base), "{name}");
        }
        assert_eq!(
            ProviderSpec::parse("custom:http://x:1").expect("c").name,
            "custom"
        );
        assert!(!ProviderSpec::parse("ollama").expect("o").needs_key);
        for bad in ["", "gpt", "custom:", "custom:ftp://x/y/z"] {
            assert!(ProviderSpec::parse(bad).is_err(), "{bad}");
        }
    }
}
