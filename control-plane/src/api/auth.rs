//! Accounts: `POST /api/auth/register`, `POST /api/auth/login`, `GET /api/me`.
//!
//! Both anonymous routes cost an argon2 computation, so both are limited
//! before it runs, per key:
//! - login failures per email: after [`MAX_FAILURES`] within
//!   [`FAILURE_WINDOW`] the email is refused with 429 until the window ends,
//!   whatever the password (a guessing limit, not an account lock-out: it
//!   expires on its own, and a successful login clears it);
//! - registrations per client address ([`client_key`]): [`MAX_REGISTRATIONS`]
//!   within [`REGISTRATION_WINDOW`], then 429.
//!
//! Each limit is kept twice. In this process, one [`WindowLimiter`] per
//! route counts an attempt when it begins, under its lock, so 200 parallel
//! guesses on one replica cannot all pass the check before the first is
//! counted. In the store ([`crate::store::LimitStore`], keys `login:<email>`
//! and `register:<address>`), a counter shared by every replica: consulted
//! before any work, and incremented (one atomic upsert) once a hashing slot
//! is held and before the hash runs, which is refused when the increment
//! goes past the limit; so the limit holds whichever replicas the attempts
//! land on. Past the limit nothing is looked up or hashed. The address is
//! the TCP peer's, or, when the peer is one of `trusted_proxies`, the client
//! it names in `X-Forwarded-For` ([`client_ip`]).

use std::collections::HashMap;
use std::hash::Hash;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::Router;
use serde::{Deserialize, Serialize};

use super::extract::Json;
use crate::api::AppState;
use crate::api::AuthUser;
use crate::auth::hash_slot;
use crate::error::ApiError;
use crate::model::{Plan, Role};
use crate::secrets::Redacted;
use crate::store::users::{CreateUserError, NewUser};
use crate::validation;

/// Failed logins per email allowed within [`FAILURE_WINDOW`].
pub const MAX_FAILURES: u32 = 10;
/// The window failed logins are counted in.
pub const FAILURE_WINDOW: Duration = Duration::from_secs(15 * 60);
/// Accounts one client address may register within [`REGISTRATION_WINDOW`].
pub const MAX_REGISTRATIONS: u32 = 10;
/// The window registrations are counted in.
pub const REGISTRATION_WINDOW: Duration = Duration::from_secs(60 * 60);
/// Entries kept before expired ones are swept (then: twice what is left).
const SWEEP_AT: usize = 10_000;

/// Failed-login counters, per lower-cased email.
pub type LoginLimiter = WindowLimiter<String>;
/// Registration counters, per client address (see [`client_key`]).
pub type RegistrationLimiter = WindowLimiter<IpAddr>;

impl Default for LoginLimiter {
    /// [`MAX_FAILURES`] per [`FAILURE_WINDOW`].
    fn default() -> Self {
        WindowLimiter::new(MAX_FAILURES, FAILURE_WINDOW)
    }
}

impl Default for RegistrationLimiter {
    /// [`MAX_REGISTRATIONS`] per [`REGISTRATION_WINDOW`].
    fn default() -> Self {
        WindowLimiter::new(MAX_REGISTRATIONS, REGISTRATION_WINDOW)
    }
}

/// At most `max` attempts per key within a fixed window that starts at the
/// key's first attempt. [`WindowLimiter::try_begin`] counts the attempt at
/// once; it is given back only if it is dropped before
/// [`Attempt::commit`], i.e. when the costly work never started (no hashing
/// slot, a database error, the client went away), so only attempts that
/// were actually checked use up the limit, and keys of abandoned attempts do
/// not pile up.
#[derive(Debug)]
pub struct WindowLimiter<K> {
    max: u32,
    window: Duration,
    state: Mutex<Windows<K>>,
}

#[derive(Debug)]
struct Windows<K> {
    entries: HashMap<K, Window>,
    /// Sweep expired entries when there are this many.
    sweep_at: usize,
    /// Id of the next window opened (tells a key's windows apart).
    next_id: u64,
}

