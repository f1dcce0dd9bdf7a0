//! One simulated call over a lossy network, traced: every 100 ms of call
//! time, where the sender's copies go, the loss and burst it is told, its
//! bitrate, the receiver's buffer delay and its repairs so far. To see what
//! the loss-pattern engine does over time (BENCHMARKS.md, "Bad networks
//! without the lag").
//!
//! ```sh
//! cargo run -p babel-tools --example loss_trace -- SPEECH.wav bursty:20:30 SEED
//! ```

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use babel_media::call::MediaConfig;
use babel_tools::quality::Network;
use babel_tools::quality::sim::call_world;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [wav, net, seed] = args.as_slice() else {
        bail!("usage: loss_trace SPEECH.wav random|bursty:LOSS%:JITTER_MS SEED");
    };
    let speech = babel_media::audio::read_wav(&PathBuf::from(wav)).context("speech")?;
    let net = Network::parse(net).map_err(anyhow::Error::msg)?;
    let seed: u64 = seed.parse()?;
    let mut w = call_world(&speech, &net, &MediaConfig::default(), seed)?;
    println!("t_ms offsets loss_told bitrate | rx_loss depth_ms concealed fec copies received skipped stretched");
    let end = Duration::from_secs_f64(speech.len() as f64 / 48_000.0 + 1.0);
    while w.now < end {
        w.run_for(Duration::from_millis(100))?;
        let (s, r) = (w.stats(0), w.stats(1));
        println!(
            "{:6} {:8} {:5.1} {:6} | {:5.1} {:4} {:4} {:4} {:4} {:5} {:4} {:4}",
            w.now.as_millis(),
            format!("{:?}", s.copy_offsets),
            s.loss_pct,
            s.bitrate,
            r.rx_loss_pct,
            r.jitter_delay_ms,
            r.concealed,
            r.fec_recovered,
            r.from_copies,
            r.received,
            r.skipped,
            r.stretched,
        );
    }
    Ok(())
}
