//! One TCP connection in request mode: read frames, answer each in order.
//!
//! [`Connection`] owns the socket and its buffers and runs the parse/read
//! loop (as in tokio's mini-redis). Answers to pipelined requests are
//! batched and flushed once no whole frame is left in the input buffer.
//!
//! Time limits: a frame whose first byte has arrived must be complete within
//! the frame timeout (so a slow sender cannot pin a connection), and a write
//! that makes no progress for as long closes the connection (so a client that
//! never reads cannot either). An idle connection, with nothing half-sent,
//! stays open as long as the client likes once it has authenticated:
//! presence depends on it. One that has not authenticated within the
//! authentication timeout is closed (silent sockets must not pile up).

use std::sync::Arc;
use std::time::Duration;

use babel_proto::{FrameError, Limits, RawRequest, RawResponse, Reply, ServerEvent, decode_request};
use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::admission::Ticket;
use crate::app::{App, ChannelMode, Outcome};
use crate::hub::Subscription;
use crate::transport::Transport;

/// Per-connection settings.
#[derive(Debug, Clone)]
pub struct ConnSettings {
    /// Frame size limits.
    pub limits: Limits,
    /// Half-frame and stalled-write timeout.
    pub frame_timeout: Duration,
    /// How soon a peer that vanished without closing TCP is dropped.
    pub dead_peer: Duration,
    /// How long a connection may stay open without authenticating.
    pub auth_timeout: Duration,
}

/// Why reading stopped.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The frame prefix was invalid; answer 400 and close.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// A frame was started but not finished in time.
    #[error("frame not completed within {0:?}")]
    Timeout(Duration),
    /// The peer closed in the middle of a frame.
    #[error("connection closed in the middle of a frame")]
    Truncated,
    /// Socket error.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// A socket with its read and write buffers.
#[derive(Debug)]
pub struct Connection<S> {
    stream: S,
    rbuf: BytesMut,
    wbuf: BytesMut,
    settings: Arc<ConnSettings>,
    /// When the first byte of the frame now being received arrived.
    frame_started: Option<Instant>,
    /// Once the server is stopping: until when bytes already on their way
    /// are still taken (one window per connection, so a peer that keeps
    /// sending cannot keep a stopping server alive).
    stopping_until: Option<Instant>,
}

const READ_CHUNK: usize = 4096;
/// How long a connection waits for bytes already on their way at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_millis(100);
/// A buffer grown past this by one large frame is given back once empty.
const KEEP_CAPACITY: usize = 64 * 1024;

impl<S: Transport> Connection<S> {
    /// Wraps an accepted socket.
    pub fn new(stream: S, settings: Arc<ConnSettings>) -> Self {
        Self {
            stream,
            rbuf: BytesMut::new(),
            wbuf: BytesMut::new(),
            settings,
            frame_started: None,
            stopping_until: None,
        }
    }

