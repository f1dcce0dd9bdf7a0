//! The authorization matrix: every authenticated route, asked with another
//! user's id and my token, a logged-out token, a deleted user's token, and
//! (for call routes) the right token on someone else's call. All refused,
//! and the database is byte-for-byte the same before and after. Messages
//! and call history: a non-contact cannot be written to, and nobody reads
//! or marks a conversation they are not in.
//!
//! Every scenario runs on one node (SQLite) and on three (PostgreSQL and
//! NATS, issue #18 item 3), the users spread over the nodes; the database
//! compared is the one the nodes share.
#![allow(clippy::unwrap_used)]

#[macro_use]
mod common;

use babel_client::ClientError;
use babel_proto::{
    CallId, ChosenStatus, ContactRef, Credentials, Presence, RawRequest, ReplyError, Secret, ServerEvent,
    SessionEndReason, SessionId, UserId,
};
use common::{TestServer, Topology, befriend, user};
use serde_json::{Value, json};

/// Every table's rows, as text, to compare the database before and after.
fn dump(s: &TestServer) -> Vec<String> {
    match s.topology {
        Topology::OneNode => sqlite_dump(s.db()),
        Topology::ThreeNodes => postgres_dump(s.db().to_str().unwrap()),
    }
}

/// [`dump`] of the SQLite file `db`.
fn sqlite_dump(db: &std::path::Path) -> Vec<String> {
    let conn = rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    let mut out = Vec::new();
    for table in [
        "users",
        "sessions",
        "contacts",
        "requests",
        "messages",
        "read_marks",
        "call_history",
        "blocks",
        "withheld_requests",
    ] {
        let mut stmt = conn.prepare(&format!("SELECT * FROM {table} ORDER BY 1, 2")).unwrap();
        let cols = stmt.column_count();
        let rows = stmt
            .query_map([], |r| {
                Ok((0..cols).map(|i| format!("{:?}", r.get_ref(i).unwrap())).collect::<Vec<_>>().join("|"))
            })
            .unwrap();
        for row in rows {
            out.push(format!("{table}: {}", row.unwrap()));
        }
    }
    out
}

/// [`dump`] of the PostgreSQL schema the address `url` puts first on the
/// search path (the test's own): every table in it, whatever it is, each
/// row as PostgreSQL writes a row as text, rows in order.
fn postgres_dump(url: &str) -> Vec<String> {
    let url = url.to_owned();
    // The synchronous client runs a runtime of its own: not on the test's.
    let dump = std::thread::spawn(move || {
        let mut db = postgres::Client::connect(&url, postgres::NoTls).unwrap();
        let tables: Vec<String> = db
            .query(
                "SELECT table_name::text FROM information_schema.tables \
                 WHERE table_schema = current_schema() AND table_type = 'BASE TABLE' ORDER BY 1",
                &[],
            )
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert!(tables.iter().any(|t| t == "users"), "the test's schema holds no users table: {tables:?}");
        let mut out = Vec::new();
        for table in tables {
            for row in db.query(&format!("SELECT r::text FROM \"{table}\" r ORDER BY 1"), &[]).unwrap() {
                out.push(format!("{table}: {}", row.get::<_, String>(0)));
            }
        }
        out
    });
    dump.join().unwrap()
}

fn frame(c: &Credentials, route: &str, data: Value) -> RawRequest {
    let header = json!({"id": c.id.to_string(), "token": c.token.expose()});
    RawRequest::new(serde_json::to_vec(&header).unwrap(), route.to_owned(), serde_json::to_vec(&data).unwrap())
}

