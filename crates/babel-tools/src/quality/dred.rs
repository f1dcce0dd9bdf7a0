//! `babel-dred-compare` (feature `dred`): Opus DRED against Babel's copies
//! at the same bitrate and the same delay, on the real voices, many seeds
//! per cell (issue #16 item 3).
//!
//! **What runs.** One direction of a call, in simulated time: the speaker's
//! 20 ms frames go through an encoder (libopus 1.6 through
//! [`babel_dred`]), each datagram through a `babel-netem` [`Link`] with the
//! condition's loss and jitter (the same model and the same seeded stream,
//! 0, as the listener's side of `babel-quality --simulated`), and a
//! **fixed-deadline receiver** plays frame `k` at `k·20 ms + jitter + wait`:
//! `jitter` is the condition's largest jitter (so every datagram that came
//! is in time), `wait` is the frames it holds back for later datagrams that
//! carry a repair, the delay that redundancy costs. At its deadline a frame
//! is played from, in order: its own packet; a copy in a later datagram
//! (copies arm); the next packet's in-band FEC (LBRR, when that packet has
//! it); the DRED of the nearest later packet that came, asking for just the
//! gap (DRED arms); else concealment (classic, or libopus's deep PLC). So
//! the arms differ only in what the datagrams carry and how the receiver
//! repairs: same speech, same loss, same jitter, same deadline rule.
//!
//! **What it is not.** Not the call core: no capture chain, no adaptive
//! buffer, no reports or rate control (the sender is told the loss from the
//! start). The arm "copies" is the shipped engine's redundancy in this
//! model; set beside the shipped engine's own row (call cores, same seeds,
//! from `babel-quality --simulated --shipped`'s `sim-voices.json`) it shows
//! what the model leaves out. DRED's comparison is with the copies arm.
//!
//! **Scoring.** As `babel-quality --simulated`: PESQ-WB against the clean
//! speech after alignment (the delay column is the alignment's, which here
//! is the deadline plus the codec's 6.5 ms), and the E-model
//! ([`super::emodel`]) with Ppl the frames concealed (frames rebuilt from
//! copies, FEC or DRED are repaired, as FEC is in the engine's rows) and
//! the codec's Ie at the main coding's bitrate.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use babel_dred::{Decoder, DredReader, Encoder};
use babel_netem::{Impairment, Link, Rng};
use serde::{Deserialize, Serialize};

use super::sim::{SimVoice, mean_ci, pesq_parallel};
use super::{Network, prepare, write_wav16};

/// Samples per 20 ms frame at 48 kHz.
pub const FRAME: usize = 960;
/// The shipped engine's main bitrate, bits/s.
pub const MAIN_BPS: u32 = 32_000;

/// How an arm repairs a lost frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Repair {
    /// Full copies of earlier frames ride in later datagrams (the engine's).
    Copies,
    /// Each packet's DRED covers the frames before it.
    Dred,
    /// Neither: in-band FEC and concealment only.
    Plain,
}

/// One way of sending and repairing.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Arm {
    /// How it reads in the table.
    pub name: String,
    /// Its repair.
    pub repair: Repair,
    /// The encoder's bitrate, bits/s (CBR; with DRED, VBR with this mean,
    /// DRED included).
    pub bitrate: u32,
    /// Copies: frames back each copy is (datagram `k` carries frames `k −
    /// o`).
    pub offsets: Vec<u32>,
    /// Frames the receiver waits for a later datagram.
    pub wait: u32,
    /// In-band FEC on.
    pub fec: bool,
    /// Decoder complexity 5 (deep PLC) rather than 0 (classic).
    pub deep_plc: bool,
}

