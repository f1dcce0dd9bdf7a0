//! The push channel and presence, against the real server.
#![allow(clippy::unwrap_used)]

#[macro_use]
mod common;

use std::time::Duration;

use babel_proto::{ContactRef, Presence, ServerEvent};
use common::{Topology, befriend, device, start_in, start_in_with, user};

async fn contact_events_reach_both_sides(t: Topology) {
    let s = start_in(t).await;
    let mut a = user(&s, "ann@example.org").await;
    let mut b = user(&s, "bob@example.org").await;
    a.client.add_contact("bob@example.org").await.unwrap();
    let aid = a.id();
    let from = b.expect("contact_request", |e| match e {
        ServerEvent::ContactRequest(u) => Some(u.clone()),
        _ => None,
    });
    assert_eq!(from.await.id, aid);
    let bid = b.id();
    let pending = a
        .expect("pending contact_added", |e| match e {
            ServerEvent::ContactAdded(c) if c.user.id == bid => Some(c.status),
            _ => None,
        })
        .await;
    assert_eq!(pending, Presence::Pending);

    b.client.accept_contact(aid).await.unwrap();
    let st = a
        .expect("contact_added", |e| match e {
            ServerEvent::ContactAdded(c) if c.user.id == bid => Some(c.status),
            _ => None,
        })
        .await;
    assert_eq!(st, Presence::Online);
    let st = b
        .expect("contact_added", |e| match e {
            ServerEvent::ContactAdded(c) if c.user.id == aid => Some(c.status),
            _ => None,
        })
        .await;
    assert_eq!(st, Presence::Online);

    b.client.remove_contact(ContactRef::Id(aid)).await.unwrap();
    a.expect("contact_removed", |e| matches!(e, ServerEvent::ContactRemoved(id) if *id == bid).then_some(())).await;
}

async fn decline_tells_the_asker(t: Topology) {
    let s = start_in(t).await;
    let mut a = user(&s, "cal@example.org").await;
    let mut b = user(&s, "dee@example.org").await;
    a.client.add_contact("dee@example.org").await.unwrap();
    b.client.decline_contact(a.id()).await.unwrap();
    let bid = b.id();
    a.expect("contact_removed", |e| matches!(e, ServerEvent::ContactRemoved(id) if *id == bid).then_some(())).await;
    assert!(a.client.contacts().await.unwrap().is_empty());
}

async fn status_events_follow_presence(t: Topology) {
    let s = start_in(t).await;
    let mut a = user(&s, "eve@example.org").await;
    let mut b = user(&s, "fay@example.org").await;
    befriend(&mut a, &mut b).await;
    let bid = b.id();
    let status = |want: Presence| {
        move |e: &ServerEvent| matches!(e, ServerEvent::Status(id, st) if *id == bid && *st == want).then_some(())
    };

    // Both of Fay's connections (requests and events) close: offline.
    drop(b);
    a.expect("offline", status(Presence::Offline)).await;
    // She comes back on another device: online.
    let b2 = device(&s, "fay@example.org").await;
    a.expect("online", status(Presence::Online)).await;
    // Logging out makes her offline at once, connections or not.
    let mut b2 = b2;
    b2.client.logout().await.unwrap();
    a.expect("offline after logout", status(Presence::Offline)).await;
    // The logged-out session's event stream is closed (said at once) and
    // cannot come back.
    let mut end = tokio::time::timeout(common::TIMEOUT, b2.events.next()).await.unwrap();
    if matches!(end, Some(Ok(babel_client::Event::Disconnected))) {
        end = tokio::time::timeout(common::TIMEOUT, b2.events.next()).await.unwrap();
    }
    assert!(matches!(end, Some(Err(_)) | None), "{end:?}");
}

async fn deleting_an_account_tells_its_contacts(t: Topology) {
    let s = start_in(t).await;
    let mut a = user(&s, "gus@example.org").await;
    let mut b = user(&s, "hal@example.org").await;
    befriend(&mut a, &mut b).await;
    let bid = b.id();
    b.client.delete_account().await.unwrap();
    a.expect("contact_removed", |e| matches!(e, ServerEvent::ContactRemoved(id) if *id == bid).then_some(())).await;
}

async fn every_device_gets_the_events(t: Topology) {
    let s = start_in(t).await;
    let mut a = user(&s, "ida@example.org").await;
    let mut a2 = device(&s, "ida@example.org").await;
    let mut b = user(&s, "jo@example.org").await;
    b.client.add_contact("ida@example.org").await.unwrap();
    for d in [&mut a, &mut a2] {
        d.expect("contact_request", |e| matches!(e, ServerEvent::ContactRequest(_)).then_some(())).await;
    }
}

