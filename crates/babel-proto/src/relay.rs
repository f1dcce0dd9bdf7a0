//! UDP datagrams between clients and the server's media relay.
//!
//! The relay forwards sealed voice datagrams between the participants of a
//! call when they cannot reach each other directly, and tells each client its
//! public address as seen from outside any NAT (like STUN). Every participant
//! gets, over the authenticated TCP connection, a `handle` (u32) and a 16-byte
//! `key`; datagrams from the client carry a SipHash-2-4 tag under that key, so
//! nobody outside the call can bind to the relay or inject through it, even
//! with a spoofed source address. The voice inside stays sealed end to end;
//! the relay cannot read it.
//!
//! Nothing is sent to an address before it has shown that it receives: a
//! BIND from an address that is not the participant's is answered with a
//! challenge (a BIND_ACK carrying a cookie, no bigger than the BIND), and the
//! participant's address moves there only when a CONFIRM carrying that
//! cookie comes back from it. DATA carries a counter the relay keeps a
//! replay window on.
//!
//! ```text
//! BIND      05 | handle u32 | nonce u64 | zeros[28] | tag[8]                        client -> server (49 bytes)
//! BIND_ACK  06 | handle u32 | nonce u64 | state u8 | cookie[8] | family u8 | ip | port u16 | zeros | tag[8]
//!                                                                                  server -> client (49 bytes)
//! CONFIRM   07 | handle u32 | nonce u64 | cookie[8] | zeros[20] | tag[8]            client -> server (49 bytes)
//! DATA      08 | handle u32 | counter u64 | tag[8] | payload                        client -> server
//! RELAYED   04 | sender id i64 | payload                                            server -> client
//! ```
//! All integers big-endian; `family` is 4 (4-byte ip) or 6 (16-byte ip);
//! `state` is [`CHALLENGE`] or [`BOUND`]. `tag` = SipHash-2-4(key, every byte
//! before the tag, then the payload). A BIND's or CONFIRM's nonce must grow
//! (clients use microseconds since the Unix epoch). Type bytes 0x01-0x03 were
//! the first version's BIND, BIND_ACK and DATA and are refused. Type bytes
//! 0x10 and above are left to the media engine's direct datagrams.

use std::hash::Hasher;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use siphasher::sip::SipHasher24;

use crate::types::UserId;

/// BIND type byte.
pub const BIND: u8 = 0x05;
/// BIND_ACK type byte.
pub const BIND_ACK: u8 = 0x06;
/// CONFIRM type byte.
pub const CONFIRM: u8 = 0x07;
/// DATA type byte.
pub const DATA: u8 = 0x08;
/// RELAYED type byte.
pub const RELAYED: u8 = 0x04;
/// The first version's BIND, BIND_ACK and DATA: refused.
pub const RETIRED: [u8; 3] = [0x01, 0x02, 0x03];
/// Largest payload the relay forwards.
pub const MAX_PAYLOAD: usize = 1400;
/// Length of a tag.
pub const TAG_LEN: usize = 8;
/// Length of a cookie.
pub const COOKIE_LEN: usize = 8;
/// Length of BIND, BIND_ACK and CONFIRM: the largest BIND_ACK (IPv6), so
/// that no answer is bigger than what it answers.
pub const CONTROL_LEN: usize = 49;
/// BIND_ACK `state`: this address is not (yet) the participant's; CONFIRM
/// from it with the cookie to move there.
pub const CHALLENGE: u8 = 0;
/// BIND_ACK `state`: this address is the participant's; the relay sends here.
pub const BOUND: u8 = 1;

const DATA_HEADER: usize = 1 + 4 + 8 + TAG_LEN;
const RELAYED_HEADER: usize = 1 + 8;

/// A return-routability cookie.
pub type Cookie = [u8; COOKIE_LEN];

