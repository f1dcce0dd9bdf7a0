//! `babel-quality --simulated`: the quality table through call cores over
//! the `babel-netem` link model in simulated time
//! ([`babel_media::sim::World`], the harness of `babel-media`'s
//! `tests/sim.rs`).
//!
//! What is real: the codec, the jitter buffer, the capture chain (gain
//! control), the keys and the sealing, the reports and the rate controller
//! (the whole [`babel_media::call::CallCore`]), and PESQ. What is simulated:
//! the sockets (a link per direction with the same impairment model and the
//! same seeded random streams as the real-time proxy: stream 0 towards the
//! listener, stream 1 back) and the clocks (a millisecond step; the
//! listener's frame clock starts at a phase drawn from the seed, as two real
//! devices tick independently). No server is needed: the keys are made in
//! process, and, as in the real-time harness, there is no relay and no call
//! channel, so every datagram goes through the impairment.
//!
//! Each condition runs with seeds `1..=N`; the table gives each cell's mean
//! with its 95 % confidence interval (Student's t), and can set them beside
//! a real-time run's `results.json` ([`compare_markdown`]).

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use babel_media::audio;
use babel_media::call::{CallStats, MediaConfig};
use babel_media::sim::{Ep, Spec, World};
use babel_netem::{Impairment, LinkCounters, Rng};
use serde::{Deserialize, Serialize};

use super::{Network, Report, Row, Scored, codec_only, pesq_scores, prepare, write_wav16};
// (`codec_only` makes the codec-alone reference; the ideal receiver's
// repairs come from `super::ideal_receiver`.)

/// What one simulated call gave.
#[derive(Debug)]
pub struct SimCall {
    /// What the listener's loudspeaker got (48 kHz mono).
    pub heard: Vec<f32>,
    /// The listener's statistics at the end.
    pub receiver: CallStats,
    /// The link towards the listener.
    pub towards: LinkCounters,
    /// Call time simulated.
    pub simulated: Duration,
}

/// The listener's frame clock phase for `seed` (whole milliseconds within
/// a frame).
pub fn listener_phase(seed: u64, media: &MediaConfig) -> Duration {
    let frame_us = u64::from(media.frame.ms()) * 1000;
    Duration::from_millis(Rng::with_stream(seed, 0x9_4A5E).uniform_us(frame_us) / 1000)
}

/// The world of one call in simulated time, not yet run: the caller says
/// `speech` (48 kHz mono), the listener says nothing a second longer (so it
/// hears the end); `net` each way, with the random streams of `seed`, and
/// the listener's clock at [`listener_phase`].
pub fn call_world(speech: &[f32], net: &Network, media: &MediaConfig, seed: u64) -> anyhow::Result<World> {
    let silence = vec![0.0; speech.len() + 48_000];
    let spec = Spec {
        inputs: vec![speech.to_vec(), silence],
        relay_only: Vec::new(),
        channel: Vec::new(),
        cfg: media.clone(),
        seed,
        relay: None,
        print_speed: false,
    };
    let mut w = World::new(spec)?;
    // On loopback the proxy adds no delay of its own: only the impairment.
    let imp: Impairment = net.impairment();
    w.set_link_stream(Ep::Node(0), Ep::Node(1), Some(imp), 0);
    w.set_link_stream(Ep::Node(1), Ep::Node(0), Some(imp), 1);
    w.nodes[0].phase = Duration::ZERO;
    w.nodes[1].phase = listener_phase(seed, media);
    Ok(w)
}

/// One call in simulated time ([`call_world`]), run to its end.
pub fn call(speech: &[f32], net: &Network, media: &MediaConfig, seed: u64) -> anyhow::Result<SimCall> {
    let mut w = call_world(speech, net, media, seed)?;
    let limit = Duration::from_secs_f64(speech.len() as f64 / 48_000.0 + 30.0);
    if !w.finish(limit)? {
        bail!("the simulated call did not end in {limit:?}");
    }
    let towards = w
        .links
        .get(&(Ep::Node(0), Ep::Node(1)))
        .and_then(|l| l.as_ref().map(babel_netem::Link::counters))
        .unwrap_or_default();
    Ok(SimCall {
        heard: std::mem::take(&mut w.nodes[1].heard),
        receiver: w.stats(1).clone(),
        towards,
        simulated: w.now,
    })
}

