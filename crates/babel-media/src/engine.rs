//! The driver of a call's media: it owns the UDP socket, the frame clock,
//! the audio devices and the call channel, and does nothing but move bytes
//! and time into and out of the [`CallCore`], where
//! the call's media is (paths, keys, reports, jitter buffers, codecs, rate
//! control: see [`crate::call`]). Every task it starts (itself, the call
//! channel's writer and reader) is joined before it returns.
//!
//! The types a call is steered and read with live in [`crate::call`] and
//! are re-exported here, where their users have always found them.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::audio::{AudioInput, AudioOutput};
use crate::call::{CallCore, CoreSetup, Transmit};
pub use crate::call::{
    CallStats, Control, EndCause, KIND_KEY, KIND_REPORT, MAX_COPY_OFFSET, MediaConfig, MediaError, Path, PeerSetup,
    PeerStats, RelayInfo, expected_loss_pct,
};
use crate::channel::MediaChannel;
use crate::keys::CallKeys;

/// A tiny cancellation flag (the engine has no other need for tokio-util).
mod tokio_util_shim {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use tokio::sync::Notify;

    /// Set once to stop a call.
    #[derive(Debug, Clone, Default)]
    pub struct CancelFlag(Arc<(AtomicBool, Notify)>);

    impl CancelFlag {
        /// Stops the call.
        pub fn cancel(&self) {
            self.0.0.store(true, Ordering::SeqCst);
            self.0.1.notify_waiters();
        }
        /// Whether it was stopped.
        pub fn is_cancelled(&self) -> bool {
            self.0.0.load(Ordering::SeqCst)
        }
        /// Waits until stopped.
        pub async fn cancelled(&self) {
            loop {
                let n = self.0.1.notified();
                if self.is_cancelled() {
                    return;
                }
                n.await;
            }
        }
    }
}

pub use tokio_util_shim::CancelFlag as StopFlag;

/// Everything the engine needs to know about a call.
#[derive(Debug)]
pub struct CallSetup {
    /// My key pair for this call (its public half went out in `/call` or `/answer`).
    pub keys: CallKeys,
    /// The other participants (one in a two-party call).
    pub peers: Vec<PeerSetup>,
    /// My relay grant.
    pub relay: Option<RelayInfo>,
    /// My call channel, if opened (`babel_client::CallChannel`, or any
    /// other [`MediaChannel`]).
    pub channel: Option<Box<dyn MediaChannel>>,
    /// My UDP socket (bound before the call so its address could be announced).
    pub socket: UdpSocket,
    /// The code people compare, from the key exchange (`babel_proto::agree`);
    /// a new one comes with [`Control::Code`] when the group changes.
    pub code: String,
    /// Relay-only: never send to a peer directly (that would show them my
    /// address); voice goes through the relay and the call channel only.
    pub relay_only: bool,
}

/// A running call's handles: stats to read, commands to send, a flag to stop.
#[derive(Debug, Clone)]
pub struct CallControl {
    /// Live statistics.
    pub stats: Arc<Mutex<CallStats>>,
    /// Commands.
    pub commands: mpsc::UnboundedSender<Control>,
    /// Stop flag.
    pub stop: StopFlag,
}

