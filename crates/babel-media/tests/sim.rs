//! Whole calls between call cores in simulated time, over `babel-netem`
//! links and the server's real (sans-IO) UDP relay: every path, switching,
//! NAT rebinding, a vanished peer, strangers injecting, a bandwidth cap,
//! group calls. No socket, no clock, no thread: each test runs seconds of
//! call in a fraction of that, deterministically, and in parallel with the
//! others. The codec, the jitter buffers, the keys and the relay are the
//! real ones; only the wire and the time are simulated.
//!
//! The harness ([`babel_media::sim::World`], shared with
//! `babel-quality --simulated`) is to these tests what quinn's
//! `tests/util.rs` is to its own: a set of nodes (one call core each, with
//! its input and what it played), a relay (here the server's own), the
//! server's call channel, and a directed `babel-netem` link between every
//! two of them, stepped a millisecond at a time.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use babel_media::call::{EndCause, Path, PeerSetup, RelayInfo};
use babel_media::keys::SenderKey;
use babel_media::sim::{Ep, MS, RELAY, RelayAction, RelayModel, Spec, World, addr};
use babel_netem::Impairment;
use babel_proto::{CallId, UserId};
use babel_server::relay::{Handled, Relay};
use babel_server::store::SessionId;
use common::{GARBAGE, assert_heard, codec_reference, per_second, similarity, stranger_frame, voice};

/// The server's real sans-IO relay, as the simulation's relay.
struct ServerRelay(Arc<Relay>);

impl RelayModel for ServerRelay {
    fn grant(&mut self, i: usize, user: UserId) -> Option<RelayInfo> {
        let (handle, key) = self.0.grant(CallId(1), user, SessionId(i as i64 + 1)).unwrap();
        Some(RelayInfo { addr: RELAY, handle, key })
    }

    fn handle(&mut self, bytes: &[u8], from: SocketAddr, now_ms: u64) -> RelayAction {
        let (mut dests, mut out) = (Vec::new(), Vec::new());
        match self.0.handle(bytes, from, now_ms, &mut dests, &mut out) {
            Handled::Ack(ack, _) => RelayAction::Ack(ack),
            Handled::Forward => RelayAction::Forward(dests, out),
            Handled::Dropped => RelayAction::Dropped,
        }
    }
}

/// A world of `spec` with the server's relay, every node granted.
fn world(mut spec: Spec) -> World {
    spec.relay = Some(Box::new(ServerRelay(Relay::new(RELAY.port()))));
    World::new(spec).unwrap()
}

/// Runs the call until every input ended (plus the tail), at most `limit`.
fn finish(w: &mut World, limit: Duration) {
    assert!(w.finish(limit).unwrap(), "the call did not end in {limit:?}");
}

/// Two sides, each speaking its own test voice for `secs`.
fn two(secs: f32) -> Spec {
    Spec::new(vec![voice(secs, 4.0, 1), voice(secs, 3.0, 99)])
}

#[test]
fn the_similarity_measure_tells_speech_from_garbage() {
    common::the_similarity_measure_tells_speech_from_garbage();
}

#[test]
fn direct_path() {
    let mut w = world(two(4.0));
    finish(&mut w, Duration::from_secs(10));
    let (a, b) = (w.stats(0), w.stats(1));
    assert_eq!(w.nodes[0].end, Some(EndCause::InputEnded));
    assert_heard(&w.nodes[0].input, &w.nodes[1].heard, 0.1);
    assert_heard(&w.nodes[1].input, &w.nodes[0].heard, 0.1);
    assert_eq!(a.path, Some(Path::Direct), "{:?}", a.path_history);
    assert!(a.path_history.iter().all(|(_, p)| *p == Path::Direct), "{:?}", a.path_history);
    assert!(b.received > 150, "{b:?}");
    assert_eq!(a.sas, b.sas);
    // 10 ms each way on the wire.
    let rtt = a.rtt_ms.expect("an rtt");
    assert!((20..=60).contains(&rtt), "rtt {rtt}");
    assert_eq!((a.rejected, a.seal_failures, a.decode_failures), (0, 0, 0), "{a:?}");
}