/// A simulated run: the table as [`Report`] has it, and what it cost.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SimReport {
    /// The table (no latency rows).
    pub report: Report,
    /// Seeds per cell.
    pub seeds: u32,
    /// Call time simulated, s (all calls).
    pub simulated_secs: f64,
    /// Wall time of the calls, s.
    pub calls_secs: f64,
    /// Wall time of the PESQ scoring, s.
    pub pesq_secs: f64,
}

/// A call to simulate: (row, column 1 Babel / 2 naive, seed).
type Job = (usize, usize, u64);
/// A simulated call's result: its figures (MOS still to come), its
/// recording, the call time simulated.
type Done = anyhow::Result<(Scored, PathBuf, Duration)>;

/// Runs every condition with every seed, calls on `threads` threads,
/// then scores all recordings with PESQ.
pub fn run(
    python: &Path,
    opts: &super::Options,
    seeds: u32,
    threads: usize,
    progress: &(dyn Fn(&str) + Sync),
) -> anyhow::Result<SimReport> {
    let seeds = seeds.max(1);
    std::fs::create_dir_all(&opts.out_dir).with_context(|| format!("cannot create {}", opts.out_dir.display()))?;
    let ref16 = audio::resample(&opts.speech, 48_000, 16_000)?;
    let ref_path = opts.out_dir.join("reference.wav");
    write_wav16(&ref_path, &ref16)?;
    let mut pairs: Vec<(PathBuf, PathBuf)> = Vec::new();
    let (codec, _) = codec_only(&opts.speech, &opts.media, None, &[])?;
    let (codec16, _) = prepare(&ref16, &codec)?;
    let codec_path = opts.out_dir.join("codec.wav");
    write_wav16(&codec_path, &codec16)?;
    pairs.push((ref_path.clone(), codec_path));

    let naive_media = MediaConfig { fec: false, redundancy: false, adaptive_jitter: false, ..opts.media.clone() };
    let mut rows: Vec<Row> = opts
        .networks
        .iter()
        .map(|n| Row { network: *n, label: n.label(), codec_loss: vec![], babel: vec![], naive: vec![] })
        .collect();
    // Where each score goes: (row, column 0 codec+loss / 1 babel / 2 naive, index).
    let mut slots: Vec<(usize, usize, usize)> = Vec::new();
    let frames = opts.speech.len().div_ceil(opts.media.frame.samples()) as f64;
    for (ri, net) in opts.networks.iter().enumerate() {
        for seed in 1..=u64::from(seeds) {
            if net.loss_pct > 0.0 {
                let ideal_media = MediaConfig { fec: opts.media.fec && !opts.ideal_no_fec, ..opts.media.clone() };
                let (pcm, repairs) = super::ideal_receiver(
                    &opts.speech,
                    &ideal_media,
                    Some((net.impairment(), seed)),
                    &net.ideal_offsets(&opts.offsets),
                )?;
                let lost = repairs.fec + repairs.concealed;
                let (d16, delay) = prepare(&ref16, &pcm)?;
                let p = opts.out_dir.join(format!("sim-codec-loss-{ri}-s{seed}.wav"));
                write_wav16(&p, &d16)?;
                pairs.push((ref_path.clone(), p));
                slots.push((ri, 0, rows[ri].codec_loss.len()));
                rows[ri].codec_loss.push(Scored {
                    seed,
                    mos: 0.0,
                    applied_loss_pct: 100.0 * lost as f64 / frames,
                    fec_recovered: repairs.fec,
                    from_copies: repairs.copies,
                    concealed: repairs.concealed,
                    delay_ms: delay,
                });
            }
        }
    }

    let mut jobs: Vec<Job> = Vec::new();
    for ri in (0..opts.networks.len()).filter(|_| opts.calls) {
        for seed in 1..=u64::from(seeds) {
            jobs.push((ri, 1, seed));
            if opts.naive {
                jobs.push((ri, 2, seed));
            }
        }
    }
    let started = Instant::now();
    let next = AtomicUsize::new(0);
    let done: Mutex<Vec<(Job, Done)>> = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..threads.max(1) {
            s.spawn(|| {
                loop {
                    let k = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&job) = jobs.get(k) else { break };
                    let (ri, col, seed) = job;
                    let net = &opts.networks[ri];
                    let media = if col == 1 { &opts.media } else { &naive_media };
                    let name = if col == 1 { "babel" } else { "naive" };
                    progress(&format!("simulated · {} · {name} · seed {seed}", net.label()));
                    let one = || -> Done {
                        let r = call(&opts.speech, net, media, seed)?;
                        let (d16, delay) = prepare(&ref16, &r.heard)?;
                        let p = opts.out_dir.join(format!("sim-{name}-{ri}-s{seed}.wav"));
                        write_wav16(&p, &d16)?;
                        let applied = 100.0 * r.towards.dropped() as f64 / r.towards.received.max(1) as f64;
                        let scored = Scored {
                            seed,
                            mos: 0.0,
                            applied_loss_pct: applied,
                            fec_recovered: r.receiver.fec_recovered,
                            from_copies: r.receiver.from_copies,
                            concealed: r.receiver.concealed,
                            delay_ms: delay,
                        };
                        Ok((scored, p, r.simulated))
                    };
                    let result = one();
                    done.lock().unwrap_or_else(|p| p.into_inner()).push((job, result));
                }
            });
        }
    });
    let calls_secs = started.elapsed().as_secs_f64();
    let mut done = done.into_inner().unwrap_or_else(|p| p.into_inner());
    done.sort_by_key(|(job, _)| *job);
    let mut simulated = Duration::ZERO;
    for ((ri, col, _), result) in done {
        let (scored, path, sim) = result?;
        simulated += sim;
        let cell = if col == 1 { &mut rows[ri].babel } else { &mut rows[ri].naive };
        slots.push((ri, col, cell.len()));
        cell.push(scored);
        pairs.push((ref_path.clone(), path));
    }

    progress(&format!("scoring {} recordings with PESQ", pairs.len()));
    let started = Instant::now();
    let scores = pesq_parallel(python, &pairs, threads)?;
    let pesq_secs = started.elapsed().as_secs_f64();
    let codec_mos = scores.first().copied().unwrap_or(f64::NAN);
    super::place_scores(&mut rows, &slots, &scores);
    let report = Report {
        speech: opts.speech_source.clone(),
        speech_secs: opts.speech.len() as f64 / 48_000.0,
        bitrate: opts.media.bitrate,
        frame_ms: opts.media.frame.ms(),
        codec_mos,
        rows,
        latency: Vec::new(),
    };
    Ok(SimReport { report, seeds, simulated_secs: simulated.as_secs_f64(), calls_secs, pesq_secs })
}

