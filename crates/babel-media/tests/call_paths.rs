//! The driver on real sockets: whole calls between two engines through the
//! real server, in real time, on each path (direct UDP, the UDP relay, the
//! call channel through `babel-client`), a stranger's packets, a peer that
//! vanishes, and an echoing room (a microphone input). The call core's
//! behaviour (path switching, NAT rebinding, a bandwidth cap, group calls,
//! and these again) is tested in simulated time in `sim.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{GARBAGE, assert_heard_real_time, similarity, stranger_frame, voice};

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use babel_client::{Client, Event, EventStream};
use babel_media::audio::{BufferInput, RecordingOutput};
use babel_media::engine::{CallSetup, CallStats, EndCause, MediaConfig, Path, RelayInfo, spawn_call};
use babel_media::keys::{CallKeys, SenderKey};
use babel_proto::{MediaSetup, ServerEvent};
use babel_server::auth::PasswordCost;
use babel_server::{Config, RunningServer};
use tokio::net::UdpSocket;

const TIMEOUT: Duration = Duration::from_secs(30);

/// Calls run one at a time: each is two real-time engines and a server, and
/// on two cores several at once would starve each other's clocks.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().await
}

#[test]
fn the_similarity_measure_tells_speech_from_garbage() {
    common::the_similarity_measure_tells_speech_from_garbage();
}

#[test]
fn the_real_time_measure_forgives_one_second_only() {
    common::the_real_time_measure_forgives_one_second_only();
}

struct Side {
    client: Client,
    events: EventStream,
    socket: UdpSocket,
    keys: CallKeys,
}

async fn wait_for<T>(events: &mut EventStream, mut f: impl FnMut(&ServerEvent) -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        match tokio::time::timeout_at(deadline, events.next()).await.expect("event in time") {
            Some(Ok(Event::Server(e))) => {
                if let Some(t) = f(&e) {
                    return t;
                }
            }
            Some(Ok(Event::Reconnected | Event::Disconnected)) => {}
            other => panic!("event stream: {other:?}"),
        }
    }
}

/// A real server on loopback with a throwaway database and cheap hashing.
async fn start_server() -> (RunningServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        db: dir.path().join("babel.db"),
        password: PasswordCost { memory_kib: 256, iterations: 1 },
        durability: babel_server::store::sqlite::Durability::Normal,
        ..Config::default()
    };
    (RunningServer::start(&config).await.unwrap(), dir)
}

struct Setup {
    _server: RunningServer,
    _dir: tempfile::TempDir,
    a: (CallSetup, Signalling),
    b: (CallSetup, Signalling),
}

