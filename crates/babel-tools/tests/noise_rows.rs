//! Noise suppression that does no harm, scored as a person would hear it
//! (PESQ-WB against the clean voice): a real voice through the shipped
//! capture chain comes out as it went in when it is clean, and better than
//! with suppression off in real babble. Needs PESQ, ffmpeg and the
//! asterisk prompt packages (`scripts/setup.sh`).
#![allow(clippy::unwrap_used)]

use babel_tools::quality::noise::{self, NoiseCondition, NoiseKind};
use babel_tools::quality::voices;

#[test]
fn the_shipped_chain_spares_clean_speech_and_helps_in_babble() {
    let python = babel_tools::quality::deps::require_pesq().unwrap();
    let carlo = voices::speaker("carlo-it").unwrap();
    let voices = noise::load_voices(&[carlo]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let conditions = [
        NoiseCondition { kind: None, snr_db: f64::INFINITY },
        NoiseCondition { kind: Some(NoiseKind::Babble), snr_db: 15.0 },
    ];
    let tuning = babel_media::denoise::Tuning::SHIPPED;
    let rows = noise::run(&python, tuning, &voices, &conditions, dir.path(), |_| {}).unwrap();
    eprintln!("{}", noise::markdown(&rows));
    let (clean, babble) = (&rows[0], &rows[1]);
    // Clean: within 0.02 of suppression off (RNNoise alone lost 0.09 here).
    assert!((clean.on_mos - clean.off_mos).abs() < 0.02, "{clean:?}");
    assert!(clean.rnnoise_mos < clean.off_mos - 0.04, "RNNoise alone harms clean speech: {clean:?}");
    // Babble at 15 dB: the gate lets RNNoise work (+0.32 measured).
    assert!(babble.on_mos > babble.off_mos + 0.15, "{babble:?}");
}
