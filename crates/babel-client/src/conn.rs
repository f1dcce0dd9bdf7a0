//! One connection to the server (plain TCP or TLS) with its read buffer.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use babel_proto::{Limits, RawRequest, RawResponse, decode_request, decode_response};
use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use crate::tls::{self, HandshakeError, ServerAddr, TlsOptions, Trust};
use crate::{Backoff, ClientError, Result};

/// Where to connect and, for TLS, whom to trust.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// The server.
    pub addr: ServerAddr,
    /// The trust policy for `tls://` addresses.
    pub tls: Arc<TlsOptions>,
}

impl Endpoint {
    /// Reads `host:port` or `tls://host:port`, with the default trust policy.
    pub fn parse(addr: &str) -> Result<Endpoint> {
        Endpoint::with_tls(addr, Arc::new(TlsOptions::default()))
    }

    /// Reads an address, with the given trust policy.
    pub fn with_tls(addr: &str, tls: Arc<TlsOptions>) -> Result<Endpoint> {
        let addr = addr.parse().map_err(|e: tls::BadAddr| ClientError::Address(e.to_string()))?;
        Ok(Endpoint { addr, tls })
    }
}

/// A TLS handshake that takes longer than this fails.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(15);

/// The byte stream under a connection.
#[derive(Debug)]
enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl Stream {
    fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(s) => s.get_ref().0,
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Answers may be large (a long contact list); events and channel frames
/// follow the protocol's limits.
fn limits() -> Limits {
    Limits { max_data: 16 << 20, ..Limits::default() }
}

/// A connection in request mode (or later, event or channel mode).
#[derive(Debug)]
pub struct Conn {
    stream: Stream,
    buf: BytesMut,
    trust: Option<Trust>,
}

impl Conn {
    /// Opens a connection (and, for `tls://`, runs the handshake and the
    /// trust policy).
    pub async fn open(endpoint: &Endpoint) -> Result<Conn> {
        let addr = &endpoint.addr;
        let connect_err = |source| ClientError::Connect { addr: addr.to_string(), source };
        let tcp = TcpStream::connect(addr.host_port()).await.map_err(connect_err)?;
        let _ = tcp.set_nodelay(true);
        let (stream, trust) = match addr.tls {
            false => (Stream::Plain(tcp), None),
            true => match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls::handshake(tcp, addr, &endpoint.tls)).await {
                Ok(Ok((s, trust))) => (Stream::Tls(Box::new(s)), Some(trust)),
                Ok(Err(HandshakeError::Untrusted(why))) => {
                    return Err(ClientError::Untrusted { server: addr.to_string(), why: Box::new(why) });
                }
                Ok(Err(HandshakeError::Io(e))) => return Err(connect_err(e)),
                Err(_) => {
                    return Err(connect_err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "the TLS handshake did not finish",
                    )));
                }
            },
        };
        Ok(Conn { stream, buf: BytesMut::with_capacity(4096), trust })
    }

    /// How the server was trusted (TLS connections).
    pub fn trust(&self) -> Option<&Trust> {
        self.trust.as_ref()
    }

    /// Opens a connection, retrying with backoff (but not when the server's
    /// certificate was refused: that will not fix itself).
    pub async fn open_with_backoff(endpoint: &Endpoint, backoff: Backoff) -> Result<Conn> {
        let mut attempt = 0;
        loop {
            match Conn::open(endpoint).await {
                Ok(c) => return Ok(c),
                Err(e @ ClientError::Untrusted { .. }) => return Err(e),
                Err(e) if attempt + 1 >= backoff.attempts.max(1) => return Err(e),
                Err(e) => {
                    tracing::debug!(error = %e, attempt, "reconnecting");
                    tokio::time::sleep(backoff.delay(attempt)).await;
                    attempt += 1;
                }
            }
        }
    }

    /// Writes a request-shaped frame.
    pub async fn write_frame(&mut self, frame: &RawRequest) -> Result<()> {
        write_flush(&mut self.stream, &frame.to_bytes()).await
    }

    /// Whether the server has closed this connection while it sat idle (a
    /// real, non-blocking peek: no waiting, nothing consumed).
    pub fn is_closed(&self) -> bool {
        let mut probe = [std::mem::MaybeUninit::<u8>::uninit(); 1];
        match socket2::SockRef::from(self.stream.tcp()).peek(&mut probe) {
            Ok(0) => true,
            // Unasked-for bytes in request mode, or an error: not usable.
            Ok(_) => true,
            Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
        }
    }

    /// Sends a request and reads its response.
    pub async fn request(&mut self, frame: &RawRequest) -> Result<RawResponse> {
        self.write_frame(frame).await?;
        loop {
            if let Some(r) =
                decode_response(&mut self.buf, &limits()).map_err(|e| ClientError::Protocol(e.to_string()))?
            {
                return Ok(r);
            }
            if self.stream.read_buf(&mut self.buf).await.map_err(|_| ClientError::Disconnected)? == 0 {
                return Err(ClientError::Disconnected);
            }
        }
    }

    /// Reads a request-shaped frame (event or channel mode); `Ok(None)` when
    /// the server closed the connection between frames.
    pub async fn read_request_frame(&mut self) -> Result<Option<RawRequest>> {
        read_request_frame(&mut self.stream, &mut self.buf).await
    }

    /// Splits into owned halves (the read half keeps the buffer).
    pub fn split(self) -> (WriteHalf, ReadHalf) {
        let (r, w): (Box<dyn AsyncRead + Send + Unpin>, Box<dyn AsyncWrite + Send + Unpin>) = match self.stream {
            Stream::Plain(s) => {
                let (r, w) = s.into_split();
                (Box::new(r), Box::new(w))
            }
            Stream::Tls(s) => {
                let (r, w) = tokio::io::split(*s);
                (Box::new(r), Box::new(w))
            }
        };
        (WriteHalf { w }, ReadHalf { r, buf: self.buf })
    }
}