#[derive(Debug, Clone, Copy)]
struct Window {
    id: u64,
    count: u32,
    start: Instant,
}

impl<K: Eq + Hash + Clone> WindowLimiter<K> {
    /// `max` attempts per key per `window`.
    pub fn new(max: u32, window: Duration) -> Self {
        WindowLimiter {
            max,
            window,
            state: Mutex::new(Windows {
                entries: HashMap::new(),
                sweep_at: SWEEP_AT,
                next_id: 0,
            }),
        }
    }

    /// Counts an attempt for `key`, or `Err(seconds until the window
    /// ends)` when `key` is at the limit (attempts still in flight count).
    pub fn try_begin(&self, key: K) -> Result<Attempt<'_, K>, u64> {
        self.try_begin_at(key, Instant::now())
    }

    fn try_begin_at(&self, key: K, now: Instant) -> Result<Attempt<'_, K>, u64> {
        let mut state = self.lock();
        if state.entries.len() >= state.sweep_at {
            state
                .entries
                .retain(|_, w| now.duration_since(w.start) < self.window);
            state.sweep_at = (2 * state.entries.len()).max(SWEEP_AT);
        }
        let id = state.next_id;
        let fresh = Window {
            id,
            count: 0,
            start: now,
        };
        let window = state.entries.entry(key.clone()).or_insert(fresh);
        if now.duration_since(window.start) >= self.window {
            *window = fresh;
        }
        if window.count >= self.max {
            let left = self.window.saturating_sub(now.duration_since(window.start));
            return Err((left.as_secs() + u64::from(left.subsec_nanos() > 0)).max(1));
        }
        window.count += 1;
        let window_id = window.id;
        if window_id == id {
            state.next_id += 1;
        }
        Ok(Attempt {
            limiter: self,
            key,
            window_id,
            committed: false,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Windows<K>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Gives back one attempt of `key`'s window `window_id` (if that window
    /// is still the key's: a success or a new window has reset it since).
    fn give_back(&self, key: &K, window_id: u64) {
        let mut state = self.lock();
        let emptied = match state.entries.get_mut(key) {
            Some(w) if w.id == window_id => {
                w.count = w.count.saturating_sub(1);
                w.count == 0
            }
            _ => false,
        };
        if emptied {
            state.entries.remove(key);
        }
    }
}

/// One counted attempt (see [`WindowLimiter`]): given back on drop unless
/// committed.
#[derive(Debug)]
pub struct Attempt<'a, K: Eq + Hash + Clone> {
    limiter: &'a WindowLimiter<K>,
    key: K,
    window_id: u64,
    committed: bool,
}

impl<K: Eq + Hash + Clone> Attempt<'_, K> {
    /// The costly work starts now: from here the attempt counts, whatever
    /// happens next.
    pub fn commit(&mut self) {
        self.committed = true;
    }

    /// Forgets every attempt of the key (a login that succeeded).
    pub fn clear(mut self) {
        self.committed = true;
        self.limiter.lock().entries.remove(&self.key);
    }
}

impl<K: Eq + Hash + Clone> Drop for Attempt<'_, K> {
    fn drop(&mut self) {
        if !self.committed {
            self.limiter.give_back(&self.key, self.window_id);
        }
    }
}

/// The client of a request whose TCP peer is `peer`: the peer itself, unless
/// it is one of the `trusted` reverse proxies; then the right-most address
/// of `X-Forwarded-For` (all its header lines, in order) that is not a
/// trusted proxy — the one the outermost trusted proxy saw. Entries to the
/// left of it were written by the client and are never believed. A trusted
/// peer that sent no usable header is the client itself. (The
/// right-most-untrusted rule of nginx's `real_ip_recursive` and Traefik's
/// own `forwardedHeaders.trustedIPs`.)
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[ipnet::IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(&ip.to_canonical()));
    if !is_trusted(&peer) {
        return peer;
    }
    let forwarded: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    for entry in forwarded.iter().rev() {
        match entry.parse::<IpAddr>() {
            Ok(ip) if is_trusted(&ip) => continue,
            Ok(ip) => return ip,
            // Garbage where a trusted proxy should have written an address:
            // the proxy chain is not what we were told; count the peer.
            Err(_) => return peer,
        }
    }
    peer
}

