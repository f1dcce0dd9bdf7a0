//! The call session API over real sockets: an embedded server on
//! 127.0.0.1, real clients, real media engines (Opus, UDP).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use babel_call::setup::{ExchangeError, Prepared};
use babel_call::{Answering, Call, CallError, CallEvent, Outgoing, Settled};
use babel_client::{Client, Event, EventStream};
use babel_media::audio::{AudioOutput, BufferInput, SilentInput};
use babel_media::engine::{EndCause, MediaConfig};
use babel_media::keys::CallKeys;
use babel_proto::agree::{AgreeError, CallerAgreement};
use babel_proto::{EndReason, IncomingCall, ServerEvent, UserId};
use babel_server::Embedded;

/// Generous: tests assert that things happen, not how fast.
const TIMEOUT: Duration = Duration::from_secs(20);

struct Person {
    client: Client,
    events: EventStream,
    id: UserId,
}

/// Signs `names` up on `server`; every one a contact of the first.
async fn people(server: &Embedded, names: &[&str]) -> Vec<Person> {
    let addr = server.addr().to_string();
    let mut out: Vec<Person> = Vec::new();
    for name in names {
        let mut client = Client::connect(addr.clone()).await.unwrap();
        let s = client.create(&format!("{name}@example.org"), "password123", Some(name)).await.unwrap();
        let events = client.events().await.unwrap();
        out.push(Person { client, events, id: s.id });
    }
    for i in 1..out.len() {
        let email = format!("{}@example.org", names[i]);
        out[0].client.add_contact(&email).await.unwrap();
        let first = out[0].id;
        out[i].client.accept_contact(first).await.unwrap();
    }
    out
}

/// The next server event `want` takes, others passed over.
async fn next<T>(events: &mut EventStream, mut want: impl FnMut(&ServerEvent) -> Option<T>) -> T {
    let wait = async {
        loop {
            match events.next().await {
                Some(Ok(Event::Server(ev))) => {
                    if let Some(t) = want(&ev) {
                        return t;
                    }
                }
                Some(Ok(_)) => {}
                other => panic!("event stream: {other:?}"),
            }
        }
    };
    tokio::time::timeout(TIMEOUT, wait).await.expect("the event came")
}

async fn incoming(p: &mut Person) -> IncomingCall {
    next(&mut p.events, |e| match e {
        ServerEvent::IncomingCall(c) => Some(c.clone()),
        _ => None,
    })
    .await
}

/// A loudspeaker that keeps nothing.
#[derive(Debug)]
struct Discard;

impl AudioOutput for Discard {
    fn write(&mut self, _frame: &[f32]) {}
}

fn tone(secs: f32) -> Vec<f32> {
    (0..(48_000.0 * secs) as usize).map(|i| (i as f32 * 440.0 * std::f32::consts::TAU / 48_000.0).sin() * 0.3).collect()
}

fn quiet() -> MediaConfig {
    MediaConfig { noise_suppression: false, echo_cancellation: false, auto_gain: false, ..MediaConfig::default() }
}

/// Ann calls Ben; both settle on one code.
async fn two_party(ann: &mut Person, ben: &mut Person) -> (Settled, Settled) {
    let out = Outgoing::place(&mut ann.client, ben.id, false).await.unwrap();
    let ring = incoming(ben).await;
    assert_eq!(ring.call_id, out.call_id());
    assert!(ring.media.key.is_none() && ring.media.key_commit.is_some(), "the caller shows only a commitment");
    let answering = Answering::answer(&mut ben.client, &ring, false).await.unwrap();
    let caller = &answering.participants()[0];
    assert!(!caller.media.candidates.is_empty(), "not relay-only: the answer shows where Ann is: {caller:?}");
    let a = tokio::time::timeout(TIMEOUT, out.wait_answer(&mut ann.client, &mut ann.events)).await.unwrap().unwrap();
    let b = answering.settle(&mut ben.client, &mut ben.events).await.unwrap();
    (a, b)
}

