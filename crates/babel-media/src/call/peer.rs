//! One other participant, as the call core tracks them: keys, where their
//! packets come from, their jitter buffer and decoder, their reports.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Instant;

use babel_proto::UserId;
use babel_proto::voice::{
    KIND_KEY, KIND_OPUS, KIND_OPUS_COPIES, KIND_REPORT, KeyHandover, ReplayWindow, Report, VoiceFrame,
};

use super::pattern::LossPattern;
use super::{MediaError, Path, PeerSetup, PeerStats, REPORT_EVERY};
use crate::audio::level_db;
use crate::codec::{FrameMs, VoiceDecoder};
use crate::jitter::{JitterBuffer, JitterConfig, Playout};
use crate::keys::{CallKeys, SenderKey};

/// One other participant.
pub(super) struct Peer {
    pub(super) user: UserId,
    /// My two-party key towards them (reports, key hand-over, two-party voice).
    pub(super) pair_send: SenderKey,
    /// Their two-party key towards me.
    pair_recv: SenderKey,
    /// Their group sender key, once handed over.
    group_recv: Option<SenderKey>,
    pub(super) candidates: Vec<SocketAddr>,
    /// Where their direct packets come from (their NAT mapping).
    pub(super) direct: Option<SocketAddr>,
    replay: HashMap<u32, ReplayWindow>,
    pub(super) jitter: JitterBuffer,
    decoder: VoiceDecoder,
    /// Their latest report about me, and when it came.
    pub(super) report: Option<(Instant, Report)>,
    /// Their `sent_ms` of that report and when it came, for the RTT.
    pub(super) report_rx: Option<(u32, Instant)>,
    /// First and highest media frame index, for the loss count.
    expected_base: Option<u32>,
    highest: Option<u32>,
    /// Authenticated datagrams from them per path since my last report
    /// (copies included: they show the path works).
    pub(super) counts: [u16; 3],
    /// Frames settled and lost at my last report ([`LossPattern::counts`]),
    /// and the loss since (smoothed): what my reports tell them.
    loss_mark: (u64, u64),
    recent_loss_pct: f32,
    /// The runs of lost frames in their stream (reported as `burst_x10`).
    pattern: LossPattern,
    /// When my group key last went to them.
    pub(super) key_sent: Option<Instant>,
    pub(super) path: Option<Path>,
    pub(super) level_db: f32,
    /// Their packets the decoder refused.
    pub(super) decode_failures: u64,
    pub(super) stats: PeerStats,
}

impl Peer {
    pub(super) fn new(
        keys: &CallKeys,
        setup: PeerSetup,
        jcfg: JitterConfig,
        frame: FrameMs,
    ) -> Result<Peer, MediaError> {
        let pair = keys.pairwise(&setup.key)?;
        Ok(Peer {
            user: setup.user,
            pair_send: pair.my_sender_key(),
            pair_recv: pair.their_sender_key(),
            group_recv: None,
            candidates: setup.candidates,
            direct: None,
            replay: HashMap::new(),
            jitter: JitterBuffer::new(jcfg),
            decoder: VoiceDecoder::new(frame)?,
            report: None,
            report_rx: None,
            expected_base: None,
            highest: None,
            counts: [0; 3],
            loss_mark: (0, 0),
            recent_loss_pct: 0.0,
            pattern: LossPattern::default(),
            key_sent: None,
            path: None,
            level_db: -100.0,
            decode_failures: 0,
            stats: PeerStats::default(),
        })
    }

    /// The key with this id, if it is one of theirs.
    pub(super) fn key(&self, id: u32) -> Option<&SenderKey> {
        if self.pair_recv.id == id { Some(&self.pair_recv) } else { self.group_recv.as_ref().filter(|k| k.id == id) }
    }