/// The key registrations are counted under: an IPv4 address (IPv4-mapped
/// IPv6 included) as is, an IPv6 address by its /64, since one host or one
/// home network is usually given a whole /64.
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !(u128::MAX >> 64))),
        v4 => v4,
    }
}

/// One route's limit in the store, shared by every replica.
struct SharedLimit {
    key: String,
    max: u32,
    window: Duration,
}

impl SharedLimit {
    /// 429 (with the seconds until the window ends) when the key's window
    /// is full.
    async fn check(&self, state: &AppState) -> Result<(), ApiError> {
        let (count, left) = state.store.limits().count(&self.key).await?;
        if count >= self.max {
            return Err(ApiError::TooManyRequests {
                retry_after: left.max(1),
            });
        }
        Ok(())
    }

    /// Counts this attempt (the costly work is about to start); 429 when
    /// attempts on other replicas filled the window meanwhile.
    async fn hit(&self, state: &AppState) -> Result<(), ApiError> {
        let count = state.store.limits().hit(&self.key, self.window).await?;
        if count > self.max {
            let (_, left) = state.store.limits().count(&self.key).await?;
            return Err(ApiError::TooManyRequests {
                retry_after: left.max(1),
            });
        }
        Ok(())
    }
}

/// The routes of this module.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/auth/register", post(register))
        .route("/api/auth/login", post(login))
        .route("/api/me", get(me))
}

/// `{"email","password"}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    pub email: String,
    pub password: Redacted<String>,
}

/// `{"token"}`: a JWT for `Authorization: Bearer`.
#[derive(Serialize)]
pub struct TokenReply {
    pub token: String,
}

/// `POST /api/auth/register` → 201 `{"token"}`; 422 on a bad email or
/// password, 409 (field `email`) if the email is registered; 429 after
/// [`MAX_REGISTRATIONS`] from the caller's address (valid requests count,
/// 409s included: each cost a hash); 503 when hashing is busy.
async fn register(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Json(body): Json<Credentials>,
) -> Result<(StatusCode, axum::Json<TokenReply>), ApiError> {
    let email = validation::email(&body.email)?;
    validation::password(body.password.expose())?;
    let client = client_key(client_ip(
        peer.ip(),
        &headers,
        &state.config.trusted_proxies,
    ));
    let mut attempt = state
        .registration_limiter
        .try_begin(client)
        .map_err(|retry_after| ApiError::TooManyRequests { retry_after })?;
    let shared = SharedLimit {
        key: format!("register:{client}"),
        max: MAX_REGISTRATIONS,
        window: REGISTRATION_WINDOW,
    };
    shared.check(&state).await?;
    let slot = hash_slot().await?;
    shared.hit(&state).await?;
    attempt.commit();
    let hash = slot.hash(body.password.0).await?;
    let new = NewUser {
        email: &email,
        password_hash: &hash,
        role: Role::User,
        plan: Plan::Free,
    };
    let user = match state.store.users().create(&new).await {
        Ok(u) => u,
        Err(CreateUserError::EmailTaken) => {
            return Err(ApiError::Conflict {
                message: "email: already registered".into(),
                field: Some("email".into()),
            })
        }
        Err(CreateUserError::Db(e)) => return Err(e.into()),
    };
    tracing::info!(user_id = %user.id, "user registered");
    let token = state
        .jwt
        .issue(&user.id, user.role)
        .map_err(ApiError::internal)?;
    Ok((StatusCode::CREATED, axum::Json(TokenReply { token })))
}

