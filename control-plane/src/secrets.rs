//! Secrets at rest: AES-256-GCM with a fresh random 96-bit nonce per
//! encryption, associated data binding each ciphertext to its agent and field,
//! and a key id in the stored form, so keys can be rotated (`zcaas keys
//! rotate`) while old ciphertexts keep decrypting until re-encrypted.
//! The master keys live in a file outside the database (mode 0600).
//!
//! Stored form: `v1:<key_id>:<base64(nonce ‖ ciphertext ‖ tag)>`, with the
//! associated data `zcaas:v1:<agent_id>:<field>:<key_id>`.
//!
//! Keyring file (TOML):
//! ```toml
//! current = "k1a2b3c4"
//! [keys]
//! k1a2b3c4 = "<base64 of 32 bytes>"
//! ```
//! A process that meets a key id it does not know re-reads the file once, so
//! a server keeps decrypting after `zcaas keys rotate` ran beside it.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::RwLock;

use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use rand::RngCore;
use serde::{Deserialize, Serialize};

/// Version tag of the stored form.
const VERSION: &str = "v1";
/// AES-GCM nonce length in bytes (96 bits).
const NONCE_LEN: usize = 12;
/// AES-GCM tag length in bytes.
const TAG_LEN: usize = 16;

/// Which secret of an agent a ciphertext holds (part of the associated data).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretField {
    /// The agent gateway's bearer token.
    Token,
    /// The user's LLM API key.
    ApiKey,
    /// JSON of the messaging channels (bot tokens inside).
    Channels,
}

impl SecretField {
    /// The name used in the associated data.
    pub fn as_str(self) -> &'static str {
        match self {
            SecretField::Token => "token",
            SecretField::ApiKey => "api_key",
            SecretField::Channels => "channels",
        }
    }
}

/// Errors from encryption and decryption.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("ciphertext is malformed")]
    Malformed,
    #[error("unknown key id {0}")]
    UnknownKey(String),
    #[error("decryption failed (wrong key, agent or field)")]
    Decrypt,
    #[error("key file: {0}")]
    KeyFile(String),
}

/// One 256-bit master key. `Debug` never shows it.
#[derive(Clone)]
struct MasterKey([u8; 32]);

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl MasterKey {
    fn generate() -> Self {
        let mut k = [0u8; 32];
        OsRng.fill_bytes(&mut k);
        MasterKey(k)
    }
}

#[derive(Debug, Clone)]
struct Keyring {
    current: String,
    keys: BTreeMap<String, MasterKey>,
}

#[derive(Serialize, Deserialize)]
struct KeyringFile {
    current: String,
    keys: BTreeMap<String, String>,
}

impl Keyring {
    fn new() -> Self {
        let id = new_key_id();
        Keyring {
            current: id.clone(),
            keys: BTreeMap::from([(id, MasterKey::generate())]),
        }
    }

    fn parse(text: &str) -> Result<Self, SecretError> {
        let file: KeyringFile =
            toml::from_str(text).map_err(|e| SecretError::KeyFile(format!("parse: {e}")))?;
        let mut keys = BTreeMap::new();
        for (id, b64) in file.keys {
            if id.is_empty() || id.contains(':') {
                return Err(SecretError::KeyFile(format!("bad key id {id:?}")));
            }
            let bytes = B64
                .decode(b64.trim())
                .map_err(|_| SecretError::KeyFile(format!("key {id}: not base64")))?;
            let key: [u8; 32] = bytes
                .try_into()
                .map_err(|_| SecretError::KeyFile(format!("key {id}: not 32 bytes")))?;
            keys.insert(id, MasterKey(key));
        }
        if !keys.contains_key(&file.current) {
            return Err(SecretError::KeyFile(format!(
                "current key {} is not in the keyring",
                file.current
            )));
        }
        Ok(Keyring {
            current: file.current,
            keys,
        })
    }

