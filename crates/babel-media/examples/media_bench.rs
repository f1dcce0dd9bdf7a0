//! Media engine benchmark: CPU per call and software latency.
//!
//! `cargo run --release -p babel-media --example media_bench`
//!
//! 1. CPU: one speaker's work per call, frame by frame on one thread: echo
//!    cancellation and gain control (fed the decoded far end as the
//!    loudspeaker), noise suppression, Opus encode, seal, open, jitter
//!    buffer, Opus decode, for 20 s of audio. Reported as % of one core
//!    (time spent / audio time), with each stage's share, and the same run
//!    without echo/gain and without noise suppression as baselines.
//! 2. Latency: two engines on loopback (direct path); a click goes into
//!    one's microphone, and the time from when the engine reads the click
//!    to when the other engine hands it to its speaker is measured, plus one
//!    frame of capture framing (a microphone delivers a frame once it is
//!    full). A real device adds its own buffers on both ends. For 20 ms and
//!    10 ms frames.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use babel_media::audio::{AudioInput, AudioOutput};
use babel_media::codec::{DEFAULT_BITRATE, FrameMs, VoiceDecoder, VoiceEncoder};
use babel_media::denoise::Tuning;
use babel_media::echo::{Aec3Config, EchoLevel, shipped_aec3, webrtc_aec3};
use babel_media::engine::{CallSetup, MediaConfig, PeerSetup, spawn_call};
use babel_media::jitter::{JitterBuffer, JitterConfig, Playout};
use babel_media::keys::CallKeys;
use babel_media::ns_stage::{Stage, Suppressor, WebRtcLevel};
use babel_media::packet::{self, KIND_OPUS, VoiceFrame};
use babel_media::process::CaptureChain;
use babel_proto::UserId;

fn speechlike(n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| {
            let t = i as f32 / 48_000.0;
            let env = (std::f32::consts::PI * (t * 4.0).fract()).sin();
            let mut s = 0.0;
            for h in 1..6 {
                s += (2.0 * std::f32::consts::PI * 130.0 * h as f32 * t).sin() / h as f32;
            }
            0.25 * env * s + 0.01 * (((i * 7919) % 1000) as f32 / 1000.0 - 0.5)
        })
        .collect()
}

#[derive(Default)]
struct Stages {
    echo: Duration,
    ns: Duration,
    encode: Duration,
    crypto: Duration,
    jitter: Duration,
    decode: Duration,
}

/// `aec3`: echo cancellation with that configuration and gain control, or
/// (`None`) neither.
fn cpu_run(noise_suppression: Option<Tuning>, aec3: Option<Aec3Config>, audio: &[f32]) -> (Duration, Stages) {
    let frame = FrameMs::Twenty;
    let mut chain =
        CaptureChain::with_tuning(noise_suppression.is_some(), noise_suppression.unwrap_or(Tuning::SHIPPED));
    let gain = aec3.is_some();
    let mut echo = EchoLevel::with_aec3(aec3, gain);
    let mut far = vec![0.0f32; frame.samples()];
    let mut enc = VoiceEncoder::new(DEFAULT_BITRATE, frame).expect("encoder");
    let mut dec = VoiceDecoder::new(frame).expect("decoder");
    let a = CallKeys::from_secret([1; 32]);
    let b = CallKeys::from_secret([2; 32]);
    let key = a.pairwise(&b.public_b64()).expect("keys").my_sender_key();
    let mut jb = JitterBuffer::new(JitterConfig::default());
    let mut st = Stages::default();
    let total = Instant::now();
    for (k, chunk) in audio.chunks_exact(frame.samples()).enumerate() {
        let mut pcm = chunk.to_vec();
        let t = Instant::now();
        echo.render(&far);
        echo.capture(&mut pcm);
        st.echo += t.elapsed();
        let t = Instant::now();
        chain.process(&mut pcm);
        st.ns += t.elapsed();
        let t = Instant::now();
        let opus = enc.encode(&pcm).expect("encode");
        st.encode += t.elapsed();
        let t = Instant::now();
        let f = VoiceFrame {
            kind: KIND_OPUS,
            seq: k as u32,
            timestamp: (k * 960) as u32,
            packets: vec![opus],
            offsets: Vec::new(),
        };
        let sealed = packet::seal(&key, &f).expect("seal");
        let opened = packet::open(&key, &sealed).expect("open");
        st.crypto += t.elapsed();
        let t = Instant::now();
        jb.push(k as u32, k as u64 * 20, opened.packets[0].clone(), k as u64 * 20);
        let p = jb.pop();
        st.jitter += t.elapsed();
        let t = Instant::now();
        if let Playout::Frame(p) = p {
            far = dec.decode(&p).expect("decode");
        }
        st.decode += t.elapsed();
    }
    (total.elapsed(), st)
}

/// Plays a click every second and notes when each frame holding one is read.
struct ClickInput {
    pos: usize,
    clicks: Arc<Mutex<Vec<(Instant, usize)>>>,
}

impl AudioInput for ClickInput {
    fn read(&mut self, frame: &mut [f32]) -> bool {
        frame.fill(0.0);
        for (i, s) in frame.iter_mut().enumerate() {
            let n = self.pos + i;
            if n % 48_000 < 240 {
                // A 5 ms burst of a 1 kHz tone: survives the codec.
                *s = 0.8 * (2.0 * std::f32::consts::PI * 1000.0 * (n % 48_000) as f32 / 48_000.0).sin();
                if n % 48_000 == 0 {
                    self.clicks.lock().expect("lock").push((Instant::now(), i));
                }
            }
        }
        self.pos += frame.len();
        self.pos < 48_000 * 8
    }
}

