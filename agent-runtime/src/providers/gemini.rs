//! Gemini: `POST {base}/v1beta/models/{model}:generateContent`, header `x-goog-api-key`.
//!
//! Request `{"systemInstruction":{"parts":[{"text"}]},"contents":[{"role":"user"|"model",
//! "parts":[{"text"}]}],"generationConfig":{"temperature"}}`; answer: the `text` of
//! `candidates[0].content.parts[]`, joined; usage in `usageMetadata.promptTokenCount` /
//! `usageMetadata.candidatesTokenCount`.

use serde_json::{json, Value};

use super::{u64_at, ChatReply, ChatRequest, ProviderError};
use crate::memory::Role;

/// URL and JSON body of one request.
pub(super) fn request(
    base: &str,
    model: &str,
    temperature: f64,
    req: ChatRequest<'_>,
) -> (String, Value) {
    let model = model.strip_prefix("models/").unwrap_or(model);
    let mut contents: Vec<Value> = req
        .history
        .iter()
        .map(|t| {
            let role = if t.role == Role::User {
                "user"
            } else {
                "model"
            };
            json!({"role": role, "parts": [{"text": t.content}]})
        })
        .collect();
    contents.push(json!({"role": "user", "parts": [{"text": req.message}]}));
    (
        format!("{base}/v1beta/models/{model}:generateContent"),
        json!({
            "systemInstruction": {"parts": [{"text": req.system}]},
            "contents": contents,
            "generationConfig": {"temperature": temperature},
        }),
    )
}

/// Reads the answer.
pub(super) fn parse(v: &Value) -> Result<ChatReply, ProviderError> {
    let parts = v
        .pointer("/candidates/0/content/parts")
        .and_then(Value::as_array)
        .ok_or_else(|| ProviderError::Decode("no candidates[0].content.parts".into()))?;
    let texts: Vec<&str> = parts
        .iter()
        .filter_map(|p| p.get("text").and_then(Value::as_str))
        .collect();
    if texts.is_empty() {
        return Err(ProviderError::Decode("no text part".into()));
    }
    Ok(ChatReply {
        text: texts.concat(),
        input_tokens: u64_at(v, &["usageMetadata", "promptTokenCount"]),
        output_tokens: u64_at(v, &["usageMetadata", "candidatesTokenCount"]),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::Turn;

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
            "https://g",
            "models/gemini-2.0-flash",
            0.3,
            ChatRequest {
                system: "sys",
                history: &history,
                message: "hi",
            },
        );
        assert_eq!(
            url,
            "https://g/v1beta/models/gemini-2.0-flash:generateContent"
        );
        assert_eq!(
            body["systemInstruction"],
            json!({"parts": [{"text": "sys"}]})
        );
        assert_eq!(body["generationConfig"]["temperature"], 0.3);
        assert_eq!(
            body["contents"],
            json!([{"role": "user", "parts": [{"text": "q"}]},
                   {"role": "model", "parts": [{"text": "a"}]},
                   {"role": "user", "parts": [{"text": "hi"}]}])
        );
        let reply = parse(&json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "x"}, {"text": "y"}]}}],
            "usageMetadata": {"promptTokenCount": 5, "candidatesTokenCount": 1}}))
        .expect("parse");
        assert_eq!(
            reply,
            ChatReply {
                text: "xy".into(),
                input_tokens: Some(5),
                output_tokens: Some(1)
            }
        );
        assert!(parse(&json!({"candidates": []})).is_err());
    }
}
