//! Frames: the length-prefixed envelopes every Babel message travels in.
//!
//! A request frame is `header_len, route_len, data_len` (three big-endian `i32`)
//! followed by the header, route and data bytes. A response frame is
//! `status, data_len` followed by the data bytes. Event frames and call-channel
//! frames have the request shape.
//!
//! The decoders are incremental: given the bytes received so far they answer
//! `Ok(None)` when more bytes are needed, never an error and never a panic. A
//! length that is negative or above the configured [`Limits`] is an error as
//! soon as its four bytes are in, so a server can refuse a 2 GB frame without
//! waiting for it.
//!
//! This module knows nothing about JSON or routes; see [`crate::request`].

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Size of the fixed prefix of a request frame (three `i32`).
pub const REQUEST_PREFIX: usize = 12;
/// Size of the fixed prefix of a response frame (two `i32`).
pub const RESPONSE_PREFIX: usize = 8;

/// Largest accepted section sizes (DESIGN.md §1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest header, in bytes (default 8 KiB).
    pub max_header: usize,
    /// Largest route, in bytes (default 256 B).
    pub max_route: usize,
    /// Largest data section, in bytes (default 1 MiB).
    pub max_data: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self { max_header: 8 * 1024, max_route: 256, max_data: 1024 * 1024 }
    }
}

/// Which length field of a frame was wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    /// The header length of a request frame.
    Header,
    /// The route length of a request frame.
    Route,
    /// The data length of a request or response frame.
    Data,
}

impl std::fmt::Display for Section {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Section::Header => "header",
            Section::Route => "route",
            Section::Data => "data",
        })
    }
}

/// A frame whose prefix can never become valid. The connection cannot be
/// resynchronised after one of these: the peer answers 400 and closes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// A length field was below zero.
    #[error("{section} length {len} is negative")]
    Negative {
        /// The offending section.
        section: Section,
        /// The length as sent.
        len: i32,
    },
    /// A length field was above the limit for its section.
    #[error("{section} length {len} exceeds the limit of {max} bytes")]
    TooLarge {
        /// The offending section.
        section: Section,
        /// The length as sent.
        len: i32,
        /// The limit in force.
        max: usize,
    },
}

/// A request-shaped frame with its sections still as bytes.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct RawRequest {
    /// Header bytes (JSON object or empty).
    pub header: Bytes,
    /// Route bytes (ASCII, e.g. `/login`).
    pub route: Bytes,
    /// Data bytes (JSON object or empty).
    pub data: Bytes,
}

impl std::fmt::Debug for RawRequest {
    // Frames can hold passwords and tokens: never print their contents.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawRequest")
            .field("route", &String::from_utf8_lossy(&self.route))
            .field("header_len", &self.header.len())
            .field("data_len", &self.data.len())
            .finish()
    }
}

impl RawRequest {
    /// Builds a frame from its three sections.
    pub fn new(header: impl Into<Bytes>, route: impl Into<Bytes>, data: impl Into<Bytes>) -> Self {
        Self { header: header.into(), route: route.into(), data: data.into() }
    }

    /// The route as text, if it is valid UTF-8.
    pub fn route_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.route).ok()
    }

    /// Number of bytes [`RawRequest::encode`] writes.
    pub fn encoded_len(&self) -> usize {
        REQUEST_PREFIX + self.header.len() + self.route.len() + self.data.len()
    }

    /// Appends the frame to `dst`.
    ///
    /// # Panics
    /// If a section is longer than `i32::MAX` bytes, which no limit allows.
    pub fn encode(&self, dst: &mut impl BufMut) {
        dst.put_i32(len_i32(self.header.len()));
        dst.put_i32(len_i32(self.route.len()));
        dst.put_i32(len_i32(self.data.len()));
        dst.put_slice(&self.header);
        dst.put_slice(&self.route);
        dst.put_slice(&self.data);
    }

    /// The frame as one buffer.
    pub fn to_bytes(&self) -> Bytes {
        let mut b = BytesMut::with_capacity(self.encoded_len());
        self.encode(&mut b);
        b.freeze()
    }
}

/// A response frame with its data still as bytes.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct RawResponse {
    /// HTTP-like status code (200, 201, 400, 401, 403, 404).
    pub status: i32,
    /// Data bytes (JSON object or array, or empty).
    pub data: Bytes,
}

impl std::fmt::Debug for RawResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawResponse").field("status", &self.status).field("data_len", &self.data.len()).finish()
    }
}

impl RawResponse {
    /// Builds a response frame.
    pub fn new(status: i32, data: impl Into<Bytes>) -> Self {
        Self { status, data: data.into() }
    }

    /// Number of bytes [`RawResponse::encode`] writes.
    pub fn encoded_len(&self) -> usize {
        RESPONSE_PREFIX + self.data.len()
    }

