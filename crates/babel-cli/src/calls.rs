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
use babel_media::setup::{KeyStep, Prepared, agreed_peer, key_steps, peer_setup};
use babel_proto::agree::{AgreeError, CalleeAgreement, CallerAgreement, GroupAgreement, Joiner};
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

/// The media of one call and what the key exchange settled for it.
struct MediaPlan<'a> {
    call: CallId,
    prepared: Prepared,
    peers: Vec<PeerSetup>,
    relay: &'a RelayGrant,
    /// The call's keys as they go on (joins, leaves) and its code.
    group: GroupAgreement,
}

/// Runs a call's media until it ends, following the call's events.
async fn run_media(
    client: &mut Client,
    events: &mut EventStream,
    plan: MediaPlan<'_>,
    audio: &AudioArgs,
    index: u32,
    show: bool,
) -> Outcome {
    let MediaPlan { call, prepared, peers, relay, mut group } = plan;
    let code = group.code().to_owned();
    let cfg = audio.config();
    let channel = client.connect_call(call).await.ok();
    let input = audio.input(cfg.frame)?;
    let output = audio.output(cfg.frame, index)?;
    let setup = prepared.into_call(peers, relay, channel, code);
    let (control, mut task) = spawn_call(setup, cfg, input, output);
    let start = tokio::time::Instant::now();
    let deadline = audio.duration.map(|d| start + Duration::from_secs_f64(d.max(0.0)));
    let live = show && std::io::stderr().is_terminal();
    // `q` hangs up whenever a person is at the keyboard, --json or not.
    let _keys = QuitKey::watch(control.stop.clone());
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut ended_by_server: Option<EndReason> = None;
    let mut broken: Option<AgreeError> = None;
    let mut pending = None;
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
                // Joins, leaves and moves; a second answer, or a reveal that
                // does not match or that nobody waits for, ends the call.
                Some(Ok(Event::Server(ev))) => {
                    for step in key_steps(&mut group, &mut pending, call, &ev) {
                        match step {
                            KeyStep::SendNonce(n) => {
                                let _ = client.call_nonce(call, n).await;
                            }
                            KeyStep::Media(c) => control.send(c),
                            KeyStep::Code(c) => {
                                if show {
                                    eprintln!("\nthe security code changed: {c} (read it to each other again)");
                                }
                                control.send(babel_media::engine::Control::Code(c));
                            }
                            KeyStep::End(e) => {
                                broken = Some(e);
                                control.stop.cancel();
                            }
                        }
                    }
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
    if let Some(e) = &broken {
        eprintln!("babel: the call was ended: {e}");
    }
    let why = match (ended_by_server, cause) {
        _ if broken.is_some() => "key_exchange_failed".to_owned(),
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
    let prepared = Prepared::new(client.addr()).await.map_err(anyhow::Error::from)?;
    let me = client.user_id().context("not logged in")?;
    let mut agreement = CallerAgreement::new(me, &prepared.keys);
    let started = client.call(contact, prepared.call_media()).await?;
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
    let call_id = started.call_id;
    // Bound to my key before I saw theirs; now theirs is in, I reveal mine.
    let agreed = match agreement.on_accepted(call_id, accepted.user.id, accepted.media.key.as_deref()) {
        Ok(a) => a,
        Err(e) => {
            let _ = client.hangup(call_id).await;
            return Err(Failure::Refused(format!("the call was ended: {e}")));
        }
    };
    let reveal = agreement.reveal().context("the key is revealed after the answer")?;
    if let Err(e) = client.call_key(call_id, reveal).await {
        let _ = client.hangup(call_id).await;
        return Err(e.into());
    }
    let peer = agreed_peer(&accepted, &agreed);
    if show {
        eprintln!("connected to {}; read the code on the status line to each other", accepted.user.name);
    }
    let group = GroupAgreement::two_party(call_id, me, me, accepted.user.id, &agreed);
    let plan = MediaPlan { call: call_id, prepared, peers: vec![peer], relay: &started.relay, group };
    run_media(&mut client, &mut events, plan, audio, 0, show).await
}

/// A newcomer's side of joining a group call after its `/answer`: waits
/// for every member's nonce, then reveals its key. `Err` with why the call
/// must end.
async fn join_group(
    client: &mut Client,
    events: &mut EventStream,
    call: CallId,
    joined: &babel_proto::CallJoined,
    mut joiner: Joiner,
) -> Result<GroupAgreement, String> {
    let members: Vec<(UserId, Option<&str>)> =
        joined.participants.iter().map(|p| (p.user.id, p.media.key.as_deref())).collect();
    joiner.on_joined(call, joined.epoch.0, &members);
    let wait = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match events.next().await {
                Some(Ok(Event::Server(ServerEvent::CallNonce(n)))) if n.call_id == call => {
                    if let Some(key) = joiner.on_nonce(n.id, &n.nonce) {
                        return Ok(key);
                    }
                }
                Some(Ok(Event::Server(ServerEvent::CallEnded(c, r)))) if c == call => {
                    return Err(format!("the call ended: {}", r.as_str()));
                }
                Some(Err(e)) => return Err(e.to_string()),
                None => return Err("the event stream ended".into()),
                _ => {}
            }
        }
    });
    let key = wait.await.unwrap_or_else(|_| Err("the others never answered my key commitment".into()))?;
    client.call_key(call, key).await.map_err(|e| e.to_string())?;
    joiner.into_group().ok_or_else(|| "the call's members are unknown".to_owned())
}

