//! The adaptive jitter buffer: packets in (in any order, some lost, some
//! twice), one decision per playback frame out. Pure: the caller passes the
//! time in and does the decoding.
//!
//! * Packets are keyed by sequence number (one frame per packet). Duplicates
//!   and packets that arrive after their turn are dropped and counted.
//! * The target depth follows the measured jitter: the spread (95th
//!   percentile minus minimum) of `arrival time - media time` over the last
//!   two seconds (packets too late to play count too), plus one frame.
//!   Playback starts once that much is buffered. Depth is counted in time,
//!   from the next frame to where the sender is now: the last packet's
//!   number plus how much later than the window's quickest packet it came,
//!   plus the ticks since. So a lost packet's place counts, a burst of loss
//!   at the tail is not mistaken for a shallow buffer, and the jitter is
//!   allowed for once, in the target (a depth counted in packets here dips
//!   with the jitter, and kept above the target at its lowest it held the
//!   jitter twice: 40 ms more than needed with 30 ms of jitter). A missing frame
//!   is waited for (concealed in its place) while the buffer is shallower
//!   than the target, which deepens it; a frame is
//!   skipped when the buffer stayed above target for a whole second, which
//!   shortens it. That is also how a sender whose clock runs fast or slow is
//!   absorbed.
//! * A missing frame whose successor is here is lost: it is rebuilt from the
//!   successor's in-band FEC ([`Playout::Fec`]), or concealed with the
//!   decoder's loss concealment ([`Playout::Conceal`]) when the successor is
//!   missing too. A missing frame with nothing after it, while the frames
//!   after it are not due yet, is late, not lost:
//!   it is concealed while the buffer waits for it (this also stretches
//!   playback when the sender's clock is slow). After a few concealed frames
//!   in a row the output fades to silence ([`Playout::Silence`]) instead of
//!   buzzing, and playback re-buffers when packets return.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// Milliseconds on the caller's clock.
pub type Millis = u64;

/// What to play for the next frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Playout {
    /// Decode this packet.
    Frame(Vec<u8>),
    /// This frame was lost: decode it from the FEC in the next packet
    /// (which stays buffered for its own turn).
    Fec(Vec<u8>),
    /// This frame was lost: let the decoder conceal it. `fade_out` is set
    /// on the last concealed frame before silence, to ramp down.
    Conceal {
        /// Ramp this frame's output down to zero.
        fade_out: bool,
    },
    /// Nothing to play (buffering, or after a long gap).
    Silence,
}

/// Counters for call statistics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JitterStats {
    /// Packets accepted.
    pub received: u64,
    /// Packets dropped because their turn had passed.
    pub late: u64,
    /// Packets dropped as duplicates.
    pub duplicates: u64,
    /// Frames rebuilt from FEC.
    pub fec_recovered: u64,
    /// Frames concealed.
    pub concealed: u64,
    /// Frames skipped to bring the delay down.
    pub skipped: u64,
    /// Frames played from their own packet.
    pub played: u64,
    /// Missing frames filled in by a copy in a later datagram.
    pub from_copies: u64,
    /// Silent frames added in pauses to deepen the buffer.
    pub stretched: u64,
}

impl JitterStats {
    /// Packets that came, in time or too late: what the network delivered
    /// (a late packet is the jitter's doing, not a loss copies can repair).
    pub fn arrived(&self) -> u64 {
        self.received + self.late
    }
}

/// Settings.
#[derive(Debug, Clone, Copy)]
pub struct JitterConfig {
    /// Frame duration in ms (20 by default, 10 as an option).
    pub frame_ms: u32,
    /// Smallest target depth, in frames.
    pub min_frames: usize,
    /// Largest target depth, in frames.
    pub max_frames: usize,
    /// Concealed frames in a row before fading to silence.
    pub max_conceal: u32,
    /// Adapt to the network (the default). Off, the buffer is the naive
    /// receiver kept for comparisons: a fixed depth of `min_frames`, a
    /// frame that is not there at its turn is concealed at once and its
    /// packet dropped as late if it comes, and FEC is never used.
    pub adaptive: bool,
}

impl Default for JitterConfig {
    fn default() -> Self {
        Self { frame_ms: 20, min_frames: 1, max_frames: 15, max_conceal: 5, adaptive: true }
    }
}

/// Samples of `arrival - media time` kept for the jitter estimate.
const WINDOW: Millis = 2_000;
/// How far back the quickest packet is looked for, to tell where the
/// sender is, ms.
const QUICKEST_WINDOW: Millis = 500;
/// Packets after which the jitter counts as known.
const KNOWN_JITTER: usize = 5;
/// Frames between checks for a buffer that runs deeper than needed.
const SKIP_CHECK_TICKS: u32 = 50;
/// How long a skip may wait for a quiet frame, in frames.
pub const SKIP_WAIT_TICKS: u32 = 100;

/// Where the sender is, as the last packet in shows it.
#[derive(Debug, Clone, Copy)]
struct Head {
    seq: u32,
    media_ms: u64,
    /// The smallest `arrival - media time` in the window when it came.
    quickest: i64,
    /// How much later than that it came, frames.
    behind: f64,
    /// Playback ticks since.
    ticks: u32,
}

