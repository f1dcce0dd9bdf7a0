//! Real speech in real noise, through the capture chain (issue #16 item 2).
//!
//! The near end's speech is mixed with a recorded noise at a given SNR and
//! sent through what the engine runs on a microphone frame before the
//! encoder (gain control, then noise suppression; no echo canceller, as
//! on a file input), and what comes out is scored with PESQ wideband
//! against the **clean** speech: the noise counts as damage, and so does
//! anything the suppressor takes from the voice. No network: this isolates
//! the capture chain, and runs in seconds.
//!
//! The noises, all from Debian packages (`scripts/setup.sh` installs them):
//!
//! * `babble`: [`BABBLE_TALKERS`] talkers at once, each a run of prompts
//!   from the `asterisk-core-sounds-*-g722` packages (every installed
//!   speaker, the prompts the test voices use left out), back to back;
//! * `keyboard`: typing on an IBM Model M, key by key from
//!   `bucklespring-data` (recordings of each key's press and release),
//!   4–5 keys a second with pauses between words;
//! * `wind`: a stationary broadband noise (as a fan or a street), the
//!   "Wind" sample of `openttd-opensfx` (a field recording, CC BY 3.0, by
//!   "Anton" on freesound), looped with crossfades. No fan or street
//!   recording of more than a second or two is in a Debian package small
//!   enough to install for a test (the game data that has them is hundreds
//!   of MB).
//!
//! The SNR is the speech's active level (its 10 ms frames within 35 dB of
//! its loudest, as [`super::voices::activity`] counts them) over the
//! noise's mean power, both at 48 kHz.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use babel_media::audio;
use babel_media::denoise::{Denoiser, Tuning};
use babel_media::echo::EchoLevel;
use babel_media::engine::MediaConfig;
use babel_media::process::CaptureChain;
use serde::{Deserialize, Serialize};

use super::deps::Missing;
use super::voices::{self, SOUNDS_ROOT, Speaker};
use super::{Network, pesq_scores, prepare, write_wav16};

/// Talkers in the babble.
pub const BABBLE_TALKERS: usize = 6;
/// Where `bucklespring-data` puts its key recordings.
pub const KEYBOARD_DIR: &str = "/usr/share/buckle/wav";
/// OpenSFX's sound archive (`openttd-opensfx`).
pub const OPENSFX_CAT: &str = "/usr/share/games/openttd/baseset/opensfx/opensfx.cat";

/// A kind of noise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NoiseKind {
    /// Many talkers at once.
    Babble,
    /// Typing.
    Keyboard,
    /// Wind: stationary broadband noise.
    Wind,
}

impl NoiseKind {
    /// Its name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            NoiseKind::Babble => "babble",
            NoiseKind::Keyboard => "keyboard",
            NoiseKind::Wind => "wind",
        }
    }
}

/// One condition: clean speech, or speech in a noise at an SNR.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct NoiseCondition {
    /// The noise (none: clean speech).
    pub kind: Option<NoiseKind>,
    /// SNR, dB.
    pub snr_db: f64,
}

impl NoiseCondition {
    /// How it reads in a table.
    pub fn label(&self) -> String {
        match self.kind {
            None => "clean".into(),
            Some(k) => format!("{} {} dB", k.name(), self.snr_db),
        }
    }
}

/// The conditions `--noise default` runs.
pub fn default_conditions() -> Vec<NoiseCondition> {
    let mut v = vec![NoiseCondition { kind: None, snr_db: f64::INFINITY }];
    for kind in [NoiseKind::Babble, NoiseKind::Wind, NoiseKind::Keyboard] {
        for snr_db in [5.0, 15.0] {
            v.push(NoiseCondition { kind: Some(kind), snr_db });
        }
    }
    v
}

