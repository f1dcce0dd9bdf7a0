//! `babel-quality --simulated`, short: one sentence of speech through two
//! call cores over the netem model at 10 % random loss with 30 ms jitter in
//! simulated time, scored with PESQ wideband. Festival and PESQ come from
//! `scripts/setup.sh`; without them this test fails and names what is
//! missing.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use babel_media::call::MediaConfig;
use babel_tools::quality::{self, Network, Voice, sim};

#[test]
fn a_simulated_lossy_call_is_scored_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let speech = quality::make_speech(dir.path(), 1, Voice::Festival).unwrap();
    let python = quality::deps::require_pesq().unwrap();
    let net = Network { loss_pct: 10.0, bursty: false, jitter_ms: 30 };
    let opts = quality::Options {
        speech_source: "one Harvard sentence".into(),
        speech,
        networks: vec![net],
        runs: 1,
        calls: true,
        latency: false,
        media: MediaConfig { noise_suppression: false, tail: Duration::from_millis(500), ..MediaConfig::default() },
        naive: false,
        offsets: Vec::new(),
        ideal_no_fec: false,
        out_dir: dir.path().to_owned(),
    };
    let r = sim::run(&python, &opts, 1, 2, &|s| eprintln!("{s}")).unwrap();
    eprintln!("{}", sim::markdown(&r));
    assert!(r.report.codec_mos > 3.5, "the codec alone: {}", r.report.codec_mos);
    let babel = &r.report.rows[0].babel[0];
    // The whole call was simulated: the speech, the second of silence after
    // it, less the tail.
    assert!(r.simulated_secs > opts.speech.len() as f64 / 48_000.0, "{r:?}");
    // The link applied the loss (one seed: about 10 %) and the core repaired
    // some of it.
    assert!((3.0..20.0).contains(&babel.applied_loss_pct), "{babel:?}");
    assert!(babel.from_copies + babel.fec_recovered > 0, "{babel:?}");
    // A real PESQ score: in its range, and speech came through (garbage
    // scores about 1).
    assert!((1.5..=4.64).contains(&babel.mos), "MOS {} ({babel:?})", babel.mos);
    // What the listener heard lines up with what was said, after the
    // jitter buffer's delay.
    assert!((0.0..400.0).contains(&babel.delay_ms), "{babel:?}");
    // Scored side by side, each score still lands in its own cell: the
    // same as one scorer in order.
    let d = dir.path();
    let pairs: Vec<_> = ["codec.wav", "sim-codec-loss-0-s1.wav", "sim-babel-0-s1.wav"]
        .iter()
        .map(|f| (d.join("reference.wav"), d.join(f)))
        .collect();
    let one_by_one = quality::pesq_scores(&python, &pairs).unwrap();
    assert_eq!(one_by_one, vec![r.report.codec_mos, r.report.rows[0].codec_loss[0].mos, babel.mos]);
    assert_eq!(sim::pesq_parallel(&python, &pairs, 2).unwrap(), one_by_one);
}
