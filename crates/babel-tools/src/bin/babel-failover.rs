//! `babel-failover`: how long a client is away when its node dies.
//!
//! Two `babel-server` nodes on one PostgreSQL schema (a scratch schema,
//! dropped at the end). A user (`ann`) holds an event stream through the
//! client library with both nodes in its list; a contact (`bob`) watches
//! from the other node. Each run kills ann's node with SIGKILL and
//! measures, from the kill:
//! * `back`: ann's event stream subscribed again on the other node (from
//!   then on the server counts her online);
//! * `request`: her first request answered there;
//! * `seen`: bob's `/status online` event for her (when the surviving
//!   node had not counted her online already: without the NATS bus it
//!   had not).
//!
//! The killed node is restarted on its port before the next run (which
//! kills the other). The same-run baseline is one node alone, killed and
//! restarted at once: what a client of a single node waits.
//!
//! `--silent-runs N` adds runs where ann's node does not die but goes
//! silent (a proxy in front of it stops forwarding, no close, no reset)
//! with the default 20 s pings and 25 s silence allowance: the time until
//! she is back through the other node.
//!
//! `cargo build --release -p babel-server -p babel-tools && target/release/babel-failover`

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use babel_client::{Client, Event, EventStream};
use babel_proto::{Presence, ServerEvent, UserId};
use babel_tools::child::ChildServer;
use babel_tools::cluster::{Nodes, free_port, server_binary};
use babel_tools::stats::{Latency, ns};
use clap::Parser;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Kill -9 the node a client is on; time until it is back on another.
#[derive(Debug, Parser)]
struct Args {
    /// Runs of kill -9 (and as many of the one-node baseline).
    #[arg(long, default_value_t = 20)]
    runs: u32,
    /// Runs where the node goes silent instead (each takes up to ~25 s).
    #[arg(long, default_value_t = 0)]
    silent_runs: u32,
    /// PostgreSQL database (a scratch schema is made in it and dropped).
    #[arg(long, default_value = "postgres://babel:babel@127.0.0.1:5432/babel")]
    db: String,
    /// The babel-server binary [default: next to this one].
    #[arg(long)]
    server_bin: Option<PathBuf>,
    /// Print one JSON document.
    #[arg(long)]
    json: bool,
}

const PASSWORD: &str = "password123";
/// Longest wait for anything in a run.
const LIMIT: Duration = Duration::from_secs(60);

/// The nodes: on one PostgreSQL scratch schema, no bus.
struct Cluster(Nodes);

impl Cluster {
    /// A node listening on `port`. Blocking.
    fn start(&self, port: u16) -> anyhow::Result<ChildServer> {
        self.0.postgres_at(&format!("node{port}"), port)
    }
}

/// Waits for the stream's next `Reconnected`; answers when.
async fn back(events: &mut EventStream) -> anyhow::Result<Instant> {
    loop {
        match tokio::time::timeout(LIMIT, events.next()).await {
            Ok(Some(Ok(Event::Reconnected))) => return Ok(Instant::now()),
            Ok(Some(Ok(_))) => {}
            other => bail!("the event stream did not come back: {other:?}"),
        }
    }
}

