//! `babel-ceiling`: a server that answers every Babel request frame with the
//! same fixed response and does nothing else — the ceiling `babel-load`
//! compares the real server with.

use std::io::{Read, Write};
use std::net::SocketAddr;

use anyhow::Context;
use babel_tools::ceiling;
use clap::Parser;

/// Answers every request frame with a fixed 200 response.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Address to listen on (port 0: any free port; the chosen address is
    /// printed as `listening on ADDR`).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Data length of every response, in bytes [default: the size of a
    /// `/contacts` answer with 10 contacts, as measured].
    #[arg(long, default_value_t = ceiling::DEFAULT_REPLY_BYTES)]
    reply_bytes: usize,
    /// Exit when standard input reaches end of file (so that a parent that
    /// dies takes this process with it).
    #[arg(long)]
    exit_on_stdin_eof: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(
        args.reply_bytes <= babel_tools::net::MAX_BODY,
        "--reply-bytes must be at most {}",
        babel_tools::net::MAX_BODY
    );
    if let Err(e) = babel_tools::raise_fd_limit() {
        eprintln!("babel-ceiling: cannot raise the file descriptor limit: {e}");
    }
    if args.exit_on_stdin_eof {
        std::thread::spawn(|| {
            let mut sink = [0u8; 256];
            let mut stdin = std::io::stdin();
            while matches!(stdin.read(&mut sink), Ok(n) if n > 0) {}
            std::process::exit(0);
        });
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        let addr = listener.local_addr()?;
        let mut out = std::io::stdout();
        writeln!(out, "listening on {addr}")?;
        out.flush()?;
        ceiling::serve(listener, ceiling::reply_frame(args.reply_bytes)).await;
        anyhow::Ok(())
    })
}
