//! The real-voice corpus: each default speaker's prompts, decoded from
//! Debian's asterisk-core-sounds-*-g722 packages with ffmpeg, make one
//! recording long enough for PESQ (≥ 8 s, with pauses). `scripts/setup.sh`
//! installs the packages; without them this fails and names the package.
#![allow(clippy::unwrap_used)]

use babel_tools::quality::voices::{self, DEFAULT_SPEAKERS, MIN_SECS};

#[test]
fn the_real_voices_load_and_are_long_enough() {
    let mut seen: Vec<Vec<f32>> = Vec::new();
    let mut names = Vec::new();
    for id in DEFAULT_SPEAKERS {
        let s = voices::speaker(id).unwrap();
        let (speech, prompts) = voices::load(&s).unwrap_or_else(|e| panic!("{}: {e}", s.id));
        let secs = speech.len() as f64 / 48_000.0;
        assert!(secs >= MIN_SECS, "{}: {secs:.1} s", s.id);
        assert!(secs <= 14.0, "{}: {secs:.1} s, longer than P.862 wants", s.id);
        assert!(prompts.len() >= 2, "{}: sentences joined: {prompts:?}", s.id);
        // Speech with pauses between the prompts, as P.862 wants.
        let act = voices::activity(&speech);
        eprintln!("{}: {secs:.1} s, activity {act:.2}, prompts {prompts:?}", s.label());
        assert!((0.4..0.92).contains(&act), "{}: speech activity {act:.2}", s.id);
        let peak = speech.iter().fold(0.0f32, |m, x| m.max(x.abs()));
        assert!((peak - 0.5).abs() < 1e-3, "{}: peak {peak}", s.id);
        assert!(seen.iter().all(|other| other[..48_000 * 4] != speech[..48_000 * 4]), "{}: same audio", s.id);
        seen.push(speech);
        names.push(s.name);
    }
    names.sort_unstable();
    names.dedup();
    assert!(names.len() >= 2, "at least two different real speakers: {names:?}");
}
