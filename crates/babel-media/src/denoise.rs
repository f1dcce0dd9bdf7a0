//! Noise suppression that does no harm: RNNoise (`nnnoiseless`) gated on
//! how noisy the microphone is (issue #16 item 2).
//!
//! RNNoise on clean speech still colours it (its band gains dip on quiet
//! syllables and its pitch filter combs the voice: −0.09 to −0.18 PESQ-WB
//! on clean real voices) and delays it by one 10 ms block. So each block
//! goes through RNNoise, [`SnrEstimator`] tells from the block's power and
//! RNNoise's speech probability how noisy the microphone is, and the
//! output is a mix of RNNoise's output and the input by that ratio
//! ([`Tuning`]): all RNNoise at or below [`Tuning::full_db`], all input at
//! or above [`Tuning::clean_db`], in proportion (in dB) between.
//!
//! While the mix is all input, the input passes **undelayed**: a clean
//! microphone gets no suppression delay at all. When noise appears, the
//! output moves to RNNoise's time (10 ms later) in a pause (a block within
//! 6 dB of the noise floor, or one RNNoise holds for no speech: no voice to
//! hear the switch in), crossfaded over the block; it goes back the same
//! way once the ratio has been clean for [`BACK_TO_CLEAN_BLOCKS`].

use nnnoiseless::DenoiseState;

use crate::ns_stage::{Running, Stage};
use crate::snr::{Block, SnrEstimator};

/// Samples per block (10 ms at 48 kHz): RNNoise's frame.
pub const BLOCK: usize = DenoiseState::FRAME_SIZE;
/// Clean blocks in a row before the output drops RNNoise's delay (3 s).
pub const BACK_TO_CLEAN_BLOCKS: u32 = 300;
/// Blocks a pending switch of delay waits for a pause before it happens
/// anyway (1 s).
const SWITCH_WAIT_BLOCKS: u32 = 100;
/// How far the mix moves per block (0 → 1 in 200 ms).
const MIX_STEP: f32 = 0.05;

/// How the mix follows the ratio.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tuning {
    /// At or below this SNR (dB), all RNNoise.
    pub full_db: f32,
    /// At or above this SNR (dB), all input.
    pub clean_db: f32,
    /// Never less input than this share (limits the depth: with 0.1 the
    /// noise is taken down by at most 20 dB; 0 ships, the measurements
    /// found no gain in a limit).
    pub min_dry: f32,
    /// Off: RNNoise alone, always (as before the gate).
    pub gated: bool,
    /// What makes the wet path: RNNoise, or another suppressor after it
    /// or in its place ([`crate::ns_stage`]).
    pub stage: Stage,
}

impl Tuning {
    /// What ships (measured with `babel-quality --noise`, see
    /// BENCHMARKS.md's noise section).
    pub const SHIPPED: Tuning =
        Tuning { full_db: 30.0, clean_db: 45.0, min_dry: 0.0, gated: true, stage: Stage::Rnnoise };
    /// RNNoise alone on every block, as before the gate.
    pub const ALWAYS: Tuning =
        Tuning { full_db: f32::INFINITY, clean_db: f32::INFINITY, min_dry: 0.0, gated: false, stage: Stage::Rnnoise };

    /// The share of RNNoise's output for a ratio.
    pub fn wet(&self, snr_db: f32) -> f32 {
        if !self.gated {
            return 1.0;
        }
        let w = if snr_db <= self.full_db {
            1.0
        } else if snr_db >= self.clean_db {
            0.0
        } else {
            (self.clean_db - snr_db) / (self.clean_db - self.full_db)
        };
        w.min(1.0 - self.min_dry)
    }
}

/// Gated noise suppression for one microphone.
pub struct Denoiser {
    rnn: Box<DenoiseState<'static>>,
    /// The suppressor besides RNNoise, if the tuning has one.
    other: Option<Running>,
    tuning: Tuning,
    est: SnrEstimator,
    scratch_in: [f32; BLOCK],
    wet: [f32; BLOCK],
    /// The input as late as the wet path (RNNoise's output, one block
    /// late, or the stage's: [`Stage::latency`]).
    dry: std::collections::VecDeque<f32>,
    /// The share of RNNoise's output now.
    mix: f32,
    /// The output is in RNNoise's time (10 ms late).
    delayed: bool,
    /// Blocks the ratio has been clean in a row.
    clean_blocks: u32,
    /// Blocks a switch of delay has been waiting for a pause.
    waiting: u32,
    /// RNNoise's speech probability of the last block.
    pub speech_prob: f32,
}

