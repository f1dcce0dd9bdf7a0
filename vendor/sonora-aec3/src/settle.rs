//! Babel patch: decides when the refined linear filter has converged, so
//! that the configuration's `settle` settings may take over, and when it
//! has lost the echo again (see [`crate::config::Settle`]).

use crate::config::Settle;

/// Capture power per 64-sample block below which a block says nothing
/// about convergence (an RMS of 8 in 16-bit units, about -72 dBFS).
const MIN_CAPTURE_POWER: f32 = 64.0 * 8.0 * 8.0;

/// What a capture block tells the detector.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SettleInput {
    /// Whether the render block aligned with it was active.
    pub active_render: bool,
    /// The capture's energy (summed over channels).
    pub y2: f32,
    /// The refined filter's error energy (summed over channels).
    pub e2_refined: f32,
    /// The coarse filter's error energy (summed over channels).
    pub e2_coarse: f32,
}

/// What changed with a block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SettleChange {
    None,
    Settled,
    Unsettled,
}

/// Exponential averages of capture and error energy, and how many blocks
/// in a row their ratio has been past a threshold.
#[derive(Debug)]
struct ErleTracker {
    alpha: f32,
    window: usize,
    y2: f32,
    e2: f32,
    counted: usize,
    past: usize,
}

impl ErleTracker {
    fn new(window: usize) -> Self {
        let window = window.max(1);
        Self {
            alpha: 1.0 / window as f32,
            window,
            y2: 0.0,
            e2: 0.0,
            counted: 0,
            past: 0,
        }
    }

    fn reset(&mut self) {
        *self = Self::new(self.window);
    }

    /// Adds a block; answers for how many blocks in a row the averaged
    /// ratio y2 / e2 has been at or above `threshold` (`above`) or below it.
    fn update(&mut self, y2: f32, e2: f32, threshold: f32, above: bool) -> usize {
        self.y2 += self.alpha * (y2 - self.y2);
        self.e2 += self.alpha * (e2.max(0.0) - self.e2);
        self.counted = self.counted.saturating_add(1);
        if self.counted < self.window {
            return 0;
        }
        let is_above = self.y2 >= threshold * self.e2;
        self.past = if is_above == above { self.past + 1 } else { 0 };
        self.past
    }
}

/// Measures the refined filter's ERLE over blocks with active render: says
/// when it has stayed above the settle threshold long enough, and, once
/// settled, when the refined filter's error has stayed `lost_margin_db`
/// above the coarse filter's just as long.
#[derive(Debug)]
pub(crate) struct SettleDetector {
    enabled: bool,
    settle_erle: f32,
    lost_margin: f32,
    blocks: usize,
    lost_blocks: usize,
    resettle_factor: usize,
    converging: ErleTracker,
    holding: ErleTracker,
    settled: bool,
}

impl SettleDetector {
    pub(crate) fn new(config: &Settle) -> Self {
        Self {
            enabled: config.enabled,
            settle_erle: 10f32.powf(config.erle_db / 10.0),
            lost_margin: 10f32.powf(config.lost_margin_db / 10.0),
            blocks: config.blocks.max(1),
            lost_blocks: config.lost_blocks.max(1),
            resettle_factor: config.resettle_factor.max(1),
            converging: ErleTracker::new(config.window_blocks),
            holding: ErleTracker::new(config.lost_window_blocks),
            settled: false,
        }
    }

    /// Starts over (the echo path changed).
    pub(crate) fn reset(&mut self) {
        self.converging.reset();
        self.holding.reset();
        self.settled = false;
    }

    /// Whether the filter counts as converged.
    pub(crate) fn settled(&self) -> bool {
        self.settled
    }

    /// One capture block.
    pub(crate) fn update(&mut self, b: SettleInput) -> SettleChange {
        if !self.enabled || !b.active_render || !(b.y2 > MIN_CAPTURE_POWER) {
            return SettleChange::None;
        }
        if !self.settled {
            if self
                .converging
                .update(b.y2, b.e2_refined, self.settle_erle, true)
                >= self.blocks
            {
                self.settled = true;
                self.holding.reset();
                return SettleChange::Settled;
            }
            return SettleChange::None;
        }
        // The refined filter has lost the echo when the coarse one, which
        // adapts fast, cancels much more of the capture: then it is no
        // near end (which neither cancels) but an echo path the refined
        // filter no longer follows.
        let lost = self
            .holding
            .update(b.e2_refined, b.e2_coarse, self.lost_margin, true);
        if lost >= self.lost_blocks {
            self.reset();
            self.blocks = self.blocks.saturating_mul(self.resettle_factor);
            return SettleChange::Unsettled;
        }
        SettleChange::None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(y2: f32, e2_refined: f32, e2_coarse: f32) -> SettleInput {
        SettleInput {
            active_render: true,
            y2,
            e2_refined,
            e2_coarse,
        }
    }

    #[test]
    fn settles_after_enough_blocks_above_and_unsettles_on_echo_alone_only() {
        let config = Settle {
            enabled: true,
            erle_db: 20.0,
            blocks: 10,
            window_blocks: 5,
            lost_blocks: 10,
            lost_window_blocks: 5,
            ..Settle::default()
        };
        let mut d = SettleDetector::new(&config);
        // 10 dB: never.
        for _ in 0..100 {
            assert_eq!(d.update(block(1e6, 1e5, 1e5)), SettleChange::None);
        }
        // 30 dB: after the averages have caught up and 10 blocks more.
        let n = (0..200)
            .position(|_| d.update(block(1e6, 1e3, 1e3)) == SettleChange::Settled)
            .expect("settles");
        assert!(n >= 10, "{n}");
        assert!(d.settled());
        // Double talk: neither filter cancels the near end (the coarse one
        // a little more): still settled.
        for _ in 0..200 {
            assert_eq!(d.update(block(1e8, 1e7, 0.5e7)), SettleChange::None);
        }
        // The coarse filter cancels 20 dB more: unsettled.
        assert!((0..200).any(|_| d.update(block(1e6, 1e5, 1e3)) == SettleChange::Unsettled));
        assert!(!d.settled());
        // Inactive render or a silent capture counts for nothing.
        for _ in 0..100 {
            assert_eq!(
                d.update(SettleInput {
                    active_render: false,
                    ..block(1e6, 1.0, 1.0)
                }),
                SettleChange::None
            );
            assert_eq!(d.update(block(1.0, 0.0, 0.0)), SettleChange::None);
        }
    }
}