/// Waits for `/status {who, online}`; answers when (`None`: not within 10 s).
async fn seen_online(events: &mut EventStream, who: UserId) -> Option<Instant> {
    let wait = async {
        loop {
            match events.next().await {
                Some(Ok(Event::Server(ServerEvent::Status(id, Presence::Online)))) if id == who => {
                    return Instant::now();
                }
                Some(_) => {}
                None => std::future::pending().await,
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), wait).await.ok()
}

#[derive(Debug, Default)]
struct Samples {
    back: Vec<u64>,
    request: Vec<u64>,
    seen: Vec<u64>,
    seen_missing: u32,
}

impl Samples {
    fn summary(&mut self) -> serde_json::Value {
        serde_json::json!({
            "back": Latency::from_ns(&mut self.back),
            "request": Latency::from_ns(&mut self.request),
            "seen": Latency::from_ns(&mut self.seen),
            "seen_missing": self.seen_missing,
        })
    }
}

async fn account(addr: &str, email: &str) -> anyhow::Result<Client> {
    let mut c = Client::connect(addr).await?;
    c.create(email, PASSWORD, None).await?;
    Ok(c)
}

/// Kill -9 runs over two nodes.
async fn failover_runs(cluster: &Cluster, runs: u32) -> anyhow::Result<Samples> {
    let ports = [free_port()?, free_port()?];
    let mut nodes = [Some(cluster.start(ports[0])?), Some(cluster.start(ports[1])?)];
    let addr = |i: usize| format!("127.0.0.1:{}", ports[i]);
    let list = format!("{},{}", addr(0), addr(1));
    let mut ann = account(&list, "ann@example.org").await?;
    let mut bob = account(&addr(1), "bob@example.org").await?;
    bob.add_contact("ann@example.org").await?;
    ann.accept_contact(bob.user_id().context("bob")?).await?;
    let (ann_id, bob_session) = (ann.user_id().context("ann")?, bob.session().context("bob")?.clone());
    drop(bob);
    let mut ann_events = ann.events().await?;
    let mut out = Samples::default();
    for run in 0..runs {
        let on = ann_events.server().borrow().as_ref().map(ToString::to_string).context("ann's stream is down")?;
        let x = usize::from(on != addr(0));
        let y = 1 - x;
        // Bob watches from the node ann will land on.
        let bob = Client::resume(addr(y), bob_session.clone()).await?;
        let mut bob_events = bob.events().await?;
        tokio::time::sleep(Duration::from_millis(200)).await;

        let killed = Instant::now();
        drop(nodes[x].take());
        let (came_back, saw) = tokio::join!(back(&mut ann_events), seen_online(&mut bob_events, ann_id));
        let came_back = came_back?;
        ann.contacts().await?;
        let answered = Instant::now();
        if ann.addr() != addr(y) {
            bail!("run {run}: ann's requests went to {}, not {}", ann.addr(), addr(y));
        }
        out.back.push(ns(came_back - killed));
        out.request.push(ns(answered - killed));
        match saw {
            Some(t) => out.seen.push(ns(t - killed)),
            None => out.seen_missing += 1,
        }
        eprintln!(
            "run {run}: back after {:.1} ms, first request {:.1} ms, seen online {}",
            (came_back - killed).as_secs_f64() * 1e3,
            (answered - killed).as_secs_f64() * 1e3,
            saw.map_or("-".to_owned(), |t| format!("{:.1} ms", (t - killed).as_secs_f64() * 1e3)),
        );
        nodes[x] = Some(cluster.start(ports[x])?);
    }
    Ok(out)
}

/// The baseline: one node, killed and restarted at once.
async fn restart_runs(cluster: &Cluster, runs: u32) -> anyhow::Result<Samples> {
    let port = free_port()?;
    let mut node = Some(cluster.start(port)?);
    let addr = format!("127.0.0.1:{port}");
    let mut cy = account(&addr, "cy@example.org").await?;
    let mut events = cy.events().await?;
    let mut out = Samples::default();
    for run in 0..runs {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let killed = Instant::now();
        drop(node.take());
        node = Some(cluster.start(port)?);
        let came_back = back(&mut events).await?;
        cy.contacts().await?;
        let answered = Instant::now();
        out.back.push(ns(came_back - killed));
        out.request.push(ns(answered - killed));
        eprintln!("baseline run {run}: back after {:.1} ms", (came_back - killed).as_secs_f64() * 1e3);
    }
    Ok(out)
}

/// Forwards both ways until told to go silent; then holds every socket
/// open and moves nothing (new connections too).
async fn proxy(upstream: SocketAddr) -> anyhow::Result<(SocketAddr, watch::Sender<bool>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (silent, rx) = watch::channel(false);
    tokio::spawn(async move {
        while let Ok((down, _)) = listener.accept().await {
            let rx = rx.clone();
            tokio::spawn(async move {
                if *rx.borrow() {
                    return hold(down).await;
                }
                let Ok(up) = TcpStream::connect(upstream).await else { return };
                let (dr, dw) = down.into_split();
                let (ur, uw) = up.into_split();
                tokio::spawn(pump(dr, uw, rx.clone()));
                tokio::spawn(pump(ur, dw, rx));
            });
        }
    });
    Ok((addr, silent))
}

async fn hold<T>(held: T) {
    std::future::pending::<()>().await;
    drop(held);
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut silent: watch::Receiver<bool>,
) {
    let gone = silent.clone();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = tokio::select! {
            n = from.read(&mut buf) => n,
            _ = silent.wait_for(|s| *s) => break,
        };
        match n {
            Ok(n) if n > 0 && !*gone.borrow() => {
                if to.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
            Ok(n) if n > 0 => break,
            _ => return,
        }
    }
    hold((from, to)).await;
}

/// Runs where ann's node goes silent behind a proxy (default pings).
async fn silent_runs(cluster: &Cluster, runs: u32) -> anyhow::Result<Samples> {
    let (a, b) = (cluster.start(free_port()?)?, cluster.start(free_port()?)?);
    let mut ann = account(&b.addr().to_string(), "dee@example.org").await?;
    let session = ann.session().context("dee")?.clone();
    ann.contacts().await?;
    let mut out = Samples::default();
    for run in 0..runs {
        let (front, silent) = proxy(a.addr()).await?;
        let list = format!("{front},{}", b.addr());
        let mut dee = Client::resume(list.as_str(), session.clone()).await?;
        let mut events = dee.events().await?;
        // Somewhere in the ping cycle.
        tokio::time::sleep(Duration::from_millis(1000 + 3100 * u64::from(run))).await;
        let vanished = Instant::now();
        silent.send_replace(true);
        let came_back = back(&mut events).await?;
        dee.contacts().await?;
        let answered = Instant::now();
        out.back.push(ns(came_back - vanished));
        out.request.push(ns(answered - vanished));
        eprintln!("silent run {run}: back after {:.1} s", (came_back - vanished).as_secs_f64());
    }
    drop((a, b));
    Ok(out)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let bin = server_binary(args.server_bin)?;
    let db = args.db.clone();
    let nodes = tokio::task::spawn_blocking(move || {
        // No bus: these nodes are one service through the database alone.
        let mut nodes = Nodes::new(bin, "", "")?;
        nodes.use_postgres(&db)?;
        anyhow::Ok(nodes)
    })
    .await??;
    let cluster = Cluster(nodes);
    let mut base = restart_runs(&cluster, args.runs).await?;
    let mut fail = failover_runs(&cluster, args.runs).await?;
    let mut silent = silent_runs(&cluster, args.silent_runs).await?;
    let ratio = |f: &Samples, b: &Samples, p: f64| {
        let (mut f, mut b) = (f.back.clone(), b.back.clone());
        let (lf, lb) = (Latency::from_ns(&mut f), Latency::from_ns(&mut b));
        let (x, y) = if p >= 99.0 { (lf.p99_ms, lb.p99_ms) } else { (lf.p50_ms, lb.p50_ms) };
        x / y.max(f64::MIN_POSITIVE)
    };
    let (r50, r99) = (ratio(&fail, &base, 50.0), ratio(&fail, &base, 99.0));
    let report = serde_json::json!({
        "runs": args.runs,
        "failover": fail.summary(),
        "one_node_restart": base.summary(),
        "failover_over_restart": {"p50": r50, "p99": r99},
        "silent": silent.summary(),
        "cpus": std::thread::available_parallelism().map_or(0, usize::from),
    });
    if args.json {
        println!("{report}");
    } else {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    drop(cluster);
    Ok(())
}