impl std::fmt::Debug for Denoiser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Denoiser")
            .field("tuning", &self.tuning)
            .field("mix", &self.mix)
            .field("delayed", &self.delayed)
            .field("snr_db", &self.est.snr_db())
            .finish()
    }
}

fn power(x: &[f32]) -> f32 {
    x.iter().map(|s| s * s).sum::<f32>() / x.len().max(1) as f32
}

impl Denoiser {
    /// Suppression as shipped.
    pub fn new() -> Self {
        Self::with_tuning(Tuning::SHIPPED)
    }

    /// Suppression with another tuning (the quality harness compares them).
    pub fn with_tuning(tuning: Tuning) -> Self {
        Self {
            rnn: DenoiseState::new(),
            other: tuning.stage.suppressor().map(Running::new),
            tuning,
            est: SnrEstimator::new(),
            scratch_in: [0.0; BLOCK],
            wet: [0.0; BLOCK],
            dry: std::iter::repeat_n(0.0, tuning.stage.latency()).collect(),
            mix: if tuning.gated { 0.0 } else { 1.0 },
            delayed: !tuning.gated,
            clean_blocks: 0,
            waiting: 0,
            speech_prob: 0.0,
        }
    }

    /// The tuning.
    pub fn tuning(&self) -> Tuning {
        self.tuning
    }

    /// The estimated speech-to-noise ratio, dB (none yet in the first
    /// second, or before any speech).
    pub fn snr_db(&self) -> Option<f32> {
        self.est.snr_db()
    }

    /// The share of RNNoise's output in the last block.
    pub fn mix(&self) -> f32 {
        self.mix
    }

    /// Whether the output is in RNNoise's time (10 ms late).
    pub fn delayed(&self) -> bool {
        self.delayed
    }

    /// Processes one block in place (up to [`BLOCK`] samples; a shorter
    /// one is padded with silence for RNNoise).
    pub fn process(&mut self, block: &mut [f32]) {
        let n = block.len().min(BLOCK);
        // RNNoise works on 16-bit-scaled floats.
        for (s, c) in self.scratch_in.iter_mut().zip(block.iter()) {
            *s = c * 32768.0;
        }
        self.scratch_in[n..].fill(0.0);
        self.speech_prob = self.rnn.process_frame(&mut self.wet, &self.scratch_in);
        self.wet.iter_mut().for_each(|s| *s /= 32768.0);
        if let Some(other) = self.other.as_mut() {
            if let Stage::Instead(_) = self.tuning.stage {
                self.wet[..n].copy_from_slice(&block[..n]);
                self.wet[n..].fill(0.0);
            }
            other.process(&mut self.wet);
        }
        let now = power(&block[..n]);
        self.est.update(Block { power: now, speech_prob: self.speech_prob });

        let gated = self.tuning.gated;
        let target = if gated { self.est.snr_db().map_or(self.mix, |snr| self.tuning.wet(snr)) } else { 1.0 };
        self.clean_blocks = if target == 0.0 { self.clean_blocks.saturating_add(1) } else { 0 };
        // RNNoise's output only mixes in while the output is in its time.
        if self.delayed {
            self.mix += (target - self.mix).clamp(-MIX_STEP, MIX_STEP);
        }

        // Which time the output wants to be in, and whether to switch now.
        let want_delayed = if !gated {
            true
        } else if self.delayed {
            self.mix > 0.0 || self.clean_blocks < BACK_TO_CLEAN_BLOCKS
        } else {
            target > 0.0
        };
        let mut switch = false;
        if want_delayed != self.delayed {
            self.waiting += 1;
            // A pause: within 6 dB of the noise floor, or a block RNNoise
            // holds for no speech (only noise to hear the switch in).
            let quiet = now <= self.est.noise_floor() * 4.0 || self.speech_prob < 0.3;
            switch = quiet || self.waiting >= SWITCH_WAIT_BLOCKS;
        } else {
            self.waiting = 0;
        }
        let m = self.mix;
        let delayed = self.delayed;
        for (i, (out, wet)) in block[..n].iter_mut().zip(&self.wet).enumerate() {
            let now_s = *out;
            self.dry.push_back(now_s);
            let late = m * wet + (1.0 - m) * self.dry.pop_front().unwrap_or(0.0);
            *out = if switch {
                let t = (i + 1) as f32 / n as f32;
                let (from, to) = if delayed { (late, now_s) } else { (now_s, late) };
                (1.0 - t) * from + t * to
            } else if delayed {
                late
            } else {
                now_s
            };
        }
        // A short block was padded with silence for RNNoise: so is the dry path.
        for _ in n..BLOCK {
            self.dry.push_back(0.0);
            self.dry.pop_front();
        }
        if switch {
            self.delayed = !self.delayed;
            self.waiting = 0;
        }
    }
}

