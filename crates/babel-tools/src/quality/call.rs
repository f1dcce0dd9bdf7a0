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
use babel_call::{Answering, Outgoing};
use babel_client::{Client, Event, EventStream};
use babel_media::audio::{AudioInput, AudioOutput, BufferInput};
use babel_media::engine::{CallSetup, CallStats, MediaConfig, spawn_call};
use babel_proto::ServerEvent;
use babel_server::Embedded;
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

    /// As the buffer it plays: a file does not hear the room, so the engine
    /// runs no echo cancellation on it, as with `babel call --input`.
    fn hears_the_room(&self) -> bool {
        self.inner.hears_the_room()
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
    server: Embedded,
    clients: Vec<(Client, EventStream)>,
    caller: CallSetup,
    callee: CallSetup,
}

async fn answered_call() -> anyhow::Result<Answered> {
    let server = Embedded::builder().fast_hashing().start().await.context("cannot start the server")?;
    let addr = server.addr().to_string();
    let mut sides = Vec::new();
    for name in ["alice", "bob"] {
        let mut client = Client::connect(addr.clone()).await?;
        client.create(&format!("{name}@example.org"), "password123", None).await?;
        let events = client.events().await?;
        sides.push((client, events));
    }
    let ids: Vec<_> = sides.iter().map(|s| s.0.user_id().context("no id")).collect::<Result<_, _>>()?;
    sides[0].0.add_contact("bob@example.org").await?;
    sides[1].0.accept_contact(ids[0]).await?;
    let mut it = sides.into_iter();
    let (mut a, mut b) = (it.next().context("caller")?, it.next().context("callee")?);
    // The call as every client places and answers it.
    let ringing = Outgoing::place(&mut a.0, ids[1], false).await?;
    let incoming = wait_for(&mut b.1, |e| match e {
        ServerEvent::IncomingCall(c) => Some(c.clone()),
        _ => None,
    })
    .await?;
    let answering = Answering::answer(&mut b.0, &incoming, false).await?;
    let a_settled =
        tokio::time::timeout(TIMEOUT, ringing.wait_answer(&mut a.0, &mut a.1)).await.context("no answer in time")??;
    let b_settled = answering.settle(&mut b.0, &mut b.1).await?;
    // Keys come through the server, as in any call; the addresses are set
    // by the caller of this function, and neither side gets a relay grant
    // or a call channel, so nothing goes around the impairment.
    let (mut caller, _) = a_settled.into_setup(None);
    let (mut callee, _) = b_settled.into_setup(None);
    caller.relay = None;
    callee.relay = None;
    Ok(Answered { server, clients: vec![a, b], caller, callee })
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
    let (mut a_setup, mut b_setup) = (ans.caller, ans.callee);
    let hole = UdpSocket::bind("127.0.0.1:0").await?;
    let hole_addr: SocketAddr = hole.local_addr()?;
    let proxy = start_udp("127.0.0.1:0".parse()?, b_setup.socket.local_addr()?, net, net, seed).await?;
    for p in &mut a_setup.peers {
        p.candidates = vec![proxy.addr];
    }
    for p in &mut b_setup.peers {
        p.candidates = vec![hole_addr];
    }
    let secs = speech.len() as f64 / 48_000.0;
    // The callee talks (silence) a second longer, so it hears the end.
    let silence = vec![0.0; speech.len() + 48_000];
    let a_in: Box<dyn AudioInput> = input.unwrap_or_else(|| Box::new(BufferInput::new(speech)));
    let (_a_ctl, a_task) = spawn_call(a_setup, media.clone(), a_in, Box::new(TimedRecording::default()));
    tokio::time::sleep(callee_phase).await;
    let (_b_ctl, b_task) = spawn_call(b_setup, media, Box::new(BufferInput::new(silence)), Box::new(output.clone()));
    let limit = Duration::from_secs_f64(secs + 30.0);
    let (sender, _) = tokio::time::timeout(limit, a_task).await.context("the caller's media did not end")???;
    let (receiver, _) = tokio::time::timeout(limit, b_task).await.context("the callee's media did not end")???;
    let counters = proxy.finish().await;
    drop(hole);
    drop(ans.clients);
    ans.server.stop().await;
    let heard = output.0.lock().unwrap_or_else(|p| p.into_inner()).0.clone();
    Ok(CallRun { heard, receiver, sender, proxy: counters })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timed_input_is_a_file_as_the_cli_sees_it() {
        // `babel call --input file.wav` plays a BufferInput, which does not
        // hear the room, so the engine runs no echo cancellation on it; the
        // harness's timed wrapper must say the same, or it measures a
        // pipeline the CLI does not run.
        let buffer = BufferInput::new(vec![0.0; 960]);
        let timed = TimedInput::new(vec![0.0; 960]);
        assert!(!buffer.hears_the_room());
        assert_eq!(timed.hears_the_room(), buffer.hears_the_room());
    }
}
