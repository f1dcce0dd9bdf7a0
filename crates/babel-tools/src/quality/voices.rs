//! Real human voices for the harness: prompts recorded by professional
//! voice talents, from Debian's `asterisk-core-sounds-*-g722` packages
//! (wideband: G.722 at 16 kHz, CC-BY-SA-3.0 / CC-BY-3.0). `ffmpeg` decodes
//! them; the prompts of one speaker are trimmed of their leading and
//! trailing silence and joined with pauses into one recording of at least
//! [`MIN_SECS`] (ITU-T P.862 wants 8–12 s of speech with pauses), in a
//! fixed order, so every run scores the same material.
//!
//! The speakers (from each package's copyright file):
//!
//! | id | speaker | language | package |
//! | --- | --- | --- | --- |
//! | `allison-en` | Allison Smith (female) | US English | `asterisk-core-sounds-en-g722` |
//! | `june-fr` | June Wallack (female) | Canadian French | `asterisk-core-sounds-fr-g722` |
//! | `carlo-it` | Carlo Flora (male) | Italian | `asterisk-core-sounds-it-g722` |
//! | `allison-es` | Allison Smith (female) | Mexican Spanish | `asterisk-core-sounds-es-g722` |
//!
//! The Spanish prompts are by the same speaker as the English ones, so the
//! distinct speakers the harness scores by default are the first three
//! ([`DEFAULT_SPEAKERS`]), beside festival's synthetic voice.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, bail};
use babel_media::audio;
use babel_media::engine::MediaConfig;
use serde::{Deserialize, Serialize};

use super::deps::Missing;
use super::{Options, Report, Scored, mean_mos, normalise};

/// Where Debian's asterisk sound packages put their prompts.
pub const SOUNDS_ROOT: &str = "/usr/share/asterisk/sounds";

/// The shortest recording the corpus makes, seconds (with its pauses).
pub const MIN_SECS: f64 = 8.0;

/// The pause between two prompts, seconds.
pub const PAUSE_SECS: f64 = 0.6;

/// The prompts, in the order they are joined: sentences of 2–4 s that every
/// language package has (the names are the same across languages).
pub const PROMPTS: [&str; 6] =
    ["conf-onlyone", "vm-invalidpassword", "dir-nomatch", "queue-holdtime", "vm-tempgreeting", "demo-echodone"];

/// One real speaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Speaker {
    /// Short name for the command line and the table.
    pub id: &'static str,
    /// Who, as the package's copyright file credits them.
    pub name: &'static str,
    /// The language of the prompts.
    pub language: &'static str,
    /// The folder under [`SOUNDS_ROOT`].
    pub dir: &'static str,
    /// The Debian package.
    pub package: &'static str,
}

/// Every speaker the corpus knows.
pub const SPEAKERS: [Speaker; 4] = [
    Speaker {
        id: "allison-en",
        name: "Allison Smith",
        language: "US English",
        dir: "en_US_f_Allison",
        package: "asterisk-core-sounds-en-g722",
    },
    Speaker {
        id: "june-fr",
        name: "June Wallack",
        language: "Canadian French",
        dir: "fr_CA_f_June",
        package: "asterisk-core-sounds-fr-g722",
    },
    Speaker {
        id: "carlo-it",
        name: "Carlo Flora",
        language: "Italian",
        dir: "it_IT_m_Carlo",
        package: "asterisk-core-sounds-it-g722",
    },
    Speaker {
        id: "allison-es",
        name: "Allison Smith",
        language: "Mexican Spanish",
        dir: "es_MX_f_Allison",
        package: "asterisk-core-sounds-es-g722",
    },
];

/// The distinct speakers scored by default.
pub const DEFAULT_SPEAKERS: [&str; 3] = ["allison-en", "june-fr", "carlo-it"];

/// A speaker by id.
pub fn speaker(id: &str) -> Option<Speaker> {
    SPEAKERS.iter().copied().find(|s| s.id == id)
}

impl Speaker {
    /// How the speaker reads in a table.
    pub fn label(&self) -> String {
        format!("{} ({}, {})", self.name, self.language, self.package)
    }
}

