//! A per-frequency statistical noise suppressor (issue #16 item 2): short
//! time Fourier transform, a noise power estimate per bin, and the MMSE
//! log-spectral amplitude gain (Ephraim & Malah 1985) with the
//! decision-directed a-priori SNR and a gain floor. Pure arithmetic, no IO.
//!
//! * **Framing:** 20 ms windows every 10 ms (960 / 480 samples at 48 kHz),
//!   a square-root Hann window on analysis and synthesis (their product
//!   overlaps to exactly one), so with every gain at one the output is the
//!   input [`HOP`] samples (one block, as RNNoise's) late.
//! * **Noise:** the speech-presence-probability estimator of Gerkmann &
//!   Hendriks (2012): per bin, the a-posteriori probability of speech
//!   under a fixed a-priori SNR of [`Params::xi_h1_db`], its smoothed value
//!   capped so that the estimate never stalls, and the noise power moved
//!   towards the expected noise power of the bin. It follows a noise that
//!   changes within a second and needs no minimum search.
//! * **Gain:** `ξ/(1+ξ)·exp(E1(v)/2)`, `v = ξγ/(1+ξ)`, with `ξ` the
//!   decision-directed a-priori SNR (weight [`Params::dd`] on the last
//!   frame's clean estimate), at least [`Params::xi_min_db`], and the gain
//!   at least [`Params::floor_db`].
//!
//! The quality harness (`babel-quality --noise`) measures it alone and on
//! RNNoise's output (see BENCHMARKS.md's noise section).

use std::sync::Arc;

use realfft::num_complex::Complex32;
use realfft::{ComplexToReal, RealFftPlanner, RealToComplex};

/// Samples per hop (10 ms at 48 kHz).
pub const HOP: usize = 480;
/// Samples per window (20 ms).
pub const WIN: usize = 2 * HOP;
/// Frequency bins.
pub const BINS: usize = WIN / 2 + 1;
/// Frames whose mean power starts the noise estimate.
const INIT_FRAMES: u32 = 5;

/// The suppressor's settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Params {
    /// Weight of the last frame's clean estimate in the a-priori SNR.
    pub dd: f32,
    /// The least a-priori SNR, dB.
    pub xi_min_db: f32,
    /// The least gain, dB.
    pub floor_db: f32,
    /// The a-priori SNR assumed under speech for its probability, dB.
    pub xi_h1_db: f32,
    /// Smoothing of the noise power per frame.
    pub alpha_n: f32,
}

impl Default for Params {
    fn default() -> Self {
        Params { dd: 0.98, xi_min_db: -25.0, floor_db: -10.0, xi_h1_db: 15.0, alpha_n: 0.8 }
    }
}

/// The exponential integral E1(x) for x > 0 (Abramowitz & Stegun 5.1.53
/// below 1, 5.1.56 above; absolute error under 5e-5 relative to the
/// function's size).
pub fn e1(x: f32) -> f32 {
    let x = x.max(1e-10);
    if x < 1.0 {
        -x.ln() - 0.577_215_7
            + x * (0.999_991_93 + x * (-0.249_910_55 + x * (0.055_199_68 + x * (-0.009_760_04 + x * 0.001_078_57))))
    } else {
        let num = x * x + 2.334_733 * x + 0.250_621;
        let den = x * x + 3.330_657 * x + 1.681_534;
        num / den * (-x.min(80.0)).exp() / x
    }
}

/// The MMSE log-spectral amplitude gain for an a-priori SNR `xi` and an
/// a-posteriori SNR `gamma` (both linear).
pub fn lsa_gain(xi: f32, gamma: f32) -> f32 {
    let v = xi / (1.0 + xi) * gamma;
    // E1 falls fast: past 20 the factor is one to within 1e-10.
    let e = if v > 20.0 { 0.0 } else { e1(v) };
    xi / (1.0 + xi) * (0.5 * e).exp()
}

/// The suppressor for one stream.
pub struct Spectral {
    params: Params,
    fwd: Arc<dyn RealToComplex<f32>>,
    inv: Arc<dyn ComplexToReal<f32>>,
    window: Vec<f32>,
    /// The last [`WIN`] input samples.
    input: Vec<f32>,
    /// The second half of the last synthesised frame.
    overlap: Vec<f32>,
    frame: Vec<f32>,
    spec: Vec<Complex32>,
    scratch: Vec<Complex32>,
    noise: Vec<f32>,
    prev_clean: Vec<f32>,
    pbar: Vec<f32>,
    frames: u32,
    /// The mean gain over the bins of the last frame.
    pub mean_gain: f32,
}