/// See the module docs.
#[derive(Debug)]
pub struct JitterBuffer {
    cfg: JitterConfig,
    packets: BTreeMap<u32, Vec<u8>>,
    /// The sequence number whose turn is next; `None` while buffering.
    next: Option<u32>,
    /// Highest sequence number played or skipped (late packets are below).
    played_up_to: Option<u32>,
    /// (arrival, arrival - media time) samples for the jitter estimate.
    transit: VecDeque<(Millis, i64)>,
    conceal_run: u32,
    /// Ticks spent waiting for the frame whose turn it is.
    waiting: u32,
    /// Where the sender is now, as the packets show it: the last packet's
    /// sequence number, how much later than the quickest packet of the
    /// window it came (frames), and the playback ticks since. The head of
    /// the stream had every packet the smallest delay: the frames that
    /// should be here by now, counted without the jitter (which the target
    /// allows for once), and even when the newest were lost (a burst at the
    /// tail is not a shallow buffer).
    head: Option<Head>,
    /// The playback clock at this tick ([`Self::set_time`]), when told.
    clock: Option<Millis>,
    /// Lowest depth seen since the last skip check, frames.
    low_water: f64,
    /// Ticks since the last skip check.
    ticks: u32,
    /// Frames of depth added to the jitter's need, so that what repairs a
    /// loss (the next packet's FEC, copies in later datagrams) comes in time.
    extra: usize,
    /// Whether the last frame played was quiet (a pause between words):
    /// the time to skip or add a frame unheard. `None`: not told (frames
    /// are skipped when needed, and never added while a frame is there).
    quiet: Option<bool>,
    /// Frames here from a copy, whose own packet has not come (yet).
    copied: BTreeSet<u32>,
    stats: JitterStats,
}

impl JitterBuffer {
    /// An empty buffer.
    pub fn new(cfg: JitterConfig) -> JitterBuffer {
        JitterBuffer {
            cfg,
            packets: BTreeMap::new(),
            next: None,
            played_up_to: None,
            transit: VecDeque::new(),
            conceal_run: 0,
            waiting: 0,
            head: None,
            clock: None,
            low_water: f64::INFINITY,
            ticks: 0,
            extra: 0,
            quiet: None,
            copied: BTreeSet::new(),
            stats: JitterStats::default(),
        }
    }

    /// Holds `frames` more than the jitter needs: 1 when losses are
    /// repaired from the next packet's FEC, the largest copy offset when
    /// the sender adds copies of earlier frames.
    pub fn set_extra_frames(&mut self, frames: usize) {
        self.extra = frames;
    }

    /// The counters.
    pub fn stats(&self) -> JitterStats {
        self.stats
    }

    /// Measured jitter in ms (spread of transit times over the window).
    pub fn jitter_ms(&self) -> u64 {
        if self.transit.len() < 2 {
            return 0;
        }
        let mut v: Vec<i64> = self.transit.iter().map(|&(_, d)| d).collect();
        v.sort_unstable();
        let p95 = v[(v.len() - 1) * 95 / 100];
        (p95 - v[0]).max(0) as u64
    }

    /// How many frames the buffer aims to hold, rounded up
    /// ([`Self::target_depth`]).
    pub fn target_frames(&self) -> usize {
        self.target_depth().ceil() as usize
    }

    /// How many frames the buffer aims to hold, counted in time from where
    /// the sender is ([`Self::set_time`]): 1 plays each frame as soon as
    /// its packet can have come, and each frame more is a frame's time
    /// longer to wait for it, for its jitter, and for what repairs its loss.
    pub fn target_depth(&self) -> f64 {
        if !self.cfg.adaptive {
            return self.cfg.min_frames.max(1) as f64;
        }
        // The jitter gets its time, not rounded up to whole frames: the
        // depth is counted in time too, so 30 ms of jitter and 2 frames for
        // copies ask for 70 ms (whole frames asked for 80), and packets
        // that come a few ms either side of the playback clock's tick keep
        // the frame a wait for one of them added (rather than skipping it
        // and missing again).
        let for_jitter = self.jitter_ms() as f64 / f64::from(self.cfg.frame_ms.max(1));
        let want = for_jitter + 1.0 + self.extra as f64;
        want.clamp(self.cfg.min_frames as f64, self.cfg.max_frames as f64)
    }

    /// Frames buffered from the next one to play on, counted in time (from
    /// the next frame to the newest one here, gaps included: a lost packet
    /// does not make the buffer shallower).
    pub fn depth(&self) -> usize {
        match self.next {
            Some(n) => self.packets.last_key_value().map_or(0, |(&k, _)| k.wrapping_sub(n) as usize + 1),
            None => match (self.packets.first_key_value(), self.packets.last_key_value()) {
                (Some((&a, _)), Some((&b, _))) => b.wrapping_sub(a) as usize + 1,
                _ => 0,
            },
        }
    }