async fn every_authenticated_route_refuses_every_wrong_credential(t: Topology) {
    let s = common::start_in(t).await;
    let mut me = user(&s, "me@example.org").await;
    let mut friend = user(&s, "friend@example.org").await;
    let mut other = user(&s, "other@example.org").await;
    befriend(&mut me, &mut friend).await;
    befriend(&mut friend, &mut other).await;
    // A call between friend and other that I am not part of.
    let theirs = friend.client.call(other.id(), Default::default()).await.unwrap().call_id;
    other.expect("incoming", |e| matches!(e, babel_proto::ServerEvent::IncomingCall(_)).then_some(())).await;
    other.client.accept_call(theirs, Default::default()).await.unwrap();
    // A conversation between friend and other that I am not part of, and
    // one of mine with friend.
    let secret = friend.client.send_message(other.id(), "between us", None).await.unwrap().message_id;
    let mine_msg = me.client.send_message(friend.id(), "hi friend", Some("m-1")).await.unwrap().message_id;

    // Tokens that must not work.
    let my_token = me.me.token.clone();
    let mut gone = babel_client::Client::connect(s.next_addr()).await.unwrap();
    let logged_out = gone.login("me@example.org", common::PASSWORD).await.unwrap();
    gone.logout().await.unwrap();
    let mut doomed = babel_client::Client::connect(s.next_addr()).await.unwrap();
    let deleted = doomed.create("doomed@example.org", common::PASSWORD, None).await.unwrap();
    doomed.delete_account().await.unwrap();
    let wrong: Vec<(&str, Credentials)> = vec![
        ("someone else's id with my token", Credentials { id: friend.id(), token: my_token.clone() }),
        ("a logged-out token", Credentials { id: logged_out.id, token: logged_out.token.clone() }),
        ("a deleted user's token", Credentials { id: deleted.id, token: deleted.token.clone() }),
        ("a made-up token", Credentials { id: me.id(), token: Secret::new("x".repeat(43)) }),
        ("an unknown user", Credentials { id: UserId(987_654), token: my_token.clone() }),
    ];
    let call = json!({"call_id": theirs.to_string()});
    let routes: Vec<(&str, Value)> = vec![
        ("/contacts", json!({})),
        ("/add_contact", json!({"contact_email": "other@example.org"})),
        ("/remove_contact", json!({"contact_id": friend.id().to_string()})),
        ("/contact_requests", json!({})),
        ("/accept_contact", json!({"contact_id": friend.id().to_string()})),
        ("/decline_contact", json!({"contact_id": friend.id().to_string()})),
        ("/events", json!({})),
        ("/call", json!({"contact_id": friend.id().to_string()})),
        ("/answer", json!({"call_id": theirs.to_string(), "accept": "true"})),
        ("/hangup", call.clone()),
        ("/invite", json!({"call_id": theirs.to_string(), "contact_id": friend.id().to_string()})),
        ("/connect_call", call.clone()),
        ("/send", json!({})),
        ("/send_message", json!({"contact_id": friend.id().to_string(), "text": "hi", "client_id": "m-1"})),
        ("/messages", json!({"contact_id": friend.id().to_string()})),
        ("/mark_read", json!({"contact_id": friend.id().to_string(), "message_id": mine_msg.to_string()})),
        ("/unread", json!({})),
        ("/call_history", json!({})),
        ("/rename", json!({"name": "Mallory"})),
        ("/change_password", json!({"pass": common::PASSWORD, "new_pass": "taken-over-now"})),
        ("/sessions", json!({})),
        ("/end_session", json!({"session_id": "1"})),
        ("/set_status", json!({"status": "invisible"})),
        ("/block", json!({"contact_id": friend.id().to_string()})),
        ("/block", json!({"contact_email": "friend@example.org"})),
        ("/unblock", json!({"contact_id": friend.id().to_string()})),
        ("/blocked", json!({})),
        ("/logout", json!({})),
        ("/delete", json!({})),
    ];
    let before = dump(&s);
    let calls_before = s.calls_in_progress();
    // On three nodes the probe is on the node of neither party to the
    // call, which is homed where friend placed it.
    let mut probe = babel_client::Client::connect(s.addr_of(me.node)).await.unwrap();
    for (route, data) in &routes {
        for (what, creds) in &wrong {
            let answer = probe.raw(frame(creds, route, data.clone())).await.unwrap();
            assert_eq!(answer.0.status, 401, "{route} with {what}");
        }
    }
    // The right token, on a call that is not mine.
    let mine = Credentials { id: me.id(), token: my_token.clone() };
    for route in ["/answer", "/hangup", "/invite", "/connect_call"] {
        let data = routes.iter().find(|(r, _)| *r == route).unwrap().1.clone();
        let answer = probe.raw(frame(&mine, route, data)).await.unwrap();
        assert_eq!(answer.0.status, 403, "{route} on someone else's call");
    }
    // And a call id that does not exist.
    let none = json!({"call_id": CallId(12345).to_string()});
    assert_eq!(probe.raw(frame(&mine, "/hangup", none)).await.unwrap().0.status, 403);
    // Messages: not to a non-contact; someone else's conversation is never
    // listed nor marked; a retried client_id answers my first message.
    let to_other = json!({"contact_id": other.id().to_string(), "text": "hi"});
    assert_eq!(probe.raw(frame(&mine, "/send_message", to_other)).await.unwrap().0.status, 403);
    let mark = json!({"contact_id": other.id().to_string(), "message_id": secret.to_string()});
    assert_eq!(probe.raw(frame(&mine, "/mark_read", mark)).await.unwrap().0.status, 200);
    let listed = |a: babel_proto::Answer| a.json::<Vec<babel_proto::Message>>().unwrap();
    let with_other = json!({"contact_id": other.id().to_string(), "after": "0"});
    assert!(listed(probe.raw(frame(&mine, "/messages", with_other)).await.unwrap()).is_empty());
    let all = listed(probe.raw(frame(&mine, "/messages", json!({}))).await.unwrap());
    assert_eq!(all.iter().map(|m| m.message_id).collect::<Vec<_>>(), vec![mine_msg], "only my own");
    let retry = json!({"contact_id": friend.id().to_string(), "text": "hi friend", "client_id": "m-1"});
    let again: babel_proto::MessageSent =
        probe.raw(frame(&mine, "/send_message", retry)).await.unwrap().json().unwrap();
    assert_eq!(again.message_id, mine_msg);
    let history = probe.raw(frame(&mine, "/call_history", json!({}))).await.unwrap();
    assert!(history.json::<Vec<babel_proto::CallHistoryEntry>>().unwrap().is_empty(), "their call is not mine");

    assert_eq!(dump(&s), before, "nothing changed in the database");
    assert_eq!(s.calls_in_progress(), calls_before);
    assert!(s.calls_in_progress() == 1, "their call goes on");
    // My own token still works: nothing was locked by all that.
    assert_eq!(me.client.contacts().await.unwrap().len(), 1);
    // And the dump sees what a request that is not refused writes.
    me.client.rename("Me Again").await.unwrap();
    assert_ne!(dump(&s), before, "the dump misses a rename");
}

