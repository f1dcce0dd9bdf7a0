//! The server's UDP relay fed arbitrary datagrams from arbitrary sources,
//! interleaved with well-formed BINDs, CONFIRMs (with the cookie last
//! answered to that leg, or forged) and DATA for its legs, with legs revoked
//! and granted again and the clock moving: it never panics, forwards only
//! DATA that came from the bound address of a leg with a good tag and a
//! counter not forwarded before, never back to the sender's own leg, and
//! only to the same call; it answers only with datagrams no bigger than
//! what came in, and moves a leg only to an address it sent a cookie to.
//!
//! Input: a sequence of operations `op, len, bytes[len]`:
//! op & 7 = 0 raw datagram, 1 valid BIND (the next nonce, or one from the
//! bytes), 2 valid DATA (counter from the first byte, the rest is the
//! payload), 3 revoke and re-grant the leg, 4 CONFIRM with the leg's last
//! cookie from that source, 5 CONFIRM with a cookie from the bytes, 6 the
//! clock moves by the bytes' first byte in seconds, 7 raw datagram;
//! (op >> 3) % 3 picks the leg, (op >> 5) % 4 the source address.
#![no_main]

use std::net::SocketAddr;

use std::collections::HashSet;

use babel_proto::relay::{decode_relayed, encode_bind, encode_confirm, encode_data, verify_bind_ack};
use babel_proto::{CallId, UserId};
use babel_server::relay::{Handled, Relay};
use babel_server::store::SessionId;
use libfuzzer_sys::fuzz_target;

struct Leg {
    call: CallId,
    user: UserId,
    session: SessionId,
    handle: u32,
    key: [u8; 16],
    /// The last cookie answered to this leg, and where to.
    cookie: Option<([u8; 8], SocketAddr)>,
}

fuzz_target!(|data: &[u8]| {
    let relay = Relay::new(1);
    let spec = [(1, 1, 1), (1, 2, 2), (2, 3, 3)];
    let mut legs: Vec<Leg> = spec
        .iter()
        .map(|&(c, u, s)| {
            let (handle, key) = relay.grant(CallId(c), UserId(u), SessionId(s)).expect("grant");
            Leg { call: CallId(c), user: UserId(u), session: SessionId(s), handle, key, cookie: None }
        })
        .collect();
    let addrs: [SocketAddr; 4] =
        ["10.0.0.1:1000", "10.0.0.2:2000", "10.0.0.3:3000", "[2001:db8::1]:4000"].map(|a| a.parse().expect("addr"));
    let (mut dests, mut out) = (Vec::new(), Vec::new());
    let mut now = 0u64;
    let mut nonce = 0u64;
    // Every (handle, counter) forwarded, and every (handle, address) a cookie went to.
    let mut forwarded: HashSet<(u32, u64)> = HashSet::new();
    let mut challenged: HashSet<(u32, SocketAddr)> = HashSet::new();
    let mut rest = data;
    while let [op, len, tail @ ..] = rest {
        let n = (*len as usize).min(tail.len());
        let (bytes, next) = tail.split_at(n);
        rest = next;
        let i = usize::from(op >> 3) % legs.len();
        let leg = &legs[i];
        let from = addrs[usize::from(op >> 5) % addrs.len()];
        let datagram = match op & 7 {
            1 => {
                // The next nonce, or one from the bytes (replays, jumps).
                let value = if bytes.is_empty() {
                    nonce.saturating_add(1)
                } else {
                    let mut b = [0u8; 8];
                    b[..bytes.len().min(8)].copy_from_slice(&bytes[..bytes.len().min(8)]);
                    u64::from_le_bytes(b)
                };
                nonce = nonce.max(value);
                encode_bind(leg.handle, value, &leg.key)
            }
            2 => {
                let mut d = Vec::new();
                let counter = bytes.first().map_or(0, |&c| u64::from(c));
                encode_data(leg.handle, counter, &leg.key, bytes.get(1..).unwrap_or_default(), &mut d);
                d
            }
            3 => {
                let (call, user, session) = (leg.call, leg.user, leg.session);
                relay.revoke(call, session);
                let (handle, key) = relay.grant(call, user, session).expect("re-grant");
                legs[i] = Leg { call, user, session, handle, key, cookie: None };
                continue;
            }
            4 | 5 => {
                nonce = nonce.saturating_add(1);
                let cookie = match (op & 7, leg.cookie) {
                    (4, Some((c, _))) => c,
                    _ => {
                        let mut c = [0u8; 8];
                        c[..bytes.len().min(8)].copy_from_slice(&bytes[..bytes.len().min(8)]);
                        c
                    }
                };
                encode_confirm(leg.handle, nonce, &cookie, &leg.key)
            }
            6 => {
                now += bytes.first().map_or(0, |&s| u64::from(s) * 1000);
                continue;
            }
            _ => bytes.to_vec(),
        };
        match relay.handle(&datagram, from, now, &mut dests, &mut out) {
            Handled::Forward => {
                // Who sent it: the leg whose handle the datagram names.
                let handle = u32::from_be_bytes(datagram[1..5].try_into().expect("a handle"));
                let sender = legs.iter().find(|l| l.handle == handle).expect("forwarded for a live leg");
                assert_eq!(relay.address_of(sender.call, sender.session), Some(from), "only from the bound address");
                let counter = u64::from_be_bytes(datagram[5..13].try_into().expect("a counter"));
                assert!(forwarded.insert((handle, counter)), "DATA {counter} of {handle} forwarded twice");
                let (user, _) = decode_relayed(&out).expect("a RELAYED datagram");
                assert_eq!(user, sender.user);
                for d in &dests {
                    // (Two legs may share an address; one of the same call must be there.)
                    assert!(
                        legs.iter().any(|l| l.call == sender.call
                            && l.handle != handle
                            && relay.address_of(l.call, l.session) == Some(*d)),
                        "forwarded to {d}, which no other leg of the call is bound to"
                    );
                }
            }
            Handled::Ack(ack, learned) => {
                assert!(ack.len() <= datagram.len(), "an answer bigger than the question");
                let handle = u32::from_be_bytes(datagram[1..5].try_into().expect("a handle"));
                let leg = legs.iter_mut().find(|l| l.handle == handle).expect("answered for a live leg");
                let a = verify_bind_ack(&ack, &leg.key).expect("an ack for the leg named");
                assert_eq!(a.seen, from);
                if let Some(learned) = learned {
                    assert_eq!(learned.addr, from);
                    assert!(challenged.contains(&(leg.handle, from)), "moved to {from}, which was never sent a cookie");
                }
                challenged.insert((leg.handle, from));
                leg.cookie = Some((a.cookie, from));
            }
            Handled::Dropped => {}
        }
    }
});
