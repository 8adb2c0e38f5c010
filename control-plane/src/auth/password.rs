//! Password hashing: argon2id, run in the slots of one [`HashingPool`].
//!
//! Argon2 is the one thing an anonymous caller can make us spend a core and
//! 19 MiB on, so every hash and check takes a slot, one per core; a caller
//! that finds none free within [`HASH_QUEUE_WAIT`] is refused
//! ([`AuthError::Busy`], 503 with `Retry-After`) rather than queued without
//! bound.
//!
//! Each slot keeps its argon2 memory for the next computation instead of
//! allocating it every time: argon2's blocks are 64-byte aligned, and glibc
//! before 2.38 seldom reuses a freed aligned allocation (its bug 14581), so
//! the process grew by about 19 MiB per check under a login flood (325 MiB
//! after 74 checks on 2 cores). Kept per slot, the memory stays at most
//! slots × 19 MiB.

use std::sync::{Arc, LazyLock, Mutex, MutexGuard};
use std::time::Duration;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{self, Output, ParamsString, Salt, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, PasswordHash, PasswordHasher, Version};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::AuthError;

/// Longest a password hash or check waits for a free slot before it is
/// refused with [`AuthError::Busy`]: long enough to ride out a burst, short
/// enough that a flood is turned away instead of queueing without bound.
pub const HASH_QUEUE_WAIT: Duration = Duration::from_secs(2);
/// The `Retry-After` of that refusal, in seconds.
pub const HASH_RETRY_AFTER_SECS: u64 = 2;
/// Most argon2 computations at once, whatever the core count: each holds
/// 19 MiB (argon2id's default `m`), so a large host keeps the hashing memory
/// near 150 MiB.
pub const MAX_HASH_SLOTS: usize = 8;

/// The algorithm and version of new hashes (argon2's defaults; the
/// parameters are [`Params::default`]: m = 19 MiB, t = 2, p = 1).
const ALGORITHM: Algorithm = Algorithm::Argon2id;
const VERSION: Version = Version::V0x13;

/// Argon2 computations allowed at once: one per core (at most
/// [`MAX_HASH_SLOTS`]). One computation keeps a core busy for tens of
/// milliseconds, so more at once would only add memory and latency; a
/// caller waits up to `wait` for a slot and is then refused.
pub struct HashingPool {
    slots: Arc<Semaphore>,
    /// Argon2 memory of the slots not in use (at most one per slot).
    memory: Arc<Mutex<Vec<Vec<Block>>>>,
    wait: Duration,
}

impl HashingPool {
    /// A pool of `slots` (at least one) that refuses after `wait`.
    pub fn new(slots: usize, wait: Duration) -> Self {
        HashingPool {
            slots: Arc::new(Semaphore::new(slots.max(1))),
            memory: Arc::default(),
            wait,
        }
    }