/// Two users, befriended; a calls b, b answers; both open call channels.
/// `advertise` picks what each side announces as its UDP candidate, and
/// `relay_for` where each side thinks the relay is.
async fn call(advertise: impl Fn(SocketAddr) -> SocketAddr, relay_for: impl Fn(SocketAddr) -> SocketAddr) -> Setup {
    let (server, dir) = start_server().await;
    let addr = server.addr().to_string();
    let mut sides = Vec::new();
    for name in ["alice", "bob"] {
        let mut client = Client::connect(addr.clone()).await.unwrap();
        client.create(&format!("{name}@example.org"), "password123", None).await.unwrap();
        let events = client.events().await.unwrap();
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        sides.push(Side { client, events, socket, keys: CallKeys::generate().unwrap() });
    }
    let mut b = sides.pop().unwrap();
    let mut a = sides.pop().unwrap();
    a.client.add_contact("bob@example.org").await.unwrap();
    b.client.accept_contact(a.client.user_id().unwrap()).await.unwrap();

    let (a_id, b_id) = (a.client.user_id().unwrap(), b.client.user_id().unwrap());
    let mut a_agree = babel_proto::agree::CallerAgreement::new(a_id, &a.keys);
    let a_media = MediaSetup {
        key_commit: Some(a_agree.key_commit()),
        candidates: vec![advertise(a.socket.local_addr().unwrap())],
        ..MediaSetup::default()
    };
    let started = a.client.call(b_id, a_media).await.unwrap();
    let incoming = wait_for(&mut b.events, |e| match e {
        ServerEvent::IncomingCall(c) => Some(c.clone()),
        _ => None,
    })
    .await;
    let mut b_agree = babel_proto::agree::CalleeAgreement::on_incoming(
        started.call_id,
        a_id,
        incoming.media.key_commit.as_deref(),
        b_id,
        &b.keys,
    )
    .unwrap();
    let b_media = MediaSetup {
        key: Some(b_agree.key()),
        candidates: vec![advertise(b.socket.local_addr().unwrap())],
        ..MediaSetup::default()
    };
    let joined = b.client.accept_call(started.call_id, b_media).await.unwrap();
    let accepted = wait_for(&mut a.events, |e| match e {
        ServerEvent::CallAccepted(j) => Some(j.clone()),
        _ => None,
    })
    .await;
    let a_agreed = a_agree.on_accepted(started.call_id, b_id, accepted.peer.media.key.as_deref()).unwrap();
    a.client.call_key(started.call_id, a_agree.reveal().unwrap()).await.unwrap();
    let revealed = wait_for(&mut b.events, |e| match e {
        ServerEvent::CallKey(k) => Some(k.clone()),
        _ => None,
    })
    .await;
    let b_agreed = b_agree.on_reveal(revealed.id, &revealed.key).unwrap();
    let relay = |grant: &babel_proto::RelayGrant| {
        let (port, handle, key) = grant.parts().unwrap();
        RelayInfo { addr: relay_for(SocketAddr::from(([127, 0, 0, 1], port))), handle, key }
    };
    let a_channel = a.client.connect_call(started.call_id).await.unwrap();
    let b_channel = b.client.connect_call(started.call_id).await.unwrap();
    let a_setup = CallSetup {
        keys: a.keys,
        peers: vec![babel_call::setup::agreed_peer(&accepted.peer, &a_agreed)],
        relay: Some(relay(&started.relay)),
        channel: Some(babel_call::channel::ClientChannel::boxed(a_channel)),
        socket: a.socket,
        code: a_agreed.code(),
        relay_only: false,
    };
    let b_setup = CallSetup {
        keys: b.keys,
        peers: vec![babel_call::setup::agreed_peer(&joined.participants[0], &b_agreed)],
        relay: Some(relay(&joined.relay)),
        channel: Some(babel_call::channel::ClientChannel::boxed(b_channel)),
        socket: b.socket,
        code: b_agreed.code(),
        relay_only: false,
    };
    Setup {
        _server: server,
        _dir: dir,
        a: (a_setup, Signalling { _client: a.client, _events: a.events }),
        b: (b_setup, Signalling { _client: b.client, _events: b.events }),
    }
}

/// What keeps a side's signalling alive during the call.
struct Signalling {
    _client: Client,
    _events: EventStream,
}

fn test_config() -> MediaConfig {
    MediaConfig { noise_suppression: false, peer_timeout: Duration::from_secs(5), ..MediaConfig::default() }
}

