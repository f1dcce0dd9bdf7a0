//! Congestion: calls through a bandwidth cap below what the default
//! bitrate needs on the wire, with the sender's bitrate adaptation on and
//! off, scored with PESQ like the rest of the table.

use std::path::Path;
use std::time::Duration;

use babel_media::engine::MediaConfig;
use serde::Serialize;

use super::call::{self, TimedRecording};
use super::{pesq_scores, prepare, write_wav16};
use crate::netsim::Impairment;

/// One capped call.
#[derive(Debug, Clone, Serialize)]
pub struct CapRun {
    /// Whether the sender adapted its bitrate.
    pub adaptive: bool,
    /// PESQ-WB MOS.
    pub mos: f64,
    /// The sender's bitrate at the end, bits/s.
    pub final_bitrate: u32,
    /// Datagrams the bottleneck dropped (caller to callee), %.
    pub dropped_pct: f64,
}

/// The rows for one cap.
#[derive(Debug, Clone, Serialize)]
pub struct CapReport {
    /// The cap, bits/s, each way.
    pub cap_bps: u64,
    /// The bottleneck's queue, ms at the cap.
    pub queue_ms: u64,
    /// With and without adaptation, per seed.
    pub runs: Vec<CapRun>,
}

/// Runs `runs` calls each with and without adaptation through `cap_bps`
/// (a drop-tail queue of 250 ms), 30 ms of jitter on top.
pub async fn run(
    python: &Path,
    speech: &[f32],
    media: &MediaConfig,
    cap_bps: u64,
    runs: u32,
    dir: &Path,
) -> anyhow::Result<CapReport> {
    std::fs::create_dir_all(dir)?;
    let queue_ms = 250;
    let net = Impairment {
        rate_bps: Some(cap_bps),
        queue_bytes: (cap_bps / 8 * queue_ms / 1000) as usize,
        jitter: Duration::from_millis(30),
        ..Impairment::default()
    };
    let ref16 = babel_media::audio::resample(speech, 48_000, 16_000)?;
    let reference = dir.join("cap-reference.wav");
    write_wav16(&reference, &ref16)?;
    let mut pairs = Vec::new();
    let mut out = Vec::new();
    for seed in 1..=u64::from(runs) {
        for adaptive in [true, false] {
            let m = MediaConfig { adapt_bitrate: adaptive, ..media.clone() };
            let r = call::run(speech.to_vec(), net, m, seed, None, TimedRecording::default(), Duration::ZERO).await?;
            let (d16, _) = prepare(&ref16, &r.heard)?;
            let path =
                dir.join(format!("cap-{}-{}-s{seed}.wav", cap_bps / 1000, if adaptive { "adaptive" } else { "fixed" }));
            write_wav16(&path, &d16)?;
            pairs.push((reference.clone(), path));
            let up = r.proxy.up;
            out.push(CapRun {
                adaptive,
                mos: 0.0,
                final_bitrate: r.sender.bitrate,
                dropped_pct: 100.0 * up.dropped() as f64 / up.received.max(1) as f64,
            });
        }
    }
    for (run, mos) in out.iter_mut().zip(pesq_scores(python, &pairs)?) {
        run.mos = mos;
    }
    Ok(CapReport { cap_bps, queue_ms, runs: out })
}

/// The Markdown table.
pub fn markdown(r: &CapReport) -> String {
    let mean = |adaptive: bool, f: &dyn Fn(&CapRun) -> f64| {
        let v: Vec<f64> = r.runs.iter().filter(|x| x.adaptive == adaptive).map(f).collect();
        v.iter().sum::<f64>() / v.len().max(1) as f64
    };
    let mut s = format!(
        "Cap {} kbit/s each way (queue {} ms), 30 ms jitter, {} runs each:\n\n\
         | sender | MOS | bitrate at the end | dropped at the bottleneck |\n| --- | ---: | ---: | ---: |\n",
        r.cap_bps / 1000,
        r.queue_ms,
        r.runs.len() / 2
    );
    for (adaptive, name) in [(true, "bitrate adaptation (the default)"), (false, "fixed bitrate")] {
        s.push_str(&format!(
            "| {name} | **{:.2}** | {:.1} kbit/s | {:.1} % |\n",
            mean(adaptive, &|x| x.mos),
            mean(adaptive, &|x| f64::from(x.final_bitrate)) / 1000.0,
            mean(adaptive, &|x| x.dropped_pct),
        ));
    }
    s
}
