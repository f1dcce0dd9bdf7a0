//! `babel call`, `babel listen` and `babel demo`: signalling through
//! `babel-client`, media through `babel-media`.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use babel_client::{Client, Event, EventStream};
use babel_media::audio::{AudioInput, AudioOutput, BufferInput, RecordingOutput};
use babel_media::codec::{DEFAULT_BITRATE, FrameMs};
use babel_media::engine::{CallStats, EndCause, MediaConfig, PeerSetup, spawn_call};
use babel_media::setup::{Prepared, control_for, peer_setup};
use babel_proto::{CallId, EndReason, RelayGrant, ServerEvent, UserId};
use serde_json::json;

use crate::{Failure, Outcome};

/// Where a call's audio comes from and goes to, and codec settings.
#[derive(Debug, Clone, clap::Args)]
pub struct AudioArgs {
    /// Send this WAV file instead of the microphone; the call ends when it has been sent.
    #[arg(long)]
    input: Option<PathBuf>,
    /// Record what is heard to this WAV file instead of playing it.
    #[arg(long)]
    output: Option<PathBuf>,
    /// End the call after this many seconds.
    #[arg(long)]
    duration: Option<f64>,
    /// Microphone to use (a name from `babel devices`).
    #[arg(long)]
    input_device: Option<String>,
    /// Speaker to use (a name from `babel devices`).
    #[arg(long)]
    output_device: Option<String>,
    /// Frame length in ms: 20, or 10 for lower latency.
    #[arg(long, default_value_t = 20, value_parser = parse_frame_ms)]
    frame_ms: u32,
    /// Opus bitrate in bits/s.
    #[arg(long, default_value_t = DEFAULT_BITRATE)]
    bitrate: u32,
    /// Turn noise suppression off.
    #[arg(long)]
    no_noise_suppression: bool,
    /// Turn echo cancellation off (it never runs on a WAV --input).
    #[arg(long)]
    no_echo_cancellation: bool,
    /// Turn automatic microphone level off.
    #[arg(long)]
    no_auto_gain: bool,
    /// Keep the bitrate fixed, even on a congested path.
    #[arg(long)]
    fixed_bitrate: bool,
    /// Never show my address to the others: voice goes through the server's
    /// relay (or the call channel) only, never directly.
    #[arg(long)]
    relay_only: bool,
}

fn parse_frame_ms(s: &str) -> Result<u32, String> {
    match s {
        "10" => Ok(10),
        "20" => Ok(20),
        _ => Err("frames are 10 or 20 ms".into()),
    }
}

impl AudioArgs {
    fn config(&self) -> MediaConfig {
        MediaConfig {
            frame: if self.frame_ms < 20 { FrameMs::Ten } else { FrameMs::Twenty },
            bitrate: self.bitrate,
            noise_suppression: !self.no_noise_suppression,
            echo_cancellation: !self.no_echo_cancellation,
            auto_gain: !self.no_auto_gain,
            adapt_bitrate: !self.fixed_bitrate,
            ..MediaConfig::default()
        }
    }

    fn input(&self, frame: FrameMs) -> anyhow::Result<Box<dyn AudioInput>> {
        Ok(match &self.input {
            Some(p) => Box::new(BufferInput::from_wav(p)?),
            None => match babel_media::device::DeviceInput::open(self.input_device.as_deref(), frame.samples()) {
                Ok(d) => Box::new(d),
                // A named device that is not there is a mistake; no microphone
                // at all (a server, an answering machine) sends silence.
                Err(e) if self.input_device.is_some() => return Err(e.into()),
                Err(e) => {
                    eprintln!("babel: no microphone ({e}); sending silence");
                    Box::new(babel_media::audio::SilentInput)
                }
            },
        })
    }

    fn output(&self, frame: FrameMs, n: u32) -> anyhow::Result<Box<dyn AudioOutput>> {
        Ok(match &self.output {
            Some(p) if n == 0 => Box::new(RecordingOutput::to_wav(p)),
            Some(p) => {
                // One file per call after the first: name-2.wav, name-3.wav…
                let stem = p.file_stem().and_then(|s| s.to_str()).unwrap_or("call");
                let ext = p.extension().and_then(|s| s.to_str()).unwrap_or("wav");
                Box::new(RecordingOutput::to_wav(p.with_file_name(format!("{stem}-{}.{ext}", n + 1))))
            }
            None => Box::new(babel_media::device::DeviceOutput::open(self.output_device.as_deref(), frame.samples())?),
        })
    }
}

