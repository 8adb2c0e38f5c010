//! Where the config file and the workspace are, from the environment alone.
//!
//! Rules (DESIGN §1, the upstream ones):
//! 1. `ZEROCLAW_CONFIG_DIR` set → `$ZEROCLAW_CONFIG_DIR/config.toml`;
//! 2. else `ZEROCLAW_WORKSPACE=<ws>` whose last component is `workspace` →
//!    `<parent of ws>/.zeroclaw/config.toml`;
//! 3. else `$HOME/.zeroclaw/config.toml`.
//!
//! The workspace is `ZEROCLAW_WORKSPACE`, else `$HOME/.zeroclaw/workspace`, else (no `HOME`)
//! `<config dir>/workspace`.

use std::path::{Path, PathBuf};

use super::{ConfigError, EnvLookup};

/// The resolved locations of the config file and the workspace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    /// The directory holding `config.toml` (and `paired_tokens.txt` with `persist_tokens`).
    pub config_dir: PathBuf,
    /// `<config_dir>/config.toml`; may not exist (defaults + environment then).
    pub config_file: PathBuf,
    /// The agent's workspace: persona files and `memory/`.
    pub workspace: PathBuf,
}

impl Paths {
    /// Paths rooted at one directory: `<root>/.zeroclaw/config.toml` and `<root>/workspace`,
    /// the container layout with `root = /zeroclaw-data`. Handy for tests.
    pub fn under(root: &Path) -> Self {
        let config_dir = root.join(".zeroclaw");
        Self {
            config_file: config_dir.join("config.toml"),
            config_dir,
            workspace: root.join("workspace"),
        }
    }

    /// The file `persist_tokens = true` writes paired-token hashes into.
    pub fn token_state_file(&self) -> PathBuf {
        self.config_dir.join("paired_tokens.txt")
    }
}

fn non_empty(env: &EnvLookup<'_>, key: &str) -> Option<String> {
    env(key).filter(|v| !v.trim().is_empty())
}

/// Resolves [`Paths`] from an environment lookup (never the process environment directly, so
/// tests can pass a map).
///
/// # Errors
/// [`ConfigError::NoLocation`] when neither `ZEROCLAW_CONFIG_DIR`, `ZEROCLAW_WORKSPACE` nor
/// `HOME` gives a place.
pub fn resolve(env: &EnvLookup<'_>) -> Result<Paths, ConfigError> {
    let home = non_empty(env, "HOME").map(PathBuf::from);
    let workspace_env = non_empty(env, "ZEROCLAW_WORKSPACE").map(PathBuf::from);

    let config_dir = if let Some(dir) = non_empty(env, "ZEROCLAW_CONFIG_DIR") {
        PathBuf::from(dir)
    } else if let Some(parent) = workspace_env
        .as_deref()
        .filter(|ws| ws.file_name().is_some_and(|n| n == "workspace"))
        .and_then(Path::parent)
    {
        parent.join(".zeroclaw")
    } else if let Some(home) = &home {
        home.join(".zeroclaw")
    } else {
        return Err(ConfigError::NoLocation);
    };

    let workspace = match (workspace_env, &home) {
        (Some(ws), _) => ws,
        (None, Some(home)) => home.join(".zeroclaw").join("workspace"),
        (None, None) => config_dir.join("workspace"),
    };

    Ok(Paths {
        config_file: config_dir.join("config.toml"),
        config_dir,
        workspace,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn paths(vars: &[(&str, &str)]) -> Result<Paths, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        resolve(&|k: &str| map.get(k).cloned())
    }

    #[test]
    fn container_layout_from_home_and_workspace() {
        let p = paths(&[
            ("HOME", "/zeroclaw-data"),
            ("ZEROCLAW_WORKSPACE", "/zeroclaw-data/workspace"),
        ])
        .expect("paths");
        assert_eq!(
            p.config_file,
            PathBuf::from("/zeroclaw-data/.zeroclaw/config.toml")
        );
        assert_eq!(p.workspace, PathBuf::from("/zeroclaw-data/workspace"));
    }

    #[test]
    fn config_dir_wins_over_everything() {
        let p = paths(&[
            ("HOME", "/h"),
            ("ZEROCLAW_WORKSPACE", "/data/workspace"),
            ("ZEROCLAW_CONFIG_DIR", "/etc/zc"),
        ])
        .expect("paths");
        assert_eq!(p.config_file, PathBuf::from("/etc/zc/config.toml"));
        assert_eq!(p.workspace, PathBuf::from("/data/workspace"));
    }

    #[test]
    fn workspace_basename_rule() {
        // Basename `workspace`: config beside it.
        let p =
            paths(&[("HOME", "/h"), ("ZEROCLAW_WORKSPACE", "/srv/a/workspace/")]).expect("paths");
        assert_eq!(p.config_file, PathBuf::from("/srv/a/.zeroclaw/config.toml"));
        // Any other basename: back to $HOME.
        let p = paths(&[("HOME", "/h"), ("ZEROCLAW_WORKSPACE", "/srv/a/ws")]).expect("paths");
        assert_eq!(p.config_file, PathBuf::from("/h/.zeroclaw/config.toml"));
        assert_eq!(p.workspace, PathBuf::from("/srv/a/ws"));
    }

    #[test]
    fn home_only() {
        let p = paths(&[("HOME", "/home/u")]).expect("paths");
        assert_eq!(
            p.config_file,
            PathBuf::from("/home/u/.zeroclaw/config.toml")
        );
        assert_eq!(p.workspace, PathBuf::from("/home/u/.zeroclaw/workspace"));
        assert_eq!(
            p.token_state_file(),
            PathBuf::from("/home/u/.zeroclaw/paired_tokens.txt")
        );
    }

    #[test]
    fn empty_values_count_as_unset_and_nothing_is_an_error() {
        assert!(matches!(
            paths(&[("HOME", ""), ("ZEROCLAW_CONFIG_DIR", " ")]),
            Err(ConfigError::NoLocation)
        ));
        let p = paths(&[("ZEROCLAW_CONFIG_DIR", "/c")]).expect("paths");
        assert_eq!(p.workspace, PathBuf::from("/c/workspace"));
    }
}