    /// One slot per core of this host (at most [`MAX_HASH_SLOTS`]), waited
    /// on for [`HASH_QUEUE_WAIT`].
    pub fn for_this_host() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self::new(cores.min(MAX_HASH_SLOTS), HASH_QUEUE_WAIT)
    }

    /// A slot, or [`AuthError::Busy`] when none frees up within the wait.
    pub async fn slot(&self) -> Result<HashSlot, AuthError> {
        let permit = match tokio::time::timeout(self.wait, self.slots.clone().acquire_owned()).await
        {
            Ok(Ok(permit)) => permit,
            // Elapsed, or closed (never: the semaphore is not closed).
            Ok(Err(_)) | Err(_) => return Err(AuthError::Busy),
        };
        Ok(HashSlot {
            memory: lock(&self.memory).pop().unwrap_or_default(),
            spare: self.memory.clone(),
            _permit: permit,
        })
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// The process's hashing slots: the cores are the process's, so one pool
/// serves every caller (API, `zcaas user create`, the first admin).
static HASHING: LazyLock<HashingPool> = LazyLock::new(HashingPool::for_this_host);

/// The right to run one argon2 computation, with the slot's memory. It
/// moves into the blocking task, so the slot stays taken until the
/// computation ends even if the request that asked for it is dropped.
pub struct HashSlot {
    memory: Vec<Block>,
    spare: Arc<Mutex<Vec<Vec<Block>>>>,
    /// Last field: released after `drop` has put the memory back.
    _permit: OwnedSemaphorePermit,
}

impl Drop for HashSlot {
    fn drop(&mut self) {
        let memory = std::mem::take(&mut self.memory);
        if !memory.is_empty() {
            lock(&self.spare).push(memory);
        }
    }
}

impl HashSlot {
    /// Hashes `password` with argon2id (default parameters) on the blocking
    /// pool. Returns the PHC string to store.
    pub async fn hash(self, password: String) -> Result<String, AuthError> {
        tokio::task::spawn_blocking(move || {
            let mut slot = self;
            let salt = SaltString::generate(&mut OsRng);
            let params = Params::default();
            let phc = |slot: &mut HashSlot| -> password_hash::Result<String> {
                let output = slot.output(
                    password.as_bytes(),
                    ALGORITHM,
                    VERSION,
                    &params,
                    salt.as_salt(),
                )?;
                let phc = PasswordHash {
                    algorithm: ALGORITHM.ident(),
                    version: Some(VERSION.into()),
                    params: ParamsString::try_from(&params)?,
                    salt: Some(salt.as_salt()),
                    hash: Some(output),
                };
                Ok(phc.to_string())
            };
            phc(&mut slot).map_err(|e| AuthError::Hash(e.to_string()))
        })
        .await
        .map_err(|e| AuthError::Hash(e.to_string()))?
    }

    /// Checks `password` against a stored PHC hash on the blocking pool;
    /// `None` (no such user) verifies against a dummy hash and returns
    /// `false`.
    pub async fn verify(self, password: String, hash: Option<String>) -> bool {
        tokio::task::spawn_blocking(move || {
            let mut slot = self;
            let real = hash.is_some();
            let Some(hash) = hash.or_else(|| DUMMY_HASH.clone()) else {
                return false;
            };
            let Ok(parsed) = PasswordHash::new(&hash) else {
                return false;
            };
            slot.matches(password.as_bytes(), &parsed) && real
        })
        .await
        .unwrap_or(false)
    }

    /// argon2's `PasswordVerifier::verify_password`, in this slot's memory:
    /// the algorithm, version, parameters and salt are the stored hash's.
    fn matches(&mut self, password: &[u8], phc: &PasswordHash<'_>) -> bool {
        let (Some(salt), Some(expected)) = (phc.salt, phc.hash) else {
            return false;
        };
        let computed = (|| {
            let algorithm = Algorithm::try_from(phc.algorithm)?;
            let version = phc
                .version
                .map(Version::try_from)
                .transpose()?
                .unwrap_or_default();
            let params = Params::try_from(phc)?;
            self.output(password, algorithm, version, &params, salt)
        })();
        // `Output`'s equality is constant-time.
        computed.is_ok_and(|computed| computed == expected)
    }

    /// The argon2 output for `password`, computed in this slot's memory
    /// (grown first if these parameters need more).
    fn output(
        &mut self,
        password: &[u8],
        algorithm: Algorithm,
        version: Version,
        params: &Params,
        salt: Salt<'_>,
    ) -> password_hash::Result<Output> {
        let mut salt_bytes = [0u8; 64];
        let salt = salt.decode_b64(&mut salt_bytes)?;
        if self.memory.len() < params.block_count() {
            self.memory.resize(params.block_count(), Block::default());
        }
        let argon2 = Argon2::new(algorithm, version, params.clone());
        let len = params.output_len().unwrap_or(Params::DEFAULT_OUTPUT_LEN);
        Output::init_with(len, |out| {
            Ok(argon2.hash_password_into_with_memory(password, salt, out, &mut self.memory)?)
        })
    }
}

/// A slot of the process's [`HashingPool`] (callers that must do something
/// between getting the slot and hashing, such as counting the attempt).
pub async fn hash_slot() -> Result<HashSlot, AuthError> {
    HASHING.slot().await
}

/// Hashes `password` in a slot of the process's pool; see
/// [`HashSlot::hash`]. [`AuthError::Busy`] when no slot frees up in time.
pub async fn hash_password(password: String) -> Result<String, AuthError> {
    hash_slot().await?.hash(password).await
}

/// Checks `password` in a slot of the process's pool; see
/// [`HashSlot::verify`]. [`AuthError::Busy`] when no slot frees up in time.
pub async fn verify_password(password: String, hash: Option<String>) -> Result<bool, AuthError> {
    Ok(hash_slot().await?.verify(password, hash).await)
}

/// A hash to verify against when the user does not exist, so a login for an
/// unknown email costs the same time as one with a wrong password.
static DUMMY_HASH: LazyLock<Option<String>> = LazyLock::new(|| {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(b"not a real password", &salt)
        .ok()
        .map(|h| h.to_string())
});

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use argon2::PasswordVerifier;
    use axum::http::{header, StatusCode};
    use axum::response::IntoResponse;

    use super::*;
    use crate::error::ApiError;

    #[tokio::test]
    async fn passwords_hash_and_verify() {
        let h = hash_password("correct horse".into()).await.unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
        assert!(verify_password("correct horse".into(), Some(h.clone()))
            .await
            .unwrap());
        assert!(!verify_password("wrong horse".into(), Some(h))
            .await
            .unwrap());
        assert!(!verify_password("anything".into(), None).await.unwrap());
    }

    #[tokio::test]
    async fn hashes_interoperate_with_argon2s_own() {
        let ours = hash_password("correct horse".into()).await.unwrap();
        let parsed = PasswordHash::new(&ours).unwrap();
        assert!(Argon2::default()
            .verify_password(b"correct horse", &parsed)
            .is_ok());
        // Stored with other settings (two lanes, argon2i, v=16): verified
        // with the hash's own.
        let params = Params::new(4096, 3, 2, Some(40)).unwrap();
        let salt = SaltString::generate(&mut OsRng);
        for (algorithm, version) in [
            (Algorithm::Argon2id, Version::V0x13),
            (Algorithm::Argon2i, Version::V0x10),
        ] {
            let theirs = Argon2::new(algorithm, version, params.clone())
                .hash_password(b"battery staple", &salt)
                .unwrap()
                .to_string();
            let check = |pw: &str| verify_password(pw.into(), Some(theirs.clone()));
            assert!(check("battery staple").await.unwrap(), "{theirs}");
            assert!(!check("battery stapler").await.unwrap(), "{theirs}");
        }
        assert!(!verify_password("x".into(), Some("not a hash".into()))
            .await
            .unwrap());
    }

    #[tokio::test]
    async fn slots_keep_their_memory() {
        let pool = HashingPool::new(2, HASH_QUEUE_WAIT);
        let h = pool.slot().await.unwrap().hash("pw".into()).await.unwrap();
        for _ in 0..3 {
            assert!(
                pool.slot()
                    .await
                    .unwrap()
                    .verify("pw".into(), Some(h.clone()))
                    .await
            );
        }
        assert_eq!(lock(&pool.memory).len(), 1, "one buffer, reused");
        let (a, b) = (pool.slot().await.unwrap(), pool.slot().await.unwrap());
        let (x, y) = tokio::join!(a.hash("a".into()), b.hash("b".into()));
        assert!(x.is_ok() && y.is_ok());
        assert_eq!(lock(&pool.memory).len(), 2, "one buffer per slot");
    }

    #[tokio::test]
    async fn a_full_pool_refuses_with_503_and_retry_after() {
        let pool = HashingPool::new(1, Duration::from_millis(10));
        let held = pool.slot().await.unwrap();
        let refused = match pool.slot().await {
            Err(e @ AuthError::Busy) => e,
            Err(e) => panic!("expected Busy, got {e}"),
            Ok(_) => panic!("a second slot of a pool of one"),
        };
        let resp = ApiError::from(refused).into_response();
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            resp.headers()[header::RETRY_AFTER],
            HASH_RETRY_AFTER_SECS.to_string().as_str()
        );
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 16)
            .await
            .unwrap();
        let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(body["error"]["code"], "busy");
        assert!(body["error"]["message"].is_string(), "{body}");
        // The slot frees when the computation that held it ends.
        assert!(!held.verify("x".into(), None).await);
        assert!(pool.slot().await.is_ok());
    }
}
