//! The ceiling server: reads request frames and answers each with the same
//! pre-encoded response, doing no other work. Same framing, same socket
//! options and same read/flush pattern as the real connection loop, so the
//! difference with `babel-server` is the cost of the server's own work.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use babel_proto::{Limits, RawResponse, decode_request};
use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The data length of a typical `/contacts` answer: 10 contacts, all online,
/// for the 1000 accounts `babel-load` creates (median measured by its setup:
/// 801 bytes, i.e. ten 80-byte entries with 3-digit ids and names).
pub const DEFAULT_REPLY_BYTES: usize = 801;

const READ_CHUNK: usize = 4096;

/// A 200 response whose data is a JSON array of exactly `data_len` bytes
/// when `data_len >= 4` (`["xx…"]`), spaces otherwise.
pub fn reply_frame(data_len: usize) -> Bytes {
    let data = if data_len >= 4 {
        let mut d = Vec::with_capacity(data_len);
        d.extend_from_slice(b"[\"");
        d.resize(data_len - 2, b'x');
        d.extend_from_slice(b"\"]");
        d
    } else {
        vec![b' '; data_len]
    };
    RawResponse::new(200, data).to_bytes()
}

/// Accepts connections forever, answering every request with `reply` (a
/// whole encoded response frame).
pub async fn serve(listener: TcpListener, reply: Bytes) {
    let reply = Arc::new(reply);
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let reply = Arc::clone(&reply);
                tokio::spawn(async move {
                    let _ = connection(stream, &reply).await;
                });
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Serves one connection until the peer closes or sends a bad frame.
/// Answers to pipelined requests go out in one write.
async fn connection(mut stream: TcpStream, reply: &Bytes) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let limits = Limits::default();
    let mut rbuf = BytesMut::new();
    let mut wbuf = BytesMut::new();
    loop {
        loop {
            match decode_request(&mut rbuf, &limits) {
                Ok(Some(_)) => wbuf.extend_from_slice(reply),
                Ok(None) => break,
                Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
            }
        }
        if !wbuf.is_empty() {
            stream.write_all(&wbuf).await?;
            wbuf.clear();
        }
        rbuf.reserve(READ_CHUNK);
        if stream.read_buf(&mut rbuf).await? == 0 {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::net::ResponseReader;
    use babel_proto::{ClientRequest, Credentials, Secret, UserId};

    #[test]
    fn reply_has_the_asked_size() {
        for n in [0, 3, 4, DEFAULT_REPLY_BYTES] {
            let f = reply_frame(n);
            assert_eq!(f.len(), 8 + n);
            assert_eq!(&f[..4], &200i32.to_be_bytes());
        }
        let f = reply_frame(10);
        assert!(serde_json::from_slice::<Vec<String>>(&f[8..]).is_ok());
    }

    #[tokio::test]
    async fn answers_pipelined_requests() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(serve(listener, reply_frame(20)));
        let mut s = crate::net::connect(addr, None).await.unwrap();
        let req = ClientRequest::Contacts(Credentials { id: UserId(1), token: Secret::new("t") }).to_frame().to_bytes();
        let mut three = Vec::new();
        for _ in 0..3 {
            three.extend_from_slice(&req);
        }
        s.write_all(&three).await.unwrap();
        let mut r = ResponseReader::new();
        for _ in 0..3 {
            assert_eq!(r.read(&mut s).await.unwrap(), (200, 20));
        }
    }
}
