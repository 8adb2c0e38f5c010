//! Fixtures for the reconciler's unit tests.

use chrono::Utc;
use std::collections::BTreeMap;

use crate::model::Agent;
use crate::orchestrator::ObservedContainer;
use crate::status::{DesiredState, Status};

/// An agent row in `status`, desired running.
pub fn agent(status: Status) -> Agent {
    let now = Utc::now();
    Agent {
        id: "a1".into(),
        user_id: "u1".into(),
        name: "Agent".into(),
        slug: "agent".into(),
        agent_name: "Agent".into(),
        user_name: None,
        timezone: "UTC".into(),
        communication_style: None,
        container_id: None,
        container_port: None,
        status,
        provider: "openai".into(),
        provider_url: None,
        model: "gpt-4o-mini".into(),
        temperature: 0.7,
        memory_backend: "sqlite".into(),
        auto_save: "true".into(),
        encrypted_token: None,
        encrypted_api_key: None,
        encrypted_channels: None,
        subdomain: None,
        memory_mb: None,
        cpu_percent: None,
        last_health_at: None,
        desired_state: DesiredState::Running,
        attempts: 0,
        next_attempt_at: None,
        last_error: None,
        spec_hash: None,
        image: "zcaas/agent-runtime:latest".into(),
        memory_limit_mb: 256,
        nano_cpus: 500_000_000,
        ever_running: false,
        paired_started_at: None,
        config_generation: 0,
        deployed_generation: None,
        channel_health: None,
        created_at: now,
        updated_at: now,
        network: None,
    }
}

/// A container of agent `a1`, running or exited.
pub fn container(running: bool) -> ObservedContainer {
    ObservedContainer {
        id: "c1".into(),
        name: "zeroclaw-agent".into(),
        labels: BTreeMap::new(),
        agent_id: Some("a1".into()),
        spec_hash: None,
        installation: None,
        created_at: Some(Utc::now()),
        state: if running { "running" } else { "exited" }.into(),
        running,
        started_at: Some(Utc::now()),
        finished_at: if running { None } else { Some(Utc::now()) },
        exit_code: if running { None } else { Some(0) },
        oom_killed: false,
        restart_count: 0,
        host_port: Some(40001),
        ip_addresses: BTreeMap::new(),
        node: None,
        status_message: None,
    }
}