impl Default for Denoiser {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// White noise of amplitude `amp` from a linear congruential generator.
    pub(crate) fn lcg_noise(n: usize, seed: u32, amp: f32) -> Vec<f32> {
        let mut x = seed;
        (0..n)
            .map(|_| {
                x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                ((x >> 8) as f32 / (1u32 << 24) as f32 - 0.5) * amp
            })
            .collect()
    }

    /// Voice-like bursts: 400 ms of a 150 Hz harmonic series (peak ~0.3)
    /// with a syllable rhythm, then 400 ms of digital silence, `secs` long.
    fn bursts(secs: usize) -> Vec<f32> {
        (0..secs * 48_000)
            .map(|i| {
                let t = i as f32 / 48_000.0;
                if i % 38_400 >= 19_200 {
                    return 0.0;
                }
                let env = 0.5 + 0.5 * (2.0 * std::f32::consts::PI * 4.0 * t).sin();
                let v: f32 =
                    (1..=12).map(|h| (2.0 * std::f32::consts::PI * 150.0 * h as f32 * t).sin() / h as f32).sum();
                0.1 * env * v
            })
            .collect()
    }

    fn run(d: &mut Denoiser, x: &[f32]) -> Vec<f32> {
        let mut y = x.to_vec();
        y.chunks_mut(2 * BLOCK).for_each(|f| f.chunks_mut(BLOCK).for_each(|b| d.process(b)));
        y
    }

    /// Power in dB of `x` over the blocks where `clean` is silent, from
    /// `from` on (skipping one block at each edge of a pause).
    fn pause_power_db(x: &[f32], clean: &[f32], from: usize) -> f32 {
        let mut sum = 0.0f64;
        let mut n = 0usize;
        for (k, (a, c)) in x.chunks(BLOCK).zip(clean.chunks(BLOCK)).enumerate().skip(from / BLOCK) {
            let quiet = |j: usize| clean.chunks(BLOCK).nth(j).is_none_or(|b| b.iter().all(|s| *s == 0.0));
            if c.iter().all(|s| *s == 0.0) && quiet(k.saturating_sub(1)) && quiet(k + 1) {
                sum += a.iter().map(|s| f64::from(*s) * f64::from(*s)).sum::<f64>();
                n += a.len();
            }
        }
        (10.0 * (sum / n.max(1) as f64).log10()) as f32
    }

    #[test]
    fn clean_speech_passes_unchanged_and_undelayed() {
        let x = bursts(6);
        let mut d = Denoiser::new();
        let y = run(&mut d, &x);
        assert!(!d.delayed(), "{d:?}");
        let worst = x.iter().zip(&y).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
        assert!(worst < 1e-6, "clean speech changed by up to {worst}");
        // RNNoise alone changes and delays it (what shipped before).
        let z = run(&mut Denoiser::with_tuning(Tuning::ALWAYS), &x);
        let worst = x.iter().zip(&z).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
        assert!(worst > 0.01, "{worst}");
    }

    #[test]
    fn noisy_speech_gets_its_noise_lowered_by_10_db() {
        let clean = bursts(6);
        // White noise 5 dB under the bursts' power.
        let p = clean.iter().map(|s| s * s).sum::<f32>() / clean.len() as f32 * 2.0;
        let amp = (p / 10f32.powf(0.5) * 12.0).sqrt();
        let noisy: Vec<f32> = clean.iter().zip(lcg_noise(clean.len(), 3, amp)).map(|(c, n)| c + n).collect();
        let mut d = Denoiser::new();
        let y = run(&mut d, &noisy);
        assert!(d.delayed() && d.mix() > 0.99, "{d:?}");
        assert!(d.snr_db().is_some_and(|s| s < 15.0), "{d:?}");
        // After the first two seconds, in the pauses (the output is a
        // block late: compare it shifted back).
        let before = pause_power_db(&noisy, &clean, 96_000);
        let after = pause_power_db(&y[BLOCK..], &clean[..clean.len() - BLOCK], 96_000);
        assert!(after < before - 10.0, "noise in pauses {before:.1} dB -> {after:.1} dB");
    }

