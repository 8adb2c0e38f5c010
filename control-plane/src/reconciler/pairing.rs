//! Finding the pairing code in an agent's logs: gateway protocol, read
//! through any [`Orchestrator`]'s neutral `logs_since` ([`wait_for_code`]).
//!
//! The gateway prints its one-time code at start as a block (DESIGN.md §1):
//!
//! ```text
//!      ┌──────────────┐
//!      │  123456  │
//!      └──────────────┘
//!      Send: POST /pair with header X-Pairing-Code: 123456
//! ```
//!
//! Both of seed 003's regexes are matched ([`HEADER_RE`], [`BOX_RE`]). Only
//! lines of *this* start count: a restart within the same second as the
//! previous start would otherwise hand back the previous code (the engine's
//! `since` has one-second resolution).
//!
//! Which lines belong to this start ([`lower_bound`]): measured on Docker
//! 20.10, a process that prints at once gets log lines stamped up to a few
//! milliseconds *before* `State.StartedAt` (the engine stamps lines as it
//! reads them, and records `StartedAt` only after the runtime reports the
//! start). Filtering on `stamp >= StartedAt` therefore loses the code. The
//! bound used instead is the previous run's `State.FinishedAt` (every line of
//! an earlier run is stamped before it ended), and never earlier than
//! `StartedAt - `[`START_SLACK`]. Within what remains, the last code printed
//! wins.

use crate::orchestrator::{LogLine, Orchestrator, OrchestratorError};
use chrono::{DateTime, Utc};
use futures::StreamExt as _;
use regex::Regex;
use std::sync::LazyLock;
use std::time::Duration;
use tokio::time::Instant;

/// After a code printed only in the box form, how long the output must stay
/// quiet before the code is taken (the `X-Pairing-Code:` line, printed last
/// in the same block, ends the wait at once).
pub const PAIRING_QUIET: Duration = Duration::from_millis(300);

/// Waits until a pairing code appears in workload `id`'s logs at or after
/// `since` (the incarnation's start), up to `timeout`. Returns the last code
/// printed since then, or `None` on timeout.
///
/// Which lines count is decided by [`lower_bound`]: lines of the same start
/// can be stamped a few ms before the start instant, so the bound is the
/// previous run's finish (read here), never earlier than `since -
/// `[`START_SLACK`]. The wait ends as soon as the banner's `X-Pairing-Code:`
/// line arrives, or [`PAIRING_QUIET`] after a box-only code. If the workload
/// is gone or stops while waiting (the follow stream ends), `Ok(None)` comes
/// back at once: a code of a process that exited is worthless.
pub async fn wait_for_code(
    orchestrator: &dyn Orchestrator,
    id: &str,
    since: DateTime<Utc>,
    timeout: Duration,
) -> Result<Option<String>, OrchestratorError> {
    let deadline = Instant::now() + timeout;
    let Some(workload) = orchestrator.inspect(id).await? else {
        return Ok(None);
    };
    let after = lower_bound(since, workload.finished_at);
    let mut lines = orchestrator.logs_since(id, after);
    let mut scan = PairingScan::new(after);
    let mut code_seen_at: Option<Instant> = None;
    loop {
        let until = match code_seen_at {
            Some(at) => deadline.min(at + PAIRING_QUIET),
            None => deadline,
        };
        match tokio::time::timeout_at(until, lines.next()).await {
            Ok(Some(Ok(line))) => {
                if scan.feed(&line) {
                    if scan.complete() {
                        return Ok(scan.last_code().map(str::to_owned));
                    }
                    code_seen_at = Some(Instant::now());
                }
            }
            Ok(Some(Err(e))) if e.is_not_found() => return Ok(None),
            Ok(Some(Err(e))) => return Err(e),
            // The workload stopped: its code died with it.
            Ok(None) => return Ok(None),
            // Quiet after a box-only code, or the deadline.
            Err(_) => return Ok(scan.last_code().map(str::to_owned)),
        }
    }
}

/// `X-Pairing-Code: 123456` (the `Send:` line, printed last).
pub static HEADER_RE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"X-Pairing-Code:\s*(\d{6})").expect("static regex is valid"));
/// `│  123456  │` (the box).
pub static BOX_RE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"│\s+(\d{6})\s+│").expect("static regex is valid"));

/// How long before `StartedAt` a line of the same start may be stamped.
pub const START_SLACK: chrono::Duration = chrono::Duration::seconds(2);

/// Which of the two forms a code was printed in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeForm {
    /// `X-Pairing-Code: NNNNNN`, the banner's last line.
    Header,
    /// `│ NNNNNN │`.
    Box,
}

/// The code in one line of text, if any.
pub fn code_in(text: &str) -> Option<(String, CodeForm)> {
    if let Some(c) = HEADER_RE.captures(text) {
        return Some((c[1].to_owned(), CodeForm::Header));
    }
    BOX_RE
        .captures(text)
        .map(|c| (c[1].to_owned(), CodeForm::Box))
}

/// The exclusive lower bound on log stamps of the start at `started_at`:
/// `max(started_at - START_SLACK, previous_finished_at)`. Docker reports
/// `0001-01-01…` (here `None`) for `FinishedAt` of a container that never
/// stopped.
pub fn lower_bound(
    started_at: DateTime<Utc>,
    previous_finished_at: Option<DateTime<Utc>>,
) -> DateTime<Utc> {
    let slack = started_at - START_SLACK;
    match previous_finished_at {
        Some(finished) if finished > slack => finished,
        _ => slack,
    }
}