/// Parses `clean`, `babble:5`, `wind:15`, `keyboard:5`.
pub fn parse_condition(s: &str) -> Result<NoiseCondition, String> {
    if s == "clean" {
        return Ok(NoiseCondition { kind: None, snr_db: f64::INFINITY });
    }
    let bad = || format!("`{s}`: want clean, or babble|wind|keyboard:SNR_DB");
    let (kind, snr) = s.split_once(':').ok_or_else(bad)?;
    let kind = match kind {
        "babble" => NoiseKind::Babble,
        "keyboard" => NoiseKind::Keyboard,
        "wind" => NoiseKind::Wind,
        _ => return Err(bad()),
    };
    let snr_db: f64 = snr.parse().map_err(|_| bad())?;
    if !(-20.0..=60.0).contains(&snr_db) {
        return Err(bad());
    }
    Ok(NoiseCondition { kind: Some(kind), snr_db })
}

/// A small deterministic generator (the noises are the same in every run).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }
    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() % 1_000_000) as f64 / 1_000_000.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn mean_power(x: &[f32]) -> f64 {
    if x.is_empty() {
        return 0.0;
    }
    x.iter().map(|s| f64::from(*s) * f64::from(*s)).sum::<f64>() / x.len() as f64
}

/// The active speech level (mean power of the 10 ms frames within 35 dB
/// of the loudest).
pub fn active_power(x: &[f32]) -> f64 {
    let frames: Vec<f64> = x.chunks(480).map(mean_power).collect();
    let peak = frames.iter().copied().fold(0.0, f64::max);
    let active: Vec<f64> = frames.iter().copied().filter(|p| *p > peak * 10f64.powf(-3.5)).collect();
    if active.is_empty() { 0.0 } else { active.iter().sum::<f64>() / active.len() as f64 }
}

/// `speech` plus `noise` scaled so that the SNR is `snr_db` (the noise is
/// repeated if it is shorter).
pub fn mix(speech: &[f32], noise: &[f32], snr_db: f64) -> Vec<f32> {
    let (ps, pn) = (active_power(speech), mean_power(noise));
    if noise.is_empty() || pn <= 0.0 {
        return speech.to_vec();
    }
    let g = (ps / pn / 10f64.powf(snr_db / 10.0)).sqrt() as f32;
    speech.iter().zip(noise.iter().cycle()).map(|(s, n)| s + g * n).collect()
}

/// Checks that the noise's package is there.
pub fn require(kind: NoiseKind) -> Result<(), Missing> {
    let (path, what, package) = match kind {
        NoiseKind::Babble => {
            let root = Path::new(SOUNDS_ROOT);
            return voices::SPEAKERS.iter().try_for_each(|s| voices::require(root, s).map(|_| ()));
        }
        NoiseKind::Keyboard => (KEYBOARD_DIR, "bucklespring's keyboard recordings", "bucklespring-data"),
        NoiseKind::Wind => (OPENSFX_CAT, "OpenSFX's sounds (the wind)", "openttd-opensfx"),
    };
    if Path::new(path).exists() { Ok(()) } else { Err(Missing { what: format!("{what} ({path})"), package }) }
}

/// Makes `secs` of the noise, 48 kHz mono, peak 0.5.
pub fn make(kind: NoiseKind, secs: f64) -> anyhow::Result<Vec<f32>> {
    require(kind)?;
    let n = (secs * 48_000.0) as usize;
    let mut out = match kind {
        NoiseKind::Babble => babble(n)?,
        NoiseKind::Keyboard => keyboard(n)?,
        NoiseKind::Wind => wind(n)?,
    };
    super::normalise(&mut out);
    Ok(out)
}

