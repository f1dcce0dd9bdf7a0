//! Acoustic echo cancellation and automatic gain control: WebRTC's AEC3
//! and AGC2 (the pure-Rust `sonora` port), on by default.
//!
//! Whatever is played to the loudspeaker goes in through [`EchoLevel::render`];
//! every microphone frame goes through [`EchoLevel::capture`], which removes
//! the part of it that is the loudspeaker's sound coming back (the far end
//! would otherwise hear itself, delayed), then evens out the level (a quiet
//! microphone is raised, a loud one is kept from clipping). AEC3 finds the
//! delay between the two streams by itself (up to about half a second).
//!
//! Works at 48 kHz mono in 10 ms blocks; frames of 10 or 20 ms are split.
//! Echo cancellation delays the microphone by about 8 ms (AEC3's block
//! framing); gain control adds nothing measurable.

use sonora::config::{AdaptiveDigital, EchoCanceller, GainController2, TransparentModeType};
use sonora::{AudioProcessing, Config, StreamConfig};

/// Samples in one 10 ms block at 48 kHz.
const BLOCK: usize = 480;
/// The sample rate everything runs at.
const RATE: u32 = 48_000;

/// Echo cancellation and gain control for one call.
pub struct EchoLevel {
    apm: Option<AudioProcessing>,
    echo_cancellation: bool,
    auto_gain: bool,
    scratch: Vec<f32>,
}

impl std::fmt::Debug for EchoLevel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EchoLevel")
            .field("echo_cancellation", &self.echo_cancellation)
            .field("auto_gain", &self.auto_gain)
            .finish()
    }
}

impl EchoLevel {
    /// Echo cancellation and/or automatic gain control; with both off,
    /// frames pass untouched at no cost.
    pub fn new(echo_cancellation: bool, auto_gain: bool) -> EchoLevel {
        let apm = (echo_cancellation || auto_gain).then(|| {
            let config = Config {
                // No extra high-pass filter: on clean speech it cost 0.35
                // PESQ-WB (4.46 -> 4.11 through the quality harness), and
                // the microphone's rumble is noise suppression's job.
                high_pass_filter: None,
                // The HMM transparent mode notices quickly when there is no
                // echo at all (a headset) and then leaves the voice alone.
                echo_canceller: echo_cancellation
                    .then(|| EchoCanceller { transparent_mode: TransparentModeType::Hmm, ..Default::default() }),
                // Start at unity gain (WebRTC starts at +15 dB, which clips a
                // microphone that is already at a good level) and move at
                // most 6 dB a second.
                gain_controller2: auto_gain.then(|| GainController2 {
                    adaptive_digital: Some(AdaptiveDigital { initial_gain_db: 0.0, ..Default::default() }),
                    ..Default::default()
                }),
                ..Default::default()
            };
            let mut apm = AudioProcessing::builder()
                .config(config)
                .capture_config(StreamConfig::new(RATE, 1))
                .render_config(StreamConfig::new(RATE, 1))
                .build();
            // A hint only: AEC3 estimates the real delay itself.
            let _ = apm.set_stream_delay_ms(0);
            apm
        });
        EchoLevel { apm, echo_cancellation, auto_gain, scratch: vec![0.0; BLOCK] }
    }

    /// Whether echo cancellation is on.
    pub fn echo_cancellation(&self) -> bool {
        self.echo_cancellation
    }

    /// Whether automatic gain control is on.
    pub fn auto_gain(&self) -> bool {
        self.auto_gain
    }

    /// Tells the canceller what the loudspeaker is playing (a multiple of
    /// 480 samples; a shorter tail block is padded with silence).
    pub fn render(&mut self, frame: &[f32]) {
        let Some(apm) = self.apm.as_mut() else { return };
        if !self.echo_cancellation {
            return;
        }
        for chunk in frame.chunks(BLOCK) {
            self.scratch[..chunk.len()].copy_from_slice(chunk);
            self.scratch[chunk.len()..].fill(0.0);
            let mut out = [0.0f32; BLOCK];
            let _ = apm.process_render_f32(&[&self.scratch], &mut [&mut out]);
        }
    }

    /// Processes a microphone frame in place (a multiple of 480 samples).
    pub fn capture(&mut self, frame: &mut [f32]) {
        let Some(apm) = self.apm.as_mut() else { return };
        for chunk in frame.chunks_mut(BLOCK) {
            let n = chunk.len();
            self.scratch[..n].copy_from_slice(chunk);
            self.scratch[n..].fill(0.0);
            let mut out = [0.0f32; BLOCK];
            if apm.process_capture_f32(&[&self.scratch], &mut [&mut out]).is_ok() {
                chunk.copy_from_slice(&out[..n]);
            }
        }
    }

    /// The canceller's own estimate of its echo return loss enhancement, dB.
    pub fn erle_db(&self) -> Option<f64> {
        self.apm.as_ref().and_then(|a| a.statistics().echo_return_loss_enhancement)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audio::level_db;

    /// Speech-like test signal: noise shaped by a syllable-rate envelope,
    /// from a small deterministic generator.
    fn babble(seconds: f32, seed: u64, level: f32) -> Vec<f32> {
        let n = (seconds * RATE as f32) as usize;
        let mut x = seed;
        let mut lp = 0.0f32;
        (0..n)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let white = (x >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0;
                lp = 0.7 * lp + 0.3 * white;
                let t = i as f32 / RATE as f32;
                let env = (0.5 + 0.5 * (2.0 * std::f32::consts::PI * 3.0 * t + seed as f32).sin()).powi(2);
                level * lp * env
            })
            .collect()
    }

