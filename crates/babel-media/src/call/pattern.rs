//! The loss pattern, both ends of it: the receiver measures how long the
//! runs of lost frames are ([`LossPattern`], reported as
//! [`Report::burst_x10`](babel_proto::voice::Report::burst_x10)), and the
//! sender places its copies of earlier frames from that and the loss share
//! ([`copy_offsets`]). Pure: no clock, no IO.
//!
//! Why the offsets follow the pattern: a copy `o` frames back repairs a
//! lost frame only if the datagram `o` frames later came, and the receiver
//! must hold `o` frames more to wait for it, so every frame of offset is
//! 20 ms of delay. Under random loss two lost datagrams in a row are rare
//! (1 % of frames at 10 % loss), so short offsets repair nearly everything
//! at little delay; only bursts need copies further back.

/// How many frames a packet may come late and still count as arrived: the
/// pattern of a frame is settled once a frame this much newer came (80 ms:
/// more than the jitter the harness applies; 16 lagged the reports by 320
/// ms and scored 0.16 lower at 10 % random loss, BENCHMARKS.md).
const HORIZON: u32 = 4;
/// Weight of the past in the run statistics, per settled run: about the
/// last 20 runs count.
const DECAY: f32 = 0.95;

/// The runs of lost frames in a stream of frame indices, as they arrive
/// (in any order, some late, some never). See the [module docs](self).
#[derive(Debug, Clone, Default)]
pub struct LossPattern {
    /// Frames up to this index are settled.
    settled: Option<u32>,
    /// Bit `i`: frame `settled + 1 + i` arrived.
    pending: u64,
    /// The newest index seen.
    newest: Option<u32>,
    /// Frames lost in a row up to `settled`.
    run: u32,
    /// Decayed count of runs, and of frames lost in them.
    runs: f32,
    lost: f32,
    /// Frames settled, and those of them lost, since the start.
    settled_frames: u64,
    settled_lost: u64,
}

impl LossPattern {
    /// Frame `index` arrived (in time or not).
    pub fn arrived(&mut self, index: u32) {
        let settled = *self.settled.get_or_insert(index.wrapping_sub(1));
        let ahead = index.wrapping_sub(settled);
        if ahead == 0 || ahead > u32::MAX / 2 {
            return; // settled already (later than the horizon), or before the start
        }
        if self.newest.is_none_or(|n| index.wrapping_sub(n) as i32 > 0) {
            self.newest = Some(index);
        }
        let newest = self.newest.unwrap_or(index);
        // Settle what is older than the horizon (and what the bit field
        // cannot hold), then mark this frame.
        while let Some(s) = self.settled
            && (newest.wrapping_sub(s) > HORIZON || index.wrapping_sub(s) > 64)
        {
            self.settle_one();
        }
        let off = self.settled.map_or(u32::MAX, |s| index.wrapping_sub(s).wrapping_sub(1));
        if off < 64 {
            self.pending |= 1 << off;
        }
    }

    fn settle_one(&mut self) {
        let came = self.pending & 1 == 1;
        self.pending >>= 1;
        self.settled_frames += 1;
        self.settled_lost += u64::from(!came);
        self.settled = self.settled.map(|s| s.wrapping_add(1));
        if came {
            if self.run > 0 {
                self.runs = self.runs * DECAY + 1.0;
                self.lost = self.lost * DECAY + self.run as f32;
                self.run = 0;
            }
        } else {
            self.run = self.run.saturating_add(1);
        }
    }

    /// Frames settled since the start, and how many of them never came:
    /// the loss, free of the reordering noise a count up to the newest
    /// frame has (a frame overtaken at the edge is not lost).
    pub fn counts(&self) -> (u64, u64) {
        (self.settled_frames, self.settled_lost)
    }

    /// The mean length of the recent runs of lost frames, frames (`None`
    /// before any run ended).
    pub fn mean_burst(&self) -> Option<f32> {
        (self.runs > 0.0).then(|| self.lost / self.runs)
    }

    /// [`Self::mean_burst`] as a report carries it: tenths of a frame, 0 for
    /// none.
    pub fn burst_x10(&self) -> u16 {
        self.mean_burst().map_or(0, |b| (b * 10.0).round().clamp(1.0, f32::from(u16::MAX)) as u16)
    }
}

/// Mean runs up to this long (tenths of a frame) are random loss: with
/// independent loss `p` the mean run is `1 / (1 − p)`, 1.1 frames at 10 %
/// and 1.25 at 20 %; a Gilbert channel with bursts of 3 reports about 3.
pub const RANDOM_BURST_X10: u16 = 15;