fn babble(n: usize) -> anyhow::Result<Vec<f32>> {
    let mut files: Vec<PathBuf> = Vec::new();
    for speaker in voices::SPEAKERS {
        let d = Path::new(SOUNDS_ROOT).join(speaker.dir);
        let rd = std::fs::read_dir(&d).with_context(|| format!("cannot list {}", d.display()))?;
        for e in rd.flatten() {
            let p = e.path();
            let stem = p.file_stem().and_then(|s| s.to_str()).unwrap_or("");
            if p.extension().is_some_and(|x| x == "g722") && !voices::PROMPTS.contains(&stem) {
                files.push(p);
            }
        }
    }
    files.sort();
    if files.len() < BABBLE_TALKERS * 4 {
        bail!("only {} prompts for babble under {SOUNDS_ROOT}", files.len());
    }
    let mut rng = Lcg(0xba_bb1e);
    let mut out = vec![0.0f32; n];
    for _ in 0..BABBLE_TALKERS {
        let mut talker = Vec::with_capacity(n + 48_000 * 4);
        let start = rng.below(48_000);
        while talker.len() < n + start {
            let p = &files[rng.below(files.len())];
            let pcm = voices::decode_g722(p)?;
            talker.extend_from_slice(voices::trim(&pcm));
            talker.extend(std::iter::repeat_n(0.0, 48_000 / 10));
        }
        let talker = &talker[start..start + n];
        let g = (1.0 / active_power(talker).max(1e-12)).sqrt() as f32;
        out.iter_mut().zip(talker).for_each(|(o, t)| *o += g * t);
    }
    Ok(out)
}

fn keyboard(n: usize) -> anyhow::Result<Vec<f32>> {
    let mut presses: Vec<PathBuf> = std::fs::read_dir(KEYBOARD_DIR)
        .with_context(|| format!("cannot list {KEYBOARD_DIR}"))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.to_str().is_some_and(|s| s.ends_with("-0.wav")))
        .collect();
    presses.sort();
    if presses.is_empty() {
        bail!("no key recordings in {KEYBOARD_DIR}");
    }
    let mut rng = Lcg(0x7e_c1a5);
    let mut out = vec![0.0f32; n];
    let mut add = |at: usize, path: &Path| -> anyhow::Result<()> {
        let pcm = audio::read_wav(path).with_context(|| format!("cannot read {}", path.display()))?;
        for (o, s) in out.iter_mut().skip(at).zip(pcm) {
            *o += s;
        }
        Ok(())
    };
    let mut t = 0.1;
    while ((t * 48_000.0) as usize) < n {
        let press = &presses[rng.below(presses.len())];
        let release = PathBuf::from(press.to_string_lossy().replace("-0.wav", "-1.wav"));
        add((t * 48_000.0) as usize, press)?;
        let up = t + 0.07 + 0.08 * rng.unit();
        if release.is_file() && ((up * 48_000.0) as usize) < n {
            add((up * 48_000.0) as usize, &release)?;
        }
        // 4–5 keys a second, a pause between words now and then.
        t += 0.12 + 0.2 * rng.unit();
        if rng.unit() < 0.12 {
            t += 0.3 + 0.6 * rng.unit();
        }
    }
    Ok(out)
}

/// The "Wind" sample from OpenSFX's archive: the RIFF file just before the
/// entry's description.
fn wind_sample() -> anyhow::Result<Vec<f32>> {
    let cat = std::fs::read(OPENSFX_CAT).with_context(|| format!("cannot read {OPENSFX_CAT}"))?;
    let find = |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).position(|w| w == needle);
    let rfind = |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).rposition(|w| w == needle);
    let desc = find(&cat, b"\"Wind\". Original").context("no \"Wind\" sample in OpenSFX's archive")?;
    let riff = rfind(&cat[..desc], b"RIFF").context("no WAV before OpenSFX's \"Wind\"")?;
    let size = cat
        .get(riff + 4..riff + 8)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .context("a cut WAV header")?;
    let wav = cat.get(riff..riff + 8 + size).context("a cut WAV in OpenSFX's archive")?;
    let mut r = hound::WavReader::new(std::io::Cursor::new(wav)).context("OpenSFX's wind is no WAV")?;
    let spec = r.spec();
    if spec.bits_per_sample != 16 || spec.channels != 1 {
        bail!("OpenSFX's wind: want 16-bit mono, have {spec:?}");
    }
    let pcm: Vec<f32> = r.samples::<i16>().map(|s| s.map(|v| f32::from(v) / 32768.0)).collect::<Result<_, _>>()?;
    Ok(audio::resample(&pcm, spec.sample_rate, 48_000)?)
}