/// Writes all of `bytes` and flushes (TLS buffers records until flushed).
async fn write_flush<W: AsyncWrite + Unpin + ?Sized>(w: &mut W, bytes: &[u8]) -> Result<()> {
    w.write_all(bytes).await.map_err(|_| ClientError::Disconnected)?;
    w.flush().await.map_err(|_| ClientError::Disconnected)
}

async fn read_request_frame<R: AsyncReadExt + Unpin>(r: &mut R, buf: &mut BytesMut) -> Result<Option<RawRequest>> {
    loop {
        if let Some(f) = decode_request(buf, &limits()).map_err(|e| ClientError::Protocol(e.to_string()))? {
            return Ok(Some(f));
        }
        match r.read_buf(buf).await {
            Ok(0) if buf.is_empty() => return Ok(None),
            Ok(0) | Err(_) => return Err(ClientError::Disconnected),
            Ok(_) => {}
        }
    }
}

/// The writing half of a split connection.
pub struct WriteHalf {
    w: Box<dyn AsyncWrite + Send + Unpin>,
}

impl std::fmt::Debug for WriteHalf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteHalf").finish_non_exhaustive()
    }
}

impl WriteHalf {
    /// Writes a request-shaped frame.
    pub async fn write_frame(&mut self, frame: &RawRequest) -> Result<()> {
        write_flush(&mut self.w, &frame.to_bytes()).await
    }
}

/// The reading half of a split connection.
pub struct ReadHalf {
    r: Box<dyn AsyncRead + Send + Unpin>,
    buf: BytesMut,
}

impl std::fmt::Debug for ReadHalf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadHalf").field("buffered", &self.buf.len()).finish_non_exhaustive()
    }
}

impl ReadHalf {
    /// Reads a request-shaped frame; `Ok(None)` on a clean close.
    pub async fn read_request_frame(&mut self) -> Result<Option<RawRequest>> {
        read_request_frame(&mut self.r, &mut self.buf).await
    }
}