    fn render(&self) -> Result<String, SecretError> {
        let file = KeyringFile {
            current: self.current.clone(),
            keys: self
                .keys
                .iter()
                .map(|(id, k)| (id.clone(), B64.encode(k.0)))
                .collect(),
        };
        toml::to_string(&file).map_err(|e| SecretError::KeyFile(format!("render: {e}")))
    }
}

/// A fresh key id: `k` and 8 hex digits.
fn new_key_id() -> String {
    let mut b = [0u8; 4];
    OsRng.fill_bytes(&mut b);
    format!("k{}", hex::encode(b))
}

fn aad(agent_id: &str, field: SecretField, key_id: &str) -> String {
    format!("zcaas:{VERSION}:{agent_id}:{}:{key_id}", field.as_str())
}

/// The keyring: the current key (used to encrypt) and older ones (decrypt only).
pub struct SecretBox {
    /// The keyring file, if any (an ephemeral box has none).
    path: Option<PathBuf>,
    ring: RwLock<Keyring>,
}

impl fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ring = self.read();
        f.debug_struct("SecretBox")
            .field("path", &self.path)
            .field("current", &ring.current)
            .field("key_ids", &ring.keys.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl SecretBox {
    /// Loads the keyring at `path`, or creates it (mode 0600) with one fresh
    /// key if it does not exist.
    ///
    /// Errors: [`SecretError::KeyFile`] if the file cannot be read, parsed or
    /// written.
    pub fn load_or_create(path: &Path) -> Result<Self, SecretError> {
        if !path.exists() {
            let ring = Keyring::new();
            match write_new(path, &ring.render()?) {
                Ok(()) => {
                    return Ok(SecretBox {
                        path: Some(path.to_owned()),
                        ring: RwLock::new(ring),
                    })
                }
                // Someone else created it first: load theirs.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(SecretError::KeyFile(format!("{}: {e}", path.display()))),
            }
        }
        Self::load(path)
    }

    /// Loads an existing keyring file.
    pub fn load(path: &Path) -> Result<Self, SecretError> {
        let ring = read_ring(path)?;
        Ok(SecretBox {
            path: Some(path.to_owned()),
            ring: RwLock::new(ring),
        })
    }

    /// An in-memory keyring with one random key (tests, tools).
    pub fn ephemeral() -> Self {
        SecretBox {
            path: None,
            ring: RwLock::new(Keyring::new()),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Keyring> {
        self.ring.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The id of the key new ciphertexts are made with.
    pub fn current_key_id(&self) -> String {
        self.read().current.clone()
    }

    /// Every key id in the keyring.
    pub fn key_ids(&self) -> Vec<String> {
        self.read().keys.keys().cloned().collect()
    }

    /// Adds a fresh key, makes it current, and writes the keyring file (old
    /// keys are kept so old ciphertexts still decrypt). Returns the new id.
    pub fn rotate(&self) -> Result<String, SecretError> {
        let mut ring = self.ring.write().unwrap_or_else(|e| e.into_inner());
        // Start from the file, in case another process rotated meanwhile.
        let mut next = match &self.path {
            Some(p) => read_ring(p)?,
            None => ring.clone(),
        };
        let id = new_key_id();
        next.keys.insert(id.clone(), MasterKey::generate());
        next.current = id.clone();
        if let Some(p) = &self.path {
            replace_file(p, &next.render()?)
                .map_err(|e| SecretError::KeyFile(format!("{}: {e}", p.display())))?;
        }
        *ring = next;
        Ok(id)
    }

    /// Whether `stored` was made with another key than the current one (or
    /// is not in the stored form at all).
    pub fn needs_rotation(&self, stored: &str) -> bool {
        match split(stored) {
            Ok((kid, _)) => kid != self.read().current,
            Err(_) => true,
        }
    }

    /// Encrypts `plaintext` for `(agent_id, field)` with the current key.
    pub fn encrypt(
        &self,
        agent_id: &str,
        field: SecretField,
        plaintext: &str,
    ) -> Result<String, SecretError> {
        let ring = self.read();
        let kid = ring.current.clone();
        let key = ring
            .keys
            .get(&kid)
            .ok_or_else(|| SecretError::UnknownKey(kid.clone()))?;
        let cipher = Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&key.0));
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let aad = aad(agent_id, field, &kid);
        let ct = cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext.as_bytes(),
                    aad: aad.as_bytes(),
                },
            )
            .map_err(|_| SecretError::Decrypt)?;
        let mut blob = Vec::with_capacity(NONCE_LEN + ct.len());
        blob.extend_from_slice(&nonce);
        blob.extend_from_slice(&ct);
        Ok(format!("{VERSION}:{kid}:{}", B64.encode(blob)))
    }

    /// Decrypts a stored string produced by [`SecretBox::encrypt`] with any known key.
    ///
    /// Errors: [`SecretError::Malformed`] (not our form), [`SecretError::UnknownKey`]
    /// (key id not in the keyring, even after re-reading the file),
    /// [`SecretError::Decrypt`] (wrong agent, field or key, or tampered).
    pub fn decrypt(
        &self,
        agent_id: &str,
        field: SecretField,
        stored: &str,
    ) -> Result<String, SecretError> {
        let (kid, body) = split(stored)?;
        // Bind first: a guard in a `match` scrutinee lives through its arms,
        // and `reload` takes the write lock.
        let known = self.read().keys.get(kid).cloned();
        let key = match known {
            Some(k) => k,
            None => {
                self.reload()?;
                self.read()
                    .keys
                    .get(kid)
                    .cloned()
                    .ok_or_else(|| SecretError::UnknownKey(kid.to_owned()))?
            }
        };
        let blob = B64.decode(body).map_err(|_| SecretError::Malformed)?;
        if blob.len() < NONCE_LEN + TAG_LEN {
            return Err(SecretError::Malformed);
        }
        let (nonce, ct) = blob.split_at(NONCE_LEN);
        let cipher = Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&key.0));
        let aad = aad(agent_id, field, kid);
        let pt = cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ct,
                    aad: aad.as_bytes(),
                },
            )
            .map_err(|_| SecretError::Decrypt)?;
        String::from_utf8(pt).map_err(|_| SecretError::Malformed)
    }

    /// Re-reads the keyring file (keys added by another process).
    fn reload(&self) -> Result<(), SecretError> {
        if let Some(p) = &self.path {
            let fresh = read_ring(p)?;
            *self.ring.write().unwrap_or_else(|e| e.into_inner()) = fresh;
        }
        Ok(())
    }
}