impl CallControl {
    /// A snapshot of the statistics.
    pub fn snapshot(&self) -> CallStats {
        self.stats.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Sends a command (ignored once the call is over).
    pub fn send(&self, c: Control) {
        let _ = self.commands.send(c);
    }
}

/// The call channel's two tasks, and the ends the driver uses.
struct ChannelTasks {
    /// Data sections to send (a full queue drops: voice does not wait).
    out: mpsc::Sender<Bytes>,
    /// Data sections received.
    inbox: mpsc::Receiver<Bytes>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl ChannelTasks {
    fn start(ch: Box<dyn MediaChannel>) -> ChannelTasks {
        let (mut w, mut r) = ch.split();
        let (out, mut rx_out) = mpsc::channel::<Bytes>(64);
        let writer = tokio::spawn(async move {
            while let Some(d) = rx_out.recv().await {
                if let Err(e) = w.send(d).await {
                    tracing::debug!(error = %e, "call channel: sending stopped");
                    break;
                }
            }
        });
        let (in_tx, inbox) = mpsc::channel::<Bytes>(256);
        let reader = tokio::spawn(async move {
            loop {
                match r.recv().await {
                    Ok(Some(data)) => {
                        if in_tx.send(data).await.is_err() {
                            break;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        tracing::debug!(error = %e, "call channel: receiving stopped");
                        break;
                    }
                }
            }
        });
        ChannelTasks { out, inbox, tasks: vec![writer, reader] }
    }

    /// Stops both tasks and waits for them.
    async fn join(self) {
        drop(self.out);
        for t in &self.tasks {
            t.abort();
        }
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// Sends what the core has queued.
async fn flush(core: &mut CallCore, socket: &UdpSocket, channel: Option<&ChannelTasks>) {
    while let Some(t) = core.poll_transmit() {
        match t {
            Transmit::Udp { to, bytes } => {
                // UDP may drop anyway; a send that fails is a lost datagram.
                if let Err(e) = socket.send_to(&bytes, to).await {
                    tracing::trace!(error = %e, %to, "udp send");
                }
            }
            Transmit::Channel(data) => {
                if let Some(c) = channel {
                    let _ = c.out.try_send(data);
                }
            }
        }
    }
}

/// Microseconds since the Unix epoch (where relay nonces start).
fn wall_micros() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

/// Runs a call's media until the input ends, `stop` is set, or every peer
/// vanishes. Returns the final statistics and why it ended.
pub async fn run_call(
    setup: CallSetup,
    cfg: MediaConfig,
    mut input: Box<dyn AudioInput>,
    mut output: Box<dyn AudioOutput>,
    control: CallControl,
    mut commands: mpsc::UnboundedReceiver<Control>,
) -> Result<(CallStats, EndCause), MediaError> {
    let start = Instant::now();
    let socket = setup.socket;
    let core_setup = CoreSetup {
        keys: setup.keys,
        peers: setup.peers,
        relay: setup.relay,
        channel: setup.channel.is_some(),
        code: setup.code,
        relay_only: setup.relay_only,
        hears_the_room: input.hears_the_room(),
        nonce_base: wall_micros(),
    };
    let mut core = CallCore::new(core_setup, cfg.clone(), start.into_std())?;
    let mut channel = setup.channel.map(ChannelTasks::start);
    let result =
        drive(&mut core, &cfg, &socket, &mut channel, &mut *input, &mut *output, &control, &mut commands).await;
    if let Some(c) = channel {
        c.join().await;
    }
    core.log_end();
    let cause = result?;
    output.finish()?;
    let stats = core.stats().clone();
    *control.stats.lock().unwrap_or_else(|p| p.into_inner()) = stats.clone();
    Ok((stats, cause))
}

/// The driver's loop: bytes, commands and frame ticks into the core; what
/// it queues out to the socket and the channel; its playout to the output.
#[allow(clippy::too_many_arguments)]
async fn drive(
    core: &mut CallCore,
    cfg: &MediaConfig,
    socket: &UdpSocket,
    channel: &mut Option<ChannelTasks>,
    input: &mut dyn AudioInput,
    output: &mut dyn AudioOutput,
    control: &CallControl,
    commands: &mut mpsc::UnboundedReceiver<Control>,
) -> Result<EndCause, MediaError> {
    let frame_len = cfg.frame.samples();
    let mut tick = tokio::time::interval(Duration::from_millis(u64::from(cfg.frame.ms())));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut pcm = vec![0.0f32; frame_len];
    let mut buf = vec![0u8; 2048];
    let mut input_ended = false;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            r = socket.recv_from(&mut buf) => {
                if let Ok((n, from)) = r {
                    core.handle_datagram(Instant::now().into_std(), from, &buf[..n]);
                    flush(core, socket, channel.as_ref()).await;
                }
                continue;
            }
            Some(data) = async { match channel.as_mut() { Some(c) => c.inbox.recv().await, None => std::future::pending().await } } => {
                core.handle_channel_frame(Instant::now().into_std(), &data);
                continue;
            }
            Some(cmd) = commands.recv() => {
                if let Err(e) = core.handle_command(cmd) {
                    tracing::warn!(error = %e, "a call command failed");
                }
                continue;
            }
            _ = control.stop.cancelled() => return Ok(EndCause::Stopped),
        }

        // One frame of the clock: capture, send, play.
        let now = Instant::now().into_std();
        if !input_ended && !input.read(&mut pcm) {
            input_ended = true;
            core.handle_input_ended(now);
        }
        core.handle_capture(now, &mut pcm)?;
        if let Some(cause) = core.ended() {
            return Ok(cause);
        }
        flush(core, socket, channel.as_ref()).await;
        output.write(&core.poll_playout(now));
        *control.stats.lock().unwrap_or_else(|p| p.into_inner()) = core.stats().clone();
    }
}

/// The task running a call's media; it ends with the final statistics.
pub type CallTask = tokio::task::JoinHandle<Result<(CallStats, EndCause), MediaError>>;

/// Starts a call's media on a task of its own; the handles let a UI read
/// stats, send commands and stop it.
pub fn spawn_call(
    setup: CallSetup,
    cfg: MediaConfig,
    input: Box<dyn AudioInput>,
    output: Box<dyn AudioOutput>,
) -> (CallControl, CallTask) {
    let (tx, rx) = mpsc::unbounded_channel();
    let control = CallControl { stats: Arc::default(), commands: tx, stop: StopFlag::default() };
    let task = tokio::spawn(run_call(setup, cfg, input, output, control.clone(), rx));
    (control, task)
}
