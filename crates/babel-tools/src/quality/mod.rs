//! The voice-quality harness (`babel-quality`): what a person would hear,
//! scored the way the telecom industry does (PESQ wideband, ITU-T P.862.2).
//!
//! For each network condition it sends a speech recording through the
//! whole system ([`call`]: real server, two real clients, real sockets, the
//! impairment proxy between them), records what the far end plays, aligns
//! it in time with what was said ([`signal::find_delay`]) and scores it.
//! Beside it, the same speech through the codec alone (no network: the
//! ceiling), through the codec with the same loss pattern and an ideal
//! receiver (FEC from the next packet, concealment, no jitter), and through
//! the whole system with FEC and the adaptive jitter buffer off (the naive
//! receiver). It also measures the software's mouth-to-ear latency with a
//! chirp on a clean path.
//!
//! [`deps`] checks what it needs outside Rust (`scripts/setup.sh` installs it); [`plot`] draws the figure.
//! [`sim`] runs the same table through call cores in simulated time
//! (`babel-quality --simulated`), many seeds per cell, with confidence intervals.

pub mod call;
pub mod cap;
pub mod deps;
#[cfg(feature = "dred")]
pub mod dred;
pub mod echo;
pub mod emodel;
pub mod noise;
pub mod plot;
pub mod signal;
pub mod sim;
pub mod voices;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use babel_media::audio::{self, AudioInput};
use babel_media::codec::{FrameMs, VoiceDecoder, VoiceEncoder};
use babel_media::engine::MediaConfig;
use serde::{Deserialize, Serialize};

use crate::netsim::{GilbertElliott, Impairment, Link, Rng};
use call::{TimedInput, TimedRecording};

/// Mean burst length of the "bursty" conditions, in packets.
pub const BURST_LEN: f64 = 3.0;

/// The speech the harness makes when given no recording: Harvard sentences
/// (IEEE 1969), the usual material of speech-quality tests.
pub const SENTENCES: [&str; 5] = [
    "The birch canoe slid on the smooth planks.",
    "Glue the sheet to the dark blue background.",
    "It's easy to tell the depth of a well.",
    "These days a chicken leg is a rare dish.",
    "Rice is often served in round bowls.",
];

/// One network condition.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Network {
    /// Loss, percent.
    pub loss_pct: f64,
    /// Bursty (Gilbert, mean burst [`BURST_LEN`]) rather than random.
    pub bursty: bool,
    /// Jitter, ms (extra delay uniform in [0, jitter]).
    pub jitter_ms: u64,
}

impl Network {
    /// `random:LOSS:JITTER_MS` or `bursty:LOSS:JITTER_MS`, as the harnesses'
    /// `--net` takes it.
    pub fn parse(s: &str) -> Result<Network, String> {
        let bad = || format!("`{s}`: want random:LOSS:JITTER_MS or bursty:LOSS:JITTER_MS");
        let mut it = s.split(':');
        let bursty = match it.next() {
            Some("random") => false,
            Some("bursty") => true,
            _ => return Err(bad()),
        };
        let loss_pct: f64 = it.next().and_then(|x| x.parse().ok()).ok_or_else(bad)?;
        let jitter_ms: u64 = it.next().and_then(|x| x.parse().ok()).ok_or_else(bad)?;
        if !(0.0..100.0).contains(&loss_pct) || it.next().is_some() {
            return Err(bad());
        }
        Ok(Network { loss_pct, bursty, jitter_ms })
    }

    /// The impairment of one direction.
    pub fn impairment(&self) -> Impairment {
        let p = self.loss_pct / 100.0;
        Impairment {
            loss: if self.bursty { 0.0 } else { p },
            burst: (self.bursty && p > 0.0).then(|| GilbertElliott::from_loss_and_burst(p, BURST_LEN)),
            jitter: Duration::from_millis(self.jitter_ms),
            ..Impairment::default()
        }
    }

