//! The web dashboard (`web/` in the repository): plain HTML, CSS and ES
//! modules with no build step, embedded in the binary at compile time and
//! served at `/` (the page) and `/static/{path}` (its assets).
//!
//! Every answer carries a strict Content-Security-Policy (`default-src
//! 'self'`, no inline script or style, no framing), `nosniff`, no referrer,
//! and an ETag so browsers revalidate cheaply (`Cache-Control: no-cache`:
//! a new binary is picked up at the next load).

use std::sync::LazyLock;

use axum::extract::Path;
use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, ETAG, IF_NONE_MATCH, REFERRER_POLICY,
    X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use sha2::{Digest, Sha256};

use crate::api::AppState;
use crate::error::ApiError;

/// The policy of every dashboard answer.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; \
     form-action 'self'; frame-ancestors 'none'";

/// One embedded file: path under `/static/` (`""` for the page), content
/// type, bytes.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

macro_rules! asset {
    ($path:literal, $ct:expr) => {
        Asset {
            path: $path,
            content_type: $ct,
            body: include_bytes!(concat!("../../../web/", $path)),
        }
    };
}

const JS: &str = "text/javascript; charset=utf-8";

/// Every file of `web/` the dashboard loads.
static ASSETS: &[Asset] = &[
    asset!("index.html", "text/html; charset=utf-8"),
    asset!("app.css", "text/css; charset=utf-8"),
    asset!("favicon.svg", "image/svg+xml"),
    asset!("js/main.js", JS),
    asset!("js/api.js", JS),
    asset!("js/dom.js", JS),
    asset!("js/auth.js", JS),
    asset!("js/agents.js", JS),
    asset!("js/create.js", JS),
    asset!("js/agent.js", JS),
    asset!("js/admin.js", JS),
];

/// Strong ETags of [`ASSETS`], same order.
static ETAGS: LazyLock<Vec<String>> = LazyLock::new(|| {
    ASSETS
        .iter()
        .map(|a| format!("\"{}\"", hex::encode(&Sha256::digest(a.body)[..12])))
        .collect()
});

/// The routes of this module.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(index))
        .route("/static/{*path}", get(asset))
}

/// `GET /` → 200 the dashboard page.
async fn index(headers: HeaderMap) -> Response {
    serve("index.html", &headers)
}

/// `GET /static/{path}` → 200 the file, 304 when unchanged, 404 unknown.
async fn asset(Path(path): Path<String>, headers: HeaderMap) -> Response {
    serve(&path, &headers)
}

fn serve(path: &str, headers: &HeaderMap) -> Response {
    let Some(i) = ASSETS.iter().position(|a| a.path == path) else {
        return ApiError::NotFound("file").into_response();
    };
    let asset = &ASSETS[i];
    let etag = &ETAGS[i];
    let unchanged = headers
        .get(IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    let mut response = if unchanged {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        ([(CONTENT_TYPE, asset.content_type)], asset.body).into_response()
    };
    let h = response.headers_mut();
    h.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(v) = HeaderValue::from_str(etag) {
        h.insert(ETAG, v);
    }
    response
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_is_embedded_and_referenced_modules_exist() {
        let names: Vec<&str> = ASSETS.iter().map(|a| a.path).collect();
        for a in ASSETS {
            assert!(!a.body.is_empty(), "{} is empty", a.path);
            let text = std::str::from_utf8(a.body).unwrap();
            // Every `/static/…` or relative `./x.js` import names an embedded file.
            for (i, _) in text.match_indices("/static/") {
                let rest = &text[i + "/static/".len()..];
                let end = rest.find(['"', '\'', ')', '?']).unwrap();
                assert!(
                    names.contains(&&rest[..end]),
                    "{} refers to {}",
                    a.path,
                    &rest[..end]
                );
            }
            for (i, _) in text.match_indices("from './") {
                let rest = &text[i + "from './".len()..];
                let end = rest.find('\'').unwrap();
                let target = format!("js/{}", &rest[..end]);
                assert!(
                    names.contains(&target.as_str()),
                    "{} imports {target}",
                    a.path
                );
            }
        }
    }

    #[test]
    fn the_page_has_no_inline_script_or_style_and_no_remote_source() {
        for a in ASSETS {
            let text = std::str::from_utf8(a.body).unwrap();
            for remote in [
                "src=\"http",
                "href=\"http",
                "url(http",
                "url(\"http",
                "from 'http",
                "@import",
            ] {
                assert!(
                    !text.contains(remote),
                    "{} loads something remote ({remote})",
                    a.path
                );
            }
            if a.path == "index.html" {
                assert!(
                    !text.contains("<script>") && !text.contains("style="),
                    "inline code in the page"
                );
            }
            if a.path.ends_with(".js") {
                assert!(!text.contains(".innerHTML"), "{} writes innerHTML", a.path);
            }
        }
    }
}
