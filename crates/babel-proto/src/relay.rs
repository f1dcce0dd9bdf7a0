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
//! ```text
//! BIND      01 | handle u32 | nonce u64 | tag[8]                          client -> server
//! BIND_ACK  02 | handle u32 | nonce u64 | family u8 | ip | port u16 | tag[8]   server -> client
//! DATA      03 | handle u32 | tag[8] | payload                            client -> server
//! RELAYED   04 | sender id i64 | payload                                  server -> client
//! ```
//! All integers big-endian; `family` is 4 (4-byte ip) or 6 (16-byte ip).
//! `tag` = SipHash-2-4(key, every byte before the tag, then the payload).
//! A BIND's nonce must grow (clients use microseconds since the Unix epoch),
//! so a captured BIND cannot be replayed to steal the path. Type bytes
//! 0x10 and above are left to the media engine's direct datagrams.

use std::hash::Hasher;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use siphasher::sip::SipHasher24;

use crate::types::UserId;

/// BIND type byte.
pub const BIND: u8 = 0x01;
/// BIND_ACK type byte.
pub const BIND_ACK: u8 = 0x02;
/// DATA type byte.
pub const DATA: u8 = 0x03;
/// RELAYED type byte.
pub const RELAYED: u8 = 0x04;
/// Largest payload the relay forwards.
pub const MAX_PAYLOAD: usize = 1400;
/// Length of a tag.
pub const TAG_LEN: usize = 8;

const BIND_LEN: usize = 1 + 4 + 8 + TAG_LEN;
const DATA_HEADER: usize = 1 + 4 + TAG_LEN;
const RELAYED_HEADER: usize = 1 + 8;

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

/// The type byte and handle of a client datagram, so the server can look
/// up the key before checking the tag. `None` for anything else.
pub fn peek_client(datagram: &[u8]) -> Option<(u8, u32)> {
    match *datagram.first()? {
        t @ (BIND | DATA) => Some((t, u32_at(datagram, 1)?)),
        _ => None,
    }
}

/// A BIND for `handle`.
pub fn encode_bind(handle: u32, nonce: u64, key: &[u8; 16]) -> Vec<u8> {
    let mut out = Vec::with_capacity(BIND_LEN);
    out.push(BIND);
    out.extend(handle.to_be_bytes());
    out.extend(nonce.to_be_bytes());
    let t = tag(key, &[&out]);
    out.extend(t);
    out
}

/// The nonce of a BIND whose tag checks out under `key`.
pub fn verify_bind(datagram: &[u8], key: &[u8; 16]) -> Option<u64> {
    if datagram.len() != BIND_LEN || datagram[0] != BIND {
        return None;
    }
    let (body, t) = datagram.split_at(BIND_LEN - TAG_LEN);
    tags_equal(t, &tag(key, &[body])).then(|| u64_at(datagram, 5)).flatten()
}

/// The server's answer to a BIND: the address it saw.
pub fn encode_bind_ack(handle: u32, nonce: u64, seen: SocketAddr, key: &[u8; 16]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + 4 + 8 + 1 + 16 + 2 + TAG_LEN);
    out.push(BIND_ACK);
    out.extend(handle.to_be_bytes());
    out.extend(nonce.to_be_bytes());
    match seen.ip() {
        IpAddr::V4(ip) => {
            out.push(4);
            out.extend(ip.octets());
        }
        IpAddr::V6(ip) => {
            out.push(6);
            out.extend(ip.octets());
        }
    }
    out.extend(seen.port().to_be_bytes());
    let t = tag(key, &[&out]);
    out.extend(t);
    out
}

/// `(handle, nonce, seen address)` of a BIND_ACK whose tag checks out.
pub fn verify_bind_ack(datagram: &[u8], key: &[u8; 16]) -> Option<(u32, u64, SocketAddr)> {
    if datagram.first() != Some(&BIND_ACK) || datagram.len() < TAG_LEN {
        return None;
    }
    let (body, t) = datagram.split_at(datagram.len() - TAG_LEN);
    if !tags_equal(t, &tag(key, &[body])) {
        return None;
    }
    let handle = u32_at(body, 1)?;
    let nonce = u64_at(body, 5)?;
    let (ip, rest): (IpAddr, &[u8]) = match *body.get(13)? {
        4 => {
            let o: [u8; 4] = body.get(14..18)?.try_into().ok()?;
            (Ipv4Addr::from(o).into(), body.get(18..)?)
        }
        6 => {
            let o: [u8; 16] = body.get(14..30)?.try_into().ok()?;
            (Ipv6Addr::from(o).into(), body.get(30..)?)
        }
        _ => return None,
    };
    let port = u16::from_be_bytes(rest.try_into().ok()?);
    Some((handle, nonce, SocketAddr::new(ip, port)))
}

/// A DATA datagram carrying `payload` to the other participants.
pub fn encode_data(handle: u32, key: &[u8; 16], payload: &[u8], out: &mut Vec<u8>) {
    out.clear();
    out.push(DATA);
    out.extend(handle.to_be_bytes());
    let t = tag(key, &[&out[..5], payload]);
    out.extend(t);
    out.extend_from_slice(payload);
}

/// The payload of a DATA datagram whose tag checks out.
pub fn verify_data<'a>(datagram: &'a [u8], key: &[u8; 16]) -> Option<&'a [u8]> {
    if datagram.len() < DATA_HEADER || datagram[0] != DATA || datagram.len() - DATA_HEADER > MAX_PAYLOAD {
        return None;
    }
    let payload = &datagram[DATA_HEADER..];
    tags_equal(&datagram[5..DATA_HEADER], &tag(key, &[&datagram[..5], payload])).then_some(payload)
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
        assert_eq!(b.len(), BIND_LEN);
        assert_eq!(peek_client(&b), Some((BIND, 42)));
        assert_eq!(verify_bind(&b, &KEY), Some(1000));
        assert_eq!(verify_bind(&b, &[4; 16]), None, "wrong key");
        let mut forged = b.clone();
        forged[8] ^= 1;
        assert_eq!(verify_bind(&forged, &KEY), None, "changed nonce");
    }

    #[test]
    fn bind_ack_both_families() {
        for seen in ["203.0.113.7:40000", "[2001:db8::1]:5"] {
            let seen: SocketAddr = seen.parse().unwrap();
            let a = encode_bind_ack(9, 77, seen, &KEY);
            assert_eq!(verify_bind_ack(&a, &KEY), Some((9, 77, seen)));
            assert_eq!(verify_bind_ack(&a, &[0; 16]), None);
        }
    }

    #[test]
    fn data_round_trip_and_forgery() {
        let mut d = Vec::new();
        encode_data(5, &KEY, b"sealed voice", &mut d);
        assert_eq!(peek_client(&d), Some((DATA, 5)));
        assert_eq!(verify_data(&d, &KEY), Some(&b"sealed voice"[..]));
        let mut forged = d.clone();
        *forged.last_mut().unwrap() ^= 1;
        assert_eq!(verify_data(&forged, &KEY), None, "payload changed");
        let mut other = d.clone();
        other[4] = 6;
        assert_eq!(verify_data(&other, &KEY), None, "handle changed");
        let mut too_big = Vec::new();
        encode_data(5, &KEY, &[0; MAX_PAYLOAD + 1], &mut too_big);
        assert_eq!(verify_data(&too_big, &KEY), None);
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
            prop_assert!(verify_data(&bytes, &KEY).is_none());
            prop_assert!(verify_bind_ack(&bytes, &KEY).is_none());
            let _ = decode_relayed(&bytes);
        }
    }
}