    /// Where the engine puts its copies on this network once the far end
    /// has measured it (the loss, and runs of 1.1 frames for random loss or
    /// [`BURST_LEN`] for bursty), frames back.
    pub fn engine_offsets(&self) -> Vec<u32> {
        let burst_x10 = if self.bursty { (BURST_LEN * 10.0) as u16 } else { 11 };
        babel_media::call::pattern::copy_offsets((self.loss_pct * 10.0) as u16, burst_x10)
            .into_iter()
            .map(u32::from)
            .collect()
    }

    /// The copies' offsets of the ideal receiver: `given`, or else the
    /// engine's for this network.
    pub fn ideal_offsets(&self, given: &[u32]) -> Vec<u32> {
        if given.is_empty() { self.engine_offsets() } else { given.to_vec() }
    }

    /// How it reads in the table.
    pub fn label(&self) -> String {
        if self.loss_pct == 0.0 && self.jitter_ms == 0 {
            return "clean".into();
        }
        let kind = if self.loss_pct == 0.0 {
            "no loss".to_owned()
        } else if self.bursty {
            format!("{} % bursty", self.loss_pct)
        } else {
            format!("{} % random", self.loss_pct)
        };
        if self.jitter_ms > 0 { format!("{kind}, {} ms jitter", self.jitter_ms) } else { kind }
    }
}

/// The conditions of issue #5: a clean path, then 0, 5, 10, 20 % random and
/// 10, 20 % bursty loss, each with 30 ms jitter.
pub fn standard_networks() -> Vec<Network> {
    let mut v = vec![Network { loss_pct: 0.0, bursty: false, jitter_ms: 0 }];
    for l in [0.0, 5.0, 10.0, 20.0] {
        v.push(Network { loss_pct: l, bursty: false, jitter_ms: 30 });
    }
    for l in [10.0, 20.0] {
        v.push(Network { loss_pct: l, bursty: true, jitter_ms: 30 });
    }
    v
}

/// What the harness runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// The speech, 48 kHz mono.
    pub speech: Vec<f32>,
    /// Where the speech came from (for the report).
    pub speech_source: String,
    /// Network conditions.
    pub networks: Vec<Network>,
    /// Calls per condition and receiver (seeds 1..=runs).
    pub runs: u32,
    /// Media settings of the full system (the naive receiver is these with
    /// FEC and the adaptive jitter buffer off).
    pub media: MediaConfig,
    /// Also run the naive receiver.
    pub naive: bool,
    /// Run calls (off: only the codec references).
    pub calls: bool,
    /// Where the ideal receiver finds copies of a frame (frames later),
    /// as the engine sends them under loss.
    /// (Empty: where the engine puts them for each condition, see
    /// [`Network::engine_offsets`].)
    pub offsets: Vec<u32>,
    /// The ideal receiver uses no in-band FEC (copies or concealment only),
    /// whatever `media.fec` says: to see what FEC adds to the copies.
    pub ideal_no_fec: bool,
    /// Also measure latency (20 and 10 ms frames).
    pub latency: bool,
    /// Where WAV files go.
    pub out_dir: PathBuf,
}

/// One scored call.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Scored {
    /// Seed of the proxy (and of the codec-with-loss pattern).
    pub seed: u64,
    /// PESQ-WB MOS-LQO.
    pub mos: f64,
    /// Loss the proxy applied towards the listener, percent.
    pub applied_loss_pct: f64,
    /// Frames the listener rebuilt from FEC.
    pub fec_recovered: u64,
    /// Frames the listener filled in from copies in later datagrams.
    pub from_copies: u64,
    /// Frames the listener concealed.
    pub concealed: u64,
    /// The delay alignment found, ms.
    pub delay_ms: f64,
}

/// One row of the table.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Row {
    /// The condition.
    pub network: Network,
    /// The label.
    pub label: String,
    /// Codec with the same loss pattern, ideal receiver.
    pub codec_loss: Vec<Scored>,
    /// The whole system.
    pub babel: Vec<Scored>,
    /// The whole system, FEC and adaptive jitter buffer off.
    pub naive: Vec<Scored>,
}