    /// Reads the next request frame. `Ok(None)` when the peer closed cleanly
    /// between frames or the server is shutting down.
    pub async fn read_request(&mut self, cancel: &CancellationToken) -> Result<Option<RawRequest>, ReadError> {
        loop {
            if let Some(frame) = decode_request(&mut self.rbuf, &self.settings.limits)? {
                self.frame_started = (!self.rbuf.is_empty()).then(Instant::now);
                return Ok(Some(frame));
            }
            // Nothing whole is buffered: send what we owe before waiting.
            self.flush().await?;
            if cancel.is_cancelled() {
                // Stopping: answer what the peer has already sent, waiting a
                // moment for bytes still on their way, then close.
                let grace = *self.stopping_until.get_or_insert_with(|| Instant::now() + SHUTDOWN_GRACE);
                self.rbuf.reserve(READ_CHUNK);
                return match tokio::time::timeout_at(grace, self.stream.read_buf(&mut self.rbuf)).await {
                    Ok(Ok(n)) if n > 0 => Ok(decode_request(&mut self.rbuf, &self.settings.limits)?),
                    _ => Ok(None),
                };
            }
            let n = match self.frame_started {
                None => {
                    // Idle, nothing half-received: hold no buffer while
                    // waiting, since most connections spend their life here.
                    if self.rbuf.is_empty() {
                        self.rbuf = BytesMut::new();
                    }
                    tokio::select! {
                        r = self.stream.read_idle(&mut self.rbuf) => match r? {
                            Some(n) => n,
                            None => continue,
                        },
                        _ = cancel.cancelled() => continue,
                    }
                }
                Some(start) => {
                    if let Ok(Some(total)) = babel_proto::frame::request_frame_len(&self.rbuf, &self.settings.limits) {
                        self.rbuf.reserve(total.saturating_sub(self.rbuf.len()));
                    } else {
                        self.rbuf.reserve(READ_CHUNK);
                    }
                    let deadline = start + self.settings.frame_timeout;
                    tokio::select! {
                        r = tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.rbuf)) => match r {
                            Ok(r) => r?,
                            Err(_) => return Err(ReadError::Timeout(self.settings.frame_timeout)),
                        },
                        _ = cancel.cancelled() => continue,
                    }
                }
            };
            if n == 0 {
                return if self.rbuf.is_empty() { Ok(None) } else { Err(ReadError::Truncated) };
            }
            self.frame_started.get_or_insert_with(Instant::now);
        }
    }

    /// Queues a response; it goes out at the next flush.
    pub fn queue(&mut self, response: &RawResponse) {
        response.encode(&mut self.wbuf);
    }

    /// Writes out everything queued.
    pub async fn flush(&mut self) -> std::io::Result<()> {
        if self.wbuf.is_empty() {
            return Ok(());
        }
        match tokio::time::timeout(self.settings.frame_timeout, write_flush(&mut self.stream, &self.wbuf)).await {
            Ok(r) => r?,
            Err(_) => {
                return Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "peer is not reading"));
            }
        }
        self.wbuf.clear();
        if self.wbuf.capacity() > KEEP_CAPACITY {
            self.wbuf = BytesMut::new();
        }
        Ok(())
    }
}

/// Writes all of `bytes` and flushes (a no-op on TCP; TLS sends its
/// buffered records).
async fn write_flush<W: tokio::io::AsyncWrite + Unpin>(w: &mut W, bytes: &[u8]) -> std::io::Result<()> {
    w.write_all(bytes).await?;
    w.flush().await
}