    /// A room: the loudspeaker's sound comes back 60 ms later, 6 dB down and
    /// low-passed, with a weaker reflection 25 ms after that.
    fn room(far: &[f32]) -> Vec<f32> {
        let (d1, d2) = (RATE as usize * 60 / 1000, RATE as usize * 85 / 1000);
        let mut lp = 0.0f32;
        (0..far.len())
            .map(|i| {
                let a = if i >= d1 { far[i - d1] } else { 0.0 };
                let b = if i >= d2 { far[i - d2] } else { 0.0 };
                lp = 0.6 * lp + 0.4 * (0.5 * a + 0.2 * b);
                lp
            })
            .collect()
    }

    /// A voiced test signal (harmonics of a gliding pitch, in syllables),
    /// which the gain controller's voice detector takes for speech.
    fn voiced(seconds: f32, level: f32) -> Vec<f32> {
        let n = (seconds * RATE as f32) as usize;
        (0..n)
            .map(|i| {
                let t = i as f32 / RATE as f32;
                let env = (std::f32::consts::PI * (t * 4.0).fract()).sin();
                let f0 = 120.0 + 30.0 * (t * 0.7).sin();
                let s: f32 = (1..8).map(|h| (2.0 * std::f32::consts::PI * f0 * h as f32 * t).sin() / h as f32).sum();
                level * env * s
            })
            .collect()
    }

    fn power(x: &[f32]) -> f64 {
        x.iter().map(|&s| f64::from(s) * f64::from(s)).sum::<f64>() / x.len().max(1) as f64
    }

    /// Runs a far-end stream and a microphone stream through the canceller
    /// frame by frame, as the engine does (render before capture).
    fn run(ec: &mut EchoLevel, far: &[f32], mic: &[f32], frame: usize) -> Vec<f32> {
        let mut out = Vec::with_capacity(mic.len());
        for (f, m) in far.chunks(frame).zip(mic.chunks(frame)) {
            ec.render(f);
            let mut m = m.to_vec();
            ec.capture(&mut m);
            out.extend_from_slice(&m);
        }
        out
    }

    #[test]
    fn echo_is_cancelled_after_convergence() {
        let far = babble(8.0, 7, 0.3);
        let mic = room(&far);
        let mut ec = EchoLevel::new(true, false);
        let out = run(&mut ec, &far, &mic, 960);
        let tail = RATE as usize * 4..out.len();
        let erle = 10.0 * (power(&mic[tail.clone()]) / power(&out[tail]).max(1e-12)).log10();
        assert!(erle >= 20.0, "ERLE {erle:.1} dB after 4 s");
    }

    #[test]
    fn near_end_speech_gets_through_while_the_far_end_talks() {
        let far = babble(8.0, 7, 0.3);
        let near = babble(8.0, 99, 0.2);
        let echo = room(&far);
        // Near-end talks only in the last 3 s, after the canceller converged.
        let start = RATE as usize * 5;
        let mic: Vec<f32> = (0..far.len()).map(|i| echo[i] + if i >= start { near[i] } else { 0.0 }).collect();
        let mut ec = EchoLevel::new(true, false);
        let out = run(&mut ec, &far, &mic, 480);
        let kept = 10.0 * (power(&out[start..]) / power(&near[start..])).log10();
        // AEC3 ducks some near-end speech while both talk (about 9 dB on
        // this synthetic babble, whose spectrum is the far end's); what
        // must not happen is the microphone being shut. The harness scores
        // the double-talk quality on real speech with PESQ.
        assert!(kept > -12.0, "near-end speech lost {kept:.1} dB during double talk");
    }

    #[test]
    fn a_quiet_microphone_is_raised_and_a_loud_one_does_not_clip() {
        let quiet = voiced(6.0, 0.01);
        let mut agc = EchoLevel::new(false, true);
        let out = run(&mut agc, &vec![0.0; quiet.len()], &quiet, 960);
        let tail = RATE as usize * 4..out.len();
        let gained = level_db(&out[tail.clone()]) - level_db(&quiet[tail]);
        assert!(gained >= 10.0, "gain {gained:.1} dB");
        let loud: Vec<f32> = voiced(4.0, 3.0).iter().map(|s| s.clamp(-1.0, 1.0)).collect();
        let mut agc = EchoLevel::new(false, true);
        let out = run(&mut agc, &vec![0.0; loud.len()], &loud, 960);
        assert!(out.iter().all(|s| s.abs() <= 1.0));
    }

    #[test]
    fn both_off_is_a_no_op() {
        let x = babble(0.1, 1, 0.5);
        let mut ec = EchoLevel::new(false, false);
        let mut y = x.clone();
        ec.render(&x);
        ec.capture(&mut y);
        assert_eq!(x, y);
    }
}
