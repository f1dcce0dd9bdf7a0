//! The server's UDP relay fed arbitrary datagrams from arbitrary sources,
//! interleaved with well-formed BINDs and DATA for its legs and with legs
//! revoked and granted again: it never panics, forwards only DATA that came
//! from the bound address of a leg with a good tag, never back to the
//! sender's own leg, and only to the same call.
//!
//! Input: a sequence of operations `op, len, bytes[len]`:
//! op & 3 = 0 raw datagram, 1 valid BIND (nonce from the bytes), 2 valid
//! DATA (the bytes are the payload), 3 revoke and re-grant the leg;
//! (op >> 2) % 3 picks the leg, (op >> 4) % 4 the source address.
#![no_main]

use std::net::SocketAddr;

use babel_proto::relay::{decode_relayed, encode_bind, encode_data};
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
}

fuzz_target!(|data: &[u8]| {
    let relay = Relay::new(1);
    let spec = [(1, 1, 1), (1, 2, 2), (2, 3, 3)];
    let mut legs: Vec<Leg> = spec
        .iter()
        .map(|&(c, u, s)| {
            let (handle, key) = relay.grant(CallId(c), UserId(u), SessionId(s)).expect("grant");
            Leg { call: CallId(c), user: UserId(u), session: SessionId(s), handle, key }
        })
        .collect();
    let addrs: [SocketAddr; 4] =
        ["10.0.0.1:1000", "10.0.0.2:2000", "10.0.0.3:3000", "[2001:db8::1]:4000"].map(|a| a.parse().expect("addr"));
    let (mut dests, mut out) = (Vec::new(), Vec::new());
    let mut rest = data;
    while let [op, len, tail @ ..] = rest {
        let n = (*len as usize).min(tail.len());
        let (bytes, next) = tail.split_at(n);
        rest = next;
        let leg = &legs[usize::from(op >> 2) % legs.len()];
        let from = addrs[usize::from(op >> 4) % addrs.len()];
        let datagram = match op & 3 {
            0 => bytes.to_vec(),
            1 => {
                let mut nonce = [0u8; 8];
                nonce[..n.min(8)].copy_from_slice(&bytes[..n.min(8)]);
                encode_bind(leg.handle, u64::from_le_bytes(nonce), &leg.key)
            }
            2 => {
                let mut d = Vec::new();
                encode_data(leg.handle, &leg.key, bytes, &mut d);
                d
            }
            _ => {
                let (call, user, session) = (leg.call, leg.user, leg.session);
                relay.revoke(call, session);
                let (handle, key) = relay.grant(call, user, session).expect("re-grant");
                let i = usize::from(op >> 2) % legs.len();
                legs[i] = Leg { call, user, session, handle, key };
                continue;
            }
        };
        match relay.handle(&datagram, from, &mut dests, &mut out) {
            Handled::Forward => {
                // Who sent it: the leg whose handle the datagram names.
                let handle = u32::from_be_bytes(datagram[1..5].try_into().expect("a handle"));
                let sender = legs.iter().find(|l| l.handle == handle).expect("forwarded for a live leg");
                assert_eq!(relay.address_of(sender.call, sender.session), Some(from), "only from the bound address");
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
            Handled::Ack(_, Some(learned)) => assert_eq!(learned.addr, from),
            Handled::Ack(_, None) | Handled::Dropped => {}
        }
    }
});
