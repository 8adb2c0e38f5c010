//! Which runtime an agent image holds, and so how the control plane drives
//! it: the container command, the config dialect it renders, and the form
//! of the environment overrides it sets (issue 11).
//!
//! The profile is chosen per image: forced by the `runtime_profile` setting,
//! or read from the image's labels ([`PROFILE_LABEL`], else the OCI version
//! label) — once per image id, since an image id names immutable content
//! ([`ProfileCache`]).
//!
//! | profile | command | config | env overrides |
//! |---|---|---|---|
//! | `zcaas` (our agent-runtime) | `daemon` | V1 | `ZEROCLAW_GATEWAY_PORT`, … |
//! | `zeroclaw-v1` (upstream ≤ 0.7) | `daemon` | V1 | `ZEROCLAW_GATEWAY_PORT`, … |
//! | `zeroclaw-v3` (upstream ≥ 0.8) | `daemon` | V3 (`schema_version = 3`) | `ZEROCLAW_gateway__port`, … |

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use serde::Deserialize;

use crate::orchestrator::{Labels, AGENT_PORT};

/// Image label naming the profile of the runtime inside (`zcaas`,
/// `zeroclaw-v1`, `zeroclaw-v3`). Our agent-runtime image carries
/// `zcaas` (`agent-runtime/Dockerfile`).
pub const PROFILE_LABEL: &str = "io.zcaas.runtime-profile";
/// The OCI label holding an image's version (`0.6.9`, `v0.8.1`), read when
/// [`PROFILE_LABEL`] is absent.
pub const VERSION_LABEL: &str = "org.opencontainers.image.version";

/// The `runtime_profile` setting (`ZCAAS_RUNTIME_PROFILE`): `auto` reads the
/// image; any other value forces that profile for every agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum ProfileSetting {
    /// Chosen per image from its labels ([`detect`]).
    #[default]
    Auto,
    /// Force [`RuntimeProfile::Zcaas`].
    Zcaas,
    /// Force [`RuntimeProfile::ZeroclawV1`].
    ZeroclawV1,
    /// Force [`RuntimeProfile::ZeroclawV3`].
    ZeroclawV3,
}

impl ProfileSetting {
    /// The forced profile; `None` for [`ProfileSetting::Auto`].
    pub fn forced(self) -> Option<RuntimeProfile> {
        match self {
            ProfileSetting::Auto => None,
            ProfileSetting::Zcaas => Some(RuntimeProfile::Zcaas),
            ProfileSetting::ZeroclawV1 => Some(RuntimeProfile::ZeroclawV1),
            ProfileSetting::ZeroclawV3 => Some(RuntimeProfile::ZeroclawV3),
        }
    }
}

/// The runtime an agent image holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RuntimeProfile {
    /// Our agent-runtime: reads V1 and V3, accepts `daemon` and `gateway`.
    Zcaas,
    /// Upstream ZeroClaw up to 0.7 (`zeroclawlabs` 0.6.9 is the newest
    /// published): V1 config, upper-case env overrides.
    ZeroclawV1,
    /// Upstream ZeroClaw 0.8 and later: config schema V3 (upstream
    /// `crates/zeroclaw-config/src/schema/v2.rs` migrates V2 into it), env
    /// overrides `ZEROCLAW_<path with __>` with a lower-case tail.
    ZeroclawV3,
}

/// The config file format a profile's runtime reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigDialect {
    /// Upstream's flat V1 keys (`default_provider`, `[channels_config]`).
    V1,
    /// Upstream's `schema_version = 3` (`[providers.models.<type>.<alias>]`,
    /// `[agents.<alias>]`, `[channels.<type>.<alias>]`, `[peer_groups]`).
    V3,
}

/// How environment overrides are spelled for a profile's runtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnvForm {
    /// `ZEROCLAW_GATEWAY_PORT`, `ZEROCLAW_GATEWAY_HOST`,
    /// `ZEROCLAW_ALLOW_PUBLIC_BIND` (our runtime, upstream ≤ 0.7).
    Legacy,
    /// `ZEROCLAW_gateway__port`, `ZEROCLAW_gateway__host` (upstream ≥ 0.8,
    /// where upper-case overrides are ignored and a lower-case one that
    /// names no config path aborts start-up: only paths its `[gateway]`
    /// has are set).
    ConfigPath,
}

