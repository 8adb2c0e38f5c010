//! Against an in-process gateway on 127.0.0.1:0 speaking DESIGN.md §1.
use super::*;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::StreamExt as _;
use serde_json::{json, Value};
use std::sync::atomic::Ordering::SeqCst;
use std::sync::atomic::{AtomicU32, AtomicUsize};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const TOKEN: &str = "zc_0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

#[derive(Default)]
struct Fake {
    code: Option<String>,
    failures: u32,
    pair_calls: u32,
    webhook_calls: u32,
}
type Shared = Arc<Mutex<Fake>>;

fn bearer_ok(headers: &HeaderMap) -> bool {
    headers.get("authorization").and_then(|v| v.to_str().ok()) == Some(&format!("Bearer {TOKEN}"))
}

async fn pair(State(s): State<Shared>, headers: HeaderMap) -> (StatusCode, Json<Value>) {
    let mut s = s.lock().expect("lock");
    s.pair_calls += 1;
    if s.failures >= 5 {
        return (
            StatusCode::TOO_MANY_REQUESTS,
            Json(
                json!({"error": "Too many failed attempts. Try again in 277s.", "retry_after": 277}),
            ),
        );
    }
    let sent = headers.get("x-pairing-code").and_then(|v| v.to_str().ok());
    if sent.is_some() && sent == s.code.as_deref() {
        s.code = None; // one-time
        return (
            StatusCode::OK,
            Json(json!({"paired": true, "persisted": false, "token": TOKEN, "message": "ok"})),
        );
    }
    s.failures += 1;
    (
        StatusCode::FORBIDDEN,
        Json(json!({"error": "Invalid pairing code"})),
    )
}

async fn status(headers: HeaderMap) -> (StatusCode, Json<Value>) {
    if bearer_ok(&headers) {
        (StatusCode::OK, Json(json!({"status": "ok"})))
    } else {
        (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": "Unauthorized"})),
        )
    }
}

async fn webhook(
    State(s): State<Shared>,
    headers: HeaderMap,
    body: String,
) -> (StatusCode, Json<Value>) {
    s.lock().expect("lock").webhook_calls += 1;
    if !bearer_ok(&headers) {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": "Unauthorized — pair first"})),
        );
    }
    let Ok(Value::Object(body)) = serde_json::from_str::<Value>(&body) else {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "Invalid JSON body"})),
        );
    };
    let idem = headers
        .get("x-idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let message = body
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or_default();
    (
        StatusCode::OK,
        Json(json!({"response": format!("echo: {message}"), "model": "m", "idem": idem})),
    )
}

async fn serve(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, router).await });
    format!("http://{addr}")
}

async fn fake(code: &str) -> (String, Shared) {
    let state: Shared = Arc::new(Mutex::new(Fake {
        code: Some(code.into()),
        ..Default::default()
    }));
    let router = Router::new()
        .route("/pair", post(pair))
        .route(
            "/health",
            get(|| async { Json(json!({"status": "ok", "paired": false})) }),
        )
        .route("/api/status", get(status))
        .route("/webhook", post(webhook))
        .route(
            "/slow/health",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                "late"
            }),
        )
        .route("/odd/pair", post(|| async { "not json" }))
        .route(
            "/odd/health",
            get(|| async { (StatusCode::IM_A_TEAPOT, "short and stout") }),
        )
        .route(
            "/odd/webhook",
            post(|| async { (StatusCode::PAYLOAD_TOO_LARGE, "length limit exceeded") }),
        )
        .route(
            "/header/pair",
            post(|| async { (StatusCode::TOO_MANY_REQUESTS, [("retry-after", "12")], "") }),
        )
        .with_state(state.clone());
    (serve(router).await, state)
}

#[tokio::test]
async fn pair_returns_the_token_once_and_the_code_is_one_time() {
    let (base, state) = fake("123456").await;
    let client = GatewayClient::new();
    assert_eq!(client.pair(&base, "123456").await.expect("paired"), TOKEN);
    assert!(matches!(
        client.pair(&base, "123456").await,
        Err(GatewayError::CodeRejected)
    ));
    assert_eq!(
        state.lock().expect("lock").pair_calls,
        2,
        "one request per call"
    );
}

#[tokio::test]
async fn wrong_codes_then_lockout_with_retry_after() {
    let (base, state) = fake("123456").await;
    let client = GatewayClient::new();
    for _ in 0..5 {
        assert!(matches!(
            client.pair(&base, "000000").await,
            Err(GatewayError::CodeRejected)
        ));
    }
    assert!(matches!(
        client.pair(&base, "123456").await,
        Err(GatewayError::LockedOut(277))
    ));
    assert_eq!(state.lock().expect("lock").pair_calls, 6);
    let header_only = format!("{base}/header");
    assert!(matches!(
        client.pair(&header_only, "1").await,
        Err(GatewayError::LockedOut(12))
    ));
}

