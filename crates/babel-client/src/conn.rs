//! One connection to a server (plain TCP or TLS) with its read buffer, and
//! the [`Endpoint`] that says which server of a list it goes to.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use babel_proto::{Limits, RawRequest, RawResponse, decode_request, decode_response};
use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use crate::servers::ServerList;
use crate::tls::{self, HandshakeError, ServerAddr, TlsOptions, Trust};
use crate::{Backoff, ClientError, Result};

/// How long one attempt at one server may take (the TCP connection, the
/// TLS handshake, and for an event stream or call channel its first
/// answer) before the next server of the list is tried.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);

/// Where to connect and, for TLS, whom to trust: one server or a list of
/// them (the nodes of a cluster).
///
/// A connection goes to the node that worked last (the first of the list
/// to begin with) and, when that one cannot be reached within
/// [`ATTEMPT_TIMEOUT`], to the next, around the list once. A node whose
/// connection broke is left for the next one. Clones share which node
/// that is, so a client's requests follow its event stream to the node it
/// moved to.
#[derive(Debug, Clone)]
pub struct Endpoint {
    servers: Arc<ServerList>,
    /// The trust policy for `tls://` addresses.
    pub tls: Arc<TlsOptions>,
    attempt_timeout: Duration,
    current: Arc<AtomicUsize>,
}

impl Endpoint {
    /// Reads `host:port` or `tls://host:port`, or a comma-separated list of
    /// them, with the default trust policy.
    pub fn parse(addr: &str) -> Result<Endpoint> {
        Endpoint::with_tls(addr, Arc::new(TlsOptions::default()))
    }

    /// Reads an address or a list, with the given trust policy.
    pub fn with_tls(addr: &str, tls: Arc<TlsOptions>) -> Result<Endpoint> {
        let servers = addr.parse().map_err(|e: tls::BadAddr| ClientError::Address(e.to_string()))?;
        Ok(Endpoint::new(servers, tls))
    }