/// Serves one connection until the peer leaves, a fatal frame error, or
/// shutdown. In-flight requests are always answered before returning.
pub async fn serve<S: Transport>(
    stream: S,
    peer: std::net::IpAddr,
    local: Option<std::net::IpAddr>,
    app: Arc<App>,
    settings: Arc<ConnSettings>,
    cancel: CancellationToken,
    mut ticket: Ticket,
) {
    // A connection that has not authenticated by then is closed (and may
    // be closed earlier to make room: see `Admission`).
    let auth_deadline = Instant::now() + settings.auth_timeout;
    let mut conn = Connection::new(stream, settings);
    let Some(_slot) = app.limiter().connection(peer) else {
        tracing::debug!("too many connections from one address or network; closing");
        return;
    };
    let mut state = app.new_connection(peer);
    state.set_local(local);
    loop {
        let read = if state.has_authenticated() {
            let closed = state.session_closed();
            let ended = async {
                match &closed {
                    Some(token) => token.cancelled().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                r = conn.read_request(&cancel) => r,
                () = ended => {
                    tracing::debug!("its session was ended; closing");
                    break;
                }
            }
        } else {
            match tokio::time::timeout_at(auth_deadline, conn.read_request(&cancel)).await {
                Ok(r) => r,
                Err(_) => {
                    tracing::debug!("not authenticated in time; closing");
                    break;
                }
            }
        };
        let frame = match read {
            Ok(Some(frame)) => frame,
            Ok(None) => break,
            Err(ReadError::Frame(e)) => {
                tracing::debug!(error = %e, "bad frame; closing");
                conn.queue(&Reply::BadRequest(e.to_string()).to_frame());
                let _ = conn.flush().await;
                break;
            }
            Err(e) => {
                tracing::debug!(error = %e, "connection dropped");
                break;
            }
        };
        let outcome = app.handle(&mut state, &frame).await;
        if state.has_authenticated() {
            ticket.authenticated();
        }
        match outcome {
            // Flushed by the next read_request once no whole frame is buffered.
            Outcome::Reply(reply) => conn.queue(&reply.to_frame()),
            Outcome::Events(sub) => {
                conn.queue(&Reply::Ok.to_frame());
                if conn.flush().await.is_ok() && conn.rbuf.is_empty() {
                    serve_events(conn, sub, app.ping_interval(), &cancel).await;
                } else {
                    tracing::debug!("client wrote after /events; closing");
                }
                app.connection_closed(state).await;
                return;
            }
            Outcome::Channel(mode) => {
                conn.queue(&Reply::Ok.to_frame());
                if conn.flush().await.is_ok() {
                    serve_channel(conn, &mode, &cancel).await;
                }
                mode.close();
                app.connection_closed(state).await;
                return;
            }
        }
    }
    let _ = conn.flush().await;
    app.connection_closed(state).await;
}

/// Event mode: only the server writes. Anything the client sends, or its
/// closing, ends the connection.
async fn serve_events<S: Transport>(
    conn: Connection<S>,
    mut sub: Subscription,
    ping_every: Duration,
    cancel: &CancellationToken,
) {
    let timeout = conn.settings.frame_timeout;
    let (mut rd, mut wr) = conn.stream.into_halves();
    let ping = ServerEvent::Ping.to_frame().to_bytes();
    let mut ticker = tokio::time::interval_at(Instant::now() + ping_every, ping_every);
    let mut probe = [0u8; 1];
    loop {
        let frame = tokio::select! {
            ev = sub.rx.recv() => match ev {
                Some(bytes) => bytes,
                None => break,
            },
            _ = ticker.tick() => ping.clone(),
            _ = rd.read(&mut probe) => break,
            _ = cancel.cancelled() => break,
        };
        match tokio::time::timeout(timeout, write_flush(&mut wr, &frame)).await {
            Ok(Ok(())) => {}
            _ => break,
        }
    }
}

/// Call-channel mode: `/send` frames from the client go to the other
/// participants; frames queued for this participant go out.
async fn serve_channel<S: Transport>(conn: Connection<S>, mode: &ChannelMode, cancel: &CancellationToken) {
    // A `/send` over MAX_CHANNEL_SEND is refused from its length prefix, so
    // its body is never buffered; like any bad frame it closes the channel.
    let limits = Limits {
        max_data: crate::channel::MAX_CHANNEL_SEND.min(conn.settings.limits.max_data),
        ..conn.settings.limits
    };
    let timeout = conn.settings.frame_timeout;
    let mut rbuf = conn.rbuf;
    let (mut rd, mut wr) = conn.stream.into_halves();
    let mut frame_started: Option<Instant> = None;
    loop {
        // Frames already buffered (pipelined after /connect_call) first.
        loop {
            match decode_request(&mut rbuf, &limits) {
                Ok(Some(frame)) => {
                    frame_started = (!rbuf.is_empty()).then(Instant::now);
                    if &frame.route[..] == b"/send" {
                        mode.send(&frame.data);
                    } else {
                        tracing::debug!(route = ?frame.route_str(), "ignored on a call channel");
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!(error = %e, "bad frame on a call channel; closing");
                    return;
                }
            }
        }
        let deadline = frame_started.map(|s| s + timeout);
        let half_frame_expired = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        rbuf.reserve(READ_CHUNK);
        tokio::select! {
            r = rd.read_buf(&mut rbuf) => match r {
                Ok(0) | Err(_) => return,
                Ok(_) => {
                    frame_started.get_or_insert_with(Instant::now);
                }
            },
            out = mode.queue.next() => match out {
                Some(bytes) => {
                    if !matches!(tokio::time::timeout(timeout, write_flush(&mut wr, &bytes)).await, Ok(Ok(()))) {
                        return;
                    }
                }
                // The call ended for us, and the last frame is written.
                None => return,
            },
            _ = half_frame_expired => return,
            _ = cancel.cancelled() => return,
        }
    }
}
