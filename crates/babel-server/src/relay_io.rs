//! The relay's sockets and worker threads.
//!
//! **Workers.** The relay runs `relay_workers` threads (default: one per
//! core), each with a UDP socket of its own bound to the same address with
//! `SO_REUSEPORT`: the kernel spreads incoming datagrams over the sockets by
//! a hash of their 4-tuple, so one sender's datagrams always reach the same
//! worker while the group stands. Every worker serves the same
//! [`Relay`] state (one table; forwarding takes its
//! read lock once per batch, BIND and CONFIRM its write lock), so it does
//! not matter where a datagram lands: the two legs of a call may sit on different workers, and
//! a leg that rebinds (a NAT mapping that changes, a laptop that moves) to
//! an address hashing to another worker is handled there like anywhere
//! else. A worker sends from its own socket, and since every socket of the
//! group has the same local address, receivers see the relay's one address
//! whichever worker forwarded.
//!
//! **Batches.** A worker takes up to [`BATCH`] datagrams per `recvmmsg`
//! (blocking for the first, then whatever is already queued) and sends what
//! they produce with `sendmmsg`, up to [`SEND_BATCH`] per call: one system
//! call per batch instead of one per datagram each way. At low load a batch
//! holds one datagram and nothing is waited for; under load batches grow
//! and the cost per datagram falls. A worker that finds datagrams waiting
//! sooner than `relay_gather_us` (default [`GATHER_US`] µs) after it
//! started to wait is busy: it then pauses that long before its next
//! `recvmmsg`, so that one wake-up serves many datagrams instead of one
//! (a datagram waits at most that long more; an idle worker never pauses).
//! The calls go through `nix`'s safe wrappers: this workspace forbids `unsafe`, and `quinn-udp` (the other
//! obvious crate) sends a batch only to one destination (GSO), while a relay
//! sends every datagram somewhere else.
//!
//! Linux only lets sockets of the same effective user id join a
//! `SO_REUSEPORT` group. Before binding the group [`bind_sockets`] binds the
//! address once without `SO_REUSEPORT`, so an address already in use (a
//! second server started on the same port, by the same user) is refused as
//! before instead of silently splitting the traffic, and an ephemeral port
//! is one nobody holds.

use std::io::{self, IoSlice, IoSliceMut};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use babel_proto::relay::DATA;
use nix::errno::Errno;
use nix::sys::socket::{ControlMessage, MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg, sendmmsg};

use crate::relay::{Handled, Relay};

/// Most datagrams taken per `recvmmsg`.
pub const BATCH: usize = 32;
/// Most datagrams sent per `sendmmsg`.
pub const SEND_BATCH: usize = 64;
/// Largest datagram received whole (longer ones are cut, fail their tag and
/// are dropped).
const BUF_LEN: usize = 2048;
/// How long a busy worker lets a batch gather by default
/// (`relay_gather_us`).
pub const GATHER_US: u64 = 100;
/// How often a worker looks at its stop flag while idle.
const STOP_CHECK: Duration = Duration::from_millis(200);

/// What one worker counted.
#[derive(Debug, Default)]
pub struct WorkerStats {
    /// Datagrams received.
    pub received: AtomicU64,
    /// `recvmmsg` calls that returned datagrams (received ÷ batches is the
    /// mean batch).
    pub batches: AtomicU64,
    /// Datagrams sent (answers and forwards).
    pub sent: AtomicU64,
    /// `sendmmsg` calls.
    pub send_calls: AtomicU64,
}

/// The number of workers meant by `configured` (0: one per core).
pub fn worker_count(configured: usize) -> usize {
    match configured {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    }
}

fn one_socket(addr: SocketAddr, buffer: usize, reuse_port: bool) -> io::Result<socket2::Socket> {
    let domain = if addr.is_ipv4() { socket2::Domain::IPV4 } else { socket2::Domain::IPV6 };
    let sock = socket2::Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
    if buffer > 0 {
        if let Err(e) = sock.set_recv_buffer_size(buffer) {
            tracing::warn!(error = %e, "cannot enlarge the relay's receive buffer");
        }
        if let Err(e) = sock.set_send_buffer_size(buffer) {
            tracing::warn!(error = %e, "cannot enlarge the relay's send buffer");
        }
    }
    if reuse_port {
        sock.set_reuse_port(true)?;
    }
    sock.bind(&addr.into())?;
    Ok(sock)
}

