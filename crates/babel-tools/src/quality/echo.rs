//! Echo cancellation and level, measured: far-end speech is played into a
//! simulated room, whose echo (delayed, attenuated, low-passed, with two
//! reflections) reaches the microphone together with near-end speech; the
//! microphone goes through the engine's capture processing (echo
//! cancellation and gain control, fed what the loudspeaker played, frame by
//! frame as the engine does) and the Opus codec.
//!
//! * **ERLE** (echo return loss enhancement): how much weaker the echo is
//!   after processing, over a stretch where only the far end talks, after
//!   the canceller has had 4 s to converge.
//! * **Near-end PESQ**: the near-end speech as the far end would hear it
//!   while both talk, scored against the clean near-end recording, next to
//!   the same speech through the same processing with no echo and no far end
//!   (the reference) and with the echo but without cancellation.

use std::path::{Path, PathBuf};

use babel_media::codec::{FrameMs, VoiceDecoder, VoiceEncoder};
use babel_media::echo::EchoLevel;
use serde::Serialize;

use super::{pesq_scores, prepare, write_wav16};

const RATE: usize = 48_000;

/// What the echo measurement found.
#[derive(Debug, Clone, Serialize)]
pub struct EchoReport {
    /// Echo return loss enhancement after convergence, dB.
    pub erle_db: f64,
    /// The canceller's own estimate at the end, dB.
    pub erle_estimate_db: Option<f64>,
    /// How loud the echo is at the microphone, relative to the loudspeaker, dB.
    pub echo_path_db: f64,
    /// Near-end PESQ with no echo (same processing): the reference.
    pub near_mos_no_echo: f64,
    /// Near-end PESQ after the far end stopped (the canceller converged on
    /// it, then only the near end talks), cancellation on.
    pub near_mos_after_far: f64,
    /// Near-end PESQ while both talk, echo cancellation on.
    pub near_mos_double_talk: f64,
    /// Near-end PESQ while both talk, echo cancellation off.
    pub near_mos_uncancelled: f64,
    /// Near-end speech level before and after gain control, dBFS (a quiet
    /// talker, 20 dB down, through gain control alone).
    pub quiet_in_dbfs: f64,
    /// The same after gain control, over its last half.
    pub quiet_out_dbfs: f64,
}

/// The room: the loudspeaker's sound reaches the microphone 40 ms later,
/// 8 dB down, low-passed, with reflections at 55 and 80 ms.
pub fn room(far: &[f32]) -> Vec<f32> {
    let taps = [(40usize, 0.4f32), (55, 0.2), (80, 0.1)];
    let mut lp = 0.0f32;
    (0..far.len())
        .map(|i| {
            let x: f32 = taps.iter().map(|&(ms, g)| i.checked_sub(ms * RATE / 1000).map_or(0.0, |j| far[j] * g)).sum();
            lp = 0.5 * lp + 0.5 * x;
            lp
        })
        .collect()
}

fn power(x: &[f32]) -> f64 {
    x.iter().map(|&s| f64::from(s) * f64::from(s)).sum::<f64>() / x.len().max(1) as f64
}

fn db(p: f64) -> f64 {
    10.0 * p.max(1e-20).log10()
}

/// The capture side as the engine runs it, 20 ms frames: what the
/// loudspeaker plays goes in first, then the microphone frame; then Opus
/// (encode and decode, 32 kbit/s). Answers what the far end would hear
/// and the canceller's estimate.
fn capture(mic: &[f32], speaker: &[f32], echo_cancellation: bool, auto_gain: bool) -> (Vec<f32>, Option<f64>) {
    let frame = FrameMs::Twenty;
    let n = frame.samples();
    let mut ec = EchoLevel::new(echo_cancellation, auto_gain);
    let (mut out, mut enc, mut dec) = (Vec::with_capacity(mic.len()), None, None);
    if let (Ok(e), Ok(d)) = (VoiceEncoder::new(babel_media::codec::DEFAULT_BITRATE, frame), VoiceDecoder::new(frame)) {
        (enc, dec) = (Some(e), Some(d));
    }
    for (m, s) in mic.chunks(n).zip(speaker.chunks(n)) {
        let mut f = m.to_vec();
        f.resize(n, 0.0);
        let mut sp = s.to_vec();
        sp.resize(n, 0.0);
        ec.render(&sp);
        ec.capture(&mut f);
        let heard = match (enc.as_mut(), dec.as_mut()) {
            (Some(e), Some(d)) => e.encode(&f).ok().and_then(|p| d.decode(&p).ok()).unwrap_or(f),
            _ => f,
        };
        out.extend(heard);
    }
    (out, ec.erle_db())
}

