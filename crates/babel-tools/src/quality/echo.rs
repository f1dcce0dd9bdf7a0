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
//!
//! [`compare`] runs the same scenes for several AEC3 configurations
//! ([`candidates`], or variations of them, see [`candidate`]) over pairs of
//! voices: `babel-quality --echo-only`, seconds per configuration and pair,
//! since nothing runs in real time.

use std::path::{Path, PathBuf};

use babel_media::codec::{FrameMs, VoiceDecoder, VoiceEncoder};
use babel_media::echo::{
    Aec3Config, EchoLevel, double_talk_aec3, double_talk_from_start_aec3, shipped_aec3, webrtc_aec3,
};
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
fn capture(mic: &[f32], speaker: &[f32], aec3: Option<&Aec3Config>, auto_gain: bool) -> (Vec<f32>, Option<f64>) {
    let frame = FrameMs::Twenty;
    let n = frame.samples();
    let mut ec = EchoLevel::with_aec3(aec3.cloned(), auto_gain);
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

/// Runs the measurement with the shipped canceller. `far` and `near` are
/// 48 kHz speech (different sentences, or better different speakers);
/// `python` is the PESQ virtual environment's interpreter.
pub fn run(python: &Path, far: &[f32], near: &[f32], dir: &Path) -> anyhow::Result<EchoReport> {
    run_with(python, far, near, &shipped_aec3(), dir)
}

/// [`run`] with a given AEC3 configuration: the capture chain alone in the
/// simulated room (no network, no clocks), so one configuration takes
/// seconds.
pub fn run_with(python: &Path, far: &[f32], near: &[f32], aec3: &Aec3Config, dir: &Path) -> anyhow::Result<EchoReport> {
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
        let mut ec = EchoLevel::with_aec3(Some(aec3.clone()), false);
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
    let on = Some(aec3);
    let (with_aec, _) = capture(&mic, &speaker, on, true);
    let (without_aec, _) = capture(&mic, &speaker, None, true);
    let (alone, _) = capture(near, &vec![0.0; near.len()], on, true);
    // The far end talks first, then stops and the near end talks.
    let speaker_then: Vec<f32> = (0..total).map(|i| if i < lead { speaker[i] } else { 0.0 }).collect();
    let echo_then = room(&speaker_then);
    let mic_then: Vec<f32> = (0..total).map(|i| echo_then[i] + near_at(i)).collect();
    let (after_far, _) = capture(&mic_then, &speaker_then, on, true);
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
    let (raised, _) = capture(&quiet, &vec![0.0; quiet.len()], None, true);
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

/// One echo canceller configuration the harness compares.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// Short name for `--echo-tunings` and the table.
    pub name: &'static str,
    /// What it changes against WebRTC's defaults.
    pub what: &'static str,
    /// The configuration.
    pub aec3: Aec3Config,
}

/// The configurations tried, WebRTC's defaults first, in the order they
/// were tried (BENCHMARKS.md has the table); `doubletalk` is the best
/// ([`double_talk_aec3`]), `shipped` what the engine uses ([`shipped_aec3`]). The `linear-` ones switch the suppressor off
/// (they show what the linear filter alone leaves), the others are steps
/// towards `shipped`.
pub fn candidates() -> Vec<Candidate> {
    let with = |f: &dyn Fn(&mut Aec3Config)| {
        let mut c = webrtc_aec3();
        f(&mut c);
        c
    };
    let erle = |c: &mut Aec3Config, bound: f32| {
        c.erle.max_l = bound;
        c.erle.max_h = bound;
    };
    let nearend = |c: &mut Aec3Config| {
        let d = &mut c.suppressor.dominant_nearend_detection;
        d.enr_threshold = 1.0;
        d.trigger_threshold = 4;
        let t = &mut c.suppressor.nearend_tuning;
        t.mask_lf.enr_transparent = 2.0;
        t.mask_lf.enr_suppress = 4.0;
        t.mask_hf.enr_transparent = 1.0;
        t.mask_hf.enr_suppress = 2.0;
    };
    // The suppressor off: the residual echo estimate 40 dB under the
    // linear estimate and masks that never suppress.
    let no_suppressor = |c: &mut Aec3Config| {
        c.erle.min = 10_000.0;
        erle(c, 10_000.0);
        for t in [&mut c.suppressor.normal_tuning, &mut c.suppressor.nearend_tuning] {
            for m in [&mut t.mask_lf, &mut t.mask_hf] {
                m.enr_transparent = 99.0;
                m.enr_suppress = 100.0;
            }
        }
    };
    let filter = |c: &mut Aec3Config| {
        c.filter.enable_coarse_filter_output_usage = false;
        c.filter.refined.leakage_diverged = c.filter.refined.leakage_converged;
    };
    let inc = |c: &mut Aec3Config| {
        c.suppressor.normal_tuning.max_inc_factor = 8.0;
        c.suppressor.nearend_tuning.max_inc_factor = 8.0;
    };
    let masks = |c: &mut Aec3Config| {
        for (t, (a, b)) in
            [(&mut c.suppressor.normal_tuning, (1.0, 2.0)), (&mut c.suppressor.nearend_tuning, (3.0, 6.0))]
        {
            for m in [&mut t.mask_lf, &mut t.mask_hf] {
                m.enr_transparent = a;
                m.enr_suppress = b;
            }
        }
    };
    let decay = |c: &mut Aec3Config| {
        c.ep_strength.default_len = -c.ep_strength.default_len.abs();
        c.ep_strength.nearend_len = -c.ep_strength.nearend_len.abs();
    };
    vec![
        Candidate { name: "webrtc", what: "WebRTC's defaults (all sonora 0.2 builds)", aec3: webrtc_aec3() },
        Candidate {
            name: "erle-20",
            what: "ERLE bounds 20 dB in both bands (WebRTC: 6 dB low, 1.8 dB high)",
            aec3: with(&|c| erle(c, 100.0)),
        },
        Candidate { name: "erle-30", what: "ERLE bounds 30 dB", aec3: with(&|c| erle(c, 1000.0)) },
        Candidate {
            name: "nearend",
            what: "near-end state entered sooner (ENR threshold 1, trigger 4 blocks), its masks relaxed",
            aec3: with(&nearend),
        },
        Candidate {
            name: "erle-20-nearend",
            what: "erle-20 and nearend",
            aec3: with(&|c| {
                erle(c, 100.0);
                nearend(c);
            }),
        },
        Candidate {
            name: "linear-webrtc",
            what: "suppressor off: WebRTC's linear filter alone",
            aec3: with(&no_suppressor),
        },
        Candidate {
            name: "linear-filter",
            what: "suppressor off: the linear filter without the coarse filter's output or diverged leakage",
            aec3: with(&|c| {
                no_suppressor(c);
                filter(c);
            }),
        },
        Candidate {
            name: "filter",
            what: "WebRTC with that filter change (suppressor as WebRTC's)",
            aec3: with(&filter),
        },
        Candidate {
            name: "filter-erle-30",
            what: "filter and erle-30",
            aec3: with(&|c| {
                filter(c);
                erle(c, 1000.0);
            }),
        },
        Candidate {
            name: "filter-erle-30-inc",
            what: "filter, erle-30, gain may rise 8x per block (WebRTC 2x)",
            aec3: with(&|c| {
                filter(c);
                erle(c, 1000.0);
                inc(c);
            }),
        },
        Candidate {
            name: "filter-erle-30-inc-masks",
            what: "that, and suppression only where the residual echo is as loud as the near end (3x in the near-end state)",
            aec3: with(&|c| {
                filter(c);
                erle(c, 1000.0);
                inc(c);
                masks(c);
            }),
        },
        Candidate {
            name: "filter-erle-20-inc-masks-decay",
            what: "the shipped changes with the ERLE bounds at 20 dB",
            aec3: with(&|c| {
                filter(c);
                erle(c, 100.0);
                inc(c);
                masks(c);
                decay(c);
            }),
        },
        Candidate {
            name: "doubletalk-from-start",
            what: "filter-erle-30-inc-masks with the reverberation decay estimated",
            aec3: double_talk_from_start_aec3(),
        },
        Candidate {
            name: "doubletalk",
            what: "WebRTC's until the refined filter alone removes 25 dB, then doubletalk-from-start's filter and suppressor, the near-end state entered sooner (ENR 1, 4 bands) and its masks at 6x; WebRTC's fixed reverberation decay",
            aec3: double_talk_aec3(),
        },
        Candidate { name: "shipped", what: "the engine's: doubletalk", aec3: shipped_aec3() },
    ]
}

/// A configuration by name: one of [`candidates`], optionally followed by
/// `+field=value` changes to it (AEC3 fields by their path, e.g.
/// `webrtc+erle.max_l=100+suppressor.nearend_tuning.mask_lf.enr_suppress=4`),
/// to try a tuning without rebuilding.
pub fn candidate(all: &[Candidate], spec: &str) -> anyhow::Result<Candidate> {
    let mut parts = spec.split('+');
    let base = parts.next().unwrap_or_default();
    let names: Vec<&str> = all.iter().map(|c| c.name).collect();
    let mut c = all
        .iter()
        .find(|c| c.name == base)
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("no echo tuning `{base}`; there are {}", names.join(", ")))?;
    for change in parts {
        let (field, value) = change.split_once('=').ok_or_else(|| anyhow::anyhow!("`{change}`: want field=value"))?;
        set_field(&mut c.aec3, field, value)?;
        c.what = "a variation";
    }
    Ok(c)
}

