//! `babel-load`: signalling load for `babel-server`, compared with the
//! `babel-ceiling` baseline. See the crate docs and BENCHMARKS.md.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, ensure};
use babel_tools::bench::{self, LoadArgs, Target};
use babel_tools::child::{ChildServer, sibling_binary};
use babel_tools::net::{MAX_SOURCE_IPS, check_target};
use babel_tools::report::{Machine, Report, SetupSummary};
use babel_tools::setup::{self, SetupOptions};
use clap::{Parser, ValueEnum};

/// Signalling load on `/contacts`: closed loop, open loop and idle memory,
/// for babel-server and for a do-nothing ceiling server.
///
/// Build both binaries first: `cargo build --release -p babel-server -p
/// babel-tools`. Only 127.0.0.0/8 addresses are ever used.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// The load (accounts are created once and reused).
    #[command(flatten)]
    load: LoadArgs,
    /// Idle logged-in connections for the memory measurement.
    #[arg(long, default_value_t = 10_000)]
    idle_connections: usize,
    /// State file with the load accounts' ids and tokens.
    #[arg(long, default_value = "/tmp/babel-load/state.json")]
    state: PathBuf,
    /// Database of the server started here [default: the state file with
    /// a `.db` extension, so the accounts outlive the run].
    #[arg(long)]
    db: Option<PathBuf>,
    /// Forget the state file (and the database of a server started here)
    /// and set everything up again.
    #[arg(long)]
    fresh: bool,
    /// Use this running server instead of starting one (127.0.0.0/8 only).
    #[arg(long)]
    server: Option<SocketAddr>,
    /// Process id of the --server, to measure its memory.
    #[arg(long, requires = "server")]
    server_pid: Option<u32>,
    /// The babel-server binary [default: next to this executable].
    #[arg(long)]
    server_bin: Option<PathBuf>,
    /// Use this running ceiling instead of starting one (127.0.0.0/8 only).
    #[arg(long)]
    ceiling: Option<SocketAddr>,
    /// Process id of the --ceiling, to measure its memory.
    #[arg(long, requires = "ceiling")]
    ceiling_pid: Option<u32>,
    /// The babel-ceiling binary [default: next to this executable].
    #[arg(long)]
    ceiling_bin: Option<PathBuf>,
    /// Data length of the ceiling's answers [default: that of a real
    /// /contacts answer, measured during setup].
    #[arg(long)]
    reply_bytes: Option<usize>,
    /// Spread client sockets over source addresses 127.0.0.2 ..= 127.0.0.(N+1)
    /// (more ephemeral ports); 0 lets the kernel choose.
    #[arg(long, default_value_t = 8)]
    source_ips: usize,
    /// Measurements to run, in this order.
    #[arg(long, value_delimiter = ',', default_value = "idle,closed,open")]
    phases: Vec<Phase>,
    /// Print one JSON document instead of the table.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Phase {
    /// Memory per idle logged-in connection.
    Idle,
    /// Closed-loop requests per second.
    Closed,
    /// Open-loop latency at a fixed rate.
    Open,
}

fn validate(a: &Args) -> anyhow::Result<()> {
    a.load.validate()?;
    ensure!(a.source_ips <= MAX_SOURCE_IPS, "--source-ips must be at most {MAX_SOURCE_IPS}");
    ensure!(a.idle_connections <= 200_000, "at most 200000 idle connections");
    if let Some(s) = a.server {
        check_target(&s)?;
    }
    if let Some(c) = a.ceiling {
        check_target(&c)?;
    }
    Ok(())
}

fn start_server(bin: &PathBuf, db: &PathBuf) -> anyhow::Result<ChildServer> {
    let mut cmd = Command::new(bin);
    cmd.args(["--listen", "127.0.0.1:0", "--max-connections", "1000000"])
        .arg("--db")
        .arg(db)
        .env("BABEL_LOG", "warn")
        .stdin(Stdio::null());
    tokio::task::block_in_place(|| ChildServer::start("babel-server", cmd, Duration::from_secs(30))).with_context(
        || format!("starting {} (build it with `cargo build --release -p babel-server -p babel-tools`)", bin.display()),
    )
}

fn start_ceiling(bin: &PathBuf, reply_bytes: usize) -> anyhow::Result<ChildServer> {
    let mut cmd = Command::new(bin);
    cmd.args(["--listen", "127.0.0.1:0", "--exit-on-stdin-eof"])
        .arg("--reply-bytes")
        .arg(reply_bytes.to_string())
        .stdin(Stdio::piped());
    tokio::task::block_in_place(|| ChildServer::start("babel-ceiling", cmd, Duration::from_secs(30)))
        .with_context(|| format!("starting {}", bin.display()))
}

fn remove_if_present(path: &PathBuf) -> anyhow::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("cannot remove {}", path.display()))
        }
        _ => Ok(()),
    }
}

