//! Extractors whose rejections use the API's error body: [`Json`] (content
//! type, size, syntax, and type errors naming the field by its JSON path)
//! and [`AgentId`] (the `{id}` path segment).

use std::sync::LazyLock;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header::CONTENT_TYPE;
use axum::http::request::Parts;
use axum::http::StatusCode;
use regex::Regex;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// A JSON body. Refusals: 415 without `Content-Type: application/json`, 413
/// over the body limit, 400 on a syntax error, 422 on a wrong type, a missing
/// or an unknown field (with `field` set to its path, e.g. `temperature`).
pub struct Json<T>(pub T);

static POSITION: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(r" at line \d+ column \d+$").ok());
static BACKTICKED: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(r"^(unknown|missing) field `([^`]*)`").ok());

fn is_json(parts_ct: Option<&axum::http::HeaderValue>) -> bool {
    let Some(ct) = parts_ct.and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Turns a deserialisation error into the API's error, naming the field.
pub fn json_error(err: serde_path_to_error::Error<serde_json::Error>) -> ApiError {
    let inner = err.inner();
    let raw = inner.to_string();
    let message = POSITION
        .as_ref()
        .map_or(raw.clone(), |re| re.replace(&raw, "").into_owned());
    match inner.classify() {
        serde_json::error::Category::Data => {
            let parent = err.path().to_string();
            let parent = if parent == "." { String::new() } else { parent };
            // A missing field is reported at its parent (an unknown one at
            // itself): name the field itself either way.
            let named = BACKTICKED
                .as_ref()
                .and_then(|re| re.captures(&message))
                .map(|c| c[2].to_owned());
            let field = match named {
                Some(name) if parent == name || parent.ends_with(&format!(".{name}")) => parent,
                Some(name) if parent.is_empty() => name,
                Some(name) => format!("{parent}.{name}"),
                None if parent.is_empty() => "body".to_owned(),
                None => parent,
            };
            ApiError::validation(field.clone(), format!("{field}: {message}"))
        }
        _ => ApiError::BadRequest {
            message: format!("invalid JSON: {message}"),
            field: None,
        },
    }
}

/// Parses `bytes` as `T` the way [`Json`] does.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(json_error)?;
    de.end().map_err(|e| ApiError::BadRequest {
        message: format!("invalid JSON: {e}"),
        field: None,
    })?;
    Ok(value)
}

impl<T, S> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json(req.headers().get(CONTENT_TYPE)) {
            return Err(ApiError::UnsupportedMediaType);
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|r| {
            if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge
            } else {
                ApiError::BadRequest {
                    message: r.body_text(),
                    field: None,
                }
            }
        })?;
        // Every body of this API is an object (serde would also read a
        // struct from an array, positionally).
        match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
            Some(b'{') | None => {}
            Some(_) => return Err(ApiError::validation("body", "body: must be a JSON object")),
        }
        parse_json(&bytes).map(Json)
    }
}

/// The `{id}` segment of an agent route. Any string is accepted; one that
/// names no agent of the caller's is a 404 later.
pub struct AgentId(pub String);

impl<S: Send + Sync> FromRequestParts<S> for AgentId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let axum::extract::Path(id) =
            axum::extract::Path::<String>::from_request_parts(parts, state)
                .await
                .map_err(|r| ApiError::BadRequest {
                    message: r.body_text(),
                    field: Some("id".into()),
                })?;
        if id.len() > 64 {
            return Err(ApiError::NotFound("agent"));
        }
        Ok(AgentId(id))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    #[allow(dead_code)]
    struct Inner {
        bot_token: String,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Outer {
        name: String,
        temperature: Option<f64>,
        inner: Option<Inner>,
    }

    fn field_of(body: &str) -> (String, String) {
        match parse_json::<Outer>(body.as_bytes()).unwrap_err() {
            ApiError::Validation { field, message } => (field, message),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn errors_name_the_field() {
        let (f, m) = field_of(r#"{"name":"a","temperature":"hot"}"#);
        assert_eq!(f, "temperature");
        assert!(m.starts_with("temperature: invalid type"), "{m}");
        assert!(!m.contains("line 1"), "{m}");
        assert_eq!(field_of(r#"{"name":"a","bogus":1}"#).0, "bogus");
        assert_eq!(field_of(r#"{"temperature":1}"#).0, "name");
        assert_eq!(
            field_of(r#"{"name":"a","inner":{"botToken":1}}"#).0,
            "inner.botToken"
        );
        assert_eq!(field_of(r#"{"name":"a","inner":{"x":"y"}}"#).0, "inner.x");
        assert_eq!(field_of(r#"[]"#).0, "body");
        assert!(matches!(
            parse_json::<Outer>(b"{"),
            Err(ApiError::BadRequest { .. })
        ));
        assert!(matches!(
            parse_json::<Outer>(br#"{"name":"a"} x"#),
            Err(ApiError::BadRequest { .. })
        ));
    }
}