#[tokio::test]
async fn pair_200_without_token_is_unexpected() {
    let (base, _) = fake("123456").await;
    let err = GatewayClient::new()
        .pair(&format!("{base}/odd"), "123456")
        .await;
    assert!(
        matches!(err, Err(GatewayError::Unexpected { status: 200, .. })),
        "{err:?}"
    );
}

#[tokio::test]
async fn health_and_token_validity() {
    let (base, _) = fake("123456").await;
    let client = GatewayClient::new();
    assert_eq!(client.health(&base).await.expect("health")["status"], "ok");
    assert!(client.token_valid(&base, TOKEN).await.expect("status"));
    assert!(!client.token_valid(&base, "zc_wrong").await.expect("status"));
    let err = client.health(&format!("{base}/odd")).await;
    match err {
        Err(GatewayError::Unexpected { status: 418, body }) => {
            assert_eq!(body, "short and stout")
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn webhook_passes_status_and_body_through() {
    let (base, state) = fake("123456").await;
    let client = GatewayClient::new();
    let ok = client
        .webhook(&base, TOKEN, "hi \"there\" ✓", Some("k-1"))
        .await
        .expect("reply");
    assert_eq!(ok.status, 200);
    assert_eq!(ok.body["response"], "echo: hi \"there\" ✓");
    assert_eq!(ok.body["idem"], "k-1");
    let denied = client
        .webhook(&base, "zc_wrong", "hi", None)
        .await
        .expect("reply");
    assert_eq!(denied.status, 401);
    assert!(denied.body["error"]
        .as_str()
        .expect("error")
        .starts_with("Unauthorized"));
    let odd = client
        .webhook(&format!("{base}/odd"), TOKEN, "x", None)
        .await
        .expect("reply");
    assert_eq!(
        (odd.status, odd.body.clone()),
        (413, json!({"error": "length limit exceeded"}))
    );
    assert_eq!(state.lock().expect("lock").webhook_calls, 2);
}

#[tokio::test]
async fn timeouts_and_unreachable() {
    let (base, _) = fake("123456").await;
    let client = GatewayClient::with_timeouts(
        Duration::from_millis(500),
        Duration::from_millis(200),
        Duration::from_millis(200),
    );
    let started = std::time::Instant::now();
    let err = client.health(&format!("{base}/slow")).await;
    assert!(
        matches!(err, Err(GatewayError::Timeout(d)) if d == Duration::from_millis(200)),
        "{err:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(2));

    // A port nothing listens on.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let closed = format!("http://{}", listener.local_addr().expect("addr"));
    drop(listener);
    let err = client.pair(&closed, "123456").await;
    assert!(matches!(err, Err(GatewayError::Unreachable(_))), "{err:?}");
}

const CALLS: [&str; 4] = ["pair", "health", "token_valid", "webhook"];

/// One of the four calls against `base`, reduced to its error.
async fn one_call(client: &GatewayClient, base: &str, call: &str) -> Result<(), GatewayError> {
    match call {
        "pair" => client.pair(base, "123456").await.map(drop),
        "health" => client.health(base).await.map(drop),
        "token_valid" => client.token_valid(base, TOKEN).await.map(drop),
        "webhook" => client.webhook(base, TOKEN, "hi", None).await.map(drop),
        other => unreachable!("no call {other}"),
    }
}

/// Each of the four calls against `base`, reduced to its error.
async fn each_call(
    client: &GatewayClient,
    base: &str,
) -> Vec<(&'static str, Result<(), GatewayError>)> {
    let mut out = Vec::new();
    for call in CALLS {
        out.push((call, one_call(client, base, call).await));
    }
    out
}

/// The cap each call reads its answer with.
fn limit_of(call: &str) -> usize {
    if call == "webhook" {
        WEBHOOK_ANSWER_LIMIT
    } else {
        SMALL_ANSWER_LIMIT
    }
}

/// A plain TCP server that counts the connections it accepts (a followed
/// redirect would be one) and answers each with a 200 carrying a token,
/// so following would even look like success.
async fn canary() -> (String, Arc<AtomicU32>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let hits = Arc::new(AtomicU32::new(0));
    let counter = hits.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            counter.fetch_add(1, SeqCst);
            let body = format!(r#"{{"status":"ok","token":"{TOKEN}"}}"#);
            let answer = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let mut buf = [0u8; 4096];
            let _ = socket.read(&mut buf).await;
            let _ = socket.write_all(answer.as_bytes()).await;
        }
    });
    (base, hits)
}

/// A gateway answering every request with `status` and `Location: to`.
async fn redirecting(status: StatusCode, to: String) -> String {
    serve(Router::new().fallback(move || {
        let to = to.clone();
        async move { (status, [(axum::http::header::LOCATION, to)]) }
    }))
    .await
}

#[tokio::test]
async fn redirects_are_errors_and_never_followed() {
    let (canary, hits) = canary().await;
    let client = GatewayClient::new();
    for status in [301, 302, 303, 307, 308] {
        let agent = redirecting(
            StatusCode::from_u16(status).expect("status"),
            format!("{canary}/stolen"),
        )
        .await;
        for (call, result) in each_call(&client, &agent).await {
            assert!(
                matches!(result, Err(GatewayError::Redirect { status: s }) if s == status),
                "{call} on a {status}: {result:?}"
            );
        }
    }
    assert_eq!(hits.load(SeqCst), 0, "the canary was reached");
}

/// 100 MiB: what a hostile agent answers to exhaust our memory.
const FLOOD: usize = 100 * 1024 * 1024;
const FLOOD_CHUNK: usize = 64 * 1024;

/// A gateway answering every request with a 200 and a chunked body of
/// [`FLOOD`] bytes, produced lazily (never allocated at once); the
/// counter is the number of body bytes handed to the connection.
async fn flooding() -> (String, Arc<AtomicUsize>) {
    let sent = Arc::new(AtomicUsize::new(0));
    let counter = sent.clone();
    let router = Router::new().fallback(move || {
        let counter = counter.clone();
        async move {
            let chunk = Bytes::from(vec![b' '; FLOOD_CHUNK]);
            let body = futures::stream::repeat(chunk)
                .take(FLOOD / FLOOD_CHUNK)
                .map(move |c| {
                    counter.fetch_add(c.len(), SeqCst);
                    Ok::<_, std::convert::Infallible>(c)
                });
            (StatusCode::OK, Body::from_stream(body))
        }
    });
    (serve(router).await, sent)
}

#[tokio::test]
async fn a_100_mib_answer_is_refused_after_the_limit() {
    let (agent, sent) = flooding().await;
    // Any slowness would surface as `Timeout` instead of `TooLarge`.
    let client = GatewayClient::with_timeouts(
        Duration::from_secs(2),
        Duration::from_secs(5),
        Duration::from_secs(5),
    );
    for call in CALLS {
        let before = sent.load(SeqCst);
        let result = one_call(&client, &agent, call).await;
        let limit = limit_of(call);
        assert!(
            matches!(result, Err(GatewayError::TooLarge { limit: l }) if l == limit),
            "{call}: {result:?}"
        );
        // The connection is dropped: the agent stops being read once
        // the socket buffers are full, far from its 100 MiB.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let streamed = sent.load(SeqCst) - before;
        assert!(streamed < FLOOD / 4, "{call}: {streamed} bytes streamed");
    }
}

/// A gateway answering a chunked JSON body of exactly `len` bytes, in
/// two chunks (so only the streaming check can see its size).
async fn answering_bytes(len: usize) -> String {
    serve(Router::new().fallback(move || async move {
        let mut json = vec![b' '; len];
        json[0] = b'{';
        json[len - 1] = b'}';
        let second = Bytes::from(json.split_off(len / 2));
        let parts = [Bytes::from(json), second];
        let body = futures::stream::iter(parts.map(Ok::<_, std::convert::Infallible>));
        Body::from_stream(body)
    }))
    .await
}

#[tokio::test]
async fn the_limits_are_exact_and_the_webhook_has_the_larger_one() {
    let client = GatewayClient::new();
    let at_limit = answering_bytes(SMALL_ANSWER_LIMIT).await;
    assert_eq!(
        client.health(&at_limit).await.expect("at the limit"),
        json!({})
    );
    let over = answering_bytes(SMALL_ANSWER_LIMIT + 1).await;
    assert!(matches!(
        client.health(&over).await,
        Err(GatewayError::TooLarge {
            limit: SMALL_ANSWER_LIMIT
        })
    ));
    let reply = client
        .webhook(&over, TOKEN, "hi", None)
        .await
        .expect("passed through");
    assert_eq!((reply.status, reply.body), (200, json!({})));
    let webhook_over = answering_bytes(WEBHOOK_ANSWER_LIMIT + 1).await;
    assert!(matches!(
        client.webhook(&webhook_over, TOKEN, "hi", None).await,
        Err(GatewayError::TooLarge {
            limit: WEBHOOK_ANSWER_LIMIT
        })
    ));
}

/// A raw HTTP/1.1 server writing `head` to every request, then — with
/// `flood` — up to [`FLOOD`] bytes more until the client goes away,
/// else holding the connection open without a byte more. The counter is
/// the number of bytes written after `head`.
async fn raw_server(head: String, flood: bool) -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let sent = Arc::new(AtomicUsize::new(0));
    let counter = sent.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let head = head.clone();
            let counter = counter.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = socket.read(&mut buf).await;
                if socket.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                if !flood {
                    tokio::time::sleep(Duration::from_secs(60)).await;
                    return;
                }
                let chunk = vec![b' '; FLOOD_CHUNK];
                for _ in 0..FLOOD / FLOOD_CHUNK {
                    if socket.write_all(&chunk).await.is_err() {
                        return;
                    }
                    counter.fetch_add(chunk.len(), SeqCst);
                }
            });
        }
    });
    (base, sent)
}

