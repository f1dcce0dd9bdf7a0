//! `babel-flood`: cheap attacks on the server's resources, played against a
//! real `babel-server` child on loopback, with what they cost it.
//!
//! * [`channel`]: pairs of accounts in answered calls; one side floods its
//!   call channel with large `/send` frames while the other never reads.
//!   Reports the server's resident memory before, at the peak, and for a
//!   while after every flood connection closed.
//! * [`requests`]: many connections sending 1 MiB request frames at once,
//!   then closing; the server's memory before, at the peak and after.
//! * [`idle`]: many silent connections from many source addresses against a
//!   server with few file descriptors and the per-address limits on (as for
//!   remote clients); then a normal client from another network logs in.
//!   Reports what was accepted, how the normal client fared, and how many
//!   silent connections the server closed for not authenticating.
//!
//! Every loop is bounded in count and time; targets are loopback only.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use babel_proto::RawRequest;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::child::{ChildServer, rss_kib};
use crate::net::{ResponseReader, connect_timeout, round_trip};

const LIMIT: Duration = Duration::from_secs(10);
const PASSWORD: &str = "password123";

fn request(header: &Value, route: &str, data: &Value) -> Vec<u8> {
    let section = |v: &Value| if v.is_null() { Vec::new() } else { v.to_string().into_bytes() };
    RawRequest::new(section(header), route.to_owned(), section(data)).to_bytes().to_vec()
}

/// A request-mode connection.
struct Conn {
    stream: TcpStream,
    reader: ResponseReader,
}

impl Conn {
    async fn open(addr: SocketAddr, source: Option<Ipv4Addr>) -> anyhow::Result<Conn> {
        let stream = connect_timeout(addr, source, LIMIT).await.context("connect")?;
        Ok(Conn { stream, reader: ResponseReader::new() })
    }

    async fn call(&mut self, header: &Value, route: &str, data: &Value) -> anyhow::Result<(i32, Value)> {
        let r = round_trip(&mut self.stream, &mut self.reader, &request(header, route, data), LIMIT)
            .await
            .with_context(|| route.to_owned())?;
        let v = if r.data.is_empty() { Value::Null } else { serde_json::from_slice(&r.data)? };
        Ok((r.status, v))
    }

    async fn expect(&mut self, header: &Value, route: &str, data: &Value, want: i32) -> anyhow::Result<Value> {
        let (status, v) = self.call(header, route, data).await?;
        if status != want {
            bail!("{route} answered {status} {v}, not {want}");
        }
        Ok(v)
    }

    /// Creates an account; answers its `{id, token}` header.
    async fn create(&mut self, email: &str) -> anyhow::Result<(Value, String)> {
        let v = self.expect(&Value::Null, "/create", &json!({"user_mail": email, "pass": PASSWORD}), 201).await?;
        let id = v["id"].as_str().context("no id")?.to_owned();
        Ok((json!({"id": id, "token": v["token"]}), id))
    }
}

