//! Prometheus metrics served at `GET /metrics` (OpenMetrics text).
//!
//! The six upstream series:
//! - `zeroclaw_llm_requests_total{provider,model,success}` — provider calls;
//! - `zeroclaw_request_latency_seconds{provider}` — histogram of provider call latency, seconds;
//! - `zeroclaw_errors_total{component}` — errors by component (`provider`, `memory`);
//! - `zeroclaw_active_sessions` — `/webhook` requests in flight;
//! - `zeroclaw_tokens_input_total{provider}` / `zeroclaw_tokens_output_total{provider}` — token
//!   usage reported by the provider.
//!
//! The configured provider's label sets are created at start so every series is present (at 0)
//! before the first request.

use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Content type of [`Metrics::render`].
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LlmLabels {
    provider: String,
    model: String,
    success: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProviderLabel {
    provider: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ComponentLabel {
    component: String,
}

type HistogramFamily = Family<ProviderLabel, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 5 ms … ~82 s.
    Histogram::new(exponential_buckets(0.005, 2.0, 15))
}

/// All metrics of one process.
pub struct Metrics {
    registry: Registry,
    llm_requests: Family<LlmLabels, Counter>,
    latency: HistogramFamily,
    errors: Family<ComponentLabel, Counter>,
    active_sessions: Gauge,
    tokens_in: Family<ProviderLabel, Counter>,
    tokens_out: Family<ProviderLabel, Counter>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// Registers the series; pre-creates the label sets of `provider`/`model`.
    pub fn new(provider: &str, model: &str) -> Self {
        let mut registry = Registry::default();
        let llm_requests = Family::<LlmLabels, Counter>::default();
        let latency: HistogramFamily = Family::new_with_constructor(latency_histogram);
        let errors = Family::<ComponentLabel, Counter>::default();
        let active_sessions = Gauge::default();
        let tokens_in = Family::<ProviderLabel, Counter>::default();
        let tokens_out = Family::<ProviderLabel, Counter>::default();
        // prometheus-client appends `_total` to counters.
        registry.register(
            "zeroclaw_llm_requests",
            "LLM provider requests",
            llm_requests.clone(),
        );
        registry.register(
            "zeroclaw_request_latency_seconds",
            "LLM provider request latency in seconds",
            latency.clone(),
        );
        registry.register("zeroclaw_errors", "Errors by component", errors.clone());
        registry.register(
            "zeroclaw_active_sessions",
            "Webhook requests in flight",
            active_sessions.clone(),
        );
        registry.register(
            "zeroclaw_tokens_input",
            "Prompt tokens reported by the provider",
            tokens_in.clone(),
        );
        registry.register(
            "zeroclaw_tokens_output",
            "Completion tokens reported by the provider",
            tokens_out.clone(),
        );
        let m = Self {
            registry,
            llm_requests,
            latency,
            errors,
            active_sessions,
            tokens_in,
            tokens_out,
        };
        for success in ["true", "false"] {
            let _ = m.llm_requests.get_or_create(&LlmLabels {
                provider: provider.to_owned(),
                model: model.to_owned(),
                success: success.to_owned(),
            });
        }
        let p = ProviderLabel {
            provider: provider.to_owned(),
        };
        let _ = m.latency.get_or_create(&p);
        let _ = m.tokens_in.get_or_create(&p);
        let _ = m.tokens_out.get_or_create(&p);
        let _ = m.errors.get_or_create(&ComponentLabel {
            component: "provider".into(),
        });
        m
    }

    /// Records one provider call.
    pub fn record_llm(
        &self,
        provider: &str,
        model: &str,
        success: bool,
        latency: Duration,
        tokens: (Option<u64>, Option<u64>),
    ) {
        self.llm_requests
            .get_or_create(&LlmLabels {
                provider: provider.to_owned(),
                model: model.to_owned(),
                success: success.to_string(),
            })
            .inc();
        let p = ProviderLabel {
            provider: provider.to_owned(),
        };
        self.latency
            .get_or_create(&p)
            .observe(latency.as_secs_f64());
        if let Some(n) = tokens.0 {
            self.tokens_in.get_or_create(&p).inc_by(n);
        }
        if let Some(n) = tokens.1 {
            self.tokens_out.get_or_create(&p).inc_by(n);
        }
        if !success {
            self.record_error("provider");
        }
    }

    /// Counts an error of `component`.
    pub fn record_error(&self, component: &str) {
        self.errors
            .get_or_create(&ComponentLabel {
                component: component.to_owned(),
            })
            .inc();
    }

    /// Marks a `/webhook` request in flight until the guard drops.
    pub fn session(&self) -> SessionGuard {
        self.active_sessions.inc();
        SessionGuard(self.active_sessions.clone())
    }

    /// OpenMetrics text of every series.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// Decrements `zeroclaw_active_sessions` on drop.
#[derive(Debug)]
pub struct SessionGuard(Gauge);

impl Drop for SessionGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_six_series_are_present_from_the_start() {
        let m = Metrics::new("openai", "gpt-4o-mini");
        let text = m.render();
        for name in [
            "zeroclaw_llm_requests_total",
            "zeroclaw_request_latency_seconds_bucket",
            "zeroclaw_errors_total",
            "zeroclaw_active_sessions",
            "zeroclaw_tokens_input_total",
            "zeroclaw_tokens_output_total",
        ] {
            assert!(text.contains(name), "{name} missing in\n{text}");
        }
        assert!(text.trim_end().ends_with("# EOF"));
    }

    #[test]
    fn records_calls_errors_and_sessions() {
        let m = Metrics::new("openai", "m");
        m.record_llm(
            "openai",
            "m",
            true,
            Duration::from_millis(20),
            (Some(7), Some(3)),
        );
        m.record_llm("openai", "m", false, Duration::from_millis(5), (None, None));
        let g = m.session();
        let text = m.render();
        assert!(text.contains(
            "zeroclaw_llm_requests_total{provider=\"openai\",model=\"m\",success=\"true\"} 1"
        ));
        assert!(text.contains(
            "zeroclaw_llm_requests_total{provider=\"openai\",model=\"m\",success=\"false\"} 1"
        ));
        assert!(text.contains("zeroclaw_errors_total{component=\"provider\"} 1"));
        assert!(text.contains("zeroclaw_tokens_input_total{provider=\"openai\"} 7"));
        assert!(text.contains("zeroclaw_tokens_output_total{provider=\"openai\"} 3"));
        assert!(text.contains("zeroclaw_request_latency_seconds_count{provider=\"openai\"} 2"));
        assert!(text.contains("zeroclaw_active_sessions 1"));
        drop(g);
        assert!(m.render().contains("zeroclaw_active_sessions 0"));
    }
}