/// The arms for `net`: the engine's copies for its loss pattern, DRED at
/// the copies' bitrate and the copies' wait, DRED at a shorter wait, DRED
/// at the main bitrate alone, no redundancy with classic and deep PLC, and
/// DRED at the copies' bitrate and wait without FEC.
pub fn arms(net: &Network) -> Vec<Arm> {
    let offsets = net.engine_offsets();
    let wait = offsets.iter().copied().max().unwrap_or(1);
    let total = MAIN_BPS * (1 + offsets.len() as u32);
    let short = if net.bursty { 3 } else { 1 };
    let arm = |name: String, repair, bitrate, offsets: Vec<u32>, wait, deep_plc| Arm {
        name,
        repair,
        bitrate,
        offsets,
        wait,
        fec: true,
        deep_plc,
    };
    let k = |b: u32| b / 1000;
    let list = offsets.iter().map(u32::to_string).collect::<Vec<_>>().join(" and ");
    vec![
        arm(format!("copies {list} back, {} kbit/s", k(total)), Repair::Copies, MAIN_BPS, offsets.clone(), wait, false),
        arm(format!("DRED, {} kbit/s, wait {wait}", k(total)), Repair::Dred, total, vec![], wait, true),
        arm(format!("DRED, {} kbit/s, wait {short}", k(total)), Repair::Dred, total, vec![], short, true),
        // At 32 kbit/s with FEC on, libopus leaves DRED too few bits to
        // send any (it keeps 20 kbit/s for the main coding with FEC): off.
        Arm {
            fec: false,
            ..arm(
                format!("DRED, {} kbit/s, no FEC, wait {short}", k(MAIN_BPS)),
                Repair::Dred,
                MAIN_BPS,
                vec![],
                short,
                true,
            )
        },
        arm(format!("FEC only, {} kbit/s, classic PLC", k(MAIN_BPS)), Repair::Plain, MAIN_BPS, vec![], 1, false),
        arm(format!("FEC only, {} kbit/s, deep PLC", k(MAIN_BPS)), Repair::Plain, MAIN_BPS, vec![], 1, true),
        // Whether LBRR earns its bits beside DRED at the copies' bitrate.
        Arm {
            fec: false,
            ..arm(format!("DRED, {} kbit/s, no FEC, wait {wait}", k(total)), Repair::Dred, total, vec![], wait, true)
        },
    ]
}

/// How the receiver played each frame.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Played {
    /// From its own packet.
    pub own: u64,
    /// From a copy in a later datagram.
    pub copies: u64,
    /// From the next packet's in-band FEC.
    pub fec: u64,
    /// From a later packet's DRED.
    pub dred: u64,
    /// Concealed.
    pub concealed: u64,
}

/// One call of one arm.
#[derive(Debug)]
pub struct ArmCall {
    /// What the listener heard, 48 kHz, from the moment the speaker began
    /// (so the deadline is in it).
    pub heard: Vec<f32>,
    /// How the frames were played.
    pub played: Played,
    /// Payload on the wire, bits/s (packets and copies; no headers).
    pub wire_bps: f64,
    /// Codec time (encoding, decoding, DRED), per second of speech.
    pub codec_ms_per_s: f64,
}

/// When each datagram of `n`, sent every 20 ms from 0, arrives through
/// `imp` with random stream 0 of `seed` (`None`: lost).
pub fn arrivals(imp: Impairment, seed: u64, n: usize) -> Vec<Option<Duration>> {
    let mut link = Link::new(imp, Rng::with_stream(seed, 0));
    let mut at = vec![None; n];
    for k in 0..n {
        link.push(Duration::from_millis(20 * k as u64), (k as u32).to_le_bytes().to_vec());
    }
    while let Some(t) = link.next_due() {
        let Some(d) = link.poll(t) else { break };
        let k = d.get(..4).and_then(|b| b.try_into().ok()).map_or(u32::MAX, u32::from_le_bytes) as usize;
        if let Some(slot) = at.get_mut(k) {
            slot.get_or_insert(t);
        }
    }
    at
}