fn wind(n: usize) -> anyhow::Result<Vec<f32>> {
    let w = wind_sample()?;
    // The sample fades in and out: keep its steady middle.
    let steady = &w[w.len() / 8..w.len() * 7 / 8];
    let fade = 48_000 / 4;
    if steady.len() < 4 * fade {
        bail!("OpenSFX's wind is only {} samples", w.len());
    }
    let mut out: Vec<f32> = Vec::with_capacity(n + steady.len());
    while out.len() < n {
        if out.is_empty() {
            out.extend_from_slice(steady);
            continue;
        }
        // Crossfade the next loop over the last `fade` samples (equal power).
        let at = out.len() - fade;
        for (i, s) in steady[..fade].iter().enumerate() {
            let x = i as f32 / fade as f32 * std::f32::consts::FRAC_PI_2;
            out[at + i] = out[at + i] * x.cos() + s * x.sin();
        }
        out.extend_from_slice(&steady[fade..]);
    }
    out.truncate(n);
    Ok(out)
}

/// What the engine runs on a file input's frames before the encoder: gain
/// control (as shipped) and noise suppression (`None`: off), 20 ms
/// frames. Answers the output, the median of the suppressor's ratio
/// estimate over the second half and its last mix.
pub fn capture(input: &[f32], suppression: Option<Tuning>) -> (Vec<f32>, Option<f32>, f32) {
    let mut level = EchoLevel::new(false, true);
    let mut chain = CaptureChain::with_tuning(suppression.is_some(), suppression.unwrap_or(Tuning::SHIPPED));
    let mut out = Vec::with_capacity(input.len() + 960);
    let mut estimates = Vec::new();
    for c in input.chunks(960) {
        let mut f = c.to_vec();
        f.resize(960, 0.0);
        level.capture(&mut f);
        chain.process(&mut f);
        if out.len() >= input.len() / 2 && c.len() == 960 {
            estimates.extend(chain.denoiser().and_then(Denoiser::snr_db));
        }
        out.extend_from_slice(&f);
    }
    estimates.sort_by(f32::total_cmp);
    (out, estimates.get(estimates.len() / 2).copied(), chain.denoiser().map_or(0.0, Denoiser::mix))
}

/// One voice in one condition.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NoiseRow {
    /// The voice.
    pub voice: String,
    /// The condition.
    pub condition: NoiseCondition,
    /// PESQ of the noisy input itself, unprocessed.
    pub input_mos: f64,
    /// Through the capture chain with suppression off.
    pub off_mos: f64,
    /// Through the capture chain with RNNoise alone on every block (as
    /// shipped before the gate).
    pub rnnoise_mos: f64,
    /// Through the capture chain as shipped (or the tuning tried).
    pub on_mos: f64,
    /// The median of the suppressor's ratio estimate over the second
    /// half, dB.
    pub snr_est_db: Option<f32>,
    /// Its share of RNNoise's output at the end.
    pub mix: f32,
}

/// The noises a set of conditions needs, each made once, long enough for
/// the longest voice.
struct Noises(Vec<(NoiseKind, Vec<f32>)>);

impl Noises {
    fn make(
        voices_in: &[(String, Vec<f32>)],
        conditions: &[NoiseCondition],
        progress: &mut impl FnMut(&str),
    ) -> anyhow::Result<Noises> {
        let longest = voices_in.iter().map(|(_, s)| s.len()).max().unwrap_or(0) as f64 / 48_000.0;
        let mut noises: Vec<(NoiseKind, Vec<f32>)> = Vec::new();
        for k in conditions.iter().filter_map(|c| c.kind) {
            if !noises.iter().any(|(n, _)| *n == k) {
                progress(&format!("making {} noise", k.name()));
                noises.push((k, make(k, longest + 1.0)?));
            }
        }
        Ok(Noises(noises))
    }