fn status_line(s: &CallStats, elapsed: Duration) -> String {
    format!(
        "\r{:02}:{:02}  path {:<7}  rtt {:>4}  loss {:>4.1}%  jitter {:>3} ms  mic {:>5.1} dB  code {}  (q: hang up) ",
        elapsed.as_secs() / 60,
        elapsed.as_secs() % 60,
        s.path.map_or("…", |p| p.as_str()),
        s.rtt_ms.map_or("-".to_owned(), |r| format!("{r}ms")),
        s.rx_loss_pct,
        s.jitter_ms,
        s.input_level_db,
        s.sas
    )
}

fn stats_json(call: CallId, s: &CallStats, cause: &str) -> serde_json::Value {
    json!({
        "call_id": call,
        "ended": cause,
        "path": s.path.map(|p| p.as_str()),
        "path_history": s.path_history.iter().map(|(t, p)| json!({"at_s": t.as_secs_f64(), "path": p.as_str()})).collect::<Vec<_>>(),
        "rtt_ms": s.rtt_ms,
        "loss_pct": s.loss_pct,
        "rx_loss_pct": s.rx_loss_pct,
        "jitter_ms": s.jitter_ms,
        "jitter_delay_ms": s.jitter_delay_ms,
        "bitrate": s.bitrate,
        "sent": s.sent,
        "received": s.received,
        "concealed": s.concealed,
        "fec_recovered": s.fec_recovered,
        "sas": s.sas,
    })
}

/// While a call runs on a terminal: `q` (or Ctrl-C) hangs up. The terminal
/// is in raw mode meanwhile and restored when this drops.
struct QuitKey {
    done: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl QuitKey {
    fn watch(stop: babel_media::engine::StopFlag) -> Option<QuitKey> {
        use crossterm::event::{Event as TermEvent, KeyCode, KeyEvent, KeyModifiers, poll, read};
        if !std::io::stdin().is_terminal() || crossterm::terminal::enable_raw_mode().is_err() {
            return None;
        }
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = done.clone();
        let thread = std::thread::spawn(move || {
            while !flag.load(std::sync::atomic::Ordering::SeqCst) {
                if !poll(Duration::from_millis(100)).unwrap_or(false) {
                    continue;
                }
                if let Ok(TermEvent::Key(KeyEvent { code, modifiers, .. })) = read() {
                    let ctrl_c = code == KeyCode::Char('c') && modifiers.contains(KeyModifiers::CONTROL);
                    if matches!(code, KeyCode::Char('q') | KeyCode::Char('Q')) || ctrl_c {
                        stop.cancel();
                    }
                }
            }
        });
        Some(QuitKey { done, thread: Some(thread) })
    }
}

impl Drop for QuitKey {
    fn drop(&mut self) {
        self.done.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = crossterm::terminal::disable_raw_mode();
    }
}

/// Runs a call's media until it ends, following the call's events.
#[allow(clippy::too_many_arguments)]
async fn run_media(
    client: &mut Client,
    events: &mut EventStream,
    call: CallId,
    prepared: Prepared,
    peers: Vec<PeerSetup>,
    relay: &RelayGrant,
    audio: &AudioArgs,
    index: u32,
    show: bool,
) -> Outcome {
    let cfg = audio.config();
    let channel = client.connect_call(call).await.ok();
    let input = audio.input(cfg.frame)?;
    let output = audio.output(cfg.frame, index)?;
    let setup = prepared.into_call(peers, relay, channel);
    let (control, mut task) = spawn_call(setup, cfg, input, output);
    let start = tokio::time::Instant::now();
    let deadline = audio.duration.map(|d| start + Duration::from_secs_f64(d.max(0.0)));
    let live = show && std::io::stderr().is_terminal();
    // `q` hangs up whenever a person is at the keyboard, --json or not.
    let _keys = QuitKey::watch(control.stop.clone());
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut ended_by_server: Option<EndReason> = None;
    let result = loop {
        tokio::select! {
            r = &mut task => break r,
            _ = tick.tick() => {
                if live {
                    eprint!("{}", status_line(&control.snapshot(), start.elapsed()));
                }
                if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
                    control.stop.cancel();
                }
            }
            _ = tokio::signal::ctrl_c() => control.stop.cancel(),
            ev = events.next() => match ev {
                Some(Ok(Event::Server(ServerEvent::CallEnded(c, reason)))) if c == call => {
                    ended_by_server = Some(reason);
                    control.stop.cancel();
                }
                Some(Ok(Event::Server(ev))) => {
                    if let Some(c) = control_for(call, &ev) { control.send(c); }
                }
                _ => {}
            },
        }
    };
    drop(_keys);
    if live {
        eprintln!();
    }
    if ended_by_server.is_none() {
        // We end it: tell the server (it may already be over).
        let _ = client.hangup(call).await;
    }
    let (stats, cause) = result.map_err(|e| anyhow::anyhow!("media task failed: {e}"))?.map_err(anyhow::Error::from)?;
    let why = match (ended_by_server, cause) {
        (Some(r), _) => r.as_str().to_owned(),
        (None, EndCause::InputEnded) => "input_ended".into(),
        (None, EndCause::Stopped) => "hangup".into(),
        (None, EndCause::PeerVanished) => "peer_vanished".into(),
    };
    Ok(stats_json(call, &stats, &why))
}