fn refused(r: Result<impl std::fmt::Debug, ClientError>) -> String {
    match r {
        Err(ClientError::Server(ReplyError::Refused(why))) => why,
        other => panic!("expected a 403, got {other:?}"),
    }
}

/// The account routes with the right token but someone else's things: a
/// foreign session id, a block that is not mine, a blocked user's requests,
/// an old token after a password change.
async fn account_routes_refuse_foreign_ids_and_blocked_users(t: Topology) {
    let s = common::start_in(t).await;
    let mut me = user(&s, "me@example.org").await;
    let mut friend = user(&s, "friend@example.org").await;
    let mut stranger = user(&s, "stranger@example.org").await;
    befriend(&mut me, &mut friend).await;

    // Foreign and unknown ids: refused alike, nothing changes.
    let theirs = friend.client.sessions().await.unwrap();
    assert_eq!(theirs.len(), 1);
    assert!(theirs[0].current);
    let before = dump(&s);
    let foreign = refused(me.client.end_session(theirs[0].session_id).await);
    assert_eq!(foreign, refused(me.client.end_session(SessionId(987_654)).await));
    refused(me.client.unblock(stranger.id()).await);
    refused(me.client.block(ContactRef::Id(me.id())).await);
    refused(me.client.block(ContactRef::Id(UserId(987_654))).await);
    assert_eq!(dump(&s), before, "refusals change nothing");
    assert_eq!(friend.client.sessions().await.unwrap(), theirs, "the friend's session lives");

    // A blocked user: answered like anyone, refused where a stranger is.
    friend.client.block(ContactRef::Email("me@example.org".into())).await.unwrap();
    let fid = friend.id();
    me.expect("contact_removed", |e| matches!(e, ServerEvent::ContactRemoved(id) if *id == fid).then_some(())).await;
    me.client.add_contact("friend@example.org").await.unwrap();
    assert_eq!(me.client.contacts().await.unwrap()[0].status, Presence::Pending);
    assert!(friend.client.contact_requests().await.unwrap().is_empty());
    assert!(refused(me.client.call(fid, Default::default()).await).contains("contacts"));
    refused(me.client.unblock(fid).await);
    assert!(me.client.blocked().await.unwrap().is_empty());
    assert_eq!(friend.client.blocked().await.unwrap().iter().map(|u| u.id).collect::<Vec<_>>(), vec![me.id()]);
    // A stranger may be blocked too (no contact needed), and set statuses stay mine.
    me.client.block(ContactRef::Id(stranger.id())).await.unwrap();
    me.client.set_status(ChosenStatus::Dnd).await.unwrap();
    assert_eq!(me.client.rename("Me Myself").await.unwrap().name, "Me Myself");
    assert_eq!(me.client.session().unwrap().name, "Me Myself");
    assert!(stranger.client.contacts().await.unwrap().is_empty());

    // An old token: after a password change from another device.
    let mut laptop = common::device(&s, "me@example.org").await;
    me.client.change_password(common::PASSWORD, "a-new-password").await.unwrap();
    let why = laptop
        .expect("session_ended", |e| match e {
            ServerEvent::SessionEnded(end) => Some(end.reason),
            _ => None,
        })
        .await;
    assert_eq!(why, SessionEndReason::PasswordChanged);
    assert!(matches!(laptop.client.sessions().await, Err(ClientError::Server(ReplyError::Unauthorized))));
    assert!(matches!(
        laptop.client.change_password("a-new-password", "mine-again-now").await,
        Err(ClientError::Server(ReplyError::Unauthorized))
    ));
    assert_eq!(me.client.sessions().await.unwrap().len(), 1);
}

in_both_topologies! {
    every_authenticated_route_refuses_every_wrong_credential(flavor = "multi_thread", worker_threads = 2),
    account_routes_refuse_foreign_ids_and_blocked_users(flavor = "multi_thread", worker_threads = 2),
}
