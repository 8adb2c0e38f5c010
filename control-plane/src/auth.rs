//! Accounts' credentials: argon2id password hashes and HS256 JWTs with `exp`,
//! `iss`, `aud` and `sub` required, and the [`AuthUser`] / [`AdminUser`]
//! extractors that turn a bearer token into a user loaded from the database
//! (so a deleted user's still-unexpired token is refused).
//!
//! Every argon2 computation runs in a slot of one [`HashingPool`] sized to
//! the cores (`auth/password.rs`), and is refused ([`AuthError::Busy`], 503
//! with `Retry-After`) when none frees up within [`HASH_QUEUE_WAIT`].

use std::path::Path;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use serde::{Deserialize, Serialize};

use crate::model::Role;

mod password;

pub use password::{
    hash_password, hash_slot, verify_password, HashSlot, HashingPool, HASH_QUEUE_WAIT,
    HASH_RETRY_AFTER_SECS, MAX_HASH_SLOTS,
};

/// Issuer of our tokens.
pub const ISSUER: &str = "zcaas";
/// Audience of our tokens.
pub const AUDIENCE: &str = "zcaas-api";
/// Lifetime of a token, in seconds (24 h).
pub const TOKEN_TTL_SECS: i64 = 24 * 3600;
/// Clock skew tolerated on `exp`, in seconds.
const LEEWAY_SECS: u64 = 5;
/// Minimum length of the signing secret, in bytes.
const MIN_SECRET_LEN: usize = 32;

/// Errors of password hashing and token handling.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("password hashing: {0}")]
    Hash(String),
    #[error("token: {0}")]
    Token(#[from] jsonwebtoken::errors::Error),
    #[error("JWT secret file: {0}")]
    SecretFile(String),
    /// Every hashing slot stayed taken for [`HASH_QUEUE_WAIT`].
    #[error("password hashing is busy")]
    Busy,
}

/// The claims of our tokens.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// The user id.
    pub sub: String,
    /// Expiry, seconds since the epoch.
    pub exp: i64,
    /// Issued at, seconds since the epoch.
    pub iat: i64,
    /// Always [`ISSUER`].
    pub iss: String,
    /// Always [`AUDIENCE`].
    pub aud: String,
    /// The role when issued (informational; the database's role decides).
    pub role: Role,
}

/// The JWT signing key and the one `Validation` every token is checked with.
pub struct JwtKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JwtKeys(***)")
    }
}

impl JwtKeys {
    /// Keys from a secret of at least 32 bytes; HS256 only.
    pub fn new(secret: &[u8]) -> Result<Self, AuthError> {
        if secret.len() < MIN_SECRET_LEN {
            return Err(AuthError::SecretFile(format!(
                "secret must be at least {MIN_SECRET_LEN} bytes"
            )));
        }
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.set_audience(&[AUDIENCE]);
        validation.set_issuer(&[ISSUER]);
        validation.leeway = LEEWAY_SECS;
        validation.validate_exp = true;
        Ok(JwtKeys {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
        })
    }

    /// Reads the hex secret at `path`, or creates it (mode 0600) with 64
    /// random bytes.
    pub fn load_or_create(path: &Path) -> Result<Self, AuthError> {
        let err = |e: std::io::Error| AuthError::SecretFile(format!("{}: {e}", path.display()));
        if !path.exists() {
            let mut secret = [0u8; 64];
            rand::rngs::OsRng.fill_bytes(&mut secret);
            match crate::secrets::write_new(path, &hex::encode(secret)) {
                Ok(()) => return Self::new(&secret),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(err(e)),
            }
        }
        let text = std::fs::read_to_string(path).map_err(err)?;
        let secret = hex::decode(text.trim())
            .map_err(|_| AuthError::SecretFile(format!("{}: not hex", path.display())))?;
        Self::new(&secret)
    }

    /// A token for `user`, valid for [`TOKEN_TTL_SECS`].
    pub fn issue(&self, user_id: &str, role: Role) -> Result<String, AuthError> {
        let now = chrono::Utc::now().timestamp();
        let claims = Claims {
            sub: user_id.to_owned(),
            exp: now + TOKEN_TTL_SECS,
            iat: now,
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
            role,
        };
        Ok(jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &self.encoding,
        )?)
    }

    /// Verifies signature (HS256 only), `exp`, `iss`, `aud` and `sub`.
    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        Ok(jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)?.claims)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn keys() -> JwtKeys {
        JwtKeys::new(&[7u8; 32]).unwrap()
    }

    #[test]
    fn tokens_round_trip() {
        let k = keys();
        let t = k.issue("u1", Role::Admin).unwrap();
        let c = k.verify(&t).unwrap();
        assert_eq!(
            (c.sub.as_str(), c.role, c.aud.as_str(), c.iss.as_str()),
            ("u1", Role::Admin, AUDIENCE, ISSUER)
        );
        assert!(JwtKeys::new(&[8u8; 32]).unwrap().verify(&t).is_err());
        assert!(JwtKeys::new(&[8u8; 31]).is_err());
    }

    #[test]
    fn claims_are_required_and_checked() {
        let k = keys();
        let now = chrono::Utc::now().timestamp();
        let enc = EncodingKey::from_secret(&[7u8; 32]);
        let sign =
            |v: serde_json::Value, alg| jsonwebtoken::encode(&Header::new(alg), &v, &enc).unwrap();
        let full = serde_json::json!({"sub":"u1","exp":now+60,"iat":now,"iss":ISSUER,"aud":AUDIENCE,"role":"user"});
        assert!(k.verify(&sign(full.clone(), Algorithm::HS256)).is_ok());
        for missing in ["aud", "iss", "exp", "sub"] {
            let mut v = full.clone();
            v.as_object_mut().unwrap().remove(missing);
            assert!(
                k.verify(&sign(v, Algorithm::HS256)).is_err(),
                "without {missing}"
            );
        }
        let mut wrong_aud = full.clone();
        wrong_aud["aud"] = "other".into();
        assert!(k.verify(&sign(wrong_aud, Algorithm::HS256)).is_err());
        let mut expired = full.clone();
        expired["exp"] = (now - 120).into();
        assert!(k.verify(&sign(expired, Algorithm::HS256)).is_err());
        assert!(k.verify(&sign(full, Algorithm::HS512)).is_err());
    }
}
