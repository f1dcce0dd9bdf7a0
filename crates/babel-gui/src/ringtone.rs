//! Synthesized sounds, as endless (or timed) audio inputs at 48 kHz mono:
//! the ringtone of an incoming call, the settings' test tone, and a
//! voice-like signal for demos and tests without a microphone.
//!
//! Pure: sample `n` of a sound depends only on `n`. Playing them on a device
//! is the backend's job.

use std::f64::consts::{PI, TAU};

use babel_media::audio::AudioInput;
use babel_media::codec::SAMPLE_RATE;

const RATE: f64 = SAMPLE_RATE as f64;

/// Which sound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sound {
    /// Two short bursts of 400 + 450 Hz, then two seconds of quiet, again
    /// and again (a classic double ring).
    Ring,
    /// A soft 440 Hz tone (the settings' speaker test).
    Test,
    /// A voice-like buzz with syllables (a harmonic series whose pitch
    /// drifts, shaped four times a second).
    Voice,
}

/// The ringtone's cycle, seconds.
pub const RING_CYCLE_S: f64 = 3.0;

/// Sample `n` of `sound`.
pub fn sample(sound: Sound, n: u64) -> f32 {
    // f64 inside: phases of long sounds stay exact.
    let t = n as f64 / RATE;
    let s = match sound {
        Sound::Ring => {
            let c = t % RING_CYCLE_S;
            // On 0.0–0.4 s and 0.6–1.0 s, with 10 ms ramps so it never clicks.
            let burst = |start: f64| {
                let x = c - start;
                if !(0.0..0.4).contains(&x) {
                    return 0.0;
                }
                (x / 0.01).min(1.0).min((0.4 - x) / 0.01)
            };
            let env = burst(0.0) + burst(0.6);
            env * 0.2 * ((TAU * 400.0 * t).sin() + (TAU * 450.0 * t).sin())
        }
        Sound::Test => 0.3 * (TAU * 440.0 * t).sin(),
        Sound::Voice => {
            let env = (PI * (t * 4.0).fract()).sin().max(0.0);
            // The pitch 120 + 30 sin(0.9 t) Hz, integrated into a phase.
            let phase = TAU * (120.0 * t - 30.0 / 0.9 * (0.9 * t).cos());
            (1..6).map(|h| (phase * f64::from(h)).sin() / f64::from(h)).sum::<f64>() * 0.25 * env
        }
    };
    s as f32
}

/// A sound as an [`AudioInput`]: endless, or ending after `len` samples.
#[derive(Debug, Clone)]
pub struct SoundInput {
    sound: Sound,
    pos: u64,
    len: Option<u64>,
}

impl SoundInput {
    /// Plays `sound` for ever.
    pub fn endless(sound: Sound) -> Self {
        Self { sound, pos: 0, len: None }
    }

    /// Plays `sound` for `secs` seconds.
    pub fn timed(sound: Sound, secs: f64) -> Self {
        Self { sound, pos: 0, len: Some((secs.max(0.0) * RATE) as u64) }
    }
}

impl AudioInput for SoundInput {
    /// A generated signal hears no room: with a canceller on, the demo's
    /// answering machine took its own voice for an echo of the caller's (the
    /// same synthesized voice a few hundred milliseconds apart) and muted it.
    fn hears_the_room(&self) -> bool {
        false
    }

    fn read(&mut self, frame: &mut [f32]) -> bool {
        if self.len.is_some_and(|l| self.pos >= l) {
            frame.fill(0.0);
            return false;
        }
        for s in frame.iter_mut() {
            *s = if self.len.is_some_and(|l| self.pos >= l) { 0.0 } else { sample(self.sound, self.pos) };
            self.pos += 1;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use babel_media::audio::level_db;

    use super::*;

    fn seconds(sound: Sound, from: f64, to: f64) -> Vec<f32> {
        ((from * RATE) as u64..(to * RATE) as u64).map(|n| sample(sound, n)).collect()
    }

    #[test]
    fn the_ring_has_bursts_and_quiet() {
        let burst = seconds(Sound::Ring, 0.1, 0.3);
        let quiet = seconds(Sound::Ring, 1.2, 2.9);
        assert!(level_db(&burst) > -20.0, "{}", level_db(&burst));
        assert_eq!(level_db(&quiet), -100.0);
        // It repeats.
        let (x, y) = (sample(Sound::Ring, 5000), sample(Sound::Ring, 5000 + (RING_CYCLE_S * RATE) as u64));
        assert!(x.abs() > 0.01 && (x - y).abs() < 1e-4, "{x} {y}");
        // Never clips.
        assert!(seconds(Sound::Ring, 0.0, 3.0).iter().all(|s| s.abs() <= 1.0));
    }

    #[test]
    fn the_test_tone_is_440_hz() {
        let s = seconds(Sound::Test, 0.0, 1.0);
        let zc = s.windows(2).filter(|w| (w[0] < 0.0) != (w[1] < 0.0)).count();
        assert!((875..=885).contains(&zc), "{zc}");
    }

    #[test]
    fn voice_is_audible_and_bounded() {
        let s = seconds(Sound::Voice, 0.0, 2.0);
        assert!(level_db(&s) > -30.0);
        assert!(s.iter().all(|x| x.abs() <= 1.0));
    }

    #[test]
    fn a_generated_voice_is_never_cancelled_as_an_echo() {
        // As the engine builds its canceller; the far end talks with the same
        // synthesized voice 40 ms later (two demo machines in one call).
        let mut input = SoundInput::endless(Sound::Voice);
        let mut echo = babel_media::echo::EchoLevel::new(input.hears_the_room(), true);
        let mut kept = Vec::new();
        for f in 0..300u64 {
            let far: Vec<f32> = (0..960).map(|i| sample(Sound::Voice, f * 960 + i + 40 * 48)).collect();
            let mut near = vec![0.0; 960];
            input.read(&mut near);
            echo.render(&far);
            echo.capture(&mut near);
            if f >= 150 {
                kept.extend(near);
            }
        }
        assert!(level_db(&kept) > -30.0, "the voice was ducked to {} dBFS", level_db(&kept));
    }

    #[test]
    fn timed_inputs_end() {
        let mut i = SoundInput::timed(Sound::Test, 0.03);
        let mut f = [0.0; 960];
        assert!(i.read(&mut f));
        assert!(i.read(&mut f));
        assert!(f[480..].iter().all(|s| *s == 0.0));
        assert!(!i.read(&mut f));
        let mut e = SoundInput::endless(Sound::Ring);
        assert!((0..500).all(|_| e.read(&mut f)));
    }
}
