//! The two server paths for voice: call channels over TCP and the UDP relay.
#![allow(clippy::unwrap_used)]

#[macro_use]
mod common;

use std::net::SocketAddr;
use std::time::Duration;

use babel_proto::relay as wire;
use babel_proto::{ChannelFrame, MediaSetup, SendData, ServerEvent};
use bytes::Bytes;
use common::{Topology, answered_call, befriend, relay_bind as bind, start_in, user};
use tokio::net::UdpSocket;

fn packet(i: u32) -> SendData {
    let p = i.to_be_bytes().repeat(20);
    SendData::new("voice", &[&p, &p]).unwrap()
}

async fn call_channel_relays_in_order_with_the_sender_id(t: Topology) {
    let s = start_in(t).await;
    let mut a = user(&s, "a1@example.org").await;
    let mut b = user(&s, "b1@example.org").await;
    befriend(&mut a, &mut b).await;
    let call = a.client.call(b.id(), MediaSetup::default()).await.unwrap().call_id;
    // The caller may open its channel while the call rings; the callee not yet.
    let mut ca = a.client.connect_call(call).await.unwrap();
    let err = b.client.connect_call(call).await.unwrap_err();
    assert!(err.refusal().unwrap().contains("not in this call"), "{err}");
    b.expect("incoming", |e| matches!(e, ServerEvent::IncomingCall(_)).then_some(())).await;
    b.client.accept_call(call, MediaSetup::default()).await.unwrap();
    let mut cb = b.client.connect_call(call).await.unwrap();
    // A stranger cannot join.
    let stranger = user(&s, "x1@example.org").await;
    assert!(stranger.client.connect_call(call).await.unwrap_err().refusal().is_some());

    for i in 0..50 {
        ca.send(&packet(i)).await.unwrap();
    }
    for i in 0..50 {
        match cb.recv().await.unwrap().unwrap() {
            ChannelFrame::Send { from, data } => {
                assert_eq!(from, Some(a.id()));
                let (d, packets) = SendData::parse(&data).unwrap();
                assert_eq!(d, packet(i), "frame {i} in order and unchanged");
                assert_eq!(packets.len(), 2);
            }
            other => panic!("{other:?}"),
        }
    }
    cb.send(&packet(99)).await.unwrap();
    assert!(matches!(ca.recv().await.unwrap().unwrap(), ChannelFrame::Send { from: Some(id), .. } if id == b.id()));

    a.client.hangup(call).await.unwrap();
    assert!(matches!(cb.recv().await.unwrap(), Some(ChannelFrame::CallEnded(c, _)) if c == call));
    assert!(cb.recv().await.unwrap().is_none(), "the server closes the channel after /call_ended");
    assert!(matches!(ca.recv().await.unwrap(), Some(ChannelFrame::CallEnded(c, _)) if c == call));
}

async fn a_slow_receiver_stalls_nobody(t: Topology) {
    let s = start_in(t).await;
    let (a, b, call, _) = answered_call(&s, "a2@example.org", "b2@example.org").await;
    let ca = a.client.connect_call(call).await.unwrap();
    let cb = b.client.connect_call(call).await.unwrap();
    let (mut tx, _rx) = ca.split();
    let (_btx, mut brx) = cb.split();
    // b does not read while a sends far more than any socket buffer holds.
    let data = Bytes::from(SendData::new("voice", &[&[7u8; 160][..]]).unwrap().to_json());
    let sent = 30_000;
    tokio::time::timeout(Duration::from_secs(60), async {
        for _ in 0..sent {
            tx.send_raw(data.clone()).await.unwrap();
        }
    })
    .await
    .expect("the sender must never be held up by a slow receiver");
    // The marker frame: the newest frames survive, the oldest were dropped.
    let last = Bytes::from(SendData::new("last", &[&[1u8][..]]).unwrap().to_json());
    tx.send_raw(last.clone()).await.unwrap();
    let deadline = tokio::time::Instant::now() + common::TIMEOUT;
    while s.channel_drops() == 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let dropped = s.channel_drops();
    assert!(dropped > 0, "drops are counted");
    let mut received = 0u64;
    loop {
        match tokio::time::timeout(common::TIMEOUT, brx.recv()).await.unwrap().unwrap() {
            Some(ChannelFrame::Send { data, .. }) if data == last => break,
            Some(ChannelFrame::Send { .. }) => received += 1,
            other => panic!("{other:?}"),
        }
    }
    assert!(received < sent, "some frames were dropped ({received} of {sent} arrived)");
    // Every frame either arrived or was counted as dropped.
    assert_eq!(received + s.channel_drops(), sent);
}

