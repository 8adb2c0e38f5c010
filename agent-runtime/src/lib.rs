//! agent-runtime: a ZeroClaw-compatible agent gateway (DESIGN §1).
//!
//! One process per agent: it reads `config.toml` and the environment ([`config`]), prints a
//! one-time pairing code ([`pairing`]), exchanges it for a bearer token ([`tokens`],
//! [`lockout`]), and answers `/webhook` by sending the persona ([`persona`]), recalled memory
//! ([`memory`]) and the message to an LLM ([`providers`]) — one [`turn`], which the Telegram,
//! Discord and Slack clients ([`channels`]) run too. [`http`] is the HTTP surface,
//! [`app::App`] ties it together on a listener, [`cli`] holds the commands (`gateway`, its alias
//! `daemon`, `status`).
//!
//! Architecture invariant: no API key, bot token or bearer token is ever written to a log
//! line, a response body or stdout; only SHA-256 digests of bearer tokens are stored.

#![warn(clippy::unwrap_used)]
#![warn(missing_docs)]

pub mod app;
pub mod channels;
pub mod cli;
pub mod clock;
pub mod config;
pub mod health;
pub mod healthcheck;
pub mod http;
pub mod idempotency;
pub mod lockout;
pub mod memory;
pub mod metrics;
pub mod pairing;
pub mod persona;
pub mod providers;
pub mod ratelimit;
pub mod secret;
pub mod tokens;
pub mod turn;

pub use app::App;
pub use config::Config;
