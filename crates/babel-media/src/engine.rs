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
//! the encoder's FEC.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use babel_client::CallChannel;
use babel_proto::relay as wire;
use babel_proto::{ChannelFrame, SendData, UserId};
use bytes::Bytes;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::audio::{AudioInput, AudioOutput, level_db};
use crate::codec::{DEFAULT_BITRATE, FrameMs, VoiceDecoder, VoiceEncoder};
use crate::jitter::{JitterBuffer, JitterConfig, Playout};
use crate::keys::{CallKeys, KeyError, SenderKey};
use crate::packet::{self, KIND_OPUS, ReplayWindow, VOICE, VoiceFrame};
use crate::process::CaptureChain;

/// The seed's `type` for the report each side sends twice a second.
pub const KIND_REPORT: u8 = 2;
/// How often a report goes out (and so how fast a broken path is noticed).
const REPORT_EVERY: Duration = Duration::from_millis(500);
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
    /// Adaptive jitter buffer (off: a fixed one-frame buffer, the naive
    /// receiver, kept for comparisons).
    pub adaptive_jitter: bool,
    /// Noise suppression on the microphone.
    pub noise_suppression: bool,
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
            adaptive_jitter: true,
            noise_suppression: true,
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

/// Everything the engine needs to know about a call.
#[derive(Debug)]
pub struct CallSetup {
    /// My key pair for this call (its public half went out in `/call` or `/answer`).
    pub keys: CallKeys,
    /// The peer's user id.
    pub peer: UserId,
    /// The peer's public key (`key` field).
    pub peer_key: String,
    /// The peer's UDP candidates.
    pub peer_candidates: Vec<SocketAddr>,
    /// My relay grant.
    pub relay: Option<RelayInfo>,
    /// My call channel, if opened.
    pub channel: Option<CallChannel>,
    /// My UDP socket (bound before the call so its address could be announced).
    pub socket: UdpSocket,
}

/// Live figures of a call.
#[derive(Debug, Clone, Default)]
pub struct CallStats {
    /// The path voice goes out on now.
    pub path: Option<Path>,
    /// Every path change, with the call time it happened at.
    pub path_history: Vec<(Duration, Path)>,
    /// Round-trip time, ms (from the reports).
    pub rtt_ms: Option<u32>,
    /// Loss the peer measures on what I send, percent.
    pub loss_pct: f32,
    /// Loss I measure on what I receive, percent.
    pub rx_loss_pct: f32,
    /// Jitter I measure, ms.
    pub jitter_ms: u64,
    /// Jitter-buffer delay now, ms.
    pub jitter_delay_ms: u64,
    /// Opus bitrate, bits/s.
    pub bitrate: u32,
    /// Frames concealed so far.
    pub concealed: u64,
    /// Frames rebuilt from FEC so far.
    pub fec_recovered: u64,
    /// Voice packets sent and received.
    pub sent: u64,
    /// Voice packets received (all paths, copies dropped).
    pub received: u64,
    /// Microphone level, dBFS.
    pub input_level_db: f32,
    /// Loudspeaker level, dBFS.
    pub output_level_db: f32,
    /// The short authentication string to read to the peer.
    pub sas: String,
}

/// Why a call's media stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndCause {
    /// The input ran out (a file was sent).
    InputEnded,
    /// Asked to stop (hang-up).
    Stopped,
    /// Nothing arrived from the peer for `peer_timeout`.
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
}

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