fn tag(key: &[u8; 16], parts: &[&[u8]]) -> [u8; TAG_LEN] {
    let mut h = SipHasher24::new_with_key(key);
    for p in parts {
        h.write(p);
    }
    h.finish().to_be_bytes()
}

fn tags_equal(a: &[u8], b: &[u8; TAG_LEN]) -> bool {
    // Constant time: no early exit on the first differing byte.
    a.len() == TAG_LEN && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_be_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

fn ip_bytes(addr: &SocketAddr, out: &mut Vec<u8>) {
    match addr.ip() {
        IpAddr::V4(ip) => {
            out.push(4);
            out.extend(ip.octets());
        }
        IpAddr::V6(ip) => {
            out.push(6);
            out.extend(ip.octets());
        }
    }
    out.extend(addr.port().to_be_bytes());
}

/// The return-routability cookie the server gives `addr` for `handle` in
/// time window `window`: SipHash-2-4 under the server's secret of
/// `handle u32 | family u8 | ip | port u16 | window u64`. Only the server
/// (which knows `secret`) makes them; only a client that receives at `addr`
/// learns them.
pub fn cookie(secret: &[u8; 16], handle: u32, addr: SocketAddr, window: u64) -> Cookie {
    let mut b = Vec::with_capacity(4 + 19 + 8);
    b.extend(handle.to_be_bytes());
    ip_bytes(&addr, &mut b);
    b.extend(window.to_be_bytes());
    tag(secret, &[&b])
}

/// Whether two cookies are equal, in constant time.
pub fn cookies_equal(a: &Cookie, b: &Cookie) -> bool {
    tags_equal(a, b)
}

/// The type byte and handle of a client datagram, so the server can look
/// up the key before checking the tag. `None` for anything else.
pub fn peek_client(datagram: &[u8]) -> Option<(u8, u32)> {
    match *datagram.first()? {
        t @ (BIND | CONFIRM | DATA) => Some((t, u32_at(datagram, 1)?)),
        _ => None,
    }
}

fn control(kind: u8, handle: u32, nonce: u64, cookie: Option<&Cookie>, key: &[u8; 16]) -> Vec<u8> {
    let mut out = Vec::with_capacity(CONTROL_LEN);
    out.push(kind);
    out.extend(handle.to_be_bytes());
    out.extend(nonce.to_be_bytes());
    if let Some(c) = cookie {
        out.extend(c);
    }
    out.resize(CONTROL_LEN - TAG_LEN, 0);
    let t = tag(key, &[&out]);
    out.extend(t);
    out
}

fn verify_control<'a>(kind: u8, datagram: &'a [u8], key: &[u8; 16]) -> Option<&'a [u8]> {
    if datagram.len() != CONTROL_LEN || datagram[0] != kind {
        return None;
    }
    let (body, t) = datagram.split_at(CONTROL_LEN - TAG_LEN);
    tags_equal(t, &tag(key, &[body])).then_some(body)
}

/// A BIND for `handle`, padded to the size of the largest BIND_ACK.
pub fn encode_bind(handle: u32, nonce: u64, key: &[u8; 16]) -> Vec<u8> {
    control(BIND, handle, nonce, None, key)
}

/// The nonce of a BIND whose tag checks out under `key`.
pub fn verify_bind(datagram: &[u8], key: &[u8; 16]) -> Option<u64> {
    let body = verify_control(BIND, datagram, key)?;
    zeros(body.get(13..)?)?;
    u64_at(body, 5)
}

/// `Some` if the padding is all zeros (so every datagram that checks out
/// is exactly one encoding's output).
fn zeros(pad: &[u8]) -> Option<()> {
    pad.iter().all(|&b| b == 0).then_some(())
}

/// A CONFIRM: `handle` moves to the address the datagram comes from, which
/// proves it received `cookie` there.
pub fn encode_confirm(handle: u32, nonce: u64, cookie: &Cookie, key: &[u8; 16]) -> Vec<u8> {
    control(CONFIRM, handle, nonce, Some(cookie), key)
}

