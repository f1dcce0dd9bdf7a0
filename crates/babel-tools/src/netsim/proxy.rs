//! The impairment proxies: real sockets driving the pure models of
//! [`super::link`] (UDP) and [`super::stream`] (TCP) with real time.
//!
//! **UDP**: one listening socket. Each client address seen on it is a flow
//! with its own socket towards the target, so the target's answers find
//! their way back; each flow has one [`Link`] per direction (client to
//! target "up", back "down"), with its own random stream drawn from the
//! seed. **TCP**: each accepted connection is joined to a new connection to
//! the target through a [`StreamLink`].
//!
//! Both only ever listen on and connect to 127.0.0.0/8, and stop when their
//! [`CancellationToken`] is cancelled, answering what they did.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::link::{Impairment, Link, LinkCounters};
use super::rng::Rng;
use super::stream::{Direction, StreamCounters, StreamImpairment, StreamLink};

/// A proxy failure.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// Only loopback addresses may be used.
    #[error("{0}: only 127.0.0.0/8 addresses are allowed")]
    NotLoopback(SocketAddr),
    /// A socket could not be set up.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Why it failed.
        source: std::io::Error,
    },
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ProxyError {
    let what = what.into();
    move |source| ProxyError::Io { what, source }
}

fn check(addr: SocketAddr) -> Result<(), ProxyError> {
    if crate::net::is_allowed_target(&addr) { Ok(()) } else { Err(ProxyError::NotLoopback(addr)) }
}

/// What a UDP proxy did, summed over its flows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct UdpCounters {
    /// Client addresses seen.
    pub flows: u64,
    /// Client to target.
    pub up: LinkCounters,
    /// Target to client.
    pub down: LinkCounters,
}

/// A running proxy: where it listens, its live counters, how to stop it.
#[derive(Debug)]
pub struct Running<C> {
    /// The address it listens on.
    pub addr: SocketAddr,
    /// What it did so far (updated as it goes).
    pub counters: Arc<Mutex<C>>,
    /// Cancel to stop it.
    pub stop: CancellationToken,
    /// Ends with the final counters once stopped.
    pub task: JoinHandle<C>,
}