/// `POST /api/auth/login` → 200 `{"token"}`; 401 with one generic message
/// for an unknown email or a wrong password; 429 after too many failures
/// (attempts in flight included); 503 when hashing is busy.
async fn login(
    State(state): State<AppState>,
    Json(body): Json<Credentials>,
) -> Result<axum::Json<TokenReply>, ApiError> {
    const BAD: ApiError = ApiError::Unauthorized("invalid email or password");
    let email = body.email.trim().to_lowercase();
    if email.len() > 254 || body.password.expose().len() > 1024 {
        return Err(BAD);
    }
    let mut attempt = state
        .login_limiter
        .try_begin(email.clone())
        .map_err(|retry_after| ApiError::TooManyRequests { retry_after })?;
    let shared = SharedLimit {
        key: format!("login:{email}"),
        max: MAX_FAILURES,
        window: FAILURE_WINDOW,
    };
    shared.check(&state).await?;
    let user = state.store.users().get_by_email(&email).await?;
    let slot = hash_slot().await?;
    shared.hit(&state).await?;
    attempt.commit();
    state.metrics.password_verifications.inc();
    let ok = slot
        .verify(
            body.password.0,
            user.as_ref().map(|u| u.password_hash.clone()),
        )
        .await;
    match user {
        Some(user) if ok => {
            attempt.clear();
            if let Err(e) = state.store.limits().clear(&shared.key).await {
                tracing::warn!(error = %e, "clearing the login failures of a successful login failed");
            }
            let token = state
                .jwt
                .issue(&user.id, user.role)
                .map_err(ApiError::internal)?;
            Ok(axum::Json(TokenReply { token }))
        }
        // The attempt stays counted as a failure.
        _ => Err(BAD),
    }
}

/// The plan limits shown by `/api/me`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LimitsView {
    /// Null: unlimited.
    pub max_agents: Option<u32>,
    /// CPUs per agent.
    pub cpus: f64,
    /// Memory per agent, MiB.
    pub memory_mb: i64,
}

/// `GET /api/me`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MeView {
    pub id: String,
    pub email: String,
    pub role: Role,
    pub plan: Plan,
    pub limits: LimitsView,
    /// Agents the user has now.
    pub agents: i64,
}