#[test]
fn the_same_seed_gives_the_same_call() {
    let run = || {
        let mut spec = two(2.0);
        spec.seed = 7;
        let mut w = world(spec);
        let lossy = Impairment { loss: 0.05, jitter: 15 * MS, delay: 10 * MS, ..Impairment::default() };
        w.set_both(Ep::Node(0), Ep::Node(1), Some(lossy));
        finish(&mut w, Duration::from_secs(8));
        let s = w.stats(1);
        (s.received, s.concealed, s.fec_recovered, w.nodes[1].heard.len())
    };
    assert_eq!(run(), run());
}

#[test]
fn relay_path_when_direct_is_blocked() {
    let mut w = world(two(4.0));
    w.block_direct(true);
    finish(&mut w, Duration::from_secs(10));
    assert_heard(&w.nodes[0].input, &w.nodes[1].heard, 0.1);
    assert_eq!(w.stats(0).path, Some(Path::Relay), "{:?}", w.stats(0).path_history);
    assert_eq!(w.stats(1).path, Some(Path::Relay));
}

/// A relay-only side sends nothing directly, even to a peer it could reach.
#[test]
fn relay_only_goes_through_the_relay_though_direct_works() {
    let mut spec = two(4.0);
    spec.relay_only = vec![0];
    let mut w = world(spec);
    finish(&mut w, Duration::from_secs(10));
    assert_heard(&w.nodes[0].input, &w.nodes[1].heard, 0.1);
    let a = w.stats(0);
    assert_eq!(a.path, Some(Path::Relay), "{:?}", a.path_history);
    assert!(a.path_history.iter().all(|(_, p)| *p != Path::Direct), "{:?}", a.path_history);
    // Nothing left a's address towards b.
    assert!(
        w.links.get(&(Ep::Node(0), Ep::Node(1))).is_none_or(|l| l.as_ref().is_none_or(|l| l.counters().received == 0))
    );
}

#[test]
fn call_channel_when_udp_is_blocked() {
    let mut w = world(two(4.0));
    w.block_direct(true);
    w.block_relay();
    w.set_both(Ep::Node(0), Ep::Server, Some(Impairment { delay: 20 * MS, ..Impairment::default() }));
    w.set_both(Ep::Node(1), Ep::Server, Some(Impairment { delay: 20 * MS, ..Impairment::default() }));
    finish(&mut w, Duration::from_secs(10));
    assert_heard(&w.nodes[0].input, &w.nodes[1].heard, 0.1);
    assert_eq!(w.stats(0).path, Some(Path::Channel), "{:?}", w.stats(0).path_history);
    assert_eq!(w.stats(1).path, Some(Path::Channel));
}

#[test]
fn moves_to_the_relay_and_back_when_direct_breaks_and_heals() {
    let mut w = world(two(9.0));
    w.run_until(Duration::from_secs(3)).unwrap();
    w.block_direct(true);
    w.run_until(Duration::from_secs(6)).unwrap();
    w.block_direct(false);
    finish(&mut w, Duration::from_secs(15));
    let a = w.stats(0);
    let paths: Vec<Path> = a.path_history.iter().map(|(_, p)| *p).collect();
    assert!(paths.windows(3).any(|x| x == [Path::Direct, Path::Relay, Path::Direct]), "{:?}", a.path_history);
    let sent = &w.nodes[0].input;
    let reference = codec_reference(sent);
    let seconds = per_second(sent, &w.nodes[1].heard, 9);
    eprintln!("per second {seconds:.2?} (codec alone {reference:.3})");
    let mean = seconds.iter().sum::<f32>() / seconds.len() as f32;
    assert!(mean >= reference - 0.15, "mean similarity {mean:.3} vs codec alone {reference:.3}");
    assert!(seconds.iter().filter(|&&x| x < 0.5).count() <= 1, "at most one bad second: {seconds:.2?}");
}