impl RuntimeProfile {
    /// The setting's spelling (`zcaas`, `zeroclaw-v1`, `zeroclaw-v3`), also
    /// the value of [`PROFILE_LABEL`] and what the spec hash records.
    pub fn name(self) -> &'static str {
        match self {
            RuntimeProfile::Zcaas => "zcaas",
            RuntimeProfile::ZeroclawV1 => "zeroclaw-v1",
            RuntimeProfile::ZeroclawV3 => "zeroclaw-v3",
        }
    }

    /// Parses [`RuntimeProfile::name`]'s spelling.
    pub fn from_name(name: &str) -> Option<Self> {
        match name.trim() {
            "zcaas" => Some(RuntimeProfile::Zcaas),
            "zeroclaw-v1" => Some(RuntimeProfile::ZeroclawV1),
            "zeroclaw-v3" => Some(RuntimeProfile::ZeroclawV3),
            _ => None,
        }
    }

    /// The container command (the image's entrypoint is kept): `daemon` on
    /// every profile — upstream starts its channels only there (gateway +
    /// channels + scheduler), and our runtime accepts it as gateway plus
    /// channels.
    pub fn command(self) -> Vec<String> {
        vec!["daemon".to_owned()]
    }

    /// The config dialect rendered for this runtime.
    pub fn dialect(self) -> ConfigDialect {
        match self {
            RuntimeProfile::Zcaas | RuntimeProfile::ZeroclawV1 => ConfigDialect::V1,
            RuntimeProfile::ZeroclawV3 => ConfigDialect::V3,
        }
    }

    /// The form of the environment overrides.
    pub fn env_form(self) -> EnvForm {
        match self {
            RuntimeProfile::Zcaas | RuntimeProfile::ZeroclawV1 => EnvForm::Legacy,
            RuntimeProfile::ZeroclawV3 => EnvForm::ConfigPath,
        }
    }

    /// The gateway overrides (`KEY=value`, never a secret) set in the
    /// container's environment, in [`RuntimeProfile::env_form`]: listen on
    /// every interface of the container at [`AGENT_PORT`]. The config file
    /// says the same; the environment keeps the gateway reachable should
    /// the runtime rewrite its file.
    pub fn env(self) -> Vec<String> {
        match self.env_form() {
            EnvForm::Legacy => vec![
                format!("ZEROCLAW_GATEWAY_PORT={AGENT_PORT}"),
                "ZEROCLAW_ALLOW_PUBLIC_BIND=true".to_owned(),
                "ZEROCLAW_GATEWAY_HOST=0.0.0.0".to_owned(),
            ],
            EnvForm::ConfigPath => vec![
                format!("ZEROCLAW_gateway__port={AGENT_PORT}"),
                "ZEROCLAW_gateway__host=0.0.0.0".to_owned(),
            ],
        }
    }
}

impl std::fmt::Display for RuntimeProfile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The profile an image's labels name (pure): [`PROFILE_LABEL`] if it holds
/// a known name; else the version in [`VERSION_LABEL`] (`0.8` and later →
/// V3, earlier → V1); else [`RuntimeProfile::ZeroclawV1`], the dialect
/// every supported runtime reads (upstream 0.8 migrates a V1 file in
/// memory).
pub fn detect(labels: &Labels) -> RuntimeProfile {
    if let Some(p) = labels
        .get(PROFILE_LABEL)
        .and_then(|v| RuntimeProfile::from_name(v))
    {
        return p;
    }
    match labels.get(VERSION_LABEL).and_then(|v| major_minor(v)) {
        Some((0, minor)) if minor < 8 => RuntimeProfile::ZeroclawV1,
        Some(_) => RuntimeProfile::ZeroclawV3,
        None => RuntimeProfile::ZeroclawV1,
    }
}

/// `(major, minor)` of `v0.8.1`, `0.6.9`, `1.2`; `None` otherwise.
fn major_minor(version: &str) -> Option<(u64, u64)> {
    let v = version.trim().trim_start_matches('v');
    let mut parts = v.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts
        .next()?
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()?;
    Some((major, minor))
}

/// Profiles already read, by image id. An image id is a digest of the
/// image's content (labels included), so an entry never goes stale; a tag
/// moved to another image has another id and is read again. Process-wide.
#[derive(Debug, Default)]
pub struct ProfileCache {
    by_id: Mutex<HashMap<String, RuntimeProfile>>,
}