/// `GET /api/me` → 200 with the caller's account, plan limits and agent count.
async fn me(State(state): State<AppState>, user: AuthUser) -> Result<axum::Json<MeView>, ApiError> {
    let limits = state.config.limits(user.plan);
    let agents = state.store.agents().count_for_user(&user.id).await?;
    Ok(axum::Json(MeView {
        id: user.id,
        email: user.email,
        role: user.role,
        plan: user.plan,
        limits: LimitsView {
            max_agents: limits.max_agents,
            cpus: limits.cpus,
            memory_mb: limits.memory_mb,
        },
        agents,
    }))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_client_is_the_right_most_untrusted_forwarded_address() {
        let trusted: Vec<ipnet::IpNet> = vec!["10.9.0.0/24".parse().unwrap()];
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let headers = |lines: &[&str]| {
            let mut h = HeaderMap::new();
            for l in lines {
                h.append("x-forwarded-for", l.parse().unwrap());
            }
            h
        };
        // An untrusted peer is the client, whatever it claims.
        assert_eq!(
            client_ip(ip("203.0.113.7"), &headers(&["198.51.100.1"]), &trusted),
            ip("203.0.113.7")
        );
        // Through a trusted proxy: the address it appended.
        assert_eq!(
            client_ip(ip("10.9.0.2"), &headers(&["198.51.100.1"]), &trusted),
            ip("198.51.100.1")
        );
        // A client-forged prefix is not believed; trusted hops are skipped,
        // over several header lines.
        assert_eq!(
            client_ip(
                ip("10.9.0.2"),
                &headers(&["1.2.3.4, 198.51.100.1", "10.9.0.5"]),
                &trusted
            ),
            ip("198.51.100.1")
        );
        // No header, or garbage where the proxy writes: the peer.
        assert_eq!(
            client_ip(ip("10.9.0.2"), &headers(&[]), &trusted),
            ip("10.9.0.2")
        );
        assert_eq!(
            client_ip(ip("10.9.0.2"), &headers(&["1.2.3.4, junk"]), &trusted),
            ip("10.9.0.2")
        );
        // IPv4-mapped peers match IPv4 ranges; no trusted proxies: the peer.
        assert_eq!(
            client_ip(ip("::ffff:10.9.0.2"), &headers(&["198.51.100.1"]), &trusted),
            ip("198.51.100.1")
        );
        assert_eq!(
            client_ip(ip("10.9.0.2"), &headers(&["198.51.100.1"]), &[]),
            ip("10.9.0.2")
        );
    }

    #[test]
    fn attempts_count_when_they_begin_and_a_success_clears() {
        let l = LoginLimiter::default();
        // Held in flight, they already count: the next one is refused.
        let mut held = Vec::new();
        for _ in 0..MAX_FAILURES {
            let mut a = l.try_begin("a@b".into()).unwrap();
            a.commit();
            held.push(a);
        }
        let retry_after = l.try_begin("a@b".into()).unwrap_err();
        assert!((1..=FAILURE_WINDOW.as_secs()).contains(&retry_after));
        assert!(l.try_begin("c@d".into()).is_ok(), "per key");
        // Finished failures keep counting.
        held.clear();
        assert!(l.try_begin("a@b".into()).is_err());

        // One success among failures clears the key.
        let l = LoginLimiter::default();
        for _ in 1..MAX_FAILURES {
            l.try_begin("a@b".into()).unwrap().commit();
        }
        let mut ok = l.try_begin("a@b".into()).unwrap();
        ok.commit();
        ok.clear();
        for _ in 0..MAX_FAILURES {
            l.try_begin("a@b".into()).unwrap().commit();
        }
        assert!(l.try_begin("a@b".into()).is_err());
    }

    #[test]
    fn uncommitted_attempts_are_given_back() {
        let l = WindowLimiter::<u8>::new(2, Duration::from_secs(60));
        let a = l.try_begin(1).unwrap();
        let mut b = l.try_begin(1).unwrap();
        assert!(l.try_begin(1).is_err());
        drop(a);
        let c = l.try_begin(1).unwrap();
        b.commit();
        drop((b, c));
        let d = l.try_begin(1).unwrap();
        assert!(l.try_begin(1).is_err(), "b counts, d is in flight");
        drop(d);
        // A key whose attempts were all given back is forgotten.
        drop(l.try_begin(2).unwrap());
        assert!(!l.lock().entries.contains_key(&2));
    }

    #[test]
    fn windows_expire_and_late_give_backs_do_not_touch_the_next() {
        let window = Duration::from_secs(60);
        let l = WindowLimiter::<u8>::new(1, window);
        let t0 = Instant::now();
        let stale = l.try_begin_at(1, t0).unwrap();
        assert_eq!(
            l.try_begin_at(1, t0 + Duration::from_millis(1500))
                .unwrap_err(),
            59
        );
        let mut next = l.try_begin_at(1, t0 + window).unwrap();
        next.commit();
        drop(stale);
        assert!(l.try_begin_at(1, t0 + window).is_err());
    }

    #[test]
    fn expired_entries_are_swept() {
        let l = WindowLimiter::<usize>::new(1, Duration::from_secs(1));
        let t0 = Instant::now();
        for k in 0..SWEEP_AT {
            l.try_begin_at(k, t0).unwrap().commit();
        }
        l.try_begin_at(SWEEP_AT, t0 + Duration::from_secs(2))
            .unwrap()
            .commit();
        assert_eq!(l.lock().entries.len(), 1);
    }

    #[test]
    fn ipv6_clients_are_counted_per_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(client_key(a), client_key(b));
        assert_ne!(client_key(a), client_key(c));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(client_key(mapped), "192.0.2.7".parse::<IpAddr>().unwrap());
    }
}
