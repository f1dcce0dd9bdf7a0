//! Messages and call history (issue #17, DESIGN.md §5) over real sockets:
//! live delivery with events, delivery to someone who was offline, retries
//! by `client_id`, the limits, paging both ways, read marks, and the call
//! history of answered, declined, missed and group calls.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;

use common::{Client, Events, Session, TIMEOUT, assert_refused, start, start_with};
use serde_json::{Value, json};

async fn pair_of_contacts(addr: SocketAddr, tag: &str) -> (Client, Session, Client, Session) {
    let mut a = Client::connect(addr).await;
    let mut b = Client::connect(addr).await;
    let sa = a.create(&format!("{tag}-a@example.org")).await;
    let sb = b.create(&format!("{tag}-b@example.org")).await;
    a.befriend(&sa, &sb).await;
    (a, sa, b, sb)
}

async fn send(c: &mut Client, s: &Session, to: &Session, text: &str) -> String {
    let (status, v) = c.call(s.header(), "/send_message", json!({"contact_id": to.id, "text": text})).await;
    assert_eq!(status, 200, "{v}");
    v["message_id"].as_str().unwrap().to_owned()
}

fn ids(v: &Value) -> Vec<i64> {
    v.as_array().unwrap().iter().map(|m| m["message_id"].as_str().unwrap().parse().unwrap()).collect()
}

#[tokio::test]
async fn a_message_reaches_the_recipient_and_my_other_sessions_live() {
    let (server, _dir) = start().await;
    let addr = server.addr();
    let (mut a, sa, _b, sb) = pair_of_contacts(addr, "live").await;
    let mut b_events = Events::open(addr, &sb).await;
    let mut a2 = Client::connect(addr).await;
    let sa2 = a2.login(&sa.email).await;
    let mut a2_events = Events::open(addr, &sa2).await;

    let (status, v) = a.call(sa.header(), "/send_message", json!({"contact_id": sb.id, "text": "hello \"b\""})).await;
    assert_eq!(status, 200, "{v}");
    let id = v["message_id"].as_str().unwrap().to_owned();
    assert!(v["sent_at"].as_str().unwrap().ends_with('Z'), "{v}");

    for events in [&mut b_events, &mut a2_events] {
        let m = events.next_named("/message").await;
        assert_eq!(m["message_id"], id.as_str());
        assert_eq!((m["from"].as_str(), m["to"].as_str()), (Some(sa.id.as_str()), Some(sb.id.as_str())));
        assert_eq!(m["text"], "hello \"b\"");
        assert_eq!(m["read"], "false");
        assert_eq!(m["sender"], json!({"id": sa.id, "name": sa.name, "email": sa.email}));
        assert_eq!(m["sent_at"], v["sent_at"]);
    }
    // Ids increase across the server.
    let next = send(&mut a, &sa, &sb, "again").await;
    assert!(next.parse::<i64>().unwrap() > id.parse::<i64>().unwrap());
}

#[tokio::test]
async fn messages_to_someone_offline_wait_for_them_on_another_device() {
    let (server, _dir) = start().await;
    let addr = server.addr();
    let (mut a, sa, b, sb) = pair_of_contacts(addr, "offline").await;
    drop(b);
    for i in 0..3 {
        send(&mut a, &sa, &sb, &format!("while you were out {i}")).await;
    }
    let mut b2 = Client::connect(addr).await;
    let sb2 = b2.login(&sb.email).await;
    let (status, v) = b2.call(sb2.header(), "/unread", Value::Null).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v, json!([{"contact_id": sa.id, "count": "3"}]));
    let (status, v) = b2.call(sb2.header(), "/messages", json!({"contact_id": sa.id})).await;
    assert_eq!(status, 200, "{v}");
    let texts: Vec<&str> = v.as_array().unwrap().iter().map(|m| m["text"].as_str().unwrap()).collect();
    assert_eq!(texts, ["while you were out 2", "while you were out 1", "while you were out 0"], "newest first");
    assert!(v.as_array().unwrap().iter().all(|m| m["read"] == "false"));
}