    /// The speech as heard in the condition: itself, or mixed with its noise.
    fn mixed(&self, speech: &[f32], c: &NoiseCondition) -> Vec<f32> {
        match c.kind {
            None => speech.to_vec(),
            Some(k) => mix(speech, self.0.iter().find(|(n, _)| *n == k).map_or(&[][..], |(_, x)| x), c.snr_db),
        }
    }
}

/// Runs every voice in every condition through the capture chain and
/// scores it against the clean voice; WAV files go under `dir`.
pub fn run(
    python: &Path,
    tuning: Tuning,
    voices_in: &[(String, Vec<f32>)],
    conditions: &[NoiseCondition],
    dir: &Path,
    mut progress: impl FnMut(&str),
) -> anyhow::Result<Vec<NoiseRow>> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let noises = Noises::make(voices_in, conditions, &mut progress)?;
    let mut pairs = Vec::new();
    let mut rows = Vec::new();
    for (voice, speech) in voices_in {
        let ref16 = audio::resample(speech, 48_000, 16_000)?;
        let ref_path = dir.join(format!("{voice}-reference.wav"));
        write_wav16(&ref_path, &ref16)?;
        for c in conditions {
            let noisy = noises.mixed(speech, c);
            let tag = c.label().replace(' ', "");
            progress(&format!("{voice}: {}", c.label()));
            let (on, snr_est_db, mix) = capture(&noisy, Some(tuning));
            for (what, x) in [
                ("input", noisy.clone()),
                ("off", capture(&noisy, None).0),
                ("rnnoise", capture(&noisy, Some(Tuning::ALWAYS)).0),
                ("on", on),
            ] {
                let (deg, _) = prepare(&ref16, &x)?;
                let p = dir.join(format!("{voice}-{tag}-{what}.wav"));
                write_wav16(&p, &deg)?;
                pairs.push((ref_path.clone(), p));
            }
            rows.push(NoiseRow {
                voice: voice.clone(),
                condition: *c,
                input_mos: 0.0,
                off_mos: 0.0,
                rnnoise_mos: 0.0,
                on_mos: 0.0,
                snr_est_db,
                mix,
            });
        }
    }
    let scores = pesq_scores(python, &pairs)?;
    for (row, s) in rows.iter_mut().zip(scores.chunks(4)) {
        if let [i, off, rnn, on] = s {
            (row.input_mos, row.off_mos, row.rnnoise_mos, row.on_mos) = (*i, *off, *rnn, *on);
        }
    }
    Ok(rows)
}

/// One voice, condition and network, end to end.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CallRow {
    /// The voice.
    pub voice: String,
    /// The condition.
    pub condition: NoiseCondition,
    /// The network (both ways).
    pub network: Network,
    /// PESQ per seed, suppression off.
    pub off: Vec<f64>,
    /// PESQ per seed, as shipped.
    pub on: Vec<f64>,
    /// Mean alignment delay, ms, off and shipped.
    pub delay_ms: (f64, f64),
}