/// Checks that `ffmpeg` and the speaker's prompts (under `root`) are there;
/// answers the prompt folder.
pub fn require(root: &Path, s: &Speaker) -> Result<PathBuf, Missing> {
    let ffmpeg_ok = Command::new("ffmpeg")
        .arg("-version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|st| st.success());
    if !ffmpeg_ok {
        return Err(Missing { what: "ffmpeg (to decode the G.722 prompts)".into(), package: "ffmpeg" });
    }
    let dir = root.join(s.dir);
    match PROMPTS.iter().find(|p| !dir.join(format!("{p}.g722")).is_file()) {
        None => Ok(dir),
        Some(p) => Err(Missing {
            what: format!("{}'s prompts ({})", s.name, dir.join(format!("{p}.g722")).display()),
            package: s.package,
        }),
    }
}

/// Decodes one G.722 prompt with ffmpeg: 48 kHz mono.
pub fn decode_g722(path: &Path) -> anyhow::Result<Vec<f32>> {
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-f", "g722", "-i"])
        .arg(path)
        .args(["-ac", "1", "-ar", "16000", "-f", "s16le", "-"])
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .context("cannot run ffmpeg")?;
    if !out.status.success() {
        bail!("ffmpeg cannot decode {}: {}", path.display(), String::from_utf8_lossy(&out.stderr).trim());
    }
    let pcm16: Vec<f32> =
        out.stdout.chunks_exact(2).map(|b| f32::from(i16::from_le_bytes([b[0], b[1]])) / 32768.0).collect();
    if pcm16.is_empty() {
        bail!("ffmpeg decoded nothing from {}", path.display());
    }
    Ok(audio::resample(&pcm16, 16_000, 48_000)?)
}

/// RMS of each 10 ms (480 samples at 48 kHz).
fn frame_rms(x: &[f32]) -> Vec<f32> {
    x.chunks(480).map(|c| (c.iter().map(|s| s * s).sum::<f32>() / c.len() as f32).sqrt()).collect()
}

/// `x` without its leading and trailing silence (10 ms frames 35 dB below
/// its loudest), keeping 30 ms either side.
pub fn trim(x: &[f32]) -> &[f32] {
    let rms = frame_rms(x);
    let peak = rms.iter().copied().fold(0.0f32, f32::max);
    let loud = |r: &f32| *r > peak * 0.0178; // -35 dB
    let (Some(first), Some(last)) = (rms.iter().position(loud), rms.iter().rposition(loud)) else {
        return &x[..0];
    };
    let start = first.saturating_sub(3) * 480;
    let end = ((last + 4) * 480).min(x.len());
    &x[start..end]
}

/// Share of 10 ms frames of `x` within 35 dB of its loudest (speech
/// activity, as P.862 wants it: well below 100 %, well above 0).
pub fn activity(x: &[f32]) -> f64 {
    let rms = frame_rms(x);
    let peak = rms.iter().copied().fold(0.0f32, f32::max);
    if rms.is_empty() || peak <= 0.0 {
        return 0.0;
    }
    rms.iter().filter(|r| **r > peak * 0.0178).count() as f64 / rms.len() as f64
}

/// The speaker's recording (48 kHz mono, peak 0.5): prompts of
/// [`PROMPTS`] in order, trimmed, [`PAUSE_SECS`] apart, with 0.25 s of
/// silence before and 0.5 s after (as the festival recording has), until
/// it lasts at least [`MIN_SECS`]. Answers it and the prompts it used.
pub fn load_in(root: &Path, s: &Speaker) -> anyhow::Result<(Vec<f32>, Vec<&'static str>)> {
    let dir = require(root, s)?;
    let mut out = vec![0.0f32; 48_000 / 4];
    let mut used = Vec::new();
    let pause = vec![0.0f32; (PAUSE_SECS * 48_000.0) as usize];
    let tail = 48_000 / 2;
    for p in PROMPTS {
        if (out.len() + tail) as f64 >= MIN_SECS * 48_000.0 {
            break;
        }
        let pcm = decode_g722(&dir.join(format!("{p}.g722")))?;
        if !used.is_empty() {
            out.extend_from_slice(&pause);
        }
        out.extend_from_slice(trim(&pcm));
        used.push(p);
    }
    out.extend(std::iter::repeat_n(0.0, tail));
    if (out.len() as f64) < MIN_SECS * 48_000.0 {
        bail!("{}'s prompts make only {:.1} s of speech", s.name, out.len() as f64 / 48_000.0);
    }
    normalise(&mut out);
    Ok((out, used))
}

/// [`load_in`] under [`SOUNDS_ROOT`].
pub fn load(s: &Speaker) -> anyhow::Result<(Vec<f32>, Vec<&'static str>)> {
    load_in(Path::new(SOUNDS_ROOT), s)
}

/// What `babel call` runs: the CLI's media settings with no options given
/// (noise suppression, echo cancellation, gain control, bitrate adaptation,
/// FEC and copies all on), at the harness's frame length and bitrate.
pub fn shipped(base: &MediaConfig) -> MediaConfig {
    MediaConfig { frame: base.frame, bitrate: base.bitrate, ..MediaConfig::default() }
}

/// `babel-quality`'s options for real voices and the shipped settings.
#[derive(Debug, Clone, clap::Args)]
pub struct VoiceArgs {
    /// Score real human voices too: festival's voice and then each speaker
    /// (`allison-en`, `june-fr`, `carlo-it`, `allison-es`; repeatable,
    /// comma-separated; `default` is the three distinct ones), one table
    /// with a row per voice and condition, written to voices.json. Needs
    /// ffmpeg and Debian's asterisk-core-sounds-*-g722 packages
    /// (`scripts/setup.sh`). No latency, echo or cap rows in this mode.
    /// With `--simulated`, the same in simulated time (`--seeds` per cell,
    /// with the delay per cell), written to sim-voices.json.
    #[arg(long, value_delimiter = ',', num_args = 0.., default_missing_value = "default")]
    pub real_voices: Option<Vec<String>>,
    /// Media settings as `babel call` ships them (noise suppression on, as
    /// everything else), rather than the harness's noise suppression off.
    /// Only --frame-ms and --bitrate still apply (not --no-redundancy or
    /// --fixed-bitrate).
    #[arg(long)]
    pub shipped: bool,
}

impl VoiceArgs {
    /// The speakers asked for (an error names the unknown one).
    pub fn speakers(&self) -> anyhow::Result<Vec<Speaker>> {
        let mut out = Vec::new();
        for id in self.real_voices.iter().flatten() {
            if id == "default" {
                out.extend(DEFAULT_SPEAKERS.iter().filter_map(|d| speaker(d)));
            } else {
                let ids: Vec<&str> = SPEAKERS.iter().map(|s| s.id).collect();
                out.push(speaker(id).with_context(|| format!("no voice `{id}`; there are {}", ids.join(", ")))?);
            }
        }
        Ok(out)
    }
}

/// One voice's report.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VoiceReport {
    /// The voice (speaker id or "festival").
    pub voice: String,
    /// Its prompts, in order (empty for festival).
    pub prompts: Vec<String>,
    /// What the harness found for it.
    pub report: Report,
}