/// Latency for one frame length.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Latency {
    /// Frame length, ms.
    pub frame_ms: u32,
    /// Mouth to ear, each probe, ms (calls at four phases of the callee's
    /// clock against the caller's, a quarter frame apart).
    pub samples_ms: Vec<f64>,
    /// Their median.
    pub median_ms: f64,
    /// The median with the two clocks in phase: every packet comes just
    /// after the callee's tick and waits for the next (the worst case).
    #[serde(default)]
    pub in_phase_ms: Option<f64>,
}

/// Everything a run found.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// Where the speech came from.
    pub speech: String,
    /// Its length, s.
    pub speech_secs: f64,
    /// Opus bitrate, frame length.
    pub bitrate: u32,
    /// Frame length, ms.
    pub frame_ms: u32,
    /// Codec alone, no network.
    pub codec_mos: f64,
    /// The rows.
    pub rows: Vec<Row>,
    /// Latency on a clean path.
    pub latency: Vec<Latency>,
}

/// Mean MOS of a cell.
pub fn mean_mos(v: &[Scored]) -> Option<f64> {
    (!v.is_empty()).then(|| v.iter().map(|s| s.mos).sum::<f64>() / v.len() as f64)
}

/// A speech synthesiser the harness can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Voice {
    /// festival, CMU ARCTIC "slt" (HTS): close to natural speech, which
    /// PESQ is made for (the codec alone scores ~4.3 on it).
    Festival,
    /// espeak-ng (formant synthesis): buzzy; the codec alone scores ~3.4
    /// on it, so its MOS are not comparable with natural speech.
    Espeak,
}

/// Makes the speech recording (an error names the synthesiser if it is missing):
/// the first `sentences` of [`SENTENCES`], 48 kHz mono, peak at 0.5, with a
/// little silence before and after as in a recording.
pub fn make_speech(dir: &Path, sentences: usize, voice: Voice) -> anyhow::Result<Vec<f32>> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let text = SENTENCES[..sentences.clamp(1, SENTENCES.len())].join(" ");
    let wav = dir.join("speech.wav");
    let status = match voice {
        Voice::Festival => {
            deps::require_festival()?;
            let txt = dir.join("speech.txt");
            std::fs::write(&txt, &text).with_context(|| format!("cannot write {}", txt.display()))?;
            Command::new("text2wave")
                .args(["-eval", "(voice_cmu_us_slt_arctic_hts)"])
                .arg(&txt)
                .arg("-o")
                .arg(&wav)
                .stdin(Stdio::null())
                .status()
                .context("cannot run festival's text2wave")?
        }
        Voice::Espeak => {
            deps::require_espeak()?;
            Command::new("espeak-ng")
                .args(["-v", "en-us", "-s", "150", "-w"])
                .arg(&wav)
                .arg(&text)
                .stdin(Stdio::null())
                .status()
                .context("cannot run espeak-ng")?
        }
    };
    if !status.success() {
        bail!("the speech synthesiser failed ({status})");
    }
    let mut s = audio::read_wav(&wav)?;
    normalise(&mut s);
    let mut out = vec![0.0; 48_000 / 4];
    out.extend(s);
    out.extend(vec![0.0; 48_000 / 2]);
    Ok(out)
}

/// Scales to a peak of 0.5.
pub fn normalise(s: &mut [f32]) {
    let peak = s.iter().fold(0.0f32, |m, x| m.max(x.abs()));
    if peak > 0.0 {
        s.iter_mut().for_each(|x| *x *= 0.5 / peak);
    }
}

/// Writes 16 kHz mono 16-bit WAV (what PESQ wideband takes).
pub fn write_wav16(path: &Path, samples: &[f32]) -> anyhow::Result<()> {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 16_000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec).with_context(|| format!("cannot write {}", path.display()))?;
    for s in samples {
        w.write_sample((s.clamp(-1.0, 1.0) * 32767.0) as i16)?;
    }
    w.finalize()?;
    Ok(())
}

