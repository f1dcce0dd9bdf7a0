//! The bare UDP forwarder (`babel-udp-forward`): the ceiling the relay
//! benchmark compares `babel-server`'s media relay with.
//!
//! One socket, one thread, blocking calls. A registration datagram
//! `[0x01][handle u32]` records its source address for that handle and is
//! answered `[0x02][handle u32]`; a data datagram `[0x03][handle u32][payload]`
//! is sent on unchanged to the address registered for `handle ^ 1` (the pair
//! partner). No tags, no checks, no call table: the cost of moving a
//! datagram in and out of one socket, which any relay pays.

use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use serde::Serialize;

/// Registration type byte (the bare analogue of BIND).
pub const REGISTER: u8 = 0x01;
/// Registration answer type byte.
pub const REGISTERED: u8 = 0x02;
/// Data type byte.
pub const DATA: u8 = 0x03;
/// Header of every forwarder datagram: type byte and handle.
pub const HEADER: usize = 5;

/// What one datagram asks of the forwarder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Remember the source address for this handle.
    Register(u32),
    /// Forward the datagram, unchanged, to this handle's address.
    Forward(u32),
    /// Not ours.
    Ignore,
}

/// The handle in bytes 1..5, if present.
pub fn handle_of(datagram: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(datagram.get(1..HEADER)?.try_into().ok()?))
}

/// Reads one datagram.
pub fn classify(datagram: &[u8]) -> Action {
    match (datagram.first(), handle_of(datagram)) {
        (Some(&REGISTER), Some(h)) => Action::Register(h),
        (Some(&DATA), Some(h)) => Action::Forward(h ^ 1),
        _ => Action::Ignore,
    }
}

/// `[type][handle]`: a registration, its answer, or a data header.
pub fn header(kind: u8, handle: u32) -> [u8; HEADER] {
    let h = handle.to_be_bytes();
    [kind, h[0], h[1], h[2], h[3]]
}

/// What the forwarder counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ForwardStats {
    /// Registrations recorded.
    pub registered: u64,
    /// Datagrams forwarded.
    pub forwarded: u64,
    /// Datagrams ignored (unknown type, partner not registered, send error).
    pub ignored: u64,
}

/// Serves `socket` until `limit` has passed (checked whenever the socket
/// has been idle for a second, and every 65 536 datagrams).
pub fn serve(socket: &UdpSocket, limit: Duration) -> io::Result<ForwardStats> {
    let deadline = Instant::now() + limit;
    socket.set_read_timeout(Some(Duration::from_secs(1)))?;
    let mut table: HashMap<u32, SocketAddr> = HashMap::new();
    let mut stats = ForwardStats::default();
    let mut buf = vec![0u8; 2048];
    let mut since_check: u32 = 0;
    loop {
        since_check = since_check.wrapping_add(1);
        if since_check % 65_536 == 0 && Instant::now() >= deadline {
            return Ok(stats);
        }
        let (n, from) = match socket.recv_from(&mut buf) {
            Ok(x) => x,
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                if Instant::now() >= deadline {
                    return Ok(stats);
                }
                continue;
            }
            // ICMP errors from earlier sends surface here on Linux.
            Err(_) => continue,
        };
        let datagram = &buf[..n];
        match classify(datagram) {
            Action::Register(h) => {
                table.insert(h, from);
                stats.registered += 1;
                let _ = socket.send_to(&header(REGISTERED, h), from);
            }
            Action::Forward(to) => match table.get(&to) {
                Some(addr) if socket.send_to(datagram, addr).is_ok() => stats.forwarded += 1,
                _ => stats.ignored += 1,
            },
            Action::Ignore => stats.ignored += 1,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn classify_datagrams() {
        assert_eq!(classify(&header(REGISTER, 7)), Action::Register(7));
        let mut d = header(DATA, 6).to_vec();
        d.extend_from_slice(b"voice");
        assert_eq!(classify(&d), Action::Forward(7));
        assert_eq!(classify(&header(DATA, 7)), Action::Forward(6));
        assert_eq!(classify(&[DATA, 0, 0]), Action::Ignore);
        assert_eq!(classify(&[]), Action::Ignore);
        assert_eq!(classify(&header(0x09, 1)), Action::Ignore);
    }

    #[test]
    fn forwards_between_partners() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = server.local_addr().unwrap();
        let t = std::thread::spawn(move || serve(&server, Duration::from_millis(1500)).unwrap());
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        a.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        b.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 64];
        for (s, h) in [(&a, 10u32), (&b, 11)] {
            s.send_to(&header(REGISTER, h), addr).unwrap();
            let n = s.recv(&mut buf).unwrap();
            assert_eq!(&buf[..n], &header(REGISTERED, h));
        }
        let mut d = header(DATA, 10).to_vec();
        d.extend_from_slice(b"hello");
        a.send_to(&d, addr).unwrap();
        let n = b.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], &d[..]);
        let stats = t.join().unwrap();
        assert_eq!((stats.registered, stats.forwarded), (2, 1));
    }
}