#[tokio::test]
async fn a_retry_with_the_same_client_id_is_answered_once_and_sent_once() {
    let (server, _dir) = start().await;
    let addr = server.addr();
    let (mut a, sa, _b, sb) = pair_of_contacts(addr, "retry").await;
    let mut b_events = Events::open(addr, &sb).await;
    let data = json!({"contact_id": sb.id, "text": "once", "client_id": "3f2a-1"});
    let (s1, first) = a.call(sa.header(), "/send_message", data.clone()).await;
    // The retry comes on a new connection, as after a dropped one.
    let mut again = Client::connect(addr).await;
    let (s2, second) = again.call(sa.header(), "/send_message", data).await;
    assert_eq!((s1, s2), (200, 200));
    assert_eq!(first, second, "the first answer again");
    let marker = send(&mut a, &sa, &sb, "marker").await;
    assert_eq!(b_events.next_named("/message").await["text"], "once");
    assert_eq!(b_events.next_named("/message").await["message_id"], marker.as_str(), "no second /message");
    let (_, v) = a.call(sa.header(), "/messages", json!({"contact_id": sb.id})).await;
    assert_eq!(v.as_array().unwrap().len(), 2);
    // The same client_id for a different message is refused.
    assert_refused(
        a.call(sa.header(), "/send_message", json!({"contact_id": sb.id, "text": "other", "client_id": "3f2a-1"}))
            .await,
        "client_id",
    );
}

#[tokio::test]
async fn texts_recipients_and_rate_are_limited() {
    let (server, _dir) = start_with(|c| c.abuse.messages_per_account = 4).await;
    let addr = server.addr();
    let (mut a, sa, mut b, sb) = pair_of_contacts(addr, "limits").await;
    let sc = b.create("limits-c@example.org").await;
    let to = |text: String| json!({"contact_id": sb.id, "text": text});
    assert_refused(a.call(sa.header(), "/send_message", to(String::new())).await, "text");
    assert_refused(a.call(sa.header(), "/send_message", to(" \n".into())).await, "text");
    assert_refused(a.call(sa.header(), "/send_message", to("é".repeat(4001))).await, "4000");
    assert_eq!(a.call(sa.header(), "/send_message", to("é".repeat(4000))).await.0, 200);
    assert_refused(
        a.call(sa.header(), "/send_message", json!({"contact_id": sc.id, "text": "hi"})).await,
        "only to your contacts",
    );
    assert_refused(a.call(sa.header(), "/send_message", json!({"contact_id": sa.id, "text": "hi"})).await, "yourself");
    assert_eq!(a.call(sa.header(), "/send_message", json!({"contact_id": sb.id})).await.0, 400);
    assert_eq!(a.call(sa.header(), "/messages", json!({"limit": "0"})).await.0, 400);
    assert_eq!(a.call(sa.header(), "/messages", json!({"limit": "101"})).await.0, 400);
    assert_eq!(a.call(sa.header(), "/call_history", json!({"limit": "abc"})).await.0, 400);
    // Refused sends did not count; four were allowed in the window.
    for i in 0..2 {
        assert_eq!(a.call(sa.header(), "/send_message", to(format!("{i}"))).await.0, 200);
    }
    let last = json!({"contact_id": sb.id, "text": "2", "client_id": "late"});
    let (status, first) = a.call(sa.header(), "/send_message", last.clone()).await;
    assert_eq!(status, 200, "{first}");
    assert_refused(a.call(sa.header(), "/send_message", to("one too many".into())).await, "too fast");
    // A retry of a message accepted before the limit is still answered.
    assert_eq!(a.call(sa.header(), "/send_message", last).await, (200, first));
    // The limit is the sender's: b still writes to a.
    assert_eq!(b.call(sb.header(), "/send_message", json!({"contact_id": sa.id, "text": "hi"})).await.0, 200);
}

#[tokio::test]
async fn pages_go_back_with_before_and_forward_with_after() {
    let (server, _dir) = start().await;
    let addr = server.addr();
    let (mut a, sa, mut b, sb) = pair_of_contacts(addr, "pages").await;
    let mut all = Vec::new();
    for i in 0..25 {
        let id = if i % 3 == 0 {
            send(&mut b, &sb, &sa, &format!("{i}")).await
        } else {
            send(&mut a, &sa, &sb, &format!("{i}")).await
        };
        all.push(id.parse::<i64>().unwrap());
    }
    let (_, v) = a.call(sa.header(), "/messages", json!({"contact_id": sb.id})).await;
    assert_eq!(ids(&v).len(), 25, "default limit 50");
    let mut seen = Vec::new();
    let mut before: Option<i64> = None;
    loop {
        let mut q = json!({"contact_id": sb.id, "limit": "10"});
        if let Some(b) = before {
            q["before"] = json!(b.to_string());
        }
        let (status, v) = a.call(sa.header(), "/messages", q).await;
        assert_eq!(status, 200, "{v}");
        let page = ids(&v);
        if page.is_empty() {
            break;
        }
        assert!(page.windows(2).all(|w| w[0] > w[1]), "newest first: {page:?}");
        before = page.last().copied();
        seen.extend(page);
    }
    seen.reverse();
    assert_eq!(seen, all, "every message once, going back");
    let (_, v) = b.call(sb.header(), "/messages", json!({"contact_id": sa.id, "after": all[19].to_string()})).await;
    assert_eq!(ids(&v), all[20..].to_vec(), "after: oldest first, exclusive");
    // Without contact_id: every conversation.
    let (_, sc) = {
        let mut c = Client::connect(addr).await;
        let sc = c.create("pages-c@example.org").await;
        c.befriend(&sc, &sa).await;
        send(&mut c, &sc, &sa, "from c").await;
        (c, sc)
    };
    let (_, v) = a.call(sa.header(), "/messages", json!({"limit": "2"})).await;
    let page = v.as_array().unwrap();
    assert_eq!(page[0]["from"], sc.id.as_str());
    assert_eq!(page[1]["message_id"], all[24].to_string().as_str());
    let (_, v) = b.call(sb.header(), "/messages", Value::Null).await;
    assert_eq!(ids(&v).len(), 25, "c's message is not b's");
}

