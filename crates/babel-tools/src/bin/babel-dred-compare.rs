//! `babel-dred-compare` (feature `dred`): Opus DRED against Babel's copies
//! at the same bitrate and delay, on festival's voice and the real voices,
//! many seeds per cell ([`babel_tools::quality::dred`]):
//!
//! ```sh
//! cargo build -p babel-tools --features dred --bin babel-dred-compare
//! $CARGO_TARGET_DIR/debug/babel-dred-compare --seeds 20 --shipped /tmp/dred/shipped/sim-voices.json
//! ```

use std::path::PathBuf;

use anyhow::Context;
use babel_tools::quality::{self, Network, sim::SimVoice};
use clap::Parser;

/// Sends each voice through every arm (copies, DRED, FEC only) of each
/// condition and scores what the fixed-deadline receiver plays.
#[derive(Debug, Parser)]
struct Args {
    /// Seeds per cell (1..=N).
    #[arg(long, default_value_t = 20)]
    seeds: u32,
    /// Conditions, `random:LOSS%:JITTER_MS` or `bursty:LOSS%:JITTER_MS`
    /// (default: 10 % random and 20 % bursty, 30 ms jitter).
    #[arg(long = "net", value_parser = Network::parse)]
    nets: Vec<Network>,
    /// Voices: `festival` and the real speakers' ids (default: festival,
    /// allison-en, june-fr, carlo-it).
    #[arg(long, value_delimiter = ',')]
    voices: Option<Vec<String>>,
    /// Only the arms whose name contains this (repeatable), e.g.
    /// `--only "96 kbit/s, no FEC"`.
    #[arg(long)]
    only: Vec<String>,
    /// The shipped engine's `sim-voices.json` (`babel-quality --simulated
    /// --real-voices --shipped`, same seeds and conditions), to set its row
    /// beside the arms.
    #[arg(long)]
    shipped: Option<PathBuf>,
    /// Print the table of an earlier run's dred.json (with `--shipped`'s
    /// rows) and run nothing.
    #[arg(long)]
    replot: Option<PathBuf>,
    /// Threads (calls, then PESQ scorers).
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Where the recordings (deleted once scored) and dred.json go.
    #[arg(long, default_value = "/tmp/babel-dred")]
    out: PathBuf,
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let started = std::time::Instant::now();
    eprintln!("babel-dred-compare: {}", babel_dred::version());
    let shipped: Vec<SimVoice> = match &a.shipped {
        Some(p) => {
            serde_json::from_str(&std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))?)
                .with_context(|| format!("{}: not a sim-voices.json", p.display()))?
        }
        None => Vec::new(),
    };
    if let Some(p) = &a.replot {
        let text = std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))?;
        let cells: Vec<quality::dred::Cell> = serde_json::from_str(&text).context("not a dred.json")?;
        println!("{}", quality::dred::markdown(&cells, &shipped));
        return Ok(());
    }
    let python = quality::deps::require_pesq()?;
    let nets = if a.nets.is_empty() {
        vec![
            Network { loss_pct: 10.0, bursty: false, jitter_ms: 30 },
            Network { loss_pct: 20.0, bursty: true, jitter_ms: 30 },
        ]
    } else {
        a.nets.clone()
    };
    let ids = a.voices.clone().unwrap_or_else(|| {
        std::iter::once("festival").chain(quality::voices::DEFAULT_SPEAKERS).map(str::to_owned).collect()
    });
    std::fs::create_dir_all(&a.out).with_context(|| format!("cannot create {}", a.out.display()))?;
    let mut voices = Vec::new();
    for id in &ids {
        let speech = if id == "festival" {
            quality::make_speech(&a.out, quality::SENTENCES.len(), quality::Voice::Festival)?
        } else {
            let s = quality::voices::speaker(id).with_context(|| format!("no voice `{id}`"))?;
            quality::voices::load(&s)?.0
        };
        voices.push((id.clone(), speech));
    }
    let shipped: Vec<SimVoice> = match &a.shipped {
        Some(p) => {
            serde_json::from_str(&std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))?)
                .with_context(|| format!("{}: not a sim-voices.json", p.display()))?
        }
        None => Vec::new(),
    };
    let cells = quality::dred::run(&python, &voices, (&nets, &a.only), a.seeds, a.threads, &a.out, &|s| {
        eprintln!("babel-dred-compare: {s}")
    })?;
    std::fs::write(a.out.join("dred.json"), serde_json::to_string_pretty(&cells)?)?;
    println!("{}", quality::dred::markdown(&cells, &shipped));
    eprintln!("babel-dred-compare: done in {:.0} s", started.elapsed().as_secs_f64());
    Ok(())
}