/// Notes when each frame with a click onset is handed to the speaker.
struct ClickOutput {
    heard: Arc<Mutex<Vec<(Instant, usize)>>>,
    quiet_for: usize,
}

impl AudioOutput for ClickOutput {
    fn write(&mut self, frame: &[f32]) {
        for (i, s) in frame.iter().enumerate() {
            if s.abs() > 0.2 && self.quiet_for > 24_000 {
                self.heard.lock().expect("lock").push((Instant::now(), i));
                self.quiet_for = 0;
            } else if s.abs() > 0.2 {
                self.quiet_for = 0;
            } else {
                self.quiet_for += 1;
            }
        }
    }
}

async fn latency(frame: FrameMs, echo_and_gain: bool) -> Vec<f64> {
    let sa = tokio::net::UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let sb = tokio::net::UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let (ka, kb) = (CallKeys::generate().expect("keys"), CallKeys::generate().expect("keys"));
    let a_peer = PeerSetup { user: UserId(2), key: kb.public_b64(), candidates: vec![sb.local_addr().expect("addr")] };
    let b_peer = PeerSetup { user: UserId(1), key: ka.public_b64(), candidates: vec![sa.local_addr().expect("addr")] };
    let cfg = MediaConfig {
        frame,
        noise_suppression: false,
        echo_cancellation: echo_and_gain,
        auto_gain: echo_and_gain,
        ..MediaConfig::default()
    };
    let clicks = Arc::new(Mutex::new(Vec::new()));
    let heard = Arc::new(Mutex::new(Vec::new()));
    let (_ca, ta) = spawn_call(
        CallSetup {
            keys: ka,
            peers: vec![a_peer],
            relay: None,
            channel: None,
            socket: sa,
            code: String::new(),
            relay_only: false,
        },
        cfg.clone(),
        Box::new(ClickInput { pos: 1, clicks: clicks.clone() }),
        Box::new(ClickOutput { heard: Arc::default(), quiet_for: 0 }),
    );
    let (cb, tb) = spawn_call(
        CallSetup {
            keys: kb,
            peers: vec![b_peer],
            relay: None,
            channel: None,
            socket: sb,
            code: String::new(),
            relay_only: false,
        },
        cfg,
        Box::new(babel_media::audio::SilentInput),
        Box::new(ClickOutput { heard: heard.clone(), quiet_for: 0 }),
    );
    let _ = ta.await;
    cb.stop.cancel();
    let _ = tb.await;
    let sr = 48_000.0;
    let c = clicks.lock().expect("lock").clone();
    let h = heard.lock().expect("lock").clone();
    // Skip the first second (paths and jitter buffer settling).
    c.iter()
        .skip(1)
        .filter_map(|(tc, ic)| {
            let (th, ih) = h.iter().find(|(th, _)| *th > *tc)?;
            let capture = *tc + Duration::from_secs_f64(*ic as f64 / sr);
            let play = *th + Duration::from_secs_f64(*ih as f64 / sr);
            Some(play.saturating_duration_since(capture).as_secs_f64() * 1000.0)
        })
        .collect()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!("machine: {cores} cores");
    let secs = 20.0;
    let audio = speechlike((48_000.0 * secs) as usize);
    let one_pass = Tuning { stage: Stage::Rnnoise, ..Tuning::SHIPPED };
    let two_passes = Tuning { stage: Stage::After(Suppressor::Rnnoise), ..Tuning::SHIPPED };
    let webrtc_after = Tuning { stage: Stage::After(Suppressor::WebRtc(WebRtcLevel::Low)), ..Tuning::SHIPPED };
    for (label, ns, echo) in [
        (
            "full pipeline (echo cancellation, gain control, noise suppression)",
            Some(Tuning::SHIPPED),
            Some(shipped_aec3()),
        ),
        ("the same, noise suppression as RNNoise alone (gated)", Some(one_pass), Some(shipped_aec3())),
        ("the same, RNNoise twice (gated)", Some(two_passes), Some(shipped_aec3())),
        ("the same, RNNoise then WebRTC's suppressor, low (gated)", Some(webrtc_after), Some(shipped_aec3())),
        ("the same with WebRTC's AEC3 configuration (shipped before)", Some(Tuning::SHIPPED), Some(webrtc_aec3())),
        ("without echo cancellation and gain control", Some(Tuning::SHIPPED), None),
        ("baseline: none of the three", None, None),
    ] {
        let (total, st) = cpu_run(ns, echo, &audio);
        let pct = |d: Duration| 100.0 * d.as_secs_f64() / secs;
        println!(
            "{label}: {:.2} % of one core per call (echo+gain {:.2}, ns {:.2}, encode {:.2}, seal+open {:.3}, jitter {:.3}, decode {:.2})",
            pct(total),
            pct(st.echo),
            pct(st.ns),
            pct(st.encode),
            pct(st.crypto),
            pct(st.jitter),
            pct(st.decode)
        );
    }
    for (frame, echo) in [(FrameMs::Twenty, true), (FrameMs::Ten, true), (FrameMs::Ten, false)] {
        let mut l = latency(frame, echo).await;
        l.sort_by(f64::total_cmp);
        if l.is_empty() {
            println!("{} ms frames: no click came through", frame.ms());
            continue;
        }
        let median = l[l.len() / 2];
        // A microphone hands over a frame only once it is full: the first
        // sample of a frame waited one frame before the engine saw it.
        let framing = f64::from(frame.ms());
        println!(
            "{} ms frames{}: mouth to ear in software {:.1} ms = {framing:.0} ms capture framing + {:.1} ms engine \
             (median; engine min {:.1}, max {:.1}; {} clicks)",
            frame.ms(),
            if echo { "" } else { ", echo cancellation and gain control off" },
            median + framing,
            median,
            l[0],
            l[l.len() - 1],
            l.len()
        );
    }
}