/// Runs the harness of `opts` for festival's speech (`opts.speech`) and
/// then for each of `speakers`, each into a folder of its own under
/// `opts.out_dir`; `progress` hears about each step.
pub async fn run(
    opts: &Options,
    speakers: &[Speaker],
    mut progress: impl FnMut(&str),
) -> anyhow::Result<Vec<VoiceReport>> {
    let mut voices = vec![("festival".to_owned(), Vec::new(), opts.speech.clone(), opts.speech_source.clone())];
    for s in speakers {
        let (speech, used) = load(s)?;
        let source = format!("{}: prompts {}", s.label(), used.join(", "));
        voices.push((s.id.to_owned(), used.iter().map(|p| (*p).to_owned()).collect(), speech, source));
    }
    let mut out = Vec::new();
    for (voice, prompts, speech, speech_source) in voices {
        let o = Options { speech, speech_source, out_dir: opts.out_dir.join(&voice), latency: false, ..opts.clone() };
        let report = super::run(&o, |step| progress(&format!("{voice}: {step}"))).await?;
        out.push(VoiceReport { voice, prompts, report });
    }
    Ok(out)
}

/// Mean and sample standard deviation of a cell's MOS.
fn spread(v: &[Scored]) -> String {
    let Some(m) = mean_mos(v) else { return "–".into() };
    if v.len() < 2 {
        return format!("{m:.2}");
    }
    let var = v.iter().map(|s| (s.mos - m).powi(2)).sum::<f64>() / (v.len() - 1) as f64;
    format!("{m:.2} ± {:.2}", var.sqrt())
}

