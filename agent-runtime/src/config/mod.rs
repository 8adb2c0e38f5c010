//! Configuration: `config.toml` + environment + command line → one plain [`Config`].
//!
//! Precedence, lowest first: built-in defaults, `config.toml` (located by [`paths`]), the
//! environment overrides of DESIGN §1, then `--host`/`--port`. A missing file is fine; a bad
//! value anywhere is a [`ConfigError`] naming the key or variable; an unknown key is a warning
//! in [`Config::warnings`]. Nothing here reads the process environment directly: callers pass
//! an [`EnvLookup`], so tests use plain maps.

pub mod channels;
mod env;
pub mod file;
pub mod paths;
pub mod v3;

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use channels::ChannelsConfig;
pub use paths::Paths;

use crate::memory::MemoryBackend;
use crate::providers::ProviderSpec;
use crate::secret::Secret;

/// A way to read one environment variable (`|k| std::env::var(k).ok()` in production).
pub type EnvLookup<'a> = dyn Fn(&str) -> Option<String> + 'a;

/// Default gateway port (upstream).
pub const DEFAULT_PORT: u16 = 42617;
/// Default request timeout for every route, in seconds (`ZEROCLAW_GATEWAY_TIMEOUT_SECS`).
pub const DEFAULT_TIMEOUT_SECS: u64 = 30;
/// Default per-client `/webhook` rate limit, requests per minute.
pub const DEFAULT_WEBHOOK_RATE_LIMIT: u32 = 60;
/// Request body limit for every route, in bytes (64 KiB).
pub const BODY_LIMIT_BYTES: usize = 64 * 1024;

/// Why a configuration could not be built. Messages name the key or variable, never a value.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// No `ZEROCLAW_CONFIG_DIR`, `ZEROCLAW_WORKSPACE` or `HOME`.
    #[error("cannot locate config.toml: set HOME, ZEROCLAW_CONFIG_DIR or ZEROCLAW_WORKSPACE")]
    NoLocation,
    /// The file exists but could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The config file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Malformed TOML.
    #[error("config.toml is not valid TOML{}: {message}", line.map(|l| format!(" (line {l})")).unwrap_or_default())]
    Syntax {
        /// 1-based line of the error, when known.
        line: Option<usize>,
        /// The parser's message (no excerpt of the file).
        message: String,
    },
    /// A key or environment variable has a bad value.
    #[error("invalid value for `{key}`: {reason}")]
    Invalid {
        /// `gateway.port`, `default_temperature`, `ZEROCLAW_GATEWAY_PORT`, …
        key: String,
        /// What was expected.
        reason: String,
    },
    /// A non-loopback host without `allow_public_bind`.
    #[error(
        "refusing to bind to non-loopback address {host}: set [gateway] allow_public_bind = true \
         or ZEROCLAW_ALLOW_PUBLIC_BIND=true to expose the gateway"
    )]
    PublicBind {
        /// The requested host.
        host: String,
    },
}

/// Which LLM to call and how.
#[derive(Debug, Clone)]
pub struct ProviderSettings {
    /// The provider (`openrouter`, `custom:<url>`, …) with its wire format and base URL.
    pub spec: ProviderSpec,
    /// API key (`api_key`, `ZEROCLAW_API_KEY`/`API_KEY`).
    pub api_key: Option<Secret>,
    /// Base URL override (`api_url`, `ZEROCLAW_PROVIDER_URL`).
    pub api_url: Option<String>,
    /// Model (`default_model`, `ZEROCLAW_MODEL`/`MODEL`; else the provider's default).
    pub model: String,
    /// Sampling temperature, 0.0–2.0.
    pub temperature: f64,
    /// Deadline of one provider call; shorter than the request timeout so a slow provider is
    /// answered with a 500 (and recorded) rather than the 408.
    pub timeout: Duration,
}

impl ProviderSettings {
    /// The base URL requests go to: `api_url` if set, else the provider's default.
    pub fn base_url(&self) -> &str {
        self.api_url.as_deref().unwrap_or(&self.spec.base_url)
    }
}

/// `[memory]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemorySettings {
    /// `backend` (default `sqlite`).
    pub backend: MemoryBackend,
    /// `auto_save` (default true): store each exchange.
    pub auto_save: bool,
}

/// `[gateway]` plus the limits of the HTTP surface.
#[derive(Debug, Clone)]
pub struct GatewaySettings {
    /// Listen host (default `127.0.0.1`).
    pub host: String,
    /// Listen port (default 42617; 0 = any free port).
    pub port: u16,
    /// `require_pairing` (default true).
    pub require_pairing: bool,
    /// `allow_public_bind` (default false).
    pub allow_public_bind: bool,
    /// SHA-256 hex digests of pre-seeded tokens (raw tokens in the file are hashed on load).
    pub paired_tokens: Vec<String>,
    /// `persist_tokens` (default false): keep paired-token hashes in `paired_tokens.txt`.
    pub persist_tokens: bool,
    /// Deadline of one request (408 past it).
    pub request_timeout: Duration,
    /// `/webhook` requests per minute per client IP; 0 = unlimited.
    pub webhook_rate_limit_per_minute: u32,
}