/// Runs both engines, each speaking its own test voice; answers a's stats,
/// what a said, b's stats and what b heard.
async fn talk(
    s: Setup,
    secs: f32,
    during: impl FnOnce() + Send + 'static,
) -> (CallStats, Vec<f32>, CallStats, Vec<f32>) {
    let a_in = voice(secs, 4.0, 1);
    let b_in = voice(secs, 3.0, 99);
    assert!(similarity(&a_in, &b_in) < 0.5, "the two voices must differ for the check to mean anything");
    let rec_a = SharedRecording::default();
    let heard_by_a = rec_a.0.clone();
    let (a_ctl, a_task) = spawn_call(s.a.0, test_config(), Box::new(BufferInput::new(a_in.clone())), Box::new(rec_a));
    let rec_b = SharedRecording::default();
    let heard_by_b = rec_b.0.clone();
    let (b_ctl, b_task) = spawn_call(s.b.0, test_config(), Box::new(BufferInput::new(b_in.clone())), Box::new(rec_b));
    during();
    let (a_stats, a_end) = tokio::time::timeout(TIMEOUT, a_task).await.unwrap().unwrap().unwrap();
    let (b_stats, b_end) = tokio::time::timeout(TIMEOUT, b_task).await.unwrap().unwrap().unwrap();
    assert_eq!(a_end, EndCause::InputEnded);
    assert_eq!(b_end, EndCause::InputEnded);
    drop((a_ctl, b_ctl, s.a.1, s.b.1));
    let heard = heard_by_b.lock().unwrap().clone();
    drop(heard_by_a);
    (a_stats, a_in, b_stats, heard)
}

#[derive(Default, Clone)]
struct SharedRecording(Arc<std::sync::Mutex<Vec<f32>>>);

impl babel_media::audio::AudioOutput for SharedRecording {
    fn write(&mut self, frame: &[f32]) {
        self.0.lock().unwrap().extend_from_slice(frame);
    }
}

