//! A two-party call's media: capture → noise suppression → Opus → seal →
//! the best path, and back: any path → open → jitter buffer → decode or
//! conceal → playback. One task, driven by its own frame clock.
//!
//! Paths, best first: **direct UDP** to the peer's candidates, **the
//! server's UDP relay**, **the call channel** (`/send` over TCP). Twice a
//! second each side sends a report, sealed like voice, saying what arrived
//! on which path (and loss, jitter, timing for the RTT). Voice goes on the
//! best path the peer's last reports confirm. At the start, and whenever the
//! confirmed path stops being confirmed, voice goes on every path at once;
//! the same sealed datagrams travel on each and the replay window drops the
//! copies, so there is no gap while paths are found. Both sides send direct
//! from the start, so simple NATs open. While on a worse path the better
//! ones are probed four times a second with real voice, and the call moves
//! back as soon as they are confirmed again. The loss the peer reports sets
//! the encoder's FEC and, from 1 % (until 10 s after the last such report),
//! adds copies of earlier frames to each voice datagram
//! ([`REDUNDANCY_OFFSETS`]), which the receiver's jitter buffer waits for.
//! A relay-only call ([`CallSetup::relay_only`]) never sends directly, so
//! the others never see this side's address: relay and call channel only.
//! The relay client BINDs, answers the relay's challenge with a CONFIRM
//! carrying its cookie, and numbers its DATA for the relay's replay window.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use babel_proto::relay as wire;
use babel_proto::{SendData, UserId};
use bytes::Bytes;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::audio::{AudioInput, AudioOutput, level_db};
use crate::channel::MediaChannel;
use crate::codec::{DEFAULT_BITRATE, FrameMs, VoiceDecoder, VoiceEncoder};
use crate::jitter::{JitterBuffer, JitterConfig, Playout};
use crate::keys::{CallKeys, KeyError, SenderKey};
use crate::packet::{self, KIND_OPUS, ReplayWindow, VOICE, VoiceFrame};
use crate::process::CaptureChain;

/// The seed's `type` for the report each side sends twice a second.
pub const KIND_REPORT: u8 = 2;
/// How often a report goes out (and so how fast a broken path is noticed).
const REPORT_EVERY: Duration = Duration::from_millis(500);
/// Where copies of a frame ride under loss: in the datagrams of the frames
/// this many frames later (so a burst shorter than that loses nothing).
pub const REDUNDANCY_OFFSETS: [u32; 2] = [3, 6];
/// How long copies keep going after the last report of loss (1 % or more).
const COPIES_LINGER: Duration = Duration::from_secs(10);

/// The loss the encoder's in-band FEC is told to protect against, percent,
/// for a loss the far end reports in permille: a little more than that.
pub fn expected_loss_pct(reported_permille: u16) -> u8 {
    u8::try_from((reported_permille / 10).saturating_add(5).min(40)).unwrap_or(40)
}

/// The next BIND or CONFIRM nonce: microseconds since the Unix epoch, and
/// always above the last one.
fn next_nonce(last: u64) -> u64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64);
    now.max(last + 1)
}

/// How often a better path is probed.
const PROBE_EVERY: Duration = Duration::from_millis(250);

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

/// Which way voice goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Path {
    /// Straight to the peer over UDP.
    Direct,
    /// Through the server's UDP relay.
    Relay,
    /// Through the server's call channel (TCP).
    Channel,
}

impl Path {
    /// A short name for status lines.
    pub fn as_str(self) -> &'static str {
        match self {
            Path::Direct => "direct",
            Path::Relay => "relay",
            Path::Channel => "channel",
        }
    }
}

/// Settings of the media engine.
#[derive(Debug, Clone)]
pub struct MediaConfig {
    /// Frame length.
    pub frame: FrameMs,
    /// Opus bitrate, bits/s.
    pub bitrate: u32,
    /// In-band FEC.
    pub fec: bool,
    /// While the peer reports loss, send copies of earlier frames in each
    /// voice datagram ([`REDUNDANCY_OFFSETS`]).
    pub redundancy: bool,
    /// Adaptive jitter buffer (off: the naive receiver, kept for
    /// comparisons: a fixed one-frame buffer that plays what is there at
    /// each frame's turn, conceals what is not, drops what comes later and
    /// never uses FEC).
    pub adaptive_jitter: bool,
    /// Noise suppression on the microphone.
    pub noise_suppression: bool,
    /// Acoustic echo cancellation (what the loudspeaker plays is removed
    /// from the microphone), when the input is a microphone
    /// ([`AudioInput::hears_the_room`](crate::audio::AudioInput::hears_the_room)).
    pub echo_cancellation: bool,
    /// Automatic gain control on the microphone.
    pub auto_gain: bool,
    /// Lower the bitrate in steps when the path is congested, and raise it
    /// again (never above `bitrate`) once it is not.
    pub adapt_bitrate: bool,
    /// Keep playing this long after the input ended (let the far end finish).
    pub tail: Duration,
    /// End the call when nothing arrived from the peer for this long.
    pub peer_timeout: Duration,
}

