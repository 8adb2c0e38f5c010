//! Provider base URLs supplied by users (issue 5): http(s) only, no
//! credentials, and no host that is or resolves to a loopback, private,
//! link-local (cloud metadata) or otherwise internal address — in any of the
//! spellings a URL parser accepts (decimal, hex, octal and short IPv4 forms,
//! IPv6 and IPv4-in-IPv6 forms, names in /etc/hosts) — unless the operator
//! setting `allow_private_provider_urls` is on. Checked on the rule itself and
//! through the API (`providerUrl` and `custom:<url>`, on create and PATCH).

use std::net::ToSocketAddrs;

use reqwest::StatusCode;
use serde_json::json;
use zcaas::validation::{base_url, is_internal};
use zcaas_test_support::{assert_error, TestApp};

/// Internal addresses in every spelling the WHATWG URL parser turns into one.
const INTERNAL: &[&str] = &[
    "http://127.0.0.1/v1",
    "http://127.0.0.1:11434",
    "http://127.1/",
    "http://127.000.000.001/",
    "http://2130706433/",
    "http://0x7f000001/",
    "http://0x7f.1/",
    "http://0x7f.0.0.1/",
    "http://017700000001/",
    "http://0177.0.0.1/",
    "http://0/",
    "http://0.0.0.0:8080/",
    "http://[::1]/",
    "http://[::1]:8080/v1",
    "http://[0:0:0:0:0:0:0:1]/",
    "http://[::]/",
    "http://[::ffff:127.0.0.1]/",
    "http://[::ffff:7f00:1]/",
    "http://[::ffff:169.254.169.254]/",
    "http://[::127.0.0.1]/",
    "http://[64:ff9b::7f00:1]/",
    "http://169.254.169.254/latest/meta-data/",
    "http://2852039166/",
    "http://0xa9fea9fe/",
    "http://0251.0376.0251.0376/",
    "http://[fd00:ec2::254]/",
    "http://[fe80::1]/",
    "http://10.0.0.1/",
    "http://10.255.255.255/",
    "http://172.16.0.1/",
    "http://172.31.255.254/",
    "http://192.168.1.1/",
    "http://100.64.0.1/",
    "http://192.0.0.1/",
    "http://198.18.0.1/",
    "http://224.0.0.1/",
    "http://255.255.255.255/",
    "http://[ff02::1]/",
    "https://localhost/",
    "http://LOCALHOST:8080/",
    "http://localhost./",
    "http://LocalHost.:1/",
    "http://api.localhost/",
    "http://metadata.google.internal/computeMetadata/v1/",
    "http://metadata.internal./",
    "http://127.0.0.1.nip.io/",
    "http://does-not-exist.invalid/",
];

/// Not URLs an agent may call, whatever the operator setting.
const MALFORMED: &[&str] = &[
    "",
    "not a url",
    "//example.com/v1",
    "ftp://1.1.1.1/",
    "file:///etc/passwd",
    "gopher://1.1.1.1:70/",
    "javascript:alert(1)",
    "data:text/plain,hello",
    "unix:///var/run/docker.sock",
    "http+unix://%2Fvar%2Frun%2Fdocker.sock/v1.41/containers/json",
    "https://user:pw@1.1.1.1/",
    "https://user@1.1.1.1/",
    "http://[fe80::1%25eth0]/",
    "http://[::1/",
];

/// Public addresses (no DNS involved, so the test does not need a network).
const PUBLIC: &[&str] = &[
    "https://1.1.1.1/v1",
    "http://8.8.8.8:8080/v1",
    "https://[2606:4700:4700::1111]/v1",
    "https://[::ffff:1.1.1.1]/v1",
];

/// The machine's own host name: it resolves (through /etc/hosts or DNS) to
/// this host, an internal address, without saying `localhost`.
fn own_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .expect("host name")
        .trim()
        .to_owned()
}

#[tokio::test]
async fn the_rule_refuses_internal_hosts_in_every_spelling() {
    for url in INTERNAL {
        let err = base_url("providerUrl", url, false)
            .await
            .expect_err(&format!("{url} must be refused"));
        assert_eq!(err.field, "providerUrl", "{url}");
        assert!(err.message.starts_with("providerUrl: "), "{url}: {err}");
    }
    for url in MALFORMED {
        for allow_private in [false, true] {
            let err = base_url("providerUrl", url, allow_private)
                .await
                .expect_err(&format!("{url} must be refused ({allow_private})"));
            assert_eq!(err.field, "providerUrl", "{url}");
        }
    }
    for url in PUBLIC {
        assert_eq!(
            base_url("providerUrl", url, false).await.as_deref(),
            Ok(*url),
            "{url}"
        );
    }
    // The operator setting lets internal hosts through (the tests' provider
    // stand-in lives on a private network), and nothing else.
    for url in INTERNAL.iter().filter(|u| !u.contains(".invalid")) {
        assert!(base_url("providerUrl", url, true).await.is_ok(), "{url}");
    }
}

