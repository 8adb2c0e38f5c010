//! The log capture of this test binary, and the search for secrets in text.
//!
//! The service's own tracing subscriber (`zcaas::cli::log_subscriber`) is
//! installed at TRACE for every target (so DEBUG too; the `log` records of
//! bollard included), writing to memory, before any harness code runs, so
//! the log assertions see everything the control plane would print.

use std::sync::OnceLock;

use zcaas_test_support::LogBuffer;

/// Installs the capturing subscriber (once per process; every test calls
/// this first, so the harness's own `try_init` never wins).
pub(crate) fn capture() -> &'static LogBuffer {
    static CAPTURED: OnceLock<LogBuffer> = OnceLock::new();
    CAPTURED.get_or_init(|| {
        use tracing_subscriber::util::SubscriberInitExt as _;
        let captured = LogBuffer::default();
        // The service's own subscriber (`zcaas::cli::init_tracing`), asked
        // for everything: TRACE, which includes DEBUG.
        zcaas::cli::log_subscriber(Some("trace"), false, captured.clone())
            .try_init()
            .expect("this test binary's subscriber is the first one");
        captured
    })
}

/// The secrets of one test, by name, and the pairing codes its agents printed.
#[derive(Default, Debug)]
pub(crate) struct Secrets {
    values: Vec<(String, String)>,
    /// Pairing codes, searched for as numbers of their own.
    pub(crate) codes: Vec<String>,
}

impl Secrets {
    pub(crate) fn add(&mut self, what: &str, value: impl Into<String>) {
        let value = value.into();
        assert!(value.len() >= 6, "{what}: too short to search for");
        if !self.values.iter().any(|(_, v)| *v == value) {
            self.values.push((what.to_owned(), value));
        }
    }

    /// Fails if any secret is in `text` (`place` names where it came from).
    /// A pairing code counts as a six-digit number of its own (not inside a
    /// longer run of digits, not a timestamp's fraction after a `.`) on a
    /// line that speaks of pairing or codes: six digits alone are too common
    /// in DEBUG output (process ids, byte counts) to mean anything.
    pub(crate) fn assert_absent(&self, place: &str, text: &str) {
        for (what, value) in &self.values {
            if let Some(at) = text.find(value.as_str()) {
                panic!("{what} found in {place}: …{}…", excerpt(text, at));
            }
        }
        for code in &self.codes {
            if let Some(at) = standalone(text, code) {
                panic!(
                    "pairing code {code} found in {place}: …{}…",
                    excerpt(text, at)
                );
            }
        }
        if let Some(at) = find_bearer_token(text) {
            panic!(
                "an agent bearer token found in {place}: …{}…",
                excerpt(text, at)
            );
        }
    }
}

pub(crate) fn excerpt(text: &str, at: usize) -> String {
    let mut start = at.saturating_sub(120);
    while !text.is_char_boundary(start) {
        start -= 1;
    }
    let mut end = (at + 120).min(text.len());
    while !text.is_char_boundary(end) {
        end += 1;
    }
    text[start..end].to_owned()
}

/// Where `digits` occurs as a number of its own on a line about pairing.
pub(crate) fn standalone(text: &str, digits: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    text.match_indices(digits).map(|(i, _)| i).find(|&i| {
        let before = i.checked_sub(1).map(|j| bytes[j]);
        let after = bytes.get(i + digits.len()).copied();
        let alone = !before.is_some_and(|b| b.is_ascii_digit() || b == b'.')
            && !after.is_some_and(|b| b.is_ascii_digit());
        let line_start = text[..i].rfind('\n').map_or(0, |n| n + 1);
        let line_end = text[i..].find('\n').map_or(text.len(), |n| i + n);
        let line = text[line_start..line_end].to_lowercase();
        alone && (line.contains("pair") || line.contains("code") || line.contains('│'))
    })
}

/// Where a `zc_<64 hex>` token occurs.
pub(crate) fn find_bearer_token(text: &str) -> Option<usize> {
    text.match_indices("zc_").map(|(i, _)| i).find(|&i| {
        let rest = &text.as_bytes()[i + 3..];
        rest.len() >= 64 && rest[..64].iter().all(u8::is_ascii_hexdigit)
    })
}

/// Every pairing code the container printed (all its starts).
pub(crate) fn pairing_codes(container: &str) -> Vec<String> {
    let out = std::process::Command::new("docker")
        .args(["logs", container])
        .output()
        .expect("docker logs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let mut codes = Vec::new();
    for (i, _) in text.match_indices("X-Pairing-Code:") {
        let code: String = text[i + "X-Pairing-Code:".len()..]
            .trim_start()
            .chars()
            .take(6)
            .collect();
        if code.len() == 6 && code.bytes().all(|b| b.is_ascii_digit()) && !codes.contains(&code) {
            codes.push(code);
        }
    }
    codes
}