/// Scores (reference, degraded) WAV pairs with PESQ wideband in one Python
/// run; an error for a pair is an error for all.
pub fn pesq_scores(python: &Path, pairs: &[(PathBuf, PathBuf)]) -> anyhow::Result<Vec<f64>> {
    if pairs.is_empty() {
        return Ok(Vec::new());
    }
    let script = python.parent().and_then(Path::parent).unwrap_or(Path::new(".")).join("babel_pesq.py");
    // Written only when it differs, so that scorers running side by side
    // (`sim`) never read a script another is rewriting.
    if std::fs::read_to_string(&script).ok().as_deref() != Some(deps::PESQ_SCRIPT) {
        std::fs::write(&script, deps::PESQ_SCRIPT).with_context(|| format!("cannot write {}", script.display()))?;
    }
    let jobs: Vec<serde_json::Value> = pairs
        .iter()
        .map(|(r, d)| serde_json::json!({"ref": r.display().to_string(), "deg": d.display().to_string()}))
        .collect();
    let mut child = Command::new(python)
        .arg(&script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot run the PESQ scorer")?;
    if let Some(mut stdin) = child.stdin.take() {
        use std::io::Write;
        stdin.write_all(serde_json::to_string(&jobs)?.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("the PESQ scorer failed ({})", out.status);
    }
    let results: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).context("the PESQ scorer's output")?;
    results
        .iter()
        .zip(pairs)
        .map(|(r, (_, d))| match r.get("mos").and_then(serde_json::Value::as_f64) {
            Some(m) => Ok(m),
            None => bail!("PESQ on {}: {}", d.display(), r.get("error").map_or("no score".into(), |e| e.to_string())),
        })
        .collect()
}

/// The speech through the codec alone at the engine's settings; with
/// `loss`, packets are lost as `loss` (only its loss settings) and `seed`
/// say, and an ideal receiver (no jitter, waits as long as it needs) plays
/// a lost frame from a full copy in a later datagram (copies of frame k
/// ride in the datagrams of frames k + `offsets`), else rebuilds it from
/// the next packet's in-band FEC (when FEC is on and that packet came),
/// else conceals it. Answers the decoded audio and how many frames were
/// neither received nor recovered from a copy.
pub fn codec_only(
    speech: &[f32],
    media: &MediaConfig,
    loss: Option<(Impairment, u64)>,
    offsets: &[u32],
) -> anyhow::Result<(Vec<f32>, u64)> {
    let (pcm, r) = ideal_receiver(speech, media, loss, offsets)?;
    Ok((pcm, r.fec + r.concealed))
}

/// How [`ideal_receiver`] played the lost frames.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IdealRepairs {
    /// Lost frames played from a full copy in a later datagram.
    pub copies: u64,
    /// Lost frames rebuilt from the next packet's in-band FEC.
    pub fec: u64,
    /// Lost frames concealed.
    pub concealed: u64,
}