#[tokio::test]
async fn a_two_party_call_rings_settles_carries_voice_and_hangs_up() {
    let server = Embedded::builder().fast_hashing().start().await.unwrap();
    let mut p = people(&server, &["ann", "ben"]).await;
    let (mut ann, mut ben) = {
        let mut it = p.drain(..);
        (it.next().unwrap(), it.next().unwrap())
    };
    let (a, b) = two_party(&mut ann, &mut ben).await;
    assert_eq!(a.code(), b.code(), "both sides show one code");
    assert!(!a.code().is_empty());
    assert_eq!(a.users()[0].id, ben.id);
    assert_eq!(b.users().iter().map(|u| u.id).collect::<Vec<_>>(), vec![ann.id]);
    let call_id = a.call_id();
    let a_call = a.start(&ann.client, quiet(), Box::new(BufferInput::new(tone(1.0))), Box::new(Discard)).await;
    let mut b_call = b.start(&ben.client, quiet(), Box::new(SilentInput), Box::new(Discard)).await;
    assert_eq!(a_call.code(), b_call.code());
    // Voice arrives at Ben.
    let heard = async {
        while b_call.snapshot().received == 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(TIMEOUT, heard).await.expect("Ben hears Ann");
    // Ann hangs up; Ben's side hears it from the server and stops.
    let (a_stats, _) = a_call.end(&mut ann.client).await.unwrap().unwrap();
    assert!(a_stats.sent > 0);
    let ended = next(&mut ben.events, |e| match e {
        ServerEvent::CallEnded(c, r) if *c == call_id => Some(e.clone()),
        _ => None,
    })
    .await;
    let what = b_call.on_event(&mut ben.client, &ended).await;
    assert!(matches!(what[..], [CallEvent::Ended(EndReason::Hangup)]), "{what:?}");
    tokio::time::timeout(TIMEOUT, b_call.media_ended()).await.expect("Ben's media stops");
    assert_eq!(b_call.ended_by_server(), Some(EndReason::Hangup));
    let (b_stats, cause) = b_call.end(&mut ben.client).await.unwrap().unwrap();
    assert!(matches!(cause, EndCause::Stopped), "{cause:?}");
    assert!(b_stats.received > 0);
    server.stop().await;
}

#[tokio::test]
async fn a_declined_call_is_not_answered() {
    let server = Embedded::builder().fast_hashing().start().await.unwrap();
    let mut p = people(&server, &["ann", "ben"]).await;
    let ben = p[1].id;
    let out = Outgoing::place(&mut p[0].client, ben, false).await.unwrap();
    let ring = incoming(&mut p[1]).await;
    p[1].client.decline_call(ring.call_id).await.unwrap();
    let ann = &mut p[0];
    let r = tokio::time::timeout(TIMEOUT, out.wait_answer(&mut ann.client, &mut ann.events)).await.unwrap();
    assert!(matches!(r, Err(CallError::NotAnswered(EndReason::Declined))), "{r:?}");
    server.stop().await;
}

#[tokio::test]
async fn relay_only_shows_no_address() {
    let server = Embedded::builder().fast_hashing().start().await.unwrap();
    let mut p = people(&server, &["ann", "ben"]).await;
    let ben = p[1].id;
    let _out = Outgoing::place(&mut p[0].client, ben, true).await.unwrap();
    let ring = incoming(&mut p[1]).await;
    let answering = Answering::answer(&mut p[1].client, &ring, false).await.unwrap();
    let caller = &answering.participants()[0];
    assert!(caller.media.candidates.is_empty(), "no address of Ann's is shown: {caller:?}");
    server.stop().await;
}

/// A caller that commits to one key and reveals another: the callee's
/// side of the exchange ends the call.
#[tokio::test]
async fn a_reveal_that_does_not_match_the_commitment_ends_the_call() {
    let server = Embedded::builder().fast_hashing().start().await.unwrap();
    let mut p = people(&server, &["ann", "ben"]).await;
    let (committed, revealed) = (CallKeys::generate().unwrap(), CallKeys::generate().unwrap());
    let mut agree = CallerAgreement::new(p[0].id, &committed);
    let media = Prepared::new(&server.addr().to_string()).await.unwrap().call_media();
    let media = babel_proto::MediaSetup { key_commit: Some(agree.key_commit()), ..media };
    let ben = p[1].id;
    let started = p[0].client.call(ben, media).await.unwrap();
    let ring = incoming(&mut p[1]).await;
    let answering = Answering::answer(&mut p[1].client, &ring, false).await.unwrap();
    let accepted = next(&mut p[0].events, |e| match e {
        ServerEvent::CallAccepted(j) => Some(j.clone()),
        _ => None,
    })
    .await;
    agree.on_accepted(started.call_id, p[1].id, accepted.peer.media.key.as_deref()).unwrap();
    // The other key's reveal.
    let mut other = CallerAgreement::new(p[0].id, &revealed);
    other.on_accepted(started.call_id, p[1].id, accepted.peer.media.key.as_deref()).unwrap();
    p[0].client.call_key(started.call_id, other.reveal().unwrap()).await.unwrap();
    let ben = &mut p[1];
    let r = answering.settle(&mut ben.client, &mut ben.events).await;
    assert!(matches!(r, Err(CallError::Exchange(ExchangeError::Agree(AgreeError::Mismatch)))), "{r:?}");
    // Ben hung up: Ann hears the call end.
    let ended = next(&mut p[0].events, |e| match e {
        ServerEvent::CallEnded(c, r) if *c == started.call_id => Some(*r),
        _ => None,
    })
    .await;
    assert_eq!(ended, EndReason::Hangup);
    server.stop().await;
}

/// A running call in which the callee answers a second time: the caller's
/// side says the exchange is broken and stops its media.
#[tokio::test]
async fn a_second_answer_in_a_running_call_breaks_it() {
    let server = Embedded::builder().fast_hashing().start().await.unwrap();
    let mut p = people(&server, &["ann", "ben"]).await;
    let (mut ann, mut ben) = {
        let mut it = p.drain(..);
        (it.next().unwrap(), it.next().unwrap())
    };
    let (a, _b) = two_party(&mut ann, &mut ben).await;
    let call_id = a.call_id();
    let mut a_call = a.start(&ann.client, quiet(), Box::new(SilentInput), Box::new(Discard)).await;
    // The server relays a second /call_accepted for this call (a callee's
    // second device, or a server in the middle).
    let ring_peer = babel_proto::Peer {
        user: babel_proto::User { id: ben.id, name: "ben".into(), email: "ben@example.org".into() },
        ip: "127.0.0.1".into(),
        media: babel_proto::MediaSetup { key: Some(CallKeys::generate().unwrap().public_b64()), ..Default::default() },
    };
    let again = ServerEvent::CallAccepted(babel_proto::PeerJoined { call_id, peer: ring_peer, epoch: None });
    let what = a_call.on_event(&mut ann.client, &again).await;
    assert!(matches!(what[..], [CallEvent::Broken(AgreeError::Twice)]), "{what:?}");
    assert!(matches!(a_call.broken(), Some(AgreeError::Twice)));
    tokio::time::timeout(TIMEOUT, a_call.media_ended()).await.expect("the media stops");
    // Ending it hangs up: Ben hears it.
    let _ = a_call.end(&mut ann.client).await;
    let ended = next(&mut ben.events, |e| match e {
        ServerEvent::CallEnded(c, r) if *c == call_id => Some(*r),
        _ => None,
    })
    .await;
    assert_eq!(ended, EndReason::Hangup);
    server.stop().await;
}

/// Ann calls Ben, then invites Cleo: Cleo's exchange goes through Ann's
/// and Ben's running calls (nonces, reveal), and all three end on the
/// same new code.
#[tokio::test]
async fn a_group_join_gives_everyone_the_same_new_code() {
    let server = Embedded::builder().fast_hashing().start().await.unwrap();
    let mut p = people(&server, &["ann", "ben", "cleo"]).await;
    let (mut ann, mut ben, mut cleo) = {
        let mut it = p.drain(..);
        (it.next().unwrap(), it.next().unwrap(), it.next().unwrap())
    };
    let (a, b) = two_party(&mut ann, &mut ben).await;
    let two_party_code = a.code().to_owned();
    let call_id = a.call_id();
    let mut a_call = a.start(&ann.client, quiet(), Box::new(SilentInput), Box::new(Discard)).await;
    let mut b_call = b.start(&ben.client, quiet(), Box::new(SilentInput), Box::new(Discard)).await;
    a_call.invite(&mut ann.client, cleo.id).await.unwrap();
    let ring = incoming(&mut cleo).await;
    assert_eq!(ring.call_id, call_id);
    assert!(ring.participants.len() >= 2, "an invite into a call of two");
    let answering = Answering::answer(&mut cleo.client, &ring, false).await.unwrap();
    // Cleo waits for both nonces while Ann and Ben follow their events.
    let cleo_side = tokio::spawn(async move {
        let r = answering.settle(&mut cleo.client, &mut cleo.events).await;
        (r, cleo)
    });
    let (a_code, b_code) =
        tokio::join!(follow_until_code(&mut a_call, &mut ann), follow_until_code(&mut b_call, &mut ben));
    let (r, mut cleo) = cleo_side.await.unwrap();
    let c = r.unwrap();
    assert_ne!(a_code, two_party_code, "the code changes with the join");
    assert_eq!(a_code, b_code);
    assert_eq!(c.code(), a_code, "the newcomer shows the same code");
    assert_eq!(a_call.code(), a_code);
    let mut ids: Vec<UserId> = c.users().iter().map(|u| u.id).collect();
    ids.sort();
    assert_eq!(ids, vec![ann.id, ben.id]);
    let c_call = c.start(&cleo.client, quiet(), Box::new(SilentInput), Box::new(Discard)).await;
    let _ = c_call.end(&mut cleo.client).await;
    let _ = a_call.end(&mut ann.client).await;
    let _ = b_call.end(&mut ben.client).await;
    server.stop().await;
}

/// Feeds `who`'s events to `call` until its code changes; the new code.
async fn follow_until_code(call: &mut Call, who: &mut Person) -> String {
    let wait = async {
        loop {
            match who.events.next().await {
                Some(Ok(Event::Server(ev))) => match call.on_event(&mut who.client, &ev).await.into_iter().next() {
                    Some(CallEvent::CodeChanged(c)) => return c,
                    Some(other) => panic!("{other:?}"),
                    None => {}
                },
                Some(Ok(_)) => {}
                other => panic!("event stream: {other:?}"),
            }
        }
    };
    tokio::time::timeout(TIMEOUT, wait).await.expect("the code changed")
}
