//! `babel-quality`: voice quality (PESQ wideband) and mouth-to-ear latency
//! of the whole system under bad networks, in one command:
//!
//! ```sh
//! cargo run --release -p babel-tools --bin babel-quality
//! ```
//!
//! Needs festival or espeak-ng, a font and PESQ in its own Python virtual
//! environment, which `scripts/setup.sh` installs (it says so when one is
//! missing); prints a Markdown table and the targets of
//! issue #5, and draws `docs/mos-vs-loss.png`. `--simulated --seeds N`
//! runs the table in simulated time instead ([`babel_tools::quality::sim`]).
//! See [`babel_tools::quality`].

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use babel_media::codec::FrameMs;
use babel_media::engine::MediaConfig;
use babel_tools::quality::{self, Network, Options};
use clap::Parser;

/// Sends speech through the real server, two real clients and the
/// impairment proxy, and scores what arrives with PESQ wideband.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Speech to send (any WAV; default: five Harvard sentences spoken by
    /// festival, about 12 s).
    #[arg(long)]
    input: Option<PathBuf>,
    /// Make the speech with espeak-ng instead of festival.
    #[arg(long)]
    espeak: bool,
    /// Calls per condition and receiver (seeds 1..=N); the table shows means.
    #[arg(long, default_value_t = 3)]
    runs: u32,
    /// Only the clean path and 10 % random loss with 30 ms jitter, one run,
    /// two sentences, no latency: a quick check.
    #[arg(long)]
    quick: bool,
    /// Network conditions instead of the standard set, each
    /// `random:LOSS%:JITTER_MS` or `bursty:LOSS%:JITTER_MS` (repeatable).
    #[arg(long = "net", value_parser = Network::parse)]
    nets: Vec<Network>,
    /// Only score the codec references (no calls): to try a recording, a
    /// bitrate or the codec's behaviour under `--net` losses quickly.
    #[arg(long)]
    codec_only: bool,
    /// Where the ideal receiver of the codec-with-loss reference finds
    /// copies of a lost frame, in frames later, e.g. `2,4` (default: where
    /// the engine puts them for each condition's loss pattern). With `--codec-only`, a quick way to compare
    /// redundancy schemes.
    #[arg(long, value_delimiter = ',')]
    ideal_offsets: Option<Vec<u32>>,
    /// The ideal receiver uses no in-band FEC (copies, else concealment):
    /// to see what FEC adds to the copies.
    #[arg(long)]
    ideal_no_fec: bool,
    /// Turn the engine's copies of earlier frames off (FEC only): to see
    /// what they gain.
    #[arg(long)]
    no_redundancy: bool,
    /// Measure nothing: print the table and draw the figure again from a
    /// results.json of an earlier run (or print the table of a simulated
    /// run's sim-voices.json).
    #[arg(long)]
    replot: Option<PathBuf>,
    /// Skip the latency measurement.
    #[arg(long)]
    no_latency: bool,
    /// Skip the naive receiver.
    #[arg(long)]
    no_naive: bool,
    /// Frame length for the quality runs (10 or 20 ms).
    #[arg(long, default_value_t = 20)]
    frame_ms: u32,
    /// Opus bitrate, bits/s.
    #[arg(long, default_value_t = babel_media::codec::DEFAULT_BITRATE)]
    bitrate: u32,
    /// Keep the bitrate fixed (no adaptation) in the table's calls.
    #[arg(long)]
    fixed_bitrate: bool,
    /// Skip the echo and level measurement.
    #[arg(long)]
    no_echo: bool,
    /// Only the echo measurement, in the simulated room with the capture
    /// chain alone (seconds per configuration): each echo canceller
    /// configuration of `--echo-tunings` over every ordered pair of the
    /// `--real-voices` speakers (default `carlo-it,allison-en`; `festival`
    /// counts as one here) as far and near end; a table, and
    /// echo-compare.json. See
    /// `babel_tools::quality::echo`.
    #[arg(long)]
    echo_only: bool,
    /// The configurations for `--echo-only` (comma-separated; default all).
    #[arg(long, value_delimiter = ',')]
    echo_tunings: Vec<String>,
    /// Skip the bandwidth-cap rows (bitrate adaptation on and off).
    #[arg(long)]
    no_cap: bool,
    /// The bandwidth cap for those rows, kbit/s each way (the default
    /// bitrate needs about 56 on the wire).
    #[arg(long, default_value_t = 40)]
    cap_kbps: u64,
    /// Run the table in simulated time instead (call cores over the
    /// babel-netem model: no server, no sockets, no clocks; codec, jitter
    /// buffer, capture chain and PESQ real), `--seeds` calls per cell, with
    /// 95 % confidence intervals. See `babel_tools::quality::sim`.
    #[arg(long)]
    simulated: bool,
    /// Seeds per condition and receiver with `--simulated` (1..=N).
    #[arg(long, default_value_t = 3)]
    seeds: u32,
    /// With `--simulated`: real-time `results.json` files to set beside it
    /// (repeatable; a condition's calls are pooled across them).
    #[arg(long)]
    compare: Vec<PathBuf>,
    /// Simulated calls at once (default: the machine's cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Where recordings and results.json go.
    #[arg(long, default_value = "/tmp/babel-quality")]
    out: PathBuf,
    /// The figure (PNG).
    #[arg(long, default_value = "docs/mos-vs-loss.png")]
    plot: PathBuf,
    #[command(flatten)]
    voices: quality::voices::VoiceArgs,
    /// Score only the capture chain on real voices in real noise (no
    /// network): each condition `clean` or `babble|wind|keyboard:SNR_DB`,
    /// comma-separated; `default` is clean, 5 and 15 dB of each. Scored
    /// against the clean voice, suppression off and as shipped; the
    /// voices are those of --real-voices (default: the three distinct
    /// speakers). See `babel_tools::quality::noise`.
    #[arg(long, value_delimiter = ',', num_args = 0.., default_missing_value = "default")]
    noise: Option<Vec<String>>,
    /// With --noise: a suppressor tuning to try in the shipped column,
    /// `FULL_DB,CLEAN_DB,MIN_DRY` (see `babel_media::denoise::Tuning`).
    #[arg(long, value_delimiter = ',', num_args = 3)]
    ns_tuning: Option<Vec<f32>>,
    /// With --noise: what the tried suppressor runs (see
    /// `babel_media::ns_stage::Stage::parse`): `rnnoise`, `webrtc-LEVEL`,
    /// `rnnoise+webrtc-LEVEL`, `spectral[:FLOOR_DB]`,
    /// `rnnoise+spectral[:FLOOR_DB]`.
    #[arg(long)]
    ns_stage: Option<String>,
    /// With --noise: the tried suppressor runs on every block, ungated.
    #[arg(long)]
    ns_always: bool,
    /// With --noise: also whole calls in simulated time, this many seeds
    /// per cell, suppression off and as shipped, over the --net conditions
    /// (default: a clean path).
    #[arg(long, default_value_t = 0)]
    noise_calls: u32,
}