#[tokio::test]
async fn a_declared_length_over_the_limit_is_refused_before_any_body() {
    // It declares 100 MiB and sends nothing: only the header can tell,
    // and waiting for the body would end in `Timeout` instead.
    let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {FLOOD}\r\n\r\n");
    let (agent, _) = raw_server(head, false).await;
    let client = GatewayClient::with_timeouts(
        Duration::from_secs(2),
        Duration::from_secs(3),
        Duration::from_secs(3),
    );
    for (call, result) in each_call(&client, &agent).await {
        let limit = limit_of(call);
        assert!(
            matches!(result, Err(GatewayError::TooLarge { limit: l }) if l == limit),
            "{call}: {result:?}"
        );
    }
}

#[tokio::test]
async fn a_declared_length_under_the_truth_bounds_what_is_read() {
    // It declares 15 bytes, then keeps sending: only the declared bytes
    // are the answer, the rest is never read into memory.
    let head = "HTTP/1.1 200 OK\r\ncontent-length: 15\r\n\r\n{\"status\":\"ok\"}".to_owned();
    // One server per call: a pooled connection with the flood behind
    // its answer is not reusable, and that is not what is tested here.
    let (health_agent, health_sent) = raw_server(head.clone(), true).await;
    let (webhook_agent, webhook_sent) = raw_server(head, true).await;
    let client = GatewayClient::new();
    assert_eq!(
        client
            .health(&health_agent)
            .await
            .expect("the declared bytes"),
        json!({"status": "ok"})
    );
    let reply = client
        .webhook(&webhook_agent, TOKEN, "hi", None)
        .await
        .expect("the declared bytes");
    assert_eq!((reply.status, reply.body), (200, json!({"status": "ok"})));
    tokio::time::sleep(Duration::from_millis(200)).await;
    for sent in [health_sent, webhook_sent] {
        let streamed = sent.load(SeqCst);
        assert!(streamed < FLOOD / 4, "{streamed} bytes streamed");
    }
}

