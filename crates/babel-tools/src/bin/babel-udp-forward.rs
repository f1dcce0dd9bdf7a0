//! `babel-udp-forward`: a bare single-threaded UDP forwarder, the ceiling
//! `babel-relay-bench` compares the server's media relay with. See
//! [`babel_tools::udp_forward`].

use std::io::{Read, Write};
use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use anyhow::Context;
use babel_tools::udp_forward;
use clap::Parser;

/// Forwards `[0x03][handle][payload]` to the address registered (by
/// `[0x01][handle]`) for `handle ^ 1`. One thread, no checks.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// UDP address to listen on (port 0: any free port; the chosen address
    /// is printed as `listening on ADDR`). 127.0.0.0/8 only.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Socket receive and send buffer size asked for, in bytes (0: the
    /// system default).
    #[arg(long, default_value_t = 0)]
    buffer_bytes: usize,
    /// Exit after this many seconds whatever happens.
    #[arg(long, default_value_t = 3600)]
    max_seconds: u64,
    /// Exit when standard input reaches end of file (so that a parent that
    /// dies takes this process with it).
    #[arg(long)]
    exit_on_stdin_eof: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    babel_tools::net::check_target(&args.listen)?;
    if args.exit_on_stdin_eof {
        std::thread::spawn(|| {
            let mut sink = [0u8; 256];
            let mut stdin = std::io::stdin();
            while matches!(stdin.read(&mut sink), Ok(n) if n > 0) {}
            std::process::exit(0);
        });
    }
    let socket = if args.buffer_bytes > 0 {
        babel_tools::udp_load::bound_socket(args.listen, args.buffer_bytes)?
    } else {
        UdpSocket::bind(args.listen).with_context(|| format!("cannot listen on {}", args.listen))?
    };
    let addr = socket.local_addr()?;
    let mut out = std::io::stdout();
    writeln!(out, "listening on {addr}")?;
    out.flush()?;
    let stats = udp_forward::serve(&socket, Duration::from_secs(args.max_seconds))?;
    eprintln!("babel-udp-forward: {stats:?}");
    Ok(())
}
