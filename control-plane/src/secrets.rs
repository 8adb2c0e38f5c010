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
//!
//! Writers of the file (its first creation, a rotation) hold [`KeyringLock`],
//! an exclusive lock on a sidecar `<file>.lock`, so two rotations cannot both
//! read the same keyring and each write back only their own new key. Writes
//! are crash-safe: a sibling temporary file (mode 0600) is synced, renamed
//! over the keyring, and the directory is synced. Readers take no lock: a
//! rename is atomic, so they see the old file or the new one, never a mix.
//!
//! Keyed hashes ([`SecretBox::token_hashes`]): what must be compared but
//! never stored (channel tokens, unique across the installation) is kept as
//! HMAC-SHA256 under a sub-key of each master key, `HMAC-SHA256(master,
//! "zcaas:v1:token-hash")`, never under a master key itself. One hash per
//! key of the ring: keys are never removed, so every process, even one that
//! has not re-read the file since a rotation, shares at least the oldest
//! key's hash with every other.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{File, OpenOptions, TryLockError};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::RwLock;
use std::time::{Duration, Instant};

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
/// The label a master key signs to derive the sub-key of
/// [`SecretBox::token_hashes`] (a master key never hashes tokens itself).
pub const TOKEN_HASH_LABEL: &str = "zcaas:v1:token-hash";
/// How long a writer of the keyring file waits for another writer (a
/// concurrent `zcaas keys rotate`) before giving up with
/// [`SecretError::Locked`]. A rotation holds the lock while it re-encrypts
/// every secret (seconds for thousands of agents); giving up is safe, the
/// rotation can simply be run again.
pub const KEYRING_LOCK_WAIT: Duration = Duration::from_secs(30);
/// How often a waiting writer retries the lock.
const LOCK_POLL: Duration = Duration::from_millis(50);

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
    #[error(
        "key file {path} is locked by another writer (a `zcaas keys rotate`?); gave up after {waited:?}"
    )]
    Locked { path: String, waited: Duration },
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

/// An exclusive lock on one keyring file, across processes and threads,
/// released when dropped (or when the process dies: the kernel drops it, so a
/// crash never leaves a stale lock).
///
/// The lock is taken on a sidecar file `<keyring>.lock` that is never
/// replaced, not on the keyring itself: a write renames a new file over the
/// keyring, and a lock on the replaced inode would not exclude a process that
/// opens the new one.
#[derive(Debug)]
pub struct KeyringLock {
    key_path: PathBuf,
    /// Holds the lock (`flock`) while open.
    _file: File,
}

impl KeyringLock {
    /// The lock file of the keyring at `key_path`.
    pub fn lock_path(key_path: &Path) -> PathBuf {
        let mut name = key_path.as_os_str().to_owned();
        name.push(".lock");
        PathBuf::from(name)
    }

