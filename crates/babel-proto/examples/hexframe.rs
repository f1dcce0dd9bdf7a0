//! Prints a frame in the annotated hex layout PROTOCOL.md uses.
//!
//! `cargo run -p babel-proto --example hexframe -- request HEADER ROUTE DATA`
//! `cargo run -p babel-proto --example hexframe -- response STATUS DATA`
//! (use `''` for an empty section).

use babel_proto::{RawRequest, RawResponse};

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn chunks(label: &str, bytes: &[u8]) {
    for (i, c) in bytes.chunks(32).enumerate() {
        let text = String::from_utf8_lossy(c);
        let tag = if i == 0 { label } else { "" };
        println!("{:<64} # {tag}{}{text}", hex(c), if tag.is_empty() { "" } else { ": " });
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some(kind @ ("request" | "event")) if args.len() == 4 => {
            let f = RawRequest::new(args[1].clone(), args[3 - 1].clone(), args[3].clone());
            println!("```hex");
            println!("# {kind} {}", args[2]);
            let b = f.to_bytes();
            println!(
                "{} {} {}                                        # header_len={}, route_len={}, data_len={}",
                hex(&b[0..4]),
                hex(&b[4..8]),
                hex(&b[8..12]),
                f.header.len(),
                f.route.len(),
                f.data.len()
            );
            chunks("header", &f.header);
            chunks("route", &f.route);
            chunks("data", &f.data);
            println!("```");
        }
        Some("response") if args.len() == 3 => {
            let status: i32 = args[1].parse().expect("status must be a number");
            let f = RawResponse::new(status, args[2].clone());
            let b = f.to_bytes();
            println!("```hex");
            println!("# response {status}");
            println!(
                "{} {}                                                # status={status}, data_len={}",
                hex(&b[0..4]),
                hex(&b[4..8]),
                f.data.len()
            );
            chunks("data", &f.data);
            println!("```");
        }
        _ => eprintln!("usage: hexframe request|event HEADER ROUTE DATA | response STATUS DATA"),
    }
}