/// Starts `babel-server` with a cheap password hash, `extra` TOML and, when
/// given, a file-descriptor limit (through `sh -c 'ulimit -n'`).
fn start_server(bin: &Path, dir: &Path, extra: &str, fds: Option<u64>) -> anyhow::Result<ChildServer> {
    let toml = dir.join("babel.toml");
    std::fs::write(&toml, format!("durability = \"normal\"\n{extra}\n[password]\nmemory_kib = 256\niterations = 1\n"))?;
    let mut cmd = match fds {
        Some(n) => {
            let mut c = Command::new("sh");
            c.args(["-c", &format!("ulimit -n {n} && exec \"$0\" \"$@\"")]).arg(bin);
            c
        }
        None => Command::new(bin),
    };
    cmd.args(["--listen", "127.0.0.1:0", "--log", "error", "--config"])
        .arg(&toml)
        .arg("--db")
        .arg(dir.join("babel.db"));
    ChildServer::start("babel-server", cmd, Duration::from_secs(30))
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Options of the channel flood.
#[derive(Debug, Clone)]
pub struct ChannelOptions {
    /// The server binary.
    pub server_bin: PathBuf,
    /// Calls, each with a flooding side and a side that never reads.
    pub pairs: usize,
    /// `/send` data size.
    pub frame_bytes: usize,
    /// How long the flood lasts.
    pub flood: Duration,
    /// How long to watch memory after the flood's connections closed.
    pub settle: Duration,
}

/// What a flood did to the server's memory (RSS).
#[derive(Debug, Serialize)]
pub struct Memory {
    /// RSS before the flood, MiB.
    pub baseline_mib: f64,
    /// Highest RSS seen during the flood, MiB.
    pub peak_mib: f64,
    /// RSS at the end of the watch after closing, MiB.
    pub after_mib: f64,
    /// Seconds after closing until RSS was within 20 MiB of the baseline
    /// (`None`: never within the watch).
    pub back_within_20_mib_secs: Option<f64>,
}

/// Watches the server's RSS for `watch` once the flood's connections
/// closed; `baseline` and `peak` are in KiB.
async fn settle(pid: u32, baseline: u64, peak: u64, watch: Duration) -> anyhow::Result<Memory> {
    let closed_at = Instant::now();
    let (mut back, mut after) = (None, rss_kib(pid)?);
    while closed_at.elapsed() < watch {
        tokio::time::sleep(Duration::from_millis(500)).await;
        after = rss_kib(pid)?;
        if back.is_none() && after <= baseline + 20 * 1024 {
            back = Some(closed_at.elapsed().as_secs_f64());
        }
    }
    Ok(Memory {
        baseline_mib: mib(baseline),
        peak_mib: mib(peak),
        after_mib: mib(after),
        back_within_20_mib_secs: back,
    })
}

/// What the channel flood did to the server.
#[derive(Debug, Serialize)]
pub struct ChannelReport {
    /// Calls flooded.
    pub pairs: usize,
    /// `/send` data size.
    pub frame_bytes: usize,
    /// Bytes written by the flooders.
    pub bytes_sent: u64,
    /// Times the server closed a flooding channel.
    pub channels_closed: u64,
    /// The server's memory (the baseline once the accounts and calls were
    /// set up).
    #[serde(flatten)]
    pub memory: Memory,
}

/// Runs the channel flood.
pub async fn channel(opts: &ChannelOptions) -> anyhow::Result<ChannelReport> {
    let dir = tempfile::tempdir()?;
    let mut server = start_server(&opts.server_bin, dir.path(), "", None)?;
    let addr = server.addr();
    let pid = server.pid();
    // Set up every call first; request connections stay open (sessions online).
    let mut keep = Vec::new();
    let mut pairs = Vec::new();
    for i in 0..opts.pairs {
        let mut a = Conn::open(addr, None).await?;
        let mut b = Conn::open(addr, None).await?;
        let (ha, _) = a.create(&format!("flood-a{i}@example.org")).await?;
        let (hb, idb) = b.create(&format!("flood-b{i}@example.org")).await?;
        let ida = ha["id"].clone();
        a.expect(&ha, "/add_contact", &json!({"contact_email": format!("flood-b{i}@example.org")}), 200).await?;
        b.expect(&hb, "/accept_contact", &json!({"contact_id": ida}), 200).await?;
        let v = a.expect(&ha, "/call", &json!({"contact_id": idb}), 200).await?;
        let call_id = v["call_id"].as_str().context("no call_id")?.to_owned();
        b.expect(&hb, "/answer", &json!({"call_id": call_id, "accept": "true"}), 200).await?;
        let mut cb = Conn::open(addr, None).await?;
        cb.expect(&hb, "/connect_call", &json!({"call_id": call_id}), 200).await?;
        keep.push((a, b));
        pairs.push((ha, call_id, cb));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let baseline = rss_kib(pid)?;
    let head = br#"{"type":"voice","nb_packets":"1","size_packet":"0","packets":[""#;
    let mut data = head.to_vec();
    data.resize(opts.frame_bytes.max(head.len() + 3) - 3, b'A');
    data.extend_from_slice(br#""]}"#);
    let frame = RawRequest::new(Vec::new(), "/send".to_owned(), data).to_bytes();
    let until = Instant::now() + opts.flood;
    let mut floods = Vec::new();
    for (h, call_id, _) in &pairs {
        let (h, call_id, frame) = (h.clone(), call_id.clone(), frame.clone());
        floods.push(tokio::spawn(async move {
            let (mut sent, mut closed) = (0u64, 0u64);
            while Instant::now() < until {
                let Ok(mut c) = Conn::open(addr, None).await else { break };
                if c.expect(&h, "/connect_call", &json!({"call_id": call_id}), 200).await.is_err() {
                    break;
                }
                loop {
                    let left = until.saturating_duration_since(Instant::now());
                    match tokio::time::timeout(left, c.stream.write_all(&frame)).await {
                        Ok(Ok(())) => sent += frame.len() as u64,
                        Ok(Err(_)) => {
                            closed += 1;
                            break;
                        }
                        Err(_) => break,
                    }
                }
            }
            (sent, closed)
        }));
    }
    let mut peak = baseline;
    while Instant::now() < until {
        peak = peak.max(rss_kib(pid)?);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (mut bytes_sent, mut channels_closed) = (0, 0);
    for f in floods {
        let (s, c) = f.await?;
        bytes_sent += s;
        channels_closed += c;
    }
    peak = peak.max(rss_kib(pid)?);
    drop(pairs);
    drop(keep);
    let memory = settle(pid, baseline, peak, opts.settle).await?;
    server.check_alive()?;
    Ok(ChannelReport { pairs: opts.pairs, frame_bytes: opts.frame_bytes, bytes_sent, channels_closed, memory })
}

/// Options of the large-request flood.
#[derive(Debug, Clone)]
pub struct RequestOptions {
    /// The server binary.
    pub server_bin: PathBuf,
    /// Connections at once.
    pub connections: usize,
    /// Frames each connection sends (one at a time, reading each answer).
    pub frames: usize,
    /// Data size of each frame (the default limit is 1 MiB).
    pub frame_bytes: usize,
    /// How long to watch memory after the connections closed.
    pub settle: Duration,
}

/// What the large-request flood did to the server's memory.
#[derive(Debug, Serialize)]
pub struct RequestReport {
    /// Frames answered.
    pub answered: u64,
    /// The server's memory.
    #[serde(flatten)]
    pub memory: Memory,
}

/// Many connections each sending large request frames (to an unknown route:
/// the server reads each whole, answers 404, and frees it), then all close.
pub async fn requests(opts: &RequestOptions) -> anyhow::Result<RequestReport> {
    let dir = tempfile::tempdir()?;
    let mut server = start_server(&opts.server_bin, dir.path(), "", None)?;
    let (addr, pid) = (server.addr(), server.pid());
    tokio::time::sleep(Duration::from_secs(1)).await;
    let baseline = rss_kib(pid)?;
    let head = br#"{"x":""#;
    let mut data = head.to_vec();
    data.resize(opts.frame_bytes.max(head.len() + 2) - 2, b'A');
    data.extend_from_slice(br#""}"#);
    let frame = RawRequest::new(Vec::new(), "/flood".to_owned(), data).to_bytes();
    let mut tasks = Vec::new();
    for _ in 0..opts.connections {
        let (frame, frames) = (frame.clone(), opts.frames);
        tasks.push(tokio::spawn(async move {
            let mut answered = 0u64;
            let Ok(mut c) = Conn::open(addr, None).await else { return answered };
            for _ in 0..frames {
                if round_trip(&mut c.stream, &mut c.reader, &frame, LIMIT).await.is_err() {
                    break;
                }
                answered += 1;
            }
            answered
        }));
    }
    let mut peak = baseline;
    while tasks.iter().any(|t| !t.is_finished()) {
        peak = peak.max(rss_kib(pid)?);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut answered = 0;
    for t in tasks {
        answered += t.await?;
    }
    let memory = settle(pid, baseline, peak, opts.settle).await?;
    server.check_alive()?;
    Ok(RequestReport { answered, memory })
}

/// Options of the idle-connection flood.
#[derive(Debug, Clone)]
pub struct IdleOptions {
    /// The server binary.
    pub server_bin: PathBuf,
    /// Source addresses of the flood (127.0.0.2 and up, one /24).
    pub addresses: usize,
    /// Silent connections opened from each.
    pub per_address: usize,
    /// The server's file-descriptor limit.
    pub server_fds: u64,
    /// The server's `auth_timeout_secs` (0: leave it out of the server's
    /// configuration, e.g. for a server that predates it, and do not wait
    /// for it).
    pub auth_timeout_secs: u64,
}

/// What the idle flood did.
#[derive(Debug, Serialize)]
pub struct IdleReport {
    /// Connections the flood attempted.
    pub attempted: usize,
    /// Of those, open a second after the flood (the server kept them).
    pub held: usize,
    /// Whether the normal client (from 127.0.1.2) logged in.
    pub normal_login_ok: bool,
    /// Its tries (a clean refusal counts one) and the time it took, ms.
    pub normal_tries: u32,
    /// Time until its login was answered, ms.
    pub normal_ms: f64,
    /// Flood connections still open once the authentication timeout passed
    /// (`None` when it was not waited for).
    pub held_after_timeout: Option<usize>,
}

/// Whether the server closed `s` (EOF or reset) without blocking.
fn is_closed(s: &TcpStream) -> bool {
    let mut b = [0u8; 1];
    match s.try_read(&mut b) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    }
}

/// Runs the idle flood.
pub async fn idle(opts: &IdleOptions) -> anyhow::Result<IdleReport> {
    let dir = tempfile::tempdir()?;
    let timeout = match opts.auth_timeout_secs {
        0 => String::new(),
        n => format!("auth_timeout_secs = {n}\n"),
    };
    let extra = format!("{timeout}[limits]\nlimit_loopback = true\n");
    let server = start_server(&opts.server_bin, dir.path(), &extra, Some(opts.server_fds))?;
    let addr = server.addr();
    let normal_ip = Ipv4Addr::new(127, 0, 1, 2);
    Conn::open(addr, Some(normal_ip)).await?.create("normal@example.org").await?;
    let mut flood = Vec::new();
    let attempted = opts.addresses * opts.per_address;
    // A server that stops accepting fills its backlog, and then connects
    // hang: give up after a few in a row.
    let mut failed_in_a_row = 0;
    for i in 0..attempted {
        let ip = Ipv4Addr::new(127, 0, 0, u8::try_from(2 + (i % opts.addresses.clamp(1, 250))).unwrap_or(2));
        match connect_timeout(addr, Some(ip), Duration::from_millis(500)).await {
            Ok(s) => {
                flood.push(s);
                failed_in_a_row = 0;
            }
            Err(_) => {
                failed_in_a_row += 1;
                if failed_in_a_row == 5 {
                    break;
                }
            }
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let held = flood.iter().filter(|s| !is_closed(s)).count();
    let started = Instant::now();
    let mut tries = 0;
    let mut ok = false;
    while started.elapsed() < Duration::from_secs(20) {
        tries += 1;
        let login = async {
            let mut c = Conn::open(addr, Some(normal_ip)).await?;
            c.call(&Value::Null, "/login", &json!({"user_mail": "normal@example.org", "pass": PASSWORD})).await
        };
        match tokio::time::timeout(Duration::from_secs(5), login).await {
            Ok(Ok((200, _))) => {
                ok = true;
                break;
            }
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    let normal_ms = started.elapsed().as_secs_f64() * 1000.0;
    let held_after_timeout = match opts.auth_timeout_secs {
        0 => None,
        n => {
            tokio::time::sleep(Duration::from_secs(n + 2)).await;
            Some(flood.iter().filter(|s| !is_closed(s)).count())
        }
    };
    for s in &mut flood {
        let _ = s.shutdown().await;
    }
    drop(server);
    Ok(IdleReport { attempted, held, normal_login_ok: ok, normal_tries: tries, normal_ms, held_after_timeout })
}
