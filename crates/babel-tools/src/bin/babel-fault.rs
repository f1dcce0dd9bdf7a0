//! `babel-fault`: kill -9 the server at random points of a write-heavy load
//! (accounts, contacts, messages), restart it, and check that every
//! acknowledged write is still there.
//!
//! `cargo build --release -p babel-server -p babel-tools && target/release/babel-fault`

use std::time::Duration;

use babel_tools::fault::{FaultOptions, run};
use clap::Parser;

/// Kill the server mid-write, restart, look for every acknowledged write.
#[derive(Debug, Parser)]
struct Args {
    /// Rounds of load, kill -9, restart, check.
    #[arg(long, default_value_t = 20)]
    rounds: u32,
    /// Concurrent writers.
    #[arg(long, default_value_t = 8)]
    writers: usize,
    /// Earliest kill, ms after the load starts.
    #[arg(long, default_value_t = 300)]
    min_kill_ms: u64,
    /// Latest kill, ms after the load starts.
    #[arg(long, default_value_t = 2000)]
    max_kill_ms: u64,
    /// Seed for the kill times [default: the clock].
    #[arg(long)]
    seed: Option<u64>,
    /// The babel-server binary [default: next to this one].
    #[arg(long)]
    server_bin: Option<std::path::PathBuf>,
    /// Print one JSON document.
    #[arg(long)]
    json: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64)
    });
    eprintln!("babel-fault: seed {seed}");
    let opts = FaultOptions {
        server_bin: match args.server_bin {
            Some(p) => p,
            None => babel_tools::child::sibling_binary("babel-server")?,
        },
        rounds: args.rounds,
        writers: args.writers,
        min_kill: Duration::from_millis(args.min_kill_ms),
        max_kill: Duration::from_millis(args.max_kill_ms),
        seed,
    };
    let rounds = run(&opts).await?;
    let accounts: usize = rounds.iter().map(|r| r.accounts).sum();
    let contacts: usize = rounds.iter().map(|r| r.contacts).sum();
    let messages: usize = rounds.iter().map(|r| r.messages).sum();
    if args.json {
        println!("{}", serde_json::json!({"seed": seed, "rounds": rounds, "lost": 0}));
    } else {
        println!(
            "{} rounds, kill -9 at random points: {accounts} accounts, {contacts} contacts and {messages} messages acknowledged, 0 lost (seed {seed})",
            rounds.len()
        );
    }
    Ok(())
}