    /// The servers with the given trust policy.
    pub fn new(servers: ServerList, tls: Arc<TlsOptions>) -> Endpoint {
        Endpoint {
            servers: Arc::new(servers),
            tls,
            attempt_timeout: ATTEMPT_TIMEOUT,
            current: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Sets how long one attempt at one server may take (default
    /// [`ATTEMPT_TIMEOUT`]).
    pub fn with_attempt_timeout(mut self, timeout: Duration) -> Self {
        self.attempt_timeout = timeout;
        self
    }

    /// The servers, in the order given.
    pub fn servers(&self) -> &ServerList {
        &self.servers
    }

    /// The server the next connection tries first (the one that worked
    /// last).
    pub fn current(&self) -> &ServerAddr {
        self.servers.get(self.current.load(Ordering::Relaxed))
    }

    /// Says that `addr`'s connection broke or went silent: unless another
    /// connection has already moved on, the next one starts with the node
    /// after it.
    pub(crate) fn failed(&self, addr: &ServerAddr) {
        let n = self.servers.len();
        if let Some(i) = self.servers.addrs().iter().position(|a| a == addr) {
            let _ = self.current.compare_exchange(i, (i + 1) % n, Ordering::Relaxed, Ordering::Relaxed);
        }
    }

    /// Opens a connection to the first server that can be reached and runs
    /// `setup` on it (a subscription, a call channel's request), each
    /// attempt bounded by the attempt timeout; the node that succeeds, or
    /// that answers with an error status, becomes the current one. When
    /// every server fails: that error for a single server, else
    /// [`ClientError::NoServer`] with each one's.
    pub(crate) async fn first<T, F, Fut>(&self, mut setup: F) -> Result<T>
    where
        F: FnMut(Conn) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let n = self.servers.len();
        let start = self.current.load(Ordering::Relaxed) % n;
        let mut failures = Vec::with_capacity(n);
        for k in 0..n {
            let i = (start + k) % n;
            let addr = self.servers.get(i);
            let attempt = async {
                let conn = Conn::open_one(addr, &self.tls).await?;
                setup(conn).await
            };
            match tokio::time::timeout(self.attempt_timeout, attempt).await {
                Ok(Ok(t)) => {
                    self.current.store(i, Ordering::Relaxed);
                    return Ok(t);
                }
                // The node answered: it is up, and another would say the same.
                Ok(Err(e @ ClientError::Server(_))) => {
                    self.current.store(i, Ordering::Relaxed);
                    return Err(e);
                }
                Ok(Err(e)) => {
                    tracing::debug!(server = %addr, error = %e, "server unavailable");
                    failures.push(e);
                }
                Err(_) => {
                    tracing::debug!(server = %addr, "server did not answer in time");
                    failures.push(ClientError::Connect {
                        addr: addr.to_string(),
                        source: std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            format!("no answer within {} s", self.attempt_timeout.as_secs_f32()),
                        ),
                    });
                }
            }
        }
        match failures.len() {
            1 => Err(failures.remove(0)),
            _ => Err(ClientError::NoServer(failures)),
        }
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
    server: ServerAddr,
}

impl Conn {
    /// Opens a connection to the first server of the list that can be
    /// reached (and, for `tls://`, runs the handshake and the trust policy).
    pub async fn open(endpoint: &Endpoint) -> Result<Conn> {
        endpoint.first(|c| async move { Ok(c) }).await
    }

    /// Opens a connection to one server.
    async fn open_one(addr: &ServerAddr, tls: &Arc<TlsOptions>) -> Result<Conn> {
        let connect_err = |source| ClientError::Connect { addr: addr.to_string(), source };
        let tcp = TcpStream::connect(addr.host_port()).await.map_err(connect_err)?;
        let _ = tcp.set_nodelay(true);
        let (stream, trust) = match addr.tls {
            false => (Stream::Plain(tcp), None),
            true => match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls::handshake(tcp, addr, tls)).await {
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
        Ok(Conn { stream, buf: BytesMut::with_capacity(4096), trust, server: addr.clone() })
    }

    /// The server this connection is to.
    pub fn server(&self) -> &ServerAddr {
        &self.server
    }

    /// How the server was trusted (TLS connections).
    pub fn trust(&self) -> Option<&Trust> {
        self.trust.as_ref()
    }

    /// Opens a connection, going round the list again with backoff (but
    /// not when every server's certificate was refused: that will not fix
    /// itself).
    pub async fn open_with_backoff(endpoint: &Endpoint, backoff: Backoff) -> Result<Conn> {
        let mut attempt = 0;
        loop {
            match Conn::open(endpoint).await {
                Ok(c) => return Ok(c),
                Err(e) if e.is_untrusted() => return Err(e),
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A port nothing listens on (bound, then let go).
    fn dead_port() -> String {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    }

    fn endpoint(list: &str) -> Endpoint {
        Endpoint::with_tls(list, Arc::new(TlsOptions { known_servers: None, ..TlsOptions::default() }))
            .unwrap()
            .with_attempt_timeout(Duration::from_millis(500))
    }

    #[tokio::test]
    async fn the_list_is_tried_in_turn_from_the_node_that_worked_last() {
        let (one, two) = (
            tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
            tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        );
        let (one, _two) = (one.local_addr().unwrap().to_string(), two);
        let two = _two.local_addr().unwrap().to_string();
        let dead = dead_port();
        let e = endpoint(&format!("{dead},{one},{two}"));
        let c = Conn::open(&e).await.unwrap();
        assert_eq!(c.server().to_string(), one, "the dead first node is skipped");
        assert_eq!(e.current().to_string(), one);
        // A clone shares the choice; a failure of another node moves nothing.
        let clone = e.clone();
        e.failed(&dead.parse().unwrap());
        assert_eq!(clone.current().to_string(), one);
        e.failed(c.server());
        assert_eq!(clone.current().to_string(), two, "after a failure the next node comes first");
        assert_eq!(Conn::open(&clone).await.unwrap().server().to_string(), two);
        // From the last node the list wraps around (past the dead one).
        e.failed(&two.parse().unwrap());
        assert_eq!(Conn::open(&e).await.unwrap().server().to_string(), one);
    }

    #[tokio::test]
    async fn every_node_down_names_each_one_and_a_silent_node_is_given_up_on() {
        let (a, b) = (dead_port(), dead_port());
        let err = Conn::open(&endpoint(&format!("{a},{b}"))).await.unwrap_err();
        assert!(matches!(&err, ClientError::NoServer(all) if all.len() == 2), "{err:?}");
        assert!(err.is_unreachable() && !err.is_untrusted());
        let text = err.to_string();
        assert!(text.contains(&a) && text.contains(&b), "{text}");
        // One server alone keeps its own error.
        assert!(matches!(Conn::open(&endpoint(&a)).await.unwrap_err(), ClientError::Connect { .. }));

        // A node that accepts but never answers costs one attempt timeout.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let s = silent.local_addr().unwrap().to_string();
        let _held = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((c, _)) = silent.accept().await {
                held.push(c);
            }
        });
        let e = endpoint(&format!("{s},{a}"));
        let frame = RawRequest::default();
        let started = std::time::Instant::now();
        let err = e
            .first(|mut c| {
                let f = frame.clone();
                async move { c.request(&f).await }
            })
            .await
            .unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
        let text = err.to_string();
        assert!(text.contains(&s) && text.contains("no answer within"), "{text}");
    }
}