async fn recv_relayed(sock: &UdpSocket, wait: Duration) -> Option<(babel_proto::UserId, Vec<u8>)> {
    let mut buf = [0u8; 2048];
    let n = tokio::time::timeout(wait, sock.recv(&mut buf)).await.ok()?.unwrap();
    wire::decode_relayed(&buf[..n]).map(|(u, p)| (u, p.to_vec()))
}

async fn udp_relay_binds_forwards_and_refuses_strangers(t: Topology) {
    let s = start_in(t).await;
    let (mut a, b, call, [(port, ha, ka), (port_b, hb, kb)]) =
        answered_call(&s, "a3@example.org", "b3@example.org").await;
    assert_eq!(port, port_b);
    let relay: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    assert_eq!(relay, s.node(a.node).udp_addr(), "the call's home (the caller's node) relays it");
    let ua = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let ub = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    assert_eq!(bind(&ua, relay, ha, &ka, 1).await, Some(ua.local_addr().unwrap()), "the relay reports what it saw");
    assert_eq!(bind(&ub, relay, hb, &kb, 1).await, Some(ub.local_addr().unwrap()));
    // a hears of b's public address.
    let bid = b.id();
    let seen = a
        .expect("call_candidates", |e| match e {
            ServerEvent::CallCandidates(c) if c.id == bid => Some(c.candidates.clone()),
            _ => None,
        })
        .await;
    assert_eq!(seen, vec![ub.local_addr().unwrap()]);

    let mut d = Vec::new();
    wire::encode_data(ha, 1, &ka, b"sealed voice from a", &mut d);
    ua.send_to(&d, relay).await.unwrap();
    assert_eq!(recv_relayed(&ub, common::TIMEOUT).await, Some((a.id(), b"sealed voice from a".to_vec())));
    wire::encode_data(hb, 1, &kb, b"and back", &mut d);
    ub.send_to(&d, relay).await.unwrap();
    assert_eq!(recv_relayed(&ua, common::TIMEOUT).await, Some((b.id(), b"and back".to_vec())));

    // Strangers: a replayed BIND, a wrong key, a forged tag, a foreign
    // source, a replayed DATA.
    let eve = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    assert_eq!(bind(&eve, relay, ha, &ka, 1).await, None, "replayed nonce");
    assert_eq!(bind(&eve, relay, ha, &[0; 16], 99).await, None, "wrong key");
    wire::encode_data(ha, 2, &[0; 16], b"injected", &mut d);
    ua.send_to(&d, relay).await.unwrap();
    wire::encode_data(ha, 1, &ka, b"sealed voice from a", &mut d);
    ua.send_to(&d, relay).await.unwrap();
    wire::encode_data(ha, 3, &ka, b"from elsewhere", &mut d);
    eve.send_to(&d, relay).await.unwrap();
    eve.send_to(b"garbage", relay).await.unwrap();
    assert_eq!(recv_relayed(&ub, Duration::from_millis(300)).await, None, "nothing injected gets through");
    assert_eq!(recv_relayed(&eve, Duration::from_millis(100)).await, None, "and nothing leaks to the stranger");
    assert!(s.relay_dropped() >= 6);

    // After the call, the grants are void.
    a.client.hangup(call).await.unwrap();
    wire::encode_data(ha, 4, &ka, b"after", &mut d);
    ua.send_to(&d, relay).await.unwrap();
    assert_eq!(recv_relayed(&ub, Duration::from_millis(300)).await, None);
    assert_eq!(s.leg_count(), 0);
}

async fn a_roaming_client_rebinds_from_a_new_address(t: Topology) {
    let s = start_in(t).await;
    let (mut a, b, _call, [(port, ha, ka), (_, hb, kb)]) = answered_call(&s, "a4@example.org", "b4@example.org").await;
    let relay: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let ua = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let ub = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    bind(&ua, relay, ha, &ka, 1).await.unwrap();
    bind(&ub, relay, hb, &kb, 1).await.unwrap();
    // b "moves": a new socket, newer nonces.
    let ub2 = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    assert_eq!(bind(&ub2, relay, hb, &kb, 3).await, Some(ub2.local_addr().unwrap()));
    let bid = b.id();
    let new_addr = ub2.local_addr().unwrap();
    a.expect("moved", |e| {
        matches!(e, ServerEvent::CallCandidates(c) if c.id == bid && c.candidates.contains(&new_addr)).then_some(())
    })
    .await;
    let mut d = Vec::new();
    wire::encode_data(ha, 1, &ka, b"to the new place", &mut d);
    ua.send_to(&d, relay).await.unwrap();
    assert_eq!(recv_relayed(&ub2, common::TIMEOUT).await, Some((a.id(), b"to the new place".to_vec())));
}

in_both_topologies! {
    udp_relay_binds_forwards_and_refuses_strangers,
    a_roaming_client_rebinds_from_a_new_address,
    call_channel_relays_in_order_with_the_sender_id,
    a_slow_receiver_stalls_nobody,
}