/// Binds `workers` sockets (at least one) to `addr`, with kernel buffers of
/// `buffer` bytes each way (the kernel may grant less; what it granted is
/// logged). More than one share the address with `SO_REUSEPORT`, after a
/// plain bind has shown the address free (see the module's documentation).
pub fn bind_sockets(addr: SocketAddr, workers: usize, buffer: usize) -> io::Result<Vec<UdpSocket>> {
    let workers = workers.max(1);
    let first = if workers == 1 {
        one_socket(addr, buffer, false)?
    } else {
        // The probe: refused if anyone holds the address; picks a port
        // nobody holds when asked for port 0. Closed before the group binds
        // (another process would have to bind that very port, with
        // SO_REUSEPORT and as this user, in between to join it).
        let probe = one_socket(addr, 0, false)?;
        let chosen = probe.local_addr()?.as_socket().ok_or_else(|| io::Error::other("not an IP socket"))?;
        drop(probe);
        one_socket(chosen, buffer, true)?
    };
    let bound = first.local_addr()?.as_socket().ok_or_else(|| io::Error::other("not an IP socket"))?;
    tracing::info!(
        %bound,
        workers,
        recv = first.recv_buffer_size().unwrap_or(0),
        send = first.send_buffer_size().unwrap_or(0),
        "relay sockets"
    );
    let mut sockets = vec![UdpSocket::from(first)];
    for _ in 1..workers {
        sockets.push(one_socket(bound, buffer, true)?.into());
    }
    Ok(sockets)
}

/// Starts one worker thread per socket, all serving `relay` until `stop` is
/// set. Answers each worker's counters and thread (or why it could not
/// start).
pub fn spawn_workers(
    relay: &Arc<Relay>,
    sockets: Vec<UdpSocket>,
    gather: Duration,
    stop: &Arc<AtomicBool>,
) -> Vec<(Arc<WorkerStats>, io::Result<std::thread::JoinHandle<()>>)> {
    sockets
        .into_iter()
        .enumerate()
        .map(|(i, socket)| {
            let stats = Arc::new(WorkerStats::default());
            let (relay, stop, s) = (Arc::clone(relay), Arc::clone(stop), Arc::clone(&stats));
            let thread = std::thread::Builder::new()
                .name(format!("babel-relay-{i}"))
                .spawn(move || serve(&relay, socket, gather, &s, &stop));
            (stats, thread)
        })
        .collect()
}

fn to_std(a: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = a.as_sockaddr_in() {
        return Some(SocketAddr::V4((*v4).into()));
    }
    a.as_sockaddr_in6().map(|v6| SocketAddr::V6((*v6).into()))
}

/// Datagrams waiting to go out.
struct Outbox {
    /// One per received datagram of the batch: its answer or forward.
    bufs: Vec<Vec<u8>>,
    /// (index in `bufs`, where, whether a forward).
    pending: Vec<(usize, SocketAddr, bool)>,
    headers: MultiHeaders<SockaddrStorage>,
    /// Forwards the kernel refused since the last look.
    failed_forwards: u64,
}

