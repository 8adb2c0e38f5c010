//! Accounts' credentials: argon2id password hashes and HS256 JWTs with `exp`,
//! `iss`, `aud` and `sub` required, and the [`AuthUser`] / [`AdminUser`]
//! extractors that turn a bearer token into a user loaded from the database
//! (so a deleted user's still-unexpired token is refused).

use std::path::Path;
use std::sync::LazyLock;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use serde::{Deserialize, Serialize};

use crate::app::AppState;
use crate::error::ApiError;
use crate::model::{Plan, Role, User};

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
}

/// Hashes `password` with argon2id (default parameters) on the blocking pool.
/// Returns the PHC string to store.
pub async fn hash_password(password: String) -> Result<String, AuthError> {
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| AuthError::Hash(e.to_string()))
    })
    .await
    .map_err(|e| AuthError::Hash(e.to_string()))?
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

/// Checks `password` against a stored PHC hash on the blocking pool; `None`
/// (no such user) verifies against a dummy hash and returns `false`.
pub async fn verify_password(password: String, hash: Option<String>) -> bool {
    tokio::task::spawn_blocking(move || {
        let real = hash.is_some();
        let Some(hash) = hash.or_else(|| DUMMY_HASH.clone()) else {
            return false;
        };
        let Ok(parsed) = PasswordHash::new(&hash) else {
            return false;
        };
        let ok = Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok();
        ok && real
    })
    .await
    .unwrap_or(false)
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

/// The authenticated caller, loaded from the database on every request.
#[derive(Debug, Clone)]
pub struct AuthUser {
    pub id: String,
    pub email: String,
    pub role: Role,
    pub plan: Plan,
}

impl From<User> for AuthUser {
    fn from(u: User) -> Self {
        AuthUser {
            id: u.id,
            email: u.email,
            role: u.role,
            plan: u.plan,
        }
    }
}

impl AuthUser {
    /// Whether the caller is an admin.
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }
}

fn bearer(parts: &Parts) -> Option<&str> {
    let value = parts.headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;

    /// 401 without a valid bearer token or when its user no longer exists.
    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let token = bearer(parts).ok_or(ApiError::Unauthorized("missing bearer token"))?;
        let claims = state
            .jwt
            .verify(token)
            .map_err(|_| ApiError::Unauthorized("invalid or expired token"))?;
        let user = crate::db::users::get_by_id(&state.db, &claims.sub)
            .await?
            .ok_or(ApiError::Unauthorized("invalid or expired token"))?;
        Ok(user.into())
    }
}

/// An authenticated admin; 403 for any other authenticated user.
#[derive(Debug, Clone)]
pub struct AdminUser(pub AuthUser);

impl FromRequestParts<AppState> for AdminUser {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let user = AuthUser::from_request_parts(parts, state).await?;
        if !user.is_admin() {
            return Err(ApiError::Forbidden("admin role required"));
        }
        Ok(AdminUser(user))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn keys() -> JwtKeys {
        JwtKeys::new(&[7u8; 32]).unwrap()
    }

    #[tokio::test]
    async fn passwords_hash_and_verify() {
        let h = hash_password("correct horse".into()).await.unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password("correct horse".into(), Some(h.clone())).await);
        assert!(!verify_password("wrong horse".into(), Some(h)).await);
        assert!(!verify_password("anything".into(), None).await);
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