/// Sets one AEC3 field by its path (the fields a tuning plays with).
fn set_field(c: &mut Aec3Config, field: &str, value: &str) -> anyhow::Result<()> {
    let f = || value.parse::<f32>().map_err(|_| anyhow::anyhow!("`{field}={value}`: not a number"));
    let i = || value.parse::<i32>().map_err(|_| anyhow::anyhow!("`{field}={value}`: not an integer"));
    let u = || value.parse::<usize>().map_err(|_| anyhow::anyhow!("`{field}={value}`: not a count"));
    let b = || value.parse::<bool>().map_err(|_| anyhow::anyhow!("`{field}={value}`: not true or false"));
    let s = &mut c.suppressor;
    let d = &mut s.dominant_nearend_detection;
    match field {
        "erle.min" => c.erle.min = f()?,
        "erle.max_l" => c.erle.max_l = f()?,
        "erle.max_h" => c.erle.max_h = f()?,
        "erle.onset_detection" => c.erle.onset_detection = b()?,
        "erle.num_sections" => c.erle.num_sections = u()?,
        "ep_strength.default_gain" => c.ep_strength.default_gain = f()?,
        "ep_strength.default_len" => c.ep_strength.default_len = f()?,
        "ep_strength.nearend_len" => c.ep_strength.nearend_len = f()?,
        "ep_strength.bounded_erl" => c.ep_strength.bounded_erl = b()?,
        "echo_audibility.normal_render_limit" => c.echo_audibility.normal_render_limit = f()?,
        "echo_audibility.low_render_limit" => c.echo_audibility.low_render_limit = f()?,
        "echo_audibility.floor_power" => c.echo_audibility.floor_power = f()?,
        "echo_audibility.audibility_threshold_lf" => c.echo_audibility.audibility_threshold_lf = f()?,
        "echo_audibility.audibility_threshold_mf" => c.echo_audibility.audibility_threshold_mf = f()?,
        "echo_audibility.audibility_threshold_hf" => c.echo_audibility.audibility_threshold_hf = f()?,
        "echo_removal_control.linear_and_stable_echo_path" => c.echo_removal_control.linear_and_stable_echo_path = b()?,
        "echo_model.model_reverb_in_nonlinear_mode" => c.echo_model.model_reverb_in_nonlinear_mode = b()?,
        "filter.refined.length_blocks" => c.filter.refined.length_blocks = u()?,
        "filter.refined.leakage_converged" => c.filter.refined.leakage_converged = f()?,
        "filter.refined.leakage_diverged" => c.filter.refined.leakage_diverged = f()?,
        "filter.refined.error_floor" => c.filter.refined.error_floor = f()?,
        "filter.refined.error_ceil" => c.filter.refined.error_ceil = f()?,
        "filter.coarse.rate" => c.filter.coarse.rate = f()?,
        "filter.enable_coarse_filter_output_usage" => c.filter.enable_coarse_filter_output_usage = b()?,
        "filter.conservative_initial_phase" => c.filter.conservative_initial_phase = b()?,
        "filter.coarse.length_blocks" => c.filter.coarse.length_blocks = u()?,
        "suppressor.nearend_average_blocks" => s.nearend_average_blocks = u()?,
        "suppressor.dominant_nearend_detection.enr_threshold" => d.enr_threshold = f()?,
        "suppressor.dominant_nearend_detection.enr_exit_threshold" => d.enr_exit_threshold = f()?,
        "suppressor.dominant_nearend_detection.snr_threshold" => d.snr_threshold = f()?,
        "suppressor.dominant_nearend_detection.hold_duration" => d.hold_duration = i()?,
        "suppressor.dominant_nearend_detection.trigger_threshold" => d.trigger_threshold = i()?,
        "suppressor.dominant_nearend_detection.use_unbounded_echo_spectrum" => d.use_unbounded_echo_spectrum = b()?,
        "suppressor.high_bands_suppression.enr_threshold" => s.high_bands_suppression.enr_threshold = f()?,
        "suppressor.high_bands_suppression.max_gain_during_echo" => {
            s.high_bands_suppression.max_gain_during_echo = f()?
        }
        "suppressor.conservative_hf_suppression" => s.conservative_hf_suppression = b()?,
        "suppressor.last_lf_smoothing_band" => s.last_lf_smoothing_band = i()?,
        "settle.enabled" => c.settle.enabled = b()?,
        "settle.erle_db" => c.settle.erle_db = f()?,
        "settle.blocks" => c.settle.blocks = u()?,
        "settle.window_blocks" => c.settle.window_blocks = u()?,
        "settle.lost_margin_db" => c.settle.lost_margin_db = f()?,
        "settle.enable_coarse_filter_output_usage" => c.settle.enable_coarse_filter_output_usage = b()?,
        "settle.allow_leakage_diverged" => c.settle.allow_leakage_diverged = b()?,
        "settle.erle_max_l" => c.settle.erle_max_l = f()?,
        "settle.erle_max_h" => c.settle.erle_max_h = f()?,
        other => {
            let (t, rest) = if let Some(rest) = other.strip_prefix("suppressor.normal_tuning.") {
                (&mut s.normal_tuning, rest)
            } else if let Some(rest) = other.strip_prefix("suppressor.nearend_tuning.") {
                (&mut s.nearend_tuning, rest)
            } else if let Some(rest) = other.strip_prefix("settle.normal_tuning.") {
                (&mut c.settle.normal_tuning, rest)
            } else if let Some(rest) = other.strip_prefix("settle.nearend_tuning.") {
                (&mut c.settle.nearend_tuning, rest)
            } else {
                anyhow::bail!("`{field}`: not a field this harness can set")
            };
            match rest {
                "mask_lf.enr_transparent" => t.mask_lf.enr_transparent = f()?,
                "mask_lf.enr_suppress" => t.mask_lf.enr_suppress = f()?,
                "mask_lf.emr_transparent" => t.mask_lf.emr_transparent = f()?,
                "mask_hf.enr_transparent" => t.mask_hf.enr_transparent = f()?,
                "mask_hf.enr_suppress" => t.mask_hf.enr_suppress = f()?,
                "mask_hf.emr_transparent" => t.mask_hf.emr_transparent = f()?,
                "max_inc_factor" => t.max_inc_factor = f()?,
                "max_dec_factor_lf" => t.max_dec_factor_lf = f()?,
                _ => anyhow::bail!("`{field}`: not a field this harness can set"),
            }
        }
    }
    Ok(())
}

