//! The one-time pairing code and the `POST /pair` exchange.
//!
//! At start, when pairing is required and no token is held, a 6-digit code is drawn from the
//! OS CSPRNG (uniform over 000000–999999 by rejection sampling, so no modulo bias) and printed
//! by [`banner`]. A client that presents it in `X-Pairing-Code` gets a fresh bearer token; the
//! code is then consumed. Codes are compared in constant time; failures feed the [`Lockout`].

use std::net::IpAddr;
use std::sync::Mutex;

use rand::distributions::{Distribution, Uniform};
use rand::rngs::OsRng;
use rand::{CryptoRng, Rng};
use subtle::ConstantTimeEq;

use crate::lockout::Lockout;
use crate::tokens::{PersistError, TokenStore};

/// Draws a code: six decimal digits, uniform over 10^6 values.
pub fn generate_code<R: Rng + CryptoRng>(rng: &mut R) -> String {
    // `Uniform` rejects samples outside the largest multiple of the range, so every code is
    // equally likely.
    let n: u32 = Uniform::new(0u32, 1_000_000).sample(rng);
    format!("{n:06}")
}

/// A code from the OS CSPRNG.
pub fn new_code() -> String {
    generate_code(&mut OsRng)
}

/// The lines printed to stdout at start, exactly the upstream shape, so that both
/// `X-Pairing-Code:\s*(\d{6})` and `│\s+(\d{6})\s+│` match one line each.
pub fn banner(code: &str) -> String {
    format!(
        "  🔐 PAIRING REQUIRED — use this one-time code:\n\
         \x20    ┌──────────────┐\n\
         \x20    │  {code}  │\n\
         \x20    └──────────────┘\n\
         \x20    Send: POST /pair with header X-Pairing-Code: {code}\n"
    )
}

/// What a pairing attempt came to.
#[derive(Debug)]
pub enum PairOutcome {
    /// Paired: the new token, and whether its hash was persisted.
    Paired {
        /// `zc_` + 64 hex; shown once.
        token: String,
        /// Outcome of writing the state file (see [`TokenStore::issue`]).
        persisted: Result<bool, PersistError>,
    },
    /// Wrong, missing or already used code (403).
    Invalid {
        /// This failure was the one that locked the client out (log it once, here).
        lockout_started: bool,
    },
    /// The client is locked out; seconds left (429).
    LockedOut(u64),
    /// `require_pairing = false` (403).
    Disabled,
}

/// The pairing state of one gateway: the current code, the tokens and the lockout.
#[derive(Debug)]
pub struct PairingGuard {
    require_pairing: bool,
    code: Mutex<Option<String>>,
    /// Accepted tokens.
    pub tokens: TokenStore,
    lockout: Lockout,
}

impl PairingGuard {
    /// Builds the guard; draws a code when pairing is required and `tokens` is empty.
    pub fn new(require_pairing: bool, tokens: TokenStore, lockout: Lockout) -> Self {
        let code = (require_pairing && tokens.is_empty()).then(new_code);
        Self {
            require_pairing,
            code: Mutex::new(code),
            tokens,
            lockout,
        }
    }

    /// Whether pairing is required at all.
    pub fn require_pairing(&self) -> bool {
        self.require_pairing
    }

    /// The unused code, if any.
    pub fn current_code(&self) -> Option<String> {
        self.code.lock().ok().and_then(|c| c.clone())
    }

    /// Whether at least one token is held.
    pub fn is_paired(&self) -> bool {
        !self.tokens.is_empty()
    }

    /// Whether a request with this bearer token may pass (always, without pairing).
    pub fn authorize(&self, bearer: Option<&str>) -> bool {
        !self.require_pairing || bearer.is_some_and(|t| self.tokens.verify(t))
    }

