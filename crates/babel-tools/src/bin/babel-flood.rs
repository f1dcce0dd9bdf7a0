//! `babel-flood`: cheap resource attacks against a real server on loopback,
//! and what they cost it (SECURITY.md records the results).
//!
//! `cargo build --release -p babel-server -p babel-tools && target/release/babel-flood channel`

use std::path::PathBuf;
use std::time::Duration;

use babel_tools::flood::{ChannelOptions, IdleOptions, Memory, RequestOptions, channel, idle, requests};
use clap::{Parser, Subcommand};

/// Flood a babel-server child and report what it cost the server.
#[derive(Debug, Parser)]
struct Args {
    #[command(subcommand)]
    attack: Attack,
    /// The babel-server binary [default: next to this one].
    #[arg(long, global = true)]
    server_bin: Option<PathBuf>,
    /// Print one JSON document.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum Attack {
    /// Large `/send` frames on call channels to receivers that never read;
    /// the server's memory before, at the peak and after closing.
    Channel {
        /// Calls flooded.
        #[arg(long, default_value_t = 6)]
        pairs: usize,
        /// `/send` data size in bytes (the report's attack used ~0.93 MB).
        #[arg(long, default_value_t = 950_000)]
        frame_bytes: usize,
        /// Seconds of flood.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Seconds to watch memory after closing.
        #[arg(long, default_value_t = 30)]
        settle: u64,
    },
    /// Large request frames on many connections at once, then all close;
    /// the server's memory before, at the peak and after.
    Requests {
        /// Connections at once.
        #[arg(long, default_value_t = 100)]
        connections: usize,
        /// Frames per connection.
        #[arg(long, default_value_t = 20)]
        frames: usize,
        /// Data size of each frame.
        #[arg(long, default_value_t = 1_000_000)]
        frame_bytes: usize,
        /// Seconds to watch memory after closing.
        #[arg(long, default_value_t = 30)]
        settle: u64,
    },
    /// Silent connections from many addresses against a server with few
    /// file descriptors; then a normal client from another network.
    Idle {
        /// Source addresses (127.0.0.2 and up).
        #[arg(long, default_value_t = 22)]
        addresses: usize,
        /// Connections from each.
        #[arg(long, default_value_t = 800)]
        per_address: usize,
        /// The server's file-descriptor limit.
        #[arg(long, default_value_t = 4096)]
        server_fds: u64,
        /// The server's `auth_timeout_secs` (0: not configured, not waited
        /// for; for servers that predate it).
        #[arg(long, default_value_t = 10)]
        auth_timeout: u64,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let server_bin = match args.server_bin {
        Some(p) => p,
        None => babel_tools::child::sibling_binary("babel-server")?,
    };
    babel_tools::raise_fd_limit()?;
    match args.attack {
        Attack::Channel { pairs, frame_bytes, seconds, settle } => {
            let r = channel(&ChannelOptions {
                server_bin,
                pairs,
                frame_bytes,
                flood: Duration::from_secs(seconds),
                settle: Duration::from_secs(settle),
            })
            .await?;
            if args.json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                println!(
                    "channel flood: {} calls, /send of {} B, {:.0} MB sent, {} channels closed by the server",
                    r.pairs,
                    r.frame_bytes,
                    r.bytes_sent as f64 / 1e6,
                    r.channels_closed
                );
                print_memory(&r.memory);
            }
        }
        Attack::Requests { connections, frames, frame_bytes, settle } => {
            let r = requests(&RequestOptions {
                server_bin,
                connections,
                frames,
                frame_bytes,
                settle: Duration::from_secs(settle),
            })
            .await?;
            if args.json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                println!("request flood: {connections} connections, {} frames of {frame_bytes} B answered", r.answered);
                print_memory(&r.memory);
            }
        }
        Attack::Idle { addresses, per_address, server_fds, auth_timeout } => {
            let r =
                idle(&IdleOptions { server_bin, addresses, per_address, server_fds, auth_timeout_secs: auth_timeout })
                    .await?;
            if args.json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                println!(
                    "idle flood: {} silent connections from {addresses} addresses, {} held by the server (fd limit {server_fds})",
                    r.attempted, r.held
                );
                println!(
                    "normal client from another network: {} after {} tries, {:.0} ms",
                    if r.normal_login_ok { "logged in" } else { "FAILED" },
                    r.normal_tries,
                    r.normal_ms,
                );
                if let Some(n) = r.held_after_timeout {
                    println!("flood connections still open after the {auth_timeout} s authentication timeout: {n}");
                }
            }
        }
    }
    Ok(())
}

/// The server-RSS line of a flood's report.
fn print_memory(m: &Memory) {
    println!(
        "server RSS: baseline {:.1} MiB, peak {:.1} MiB, {:.1} MiB after closing; within 20 MiB of the baseline {}",
        m.baseline_mib,
        m.peak_mib,
        m.after_mib,
        match m.back_within_20_mib_secs {
            Some(s) => format!("after {s:.1} s"),
            None => "never during the watch".to_owned(),
        }
    );
}