impl Outbox {
    /// Sends everything pending, `SEND_BATCH` per call. A datagram the
    /// kernel refuses is dropped (and counted) and the rest still go.
    fn flush(&mut self, fd: i32, relay: &Relay, stats: &WorkerStats) {
        let mut at = 0;
        // Each round sends at least one datagram or drops one: bounded.
        while at < self.pending.len() {
            let n = (self.pending.len() - at).min(SEND_BATCH);
            let chunk = &self.pending[at..at + n];
            let iovs: [[IoSlice<'_>; 1]; SEND_BATCH] =
                std::array::from_fn(|i| [IoSlice::new(chunk.get(i).map_or(&[][..], |(b, _, _)| &self.bufs[*b][..]))]);
            let addrs: [Option<SockaddrStorage>; SEND_BATCH] =
                std::array::from_fn(|i| chunk.get(i).map(|(_, to, _)| SockaddrStorage::from(*to)));
            let none: [ControlMessage<'_>; 0] = [];
            stats.send_calls.fetch_add(1, Ordering::Relaxed);
            match sendmmsg(fd, &mut self.headers, iovs[..n].iter(), &addrs[..n], none, MsgFlags::empty()) {
                Ok(done) => {
                    let sent = done.count();
                    stats.sent.fetch_add(sent as u64, Ordering::Relaxed);
                    at += sent;
                    if sent < n {
                        // The datagram at `at` failed (its error is not
                        // reported): skip it.
                        self.skip(at, relay);
                        at += 1;
                    }
                }
                Err(Errno::EINTR) => {}
                Err(e) => {
                    tracing::debug!(error = %e, "relay send error");
                    self.skip(at, relay);
                    at += 1;
                }
            }
        }
        self.pending.clear();
    }

    /// Counts the pending datagram `at` as dropped.
    fn skip(&mut self, at: usize, relay: &Relay) {
        relay.stats.dropped.fetch_add(1, Ordering::Relaxed);
        if self.pending.get(at).is_some_and(|p| p.2) {
            self.failed_forwards += 1;
        }
    }
}

/// Serves `socket` on the calling thread until `stop` is set (checked at
/// least every 200 ms): receives batches, lets [`Relay::handle`] decide
/// each datagram, sends the answers and forwards in batches. Address
/// changes go to the relay's reports channel. Allocates nothing per
/// datagram (an answer to a BIND or CONFIRM excepted).
pub fn serve(relay: &Relay, socket: UdpSocket, gather: Duration, stats: &WorkerStats, stop: &AtomicBool) {
    if let Err(e) = socket.set_nonblocking(false).and_then(|()| socket.set_read_timeout(Some(STOP_CHECK))) {
        tracing::error!(error = %e, "cannot set up a relay socket");
        return;
    }
    let fd = socket.as_raw_fd();
    let mut bufs: Box<[[u8; BUF_LEN]; BATCH]> = Box::new([[0u8; BUF_LEN]; BATCH]);
    let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(BATCH, None);
    let mut out = Outbox {
        bufs: (0..BATCH).map(|_| Vec::with_capacity(BUF_LEN)).collect(),
        pending: Vec::with_capacity(SEND_BATCH),
        headers: MultiHeaders::<SockaddrStorage>::preallocate(SEND_BATCH, None),
        failed_forwards: 0,
    };
    let mut got: [(usize, Option<SocketAddr>); BATCH] = [(0, None); BATCH];
    let mut dests = Vec::with_capacity(8);
    while !stop.load(Ordering::Relaxed) {
        let waiting = Instant::now();
        let n = {
            let mut iovs: [[IoSliceMut<'_>; 1]; BATCH] = bufs.each_mut().map(|b| [IoSliceMut::new(&mut b[..])]);
            match recvmmsg(fd, &mut headers, iovs.iter_mut(), MsgFlags::MSG_WAITFORONE, None) {
                Ok(msgs) => {
                    let mut n = 0;
                    for (slot, m) in got.iter_mut().zip(msgs) {
                        *slot = (m.bytes, m.address.as_ref().and_then(to_std));
                        n += 1;
                    }
                    n
                }
                Err(Errno::EAGAIN | Errno::EINTR) => continue,
                Err(e) => {
                    // ICMP errors from earlier sends surface here on some systems.
                    tracing::debug!(error = %e, "relay receive error");
                    continue;
                }
            }
        };
        let waited = waiting.elapsed();
        stats.batches.fetch_add(1, Ordering::Relaxed);
        stats.received.fetch_add(n as u64, Ordering::Relaxed);
        let mut forwarded = 0u64;
        let mut now = None;
        let mut batch = relay.batch();
        for (i, &(len, from)) in got[..n].iter().enumerate() {
            let Some(from) = from else { continue };
            let datagram = &bufs[i][..len.min(BUF_LEN)];
            // DATA does not look at the clock: spare it the call.
            let t = if datagram.first() == Some(&DATA) { 0 } else { *now.get_or_insert_with(|| relay.now_ms()) };
            match batch.handle(datagram, from, t, &mut dests, &mut out.bufs[i]) {
                Handled::Ack(ack, moved) => {
                    out.bufs[i].clear();
                    out.bufs[i].extend_from_slice(&ack);
                    if out.pending.len() == SEND_BATCH {
                        batch = relay.batch();
                        out.flush(fd, relay, stats);
                    }
                    out.pending.push((i, from, false));
                    if let Some(m) = moved {
                        relay.report(m);
                    }
                }
                Handled::Forward => {
                    for d in &dests {
                        if out.pending.len() == SEND_BATCH {
                            // Not under the lock: a send may wait.
                            batch = relay.batch();
                            out.flush(fd, relay, stats);
                        }
                        out.pending.push((i, *d, true));
                    }
                    forwarded += dests.len() as u64;
                }
                Handled::Dropped => {}
            }
        }
        drop(batch);
        out.flush(fd, relay, stats);
        // Forwards that failed to go out were counted as drops, not forwards.
        let failed = std::mem::take(&mut out.failed_forwards);
        relay.stats.forwarded.fetch_add(forwarded.saturating_sub(failed), Ordering::Relaxed);
        // Under load (this batch came after a wait shorter than `gather`)
        // let the next batch gather for `gather` rather than wake for
        // every datagram; idle, wait for the next datagram as it comes.
        if n < BATCH && !gather.is_zero() && waited < gather {
            std::thread::sleep(gather);
        }
    }
}