/// [`pesq_scores`] in `threads` scorers side by side (the first pair
/// alone first, so that the scorer's script is written before any of them
/// starts); the scores in the order of `pairs`.
pub fn pesq_parallel(python: &Path, pairs: &[(PathBuf, PathBuf)], threads: usize) -> anyhow::Result<Vec<f64>> {
    let Some((first, rest)) = pairs.split_first() else { return Ok(Vec::new()) };
    let mut scores = pesq_scores(python, std::slice::from_ref(first))?;
    if rest.is_empty() {
        return Ok(scores);
    }
    let chunk = rest.len().div_ceil(threads.max(1));
    let parts: Vec<anyhow::Result<Vec<f64>>> = std::thread::scope(|s| {
        let handles: Vec<_> = rest.chunks(chunk).map(|c| s.spawn(move || pesq_scores(python, c))).collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err(anyhow::anyhow!("a PESQ scorer thread panicked"))))
            .collect()
    });
    for p in parts {
        scores.extend(p?);
    }
    Ok(scores)
}

/// `babel-quality --simulated`: runs the table of `opts` (its speech,
/// conditions, media settings, naive receiver and output directory) in
/// simulated time with `seeds` seeds per cell on `threads` threads, prints
/// it (and beside the real-time `results.json` files in `compare`), and
/// writes `sim-results.json`.
pub fn main(opts: &super::Options, seeds: u32, threads: usize, compare: &[PathBuf]) -> anyhow::Result<()> {
    let python = super::deps::require_pesq()?;
    let r = run(&python, opts, seeds, threads, &|step| eprintln!("babel-quality: {step}"))?;
    let json = opts.out_dir.join("sim-results.json");
    std::fs::write(&json, serde_json::to_string_pretty(&r)?)
        .with_context(|| format!("cannot write {}", json.display()))?;
    println!("{}", markdown(&r));
    if !compare.is_empty() {
        let mut real = Vec::new();
        for p in compare {
            let text = std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))?;
            real.push(
                serde_json::from_str::<Report>(&text)
                    .with_context(|| format!("{}: not a results.json", p.display()))?,
            );
        }
        println!("\n{}", compare_markdown(&r, &real));
    }
    Ok(())
}

