//! Turning Docker's log frames into lines.
//!
//! For a container without a TTY the engine sends multiplexed stdout/stderr
//! frames; a frame is not a line (a line may span frames, a frame may hold
//! several lines). [`LineSplitter`] reassembles lines per stream, caps their
//! length and decodes them lossily; [`split_timestamp`] separates the
//! RFC 3339 (nanosecond) stamp the engine prefixes when asked for
//! `timestamps=true`.

use super::LogLine;
use chrono::{DateTime, Utc};

/// Longest line kept, in bytes (timestamp included); the rest of a longer
/// line is dropped up to its newline.
pub const MAX_LINE_BYTES: usize = 16 * 1024;

/// Which stream a frame came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKind {
    Stdout,
    Stderr,
}

impl StreamKind {
    /// `stdout` or `stderr`, as in [`LogLine::stream`].
    pub fn as_str(self) -> &'static str {
        match self {
            StreamKind::Stdout => "stdout",
            StreamKind::Stderr => "stderr",
        }
    }

    /// The stream of a bollard frame; `None` for stdin echo.
    pub fn of(output: &bollard::container::LogOutput) -> Option<(Self, &[u8])> {
        use bollard::container::LogOutput;
        match output {
            LogOutput::StdOut { message } | LogOutput::Console { message } => {
                Some((StreamKind::Stdout, message))
            }
            LogOutput::StdErr { message } => Some((StreamKind::Stderr, message)),
            LogOutput::StdIn { .. } => None,
        }
    }
}

#[derive(Debug, Default)]
struct Partial {
    bytes: Vec<u8>,
    /// The current line passed [`MAX_LINE_BYTES`]; drop until newline.
    overflow: bool,
}

/// Reassembles complete lines from frames, one buffer per stream.
#[derive(Debug, Default)]
pub struct LineSplitter {
    stdout: Partial,
    stderr: Partial,
    /// Whether lines start with the engine's timestamp.
    timestamps: bool,
}

impl LineSplitter {
    /// A splitter for a stream requested with `timestamps` on or off.
    pub fn new(timestamps: bool) -> Self {
        LineSplitter {
            timestamps,
            ..Default::default()
        }
    }

    /// Feeds one frame; returns the lines it completed, in order.
    pub fn push(&mut self, stream: StreamKind, frame: &[u8]) -> Vec<LogLine> {
        let timestamps = self.timestamps;
        let partial = self.partial(stream);
        let mut lines = Vec::new();
        let mut rest = frame;
        while let Some(pos) = rest.iter().position(|b| *b == b'\n') {
            append_capped(partial, &rest[..pos]);
            lines.push(make_line(
                stream,
                &std::mem::take(&mut partial.bytes),
                timestamps,
            ));
            partial.overflow = false;
            rest = &rest[pos + 1..];
        }
        append_capped(partial, rest);
        lines
    }

    /// Flushes unterminated lines (stdout first) at the end of the stream.
    pub fn finish(&mut self) -> Vec<LogLine> {
        let timestamps = self.timestamps;
        let mut lines = Vec::new();
        for stream in [StreamKind::Stdout, StreamKind::Stderr] {
            let partial = self.partial(stream);
            if !partial.bytes.is_empty() {
                lines.push(make_line(
                    stream,
                    &std::mem::take(&mut partial.bytes),
                    timestamps,
                ));
            }
            partial.overflow = false;
        }
        lines
    }

    fn partial(&mut self, stream: StreamKind) -> &mut Partial {
        match stream {
            StreamKind::Stdout => &mut self.stdout,
            StreamKind::Stderr => &mut self.stderr,
        }
    }
}

fn append_capped(partial: &mut Partial, bytes: &[u8]) {
    if partial.overflow {
        return;
    }
    let room = MAX_LINE_BYTES.saturating_sub(partial.bytes.len());
    if bytes.len() > room {
        partial.bytes.extend_from_slice(&bytes[..room]);
        partial.overflow = true;
    } else {
        partial.bytes.extend_from_slice(bytes);
    }
}

fn make_line(stream: StreamKind, raw: &[u8], timestamps: bool) -> LogLine {
    let decoded = String::from_utf8_lossy(raw);
    let decoded = decoded.strip_suffix('\r').unwrap_or(&decoded);
    let (at, text) = if timestamps {
        split_timestamp(decoded)
    } else {
        (None, decoded)
    };
    LogLine {
        at,
        stream: stream.as_str(),
        text: text.to_owned(),
    }
}

