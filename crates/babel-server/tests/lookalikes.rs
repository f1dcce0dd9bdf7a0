//! Look-alike accounts (issue #14, finding 9): addresses that differ only
//! by invisible, direction-changing, width or script tricks are one
//! account, or refused; internationalised domains; case-insensitive logout
//! beyond ASCII.
#![allow(clippy::unwrap_used)]

mod common;

use common::{Client, assert_refused, start};
use serde_json::{Value, json};

fn create(mail: &str) -> Value {
    json!({"user_mail": mail, "pass": "password123"})
}

#[tokio::test]
async fn look_alike_addresses_do_not_make_new_accounts() {
    let (server, _dir) = start().await;
    let mut c = Client::connect(server.addr()).await;
    c.create("ann@example.org").await;
    for (fake, why) in [
        ("an\u{200B}n@example.org", "invisible"),           // zero-width space
        ("an\u{2060}n@example.org", "invisible"),           // word joiner
        ("ann\u{202E}@example.org", "bidirectional"),       // right-to-left override
        ("an\u{00AD}n@example.org", "invisible"),           // soft hyphen
        ("\u{0430}nn@example.org", "looks like"),           // Cyrillic а
        ("ann@ex\u{0430}mple.org", "looks like"),           // Cyrillic а in the domain
        ("ａｎｎ@example.org", "already exists"),           // full-width letters
        ("ＡＮＮ@ＥＸＡＭＰＬＥ.ＯＲＧ", "already exists"), // full-width capitals
    ] {
        let (status, v) = c.call(Value::Null, "/create", create(fake)).await;
        assert_eq!(status, 403, "{fake:?} was accepted as a new account: {v}");
        let reason = v["error"].as_str().unwrap();
        assert!(reason.contains(why), "{fake:?}: reason {reason:?} should say {why:?}");
        assert!(
            !reason.chars().any(|ch| matches!(ch, '\u{200B}' | '\u{2060}' | '\u{202E}' | '\u{00AD}')),
            "{reason:?}"
        );
    }
    // The real owner is not disturbed, and a full-width spelling is theirs.
    let (status, v) = c.call(Value::Null, "/login", create("ａｎｎ@example.org")).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["email"], "ann@example.org");
}

#[tokio::test]
async fn names_may_not_hide_or_reorder_text() {
    let (server, _dir) = start().await;
    let mut c = Client::connect(server.addr()).await;
    let with_name = |mail: &str, name: &str| json!({"user_mail": mail, "pass": "password123", "name": name});
    assert_refused(
        c.call(Value::Null, "/create", with_name("ann@example.org", "ann\u{202E}gnp.exe")).await,
        "bidirectional",
    );
    assert_refused(c.call(Value::Null, "/create", with_name("ann@example.org", "An\u{200B}n")).await, "invisible");
    // Full-width letters are written as ordinary ones; the case is kept.
    let (status, v) = c.call(Value::Null, "/create", with_name("ann@example.org", "Ａｎｎ Lee")).await;
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["name"], "Ann Lee");
}

#[tokio::test]
async fn internationalised_domains_are_one_address_answered_in_unicode() {
    let (server, _dir) = start().await;
    let mut c = Client::connect(server.addr()).await;
    let (status, v) = c.call(Value::Null, "/create", create("Émile@Bücher.Example")).await;
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["email"], "émile@bücher.example", "U-labels, lowercase");
    let emile = common::session(v);
    assert_refused(c.call(Value::Null, "/create", create("ÉMILE@XN--BCHER-KVA.EXAMPLE")).await, "already exists");
    let (status, v) = c.call(Value::Null, "/login", create("ÉMILE@xn--bcher-kva.example")).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["id"], emile.id.as_str());
    assert_eq!(v["email"], "émile@bücher.example");
    // A contact request by the A-label form reaches the same account.
    let mut other = Client::connect(server.addr()).await;
    let zoe = other.create("zoe@example.org").await;
    let (status, v) =
        other.call(zoe.header(), "/add_contact", json!({"contact_email": "ÉMILE@xn--bcher-kva.example"})).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(other.contacts(&zoe).await, vec![("émile@bücher.example".to_owned(), "pending".to_owned())]);
    assert_refused(other.call(Value::Null, "/create", create("x@bad_domain.example")).await, "not a valid");
}

#[tokio::test]
async fn logout_by_email_matches_beyond_ascii() {
    let (server, _dir) = start().await;
    let mut c = Client::connect(server.addr()).await;
    let (status, v) = c.call(Value::Null, "/create", create("émile@example.org")).await;
    assert_eq!(status, 201, "{v}");
    let (status, v) = c.call(Value::Null, "/login", create("ÉMILE@EXAMPLE.ORG")).await;
    assert_eq!(status, 200, "{v}");
    let s = common::session(v);
    let (status, _) = c.call(Value::Null, "/logout", json!({"user_mail": "ÉMILE@EXAMPLE.ORG", "token": s.token})).await;
    assert_eq!(status, 200, "the address the user logged in with logs them out");
    assert_eq!(c.call(s.header(), "/contacts", Value::Null).await.0, 401);
    // Another spelling of somebody else's address is still refused.
    let (status, v) = c.call(Value::Null, "/login", create("émile@example.org")).await;
    assert_eq!(status, 200);
    let s = common::session(v);
    c.create("emile@example.org").await;
    let (status, _) = c.call(Value::Null, "/logout", json!({"user_mail": "EMILE@example.org", "token": s.token})).await;
    assert_eq!(status, 401);
}
