//! How noisy the microphone is: an estimate of the speech-to-noise ratio
//! from 10 ms blocks, pure arithmetic with no IO, for noise suppression to
//! decide how much to do ([`crate::denoise`]).
//!
//! Per block it takes two figures the suppressor has anyway: the block's
//! power as it came in and the suppressor's probability that the block is
//! speech. From them:
//!
//! * **the noise floor**: the least block power over the last ~5 s
//!   (minimum statistics, R. Martin 2001, without the bias correction),
//!   which follows stationary noise (a fan, wind, a street) and a babble's
//!   floor, and falls to nothing in a clean recording's pauses;
//! * **the sound outside speech**: a leaky mean of the power of blocks
//!   the suppressor holds for non-speech, which catches what the floor
//!   misses: keyboard clicks between silent gaps, a babble's louder words
//!   (not in the 200 ms after anything that might be speech nor the
//!   100 ms before it: the ends and starts of words are no noise, so it
//!   counts a block 100 ms late; and a block counts with at most 10 times
//!   the mean so far or the floor, so that a breath is no noise but typing
//!   soon is);
//! * **the speech level**: a leaky mean of the power of blocks that are
//!   speech and well above the floor.
//!
//! The noise is the larger of the first two; the ratio is speech over
//! noise, in dB. Until it has heard 300 ms of sound it answers nothing;
//! before any speech it takes speech to be at [`NOMINAL_SPEECH`].

/// Blocks (10 ms) in one stretch of the minimum search.
const SUB_BLOCKS: u32 = 25;
/// Stretches the minimum is taken over (20 × 250 ms = 5 s: a talker
/// pauses within that; over 2 s, a long sentence's quietest syllable
/// passed for the noise).
const SUBS: usize = 20;
/// The least power a block counts with (−100 dBFS): digital silence is
/// "very quiet", not minus infinity.
const FLOOR_POWER: f32 = 1e-10;
/// A block is speech when the suppressor's probability is at least this.
const SPEECH_PROB: f32 = 0.6;
/// ... and non-speech below this.
const NOISE_PROB: f32 = 0.3;
/// A speech block must be this far above the floor to count, dB.
const SPEECH_ABOVE_FLOOR_DB: f32 = 3.0;
/// The speech level assumed before any speech was heard: ITU-T P.56's
/// nominal active level, −26 dBov (a noisy room with nobody talking yet is
/// still a noisy room).
pub const NOMINAL_SPEECH: f32 = 0.002_511_9;
/// Smoothing of the speech level per block (≈ 1 s of speech to follow a
/// change).
const LEAK: f32 = 0.02;
/// Smoothing of the sound outside speech per block (≈ 0.2 s of pauses).
const OUTSIDE_LEAK: f32 = 0.1;
/// A block counts with at most this many times the sound outside speech
/// so far or the floor, whichever is larger (+10 dB).
const OUTSIDE_STEP: f32 = 10.0;
/// Blocks after a speech block that do not count as noise (200 ms): they
/// hold the ends of words.
const HANGOVER_BLOCKS: u32 = 20;
/// Blocks before speech that do not count as noise (100 ms): the starts
/// of words the suppressor does not yet hold for speech.
const LOOKBACK_BLOCKS: usize = 10;
/// Blocks before an answer (300 ms).
const WARM_BLOCKS: u32 = 30;

/// One block's figures.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Block {
    /// Mean square of the block as it came in (full scale = 1.0).
    pub power: f32,
    /// The suppressor's probability that the block is speech, 0–1.
    pub speech_prob: f32,
}

/// The estimator (see the module's text).
#[derive(Debug, Clone)]
pub struct SnrEstimator {
    /// The least power in each finished stretch, newest last.
    mins: [f32; SUBS],
    /// Stretches finished so far (up to [`SUBS`]).
    filled: usize,
    /// The least power in the stretch being filled, and its blocks.
    cur_min: f32,
    cur_blocks: u32,
    /// Leaky mean power of non-speech blocks.
    outside: f32,
    /// Leaky mean power of speech blocks, once there is one.
    speech: Option<f32>,
    blocks: u32,
    /// Blocks since the last block that might be speech.
    since_speech: u32,
    /// The last [`LOOKBACK_BLOCKS`] blocks' power, oldest first, and
    /// whether each may still count as noise (a later speech block
    /// clears them all).
    pending: [(f32, bool); LOOKBACK_BLOCKS],
}