/// Scans log lines for the code of one start.
#[derive(Debug, Clone)]
pub struct PairingScan {
    after: DateTime<Utc>,
    last: Option<String>,
    header_seen: bool,
}

impl PairingScan {
    /// Only lines stamped strictly after `after` count (see [`lower_bound`]).
    pub fn new(after: DateTime<Utc>) -> Self {
        PairingScan {
            after,
            last: None,
            header_seen: false,
        }
    }

    /// Looks at one line; returns whether it carried a code that counts.
    /// Lines without a stamp never count: they cannot be placed in time.
    pub fn feed(&mut self, line: &LogLine) -> bool {
        match line.at {
            Some(at) if at > self.after => {}
            _ => return false,
        }
        match code_in(&line.text) {
            Some((code, form)) => {
                // A new box after a header line starts a new banner (a fast
                // crash-restart): wait for its header line again.
                self.header_seen = form == CodeForm::Header;
                self.last = Some(code);
                true
            }
            None => false,
        }
    }

    /// The last code seen so far.
    pub fn last_code(&self) -> Option<&str> {
        self.last.as_deref()
    }

    /// Whether the banner's final line (`X-Pairing-Code: …`) was the last
    /// code line seen: the code can be used without waiting further.
    pub fn complete(&self) -> bool {
        self.header_seen
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(secs: i64, nanos: u32) -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000 + secs, nanos)
            .single()
            .expect("valid time")
    }

    fn line(stamp: Option<DateTime<Utc>>, text: &str) -> LogLine {
        LogLine {
            at: stamp,
            stream: "stdout",
            text: text.into(),
        }
    }

    #[test]
    fn both_regexes_match_the_banner() {
        assert_eq!(
            code_in("     │  123456  │"),
            Some(("123456".into(), CodeForm::Box))
        );
        assert_eq!(
            code_in("     Send: POST /pair with header X-Pairing-Code: 654321"),
            Some(("654321".into(), CodeForm::Header))
        );
        assert_eq!(
            code_in("X-Pairing-Code:000042"),
            Some(("000042".into(), CodeForm::Header))
        );
        assert_eq!(
            code_in("│\t987654\t│"),
            Some(("987654".into(), CodeForm::Box))
        );
    }

    #[test]
    fn other_lines_have_no_code() {
        for text in [
            "",
            "     ┌──────────────┐",
            "     └──────────────┘",
            "listening on 0.0.0.0:42617",
            "│123456│",
            "│  12345  │",
            "X-Pairing-Code: 12345",
            "pid 123456 started",
        ] {
            assert_eq!(code_in(text), None, "{text:?}");
        }
    }

    #[test]
    fn lower_bound_uses_previous_finish_or_slack() {
        let started = at(10, 0);
        assert_eq!(lower_bound(started, None), started - START_SLACK);
        // Restarted within the same second: the previous finish is the bound.
        let finished = at(9, 700_000_000);
        assert_eq!(lower_bound(started, Some(finished)), finished);
        // A finish long ago: the slack is tighter.
        assert_eq!(
            lower_bound(started, Some(at(-100, 0))),
            started - START_SLACK
        );
    }

    #[test]
    fn previous_start_in_the_same_second_is_ignored() {
        // Previous run: started 10.1 s, code 111111, stopped 10.4 s; this run
        // started 10.6 s but its first line is stamped 10.5999 s (before
        // StartedAt, as the engine does).
        let mut scan =
            PairingScan::new(lower_bound(at(10, 600_000_000), Some(at(10, 400_000_000))));
        assert!(!scan.feed(&line(Some(at(10, 100_000_000)), "│  111111  │")));
        assert!(!scan.feed(&line(Some(at(10, 100_000_100)), "X-Pairing-Code: 111111")));
        assert!(!scan.complete());
        assert!(scan.feed(&line(Some(at(10, 599_900_000)), "│  222222  │")));
        assert!(!scan.complete());
        assert!(scan.feed(&line(Some(at(10, 599_900_001)), "X-Pairing-Code: 222222")));
        assert!(scan.complete());
        assert_eq!(scan.last_code(), Some("222222"));
    }

    #[test]
    fn bound_is_exclusive_to_the_nanosecond() {
        let bound = at(5, 123_456_789);
        let mut scan = PairingScan::new(bound);
        assert!(!scan.feed(&line(Some(bound), "X-Pairing-Code: 111111")));
        assert!(scan.feed(&line(Some(at(5, 123_456_790)), "X-Pairing-Code: 222222")));
        assert_eq!(scan.last_code(), Some("222222"));
    }

    #[test]
    fn last_code_wins_and_a_new_box_reopens_the_banner() {
        let mut scan = PairingScan::new(at(0, 0));
        scan.feed(&line(Some(at(1, 0)), "│  111111  │"));
        scan.feed(&line(Some(at(1, 1)), "X-Pairing-Code: 111111"));
        assert!(scan.complete());
        scan.feed(&line(Some(at(2, 0)), "│  333333  │"));
        assert!(!scan.complete());
        assert_eq!(scan.last_code(), Some("333333"));
    }

    #[test]
    fn unstamped_lines_never_count() {
        let mut scan = PairingScan::new(at(0, 0));
        assert!(!scan.feed(&line(None, "X-Pairing-Code: 123456")));
        assert_eq!(scan.last_code(), None);
    }
}
