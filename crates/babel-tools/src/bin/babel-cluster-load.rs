//! `babel-cluster-load`: `/contacts` on one node against several, and on
//! SQLite against PostgreSQL, in one run (issue #18's measurements).
//!
//! Targets, each started fresh, measured, and stopped before the next:
//! * `sqlite`: one node on a SQLite file;
//! * `pg`: one node on a PostgreSQL scratch schema, no bus;
//! * `cluster-one`: `--nodes` nodes on that schema and the local
//!   nats-server, all the load on the first;
//! * `cluster`: the same nodes, the load spread over them (connection `i`
//!   on node `i mod N`).
//!
//! Each gets the same accounts (`babel-load`'s: 1000 users with 10
//! contacts), its caches warmed on every node, then `babel-load`'s closed
//! and open loops. CPU is read for the nodes together and for each node,
//! PostgreSQL (every `postgres` process on the machine) and `nats-server`
//! on their own, per answered request.
//!
//! `cargo build --release -p babel-server -p babel-tools && target/release/babel-cluster-load`

use std::time::Duration;

use anyhow::{Context, ensure};
use babel_tools::bench::{self, ClosedResult, LoadArgs, OpenResult, Target};
use babel_tools::child::ChildServer;
use babel_tools::cluster::{EngineArgs, Nodes, node_name, pids_named};
use babel_tools::report::{Machine, loadavg};
use babel_tools::setup::{self, SetupOptions};
use clap::{Parser, ValueEnum};
use serde::Serialize;

/// `/contacts` on SQLite, PostgreSQL, one cluster node and a spread cluster.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// The load (accounts are created afresh on each store).
    #[command(flatten)]
    load: LoadArgs,
    /// Nodes of the cluster targets.
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Targets to measure, in this order.
    #[arg(long, value_delimiter = ',', default_value = "sqlite,pg,cluster-one,cluster")]
    targets: Vec<Kind>,
    /// PostgreSQL, nats-server and the server binary.
    #[command(flatten)]
    engines: EngineArgs,
    /// Spread client sockets over 127.0.0.2 ..= 127.0.0.(N+1).
    #[arg(long, default_value_t = 8)]
    source_ips: usize,
    /// Print one JSON document instead of the table.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
enum Kind {
    /// One node on SQLite.
    Sqlite,
    /// One node on PostgreSQL, no bus.
    Pg,
    /// The cluster, all load on its first node.
    ClusterOne,
    /// The cluster, load spread over every node.
    Cluster,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Sqlite => "sqlite",
            Kind::Pg => "pg",
            Kind::ClusterOne => "cluster-one",
            Kind::Cluster => "cluster",
        }
    }
}

/// One target, measured.
#[derive(Debug, Serialize)]
struct Run {
    target: Kind,
    /// Nodes running (whether loaded or not).
    nodes: usize,
    /// Nodes the load went to.
    loaded_nodes: usize,
    setup_seconds: f64,
    closed: ClosedResult,
    open: OpenResult,
}

#[derive(Debug, Serialize)]
struct Report {
    command: String,
    machine: Machine,
    /// Load average (1, 5, 15 minutes) at the start and at the end.
    loadavg: [String; 2],
    runs: Vec<Run>,
    /// Closed-loop requests/s and open-loop p99 of each target as a ratio
    /// to `pg`'s (and `pg`'s to `sqlite`'s).
    ratios: Vec<Ratio>,
}

#[derive(Debug, Serialize)]
struct Ratio {
    what: String,
    closed_requests_per_sec: f64,
    open_p99: f64,
}

/// Starts a target's nodes (blocking): all of them, and those loaded.
fn start(nodes: &Nodes, kind: Kind, n: usize) -> anyhow::Result<(Vec<ChildServer>, usize)> {
    Ok(match kind {
        Kind::Sqlite => (vec![nodes.sqlite("sqlite")?], 1),
        Kind::Pg => (vec![nodes.postgres("pg")?], 1),
        Kind::ClusterOne => (nodes.cluster(n)?, 1),
        Kind::Cluster => (nodes.cluster(n)?, n),
    })
}

async fn measure(args: &Args, nodes: &Nodes, kind: Kind) -> anyhow::Result<Run> {
    let n = args.nodes;
    let (children, loaded) = tokio::task::block_in_place(|| start(nodes, kind, n))?;
    let store = if kind == Kind::Sqlite { "sqlite" } else { "pg" };
    eprintln!("babel-cluster-load: {} ({} node(s)); setting up accounts", kind.name(), children.len());
    let first = children.first().context("no node")?;
    // The PostgreSQL targets share accounts: later ones find them ready.
    let prepared = setup::prepare(&SetupOptions {
        addr: first.addr(),
        state_path: nodes.dir().join(format!("{store}.json")),
        target: store.to_owned(),
        users: args.load.users,
        contacts: args.load.contacts,
        source_ips: args.source_ips,
    })
    .await?;
    eprintln!("babel-cluster-load: setup done in {:.1} s", prepared.seconds);
    let loaded_children = &children[..loaded];
    let mut watch: Vec<(String, Vec<u32>)> = children
        .iter()
        .enumerate()
        .map(|(i, c)| (if children.len() == 1 { "node".to_owned() } else { node_name(i + 1) }, vec![c.pid()]))
        .collect();
    watch.push(("postgres".to_owned(), pids_named("postgres")));
    watch.push(("nats-server".to_owned(), args.engines.nats_pids()));
    let target = Target {
        name: kind.name(),
        addrs: loaded_children.iter().map(ChildServer::addr).collect(),
        pids: children.iter().map(ChildServer::pid).collect(),
        watch,
    };
    let frames: Vec<bytes::Bytes> = prepared.accounts.iter().map(setup::Account::contacts_request).collect();
    // Every node's caches, loaded or not, as a node in service would have.
    let all = Target { addrs: children.iter().map(ChildServer::addr).collect(), ..target.clone() };
    bench::warm_caches(&all, &frames, args.source_ips).await?;
    let opts = args.load.options(frames, args.source_ips)?;
    eprintln!("babel-cluster-load: closed loop on {}", kind.name());
    let closed = bench::closed_loop(&target, &opts).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    eprintln!("babel-cluster-load: open loop on {}", kind.name());
    let open = bench::open_loop(&target, &opts, args.load.rate).await?;
    let mut children = children;
    for c in &mut children {
        c.check_alive()?;
    }
    drop(children);
    Ok(Run {
        target: kind,
        nodes: target.pids.len(),
        loaded_nodes: loaded,
        setup_seconds: prepared.seconds,
        closed,
        open,
    })
}

