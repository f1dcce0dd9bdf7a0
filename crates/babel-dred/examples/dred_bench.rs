//! CPU of DRED against the shipped codec settings, one thread, as a ratio
//! to the shipped encoder and decoder measured in the same run:
//!
//! ```sh
//! cargo run -p babel-dred --features dred --example dred_bench   # libopus is built -O3 in any profile
//! ```
//!
//! Each configuration codes `SECS` seconds of a voice-like signal (a buzz
//! with harmonics in syllables) in 20 ms frames; the decoder loses every
//! tenth packet and repairs it as that configuration would (FEC from the
//! next packet; DRED from the packet two later). CPU time is the process's
//! (user + system, from /proc/self/stat), alternating the configurations
//! over `ROUNDS` rounds; the best round of each is shown.

use std::time::Duration;

use babel_dred::{Decoder, DredReader, Encoder, Error};

const FRAME: usize = 960;
const SECS: usize = 30;
const ROUNDS: usize = 3;

fn voice(n: usize, start: usize) -> Vec<f32> {
    (start..start + n)
        .map(|i| {
            let t = i as f32 / 48_000.0;
            let env = (2.0 * std::f32::consts::PI * 2.5 * t).sin().max(0.1);
            let ph = 2.0 * std::f32::consts::PI * (130.0 + 20.0 * (t * 1.3).sin()) * t;
            env * (0.3 * ph.sin() + 0.12 * (2.0 * ph).sin() + 0.06 * (3.0 * ph).sin())
        })
        .collect()
}

/// The process's CPU time so far.
fn cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command's closing parenthesis, from the state (0):
    // utime is the 11th and stime the 12th, in clock ticks (100 per second
    // on Linux).
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| f.get(i).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0);
    let ticks = tick(11) + tick(12);
    Duration::from_millis(ticks * 10)
}

struct Config {
    name: &'static str,
    bitrate: u32,
    vbr: bool,
    fec: bool,
    dred: u8,
    deep_plc: bool,
}

/// Encode and decode time, s of CPU per s of audio.
fn run(c: &Config, frames: &[Vec<f32>]) -> Result<(f64, f64), Error> {
    let mut e = Encoder::new()?;
    e.set_bitrate(c.bitrate)?;
    e.set_vbr(c.vbr)?;
    e.set_complexity(8)?;
    e.set_inband_fec(c.fec)?;
    e.set_expected_loss(10)?;
    e.set_dred_duration(c.dred)?;
    let t = cpu();
    let packets: Vec<Vec<u8>> = frames.iter().map(|f| e.encode(f)).collect::<Result<_, _>>()?;
    let enc = cpu() - t;
    let mut d = Decoder::new(FRAME)?;
    d.set_complexity(if c.deep_plc { 5 } else { 0 })?;
    let mut r = DredReader::new()?;
    let t = cpu();
    for k in 0..packets.len() {
        if k % 10 != 5 || k + 2 >= packets.len() {
            d.decode(&packets[k])?;
        } else if c.dred > 0 && r.parse(&packets[k + 2], 4 * FRAME as u32)? + FRAME as u32 > 2 * FRAME as u32 {
            d.recover(&r, 2 * FRAME as u32)?;
        } else if c.fec {
            d.decode_fec(&packets[k + 1])?;
        } else {
            d.conceal()?;
        }
    }
    let dec = cpu() - t;
    let secs = (frames.len() * FRAME) as f64 / 48_000.0;
    Ok((enc.as_secs_f64() / secs, dec.as_secs_f64() / secs))
}

fn main() -> Result<(), Error> {
    let frames: Vec<Vec<f32>> = (0..SECS * 50).map(|k| voice(FRAME, k * FRAME)).collect();
    let configs = [
        Config {
            name: "shipped: 32 kbit/s CBR, FEC, classic PLC",
            bitrate: 32_000,
            vbr: false,
            fec: true,
            dred: 0,
            deep_plc: false,
        },
        Config {
            name: "32 kbit/s CBR, FEC, deep PLC",
            bitrate: 32_000,
            vbr: false,
            fec: true,
            dred: 0,
            deep_plc: true,
        },
        Config {
            name: "DRED 96 kbit/s VBR, FEC, 80 ms",
            bitrate: 96_000,
            vbr: true,
            fec: true,
            dred: 8,
            deep_plc: true,
        },
        Config {
            name: "DRED 96 kbit/s VBR, FEC, 160 ms",
            bitrate: 96_000,
            vbr: true,
            fec: true,
            dred: 16,
            deep_plc: true,
        },
        Config {
            name: "DRED 32 kbit/s VBR, no FEC, 100 ms",
            bitrate: 32_000,
            vbr: true,
            fec: false,
            dred: 10,
            deep_plc: true,
        },
    ];
    println!("{} ({SECS} s of audio per run, best of {ROUNDS} rounds)\n", babel_dred::version());
    let mut best = vec![(f64::INFINITY, f64::INFINITY); configs.len()];
    for _ in 0..ROUNDS {
        for (i, c) in configs.iter().enumerate() {
            let (e, d) = run(c, &frames)?;
            best[i] = (best[i].0.min(e), best[i].1.min(d));
        }
    }
    println!("| configuration | encode, % of a core | × shipped | decode with 10 % loss, % of a core | × shipped |");
    println!("| --- | ---: | ---: | ---: | ---: |");
    let (e0, d0) = best[0];
    for (c, (e, d)) in configs.iter().zip(&best) {
        println!(
            "| {} | {:.2} | {:.1} | {:.2} | {:.1} |",
            c.name,
            e * 100.0,
            e / e0.max(1e-9),
            d * 100.0,
            d / d0.max(1e-9)
        );
    }
    Ok(())
}