impl<C: Copy> Running<C> {
    /// The counters now.
    pub fn snapshot(&self) -> C {
        *self.counters.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stops the proxy and answers its final counters.
    pub async fn finish(self) -> C {
        self.stop.cancel();
        match self.task.await {
            Ok(c) => c,
            Err(_) => *self.counters.lock().unwrap_or_else(|p| p.into_inner()),
        }
    }
}

struct Flow {
    client: SocketAddr,
    upstream: Arc<UdpSocket>,
    up: Link,
    down: Link,
    reader: JoinHandle<()>,
}

/// Starts a UDP proxy on `listen` (port 0: any free port) towards `to`,
/// applying `up` to what clients send and `down` to what comes back.
pub async fn start_udp(
    listen: SocketAddr,
    to: SocketAddr,
    up: Impairment,
    down: Impairment,
    seed: u64,
) -> Result<Running<UdpCounters>, ProxyError> {
    check(listen)?;
    check(to)?;
    let socket = UdpSocket::bind(listen).await.map_err(io_err(format!("cannot listen on {listen}")))?;
    let addr = socket.local_addr().map_err(io_err("local address"))?;
    let counters = Arc::new(Mutex::new(UdpCounters::default()));
    let stop = CancellationToken::new();
    let task = tokio::spawn(run_udp(socket, to, up, down, seed, counters.clone(), stop.clone()));
    Ok(Running { addr, counters, stop, task })
}

async fn run_udp(
    socket: UdpSocket,
    to: SocketAddr,
    up: Impairment,
    down: Impairment,
    seed: u64,
    shared: Arc<Mutex<UdpCounters>>,
    stop: CancellationToken,
) -> UdpCounters {
    let start = Instant::now();
    let mut flows: Vec<Flow> = Vec::new();
    let mut by_client: HashMap<SocketAddr, usize> = HashMap::new();
    let (tx, mut rx) = mpsc::channel::<(usize, Vec<u8>)>(4096);
    let mut buf = vec![0u8; 65_536];
    loop {
        let due = flows.iter().flat_map(|f| [f.up.next_due(), f.down.next_due()]).flatten().min();
        let wake = async {
            match due {
                Some(d) => tokio::time::sleep_until(start + d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = socket.recv_from(&mut buf) => {
                let Ok((n, from)) = r else { continue };
                let now = start.elapsed();
                let i = match by_client.get(&from) {
                    Some(&i) => i,
                    None => {
                        let Some(flow) = new_flow(flows.len(), from, to, up, down, seed, tx.clone()).await else { continue };
                        flows.push(flow);
                        by_client.insert(from, flows.len() - 1);
                        flows.len() - 1
                    }
                };
                flows[i].up.push(now, buf[..n].to_vec());
            }
            Some((i, data)) = rx.recv() => {
                let now = start.elapsed();
                if let Some(f) = flows.get_mut(i) {
                    f.down.push(now, data);
                }
            }
            _ = wake => {}
            _ = stop.cancelled() => break,
        }
        let now = start.elapsed();
        for f in flows.iter_mut() {
            while let Some(d) = f.up.poll(now) {
                let _ = f.upstream.send(&d).await;
            }
            while let Some(d) = f.down.poll(now) {
                let _ = socket.send_to(&d, f.client).await;
            }
        }
        *shared.lock().unwrap_or_else(|p| p.into_inner()) = sum_udp(&flows);
    }
    for f in &flows {
        f.reader.abort();
    }
    let total = sum_udp(&flows);
    *shared.lock().unwrap_or_else(|p| p.into_inner()) = total;
    total
}

fn sum_udp(flows: &[Flow]) -> UdpCounters {
    let mut c = UdpCounters { flows: flows.len() as u64, ..UdpCounters::default() };
    for f in flows {
        c.up.add(&f.up.counters());
        c.down.add(&f.down.counters());
    }
    c
}

async fn new_flow(
    index: usize,
    client: SocketAddr,
    to: SocketAddr,
    up: Impairment,
    down: Impairment,
    seed: u64,
    tx: mpsc::Sender<(usize, Vec<u8>)>,
) -> Option<Flow> {
    let upstream = Arc::new(UdpSocket::bind(SocketAddr::new(to.ip(), 0)).await.ok()?);
    upstream.connect(to).await.ok()?;
    let reader_socket = upstream.clone();
    let reader = tokio::spawn(async move {
        let mut buf = vec![0u8; 65_536];
        loop {
            match reader_socket.recv(&mut buf).await {
                Ok(n) => {
                    if tx.send((index, buf[..n].to_vec())).await.is_err() {
                        break;
                    }
                }
                // ICMP "port unreachable" from a target not yet listening.
                Err(_) => tokio::time::sleep(Duration::from_millis(1)).await,
            }
        }
    });
    let stream = index as u64 * 2;
    Some(Flow {
        client,
        upstream,
        up: Link::new(up, Rng::with_stream(seed, stream)),
        down: Link::new(down, Rng::with_stream(seed, stream + 1)),
        reader,
    })
}

/// Starts a TCP proxy on `listen` towards `to`.
pub async fn start_tcp(
    listen: SocketAddr,
    to: SocketAddr,
    cfg: StreamImpairment,
    seed: u64,
) -> Result<Running<StreamCounters>, ProxyError> {
    check(listen)?;
    check(to)?;
    let listener = TcpListener::bind(listen).await.map_err(io_err(format!("cannot listen on {listen}")))?;
    let addr = listener.local_addr().map_err(io_err("local address"))?;
    let counters = Arc::new(Mutex::new(StreamCounters::default()));
    let stop = CancellationToken::new();
    let shared = counters.clone();
    let token = stop.clone();
    let task = tokio::spawn(async move {
        let start = Instant::now();
        let mut conns: Vec<JoinHandle<()>> = Vec::new();
        let mut index = 0u64;
        loop {
            tokio::select! {
                r = listener.accept() => {
                    let Ok((client, _)) = r else { continue };
                    let _ = client.set_nodelay(true);
                    let link = StreamLink::new(cfg, Rng::with_stream(seed, index), start.elapsed());
                    index += 1;
                    conns.push(tokio::spawn(run_tcp_conn(client, to, link, start, shared.clone(), token.clone())));
                }
                _ = token.cancelled() => break,
            }
            conns.retain(|c| !c.is_finished());
        }
        for c in conns {
            let _ = c.await;
        }
        *shared.lock().unwrap_or_else(|p| p.into_inner())
    });
    Ok(Running { addr, counters, stop, task })
}

async fn run_tcp_conn(
    mut client: TcpStream,
    to: SocketAddr,
    mut link: StreamLink,
    start: Instant,
    shared: Arc<Mutex<StreamCounters>>,
    stop: CancellationToken,
) {
    let mut reported = StreamCounters::default();
    let report = |link: &StreamLink, reported: &mut StreamCounters| {
        let now = link.counters();
        let mut s = shared.lock().unwrap_or_else(|p| p.into_inner());
        s.connections += now.connections - reported.connections;
        s.bytes_in += now.bytes_in - reported.bytes_in;
        s.bytes_out += now.bytes_out - reported.bytes_out;
        s.stalls += now.stalls - reported.stalls;
        s.cuts += now.cuts - reported.cuts;
        *reported = now;
    };
    let Ok(mut target) = TcpStream::connect(to).await else {
        report(&link, &mut reported);
        return;
    };
    let _ = target.set_nodelay(true);
    let (mut cr, mut cw) = client.split();
    let (mut tr, mut tw) = target.split();
    let (mut cbuf, mut tbuf) = (vec![0u8; 16_384], vec![0u8; 16_384]);
    let (mut client_eof, mut target_eof) = (false, false);
    let (mut up_shut, mut down_shut) = (false, false);
    loop {
        let wake = link.next_event();
        let sleep = async {
            match wake {
                Some(d) => tokio::time::sleep_until(start + d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = cr.read(&mut cbuf), if !client_eof => match r {
                Ok(0) | Err(_) => client_eof = true,
                Ok(n) => link.push(start.elapsed(), Direction::Up, &cbuf[..n]),
            },
            r = tr.read(&mut tbuf), if !target_eof => match r {
                Ok(0) | Err(_) => target_eof = true,
                Ok(n) => link.push(start.elapsed(), Direction::Down, &tbuf[..n]),
            },
            _ = sleep => {}
            _ = stop.cancelled() => break,
        }
        let now = start.elapsed();
        if link.cut_due(now) {
            break;
        }
        while let Some(d) = link.poll(now, Direction::Up) {
            if tw.write_all(&d).await.is_err() {
                target_eof = true;
            }
        }
        while let Some(d) = link.poll(now, Direction::Down) {
            if cw.write_all(&d).await.is_err() {
                client_eof = true;
            }
        }
        if client_eof && !up_shut && link.pending(Direction::Up) == 0 {
            let _ = tw.shutdown().await;
            up_shut = true;
        }
        if target_eof && !down_shut && link.pending(Direction::Down) == 0 {
            let _ = cw.shutdown().await;
            down_shut = true;
        }
        report(&link, &mut reported);
        if up_shut && down_shut {
            break;
        }
    }
    report(&link, &mut reported);
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::netsim::GilbertElliott;

    #[tokio::test]
    async fn udp_proxy_applies_loss_both_ways_and_counts_it() {
        let target = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let cfg = Impairment { loss: 0.2, delay: Duration::from_millis(5), ..Impairment::default() };
        let proxy = start_udp("127.0.0.1:0".parse().unwrap(), target.local_addr().unwrap(), cfg, cfg, 1).await.unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        // An echo server behind the proxy.
        let echo = tokio::spawn(async move {
            let mut buf = [0u8; 64];
            while let Ok(Ok((n, from))) = tokio::time::timeout(Duration::from_secs(1), target.recv_from(&mut buf)).await
            {
                let _ = target.send_to(&buf[..n], from).await;
            }
        });
        let n = 500;
        for i in 0..n {
            client.send_to(&u32::to_be_bytes(i), proxy.addr).await.unwrap();
            if i % 50 == 0 {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
        let mut back = 0;
        let mut buf = [0u8; 64];
        while let Ok(Ok(_)) = tokio::time::timeout(Duration::from_millis(300), client.recv(&mut buf)).await {
            back += 1;
        }
        echo.await.unwrap();
        let c = proxy.finish().await;
        assert_eq!(c.flows, 1);
        assert_eq!(c.up.received, u64::from(n));
        assert_eq!(c.down.received, c.up.delivered);
        assert_eq!(c.down.delivered, back);
        // 0.8 · 0.8 of the datagrams make the round trip.
        let rate = back as f64 / f64::from(n);
        assert!((0.55..0.73).contains(&rate), "{rate} came back");
        assert_eq!(c.up.dropped_random + c.up.delivered, c.up.received);
    }

    #[tokio::test]
    async fn udp_proxy_refuses_other_addresses() {
        let r = start_udp(
            "127.0.0.1:0".parse().unwrap(),
            "10.1.1.1:9".parse().unwrap(),
            Impairment::default(),
            Impairment { burst: Some(GilbertElliott::from_loss_and_burst(0.1, 2.0)), ..Impairment::default() },
            1,
        )
        .await;
        assert!(matches!(r, Err(ProxyError::NotLoopback(_))));
    }

    #[tokio::test]
    async fn tcp_proxy_delays_and_cuts() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        let cfg = StreamImpairment { delay: Duration::from_millis(30), ..StreamImpairment::default() };
        let proxy = start_tcp("127.0.0.1:0".parse().unwrap(), target, cfg, 1).await.unwrap();
        let mut c = TcpStream::connect(proxy.addr).await.unwrap();
        let t = std::time::Instant::now();
        c.write_all(b"hello").await.unwrap();
        let mut buf = [0u8; 5];
        c.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"hello");
        let rtt = t.elapsed();
        assert!(rtt >= Duration::from_millis(60) && rtt < Duration::from_millis(200), "{rtt:?}");
        drop(c);
        let counters = proxy.finish().await;
        assert_eq!(counters.connections, 1);
        assert_eq!(counters.bytes_out, 10);

        // A connection cut after ~100 ms.
        let cfg = StreamImpairment { cut_after: Some(Duration::from_millis(100)), ..StreamImpairment::default() };
        let proxy = start_tcp("127.0.0.1:0".parse().unwrap(), target, cfg, 2).await.unwrap();
        let mut c = TcpStream::connect(proxy.addr).await.unwrap();
        let closed = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                if c.write_all(b"x").await.is_err() {
                    return;
                }
                let mut b = [0u8; 1];
                match tokio::time::timeout(Duration::from_millis(50), c.read(&mut b)).await {
                    Ok(Ok(0)) | Ok(Err(_)) => return,
                    _ => {}
                }
            }
        })
        .await;
        assert!(closed.is_ok(), "the connection is cut");
        let counters = proxy.finish().await;
        assert_eq!(counters.cuts, 1);
    }
}
