//! The service's log subscriber (issue 5, secrets in logs): whatever
//! `RUST_LOG` asks for, bollard's TRACE events are dropped, because at TRACE
//! it prints request bodies, and the archive injected into an agent's volume
//! holds its `config.toml` with the LLM key; everything else follows
//! `RUST_LOG`, in both output formats. The end-to-end proof that nothing secret
//! is logged, with this filter at TRACE, is `tests/tests/security.rs`.

use zcaas::cli::log_subscriber;
use zcaas_test_support::LogBuffer;

/// What the service's subscriber for `spec` prints of a few events.
fn printed(spec: Option<&str>) -> String {
    let buf = LogBuffer::default();
    let mut text = String::new();
    for json in [false, true] {
        text.push_str(&printed_as(spec, json, &buf));
    }
    text
}

fn printed_as(spec: Option<&str>, json: bool, buf: &LogBuffer) -> String {
    buf.clear();
    let subscriber = log_subscriber(spec, json, buf.clone());
    tracing::subscriber::with_default(subscriber, || {
        tracing::trace!(target: "bollard::docker", "request body: api_key = sk-secret");
        tracing::trace!(target: "bollard::read", "payload: api_key = sk-secret");
        tracing::trace!(target: "bollard", "more: api_key = sk-secret");
        tracing::debug!(target: "bollard::docker", "bollard-debug-line");
        tracing::trace!(target: "zcaas::reconciler", "zcaas-trace-line");
        tracing::info!(target: "zcaas::app", "zcaas-info-line");
    });
    buf.text()
}

#[test]
fn bollard_bodies_are_never_printed() {
    for spec in [
        "trace",
        "bollard=trace",
        "bollard::docker=trace",
        "bollard::read=trace,bollard=trace",
        "info,bollard=trace,zcaas=trace",
        "debug",
    ] {
        let text = printed(Some(spec));
        assert!(!text.contains("sk-secret"), "{spec}: {text}");
        // The cap is a cap, not an off switch.
        assert!(text.contains("bollard-debug-line"), "{spec}: {text}");
    }
    // The rest follows the spec.
    assert!(printed(Some("trace")).contains("zcaas-trace-line"));
    assert!(printed(Some("info,bollard=trace,zcaas=trace")).contains("zcaas-trace-line"));
    assert!(!printed(Some("bollard=trace")).contains("zcaas-info-line"));
    // Unset or invalid: info.
    for spec in [None, Some("not a [valid filter")] {
        let text = printed(spec);
        assert!(
            text.contains("zcaas-info-line") && !text.contains("bollard-debug-line"),
            "{text}"
        );
    }
}
