//! The call core: a call's media as a state machine, time passed in (see
//! the [module docs](super)).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use babel_proto::relay as wire;
use babel_proto::voice::{
    self as packet, KIND_KEY, KIND_OPUS, KIND_OPUS_COPIES, KIND_REPORT, KeyHandover, Report, VOICE, VoiceFrame,
};
use babel_proto::{SendData, UserId};
use bytes::Bytes;

use super::peer::Peer;
use super::{
    COPIES_LINGER, CallStats, Control, EndCause, MAX_COPY_OFFSET, MediaConfig, MediaError, PROBE_EVERY, Path,
    PeerSetup, REPORT_EVERY, RelayInfo, expected_loss_pct,
};
use crate::audio::level_db;
use crate::codec::VoiceEncoder;
use crate::echo::EchoLevel;
use crate::jitter::JitterConfig;
use crate::keys::{CallKeys, SenderKey};
use crate::process::CaptureChain;
use crate::rate::{Feedback, RateController};

/// Something for the driver to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transmit {
    /// A UDP datagram from the call's socket.
    Udp {
        /// Where to.
        to: SocketAddr,
        /// The datagram.
        bytes: Vec<u8>,
    },
    /// A `/send` data section for the call channel.
    Channel(Bytes),
}

/// What the core needs to know about a call at its start.
#[derive(Debug)]
pub struct CoreSetup {
    /// My key pair for this call.
    pub keys: CallKeys,
    /// The other participants.
    pub peers: Vec<PeerSetup>,
    /// My relay grant.
    pub relay: Option<RelayInfo>,
    /// Whether a call channel is there to send on.
    pub channel: bool,
    /// The code people compare.
    pub code: String,
    /// Never send to a peer directly.
    pub relay_only: bool,
    /// Whether the input hears the room (a microphone): only then does the
    /// echo canceller run.
    pub hears_the_room: bool,
    /// Where relay BIND and CONFIRM nonces start (the driver passes the wall
    /// clock's microseconds since the Unix epoch, so that nonces grow across
    /// restarts too); they then grow with the call's clock.
    pub nonce_base: u64,
}

/// A call's media, sans IO. See the [module docs](super).
pub struct CallCore {
    cfg: MediaConfig,
    jcfg: JitterConfig,
    keys: CallKeys,
    code: String,
    peers: Vec<Peer>,
    /// My voice key when three or more talk: sealed once, handed to each peer.
    group_key: SenderKey,
    enc: VoiceEncoder,
    rate: RateController,
    chain: CaptureChain,
    echo: EchoLevel,
    output_gain: f32,
    relay: Option<RelayInfo>,
    relay_only: bool,
    channel: bool,
    start: Instant,
    nonce_base: u64,
    seq: u32,
    media_index: u32,
    /// My last frames' packets, newest last, for the copies sent under loss.
    history: VecDeque<Vec<u8>>,
    redundant: bool,
    /// Where the copies go while `redundant` (frames back), from the loss
    /// pattern the peers report ([`super::pattern::copy_offsets`]).
    copy_offsets: Vec<u8>,
    /// When a report last showed loss: copies stay on for a while after, as
    /// bursty loss has clean seconds between its bursts.
    last_lossy: Option<Instant>,
    input_ended: Option<Instant>,
    relay_bound: bool,
    last_bind: Option<Instant>,
    /// BIND and CONFIRM nonces (growing), and DATA counters (from 1).
    relay_nonce: u64,
    relay_counter: u64,
    last_report: Instant,
    last_probe: Instant,
    last_any_rx: Instant,
    stats: CallStats,
    path: Option<Path>,
    transmits: VecDeque<Transmit>,
    ended: Option<EndCause>,
}

impl std::fmt::Debug for CallCore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallCore")
            .field("peers", &self.peers.iter().map(|p| p.user).collect::<Vec<_>>())
            .field("path", &self.path)
            .field("ended", &self.ended)
            .finish_non_exhaustive()
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

/// Which paths voice to a peer takes, for the path its reports confirm:
/// (direct, relay, channel). Nothing confirmed (the start, or its path just
/// broke): every path. Otherwise its confirmed path, plus a probe now and
/// then on the better ones (to move back) and on the relay (to have it ready).
fn uses(p: Option<Path>, probe: bool) -> (bool, bool, bool) {
    match p {
        None => (true, true, true),
        Some(Path::Direct) => (true, probe, false),
        Some(Path::Relay) => (probe, true, false),
        Some(Path::Channel) => (probe, probe, true),
    }
}