/// [`codec_only`], answering how each lost frame was played.
pub fn ideal_receiver(
    speech: &[f32],
    media: &MediaConfig,
    loss: Option<(Impairment, u64)>,
    offsets: &[u32],
) -> anyhow::Result<(Vec<f32>, IdealRepairs)> {
    let n = media.frame.samples();
    let mut enc = VoiceEncoder::new(media.bitrate, media.frame)?;
    enc.set_fec(media.fec)?;
    let mut got = Vec::new();
    let mut packets = Vec::new();
    let mut link = loss.map(|(imp, seed)| {
        let only_loss = Impairment { loss: imp.loss, burst: imp.burst, ..Impairment::default() };
        Link::new(only_loss, Rng::with_stream(seed, 0))
    });
    if let (Some(l), true) = (&link, media.fec) {
        // As the engine does once the far end reports the loss.
        let pct = (l.impairment().loss + l.impairment().burst.map_or(0.0, |b| b.mean_loss())) * 100.0;
        enc.set_expected_loss(babel_media::engine::expected_loss_pct((pct * 10.0) as u16))?;
    }
    for chunk in speech.chunks(n) {
        let mut f = chunk.to_vec();
        f.resize(n, 0.0);
        packets.push(enc.encode(&f)?);
        got.push(match link.as_mut() {
            Some(l) => {
                l.push(Duration::ZERO, Vec::new());
                l.poll(Duration::ZERO).is_some()
            }
            None => true,
        });
    }
    let have = |k: usize| got[k] || offsets.iter().any(|&o| got.get(k + o as usize) == Some(&true));
    let mut dec = VoiceDecoder::new(media.frame)?;
    let mut out = Vec::with_capacity(speech.len() + n);
    let mut r = IdealRepairs::default();
    for k in 0..packets.len() {
        let pcm = if have(k) {
            r.copies += u64::from(!got[k]);
            dec.decode(&packets[k])?
        } else if media.fec && got.get(k + 1) == Some(&true) {
            r.fec += 1;
            dec.decode_fec(&packets[k + 1])?
        } else {
            r.concealed += 1;
            dec.conceal()?
        };
        out.extend(pcm);
    }
    Ok((out, r))
}

/// What a call's recording needs before scoring: 16 kHz, aligned to the
/// reference, cut to its length. Answers the samples and the delay (ms).
pub fn prepare(reference16: &[f32], heard48: &[f32]) -> anyhow::Result<(Vec<f32>, f64)> {
    let deg = audio::resample(heard48, 48_000, 16_000)?;
    let delay = signal::find_delay(reference16, &deg, 16_000, 32_000);
    Ok((signal::shift(&deg, delay, reference16.len()), delay as f64 / 16.0))
}