    /// Frames from `next` on, counted in time from where the sender is now
    /// ([`Self::depth`], or more when the packets' jitter or a loss at the
    /// tail hides frames the sender has sent by now). The jitter goes into
    /// the target once; a depth counted only in packets here would dip by
    /// it too, and the buffer, kept above its target at its lowest, would
    /// hold the jitter twice.
    fn depth_in_time(&self, next: u32) -> f64 {
        let here = self.packets.last_key_value().map_or(0, |(&k, _)| (k.wrapping_sub(next) as i32).max(-1) + 1);
        let frame = f64::from(self.cfg.frame_ms.max(1));
        let sent = self.head.map_or(0.0, |h| {
            let ahead = f64::from(h.seq.wrapping_sub(next) as i32);
            match self.clock {
                // Where the sender is at this tick: the last packet's frame
                // plus the time since it would have come, had it been quick.
                Some(now) => ahead + 1.0 + (now as i64 - h.quickest - h.media_ms as i64) as f64 / frame,
                // Not told the time: it came before this tick, `ticks` ago
                // (at least 1 at a pop), which counts up to a frame too many.
                None => ahead + h.behind + f64::from(h.ticks),
            }
        });
        sent.max(f64::from(here))
    }

    /// The playback clock now, before [`Self::pop`]: the depth is then
    /// counted to the millisecond rather than in ticks.
    pub fn set_time(&mut self, now: Millis) {
        self.clock = Some(now);
    }

    /// The current buffering delay in ms (depth times frame length).
    pub fn delay_ms(&self) -> u64 {
        self.depth() as u64 * u64::from(self.cfg.frame_ms)
    }

    /// A packet arrived at `now`. `media_ms` is its timestamp in ms.
    pub fn push(&mut self, seq: u32, media_ms: u64, payload: Vec<u8>, now: Millis) {
        if self.packets.contains_key(&seq) {
            if self.copied.remove(&seq) {
                // Its copy came first (a later datagram overtook it): the
                // network did deliver it, in time.
                self.stats.received += 1;
                self.stats.from_copies = self.stats.from_copies.saturating_sub(1);
            } else {
                self.stats.duplicates += 1;
            }
            return;
        }
        // A packet too late to play still shows the jitter to allow for,
        // and where the sender is.
        let transit = now as i64 - media_ms as i64;
        self.transit.push_back((now, transit));
        while self.transit.front().is_some_and(|&(t, _)| now.saturating_sub(t) > WINDOW) {
            self.transit.pop_front();
        }
        // The quickest lately, not over the whole window: a sender whose
        // clock is slow has its packets come a little later each frame,
        // and the window's oldest would put it frames ahead of them.
        let quickest = self
            .transit
            .iter()
            .rev()
            .take_while(|&&(t, _)| now.saturating_sub(t) <= QUICKEST_WINDOW)
            .map(|&(_, d)| d)
            .min()
            .unwrap_or(transit);
        let behind = (transit - quickest) as f64 / f64::from(self.cfg.frame_ms.max(1));
        self.head = Some(Head { seq, media_ms, quickest, behind, ticks: 0 });
        if self.played_up_to.is_some_and(|p| seq <= p) {
            self.stats.late += 1;
            return;
        }
        self.stats.received += 1;
        self.packets.insert(seq, payload);
    }

    /// Tells whether the last frame played was quiet. Once told, frames
    /// are skipped (to bring the delay down) in quiet moments when there
    /// are some within [`SKIP_WAIT_TICKS`], and silent frames are added in
    /// quiet moments while the buffer is shallower than its target.
    pub fn set_quiet(&mut self, quiet: bool) {
        self.quiet = Some(quiet);
    }

    /// A copy of frame `seq`, carried by a later datagram: fills the gap if
    /// that frame is missing and its turn has not passed. Not counted as a
    /// received packet (the loss figures stay those of the network).
    pub fn push_copy(&mut self, seq: u32, payload: Vec<u8>) {
        if self.played_up_to.is_some_and(|p| seq <= p) || self.packets.contains_key(&seq) {
            return;
        }
        if self.next.is_none() && self.played_up_to.is_none() {
            // Nothing played yet: a copy of a frame from before the start
            // would only add delay.
            return;
        }
        self.stats.from_copies += 1;
        self.copied.insert(seq);
        self.packets.insert(seq, payload);
    }

    /// Decides the next frame, at each tick of the playback clock.
    pub fn pop(&mut self) -> Playout {
        if let Some(h) = &mut self.head {
            h.ticks = h.ticks.saturating_add(1);
        }
        let target = self.target_depth();
        let Some(next) = self.next else {
            // Buffering: start once the target depth is reached (counted in
            // time: a lost packet's place counts).
            if let Some(first) = self.packets.keys().next().copied()
                && self.depth_in_time(first) >= target
            {
                self.next = Some(first);
                self.low_water = f64::INFINITY;
                self.ticks = 0;
                return self.pop_at(first, target);
            }
            return Playout::Silence;
        };
        // Once a second: if the buffer never ran below target + 1 in that
        // time (a burst arrived, or the sender's clock is fast), skip frames
        // to bring the delay down: one for a little excess (a drifting
        // clock), more at once for a lot (a burst after a stall), so the
        // delay never stays high for long.
        let depth = self.depth_in_time(next);
        self.low_water = self.low_water.min(depth);
        self.ticks += 1;
        if self.ticks >= SKIP_CHECK_TICKS {
            let excess = (self.low_water - target).floor().clamp(0.0, f64::from(u16::MAX)) as usize;
            if excess > 0 && self.quiet == Some(false) && self.ticks < SKIP_CHECK_TICKS + SKIP_WAIT_TICKS {
                // Skipping a frame of speech is heard; wait for a pause.
                return self.pop_at(next, target);
            }
            self.ticks = 0;
            self.low_water = f64::INFINITY;
            let skip = if excess > 3 { excess - 1 } else { excess.min(1) };
            let mut next = next;
            for _ in 0..skip {
                if self.packets.remove(&next).is_none() {
                    break;
                }
                self.stats.skipped += 1;
                self.advance(next);
                next = next.wrapping_add(1);
            }
            return self.pop_at(next, target);
        }
        self.pop_at(next, target)
    }