impl Default for MediaConfig {
    fn default() -> Self {
        Self {
            frame: FrameMs::Twenty,
            bitrate: DEFAULT_BITRATE,
            fec: true,
            redundancy: true,
            adaptive_jitter: true,
            noise_suppression: true,
            echo_cancellation: true,
            auto_gain: true,
            adapt_bitrate: true,
            tail: Duration::from_millis(500),
            peer_timeout: Duration::from_secs(15),
        }
    }
}

/// Where the server's relay is and my grant for it.
#[derive(Debug, Clone, Copy)]
pub struct RelayInfo {
    /// The relay's UDP address.
    pub addr: SocketAddr,
    /// My handle.
    pub handle: u32,
    /// My key.
    pub key: [u8; 16],
}

/// Another participant, as call set-up told me of them.
#[derive(Debug, Clone)]
pub struct PeerSetup {
    /// Their user id.
    pub user: UserId,
    /// Their public key (`key` field).
    pub key: String,
    /// Their UDP candidates.
    pub candidates: Vec<SocketAddr>,
}

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

/// Live figures about one other participant.
#[derive(Debug, Clone, Default)]
pub struct PeerStats {
    /// Who.
    pub user: Option<UserId>,
    /// The path my voice reaches them on.
    pub path: Option<Path>,
    /// Round-trip time, ms.
    pub rtt_ms: Option<u32>,
    /// Loss they measure on what I send, percent.
    pub loss_pct: f32,
    /// Loss I measure on what they send, percent.
    pub rx_loss_pct: f32,
    /// Jitter I measure on what they send, ms.
    pub jitter_ms: u64,
    /// Their voice level, dBFS (who is speaking).
    pub level_db: f32,
}

/// Live figures of a call.
#[derive(Debug, Clone, Default)]
pub struct CallStats {
    /// The path voice goes out on now (the worst one in use, in a group).
    pub path: Option<Path>,
    /// Every change of `path`, with the call time it happened at.
    pub path_history: Vec<(Duration, Path)>,
    /// Round-trip time, ms (the longest, in a group).
    pub rtt_ms: Option<u32>,
    /// Loss the peers measure on what I send, percent (the worst).
    pub loss_pct: f32,
    /// Loss I measure on what I receive, percent (the worst).
    pub rx_loss_pct: f32,
    /// Jitter I measure, ms (the worst).
    pub jitter_ms: u64,
    /// Jitter-buffer delay now, ms (the longest).
    pub jitter_delay_ms: u64,
    /// Opus bitrate, bits/s.
    pub bitrate: u32,
    /// Frames concealed so far (all peers).
    pub concealed: u64,
    /// Frames rebuilt from FEC so far (all peers).
    pub fec_recovered: u64,
    /// Lost frames filled in from copies in later datagrams (all peers).
    pub from_copies: u64,
    /// Voice frames sent.
    pub sent: u64,
    /// Voice frames received (all peers, all paths, copies dropped).
    pub received: u64,
    /// Microphone level, dBFS.
    pub input_level_db: f32,
    /// Loudspeaker level, dBFS.
    pub output_level_db: f32,
    /// The echo canceller's estimate of how much echo it removes, dB.
    pub erle_db: Option<f32>,
    /// The code people compare: one for the whole call, from the key
    /// exchange, changed at every join and leave.
    pub sas: String,
    /// Per participant.
    pub peers: Vec<PeerStats>,
}

/// Why a call's media stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndCause {
    /// The input ran out (a file was sent).
    InputEnded,
    /// Asked to stop (hang-up).
    Stopped,
    /// Nothing arrived from any peer for `peer_timeout`.
    PeerVanished,
}