/// Runs the measurement. `far` and `near` are 48 kHz speech (different
/// sentences); `python` is the PESQ virtual environment's interpreter.
pub fn run(python: &Path, far: &[f32], near: &[f32], dir: &Path) -> anyhow::Result<EchoReport> {
    std::fs::create_dir_all(dir)?;
    // 8 s of the far end alone (4 s to converge, 4 s measured), then both.
    let lead = 8 * RATE;
    let total = lead + near.len();
    let speaker: Vec<f32> = (0..total).map(|i| far[i % far.len()]).collect();
    let echo = room(&speaker);
    let near_at = |i: usize| if i >= lead { near[i - lead] } else { 0.0 };
    let mic: Vec<f32> = (0..total).map(|i| echo[i] + near_at(i)).collect();

    // ERLE over the far-end-only stretch after convergence, before Opus
    // (the canceller's own effect), with gain control off so that level
    // changes are not counted as cancellation.
    let (cancelled, estimate) = {
        let mut ec = EchoLevel::new(true, false);
        let mut out = Vec::with_capacity(total);
        for (m, s) in mic.chunks(960).zip(speaker.chunks(960)) {
            let mut f = m.to_vec();
            ec.render(s);
            ec.capture(&mut f);
            out.extend(f);
        }
        (out, ec.erle_db())
    };
    let measured = 4 * RATE..lead;
    let erle_db = db(power(&mic[measured.clone()])) - db(power(&cancelled[measured.clone()]));
    let echo_path_db = db(power(&echo[measured.clone()])) - db(power(&speaker[measured]));

    // Near-end quality: the double-talk stretch as the far end hears it.
    let (with_aec, _) = capture(&mic, &speaker, true, true);
    let (without_aec, _) = capture(&mic, &speaker, false, true);
    let (alone, _) = capture(near, &vec![0.0; near.len()], true, true);
    // The far end talks first, then stops and the near end talks.
    let speaker_then: Vec<f32> = (0..total).map(|i| if i < lead { speaker[i] } else { 0.0 }).collect();
    let echo_then = room(&speaker_then);
    let mic_then: Vec<f32> = (0..total).map(|i| echo_then[i] + near_at(i)).collect();
    let (after_far, _) = capture(&mic_then, &speaker_then, true, true);
    let reference16 = babel_media::audio::resample(near, 48_000, 16_000)?;
    let reference = dir.join("echo-near-reference.wav");
    write_wav16(&reference, &reference16)?;
    let mut pairs: Vec<(PathBuf, PathBuf)> = Vec::new();
    for (name, heard) in [
        ("no-echo", &alone[..]),
        ("after-far", &after_far[lead..]),
        ("double-talk", &with_aec[lead..]),
        ("uncancelled", &without_aec[lead..]),
    ] {
        let (aligned, _) = prepare(&reference16, heard)?;
        let path = dir.join(format!("echo-near-{name}.wav"));
        write_wav16(&path, &aligned)?;
        pairs.push((reference.clone(), path));
    }
    let mos = pesq_scores(python, &pairs)?;
    // Level: a talker 20 dB quieter, through gain control alone.
    let quiet: Vec<f32> = near.iter().map(|s| s * 0.1).collect();
    let (raised, _) = capture(&quiet, &vec![0.0; quiet.len()], false, true);
    let half = quiet.len() / 2;
    let active = |x: &[f32]| {
        // Level over the frames with speech in them (above -60 dBFS).
        let frames: Vec<f64> = x.chunks(960).map(power).filter(|&p| p > 1e-6).collect();
        db(frames.iter().sum::<f64>() / frames.len().max(1) as f64)
    };
    Ok(EchoReport {
        erle_db,
        erle_estimate_db: estimate,
        echo_path_db,
        near_mos_no_echo: mos[0],
        near_mos_after_far: mos[1],
        near_mos_double_talk: mos[2],
        near_mos_uncancelled: mos[3],
        quiet_in_dbfs: active(&quiet[half..]),
        quiet_out_dbfs: active(&raised[half..]),
    })
}

/// The Markdown lines for BENCHMARKS.md.
pub fn markdown(r: &EchoReport) -> String {
    format!(
        "| measure | value | target |\n| --- | ---: | --- |\n\
         | echo at the microphone (room) | {:.1} dB | |\n\
         | ERLE after 4 s, far end alone | **{:.1} dB** (canceller's own estimate {}) | ≥ 20 dB |\n\
         | near-end PESQ, no echo (reference) | {:.2} | |\n\
         | near-end PESQ after the far end stopped, cancellation on | **{:.2}** ({:+.2}) | ≥ reference − 0.2 |\n\
         | near-end PESQ while both talk, cancellation on | **{:.2}** ({:+.2}) | ≥ reference − 0.2 |\n\
         | near-end PESQ while both talk, cancellation off | {:.2} | |\n\
         | a quiet talker through gain control | {:.1} → **{:.1} dBFS** | raised |\n",
        r.echo_path_db,
        r.erle_db,
        r.erle_estimate_db.map_or("-".into(), |e| format!("{e:.1} dB")),
        r.near_mos_no_echo,
        r.near_mos_after_far,
        r.near_mos_after_far - r.near_mos_no_echo,
        r.near_mos_double_talk,
        r.near_mos_double_talk - r.near_mos_no_echo,
        r.near_mos_uncancelled,
        r.quiet_in_dbfs,
        r.quiet_out_dbfs,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_room_delays_attenuates_and_filters() {
        let mut click = vec![0.0f32; RATE / 5];
        click[0] = 1.0;
        let e = room(&click);
        let first = e.iter().position(|&s| s.abs() > 1e-6).unwrap();
        assert_eq!(first, 40 * RATE / 1000);
        assert!(e.iter().all(|s| s.abs() < 0.5));
    }
}
