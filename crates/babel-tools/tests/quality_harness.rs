//! The quality harness, short: two sentences of speech through the real
//! server, two clients and the impairment proxy at 10 % random loss with
//! 30 ms jitter, scored with PESQ wideband. Installs festival and PESQ
//! (in its own virtual environment) the first time, like `babel-quality`.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use babel_media::engine::MediaConfig;
use babel_tools::quality::{self, Network, Options, Voice};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn speech_through_a_lossy_jittery_network_scores_well() {
    let dir = tempfile::tempdir().unwrap();
    let speech = quality::make_speech(dir.path(), 2, Voice::Festival).unwrap();
    assert!(speech.len() > 48_000 * 4, "two sentences of speech");
    let net = Network { loss_pct: 10.0, bursty: false, jitter_ms: 30 };
    let opts = Options {
        speech,
        speech_source: "two Harvard sentences".into(),
        networks: vec![net],
        runs: 1,
        media: MediaConfig { noise_suppression: false, tail: Duration::from_millis(500), ..MediaConfig::default() },
        naive: true,
        calls: true,
        offsets: babel_media::engine::REDUNDANCY_OFFSETS.to_vec(),
        latency: false,
        out_dir: dir.path().to_owned(),
    };
    let report = quality::run(&opts, |s| eprintln!("{s}")).await.unwrap();
    eprintln!("{}", quality::markdown(&report));
    assert!(report.codec_mos > 4.0, "the codec alone: {}", report.codec_mos);
    let babel = &report.rows[0].babel[0];
    // The proxy applied the loss (one seed: about 10 %) ...
    assert!((4.0..18.0).contains(&babel.applied_loss_pct), "{babel:?}");
    // ... and the engine repaired it: copies, FEC.
    assert!(babel.from_copies + babel.fec_recovered > 0, "{babel:?}");
    // The full table's 13 s runs at this loss score 3.5-4.1; a short
    // recording weighs the first second (before the loss is reported and
    // the repairs start) more.
    assert!(babel.mos > 2.5, "MOS {} ({babel:?})", babel.mos);
    let naive = &report.rows[0].naive[0];
    assert!(babel.mos > naive.mos + 0.5, "Babel {} vs the naive receiver {}", babel.mos, naive.mos);
    let codec_loss = &report.rows[0].codec_loss[0];
    assert!(codec_loss.mos > 3.0, "{codec_loss:?}");
}