/// `babel call EMAIL`.
pub async fn call(mut client: Client, contact: UserId, audio: &AudioArgs, show: bool) -> Outcome {
    let mut events = client.events().await?;
    let prepared = Prepared::new(client.addr()).await.map_err(anyhow::Error::from)?.with_relay_only(audio.relay_only);
    let started = client.call(contact, prepared.media()).await?;
    if show {
        eprintln!("ringing…");
    }
    let accepted = tokio::time::timeout(Duration::from_secs(90), async {
        loop {
            match events.next().await {
                Some(Ok(Event::Server(ServerEvent::CallAccepted(j)))) if j.call_id == started.call_id => {
                    return Ok(j.peer);
                }
                Some(Ok(Event::Server(ServerEvent::CallEnded(c, r)))) if c == started.call_id => {
                    return Err(Failure::Refused(format!("the call ended: {}", r.as_str())));
                }
                Some(Err(e)) => return Err(e.into()),
                None => return Err(Failure::Other(anyhow::anyhow!("the event stream ended"))),
                _ => {}
            }
        }
    })
    .await
    .map_err(|_| Failure::Refused("nobody answered".into()))??;
    let peer = peer_setup(&accepted).ok_or_else(|| Failure::Refused("the other side has no voice key".into()))?;
    if show {
        eprintln!("connected to {}; read the code on the status line to each other", accepted.user.name);
    }
    run_media(&mut client, &mut events, started.call_id, prepared, vec![peer], &started.relay, audio, 0, show).await
}

/// `babel listen`.
pub async fn listen(
    mut client: Client,
    auto_answer: bool,
    calls: Option<u32>,
    audio: &AudioArgs,
    show: bool,
) -> Outcome {
    let mut events = client.events().await?;
    let mut done = Vec::new();
    if show {
        eprintln!("waiting for calls…");
    }
    while calls.is_none_or(|n| (done.len() as u32) < n) {
        let incoming = match events.next().await {
            Some(Ok(Event::Server(ServerEvent::IncomingCall(c)))) => c,
            Some(Err(e)) => return Err(e.into()),
            None => return Err(Failure::Other(anyhow::anyhow!("the event stream ended"))),
            _ => continue,
        };
        let answer = auto_answer
            || (std::io::stdin().is_terminal()
                && ask(&format!("Answer {} <{}>? [y/N] ", incoming.caller.name, incoming.caller.email)));
        if !answer {
            let _ = client.decline_call(incoming.call_id).await;
            continue;
        }
        let prepared =
            Prepared::new(client.addr()).await.map_err(anyhow::Error::from)?.with_relay_only(audio.relay_only);
        let joined = match client.accept_call(incoming.call_id, prepared.media()).await {
            Ok(j) => j,
            Err(e) => {
                if show {
                    eprintln!("could not answer: {e}");
                }
                continue;
            }
        };
        let peers: Vec<PeerSetup> = joined.participants.iter().filter_map(peer_setup).collect();
        let idx = done.len() as u32;
        let stats =
            run_media(&mut client, &mut events, incoming.call_id, prepared, peers, &joined.relay, audio, idx, show)
                .await?;
        if show {
            eprintln!("call with {} ended ({})", incoming.caller.name, stats["ended"]);
        }
        done.push(stats);
    }
    Ok(json!({ "calls": done }))
}

fn ask(question: &str) -> bool {
    eprint!("{question}");
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).is_ok() && line.trim().eq_ignore_ascii_case("y")
}

/// A phrase to send: spoken by espeak-ng when it is installed, else a
/// synthesized voice-like signal.
fn demo_phrase(dir: &std::path::Path) -> anyhow::Result<Vec<f32>> {
    let wav = dir.join("phrase.wav");
    let spoken = std::process::Command::new("espeak-ng")
        .args(["-w"])
        .arg(&wav)
        .arg("Hello from Babel. This call is encrypted end to end.")
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if spoken {
        return Ok(babel_media::audio::read_wav(&wav)?);
    }
    Ok((0..48_000 * 4)
        .map(|i| {
            let t = i as f32 / 48_000.0;
            let env = (std::f32::consts::PI * (t * 4.0).fract()).sin();
            let f0 = 120.0 + 30.0 * (t * 0.9).sin();
            (1..6).map(|h| (2.0 * std::f32::consts::PI * f0 * h as f32 * t).sin() / h as f32).sum::<f32>() * 0.25 * env
        })
        .collect())
}