async fn pings_arrive_on_schedule_and_a_talking_client_is_cut_off(t: Topology) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = start_in_with(t, |c| c.ping_interval_secs = 1).await;
    let a = user(&s, "kai@example.org").await;
    let creds = babel_proto::Credentials { id: a.me.id, token: a.me.token.clone() };
    let mut raw = tokio::net::TcpStream::connect(s.next_addr()).await.unwrap();
    raw.write_all(&babel_proto::ClientRequest::Events(creds).to_frame().to_bytes()).await.unwrap();
    let mut buf = bytes::BytesMut::new();
    let limits = babel_proto::Limits::default();
    let mut got_ok = false;
    let mut pings = 0;
    while pings < 2 {
        if !got_ok {
            if let Some(r) = babel_proto::decode_response(&mut buf, &limits).unwrap() {
                assert_eq!(r.status, 200);
                got_ok = true;
                continue;
            }
        } else if let Some(f) = babel_proto::decode_request(&mut buf, &limits).unwrap() {
            assert_eq!(&f.route[..], b"/ping");
            assert!(f.header.is_empty());
            assert_eq!(&f.data[..], b"{}");
            pings += 1;
            continue;
        }
        let n = tokio::time::timeout(Duration::from_secs(10), raw.read_buf(&mut buf)).await.unwrap().unwrap();
        assert!(n > 0);
    }
    // In event mode the client must not write: the server closes.
    raw.write_all(b"hello").await.unwrap();
    let mut rest = Vec::new();
    // read_to_end only returns (with EOF or a reset) once the server closed.
    tokio::time::timeout(Duration::from_secs(10), raw.read_to_end(&mut rest))
        .await
        .expect("the server should close an event connection the client writes to")
        .ok();
}

async fn the_event_stream_reconnects_after_the_server_comes_back(t: Topology) {
    // Nodes that can be started again on their address.
    let mut s = start_in_with(t, |c| c.listen = common::quiet_addr()).await;
    let node = s.place();
    let addr = s.addr_of(node);
    let mut client = babel_client::Client::connect(addr).await.unwrap();
    client.create("phoenix@example.org", common::PASSWORD, None).await.unwrap();
    let mut events = client.events().await.unwrap();
    let mut up = events.connection();
    assert!(*up.borrow_and_update());
    s.stop(node).await;
    // The loss is told as it happens, not only once the server is back.
    tokio::time::timeout(common::TIMEOUT, up.wait_for(|u| !*u)).await.expect("the loss told").unwrap();
    // The loss is said at once, before any reconnection.
    let next = tokio::time::timeout(common::TIMEOUT, events.next()).await.expect("a notice of the loss");
    assert!(matches!(next, Some(Ok(babel_client::Event::Disconnected))), "{next:?}");
    // The same address again, the same database: the session is still valid.
    s.start_again(node).await;
    let next = tokio::time::timeout(common::TIMEOUT, events.next()).await.expect("a reconnection notice");
    assert!(matches!(next, Some(Ok(babel_client::Event::Reconnected))), "{next:?}");
    assert!(*up.borrow(), "up again");
    // And events flow on the new connection (from another node, on three).
    let mut other = babel_client::Client::connect(s.next_addr()).await.unwrap();
    other.create("friend@example.org", common::PASSWORD, None).await.unwrap();
    other.add_contact("phoenix@example.org").await.unwrap();
    let ev = tokio::time::timeout(common::TIMEOUT, events.next_server_event()).await.unwrap();
    assert!(matches!(ev, Some(Ok(ServerEvent::ContactRequest(_)))), "{ev:?}");
    // The request connection reconnects too, on the next request.
    assert!(client.contacts().await.is_ok());
    s.shutdown().await;
}

/// Not a question of topology: the server here is a fake that falls silent.
/// A server that answers `/events` once, then says nothing, not even
/// `/ping` (a hung server, or a path that silently drops everything); later
/// subscriptions are closed at once.
#[tokio::test]
async fn an_event_connection_silent_past_the_pings_counts_as_lost() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut answered = false;
        let mut held = Vec::new();
        loop {
            let Ok((mut s, _)) = listener.accept().await else { return };
            let mut buf = [0u8; 4096];
            // The request connection sends nothing yet; `/events` does.
            match tokio::time::timeout(Duration::from_millis(500), s.read(&mut buf)).await {
                Ok(Ok(n)) if n > 0 && !answered => {
                    answered = true;
                    s.write_all(&babel_proto::RawResponse::new(200, "{}").to_bytes()).await.unwrap();
                    held.push(s);
                }
                Ok(_) => drop(s),
                Err(_) => held.push(s),
            }
        }
    });
    let info = babel_proto::SessionInfo {
        id: babel_proto::UserId(1),
        name: "Sil".into(),
        email: "sil@example.org".into(),
        token: babel_proto::Secret::new("t"),
    };
    let client = babel_client::Client::resume(addr.to_string(), info)
        .await
        .unwrap()
        .with_event_silence(Duration::from_millis(400));
    let events = client.events().await.unwrap();
    let mut up = events.connection();
    assert!(*up.borrow_and_update(), "subscribed");
    tokio::time::timeout(common::TIMEOUT, up.wait_for(|u| !*u)).await.expect("the silence counts as a loss").unwrap();
    drop(events);
}

in_both_topologies! {
    contact_events_reach_both_sides,
    decline_tells_the_asker,
    status_events_follow_presence,
    deleting_an_account_tells_its_contacts,
    every_device_gets_the_events,
    pings_arrive_on_schedule_and_a_talking_client_is_cut_off,
    the_event_stream_reconnects_after_the_server_comes_back,
}