/// One call: `speech` (48 kHz) through `arm` over `net` with `seed`.
pub fn call(speech: &[f32], net: &Network, arm: &Arm, seed: u64) -> anyhow::Result<ArmCall> {
    // A second of silence after the speech so its end is played.
    let n = speech.len().div_ceil(FRAME) + 50;
    let mut codec = Duration::ZERO;
    let t = Instant::now();
    let mut enc = Encoder::new()?;
    enc.set_bitrate(arm.bitrate)?;
    // CBR as the engine, except DRED: in CBR libopus gives DRED only what
    // the main coding leaves of each packet (often one 20 ms latent, or
    // none), so DRED runs VBR, its mean at the bitrate (measured: the
    // table's "kbit/s on the wire").
    enc.set_vbr(arm.repair == Repair::Dred)?;
    enc.set_complexity(8)?;
    enc.set_inband_fec(arm.fec)?;
    // As the engine tells its encoder once the far end reports the loss.
    let loss_x10 = (net.loss_pct * 10.0) as u16;
    enc.set_expected_loss(babel_media::engine::expected_loss_pct(loss_x10))?;
    if arm.repair == Repair::Dred {
        // 10 ms units; what the receiver can use, and two frames more.
        enc.set_dred_duration(((arm.wait + 2) * 2) as u8)?;
    }
    let mut packets = Vec::with_capacity(n);
    for k in 0..n {
        let mut f: Vec<f32> = speech.get(k * FRAME..).unwrap_or(&[]).iter().take(FRAME).copied().collect();
        f.resize(FRAME, 0.0);
        packets.push(enc.encode(&f)?);
    }
    codec += t.elapsed();
    let mut wire_bytes: usize = packets.iter().map(Vec::len).sum();
    if arm.repair == Repair::Copies {
        for k in 0..n {
            wire_bytes +=
                arm.offsets.iter().filter(|&&o| k >= o as usize).map(|&o| packets[k - o as usize].len()).sum::<usize>();
        }
    }
    let came = arrivals(net.impairment(), seed, n);
    let jitter = Duration::from_millis(net.jitter_ms);
    let deadline = |k: usize| Duration::from_millis(20 * (k as u64 + u64::from(arm.wait))) + jitter;
    let in_time = |j: usize, k: usize| came.get(j).copied().flatten().is_some_and(|a| a <= deadline(k));

    let t = Instant::now();
    let mut dec = Decoder::new(FRAME)?;
    dec.set_complexity(if arm.deep_plc { 5 } else { 0 })?;
    let mut reader = if arm.repair == Repair::Dred { Some(DredReader::new()?) } else { None };
    // The deadline's delay, as silence before the first frame.
    let lead = (jitter.as_millis() as usize + 20 * arm.wait as usize) * 48;
    let mut heard = vec![0.0; lead];
    let mut p = Played::default();
    for k in 0..n {
        let copy = arm.repair == Repair::Copies && arm.offsets.iter().any(|&o| in_time(k + o as usize, k));
        let fec_next = arm.fec && in_time(k + 1, k) && babel_dred::has_lbrr(&packets[k + 1]);
        let dred_from = (k + 1..=k + arm.wait as usize).find(|&j| in_time(j, k));
        let pcm = if in_time(k, k) {
            p.own += 1;
            dec.decode(&packets[k])?
        } else if copy {
            p.copies += 1;
            dec.decode(&packets[k])?
        } else if fec_next {
            p.fec += 1;
            dec.decode_fec(&packets[k + 1])?
        } else if let (Some(r), Some(j)) = (reader.as_mut(), dred_from) {
            let back = ((j - k) * FRAME) as u32;
            let got = r.parse(&packets[j], back + 2 * FRAME as u32)?;
            // Covered at least in part (libopus conceals the rest).
            if got + FRAME as u32 > back {
                p.dred += 1;
                dec.recover(r, back)?
            } else {
                p.concealed += 1;
                dec.conceal()?
            }
        } else {
            p.concealed += 1;
            dec.conceal()?
        };
        heard.extend(pcm);
    }
    codec += t.elapsed();
    let secs = (n * FRAME) as f64 / 48_000.0;
    Ok(ArmCall {
        heard,
        played: p,
        wire_bps: wire_bytes as f64 * 8.0 / secs,
        codec_ms_per_s: codec.as_secs_f64() * 1000.0 / secs,
    })
}

/// One scored call of an arm.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Scored {
    /// The seed.
    pub seed: u64,
    /// PESQ-WB.
    pub mos: f64,
    /// The alignment's delay, ms.
    pub delay_ms: f64,
    /// How the frames were played.
    pub played: Played,
    /// Payload bits/s on the wire.
    pub wire_bps: f64,
    /// Codec time per second of speech, ms.
    pub codec_ms_per_s: f64,
    /// Frames of speech (for Ppl).
    pub frames: u64,
}

/// A cell: one voice, one condition, one arm, all seeds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Cell {
    /// The voice.
    pub voice: String,
    /// The condition.
    pub network: Network,
    /// The arm.
    pub arm: Arm,
    /// Its calls.
    pub calls: Vec<Scored>,
}

