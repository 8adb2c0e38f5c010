//! OpenAI chat completions: `POST {base}/chat/completions`, `Authorization: Bearer <key>`.
//!
//! Request `{"model","messages":[{"role":"system"|"user"|"assistant","content"}],
//! "temperature"}`; answer `choices[0].message.content`, usage in
//! `usage.prompt_tokens` / `usage.completion_tokens`.

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
        format!("{base}/chat/completions"),
        json!({"model": model, "messages": messages, "temperature": temperature}),
    )
}

/// Reads the answer.
pub(super) fn parse(v: &Value) -> Result<ChatReply, ProviderError> {
    let text = v
        .pointer("/choices/0/message/content")
        .and_then(Value::as_str)
        .ok_or_else(|| ProviderError::Decode("no choices[0].message.content".into()))?;
    Ok(ChatReply {
        text: text.to_owned(),
        input_tokens: u64_at(v, &["usage", "prompt_tokens"]),
        output_tokens: u64_at(v, &["usage", "completion_tokens"]),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::{Role, Turn};

    #[test]
    fn request_and_response_shapes() {
        let history = [
            Turn {
                role: Role::User,
                content: "q".into(),
            },
            Turn {
                role: Role::Assistant,
                content: "a".into(),
            },
        ];
        let (url, body) = request(
            "https://api.openai.com/v1",
            "gpt",
            0.5,
            ChatRequest {
                system: "sys",
                history: &history,
                message: "hi",
            },
        );
        assert_eq!(url, "https://api.openai.com/v1/chat/completions");
        assert_eq!(
            body,
            json!({"model": "gpt", "temperature": 0.5, "messages": [
                {"role": "system", "content": "sys"},
                {"role": "user", "content": "q"},
                {"role": "assistant", "content": "a"},
                {"role": "user", "content": "hi"}]})
        );
        let reply = parse(
            &json!({"choices": [{"message": {"role": "assistant", "content": "yo"}}],
            "usage": {"prompt_tokens": 9, "completion_tokens": 2}}),
        )
        .expect("parse");
        assert_eq!(
            reply,
            ChatReply {
                text: "yo".into(),
                input_tokens: Some(9),
                output_tokens: Some(2)
            }
        );
        assert!(parse(&json!({"choices": []})).is_err());
    }
}