/// The noisy voices through whole calls in simulated time
/// ([`super::sim::call`]: call cores, real Opus, jitter buffer and capture
/// chain, the `babel-netem` link), with the shipped settings and with
/// suppression off, over each of `networks`, `seeds` calls each (seeds
/// 1..=N); what the listener
/// hears is scored against the clean voice.
pub fn end_to_end(
    python: &Path,
    media: &MediaConfig,
    voices_in: &[(String, Vec<f32>)],
    conditions: &[NoiseCondition],
    (networks, seeds): (&[Network], u32),
    dir: &Path,
    mut progress: impl FnMut(&str),
) -> anyhow::Result<Vec<CallRow>> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let noises = Noises::make(voices_in, conditions, &mut progress)?;
    let shipped = voices::shipped(media);
    let off = MediaConfig { noise_suppression: false, ..shipped.clone() };
    let mut pairs = Vec::new();
    let mut rows = Vec::new();
    for (voice, speech) in voices_in {
        let ref16 = audio::resample(speech, 48_000, 16_000)?;
        let ref_path = dir.join(format!("{voice}-reference.wav"));
        write_wav16(&ref_path, &ref16)?;
        for c in conditions {
            let noisy = noises.mixed(speech, c);
            for net in networks {
                progress(&format!("{voice}: {}, {}", c.label(), net.label()));
                let mut delays = [0.0, 0.0];
                for seed in 1..=u64::from(seeds) {
                    for (j, (what, cfg)) in [("off", &off), ("on", &shipped)].into_iter().enumerate() {
                        let heard = super::sim::call(&noisy, net, cfg, seed)?.heard;
                        let (deg, delay) = prepare(&ref16, &heard)?;
                        delays[j] += delay / f64::from(seeds);
                        let tag = format!("{}-{}", c.label(), net.label()).replace([' ', '%', ','], "");
                        let p = dir.join(format!("{voice}-{tag}-{seed}-{what}.wav"));
                        write_wav16(&p, &deg)?;
                        pairs.push((ref_path.clone(), p));
                    }
                }
                rows.push(CallRow {
                    voice: voice.clone(),
                    condition: *c,
                    network: *net,
                    off: Vec::new(),
                    on: Vec::new(),
                    delay_ms: (delays[0], delays[1]),
                });
            }
        }
    }
    let scores = pesq_scores(python, &pairs)?;
    let per_row = 2 * seeds as usize;
    for (row, s) in rows.iter_mut().zip(scores.chunks(per_row)) {
        row.off = s.iter().step_by(2).copied().collect();
        row.on = s.iter().skip(1).step_by(2).copied().collect();
    }
    Ok(rows)
}

/// The end-to-end table: a row per voice, condition and network, and the
/// mean over voices.
pub fn calls_markdown(rows: &[CallRow]) -> String {
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let mut s = String::from(
        "| voice | condition | network | suppression off | **shipped** | shipped − off | delay off / shipped |\n\
         | --- | --- | --- | ---: | ---: | ---: | ---: |\n",
    );
    let line = |voice: &str, c: &str, n: &str, off: f64, on: f64, d: (f64, f64)| {
        format!("| {voice} | {c} | {n} | {off:.2} | **{on:.2}** | {:+.2} | {:.0} / {:.0} ms |\n", on - off, d.0, d.1)
    };
    for r in rows {
        s.push_str(&line(&r.voice, &r.condition.label(), &r.network.label(), mean(&r.off), mean(&r.on), r.delay_ms));
    }
    let mut keys: Vec<(String, String)> = Vec::new();
    for r in rows {
        let k = (r.condition.label(), r.network.label());
        if !keys.contains(&k) {
            keys.push(k);
        }
    }
    for (c, n) in keys {
        let v: Vec<&CallRow> = rows.iter().filter(|r| r.condition.label() == c && r.network.label() == n).collect();
        let k = v.len().max(1) as f64;
        let off = v.iter().map(|r| mean(&r.off)).sum::<f64>() / k;
        let on = v.iter().map(|r| mean(&r.on)).sum::<f64>() / k;
        let d = (v.iter().map(|r| r.delay_ms.0).sum::<f64>() / k, v.iter().map(|r| r.delay_ms.1).sum::<f64>() / k);
        s.push_str(&line("**mean**", &c, &n, off, on, d));
    }
    s
}

/// The voices to score: each speaker's recording.
pub fn load_voices(speakers: &[Speaker]) -> anyhow::Result<Vec<(String, Vec<f32>)>> {
    speakers.iter().map(|s| Ok((s.id.to_owned(), voices::load(s)?.0))).collect()
}