impl Cell {
    /// The E-model rating of each call: Ppl the frames concealed, Ie at
    /// the main coding's bitrate (the engine's 32 kbit/s for copies and
    /// DRED at 32 kbit/s; the table's top row, 40 kbit/s, for DRED at 96).
    pub fn ratings(&self) -> Vec<super::emodel::Rating> {
        self.calls
            .iter()
            .map(|c| {
                let ppl = 100.0 * c.played.concealed as f64 / c.frames.max(1) as f64;
                let m2e = c.delay_ms + super::emodel::MOUTH_TO_EAR_BEYOND_ALIGNMENT_MS;
                super::emodel::rate(f64::from(self.arm.bitrate) / 1000.0, ppl, m2e, self.network.bursty)
            })
            .collect()
    }
}

/// Runs every arm of every condition of `nets` on every voice (only the
/// arms whose name contains one of `only`, when given) with seeds `1..=seeds` on
/// `threads` threads, then scores all with PESQ.
pub fn run(
    python: &Path,
    voices: &[(String, Vec<f32>)],
    (nets, only): (&[Network], &[String]),
    seeds: u32,
    threads: usize,
    out: &Path,
    progress: &(dyn Fn(&str) + Sync),
) -> anyhow::Result<Vec<Cell>> {
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let mut cells = Vec::new();
    let mut refs = Vec::new();
    for (vi, (voice, speech)) in voices.iter().enumerate() {
        let ref16 = babel_media::audio::resample(speech, 48_000, 16_000)?;
        let p = out.join(format!("{voice}-reference.wav"));
        write_wav16(&p, &ref16)?;
        refs.push((p, ref16));
        for net in nets {
            for arm in
                arms(net).into_iter().filter(|a| only.is_empty() || only.iter().any(|o| a.name.contains(o.as_str())))
            {
                cells.push((vi, Cell { voice: voice.clone(), network: *net, arm, calls: Vec::new() }));
            }
        }
    }
    let jobs: Vec<(usize, u64)> = (0..cells.len()).flat_map(|c| (1..=u64::from(seeds)).map(move |s| (c, s))).collect();
    let next = AtomicUsize::new(0);
    type Done = anyhow::Result<(usize, Scored, PathBuf)>;
    let done: Mutex<Vec<Done>> = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..threads.max(1) {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&(c, seed)) = jobs.get(i) else { break };
                    let (vi, cell) = &cells[c];
                    if seed == 1 {
                        progress(&format!("{} · {} · {}", cell.voice, cell.network.label(), cell.arm.name));
                    }
                    let one = || -> Done {
                        let speech = &voices[*vi].1;
                        let r = call(speech, &cell.network, &cell.arm, seed)?;
                        let (d16, delay) = prepare(&refs[*vi].1, &r.heard)?;
                        let p = out.join(format!("c{c}-s{seed}.wav"));
                        write_wav16(&p, &d16)?;
                        let scored = Scored {
                            seed,
                            mos: 0.0,
                            delay_ms: delay,
                            played: r.played,
                            wire_bps: r.wire_bps,
                            codec_ms_per_s: r.codec_ms_per_s,
                            frames: speech.len().div_ceil(FRAME) as u64,
                        };
                        Ok((c, scored, p))
                    };
                    let r = one();
                    done.lock().unwrap_or_else(|p| p.into_inner()).push(r);
                }
            });
        }
    });
    let mut done =
        done.into_inner().unwrap_or_else(|p| p.into_inner()).into_iter().collect::<anyhow::Result<Vec<_>>>()?;
    done.sort_by_key(|(c, s, _)| (*c, s.seed));
    progress(&format!("scoring {} recordings with PESQ", done.len()));
    let pairs: Vec<(PathBuf, PathBuf)> =
        done.iter().map(|(c, _, p)| (refs[cells[*c].0].0.clone(), p.clone())).collect();
    let scores = pesq_parallel(python, &pairs, threads)?;
    for ((c, mut scored, p), mos) in done.into_iter().zip(scores) {
        scored.mos = mos;
        cells[c].1.calls.push(scored);
        // The recordings are only scored: they go.
        let _ = std::fs::remove_file(p);
    }
    Ok(cells.into_iter().map(|(_, c)| c).collect())
}