fn print_report(report: &quality::Report) {
    println!("{}", quality::markdown(report));
    println!("| target (FEC on) | result | met? |\n| --- | --- | --- |");
    for (what, value, met) in quality::targets(report) {
        println!("| {what} | {value} | {} |", if met { "yes" } else { "**no**" });
    }
}

/// `--noise`: the capture chain on real voices in real noise.
fn noise_rows(a: &Args, conditions: &[String]) -> anyhow::Result<()> {
    let mut conds = Vec::new();
    for c in conditions {
        if c == "default" {
            conds.extend(quality::noise::default_conditions());
        } else {
            conds.push(quality::noise::parse_condition(c).map_err(anyhow::Error::msg)?);
        }
    }
    let mut speakers = a.voices.speakers()?;
    if speakers.is_empty() {
        speakers = quality::voices::DEFAULT_SPEAKERS.iter().filter_map(|d| quality::voices::speaker(d)).collect();
    }
    let python = quality::deps::require_pesq()?;
    let voices = quality::noise::load_voices(&speakers)?;
    let started = std::time::Instant::now();
    let mut tuning = match a.ns_tuning.as_deref() {
        Some([full_db, clean_db, min_dry]) => babel_media::denoise::Tuning {
            full_db: *full_db,
            clean_db: *clean_db,
            min_dry: *min_dry,
            ..babel_media::denoise::Tuning::SHIPPED
        },
        _ => babel_media::denoise::Tuning::SHIPPED,
    };
    if let Some(s) = &a.ns_stage {
        tuning.stage =
            babel_media::ns_stage::Stage::parse(s).with_context(|| format!("--ns-stage {s}: no such stage"))?;
    }
    if a.ns_always {
        tuning = babel_media::denoise::Tuning { stage: tuning.stage, ..babel_media::denoise::Tuning::ALWAYS };
    }
    eprintln!("babel-quality: suppression tuning {tuning:?}");
    let dir = a.out.join("noise");
    let rows = quality::noise::run(&python, tuning, &voices, &conds, &dir, |s| eprintln!("babel-quality: {s}"))?;
    std::fs::write(a.out.join("noise.json"), serde_json::to_string_pretty(&rows)?)?;
    println!("{}", quality::noise::markdown(&rows));
    if a.noise_calls > 0 {
        let nets = if a.nets.is_empty() {
            vec![Network { loss_pct: 0.0, bursty: false, jitter_ms: 0 }]
        } else {
            a.nets.clone()
        };
        let frame = if a.frame_ms == 10 { FrameMs::Ten } else { FrameMs::Twenty };
        let media = MediaConfig { frame, bitrate: a.bitrate, ..MediaConfig::default() };
        let dir = a.out.join("noise-calls");
        let calls = quality::noise::end_to_end(&python, &media, &voices, &conds, (&nets, a.noise_calls), &dir, |s| {
            eprintln!("babel-quality: calls: {s}")
        })?;
        std::fs::write(a.out.join("noise-calls.json"), serde_json::to_string_pretty(&calls)?)?;
        println!("\n{}", quality::noise::calls_markdown(&calls));
    }
    eprintln!(
        "babel-quality: noise rows done in {:.0} s; noise.json in {}",
        started.elapsed().as_secs_f64(),
        a.out.display()
    );
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    // BABEL_LOG=babel_media=debug shows, e.g., the rate controller's steps.
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("BABEL_LOG").unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    let frame = match a.frame_ms {
        10 => FrameMs::Ten,
        20 => FrameMs::Twenty,
        other => anyhow::bail!("--frame-ms is 10 or 20, not {other}"),
    };
    let started = std::time::Instant::now();
    if let Some(path) = &a.replot {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        if let Ok(v) = serde_json::from_str::<Vec<quality::sim::SimVoice>>(&text) {
            // A simulated run's sim-voices.json: its table again.
            println!("{}", quality::sim::voices_markdown(&v));
            return Ok(());
        }
        let report: quality::Report = serde_json::from_str(&text).context("not a babel-quality results.json")?;
        quality::plot::draw(&report, &a.plot)?;
        print_report(&report);
        return Ok(());
    }
    if let Some(noise) = &a.noise {
        return noise_rows(&a, noise);
    }
    if a.echo_only {
        let python = quality::deps::require_pesq()?;
        // `festival` may be one of the voices here: the synthetic one.
        let ids = a.voices.real_voices.clone();
        let festival = ids.iter().flatten().any(|i| i == "festival");
        let real = quality::voices::VoiceArgs {
            real_voices: ids.map(|v| v.into_iter().filter(|i| i != "festival").collect()),
            ..a.voices.clone()
        };
        let speakers = if real.real_voices.is_some() {
            real.speakers()?
        } else {
            ["carlo-it", "allison-en"].iter().filter_map(|id| quality::voices::speaker(id)).collect()
        };
        let mut voices = Vec::new();
        if festival {
            let n = quality::SENTENCES.len();
            voices.push(("festival".to_owned(), quality::make_speech(&a.out, n, quality::Voice::Festival)?));
        }
        for s in &speakers {
            voices.push((s.id.to_owned(), quality::voices::load(s)?.0));
        }
        let rows = quality::echo::compare(&python, &voices, &a.echo_tunings, &a.out, |step| {
            eprintln!("babel-quality: {step}")
        })?;
        std::fs::write(a.out.join("echo-compare.json"), serde_json::to_string_pretty(&rows)?)?;
        println!("{}", quality::echo::compare_markdown(&rows));
        eprintln!("babel-quality: echo comparison done in {:.0} s", started.elapsed().as_secs_f64());
        return Ok(());
    }
    let (speech, source) = match &a.input {
        Some(p) => {
            let mut s = babel_media::audio::read_wav(p).with_context(|| format!("cannot read {}", p.display()))?;
            quality::normalise(&mut s);
            (s, p.display().to_string())
        }
        None => {
            let n = if a.quick { 2 } else { quality::SENTENCES.len() };
            let (voice, name) = if a.espeak {
                (quality::Voice::Espeak, "espeak-ng en-us")
            } else {
                (quality::Voice::Festival, "festival, cmu_us_slt_arctic_hts")
            };
            (quality::make_speech(&a.out, n, voice)?, format!("{n} Harvard sentences, {name}"))
        }
    };
    let networks = if !a.nets.is_empty() {
        a.nets.clone()
    } else if a.quick {
        vec![
            Network { loss_pct: 0.0, bursty: false, jitter_ms: 0 },
            Network { loss_pct: 10.0, bursty: false, jitter_ms: 30 },
        ]
    } else {
        quality::standard_networks()
    };
    let opts = Options {
        speech,
        speech_source: source,
        networks,
        runs: if a.quick { 1 } else { a.runs.max(1) },
        media: MediaConfig {
            frame,
            bitrate: a.bitrate,
            // The recording is clean speech; noise suppression is a capture
            // feature outside what this measures. Echo cancellation and gain
            // control stay on, as shipped.
            noise_suppression: false,
            adapt_bitrate: !a.fixed_bitrate,
            redundancy: !a.no_redundancy,
            tail: Duration::from_millis(500),
            ..MediaConfig::default()
        },
        naive: !a.no_naive,
        calls: !a.codec_only,
        offsets: a.ideal_offsets.clone().unwrap_or_default(),
        ideal_no_fec: a.ideal_no_fec,
        latency: !a.no_latency && !a.quick && !a.codec_only,
        out_dir: a.out.clone(),
    };
    let opts = if a.voices.shipped { Options { media: quality::voices::shipped(&opts.media), ..opts } } else { opts };
    if a.simulated {
        let threads = a.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        if a.voices.real_voices.is_some() {
            quality::sim::main_voices(&opts, &a.voices.speakers()?, a.seeds, threads)?;
        } else {
            quality::sim::main(&opts, a.seeds, threads, &a.compare)?;
        }
        eprintln!("babel-quality: simulated table done in {:.0} s", started.elapsed().as_secs_f64());
        return Ok(());
    }
    if a.voices.real_voices.is_some() {
        let speakers = a.voices.speakers()?;
        let r = quality::voices::run(&opts, &speakers, |step| eprintln!("babel-quality: {step}")).await?;
        std::fs::write(a.out.join("voices.json"), serde_json::to_string_pretty(&r)?)?;
        println!("{}", quality::voices::markdown(&r));
        eprintln!(
            "babel-quality: done in {:.0} s; recordings and voices.json in {}",
            started.elapsed().as_secs_f64(),
            a.out.display()
        );
        return Ok(());
    }
    let full = !a.quick && !a.codec_only;
    let (echo, cap) = (full && !a.no_echo, full && !a.no_cap);
    let speech_for_extras = opts.speech.clone();
    let report = quality::run(&opts, |step| eprintln!("babel-quality: {step}")).await?;
    let json = a.out.join("results.json");
    std::fs::write(&json, serde_json::to_string_pretty(&report)?)
        .with_context(|| format!("cannot write {}", json.display()))?;
    quality::plot::draw(&report, &a.plot)?;
    print_report(&report);
    let python = quality::deps::require_pesq()?;
    if cap {
        eprintln!("babel-quality: {} kbit/s cap, bitrate adaptation on and off", a.cap_kbps);
        let r =
            quality::cap::run(&python, &speech_for_extras, &opts.media, a.cap_kbps * 1000, opts.runs, &a.out).await?;
        std::fs::write(a.out.join("cap.json"), serde_json::to_string_pretty(&r)?)?;
        println!("\n{}", quality::cap::markdown(&r));
    }
    if echo {
        eprintln!("babel-quality: echo and level");
        // The first half of the recording is the far end, the second the near end.
        let half = speech_for_extras.len() / 2;
        let (far, near) = speech_for_extras.split_at(half);
        let r = quality::echo::run(&python, far, near, &a.out)?;
        std::fs::write(a.out.join("echo.json"), serde_json::to_string_pretty(&r)?)?;
        println!("\n{}", quality::echo::markdown(&r));
    }
    eprintln!(
        "babel-quality: done in {:.0} s; recordings and results.json in {}, figure in {}",
        started.elapsed().as_secs_f64(),
        a.out.display(),
        a.plot.display()
    );
    Ok(())
}