fn split(stored: &str) -> Result<(&str, &str), SecretError> {
    let mut parts = stored.splitn(3, ':');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(VERSION), Some(kid), Some(body)) if !kid.is_empty() => Ok((kid, body)),
        _ => Err(SecretError::Malformed),
    }
}

fn read_ring(path: &Path) -> Result<Keyring, SecretError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| SecretError::KeyFile(format!("{}: {e}", path.display())))?;
    if let Ok(meta) = std::fs::metadata(path) {
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(path = %path.display(), "key file is readable by group or others; chmod 600 it");
        }
    }
    Keyring::parse(&text)
}

/// Creates `path` (mode 0600) with `contents`; fails if it exists.
pub(crate) fn write_new(path: &Path, contents: &str) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(contents.as_bytes())?;
    f.sync_all()
}

/// Atomically replaces `path` with `contents` (mode 0600): write a sibling
/// temporary file, sync, rename.
fn replace_file(path: &Path, contents: &str) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    write_new(&tmp, contents)?;
    std::fs::rename(&tmp, path)
}

/// A value that must never be printed: `Debug` and `Display` show `***`.
/// Use it for passwords, tokens and keys that travel through structs.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Redacted<T>(pub T);

impl<T> Redacted<T> {
    /// The wrapped value; handle with care.
    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T> fmt::Debug for Redacted<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl<T> fmt::Display for Redacted<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
#[path = "secrets_tests.rs"]
mod tests;
