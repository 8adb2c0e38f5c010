//! The component registry behind `GET /health`.
//!
//! Components (`gateway`, `provider:<name>`, `channel:<name>`) carry a status
//! (`starting|ok|error`), timestamps, the last error (already scrubbed of secrets by the
//! caller) and a restart count. [`Health::snapshot`] renders the upstream JSON shape.

use std::collections::BTreeMap;
use std::sync::RwLock;
use std::time::Instant;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Value};

/// The state of one component.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Registered, not yet proven to work.
    Starting,
    /// Last operation succeeded.
    Ok,
    /// Last operation failed.
    Error,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::Ok => "ok",
            Self::Error => "error",
        }
    }
}

#[derive(Debug, Clone)]
struct Component {
    status: Status,
    updated_at: DateTime<Utc>,
    last_ok: Option<DateTime<Utc>>,
    last_error: Option<String>,
    restart_count: u64,
}

/// Process-wide health: start time, pid and components.
#[derive(Debug)]
pub struct Health {
    started: Instant,
    pid: u32,
    components: RwLock<BTreeMap<String, Component>>,
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

impl Default for Health {
    fn default() -> Self {
        Self::new()
    }
}

impl Health {
    /// An empty registry; uptime counts from now.
    pub fn new() -> Self {
        Self {
            started: Instant::now(),
            pid: std::process::id(),
            components: RwLock::new(BTreeMap::new()),
        }
    }

    /// Seconds since start.
    pub fn uptime_seconds(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    fn update(&self, name: &str, f: impl FnOnce(&mut Component, DateTime<Utc>)) {
        let now = Utc::now();
        if let Ok(mut map) = self.components.write() {
            let c = map.entry(name.to_owned()).or_insert(Component {
                status: Status::Starting,
                updated_at: now,
                last_ok: None,
                last_error: None,
                restart_count: 0,
            });
            f(c, now);
            c.updated_at = now;
        }
    }

    /// Adds (or resets the status of) a component.
    pub fn register(&self, name: &str, status: Status) {
        self.update(name, |c, now| {
            c.status = status;
            if status == Status::Ok {
                c.last_ok = Some(now);
            }
        });
    }

    /// Records a success.
    pub fn mark_ok(&self, name: &str) {
        self.register(name, Status::Ok);
    }

    /// Records a failure with its (secret-free) message.
    pub fn mark_error(&self, name: &str, error: &str) {
        self.update(name, |c, _| {
            c.status = Status::Error;
            c.last_error = Some(error.to_owned());
        });
    }

    /// Counts one more restart of `name` (a reconnect, a new attempt after a failure).
    pub fn mark_restart(&self, name: &str) {
        self.update(name, |c, _| c.restart_count += 1);
    }

    /// The status of `name`, if registered.
    pub fn status(&self, name: &str) -> Option<Status> {
        self.components
            .read()
            .ok()
            .and_then(|m| m.get(name).map(|c| c.status))
    }

    /// The `/health` body.
    pub fn snapshot(&self, paired: bool, require_pairing: bool) -> Value {
        let components: serde_json::Map<String, Value> = self
            .components
            .read()
            .map(|m| {
                m.iter()
                    .map(|(name, c)| {
                        (
                            name.clone(),
                            json!({
                                "status": c.status.as_str(),
                                "updated_at": rfc3339(c.updated_at),
                                "last_ok": c.last_ok.map(rfc3339),
                                "last_error": c.last_error,
                                "restart_count": c.restart_count,
                            }),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        json!({
            "status": "ok",
            "paired": paired,
            "require_pairing": require_pairing,
            "runtime": {
                "pid": self.pid,
                "updated_at": rfc3339(Utc::now()),
                "uptime_seconds": self.uptime_seconds(),
                "components": components,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components_move_between_states() {
        let h = Health::new();
        h.register("gateway", Status::Ok);
        h.register("provider:openai", Status::Starting);
        h.mark_error("provider:openai", "HTTP 500");
        let s = h.snapshot(false, true);
        assert_eq!(s["status"], "ok");
        assert_eq!(s["paired"], false);
        assert_eq!(s["require_pairing"], true);
        let p = &s["runtime"]["components"]["provider:openai"];
        assert_eq!(p["status"], "error");
        assert_eq!(p["last_error"], "HTTP 500");
        assert!(p["last_ok"].is_null());
        assert_eq!(p["restart_count"], 0);
        h.mark_ok("provider:openai");
        let s = h.snapshot(true, true);
        let p = &s["runtime"]["components"]["provider:openai"];
        assert_eq!(p["status"], "ok");
        assert!(p["last_ok"].is_string());
        assert_eq!(p["last_error"], "HTTP 500", "last_error is kept as history");
        assert_eq!(s["runtime"]["components"]["gateway"]["status"], "ok");
        assert_eq!(
            u64::from(std::process::id()),
            s["runtime"]["pid"].as_u64().unwrap_or(0)
        );
    }
}
