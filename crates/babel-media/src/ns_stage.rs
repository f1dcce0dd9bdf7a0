//! What the noise suppressor runs besides RNNoise (issue #16 item 2): the
//! candidates the quality harness compares, and what ships
//! ([`crate::denoise::Tuning::SHIPPED`]'s stage).
//!
//! A stage works on 10 ms blocks ([`crate::denoise::BLOCK`]) of the
//! suppressor's "wet" path: RNNoise's output, or the microphone itself in
//! place of RNNoise (RNNoise still runs then, for its speech probability,
//! which the ratio estimate needs).

use nnnoiseless::DenoiseState;
use sonora::config::{NoiseSuppression, NoiseSuppressionLevel};
use sonora::{AudioProcessing, Config, StreamConfig};

use crate::denoise::BLOCK;
use crate::spectral::{self, Spectral};

/// WebRTC's noise suppressor's depth (`sonora`'s levels).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebRtcLevel {
    /// ~6 dB.
    Low,
    /// ~12 dB.
    Moderate,
    /// ~18 dB.
    High,
    /// ~21 dB.
    VeryHigh,
}

impl WebRtcLevel {
    fn sonora(self) -> NoiseSuppressionLevel {
        match self {
            WebRtcLevel::Low => NoiseSuppressionLevel::Low,
            WebRtcLevel::Moderate => NoiseSuppressionLevel::Moderate,
            WebRtcLevel::High => NoiseSuppressionLevel::High,
            WebRtcLevel::VeryHigh => NoiseSuppressionLevel::VeryHigh,
        }
    }
}

/// A suppressor besides RNNoise.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Suppressor {
    /// WebRTC's classic suppressor (`sonora-ns`).
    WebRtc(WebRtcLevel),
    /// The per-frequency MMSE-LSA suppressor of [`crate::spectral`].
    Spectral(spectral::Params),
    /// RNNoise again (a second instance).
    Rnnoise,
}

impl Suppressor {
    /// How late its output is, in samples (measured:
    /// `each_suppressor_is_as_late_as_it_says`).
    pub fn latency(&self) -> usize {
        match self {
            Suppressor::WebRtc(_) => WEBRTC_LATENCY,
            Suppressor::Spectral(_) => spectral::HOP,
            Suppressor::Rnnoise => BLOCK,
        }
    }
}

/// How late WebRTC's suppressor's output is at 48 kHz (its band split and
/// its own framing), in samples.
const WEBRTC_LATENCY: usize = 334;

/// What runs on the wet path.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Stage {
    /// RNNoise alone.
    Rnnoise,
    /// RNNoise, then another suppressor on its output.
    After(Suppressor),
    /// Another suppressor in place of RNNoise's output.
    Instead(Suppressor),
}

impl Stage {
    /// Parses a harness name: `rnnoise`, `rnnoise+rnnoise`, `webrtc-LEVEL`, `rnnoise+webrtc-LEVEL`
    /// (LEVEL low|moderate|high|veryhigh), `spectral`, `rnnoise+spectral`, a
    /// spectral one optionally with `:FLOOR_DB`.
    pub fn parse(s: &str) -> Option<Stage> {
        if s == "rnnoise" {
            return Some(Stage::Rnnoise);
        }
        let (after, rest) = match s.strip_prefix("rnnoise+") {
            Some(r) => (true, r),
            None => (false, s),
        };
        let sup = if rest == "rnnoise" && after {
            Suppressor::Rnnoise
        } else if let Some(level) = rest.strip_prefix("webrtc-") {
            Suppressor::WebRtc(match level {
                "low" => WebRtcLevel::Low,
                "moderate" => WebRtcLevel::Moderate,
                "high" => WebRtcLevel::High,
                "veryhigh" => WebRtcLevel::VeryHigh,
                _ => return None,
            })
        } else if let Some(p) = rest.strip_prefix("spectral") {
            let mut params = spectral::Params::default();
            if let Some(floor) = p.strip_prefix(':') {
                params.floor_db = floor.parse().ok().filter(|f: &f32| (-40.0..=0.0).contains(f))?;
            } else if !p.is_empty() {
                return None;
            }
            Suppressor::Spectral(params)
        } else {
            return None;
        };
        Some(if after { Stage::After(sup) } else { Stage::Instead(sup) })
    }

    /// How late the wet path is, in samples.
    pub fn latency(&self) -> usize {
        match self {
            Stage::Rnnoise => BLOCK,
            Stage::After(s) => BLOCK + s.latency(),
            Stage::Instead(s) => s.latency(),
        }
    }

    /// The other suppressor, if any.
    pub fn suppressor(&self) -> Option<Suppressor> {
        match self {
            Stage::Rnnoise => None,
            Stage::After(s) | Stage::Instead(s) => Some(*s),
        }
    }
}