/// One table, a row per voice and condition.
pub fn markdown(voices: &[VoiceReport]) -> String {
    let mut s = String::from(
        "| voice | length | codec alone | network (both ways) | codec + same loss, ideal receiver | **Babel** (mean ± sd) | \
         min–max | naive receiver | loss applied | copies / FEC / concealed | delay | R (G.107.1) / MOS-CQ |\n\
         | --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n",
    );
    for v in voices {
        let r = &v.report;
        for row in &r.rows {
            let n = row.babel.len().max(1);
            let loss = row.babel.iter().map(|x| x.applied_loss_pct).sum::<f64>() / n as f64;
            let avg = |f: fn(&Scored) -> u64| row.babel.iter().map(f).sum::<u64>() / n as u64;
            let delay = row.babel.iter().map(|x| x.delay_ms).sum::<f64>() / n as f64;
            let min = row.babel.iter().map(|x| x.mos).reduce(f64::min);
            let max = row.babel.iter().map(|x| x.mos).reduce(f64::max);
            s.push_str(&format!(
                "| {} | {:.1} s | {:.2} | {} | {} | **{}** | {} | {} | {:.1} % | {} / {} / {} | {:.0} ms | {} |\n",
                v.voice,
                r.speech_secs,
                r.codec_mos,
                row.label,
                mean_mos(&row.codec_loss).map_or("–".into(), |m| format!("{m:.2}")),
                spread(&row.babel),
                match (min, max) {
                    (Some(a), Some(b)) => format!("{a:.2}–{b:.2}"),
                    _ => "–".into(),
                },
                spread(&row.naive),
                loss,
                avg(|x| x.from_copies),
                avg(|x| x.fec_recovered),
                avg(|x| x.concealed),
                delay,
                super::emodel_cell(r, row),
            ));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_missing_package_is_named() {
        let dir = tempfile::tempdir().unwrap();
        for s in SPEAKERS {
            let e = load_in(dir.path(), &s).unwrap_err().to_string();
            // Without ffmpeg the error names ffmpeg; with it, the package.
            assert!(e.contains(s.package) || e.contains("ffmpeg"), "{e}");
            assert!(e.contains("scripts/setup.sh"), "{e}");
        }
    }

    #[test]
    fn trimming_keeps_the_speech_and_drops_the_silence() {
        let mut x = vec![0.0f32; 48_000];
        x.extend((0..48_000).map(|i| 0.3 * (i as f32 * 0.05).sin()));
        x.extend(vec![0.0f32; 24_000]);
        let t = trim(&x);
        // The tone (1 s) and 30 ms either side, to the 10 ms frame.
        assert!((48_000 + 2 * 1_440 - 960..=48_000 + 2 * 1_440 + 960).contains(&t.len()), "{}", t.len());
        assert!(trim(&[0.0; 4_800]).is_empty());
        assert!((activity(&x) - 1.0 / 2.5).abs() < 0.01, "{}", activity(&x));
    }

    #[derive(Debug, clap::Parser)]
    struct Cli {
        #[command(flatten)]
        v: VoiceArgs,
    }

    fn parse(args: &[&str]) -> VoiceArgs {
        use clap::Parser;
        Cli::try_parse_from(std::iter::once("babel-quality").chain(args.iter().copied())).unwrap().v
    }

    #[test]
    fn the_command_line_picks_the_speakers() {
        let ids = |v: &VoiceArgs| v.speakers().unwrap().iter().map(|s| s.id).collect::<Vec<_>>();
        assert!(parse(&[]).real_voices.is_none());
        assert_eq!(ids(&parse(&["--real-voices", "--shipped"])), DEFAULT_SPEAKERS);
        assert!(parse(&["--real-voices", "--shipped"]).shipped);
        assert_eq!(ids(&parse(&["--real-voices", "carlo-it,allison-es"])), ["carlo-it", "allison-es"]);
        let e = parse(&["--real-voices", "bob"]).speakers().unwrap_err().to_string();
        assert!(e.contains("bob") && e.contains("june-fr"), "{e}");
    }

    #[test]
    fn shipped_is_what_babel_call_runs() {
        let tuned = MediaConfig { noise_suppression: false, ..MediaConfig::default() };
        let s = shipped(&tuned);
        assert_eq!(format!("{s:?}"), format!("{:?}", MediaConfig::default()));
    }
}