    fn advance(&mut self, played: u32) {
        self.played_up_to = Some(played);
        self.next = Some(played.wrapping_add(1));
        self.waiting = 0;
        // Anything older than what was played can only be late now.
        while self.packets.first_key_value().is_some_and(|(&k, _)| k <= played) {
            self.packets.pop_first();
        }
        while self.copied.first().is_some_and(|&k| k <= played) {
            self.copied.pop_first();
        }
    }

    fn conceal_waiting(&mut self) -> Playout {
        self.waiting += 1;
        self.conceal_run += 1;
        self.stats.concealed += 1;
        Playout::Conceal { fade_out: self.conceal_run >= self.cfg.max_conceal }
    }

    fn pop_at(&mut self, next: u32, target: f64) -> Playout {
        // Frames after this one, counted in time (a gap left by a lost
        // packet counts: it is not a reason to wait): those here, or those
        // the sender has sent by now (late ones, and those lost at the
        // tail, count too: the target allows for the jitter).
        let here = self.packets.last_key_value().map_or(0, |(&k, _)| k.wrapping_sub(next) as usize);
        let depth = self.depth_in_time(next);
        let shallow = depth < target;
        if self.extra > 0 && self.quiet == Some(true) && shallow && self.packets.contains_key(&next) {
            // Repairing losses needs depth: while shallower than that, in a
            // pause, a frame of silence deepens the buffer unheard (rather
            // than a concealed frame in speech when a packet is missing
            // later). Without losses the buffer grows only when a packet is
            // late, so a clean path keeps its delay low.
            self.stats.stretched += 1;
            return Playout::Silence;
        }
        if let Some(p) = self.packets.remove(&next) {
            self.advance(next);
            self.conceal_run = 0;
            self.stats.played += 1;
            return Playout::Frame(p);
        }
        if !self.cfg.adaptive {
            // The naive receiver: not here at its turn means lost.
            if here == 0 && self.conceal_run >= self.cfg.max_conceal {
                self.next = None;
                return Playout::Silence;
            }
            self.advance(next);
            self.conceal_run += 1;
            self.stats.concealed += 1;
            return Playout::Conceal { fade_out: self.conceal_run >= self.cfg.max_conceal };
        }
        if here == 0 {
            // Nothing after this frame either: it is late (or the sender's
            // clock is slow), unless the frames after it should have been
            // here a frame ago (a long burst of loss). Conceal while
            // waiting for it; after a while, go quiet and re-buffer.
            if self.conceal_run >= self.cfg.max_conceal {
                self.next = None;
                return Playout::Silence;
            }
            // (Allowing for the jitter twice here: a late packet is far
            // likelier than a long burst of loss; and while the jitter is
            // not known yet, at the start, waiting is the better guess.)
            let jitter = self.jitter_ms() as f64 / f64::from(self.cfg.frame_ms.max(1));
            if depth < target + jitter || self.transit.len() < KNOWN_JITTER {
                return self.conceal_waiting();
            }
        }
        if shallow && f64::from(self.waiting) < target && self.conceal_run < self.cfg.max_conceal {
            // The buffer (this frame's slot and those after it) is
            // shallower than the jitter needs: this frame may still come.
            // Waiting a frame also deepens the buffer.
            return self.conceal_waiting();
        }
        // Later frames are here and waiting is over: this one is lost.
        self.advance(next);
        self.conceal_run += 1;
        if let Some(successor) = self.packets.get(&next.wrapping_add(1)) {
            self.stats.fec_recovered += 1;
            return Playout::Fec(successor.clone());
        }
        self.stats.concealed += 1;
        Playout::Conceal { fade_out: self.conceal_run >= self.cfg.max_conceal }
    }
}

