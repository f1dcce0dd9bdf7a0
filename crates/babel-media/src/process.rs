//! Processing around the codec: noise suppression (RNNoise via
//! nnnoiseless, gated on how noisy the microphone is: [`crate::denoise`];
//! on by default), mute, input and output gain, level values for meters,
//! and a mixer for group calls. Works frame by frame, no allocation per
//! frame.

use crate::audio::level_db;
use crate::denoise::{BLOCK, Denoiser, Tuning};

/// The capture side: noise suppression, gain, mute.
pub struct CaptureChain {
    denoise: Option<Box<Denoiser>>,
    tuning: Tuning,
    /// Linear gain applied after noise suppression.
    pub gain: f32,
    /// Send silence while set.
    pub muted: bool,
    /// Level of the last frame, dBFS (before mute, for the meter).
    pub level_db: f32,
}

impl std::fmt::Debug for CaptureChain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaptureChain")
            .field("noise_suppression", &self.denoise.is_some())
            .field("gain", &self.gain)
            .field("muted", &self.muted)
            .finish()
    }
}

impl CaptureChain {
    /// A chain with noise suppression on or off.
    pub fn new(noise_suppression: bool) -> Self {
        Self::with_tuning(noise_suppression, Tuning::SHIPPED)
    }

    /// A chain whose noise suppression is tuned otherwise (the quality
    /// harness compares tunings, e.g. [`Tuning::ALWAYS`], RNNoise alone).
    pub fn with_tuning(noise_suppression: bool, tuning: Tuning) -> Self {
        Self {
            denoise: noise_suppression.then(|| Box::new(Denoiser::with_tuning(tuning))),
            tuning,
            gain: 1.0,
            muted: false,
            level_db: -100.0,
        }
    }

    /// Switches noise suppression.
    pub fn set_noise_suppression(&mut self, on: bool) {
        if on && self.denoise.is_none() {
            self.denoise = Some(Box::new(Denoiser::with_tuning(self.tuning)));
        } else if !on {
            self.denoise = None;
        }
    }

    /// Whether noise suppression is on.
    pub fn noise_suppression(&self) -> bool {
        self.denoise.is_some()
    }

    /// The noise suppressor, while it is on.
    pub fn denoiser(&self) -> Option<&Denoiser> {
        self.denoise.as_deref()
    }

    /// Processes a frame in place (a multiple of 480 samples: 10 or 20 ms).
    pub fn process(&mut self, frame: &mut [f32]) {
        if let Some(d) = self.denoise.as_mut() {
            frame.chunks_mut(BLOCK).for_each(|b| d.process(b));
        }
        if self.gain != 1.0 {
            frame.iter_mut().for_each(|s| *s = (*s * self.gain).clamp(-1.0, 1.0));
        }
        self.level_db = level_db(frame);
        if self.muted {
            frame.fill(0.0);
        }
    }
}

/// Adds frames from several speakers into one, with a soft limiter so that
/// two loud voices do not clip.
pub fn mix_into(out: &mut [f32], input: &[f32]) {
    for (o, i) in out.iter_mut().zip(input) {
        *o += i;
    }
}

/// Soft-limits a mixed frame into -1..1 (tanh above 0.5).
pub fn soft_limit(frame: &mut [f32]) {
    for s in frame.iter_mut() {
        let a = s.abs();
        if a > 0.5 {
            *s = s.signum() * (0.5 + 0.5 * ((a - 0.5) / 0.5).tanh());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noise(n: usize, seed: u32) -> Vec<f32> {
        let mut x = seed;
        (0..n)
            .map(|_| {
                x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                ((x >> 8) as f32 / (1u32 << 24) as f32 - 0.5) * 0.1
            })
            .collect()
    }

    #[test]
    fn noise_suppression_removes_steady_noise() {
        let mut on = CaptureChain::new(true);
        let mut off = CaptureChain::new(false);
        let (mut e_on, mut e_off) = (0.0, 0.0);
        for k in 0..100 {
            let mut a = noise(960, k);
            let mut b = a.clone();
            on.process(&mut a);
            off.process(&mut b);
            if k > 50 {
                e_on += a.iter().map(|s| s * s).sum::<f32>();
                e_off += b.iter().map(|s| s * s).sum::<f32>();
            }
        }
        assert!(e_on < e_off * 0.1, "suppressed {e_on} vs {e_off}");
    }

    #[test]
    fn mute_gain_and_level() {
        let mut c = CaptureChain::new(false);
        c.gain = 2.0;
        let mut f = vec![0.25; 960];
        c.process(&mut f);
        assert_eq!(f[0], 0.5);
        assert!((c.level_db + 6.02).abs() < 0.1);
        c.muted = true;
        let mut f = vec![0.25; 960];
        c.process(&mut f);
        assert!(f.iter().all(|s| *s == 0.0));
        assert!(c.level_db > -10.0, "the meter still shows the voice while muted");
        c.set_noise_suppression(true);
        assert!(c.noise_suppression());
    }

    #[test]
    fn mixing_and_limiting() {
        let mut out = vec![0.0; 4];
        mix_into(&mut out, &[0.6, -0.6, 0.1, 0.0]);
        mix_into(&mut out, &[0.6, -0.6, 0.1, 0.0]);
        soft_limit(&mut out);
        assert!(out.iter().all(|s| s.abs() < 1.0));
        assert!((out[2] - 0.2).abs() < 1e-6, "quiet samples are untouched");
        assert!(out[0] > 0.9);
    }
}
