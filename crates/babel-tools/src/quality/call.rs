//! One whole call through the real system with the impairment proxy in the
//! middle: a real server on loopback (temporary database), two real
//! clients that sign up, become contacts, call and answer, and two media
//! engines on real UDP sockets.
//!
//! The voice path is forced through the proxy, both ways: the caller knows
//! the callee only by the proxy's address, the callee knows the caller only
//! by an address that swallows everything, so it can only answer to where
//! the caller's datagrams come from (the proxy's socket towards it). The
//! engines get no relay grant and no call channel, so no copy of a datagram
//! can go around the impairment.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use babel_client::{Client, Event, EventStream};
use babel_media::audio::{AudioInput, AudioOutput, BufferInput};
use babel_media::engine::{CallSetup, CallStats, MediaConfig, PeerSetup, spawn_call};
use babel_media::keys::CallKeys;
use babel_proto::{MediaSetup, ServerEvent};
use babel_server::auth::PasswordCost;
use babel_server::{Config, RunningServer};
use tokio::net::UdpSocket;

use crate::netsim::Impairment;
use crate::netsim::proxy::{UdpCounters, start_udp};

const TIMEOUT: Duration = Duration::from_secs(30);

/// What one call gave.
#[derive(Debug)]
pub struct CallRun {
    /// What the callee's loudspeaker got (48 kHz mono).
    pub heard: Vec<f32>,
    /// The callee's statistics at the end.
    pub receiver: CallStats,
    /// The caller's statistics at the end.
    pub sender: CallStats,
    /// What the proxy did.
    pub proxy: UdpCounters,
}

/// Records frames with the time each was handed over.
#[derive(Debug, Clone, Default)]
pub struct TimedRecording(pub Arc<Mutex<(Vec<f32>, Vec<Instant>)>>);

impl AudioOutput for TimedRecording {
    fn write(&mut self, frame: &[f32]) {
        let mut g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        g.0.extend_from_slice(frame);
        g.1.push(Instant::now());
    }
}

/// Plays samples and notes when each frame was read.
#[derive(Debug)]
pub struct TimedInput {
    inner: BufferInput,
    /// When each frame was read.
    pub reads: Arc<Mutex<Vec<Instant>>>,
}

impl TimedInput {
    /// Plays `samples` (48 kHz mono).
    pub fn new(samples: Vec<f32>) -> TimedInput {
        TimedInput { inner: BufferInput::new(samples), reads: Arc::default() }
    }
}

impl AudioInput for TimedInput {
    fn read(&mut self, frame: &mut [f32]) -> bool {
        self.reads.lock().unwrap_or_else(|p| p.into_inner()).push(Instant::now());
        self.inner.read(frame)
    }
}

async fn wait_for<T>(events: &mut EventStream, mut f: impl FnMut(&ServerEvent) -> Option<T>) -> anyhow::Result<T> {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        match tokio::time::timeout_at(deadline, events.next()).await.context("no event in time")? {
            Some(Ok(Event::Server(e))) => {
                if let Some(t) = f(&e) {
                    return Ok(t);
                }
            }
            Some(Ok(Event::Reconnected | Event::Disconnected)) => {}
            other => return Err(anyhow!("event stream: {other:?}")),
        }
    }
}

/// A server, two signed-up contacts and an answered call between them,
/// ready for media.
struct Answered {
    server: RunningServer,
    _dir: tempfile::TempDir,
    clients: Vec<(Client, EventStream)>,
    caller: (CallKeys, PeerSetup),
    callee: (CallKeys, PeerSetup),
    code: String,
}

