//! Calls end to end against the real server: ringing, answering,
//! declining, hanging up, timeouts, drops, group calls, busy.
#![allow(clippy::unwrap_used)]

#[macro_use]
mod common;

use std::time::Duration;

use babel_proto::{CallId, EndReason, MediaSetup, Presence, ServerEvent, UserId};
use common::{Topology, User, befriend, device, start_in, start_in_with, user};

fn incoming(e: &ServerEvent) -> Option<CallId> {
    match e {
        ServerEvent::IncomingCall(c) => Some(c.call_id),
        _ => None,
    }
}

fn ended(call: CallId) -> impl FnMut(&ServerEvent) -> Option<EndReason> {
    move |e| match e {
        ServerEvent::CallEnded(c, r) if *c == call => Some(*r),
        _ => None,
    }
}

async fn pair(s: &common::TestServer, a: &str, b: &str) -> (User, User) {
    let mut a = user(s, a).await;
    let mut b = user(s, b).await;
    befriend(&mut a, &mut b).await;
    (a, b)
}

async fn call_refusals_say_why(t: Topology) {
    let s = start_in(t).await;
    let (mut a, mut b) = pair(&s, "a1@example.org", "b1@example.org").await;
    let mut stranger = user(&s, "c1@example.org").await;
    let refusal = |r: Result<babel_proto::CallStarted, babel_client::ClientError>| {
        r.unwrap_err().refusal().unwrap_or_default().to_owned()
    };
    let me = a.id();
    assert!(refusal(a.client.call(me, MediaSetup::default()).await).contains("yourself"));
    assert!(refusal(a.client.call(stranger.id(), MediaSetup::default()).await).contains("only call your contacts"));
    assert!(refusal(a.client.call(UserId(999_999), MediaSetup::default()).await).contains("only call your contacts"));
    // Busy: b is in a call with d.
    let mut d = user(&s, "d1@example.org").await;
    befriend(&mut b, &mut d).await;
    let call = d.client.call(b.id(), MediaSetup::default()).await.unwrap();
    b.expect("incoming", incoming).await;
    b.client.accept_call(call.call_id, MediaSetup::default()).await.unwrap();
    assert!(refusal(a.client.call(b.id(), MediaSetup::default()).await).contains("busy"));
    let contacts = a.client.contacts().await.unwrap();
    assert_eq!(contacts[0].status, Presence::Busy);
    // Offline.
    d.client.hangup(call.call_id).await.unwrap();
    drop(b);
    let bid = contacts[0].user.id;
    a.expect("offline", |e| matches!(e, ServerEvent::Status(id, Presence::Offline) if *id == bid).then_some(())).await;
    assert!(refusal(a.client.call(bid, MediaSetup::default()).await).contains("offline"));
    // /send in request mode points to the call channel.
    let err = stranger.client.raw(babel_proto::RawRequest::new(
        format!(r#"{{"id":"{}","token":"{}"}}"#, stranger.id(), stranger.me.token.expose()),
        "/send",
        Vec::new(),
    ));
    assert!(err.await.unwrap().ok().unwrap_err().to_string().contains("/connect_call"));
}

async fn every_device_rings_and_the_first_answer_wins(t: Topology) {
    let s = start_in(t).await;
    let (mut a, mut b) = pair(&s, "a2@example.org", "b2@example.org").await;
    let mut b_phone = device(&s, "b2@example.org").await;
    let key = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=".to_owned();
    let media = MediaSetup {
        key: None,
        key_commit: Some(key.clone()),
        candidates: vec!["127.0.0.1:40000".parse().unwrap()],
        ..MediaSetup::default()
    };
    let started = a.client.call(b.id(), media).await.unwrap();
    assert_eq!(started.ip, "127.0.0.1");
    assert!(started.relay.parts().is_some());
    for d in [&mut b, &mut b_phone] {
        let inc = d
            .expect("incoming", |e| match e {
                ServerEvent::IncomingCall(c) => Some(c.clone()),
                _ => None,
            })
            .await;
        assert_eq!(inc.call_id, started.call_id);
        assert_eq!(inc.caller.email, "a2@example.org");
        assert_eq!(inc.ip, "127.0.0.1");
        assert_eq!(inc.media.key_commit.as_deref(), Some(key.as_str()), "the commitment goes to every rung session");
        assert_eq!(inc.media.key, None);
        assert_eq!(inc.participants.len(), 1);
    }
    // Being rung is still online.
    let aid = a.id();
    let bid = b.id();
    assert_eq!(a.client.contacts().await.unwrap()[0].status, Presence::Online);

    let joined = b_phone.client.accept_call(started.call_id, MediaSetup::default()).await.unwrap();
    assert_eq!(joined.participants.len(), 1);
    assert_eq!(joined.participants[0].user.id, aid);
    assert_eq!(b.expect("answered elsewhere", ended(started.call_id)).await, EndReason::AnsweredElsewhere);
    let accepted = a
        .expect("call_accepted", |e| match e {
            ServerEvent::CallAccepted(j) => Some(j.clone()),
            _ => None,
        })
        .await;
    assert_eq!(accepted.peer.user.id, bid);
    // Both are busy now, for their contacts.
    assert_eq!(b.client.contacts().await.unwrap()[0].status, Presence::Busy);
    // The other device cannot answer any more.
    assert!(b.client.accept_call(started.call_id, MediaSetup::default()).await.is_err());

    b_phone.client.hangup(started.call_id).await.unwrap();
    assert_eq!(a.expect("ended", ended(started.call_id)).await, EndReason::Hangup);
    assert_eq!(s.calls_in_progress(), 0);
}

async fn the_caller_reveals_its_key_once_after_the_answer(t: Topology) {
    let s = start_in(t).await;
    let (mut a, mut b) = pair(&s, "a14@example.org", "b14@example.org").await;
    let mut stranger = user(&s, "c14@example.org").await;
    let keys = babel_proto::keys::CallKeys::from_secret([1; 32]);
    let media = MediaSetup { key: None, key_commit: Some(keys.commit_b64()), ..MediaSetup::default() };
    let call = a.client.call(b.id(), media).await.unwrap().call_id;
    b.expect("incoming", incoming).await;
    let refusal = |r: Result<(), babel_client::ClientError>| r.unwrap_err().refusal().unwrap_or_default().to_owned();
    // Nobody to reveal it to while it rings.
    assert!(refusal(a.client.call_key(call, keys.public_b64()).await).contains("not been answered"));
    let b_key = babel_proto::keys::CallKeys::from_secret([2; 32]).public_b64();
    b.client.accept_call(call, MediaSetup { key: Some(b_key.clone()), ..MediaSetup::default() }).await.unwrap();
    let accepted = a
        .expect("call_accepted", |e| match e {
            ServerEvent::CallAccepted(j) => Some(j.clone()),
            _ => None,
        })
        .await;
    assert_eq!(accepted.peer.media.key.as_deref(), Some(b_key.as_str()), "the answer's key goes to the caller");
    a.client.call_key(call, keys.public_b64()).await.unwrap();
    let aid = a.id();
    let revealed = b
        .expect("call_key", |e| match e {
            ServerEvent::CallKey(k) if k.call_id == call => Some(k.clone()),
            _ => None,
        })
        .await;
    assert_eq!((revealed.id, revealed.key.as_str()), (aid, keys.public_b64().as_str()));
    // Once only; only who committed; only members.
    assert!(refusal(a.client.call_key(call, keys.public_b64()).await).contains("already revealed"));
    assert!(refusal(b.client.call_key(call, b_key.clone()).await).contains("committed to no key"));
    assert!(refusal(stranger.client.call_key(call, b_key).await).contains("not in this call"));
    // A key that is not 32 bytes of base64 is malformed.
    let bad = a.client.raw(babel_proto::RawRequest::new(
        format!(r#"{{"id":"{}","token":"{}"}}"#, a.id(), a.me.token.expose()),
        "/call_key",
        format!(r#"{{"call_id":"{call}","key":"AAAA"}}"#),
    ));
    assert_eq!(bad.await.unwrap().0.status, 400);
    a.client.hangup(call).await.unwrap();
}

async fn a_group_join_commits_answers_with_nonces_reveals_and_every_side_shows_one_code(t: Topology) {
    use babel_proto::agree::{CalleeAgreement, CallerAgreement, GroupAgreement, Joiner};
    use babel_proto::keys::CallKeys;
    let s = start_in(t).await;
    let (mut a, mut b) = pair(&s, "a15@example.org", "b15@example.org").await;
    let mut c = user(&s, "c15@example.org").await;
    befriend(&mut a, &mut c).await;
    let (ka, kb, kc) = (CallKeys::generate().unwrap(), CallKeys::generate().unwrap(), CallKeys::generate().unwrap());
    let (aid, bid, cid) = (a.id(), b.id(), c.id());
    // Two-party: commit, answer, reveal.
    let mut ca = CallerAgreement::new(aid, &ka);
    let media = MediaSetup { key_commit: Some(ca.key_commit()), ..MediaSetup::default() };
    let call = a.client.call(bid, media).await.unwrap().call_id;
    b.expect("incoming", incoming).await;
    let mut cb = CalleeAgreement::on_incoming(call, aid, Some(&ca.key_commit()), bid, &kb).unwrap();
    b.client.accept_call(call, MediaSetup { key: Some(cb.key()), ..MediaSetup::default() }).await.unwrap();
    a.expect("accepted", |e| matches!(e, ServerEvent::CallAccepted(_)).then_some(())).await;
    let at_a = ca.on_accepted(call, bid, Some(&kb.public_b64())).unwrap();
    a.client.call_key(call, ca.reveal().unwrap()).await.unwrap();
    let k = b
        .expect("call_key", |e| match e {
            ServerEvent::CallKey(k) => Some(k.clone()),
            _ => None,
        })
        .await;
    let at_b = cb.on_reveal(k.id, &k.key).unwrap();
    let mut ga = GroupAgreement::two_party(call, aid, aid, bid, &at_a);
    let mut gb = GroupAgreement::two_party(call, bid, aid, bid, &at_b);
    // Cat is invited: she sees both keys, answers with a commitment.
    a.client.invite(call, cid).await.unwrap();
    let inc = c
        .expect("incoming", |e| match e {
            ServerEvent::IncomingCall(i) => Some(i.clone()),
            _ => None,
        })
        .await;
    assert!(inc.participants.iter().all(|p| p.media.key.is_some()), "members' keys are public: {inc:?}");
    let mut joiner = Joiner::new(cid, &kc);
    let commit_only = MediaSetup { key_commit: Some(joiner.key_commit()), ..MediaSetup::default() };
    let joined = c.client.accept_call(call, commit_only).await.unwrap();
    assert_eq!(joined.epoch, babel_proto::Epoch(1));
    let members: Vec<_> = joined.participants.iter().map(|p| (p.user.id, p.media.key.clone())).collect();
    let members: Vec<_> = members.iter().map(|(id, k)| (*id, k.as_deref())).collect();
    joiner.on_joined(call, joined.epoch.0, &members);
    // Each member gets her commitment and the new epoch, and answers with a nonce.
    for (u, g) in [(&mut a, &mut ga), (&mut b, &mut gb)] {
        let j = u
            .expect("participant_joined", |e| match e {
                ServerEvent::ParticipantJoined(j) => Some(j.clone()),
                _ => None,
            })
            .await;
        assert_eq!((j.peer.media.key.as_deref(), j.epoch), (None, Some(babel_proto::Epoch(1))));
        let nonce = g.on_joining(j.peer.user.id, j.peer.media.key_commit.as_deref(), 1).unwrap();
        u.client.call_nonce(call, nonce).await.unwrap();
    }
    // The nonces reach everyone else; Cat reveals once she has both.
    let mut reveal = None;
    while reveal.is_none() {
        let n = c
            .expect("call_nonce", |e| match e {
                ServerEvent::CallNonce(n) => Some(n.clone()),
                _ => None,
            })
            .await;
        reveal = joiner.on_nonce(n.id, &n.nonce);
    }
    c.client.call_key(call, reveal.unwrap()).await.unwrap();
    for (u, g) in [(&mut a, &mut ga), (&mut b, &mut gb)] {
        loop {
            let e = u
                .expect("nonce or key", |e| match e {
                    ServerEvent::CallNonce(_) | ServerEvent::CallKey(_) => Some(e.clone()),
                    _ => None,
                })
                .await;
            match e {
                ServerEvent::CallNonce(n) => g.on_nonce(n.id, &n.nonce),
                ServerEvent::CallKey(k) => {
                    g.on_reveal(k.id, &k.key).unwrap();
                    break;
                }
                _ => {}
            }
        }
    }
    let gc = joiner.into_group().unwrap();
    assert_eq!(ga.code(), gc.code(), "one code for everybody in epoch 1");
    assert_eq!(gb.code(), gc.code());
    assert_ne!(ga.code(), at_a.code(), "a join changes the code");
    // Ben leaves: epoch 2, and Ann and Cat agree on the new code.
    b.client.hangup(call).await.unwrap();
    let left = a
        .expect("participant_left", |e| match e {
            ServerEvent::ParticipantLeft(_, id, epoch) => Some((*id, *epoch)),
            _ => None,
        })
        .await;
    assert_eq!(left, (bid, babel_proto::Epoch(2)));
    let mut gc = gc;
    assert_eq!(ga.on_left(bid, 2), gc.on_left(bid, 2));
    // Only members send nonces.
    let refused = b.client.call_nonce(call, "AAAAAAAAAAAAAAAAAAAAAA==".into()).await.unwrap_err();
    assert!(refused.refusal().is_some(), "{refused}");
    a.client.hangup(call).await.unwrap();
}

async fn decline_ends_the_call_for_the_caller(t: Topology) {
    let s = start_in(t).await;
    let (mut a, mut b) = pair(&s, "a3@example.org", "b3@example.org").await;
    let call = a.client.call(b.id(), MediaSetup::default()).await.unwrap().call_id;
    b.expect("incoming", incoming).await;
    b.client.decline_call(call).await.unwrap();
    let bid = b.id();
    a.expect("declined", |e| matches!(e, ServerEvent::CallDeclined(c, id) if *c == call && *id == bid).then_some(()))
        .await;
    assert_eq!(a.expect("ended", ended(call)).await, EndReason::Declined);
}

async fn hang_up_while_ringing(t: Topology) {
    let s = start_in(t).await;
    let (mut a, mut b) = pair(&s, "a4@example.org", "b4@example.org").await;
    let call = a.client.call(b.id(), MediaSetup::default()).await.unwrap().call_id;
    b.expect("incoming", incoming).await;
    a.client.hangup(call).await.unwrap();
    assert_eq!(b.expect("ended", ended(call)).await, EndReason::Hangup);
    // The callee can no longer answer it.
    let err = b.client.accept_call(call, MediaSetup::default()).await.unwrap_err();
    assert!(err.refusal().is_some(), "{err}");
}

/// The call's id is all a callee needs: an answer sent the moment `/call`
/// has answered (before the ring arrives, from a callee on another node)
/// finds the call, every time.
async fn an_answer_sent_at_once_finds_the_call(t: Topology) {
    let s = start_in(t).await;
    let (mut a, mut b) = pair(&s, "a16@example.org", "b16@example.org").await;
    for _ in 0..50 {
        let call = a.client.call(b.id(), MediaSetup::default()).await.unwrap().call_id;
        b.client.decline_call(call).await.unwrap();
        assert_eq!(a.expect("ended", ended(call)).await, EndReason::Declined);
    }
}

async fn unanswered_calls_time_out(t: Topology) {
    let s = start_in_with(t, |c| c.ring_timeout_secs = 1).await;
    let (mut a, mut b) = pair(&s, "a5@example.org", "b5@example.org").await;
    let call = a.client.call(b.id(), MediaSetup::default()).await.unwrap().call_id;
    assert_eq!(b.expect("ended", ended(call)).await, EndReason::Timeout);
    assert_eq!(a.expect("ended", ended(call)).await, EndReason::Timeout);
    assert_eq!(s.calls_in_progress(), 0);
}

async fn a_drop_mid_call_ends_it_for_the_other_side(t: Topology) {
    // A participant whose connections are all gone keeps their place for a
    // grace (15 s by default; babel-server's tests/cluster_calls.rs covers
    // it): a short one here.
    let s = start_in_with(t, |c| c.call_grace_ms = 200).await;
    let (mut a, mut b) = pair(&s, "a6@example.org", "b6@example.org").await;
    let call = a.client.call(b.id(), MediaSetup::default()).await.unwrap().call_id;
    b.expect("incoming", incoming).await;
    b.client.accept_call(call, MediaSetup::default()).await.unwrap();
    let _channel = b.client.connect_call(call).await.unwrap();
    // Every connection of b's session goes away.
    drop(b);
    drop(_channel);
    assert_eq!(a.expect("ended", ended(call)).await, EndReason::Disconnected);
    assert_eq!(s.calls_in_progress(), 0);
    assert_eq!(s.leg_count(), 0);
}

async fn logout_mid_call_ends_it(t: Topology) {
    let s = start_in(t).await;
    let (mut a, mut b) = pair(&s, "a7@example.org", "b7@example.org").await;
    let call = a.client.call(b.id(), MediaSetup::default()).await.unwrap().call_id;
    b.expect("incoming", incoming).await;
    b.client.accept_call(call, MediaSetup::default()).await.unwrap();
    b.client.logout().await.unwrap();
    assert_eq!(a.expect("ended", ended(call)).await, EndReason::Logout);
}

async fn group_call_with_invites(t: Topology) {
    let s = start_in(t).await;
    let (mut a, mut b) = pair(&s, "a8@example.org", "b8@example.org").await;
    let mut c = user(&s, "c8@example.org").await;
    befriend(&mut a, &mut c).await;
    let call = a.client.call(b.id(), MediaSetup::default()).await.unwrap().call_id;
    b.expect("incoming", incoming).await;
    // Invites need an answered call.
    assert!(a.client.invite(call, c.id()).await.unwrap_err().refusal().unwrap().contains("not been answered"));
    b.client.accept_call(call, MediaSetup::default()).await.unwrap();
    // Only members invite, and only their contacts.
    assert!(c.client.invite(call, a.id()).await.is_err());
    assert!(b.client.invite(call, c.id()).await.unwrap_err().refusal().unwrap().contains("only invite your contacts"));
    a.client.invite(call, c.id()).await.unwrap();
    let inc = c
        .expect("incoming", |e| match e {
            ServerEvent::IncomingCall(i) => Some(i.clone()),
            _ => None,
        })
        .await;
    assert_eq!(inc.participants.len(), 2, "the invitee sees who is in the call");
    let joined = c.client.accept_call(call, MediaSetup::default()).await.unwrap();
    assert_eq!(joined.participants.len(), 2);
    let cid = c.id();
    for m in [&mut a, &mut b] {
        m.expect("joined", |e| matches!(e, ServerEvent::ParticipantJoined(j) if j.peer.user.id == cid).then_some(()))
            .await;
    }
    // b leaves: the call goes on for a and c.
    b.client.hangup(call).await.unwrap();
    let bid = b.id();
    for m in [&mut a, &mut c] {
        m.expect("left", |e| {
            matches!(e, ServerEvent::ParticipantLeft(k, id, _) if *k == call && *id == bid).then_some(())
        })
        .await;
    }
    assert_eq!(s.calls_in_progress(), 1);
    a.client.hangup(call).await.unwrap();
    assert_eq!(c.expect("ended", ended(call)).await, EndReason::Hangup);
}

async fn busy_is_published_and_cleared(t: Topology) {
    let s = start_in(t).await;
    let (mut a, mut b) = pair(&s, "a9@example.org", "b9@example.org").await;
    let mut watcher = user(&s, "w9@example.org").await;
    befriend(&mut watcher, &mut a).await;
    let call = a.client.call(b.id(), MediaSetup::default()).await.unwrap().call_id;
    b.expect("incoming", incoming).await;
    let aid = a.id();
    watcher
        .expect_none(
            "busy while ringing",
            Duration::from_millis(300),
            |e| matches!(e, ServerEvent::Status(id, Presence::Busy) if *id == aid),
        )
        .await;
    b.client.accept_call(call, MediaSetup::default()).await.unwrap();
    watcher.expect("busy", |e| matches!(e, ServerEvent::Status(id, Presence::Busy) if *id == aid).then_some(())).await;
    b.client.hangup(call).await.unwrap();
    watcher
        .expect("online", |e| matches!(e, ServerEvent::Status(id, Presence::Online) if *id == aid).then_some(()))
        .await;
}

async fn two_hundred_concurrent_calls_leave_nothing_behind(t: Topology) {
    // Those who drop leave after the grace: a short one, as in
    // a_drop_mid_call_ends_it_for_the_other_side.
    let s = start_in_with(t, |c| c.call_grace_ms = 200).await;
    let mut pairs = Vec::new();
    for i in 0..200 {
        let (addr_a, addr_b) = (s.next_addr(), s.next_addr());
        pairs.push(tokio::spawn(async move {
            let mut a = babel_client::Client::connect(addr_a).await.unwrap();
            let mut b = babel_client::Client::connect(addr_b).await.unwrap();
            let sa = a.create(&format!("ca{i}@example.org"), common::PASSWORD, None).await.unwrap();
            let sb = b.create(&format!("cb{i}@example.org"), common::PASSWORD, None).await.unwrap();
            a.add_contact(&sb.email).await.unwrap();
            b.accept_contact(sa.id).await.unwrap();
            (a, b)
        }));
    }
    let mut clients = Vec::new();
    for p in pairs {
        clients.push(p.await.unwrap());
    }
    // On three nodes a callee's presence reaches the caller's node over
    // NATS, as a note each node takes in turn: with 400 users coming online
    // at once that lags (up to ~0.9 s seen on a loaded 2-core machine).
    // Each caller waits until its node knows the callee is online.
    let deadline = tokio::time::Instant::now() + common::TIMEOUT;
    for (a, _) in clients.iter_mut() {
        while a.contacts().await.unwrap()[0].status != Presence::Online {
            assert!(tokio::time::Instant::now() < deadline, "a callee never showed online to its caller");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // All calls up at once.
    let mut calls = Vec::new();
    for (a, b) in clients.iter_mut() {
        let bid = b.user_id().unwrap();
        calls.push(a.call(bid, MediaSetup::default()).await.unwrap().call_id);
    }
    for ((_, b), call) in clients.iter_mut().zip(&calls) {
        b.accept_call(*call, MediaSetup::default()).await.unwrap();
    }
    assert_eq!(s.calls_in_progress(), 200);
    assert_eq!(s.leg_count(), 400);
    // Half hang up, half drop their connections.
    let mut tasks = Vec::new();
    for (i, ((mut a, b), call)) in clients.into_iter().zip(calls).enumerate() {
        tasks.push(tokio::spawn(async move {
            if i % 2 == 0 {
                a.hangup(call).await.unwrap();
            } else {
                drop(b);
            }
            drop(a);
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    // A call's relay legs go a moment after the call (on its home, after
    // the call's end is stored in the cluster), so wait for both.
    let deadline = tokio::time::Instant::now() + common::TIMEOUT;
    while (s.calls_in_progress() > 0 || s.leg_count() > 0) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(s.calls_in_progress(), 0);
    assert_eq!(s.leg_count(), 0);
}

in_both_topologies! {
    call_refusals_say_why,
    every_device_rings_and_the_first_answer_wins,
    decline_ends_the_call_for_the_caller,
    hang_up_while_ringing,
    unanswered_calls_time_out,
    an_answer_sent_at_once_finds_the_call,
    logout_mid_call_ends_it,
    group_call_with_invites,
    busy_is_published_and_cleared,
    two_hundred_concurrent_calls_leave_nothing_behind(flavor = "multi_thread", worker_threads = 2),
    the_caller_reveals_its_key_once_after_the_answer,
    a_group_join_commits_answers_with_nonces_reveals_and_every_side_shows_one_code,
    a_drop_mid_call_ends_it_for_the_other_side,
}
