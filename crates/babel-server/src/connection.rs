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
//! stays open as long as the client likes: presence depends on it.

use std::sync::Arc;
use std::time::Duration;

use babel_proto::{FrameError, Limits, RawRequest, RawResponse, Reply, decode_request};
use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::app::{App, ConnState};

/// Per-connection settings.
#[derive(Debug, Clone)]
pub struct ConnSettings {
    /// Frame size limits.
    pub limits: Limits,
    /// Half-frame and stalled-write timeout.
    pub frame_timeout: Duration,
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
pub struct Connection {
    stream: TcpStream,
    rbuf: BytesMut,
    wbuf: BytesMut,
    settings: Arc<ConnSettings>,
    /// When the first byte of the frame now being received arrived.
    frame_started: Option<Instant>,
}

const READ_CHUNK: usize = 4096;
/// How long a connection waits for bytes already on their way at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_millis(100);
/// A buffer grown past this by one large frame is given back once empty.
const KEEP_CAPACITY: usize = 64 * 1024;

impl Connection {
    /// Wraps an accepted socket.
    pub fn new(stream: TcpStream, settings: Arc<ConnSettings>) -> Self {
        Self {
            stream,
            rbuf: BytesMut::new(),
            wbuf: BytesMut::new(),
            settings,
            frame_started: None,
        }
    }

    /// Reads the next request frame. `Ok(None)` when the peer closed cleanly
    /// between frames or the server is shutting down.
    pub async fn read_request(
        &mut self,
        cancel: &CancellationToken,
    ) -> Result<Option<RawRequest>, ReadError> {
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
                let grace = Instant::now() + SHUTDOWN_GRACE;
                self.rbuf.reserve(READ_CHUNK);
                return match tokio::time::timeout_at(grace, self.stream.read_buf(&mut self.rbuf))
                    .await
                {
                    Ok(Ok(n)) if n > 0 => {
                        Ok(decode_request(&mut self.rbuf, &self.settings.limits)?)
                    }
                    _ => Ok(None),
                };
            }
            if self.rbuf.is_empty() && self.rbuf.capacity() > KEEP_CAPACITY {
                self.rbuf = BytesMut::new();
            }
            if let Ok(Some(total)) =
                babel_proto::frame::request_frame_len(&self.rbuf, &self.settings.limits)
            {
                self.rbuf.reserve(total.saturating_sub(self.rbuf.len()));
            } else {
                self.rbuf.reserve(READ_CHUNK);
            }
            let n = match self.frame_started {
                None => tokio::select! {
                    r = self.stream.read_buf(&mut self.rbuf) => r?,
                    _ = cancel.cancelled() => continue,
                },
                Some(start) => {
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
                return if self.rbuf.is_empty() {
                    Ok(None)
                } else {
                    Err(ReadError::Truncated)
                };
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
        match tokio::time::timeout(
            self.settings.frame_timeout,
            self.stream.write_all(&self.wbuf),
        )
        .await
        {
            Ok(r) => r?,
            Err(_) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "peer is not reading",
                ));
            }
        }
        self.wbuf.clear();
        if self.wbuf.capacity() > KEEP_CAPACITY {
            self.wbuf = BytesMut::new();
        }
        Ok(())
    }
}

/// Serves one connection until the peer leaves, a fatal frame error, or
/// shutdown. In-flight requests are always answered before returning.
pub async fn serve(
    stream: TcpStream,
    app: Arc<App>,
    settings: Arc<ConnSettings>,
    cancel: CancellationToken,
) {
    let mut conn = Connection::new(stream, settings);
    let mut state = ConnState::default();
    loop {
        let frame = match conn.read_request(&cancel).await {
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
        let reply = app.handle(&mut state, &frame).await;
        tracing::trace!(route = ?frame.route_str(), status = reply.status().code(), "answered");
        // Flushed by the next read_request once no whole frame is buffered.
        conn.queue(&reply.to_frame());
    }
    let _ = conn.flush().await;
}
