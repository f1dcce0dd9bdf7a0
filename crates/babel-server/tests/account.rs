//! Account and privacy controls (issue #17, DESIGN.md §5) over real
//! sockets: `/rename`, `/change_password`, `/sessions`, `/end_session`,
//! `/set_status`, `/block`, `/unblock`, `/blocked`, and the events
//! `/contact_updated` and `/session_ended`.
#![allow(clippy::unwrap_used)]

mod common;

use common::{Client, Events, Session, TIMEOUT, assert_refused, start, start_with};
use serde_json::{Value, json};

fn any(_: &Value) -> bool {
    true
}

fn about(id: &str) -> impl Fn(&Value) -> bool {
    let id = id.to_owned();
    move |v| v["id"] == id.as_str()
}

/// `/sessions` as `(session_id, current)`.
async fn sessions(c: &mut Client, s: &Session) -> Vec<Value> {
    let (status, v) = c.call(s.header(), "/sessions", Value::Null).await;
    assert_eq!(status, 200, "{v}");
    v.as_array().unwrap().clone()
}

async fn my_session_id(c: &mut Client, s: &Session) -> String {
    let list = sessions(c, s).await;
    let me: Vec<_> = list.iter().filter(|e| e["current"] == "true").collect();
    assert_eq!(me.len(), 1, "exactly one current session in {list:?}");
    me[0]["session_id"].as_str().unwrap().to_owned()
}

async fn set_status(c: &mut Client, s: &Session, status: &str) {
    let (st, v) = c.call(s.header(), "/set_status", json!({"status": status})).await;
    assert_eq!(st, 200, "{v}");
}