#[tokio::test]
async fn mark_read_never_moves_back_and_is_told() {
    let (server, _dir) = start().await;
    let addr = server.addr();
    let (mut a, sa, mut b, sb) = pair_of_contacts(addr, "read").await;
    let m1 = send(&mut a, &sa, &sb, "one").await;
    let m2 = send(&mut a, &sa, &sb, "two").await;
    let m3 = send(&mut a, &sa, &sb, "three").await;
    let mut a_events = Events::open(addr, &sa).await;
    let mut b2 = Client::connect(addr).await;
    let sb2 = b2.login(&sb.email).await;
    let mut b2_events = Events::open(addr, &sb2).await;

    assert_eq!(b.call(sb.header(), "/mark_read", json!({"contact_id": sa.id, "message_id": m2})).await.0, 200);
    assert_eq!(a_events.next_named("/messages_read").await, json!({"contact_id": sb.id, "message_id": m2}));
    assert_eq!(b2_events.next_named("/messages_read").await, json!({"contact_id": sa.id, "message_id": m2}));
    // Backwards: answered, nothing changes, nobody is told.
    assert_eq!(b.call(sb.header(), "/mark_read", json!({"contact_id": sa.id, "message_id": m1})).await.0, 200);
    let (_, v) = b.call(sb.header(), "/unread", Value::Null).await;
    assert_eq!(v, json!([{"contact_id": sa.id, "count": "1"}]));
    let (_, v) = a.call(sa.header(), "/messages", json!({"contact_id": sb.id})).await;
    let read: Vec<&str> = v.as_array().unwrap().iter().map(|m| m["read"].as_str().unwrap()).collect();
    assert_eq!(read, ["false", "true", "true"]);
    // Marking my own message read marks nothing of mine.
    assert_eq!(a.call(sa.header(), "/mark_read", json!({"contact_id": sb.id, "message_id": m3})).await.0, 200);
    assert_eq!(b.call(sb.header(), "/mark_read", json!({"contact_id": sa.id, "message_id": m3})).await.0, 200);
    assert_eq!(a_events.next_named("/messages_read").await["message_id"], m3.as_str(), "the next event is m3, not m1");
    let (_, v) = b.call(sb.header(), "/unread", Value::Null).await;
    assert_eq!(v, json!([]));
}

async fn history(c: &mut Client, s: &Session) -> Vec<Value> {
    let (status, v) = c.call(s.header(), "/call_history", Value::Null).await;
    assert_eq!(status, 200, "{v}");
    v.as_array().unwrap().clone()
}

