//! Names (issue 5): a slug is a DNS label and not a reserved word, so no
//! user text reaches a container name, a volume name, a Traefik rule or a
//! label key. Hostile text sent as `slug` is refused (422 naming `slug`);
//! sent as `name` it is either refused (422 naming the field to blame) or
//! accepted with a derived slug that is a safe DNS label. Nothing refused
//! reaches the store or Docker.

use reqwest::StatusCode;
use serde_json::{json, Value};
use zcaas_test_support::{assert_error, labelled, TestApp};

/// DESIGN.md §2's slug rule, restated here rather than imported, so the test
/// checks the service against the specification and not against itself.
fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    (1..=63).contains(&b.len())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

fn body(name: &str, slug: Option<&str>) -> Value {
    let mut b = json!({"name": name, "provider": "openai", "model": "gpt-4o-mini"});
    if let Some(s) = slug {
        b["slug"] = json!(s);
    }
    b
}

/// Every hostile value the issue lists, and a few more shell, path and
/// Traefik-rule shapes.
fn hostile() -> Vec<String> {
    let mut v: Vec<String> = [
        "a`b",
        "Host(`evil.example`)",
        "a && b",
        "a&&b",
        "a || b",
        "a||b",
        "my.agent",
        "a.b.c",
        "me@home",
        "a*",
        "*",
        "two words",
        " lead-space",
        "line\nbreak",
        "carriage\rreturn",
        "tab\there",
        "nul\0byte",
        "ünïcödé",
        "日本語",
        "🦀",
        "UPPER",
        "Mixed-Case",
        "-lead",
        "trail-",
        "-",
        "--",
        "a_b",
        "a/b",
        "../etc",
        "$(id)",
        "${HOME}",
        "a;b",
        "a:b",
        "a=b",
        "a,b",
        "!a",
        "(a)",
        "a\u{200b}b",
        "\u{202e}rtl",
        "",
        " ",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.push("a".repeat(64));
    v.push("a".repeat(300));
    v.push(format!("{}.example.com", "x".repeat(60)));
    v
}

#[tokio::test]
async fn hostile_slugs_are_refused_naming_the_slug() {
    let mut app = TestApp::spawn().await;
    let token = app.register_email("slugs@example.com").await;
    let mut values = hostile();
    values.extend(
        zcaas::validation::RESERVED_SLUGS
            .iter()
            .map(|s| s.to_string()),
    );
    for slug in &values {
        let (status, resp) = app
            .create_agent(&token, body("Valid Name", Some(slug)))
            .await;
        assert_error(
            status,
            &resp,
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("slug"),
        );
        assert!(
            resp["error"]["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("slug:")),
            "{slug:?} → {resp}"
        );
    }
    // A valid one goes through, so the refusals above are the rule's doing.
    let ok = app
        .create_pending_agent(&token, body("Valid Name", Some("valid-name-1")))
        .await;
    assert_eq!(ok["slug"], "valid-name-1");

    let rows: Vec<String> = sqlx::query_scalar("SELECT slug FROM agents")
        .fetch_all(app.sql())
        .await
        .unwrap();
    assert_eq!(rows, vec!["valid-name-1".to_owned()]);
    assert!(labelled(&["ps", "-aq"], &app.prefix).is_empty());
    app.shutdown().await;
}

/// What a hostile display name must lead to.
#[derive(Debug)]
enum Expect {
    /// 422 naming this field.
    Refused(&'static str),
    /// 202 with this derived slug.
    Slug(String),
}

#[tokio::test]
async fn hostile_names_are_refused_or_derive_a_safe_slug() {
    // No quota in the way of the accepted ones.
    let mut app = TestApp::spawn_with(|c| c.free.max_agents = None).await;
    let token = app.register_email("names@example.com").await;
    let long64 = "b".repeat(64);
    let cases: Vec<(&str, Expect)> = vec![
        ("x`y", Expect::Slug("x-y".into())),
        (
            "Host(`evil.example`) || Host(`x`)",
            Expect::Slug("host-evil-example-host-x".into()),
        ),
        ("p && q", Expect::Slug("p-q".into())),
        ("r||s", Expect::Slug("r-s".into())),
        ("my.agent.v2", Expect::Slug("my-agent-v2".into())),
        ("me@home", Expect::Slug("me-home".into())),
        ("star*", Expect::Slug("star".into())),
        ("two  words", Expect::Slug("two-words".into())),
        ("ÜNÏCÖDÉ name", Expect::Slug("n-c-d-name".into())),
        ("UPPER", Expect::Slug("upper".into())),
        ("-lead", Expect::Slug("lead".into())),
        ("trail-", Expect::Slug("trail".into())),
        ("$(id)", Expect::Slug("id".into())),
        ("../../etc", Expect::Slug("etc".into())),
        ("c/d;e=f", Expect::Slug("c-d-e-f".into())),
        ("zw\u{200b}sp", Expect::Slug("zw-sp".into())),
        ("\u{202e}rtl", Expect::Slug("rtl".into())),
        // 64 characters is a valid name; the slug is cut to 63.
        (&long64, Expect::Slug("b".repeat(63))),
        ("line\nbreak", Expect::Refused("name")),
        ("carriage\rreturn", Expect::Refused("name")),
        ("tab\there", Expect::Refused("name")),
        ("nul\0byte", Expect::Refused("name")),
        ("", Expect::Refused("name")),
        ("   ", Expect::Refused("name")),
        ("日本語", Expect::Refused("slug")),
        ("🦀", Expect::Refused("slug")),
        ("--", Expect::Refused("slug")),
        ("* && ||", Expect::Refused("slug")),
        ("Admin", Expect::Refused("slug")),
        ("-TRAEFIK-", Expect::Refused("slug")),
        ("www", Expect::Refused("slug")),
    ];
    let long300 = "a".repeat(300);
    let mut cases = cases;
    cases.push((&long300, Expect::Refused("name")));

    let mut accepted = Vec::new();
    for (name, expect) in &cases {
        let (status, resp) = app.create_agent(&token, body(name, None)).await;
        match expect {
            Expect::Refused(field) => {
                assert_error(status, &resp, StatusCode::UNPROCESSABLE_ENTITY, Some(field));
            }
            Expect::Slug(slug) => {
                assert_eq!(status, StatusCode::ACCEPTED, "{name:?} → {resp}");
                assert_eq!(resp["slug"], slug.as_str(), "{name:?}");
                assert!(is_dns_label(slug), "{slug}");
                assert_eq!(resp["subdomain"], format!("{slug}.test.local"));
                // The display name is kept as given (trimmed), never used as a name.
                assert_eq!(resp["name"], name.trim(), "{name:?}");
                accepted.push(slug.clone());
            }
        }
    }

    // The store holds exactly the accepted agents, each with a DNS-label slug.
    let mut rows: Vec<String> = sqlx::query_scalar("SELECT slug FROM agents")
        .fetch_all(app.sql())
        .await
        .unwrap();
    rows.sort();
    accepted.sort();
    assert_eq!(rows, accepted);
    assert!(rows.iter().all(|s| is_dns_label(s)));
    // Nothing refused reached Docker; and (the runtime image of this harness
    // does not exist) nothing accepted created a container or volume either.
    assert!(labelled(&["ps", "-aq"], &app.prefix).is_empty());
    assert!(labelled(&["volume", "ls", "-q"], &app.prefix).is_empty());
    app.shutdown().await;
}

#[test]
fn the_specification_rule_is_what_the_test_checks() {
    for ok in ["a", "a-b", "0", &"z".repeat(63)] {
        assert!(is_dns_label(ok), "{ok}");
    }
    for bad in ["", "-a", "a-", "A", "a.b", "a_b", "é", &"z".repeat(64)] {
        assert!(!is_dns_label(bad), "{bad}");
    }
    // And the service's own check agrees on every hostile value.
    for v in hostile() {
        assert_eq!(
            zcaas::validation::slug(&v).is_ok(),
            is_dns_label(&v) && !zcaas::validation::RESERVED_SLUGS.contains(&v.as_str()),
            "{v:?}"
        );
    }
}