/// The resolved configuration of one agent-runtime process.
#[derive(Debug, Clone)]
pub struct Config {
    /// Config file and workspace locations.
    pub paths: Paths,
    /// Provider settings.
    pub provider: ProviderSettings,
    /// Memory settings.
    pub memory: MemorySettings,
    /// Gateway settings.
    pub gateway: GatewaySettings,
    /// Channels.
    pub channels: ChannelsConfig,
    /// Non-fatal findings (unknown keys), to be logged once tracing is up.
    pub warnings: Vec<String>,
}

/// Command-line overrides of `gateway`.
#[derive(Debug, Clone, Default)]
pub struct CliOverrides {
    /// `--host`.
    pub host: Option<String>,
    /// `--port`.
    pub port: Option<u16>,
}

impl Config {
    /// The defaults for a given layout: provider `openrouter`, sqlite memory, loopback port
    /// 42617, pairing required, 30 s timeout. The starting point of [`Config::load`] and of tests.
    pub fn defaults(paths: Paths) -> Self {
        let request_timeout = Duration::from_secs(DEFAULT_TIMEOUT_SECS);
        let spec = ProviderSpec::default_provider();
        Self {
            paths,
            provider: ProviderSettings {
                model: spec.default_model.to_owned(),
                spec,
                api_key: None,
                api_url: None,
                temperature: 0.7,
                timeout: provider_timeout(request_timeout),
            },
            memory: MemorySettings {
                backend: MemoryBackend::Sqlite,
                auto_save: true,
            },
            gateway: GatewaySettings {
                host: "127.0.0.1".into(),
                port: DEFAULT_PORT,
                require_pairing: true,
                allow_public_bind: false,
                paired_tokens: Vec::new(),
                persist_tokens: false,
                request_timeout,
                webhook_rate_limit_per_minute: DEFAULT_WEBHOOK_RATE_LIMIT,
            },
            channels: ChannelsConfig::default(),
            warnings: Vec::new(),
        }
    }

    /// Resolves paths from `env`, reads `config.toml` if present, applies the environment
    /// overrides and `cli`, and validates the result.
    ///
    /// # Errors
    /// Any [`ConfigError`] except `PublicBind` (see [`Config::check_bind`]).
    pub fn load(env: &EnvLookup<'_>, cli: &CliOverrides) -> Result<Self, ConfigError> {
        let paths = paths::resolve(env)?;
        let text = match std::fs::read_to_string(&paths.config_file) {
            Ok(t) => Some(t),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(source) => {
                return Err(ConfigError::Read {
                    path: paths.config_file.clone(),
                    source,
                })
            }
        };
        Self::from_parts(paths, text.as_deref(), env, cli)
    }

    /// [`Config::load`] with the file's text already in hand (`None` = no file).
    ///
    /// # Errors
    /// As [`Config::load`].
    pub fn from_parts(
        paths: Paths,
        text: Option<&str>,
        env: &EnvLookup<'_>,
        cli: &CliOverrides,
    ) -> Result<Self, ConfigError> {
        let (file, warnings) = match text {
            Some(t) => file::parse(t)?,
            None => Default::default(),
        };
        let mut cfg = Self::defaults(paths);
        cfg.warnings = warnings;
        env::apply(&mut cfg, file, env, cli)?;
        Ok(cfg)
    }

    /// Refuses a non-loopback listen host unless `allow_public_bind` is set.
    ///
    /// # Errors
    /// [`ConfigError::PublicBind`], or [`ConfigError::Invalid`] for `gateway.host` when the
    /// host is neither an IP address nor `localhost`.
    pub fn check_bind(&self) -> Result<(), ConfigError> {
        if self.gateway.allow_public_bind || is_loopback_host(&self.gateway.host)? {
            Ok(())
        } else {
            Err(ConfigError::PublicBind {
                host: self.gateway.host.clone(),
            })
        }
    }

    /// The `host:port` string to bind (`localhost` → `127.0.0.1`, IPv6 bracketed).
    pub fn bind_address(&self) -> String {
        let host = if self.gateway.host.eq_ignore_ascii_case("localhost") {
            "127.0.0.1"
        } else {
            self.gateway.host.as_str()
        };
        match host.parse::<IpAddr>() {
            Ok(IpAddr::V6(v6)) => format!("[{v6}]:{}", self.gateway.port),
            _ => format!("{host}:{}", self.gateway.port),
        }
    }
}

/// Whether `host` is loopback. `localhost` counts; other names are rejected.
///
/// # Errors
/// [`ConfigError::Invalid`] for `gateway.host` when `host` is not an IP address.
pub fn is_loopback_host(host: &str) -> Result<bool, ConfigError> {
    if host.eq_ignore_ascii_case("localhost") {
        return Ok(true);
    }
    host.parse::<IpAddr>()
        .map(|ip| ip.is_loopback())
        .map_err(|_| ConfigError::Invalid {
            key: "gateway.host".into(),
            reason: "expected an IP address (e.g. 127.0.0.1, 0.0.0.0, ::) or localhost".into(),
        })
}

/// The provider deadline derived from the request timeout: 90 % of it.
pub fn provider_timeout(request_timeout: Duration) -> Duration {
    request_timeout.mul_f64(0.9)
}
