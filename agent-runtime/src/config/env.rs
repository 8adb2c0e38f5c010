//! Merging the file values, the environment overrides and the CLI flags into [`Config`].
//!
//! Variables (first name wins when both are set): `ZEROCLAW_API_KEY`/`API_KEY`,
//! `ZEROCLAW_PROVIDER`/`PROVIDER`, `ZEROCLAW_MODEL`/`MODEL`, `ZEROCLAW_TEMPERATURE`,
//! `ZEROCLAW_GATEWAY_PORT`/`PORT`, `ZEROCLAW_GATEWAY_HOST`/`HOST`, `ZEROCLAW_ALLOW_PUBLIC_BIND`,
//! `ZEROCLAW_REQUIRE_PAIRING`, `ZEROCLAW_GATEWAY_TIMEOUT_SECS`, `ZEROCLAW_PROVIDER_URL`, and
//! `ZEROCLAW_PERSIST_TOKENS` (ours: lets an image opt into upstream's keep-tokens behaviour).
//! An empty value counts as unset.

use std::time::Duration;

use super::file::FileConfig;
use super::{provider_timeout, CliOverrides, Config, ConfigError, EnvLookup};
use crate::providers::ProviderSpec;
use crate::secret::Secret;
use crate::tokens;

/// The first of `names` that is set and non-empty, with the name it came from.
fn first(env: &EnvLookup<'_>, names: &[&'static str]) -> Option<(&'static str, String)> {
    names
        .iter()
        .find_map(|n| env(n).filter(|v| !v.trim().is_empty()).map(|v| (*n, v)))
}

fn invalid(key: &str, reason: &str) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_owned(),
        reason: reason.to_owned(),
    }
}

/// Parses `1/true/yes/on` and `0/false/no/off` (any case).
pub(crate) fn parse_bool(key: &str, value: &str) -> Result<bool, ConfigError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(invalid(key, "expected 1/true/yes/on or 0/false/no/off")),
    }
}