/// The 97.5th percentile of Student's t with `df` degrees of freedom (a
/// two-sided 95 % interval).
pub fn t975(df: usize) -> f64 {
    const T: [f64; 30] = [
        12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
        2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
    ];
    match df {
        0 => f64::INFINITY,
        1..=30 => T[df - 1],
        31..=60 => 2.000,
        61..=120 => 1.980,
        _ => 1.960,
    }
}

/// Mean and the half-width of its 95 % confidence interval (Student's t;
/// infinite for one value).
pub fn mean_ci(v: &[f64]) -> Option<(f64, f64)> {
    if v.is_empty() {
        return None;
    }
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    if v.len() < 2 {
        return Some((mean, f64::INFINITY));
    }
    let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
    Some((mean, t975(v.len() - 1) * (var / n).sqrt()))
}

fn cell(v: &[Scored]) -> String {
    cell_of(v, |s| s.mos, 2, "")
}

/// A cell's mean ± the half-width of its 95 % interval, of `f` of each
/// call, with `digits` decimals and `unit` after it.
fn cell_of(v: &[Scored], f: impl Fn(&Scored) -> f64, digits: usize, unit: &str) -> String {
    let x: Vec<f64> = v.iter().map(f).collect();
    match mean_ci(&x) {
        Some((m, h)) if h.is_finite() => format!("{m:.digits$} ± {h:.digits$}{unit}"),
        Some((m, _)) => format!("{m:.digits$}{unit}"),
        None => "–".into(),
    }
}

/// The delay column: the alignment's delay of what was heard (capture to
/// playback, plus the codec), mean ± 95 % interval over the seeds.
fn delay_cell(v: &[Scored]) -> String {
    cell_of(v, |s| s.delay_ms, 0, " ms")
}

/// The simulated table in Markdown: each cell's mean ± the half-width of
/// its 95 % confidence interval.
pub fn markdown(r: &SimReport) -> String {
    let rep = &r.report;
    let mut s = format!(
        "Simulated: {} seeds per cell; codec alone (no network): **{:.2}** MOS (PESQ-WB). Opus {} kbit/s CBR, {} ms \
         frames; speech: {} ({:.1} s). {:.0} s of calls simulated in {:.1} s, PESQ {:.1} s.\n\n",
        r.seeds,
        rep.codec_mos,
        rep.bitrate / 1000,
        rep.frame_ms,
        rep.speech,
        rep.speech_secs,
        r.simulated_secs,
        r.calls_secs,
        r.pesq_secs,
    );
    s.push_str(&table_head(false));
    for row in &rep.rows {
        s.push_str(&table_row(None, rep, row));
    }
    s
}

