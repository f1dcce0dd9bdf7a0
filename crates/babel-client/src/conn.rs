//! One TCP connection to the server with its read buffer.

use babel_proto::{Limits, RawRequest, RawResponse, decode_request, decode_response};
use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use crate::{Backoff, ClientError, Result};

/// Answers may be large (a long contact list); events and channel frames
/// follow the protocol's limits.
fn limits() -> Limits {
    Limits { max_data: 16 << 20, ..Limits::default() }
}

/// A connection in request mode (or later, event or channel mode).
#[derive(Debug)]
pub struct Conn {
    stream: TcpStream,
    buf: BytesMut,
}

impl Conn {
    /// Opens a connection.
    pub async fn open(addr: &str) -> Result<Conn> {
        let stream =
            TcpStream::connect(addr).await.map_err(|source| ClientError::Connect { addr: addr.to_owned(), source })?;
        let _ = stream.set_nodelay(true);
        Ok(Conn { stream, buf: BytesMut::with_capacity(4096) })
    }

    /// Opens a connection, retrying with backoff.
    pub async fn open_with_backoff(addr: &str, backoff: Backoff) -> Result<Conn> {
        let mut attempt = 0;
        loop {
            match Conn::open(addr).await {
                Ok(c) => return Ok(c),
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
        self.stream.write_all(&frame.to_bytes()).await.map_err(|_| ClientError::Disconnected)
    }

    /// Whether the server has closed this connection while it sat idle (a
    /// real, non-blocking peek: no waiting, nothing consumed).
    pub fn is_closed(&self) -> bool {
        let mut probe = [std::mem::MaybeUninit::<u8>::uninit(); 1];
        match socket2::SockRef::from(&self.stream).peek(&mut probe) {
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
        let (r, w) = self.stream.into_split();
        (WriteHalf { w }, ReadHalf { r, buf: self.buf })
    }
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
#[derive(Debug)]
pub struct WriteHalf {
    w: OwnedWriteHalf,
}

impl WriteHalf {
    /// Writes a request-shaped frame.
    pub async fn write_frame(&mut self, frame: &RawRequest) -> Result<()> {
        self.w.write_all(&frame.to_bytes()).await.map_err(|_| ClientError::Disconnected)
    }
}

/// The reading half of a split connection.
#[derive(Debug)]
pub struct ReadHalf {
    r: OwnedReadHalf,
    buf: BytesMut,
}

impl ReadHalf {
    /// Reads a request-shaped frame; `Ok(None)` on a clean close.
    pub async fn read_request_frame(&mut self) -> Result<Option<RawRequest>> {
        read_request_frame(&mut self.r, &mut self.buf).await
    }
}
