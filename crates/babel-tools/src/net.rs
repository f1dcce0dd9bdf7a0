//! Sockets: the loopback-only rule, source-address spreading, and a cheap
//! response reader that looks at the 8-byte prefix and skips the body.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use babel_proto::{Limits, RawResponse, decode_response};
use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Largest response body the reader accepts (a `/contacts` answer is ~1 KiB).
pub const MAX_BODY: usize = 16 * 1024 * 1024;

/// Most distinct source addresses (`127.0.0.2` up to `127.0.0.251`).
pub const MAX_SOURCE_IPS: usize = 250;

/// Whether the tools may connect to `addr`: IPv4 loopback (127.0.0.0/8) only.
pub fn is_allowed_target(addr: &SocketAddr) -> bool {
    matches!(addr.ip(), IpAddr::V4(v4) if v4.octets()[0] == 127)
}

/// Refuses any address outside 127.0.0.0/8.
pub fn check_target(addr: &SocketAddr) -> anyhow::Result<()> {
    anyhow::ensure!(is_allowed_target(addr), "refusing to connect to {addr}: only 127.0.0.0/8 addresses are allowed");
    Ok(())
}

/// The source address for the `i`-th connection when spreading over `n`
/// addresses (`127.0.0.2 ..= 127.0.0.(n+1)`), or `None` when `n` is 0 (let
/// the kernel choose).
pub fn source_ip(i: usize, n: usize) -> Option<Ipv4Addr> {
    let n = n.min(MAX_SOURCE_IPS);
    if n == 0 {
        return None;
    }
    let last = u8::try_from(2 + i % n).unwrap_or(2);
    Some(Ipv4Addr::new(127, 0, 0, last))
}

/// Connects to a loopback `target`, from `source:0` when given, with
/// `TCP_NODELAY` (the server sets it too).
pub async fn connect(target: SocketAddr, source: Option<Ipv4Addr>) -> io::Result<TcpStream> {
    if !is_allowed_target(&target) {
        return Err(io::Error::new(io::ErrorKind::PermissionDenied, "only 127.0.0.0/8 targets are allowed"));
    }
    let socket = TcpSocket::new_v4()?;
    if let Some(ip) = source {
        socket.bind(SocketAddr::new(IpAddr::V4(ip), 0))?;
    }
    let stream = socket.connect(target).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// [`connect`] with a time limit.
pub async fn connect_timeout(target: SocketAddr, source: Option<Ipv4Addr>, limit: Duration) -> io::Result<TcpStream> {
    match tokio::time::timeout(limit, connect(target, source)).await {
        Ok(r) => r,
        Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out")),
    }
}

/// Reads the `(status, data_len)` prefix of the response frame at the start
/// of `buf`; `Ok(None)` when fewer than 8 bytes are there.
pub fn parse_response_prefix(buf: &[u8]) -> io::Result<Option<(i32, usize)>> {
    let (Some(s), Some(l)) = (buf.get(0..4), buf.get(4..8)) else {
        return Ok(None);
    };
    let status = i32::from_be_bytes([s[0], s[1], s[2], s[3]]);
    let len = i32::from_be_bytes([l[0], l[1], l[2], l[3]]);
    match usize::try_from(len) {
        Ok(n) if n <= MAX_BODY => Ok(Some((status, n))),
        _ => Err(io::Error::new(io::ErrorKind::InvalidData, format!("response data length {len} out of range"))),
    }
}

/// Reads response frames off a stream, keeping only status and body length.
#[derive(Debug)]
pub struct ResponseReader {
    buf: BytesMut,
}

impl Default for ResponseReader {
    fn default() -> Self {
        Self::new()
    }
}

impl ResponseReader {
    /// A reader with a small buffer.
    pub fn new() -> Self {
        Self { buf: BytesMut::with_capacity(4096) }
    }

    /// Takes one whole buffered frame, if there is one: `(status, data_len)`.
    pub fn take_buffered(&mut self) -> io::Result<Option<(i32, usize)>> {
        let Some((status, len)) = parse_response_prefix(&self.buf)? else {
            return Ok(None);
        };
        let total = 8 + len;
        if self.buf.len() < total {
            self.buf.reserve(total - self.buf.len());
            return Ok(None);
        }
        self.buf.advance(total);
        Ok(Some((status, len)))
    }

    /// Reads the next response: `(status, data_len)`.
    pub async fn read<R: AsyncRead + Unpin>(&mut self, r: &mut R) -> io::Result<(i32, usize)> {
        loop {
            if let Some(x) = self.take_buffered()? {
                return Ok(x);
            }
            if self.buf.capacity() - self.buf.len() < 1024 {
                self.buf.reserve(4096);
            }
            if r.read_buf(&mut self.buf).await? == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "server closed the connection"));
            }
        }
    }

    /// Reads the next response with its data (for setup, not the hot path).
    pub async fn read_full<R: AsyncRead + Unpin>(&mut self, r: &mut R) -> io::Result<RawResponse> {
        let limits = Limits { max_data: MAX_BODY, ..Limits::default() };
        loop {
            match decode_response(&mut self.buf, &limits) {
                Ok(Some(resp)) => return Ok(resp),
                Ok(None) => {}
                Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
            }
            self.buf.reserve(4096);
            if r.read_buf(&mut self.buf).await? == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "server closed the connection"));
            }
        }
    }
}

/// Sends one pre-encoded request and reads its whole answer, within `limit`.
pub async fn round_trip(
    stream: &mut TcpStream,
    reader: &mut ResponseReader,
    request: &[u8],
    limit: Duration,
) -> io::Result<RawResponse> {
    let work = async {
        stream.write_all(request).await?;
        reader.read_full(stream).await
    };
    match tokio::time::timeout(limit, work).await {
        Ok(r) => r,
        Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "no answer in time")),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn only_loopback_v4_is_allowed() {
        for ok in ["127.0.0.1:7447", "127.1.2.3:1"] {
            assert!(is_allowed_target(&ok.parse().unwrap()), "{ok}");
        }
        for bad in ["10.0.0.1:7447", "0.0.0.0:1", "[::1]:7447", "8.8.8.8:53"] {
            assert!(!is_allowed_target(&bad.parse().unwrap()), "{bad}");
        }
    }

    #[test]
    fn source_ips_cycle() {
        assert_eq!(source_ip(0, 0), None);
        assert_eq!(source_ip(0, 4), Some(Ipv4Addr::new(127, 0, 0, 2)));
        assert_eq!(source_ip(5, 4), Some(Ipv4Addr::new(127, 0, 0, 3)));
        assert_eq!(source_ip(249, 1000), Some(Ipv4Addr::new(127, 0, 0, 251)));
    }

    #[test]
    fn prefix_and_buffered_frames() {
        let mut r = ResponseReader::new();
        let a = RawResponse::new(200, "[1,2]").to_bytes();
        let b = RawResponse::new(401, "").to_bytes();
        r.buf.extend_from_slice(&a[..6]);
        assert_eq!(r.take_buffered().unwrap(), None);
        r.buf.extend_from_slice(&a[6..]);
        r.buf.extend_from_slice(&b);
        assert_eq!(r.take_buffered().unwrap(), Some((200, 5)));
        assert_eq!(r.take_buffered().unwrap(), Some((401, 0)));
        assert_eq!(r.take_buffered().unwrap(), None);
        let bad = RawResponse::new(200, "").to_bytes();
        let mut bad = bad.to_vec();
        bad[4] = 0xff; // negative length
        assert!(parse_response_prefix(&bad).is_err());
    }
}