impl Default for SnrEstimator {
    fn default() -> Self {
        Self::new()
    }
}

fn db(p: f32) -> f32 {
    10.0 * p.max(FLOOR_POWER).log10()
}

impl SnrEstimator {
    /// A fresh estimator.
    pub fn new() -> Self {
        Self {
            mins: [f32::MAX; SUBS],
            filled: 0,
            cur_min: f32::MAX,
            cur_blocks: 0,
            outside: 0.0,
            speech: None,
            blocks: 0,
            since_speech: HANGOVER_BLOCKS,
            pending: [(0.0, false); LOOKBACK_BLOCKS],
        }
    }

    /// Takes one 10 ms block's figures.
    pub fn update(&mut self, b: Block) {
        let power = if b.power.is_finite() { b.power.max(FLOOR_POWER) } else { FLOOR_POWER };
        let speech_prob = if b.speech_prob.is_finite() { b.speech_prob } else { 0.0 };
        self.blocks = self.blocks.saturating_add(1);
        self.cur_min = self.cur_min.min(power);
        self.cur_blocks += 1;
        if self.cur_blocks == SUB_BLOCKS {
            self.mins.rotate_left(1);
            self.mins[SUBS - 1] = self.cur_min;
            self.filled = (self.filled + 1).min(SUBS);
            self.cur_min = f32::MAX;
            self.cur_blocks = 0;
        }
        self.since_speech = if speech_prob >= NOISE_PROB { 0 } else { self.since_speech.saturating_add(1) };
        if self.since_speech == 0 {
            self.pending.iter_mut().for_each(|p| p.1 = false);
        }
        let (old, counts) = self.pending[0];
        if counts {
            // One loud block (a breath, a smack) moves it little; noise
            // that goes on gets there in ~25 blocks.
            let old = old.min(self.outside.max(self.noise_floor()) * OUTSIDE_STEP);
            self.outside += OUTSIDE_LEAK * (old - self.outside);
        }
        self.pending.rotate_left(1);
        self.pending[LOOKBACK_BLOCKS - 1] = (power, speech_prob < NOISE_PROB && self.since_speech >= HANGOVER_BLOCKS);
        let floor = self.noise_floor();
        if speech_prob >= SPEECH_PROB && db(power) >= db(floor) + SPEECH_ABOVE_FLOOR_DB {
            // The speech is what is there besides the noise.
            let speech = (power - self.noise()).max(FLOOR_POWER);
            let s = self.speech.get_or_insert(speech);
            *s += LEAK * (speech - *s);
        }
    }

    /// The least block power of the last ~5 s (mean square).
    pub fn noise_floor(&self) -> f32 {
        let done = self.mins[SUBS - self.filled..].iter().copied().fold(f32::MAX, f32::min);
        let m = done.min(self.cur_min);
        if m == f32::MAX { FLOOR_POWER } else { m }
    }

    /// The noise: the floor or the sound outside speech, whichever is
    /// larger (mean square).
    pub fn noise(&self) -> f32 {
        self.noise_floor().max(self.outside).max(FLOOR_POWER)
    }

    /// The speech's level (mean square), once there has been speech.
    pub fn speech(&self) -> Option<f32> {
        self.speech
    }

