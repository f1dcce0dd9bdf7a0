//! The client library's message and call-history methods against real
//! servers (one node, and three): typed answers, and `/message` and `/messages_read` arriving on
//! the event stream as typed events.
#![allow(clippy::unwrap_used)]

#[macro_use]
mod common;

use babel_proto::{Direction, EndReason, Page, ServerEvent};
use common::{Topology, befriend, start_in, user};

async fn typed_methods_and_events_round_trip(t: Topology) {
    let s = start_in(t).await;
    let mut ann = user(&s, "ann@example.org").await;
    let mut ben = user(&s, "ben@example.org").await;
    befriend(&mut ann, &mut ben).await;

    let sent = ann.client.send_message(ben.id(), "Are you free at 6?", Some("c-1")).await.unwrap();
    let got = ben
        .expect("/message", |e| match e {
            ServerEvent::Message(m) => Some(m.clone()),
            _ => None,
        })
        .await;
    assert_eq!((got.message.message_id, got.sender.id), (sent.message_id, ann.id()));
    assert_eq!(got.message.sent_at, sent.sent_at);
    assert_eq!(ann.client.send_message(ben.id(), "Are you free at 6?", Some("c-1")).await.unwrap(), sent);

    let second = ann.client.send_message(ben.id(), "Or 7?", None).await.unwrap();
    let unread = ben.client.unread().await.unwrap();
    assert_eq!((unread[0].contact_id, unread[0].count), (ann.id(), 2));
    let page = ben.client.messages(Some(ann.id()), Page::Latest, 1).await.unwrap();
    assert_eq!(page[0].message_id, second.message_id);
    let older = ben.client.messages(None, Page::Before(second.message_id), 10).await.unwrap();
    assert_eq!(older.iter().map(|m| m.message_id).collect::<Vec<_>>(), vec![sent.message_id]);
    let newer = ben.client.messages(Some(ann.id()), Page::After(sent.message_id), 10).await.unwrap();
    assert_eq!(newer.len(), 1);

    ben.client.mark_read(ann.id(), second.message_id).await.unwrap();
    let read = ann
        .expect("/messages_read", |e| match e {
            ServerEvent::MessagesRead(r) => Some(*r),
            _ => None,
        })
        .await;
    assert_eq!((read.contact_id, read.message_id), (ben.id(), second.message_id));
    assert!(ben.client.unread().await.unwrap().is_empty());
    let err = ann.client.messages(None, Page::Latest, 0).await.unwrap_err();
    assert!(matches!(err, babel_client::ClientError::Server(babel_proto::ReplyError::BadRequest(_))), "{err}");

    let call = ann.client.call(ben.id(), Default::default()).await.unwrap().call_id;
    ben.client.decline_call(call).await.unwrap();
    let history = ann.client.call_history(None, 10).await.unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(
        (history[0].call_id, history[0].direction, history[0].reason),
        (call, Direction::Out, EndReason::Declined)
    );
    assert_eq!(history[0].with[0].id, ben.id());
    let mine = ben.client.call_history(None, 10).await.unwrap();
    assert!(mine[0].answered_at.is_empty() && !mine[0].is_missed(), "declined is not missed: {mine:?}");
    assert!(ben.client.call_history(Some(mine[0].entry_id), 10).await.unwrap().is_empty());
}

in_both_topologies! {
    typed_methods_and_events_round_trip,
}