/// `/contacts` until `email` shows `status` (a test may poll; clients
/// never need to).
async fn wait_status(c: &mut Client, s: &Session, email: &str, status: &str) {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let list = c.contacts(s).await;
        if list.iter().any(|(e, st)| e == email && st == status) {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{email} never showed {status}: {list:?}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Starts a call from `a` to `b` and has `b` answer it; answers the call id.
async fn answered_call(a: &mut Client, sa: &Session, b: &mut Client, sb: &Session) -> String {
    let (status, v) = a.call(sa.header(), "/call", json!({"contact_id": sb.id})).await;
    assert_eq!(status, 200, "{v}");
    let call_id = v["call_id"].as_str().unwrap().to_owned();
    let (status, v) = b.call(sb.header(), "/answer", json!({"call_id": call_id, "accept": "true"})).await;
    assert_eq!(status, 200, "{v}");
    call_id
}

#[tokio::test]
async fn rename_answers_the_user_and_tells_contacts() {
    let (server, _dir) = start().await;
    let mut a = Client::connect(server.addr()).await;
    let sa = a.create("ann@example.org").await;
    let mut b = Client::connect(server.addr()).await;
    let sb = b.create("bob@example.org").await;
    a.befriend(&sa, &sb).await;
    assert_eq!(b.contacts(&sb).await, vec![("ann@example.org".into(), "online".into())]);
    let mut bob_events = Events::open(server.addr(), &sb).await;

    let (status, v) = a.call(sa.header(), "/rename", json!({"name": "  Ann Lee "})).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v, json!({"id": sa.id, "name": "Ann Lee", "email": "ann@example.org"}));
    let seen = bob_events.until("/contact_updated", any).await;
    assert_eq!(
        seen.last().unwrap().1,
        json!({"id": sa.id, "name": "Ann Lee", "email": "ann@example.org", "status": "online"})
    );
    // Bob's list (cached on the server) shows the new name at once.
    let (_, list) = b.call(sb.header(), "/contacts", Value::Null).await;
    assert_eq!(list[0]["name"], "Ann Lee");
    // And so does a new login.
    assert_eq!(Client::connect(server.addr()).await.login("ann@example.org").await.name, "Ann Lee");

    assert_refused(a.call(sa.header(), "/rename", json!({"name": "   "})).await, "empty");
    assert_refused(a.call(sa.header(), "/rename", json!({"name": "x".repeat(500)})).await, "");
    assert_refused(a.call(sa.header(), "/rename", json!({"name": "evil\u{202e}gnp"})).await, "");
    assert_eq!(a.call(sa.header(), "/rename", json!({})).await.0, 400);
}

#[tokio::test]
async fn sessions_list_without_tokens_and_end_session_ends_one() {
    let (server, _dir) = start().await;
    let mut phone = Client::connect(server.addr()).await;
    let s1 = phone.create("ann@example.org").await;
    let mut laptop = Client::connect(server.addr()).await;
    let s2 = laptop.login("ann@example.org").await;
    let mut b = Client::connect(server.addr()).await;
    let sb = b.create("bob@example.org").await;
    let phone_id = my_session_id(&mut phone, &s1).await;
    let mut phone_events = Events::open(server.addr(), &s1).await;

    let (status, raw) = laptop.call(s2.header(), "/sessions", Value::Null).await;
    assert_eq!(status, 200);
    let text = raw.to_string();
    assert!(!text.contains(&s1.token) && !text.contains(&s2.token), "no token in {text}");
    let list = raw.as_array().unwrap();
    assert_eq!(list.len(), 2, "{list:?}");
    for e in list {
        let keys: Vec<&String> = e.as_object().unwrap().keys().collect();
        assert_eq!(keys.len(), 5, "{e}");
        assert_eq!(e["address"], "127.0.0.1");
        for t in ["created_at", "last_used"] {
            let t = e[t].as_str().unwrap();
            assert!(t.len() == 20 && t.ends_with('Z') && t.as_bytes()[10] == b'T', "RFC 3339 UTC: {t}");
        }
    }
    assert_eq!(list.iter().filter(|e| e["current"] == "true").count(), 1);
    assert!(list.iter().any(|e| e["session_id"] == phone_id.as_str() && e["current"] == "false"));

    // Someone else's session, or one that does not exist: the same refusal.
    let bobs = my_session_id(&mut b, &sb).await;
    let (st1, foreign) = laptop.call(s2.header(), "/end_session", json!({"session_id": bobs})).await;
    let (st2, unknown) = laptop.call(s2.header(), "/end_session", json!({"session_id": "999999"})).await;
    assert_eq!((st1, st2), (403, 403));
    assert_eq!(foreign, unknown);
    assert_eq!(sessions(&mut b, &sb).await.len(), 1, "Bob's session lives");

    let (status, v) = laptop.call(s2.header(), "/end_session", json!({"session_id": phone_id})).await;
    assert_eq!(status, 200, "{v}");
    let seen = phone_events.until("/session_ended", any).await;
    assert_eq!(seen.last().unwrap().1, json!({"session_id": phone_id, "reason": "ended"}));
    phone_events.closes().await;
    assert!(phone.is_closed().await, "the ended session's request connection closes too");
    let mut again = Client::connect(server.addr()).await;
    assert_eq!(again.call(s1.header(), "/contacts", Value::Null).await.0, 401);
    assert_eq!(sessions(&mut laptop, &s2).await.len(), 1);

    // Ending my own current session is a logout.
    let laptop_id = my_session_id(&mut laptop, &s2).await;
    assert_eq!(laptop.call(s2.header(), "/end_session", json!({"session_id": laptop_id})).await.0, 200);
    assert_eq!(laptop.call(s2.header(), "/sessions", Value::Null).await.0, 401);
}

#[tokio::test]
async fn change_password_ends_every_other_session_and_their_calls() {
    let (server, _dir) = start().await;
    let addr = server.addr();
    let mut phone = Client::connect(addr).await;
    let s1 = phone.create("ann@example.org").await;
    let mut laptop = Client::connect(addr).await;
    let s2 = laptop.login("ann@example.org").await;
    let mut b = Client::connect(addr).await;
    let sb = b.create("bob@example.org").await;
    b.befriend(&sb, &s1).await;
    let phone_id = my_session_id(&mut phone, &s1).await;
    let mut phone_events = Events::open(addr, &s1).await;
    let mut bob_events = Events::open(addr, &sb).await;
    // The phone is in a call with Bob.
    let call_id = answered_call(&mut b, &sb, &mut phone, &s1).await;

    // A wrong current password is 403, never 401 (the token was right).
    let (status, v) =
        laptop.call(s2.header(), "/change_password", json!({"pass": "nope-nope", "new_pass": "brand-new-pw"})).await;
    assert_eq!(status, 403, "{v}");
    assert_refused(
        laptop.call(s2.header(), "/change_password", json!({"pass": "password123", "new_pass": "short"})).await,
        "at least",
    );
    assert_eq!(laptop.call(s2.header(), "/change_password", json!({"pass": "password123"})).await.0, 400);

    let (status, v) =
        laptop.call(s2.header(), "/change_password", json!({"pass": "password123", "new_pass": "brand-new-pw"})).await;
    assert_eq!(status, 200, "{v}");
    let seen = phone_events.until("/session_ended", any).await;
    assert_eq!(seen.last().unwrap().1, json!({"session_id": phone_id, "reason": "password_changed"}));
    phone_events.closes().await;
    let ended = bob_events.until("/call_ended", any).await;
    assert_eq!(ended.last().unwrap().1, json!({"call_id": call_id, "reason": "logout"}));

    assert!(phone.is_closed().await, "the other session's request connection closes too");
    let mut again = Client::connect(addr).await;
    assert_eq!(again.call(s1.header(), "/contacts", Value::Null).await.0, 401);
    assert_eq!(sessions(&mut laptop, &s2).await.len(), 1, "the asking session goes on");
    let mut c = Client::connect(addr).await;
    let old = c.call(Value::Null, "/login", json!({"user_mail": "ann@example.org", "pass": "password123"})).await;
    assert_eq!(old.0, 401);
    let new = c.call(Value::Null, "/login", json!({"user_mail": "ann@example.org", "pass": "brand-new-pw"})).await;
    assert_eq!(new.0, 200, "{}", new.1);
}

#[tokio::test]
async fn a_wrong_current_password_is_rate_limited_like_login() {
    let (server, _dir) = start_with(|c| c.abuse.limit_loopback = true).await;
    let mut a = Client::connect(server.addr()).await;
    let sa = a.create("ann@example.org").await;
    let wrong = json!({"pass": "guess-guess", "new_pass": "brand-new-pw"});
    for _ in 0..5 {
        assert_refused(a.call(sa.header(), "/change_password", wrong.clone()).await, "wrong password");
    }
    // Even the right password now waits, as /login does.
    let right = json!({"pass": "password123", "new_pass": "brand-new-pw"});
    assert_refused(a.call(sa.header(), "/change_password", right).await, "too many failed logins");
    let (status, _) =
        a.call(Value::Null, "/login", json!({"user_mail": "ann@example.org", "pass": "password123"})).await;
    assert_eq!(status, 403, "one counter for /login and /change_password");
}

#[tokio::test]
async fn statuses_as_contacts_see_them_and_calls_they_allow() {
    let (server, _dir) = start().await;
    let addr = server.addr();
    let mut a = Client::connect(addr).await;
    let sa = a.create("ann@example.org").await;
    let mut b = Client::connect(addr).await;
    let sb = b.create("bob@example.org").await;
    let mut c = Client::connect(addr).await;
    let sc = c.create("cat@example.org").await;
    a.befriend(&sa, &sb).await;
    a.befriend(&sa, &sc).await;
    let mut bob_events = Events::open(addr, &sb).await;

    set_status(&mut a, &sa, "away").await;
    let seen = bob_events.until("/contact_updated", about(&sa.id)).await;
    assert!(seen.iter().any(|(r, v)| r == "/status" && *v == json!({"id": sa.id, "status": "away"})), "{seen:?}");
    assert_eq!(seen.last().unwrap().1["status"], "away");
    assert_eq!(seen.last().unwrap().1["email"], "ann@example.org");
    wait_status(&mut b, &sb, "ann@example.org", "away").await;
    // Away still rings.
    let call_id = answered_call(&mut b, &sb, &mut a, &sa).await;
    assert_eq!(b.call(sb.header(), "/hangup", json!({"call_id": call_id})).await.0, 200);

    set_status(&mut a, &sa, "dnd").await;
    wait_status(&mut b, &sb, "ann@example.org", "dnd").await;
    assert_refused(b.call(sb.header(), "/call", json!({"contact_id": sa.id})).await, "disturbed");
    // busy > dnd: Ann calls Cat herself.
    let call_id = answered_call(&mut a, &sa, &mut c, &sc).await;
    wait_status(&mut b, &sb, "ann@example.org", "busy").await;
    assert_eq!(a.call(sa.header(), "/hangup", json!({"call_id": call_id})).await.0, 200);
    wait_status(&mut b, &sb, "ann@example.org", "dnd").await;

    // Invisible: offline to others, and /call gets exactly the offline refusal.
    set_status(&mut a, &sa, "invisible").await;
    wait_status(&mut b, &sb, "ann@example.org", "offline").await;
    let invisible = b.call(sb.header(), "/call", json!({"contact_id": sa.id})).await;
    assert_eq!(invisible.0, 403);
    drop(a);
    let mut other = Client::connect(addr).await;
    let mut after = (0, Value::Null);
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while tokio::time::Instant::now() < deadline {
        // Ann's only connection is gone: she is truly offline now.
        after = other.call(sb.header(), "/call", json!({"contact_id": sa.id})).await;
        if after == invisible {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(after, invisible, "invisible and offline answer the same bytes");
    assert_eq!(c.call(sc.header(), "/set_status", json!({"status": "online"})).await.0, 400);
}

#[tokio::test]
async fn going_invisible_looks_like_going_offline() {
    let (server, _dir) = start().await;
    let addr = server.addr();
    let mut a = Client::connect(addr).await;
    let sa = a.create("ann@example.org").await;
    let mut b = Client::connect(addr).await;
    let sb = b.create("bob@example.org").await;
    let mut c = Client::connect(addr).await;
    let sc = c.create("cat@example.org").await;
    a.befriend(&sa, &sb).await;
    b.befriend(&sb, &sc).await;
    let mut bob_events = Events::open(addr, &sb).await;
    set_status(&mut a, &sa, "invisible").await;
    set_status(&mut a, &sa, "available").await;
    // Cat renames: a sentinel, after everything Ann's changes caused.
    assert_eq!(c.call(sc.header(), "/rename", json!({"name": "Cat"})).await.0, 200);
    let seen = bob_events.until("/contact_updated", about(&sc.id)).await;
    let about_ann: Vec<_> = seen.iter().filter(|(_, v)| v["id"] == sa.id.as_str()).collect();
    assert_eq!(
        about_ann,
        vec![
            &("/status".to_owned(), json!({"id": sa.id, "status": "offline"})),
            &("/status".to_owned(), json!({"id": sa.id, "status": "online"})),
        ],
        "only what a disconnect and a reconnect would say"
    );
}

#[tokio::test]
async fn a_chosen_status_persists_across_sessions_and_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let config = common::test_config(&dir);
    let server = babel_server::RunningServer::start(&config).await.unwrap();
    let mut a = Client::connect(server.addr()).await;
    let sa = a.create("ann@example.org").await;
    let mut b = Client::connect(server.addr()).await;
    let sb = b.create("bob@example.org").await;
    a.befriend(&sa, &sb).await;
    set_status(&mut a, &sa, "dnd").await;
    drop((a, b));
    server.shutdown().await;

    let server = babel_server::RunningServer::start(&config).await.unwrap();
    let mut b = Client::connect(server.addr()).await;
    let sb = b.login("bob@example.org").await;
    let mut bob_events = Events::open(server.addr(), &sb).await;
    // A new session on a new server process: still dnd from the first status event.
    let mut a = Client::connect(server.addr()).await;
    let sa2 = a.login("ann@example.org").await;
    let seen = bob_events.until("/status", about(&sa.id)).await;
    assert_eq!(seen.last().unwrap().1["status"], "dnd", "never shown online first: {seen:?}");
    wait_status(&mut b, &sb, "ann@example.org", "dnd").await;
    assert_refused(b.call(sb.header(), "/call", json!({"contact_id": sa2.id})).await, "disturbed");
    server.shutdown().await;
}

#[tokio::test]
async fn blocking_cuts_every_tie_and_hides_itself() {
    let (server, _dir) = start().await;
    let addr = server.addr();
    let mut a = Client::connect(addr).await;
    let sa = a.create("ann@example.org").await;
    let mut b = Client::connect(addr).await;
    let sb = b.create("bob@example.org").await;
    let mut c = Client::connect(addr).await;
    let sc = c.create("cat@example.org").await;
    a.befriend(&sa, &sb).await;
    a.befriend(&sa, &sc).await;
    b.befriend(&sb, &sc).await;
    let mut ann_events = Events::open(addr, &sa).await;
    let mut bob_events = Events::open(addr, &sb).await;
    // Ann and Bob are in a call.
    let call_id = answered_call(&mut a, &sa, &mut b, &sb).await;

    assert_refused(a.call(sa.header(), "/block", json!({"contact_id": sa.id})).await, "yourself");
    assert_refused(a.call(sa.header(), "/block", json!({"contact_email": "nobody@example.org"})).await, "nobody");
    let (status, v) = a.call(sa.header(), "/block", json!({"contact_email": "BOB@example.org"})).await;
    assert_eq!(status, 200, "{v}");
    let seen = bob_events.until("/call_ended", any).await;
    assert!(seen.iter().any(|(r, v)| r == "/contact_removed" && *v == json!({"id": sa.id})), "{seen:?}");
    ann_events.until("/contact_removed", about(&sb.id)).await;
    assert_eq!(seen.last().unwrap().1["call_id"], call_id.as_str());
    assert_eq!(a.contacts(&sa).await, vec![("cat@example.org".into(), "online".into())]);
    assert_eq!(b.contacts(&sb).await, vec![("cat@example.org".into(), "online".into())]);
    let (_, blocked) = a.call(sa.header(), "/blocked", Value::Null).await;
    assert_eq!(blocked, json!([{"id": sb.id, "name": "bob", "email": "bob@example.org"}]));
    // Blocking twice is fine.
    assert_eq!(a.call(sa.header(), "/block", json!({"contact_id": sb.id})).await.0, 200);

    // Bob's request is answered like any other and shows pending to him,
    // but never reaches Ann.
    let (status, v) = b.call(sb.header(), "/add_contact", json!({"contact_email": "ann@example.org"})).await;
    assert_eq!(status, 200, "{v}");
    assert!(b.contacts(&sb).await.contains(&("ann@example.org".into(), "pending".into())));
    let (_, requests) = a.call(sa.header(), "/contact_requests", Value::Null).await;
    assert_eq!(requests, json!([]));
    assert_refused(b.call(sb.header(), "/add_contact", json!({"contact_email": "ann@example.org"})).await, "already");
    // He may cancel it, as any request, and ask again.
    assert_eq!(b.call(sb.header(), "/remove_contact", json!({"contact_id": sa.id})).await.0, 200);
    assert!(!b.contacts(&sb).await.iter().any(|(e, _)| e == "ann@example.org"));
    assert_eq!(b.call(sb.header(), "/add_contact", json!({"contact_email": "ann@example.org"})).await.0, 200);
    assert_refused(a.call(sa.header(), "/add_contact", json!({"contact_email": "bob@example.org"})).await, "unblock");
    assert_refused(b.call(sb.header(), "/call", json!({"contact_id": sa.id})).await, "contacts");

    // Cat cannot put the two in one call.
    let call_id = answered_call(&mut c, &sc, &mut a, &sa).await;
    assert_refused(
        c.call(sc.header(), "/invite", json!({"call_id": call_id, "contact_id": sb.id})).await,
        "cannot be invited",
    );
    assert_eq!(c.call(sc.header(), "/hangup", json!({"call_id": call_id})).await.0, 200);

    // Bob hears nothing more about Ann: Cat's rename is the sentinel.
    set_status(&mut a, &sa, "away").await;
    assert_eq!(a.call(sa.header(), "/rename", json!({"name": "Ann B"})).await.0, 200);
    drop(a);
    assert_eq!(c.call(sc.header(), "/rename", json!({"name": "Cat"})).await.0, 200);
    let seen = bob_events.until("/contact_updated", about(&sc.id)).await;
    let about_ann: Vec<&str> = seen
        .iter()
        .filter(|(_, v)| v.to_string().contains(&format!("\"{}\"", sa.id)))
        .map(|(r, _)| r.as_str())
        .collect();
    // Only the echoes of his own request, its cancelling and the new request.
    assert_eq!(about_ann, ["/contact_added", "/contact_removed", "/contact_added"], "{seen:?}");
    // And Ann heard nothing of Bob's requests, nor of their cancelling.
    let seen = ann_events.until("/contact_updated", about(&sc.id)).await;
    let from_bob = seen.iter().filter(|(_, v)| v.to_string().contains(&format!("\"{}\"", sb.id))).count();
    assert_eq!(from_bob, 0, "{seen:?}");

    // Unblocking restores nothing; a second unblock is refused.
    let mut a = Client::connect(addr).await;
    let sa = a.login("ann@example.org").await;
    assert_eq!(a.call(sa.header(), "/unblock", json!({"contact_id": sb.id})).await.0, 200);
    assert_refused(a.call(sa.header(), "/unblock", json!({"contact_id": sb.id})).await, "not blocked");
    assert_eq!(a.call(sa.header(), "/blocked", Value::Null).await.1, json!([]));
    assert_eq!(a.contacts(&sa).await, vec![("cat@example.org".into(), "online".into())]);
    // Bob's request is still his alone; when Ann asks in turn they are contacts.
    assert_eq!(a.call(sa.header(), "/contact_requests", Value::Null).await.1, json!([]));
    assert_eq!(a.call(sa.header(), "/add_contact", json!({"contact_email": "bob@example.org"})).await.0, 200);
    wait_status(&mut b, &sb, "ann@example.org", "away").await;
}

#[tokio::test]
async fn delete_and_expiry_end_sessions_with_a_reason() {
    let (server, _dir) = start_with(|c| c.session_ttl_secs = 1).await;
    let addr = server.addr();
    let mut idle = Client::connect(addr).await;
    let s = idle.create("old@example.org").await;
    let id = my_session_id(&mut idle, &s).await;
    drop(idle);
    let mut events = Events::open(addr, &s).await;
    // The event stream alone does not keep the session in use.
    let seen = events.until("/session_ended", any).await;
    assert_eq!(seen.last().unwrap().1, json!({"session_id": id, "reason": "expired"}));
    events.closes().await;

    let (server, _dir) = start().await;
    let addr = server.addr();
    let mut phone = Client::connect(addr).await;
    let s1 = phone.create("gone@example.org").await;
    let phone_id = my_session_id(&mut phone, &s1).await;
    let mut phone_events = Events::open(addr, &s1).await;
    let mut laptop = Client::connect(addr).await;
    let s2 = laptop.login("gone@example.org").await;
    assert_eq!(laptop.call(s2.header(), "/delete", Value::Null).await.0, 200);
    let seen = phone_events.until("/session_ended", any).await;
    assert_eq!(seen.last().unwrap().1, json!({"session_id": phone_id, "reason": "deleted"}));
    phone_events.closes().await;
    assert!(phone.is_closed().await, "the other device's request connection closes");
    // The connection that deleted stays open, anonymous, as after /logout.
    assert_eq!(laptop.call(s2.header(), "/contacts", Value::Null).await.0, 401);
    laptop.create("gone@example.org").await;
}