    /// Speech over noise, dB, once 300 ms have been heard (before any
    /// speech, over [`NOMINAL_SPEECH`]).
    pub fn snr_db(&self) -> Option<f32> {
        if self.blocks < WARM_BLOCKS {
            return None;
        }
        Some(db(self.speech.unwrap_or(NOMINAL_SPEECH)) - db(self.noise()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A block of `db` dBFS power.
    fn block(db: f32, speech_prob: f32) -> Block {
        Block { power: 10f32.powf(db / 10.0), speech_prob }
    }

    /// Speech at -20 dBFS in bursts of 300 ms with 500 ms pauses over a
    /// steady noise of `floor_db`; `click_db`: a click of that power in
    /// every other pause block (the floor stays `floor_db`).
    fn talk(e: &mut SnrEstimator, secs: u32, floor_db: f32, click_db: Option<f32>) {
        let both = 10.0 * (0.01 + 10f32.powf(floor_db / 10.0)).log10();
        for i in 0..secs * 100 {
            match (i % 80 < 30, click_db) {
                (true, _) => e.update(block(both, 0.9)),
                (false, Some(c)) if i % 2 == 0 => e.update(block(c, 0.05)),
                _ => e.update(block(floor_db, 0.05)),
            }
        }
    }

    #[test]
    fn answers_nothing_before_300_ms_of_sound() {
        let mut e = SnrEstimator::new();
        assert_eq!(e.snr_db(), None);
        for _ in 0..29 {
            e.update(block(-20.0, 0.9));
        }
        assert_eq!(e.snr_db(), None);
        let mut quiet = SnrEstimator::new();
        for _ in 0..500 {
            quiet.update(block(-60.0, 0.0));
        }
        let nominal = quiet.snr_db().unwrap_or(f32::NAN);
        assert!((nominal - 34.0).abs() < 0.1, "no speech yet: over -26 dBFS, {nominal}");
    }

    #[test]
    fn steady_noise_gives_the_ratio() {
        for floor in [-25.0, -35.0, -50.0] {
            let mut e = SnrEstimator::new();
            talk(&mut e, 5, floor, None);
            let snr = e.snr_db().unwrap_or(f32::NAN);
            assert!((snr - (-20.0 - floor)).abs() < 1.0, "floor {floor}: {snr}");
        }
    }

    #[test]
    fn digital_silence_is_a_clean_path() {
        let mut e = SnrEstimator::new();
        talk(&mut e, 5, -200.0, None);
        let snr = e.snr_db().unwrap_or(f32::NAN);
        assert!(snr > 70.0, "{snr}");
        // Zeros, NaN and infinities do not poison it.
        e.update(Block { power: f32::NAN, speech_prob: 0.0 });
        e.update(Block { power: f32::INFINITY, speech_prob: 0.0 });
        e.update(Block { power: 0.0, speech_prob: f32::NAN });
        assert!(e.snr_db().is_some_and(|s| s > 70.0));
    }

    #[test]
    fn clicks_the_floor_misses_count_as_noise() {
        // Clicks of -29 dBFS in every other pause block over silence: the
        // floor is silence, the noise outside speech -32 dBFS.
        let mut e = SnrEstimator::new();
        talk(&mut e, 5, -90.0, Some(-29.0));
        let snr = e.snr_db().unwrap_or(f32::NAN);
        assert!((snr - 12.0).abs() < 1.5, "{snr}");
    }

    #[test]
    fn the_ends_and_starts_of_words_are_no_noise() {
        // Clean speech whose 150 ms after each burst and 50 ms before are
        // quiet non-speech (word endings and onsets the suppressor holds
        // for non-speech).
        let mut e = SnrEstimator::new();
        for i in 0..800 {
            match i % 80 {
                0..30 => e.update(block(-20.0, 0.9)),
                30..45 | 75..80 => e.update(block(-35.0, 0.1)),
                _ => e.update(block(-90.0, 0.0)),
            }
        }
        let snr = e.snr_db().unwrap_or(f32::NAN);
        assert!(snr > 60.0, "{snr}");
    }

    #[test]
    fn a_breath_in_a_pause_is_no_noise() {
        let mut e = SnrEstimator::new();
        talk(&mut e, 3, -90.0, None);
        // A loud non-speech block in the middle of a pause.
        for i in 0..80 {
            e.update(block(if i == 60 { -25.0 } else { -90.0 }, 0.05));
        }
        for _ in 0..20 {
            e.update(block(-90.0, 0.0));
        }
        let snr = e.snr_db().unwrap_or(f32::NAN);
        assert!(snr > 50.0, "{snr}");
    }

    #[test]
    fn the_noise_follows_a_change_within_five_seconds() {
        let mut e = SnrEstimator::new();
        talk(&mut e, 4, -30.0, None);
        assert!(e.snr_db().is_some_and(|s| s < 12.0));
        talk(&mut e, 5, -60.0, None);
        let snr = e.snr_db().unwrap_or(f32::NAN);
        assert!(snr > 35.0, "the noise stopped: {snr}");
    }
}