/// `(nonce, cookie)` of a CONFIRM whose tag checks out under `key`.
pub fn verify_confirm(datagram: &[u8], key: &[u8; 16]) -> Option<(u64, Cookie)> {
    let body = verify_control(CONFIRM, datagram, key)?;
    zeros(body.get(21..)?)?;
    Some((u64_at(body, 5)?, body.get(13..21)?.try_into().ok()?))
}

/// What a BIND_ACK says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BindAck {
    /// The participant's handle.
    pub handle: u32,
    /// The nonce of the BIND answered.
    pub nonce: u64,
    /// [`CHALLENGE`] or [`BOUND`].
    pub state: u8,
    /// The cookie to CONFIRM with, from this address only.
    pub cookie: Cookie,
    /// The address the server saw.
    pub seen: SocketAddr,
}

/// The server's answer to a BIND: the address it saw, whether it is the
/// participant's, and the cookie to move there with. Always
/// [`CONTROL_LEN`] bytes.
pub fn encode_bind_ack(ack: &BindAck, key: &[u8; 16]) -> Vec<u8> {
    let mut out = Vec::with_capacity(CONTROL_LEN);
    out.push(BIND_ACK);
    out.extend(ack.handle.to_be_bytes());
    out.extend(ack.nonce.to_be_bytes());
    out.push(ack.state);
    out.extend(ack.cookie);
    ip_bytes(&ack.seen, &mut out);
    out.resize(CONTROL_LEN - TAG_LEN, 0);
    let t = tag(key, &[&out]);
    out.extend(t);
    out
}

/// A BIND_ACK whose tag checks out.
pub fn verify_bind_ack(datagram: &[u8], key: &[u8; 16]) -> Option<BindAck> {
    let body = verify_control(BIND_ACK, datagram, key)?;
    let handle = u32_at(body, 1)?;
    let nonce = u64_at(body, 5)?;
    let state = *body.get(13)?;
    if state != CHALLENGE && state != BOUND {
        return None;
    }
    let cookie: Cookie = body.get(14..22)?.try_into().ok()?;
    let (ip, rest): (IpAddr, &[u8]) = match *body.get(22)? {
        4 => {
            let o: [u8; 4] = body.get(23..27)?.try_into().ok()?;
            (Ipv4Addr::from(o).into(), body.get(27..)?)
        }
        6 => {
            let o: [u8; 16] = body.get(23..39)?.try_into().ok()?;
            (Ipv6Addr::from(o).into(), body.get(39..)?)
        }
        _ => return None,
    };
    let port = u16::from_be_bytes(rest.get(..2)?.try_into().ok()?);
    zeros(rest.get(2..)?)?;
    Some(BindAck { handle, nonce, state, cookie, seen: SocketAddr::new(ip, port) })
}

/// A DATA datagram carrying `payload` to the other participants; `counter`
/// grows by one per DATA of this participant (the relay's replay window).
pub fn encode_data(handle: u32, counter: u64, key: &[u8; 16], payload: &[u8], out: &mut Vec<u8>) {
    out.clear();
    out.push(DATA);
    out.extend(handle.to_be_bytes());
    out.extend(counter.to_be_bytes());
    let t = tag(key, &[&out[..13], payload]);
    out.extend(t);
    out.extend_from_slice(payload);
}

/// `(counter, payload)` of a DATA datagram whose tag checks out.
pub fn verify_data<'a>(datagram: &'a [u8], key: &[u8; 16]) -> Option<(u64, &'a [u8])> {
    if datagram.len() < DATA_HEADER || datagram[0] != DATA || datagram.len() - DATA_HEADER > MAX_PAYLOAD {
        return None;
    }
    let payload = &datagram[DATA_HEADER..];
    if !tags_equal(&datagram[13..DATA_HEADER], &tag(key, &[&datagram[..13], payload])) {
        return None;
    }
    Some((u64_at(datagram, 5)?, payload))
}