/// The head of the simulated table (with a voice column first, or not).
fn table_head(voice: bool) -> String {
    let (v, a) = if voice { ("| voice ", "| --- ") } else { ("", "") };
    format!(
        "{v}| network (both ways) | codec + same loss, ideal receiver | **Babel** (simulated) | delay | R (G.107.1) | \
         MOS-CQ | naive receiver (simulated) | loss applied | Babel: frames from copies / FEC / concealed |\n\
         {a}| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n"
    )
}

/// One row of the simulated table.
fn table_row(voice: Option<&str>, rep: &Report, row: &super::Row) -> String {
    // Without calls (`--codec-only`), the repairs column is the ideal
    // receiver's.
    let calls = if row.babel.is_empty() { &row.codec_loss } else { &row.babel };
    let n = calls.len().max(1);
    let ratings: Vec<super::emodel::Rating> = row.babel.iter().map(|c| super::emodel::of_call(rep, row, c)).collect();
    let ci = |x: Vec<f64>, digits: usize| match mean_ci(&x) {
        Some((m, h)) if h.is_finite() => format!("{m:.digits$} ± {h:.digits$}"),
        Some((m, _)) => format!("{m:.digits$}"),
        None => "–".into(),
    };
    let r_wb = ci(ratings.iter().map(|r| r.r_wb).collect(), 1);
    let mos_cq = ci(ratings.iter().map(|r| r.mos_cq).collect(), 2);
    let loss = calls.iter().map(|x| x.applied_loss_pct).sum::<f64>() / n as f64;
    let avg = |f: fn(&Scored) -> u64| calls.iter().map(f).sum::<u64>() as f64 / n as f64;
    format!(
        "{}| {} | {} | **{}** | {} | {r_wb} | {mos_cq} | {} | {loss:.1} % | {:.1} / {:.1} / {:.1} |\n",
        voice.map_or(String::new(), |v| format!("| {v} ")),
        row.label,
        cell(&row.codec_loss),
        cell(&row.babel),
        delay_cell(&row.babel),
        cell(&row.naive),
        avg(|x| x.from_copies),
        avg(|x| x.fec_recovered),
        avg(|x| x.concealed),
    )
}

/// One voice's simulated run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SimVoice {
    /// The voice (speaker id or "festival").
    pub voice: String,
    /// What the run found for it.
    pub run: SimReport,
}

/// The simulated table of several voices: a row per voice and condition.
pub fn voices_markdown(voices: &[SimVoice]) -> String {
    let Some(first) = voices.first() else { return String::new() };
    let mut s = format!(
        "Simulated: {} seeds per cell, mean ± 95 % interval; Opus {} kbit/s CBR, {} ms frames. Codec alone: {}.\n\n",
        first.run.seeds,
        first.run.report.bitrate / 1000,
        first.run.report.frame_ms,
        voices.iter().map(|v| format!("{} {:.2}", v.voice, v.run.report.codec_mos)).collect::<Vec<_>>().join(", "),
    );
    s.push_str(&table_head(true));
    for v in voices {
        for row in &v.run.report.rows {
            s.push_str(&table_row(Some(&v.voice), &v.run.report, row));
        }
    }
    s
}

/// `babel-quality --simulated --real-voices`: the table of `opts` for its
/// own speech (festival's) and then for each of `speakers`, each into a
/// folder of its own under `opts.out_dir`; prints one table and writes
/// `sim-voices.json`.
pub fn main_voices(
    opts: &super::Options,
    speakers: &[super::voices::Speaker],
    seeds: u32,
    threads: usize,
) -> anyhow::Result<Vec<SimVoice>> {
    let python = super::deps::require_pesq()?;
    let mut voices = vec![("festival".to_owned(), opts.speech.clone(), opts.speech_source.clone())];
    for s in speakers {
        let (speech, used) = super::voices::load(s)?;
        voices.push((s.id.to_owned(), speech, format!("{}: prompts {}", s.label(), used.join(", "))));
    }
    let mut out = Vec::new();
    for (voice, speech, speech_source) in voices {
        let o = super::Options { speech, speech_source, out_dir: opts.out_dir.join(&voice), ..opts.clone() };
        let run = run(&python, &o, seeds, threads, &|step| eprintln!("babel-quality: {voice}: {step}"))?;
        out.push(SimVoice { voice, run });
    }
    let json = opts.out_dir.join("sim-voices.json");
    std::fs::write(&json, serde_json::to_string_pretty(&out)?)
        .with_context(|| format!("cannot write {}", json.display()))?;
    println!("{}", voices_markdown(&out));
    Ok(out)
}