impl ProfileCache {
    /// The process-wide cache.
    pub fn global() -> &'static ProfileCache {
        static CACHE: OnceLock<ProfileCache> = OnceLock::new();
        CACHE.get_or_init(ProfileCache::default)
    }

    /// The cached profile of image `id`, else [`detect`] on `labels`,
    /// remembered. Returns whether it was read now (`true`) or cached.
    pub fn get_or_detect(&self, id: &str, labels: &Labels) -> (RuntimeProfile, bool) {
        let mut map = self.by_id.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = map.get(id) {
            return (*p, false);
        }
        let p = detect(labels);
        map.insert(id.to_owned(), p);
        (p, true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn the_profile_label_wins() {
        for p in [
            RuntimeProfile::Zcaas,
            RuntimeProfile::ZeroclawV1,
            RuntimeProfile::ZeroclawV3,
        ] {
            let l = labels(&[(PROFILE_LABEL, p.name()), (VERSION_LABEL, "0.6.9")]);
            assert_eq!(detect(&l), p);
        }
    }

    #[test]
    fn the_version_label_picks_the_dialect() {
        let at = |v: &str| detect(&labels(&[(VERSION_LABEL, v)]));
        assert_eq!(at("0.6.9"), RuntimeProfile::ZeroclawV1);
        assert_eq!(at("v0.7.3"), RuntimeProfile::ZeroclawV1);
        assert_eq!(at("0.8.0"), RuntimeProfile::ZeroclawV3);
        assert_eq!(at("v0.8.2-rc1"), RuntimeProfile::ZeroclawV3);
        assert_eq!(at("1.0"), RuntimeProfile::ZeroclawV3);
        assert_eq!(at("latest"), RuntimeProfile::ZeroclawV1);
    }

    #[test]
    fn an_unlabelled_or_unknown_image_gets_v1() {
        assert_eq!(detect(&Labels::new()), RuntimeProfile::ZeroclawV1);
        let l = labels(&[(PROFILE_LABEL, "something-else")]);
        assert_eq!(detect(&l), RuntimeProfile::ZeroclawV1);
    }

    #[test]
    fn each_profile_renders_its_command_dialect_and_env() {
        for p in [
            RuntimeProfile::Zcaas,
            RuntimeProfile::ZeroclawV1,
            RuntimeProfile::ZeroclawV3,
        ] {
            assert_eq!(p.command(), vec!["daemon"], "{p}");
            assert_eq!(RuntimeProfile::from_name(p.name()), Some(p));
        }
        assert_eq!(RuntimeProfile::Zcaas.dialect(), ConfigDialect::V1);
        assert_eq!(RuntimeProfile::ZeroclawV1.dialect(), ConfigDialect::V1);
        assert_eq!(RuntimeProfile::ZeroclawV3.dialect(), ConfigDialect::V3);
        assert!(RuntimeProfile::ZeroclawV1
            .env()
            .contains(&"ZEROCLAW_GATEWAY_PORT=42617".to_owned()));
        let v3 = RuntimeProfile::ZeroclawV3.env();
        assert_eq!(
            v3,
            vec![
                "ZEROCLAW_gateway__port=42617",
                "ZEROCLAW_gateway__host=0.0.0.0"
            ]
        );
        assert!(v3.iter().all(|kv| {
            let key = kv.split_once('=').map_or("", |(k, _)| k);
            let tail = key.trim_start_matches("ZEROCLAW_");
            tail == tail.to_lowercase()
        }));
    }

    #[test]
    fn the_setting_forces_or_defers() {
        assert_eq!(ProfileSetting::Auto.forced(), None);
        assert_eq!(
            ProfileSetting::ZeroclawV3.forced(),
            Some(RuntimeProfile::ZeroclawV3)
        );
        assert_eq!(ProfileSetting::Zcaas.forced(), Some(RuntimeProfile::Zcaas));
    }

    #[test]
    fn the_cache_reads_an_image_id_once() {
        let cache = ProfileCache::default();
        let v3 = labels(&[(PROFILE_LABEL, "zeroclaw-v3")]);
        assert_eq!(
            cache.get_or_detect("sha256:a", &v3),
            (RuntimeProfile::ZeroclawV3, true)
        );
        // Same id: the labels are not read again.
        assert_eq!(
            cache.get_or_detect("sha256:a", &Labels::new()),
            (RuntimeProfile::ZeroclawV3, false)
        );
        assert_eq!(
            cache.get_or_detect("sha256:b", &Labels::new()),
            (RuntimeProfile::ZeroclawV1, true)
        );
    }
}