/// Ramps samples linearly from `from` to `to` gain: fades in after silence
/// and out before it, so gaps do not click.
pub fn ramp(samples: &mut [f32], from: f32, to: f32) {
    let n = samples.len().max(1) as f32;
    for (i, s) in samples.iter_mut().enumerate() {
        *s *= from + (to - from) * (i as f32 / n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const F: u64 = 20;

    fn jb() -> JitterBuffer {
        JitterBuffer::new(JitterConfig::default())
    }

    fn pkt(seq: u32) -> Vec<u8> {
        seq.to_be_bytes().to_vec()
    }

    fn seq_of(p: &Playout) -> Option<u32> {
        match p {
            Playout::Frame(b) => Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]])),
            _ => None,
        }
    }

    /// Runs a scripted arrival pattern: `arrivals` are (seq, arrival ms);
    /// the playback clock ticks every frame from `start` for `ticks`.
    fn run(arrivals: &[(u32, u64)], start: u64, ticks: u64) -> (Vec<Playout>, JitterBuffer) {
        run_told(arrivals, start, ticks, None)
    }

    /// [`run`], telling the buffer before each tick whether the last frame
    /// was quiet.
    fn run_told(arrivals: &[(u32, u64)], start: u64, ticks: u64, quiet: Option<bool>) -> (Vec<Playout>, JitterBuffer) {
        let mut j = jb();
        let mut out = Vec::new();
        let mut a = arrivals.to_vec();
        a.sort_by_key(|&(_, t)| t);
        let mut i = 0;
        for k in 0..ticks {
            let now = start + k * F;
            while i < a.len() && a[i].1 <= now {
                j.push(a[i].0, u64::from(a[i].0) * F, pkt(a[i].0), a[i].1);
                i += 1;
            }
            if let Some(q) = quiet {
                j.set_quiet(q);
            }
            j.set_time(now);
            out.push(j.pop());
        }
        (out, j)
    }

    /// `n` packets, each due at the playback tick after its own frame
    /// (`s * F + F`), moved by `offset` ms and a pseudo-random
    /// `-spread..=spread` ms.
    fn around_the_tick(seed: u32, n: u32, offset: i64, spread: u32) -> Vec<(u32, u64)> {
        let mut x = seed;
        (0..n)
            .map(|s| {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                let jitter = i64::from((x >> 16) % (2 * spread + 1)) - i64::from(spread);
                (s, (i64::from(s) * F as i64 + F as i64 + offset + jitter) as u64)
            })
            .collect()
    }

    #[test]
    fn steady_stream_plays_everything_in_order() {
        let arrivals: Vec<_> = (0..100).map(|s| (s, u64::from(s) * F + 5)).collect();
        // Packet s arrives 5 ms after tick s and plays at tick s + 1.
        let (out, j) = run(&arrivals, 0, 101);
        let played: Vec<u32> = out.iter().filter_map(seq_of).collect();
        assert_eq!(played, (0..100).collect::<Vec<_>>());
        assert_eq!(j.stats().concealed, 0);
        assert_eq!(j.stats().skipped, 0);
        assert_eq!(j.target_frames(), 1);
    }

    #[test]
    fn reordering_and_duplicates() {
        let mut j = jb();
        for (s, t) in [(0, 0), (2, 1), (1, 2), (1, 3), (3, 4)] {
            j.push(s, u64::from(s) * F, pkt(s), t);
        }
        let played: Vec<u32> = (0..4).filter_map(|_| seq_of(&j.pop())).collect();
        assert_eq!(played, vec![0, 1, 2, 3]);
        assert_eq!(j.stats().duplicates, 1);
        // Too late: its turn has passed.
        j.push(2, 40, pkt(2), 100);
        assert_eq!(j.stats().late, 1);
    }

    #[test]
    fn a_single_loss_is_rebuilt_from_fec() {
        let mut j = jb();
        for s in [0u32, 2, 3] {
            j.push(s, u64::from(s) * F, pkt(s), u64::from(s) * F);
        }
        assert_eq!(seq_of(&j.pop()), Some(0));
        assert_eq!(j.pop(), Playout::Fec(pkt(2)), "frame 1 from frame 2's FEC");
        assert_eq!(seq_of(&j.pop()), Some(2), "then frame 2 itself");
        assert_eq!(j.stats().fec_recovered, 1);
        // A packet for the concealed frame arriving now is late.
        j.push(1, 20, pkt(1), 80);
        assert_eq!(j.stats().late, 1);
    }

    #[test]
    fn a_burst_loss_is_concealed_then_fades_to_silence_then_recovers() {
        let mut arrivals: Vec<_> = (0..10).map(|s| (s, u64::from(s) * F)).collect();
        // Frames 10..40 are lost; 40.. arrive again.
        arrivals.extend((40..60).map(|s| (s, u64::from(s) * F)));
        let (out, j) = run(&arrivals, 0, 61);
        let conceals: Vec<_> = out[..40].iter().filter(|p| matches!(p, Playout::Conceal { .. })).collect();
        assert_eq!(conceals.len(), 5, "conceal a few frames, not a whole second");
        assert_eq!(conceals.last(), Some(&&Playout::Conceal { fade_out: true }));
        assert!(out[16..39].iter().all(|p| *p == Playout::Silence), "silence during the gap");
        let played: Vec<u32> = out.iter().filter_map(seq_of).collect();
        assert!(played.starts_with(&(0..10).collect::<Vec<_>>()));
        assert!(played.ends_with(&[58, 59]), "playback resumes after the gap: {played:?}");
        assert_eq!(j.stats().concealed, 6, "five in the gap, one after the last packet");
    }

    #[test]
    fn a_few_ms_of_jitter_cost_one_wait_not_a_frame_of_delay() {
        // Packets come about when the playback clock ticks, give or take
        // 3 ms: the target stays at one frame (a packet that misses its
        // turn is waited for once, and the buffer keeps that spare).
        let (out, j) = run(&around_the_tick(99, 1500, 0, 3), 0, 1500);
        assert!(j.target_depth() < 2.0, "{}", j.target_depth());
        let s = j.stats();
        assert!(s.concealed <= 2 && s.skipped == 0 && s.late == 0, "{s:?}");
        // Mostly one frame of delay, at most two.
        let played: Vec<u32> = out.iter().filter_map(seq_of).collect();
        assert!(played.len() >= 1490, "{s:?}");
        assert!(j.delay_ms() <= 2 * F, "{}", j.delay_ms());
    }

    #[test]
    fn packets_just_before_the_tick_cost_one_wait_not_one_a_second() {
        // Each packet comes 1 ms before its turn, give or take 2 ms, in
        // pauses (where frames may be skipped): after the first miss the
        // buffer keeps the frame it gained instead of skipping it and
        // missing again.
        let (_, j) = run_told(&around_the_tick(7, 1500, -1, 2), 0, 1500, Some(true));
        let s = j.stats();
        assert!(s.concealed + s.late <= 3 && s.skipped <= 1, "{s:?}");
    }

    #[test]
    fn target_follows_jitter() {
        let mut j = jb();
        // 60 ms of jitter: packets arrive 0..60 ms after their media time.
        for s in 0..100u32 {
            let jitter = [0, 60, 10, 45, 30][s as usize % 5];
            j.push(s, u64::from(s) * F, pkt(s), u64::from(s) * F + jitter);
        }
        assert!(j.jitter_ms() >= 45, "{}", j.jitter_ms());
        assert!(j.target_frames() >= 4, "{}", j.target_frames());
        // Then a calm network: within two seconds the target comes back down.
        let mut j2 = jb();
        for s in 0..200u32 {
            let jitter = if s < 50 { [0, 60][s as usize % 2] } else { 1 };
            j2.push(s, u64::from(s) * F, pkt(s), u64::from(s) * F + jitter);
        }
        assert_eq!(j2.target_frames(), 1);
    }

    /// Plays `arrivals` (seq, arrival ms; media time `seq * F`) with the
    /// playback clock ticking every frame at `phase` ms into it; gives each
    /// frame played from its packet and its delay (tick time less its media
    /// time), and the buffer.
    fn playout_delays(arrivals: &[(u32, u64)], phase: u64, extra: usize) -> (Vec<(u32, u64)>, JitterBuffer) {
        let mut j = jb();
        j.set_extra_frames(extra);
        let mut a = arrivals.to_vec();
        a.sort_by_key(|&(_, t)| t);
        let (mut i, mut out) = (0, Vec::new());
        let ticks = a.last().map_or(0, |&(_, t)| t / F + 10);
        for k in 0..ticks {
            let now = k * F + phase;
            while i < a.len() && a[i].1 <= now {
                j.push(a[i].0, u64::from(a[i].0) * F, pkt(a[i].0), a[i].1);
                i += 1;
            }
            j.set_time(now);
            j.set_quiet(true);
            if let Some(s) = seq_of(&j.pop()) {
                out.push((s, now - u64::from(s) * F));
            }
        }
        (out, j)
    }

    #[test]
    fn the_jitter_is_allowed_for_once() {
        // 30 ms of jitter, uniform: a packet is never more than 30 ms later
        // than the quickest, so the buffer needs 30 ms, and 20 more for
        // each frame it waits for copies, and no more. A depth counted in
        // packets here dips with the jitter: kept above the target at its
        // lowest, it played 40 ms later than needed (and the target rounded
        // the jitter up to whole frames: 10 ms more).
        let mut x = 99u32;
        let arrivals: Vec<(u32, u64)> = (0..1500u32)
            .map(|s| {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                (s, u64::from(s) * F + u64::from((x >> 16) % 31))
            })
            .collect();
        for phase in [1, 10, 19] {
            for extra in [0, 2] {
                let (out, j) = playout_delays(&arrivals, phase, extra);
                let settled: Vec<u64> = out.iter().filter(|&&(s, _)| s > 250).map(|&(_, d)| d).collect();
                let mean = settled.iter().sum::<u64>() / settled.len().max(1) as u64;
                // What it needs: the jitter and the extra frames, and up to
                // a tick more for the clock's phase.
                let need = 30 + extra as u64 * F;
                assert!(mean <= need + F, "phase {phase}, extra {extra}: {mean} ms, needs {need}; {:?}", j.stats());
                assert!(mean + 5 >= need, "phase {phase}, extra {extra}: {mean} ms, needs {need}");
                let s = j.stats();
                assert!(s.late <= 2 && s.concealed <= 8, "phase {phase}, extra {extra}: {s:?}");
            }
        }
    }

    #[test]
    fn jittery_arrivals_play_without_gaps_once_adapted() {
        // Up to 50 ms of jitter; the buffer settles and plays everything.
        let arrivals: Vec<_> =
            (0..300u32).map(|s| (s, u64::from(s) * F + [0, 50, 20, 35, 10][s as usize % 5])).collect();
        let (out, j) = run(&arrivals, 0, 320);
        let played: Vec<u32> = out.iter().filter_map(seq_of).collect();
        let late_start = played.iter().position(|&s| s >= 100).unwrap();
        // After the first two seconds, nothing is lost.
        assert!(
            played[late_start..].windows(2).all(|w| w[1] == w[0] + 1),
            "gaps after adapting: {played:?} {:?}",
            j.stats()
        );
        // Adapting costs a few frames at the start.
        assert!(j.stats().concealed + j.stats().late < 15, "{:?}", j.stats());
    }

    #[test]
    fn a_fast_sender_clock_does_not_grow_the_delay() {
        // The sender's clock runs 2 % fast: a packet every 19.6 ms of ours.
        let arrivals: Vec<_> = (0..3000u32).map(|s| (s, u64::from(s) * 196 / 10)).collect();
        let mut j = jb();
        let mut i = 0;
        let mut max_depth = 0;
        for k in 0..2900u64 {
            let now = k * F;
            while i < arrivals.len() && arrivals[i].1 <= now {
                j.push(arrivals[i].0, u64::from(arrivals[i].0) * F, pkt(arrivals[i].0), arrivals[i].1);
                i += 1;
            }
            j.pop();
            if k > 100 {
                max_depth = max_depth.max(j.depth());
            }
        }
        assert!(max_depth <= j.target_frames() + 3, "depth grew to {max_depth}");
        assert!(j.stats().skipped > 0, "frames are skipped to keep up");
    }

    #[test]
    fn a_slow_sender_clock_is_stretched_not_starved() {
        // The sender's clock runs 2 % slow: a packet every 20.4 ms of ours.
        let arrivals: Vec<_> = (0..1000u32).map(|s| (s, u64::from(s) * 204 / 10)).collect();
        let (out, j) = run(&arrivals, 0, 1000);
        let silences = out[100..].iter().filter(|p| **p == Playout::Silence).count();
        assert_eq!(silences, 0, "never silent once playing");
        // About one frame in fifty is concealed to stretch.
        let c = j.stats().concealed + j.stats().fec_recovered;
        assert!((5..=40).contains(&c), "{c}");
    }

    #[test]
    fn a_burst_after_a_stall_is_trimmed_quickly() {
        let mut j = jb();
        // Steady for a second, then 20 frames arrive at once.
        let mut seq = 0u32;
        for k in 0..50u64 {
            j.push(seq, u64::from(seq) * F, pkt(seq), k * F);
            seq += 1;
            j.pop();
        }
        for _ in 0..20 {
            j.push(seq, u64::from(seq) * F, pkt(seq), 50 * F);
            seq += 1;
        }
        // The burst counts as jitter for two seconds; after that the excess goes.
        for k in 51..260u64 {
            j.push(seq, u64::from(seq) * F, pkt(seq), k * F);
            seq += 1;
            j.pop();
        }
        assert!(j.depth() <= j.target_frames() + 2, "depth {} target {}", j.depth(), j.target_frames());
    }

    #[test]
    fn the_naive_buffer_drops_late_packets_and_never_uses_fec() {
        let mut j = JitterBuffer::new(JitterConfig { max_frames: 1, adaptive: false, ..JitterConfig::default() });
        // Frame 1 is late by 30 ms, frame 3 is lost.
        let arrivals = [(0u32, 0u64), (2, 40), (1, 50), (4, 80), (5, 100)];
        let mut out = Vec::new();
        let mut i = 0;
        for k in 0..6u64 {
            let now = k * F + 1;
            while i < arrivals.len() && arrivals[i].1 <= now {
                let (s, t) = arrivals[i];
                j.push(s, u64::from(s) * F, pkt(s), t);
                i += 1;
            }
            out.push(j.pop());
        }
        assert_eq!(seq_of(&out[0]), Some(0));
        assert_eq!(out[1], Playout::Conceal { fade_out: false }, "frame 1 is not there at its turn");
        assert_eq!(seq_of(&out[2]), Some(2));
        assert_eq!(out[3], Playout::Conceal { fade_out: false }, "no FEC for frame 3, though 4 is here");
        assert_eq!(seq_of(&out[4]), Some(4));
        assert_eq!(j.stats().late, 1, "frame 1 came after its turn");
        assert_eq!(j.target_frames(), 1);
    }

    #[test]
    fn copies_fill_gaps_in_time_and_losses_do_not_make_the_buffer_wait() {
        let mut j = jb();
        j.set_extra_frames(3);
        // Steady arrivals, frames 10 and 11 lost; copies come 3 frames later.
        let mut out = Vec::new();
        for k in 0..40u32 {
            if k != 10 && k != 11 {
                j.push(k, u64::from(k) * F, pkt(k), u64::from(k) * F);
            }
            if k >= 3 && k - 3 != 11 {
                j.push_copy(k - 3, pkt(k - 3));
            }
            out.push(j.pop());
        }
        let played: Vec<u32> = out.iter().filter_map(seq_of).collect();
        assert!(played.contains(&10), "frame 10 from its copy: {played:?}");
        assert!(!played.contains(&11), "frame 11's copy was lost too");
        assert_eq!(j.stats().from_copies, 1);
        assert_eq!(j.stats().fec_recovered, 1, "frame 11 from frame 12's FEC");
        // The loss did not stretch playback: no concealment while waiting.
        assert_eq!(j.stats().concealed, 0, "{:?} {out:?}", j.stats());
        assert_eq!(j.target_frames(), 4);
        // A copy of a frame already played is ignored.
        j.push_copy(1, pkt(1));
        assert_eq!(j.stats().from_copies, 1);
    }

    #[test]
    fn a_packet_overtaken_by_its_copy_still_counts_as_delivered() {
        // Copies 1 frame back and jitter: datagram 6 (with the copy of
        // frame 5) comes before datagram 5. Frame 5 came; it is no loss and
        // no duplicate (the loss the reports carry would stay up for good
        // under jitter, and with it the copies).
        let mut j = jb();
        j.set_extra_frames(2);
        for k in 0..5u32 {
            j.push(k, u64::from(k) * F, pkt(k), u64::from(k) * F);
        }
        j.push(6, 6 * F, pkt(6), 100);
        j.push_copy(5, pkt(5));
        j.push(5, 5 * F, pkt(5), 105);
        let s = j.stats();
        assert_eq!((s.received, s.duplicates, s.from_copies), (7, 0, 0), "{s:?}");
        // A second copy of it, or the packet again, is a duplicate.
        j.push_copy(5, pkt(5));
        j.push(5, 5 * F, pkt(5), 106);
        assert_eq!((j.stats().received, j.stats().duplicates), (7, 1));
    }

    #[test]
    fn bursts_at_the_tail_do_not_deepen_the_buffer() {
        // Copies 3 and 6 frames later; bursts of lost datagrams (with the
        // copies they carry), 15 % in all, in speech with pauses: the buffer
        // settles at its target once, rather than adding delay whenever the
        // newest packets are the lost ones and taking it out again later.
        let mut j = jb();
        j.set_extra_frames(6);
        let mut x = 12_345u32;
        let mut rand = move || {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            (x >> 16) % 1000
        };
        let mut bad = false;
        for k in 0..3000u32 {
            // Gilbert: bursts of 3 on average, 15 % lost.
            bad = if bad { rand() >= 333 } else { rand() < 59 };
            if !bad {
                j.push(k, u64::from(k) * F, pkt(k), u64::from(k) * F);
                for back in [3, 6] {
                    if let Some(c) = k.checked_sub(back) {
                        j.push_copy(c, pkt(c));
                    }
                }
            }
            // Words of 0.8 s, pauses of 0.2 s.
            j.set_quiet(k % 50 >= 40);
            j.pop();
        }
        let s = j.stats();
        // (Before the tail was counted in time: 11 stretched, 31 skipped.)
        assert!(s.stretched + s.skipped <= 5, "{s:?}");
        assert!(s.from_copies > 300, "{s:?}");
    }

    #[test]
    fn frames_are_skipped_in_pauses() {
        // Steady, then 10 frames at once: too deep; answers the tick of the
        // first skip when the output is quiet or speech throughout.
        let first_skip = |quiet: bool| {
            let mut j = jb();
            j.set_quiet(quiet);
            let mut seq = 0u32;
            for k in 0..600u64 {
                let n = if k == 20 { 10 } else { 1 };
                for _ in 0..n {
                    j.push(seq, u64::from(seq) * F, pkt(seq), k * F);
                    seq += 1;
                }
                j.pop();
                if j.stats().skipped > 0 {
                    return k;
                }
            }
            u64::MAX
        };
        let (pause, speech) = (first_skip(true), first_skip(false));
        assert!(pause < 200, "{pause}");
        assert!(speech > pause + 50, "waits for a pause: {speech} vs {pause}");
        assert!(speech <= pause + u64::from(SKIP_WAIT_TICKS) + 50, "but not forever: {speech}");
    }

    #[test]
    fn the_buffer_deepens_in_pauses_with_silence() {
        let mut j = jb();
        let mut out = Vec::new();
        for k in 0..40u32 {
            if k == 10 {
                // Losses start: the buffer is to hold three more frames.
                j.set_extra_frames(3);
                j.set_quiet(true);
            }
            j.push(k, u64::from(k) * F, pkt(k), u64::from(k) * F);
            out.push(j.pop());
        }
        assert_eq!(j.stats().stretched, 3, "{out:?}");
        assert_eq!(j.stats().concealed, 0);
        assert_eq!(j.depth(), 3, "target 4 before each pop, 3 after");
        let played: Vec<u32> = out.iter().filter_map(seq_of).collect();
        assert_eq!(played, (0..37).collect::<Vec<_>>(), "nothing lost, three frames later");
    }

    #[test]
    fn ramps() {
        let mut s = vec![1.0f32; 4];
        ramp(&mut s, 1.0, 0.0);
        assert_eq!(s, vec![1.0, 0.75, 0.5, 0.25]);
        let mut s = vec![1.0f32; 4];
        ramp(&mut s, 0.0, 1.0);
        assert_eq!(s[0], 0.0);
    }
}