/// Whether two means agree: their difference is within the 95 % interval
/// of the difference (Welch: the half-widths added in quadrature).
pub fn agree(a: (f64, f64), b: (f64, f64)) -> bool {
    (a.0 - b.0).abs() <= (a.1.powi(2) + b.1.powi(2)).sqrt()
}

/// The simulated Babel column beside the real-time ones of `real` (the
/// `results.json` of one or more real-time runs; a condition's calls are
/// pooled across them), each mean with its 95 % interval, and whether they
/// agree ([`agree`]; also whether the simulated mean lies inside the
/// real-time interval).
pub fn compare_markdown(sim: &SimReport, real: &[Report]) -> String {
    let mut s = String::from(
        "| network | real time: calls | real time: Babel | simulated: seeds | simulated: Babel | difference | \
         agree (Welch 95 %) | simulated mean inside the real-time CI |\n\
         | --- | ---: | ---: | ---: | ---: | ---: | --- | --- |\n",
    );
    for row in &sim.report.rows {
        let rt: Vec<f64> = real
            .iter()
            .flat_map(|r| r.rows.iter())
            .filter(|r| r.network == row.network)
            .flat_map(|r| r.babel.iter().map(|x| x.mos))
            .collect();
        let sv: Vec<f64> = row.babel.iter().map(|x| x.mos).collect();
        let (Some(a), Some(b)) = (mean_ci(&rt), mean_ci(&sv)) else { continue };
        s.push_str(&format!(
            "| {} | {} | {:.2} ± {:.2} | {} | {:.2} ± {:.2} | {:+.2} | {} | {} |\n",
            row.label,
            rt.len(),
            a.0,
            a.1,
            sv.len(),
            b.0,
            b.1,
            b.0 - a.0,
            if agree(a, b) { "yes" } else { "**no**" },
            if (b.0 - a.0).abs() <= a.1 { "yes" } else { "no" },
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_interval_of_known_samples() {
        // Mean 2, sample standard deviation 1, n = 4: t(3) = 3.182, so the
        // half-width is 3.182 / 2.
        let (m, h) = mean_ci(&[1.0, 2.0, 2.0, 3.0].map(|x: f64| x)).unwrap_or_default();
        let sd = (2.0f64 / 3.0).sqrt();
        assert!((m - 2.0).abs() < 1e-12);
        assert!((h - 3.182 * sd / 2.0).abs() < 1e-9, "{h}");
        assert_eq!(mean_ci(&[]), None);
        assert!(mean_ci(&[3.0]).is_some_and(|(m, h)| m == 3.0 && h.is_infinite()));
        assert!((t975(19) - 2.093).abs() < 1e-9 && t975(1000) == 1.96);
    }

    #[test]
    fn means_agree_within_the_combined_interval_only() {
        assert!(agree((3.70, 0.10), (3.80, 0.05)));
        assert!(!agree((3.70, 0.05), (3.90, 0.05)));
    }

    #[test]
    fn the_listener_phase_is_within_a_frame_and_follows_the_seed() {
        let m = MediaConfig::default();
        let phases: Vec<Duration> = (1..=50).map(|s| listener_phase(s, &m)).collect();
        assert!(phases.iter().all(|p| *p < Duration::from_millis(20)));
        assert!(phases.iter().any(|p| *p != phases[0]), "{phases:?}");
        assert_eq!(listener_phase(7, &m), listener_phase(7, &m));
    }
}