/// A callee's side of the key exchange after its `/answer`: waits for the
/// caller's key and checks it against the commitment. `Err` with why the
/// call must end.
async fn await_reveal(
    events: &mut EventStream,
    call: CallId,
    agreement: &mut CalleeAgreement,
) -> Result<babel_proto::agree::Agreed, String> {
    let wait = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match events.next().await {
                Some(Ok(Event::Server(ServerEvent::CallKey(k)))) if k.call_id == call => {
                    return agreement.on_reveal(k.id, &k.key).map_err(|e| e.to_string());
                }
                Some(Ok(Event::Server(ServerEvent::CallEnded(c, r)))) if c == call => {
                    return Err(format!("the call ended: {}", r.as_str()));
                }
                Some(Err(e)) => return Err(e.to_string()),
                None => return Err("the event stream ended".into()),
                _ => {}
            }
        }
    });
    wait.await.unwrap_or_else(|_| Err("the caller never revealed its key".into()))
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
        let prepared = Prepared::new(client.addr()).await.map_err(anyhow::Error::from)?;
        let call_id = incoming.call_id;
        // Rung into a two-party call: the caller must have committed to its
        // key, and mine goes out only now that I hold the commitment. Rung
        // into a group call: I commit, and reveal once every member answered.
        let me = client.user_id().context("not logged in")?;
        let mut agreement = None;
        let mut joiner = None;
        if incoming.participants.len() >= 2 {
            joiner = Some(Joiner::new(me, &prepared.keys));
        } else {
            let commit = incoming.media.key_commit.as_deref();
            match CalleeAgreement::on_incoming(call_id, incoming.caller.id, commit, me, &prepared.keys) {
                Ok(a) => agreement = Some(a),
                Err(e) => {
                    eprintln!("babel: refusing the call from {}: {e}", incoming.caller.name);
                    let _ = client.decline_call(call_id).await;
                    done.push(json!({ "call_id": call_id, "ended": "key_exchange_failed", "error": e.to_string() }));
                    continue;
                }
            }
        }
        let media = match (&agreement, &joiner) {
            (Some(a), _) => prepared.answer_media(a),
            (None, Some(j)) => prepared.join_media(j),
            (None, None) => continue,
        };
        let joined = match client.accept_call(call_id, media).await {
            Ok(j) => j,
            Err(e) => {
                if show {
                    eprintln!("could not answer: {e}");
                }
                continue;
            }
        };
        let settled = match (agreement.as_mut(), joiner) {
            (Some(a), _) => await_reveal(&mut events, call_id, a).await.map(|agreed| {
                let peers =
                    joined.participants.iter().filter(|p| p.user.id == agreed.peer).map(|p| agreed_peer(p, &agreed));
                (peers.collect(), GroupAgreement::two_party(call_id, me, agreed.peer, me, &agreed))
            }),
            (None, Some(j)) => match join_group(&mut client, &mut events, call_id, &joined, j).await {
                Ok(group) => Ok((joined.participants.iter().filter_map(peer_setup).collect(), group)),
                Err(e) => Err(e),
            },
            (None, None) => continue,
        };
        let (peers, group): (Vec<PeerSetup>, GroupAgreement) = match settled {
            Ok(x) => x,
            Err(why) => {
                eprintln!("babel: the call from {} was ended: {why}", incoming.caller.name);
                let _ = client.hangup(call_id).await;
                done.push(json!({ "call_id": call_id, "ended": "key_exchange_failed", "error": why }));
                continue;
            }
        };
        let idx = done.len() as u32;
        let plan = MediaPlan { call: call_id, prepared, peers, relay: &joined.relay, group };
        let stats = run_media(&mut client, &mut events, plan, audio, idx, show).await?;
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
    let mut a_agree = CallerAgreement::new(alice.user_id().context("alice")?, &pa.keys);
    let started = alice.call(b.id, pa.call_media()).await?;
    let incoming = loop {
        if let Some(Ok(Event::Server(ServerEvent::IncomingCall(c)))) = bob_events.next().await {
            break c;
        }
    };
    say(&format!("bob's phone rings: {} calling", incoming.caller.name));
    let mut b_agree = CalleeAgreement::on_incoming(
        started.call_id,
        incoming.caller.id,
        incoming.media.key_commit.as_deref(),
        b.id,
        &pb.keys,
    )
    .map_err(anyhow::Error::from)?;
    let joined = bob.accept_call(started.call_id, pb.answer_media(&b_agree)).await?;
    let accepted = loop {
        if let Some(Ok(Event::Server(ServerEvent::CallAccepted(j)))) = alice_events.next().await {
            break j.peer;
        }
    };
    let a_agreed = a_agree
        .on_accepted(started.call_id, accepted.user.id, accepted.media.key.as_deref())
        .map_err(anyhow::Error::from)?;
    alice.call_key(started.call_id, a_agree.reveal().context("reveal")?).await?;
    let b_agreed = await_reveal(&mut bob_events, started.call_id, &mut b_agree).await.map_err(anyhow::Error::msg)?;
    let phrase = demo_phrase(dir.path())?;
    let recording = std::env::temp_dir().join(format!("babel-demo-{}.wav", std::process::id()));
    let cfg = MediaConfig { noise_suppression: false, ..MediaConfig::default() };
    let a_setup = pa.into_call(
        vec![agreed_peer(&accepted, &a_agreed)],
        &started.relay,
        alice.connect_call(started.call_id).await.ok(),
        a_agreed.code(),
    );
    let b_setup = pb.into_call(
        joined.participants.iter().map(|p| agreed_peer(p, &b_agreed)).collect(),
        &joined.relay,
        bob.connect_call(started.call_id).await.ok(),
        b_agreed.code(),
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