#[tokio::test]
async fn names_that_resolve_to_internal_addresses_are_refused() {
    let host = own_hostname();
    let resolved: Vec<_> = (host.as_str(), 80)
        .to_socket_addrs()
        .expect("the host name resolves")
        .collect();
    assert!(
        !resolved.is_empty() && resolved.iter().all(|a| is_internal(a.ip())),
        "precondition: {host} resolves to internal addresses only ({resolved:?})"
    );
    for url in [
        format!("http://{host}/v1"),
        format!("https://{host}:8443/"),
        format!("http://{}/", host.to_uppercase()),
        format!("http://{host}./"),
    ] {
        let err = base_url("providerUrl", &url, false).await.expect_err(&url);
        assert_eq!(err.field, "providerUrl");
        assert!(
            err.message.contains("loopback, private or link-local"),
            "{url}: {err}"
        );
    }
}

#[tokio::test]
async fn the_api_refuses_internal_provider_urls_on_create_and_patch() {
    let mut app = TestApp::spawn().await;
    assert!(!app.state().config.allow_private_provider_urls);
    let token = app.register_email("urls@example.com").await;
    let agent = app
        .create_pending_agent(
            &token,
            json!({"name": "Url Target", "provider": "openai", "model": "m"}),
        )
        .await;
    let id = agent["id"].as_str().unwrap();
    let host = own_hostname();
    let hostname_url = format!("http://{host}:8080/v1");
    let mut urls: Vec<&str> = vec![
        "http://2130706433/v1",
        "http://0x7f.1/v1",
        "http://[::1]/v1",
        "http://[::ffff:169.254.169.254]/",
        "http://169.254.169.254/latest/meta-data/",
        "http://0.0.0.0/",
        "http://localhost:11434",
        "http://172.17.0.1:2375/",
        "ftp://1.1.1.1/",
        "unix:///var/run/docker.sock",
    ];
    urls.push(&hostname_url);
    for url in urls {
        let mut create = json!({"name": "Url Agent", "provider": "openai", "model": "m"});
        create["providerUrl"] = json!(url);
        let (status, resp) = app.create_agent(&token, create).await;
        assert_error(
            status,
            &resp,
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("providerUrl"),
        );
        let custom =
            json!({"name": "Url Agent", "provider": format!("custom:{url}"), "model": "m"});
        let (status, resp) = app.create_agent(&token, custom).await;
        assert_error(
            status,
            &resp,
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("provider"),
        );
        let (status, resp) = app
            .patch_agent(&token, id, json!({"providerUrl": url}))
            .await;
        assert_error(
            status,
            &resp,
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("providerUrl"),
        );
        let (status, resp) = app
            .patch_agent(&token, id, json!({"provider": format!("custom:{url}")}))
            .await;
        assert_error(
            status,
            &resp,
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("provider"),
        );
    }
    // Nothing was created or changed by the refusals.
    let (_, list) = app.list_agents(&token).await;
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
    assert_eq!(list[0]["provider"], "openai");
    assert_eq!(list[0]["providerUrl"], serde_json::Value::Null);
    // A public address is accepted (the refusals are about the host).
    let (status, resp) = app
        .patch_agent(&token, id, json!({"providerUrl": "https://1.1.1.1/v1"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    assert_eq!(resp["providerUrl"], "https://1.1.1.1/v1");
    app.shutdown().await;
}

#[tokio::test]
async fn the_operator_setting_allows_private_hosts_but_not_other_schemes() {
    let mut app = TestApp::spawn_with(|c| c.allow_private_provider_urls = true).await;
    let token = app.register_email("private@example.com").await;
    let mut create = json!({"name": "Local Llm", "provider": "ollama", "model": "llama3"});
    create["providerUrl"] = json!("http://127.0.0.1:11434");
    let agent = app.create_pending_agent(&token, create).await;
    assert_eq!(agent["providerUrl"], "http://127.0.0.1:11434");
    let custom =
        json!({"name": "Stub", "provider": "custom:http://10.1.2.3:8080/v1", "model": "m"});
    app.create_pending_agent(&token, custom).await;
    for url in ["file:///etc/passwd", "unix:///var/run/docker.sock"] {
        let mut bad = json!({"name": "Bad Scheme", "provider": "openai", "model": "m"});
        bad["providerUrl"] = json!(url);
        let (status, resp) = app.create_agent(&token, bad).await;
        assert_error(
            status,
            &resp,
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("providerUrl"),
        );
    }
    app.shutdown().await;
}