/// `babel demo`: a server on loopback with a temporary database, two users
/// who become contacts, a call that plays a phrase and records it.
pub async fn demo(show: bool) -> Outcome {
    let dir = tempfile::tempdir().context("cannot make a temporary directory")?;
    let config = babel_server::Config {
        listen: "127.0.0.1:0".parse().context("address")?,
        db: dir.path().join("demo.db"),
        ..babel_server::Config::default()
    };
    let server = babel_server::RunningServer::start(&config).await.map_err(anyhow::Error::from)?;
    let addr = server.addr().to_string();
    let say = |m: &str| {
        if show {
            eprintln!("{m}");
        }
    };
    say(&format!("server on {addr} (temporary database)"));
    let mut alice = Client::connect(addr.clone()).await?;
    let mut bob = Client::connect(addr.clone()).await?;
    let pw = "demo-password-1";
    alice.create("alice@demo.babel", pw, Some("Alice")).await?;
    let b = bob.create("bob@demo.babel", pw, Some("Bob")).await?;
    alice.add_contact(&b.email).await?;
    bob.accept_contact(alice.user_id().context("alice")?).await?;
    say("alice and bob are contacts");
    let mut bob_events = bob.events().await?;
    let mut alice_events = alice.events().await?;
    let (pa, pb) = (
        Prepared::new(&addr).await.map_err(anyhow::Error::from)?,
        Prepared::new(&addr).await.map_err(anyhow::Error::from)?,
    );
    let started = alice.call(b.id, pa.media()).await?;
    let incoming = loop {
        if let Some(Ok(Event::Server(ServerEvent::IncomingCall(c)))) = bob_events.next().await {
            break c;
        }
    };
    say(&format!("bob's phone rings: {} calling", incoming.caller.name));
    let joined = bob.accept_call(started.call_id, pb.media()).await?;
    let accepted = loop {
        if let Some(Ok(Event::Server(ServerEvent::CallAccepted(j)))) = alice_events.next().await {
            break j.peer;
        }
    };
    let phrase = demo_phrase(dir.path())?;
    let recording = std::env::temp_dir().join(format!("babel-demo-{}.wav", std::process::id()));
    let cfg = MediaConfig { noise_suppression: false, ..MediaConfig::default() };
    let a_setup = pa.into_call(
        peer_setup(&accepted).into_iter().collect(),
        &started.relay,
        alice.connect_call(started.call_id).await.ok(),
    );
    let b_setup = pb.into_call(
        joined.participants.iter().filter_map(peer_setup).collect(),
        &joined.relay,
        bob.connect_call(started.call_id).await.ok(),
    );
    say(&format!("alice says a {:.1} s phrase; bob records it", phrase.len() as f32 / 48_000.0));
    let (_ca, ta) =
        spawn_call(a_setup, cfg.clone(), Box::new(BufferInput::new(phrase)), Box::new(RecordingOutput::new()));
    let (cb, tb) = spawn_call(
        b_setup,
        cfg,
        Box::new(babel_media::audio::SilentInput),
        Box::new(RecordingOutput::to_wav(&recording)),
    );
    let (a_stats, _) = ta.await.map_err(|e| anyhow::anyhow!("{e}"))?.map_err(anyhow::Error::from)?;
    let _ = alice.hangup(started.call_id).await;
    cb.stop.cancel();
    let (b_stats, _) = tb.await.map_err(|e| anyhow::anyhow!("{e}"))?.map_err(anyhow::Error::from)?;
    say(&format!(
        "done: path {}, rtt {} ms, loss {:.1} %, {} frames received, short authentication string {} (same on both sides: {})",
        a_stats.path.map_or("none", |p| p.as_str()),
        a_stats.rtt_ms.unwrap_or_default(),
        b_stats.rx_loss_pct,
        b_stats.received,
        a_stats.sas,
        a_stats.sas == b_stats.sas
    ));
    say(&format!("bob's recording: {}", recording.display()));
    server.shutdown().await;
    Ok(json!({
        "caller": stats_json(started.call_id, &a_stats, "input_ended"),
        "callee": stats_json(started.call_id, &b_stats, "hangup"),
        "recording": recording,
    }))
}