/// Polls until `s` has `n` history entries (a ring timeout writes them
/// from the server's timer).
async fn history_of_len(c: &mut Client, s: &Session, n: usize) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let h = history(c, s).await;
        if h.len() >= n || tokio::time::Instant::now() > deadline {
            assert_eq!(h.len(), n, "{h:?}");
            return h;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

async fn place_call(c: &mut Client, s: &Session, to: &Session) -> String {
    let (status, v) = c.call(s.header(), "/call", json!({"contact_id": to.id})).await;
    assert_eq!(status, 200, "{v}");
    v["call_id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn call_history_of_answered_declined_and_missed_calls() {
    let (server, _dir) = start_with(|c| c.ring_timeout_secs = 1).await;
    let addr = server.addr();
    let (mut a, sa, mut b, sb) = pair_of_contacts(addr, "hist").await;

    let answered = place_call(&mut a, &sa, &sb).await;
    assert_eq!(b.call(sb.header(), "/answer", json!({"call_id": answered, "accept": "true"})).await.0, 200);
    assert_eq!(b.call(sb.header(), "/hangup", json!({"call_id": answered})).await.0, 200);
    let declined = place_call(&mut a, &sa, &sb).await;
    assert_eq!(b.call(sb.header(), "/answer", json!({"call_id": declined, "accept": "false"})).await.0, 200);
    let missed = place_call(&mut a, &sa, &sb).await;

    let hb = history_of_len(&mut b, &sb, 3).await;
    let ha = history_of_len(&mut a, &sa, 3).await;
    let row = |h: &[Value], i: usize| {
        (
            h[i]["call_id"].as_str().unwrap().to_owned(),
            h[i]["direction"].as_str().unwrap().to_owned(),
            h[i]["answered_at"].as_str().unwrap().is_empty(),
            h[i]["reason"].as_str().unwrap().to_owned(),
        )
    };
    let s = String::from;
    assert_eq!(row(&hb, 0), (missed.clone(), s("in"), true, s("timeout")), "missed: {hb:?}");
    assert_eq!(row(&hb, 1), (declined.clone(), s("in"), true, s("declined")));
    assert_eq!(row(&hb, 2), (answered.clone(), s("in"), false, s("hangup")));
    assert_eq!(row(&ha, 0), (missed, s("out"), true, s("timeout")));
    assert_eq!(row(&ha, 1), (declined, s("out"), true, s("declined")));
    assert_eq!(row(&ha, 2), (answered, s("out"), false, s("hangup")));
    assert_eq!(hb[2]["with"], json!([{"id": sa.id, "name": sa.name, "email": sa.email}]));
    assert!(hb[2]["started_at"].as_str().unwrap() <= hb[2]["answered_at"].as_str().unwrap());
    assert!(hb[2]["answered_at"].as_str().unwrap() <= hb[2]["ended_at"].as_str().unwrap());
    // Pages by entry_id, newest first.
    let (_, v) = b.call(sb.header(), "/call_history", json!({"before": hb[0]["entry_id"], "limit": "1"})).await;
    assert_eq!(v.as_array().unwrap().len(), 1);
    assert_eq!(v[0]["entry_id"], hb[1]["entry_id"]);
}

#[tokio::test]
async fn call_history_of_a_group_call() {
    let (server, _dir) = start_with(|c| c.ring_timeout_secs = 1).await;
    let addr = server.addr();
    let (mut a, sa, mut b, sb) = pair_of_contacts(addr, "group").await;
    let mut c = Client::connect(addr).await;
    let sc = c.create("group-c@example.org").await;
    let mut d = Client::connect(addr).await;
    let sd = d.create("group-d@example.org").await;
    a.befriend(&sa, &sc).await;
    a.befriend(&sa, &sd).await;

    let call = place_call(&mut a, &sa, &sb).await;
    assert_eq!(b.call(sb.header(), "/answer", json!({"call_id": call, "accept": "true"})).await.0, 200);
    assert_eq!(a.call(sa.header(), "/invite", json!({"call_id": call, "contact_id": sc.id})).await.0, 200);
    assert_eq!(a.call(sa.header(), "/invite", json!({"call_id": call, "contact_id": sd.id})).await.0, 200);
    assert_eq!(c.call(sc.header(), "/answer", json!({"call_id": call, "accept": "true"})).await.0, 200);
    // d never answers: a missed call for d once the ring times out.
    let hd = history_of_len(&mut d, &sd, 1).await;
    assert_eq!((hd[0]["direction"].as_str(), hd[0]["answered_at"].as_str()), (Some("in"), Some("")));
    assert_eq!(hd[0]["with"][0]["id"], sa.id.as_str(), "who rang first");
    assert_eq!(a.call(sa.header(), "/hangup", json!({"call_id": call})).await.0, 200);
    assert_eq!(b.call(sb.header(), "/hangup", json!({"call_id": call})).await.0, 200);

    let ha = history_of_len(&mut a, &sa, 1).await;
    let with = |h: &Value| {
        let mut ids: Vec<String> =
            h["with"].as_array().unwrap().iter().map(|u| u["id"].as_str().unwrap().to_owned()).collect();
        ids.sort();
        ids
    };
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    assert_eq!(with(&ha[0]), sorted(vec![sb.id.clone(), sc.id.clone()]), "who a talked with");
    assert_eq!(ha[0]["direction"], "out");
    let hc = history_of_len(&mut c, &sc, 1).await;
    assert_eq!(with(&hc[0]), sorted(vec![sa.id.clone(), sb.id.clone()]));
    assert_eq!(hc[0]["direction"], "in");
    assert!(!hc[0]["answered_at"].as_str().unwrap().is_empty());
    // c was left alone when b hung up: the call ended for c too.
    assert_eq!(hc[0]["reason"], "hangup");
    assert_eq!(history_of_len(&mut b, &sb, 1).await[0]["call_id"], call.as_str());
}