/// One configuration's scores over the voice pairs.
#[derive(Debug, Clone, Serialize)]
pub struct Compared {
    /// The configuration's name.
    pub name: String,
    /// What it changes.
    pub what: String,
    /// Each pair's report, as (far speaker, near speaker, report).
    pub pairs: Vec<(String, String, EchoReport)>,
}

impl Compared {
    fn mean(&self, f: impl Fn(&EchoReport) -> f64) -> f64 {
        self.pairs.iter().map(|(_, _, r)| f(r)).sum::<f64>() / self.pairs.len().max(1) as f64
    }
}

/// Scores each configuration of `tunings` (names from [`candidates`];
/// empty: all) for each ordered pair of `voices` (name, 48 kHz speech) as
/// far and near end. `progress` hears about each step.
pub fn compare(
    python: &Path,
    voices: &[(String, Vec<f32>)],
    tunings: &[String],
    dir: &Path,
    mut progress: impl FnMut(&str),
) -> anyhow::Result<Vec<Compared>> {
    let all = candidates();
    let chosen: Vec<(String, Candidate)> = if tunings.is_empty() {
        all.into_iter().map(|c| (c.name.to_owned(), c)).collect()
    } else {
        let mut v = Vec::new();
        for t in tunings {
            v.push((t.clone(), candidate(&all, t)?));
        }
        v
    };
    if voices.len() < 2 {
        anyhow::bail!("the echo comparison wants two voices (far and near end)");
    }
    let mut out = Vec::new();
    for (ci, (name, c)) in chosen.into_iter().enumerate() {
        let mut pairs = Vec::new();
        for (fi, (far_name, far)) in voices.iter().enumerate() {
            for (ni, (near_name, near)) in voices.iter().enumerate() {
                if fi == ni {
                    continue;
                }
                progress(&format!("echo: {name} with {far_name} far, {near_name} near"));
                let sub = dir.join(format!("echo-{ci}-{far_name}-{near_name}"));
                pairs.push((far_name.clone(), near_name.clone(), run_with(python, far, near, &c.aec3, &sub)?));
            }
        }
        out.push(Compared { name, what: c.what.to_owned(), pairs });
    }
    Ok(out)
}