#[tokio::test]
async fn connection_closed_mid_request_is_unreachable_and_not_retried() {
    // What docker-proxy does while the container is not listening yet.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let accepted = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let mut buf = [0u8; 1024];
            let _ = tokio::io::AsyncReadExt::read(&mut socket, &mut buf).await;
            drop(socket);
        }
    });
    let err = GatewayClient::new().pair(&base, "123456").await;
    assert!(matches!(err, Err(GatewayError::Unreachable(_))), "{err:?}");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        accepted.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "the code was sent once"
    );
}

/// `/pair/code` as upstream answers it, and what is not a code.
#[tokio::test]
async fn pair_code_and_pairing_open() {
    let router = Router::new()
        .route(
            "/unpaired/pair/code",
            get(|| async {
                Json(json!({"success": true, "pairing_required": true, "pairing_code": "654321"}))
            }),
        )
        .route(
            "/paired/pair/code",
            get(|| async {
                Json(json!({"success": true, "pairing_required": true, "pairing_code": null}))
            }),
        )
        .route(
            "/odd/pair/code",
            get(|| async { Json(json!({"pairing_code": "12345; rm -rf /"})) }),
        )
        .route(
            "/loopback/pair/code",
            get(|| async { (StatusCode::FORBIDDEN, "loopback only") }),
        )
        .route("/open/api/status", get(|| async { Json(json!({})) }))
        .route("/closed/api/status", get(status));
    let base = serve(router).await;
    let client = GatewayClient::new();
    let code = |p: &str| {
        let url = format!("{base}/{p}");
        let client = client.clone();
        async move { client.pair_code(&url).await.ok() }
    };
    assert_eq!(
        code("unpaired").await,
        Some(PairCode::Code("654321".into()))
    );
    assert_eq!(code("paired").await, Some(PairCode::None));
    assert_eq!(code("loopback").await, Some(PairCode::Unavailable));
    assert_eq!(code("missing").await, Some(PairCode::Unavailable));
    assert_eq!(code("odd").await, None, "not six digits is an error");
    assert!(client
        .pairing_open(&format!("{base}/open"))
        .await
        .expect("answered"));
    assert!(!client
        .pairing_open(&format!("{base}/closed"))
        .await
        .expect("answered"));
}
