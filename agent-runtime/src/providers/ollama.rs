//! Ollama: `POST {base}/api/chat` with `"stream": false`; no key (a configured one is sent as
//! a bearer token, for hosted Ollama).
//!
//! Request `{"model","messages":[{"role","content"}],"stream":false,"options":{"temperature"}}`;
//! answer `message.content`, usage in `prompt_eval_count` / `eval_count`.

use serde_json::{json, Value};

use super::{u64_at, ChatReply, ChatRequest, ProviderError};

/// URL and JSON body of one request.
pub(super) fn request(
    base: &str,
    model: &str,
    temperature: f64,
    req: ChatRequest<'_>,
) -> (String, Value) {
    let mut messages = vec![json!({"role": "system", "content": req.system})];
    messages.extend(
        req.history
            .iter()
            .map(|t| json!({"role": t.role.as_str(), "content": t.content})),
    );
    messages.push(json!({"role": "user", "content": req.message}));
    (
        format!("{base}/api/chat"),
        json!({
            "model": model,
            "messages": messages,
            "stream": false,
            "options": {"temperature": temperature},
        }),
    )
}

/// Reads the answer.
pub(super) fn parse(v: &Value) -> Result<ChatReply, ProviderError> {
    let text = v
        .pointer("/message/content")
        .and_then(Value::as_str)
        .ok_or_else(|| ProviderError::Decode("no message.content".into()))?;
    Ok(ChatReply {
        text: text.to_owned(),
        input_tokens: u64_at(v, &["prompt_eval_count"]),
        output_tokens: u64_at(v, &["eval_count"]),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_and_response_shapes() {
        let (url, body) = request(
            "http://localhost:11434",
            "llama3.2",
            0.7,
            ChatRequest {
                system: "sys",
                history: &[],
                message: "hi",
            },
        );
        assert_eq!(url, "http://localhost:11434/api/chat");
        assert_eq!(body["stream"], false);
        assert_eq!(body["options"]["temperature"], 0.7);
        assert_eq!(
            body["messages"][0],
            json!({"role": "system", "content": "sys"})
        );
        assert_eq!(
            body["messages"][1],
            json!({"role": "user", "content": "hi"})
        );
        let reply = parse(
            &json!({"message": {"role": "assistant", "content": "ok"}, "done": true,
            "prompt_eval_count": 11, "eval_count": 2}),
        )
        .expect("parse");
        assert_eq!(
            reply,
            ChatReply {
                text: "ok".into(),
                input_tokens: Some(11),
                output_tokens: Some(2)
            }
        );
        assert!(parse(&json!({"error": "model not found"})).is_err());
    }
}
