//! A reader of server-sent events (the status event feeds and the log
//! streams), with a bound on every wait.

use std::time::Duration;

use futures::stream::BoxStream;
use futures::StreamExt as _;
use serde_json::Value;

/// Longest wait for one event.
pub const EVENT_WAIT: Duration = Duration::from_secs(60);

/// One server-sent event.
#[derive(Debug, Clone, PartialEq)]
pub struct Sse {
    /// `message` unless the event names itself.
    pub event: String,
    pub id: Option<String>,
    pub data: String,
}

/// Reads server-sent events off a response body.
pub struct SseReader {
    body: BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    buf: String,
}

impl SseReader {
    /// Reads `resp`, asserting it is a 200 `text/event-stream`.
    pub fn new(resp: reqwest::Response) -> Self {
        assert_eq!(resp.status(), 200, "{}", resp.url());
        let content_type = resp.headers().get("content-type");
        assert!(
            content_type
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.starts_with("text/event-stream")),
            "{}: {content_type:?}",
            resp.url()
        );
        SseReader {
            body: resp.bytes_stream().boxed(),
            buf: String::new(),
        }
    }

    /// The next event (comments and events without data skipped); `None`
    /// when the stream ends. Panics after [`EVENT_WAIT`] without one.
    pub async fn next(&mut self) -> Option<Sse> {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let mut event = Sse {
                    event: "message".into(),
                    id: None,
                    data: String::new(),
                };
                let mut data: Option<Vec<&str>> = None;
                for line in block.lines() {
                    let (k, v) = line.split_once(':').unwrap_or((line, ""));
                    let v = v.strip_prefix(' ').unwrap_or(v);
                    match k {
                        "event" => event.event = v.to_owned(),
                        "id" => event.id = Some(v.to_owned()),
                        "data" => data.get_or_insert_with(Vec::new).push(v),
                        _ => {}
                    }
                }
                if let Some(data) = data {
                    event.data = data.join("\n");
                    return Some(event);
                }
                continue;
            }
            match tokio::time::timeout(EVENT_WAIT, self.body.next())
                .await
                .expect("an event in time")
            {
                Some(Ok(chunk)) => self.buf.push_str(&String::from_utf8_lossy(&chunk)),
                Some(Err(_)) | None => return None,
            }
        }
    }

    /// The next `transition` event's JSON (other events skipped), checking
    /// that its SSE id is its row id.
    pub async fn transition(&mut self) -> Value {
        loop {
            let ev = self.next().await.expect("stream open");
            if ev.event == "transition" {
                let v: Value = serde_json::from_str(&ev.data).expect("a JSON transition");
                assert_eq!(
                    ev.id.as_deref(),
                    Some(v["id"].to_string().as_str()),
                    "SSE id = row id"
                );
                return v;
            }
        }
    }

    /// Transitions until `n` were read.
    pub async fn transitions(&mut self, n: usize) -> Vec<Value> {
        let mut out = Vec::new();
        while out.len() < n {
            out.push(self.transition().await);
        }
        out
    }
}
