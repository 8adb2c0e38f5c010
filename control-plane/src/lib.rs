//! zcaas — the control plane that hosts one ZeroClaw-compatible agent container
//! per agent: it deploys, pairs, re-pairs and reconciles them on Docker, and
//! serves the user, admin and metrics APIs.
//!
//! Map (see ARCHITECTURE.md): [`app`] wires everything; [`api`] is the HTTP
//! surface; [`db`] the store; [`reconciler`] drives each agent's desired state
//! into the engine through [`orchestrator`] (Docker: [`docker`]) and speaks the agent protocol through
//! [`gateway`], driving each image as its [`runtime_profile`] says (command,
//! config dialect of [`agent_files`]); [`secrets`] encrypts what must stay secret.
#![warn(clippy::unwrap_used)]

pub mod addressing;
pub mod agent_files;
pub mod api;
pub mod app;
pub mod auth;
pub mod channel_health;
pub mod cli;
pub mod config;
pub mod docker;
pub mod error;
pub mod events;
pub mod feed;
pub mod gateway;
pub mod gc;
pub mod metrics;
pub mod model;
pub mod orchestrator;
pub mod reconciler;
pub mod runtime_profile;
pub mod secrets;
pub mod status;
pub mod store;
pub mod validation;
