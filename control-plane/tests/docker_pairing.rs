//! Reading the pairing code from the logs of one start, against the real
//! engine: the provider stub with `STUB_BANNER=1` prints a random code in
//! the gateway's two forms at every start. Restarts follow each other within
//! the same second, where the engine's one-second `since` alone would hand
//! back the previous start's code.

use chrono::{DateTime, Utc};
use std::time::{Duration, Instant};
use zcaas::docker::{ContainerSpec, LogLine};
use zcaas::reconciler::pairing::wait_for_code;
use zcaas::reconciler::pairing::HEADER_RE;
use zcaas_test_support::{ensure_stub_image, free_port, TestScope, STUB_IMAGE};

async fn started_stub(scope: &TestScope, suffix: &str, banner: bool) -> (ContainerSpec, String) {
    ensure_stub_image(&scope.docker).await;
    let network = scope.network().await;
    let port = free_port().expect("port");
    let mut spec = scope.spec(suffix, STUB_IMAGE, &network, port);
    spec.env = vec!["PORT=42617".into()];
    if banner {
        spec.env.push("STUB_BANNER=1".into());
    }
    let id = scope.docker.create_container(&spec).await.expect("create");
    scope.docker.start(&id).await.expect("start");
    (spec, id)
}

async fn started_at(scope: &TestScope, id: &str) -> DateTime<Utc> {
    let c = scope
        .docker
        .inspect(id)
        .await
        .expect("inspect")
        .expect("exists");
    c.started_at.expect("started")
}

/// Every `X-Pairing-Code:` line of the container's logs, oldest first.
async fn printed_codes(scope: &TestScope, id: &str) -> Vec<(DateTime<Utc>, String)> {
    let logs: Vec<LogLine> = scope.docker.logs_tail(id, 1000).await.expect("logs");
    logs.iter()
        .filter_map(|l| {
            let code = HEADER_RE.captures(&l.text)?[1].to_owned();
            Some((l.at.expect("stamped"), code))
        })
        .collect()
}

#[tokio::test]
async fn each_start_yields_its_own_code_even_within_one_second() {
    let scope = TestScope::new().await;
    let (_, id) = started_stub(&scope, "pair", true).await;
    let timeout = Duration::from_secs(10);

    let mut previous_start = started_at(&scope, &id).await;
    let first = wait_for_code(&scope.docker, &id, previous_start, timeout)
        .await
        .expect("wait");
    let printed = printed_codes(&scope, &id).await;
    assert_eq!(printed.len(), 1, "{printed:?}");
    assert_eq!(first.as_deref(), Some(printed[0].1.as_str()));

    let mut same_second = 0;
    let mut stamped_before_start = 0;
    for round in 0..4 {
        scope
            .docker
            .restart(&id, Duration::ZERO)
            .await
            .expect("restart");
        let start = started_at(&scope, &id).await;
        assert!(start > previous_start, "round {round}: StartedAt moved on");
        if start.timestamp() == previous_start.timestamp() {
            same_second += 1;
        }
        let code = wait_for_code(&scope.docker, &id, start, timeout)
            .await
            .expect("wait");
        let printed = printed_codes(&scope, &id).await;
        assert_eq!(
            printed.len(),
            round + 2,
            "one banner per start: {printed:?}"
        );
        let (stamp, newest) = printed.last().expect("a code").clone();
        assert_eq!(
            code.as_deref(),
            Some(newest.as_str()),
            "round {round}: {printed:?}"
        );
        if stamp < start {
            stamped_before_start += 1;
        }
        previous_start = start;
    }
    // Not asserted (timing-dependent), but the point of the test: shown with
    // `--nocapture`.
    println!(
        "{same_second} of 4 restarts in the previous start's second; \
         {stamped_before_start} banners stamped before StartedAt"
    );
}

#[tokio::test]
async fn a_code_printed_before_since_is_not_returned() {
    let scope = TestScope::new().await;
    let (_, id) = started_stub(&scope, "stale", true).await;
    let start = started_at(&scope, &id).await;
    let code = wait_for_code(&scope.docker, &id, start, Duration::from_secs(10)).await;
    assert!(code.expect("wait").is_some());
    // As if asked about a later start of the same run: the banner is older.
    let later = start + chrono::Duration::seconds(3);
    let began = Instant::now();
    let stale = wait_for_code(&scope.docker, &id, later, Duration::from_secs(1)).await;
    assert_eq!(stale.expect("wait"), None);
    assert!(began.elapsed() >= Duration::from_secs(1));
}

#[tokio::test]
async fn no_code_times_out_with_none() {
    let scope = TestScope::new().await;
    let (_, id) = started_stub(&scope, "quiet", false).await;
    let start = started_at(&scope, &id).await;
    let began = Instant::now();
    let code = wait_for_code(&scope.docker, &id, start, Duration::from_millis(1500)).await;
    assert_eq!(code.expect("wait"), None);
    let waited = began.elapsed();
    assert!(
        waited >= Duration::from_millis(1500) && waited < Duration::from_secs(5),
        "{waited:?}"
    );
}

#[tokio::test]
async fn a_container_that_stops_while_waiting_ends_the_wait_at_once() {
    let scope = TestScope::new().await;
    let (_, id) = started_stub(&scope, "dies", false).await;
    let start = started_at(&scope, &id).await;
    let docker = scope.docker.clone();
    let waiter = {
        let id = id.clone();
        tokio::spawn(async move {
            let began = Instant::now();
            let code = wait_for_code(&docker, &id, start, Duration::from_secs(60)).await;
            (code.expect("wait"), began.elapsed())
        })
    };
    let mut follow = scope.docker.logs_follow(&id, 10);
    tokio::time::sleep(Duration::from_millis(500)).await;
    scope
        .docker
        .stop(&id, Duration::from_secs(5))
        .await
        .expect("stop");
    // The follow stream saw the start line and ends with the container.
    let followed = tokio::time::timeout(Duration::from_secs(10), async {
        let mut lines = Vec::new();
        while let Some(line) = futures::StreamExt::next(&mut follow).await {
            lines.push(line.expect("log line"));
        }
        lines
    })
    .await
    .expect("the follow stream ends when the container stops");
    assert!(
        followed
            .iter()
            .any(|l| l.text.contains("provider-stub listening") && l.at.is_some()),
        "{followed:?}"
    );
    let (code, waited) = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("the wait ended promptly")
        .expect("join");
    assert_eq!(code, None);
    assert!(waited < Duration::from_secs(10), "{waited:?}");

    // A container that is gone: None at once.
    scope.docker.remove_container(&id).await.expect("remove");
    let gone = wait_for_code(&scope.docker, &id, start, Duration::from_secs(30)).await;
    assert_eq!(gone.expect("wait"), None);
}