/// A UDP socket that swallows everything: a path that goes nowhere.
async fn black_hole() -> (UdpSocket, SocketAddr) {
    let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let a = s.local_addr().unwrap();
    (s, a)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_path() {
    let _serial = serial().await;
    let s = call(|own| own, |relay| relay).await;
    let (a_stats, sent, b_stats, heard) = talk(s, 4.0, || {}).await;
    assert_heard_real_time(&sent, &heard, 0.1);
    assert_eq!(a_stats.path, Some(Path::Direct), "{:?}", a_stats.path_history);
    assert!(a_stats.path_history.iter().all(|(_, p)| *p == Path::Direct));
    assert!(b_stats.received > 150, "{b_stats:?}");
    assert_eq!(a_stats.sas, b_stats.sas, "both sides show the same code");
    assert_eq!(a_stats.sas.len(), 7, "{}", a_stats.sas);
    assert!(a_stats.rtt_ms.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_path_when_direct_is_blocked() {
    let _serial = serial().await;
    let (_hole, hole) = black_hole().await;
    let s = call(move |_| hole, |relay| relay).await;
    let (a_stats, sent, b_stats, heard) = talk(s, 4.0, || {}).await;
    assert_heard_real_time(&sent, &heard, 0.1);
    assert_eq!(a_stats.path, Some(Path::Relay), "{:?}", a_stats.path_history);
    assert_eq!(b_stats.path, Some(Path::Relay));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_channel_when_udp_is_blocked() {
    let _serial = serial().await;
    let (_hole, hole) = black_hole().await;
    let s = call(move |_| hole, move |_| hole).await;
    let (a_stats, sent, b_stats, heard) = talk(s, 4.0, || {}).await;
    assert_heard_real_time(&sent, &heard, 0.1);
    assert_eq!(a_stats.path, Some(Path::Channel), "{:?}", a_stats.path_history);
    assert_eq!(b_stats.path, Some(Path::Channel));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strangers_cannot_inject_and_a_vanished_peer_ends_the_call() {
    let _serial = serial().await;
    let s = call(|own| own, |relay| relay).await;
    let a_target = s.a.0.socket.local_addr().unwrap();
    let (a_setup, a_side) = s.a;
    let (b_setup, b_side) = s.b;
    let long = voice(30.0, 4.0, 1);
    let (a_ctl, a_task) =
        spawn_call(a_setup, test_config(), Box::new(BufferInput::new(long.clone())), Box::new(RecordingOutput::new()));
    let (b_ctl, b_task) =
        spawn_call(b_setup, test_config(), Box::new(BufferInput::new(long)), Box::new(RecordingOutput::new()));
    tokio::time::sleep(Duration::from_secs(2)).await;
    // A stranger with its own key, and plain garbage.
    let eve = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let eve_key = SenderKey::generate().unwrap();
    for seq in 0..50u32 {
        eve.send_to(&stranger_frame(&eve_key, seq), a_target).await.unwrap();
        eve.send_to(GARBAGE, a_target).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = a_ctl.snapshot();
    assert!(before.received > 50);
    // b's machine disappears without a word.
    b_ctl.stop.cancel();
    let _ = b_task.await;
    let (stats, end) = tokio::time::timeout(TIMEOUT, a_task).await.unwrap().unwrap().unwrap();
    assert_eq!(end, EndCause::PeerVanished);
    assert!(stats.received >= before.received);
    drop((a_side, b_side));
}

/// A room: what the loudspeaker plays comes back into the microphone 60 ms
/// later, 6 dB down and low-passed (with the person in it silent).
#[derive(Clone)]
struct Room(Arc<std::sync::Mutex<(std::collections::VecDeque<f32>, f32, usize)>>);

impl Room {
    fn new(samples: usize) -> Room {
        Room(Arc::new(std::sync::Mutex::new((std::iter::repeat_n(0.0, 2880).collect(), 0.0, samples))))
    }
}

impl babel_media::audio::AudioOutput for Room {
    fn write(&mut self, frame: &[f32]) {
        let mut room = self.0.lock().unwrap();
        for &s in frame {
            room.1 = 0.6 * room.1 + 0.4 * 0.5 * s;
            let v = room.1;
            room.0.push_back(v);
        }
    }
}

impl babel_media::audio::AudioInput for Room {
    fn read(&mut self, frame: &mut [f32]) -> bool {
        let mut room = self.0.lock().unwrap();
        if room.2 < frame.len() {
            return false;
        }
        room.2 -= frame.len();
        for s in frame.iter_mut() {
            *s = room.0.pop_front().unwrap_or(0.0);
        }
        true
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_far_end_does_not_hear_itself_back() {
    let _serial = serial().await;
    let secs = 6.0;
    // What b hears of its own voice, echoed by a's room, in the last 2 s
    // (after the canceller has converged), with a's echo cancellation on and off.
    let mut heard_power = Vec::new();
    for aec in [true, false] {
        let s = call(|own| own, |relay| relay).await;
        let room = Room::new((48_000.0 * secs) as usize);
        let cfg = MediaConfig { echo_cancellation: aec, ..test_config() };
        let (a_ctl, a_task) = spawn_call(s.a.0, cfg, Box::new(room.clone()), Box::new(room));
        let rec_b = SharedRecording::default();
        let heard_by_b = rec_b.0.clone();
        let b_voice = voice(secs + 1.0, 3.0, 99);
        let (b_ctl, b_task) = spawn_call(s.b.0, test_config(), Box::new(BufferInput::new(b_voice)), Box::new(rec_b));
        let (a_stats, _) = tokio::time::timeout(TIMEOUT, a_task).await.unwrap().unwrap().unwrap();
        let _ = tokio::time::timeout(TIMEOUT, b_task).await.unwrap().unwrap().unwrap();
        drop((a_ctl, b_ctl, s.a.1, s.b.1));
        let heard = heard_by_b.lock().unwrap().clone();
        let tail = &heard[heard.len().saturating_sub(2 * 48_000)..];
        let power = tail.iter().map(|s| f64::from(*s).powi(2)).sum::<f64>() / tail.len().max(1) as f64;
        eprintln!("aec {aec}: echo heard back {:.1} dB, canceller's ERLE {:?}", 10.0 * power.log10(), a_stats.erle_db);
        heard_power.push(power);
    }
    let removed = 10.0 * (heard_power[1] / heard_power[0].max(1e-12)).log10();
    assert!(heard_power[1] > 1e-5, "without cancellation the echo must be audible: {heard_power:?}");
    assert!(removed >= 20.0, "echo cancellation removed only {removed:.1} dB");
}