    #[test]
    fn back_to_undelayed_once_the_noise_stops() {
        let clean = bursts(24);
        let noisy: Vec<f32> = clean
            .iter()
            .zip(lcg_noise(clean.len(), 5, 0.1))
            .enumerate()
            .map(|(i, (c, n))| if i < 3 * 48_000 { c + n } else { *c })
            .collect();
        let mut d = Denoiser::new();
        let y = run(&mut d, &noisy[..3 * 48_000]);
        assert!(d.delayed(), "{d:?}");
        let _ = y;
        let z = run(&mut d, &noisy[3 * 48_000..]);
        assert!(!d.delayed(), "{d:?}");
        // And the last seconds are the input itself.
        let tail = 2 * 48_000;
        let worst = z[z.len() - tail..]
            .iter()
            .zip(&noisy[noisy.len() - tail..])
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(worst < 1e-6, "{worst}");
    }

    #[test]
    fn rnnoise_output_is_one_block_late() {
        // Ungated, a quiet signal (no suppression on digital near-silence
        // would hide the lag): the best lag of output on input is BLOCK.
        let mut d = Denoiser::with_tuning(Tuning::ALWAYS);
        let x = lcg_noise(BLOCK * 40, 7, 0.3);
        let mut y = x.clone();
        y.chunks_mut(BLOCK).for_each(|b| d.process(b));
        let corr = |lag: usize| x.iter().zip(&y[lag..]).map(|(a, b)| a * b).sum::<f32>();
        let best = (0..2 * BLOCK).max_by(|a, b| corr(*a).total_cmp(&corr(*b)));
        assert_eq!(best, Some(BLOCK));
    }

    #[test]
    fn the_input_lines_up_with_a_later_stage() {
        // Half the wet path, half input: the input must be as late as the
        // wet path (two blocks with a second stage after RNNoise), or the
        // mix combs.
        use crate::ns_stage::Suppressor;
        use crate::spectral::Params;
        let identity = Suppressor::Spectral(Params { floor_db: 0.0, ..Params::default() });
        for stage in [Stage::Rnnoise, Stage::After(identity), Stage::After(Suppressor::Rnnoise)] {
            let half = Tuning { full_db: f32::INFINITY, clean_db: f32::INFINITY, min_dry: 0.5, gated: true, stage };
            let x = lcg_noise(48_000 * 3, 11, 0.3);
            let mut d = Denoiser::with_tuning(half);
            let y = run(&mut d, &x);
            assert!(d.delayed() && (d.mix() - 0.5).abs() < 1e-6, "{d:?}");
            // The same stages ungated, on the same input, are the wet path.
            let wet = run(&mut Denoiser::with_tuning(Tuning { stage, ..Tuning::ALWAYS }), &x);
            let lat = stage.latency();
            let from = 2 * 48_000;
            let worst = (from..x.len()).map(|i| (y[i] - 0.5 * wet[i] - 0.5 * x[i - lat]).abs()).fold(0.0, f32::max);
            assert!(worst < 1e-3, "{stage:?}: {worst}");
        }
    }

    #[test]
    fn the_mix_follows_the_ratio() {
        let t = Tuning::SHIPPED;
        assert_eq!(t.wet(5.0), 1.0);
        assert_eq!(t.wet(t.full_db), 1.0);
        assert_eq!(t.wet(t.clean_db), 0.0);
        assert_eq!(t.wet(60.0), 0.0);
        let mid = t.wet((t.full_db + t.clean_db) / 2.0);
        assert!((mid - 0.5).abs() < 1e-6, "{mid}");
        assert_eq!(Tuning::ALWAYS.wet(80.0), 1.0);
        let limited = Tuning { min_dry: 0.2, ..t };
        assert!((limited.wet(0.0) - 0.8).abs() < 1e-6);
    }
}