impl CallCore {
    /// A call's media starting at `now`.
    pub fn new(setup: CoreSetup, cfg: MediaConfig, now: Instant) -> Result<CallCore, MediaError> {
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
        let mut peers = Vec::new();
        for p in setup.peers {
            peers.push(Peer::new(&setup.keys, p, jcfg, cfg.frame)?);
        }
        let mut enc = VoiceEncoder::new(cfg.bitrate, cfg.frame)?;
        enc.set_fec(cfg.fec)?;
        // About 60 bytes of headers per packet: IP and UDP (28), the sealed
        // voice datagram's own (type, key id, sequence, tag: 29), a few more.
        let rate = RateController::new(cfg.bitrate, 60 * 8 * 1000 / cfg.frame.ms());
        Ok(CallCore {
            jcfg,
            keys: setup.keys,
            code: setup.code,
            peers,
            group_key: SenderKey::generate()?,
            enc,
            rate,
            chain: CaptureChain::new(cfg.noise_suppression),
            echo: EchoLevel::new(cfg.echo_cancellation && setup.hears_the_room, cfg.auto_gain),
            output_gain: 1.0,
            relay: setup.relay,
            relay_only: setup.relay_only,
            channel: setup.channel,
            start: now,
            nonce_base: setup.nonce_base,
            seq: 0,
            media_index: 0,
            history: VecDeque::new(),
            redundant: false,
            copy_offsets: Vec::new(),
            last_lossy: None,
            input_ended: None,
            relay_bound: false,
            last_bind: None,
            relay_nonce: 0,
            relay_counter: 0,
            last_report: now,
            last_probe: now,
            last_any_rx: now,
            stats: CallStats { bitrate: cfg.bitrate, ..CallStats::default() },
            path: None,
            transmits: VecDeque::new(),
            ended: None,
            cfg,
        })
    }