    /// Appends the frame to `dst`.
    pub fn encode(&self, dst: &mut impl BufMut) {
        dst.put_i32(self.status);
        dst.put_i32(len_i32(self.data.len()));
        dst.put_slice(&self.data);
    }

    /// The frame as one buffer.
    pub fn to_bytes(&self) -> Bytes {
        let mut b = BytesMut::with_capacity(self.encoded_len());
        self.encode(&mut b);
        b.freeze()
    }
}

fn len_i32(len: usize) -> i32 {
    i32::try_from(len).expect("frame section longer than i32::MAX")
}

fn check(section: Section, len: i32, max: usize) -> Result<usize, FrameError> {
    if len < 0 {
        return Err(FrameError::Negative { section, len });
    }
    let n = len as usize;
    if n > max {
        return Err(FrameError::TooLarge { section, len, max });
    }
    Ok(n)
}

fn read_i32_at(src: &[u8], at: usize) -> Option<i32> {
    let b = src.get(at..at + 4)?;
    Some(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// Total length of the request frame at the start of `src`, if its prefix is
/// complete; `Ok(None)` when more bytes are needed. Each length is checked as
/// soon as it is readable.
pub fn request_frame_len(src: &[u8], limits: &Limits) -> Result<Option<usize>, FrameError> {
    let sections =
        [(Section::Header, limits.max_header), (Section::Route, limits.max_route), (Section::Data, limits.max_data)];
    let mut total = REQUEST_PREFIX;
    for (i, (section, max)) in sections.into_iter().enumerate() {
        let Some(len) = read_i32_at(src, i * 4) else {
            return Ok(None);
        };
        total += check(section, len, max)?;
    }
    Ok(Some(total))
}

/// Takes one request frame off the front of `src`, or answers `Ok(None)` and
/// leaves `src` untouched when it does not hold a whole frame yet.
pub fn decode_request(src: &mut BytesMut, limits: &Limits) -> Result<Option<RawRequest>, FrameError> {
    let Some(total) = request_frame_len(src, limits)? else {
        return Ok(None);
    };
    if src.len() < total {
        return Ok(None);
    }
    let mut frame = src.split_to(total);
    let header_len = frame.get_i32() as usize;
    let route_len = frame.get_i32() as usize;
    let data_len = frame.get_i32() as usize;
    let header = frame.split_to(header_len).freeze();
    let route = frame.split_to(route_len).freeze();
    let data = frame.split_to(data_len).freeze();
    Ok(Some(RawRequest { header, route, data }))
}

/// Takes one response frame off the front of `src`, or answers `Ok(None)`
/// when it does not hold a whole frame yet. Any status value is accepted; the
/// data length is checked against `limits.max_data`.
pub fn decode_response(src: &mut BytesMut, limits: &Limits) -> Result<Option<RawResponse>, FrameError> {
    let (Some(status), Some(len)) = (read_i32_at(src, 0), read_i32_at(src, 4)) else {
        // Reject a bad length early even when only part of the prefix is in.
        return Ok(None);
    };
    let len = check(Section::Data, len, limits.max_data)?;
    if src.len() < RESPONSE_PREFIX + len {
        return Ok(None);
    }
    src.advance(RESPONSE_PREFIX);
    let data = src.split_to(len).freeze();
    Ok(Some(RawResponse { status, data }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn req(h: &str, r: &str, d: &str) -> RawRequest {
        RawRequest::new(h.to_owned(), r.to_owned(), d.to_owned())
    }

    #[test]
    fn request_round_trip() {
        let r = req(r#"{"id":"1"}"#, "/contacts", "");
        let mut buf = BytesMut::from(&r.to_bytes()[..]);
        let got = decode_request(&mut buf, &Limits::default()).unwrap().unwrap();
        assert_eq!(got, r);
        assert!(buf.is_empty());
    }

    #[test]
    fn request_bytes_are_big_endian() {
        let r = req("", "/login", "{}");
        let b = r.to_bytes();
        assert_eq!(&b[..12], &[0, 0, 0, 0, 0, 0, 0, 6, 0, 0, 0, 2]);
        assert_eq!(&b[12..], b"/login{}");
    }

    #[test]
    fn partial_input_needs_more_at_every_cut() {
        let r = req(r#"{"a":"b"}"#, "/x", r#"{"c":"d"}"#);
        let bytes = r.to_bytes();
        for cut in 0..bytes.len() {
            let mut buf = BytesMut::from(&bytes[..cut]);
            assert_eq!(decode_request(&mut buf, &Limits::default()), Ok(None), "cut {cut}");
            assert_eq!(buf.len(), cut, "partial input must stay buffered");
        }
    }

    #[test]
    fn negative_length_is_refused_at_once() {
        let mut buf = BytesMut::from(&(-1i32).to_be_bytes()[..]);
        assert_eq!(
            decode_request(&mut buf, &Limits::default()),
            Err(FrameError::Negative { section: Section::Header, len: -1 })
        );
    }

    #[test]
    fn oversized_data_is_refused_before_it_arrives() {
        let mut buf = BytesMut::new();
        buf.put_i32(0);
        buf.put_i32(6);
        buf.put_i32(i32::MAX);
        assert!(matches!(
            decode_request(&mut buf, &Limits::default()),
            Err(FrameError::TooLarge { section: Section::Data, .. })
        ));
    }

    #[test]
    fn limits_are_inclusive() {
        let limits = Limits { max_header: 2, max_route: 3, max_data: 4 };
        let ok = req("ab", "abc", "abcd");
        let mut buf = BytesMut::from(&ok.to_bytes()[..]);
        assert_eq!(decode_request(&mut buf, &limits).unwrap(), Some(ok));
        let too_long = req("ab", "abcd", "");
        let mut buf = BytesMut::from(&too_long.to_bytes()[..]);
        assert!(matches!(
            decode_request(&mut buf, &limits),
            Err(FrameError::TooLarge { section: Section::Route, len: 4, max: 3 })
        ));
    }

    #[test]
    fn pipelined_frames_come_out_in_order() {
        let mut buf = BytesMut::new();
        for i in 0..5 {
            req("", &format!("/r{i}"), "").encode(&mut buf);
        }
        for i in 0..5 {
            let f = decode_request(&mut buf, &Limits::default()).unwrap().unwrap();
            assert_eq!(f.route_str(), Some(format!("/r{i}").as_str()));
        }
        assert_eq!(decode_request(&mut buf, &Limits::default()), Ok(None));
    }

    #[test]
    fn response_round_trip_and_partial() {
        let r = RawResponse::new(403, r#"{"error":"no"}"#);
        let bytes = r.to_bytes();
        assert_eq!(&bytes[..8], &[0, 0, 1, 0x93, 0, 0, 0, 14]);
        for cut in 0..bytes.len() {
            let mut buf = BytesMut::from(&bytes[..cut]);
            assert_eq!(decode_response(&mut buf, &Limits::default()), Ok(None));
        }
        let mut buf = BytesMut::from(&bytes[..]);
        assert_eq!(decode_response(&mut buf, &Limits::default()), Ok(Some(r)));
    }

    #[test]
    fn response_with_negative_length_is_an_error() {
        let mut buf = BytesMut::new();
        buf.put_i32(200);
        buf.put_i32(-5);
        assert!(decode_response(&mut buf, &Limits::default()).is_err());
    }

    proptest! {
        #[test]
        fn prop_request_round_trip(
            h in proptest::collection::vec(any::<u8>(), 0..64),
            r in proptest::collection::vec(any::<u8>(), 0..32),
            d in proptest::collection::vec(any::<u8>(), 0..256),
            tail in proptest::collection::vec(any::<u8>(), 0..16),
        ) {
            let frame = RawRequest::new(h, r, d);
            let mut buf = BytesMut::new();
            frame.encode(&mut buf);
            buf.extend_from_slice(&tail);
            let got = decode_request(&mut buf, &Limits::default()).unwrap().unwrap();
            prop_assert_eq!(got, frame);
            prop_assert_eq!(&buf[..], &tail[..]);
        }

        #[test]
        fn prop_response_round_trip(status in any::<i32>(), d in proptest::collection::vec(any::<u8>(), 0..256)) {
            let frame = RawResponse::new(status, d);
            let mut buf = BytesMut::from(&frame.to_bytes()[..]);
            prop_assert_eq!(decode_response(&mut buf, &Limits::default()).unwrap(), Some(frame));
        }

        #[test]
        fn prop_arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut buf = BytesMut::from(&bytes[..]);
            // Drain as many frames as the bytes hold; any outcome but a panic is fine.
            while let Ok(Some(_)) = decode_request(&mut buf, &Limits::default()) {}
            let mut buf = BytesMut::from(&bytes[..]);
            while let Ok(Some(_)) = decode_response(&mut buf, &Limits::default()) {}
        }

        #[test]
        fn prop_split_feeding_matches_whole(
            d in proptest::collection::vec(any::<u8>(), 0..128),
            split in 0usize..200,
        ) {
            let frame = RawRequest::new(Bytes::new(), Bytes::from_static(b"/send"), d);
            let bytes = frame.to_bytes();
            let split = split.min(bytes.len());
            let mut buf = BytesMut::from(&bytes[..split]);
            let first = decode_request(&mut buf, &Limits::default()).unwrap();
            if split < bytes.len() {
                prop_assert!(first.is_none());
                buf.extend_from_slice(&bytes[split..]);
                prop_assert_eq!(decode_request(&mut buf, &Limits::default()).unwrap(), Some(frame));
            } else {
                prop_assert_eq!(first, Some(frame));
            }
        }
    }
}
