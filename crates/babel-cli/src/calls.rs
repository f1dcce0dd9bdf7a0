//! `babel call`, `babel listen` and `babel demo`: signalling through
//! `babel-client`, media through `babel-media`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use babel_call::{Answering, CallError, CallEvent, Outgoing, Settled};
use babel_client::{Client, Event, EventStream};
use babel_media::audio::{AudioInput, AudioOutput, BufferInput, RecordingOutput};
use babel_media::codec::{DEFAULT_BITRATE, FrameMs};
use babel_media::device::{FallbackOutput, OutputNotice};
use babel_media::engine::{CallStats, EndCause, MediaConfig};
use babel_proto::{CallId, EndReason, ServerEvent, UserId};
use serde_json::json;

use crate::{Done, Failure, Outcome, term};

/// Where a call's audio comes from and goes to, and codec settings.
#[derive(Debug, Clone, clap::Args)]
pub struct AudioArgs {
    /// Send this WAV file instead of the microphone; the call ends when it has been sent.
    #[arg(long)]
    input: Option<PathBuf>,
    /// Record what is heard to this WAV file instead of playing it
    /// (`listen`: later calls go to NAME-2.wav, NAME-3.wav…, as it says).
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
    /// Opus bitrate in bits/s (6000 to 128000).
    #[arg(long, default_value_t = DEFAULT_BITRATE, value_parser = parse_bitrate)]
    bitrate: u32,
    /// Turn noise suppression off (on by default, it does what the noise
    /// calls for: RNNoise mixed in by the measured speech-to-noise ratio,
    /// nothing and no delay on a clean microphone).
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

/// What [`AudioArgs::check`] found, kept for the calls.
#[derive(Debug, Default, Clone)]
pub struct Ready {
    /// The `--input` file, read once before anyone is rung.
    input: Option<Vec<f32>>,
}

/// Opus in CBR is usable from 6 to 128 kbit/s for one voice.
fn parse_bitrate(s: &str) -> Result<u32, String> {
    let v: u32 = s.parse().map_err(|_| format!("`{s}` is not a number of bits per second"))?;
    if (6_000..=128_000).contains(&v) {
        Ok(v)
    } else {
        Err(format!("{v} bit/s is outside 6000 to 128000 (e.g. 32000)"))
    }
}

/// Whether `path` can be written (an existing file kept as it is; a new one
/// not left behind).
fn writable(path: &Path) -> Result<(), String> {
    if path.is_dir() {
        return Err("is a directory".into());
    }
    if path.exists() {
        return std::fs::OpenOptions::new().append(true).open(path).map(|_| ()).map_err(|e| e.to_string());
    }
    std::fs::OpenOptions::new().write(true).create_new(true).open(path).map_err(|e| e.to_string())?;
    let _ = std::fs::remove_file(path);
    Ok(())
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

    /// Finds this side's mistakes before anyone is rung: an input that is
    /// not a readable WAV file, an output that cannot be written, a device
    /// name that is not there.
    pub fn check(&self) -> Result<Ready, Failure> {
        let usage = |m: String| Failure::Usage(m);
        let input = match &self.input {
            Some(p) => Some(
                babel_media::audio::read_wav(p)
                    .map_err(|e| usage(format!("--input {}: not a WAV file babel can read ({e})", p.display())))?,
            ),
            None => None,
        };
        if let Some(p) = &self.output {
            writable(p).map_err(|e| usage(format!("--output {}: cannot write there ({e})", p.display())))?;
        }
        let names = |list: Result<Vec<babel_media::device::DeviceInfo>, babel_media::device::DeviceError>| {
            list.map(|l| l.into_iter().map(|d| d.name).collect::<Vec<_>>()).unwrap_or_default()
        };
        if let (Some(want), None) = (&self.input_device, &self.input) {
            let have = names(babel_media::device::list_inputs());
            if !have.contains(want) {
                return Err(usage(format!("no microphone named `{want}`; there are: {}", list_or_none(&have))));
            }
        }
        if let (Some(want), None) = (&self.output_device, &self.output) {
            let have = names(babel_media::device::list_outputs());
            if !have.contains(want) {
                return Err(usage(format!("no speaker named `{want}`; there are: {}", list_or_none(&have))));
            }
        }
        Ok(Ready { input })
    }

    fn input(&self, ready: &Ready, frame: FrameMs, show: bool) -> anyhow::Result<Box<dyn AudioInput>> {
        Ok(match &ready.input {
            Some(samples) => Box::new(BufferInput::new(samples.clone())),
            None => match babel_media::device::DeviceInput::open(self.input_device.as_deref(), frame.samples()) {
                Ok(d) => Box::new(d),
                // A named device that is not there is a mistake; no microphone
                // at all (a server, an answering machine) sends silence.
                Err(e) if self.input_device.is_some() => return Err(e.into()),
                Err(e) => {
                    if show {
                        term::say(&format!("babel: no microphone ({e}); sending silence"));
                    }
                    Box::new(babel_media::audio::SilentInput)
                }
            },
        })
    }

    /// The file call number `n` (from 0) of a `listen` records to: the
    /// `--output` name, then name-2.wav, name-3.wav…
    fn recording(&self, n: u32) -> Option<PathBuf> {
        let p = self.output.as_ref()?;
        if n == 0 {
            return Some(p.clone());
        }
        let stem = p.file_stem().and_then(|s| s.to_str()).unwrap_or("call");
        let ext = p.extension().and_then(|s| s.to_str()).unwrap_or("wav");
        Some(p.with_file_name(format!("{stem}-{}.{ext}", n + 1)))
    }

    fn output(&self, frame: FrameMs, n: u32, show: bool) -> Box<dyn AudioOutput> {
        match self.recording(n) {
            Some(p) => Box::new(RecordingOutput::to_wav(p)),
            // No speaker never ends a call: the sound is discarded, and a
            // speaker that appears later is picked up.
            None => Box::new(FallbackOutput::device(
                self.output_device.as_deref(),
                frame.samples(),
                Box::new(move |n| {
                    if show {
                        match n {
                            OutputNotice::Lost(why) => term::say(&format!(
                                "babel: no speaker ({why}); the other side's voice is not played until one appears"
                            )),
                            OutputNotice::Found => term::say("babel: speaker found; playing the call"),
                        }
                    }
                }),
            )),
        }
    }
}

fn list_or_none(names: &[String]) -> String {
    if names.is_empty() { "none".into() } else { names.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ") }
}

/// The status line's fields, most important first: what is dropped when
/// the terminal is narrow goes from the end of this list. The code is one
/// field, never split.
fn status_line(s: &CallStats, elapsed: Duration, width: usize, hint: &str) -> String {
    let time = format!("{:02}:{:02}", elapsed.as_secs() / 60, elapsed.as_secs() % 60);
    let code = format!("code {}", s.sas);
    let path = format!("path {}", s.path.map_or("…", |p| p.as_str()));
    let rtt = format!("rtt {}", s.rtt_ms.map_or("-".to_owned(), |r| format!("{r} ms")));
    let loss = format!("loss {:.1}%", s.rx_loss_pct);
    let jitter = format!("jitter {} ms", s.jitter_ms);
    let mic = format!("mic {:.0} dB", s.input_level_db);
    // (display position, field) by importance.
    let by_importance: [(u8, &str); 8] =
        [(6, &code), (0, &time), (7, hint), (1, &path), (2, &rtt), (3, &loss), (4, &jitter), (5, &mic)];
    let fits = |n: usize| {
        let mut kept: Vec<(u8, &str)> = by_importance[..n].iter().copied().filter(|(_, f)| !f.is_empty()).collect();
        kept.sort_by_key(|(pos, _)| *pos);
        kept.into_iter().map(|(_, f)| f).collect::<Vec<_>>().join("  ")
    };
    // The last column stays free: writing into it wraps on some terminals.
    for n in (1..=by_importance.len()).rev() {
        let line = fits(n);
        if line.chars().count() < width {
            return line;
        }
    }
    // Narrower than the code alone: the code all the same (unsplit).
    code
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

/// Why a call ended, for a person.
fn ended_words(why: &str) -> &'static str {
    match why {
        "hangup" => "hung up",
        "you_hung_up" => "you hung up",
        "input_ended" => "the file was sent",
        "duration" => "the --duration was reached",
        "peer_vanished" => "nothing more came from the other side",
        "declined" => "declined",
        "timeout" => "nobody answered",
        "disconnected" => "the other side lost its connection",
        "answered_elsewhere" => "answered on another device",
        "logout" => "the other side logged out",
        "deleted" => "the other side's account was deleted",
        "key_exchange_failed" => "the key exchange failed (someone may be in the middle)",
        _ => "ended",
    }
}

/// A sentence about a finished call.
fn call_summary(with: &str, stats: &CallStats, why: &str, length: Duration) -> String {
    let mut paths: Vec<&str> = Vec::new();
    for (_, p) in &stats.path_history {
        if paths.last() != Some(&p.as_str()) {
            paths.push(p.as_str());
        }
    }
    let path = if paths.is_empty() {
        "no voice path was found".to_owned()
    } else {
        format!("voice went {}", paths.join(", then "))
    };
    format!(
        "Call with {with} ended: {} after {:02}:{:02}; {path}; {:.1} % lost; code {}.",
        ended_words(why),
        length.as_secs() / 60,
        length.as_secs() % 60,
        stats.rx_loss_pct,
        stats.sas
    )
}

/// How a call's media ended.
struct Ended {
    json: serde_json::Value,
    text: String,
    /// Ctrl-C: the person wants the whole command to stop.
    interrupted: bool,
}

/// Runs a call's media until it ends, following the call's events and the
/// person's keys: `q` hangs up, Ctrl-C hangs up and stops, `i` invites.
#[allow(clippy::too_many_arguments)]
async fn run_media(
    client: &mut Client,
    events: &mut EventStream,
    keys: &mut term::Input,
    settled: Settled,
    audio: &AudioArgs,
    ready: &Ready,
    index: u32,
    names: &mut HashMap<UserId, String>,
    with: &str,
    show: bool,
) -> Result<Ended, Failure> {
    let call = settled.call_id();
    let cfg = audio.config();
    let channel = settled.open_channel(client).await;
    let input = audio.input(ready, cfg.frame, show)?;
    let recording = audio.recording(index);
    if let (Some(p), true) = (&recording, show) {
        term::say(&format!("recording to {}", p.display()));
    }
    let output = audio.output(cfg.frame, index, show);
    let mut session = settled.start_with_channel(channel, cfg, input, output);
    let start = tokio::time::Instant::now();
    let deadline = audio.duration.map(|d| start + Duration::from_secs_f64(d.max(0.0)));
    let live = show && term::stderr_is_terminal();
    let hint = if keys.interactive() { "q: hang up, i: invite" } else { "" };
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut why_local: Option<&str> = None;
    let mut interrupted = false;
    // The invite prompt, while one is typed.
    let mut typing: Option<String> = None;
    loop {
        tokio::select! {
            () = session.media_ended() => break,
            _ = tick.tick() => {
                if live {
                    match &typing {
                        Some(t) => term::status(&format!("invite (email, Enter: ring, Esc: cancel): {t}")),
                        None => term::status(&status_line(&session.snapshot(), start.elapsed(), term::width(), hint)),
                    }
                }
                if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
                    why_local = Some("duration");
                    session.hang_up();
                }
            }
            key = keys.next() => match (key, typing.as_mut()) {
                (term::Key::Interrupt, _) => {
                    interrupted = true;
                    why_local = Some("you_hung_up");
                    session.hang_up();
                }
                (term::Key::Escape, Some(_)) => typing = None,
                (term::Key::Enter, Some(t)) => {
                    let email = std::mem::take(t);
                    typing = None;
                    invite(client, call, &email, names, show).await;
                }
                (term::Key::Backspace, Some(t)) => {
                    t.pop();
                }
                (term::Key::Quit, Some(t)) => t.push('q'),
                (term::Key::Char(c), Some(t)) => t.push(c),
                (term::Key::Quit, None) => {
                    why_local = Some("you_hung_up");
                    session.hang_up();
                }
                (term::Key::Char('i' | 'I'), None) => typing = Some(String::new()),
                _ => {}
            },
            ev = events.next() => match ev {
                // The call's end; joins, leaves and moves; a second answer,
                // or a reveal that does not match or that nobody waits for,
                // ends the call.
                Some(Ok(Event::Server(ev))) => {
                    if show {
                        match &ev {
                            ServerEvent::ParticipantJoined(j) if j.call_id == call => {
                                names.insert(j.peer.user.id, j.peer.user.name.clone());
                                term::say(&format!("{} joined the call", j.peer.user.name));
                            }
                            ServerEvent::CallAccepted(j) if j.call_id == call => {
                                names.insert(j.peer.user.id, j.peer.user.name.clone());
                                term::say(&format!("{} joined the call", j.peer.user.name));
                            }
                            ServerEvent::ParticipantLeft(c, id, _) if *c == call => {
                                term::say(&format!("{} left the call", name_of(names, *id)));
                            }
                            ServerEvent::CallDeclined(c, id) if *c == call => {
                                term::say(&format!("{} did not join", name_of(names, *id)));
                            }
                            _ => {}
                        }
                    }
                    for what in session.on_event(client, &ev).await {
                        if let (CallEvent::CodeChanged(c), true) = (what, show) {
                            term::say(&format!("the security code changed: {c} (read it to each other again)"));
                        }
                    }
                }
                Some(Ok(Event::Disconnected)) if show => {
                    term::say("babel: connection to the server lost; reconnecting (the call goes on)…");
                }
                Some(Ok(Event::Reconnected)) if show => term::say(&term::connected_again(events)),
                _ => {}
            },
        }
    }
    if live {
        term::say("");
    }
    let (ended_by_server, broken) = (session.ended_by_server(), session.broken().cloned());
    // Unless the server ended it, we tell it (it may already be over).
    let (stats, cause) = session
        .end(client)
        .await
        .map_err(|e| anyhow::anyhow!("media task failed: {e}"))?
        .map_err(anyhow::Error::from)?;
    // Said even under --json (on stderr): a tampered exchange must be seen.
    if let Some(e) = &broken {
        term::say(&format!("babel: the call was ended: {e}"));
    }
    let why = match (ended_by_server, why_local, cause) {
        _ if broken.is_some() => "key_exchange_failed",
        (Some(r), _, _) => r.as_str(),
        (None, Some(w), _) => w,
        (None, None, EndCause::InputEnded) => "input_ended",
        (None, None, EndCause::Stopped) => "hangup",
        (None, None, EndCause::PeerVanished) => "peer_vanished",
    };
    let length = start.elapsed();
    let mut text = call_summary(with, &stats, why, length);
    let mut json = stats_json(call, &stats, why);
    // Only a regular file is ever removed (`--output /dev/null` is not).
    if let Some(p) = recording.filter(|p| std::fs::symlink_metadata(p).is_ok_and(|m| m.is_file())) {
        // A call in which nothing was heard (a call that failed, a silent
        // other side) leaves no recording behind: not one sample of it
        // reaches -60 dBFS.
        let heard = babel_media::audio::read_wav(&p).is_ok_and(|s| s.iter().any(|x| x.abs() >= 0.001));
        if !heard {
            let _ = std::fs::remove_file(&p);
            text.push_str(&format!(" Nothing was heard, so {} was not kept.", p.display()));
        } else {
            text.push_str(&format!(" Recorded to {}.", p.display()));
            json["recording"] = json!(p);
        }
    }
    Ok(Ended { json, text, interrupted })
}

fn name_of(names: &HashMap<UserId, String>, id: UserId) -> String {
    names.get(&id).cloned().unwrap_or_else(|| format!("user {id}"))
}

/// `invite EMAIL` during a call: rings a contact into it.
async fn invite(client: &mut Client, call: CallId, email: &str, names: &mut HashMap<UserId, String>, show: bool) {
    let say = |m: String| {
        if show {
            term::say(&m);
        }
    };
    let email = match crate::email_arg(email) {
        Ok(e) => e,
        Err(e) => return say(format!("babel: {e}")),
    };
    let id = match crate::contact_id_by_email(client, &email, false).await {
        Ok(id) => id,
        Err(Failure::Refused(r) | Failure::Usage(r) | Failure::Unreachable(r)) => return say(format!("babel: {r}")),
        Err(Failure::Other(e)) => return say(format!("babel: {e:#}")),
    };
    match client.invite(call, id).await {
        Ok(()) => {
            names.insert(id, email.clone());
            say(format!("ringing {email} into the call…"));
        }
        Err(e) => say(format!("babel: could not invite {email}: {}", e.refusal().unwrap_or(&e.to_string()))),
    }
}

/// `babel call EMAIL`.
pub async fn call(
    mut client: Client,
    contact: UserId,
    email: &str,
    audio: &AudioArgs,
    ready: Ready,
    show: bool,
) -> Outcome {
    let mut events = client.events().await?;
    let mut keys = term::Input::start();
    let ringing = match Outgoing::place(&mut client, contact, audio.relay_only).await {
        Ok(r) => r,
        Err(CallError::Client(e)) => return Err(e.into()),
        Err(CallError::NotSignedIn) => return Err(anyhow::anyhow!("not logged in").into()),
        Err(e) => return Err(anyhow::Error::from(e).into()),
    };
    let call_id = ringing.call_id();
    if show {
        let hint = if keys.interactive() { " (q: cancel)" } else { "" };
        term::say(&format!("ringing {email}…{hint}"));
    }
    let ring_deadline = tokio::time::sleep(Duration::from_secs(90));
    tokio::pin!(ring_deadline);
    let accepted = loop {
        tokio::select! {
            ev = events.next() => match ev {
                Some(Ok(Event::Server(ServerEvent::CallAccepted(j)))) if j.call_id == call_id => break j.peer,
                Some(Ok(Event::Server(ServerEvent::CallEnded(c, r)))) if c == call_id => {
                    let what = match r {
                        EndReason::Declined => format!("{email} declined the call"),
                        EndReason::Timeout => format!("{email} did not answer"),
                        other => format!("the call ended before it was answered: {}", ended_words(other.as_str())),
                    };
                    return Err(Failure::Refused(what));
                }
                Some(Ok(Event::Disconnected)) if show => term::say("babel: connection to the server lost; reconnecting…"),
                Some(Err(e)) => return Err(e.into()),
                None => return Err(Failure::Other(anyhow::anyhow!("the event stream ended"))),
                _ => {}
            },
            key = keys.next() => {
                if matches!(key, term::Key::Quit | term::Key::Interrupt | term::Key::Escape) {
                    let _ = client.hangup(call_id).await;
                    return Ok(Done::new(
                        json!({"call_id": call_id, "ended": "cancelled"}),
                        format!("Cancelled the call to {email} before it was answered."),
                    ));
                }
            }
            () = &mut ring_deadline => {
                let _ = client.hangup(call_id).await;
                return Err(Failure::Refused(format!("{email} did not answer")));
            }
        }
    };
    let with = accepted.user.name.clone();
    // Bound to my key before I saw theirs; now theirs is in, I reveal mine
    // (a failed exchange hangs up).
    let settled = match ringing.accepted(&mut client, &accepted).await {
        Ok(s) => s,
        Err(CallError::Client(e)) => return Err(e.into()),
        Err(e) => return Err(Failure::Refused(format!("the call was ended: {e}"))),
    };
    if show {
        term::say(&format!("connected to {with}; read the code on the status line to each other"));
    }
    let mut names = HashMap::from([(accepted.user.id, with.clone())]);
    let end =
        run_media(&mut client, &mut events, &mut keys, settled, audio, &ready, 0, &mut names, &with, show).await?;
    Ok(Done::new(end.json, end.text))
}

/// Why a ringing call stopped ringing, for the "missed call" line.
fn missed_words(r: EndReason) -> &'static str {
    match r {
        EndReason::Hangup => "they hung up",
        EndReason::Timeout => "it rang out",
        EndReason::AnsweredElsewhere => "answered on another device",
        EndReason::Disconnected => "they lost their connection",
        EndReason::Logout | EndReason::Deleted => "they went away",
        EndReason::Declined => "declined",
    }
}