    /// Milliseconds on the call's clock.
    fn call_ms(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.start).as_millis() as u64
    }

    /// The next BIND or CONFIRM nonce: always above the last one.
    fn next_nonce(&mut self, now: Instant) -> u64 {
        let t = self.nonce_base.saturating_add(now.saturating_duration_since(self.start).as_micros() as u64);
        self.relay_nonce = t.max(self.relay_nonce + 1);
        self.relay_nonce
    }

    /// A UDP datagram that arrived on the call's socket from `from`:
    /// voice straight from a peer, or the relay's RELAYED and BIND-ACK.
    /// Anything else, and anything that does not open under a peer's key,
    /// is counted in [`CallStats::rejected`] and dropped.
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) {
        let relay = self.relay.filter(|r| r.addr == from);
        match (bytes.first(), relay) {
            (Some(&VOICE), _) => self.open_and_accept(now, bytes, Path::Direct, Some(from)),
            (Some(&wire::RELAYED), Some(_)) => match wire::decode_relayed(bytes) {
                Some((_, inner)) => self.open_and_accept(now, inner, Path::Relay, Some(from)),
                None => self.stats.rejected += 1,
            },
            (Some(&wire::BIND_ACK), Some(r)) => {
                let Some(ack) = wire::verify_bind_ack(bytes, &r.key) else {
                    self.stats.rejected += 1;
                    return;
                };
                // A challenge: this address is new to the relay; bring the
                // cookie back from here to move there.
                self.relay_bound = ack.state == wire::BOUND;
                if ack.state == wire::CHALLENGE {
                    let nonce = self.next_nonce(now);
                    let confirm = wire::encode_confirm(r.handle, nonce, &ack.cookie, &r.key);
                    self.transmits.push_back(Transmit::Udp { to: r.addr, bytes: confirm });
                }
            }
            _ => self.stats.rejected += 1,
        }
    }

    /// A `/send` data section that came through the call channel.
    pub fn handle_channel_frame(&mut self, now: Instant, data: &[u8]) {
        match SendData::parse(data) {
            Ok((_, packets)) => {
                for p in packets {
                    self.open_and_accept(now, &p, Path::Channel, None);
                }
            }
            Err(_) => self.stats.rejected += 1,
        }
    }

    /// Finds the peer a datagram is sealed for me by, opens it and hands it
    /// over.
    fn open_and_accept(&mut self, now: Instant, d: &[u8], via: Path, from: Option<SocketAddr>) {
        let call_ms = self.call_ms(now);
        let opened = packet::key_id(d).and_then(|id| {
            let (i, key) = self.peers.iter().enumerate().find_map(|(i, p)| p.key(id).map(|k| (i, k)))?;
            packet::open(key, d).ok().map(|f| (i, id, f))
        });
        match opened {
            Some((i, id, f)) => {
                self.last_any_rx = now;
                self.peers[i].accept(f, id, via, from, now, call_ms, self.cfg.frame);
            }
            None => self.stats.rejected += 1,
        }
    }

    /// A command from the user or the signalling.
    pub fn handle_command(&mut self, cmd: Control) -> Result<(), MediaError> {
        match cmd {
            Control::Mute(m) => self.chain.muted = m,
            Control::InputGain(g) => self.chain.gain = g,
            Control::OutputGain(g) => self.output_gain = g,
            Control::NoiseSuppression(on) => self.chain.set_noise_suppression(on),
            Control::Bitrate(b) => {
                self.enc.set_bitrate(b)?;
                self.stats.bitrate = b;
                self.rate.set_max(b);
            }
            Control::AddPeer(p) => {
                if !self.peers.iter().any(|q| q.user == p.user) {
                    self.peers.push(Peer::new(&self.keys, p, self.jcfg, self.cfg.frame)?);
                }
            }
            Control::RemovePeer(u) => self.peers.retain(|p| p.user != u),
            Control::Candidates(u, c) => {
                if let Some(p) = self.peers.iter_mut().find(|p| p.user == u) {
                    p.candidates = c;
                }
            }
            Control::Code(c) => self.code = c,
            Control::Relay(r) => {
                // Bind at once; nonces and DATA counters keep growing.
                self.relay = Some(r);
                self.relay_bound = false;
                self.last_bind = None;
            }
        }
        Ok(())
    }

    /// The input ran out at `now`: silence from here, and the call ends
    /// [`MediaConfig::tail`] later (so the far end can finish).
    pub fn handle_input_ended(&mut self, now: Instant) {
        self.input_ended.get_or_insert(now);
    }

    /// When the call ends unless something arrives (from the peers, or more
    /// input): call [`CallCore::handle_timeout`] then.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.ended.is_some() {
            return None;
        }
        let vanish = self.last_any_rx + self.cfg.peer_timeout;
        Some(self.input_ended.map_or(vanish, |t| vanish.min(t + self.cfg.tail)))
    }

    /// Ends the call if its time came: the input's tail is over, or nothing
    /// arrived from any peer for [`MediaConfig::peer_timeout`].
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.ended.is_some() {
            return;
        }
        if self.input_ended.is_some_and(|t| now.saturating_duration_since(t) >= self.cfg.tail) {
            self.ended = Some(EndCause::InputEnded);
        } else if now.saturating_duration_since(self.last_any_rx) >= self.cfg.peer_timeout {
            self.ended = Some(EndCause::PeerVanished);
        }
    }

    /// Why the call ended, once it did (nothing more is sent then).
    pub fn ended(&self) -> Option<EndCause> {
        self.ended
    }

    /// Ends the call (a hang-up).
    pub fn stop(&mut self) {
        self.ended.get_or_insert(EndCause::Stopped);
    }

    /// One frame of the microphone, captured at `now` (of
    /// [`MediaConfig::frame`] length): processed, encoded,
    /// sealed and queued for [`CallCore::poll_transmit`] on the paths in
    /// use, with the reports and key hand-overs that are due. The frame is
    /// processed in place (noise suppression, echo cancellation, gain).
    pub fn handle_capture(&mut self, now: Instant, pcm: &mut [f32]) -> Result<(), MediaError> {
        self.handle_timeout(now);
        if self.ended.is_some() {
            return Ok(());
        }
        if self.input_ended.is_some() {
            pcm.fill(0.0);
        }

        // Path choice, per peer: the best path their reports confirm.
        let elapsed = now.saturating_duration_since(self.start);
        let probe = now.saturating_duration_since(self.last_probe) >= PROBE_EVERY;
        if probe {
            self.last_probe = now;
        }
        let mut call_path = None;
        for p in self.peers.iter_mut() {
            p.path = p.confirmed_path(now);
            call_path = worse(call_path, p.path);
        }
        if call_path != self.path {
            tracing::debug!(from = ?self.path, to = ?call_path, "media path");
            self.rate.path_changed();
            if let Some(p) = call_path {
                self.stats.path_history.push((elapsed, p));
            }
            self.path = call_path;
        }
        let use_relay = self.peers.iter().any(|p| uses(p.path, probe).1);
        let use_channel = self.peers.iter().any(|p| uses(p.path, probe).2);

        // (Re)bind to the relay now and then: keeps NAT mappings and tells
        // the server where we are.
        if let Some(r) = self.relay {
            // Often while a path is being looked for (the relay may have
            // lost us after an address change), rarely once all is well.
            let settled = self.relay_bound && self.peers.iter().all(|p| p.path.is_some());
            let every = if settled { Duration::from_secs(15) } else { Duration::from_millis(500) };
            if self.last_bind.is_none_or(|t| now.saturating_duration_since(t) >= every) {
                let nonce = self.next_nonce(now);
                self.transmits
                    .push_back(Transmit::Udp { to: r.addr, bytes: wire::encode_bind(r.handle, nonce, &r.key) });
                self.last_bind = Some(now);
            }
        }

        // Capture, encode, seal.
        self.echo.capture(pcm);
        self.chain.process(pcm);
        self.stats.input_level_db = self.chain.level_db;
        let opus = self.enc.encode(pcm)?;
        let group = self.peers.len() > 1;
        let mut packets = vec![opus.clone()];
        let mut offsets = Vec::new();
        if self.redundant {
            for &off in &self.copy_offsets {
                // Same size only (a bitrate change makes older ones differ).
                let Some(copy) = self.history.len().checked_sub(usize::from(off)).and_then(|i| self.history.get(i))
                else {
                    break;
                };
                if copy.len() != opus.len() {
                    break;
                }
                packets.push(copy.clone());
                offsets.push(off);
            }
        }
        self.history.push_back(opus);
        while self.history.len() > usize::from(MAX_COPY_OFFSET) {
            self.history.pop_front();
        }
        let frame_len = self.cfg.frame.samples();
        let frame = VoiceFrame {
            kind: if offsets.is_empty() { KIND_OPUS } else { KIND_OPUS_COPIES },
            seq: self.seq,
            timestamp: self.media_index.wrapping_mul(frame_len as u32),
            packets,
            offsets,
        };
        self.seq = self.seq.wrapping_add(1);
        self.media_index = self.media_index.wrapping_add(1);
        let voice_key =
            if group { &self.group_key } else { self.peers.first().map_or(&self.group_key, |p| &p.pair_send) };
        let voice = match packet::seal(voice_key, &frame) {
            Ok(v) => {
                self.stats.sent += 1;
                Some(v)
            }
            Err(e) => {
                tracing::warn!(error = %e, "a voice frame could not be sealed");
                self.stats.seal_failures += 1;
                None
            }
        };

        // Per-peer control frames: reports, and my group key when needed.
        let report_due = now.saturating_duration_since(self.last_report) >= REPORT_EVERY;
        if report_due {
            self.last_report = now;
        }
        let sent_ms = (self.call_ms(now) as u32).max(1);
        let mut control_frames: Vec<(usize, Vec<u8>)> = Vec::new();
        for (i, p) in self.peers.iter_mut().enumerate() {
            let mut frames = Vec::new();
            if report_due {
                let (echo_ms, hold_ms) = match p.report_rx {
                    Some((sent, at)) => (sent, now.saturating_duration_since(at).as_millis() as u32),
                    None => (0, 0),
                };
                let rep = Report {
                    rx: p.counts,
                    loss_permille: (p.take_recent_loss_pct() * 10.0) as u16,
                    jitter_ms: p.jitter.jitter_ms().min(u64::from(u16::MAX)) as u16,
                    sent_ms,
                    echo_ms,
                    hold_ms,
                    burst_x10: p.burst_x10(),
                };
                p.counts = [0; 3];
                frames.push((KIND_REPORT, rep.encode()));
            }
            let key_every =
                if elapsed < Duration::from_secs(5) { Duration::from_secs(1) } else { Duration::from_secs(5) };
            if group && p.key_sent.is_none_or(|t| now.saturating_duration_since(t) >= key_every) {
                p.key_sent = Some(now);
                frames.push((KIND_KEY, KeyHandover::of(&self.group_key).encode()));
            }
            for (kind, body) in frames {
                let f = VoiceFrame { kind, seq: self.seq, timestamp: 0, packets: vec![body], offsets: Vec::new() };
                self.seq = self.seq.wrapping_add(1);
                match packet::seal(&p.pair_send, &f) {
                    Ok(d) => control_frames.push((i, d)),
                    Err(e) => {
                        tracing::warn!(error = %e, kind, "a control frame could not be sealed");
                        self.stats.seal_failures += 1;
                    }
                }
            }
        }

        // Send. Voice: direct to each peer that takes it direct; one copy
        // to the relay and one to the channel reach everyone there. Control
        // frames go on every path: they are tiny, and they must get through
        // exactly when the path in use has just broken.
        for (i, p) in self.peers.iter().enumerate() {
            let targets: Vec<SocketAddr> = match (self.relay_only, p.direct) {
                (true, _) => Vec::new(),
                (false, Some(a)) => vec![a],
                (false, None) => p.candidates.clone(),
            };
            let voice_too = uses(p.path, probe).0;
            for a in targets {
                for (_, d) in control_frames.iter().filter(|(j, _)| *j == i) {
                    self.transmits.push_back(Transmit::Udp { to: a, bytes: d.clone() });
                }
                if let Some(v) = voice.as_ref().filter(|_| voice_too) {
                    self.transmits.push_back(Transmit::Udp { to: a, bytes: v.clone() });
                }
            }
        }
        let mut shared: Vec<&[u8]> = control_frames.iter().map(|(_, d)| d.as_slice()).collect();
        if let Some(r) = self.relay {
            let voice_here = voice.as_deref().filter(|_| use_relay);
            for d in shared.iter().copied().chain(voice_here) {
                self.relay_counter += 1;
                let mut out = Vec::with_capacity(d.len() + 32);
                wire::encode_data(r.handle, self.relay_counter, &r.key, d, &mut out);
                self.transmits.push_back(Transmit::Udp { to: r.addr, bytes: out });
            }
        }
        if self.channel {
            if let Some(v) = voice.as_deref().filter(|_| use_channel) {
                shared.push(v);
            }
            for d in &shared {
                match SendData::new("voice", &[*d]) {
                    Ok(sd) => self.transmits.push_back(Transmit::Channel(Bytes::from(sd.to_json()))),
                    Err(e) => tracing::warn!(error = %e, "a frame does not fit the call channel"),
                }
            }
        }

        // Feedback: the worst of what the others report about my stream.
        let worst_loss = self.peers.iter().filter_map(|p| p.report.as_ref().map(|(_, r)| r.loss_permille)).max();
        let worst_loss = worst_loss.unwrap_or(0);
        if report_due && self.cfg.adapt_bitrate {
            let fb = Feedback {
                loss_pct: f32::from(worst_loss) / 10.0,
                rtt_ms: self.peers.iter().filter_map(|p| p.stats.rtt_ms).max(),
                report_age: self
                    .peers
                    .iter()
                    .filter_map(|p| p.report.as_ref().map(|(at, _)| now.saturating_duration_since(*at)))
                    .max(),
                copies_in_use: self.redundant,
            };
            if let Some(b) = self.rate.update(elapsed, fb)
                && self.enc.set_bitrate(b).is_ok()
            {
                tracing::debug!(bitrate = b, copies = self.rate.copies_allowed(), ?fb, "bitrate step");
                self.stats.bitrate = b;
            }
        }
        // Copies triple what is sent: only while the path is not congested.
        if worst_loss >= 10 {
            self.last_lossy = Some(now);
        }
        let lossy = self.last_lossy.is_some_and(|t| now.saturating_duration_since(t) < COPIES_LINGER);
        self.redundant = self.cfg.redundancy && lossy && (!self.cfg.adapt_bitrate || self.rate.copies_allowed());
        // The copies follow the worst peer's loss pattern, from the report
        // that turned them on (placing them only at my next report left
        // the first lossy half second without any); while they linger
        // after the loss stopped, they keep the last placement.
        let worst = self
            .peers
            .iter()
            .filter_map(|p| p.report.as_ref().map(|(_, r)| r))
            .max_by_key(|r| (r.loss_permille, r.burst_x10));
        if let Some(r) = worst.filter(|r| r.loss_permille >= 10) {
            self.copy_offsets = super::pattern::copy_offsets(r.loss_permille, r.burst_x10);
        }
        self.stats.copy_offsets = if self.redundant { self.copy_offsets.clone() } else { Vec::new() };
        if self.cfg.fec {
            // Protect against a little more than the worst loss reported.
            self.enc.set_expected_loss(expected_loss_pct(worst_loss))?;
        }
        Ok(())
    }

    /// The next thing to send, oldest first.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next frame to play at `now`: every peer's voice, decoded (or
    /// concealed) from its jitter buffer, mixed. The statistics follow.
    pub fn poll_playout(&mut self, now: Instant) -> Vec<f32> {
        let frame_len = self.cfg.frame.samples();
        let call_ms = self.call_ms(now);
        let mut mixed = vec![0.0f32; frame_len];
        for p in self.peers.iter_mut() {
            let v = p.play(frame_len, call_ms);
            crate::process::mix_into(&mut mixed, &v);
        }
        if self.peers.len() > 1 {
            crate::process::soft_limit(&mut mixed);
        }
        if self.output_gain != 1.0 {
            let g = self.output_gain;
            mixed.iter_mut().for_each(|s| *s = (*s * g).clamp(-1.0, 1.0));
        }
        self.stats.output_level_db = level_db(&mixed);
        self.echo.render(&mixed);
        self.stats.erle_db = self.echo.erle_db().map(|e| e as f32);
        self.refresh_stats();
        mixed
    }

    /// Sums the peers' figures into the call's.
    fn refresh_stats(&mut self) {
        let stats = &mut self.stats;
        stats.path = self.path;
        stats.received = 0;
        stats.concealed = 0;
        stats.fec_recovered = 0;
        stats.from_copies = 0;
        stats.skipped = 0;
        stats.stretched = 0;
        stats.decode_failures = 0;
        stats.rtt_ms = None;
        stats.loss_pct = 0.0;
        stats.rx_loss_pct = 0.0;
        stats.jitter_ms = 0;
        stats.jitter_delay_ms = 0;
        for p in self.peers.iter_mut() {
            let js = p.jitter.stats();
            p.stats.user = Some(p.user);
            p.stats.path = p.path;
            p.stats.rx_loss_pct = p.rx_loss_pct();
            p.stats.jitter_ms = p.jitter.jitter_ms();
            p.stats.level_db = p.level_db;
            if let Some((_, r)) = &p.report {
                p.stats.loss_pct = f32::from(r.loss_permille) / 10.0;
            }
            stats.received += js.received;
            stats.concealed += js.concealed;
            stats.fec_recovered += js.fec_recovered;
            stats.from_copies += js.from_copies;
            stats.skipped += js.skipped;
            stats.stretched += js.stretched;
            stats.decode_failures += p.decode_failures;
            stats.rtt_ms = stats.rtt_ms.max(p.stats.rtt_ms);
            stats.loss_pct = stats.loss_pct.max(p.stats.loss_pct);
            stats.rx_loss_pct = stats.rx_loss_pct.max(p.stats.rx_loss_pct);
            stats.jitter_ms = stats.jitter_ms.max(p.stats.jitter_ms);
            stats.jitter_delay_ms = stats.jitter_delay_ms.max(p.jitter.delay_ms());
        }
        stats.sas.clone_from(&self.code);
        stats.peers = self.peers.iter().map(|p| p.stats.clone()).collect();
    }

    /// The call's figures as of the last frame played.
    pub fn stats(&self) -> &CallStats {
        &self.stats
    }

    /// The participants, in the order they came.
    pub fn peers(&self) -> Vec<UserId> {
        self.peers.iter().map(|p| p.user).collect()
    }

    /// Logs each peer's jitter buffer figures (at the call's end).
    pub fn log_end(&self) {
        for p in &self.peers {
            tracing::debug!(user = ?p.user, jitter = ?p.jitter.stats(), jitter_ms = p.jitter.jitter_ms(), target = p.jitter.target_frames(), "call ended");
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const A: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 4000);
    const B: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 4001);
    const RELAY: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 3478);

    /// Two cores that know each other (a at `A`, b at `B`), a with a relay
    /// grant and a call channel.
    fn pair(now: Instant) -> (CallCore, CallCore) {
        let (ka, kb) = (CallKeys::from_secret([1; 32]), CallKeys::from_secret([2; 32]));
        let peer = |k: &CallKeys, user, at| PeerSetup { user: UserId(user), key: k.public_b64(), candidates: vec![at] };
        let (pa, pb) = (peer(&kb, 2, B), peer(&ka, 1, A));
        let cfg = MediaConfig { noise_suppression: false, ..MediaConfig::default() };
        let setup = |keys, p, relay: Option<RelayInfo>, channel| CoreSetup {
            keys,
            peers: vec![p],
            relay,
            channel,
            code: "000 000".into(),
            relay_only: false,
            hears_the_room: false,
            nonce_base: 1_000_000,
        };
        let relay = RelayInfo { addr: RELAY, handle: 7, key: [3; 16] };
        let a = CallCore::new(setup(ka, pa, Some(relay), true), cfg.clone(), now).unwrap();
        let b = CallCore::new(setup(kb, pb, None, false), cfg, now).unwrap();
        (a, b)
    }

    fn drain(c: &mut CallCore) -> Vec<Transmit> {
        std::iter::from_fn(|| c.poll_transmit()).collect()
    }

    #[test]
    fn the_first_frame_goes_on_every_path_and_binds_to_the_relay() {
        let t0 = Instant::now();
        let (mut a, _) = pair(t0);
        a.handle_capture(t0, &mut [0.0; 960]).unwrap();
        let out = drain(&mut a);
        let to = |addr| out.iter().filter(|t| matches!(t, Transmit::Udp { to, .. } if *to == addr)).count();
        // Direct: the voice to b's candidate. Relay: a BIND, then the voice
        // in a DATA. Channel: the voice in a /send.
        assert_eq!(to(B), 1, "{out:?}");
        assert_eq!(to(RELAY), 2, "{out:?}");
        let relay: Vec<&Vec<u8>> = out
            .iter()
            .filter_map(|t| if let Transmit::Udp { to, bytes } = t { (*to == RELAY).then_some(bytes) } else { None })
            .collect();
        assert_eq!(wire::verify_bind(relay[0], &[3; 16]), Some(1_000_000));
        assert_eq!(wire::verify_data(relay[1], &[3; 16]).map(|(n, _)| n), Some(1));
        assert_eq!(out.iter().filter(|t| matches!(t, Transmit::Channel(_))).count(), 1);
        assert_eq!(a.stats().sent, 1);
        assert!(a.poll_transmit().is_none());
    }

    #[test]
    fn a_moved_relay_is_bound_and_used_at_once() {
        let t0 = Instant::now();
        let (mut a, _) = pair(t0);
        a.handle_capture(t0, &mut [0.0; 960]).unwrap();
        drain(&mut a);
        let moved = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 3479);
        a.handle_command(Control::Relay(RelayInfo { addr: moved, handle: 8, key: [4; 16] })).unwrap();
        let t1 = t0 + Duration::from_millis(20);
        a.handle_capture(t1, &mut [0.0; 960]).unwrap();
        let out = drain(&mut a);
        let to: Vec<&Vec<u8>> = out
            .iter()
            .filter_map(|t| if let Transmit::Udp { to, bytes } = t { (*to == moved).then_some(bytes) } else { None })
            .collect();
        assert!(out.iter().all(|t| !matches!(t, Transmit::Udp { to, .. } if *to == RELAY)), "{out:?}");
        assert!(wire::verify_bind(to[0], &[4; 16]).is_some_and(|n| n > 1_000_000), "a BIND first, nonce grown");
        assert_eq!(wire::verify_data(to[1], &[4; 16]).map(|(n, _)| n), Some(2), "then the voice, counter grown");
        // What the new relay sends back is taken; the old one is a stranger now.
        let ack = wire::BindAck {
            handle: 8,
            nonce: 1,
            state: wire::BOUND,
            cookie: [0; wire::COOKIE_LEN],
            seen: "127.0.0.1:9".parse().unwrap(),
        };
        let bytes = wire::encode_bind_ack(&ack, &[4; 16]);
        let rejected = a.stats().rejected;
        a.handle_datagram(t1, moved, &bytes);
        assert_eq!(a.stats().rejected, rejected);
        a.handle_datagram(t1, RELAY, &bytes);
        assert_eq!(a.stats().rejected, rejected + 1);
    }

    #[test]
    fn voice_direct_from_the_peer_is_played_and_a_strangers_is_counted() {
        let t0 = Instant::now();
        let (mut a, mut b) = pair(t0);
        let tone: Vec<f32> = (0..960).map(|i| 0.3 * (i as f32 * 0.05).sin()).collect();
        for f in 0..20u32 {
            let now = t0 + FRAME * f;
            b.handle_capture(now, &mut tone.clone()).unwrap();
            for t in drain(&mut b) {
                if let Transmit::Udp { to: A, bytes } = t {
                    a.handle_datagram(now, B, &bytes);
                }
            }
        }
        a.handle_datagram(t0, SocketAddr::from(([127, 0, 0, 1], 9)), b"\x10not a voice datagram at all, no");
        a.handle_datagram(t0, SocketAddr::from(([127, 0, 0, 1], 9)), b"\x04relayed, but not by my relay");
        let played: Vec<f32> = (0..20).flat_map(|f| a.poll_playout(t0 + FRAME * (20 + f))).collect();
        assert!(level_db(&played) > -30.0, "b's tone is heard: {} dB", level_db(&played));
        assert_eq!(a.stats().received, 20);
        assert_eq!(a.stats().rejected, 2);
    }

    const FRAME: Duration = Duration::from_millis(20);

    #[test]
    fn silence_from_every_peer_ends_the_call_at_its_deadline() {
        let t0 = Instant::now();
        let (mut a, _) = pair(t0);
        let deadline = a.poll_timeout().unwrap();
        assert_eq!(deadline, t0 + MediaConfig::default().peer_timeout);
        a.handle_timeout(deadline - FRAME);
        assert_eq!(a.ended(), None);
        a.handle_timeout(deadline);
        assert_eq!(a.ended(), Some(EndCause::PeerVanished));
        assert_eq!(a.poll_timeout(), None);
        a.handle_capture(deadline + FRAME, &mut [0.0; 960]).unwrap();
        assert!(a.poll_transmit().is_none(), "nothing is sent once the call ended");
    }

    #[test]
    fn the_input_ending_ends_the_call_after_the_tail() {
        let t0 = Instant::now();
        let (mut a, _) = pair(t0);
        a.handle_input_ended(t0);
        let tail = MediaConfig::default().tail;
        assert_eq!(a.poll_timeout(), Some(t0 + tail));
        let mut loud = [0.5f32; 960];
        a.handle_capture(t0, &mut loud).unwrap();
        assert!(loud.iter().all(|&s| s == 0.0), "silence is sent once the input ended");
        a.handle_capture(t0 + tail, &mut [0.0; 960]).unwrap();
        assert_eq!(a.ended(), Some(EndCause::InputEnded));
    }

    #[test]
    fn a_relay_challenge_is_answered_with_a_confirm_from_here() {
        let t0 = Instant::now();
        let (mut a, _) = pair(t0);
        let cookie = [9u8; 8];
        let ack = wire::BindAck { handle: 7, nonce: 5, state: wire::CHALLENGE, cookie, seen: A };
        a.handle_datagram(t0, RELAY, &wire::encode_bind_ack(&ack, &[3; 16]));
        let out = drain(&mut a);
        let [Transmit::Udp { to: RELAY, bytes }] = &out[..] else { panic!("{out:?}") };
        assert_eq!(wire::verify_confirm(bytes, &[3; 16]), Some((1_000_000, cookie)));
        // The same challenge from a stranger's address is nobody's business.
        a.handle_datagram(t0, B, &wire::encode_bind_ack(&ack, &[3; 16]));
        assert!(a.poll_transmit().is_none());
        assert_eq!(a.stats().rejected, 1);
    }
}