/// Runs everything `opts` asks for; `progress` hears about each step.
pub async fn run(opts: &Options, mut progress: impl FnMut(&str)) -> anyhow::Result<Report> {
    let python = deps::require_pesq()?;
    std::fs::create_dir_all(&opts.out_dir).with_context(|| format!("cannot create {}", opts.out_dir.display()))?;
    let ref16 = audio::resample(&opts.speech, 48_000, 16_000)?;
    let ref_path = opts.out_dir.join("reference.wav");
    write_wav16(&ref_path, &ref16)?;
    let mut pairs: Vec<(PathBuf, PathBuf)> = Vec::new();
    // Where each score goes: (row, column 0 codec+loss / 1 babel / 2 naive, index).
    let mut slots: Vec<(usize, usize, usize)> = Vec::new();

    let (codec, _) = codec_only(&opts.speech, &opts.media, None, &[])?;
    let (codec16, _) = prepare(&ref16, &codec)?;
    let codec_path = opts.out_dir.join("codec.wav");
    write_wav16(&codec_path, &codec16)?;
    pairs.push((ref_path.clone(), codec_path));

    let naive_media = MediaConfig { fec: false, redundancy: false, adaptive_jitter: false, ..opts.media.clone() };
    let mut rows = Vec::new();
    for (ri, net) in opts.networks.iter().enumerate() {
        let imp = net.impairment();
        let mut row = Row { network: *net, label: net.label(), codec_loss: vec![], babel: vec![], naive: vec![] };
        for seed in 1..=u64::from(opts.runs) {
            let tag =
                format!("{}-{}{}-j{}-s{seed}", ri, if net.bursty { "b" } else { "r" }, net.loss_pct, net.jitter_ms);
            if net.loss_pct > 0.0 {
                let ideal_media = MediaConfig { fec: opts.media.fec && !opts.ideal_no_fec, ..opts.media.clone() };
                let offsets = net.ideal_offsets(&opts.offsets);
                let (pcm, lost) = codec_only(&opts.speech, &ideal_media, Some((imp, seed)), &offsets)?;
                let (d16, delay) = prepare(&ref16, &pcm)?;
                let p = opts.out_dir.join(format!("codec-loss-{tag}.wav"));
                write_wav16(&p, &d16)?;
                pairs.push((ref_path.clone(), p));
                slots.push((ri, 0, row.codec_loss.len()));
                let frames = opts.speech.len().div_ceil(opts.media.frame.samples()) as f64;
                row.codec_loss.push(Scored {
                    seed,
                    mos: 0.0,
                    applied_loss_pct: 100.0 * lost as f64 / frames,
                    fec_recovered: 0,
                    from_copies: 0,
                    concealed: 0,
                    delay_ms: delay,
                });
            }
            let variants: &[(usize, &MediaConfig)] =
                if opts.naive { &[(1, &opts.media), (2, &naive_media)] } else { &[(1, &opts.media)] };
            for &(col, media) in variants.iter().filter(|_| opts.calls) {
                progress(&format!("{} · {} · seed {seed}", net.label(), if col == 1 { "babel" } else { "naive" }));
                let r = call::run(
                    opts.speech.clone(),
                    imp,
                    media.clone(),
                    seed,
                    None,
                    TimedRecording::default(),
                    Duration::ZERO,
                )
                .await?;
                let (d16, delay) = prepare(&ref16, &r.heard)?;
                let p = opts.out_dir.join(format!("{}-{tag}.wav", if col == 1 { "babel" } else { "naive" }));
                write_wav16(&p, &d16)?;
                pairs.push((ref_path.clone(), p));
                // The caller is the proxy's client: "up" is towards the listener.
                let towards = r.proxy.up;
                let applied = 100.0 * towards.dropped() as f64 / towards.received.max(1) as f64;
                let s = Scored {
                    seed,
                    mos: 0.0,
                    applied_loss_pct: applied,
                    fec_recovered: r.receiver.fec_recovered,
                    from_copies: r.receiver.from_copies,
                    concealed: r.receiver.concealed,
                    delay_ms: delay,
                };
                let cell = if col == 1 { &mut row.babel } else { &mut row.naive };
                slots.push((ri, col, cell.len()));
                cell.push(s);
            }
        }
        rows.push(row);
    }

    let mut latency = Vec::new();
    if opts.latency {
        for frame in [FrameMs::Twenty, FrameMs::Ten] {
            progress(&format!("latency, {} ms frames", frame.ms()));
            let media = MediaConfig { frame, ..opts.media.clone() };
            let mut samples = Vec::new();
            let mut in_phase_ms = None;
            for quarter in 0..4u32 {
                let phase = Duration::from_millis(u64::from(frame.ms())) * quarter / 4;
                let s = measure_latency(media.clone(), phase).await?;
                if quarter == 0 {
                    in_phase_ms = signal::median(&s);
                }
                samples.extend(s);
            }
            let median_ms = signal::median(&samples).unwrap_or(f64::NAN);
            latency.push(Latency { frame_ms: frame.ms(), samples_ms: samples, median_ms, in_phase_ms });
        }
    }

    progress(&format!("scoring {} recordings with PESQ", pairs.len()));
    let scores = pesq_scores(&python, &pairs)?;
    let codec_mos = scores.first().copied().unwrap_or(f64::NAN);
    place_scores(&mut rows, &slots, &scores);
    Ok(Report {
        speech: opts.speech_source.clone(),
        speech_secs: opts.speech.len() as f64 / 48_000.0,
        bitrate: opts.media.bitrate,
        frame_ms: opts.media.frame.ms(),
        codec_mos,
        rows,
        latency,
    })
}