/// `babel listen`.
pub async fn listen(
    mut client: Client,
    auto_answer: bool,
    calls: Option<u32>,
    audio: &AudioArgs,
    ready: Ready,
    show: bool,
) -> Outcome {
    let mut events = client.events().await?;
    let mut keys = term::Input::start();
    let mut done: Vec<serde_json::Value> = Vec::new();
    let mut texts: Vec<String> = Vec::new();
    let waiting = |keys: &term::Input| {
        if show {
            term::say(if keys.interactive() { "waiting for calls… (q: quit)" } else { "waiting for calls…" });
        }
    };
    waiting(&keys);
    // The call whose [y/N] question is on the screen.
    let mut asking: Option<babel_proto::IncomingCall> = None;
    let mut lost = false;
    while calls.is_none_or(|n| (done.len() as u32) < n) {
        let incoming = tokio::select! {
            ev = events.next() => match ev {
                Some(Ok(Event::Server(ServerEvent::IncomingCall(c)))) => {
                    if asking.is_some() {
                        // One question at a time: a second caller hears busy.
                        let _ = client.decline_call(c.call_id).await;
                        continue;
                    }
                    if auto_answer {
                        c
                    } else if keys.interactive() {
                        term::status(&format!("Answer {} <{}>? [y/N] ", c.caller.name, c.caller.email));
                        asking = Some(c);
                        continue;
                    } else {
                        if show {
                            term::say(&format!(
                                "declined a call from {} <{}>: no terminal to ask on (--auto-answer answers)",
                                c.caller.name, c.caller.email
                            ));
                        }
                        let _ = client.decline_call(c.call_id).await;
                        continue;
                    }
                }
                Some(Ok(Event::Server(ServerEvent::Message(m)))) => {
                    // Someone wrote while I wait for calls: said, not
                    // marked read (`babel messages` reads it).
                    if show && client.user_id() != Some(m.message.from) {
                        term::say(&crate::chat::message_notice(&m));
                        if let Some(a) = &asking {
                            term::status(&format!("Answer {} <{}>? [y/N] ", a.caller.name, a.caller.email));
                        }
                    }
                    continue;
                }
                Some(Ok(Event::Server(ServerEvent::CallEnded(c, r)))) => {
                    if let Some(a) = asking.take_if(|a| a.call_id == c) {
                        if show {
                            term::say(&format!("missed call from {} <{}> ({})", a.caller.name, a.caller.email, missed_words(r)));
                        }
                        waiting(&keys);
                    }
                    continue;
                }
                Some(Ok(Event::Server(ServerEvent::SessionEnded(end)))) => {
                    if let Some(a) = asking.take() {
                        let _ = client.decline_call(a.call_id).await;
                    }
                    return Err(Failure::Refused(crate::chat::session_ended_words(end.reason)));
                }
                Some(Ok(Event::Disconnected)) => {
                    if show && !lost {
                        term::say("babel: connection to the server lost; reconnecting…");
                    }
                    lost = true;
                    continue;
                }
                Some(Ok(Event::Reconnected)) => {
                    if show {
                        term::say(&term::connected_again(&events));
                    }
                    lost = false;
                    waiting(&keys);
                    continue;
                }
                Some(Err(e)) => return Err(e.into()),
                None => return Err(Failure::Other(anyhow::anyhow!("the event stream ended"))),
                _ => continue,
            },
            key = keys.next() => match (key, asking.take()) {
                (term::Key::Quit | term::Key::Interrupt, a) => {
                    if let Some(a) = a {
                        let _ = client.decline_call(a.call_id).await;
                    }
                    term::say("");
                    break;
                }
                (term::Key::Char('y' | 'Y'), Some(a)) => {
                    term::say(&format!("Answer {} <{}>? y", a.caller.name, a.caller.email));
                    a
                }
                (_, Some(a)) => {
                    term::say(&format!("Answer {} <{}>? n", a.caller.name, a.caller.email));
                    let _ = client.decline_call(a.call_id).await;
                    waiting(&keys);
                    continue;
                }
                (_, None) => continue,
            },
        };
        let call_id = incoming.call_id;
        // Rung into a two-party call: the caller must have committed to its
        // key, and mine goes out only now that I hold the commitment. Rung
        // into a group call: I commit, and reveal once every member answered.
        let answering = match Answering::answer(&mut client, &incoming, audio.relay_only).await {
            Ok(a) => a,
            Err(CallError::Refused(e)) => {
                term::say(&format!("babel: refusing the call from {}: {e}", incoming.caller.name));
                done.push(json!({ "call_id": call_id, "ended": "key_exchange_failed", "error": e.to_string() }));
                continue;
            }
            Err(CallError::Client(e)) => {
                if show {
                    term::say(&format!("could not answer: {}", e.refusal().unwrap_or(&e.to_string())));
                }
                waiting(&keys);
                continue;
            }
            Err(CallError::NotSignedIn) => return Err(anyhow::anyhow!("not logged in").into()),
            Err(e) => return Err(anyhow::Error::from(e).into()),
        };
        let settled = match answering.settle(&mut client, &mut events).await {
            Ok(s) => s,
            Err(why) => {
                term::say(&format!("babel: the call from {} was ended: {why}", incoming.caller.name));
                done.push(json!({ "call_id": call_id, "ended": "key_exchange_failed", "error": why.to_string() }));
                continue;
            }
        };
        let mut names: HashMap<UserId, String> =
            settled.participants().iter().map(|p| (p.user.id, p.user.name.clone())).collect();
        let idx = done.len() as u32;
        let end = run_media(
            &mut client,
            &mut events,
            &mut keys,
            settled,
            audio,
            &ready,
            idx,
            &mut names,
            &incoming.caller.name,
            show,
        )
        .await?;
        if show {
            term::say(&end.text);
        }
        done.push(end.json);
        texts.push(end.text);
        if end.interrupted {
            break;
        }
        if calls.is_none_or(|n| (done.len() as u32) < n) {
            waiting(&keys);
        }
    }
    let text = match done.len() {
        0 => "No calls were answered.".to_owned(),
        1 => "1 call answered.".to_owned(),
        n => format!("{n} calls answered."),
    };
    Ok(Done::new(json!({ "calls": done }), text))
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
pub async fn demo(keep: Option<&Path>, show: bool) -> Outcome {
    if let Some(p) = keep {
        writable(p).map_err(|e| Failure::Usage(format!("--output {}: cannot write there ({e})", p.display())))?;
    }
    let dir = tempfile::tempdir().context("cannot make a temporary directory")?;
    let server = babel_server::Embedded::builder()
        .dir(dir.path())
        .durability(babel_server::Durability::Full)
        .start()
        .await
        .map_err(anyhow::Error::from)?;
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
    let ringing = Outgoing::place(&mut alice, b.id, false).await.map_err(anyhow::Error::from)?;
    let call_id = ringing.call_id();
    let incoming = loop {
        if let Some(Ok(Event::Server(ServerEvent::IncomingCall(c)))) = bob_events.next().await {
            break c;
        }
    };
    say(&format!("bob's phone rings: {} calling", incoming.caller.name));
    let answering = Answering::answer(&mut bob, &incoming, false).await.map_err(anyhow::Error::from)?;
    let a_settled = ringing.wait_answer(&mut alice, &mut alice_events).await.map_err(anyhow::Error::from)?;
    let b_settled = answering.settle(&mut bob, &mut bob_events).await.map_err(anyhow::Error::from)?;
    let phrase = demo_phrase(dir.path())?;
    // The recording lives in the demo's temporary folder (gone when it
    // ends) unless --output asks to keep it.
    let recording = keep.map_or_else(|| dir.path().join("recording.wav"), Path::to_path_buf);
    let cfg = MediaConfig { noise_suppression: false, ..MediaConfig::default() };
    say(&format!("alice says a {:.1} s phrase; bob records it", phrase.len() as f32 / 48_000.0));
    let mut a_call = a_settled
        .start(&alice, cfg.clone(), Box::new(BufferInput::new(phrase)), Box::new(RecordingOutput::new()))
        .await;
    let b_call = b_settled
        .start(&bob, cfg, Box::new(babel_media::audio::SilentInput), Box::new(RecordingOutput::to_wav(&recording)))
        .await;
    // Alice's media ends once the phrase is sent; she hangs up, and Bob's stops.
    a_call.media_ended().await;
    let (a_stats, _) =
        a_call.end(&mut alice).await.map_err(|e| anyhow::anyhow!("{e}"))?.map_err(anyhow::Error::from)?;
    let (b_stats, _) = b_call.end(&mut bob).await.map_err(|e| anyhow::anyhow!("{e}"))?.map_err(anyhow::Error::from)?;
    let summary = format!(
        "Done: voice went {}, {} ms round trip, {:.1} % lost, {} frames received; the security code was {} on both sides{}.",
        a_stats.path.map_or("nowhere", |p| p.as_str()),
        a_stats.rtt_ms.unwrap_or_default(),
        b_stats.rx_loss_pct,
        b_stats.received,
        a_stats.sas,
        if a_stats.sas == b_stats.sas { "" } else { " (they differ: something is wrong)" }
    );
    server.stop().await;
    let mut json = json!({
        "caller": stats_json(call_id, &a_stats, "input_ended"),
        "callee": stats_json(call_id, &b_stats, "hangup"),
    });
    let text = match keep {
        Some(p) => {
            json["recording"] = json!(p);
            format!("{summary}\nBob's recording: {}", p.display())
        }
        None => format!("{summary}\n(`babel demo --output FILE.wav` keeps Bob's recording.)"),
    };
    Ok(Done::new(json, text))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats() -> CallStats {
        CallStats {
            path: Some(babel_media::engine::Path::Relay),
            rtt_ms: Some(123),
            rx_loss_pct: 12.5,
            jitter_ms: 45,
            input_level_db: -23.4,
            sas: "123 456".into(),
            ..CallStats::default()
        }
    }

    #[test]
    fn the_status_line_fits_the_width_and_never_splits_the_code() {
        let hint = "q: hang up, i: invite";
        let t = Duration::from_secs(75);
        let wide = status_line(&stats(), t, 200, hint);
        for field in
            ["01:15", "path relay", "rtt 123 ms", "loss 12.5%", "jitter 45 ms", "mic -23 dB", "code 123 456", hint]
        {
            assert!(wide.contains(field), "{field} in {wide}");
        }
        for width in [20, 30, 40, 60, 80, 100] {
            let line = status_line(&stats(), t, width, hint);
            assert!(line.chars().count() < width, "{width}: {line:?}");
            assert!(line.contains("code 123 456"), "{width}: {line:?}");
        }
        // The less important go first: at 80 columns the time, the code
        // and the path stay.
        let line = status_line(&stats(), t, 80, hint);
        assert!(line.starts_with("01:15") && line.contains("path relay"), "{line}");
        // Narrower than anything: the code alone.
        assert_eq!(status_line(&stats(), t, 10, hint), "code 123 456");
    }
}