/// Runs a call's media until the input ends, `stop` is set, or the peer
/// vanishes. Returns the final statistics and why it ended.
pub async fn run_call(
    setup: CallSetup,
    cfg: MediaConfig,
    mut input: Box<dyn AudioInput>,
    mut output: Box<dyn AudioOutput>,
    control: CallControl,
    mut commands: mpsc::UnboundedReceiver<Control>,
) -> Result<(CallStats, EndCause), MediaError> {
    let pairwise = setup.keys.pairwise(&setup.peer_key)?;
    let send_key: SenderKey = pairwise.my_sender_key();
    let recv_key: SenderKey = pairwise.their_sender_key();
    let sas = pairwise.sas();
    let mut enc = VoiceEncoder::new(cfg.bitrate, cfg.frame)?;
    enc.set_fec(cfg.fec)?;
    let mut dec = VoiceDecoder::new(cfg.frame)?;
    let mut chain = CaptureChain::new(cfg.noise_suppression);
    let mut output_gain = 1.0f32;
    let jcfg = if cfg.adaptive_jitter {
        JitterConfig { frame_ms: cfg.frame.ms(), ..JitterConfig::default() }
    } else {
        JitterConfig { frame_ms: cfg.frame.ms(), min_frames: 1, max_frames: 1, ..JitterConfig::default() }
    };
    let socket = setup.socket;

    // The call channel: a writer task (never blocks this loop) and a reader.
    let (chan_tx, chan_rx) = match setup.channel {
        Some(ch) => {
            let (mut w, mut r) = ch.split();
            let (tx, mut rx_out) = mpsc::channel::<Bytes>(64);
            tokio::spawn(async move {
                while let Some(d) = rx_out.recv().await {
                    if w.send_raw(d).await.is_err() {
                        break;
                    }
                }
            });
            let (in_tx, in_rx) = mpsc::channel::<Bytes>(256);
            tokio::spawn(async move {
                while let Ok(Some(frame)) = r.recv().await {
                    if let ChannelFrame::Send { data, .. } = frame {
                        if in_tx.send(data).await.is_err() {
                            break;
                        }
                    }
                }
            });
            (Some(tx), Some(in_rx))
        }
        None => (None, None),
    };
    let mut chan_rx = chan_rx;

    let start = Instant::now();
    let mut rx = Rx {
        key: recv_key,
        replay: ReplayWindow::default(),
        jitter: JitterBuffer::new(jcfg),
        peer_report: None,
        last_report_rx: None,
        expected_base: None,
        highest: None,
        counts: [0; 3],
        last_rx: start,
        peer_direct: None,
        start,
        frame: cfg.frame,
    };
    let frame_len = cfg.frame.samples();
    let mut tick = tokio::time::interval(Duration::from_millis(u64::from(cfg.frame.ms())));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut pcm = vec![0.0f32; frame_len];
    let mut buf = vec![0u8; 2048];
    let mut relay_out = Vec::with_capacity(1500);
    let mut seq: u32 = 0;
    let mut media_index: u32 = 0;
    let mut input_ended: Option<Instant> = None;
    let mut relay_bound = false;
    let mut last_bind: Option<Instant> = None;
    let mut last_report = start;
    let mut last_probe = start;
    let mut stats = CallStats { sas, bitrate: cfg.bitrate, ..CallStats::default() };
    let mut path: Option<Path> = None;

    let ms_since_start = |t: Instant| t.duration_since(start).as_millis() as u32;

    let cause = loop {
        tokio::select! {
            _ = tick.tick() => {}
            r = socket.recv_from(&mut buf) => {
                let Ok((n, from)) = r else { continue };
                let d = &buf[..n];
                let relay_addr = setup.relay.map(|r| r.addr);
                let (datagram, via): (&[u8], Path) = match d.first() {
                    Some(&VOICE) => (d, Path::Direct),
                    Some(&wire::RELAYED) if Some(from) == relay_addr => match wire::decode_relayed(d) {
                        Some((_, inner)) => (inner, Path::Relay),
                        None => continue,
                    },
                    Some(&wire::BIND_ACK) if Some(from) == relay_addr => {
                        if let Some(r) = setup.relay {
                            if wire::verify_bind_ack(d, &r.key).is_some() {
                                relay_bound = true;
                            }
                        }
                        continue;
                    }
                    _ => continue,
                };
                let datagram = datagram.to_vec();
                rx.accept(&datagram, via, Some(from));
                continue;
            }
            Some(data) = async { match chan_rx.as_mut() { Some(r) => r.recv().await, None => std::future::pending().await } } => {
                if let Ok((_, packets)) = SendData::parse(&data) {
                    for p in packets {
                        rx.accept(&p, Path::Channel, None);
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
                    Control::Bitrate(b) => { if enc.set_bitrate(b).is_ok() { stats.bitrate = b; } }
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
        if now.duration_since(rx.last_rx) >= cfg.peer_timeout {
            break EndCause::PeerVanished;
        }

        // Path choice: the best path the peer's reports confirm.
        let elapsed = now.duration_since(start);
        let confirmed = |p: Path| {
            rx.peer_report
                .as_ref()
                .is_some_and(|(at, r)| now.duration_since(*at) < REPORT_EVERY * 2 && r.rx[p as usize] > 0)
        };
        let best = [Path::Direct, Path::Relay, Path::Channel].into_iter().find(|&p| confirmed(p));
        if best != path {
            tracing::debug!(from = ?path, to = ?best, "media path");
            if let Some(p) = best {
                stats.path_history.push((elapsed, p));
            }
            path = best;
        }
        stats.path = path;
        let probe = now.duration_since(last_probe) >= PROBE_EVERY;
        if probe {
            last_probe = now;
        }
        // Nothing confirmed (the start, or the path just broke): every path.
        // Otherwise the confirmed path, plus a probe now and then on the
        // better ones (to move back) and on the relay (to have it ready).
        let (use_direct, use_relay, use_channel) = match path {
            None => (true, true, true),
            Some(Path::Direct) => (true, probe, false),
            Some(Path::Relay) => (probe, true, false),
            Some(Path::Channel) => (probe, probe, true),
        };

        // (Re)bind to the relay now and then: keeps NAT mappings and tells
        // the server where we are.
        if let Some(r) = setup.relay {
            let every = if relay_bound { Duration::from_secs(15) } else { Duration::from_millis(500) };
            if last_bind.is_none_or(|t| now.duration_since(t) >= every) {
                let nonce = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_micros() as u64);
                let _ = socket.send_to(&wire::encode_bind(r.handle, nonce, &r.key), r.addr).await;
                last_bind = Some(now);
            }
        }

        // Capture, encode, seal, send.
        chain.process(&mut pcm);
        stats.input_level_db = chain.level_db;
        let opus = enc.encode(&pcm)?;
        let frame = VoiceFrame {
            kind: KIND_OPUS,
            seq,
            timestamp: media_index.wrapping_mul(frame_len as u32),
            packets: vec![opus],
        };
        seq = seq.wrapping_add(1);
        media_index = media_index.wrapping_add(1);
        let mut outgoing = vec![packet::seal(&send_key, &frame).unwrap_or_default()];
        if now.duration_since(last_report) >= REPORT_EVERY {
            last_report = now;
            let js = rx.jitter.stats();
            let expected = match (rx.expected_base, rx.highest) {
                (Some(b), Some(h)) => u64::from(h.wrapping_sub(b)) + 1,
                _ => 0,
            };
            let got = js.received;
            stats.rx_loss_pct =
                if expected > 0 { 100.0 * expected.saturating_sub(got) as f32 / expected as f32 } else { 0.0 };
            let (echo_ms, hold_ms) = match rx.last_report_rx {
                Some((sent, at)) => (sent, now.duration_since(at).as_millis() as u32),
                None => (0, 0),
            };
            let rep = Report {
                rx: rx.counts,
                loss_permille: (stats.rx_loss_pct * 10.0) as u16,
                jitter_ms: rx.jitter.jitter_ms().min(u64::from(u16::MAX)) as u16,
                sent_ms: ms_since_start(now).max(1),
                echo_ms,
                hold_ms,
            };
            rx.counts = [0; 3];
            let rframe = VoiceFrame { kind: KIND_REPORT, seq, timestamp: 0, packets: vec![rep.encode()] };
            seq = seq.wrapping_add(1);
            if let Ok(d) = packet::seal(&send_key, &rframe) {
                outgoing.push(d);
            }
        }
        // Reports go on every path: they are tiny, and they must get through
        // exactly when the path in use has just broken.
        for (i, d) in outgoing.iter().enumerate() {
            let is_report = i > 0;
            if use_direct || is_report {
                match rx.peer_direct {
                    Some(a) => {
                        let _ = socket.send_to(d, a).await;
                    }
                    None => {
                        for a in &setup.peer_candidates {
                            let _ = socket.send_to(d, a).await;
                        }
                    }
                }
            }
            if let (true, Some(r)) = (use_relay || is_report, setup.relay) {
                wire::encode_data(r.handle, &r.key, d, &mut relay_out);
                let _ = socket.send_to(&relay_out, r.addr).await;
            }
            if use_channel || is_report {
                if let (Some(tx), Ok(sd)) = (chan_tx.as_ref(), SendData::new("voice", &[d.as_slice()])) {
                    let _ = tx.try_send(Bytes::from(sd.to_json()));
                }
            }
        }
        stats.sent += 1;

        // Play one frame.
        let mut played = match rx.jitter.pop() {
            Playout::Frame(p) => dec.decode(&p).unwrap_or_else(|_| vec![0.0; frame_len]),
            Playout::Fec(next) => dec.decode_fec(&next).unwrap_or_else(|_| vec![0.0; frame_len]),
            Playout::Conceal { fade_out } => {
                let mut c = dec.conceal().unwrap_or_else(|_| vec![0.0; frame_len]);
                if fade_out {
                    crate::jitter::ramp(&mut c, 1.0, 0.0);
                }
                c
            }
            Playout::Silence => vec![0.0; frame_len],
        };
        if output_gain != 1.0 {
            played.iter_mut().for_each(|s| *s = (*s * output_gain).clamp(-1.0, 1.0));
        }
        stats.output_level_db = level_db(&played);
        output.write(&played);

        // Statistics and feedback.
        let js = rx.jitter.stats();
        stats.received = js.received;
        stats.concealed = js.concealed;
        stats.fec_recovered = js.fec_recovered;
        stats.jitter_ms = rx.jitter.jitter_ms();
        stats.jitter_delay_ms = rx.jitter.delay_ms();
        if let Some((_, r)) = &rx.peer_report {
            stats.loss_pct = f32::from(r.loss_permille) / 10.0;
            if r.echo_ms > 0 {
                let now_ms = ms_since_start(now);
                stats.rtt_ms = Some(now_ms.saturating_sub(r.echo_ms).saturating_sub(r.hold_ms));
            }
            if cfg.fec {
                // Protect against a little more than what the peer sees.
                let _ = enc.set_expected_loss(((r.loss_permille / 10) as u8).saturating_add(5).min(40));
            }
        }
        *control.stats.lock().unwrap_or_else(|p| p.into_inner()) = stats.clone();
    };
    output.finish()?;
    *control.stats.lock().unwrap_or_else(|p| p.into_inner()) = stats.clone();
    Ok((stats, cause))
}

/// The receiving side of a call: every path's datagrams land here.
struct Rx {
    key: SenderKey,
    replay: ReplayWindow,
    jitter: JitterBuffer,
    /// The peer's latest report and when it came.
    peer_report: Option<(Instant, Report)>,
    /// The peer's `sent_ms` of its latest report and when it came, for RTT.
    last_report_rx: Option<(u32, Instant)>,
    /// First and highest media frame index, for the loss count.
    expected_base: Option<u32>,
    highest: Option<u32>,
    /// Authenticated datagrams per path since my last report (copies
    /// included: they show the path works).
    counts: [u16; 3],
    last_rx: Instant,
    /// Where the peer's direct packets come from (its NAT mapping).
    peer_direct: Option<SocketAddr>,
    start: Instant,
    frame: FrameMs,
}

impl Rx {
    fn accept(&mut self, datagram: &[u8], via: Path, from: Option<SocketAddr>) {
        let Ok(frame) = packet::open(&self.key, datagram) else { return };
        let now = Instant::now();
        self.last_rx = now;
        self.counts[via as usize] = self.counts[via as usize].saturating_add(1);
        if via == Path::Direct {
            self.peer_direct = from;
        }
        if !self.replay.accept(frame.seq) {
            return; // a copy that came another way
        }
        match frame.kind {
            KIND_OPUS => {
                let Some(p) = frame.packets.into_iter().next() else { return };
                // Sequence numbers also count reports; the jitter buffer and
                // the loss count key on the media frame index instead.
                let index = frame.timestamp / self.frame.samples() as u32;
                self.expected_base.get_or_insert(index);
                self.highest = Some(self.highest.map_or(index, |h| h.max(index)));
                let media_ms = u64::from(frame.timestamp) / 48;
                self.jitter.push(index, media_ms, p, now.duration_since(self.start).as_millis() as u64);
            }
            KIND_REPORT => {
                if let Some(r) = frame.packets.first().and_then(|b| Report::decode(b)) {
                    self.last_report_rx = Some((r.sent_ms, now));
                    self.peer_report = Some((now, r));
                }
            }
            _ => {}
        }
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