async fn answered_call() -> anyhow::Result<Answered> {
    let dir = tempfile::tempdir().context("temporary folder")?;
    let config = Config {
        listen: "127.0.0.1:0".parse()?,
        db: dir.path().join("babel.db"),
        password: PasswordCost { memory_kib: 256, iterations: 1 },
        durability: babel_server::store::sqlite::Durability::Normal,
        ..Config::default()
    };
    let server = RunningServer::start(&config).await.context("cannot start the server")?;
    let addr = server.addr().to_string();
    let mut sides = Vec::new();
    for name in ["alice", "bob"] {
        let mut client = Client::connect(addr.clone()).await?;
        client.create(&format!("{name}@example.org"), "password123", None).await?;
        let events = client.events().await?;
        sides.push((client, events, CallKeys::generate()?));
    }
    let ids: Vec<_> = sides.iter().map(|s| s.0.user_id().context("no id")).collect::<Result<_, _>>()?;
    sides[0].0.add_contact("bob@example.org").await?;
    sides[1].0.accept_contact(ids[0]).await?;
    // The key exchange as every client does it: the caller commits, the
    // callee answers with its key, the caller reveals.
    let mut a_agree = babel_proto::agree::CallerAgreement::new(ids[0], &sides[0].2);
    let a_media = MediaSetup { key_commit: Some(a_agree.key_commit()), ..MediaSetup::default() };
    let started = sides[0].0.call(ids[1], a_media).await?;
    let incoming = wait_for(&mut sides[1].1, |e| match e {
        ServerEvent::IncomingCall(c) => Some(c.clone()),
        _ => None,
    })
    .await?;
    let mut b_agree = babel_proto::agree::CalleeAgreement::on_incoming(
        started.call_id,
        ids[0],
        incoming.media.key_commit.as_deref(),
        ids[1],
        &sides[1].2,
    )?;
    let b_media = MediaSetup { key: Some(b_agree.key()), ..MediaSetup::default() };
    sides[1].0.accept_call(started.call_id, b_media).await?;
    let accepted = wait_for(&mut sides[0].1, |e| match e {
        ServerEvent::CallAccepted(j) => Some(j.clone()),
        _ => None,
    })
    .await?;
    let a_agreed = a_agree.on_accepted(started.call_id, ids[1], accepted.peer.media.key.as_deref())?;
    sides[0].0.call_key(started.call_id, a_agree.reveal().context("reveal")?).await?;
    let b_agreed = babel_call::setup::await_reveal(&mut sides[1].1, started.call_id, &mut b_agree).await?;
    let mut it = sides.into_iter();
    let (a, b) = (it.next().context("caller")?, it.next().context("callee")?);
    // Keys come through the server, as in any call; the addresses are set
    // by the caller of this function.
    let to_b = PeerSetup { user: a_agreed.peer, key: a_agreed.peer_key.clone(), candidates: vec![] };
    let to_a = PeerSetup { user: b_agreed.peer, key: b_agreed.peer_key.clone(), candidates: vec![] };
    Ok(Answered {
        server,
        _dir: dir,
        clients: vec![(a.0, a.1), (b.0, b.1)],
        caller: (a.2, to_b),
        callee: (b.2, to_a),
        code: a_agreed.code(),
    })
}

/// Runs one call: the caller says `speech` (48 kHz mono; or plays `input`
/// instead, which must last as long), the callee says nothing and its
/// loudspeaker goes to `output`; `net` applies to both directions (each
/// with its own random stream from `seed`). The callee's audio clock starts
/// `callee_phase` after the caller's (two real devices tick independently;
/// zero puts every packet just after the callee's tick, the worst case).
pub async fn run(
    speech: Vec<f32>,
    net: Impairment,
    media: MediaConfig,
    seed: u64,
    input: Option<Box<dyn AudioInput>>,
    output: TimedRecording,
    callee_phase: Duration,
) -> anyhow::Result<CallRun> {
    let ans = answered_call().await?;
    let a_sock = UdpSocket::bind("127.0.0.1:0").await?;
    let b_sock = UdpSocket::bind("127.0.0.1:0").await?;
    let hole = UdpSocket::bind("127.0.0.1:0").await?;
    let hole_addr: SocketAddr = hole.local_addr()?;
    let proxy = start_udp("127.0.0.1:0".parse()?, b_sock.local_addr()?, net, net, seed).await?;
    let (a_keys, mut to_b) = ans.caller;
    let (b_keys, mut to_a) = ans.callee;
    let code = ans.code;
    to_b.candidates = vec![proxy.addr];
    to_a.candidates = vec![hole_addr];
    let secs = speech.len() as f64 / 48_000.0;
    // The callee talks (silence) a second longer, so it hears the end.
    let silence = vec![0.0; speech.len() + 48_000];
    let a_in: Box<dyn AudioInput> = input.unwrap_or_else(|| Box::new(BufferInput::new(speech)));
    let (_a_ctl, a_task) = spawn_call(
        CallSetup {
            keys: a_keys,
            peers: vec![to_b],
            relay: None,
            channel: None,
            socket: a_sock,
            code: code.clone(),
            relay_only: false,
        },
        media.clone(),
        a_in,
        Box::new(TimedRecording::default()),
    );
    tokio::time::sleep(callee_phase).await;
    let (_b_ctl, b_task) = spawn_call(
        CallSetup {
            keys: b_keys,
            peers: vec![to_a],
            relay: None,
            channel: None,
            socket: b_sock,
            code,
            relay_only: false,
        },
        media,
        Box::new(BufferInput::new(silence)),
        Box::new(output.clone()),
    );
    let limit = Duration::from_secs_f64(secs + 30.0);
    let (sender, _) = tokio::time::timeout(limit, a_task).await.context("the caller's media did not end")???;
    let (receiver, _) = tokio::time::timeout(limit, b_task).await.context("the callee's media did not end")???;
    let counters = proxy.finish().await;
    drop(hole);
    drop(ans.clients);
    ans.server.shutdown().await;
    let heard = output.0.lock().unwrap_or_else(|p| p.into_inner()).0.clone();
    Ok(CallRun { heard, receiver, sender, proxy: counters })
}