/// Mouth to ear through the whole system on a clean path: a chirp each
/// second into the caller's microphone, found again in the callee's
/// loudspeaker. A sample's mouth time is when the frame holding it was
/// read, less the frame's length, plus its place in the frame (a
/// microphone hands over a frame once it is full); its ear time is when the
/// frame holding it was handed to the loudspeaker plus its place in it.
/// The callee's clock runs `phase` behind the caller's. A chirp not found
/// within half a second is left out.
pub async fn measure_latency(media: MediaConfig, phase: Duration) -> anyhow::Result<Vec<f64>> {
    let secs = 9;
    let mut probe = vec![0.0f32; 48_000 * secs];
    let chirp = signal::chirp();
    let starts: Vec<usize> = (1..secs - 1).map(|k| k * 48_000 + 12_345).collect();
    for &s in &starts {
        probe[s..s + chirp.len()].copy_from_slice(&chirp);
    }
    let input = TimedInput::new(probe.clone());
    let reads = input.reads.clone();
    let output = TimedRecording::default();
    let boxed: Box<dyn AudioInput> = Box::new(input);
    call::run(probe, Impairment::default(), media.clone(), 1, Some(boxed), output.clone(), phase).await?;
    let n = media.frame.samples();
    let frame = Duration::from_millis(u64::from(media.frame.ms()));
    let reads = reads.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let (heard, writes) = output.0.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let onsets = signal::onsets(&heard, 0.2, 24_000);
    let at = |times: &[Instant], sample: usize| -> Option<Instant> {
        times.get(sample / n).map(|t| *t + Duration::from_secs_f64((sample % n) as f64 / 48_000.0))
    };
    let mut out = Vec::new();
    for &s in starts.iter().skip(1) {
        // The chirp's first loud sample, as the onset detector sees it.
        let first = s + chirp.iter().position(|x| x.abs() > 0.2).unwrap_or(0);
        let Some(mouth) = at(&reads, first).map(|t| t - frame) else { continue };
        let Some(ear) = onsets.iter().find_map(|&o| at(&writes, o).filter(|e| *e > mouth)) else { continue };
        let ms = ear.duration_since(mouth).as_secs_f64() * 1000.0;
        if ms < 500.0 {
            out.push(ms);
        }
    }
    if out.is_empty() {
        bail!("no chirp came through");
    }
    Ok(out)
}

/// The table in Markdown.
pub fn markdown(r: &Report) -> String {
    let f = |v: Option<f64>| v.map_or("–".into(), |m| format!("{m:.2}"));
    let range =
        |v: &[Scored]| match (v.iter().map(|s| s.mos).reduce(f64::min), v.iter().map(|s| s.mos).reduce(f64::max)) {
            (Some(a), Some(b)) if v.len() > 1 => format!(" ({a:.2}–{b:.2})"),
            _ => String::new(),
        };
    let mut s = String::new();
    s.push_str(&format!(
        "Codec alone (no network): **{:.2}** MOS (PESQ-WB). Opus {} kbit/s CBR, {} ms frames; speech: {} ({:.1} s).\n\n",
        r.codec_mos,
        r.bitrate / 1000,
        r.frame_ms,
        r.speech,
        r.speech_secs
    ));
    s.push_str(
        "| network (both ways) | codec + same loss, ideal receiver | **Babel** | Babel / codec alone | naive receiver | \
         loss applied | Babel: frames from copies / FEC / concealed | delay Babel / naive | R (G.107.1) / MOS-CQ |\n",
    );
    s.push_str("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n");
    for row in &r.rows {
        let babel = mean_mos(&row.babel);
        let n = row.babel.len().max(1);
        let loss = row.babel.iter().map(|x| x.applied_loss_pct).sum::<f64>() / n as f64;
        let avg = |f: fn(&Scored) -> u64| row.babel.iter().map(f).sum::<u64>() / n as u64;
        let delay = |v: &[Scored]| {
            if v.is_empty() {
                "–".into()
            } else {
                format!("{:.0}", v.iter().map(|x| x.delay_ms).sum::<f64>() / v.len() as f64)
            }
        };
        s.push_str(&format!(
            "| {} | {} | **{}**{} | {} | {}{} | {:.1} % | {} / {} / {} | {} / {} ms | {} |\n",
            row.label,
            if row.codec_loss.is_empty() { "–".into() } else { f(mean_mos(&row.codec_loss)) },
            f(babel),
            range(&row.babel),
            babel.map_or("–".into(), |b| format!("{:.2}", b / r.codec_mos)),
            f(mean_mos(&row.naive)),
            range(&row.naive),
            loss,
            avg(|x| x.from_copies),
            avg(|x| x.fec_recovered),
            avg(|x| x.concealed),
            delay(&row.babel),
            delay(&row.naive),
            emodel_cell(r, row),
        ));
    }
    if !r.latency.is_empty() {
        s.push_str(
            "\n| frames | mouth to ear (median) | clocks in phase (worst) | min–max | probes |\n\
             | --- | ---: | ---: | ---: | ---: |\n",
        );
        for l in &r.latency {
            let min = l.samples_ms.iter().copied().fold(f64::MAX, f64::min);
            let max = l.samples_ms.iter().copied().fold(0.0, f64::max);
            let worst = l.in_phase_ms.map_or("–".into(), |m| format!("{m:.1} ms"));
            s.push_str(&format!(
                "| {} ms | **{:.1} ms** | {worst} | {min:.1}–{max:.1} ms | {} |\n",
                l.frame_ms,
                l.median_ms,
                l.samples_ms.len()
            ));
        }
    }
    s
}