    /// One `POST /pair` attempt from `client` presenting `code`.
    pub fn try_pair(&self, client: IpAddr, code: Option<&str>) -> PairOutcome {
        if !self.require_pairing {
            return PairOutcome::Disabled;
        }
        if let Err(secs) = self.lockout.check(client) {
            return PairOutcome::LockedOut(secs);
        }
        let presented = code.map(str::trim).unwrap_or_default();
        let matched = {
            let Ok(mut current) = self.code.lock() else {
                return PairOutcome::Invalid {
                    lockout_started: false,
                };
            };
            let ok = current
                .as_deref()
                .is_some_and(|c| bool::from(c.as_bytes().ct_eq(presented.as_bytes())));
            if ok {
                // One-time: consumed under the same lock that compared it.
                *current = None;
            }
            ok
        };
        if !matched {
            let lockout_started = self.lockout.record_failure(client);
            return PairOutcome::Invalid { lockout_started };
        }
        self.lockout.record_success(client);
        let (token, persisted) = self.tokens.issue();
        PairOutcome::Paired { token, persisted }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::SystemClock;
    use rand::SeedableRng;
    use std::sync::Arc;

    const BOX_RE: &str = r"│\s+(\d{6})\s+│";
    const HEADER_RE: &str = r"X-Pairing-Code:\s*(\d{6})";

    #[test]
    fn codes_are_six_digits_and_spread_evenly() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut first_digit = [0u32; 10];
        let mut last_digit = [0u32; 10];
        let n = 100_000;
        for _ in 0..n {
            let c = generate_code(&mut rng);
            assert_eq!(c.len(), 6);
            assert!(c.bytes().all(|b| b.is_ascii_digit()), "{c}");
            first_digit[usize::from(c.as_bytes()[0] - b'0')] += 1;
            last_digit[usize::from(c.as_bytes()[5] - b'0')] += 1;
        }
        // Each digit expects 10 000; a fair draw stays well within ±5 %.
        for counts in [first_digit, last_digit] {
            for c in counts {
                assert!((9_500..=10_500).contains(&c), "{counts:?}");
            }
        }
        // Leading zeros are kept (e.g. 000042).
        assert_eq!(format!("{:06}", 42), "000042");
        let os = new_code();
        assert!(
            os.len() == 6 && os.bytes().all(|b| b.is_ascii_digit()),
            "{os}"
        );
    }

    #[test]
    fn banner_matches_both_control_plane_regexes_on_one_line_each() {
        let code = "012345";
        let text = banner(code);
        for re in [BOX_RE, HEADER_RE] {
            let re = regex::Regex::new(re).expect("regex");
            let hits: Vec<_> = text.lines().filter_map(|l| re.captures(l)).collect();
            assert_eq!(hits.len(), 1, "{re} in\n{text}");
            assert_eq!(&hits[0][1], code);
        }
    }

    fn guard(require: bool) -> PairingGuard {
        PairingGuard::new(
            require,
            TokenStore::new(&[], Vec::new(), None),
            Lockout::new(Arc::new(SystemClock)),
        )
    }

    #[test]
    fn code_is_single_use_and_lockout_applies() {
        let g = guard(true);
        let ip: IpAddr = "127.0.0.1".parse().expect("ip");
        let code = g.current_code().expect("code drawn");
        assert!(!g.is_paired());
        assert!(matches!(
            g.try_pair(ip, Some("000000x")),
            PairOutcome::Invalid { .. }
        ));
        assert!(matches!(g.try_pair(ip, None), PairOutcome::Invalid { .. }));
        let PairOutcome::Paired { token, .. } = g.try_pair(ip, Some(&code)) else {
            panic!("should pair");
        };
        assert!(g.is_paired() && g.authorize(Some(&token)));
        assert!(!g.authorize(None) && !g.authorize(Some("zc_nope")));
        assert_eq!(g.current_code(), None);
        assert!(matches!(
            g.try_pair(ip, Some(&code)),
            PairOutcome::Invalid { .. }
        ));
    }

    #[test]
    fn only_the_failure_that_locks_reports_it() {
        let g = guard(true);
        let ip: IpAddr = "192.0.2.1".parse().expect("ip");
        let outcomes: Vec<_> = (0..20).map(|_| g.try_pair(ip, Some("bad"))).collect();
        let started: Vec<usize> = outcomes
            .iter()
            .enumerate()
            .filter(|(_, o)| {
                matches!(
                    o,
                    PairOutcome::Invalid {
                        lockout_started: true
                    }
                )
            })
            .map(|(i, _)| i + 1)
            .collect();
        assert_eq!(started, [5], "only the 5th attempt starts the lock");
        assert!(outcomes[5..]
            .iter()
            .all(|o| matches!(o, PairOutcome::LockedOut(_))));
    }

    #[test]
    fn no_code_when_a_token_is_held_or_pairing_is_off() {
        let held = PairingGuard::new(
            true,
            TokenStore::new(&[crate::tokens::hash_token("zc_x")], Vec::new(), None),
            Lockout::new(Arc::new(SystemClock)),
        );
        assert_eq!(held.current_code(), None);
        let off = guard(false);
        assert_eq!(off.current_code(), None);
        assert!(off.authorize(None));
        let ip: IpAddr = "127.0.0.1".parse().expect("ip");
        assert!(matches!(
            off.try_pair(ip, Some("123456")),
            PairOutcome::Disabled
        ));
    }
}
