//! What a connection runs over: plain TCP or TLS over TCP.
//!
//! The connection code is generic over [`Transport`]; the two differ only in
//! how an idle connection waits (plain TCP waits for readiness holding no
//! buffer at all; TLS has to let rustls read whole records) and in how they
//! split into halves for event and channel mode.

use std::future::Future;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

/// A byte stream a connection can be served over.
pub trait Transport: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// Reading half.
    type Read: AsyncRead + Unpin + Send;
    /// Writing half.
    type Write: AsyncWrite + Unpin + Send;

    /// Waits for bytes on an idle connection and appends them to `buf`;
    /// `Ok(None)` when woken without data (try again). Cancel-safe.
    fn read_idle(&mut self, buf: &mut BytesMut) -> impl Future<Output = std::io::Result<Option<usize>>> + Send;

    /// Splits into halves owned by one task each.
    fn into_halves(self) -> (Self::Read, Self::Write);
}

const READ_CHUNK: usize = 4096;

impl Transport for TcpStream {
    type Read = tokio::net::tcp::OwnedReadHalf;
    type Write = tokio::net::tcp::OwnedWriteHalf;

    async fn read_idle(&mut self, buf: &mut BytesMut) -> std::io::Result<Option<usize>> {
        // Most connections spend their life here: allocate only once bytes
        // are actually waiting.
        self.readable().await?;
        buf.reserve(READ_CHUNK);
        match self.try_read_buf(buf) {
            Ok(n) => Ok(Some(n)),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn into_halves(self) -> (Self::Read, Self::Write) {
        self.into_split()
    }
}

impl Transport for TlsStream<TcpStream> {
    type Read = tokio::io::ReadHalf<Self>;
    type Write = tokio::io::WriteHalf<Self>;

    async fn read_idle(&mut self, buf: &mut BytesMut) -> std::io::Result<Option<usize>> {
        buf.reserve(READ_CHUNK);
        self.read_buf(buf).await.map(Some)
    }

    fn into_halves(self) -> (Self::Read, Self::Write) {
        tokio::io::split(self)
    }
}