/// The comparison as a Markdown table: means over the voice pairs.
pub fn compare_markdown(rows: &[Compared]) -> String {
    let mut s = String::from(
        "| configuration | ERLE, far end alone | near-end PESQ while both talk | after the far end stops (gap to the reference) | no-echo reference | both talk, no cancellation | what it changes |\n\
         | --- | ---: | ---: | ---: | ---: | ---: | --- |\n",
    );
    for r in rows {
        let no_echo = r.mean(|e| e.near_mos_no_echo);
        let after = r.mean(|e| e.near_mos_after_far);
        s += &format!(
            "| `{}` | {:.1} dB | **{:.2}** | {:.2} ({:+.2}) | {:.2} | {:.2} | {} |\n",
            r.name,
            r.mean(|e| e.erle_db),
            r.mean(|e| e.near_mos_double_talk),
            after,
            after - no_echo,
            no_echo,
            r.mean(|e| e.near_mos_uncancelled),
            r.what
        );
    }
    s
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
    fn tunings_are_named_and_varied_by_field() {
        let all = candidates();
        assert_eq!(all[0].name, "webrtc");
        let shipped = candidate(&all, "shipped").unwrap();
        assert_eq!(format!("{:?}", shipped.aec3), format!("{:?}", shipped_aec3()));
        let tuned = candidate(&all, "doubletalk").unwrap();
        assert_eq!(format!("{:?}", tuned.aec3), format!("{:?}", double_talk_aec3()));
        assert_ne!(format!("{:?}", tuned.aec3), format!("{:?}", webrtc_aec3()));
        let v = candidate(&all, "webrtc+erle.max_l=100+suppressor.nearend_tuning.mask_lf.enr_suppress=4").unwrap();
        assert_eq!(v.aec3.erle.max_l, 100.0);
        assert_eq!(v.aec3.suppressor.nearend_tuning.mask_lf.enr_suppress, 4.0);
        assert_eq!(v.aec3.erle.max_h, webrtc_aec3().erle.max_h);
        let v = candidate(&all, "doubletalk+settle.erle_db=20+settle.nearend_tuning.mask_hf.enr_suppress=9").unwrap();
        assert_eq!(v.aec3.settle.erle_db, 20.0);
        assert_eq!(v.aec3.settle.nearend_tuning.mask_hf.enr_suppress, 9.0);
        assert_eq!(
            v.aec3.suppressor.nearend_tuning.mask_hf.enr_suppress,
            webrtc_aec3().suppressor.nearend_tuning.mask_hf.enr_suppress
        );
        for bad in ["nonesuch", "webrtc+erle.max_l", "webrtc+erle.max_l=x", "webrtc+no.such=1"] {
            assert!(candidate(&all, bad).is_err(), "{bad}");
        }
    }

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