async fn run(args: Args) -> anyhow::Result<Report> {
    let db = args.db.clone().unwrap_or_else(|| args.state.with_extension("db"));
    if args.fresh {
        remove_if_present(&args.state)?;
        if args.server.is_none() {
            for suffix in ["", "-wal", "-shm"] {
                let mut p = db.clone().into_os_string();
                p.push(suffix);
                remove_if_present(&PathBuf::from(p))?;
            }
        }
    }
    if let Some(dir) = db.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let server_bin = match &args.server_bin {
        Some(p) => p.clone(),
        None => sibling_binary("babel-server")?,
    };
    let mut own_server = match args.server {
        Some(_) => None,
        None => Some(start_server(&server_bin, &db)?),
    };
    let (server_addr, target_key) = match (&own_server, args.server) {
        (Some(s), _) => (s.addr(), format!("db:{}", std::path::absolute(&db)?.display())),
        (None, Some(a)) => (a, format!("server:{a}")),
        (None, None) => anyhow::bail!("no server"),
    };
    eprintln!("babel-load: server at {server_addr}; setting up accounts");
    let prepared = setup::prepare(&SetupOptions {
        addr: server_addr,
        state_path: args.state.clone(),
        target: target_key,
        users: args.load.users,
        contacts: args.load.contacts,
        source_ips: args.source_ips,
    })
    .await?;
    eprintln!(
        "babel-load: setup done in {:.1} s ({} reused, {} created, {} logged in{})",
        prepared.seconds,
        prepared.reused,
        prepared.created,
        prepared.logged_in,
        if prepared.linked { ", contacts linked" } else { "" }
    );
    // Measure a server process that has seen nothing but a cache warm-up.
    let mut server_pid = args.server_pid;
    let mut server_addr = server_addr;
    if own_server.is_some() {
        drop(own_server.take());
        let s = start_server(&server_bin, &db)?;
        server_addr = s.addr();
        server_pid = Some(s.pid());
        own_server = Some(s);
    }
    let frames: Vec<bytes::Bytes> = prepared.accounts.iter().map(setup::Account::contacts_request).collect();
    let request_bytes = frames.first().map_or(0, |f| f.len());
    let server = Target::one("server", server_addr, server_pid);
    bench::warm_caches(&server, &frames, args.source_ips).await?;

    let reply_bytes = args.reply_bytes.unwrap_or(prepared.reply_bytes);
    let mut own_ceiling = None;
    let ceiling = match args.ceiling {
        Some(addr) => Target::one("ceiling", addr, args.ceiling_pid),
        None => {
            let bin = match &args.ceiling_bin {
                Some(p) => p.clone(),
                None => sibling_binary("babel-ceiling")?,
            };
            let c = start_ceiling(&bin, reply_bytes)?;
            let t = Target::one("ceiling", c.addr(), Some(c.pid()));
            own_ceiling = Some(c);
            t
        }
    };
    bench::warm_caches(&ceiling, &frames, args.source_ips).await?;

    let opts = args.load.options(frames, args.source_ips)?;
    let mut report = Report {
        command: std::env::args().collect::<Vec<_>>().join(" "),
        machine: Machine::detect(),
        setup: SetupSummary {
            users: args.load.users,
            contacts: setup::effective_contacts(args.load.contacts),
            reused: prepared.reused,
            created: prepared.created,
            logged_in: prepared.logged_in,
            seconds: prepared.seconds,
            contacts_reply_bytes: prepared.reply_bytes,
            request_bytes,
        },
        idle: Vec::new(),
        closed: Vec::new(),
        open: Vec::new(),
        closed_ratio: None,
        open_p99_ratio: None,
        verdicts: Vec::new(),
        notes: Vec::new(),
    };
    if reply_bytes != prepared.reply_bytes {
        report.notes.push(format!("the ceiling answers {reply_bytes} B, the server {} B", prepared.reply_bytes));
    }
    let pause = Duration::from_secs(1);
    for phase in &args.phases {
        for target in [&server, &ceiling] {
            eprintln!("babel-load: {phase:?} on {}", target.name);
            match phase {
                Phase::Idle => {
                    if target.pids.is_empty() {
                        report
                            .notes
                            .push(format!("no memory figure for {}: give its --{}-pid", target.name, target.name));
                        continue;
                    }
                    report.idle.push(bench::idle_memory(target, &opts, args.idle_connections).await?);
                }
                Phase::Closed => report.closed.push(bench::closed_loop(target, &opts).await?),
                Phase::Open => report.open.push(bench::open_loop(target, &opts, args.load.rate).await?),
            }
            if let Some(s) = own_server.as_mut() {
                s.check_alive()?;
            }
            if let Some(c) = own_ceiling.as_mut() {
                c.check_alive()?;
            }
            tokio::time::sleep(pause).await;
        }
    }
    report.judge();
    Ok(report)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    validate(&args)?;
    match babel_tools::raise_fd_limit() {
        Ok(n) if (n as usize) < args.idle_connections + args.load.connections + 100 => {
            eprintln!("babel-load: the file descriptor limit is {n}; some connections may fail")
        }
        Ok(_) => {}
        Err(e) => eprintln!("babel-load: cannot raise the file descriptor limit: {e}"),
    }
    let json = args.json;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let report = runtime.block_on(run(args))?;
    babel_tools::report::print(&report, json, Report::table)
}
