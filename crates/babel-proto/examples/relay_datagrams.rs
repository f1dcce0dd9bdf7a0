//! Prints the relay datagram examples of PROTOCOL.md (fixed handle, key,
//! nonce, cookie secret and addresses), in its annotated hex layout.
//!
//! `cargo run -p babel-proto --example relay_datagrams`

use babel_proto::UserId;
use babel_proto::relay::{
    BindAck, CHALLENGE, cookie, encode_bind, encode_bind_ack, encode_confirm, encode_data, encode_relayed,
};

fn block(title: &str, bytes: &[u8]) {
    println!("```hex\n# datagram {title}");
    for c in bytes.chunks(16) {
        println!("{}", c.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(""));
    }
    println!("```");
}

fn main() {
    let key: [u8; 16] = std::array::from_fn(|i| i as u8);
    let secret: [u8; 16] = std::array::from_fn(|i| 0x10 + i as u8);
    let handle = 0x0102_0304;
    let nonce = 1_764_000_000_000_000;
    let seen = "203.0.113.7:40000".parse().expect("addr");
    let c = cookie(&secret, handle, seen, 58_800_000);
    block("cookie", &c);
    block("bind", &encode_bind(handle, nonce, &key));
    block("bind_ack", &encode_bind_ack(&BindAck { handle, nonce, state: CHALLENGE, cookie: c, seen }, &key));
    block("confirm", &encode_confirm(handle, nonce + 1, &c, &key));
    let mut out = Vec::new();
    encode_data(handle, 1, &key, b"sealed", &mut out);
    block("data", &out);
    encode_relayed(UserId(42), b"sealed", &mut out);
    block("relayed", &out);
}