    /// Takes the lock of the keyring at `key_path`, waiting up to `wait` for
    /// another holder (logged once at INFO when it has to wait).
    ///
    /// Errors: [`SecretError::Locked`] when `wait` passed,
    /// [`SecretError::KeyFile`] when the lock file cannot be opened or locked.
    pub fn acquire(key_path: &Path, wait: Duration) -> Result<Self, SecretError> {
        let lock_path = Self::lock_path(key_path);
        let io_err =
            |e: std::io::Error| SecretError::KeyFile(format!("{}: {e}", lock_path.display()));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&lock_path)
            .map_err(io_err)?;
        let start = Instant::now();
        let mut told = false;
        loop {
            match file.try_lock() {
                Ok(()) => {
                    return Ok(KeyringLock {
                        key_path: key_path.to_owned(),
                        _file: file,
                    })
                }
                Err(TryLockError::WouldBlock) => {}
                Err(TryLockError::Error(e)) => return Err(io_err(e)),
            }
            let waited = start.elapsed();
            if waited >= wait {
                return Err(SecretError::Locked {
                    path: key_path.display().to_string(),
                    waited,
                });
            }
            if !told {
                tracing::info!(path = %key_path.display(), wait_secs = wait.as_secs(),
                    "waiting for the key file lock held by another writer");
                told = true;
            }
            std::thread::sleep(LOCK_POLL.min(wait - waited));
        }
    }

    /// The keyring file this lock guards.
    pub fn key_path(&self) -> &Path {
        &self.key_path
    }
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
    /// key if it does not exist; creating takes [`KeyringLock`] (waiting up to
    /// [`KEYRING_LOCK_WAIT`]), so concurrent first starts share one key.
    ///
    /// Errors: [`SecretError::KeyFile`] if the file cannot be read, parsed or
    /// written, [`SecretError::Locked`] if another writer keeps the lock.
    pub fn load_or_create(path: &Path) -> Result<Self, SecretError> {
        if path.exists() {
            return Self::load(path);
        }
        let lock = KeyringLock::acquire(path, KEYRING_LOCK_WAIT)?;
        Self::load_or_create_locked(&lock)
    }

    /// [`SecretBox::load_or_create`] for a caller that already holds the lock
    /// of the keyring file (`lock.key_path()`).
    pub fn load_or_create_locked(lock: &KeyringLock) -> Result<Self, SecretError> {
        let path = lock.key_path();
        // Checked again under the lock: another writer may have created it.
        if !path.exists() {
            let ring = Keyring::new();
            replace_file(path, &ring.render()?)
                .map_err(|e| SecretError::KeyFile(format!("{}: {e}", path.display())))?;
            return Ok(SecretBox {
                path: Some(path.to_owned()),
                ring: RwLock::new(ring),
            });
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
    /// Takes the file's [`KeyringLock`] for the write (waiting up to
    /// [`KEYRING_LOCK_WAIT`]); a caller that must keep other writers out for
    /// longer (a whole `zcaas keys rotate`) holds it and calls
    /// [`SecretBox::rotate_locked`].
    pub fn rotate(&self) -> Result<String, SecretError> {
        match &self.path {
            Some(p) => self.rotate_locked(&KeyringLock::acquire(p, KEYRING_LOCK_WAIT)?),
            None => {
                let mut ring = self.ring.write().unwrap_or_else(|e| e.into_inner());
                Ok(add_key(&mut ring))
            }
        }
    }

    /// [`SecretBox::rotate`] under a lock the caller holds, which must be
    /// the lock of this box's file.
    pub fn rotate_locked(&self, lock: &KeyringLock) -> Result<String, SecretError> {
        let Some(path) = self.path.as_deref().filter(|p| *p == lock.key_path()) else {
            return Err(SecretError::KeyFile(format!(
                "the lock held is for {}, not this keyring",
                lock.key_path().display()
            )));
        };
        let mut ring = self.ring.write().unwrap_or_else(|e| e.into_inner());
        // Start from the file: another process may have rotated since this
        // box was loaded, and its key must be kept.
        let mut next = read_ring(path)?;
        let id = add_key(&mut next);
        replace_file(path, &next.render()?)
            .map_err(|e| SecretError::KeyFile(format!("{}: {e}", path.display())))?;
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

    /// The keyed hashes of `token` (hex HMAC-SHA256 under
    /// [`TOKEN_HASH_LABEL`]'s sub-key of each master key), one per key of the
    /// ring, in key-id order. Two equal tokens share every hash computed
    /// under a key both rings know; the hashes reveal nothing of the token
    /// without a master key.
    pub fn token_hashes(&self, token: &str) -> Vec<String> {
        use hmac::{Hmac, Mac};
        type HmacSha256 = Hmac<sha2::Sha256>;
        let mac = |key: &[u8], data: &[u8]| {
            // HMAC takes a key of any length: `new_from_slice` cannot fail.
            let mut m = <HmacSha256 as Mac>::new_from_slice(key)
                .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
            m.update(data);
            m.finalize().into_bytes()
        };
        self.read()
            .keys
            .values()
            .map(|master| {
                let sub_key = mac(&master.0, TOKEN_HASH_LABEL.as_bytes());
                hex::encode(mac(&sub_key, token.as_bytes()))
            })
            .collect()
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

/// Adds a fresh key to `ring` and makes it current; returns its id.
fn add_key(ring: &mut Keyring) -> String {
    let id = new_key_id();
    ring.keys.insert(id.clone(), MasterKey::generate());
    ring.current = id.clone();
    id
}

/// Creates `path` (mode 0600) with `contents`; fails if it exists. The file
/// and its directory are synced, so the new entry survives a crash.
pub(crate) fn write_new(path: &Path, contents: &str) -> std::io::Result<()> {
    create_synced(path, contents)?;
    sync_parent(path)
}

/// Creates `path` (mode 0600) with `contents` and syncs the file (not the
/// directory); fails if it exists.
fn create_synced(path: &Path, contents: &str) -> std::io::Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(contents.as_bytes())?;
    f.sync_all()
}

/// Crash-safely replaces (or creates) `path` with `contents`, mode 0600:
/// write a sibling `<path>.tmp`, sync it, rename it over `path`, sync the
/// directory. After a crash `path` holds the old contents or the new, never
/// a torn file. The caller holds the file's [`KeyringLock`], so the fixed
/// temporary name is never shared (a stale one from a crash is replaced).
fn replace_file(path: &Path, contents: &str) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    match std::fs::remove_file(&tmp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let written = create_synced(&tmp, contents).and_then(|()| std::fs::rename(&tmp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written?;
    sync_parent(path)
}

/// Syncs the directory holding `path`, which makes a create or rename in it
/// durable.
fn sync_parent(path: &Path) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    File::open(dir)?.sync_all()
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