fn ci(x: &[f64], digits: usize, unit: &str) -> String {
    match mean_ci(x) {
        Some((m, h)) if h.is_finite() => format!("{m:.digits$} ± {h:.digits$}{unit}"),
        Some((m, _)) => format!("{m:.digits$}{unit}"),
        None => "–".into(),
    }
}

/// The comparison in Markdown: a row per voice, condition and arm (and the
/// shipped engine's row from `shipped`, a `sim-voices.json`, when given).
pub fn markdown(cells: &[Cell], shipped: &[SimVoice]) -> String {
    let mut s = String::from(
        "| voice | network | arm | PESQ-WB | delay | R (G.107.1) | MOS-CQ | kbit/s on the wire | frames: copies / FEC / \
         DRED / concealed | codec ms per s |\n| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n",
    );
    let mut last: Option<(String, String)> = None;
    for cell in cells {
        let key = (cell.voice.clone(), cell.network.label());
        if last.as_ref() != Some(&key) {
            if let Some(row) = shipped_row(shipped, &cell.voice, &cell.network) {
                s.push_str(&row);
            }
            last = Some(key);
        }
        let c = &cell.calls;
        let n = c.len().max(1) as f64;
        let r = cell.ratings();
        let avg = |f: fn(&Played) -> u64| c.iter().map(|x| f(&x.played)).sum::<u64>() as f64 / n;
        s.push_str(&format!(
            "| {} | {} | {} | **{}** | {} | {} | {} | {:.0} | {:.1} / {:.1} / {:.1} / {:.1} | {:.0} |\n",
            cell.voice,
            cell.network.label(),
            cell.arm.name,
            ci(&c.iter().map(|x| x.mos).collect::<Vec<_>>(), 2, ""),
            ci(&c.iter().map(|x| x.delay_ms).collect::<Vec<_>>(), 0, " ms"),
            ci(&r.iter().map(|x| x.r_wb).collect::<Vec<_>>(), 1, ""),
            ci(&r.iter().map(|x| x.mos_cq).collect::<Vec<_>>(), 2, ""),
            c.iter().map(|x| x.wire_bps).sum::<f64>() / n / 1000.0,
            avg(|p| p.copies),
            avg(|p| p.fec),
            avg(|p| p.dred),
            avg(|p| p.concealed),
            c.iter().map(|x| x.codec_ms_per_s).sum::<f64>() / n,
        ));
    }
    s
}

