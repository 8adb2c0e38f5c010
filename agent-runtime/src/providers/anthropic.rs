//! Anthropic Messages: `POST {base}/v1/messages`, headers `x-api-key` and
//! `anthropic-version: 2023-06-01`.
//!
//! Request `{"model","max_tokens","system","messages":[{"role","content"}],"temperature"}`
//! (temperature clamped to Anthropic's 0–1); answer: the `text` of every `content[]` block of
//! type `text`, joined; usage in `usage.input_tokens` / `usage.output_tokens`.

use serde_json::{json, Value};

use super::{u64_at, ChatReply, ChatRequest, ProviderError};

/// Value of the `anthropic-version` header.
pub(super) const API_VERSION: &str = "2023-06-01";
/// `max_tokens` sent with every request (required by the API).
const MAX_TOKENS: u32 = 4096;

/// URL and JSON body of one request.
pub(super) fn request(
    base: &str,
    model: &str,
    temperature: f64,
    req: ChatRequest<'_>,
) -> (String, Value) {
    let mut messages: Vec<Value> = req
        .history
        .iter()
        .map(|t| json!({"role": t.role.as_str(), "content": t.content}))
        .collect();
    messages.push(json!({"role": "user", "content": req.message}));
    (
        format!("{base}/v1/messages"),
        json!({
            "model": model,
            "max_tokens": MAX_TOKENS,
            "system": req.system,
            "messages": messages,
            "temperature": temperature.clamp(0.0, 1.0),
        }),
    )
}

/// Reads the answer.
pub(super) fn parse(v: &Value) -> Result<ChatReply, ProviderError> {
    let blocks = v
        .get("content")
        .and_then(Value::as_array)
        .ok_or_else(|| ProviderError::Decode("no content[]".into()))?;
    let texts: Vec<&str> = blocks
        .iter()
        .filter(|b| b.get("type").and_then(Value::as_str).unwrap_or("text") == "text")
        .filter_map(|b| b.get("text").and_then(Value::as_str))
        .collect();
    if texts.is_empty() {
        return Err(ProviderError::Decode("no text block in content[]".into()));
    }
    Ok(ChatReply {
        text: texts.concat(),
        input_tokens: u64_at(v, &["usage", "input_tokens"]),
        output_tokens: u64_at(v, &["usage", "output_tokens"]),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::{Role, Turn};

    #[test]
    fn request_and_response_shapes() {
        let history = [Turn {
            role: Role::User,
            content: "q".into(),
        }];
        let (url, body) = request(
            "https://api.anthropic.com",
            "claude",
            1.7,
            ChatRequest {
                system: "sys",
                history: &history,
                message: "hi",
            },
        );
        assert_eq!(url, "https://api.anthropic.com/v1/messages");
        assert_eq!(body["system"], "sys");
        assert_eq!(body["max_tokens"], 4096);
        assert_eq!(body["temperature"], 1.0);
        assert_eq!(
            body["messages"],
            json!([{"role": "user", "content": "q"}, {"role": "user", "content": "hi"}])
        );
        let reply = parse(&json!({"content": [{"type": "text", "text": "a"}, {"type": "tool_use"}, {"type": "text", "text": "b"}],
            "usage": {"input_tokens": 3, "output_tokens": 4}}))
        .expect("parse");
        assert_eq!(
            reply,
            ChatReply {
                text: "ab".into(),
                input_tokens: Some(3),
                output_tokens: Some(4)
            }
        );
        assert!(parse(&json!({"content": []})).is_err());
        assert!(parse(&json!({"type": "error"})).is_err());
    }
}