/// Splits `2024-05-01T10:00:00.123456789Z rest` into the stamp and `rest`.
/// A line without a parsable stamp is returned whole with `None`.
pub fn split_timestamp(line: &str) -> (Option<DateTime<Utc>>, &str) {
    let (stamp, rest) = match line.split_once(' ') {
        Some(parts) => parts,
        None => (line, ""),
    };
    match DateTime::parse_from_rfc3339(stamp) {
        Ok(at) => (Some(at.with_timezone(&Utc)), rest),
        Err(_) => (None, line),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Timelike};

    fn texts(lines: &[LogLine]) -> Vec<(&str, &str)> {
        lines.iter().map(|l| (l.stream, l.text.as_str())).collect()
    }

    #[test]
    fn frames_are_reassembled_into_lines_per_stream() {
        let mut s = LineSplitter::new(false);
        assert!(s.push(StreamKind::Stdout, b"hel").is_empty());
        assert!(s.push(StreamKind::Stderr, b"err one\nerr ").len() == 1);
        let lines = s.push(StreamKind::Stdout, b"lo\nworld\r\npartial");
        assert_eq!(
            texts(&lines),
            vec![("stdout", "hello"), ("stdout", "world")]
        );
        let rest = s.finish();
        assert_eq!(
            texts(&rest),
            vec![("stdout", "partial"), ("stderr", "err ")]
        );
        assert!(s.finish().is_empty());
    }

    #[test]
    fn empty_lines_are_kept() {
        let mut s = LineSplitter::new(false);
        let lines = s.push(StreamKind::Stdout, b"\n\nx\n");
        assert_eq!(
            texts(&lines),
            vec![("stdout", ""), ("stdout", ""), ("stdout", "x")]
        );
    }

    #[test]
    fn long_lines_are_capped_and_the_next_line_is_intact() {
        let mut s = LineSplitter::new(false);
        let long = vec![b'a'; MAX_LINE_BYTES + 100];
        assert!(s.push(StreamKind::Stdout, &long[..10_000]).is_empty());
        assert!(s.push(StreamKind::Stdout, &long[10_000..]).is_empty());
        let lines = s.push(StreamKind::Stdout, b"aaa\nnext\n");
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].text.len(), MAX_LINE_BYTES);
        assert_eq!(lines[1].text, "next");
    }

    #[test]
    fn invalid_utf8_is_decoded_lossily() {
        let mut s = LineSplitter::new(false);
        let lines = s.push(StreamKind::Stderr, b"caf\xc3\xa9 \xff!\n");
        assert_eq!(lines[0].text, "café \u{fffd}!");
    }

    #[test]
    fn multibyte_char_split_across_frames_survives() {
        let mut s = LineSplitter::new(false);
        assert!(s.push(StreamKind::Stdout, b"\xe2\x94").is_empty());
        let lines = s.push(StreamKind::Stdout, b"\x82 123456 \xe2\x94\x82\n");
        assert_eq!(lines[0].text, "│ 123456 │");
    }

    #[test]
    fn timestamps_are_split_with_nanoseconds() {
        let mut s = LineSplitter::new(true);
        let lines = s.push(
            StreamKind::Stdout,
            b"2026-11-21T08:38:12.691383571Z      \xe2\x94\x82  123456  \xe2\x94\x82\n\
              2026-11-21T08:38:12Z bare\n",
        );
        let at = lines[0].at.expect("stamp");
        assert_eq!(
            at,
            Utc.with_ymd_and_hms(2026, 11, 21, 8, 38, 12)
                .single()
                .expect("date")
                + chrono::Duration::nanoseconds(691_383_571)
        );
        assert_eq!(at.nanosecond(), 691_383_571);
        assert_eq!(lines[0].text, "     │  123456  │");
        assert_eq!(lines[1].at.expect("stamp").nanosecond(), 0);
        assert_eq!(lines[1].text, "bare");
    }

    #[test]
    fn unstamped_line_is_kept_whole() {
        assert_eq!(split_timestamp("no stamp here"), (None, "no stamp here"));
        assert_eq!(split_timestamp(""), (None, ""));
        let (at, rest) = split_timestamp("2026-01-01T00:00:00.5Z");
        assert!(at.is_some());
        assert_eq!(rest, "");
    }
}