/// A running suppressor besides RNNoise.
pub enum Running {
    /// WebRTC's, in an audio processing module with nothing else on.
    WebRtc(Box<AudioProcessing>),
    /// The spectral one.
    Spectral(Box<Spectral>),
    /// A second RNNoise, and its 16-bit-scaled input.
    Rnnoise(Box<DenoiseState<'static>>, Box<[f32; BLOCK]>),
}

impl std::fmt::Debug for Running {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Running::WebRtc(_) => f.write_str("WebRtc"),
            Running::Spectral(s) => s.fmt(f),
            Running::Rnnoise(..) => f.write_str("Rnnoise"),
        }
    }
}

impl Running {
    /// Starts a suppressor.
    pub fn new(s: Suppressor) -> Running {
        match s {
            Suppressor::WebRtc(level) => {
                let config = Config {
                    high_pass_filter: None,
                    noise_suppression: Some(NoiseSuppression { level: level.sonora(), ..Default::default() }),
                    ..Default::default()
                };
                let apm = AudioProcessing::builder()
                    .config(config)
                    .capture_config(StreamConfig::new(48_000, 1))
                    .render_config(StreamConfig::new(48_000, 1))
                    .build();
                Running::WebRtc(Box::new(apm))
            }
            Suppressor::Spectral(p) => Running::Spectral(Box::new(Spectral::new(p))),
            Suppressor::Rnnoise => Running::Rnnoise(DenoiseState::new(), Box::new([0.0; BLOCK])),
        }
    }

    /// Processes one block in place (RNNoise's 16-bit scale is not used:
    /// full scale is 1.0).
    pub fn process(&mut self, block: &mut [f32; BLOCK]) {
        match self {
            Running::WebRtc(apm) => {
                let mut out = [0.0f32; BLOCK];
                if apm.process_capture_f32(&[&block[..]], &mut [&mut out]).is_ok() {
                    *block = out;
                }
            }
            Running::Spectral(s) => s.process(block),
            Running::Rnnoise(rnn, scaled) => {
                for (s, x) in scaled.iter_mut().zip(block.iter()) {
                    *s = x * 32768.0;
                }
                rnn.process_frame(&mut block[..], &scaled[..]);
                block.iter_mut().for_each(|s| *s /= 32768.0);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_parse() {
        assert_eq!(Stage::parse("rnnoise"), Some(Stage::Rnnoise));
        assert_eq!(Stage::parse("webrtc-high"), Some(Stage::Instead(Suppressor::WebRtc(WebRtcLevel::High))));
        assert_eq!(
            Stage::parse("rnnoise+webrtc-veryhigh"),
            Some(Stage::After(Suppressor::WebRtc(WebRtcLevel::VeryHigh)))
        );
        let Some(Stage::After(Suppressor::Spectral(p))) = Stage::parse("rnnoise+spectral:-15") else {
            panic!("rnnoise+spectral:-15 does not parse");
        };
        assert_eq!(p.floor_db, -15.0);
        assert!(Stage::parse("spectral").is_some());
        assert_eq!(Stage::parse("rnnoise+rnnoise"), Some(Stage::After(Suppressor::Rnnoise)));
        for bad in ["rnnoise+rnnoise+rnnoise", "webrtc-loud", "spectral:x", "spectral:-90", "spectralx", "rnnoise+", ""]
        {
            assert_eq!(Stage::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn each_suppressor_is_as_late_as_it_says() {
        let quiet = spectral::Params { floor_db: 0.0, ..spectral::Params::default() };
        for sup in [Suppressor::WebRtc(WebRtcLevel::Low), Suppressor::Spectral(quiet), Suppressor::Rnnoise] {
            let mut r = Running::new(sup);
            let mut x = 9u32;
            let sig: Vec<f32> = (0..BLOCK * 100)
                .map(|_| {
                    x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                    ((x >> 8) as f32 / (1u32 << 24) as f32 - 0.5) * 0.3
                })
                .collect();
            let mut y = sig.clone();
            for b in y.chunks_mut(BLOCK) {
                let mut a = [0.0f32; BLOCK];
                a.copy_from_slice(b);
                r.process(&mut a);
                b.copy_from_slice(&a);
            }
            let corr = |lag: usize| sig[..sig.len() - 3 * BLOCK].iter().zip(&y[lag..]).map(|(a, b)| a * b).sum::<f32>();
            let best = (0..3 * BLOCK).max_by(|a, b| corr(*a).total_cmp(&corr(*b)));
            assert_eq!(best, Some(sup.latency()), "{sup:?}");
        }
    }

    #[test]
    fn webrtc_takes_steady_noise_down() {
        let mut x = 1u32;
        let mut r = Running::new(Suppressor::WebRtc(WebRtcLevel::VeryHigh));
        let (mut before, mut after) = (0.0f32, 0.0f32);
        for k in 0..300 {
            let mut b = [0.0f32; BLOCK];
            for s in b.iter_mut() {
                x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                *s = ((x >> 8) as f32 / (1u32 << 24) as f32 - 0.5) * 0.2;
            }
            let p: f32 = b.iter().map(|s| s * s).sum();
            r.process(&mut b);
            if k >= 100 {
                before += p;
                after += b.iter().map(|s| s * s).sum::<f32>();
            }
        }
        let db = 10.0 * (after / before).log10();
        assert!(db < -12.0, "white noise down by only {db:.1} dB");
    }
}
