//! Bearer tokens: generation, hashing, verification and (optional) persistence.
//!
//! A token is `zc_` followed by 64 lowercase hex digits (32 bytes from the OS CSPRNG). Only
//! its SHA-256 (64 hex digits) is ever kept. Verification hashes the presented token and
//! compares it with every held hash in constant time.
//!
//! With `[gateway] persist_tokens = true` the hashes of tokens paired at run time are written
//! to `<config dir>/paired_tokens.txt` (one hash per line, `#` comments, mode 0600, replaced
//! atomically) and read back at start. Hashes from `[gateway] paired_tokens` in `config.toml`
//! are always accepted and never written anywhere.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::RwLock;

use rand::rngs::OsRng;
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Prefix of every token.
pub const TOKEN_PREFIX: &str = "zc_";

/// A fresh token: `zc_` + 64 hex digits from the OS CSPRNG.
pub fn generate_token() -> String {
    let mut bytes = [0u8; 32];
    OsRng.fill_bytes(&mut bytes);
    format!("{TOKEN_PREFIX}{}", hex::encode(bytes))
}

/// SHA-256 of `token`, 64 lowercase hex digits.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Whether `s` is already a SHA-256 hex digest (64 hex digits).
pub fn is_hash(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A `paired_tokens` entry as stored: a digest is lower-cased, anything else is a raw token
/// and is hashed.
pub fn normalize_configured(entry: &str) -> String {
    let entry = entry.trim();
    if is_hash(entry) {
        entry.to_ascii_lowercase()
    } else {
        hash_token(entry)
    }
}

fn decode(hash: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(hash, &mut out).ok().map(|()| out)
}

/// Why the token state file could not be read or written.
#[derive(Debug, thiserror::Error)]
#[error("token state file {path}: {source}")]
pub struct PersistError {
    /// The state file.
    pub path: PathBuf,
    /// The I/O error.
    pub source: std::io::Error,
}

/// Reads persisted hashes (missing file = none; bad lines are skipped).
///
/// # Errors
/// [`PersistError`] for I/O errors other than "not found".
pub fn load_persisted(path: &Path) -> Result<Vec<String>, PersistError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(text
            .lines()
            .map(str::trim)
            .filter(|l| is_hash(l))
            .map(str::to_ascii_lowercase)
            .collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(source) => Err(PersistError {
            path: path.to_owned(),
            source,
        }),
    }
}

fn write_persisted(path: &Path, hashes: &[String]) -> Result<(), PersistError> {
    let err = |source| PersistError {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    let tmp = path.with_extension("txt.tmp");
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts.open(&tmp).map_err(err)?;
    let mut text = String::from("# agent-runtime: SHA-256 of paired bearer tokens\n");
    for h in hashes {
        text.push_str(h);
        text.push('\n');
    }
    f.write_all(text.as_bytes()).map_err(err)?;
    f.sync_all().map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

/// The set of accepted token hashes.
#[derive(Debug)]
pub struct TokenStore {
    /// Digests from `config.toml`: accepted, never written.
    seeded: Vec<[u8; 32]>,
    /// Digests paired at run time (and loaded from the state file), hex, in pairing order.
    paired: RwLock<Vec<String>>,
    /// Where to write `paired`, when `persist_tokens` is on.
    state_file: Option<PathBuf>,
}

impl TokenStore {
    /// A store accepting the `seeded` digests plus `persisted` ones; new tokens are written to
    /// `state_file` when it is `Some`.
    pub fn new(seeded: &[String], persisted: Vec<String>, state_file: Option<PathBuf>) -> Self {
        Self {
            seeded: seeded.iter().filter_map(|h| decode(h)).collect(),
            paired: RwLock::new(persisted),
            state_file,
        }
    }

    /// Whether any token is held (then no pairing code is printed at start).
    pub fn is_empty(&self) -> bool {
        self.seeded.is_empty() && self.paired.read().map(|p| p.is_empty()).unwrap_or(true)
    }

    /// Whether `token` is one of ours. Constant-time in the digest comparisons.
    pub fn verify(&self, token: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let mut found = subtle::Choice::from(0u8);
        for held in &self.seeded {
            found |= held.ct_eq(&digest);
        }
        if let Ok(paired) = self.paired.read() {
            for held in paired.iter().filter_map(|h| decode(h)) {
                found |= held.ct_eq(&digest);
            }
        }
        found.into()
    }

    /// Mints and records a new token. The token is accepted from now on in any case; the
    /// second value says whether its hash reached the state file: `Ok(false)` without
    /// `persist_tokens`, `Err` when writing failed (the token then lives in memory only).
    pub fn issue(&self) -> (String, Result<bool, PersistError>) {
        let token = generate_token();
        let hash = hash_token(&token);
        let Ok(mut paired) = self.paired.write() else {
            return (token, Ok(false));
        };
        paired.push(hash);
        let persisted = match &self.state_file {
            None => Ok(false),
            Some(path) => write_persisted(path, &paired).map(|()| true),
        };
        (token, persisted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_shape() {
        let t = generate_token();
        assert!(t.starts_with("zc_"));
        assert_eq!(t.len(), 3 + 64);
        assert!(t[3..]
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        assert_ne!(t, generate_token());
    }

    #[test]
    fn hashing_is_sha256_hex() {
        // sha256("abc"), FIPS 180-2 test vector.
        assert_eq!(
            hash_token("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(is_hash(&hash_token("x")));
        assert!(!is_hash("zc_abc"));
        assert_eq!(normalize_configured(&"AB".repeat(32)), "ab".repeat(32));
        assert_eq!(normalize_configured(" zc_raw "), hash_token("zc_raw"));
    }

    #[test]
    fn store_verifies_seeded_and_issued_tokens_only() {
        let store = TokenStore::new(&[hash_token("zc_seed")], Vec::new(), None);
        assert!(!store.is_empty());
        assert!(store.verify("zc_seed"));
        assert!(!store.verify("zc_other"));
        let (t, persisted) = store.issue();
        assert!(!persisted.expect("no persistence"));
        assert!(store.verify(&t));
        assert!(!store.verify(&t[..t.len() - 1]));
        let empty = TokenStore::new(&[], Vec::new(), None);
        assert!(empty.is_empty());
        assert!(!empty.verify(""));
    }

    #[test]
    fn persisted_hashes_round_trip_through_the_state_file() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("cfg").join("paired_tokens.txt");
        let store = TokenStore::new(
            &[],
            load_persisted(&path).expect("none"),
            Some(path.clone()),
        );
        let (t1, p1) = store.issue();
        let (t2, p2) = store.issue();
        assert!(p1.expect("written") && p2.expect("written"));
        let text = std::fs::read_to_string(&path).expect("file");
        assert!(!text.contains(&t1), "raw token must never be written");
        let reloaded = TokenStore::new(&[], load_persisted(&path).expect("read"), None);
        assert!(reloaded.verify(&t1) && reloaded.verify(&t2));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