impl std::fmt::Debug for Spectral {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spectral").field("params", &self.params).field("frames", &self.frames).finish()
    }
}

impl Spectral {
    /// A suppressor with these settings.
    pub fn new(params: Params) -> Self {
        let mut planner = RealFftPlanner::<f32>::new();
        let fwd = planner.plan_fft_forward(WIN);
        let inv = planner.plan_fft_inverse(WIN);
        let scratch_len = fwd.get_scratch_len().max(inv.get_scratch_len());
        let window =
            (0..WIN).map(|i| (0.5 - 0.5 * (2.0 * std::f32::consts::PI * i as f32 / WIN as f32).cos()).sqrt()).collect();
        Spectral {
            params,
            fwd,
            inv,
            window,
            input: vec![0.0; WIN],
            overlap: vec![0.0; HOP],
            frame: vec![0.0; WIN],
            spec: vec![Complex32::new(0.0, 0.0); BINS],
            scratch: vec![Complex32::new(0.0, 0.0); scratch_len],
            noise: vec![0.0; BINS],
            prev_clean: vec![0.0; BINS],
            pbar: vec![0.5; BINS],
            frames: 0,
            mean_gain: 1.0,
        }
    }

    /// The settings.
    pub fn params(&self) -> Params {
        self.params
    }

    /// The noise power estimate of a bin (of the windowed frame's
    /// spectrum; none before the first frames).
    pub fn noise(&self, bin: usize) -> f32 {
        self.noise.get(bin).copied().unwrap_or(0.0)
    }

    /// Processes one block of [`HOP`] samples in place (a shorter one is
    /// padded with silence); the output is [`HOP`] samples late.
    pub fn process(&mut self, block: &mut [f32]) {
        let n = block.len().min(HOP);
        self.input.copy_within(HOP.., 0);
        self.input[HOP..HOP + n].copy_from_slice(&block[..n]);
        self.input[HOP + n..].fill(0.0);
        for ((f, x), w) in self.frame.iter_mut().zip(&self.input).zip(&self.window) {
            *f = x * w;
        }
        if self.fwd.process_with_scratch(&mut self.frame, &mut self.spec, &mut self.scratch).is_err() {
            return;
        }
        self.gains();
        // The inverse wants real DC and Nyquist bins.
        self.spec[0].im = 0.0;
        self.spec[BINS - 1].im = 0.0;
        if self.inv.process_with_scratch(&mut self.spec, &mut self.frame, &mut self.scratch).is_err() {
            return;
        }
        let scale = 1.0 / WIN as f32;
        for (f, w) in self.frame.iter_mut().zip(&self.window) {
            *f *= w * scale;
        }
        for (i, out) in block[..n].iter_mut().enumerate() {
            *out = self.overlap[i] + self.frame[i];
        }
        self.overlap.copy_from_slice(&self.frame[HOP..]);
    }