/// a is behind a NAT whose outside port changes after 4 s; the call goes on
/// direct both ways.
#[test]
fn the_call_survives_an_address_change() {
    let mut w = world(two(8.0));
    let (old, new) = (addr(100), addr(101));
    w.nodes[0].outside = Some(old);
    // b knows a by its NAT's outside address.
    w.nodes[1].core.handle_command(babel_media::call::Control::Candidates(UserId(1), vec![old])).unwrap();
    w.run_until(Duration::from_secs(4)).unwrap();
    w.nodes[0].outside = Some(new);
    finish(&mut w, Duration::from_secs(15));
    let (a, b) = (w.stats(0), w.stats(1));
    eprintln!("a paths {:?}; b paths {:?}", a.path_history, b.path_history);
    let reference = codec_reference(&w.nodes[0].input);
    let seconds = per_second(&w.nodes[0].input, &w.nodes[1].heard, 8);
    assert!(seconds[5..].iter().all(|&x| x > reference - 0.15), "voice continues after the move: {seconds:.2?}");
    // b kept its voice on the direct path: it found a at the new address.
    assert_eq!(b.path, Some(Path::Direct), "{:?}", b.path_history);
    assert!(b.path_history.iter().all(|(_, p)| *p == Path::Direct), "{:?}", b.path_history);
    let back = per_second(&w.nodes[1].input, &w.nodes[0].heard, 8);
    let reference = codec_reference(&w.nodes[1].input);
    assert!(back[6..].iter().all(|&x| x > reference - 0.15), "b reaches a's new address: {back:.2?}");
}

#[test]
fn strangers_cannot_inject_and_a_vanished_peer_ends_the_call() {
    let mut w = world(Spec::new(vec![voice(30.0, 4.0, 1), voice(30.0, 4.0, 1)]));
    w.run_until(Duration::from_secs(2)).unwrap();
    let eve = addr(666);
    let eve_key = SenderKey::generate().unwrap();
    let before = w.stats(0).clone();
    for seq in 0..50u32 {
        w.send_udp(Ep::Relay, eve, addr(0), stranger_frame(&eve_key, seq));
        w.send_udp(Ep::Relay, eve, addr(0), GARBAGE.to_vec());
        // A stranger's datagram that claims to come from the relay.
        w.send_udp(Ep::Relay, RELAY, addr(0), b"\x04\x00\x00\x00\x09garbage".to_vec());
    }
    w.run_for(Duration::from_millis(500)).unwrap();
    let after = w.stats(0).clone();
    assert_eq!(after.rejected - before.rejected, 150, "every stranger's datagram is refused");
    assert!(after.received > before.received + 15, "b's voice still arrives");
    // b's machine disappears without a word.
    w.nodes[1].vanished = true;
    let gone = w.now;
    w.run_until(Duration::from_secs(20)).unwrap();
    assert_eq!(w.nodes[0].end, Some(EndCause::PeerVanished));
    let took = w.now - gone;
    assert!(took >= Duration::from_secs(5) && took < Duration::from_secs(6), "ended {took:?} after b went");
}

#[test]
fn group_call_of_three_hears_the_speaker_through_one_sender_key() {
    let speech = voice(5.0, 4.0, 7);
    let quiet = vec![0.0; speech.len()];
    let mut spec = Spec::new(vec![speech.clone(), quiet.clone(), quiet]);
    spec.channel = Vec::new();
    let mut w = world(spec);
    finish(&mut w, Duration::from_secs(12));
    assert_eq!(w.stats(0).peers.len(), 2);
    assert_heard(&speech, &w.nodes[1].heard, 0.15);
    assert_heard(&speech, &w.nodes[2].heard, 0.15);
    // a seals each frame once, under its group key, and b opens them all
    // (and c's): the key hand-over came through.
    let (a, b, c) = (w.stats(0), w.stats(1), w.stats(2));
    assert!(b.received + 10 >= a.sent + c.sent, "b got {} of {} + {}", b.received, a.sent, c.sent);
    assert!(a.sent <= (speech.len() / 960) as u64 + 30, "one datagram per frame: {}", a.sent);
    assert!(similarity(&speech, &w.nodes[0].heard) < 0.5, "a does not hear itself");
}