fn ratios(runs: &[Run]) -> Vec<Ratio> {
    let find = |k: Kind| runs.iter().find(|r| r.target == k);
    let ratio = |a: &Run, b: &Run, what: String| Ratio {
        what,
        closed_requests_per_sec: a.closed.requests_per_sec / b.closed.requests_per_sec.max(f64::MIN_POSITIVE),
        open_p99: a.open.latency.p99_ms / b.open.latency.p99_ms.max(f64::MIN_POSITIVE),
    };
    let mut out = Vec::new();
    if let (Some(pg), Some(sqlite)) = (find(Kind::Pg), find(Kind::Sqlite)) {
        out.push(ratio(pg, sqlite, "pg / sqlite".into()));
    }
    for k in [Kind::ClusterOne, Kind::Cluster] {
        if let (Some(c), Some(pg)) = (find(k), find(Kind::Pg)) {
            out.push(ratio(c, pg, format!("{} / pg", k.name())));
        }
    }
    if let (Some(c), Some(one)) = (find(Kind::Cluster), find(Kind::ClusterOne)) {
        out.push(ratio(c, one, "cluster / cluster-one".into()));
    }
    out
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or("-".into(), |v| format!("{v:.digits$}"))
}

fn table(r: &Report) -> String {
    let mut s = format!("{}\nload average {} → {}\n\n", r.command, r.loadavg[0], r.loadavg[1]);
    s += "| target | nodes (loaded) | closed req/s | closed p99 | open answered/s | open p50 / p99 / p99.9 | nodes' CPU | µs/req: nodes | postgres | nats | load gen | others |\n";
    s += "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n";
    for run in &r.runs {
        for (label, cpu) in [("closed", &run.closed.cpu), ("open", &run.open.cpu)] {
            let p = |name: &str| cpu.processes.iter().find(|p| p.name == name).and_then(|p| p.us_per_request);
            let lat = &run.open.latency;
            s += &format!(
                "| {} ({label}) | {} ({}) | {:.0} | {:.1} ms | {:.0} | {:.2} / {:.2} / {:.2} ms | {} % | {} | {} | {} | {} % | {} % |\n",
                run.target.name(),
                run.nodes,
                run.loaded_nodes,
                run.closed.requests_per_sec,
                run.closed.latency.p99_ms,
                run.open.achieved_per_sec,
                lat.p50_ms,
                lat.p99_ms,
                lat.p999_ms,
                opt(cpu.target_pct, 0),
                opt(cpu.target_us_per_request, 1),
                opt(p("postgres"), 1),
                opt(p("nats-server"), 1),
                opt(cpu.load_pct, 0),
                opt(cpu.other_pct, 0),
            );
        }
        let per_node: Vec<String> = run
            .closed
            .cpu
            .processes
            .iter()
            .filter(|p| !["postgres", "nats-server"].contains(&p.name.as_str()))
            .map(|p| format!("{} {} % ({} µs/req)", p.name, p.pct.round(), opt(p.us_per_request, 1)))
            .collect();
        s += &format!("|   {} closed, per node: {} |\n", run.target.name(), per_node.join(", "));
    }
    s += "\n";
    for q in &r.ratios {
        s += &format!("{}: closed req/s ×{:.2}, open p99 ×{:.2}\n", q.what, q.closed_requests_per_sec, q.open_p99);
    }
    s
}

async fn run(args: Args) -> anyhow::Result<Report> {
    ensure!(args.nodes >= 1 && args.nodes <= 16, "--nodes must be between 1 and 16");
    args.load.validate()?;
    let loadavg_start = loadavg();
    let postgres = args.targets.iter().any(|k| *k != Kind::Sqlite);
    let nodes = tokio::task::block_in_place(|| args.engines.nodes(postgres))?;
    let mut runs = Vec::new();
    for &kind in &args.targets {
        runs.push(measure(&args, &nodes, kind).await.with_context(|| format!("measuring {}", kind.name()))?);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let ratios = ratios(&runs);
    Ok(Report {
        command: std::env::args().collect::<Vec<_>>().join(" "),
        machine: Machine::detect(),
        loadavg: [loadavg_start, loadavg()],
        runs,
        ratios,
    })
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Err(e) = babel_tools::raise_fd_limit() {
        eprintln!("babel-cluster-load: cannot raise the file descriptor limit: {e}");
    }
    let json = args.json;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let report = runtime.block_on(run(args))?;
    babel_tools::report::print(&report, json, table)
}