    fn gains(&mut self) {
        let p = self.params;
        self.frames = self.frames.saturating_add(1);
        if self.frames <= INIT_FRAMES {
            let k = self.frames as f32;
            for (n, s) in self.noise.iter_mut().zip(&self.spec) {
                *n += (s.norm_sqr() - *n) / k;
            }
            self.mean_gain = 1.0;
            return;
        }
        let xi_h1 = 10f32.powf(p.xi_h1_db / 10.0);
        let xi_min = 10f32.powf(p.xi_min_db / 10.0);
        let floor = 10f32.powf(p.floor_db / 20.0);
        let mut sum = 0.0;
        for b in 0..BINS {
            let y2 = self.spec[b].norm_sqr();
            let noise = self.noise[b].max(1e-12);
            // Speech presence (a prior of 1/2), and the noise moved on.
            let post = (y2 / noise * xi_h1 / (1.0 + xi_h1)).min(80.0);
            let mut ph1 = 1.0 / (1.0 + (1.0 + xi_h1) * (-post).exp());
            self.pbar[b] = 0.9 * self.pbar[b] + 0.1 * ph1;
            if self.pbar[b] > 0.99 {
                ph1 = ph1.min(0.99);
            }
            let expected = (1.0 - ph1) * y2 + ph1 * noise;
            let noise = (p.alpha_n * noise + (1.0 - p.alpha_n) * expected).max(1e-12);
            self.noise[b] = noise;
            // The gain.
            let gamma = (y2 / noise).max(1e-6);
            let xi = (p.dd * self.prev_clean[b] / noise + (1.0 - p.dd) * (gamma - 1.0).max(0.0)).max(xi_min);
            let g = lsa_gain(xi, gamma).clamp(floor, 1.0);
            self.prev_clean[b] = g * g * y2;
            self.spec[b] *= g;
            sum += g;
        }
        self.mean_gain = sum / BINS as f32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::denoise::tests::lcg_noise as noise;

    fn run(s: &mut Spectral, x: &[f32]) -> Vec<f32> {
        let mut y = x.to_vec();
        y.chunks_mut(HOP).for_each(|b| s.process(b));
        y
    }

    fn power(x: &[f32]) -> f32 {
        x.iter().map(|s| s * s).sum::<f32>() / x.len().max(1) as f32
    }

    #[test]
    fn e1_matches_known_values() {
        // E1 from tables (Abramowitz & Stegun, table 5.1).
        for (x, want) in [
            (0.01, 4.037_929_6),
            (0.1, 1.822_923_9),
            (0.5, 0.559_773_6),
            (1.0, 0.219_383_9),
            (2.0, 0.048_900_5),
            (5.0, 0.001_148_3),
        ] {
            let got = e1(x);
            assert!((got - want).abs() < 2e-4 * want.max(1.0), "E1({x}) = {got}, want {want}");
        }
    }

    #[test]
    fn lsa_gain_passes_strong_bins_and_cuts_weak_ones() {
        assert!(lsa_gain(1000.0, 1000.0) > 0.99);
        assert!(lsa_gain(0.003, 1.0) < 0.1);
        // More a-priori SNR, more gain.
        assert!(lsa_gain(1.0, 2.0) > lsa_gain(0.1, 2.0));
    }

    #[test]
    fn with_unit_gains_the_output_is_the_input_one_hop_late() {
        // A floor of 0 dB holds every gain at one.
        let mut s = Spectral::new(Params { floor_db: 0.0, ..Params::default() });
        let x = noise(HOP * 40, 1, 0.5);
        let y = run(&mut s, &x);
        let worst = x[..x.len() - HOP].iter().zip(&y[HOP..]).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
        assert!(worst < 1e-4, "{worst}");
    }

    #[test]
    fn steady_noise_is_taken_down_to_the_floor() {
        let mut s = Spectral::new(Params::default());
        let x = noise(48_000 * 3, 2, 0.2);
        let y = run(&mut s, &x);
        let (before, after) = (power(&x[48_000..]), power(&y[48_000..]));
        let db = 10.0 * (after / before).log10();
        // The floor is −10 dB; the gain sits near it.
        assert!((-11.5..-7.0).contains(&db), "noise {db:.1} dB");
    }

    #[test]
    fn a_tone_in_noise_keeps_its_level_while_the_noise_goes() {
        // Tone bursts, 200 ms on, 200 ms off, as syllables come and go (a
        // tone that never stops is a steady noise, and the estimate takes
        // it in within a second).
        let mut s = Spectral::new(Params::default());
        let n = 48_000 * 3;
        let tone: Vec<f32> = (0..n)
            .map(|i| {
                let on = (i / 9_600) % 2 == 0;
                if on { 0.3 * (2.0 * std::f32::consts::PI * 1000.0 * i as f32 / 48_000.0).sin() } else { 0.0 }
            })
            .collect();
        let hiss = noise(n, 3, 0.2);
        let x: Vec<f32> = tone.iter().zip(&hiss).map(|(a, b)| a + b).collect();
        let y = run(&mut s, &x);
        // Project the output (shifted back a hop) on the tone, and on the
        // noise: the tone stays within 1 dB, the noise falls by over 7 dB.
        let from = 48_000;
        let proj = |sig: &[f32]| {
            let dot: f32 = y[from + HOP..].iter().zip(&sig[from..n - HOP]).map(|(a, b)| a * b).sum();
            dot / sig[from..n - HOP].iter().map(|s| s * s).sum::<f32>()
        };
        let kept = proj(&tone);
        assert!((0.89..1.01).contains(&kept), "tone kept at {kept}");
        let residual: Vec<f32> = y[from + HOP..].iter().zip(&tone[from..n - HOP]).map(|(a, b)| a - kept * b).collect();
        let db = 10.0 * (power(&residual) / power(&hiss[from..])).log10();
        assert!(db < -7.0, "noise {db:.1} dB");
    }

    #[test]
    fn the_noise_estimate_follows_a_louder_noise() {
        let mut s = Spectral::new(Params::default());
        let quiet = noise(48_000, 4, 0.02);
        let loud = noise(48_000 * 2, 5, 0.2);
        run(&mut s, &quiet);
        let before = s.noise(200);
        run(&mut s, &loud);
        let after = s.noise(200);
        // 20 dB louder: the estimate rises by most of that within 2 s.
        assert!(after > before * 30.0, "{before} -> {after}");
    }
}