/// The E-model's R (wideband scale) and MOS-CQ of a row's Babel calls,
/// means ([`emodel::of_call`]).
pub fn emodel_cell(r: &Report, row: &Row) -> String {
    if row.babel.is_empty() {
        return "–".into();
    }
    let n = row.babel.len() as f64;
    let rs: Vec<emodel::Rating> = row.babel.iter().map(|c| emodel::of_call(r, row, c)).collect();
    let rwb = rs.iter().map(|x| x.r_wb).sum::<f64>() / n;
    let mos = rs.iter().map(|x| x.mos_cq).sum::<f64>() / n;
    format!("{rwb:.0} / {mos:.2}")
}

/// The targets of issue #5 against a report: (what, value, met).
pub fn targets(r: &Report) -> Vec<(String, String, bool)> {
    let mut v = Vec::new();
    let find = |loss: f64, bursty: bool, jitter: u64| {
        r.rows
            .iter()
            .find(|row| row.network.loss_pct == loss && row.network.bursty == bursty && row.network.jitter_ms == jitter)
            .and_then(|row| mean_mos(&row.babel))
    };
    if let Some(m) = find(0.0, false, 0) {
        v.push((
            "clean path within 0.1 MOS of the codec alone".into(),
            format!("{m:.2} vs {:.2}", r.codec_mos),
            m >= r.codec_mos - 0.1,
        ));
    }
    if let Some(m) = find(10.0, false, 30) {
        v.push(("≥ 3.5 MOS at 10 % random loss, 30 ms jitter".into(), format!("{m:.2}"), m >= 3.5));
    }
    if let Some(m) = find(20.0, true, 30) {
        v.push(("≥ 3.0 MOS at 20 % bursty loss, 30 ms jitter".into(), format!("{m:.2}"), m >= 3.0));
    }
    for l in &r.latency {
        let limit = if l.frame_ms == 20 { 60.0 } else { 40.0 };
        v.push((
            format!("software latency ≤ {limit:.0} ms with {} ms frames", l.frame_ms),
            format!("{:.1} ms", l.median_ms),
            l.median_ms <= limit,
        ));
    }
    v
}

/// Puts each PESQ score into its call: `scores[0]` is the codec alone, then
/// one per slot, a slot being (row, column: 0 codec with loss, 1 Babel,
/// 2 naive receiver, call index).
pub(crate) fn place_scores(rows: &mut [Row], slots: &[(usize, usize, usize)], scores: &[f64]) {
    for (&(ri, col, i), &mos) in slots.iter().zip(scores.iter().skip(1)) {
        let row = &mut rows[ri];
        let cell = match col {
            0 => &mut row.codec_loss,
            1 => &mut row.babel,
            _ => &mut row.naive,
        };
        cell[i].mos = mos;
    }
}