/// The shipped engine's row for `voice` and `net` from a simulated run.
fn shipped_row(shipped: &[SimVoice], voice: &str, net: &Network) -> Option<String> {
    let v = shipped.iter().find(|v| v.voice == voice)?;
    let row = v.run.report.rows.iter().find(|r| r.network == *net)?;
    let c = &row.babel;
    let r: Vec<_> = c.iter().map(|x| super::emodel::of_call(&v.run.report, row, x)).collect();
    let n = c.len().max(1) as f64;
    let avg = |f: fn(&super::Scored) -> u64| c.iter().map(f).sum::<u64>() as f64 / n;
    Some(format!(
        "| {voice} | {} | *shipped engine (call cores, `--shipped`)* | **{}** | {} | {} | {} | – | {:.1} / {:.1} / – / {:.1} | – |\n",
        net.label(),
        ci(&c.iter().map(|x| x.mos).collect::<Vec<_>>(), 2, ""),
        ci(&c.iter().map(|x| x.delay_ms).collect::<Vec<_>>(), 0, " ms"),
        ci(&r.iter().map(|x| x.r_wb).collect::<Vec<_>>(), 1, ""),
        ci(&r.iter().map(|x| x.mos_cq).collect::<Vec<_>>(), 2, ""),
        avg(|x| x.from_copies),
        avg(|x| x.fec_recovered),
        avg(|x| x.concealed),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn speech(secs: f32) -> Vec<f32> {
        // A voice-like buzz in syllables, then a pause, repeating.
        (0..(secs * 48_000.0) as usize)
            .map(|i| {
                let t = i as f32 / 48_000.0;
                let syl = (2.0 * std::f32::consts::PI * 2.5 * t).sin().max(0.0);
                let ph = 2.0 * std::f32::consts::PI * (130.0 + 20.0 * (t * 1.3).sin()) * t;
                syl * (0.3 * ph.sin() + 0.12 * (2.0 * ph).sin() + 0.06 * (3.0 * ph).sin())
            })
            .collect()
    }

    fn net(loss: f64, bursty: bool) -> Network {
        Network { loss_pct: loss, bursty, jitter_ms: 30 }
    }

    #[test]
    fn arrivals_follow_the_link_and_the_seed() {
        let clean = arrivals(net(0.0, false).impairment(), 1, 500);
        assert!(clean.iter().enumerate().all(|(k, a)| a.is_some_and(|t| {
            let sent = Duration::from_millis(20 * k as u64);
            t >= sent && t <= sent + Duration::from_millis(30)
        })));
        let lossy = arrivals(net(10.0, false).impairment(), 1, 5000);
        let lost = lossy.iter().filter(|a| a.is_none()).count();
        assert!((350..650).contains(&lost), "{lost} of 5000 lost at 10 %");
        assert_eq!(lossy, arrivals(net(10.0, false).impairment(), 1, 5000));
        assert_ne!(lossy, arrivals(net(10.0, false).impairment(), 2, 5000));
    }

    #[test]
    fn the_arms_match_the_copies_bitrate_and_wait() {
        let a = arms(&net(10.0, false));
        assert_eq!(a[0].repair, Repair::Copies);
        assert_eq!((a[0].offsets.as_slice(), a[0].wait), ([1, 2].as_slice(), 2));
        assert_eq!((a[1].repair, a[1].bitrate, a[1].wait), (Repair::Dred, 96_000, 2));
        let b = arms(&net(20.0, true));
        assert_eq!((b[0].offsets.as_slice(), b[0].wait), ([3, 6].as_slice(), 6));
        assert_eq!((b[1].bitrate, b[1].wait, b[2].wait), (96_000, 6, 3));
        assert!(b[1].fec && !b[6].fec && (b[6].repair, b[6].bitrate, b[6].wait) == (Repair::Dred, 96_000, 6));
    }

    #[test]
    fn each_arm_repairs_as_it_says_and_the_wait_is_heard_as_delay() {
        let s = speech(4.0);
        let bursty = net(20.0, true);
        let a = arms(&bursty);
        let frames = s.len().div_ceil(FRAME) as u64 + 50;
        let mut dred_total = 0;
        for arm in &a {
            let r = call(&s, &bursty, arm, 3).expect("call");
            let p = r.played;
            assert_eq!(p.own + p.copies + p.fec + p.dred + p.concealed, frames, "{}: {p:?}", arm.name);
            assert!(p.own < frames, "{}: no loss at 20 %?", arm.name);
            match arm.repair {
                Repair::Copies => assert!(p.copies > 0 && p.dred == 0, "{}: {p:?}", arm.name),
                Repair::Dred => {
                    assert!(p.copies == 0, "{}: {p:?}", arm.name);
                    dred_total += p.dred;
                }
                Repair::Plain => assert!(p.copies == 0 && p.dred == 0, "{}: {p:?}", arm.name),
            }
            // The deadline is silence before the first frame.
            let lead = (30 + 20 * arm.wait as usize) * 48;
            assert!(r.heard[..lead].iter().all(|&x| x == 0.0));
            assert_eq!(r.heard.len(), lead + frames as usize * FRAME);
            // Copies carry the frames again; DRED (VBR) spends less in
            // the pauses (half of this signal), never more than its bitrate.
            let expect = if arm.repair == Repair::Copies { 3.0 * f64::from(MAIN_BPS) } else { f64::from(arm.bitrate) };
            let least = if arm.repair == Repair::Dred { 0.5 } else { 0.95 };
            assert!(r.wire_bps > expect * least && r.wire_bps < expect * 1.05, "{}: {} bit/s", arm.name, r.wire_bps);
        }
        assert!(dred_total > 0, "no frame came from DRED in any DRED arm");
        // Longer waits repair more: copies 3 and 6 back conceal fewer than
        // no redundancy at all.
        let conceal = |arm: &Arm| call(&s, &bursty, arm, 3).map(|r| r.played.concealed).unwrap_or(u64::MAX);
        assert!(conceal(&a[0]) < conceal(&a[4]));
        assert!(conceal(&a[1]) < conceal(&a[4]));
    }
}
