//! Floods of the anonymous routes over real HTTP: parallel wrong logins for
//! one email run at most [`MAX_FAILURES`] password checks (counted by
//! `zcaas_password_verifications_total`) and get 429 for the rest, and one
//! address registers at most [`MAX_REGISTRATIONS`] accounts. A 503 (hashing
//! busy: every slot taken for the whole queue wait) is tolerated where a
//! loaded machine could produce it; it must carry `Retry-After` too.

use futures::future::join_all;
use reqwest::StatusCode;
use serde_json::{json, Value};
use zcaas::api::auth::{MAX_FAILURES, MAX_REGISTRATIONS};
use zcaas_test_support::{assert_error, TestApp};

/// Parallel requests of each flood.
const FLOOD: usize = 200;

/// `(status, Retry-After, body)` of a POST.
async fn post(app: &TestApp, path: &str, body: Value) -> (StatusCode, Option<u64>, Value) {
    let resp = app
        .http
        .post(app.url(path))
        .json(&body)
        .send()
        .await
        .expect("request");
    let status = resp.status();
    let retry_after = resp
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().expect("ascii").parse().expect("seconds"));
    (status, retry_after, resp.json().await.expect("JSON body"))
}

/// Responses by status; every refusal is the JSON error body with a
/// `Retry-After`.
fn tally(responses: &[(StatusCode, Option<u64>, Value)]) -> (usize, usize, usize, usize) {
    let (mut ok, mut unauthorized, mut limited, mut busy) = (0, 0, 0, 0);
    for (status, retry_after, body) in responses {
        match *status {
            StatusCode::OK | StatusCode::CREATED => ok += 1,
            StatusCode::UNAUTHORIZED => unauthorized += 1,
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE => {
                assert_error(*status, body, *status, None);
                assert!(retry_after.is_some_and(|s| s >= 1), "{status} {body}");
                if *status == StatusCode::TOO_MANY_REQUESTS {
                    assert_eq!(body["error"]["code"], "too_many_requests");
                    limited += 1;
                } else {
                    assert_eq!(body["error"]["code"], "busy");
                    busy += 1;
                }
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    (ok, unauthorized, limited, busy)
}

/// The value of an unlabelled series in `/metrics`.
async fn metric(app: &TestApp, name: &str) -> u64 {
    let text = app.metrics().await;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("{name} not in\n{text}"))
        .parse()
        .expect("a count")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_wrong_logins_check_at_most_the_limit() {
    let mut app = TestApp::spawn().await;
    app.register_email("target@example.com").await;
    let wrong = json!({"email": "target@example.com", "password": "wrong-pass"});
    let responses =
        join_all((0..FLOOD).map(|_| post(&app, "/api/auth/login", wrong.clone()))).await;
    let (ok, unauthorized, limited, busy) = tally(&responses);
    let checked = metric(&app, "zcaas_password_verifications_total").await;

    assert_eq!(ok, 0);
    assert!(unauthorized >= 1, "some guesses are checked");
    assert!(
        unauthorized <= MAX_FAILURES as usize,
        "{unauthorized} checked"
    );
    assert_eq!(checked, unauthorized as u64, "one check per 401, none else");
    assert_eq!(limited + busy, FLOOD - unauthorized);
    assert!(limited >= FLOOD - MAX_FAILURES as usize, "{limited} × 429");

    // Once the limit is used up, even the right password is refused
    // without a check; another email is unaffected.
    if unauthorized == MAX_FAILURES as usize {
        let right = json!({"email": "target@example.com", "password": "password-123"});
        let (status, retry_after, body) = post(&app, "/api/auth/login", right).await;
        assert_error(status, &body, StatusCode::TOO_MANY_REQUESTS, None);
        assert!(retry_after.is_some());
        assert_eq!(
            metric(&app, "zcaas_password_verifications_total").await,
            checked
        );
    }
    let other = json!({"email": "nobody@example.com", "password": "wrong-pass"});
    let (status, _, body) = post(&app, "/api/auth/login", other).await;
    assert_error(status, &body, StatusCode::UNAUTHORIZED, None);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_registers_at_most_the_limit() {
    let mut app = TestApp::spawn().await;
    let body =
        |i: usize| json!({"email": format!("flood{i}@example.com"), "password": "password-123"});
    let responses = join_all((0..FLOOD).map(|i| post(&app, "/api/auth/register", body(i)))).await;
    let (created, unauthorized, limited, busy) = tally(&responses);
    assert_eq!(unauthorized, 0);
    assert!(
        (1..=MAX_REGISTRATIONS as usize).contains(&created),
        "{created} created"
    );
    assert_eq!(limited + busy, FLOOD - created);

    // A refusal for busy hashing gave its place back: one at a time, the
    // address gets exactly the limit, then 429.
    let mut total = created;
    let mut i = FLOOD;
    loop {
        let (status, retry_after, reply) = post(&app, "/api/auth/register", body(i)).await;
        i += 1;
        if status == StatusCode::TOO_MANY_REQUESTS {
            assert!(retry_after.is_some_and(|s| s >= 1), "{reply}");
            break;
        }
        assert_eq!(status, StatusCode::CREATED, "{reply}");
        total += 1;
        assert!(total <= MAX_REGISTRATIONS as usize, "over the limit");
    }
    assert_eq!(total, MAX_REGISTRATIONS as usize);
    let accounts = app.state().store.users().list().await.expect("users");
    assert_eq!(
        accounts
            .iter()
            .filter(|u| u.email.starts_with("flood"))
            .count(),
        MAX_REGISTRATIONS as usize
    );
    // Invalid input is refused before the limit is consulted (and never
    // counted).
    let (status, _, reply) = post(
        &app,
        "/api/auth/register",
        json!({"email": "late@example.com", "password": "short"}),
    )
    .await;
    assert_error(
        status,
        &reply,
        StatusCode::UNPROCESSABLE_ENTITY,
        Some("password"),
    );
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_trusted_proxy_the_forwarded_client_is_limited_not_the_proxy() {
    // The test client connects from 127.0.0.1: trusted as a proxy here.
    let mut app =
        TestApp::spawn_with(|c| c.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()]).await;
    let register = |i: usize, client: &'static str| {
        let app = &app;
        async move { register_via(app, &format!("proxied{i}"), &format!("1.2.3.4, {client}")).await }
    };
    let limit = MAX_REGISTRATIONS as usize;
    for i in 0..limit {
        assert_eq!(register(i, "198.51.100.1").await, StatusCode::CREATED);
    }
    assert_eq!(
        register(limit, "198.51.100.1").await,
        StatusCode::TOO_MANY_REQUESTS,
        "the forwarded client is limited"
    );
    // Another client behind the same proxy is not; the forged left-most
    // entry (1.2.3.4) counts for nobody.
    assert_eq!(
        register(limit + 1, "198.51.100.2").await,
        StatusCode::CREATED
    );
    app.shutdown().await;

    // Without trusted proxies the header is ignored: one peer, one limit.
    let mut app = TestApp::spawn().await;
    for i in 0..=limit {
        let status = register_via(&app, &format!("direct{i}"), &format!("198.51.100.{i}")).await;
        let expected = if i < limit {
            StatusCode::CREATED
        } else {
            StatusCode::TOO_MANY_REQUESTS
        };
        assert_eq!(status, expected, "registration {i}");
    }
    app.shutdown().await;
}

/// One registration of `<local>@example.com` with `X-Forwarded-For:
/// forwarded`; a 503 (hashing busy: the other floods of this binary share
/// the pool) is retried, so the status is the limiter's answer.
async fn register_via(app: &TestApp, local: &str, forwarded: &str) -> StatusCode {
    for _ in 0..100 {
        let status = app
            .http
            .post(app.url("/api/auth/register"))
            .header("x-forwarded-for", forwarded)
            .json(&json!({"email": format!("{local}@example.com"), "password": "password-123"}))
            .send()
            .await
            .expect("request")
            .status();
        if status != StatusCode::SERVICE_UNAVAILABLE {
            return status;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("hashing stayed busy for 100 tries");
}