/// An engine failure.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    /// Keys could not be agreed.
    #[error(transparent)]
    Keys(#[from] KeyError),
    /// The codec failed.
    #[error(transparent)]
    Codec(#[from] crate::codec::CodecError),
    /// The output could not be finished (e.g. a WAV file not written).
    #[error(transparent)]
    Audio(#[from] crate::audio::AudioError),
}

/// Commands a running call takes.
#[derive(Debug, Clone)]
pub enum Control {
    /// Mute or unmute the microphone.
    Mute(bool),
    /// Input gain (linear).
    InputGain(f32),
    /// Output gain (linear).
    OutputGain(f32),
    /// Noise suppression on or off.
    NoiseSuppression(bool),
    /// A new bitrate step.
    Bitrate(u32),
    /// Someone joined (`/participant_joined`, or `/call_accepted` in a group).
    AddPeer(PeerSetup),
    /// Someone left (`/participant_left`).
    RemovePeer(UserId),
    /// A peer's addresses changed (`/call_candidates`).
    Candidates(UserId, Vec<SocketAddr>),
    /// The call's code changed (someone joined or left).
    Code(String),
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

/// The seed's `type` for a group sender key handed to one peer.
pub const KIND_KEY: u8 = 3;

/// The report a side sends once a second (inside a sealed frame).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Report {
    rx: [u16; 3],
    loss_permille: u16,
    jitter_ms: u16,
    sent_ms: u32,
    echo_ms: u32,
    hold_ms: u32,
}

impl Report {
    fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(22);
        for r in self.rx {
            b.extend(r.to_be_bytes());
        }
        b.extend(self.loss_permille.to_be_bytes());
        b.extend(self.jitter_ms.to_be_bytes());
        b.extend(self.sent_ms.to_be_bytes());
        b.extend(self.echo_ms.to_be_bytes());
        b.extend(self.hold_ms.to_be_bytes());
        b
    }

    fn decode(b: &[u8]) -> Option<Report> {
        if b.len() != 22 {
            return None;
        }
        let u16at = |i: usize| u16::from_be_bytes([b[i], b[i + 1]]);
        let u32at = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        Some(Report {
            rx: [u16at(0), u16at(2), u16at(4)],
            loss_permille: u16at(6),
            jitter_ms: u16at(8),
            sent_ms: u32at(10),
            echo_ms: u32at(14),
            hold_ms: u32at(18),
        })
    }
}

/// One other participant, as the engine tracks them.
struct Peer {
    user: UserId,
    /// My two-party key towards them (reports, key hand-over, two-party voice).
    pair_send: SenderKey,
    /// Their two-party key towards me.
    pair_recv: SenderKey,
    /// Their group sender key, once handed over.
    group_recv: Option<SenderKey>,
    candidates: Vec<SocketAddr>,
    /// Where their direct packets come from (their NAT mapping).
    direct: Option<SocketAddr>,
    replay: std::collections::HashMap<u32, ReplayWindow>,
    jitter: JitterBuffer,
    decoder: VoiceDecoder,
    /// Their latest report about me, and when it came.
    report: Option<(Instant, Report)>,
    /// Their `sent_ms` of that report and when it came, for the RTT.
    report_rx: Option<(u32, Instant)>,
    /// First and highest media frame index, for the loss count.
    expected_base: Option<u32>,
    highest: Option<u32>,
    /// Authenticated datagrams from them per path since my last report
    /// (copies included: they show the path works).
    counts: [u16; 3],
    /// Frames expected and received at my last report, and the loss since
    /// (smoothed): what my reports tell them.
    loss_mark: (u64, u64),
    recent_loss_pct: f32,
    last_rx: Instant,
    /// When my group key last went to them.
    key_sent: Option<Instant>,
    path: Option<Path>,
    level_db: f32,
    stats: PeerStats,
}

impl Peer {
    fn new(
        keys: &CallKeys,
        setup: PeerSetup,
        jcfg: JitterConfig,
        frame: FrameMs,
        now: Instant,
    ) -> Result<Peer, MediaError> {
        let pair = keys.pairwise(&setup.key)?;
        Ok(Peer {
            user: setup.user,
            pair_send: pair.my_sender_key(),
            pair_recv: pair.their_sender_key(),
            group_recv: None,
            candidates: setup.candidates,
            direct: None,
            replay: std::collections::HashMap::new(),
            jitter: JitterBuffer::new(jcfg),
            decoder: VoiceDecoder::new(frame)?,
            report: None,
            report_rx: None,
            expected_base: None,
            highest: None,
            counts: [0; 3],
            loss_mark: (0, 0),
            recent_loss_pct: 0.0,
            last_rx: now,
            key_sent: None,
            path: None,
            level_db: -100.0,
            stats: PeerStats::default(),
        })
    }

    /// The key with this id, if it is one of theirs.
    fn key(&self, id: u32) -> Option<&SenderKey> {
        if self.pair_recv.id == id { Some(&self.pair_recv) } else { self.group_recv.as_ref().filter(|k| k.id == id) }
    }

    /// Takes an authenticated frame from them.
    fn accept(
        &mut self,
        frame: VoiceFrame,
        key_id: u32,
        via: Path,
        from: Option<SocketAddr>,
        start: Instant,
        fms: FrameMs,
    ) {
        let now = Instant::now();
        self.last_rx = now;
        self.counts[via as usize] = self.counts[via as usize].saturating_add(1);
        if via == Path::Direct {
            self.direct = from;
        }
        if !self.replay.entry(key_id).or_default().accept(frame.seq) {
            return; // a copy that came another way
        }
        match frame.kind {
            KIND_OPUS => {
                let mut packets = frame.packets.into_iter();
                let Some(p) = packets.next() else { return };
                // Sequence numbers also count reports and keys; the jitter
                // buffer and the loss count use the media frame index.
                let index = frame.timestamp / fms.samples() as u32;
                self.expected_base.get_or_insert(index);
                self.highest = Some(self.highest.map_or(index, |h| h.max(index)));
                let media_ms = u64::from(frame.timestamp) / 48;
                self.jitter.push(index, media_ms, p, now.duration_since(start).as_millis() as u64);
                // Copies of earlier frames, when the sender adds them.
                let mut reach = 0;
                for (copy, off) in packets.zip(REDUNDANCY_OFFSETS) {
                    if let Some(i) = index.checked_sub(off) {
                        self.jitter.push_copy(i, copy);
                    }
                    reach = off;
                }
                // Hold back what repairs a loss: the copies' reach, or (with
                // loss but no copies) the next packet and its FEC.
                let extra = if reach > 0 { reach as usize } else { usize::from(self.rx_loss_pct() >= 1.0) };
                self.jitter.set_extra_frames(extra);
            }
            KIND_REPORT => {
                if let Some(r) = frame.packets.first().and_then(|b| Report::decode(b)) {
                    self.report_rx = Some((r.sent_ms, now));
                    if r.echo_ms > 0 {
                        // My clock now, minus when I sent what they echo, minus
                        // how long they held it: the time on the wire, both ways.
                        let now_ms = now.duration_since(start).as_millis() as u32;
                        self.stats.rtt_ms = Some(now_ms.saturating_sub(r.echo_ms).saturating_sub(r.hold_ms));
                    }
                    self.report = Some((now, r));
                }
            }
            KIND_KEY if key_id == self.pair_recv.id => {
                if let Some(b) = frame.packets.first().filter(|b| b.len() == 36) {
                    let id = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
                    let mut k = [0u8; 32];
                    k.copy_from_slice(&b[4..]);
                    if self.group_recv.as_ref().is_none_or(|g| g.id != id) {
                        self.group_recv = Some(SenderKey::from_parts(id, k));
                    }
                }
            }
            _ => {}
        }
    }

    /// The best path their reports confirm for my voice to them.
    fn confirmed_path(&self, now: Instant) -> Option<Path> {
        let (at, r) = self.report.as_ref()?;
        if now.duration_since(*at) >= REPORT_EVERY * 2 {
            return None;
        }
        [Path::Direct, Path::Relay, Path::Channel].into_iter().find(|&p| r.rx[p as usize] > 0)
    }

    /// Frames expected so far (from the first and highest index seen).
    fn expected(&self) -> u64 {
        match (self.expected_base, self.highest) {
            (Some(b), Some(h)) => u64::from(h.wrapping_sub(b)) + 1,
            _ => 0,
        }
    }

    /// Loss of their stream over the whole call, %.
    fn rx_loss_pct(&self) -> f32 {
        let (expected, got) = (self.expected(), self.jitter.stats().arrived());
        if expected > 0 { 100.0 * expected.saturating_sub(got) as f32 / expected as f32 } else { 0.0 }
    }

    /// Loss of their stream since the last call (one report interval),
    /// smoothed over about two intervals, %: what the reports carry, so the
    /// sender's FEC and bitrate follow the path as it is now.
    fn take_recent_loss_pct(&mut self) -> f32 {
        let (expected, got) = (self.expected(), self.jitter.stats().arrived());
        let (e0, g0) = self.loss_mark;
        let de = expected.saturating_sub(e0);
        if de > 0 {
            let lost = de.saturating_sub(got.saturating_sub(g0));
            let interval = 100.0 * lost as f32 / de as f32;
            self.recent_loss_pct = 0.5 * self.recent_loss_pct + 0.5 * interval;
            self.loss_mark = (expected, got);
        }
        self.recent_loss_pct
    }

    /// Decodes their next frame for playback.
    fn play(&mut self, frame_len: usize) -> Vec<f32> {
        // Below this the last frame was a pause: a frame skipped now is not heard.
        self.jitter.set_quiet(self.level_db < -45.0);
        let mut pcm = match self.jitter.pop() {
            Playout::Frame(p) => self.decoder.decode(&p).unwrap_or_else(|_| vec![0.0; frame_len]),
            Playout::Fec(next) => self.decoder.decode_fec(&next).unwrap_or_else(|_| vec![0.0; frame_len]),
            Playout::Conceal { fade_out } => {
                let mut c = self.decoder.conceal().unwrap_or_else(|_| vec![0.0; frame_len]);
                if fade_out {
                    crate::jitter::ramp(&mut c, 1.0, 0.0);
                }
                c
            }
            Playout::Silence => vec![0.0; frame_len],
        };
        pcm.resize(frame_len, 0.0);
        self.level_db = level_db(&pcm);
        pcm
    }
}

/// The worse of two paths (relay is worse than direct, channel than relay).
fn worse(a: Option<Path>, b: Option<Path>) -> Option<Path> {
    match (a, b) {
        (Some(x), Some(y)) => Some(if (x as usize) >= (y as usize) { x } else { y }),
        (x, None) => x,
        (None, y) => y,
    }
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
    let jcfg = if cfg.adaptive_jitter {
        JitterConfig { frame_ms: cfg.frame.ms(), ..JitterConfig::default() }
    } else {
        JitterConfig {
            frame_ms: cfg.frame.ms(),
            min_frames: 1,
            max_frames: 1,
            adaptive: false,
            ..JitterConfig::default()
        }
    };
    let keys = setup.keys;
    let mut code = setup.code;
    let mut peers = Vec::new();
    for p in setup.peers {
        peers.push(Peer::new(&keys, p, jcfg, cfg.frame, start)?);
    }
    // My voice key when three or more talk: sealed once, handed to each peer.
    let group_key = SenderKey::generate()?;
    let mut enc = VoiceEncoder::new(cfg.bitrate, cfg.frame)?;
    enc.set_fec(cfg.fec)?;
    // About 60 bytes of headers per packet: IP and UDP (28), the sealed
    // voice datagram's own (type, key id, sequence, tag: 29), a few more.
    let mut rate = crate::rate::RateController::new(cfg.bitrate, 60 * 8 * 1000 / cfg.frame.ms());
    let mut chain = CaptureChain::new(cfg.noise_suppression);
    let mut echo = crate::echo::EchoLevel::new(cfg.echo_cancellation && input.hears_the_room(), cfg.auto_gain);
    let mut output_gain = 1.0f32;
    let socket = setup.socket;
    let relay = setup.relay;
    let relay_only = setup.relay_only;

    // The call channel: a writer task (never blocks this loop) and a reader.
    let (chan_tx, mut chan_rx) = match setup.channel {
        Some(ch) => {
            let (mut w, mut r) = ch.split();
            let (tx, mut rx_out) = mpsc::channel::<Bytes>(64);
            tokio::spawn(async move {
                while let Some(d) = rx_out.recv().await {
                    if w.send(d).await.is_err() {
                        break;
                    }
                }
            });
            let (in_tx, in_rx) = mpsc::channel::<Bytes>(256);
            tokio::spawn(async move {
                while let Ok(Some(data)) = r.recv().await {
                    if in_tx.send(data).await.is_err() {
                        break;
                    }
                }
            });
            (Some(tx), Some(in_rx))
        }
        None => (None, None),
    };

    let frame_len = cfg.frame.samples();
    let mut tick = tokio::time::interval(Duration::from_millis(u64::from(cfg.frame.ms())));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut pcm = vec![0.0f32; frame_len];
    let mut buf = vec![0u8; 2048];
    let mut relay_out = Vec::with_capacity(1500);
    let mut seq: u32 = 0;
    let mut media_index: u32 = 0;
    // My last frames' packets, newest last, for the copies sent under loss.
    let mut history: std::collections::VecDeque<Vec<u8>> = std::collections::VecDeque::new();
    let mut redundant = false;
    // When a report last showed loss: copies stay on for a while after, as
    // bursty loss has clean seconds between its bursts.
    let mut last_lossy: Option<Instant> = None;
    let mut input_ended: Option<Instant> = None;
    let mut relay_bound = false;
    let mut last_bind: Option<Instant> = None;
    // BIND and CONFIRM nonces (growing), and DATA counters (from 1).
    let mut relay_nonce = 0u64;
    let mut relay_counter = 0u64;
    let mut last_report = start;
    let mut last_probe = start;
    let mut last_any_rx = start;
    let mut stats = CallStats { bitrate: cfg.bitrate, ..CallStats::default() };
    let mut path: Option<Path> = None;
    let ms_since_start = |t: Instant| t.duration_since(start).as_millis() as u32;

    // Finds the peer a datagram is sealed for me by, and opens it.
    let open_from = |peers: &[Peer], d: &[u8]| -> Option<(usize, u32, VoiceFrame)> {
        let id = packet::key_id(d)?;
        let (i, key) = peers.iter().enumerate().find_map(|(i, p)| p.key(id).map(|k| (i, k)))?;
        packet::open(key, d).ok().map(|f| (i, id, f))
    };

    let cause = loop {
        tokio::select! {
            _ = tick.tick() => {}
            r = socket.recv_from(&mut buf) => {
                let Ok((n, from)) = r else { continue };
                let d = &buf[..n];
                let relay_addr = relay.map(|r| r.addr);
                let (datagram, via): (&[u8], Path) = match d.first() {
                    Some(&VOICE) => (d, Path::Direct),
                    Some(&wire::RELAYED) if Some(from) == relay_addr => match wire::decode_relayed(d) {
                        Some((_, inner)) => (inner, Path::Relay),
                        None => continue,
                    },
                    Some(&wire::BIND_ACK) if Some(from) == relay_addr => {
                        let Some((r, ack)) = relay.and_then(|r| Some((r, wire::verify_bind_ack(d, &r.key)?))) else {
                            continue;
                        };
                        // A challenge: this address is new to the relay;
                        // bring the cookie back from here to move there.
                        relay_bound = ack.state == wire::BOUND;
                        if ack.state == wire::CHALLENGE {
                            relay_nonce = next_nonce(relay_nonce);
                            let confirm = wire::encode_confirm(r.handle, relay_nonce, &ack.cookie, &r.key);
                            let _ = socket.send_to(&confirm, r.addr).await;
                        }
                        continue;
                    }
                    _ => continue,
                };
                if let Some((i, id, f)) = open_from(&peers, datagram) {
                    last_any_rx = Instant::now();
                    peers[i].accept(f, id, via, Some(from), start, cfg.frame);
                }
                continue;
            }
            Some(data) = async { match chan_rx.as_mut() { Some(r) => r.recv().await, None => std::future::pending().await } } => {
                if let Ok((_, packets)) = SendData::parse(&data) {
                    for p in packets {
                        if let Some((i, id, f)) = open_from(&peers, &p) {
                            last_any_rx = Instant::now();
                            peers[i].accept(f, id, Path::Channel, None, start, cfg.frame);
                        }
                    }
                }
                continue;
            }
            Some(cmd) = commands.recv() => {
                match cmd {
                    Control::Mute(m) => chain.muted = m,
                    Control::InputGain(g) => chain.gain = g,
                    Control::OutputGain(g) => output_gain = g,
                    Control::NoiseSuppression(on) => chain.set_noise_suppression(on),
                    Control::Bitrate(b) => {
                        if enc.set_bitrate(b).is_ok() {
                            stats.bitrate = b;
                            rate.set_max(b);
                        }
                    }
                    Control::AddPeer(p) => {
                        if !peers.iter().any(|q| q.user == p.user) {
                            match Peer::new(&keys, p, jcfg, cfg.frame, Instant::now()) {
                                Ok(peer) => peers.push(peer),
                                Err(e) => tracing::warn!(error = %e, "cannot add a participant"),
                            }
                        }
                    }
                    Control::RemovePeer(u) => peers.retain(|p| p.user != u),
                    Control::Candidates(u, c) => {
                        if let Some(p) = peers.iter_mut().find(|p| p.user == u) {
                            p.candidates = c;
                        }
                    }
                    Control::Code(c) => code = c,
                }
                continue;
            }
            _ = control.stop.cancelled() => break EndCause::Stopped,
        }

        // One frame of the clock.
        let now = Instant::now();
        if input_ended.is_none() && !input.read(&mut pcm) {
            input_ended = Some(now);
        }
        if let Some(t) = input_ended {
            if now.duration_since(t) >= cfg.tail {
                break EndCause::InputEnded;
            }
            pcm.fill(0.0);
        }
        if now.duration_since(last_any_rx) >= cfg.peer_timeout {
            break EndCause::PeerVanished;
        }

        // Path choice, per peer: the best path their reports confirm.
        let elapsed = now.duration_since(start);
        let probe = now.duration_since(last_probe) >= PROBE_EVERY;
        if probe {
            last_probe = now;
        }
        let mut call_path = None;
        for p in peers.iter_mut() {
            p.path = p.confirmed_path(now);
            call_path = worse(call_path, p.path);
        }
        if call_path != path {
            tracing::debug!(from = ?path, to = ?call_path, "media path");
            rate.path_changed();
            if let Some(p) = call_path {
                stats.path_history.push((elapsed, p));
            }
            path = call_path;
        }
        // Nothing confirmed for a peer (the start, or its path just broke):
        // every path. Otherwise its confirmed path, plus a probe now and then
        // on the better ones (to move back) and on the relay (to have it ready).
        let uses = |p: Option<Path>| match p {
            None => (true, true, true),
            Some(Path::Direct) => (true, probe, false),
            Some(Path::Relay) => (probe, true, false),
            Some(Path::Channel) => (probe, probe, true),
        };
        let use_relay = peers.iter().any(|p| uses(p.path).1);
        let use_channel = peers.iter().any(|p| uses(p.path).2);

        // (Re)bind to the relay now and then: keeps NAT mappings and tells
        // the server where we are.
        if let Some(r) = relay {
            // Often while a path is being looked for (the relay may have
            // lost us after an address change), rarely once all is well.
            let settled = relay_bound && peers.iter().all(|p| p.path.is_some());
            let every = if settled { Duration::from_secs(15) } else { Duration::from_millis(500) };
            if last_bind.is_none_or(|t| now.duration_since(t) >= every) {
                relay_nonce = next_nonce(relay_nonce);
                let _ = socket.send_to(&wire::encode_bind(r.handle, relay_nonce, &r.key), r.addr).await;
                last_bind = Some(now);
            }
        }

        // Capture, encode, seal.
        echo.capture(&mut pcm);
        chain.process(&mut pcm);
        stats.input_level_db = chain.level_db;
        let opus = enc.encode(&pcm)?;
        let group = peers.len() > 1;
        let voice_key = if group { &group_key } else { peers.first().map_or(&group_key, |p| &p.pair_send) };
        let mut packets = vec![opus.clone()];
        if redundant {
            for off in REDUNDANCY_OFFSETS {
                // Same size only (a bitrate change makes older ones differ).
                let Some(copy) = history.len().checked_sub(off as usize).and_then(|i| history.get(i)) else { break };
                if copy.len() != opus.len() {
                    break;
                }
                packets.push(copy.clone());
            }
        }
        history.push_back(opus);
        while history.len() > REDUNDANCY_OFFSETS.iter().copied().max().unwrap_or(0) as usize {
            history.pop_front();
        }
        let frame = VoiceFrame { kind: KIND_OPUS, seq, timestamp: media_index.wrapping_mul(frame_len as u32), packets };
        seq = seq.wrapping_add(1);
        media_index = media_index.wrapping_add(1);
        let voice = packet::seal(voice_key, &frame).unwrap_or_default();
        stats.sent += 1;

        // Per-peer control frames: reports, and my group key when needed.
        let report_due = now.duration_since(last_report) >= REPORT_EVERY;
        if report_due {
            last_report = now;
        }
        let mut control_frames: Vec<(usize, Vec<u8>)> = Vec::new();
        for (i, p) in peers.iter_mut().enumerate() {
            if report_due {
                let (echo_ms, hold_ms) = match p.report_rx {
                    Some((sent, at)) => (sent, now.duration_since(at).as_millis() as u32),
                    None => (0, 0),
                };
                let rep = Report {
                    rx: p.counts,
                    loss_permille: (p.take_recent_loss_pct() * 10.0) as u16,
                    jitter_ms: p.jitter.jitter_ms().min(u64::from(u16::MAX)) as u16,
                    sent_ms: ms_since_start(now).max(1),
                    echo_ms,
                    hold_ms,
                };
                p.counts = [0; 3];
                let f = VoiceFrame { kind: KIND_REPORT, seq, timestamp: 0, packets: vec![rep.encode()] };
                seq = seq.wrapping_add(1);
                if let Ok(d) = packet::seal(&p.pair_send, &f) {
                    control_frames.push((i, d));
                }
            }
            let key_every =
                if elapsed < Duration::from_secs(5) { Duration::from_secs(1) } else { Duration::from_secs(5) };
            if group && p.key_sent.is_none_or(|t| now.duration_since(t) >= key_every) {
                p.key_sent = Some(now);
                let mut k = group_key.id.to_be_bytes().to_vec();
                k.extend_from_slice(group_key.key_bytes());
                let f = VoiceFrame { kind: KIND_KEY, seq, timestamp: 0, packets: vec![k] };
                seq = seq.wrapping_add(1);
                if let Ok(d) = packet::seal(&p.pair_send, &f) {
                    control_frames.push((i, d));
                }
            }
        }

        // Send. Voice: direct to each peer that takes it direct; one copy
        // to the relay and one to the channel reach everyone there. Control
        // frames go on every path: they are tiny, and they must get through
        // exactly when the path in use has just broken.
        // Planned first, sent after: no peer (whose decoder is not Sync) is
        // borrowed across an await.
        let mut direct_plan: Vec<(SocketAddr, &[u8])> = Vec::new();
        for (i, p) in peers.iter().enumerate() {
            let targets: Vec<SocketAddr> = match (relay_only, p.direct) {
                (true, _) => Vec::new(),
                (false, Some(a)) => vec![a],
                (false, None) => p.candidates.clone(),
            };
            let voice_too = uses(p.path).0;
            for a in targets {
                for (_, d) in control_frames.iter().filter(|(j, _)| *j == i) {
                    direct_plan.push((a, d.as_slice()));
                }
                if voice_too {
                    direct_plan.push((a, voice.as_slice()));
                }
            }
        }
        for (a, d) in direct_plan {
            let _ = socket.send_to(d, a).await;
        }
        let mut shared: Vec<&[u8]> = control_frames.iter().map(|(_, d)| d.as_slice()).collect();
        if let Some(r) = relay {
            if use_relay {
                shared.push(&voice);
            }
            for d in &shared {
                relay_counter += 1;
                wire::encode_data(r.handle, relay_counter, &r.key, d, &mut relay_out);
                let _ = socket.send_to(&relay_out, r.addr).await;
            }
            if use_relay {
                shared.pop();
            }
        }
        if let Some(tx) = chan_tx.as_ref() {
            if use_channel {
                shared.push(&voice);
            }
            for d in &shared {
                if let Ok(sd) = SendData::new("voice", &[*d]) {
                    let _ = tx.try_send(Bytes::from(sd.to_json()));
                }
            }
        }

        // Play one frame: every peer's voice, mixed.
        let mut mixed = vec![0.0f32; frame_len];
        for p in peers.iter_mut() {
            let v = p.play(frame_len);
            crate::process::mix_into(&mut mixed, &v);
        }
        if peers.len() > 1 {
            crate::process::soft_limit(&mut mixed);
        }
        if output_gain != 1.0 {
            mixed.iter_mut().for_each(|s| *s = (*s * output_gain).clamp(-1.0, 1.0));
        }
        stats.output_level_db = level_db(&mixed);
        output.write(&mixed);
        echo.render(&mixed);
        stats.erle_db = echo.erle_db().map(|e| e as f32);

        // Statistics and feedback.
        stats.path = path;
        stats.received = 0;
        stats.concealed = 0;
        stats.fec_recovered = 0;
        stats.from_copies = 0;
        stats.rtt_ms = None;
        stats.loss_pct = 0.0;
        stats.rx_loss_pct = 0.0;
        stats.jitter_ms = 0;
        stats.jitter_delay_ms = 0;
        let mut worst_loss = 0u16;
        for p in peers.iter_mut() {
            let js = p.jitter.stats();
            p.stats.user = Some(p.user);
            p.stats.path = p.path;
            p.stats.rx_loss_pct = p.rx_loss_pct();
            p.stats.jitter_ms = p.jitter.jitter_ms();
            p.stats.level_db = p.level_db;
            if let Some((_, r)) = &p.report {
                p.stats.loss_pct = f32::from(r.loss_permille) / 10.0;
                worst_loss = worst_loss.max(r.loss_permille);
            }
            stats.received += js.received;
            stats.concealed += js.concealed;
            stats.fec_recovered += js.fec_recovered;
            stats.from_copies += js.from_copies;
            stats.rtt_ms = stats.rtt_ms.max(p.stats.rtt_ms);
            stats.loss_pct = stats.loss_pct.max(p.stats.loss_pct);
            stats.rx_loss_pct = stats.rx_loss_pct.max(p.stats.rx_loss_pct);
            stats.jitter_ms = stats.jitter_ms.max(p.stats.jitter_ms);
            stats.jitter_delay_ms = stats.jitter_delay_ms.max(p.jitter.delay_ms());
        }
        stats.sas.clone_from(&code);
        stats.peers = peers.iter().map(|p| p.stats.clone()).collect();
        if report_due && cfg.adapt_bitrate {
            // The worst of what the others report about my stream.
            let fb = crate::rate::Feedback {
                loss_pct: stats.loss_pct,
                rtt_ms: stats.rtt_ms,
                report_age: peers.iter().filter_map(|p| p.report.as_ref().map(|(at, _)| now.duration_since(*at))).max(),
                copies_in_use: redundant,
            };
            if let Some(b) = rate.update(elapsed, fb)
                && enc.set_bitrate(b).is_ok()
            {
                tracing::debug!(bitrate = b, copies = rate.copies_allowed(), ?fb, "bitrate step");
                stats.bitrate = b;
            }
        }
        // Copies triple what is sent: only while the path is not congested.
        if worst_loss >= 10 {
            last_lossy = Some(now);
        }
        let lossy = last_lossy.is_some_and(|t| now.duration_since(t) < COPIES_LINGER);
        redundant = cfg.redundancy && lossy && (!cfg.adapt_bitrate || rate.copies_allowed());
        if cfg.fec {
            // Protect against a little more than the worst loss reported.
            let _ = enc.set_expected_loss(expected_loss_pct(worst_loss));
        }
        *control.stats.lock().unwrap_or_else(|p| p.into_inner()) = stats.clone();
    };
    for p in &peers {
        tracing::debug!(user = ?p.user, jitter = ?p.jitter.stats(), jitter_ms = p.jitter.jitter_ms(), target = p.jitter.target_frames(), "call ended");
    }
    output.finish()?;
    *control.stats.lock().unwrap_or_else(|p| p.into_inner()) = stats.clone();
    Ok((stats, cause))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_round_trip() {
        let r = Report { rx: [1, 2, 3], loss_permille: 45, jitter_ms: 12, sent_ms: 1000, echo_ms: 900, hold_ms: 50 };
        assert_eq!(Report::decode(&r.encode()), Some(r));
        assert_eq!(Report::decode(&[0; 5]), None);
    }
}