/// A peer that joins a running call (`Control::AddPeer` on both sides)
/// and one that leaves (`RemovePeer`).
#[test]
fn a_third_joins_and_leaves() {
    let mut w = world(Spec::new(vec![voice(6.0, 4.0, 7), vec![0.0; 6 * 48_000], vec![0.0; 6 * 48_000]]));
    // c is not in the call at first: a and b do not know it, it knows them.
    for i in [0, 1] {
        w.nodes[i].core.handle_command(babel_media::call::Control::RemovePeer(UserId(3))).unwrap();
    }
    w.run_until(Duration::from_secs(2)).unwrap();
    assert_eq!(w.stats(0).peers.len(), 1);
    assert_eq!(w.stats(2).received, 0, "nobody sends to c yet");
    assert_eq!(w.nodes[0].core.peers(), vec![UserId(2)]);
    let c_key = w.publics[2].clone();
    for i in [0, 1] {
        w.nodes[i]
            .core
            .handle_command(babel_media::call::Control::AddPeer(PeerSetup {
                user: UserId(3),
                key: c_key.clone(),
                candidates: vec![addr(2)],
            }))
            .unwrap();
    }
    w.run_until(Duration::from_secs(4)).unwrap();
    let heard_c = similarity(&w.nodes[0].input[2 * 48_000..4 * 48_000], &w.nodes[2].heard[2 * 48_000..]);
    assert!(heard_c > 0.6, "c hears a once it joined: {heard_c}");
    assert_eq!(w.stats(0).peers.len(), 2);
    w.nodes[0].core.handle_command(babel_media::call::Control::RemovePeer(UserId(3))).unwrap();
    let got = w.stats(2).received;
    w.run_for(Duration::from_secs(1)).unwrap();
    assert_eq!(w.stats(0).peers.len(), 1);
    // b still sends to c (it was not told), a no longer does: a's copy of
    // the group key stops, so nothing new from a opens.
    assert!(w.stats(2).received > got, "b's frames still reach c");
}

#[test]
fn the_bitrate_steps_down_under_a_bandwidth_cap_and_back_up_when_it_lifts() {
    // a → b goes through a 40 kbit/s bottleneck with a 250 ms queue: a
    // 32 kbit/s Opus stream is about 50 kbit/s on the wire. The relay and
    // the call channel are out of the way.
    let (a, b) = (voice(10.0, 4.0, 1), voice(10.0, 3.0, 99));
    let mut spec = Spec::new(vec![a.repeat(9), b.repeat(9)]);
    spec.channel = Vec::new();
    let mut w = world(spec);
    w.block_relay();
    let cap = Impairment { delay: 10 * MS, rate_bps: Some(40_000), queue_bytes: 1250, ..Impairment::default() };
    w.set_link(Ep::Node(0), Ep::Node(1), Some(cap));
    let within = |w: &mut World, want: fn(u32) -> bool, secs: u64| {
        let deadline = w.now + Duration::from_secs(secs);
        let mut history = Vec::new();
        while w.now < deadline {
            w.run_for(Duration::from_millis(200)).unwrap();
            let b = w.stats(0).bitrate;
            if history.last() != Some(&b) {
                history.push(b);
            }
            if want(b) {
                return (true, history);
            }
        }
        (false, history)
    };
    let (down, history) = within(&mut w, |b| b < 32_000 && b + 24_000 <= 40_000, 20);
    assert!(down, "the bitrate did not go under the cap: {history:?}");
    w.set_link(Ep::Node(0), Ep::Node(1), Some(w.default_link));
    let (up, history) = within(&mut w, |b| b == 32_000, 45);
    assert!(up, "the bitrate did not come back once the cap lifted: {history:?}");
}