fn parse_bool_var(
    env: &EnvLookup<'_>,
    names: &[&'static str],
) -> Result<Option<bool>, ConfigError> {
    first(env, names)
        .map(|(k, v)| parse_bool(k, &v))
        .transpose()
}

fn check_url(key: &str, url: &str) -> Result<String, ConfigError> {
    let url = url.trim();
    if url.starts_with("http://") || url.starts_with("https://") {
        Ok(url.trim_end_matches('/').to_owned())
    } else {
        Err(invalid(key, "expected an http:// or https:// URL"))
    }
}

/// Applies `file`, then the environment, then `cli` on top of the defaults in `cfg`.
pub(super) fn apply(
    cfg: &mut Config,
    file: FileConfig,
    env: &EnvLookup<'_>,
    cli: &CliOverrides,
) -> Result<(), ConfigError> {
    // Provider: name first, since the model default depends on it.
    let (provider_key, provider_name) = match first(env, &["ZEROCLAW_PROVIDER", "PROVIDER"]) {
        Some((k, v)) => (k, Some(v)),
        None => ("default_provider", file.default_provider),
    };
    if let Some(name) = provider_name {
        cfg.provider.spec =
            ProviderSpec::parse(name.trim()).map_err(|reason| invalid(provider_key, &reason))?;
    }

    cfg.provider.api_key = match first(env, &["ZEROCLAW_API_KEY", "API_KEY"]) {
        Some((_, v)) => Some(Secret::new(v.trim())),
        None => file.api_key,
    };

    cfg.provider.api_url = match first(env, &["ZEROCLAW_PROVIDER_URL"]) {
        Some((k, v)) => Some(check_url(k, &v)?),
        None => file
            .api_url
            .filter(|u| !u.trim().is_empty())
            .map(|u| check_url("api_url", &u))
            .transpose()?,
    };

    cfg.provider.model = match first(env, &["ZEROCLAW_MODEL", "MODEL"]) {
        Some((_, v)) => v.trim().to_owned(),
        None => file
            .default_model
            .filter(|m| !m.trim().is_empty())
            .unwrap_or_else(|| cfg.provider.spec.default_model.to_owned()),
    };

    let (temp_key, temperature) = match first(env, &["ZEROCLAW_TEMPERATURE"]) {
        Some((k, v)) => (
            k,
            Some(
                v.trim()
                    .parse::<f64>()
                    .map_err(|_| invalid(k, "expected a number between 0.0 and 2.0"))?,
            ),
        ),
        None => ("default_temperature", file.default_temperature),
    };
    if let Some(t) = temperature {
        if !(0.0..=2.0).contains(&t) {
            return Err(invalid(temp_key, "expected a number between 0.0 and 2.0"));
        }
        cfg.provider.temperature = t;
    }

    if let Some(b) = file.memory_backend {
        cfg.memory.backend = b;
    }
    if let Some(a) = file.auto_save {
        cfg.memory.auto_save = a;
    }

    let gw = &mut cfg.gateway;
    gw.port = match first(env, &["ZEROCLAW_GATEWAY_PORT", "PORT"]) {
        Some((k, v)) => v
            .trim()
            .parse::<u16>()
            .map_err(|_| invalid(k, "expected a port number 0-65535"))?,
        None => file.port.unwrap_or(gw.port),
    };
    gw.host = match first(env, &["ZEROCLAW_GATEWAY_HOST", "HOST"]) {
        Some((_, v)) => v.trim().to_owned(),
        None => file
            .host
            .map(|h| h.trim().to_owned())
            .unwrap_or(gw.host.clone()),
    };
    if let Some(host) = &cli.host {
        gw.host = host.trim().to_owned();
    }
    if let Some(port) = cli.port {
        gw.port = port;
    }
    if gw.host.is_empty() {
        return Err(invalid("gateway.host", "must not be empty"));
    }
    gw.allow_public_bind = parse_bool_var(env, &["ZEROCLAW_ALLOW_PUBLIC_BIND"])?
        .or(file.allow_public_bind)
        .unwrap_or(gw.allow_public_bind);
    gw.require_pairing = parse_bool_var(env, &["ZEROCLAW_REQUIRE_PAIRING"])?
        .or(file.require_pairing)
        .unwrap_or(gw.require_pairing);
    gw.persist_tokens = parse_bool_var(env, &["ZEROCLAW_PERSIST_TOKENS"])?
        .or(file.persist_tokens)
        .unwrap_or(gw.persist_tokens);
    gw.paired_tokens = file
        .paired_tokens
        .iter()
        .map(|t| tokens::normalize_configured(t))
        .collect();
    if let Some(n) = file.webhook_rate_limit_per_minute {
        gw.webhook_rate_limit_per_minute = n;
    }
    if let Some((k, v)) = first(env, &["ZEROCLAW_GATEWAY_TIMEOUT_SECS"]) {
        let secs = v
            .trim()
            .parse::<u64>()
            .ok()
            .filter(|s| (1..=3600).contains(s))
            .ok_or_else(|| invalid(k, "expected a number of seconds between 1 and 3600"))?;
        gw.request_timeout = Duration::from_secs(secs);
        cfg.provider.timeout = provider_timeout(gw.request_timeout);
    }
    // Validates the host syntax now, so `status` and `gateway` fail the same way.
    super::is_loopback_host(&cfg.gateway.host)?;

    cfg.channels = file.channels;
    // A V3 file's workspace, unless the environment chose one (ZEROCLAW_WORKSPACE wins).
    if let Some(ws) = file.workspace {
        if first(env, &["ZEROCLAW_WORKSPACE"]).is_none() {
            cfg.paths.workspace = ws;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::*;
    use crate::providers::Wire;
    use std::collections::HashMap;
    use std::path::Path;

    fn load(text: Option<&str>, vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        load_cli(text, vars, &CliOverrides::default())
    }

    fn load_cli(
        text: Option<&str>,
        vars: &[(&str, &str)],
        cli: &CliOverrides,
    ) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Config::from_parts(
            Paths::under(Path::new("/d")),
            text,
            &|k: &str| map.get(k).cloned(),
            cli,
        )
    }

    #[test]
    fn a_v3_workspace_applies_unless_the_environment_names_one() {
        let text = "schema_version = 3\n[agents.default]\nmodel_provider = \"custom.default\"\n\
                    [agents.default.workspace]\npath = \"/srv/ws\"\n\
                    [providers.models.custom.default]\napi_url = \"http://stub:1/v1\"\nmodel = \"m\"\n";
        let c = load(Some(text), &[]).expect("v3");
        assert_eq!(c.paths.workspace, Path::new("/srv/ws"));
        assert_eq!(c.provider.spec.name, "custom");
        assert_eq!(c.provider.base_url(), "http://stub:1/v1");
        assert_eq!(c.provider.model, "m");
        let c = load(Some(text), &[("ZEROCLAW_WORKSPACE", "/env/ws")]).expect("v3");
        assert_eq!(
            c.paths.workspace,
            Path::new("/d/workspace"),
            "paths came from the env"
        );
    }

    #[test]
    fn no_file_no_env_gives_the_defaults() {
        let c = load(None, &[]).expect("defaults");
        assert_eq!(c.provider.spec.name, "openrouter");
        assert_eq!(c.provider.temperature, 0.7);
        assert_eq!(c.gateway.host, "127.0.0.1");
        assert_eq!(c.gateway.port, 42617);
        assert!(c.gateway.require_pairing && !c.gateway.allow_public_bind);
        assert!(!c.gateway.persist_tokens);
        assert_eq!(c.memory.backend, MemoryBackend::Sqlite);
        assert!(c.memory.auto_save);
        assert_eq!(c.gateway.request_timeout, Duration::from_secs(30));
        assert_eq!(c.provider.timeout, Duration::from_secs(27));
        c.check_bind().expect("loopback is fine");
    }

    #[test]
    fn env_overrides_file_and_prefixed_names_win() {
        let text =
            "default_provider = \"openai\"\ndefault_model = \"gpt-x\"\napi_key = \"file-key\"\n\
                    default_temperature = 0.2\n[gateway]\nport = 1000\nhost = \"127.0.0.2\"\n";
        let c = load(
            Some(text),
            &[
                ("PROVIDER", "groq"),
                ("ZEROCLAW_PROVIDER", "anthropic"),
                ("API_KEY", "plain"),
                ("ZEROCLAW_API_KEY", "zc-key"),
                ("MODEL", "m-plain"),
                ("ZEROCLAW_TEMPERATURE", "1.5"),
                ("PORT", "2000"),
                ("ZEROCLAW_GATEWAY_HOST", "::1"),
                ("ZEROCLAW_GATEWAY_TIMEOUT_SECS", "10"),
                ("ZEROCLAW_PROVIDER_URL", "http://127.0.0.1:9/"),
            ],
        )
        .expect("loads");
        assert_eq!(c.provider.spec.name, "anthropic");
        assert_eq!(c.provider.spec.wire, Wire::Anthropic);
        assert_eq!(
            c.provider.api_key.as_ref().map(Secret::expose),
            Some("zc-key")
        );
        assert_eq!(c.provider.model, "m-plain");
        assert_eq!(c.provider.temperature, 1.5);
        assert_eq!(c.gateway.port, 2000);
        assert_eq!(c.gateway.host, "::1");
        assert_eq!(c.bind_address(), "[::1]:2000");
        assert_eq!(c.gateway.request_timeout, Duration::from_secs(10));
        assert_eq!(c.provider.timeout, Duration::from_secs(9));
        assert_eq!(c.provider.base_url(), "http://127.0.0.1:9");
    }

    #[test]
    fn file_values_apply_when_env_is_silent() {
        let text = "default_provider = \"openai\"\napi_key = \"file-key\"\n\
                    [memory]\nbackend = \"markdown\"\nauto_save = false\n\
                    [gateway]\nport = 1000\nrequire_pairing = false\npersist_tokens = true\n";
        let c = load(Some(text), &[("MODEL", "")]).expect("loads");
        assert_eq!(c.provider.spec.name, "openai");
        assert_eq!(c.provider.model, c.provider.spec.default_model);
        assert_eq!(
            c.provider.api_key.as_ref().map(Secret::expose),
            Some("file-key")
        );
        assert_eq!(c.provider.base_url(), "https://api.openai.com/v1");
        assert_eq!(c.memory.backend, MemoryBackend::Markdown);
        assert!(!c.memory.auto_save);
        assert_eq!(c.gateway.port, 1000);
        assert!(!c.gateway.require_pairing);
        assert!(c.gateway.persist_tokens);
    }

    #[test]
    fn cli_flags_win_over_env() {
        let cli = CliOverrides {
            host: Some("0.0.0.0".into()),
            port: Some(0),
        };
        let c = load_cli(None, &[("ZEROCLAW_GATEWAY_PORT", "5")], &cli).expect("loads");
        assert_eq!(c.bind_address(), "0.0.0.0:0");
    }

    #[test]
    fn public_bind_is_refused_unless_allowed() {
        let c = load(None, &[("HOST", "0.0.0.0")]).expect("loads");
        let err = c.check_bind().expect_err("refused");
        assert!(err.to_string().contains("allow_public_bind"), "{err}");
        let c = load(
            None,
            &[("HOST", "0.0.0.0"), ("ZEROCLAW_ALLOW_PUBLIC_BIND", "true")],
        )
        .expect("loads");
        c.check_bind().expect("allowed");
        let c = load(
            Some("[gateway]\nhost=\"::\"\nallow_public_bind=true\n"),
            &[],
        )
        .expect("ok");
        c.check_bind().expect("allowed by file");
        for host in ["localhost", "127.0.0.1", "127.1.2.3", "::1"] {
            let c = load(None, &[("HOST", host)]).expect("loads");
            c.check_bind().expect(host);
        }
    }

    #[test]
    fn bad_env_values_name_the_variable() {
        let cases = [
            ("ZEROCLAW_GATEWAY_PORT", "99999"),
            ("PORT", "http"),
            ("ZEROCLAW_TEMPERATURE", "3"),
            ("ZEROCLAW_TEMPERATURE", "warm"),
            ("ZEROCLAW_ALLOW_PUBLIC_BIND", "maybe"),
            ("ZEROCLAW_REQUIRE_PAIRING", "2"),
            ("ZEROCLAW_GATEWAY_TIMEOUT_SECS", "0"),
            ("ZEROCLAW_PROVIDER_URL", "ftp://x"),
            ("ZEROCLAW_PROVIDER", "skynet"),
            ("PROVIDER", "custom:"),
        ];
        for (k, v) in cases {
            let err = load(None, &[(k, v)]).expect_err(k);
            assert!(
                err.to_string().contains(&format!("`{k}`")),
                "{k}={v}: {err}"
            );
        }
        let err = load(None, &[("HOST", "example.com")]).expect_err("hostname");
        assert!(err.to_string().contains("`gateway.host`"), "{err}");
    }

    #[test]
    fn bad_file_values_name_the_key() {
        for (text, key) in [
            ("default_temperature = 2.5", "default_temperature"),
            ("default_provider = \"nope\"", "default_provider"),
            ("api_url = \"localhost:1\"", "api_url"),
        ] {
            let err = load(Some(text), &[]).expect_err(text);
            assert!(err.to_string().contains(&format!("`{key}`")), "{err}");
        }
    }

    #[test]
    fn require_pairing_env_and_paired_tokens_are_hashed() {
        let hash = "A".repeat(64);
        let text = format!("[gateway]\npaired_tokens = [\"{hash}\", \"zc_raw\"]\n");
        let c = load(Some(&text), &[("ZEROCLAW_PERSIST_TOKENS", "true")]).expect("loads");
        assert!(c.gateway.persist_tokens);
        let c = load(Some(&text), &[("ZEROCLAW_REQUIRE_PAIRING", "off")]).expect("loads");
        assert!(!c.gateway.require_pairing);
        assert_eq!(c.gateway.paired_tokens[0], "a".repeat(64));
        assert_eq!(
            c.gateway.paired_tokens[1],
            crate::tokens::hash_token("zc_raw")
        );
    }

    #[test]
    fn unknown_keys_survive_as_warnings() {
        let c = load(Some("[autonomy]\nlevel = \"full\"\n"), &[]).expect("loads");
        assert_eq!(c.warnings, vec!["unknown config key `autonomy` ignored"]);
    }
}