/// One table: a row per voice and condition, and the mean over voices.
pub fn markdown(rows: &[NoiseRow]) -> String {
    let mut s = String::from(
        "| voice | condition | noisy input | suppression off | RNNoise alone (before) | **shipped** | shipped − off | \
         RNNoise − off | ratio estimate | mix |\n\
         | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n",
    );
    let line = |voice: &str, label: &str, m: [f64; 4], est: String, mix: String| {
        let [i, off, rnn, on] = m;
        format!(
            "| {voice} | {label} | {i:.2} | {off:.2} | {rnn:.2} | **{on:.2}** | {:+.2} | {:+.2} | {est} | {mix} |\n",
            on - off,
            rnn - off
        )
    };
    for r in rows {
        let est = r.snr_est_db.map_or("–".into(), |e| format!("{e:.0} dB"));
        let m = [r.input_mos, r.off_mos, r.rnnoise_mos, r.on_mos];
        s.push_str(&line(&r.voice, &r.condition.label(), m, est, format!("{:.2}", r.mix)));
    }
    let mut labels: Vec<String> = Vec::new();
    for r in rows {
        if !labels.contains(&r.condition.label()) {
            labels.push(r.condition.label());
        }
    }
    for l in labels {
        let v: Vec<&NoiseRow> = rows.iter().filter(|r| r.condition.label() == l).collect();
        let m = |f: fn(&NoiseRow) -> f64| v.iter().map(|r| f(r)).sum::<f64>() / v.len() as f64;
        let means = [m(|r| r.input_mos), m(|r| r.off_mos), m(|r| r.rnnoise_mos), m(|r| r.on_mos)];
        s.push_str(&line("**mean**", &l, means, "".into(), "".into()));
    }
    s
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn conditions_parse() {
        assert_eq!(parse_condition("babble:5").unwrap(), NoiseCondition { kind: Some(NoiseKind::Babble), snr_db: 5.0 });
        assert_eq!(parse_condition("clean").unwrap().kind, None);
        assert!(parse_condition("fan:5").is_err());
        assert!(parse_condition("wind").is_err());
        assert!(parse_condition("wind:x").is_err());
        assert_eq!(default_conditions().len(), 7);
    }

    #[test]
    fn mixing_sets_the_snr() {
        let speech: Vec<f32> =
            (0..48_000).map(|i| if i < 24_000 { 0.3 * (i as f32 * 0.05).sin() } else { 0.0 }).collect();
        let mut rng = Lcg(1);
        let noise: Vec<f32> = (0..48_000).map(|_| rng.unit() as f32 - 0.5).collect();
        for snr in [5.0, 15.0] {
            let m = mix(&speech, &noise, snr);
            let n: Vec<f32> = m.iter().zip(&speech).map(|(a, b)| a - b).collect();
            let got = 10.0 * (active_power(&speech) / mean_power(&n)).log10();
            assert!((got - snr).abs() < 0.01, "{got} vs {snr}");
        }
    }

    #[test]
    fn latency_chirps_pass_the_shipped_chain_undelayed() {
        // The latency probe's input: a chirp a second over silence. The
        // gate holds it for a clean path: every chirp comes out where it
        // went in (RNNoise alone passes them a block late).
        let chirp = super::super::signal::chirp();
        let mut probe = vec![0.0f32; 48_000 * 9];
        let starts: Vec<usize> = (1..8).map(|k| k * 48_000 + 12_345).collect();
        for &s in &starts {
            probe[s..s + chirp.len()].copy_from_slice(&chirp);
        }
        let onsets = |x: &[f32]| super::super::signal::onsets(x, 0.2, 24_000);
        let (out, est, mix) = capture(&probe, Some(Tuning::SHIPPED));
        assert_eq!(onsets(&out), onsets(&probe), "ratio {est:?}, mix {mix}");
        assert_eq!(onsets(&probe).len(), starts.len());
        let (before, _, _) = capture(&probe, Some(Tuning::ALWAYS));
        let late: Vec<usize> = onsets(&probe).iter().map(|o| o + 480).collect();
        assert_eq!(onsets(&before), late);
    }

    #[test]
    fn the_noises_are_made_from_their_packages() {
        for kind in [NoiseKind::Babble, NoiseKind::Keyboard, NoiseKind::Wind] {
            let x = make(kind, 3.0).unwrap_or_else(|e| panic!("{}: {e}", kind.name()));
            assert_eq!(x.len(), 144_000);
            // Sound all through: no second of it is silent.
            for s in x.chunks(48_000) {
                assert!(mean_power(s) > 1e-5, "{}: a silent second", kind.name());
            }
        }
    }
}