/// A sliding window over DATA counters (as in IPsec and DTLS): a counter is
/// new if it is above the highest seen, or within the 64 below it and not
/// seen yet. Counter 0 is never accepted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplayWindow {
    highest: u64,
    /// Bit `i` set: counter `highest - i` was seen.
    seen: u64,
}

impl ReplayWindow {
    /// Records `counter`; `false` if it is a replay, 0, or too old.
    pub fn accept(&mut self, counter: u64) -> bool {
        if counter == 0 {
            return false;
        }
        if counter > self.highest {
            let shift = counter - self.highest;
            self.seen = if shift >= 64 { 1 } else { (self.seen << shift) | 1 };
            self.highest = counter;
            return true;
        }
        let back = self.highest - counter;
        if back >= 64 || self.seen & (1 << back) != 0 {
            return false;
        }
        self.seen |= 1 << back;
        true
    }
}

/// A RELAYED datagram: what the server sends each other participant.
pub fn encode_relayed(sender: UserId, payload: &[u8], out: &mut Vec<u8>) {
    out.clear();
    out.push(RELAYED);
    out.extend(sender.0.to_be_bytes());
    out.extend_from_slice(payload);
}

/// `(sender, payload)` of a RELAYED datagram.
pub fn decode_relayed(datagram: &[u8]) -> Option<(UserId, &[u8])> {
    if datagram.first() != Some(&RELAYED) || datagram.len() < RELAYED_HEADER {
        return None;
    }
    let sender = i64::from_be_bytes(datagram[1..9].try_into().ok()?);
    Some((UserId(sender), &datagram[RELAYED_HEADER..]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const KEY: [u8; 16] = [3; 16];

    #[test]
    fn bind_round_trip_and_forgery() {
        let b = encode_bind(42, 1000, &KEY);
        assert_eq!(b.len(), CONTROL_LEN);
        assert_eq!(peek_client(&b), Some((BIND, 42)));
        assert_eq!(verify_bind(&b, &KEY), Some(1000));
        assert_eq!(verify_bind(&b, &[4; 16]), None, "wrong key");
        let mut forged = b.clone();
        forged[8] ^= 1;
        assert_eq!(verify_bind(&forged, &KEY), None, "changed nonce");
        assert_eq!(verify_bind(&b[..CONTROL_LEN - 1], &KEY), None, "short");
        assert_eq!(verify_confirm(&b, &KEY), None, "a BIND is no CONFIRM");
    }

    #[test]
    fn confirm_round_trip_and_forgery() {
        let c = encode_confirm(42, 1001, &[7; 8], &KEY);
        assert_eq!(c.len(), CONTROL_LEN);
        assert_eq!(peek_client(&c), Some((CONFIRM, 42)));
        assert_eq!(verify_confirm(&c, &KEY), Some((1001, [7; 8])));
        assert_eq!(verify_confirm(&c, &[4; 16]), None);
        let mut forged = c.clone();
        forged[15] ^= 1;
        assert_eq!(verify_confirm(&forged, &KEY), None, "changed cookie");
        assert_eq!(verify_bind(&c, &KEY), None);
    }

    #[test]
    fn bind_ack_both_families_never_bigger_than_a_bind() {
        for (seen, state) in [("203.0.113.7:40000", CHALLENGE), ("[2001:db8::1]:5", BOUND)] {
            let ack =
                BindAck { handle: 9, nonce: 77, state, cookie: [1, 2, 3, 4, 5, 6, 7, 8], seen: seen.parse().unwrap() };
            let a = encode_bind_ack(&ack, &KEY);
            assert_eq!(a.len(), encode_bind(9, 77, &KEY).len(), "the answer is the size of the question");
            assert_eq!(verify_bind_ack(&a, &KEY), Some(ack));
            assert_eq!(verify_bind_ack(&a, &[0; 16]), None);
        }
    }

    #[test]
    fn cookies_bind_handle_address_and_window() {
        let s = [9; 16];
        let a: SocketAddr = "198.51.100.1:4000".parse().unwrap();
        let c = cookie(&s, 1, a, 10);
        assert!(cookies_equal(&c, &cookie(&s, 1, a, 10)));
        for other in [
            cookie(&[8; 16], 1, a, 10),
            cookie(&s, 2, a, 10),
            cookie(&s, 1, "198.51.100.1:4001".parse().unwrap(), 10),
            cookie(&s, 1, "198.51.100.2:4000".parse().unwrap(), 10),
            cookie(&s, 1, a, 11),
        ] {
            assert!(!cookies_equal(&c, &other));
        }
    }

    #[test]
    fn data_round_trip_and_forgery() {
        let mut d = Vec::new();
        encode_data(5, 17, &KEY, b"sealed voice", &mut d);
        assert_eq!(peek_client(&d), Some((DATA, 5)));
        assert_eq!(verify_data(&d, &KEY), Some((17, &b"sealed voice"[..])));
        let mut forged = d.clone();
        *forged.last_mut().unwrap() ^= 1;
        assert_eq!(verify_data(&forged, &KEY), None, "payload changed");
        let mut other = d.clone();
        other[4] = 6;
        assert_eq!(verify_data(&other, &KEY), None, "handle changed");
        let mut later = d.clone();
        later[12] = 18;
        assert_eq!(verify_data(&later, &KEY), None, "counter changed");
        let mut too_big = Vec::new();
        encode_data(5, 1, &KEY, &[0; MAX_PAYLOAD + 1], &mut too_big);
        assert_eq!(verify_data(&too_big, &KEY), None);
    }

    #[test]
    fn the_first_versions_kinds_are_refused() {
        for t in RETIRED {
            let mut d = encode_bind(5, 1, &KEY);
            d[0] = t;
            assert_eq!(peek_client(&d), None);
        }
    }

    #[test]
    fn replay_window_takes_each_counter_once() {
        let mut w = ReplayWindow::default();
        assert!(!w.accept(0));
        assert!(w.accept(1));
        assert!(!w.accept(1), "replay");
        assert!(w.accept(5));
        assert!(w.accept(3), "late but new");
        assert!(!w.accept(3));
        assert!(w.accept(100));
        assert!(!w.accept(5), "too old");
        assert!(w.accept(37), "63 below the highest");
        assert!(!w.accept(36), "64 below");
        assert!(w.accept(u64::MAX));
        assert!(!w.accept(u64::MAX));
    }

    #[test]
    fn relayed_round_trip() {
        let mut r = Vec::new();
        encode_relayed(UserId(12), b"x", &mut r);
        assert_eq!(decode_relayed(&r), Some((UserId(12), &b"x"[..])));
        assert_eq!(decode_relayed(&r[..5]), None);
    }

    proptest! {
        #[test]
        fn prop_arbitrary_datagrams_never_panic_or_verify(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = peek_client(&bytes);
            prop_assert_eq!(verify_bind(&bytes, &KEY), None);
            prop_assert_eq!(verify_confirm(&bytes, &KEY), None);
            prop_assert!(verify_data(&bytes, &KEY).is_none());
            prop_assert!(verify_bind_ack(&bytes, &KEY).is_none());
            let _ = decode_relayed(&bytes);
        }

        #[test]
        fn prop_replay_window_never_takes_a_counter_twice(counters in proptest::collection::vec(0u64..200, 0..300)) {
            let mut w = ReplayWindow::default();
            let mut taken = std::collections::HashSet::new();
            for c in counters {
                if w.accept(c) {
                    prop_assert!(taken.insert(c), "counter {} taken twice", c);
                }
            }
        }
    }
}