    /// Takes an authenticated frame from them, at `now` (`call_ms` on the
    /// call's clock).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn accept(
        &mut self,
        frame: VoiceFrame,
        key_id: u32,
        via: Path,
        from: Option<SocketAddr>,
        now: Instant,
        call_ms: u64,
        fms: FrameMs,
    ) {
        self.counts[via as usize] = self.counts[via as usize].saturating_add(1);
        if via == Path::Direct {
            self.direct = from;
        }
        if !self.replay.entry(key_id).or_default().accept(frame.seq) {
            return; // a copy that came another way
        }
        match frame.kind {
            KIND_OPUS | KIND_OPUS_COPIES => {
                let mut packets = frame.packets.into_iter();
                let Some(p) = packets.next() else { return };
                // Sequence numbers also count reports and keys; the jitter
                // buffer and the loss count use the media frame index.
                let index = frame.timestamp / fms.samples() as u32;
                self.expected_base.get_or_insert(index);
                self.highest = Some(self.highest.map_or(index, |h| h.max(index)));
                self.pattern.arrived(index);
                let media_ms = u64::from(frame.timestamp) / 48;
                self.jitter.push(index, media_ms, p, call_ms);
                // Copies of earlier frames, when the sender adds them, each
                // as many frames back as its offset says.
                let mut reach = 0;
                for (copy, off) in packets.zip(frame.offsets) {
                    if let Some(i) = index.checked_sub(u32::from(off)) {
                        self.jitter.push_copy(i, copy);
                    }
                    reach = reach.max(usize::from(off));
                }
                // Hold back what repairs a loss: the farthest copy the sender
                // puts in now (so the depth follows its placement, and drops
                // back when the copies stop), or, with recent loss but no
                // copies, the next packet and its FEC. Before my first
                // report there is no recent loss yet: a frame lost already
                // counts (else the first half second's losses are concealed
                // when FEC could rebuild them).
                let lossy = self.recent_loss_pct >= 1.0 || (self.loss_mark == (0, 0) && self.pattern.counts().1 > 0);
                let extra = if reach > 0 { reach } else { usize::from(lossy) };
                self.jitter.set_extra_frames(extra);
            }
            KIND_REPORT => {
                if let Some(r) = frame.packets.first().and_then(|b| Report::decode(b)) {
                    self.report_rx = Some((r.sent_ms, now));
                    if r.echo_ms > 0 {
                        // My clock now, minus when I sent what they echo, minus
                        // how long they held it: the time on the wire, both ways.
                        let now_ms = call_ms as u32;
                        self.stats.rtt_ms = Some(now_ms.saturating_sub(r.echo_ms).saturating_sub(r.hold_ms));
                    }
                    self.report = Some((now, r));
                }
            }
            // A group key counts only under their two-party key to me.
            KIND_KEY if key_id == self.pair_recv.id => {
                if let Some(h) = frame.packets.first().and_then(|b| KeyHandover::decode(b))
                    && self.group_recv.as_ref().is_none_or(|g| g.id != h.id)
                {
                    self.group_recv = Some(h.sender_key());
                }
            }
            _ => {}
        }
    }

    /// The best path their reports confirm for my voice to them.
    pub(super) fn confirmed_path(&self, now: Instant) -> Option<Path> {
        let (at, r) = self.report.as_ref()?;
        if now.saturating_duration_since(*at) >= REPORT_EVERY * 2 {
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
    pub(super) fn rx_loss_pct(&self) -> f32 {
        let (expected, got) = (self.expected(), self.jitter.stats().arrived());
        if expected > 0 { 100.0 * expected.saturating_sub(got) as f32 / expected as f32 } else { 0.0 }
    }

    /// Loss of their stream since the last call (one report interval),
    /// smoothed over about two intervals, %: what the reports carry, so the
    /// sender's FEC and bitrate follow the path as it is now.
    pub(super) fn take_recent_loss_pct(&mut self) -> f32 {
        // Counted on settled frames (those a frame 4 newer has passed), so
        // that packets reordered across the report's edge are not lost.
        let (frames, lost) = self.pattern.counts();
        let (f0, l0) = self.loss_mark;
        let df = frames.saturating_sub(f0);
        if df > 0 {
            let interval = 100.0 * lost.saturating_sub(l0) as f32 / df as f32;
            self.recent_loss_pct = 0.5 * self.recent_loss_pct + 0.5 * interval;
            self.loss_mark = (frames, lost);
        }
        self.recent_loss_pct
    }

    /// The mean run of lost frames in their stream lately, as my reports
    /// carry it (tenths of a frame, 0: none).
    pub(super) fn burst_x10(&self) -> u16 {
        self.pattern.burst_x10()
    }

    /// Decodes their next frame for playback. A packet the decoder refuses
    /// (it authenticated, so their encoder made it) is counted and played
    /// as silence. `call_ms` is the call's clock now, the one packets were
    /// pushed with.
    pub(super) fn play(&mut self, frame_len: usize, call_ms: u64) -> Vec<f32> {
        // Below this the last frame was a pause: a frame skipped now is not heard.
        self.jitter.set_quiet(self.level_db < -45.0);
        self.jitter.set_time(call_ms);
        let decoded = match self.jitter.pop() {
            Playout::Frame(p) => self.decoder.decode(&p),
            Playout::Fec(next) => self.decoder.decode_fec(&next),
            Playout::Conceal { fade_out } => self.decoder.conceal().map(|mut c| {
                if fade_out {
                    crate::jitter::ramp(&mut c, 1.0, 0.0);
                }
                c
            }),
            Playout::Silence => Ok(vec![0.0; frame_len]),
        };
        let mut pcm = decoded.unwrap_or_else(|_| {
            self.decode_failures += 1;
            vec![0.0; frame_len]
        });
        pcm.resize(frame_len, 0.0);
        self.level_db = level_db(&pcm);
        pcm
    }
}