/// Where the copies of earlier frames go (frames back), for the loss the
/// receiver reports (per mille) and the mean length of its runs of lost
/// frames ([`LossPattern::burst_x10`]): none under 1 % loss; under random
/// loss 1 and 2 frames back (with in-band FEC, a frame is lost for good
/// only when three datagrams in a row are), 40 ms of waiting instead of
/// 120; under bursts 3 and 6 back (a burst of up to five loses nothing).
/// Measured with the ideal receiver at 20 % bursty loss (BENCHMARKS.md),
/// 3 and 6 beat 3 and 5 and 2 and 4, and in whole calls the 20 ms that 3 and
/// 5 saved cost more quality than they gained in delay.
pub fn copy_offsets(loss_permille: u16, burst_x10: u16) -> Vec<u8> {
    if loss_permille < 10 {
        Vec::new()
    } else if burst_x10 <= RANDOM_BURST_X10 {
        vec![1, 2]
    } else {
        vec![3, 6]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `n` frames, frame `k` lost when `lost(k)`, each arriving with
    /// a reordering of up to `shuffle` frames.
    fn feed(n: u32, lost: impl Fn(u32) -> bool, shuffle: u32) -> LossPattern {
        let mut p = LossPattern::default();
        let mut order: Vec<u32> = (0..n).filter(|&k| !lost(k)).collect();
        // Swap neighbours `shuffle` apart now and then: late packets.
        for i in (0..order.len().saturating_sub(shuffle as usize)).step_by(7) {
            order.swap(i, i + shuffle as usize);
        }
        for k in order {
            p.arrived(k);
        }
        p
    }

    fn rng(seed: u32) -> impl FnMut() -> f32 {
        let mut x = seed;
        move || {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            (x >> 8) as f32 / (1u32 << 24) as f32
        }
    }

    #[test]
    fn no_loss_no_runs() {
        let p = feed(1000, |_| false, 2);
        assert_eq!(p.mean_burst(), None);
        assert_eq!(p.burst_x10(), 0);
    }

    #[test]
    fn runs_are_measured_in_frames_whatever_the_order() {
        // Two frames lost every 20: every run is 2 long.
        let p = feed(2000, |k| k % 20 < 2 && k > 0, 1);
        assert!((p.mean_burst().unwrap_or(0.0) - 2.0).abs() < 1e-3, "{p:?}");
        assert_eq!(p.burst_x10(), 20);
        // Single losses: 1.
        assert_eq!(feed(2000, |k| k % 10 == 5, 2).burst_x10(), 10);
    }

    #[test]
    fn random_loss_reads_as_random_and_bursts_as_bursts() {
        // Independent 10 % loss: mean run 1 / 0.9 = 1.11.
        let mut r = rng(7);
        let lost: Vec<bool> = (0..20_000).map(|_| r() < 0.10).collect();
        let random = feed(20_000, |k| lost[k as usize], 2).burst_x10();
        assert!((10..=13).contains(&random), "{random}");
        // Gilbert, 20 % loss, bursts of 3 on average.
        let mut r = rng(11);
        let mut bad = false;
        let lost: Vec<bool> = (0..20_000)
            .map(|_| {
                bad = if bad { r() >= 1.0 / 3.0 } else { r() < 0.0833 };
                bad
            })
            .collect();
        let bursty = feed(20_000, |k| lost[k as usize], 2).burst_x10();
        assert!((20..=42).contains(&bursty), "{bursty}");
        assert!(random <= RANDOM_BURST_X10 && bursty > RANDOM_BURST_X10);
    }

    #[test]
    fn late_frames_within_the_horizon_are_not_losses() {
        let mut p = LossPattern::default();
        // Frame 5 comes 3 frames late, every 40 frames one real loss.
        for k in 0..400u32 {
            if k % 40 == 5 {
                continue;
            }
            p.arrived(k);
            if k % 40 == 8 {
                p.arrived(k - 3);
            }
        }
        assert_eq!(p.mean_burst(), None, "{p:?}");
        let (frames, lost) = p.counts();
        assert!(frames > 350 && lost == 0, "{p:?}");
        // Far too late: settled as lost, and not counted twice.
        let mut p = LossPattern::default();
        for k in (0..100u32).filter(|&k| k != 50) {
            p.arrived(k);
        }
        p.arrived(50);
        p.arrived(50);
        for k in 100..200u32 {
            p.arrived(k);
        }
        assert_eq!(p.burst_x10(), 10);
        assert_eq!(p.counts().1, 1);
    }

    #[test]
    fn the_offsets_follow_the_pattern() {
        assert!(copy_offsets(5, 10).is_empty(), "under 1 %");
        assert_eq!(copy_offsets(100, 11), [1, 2], "random: short");
        assert_eq!(copy_offsets(100, 0), [1, 2], "loss reported, no run measured yet");
        assert_eq!(copy_offsets(200, 16), [3, 6], "bursts");
        assert_eq!(copy_offsets(200, 30), [3, 6], "bursts of 3");
        assert!(copy_offsets(100, 12).iter().all(|&o| o <= 2), "random: never the long offsets");
    }
}
