//! Message history paging under load of history: one user with 100 000
//! messages, paged with `/messages` over a real TCP connection to a real
//! server, against `/contacts` on the same server and connection as the
//! baseline.
//!
//! `cargo run --release -p babel-server --example message_pages [-- MESSAGES REQUESTS]`
//!
//! The messages are stored through the server's own store (`send_message`,
//! one transaction each, `durability = normal` while seeding so the set-up
//! takes seconds, not an fsync per message); then every measured request is
//! sent and answered one at a time on one connection and timed from write to
//! full answer. Prints median, p99 and max per route, and each median as a
//! ratio to `/contacts`' (answered from a cache) and beside `/contact_requests`
//! (a store read on the blocking pool every time, like `/messages`); last,
//! the store's page query alone, in-process.

use std::sync::Arc;
use std::time::{Duration, Instant};

use babel_proto::{Limits, MessageId, RawRequest, decode_response};
use babel_server::auth::PasswordCost;
use babel_server::store::Store;
use babel_server::store::sqlite::{Durability, SqliteStore};
use babel_server::{Config, RunningServer};
use bytes::BytesMut;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

type Res<T> = Result<T, Box<dyn std::error::Error>>;

/// Makes one measured request: route and data.
type MakeRequest = Box<dyn FnMut(&mut Rng) -> (&'static str, Value)>;

struct Conn {
    stream: TcpStream,
    buf: BytesMut,
}

impl Conn {
    async fn call(&mut self, header: &Value, route: &str, data: &Value) -> Res<(i32, Vec<u8>)> {
        let section = |v: &Value| if v.is_null() { Ok(Vec::new()) } else { serde_json::to_vec(v) };
        let frame = RawRequest::new(section(header)?, route.to_owned(), section(data)?);
        self.stream.write_all(&frame.to_bytes()).await?;
        let limits = Limits { max_data: 64 << 20, ..Limits::default() };
        loop {
            if let Some(r) = decode_response(&mut self.buf, &limits)? {
                return Ok((r.status, r.data.to_vec()));
            }
            if self.stream.read_buf(&mut self.buf).await? == 0 {
                return Err("server closed the connection".into());
            }
        }
    }
}

/// A small deterministic generator (xorshift), so runs repeat.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: i64) -> i64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n.max(1) as u64) as i64
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let total: i64 = args.first().map_or(Ok(100_000), |s| s.parse())?;
    let requests: usize = args.get(1).map_or(Ok(2000), |s| s.parse())?;

    let dir = tempfile::tempdir()?;
    let db = dir.path().join("pages.db");
    let store = Arc::new(SqliteStore::open(&db, Durability::Normal)?);
    let config = Config {
        listen: "127.0.0.1:0".parse()?,
        db: db.clone(),
        password: PasswordCost { memory_kib: 256, iterations: 1 },
        ..Config::default()
    };
    let server = RunningServer::start_with_store(&config, Arc::clone(&store) as Arc<dyn Store>).await?;
    let stream = TcpStream::connect(server.addr()).await?;
    stream.set_nodelay(true)?;
    let mut c = Conn { stream, buf: BytesMut::new() };

    let session = |v: &[u8]| -> Res<(Value, i64)> {
        let v: Value = serde_json::from_slice(v)?;
        let id = v["id"].as_str().ok_or("no id")?.parse()?;
        Ok((json!({"id": v["id"], "token": v["token"]}), id))
    };
    let (_, a) =
        c.call(&Value::Null, "/create", &json!({"user_mail": "pages-a@example.org", "pass": "password123"})).await?;
    let (ha, ida) = session(&a)?;
    let (_, b) =
        c.call(&Value::Null, "/create", &json!({"user_mail": "pages-b@example.org", "pass": "password123"})).await?;
    let (hb, idb) = session(&b)?;
    c.call(&ha, "/add_contact", &json!({"contact_email": "pages-b@example.org"})).await?;
    c.call(&hb, "/accept_contact", &json!({"contact_id": ida.to_string()})).await?;
    // A few more contacts, so `/contacts` answers a list, not one entry.
    for i in 0..9 {
        let (_, o) = c
            .call(
                &Value::Null,
                "/create",
                &json!({"user_mail": format!("pages-{i}@example.org"), "pass": "password123"}),
            )
            .await?;
        let (ho, ido) = session(&o)?;
        c.call(&ho, "/add_contact", &json!({"contact_email": "pages-a@example.org"})).await?;
        c.call(&ha, "/accept_contact", &json!({"contact_id": ido.to_string()})).await?;
    }

    let seeding = Instant::now();
    let (ua, ub) = (babel_proto::UserId(ida), babel_proto::UserId(idb));
    let mut first = None;
    let mut last = 0;
    for i in 0..total {
        let (from, to) = if i % 2 == 0 { (ua, ub) } else { (ub, ua) };
        let text = format!("message {i}: a line of ordinary length for a chat message");
        match store.send_message(from, to, &text, None, 1_795_976_400 + i)? {
            babel_server::store::SendOutcome::Sent(m) => {
                first.get_or_insert(m.id);
                last = m.id;
            }
            other => return Err(format!("unexpected {other:?}").into()),
        }
    }
    let first = first.ok_or("no messages")?;
    // Most of it read, as in a real long conversation.
    store.mark_read(ua, ub, MessageId(last - 100))?;
    eprintln!("seeded {total} messages in {:.1} s", seeding.elapsed().as_secs_f64());

    let contact = idb.to_string();
    let (c1, c2, c3) = (contact.clone(), contact.clone(), contact);
    let mut rng = Rng(0x2545_F491_4F6C_DD1D);
    let mut cases: Vec<(&str, MakeRequest)> = vec![
        ("/contacts (baseline)", Box::new(|_| ("/contacts", Value::Null))),
        ("/contact_requests (a store read every time)", Box::new(|_| ("/contact_requests", Value::Null))),
        (
            "/messages contact, before (random), limit 50",
            Box::new(move |r| {
                let before = first + 50 + r.below(last - first - 50);
                ("/messages", json!({"contact_id": c1, "before": before.to_string(), "limit": "50"}))
            }),
        ),
        ("/messages contact, newest 50", Box::new(move |_| ("/messages", json!({"contact_id": c2, "limit": "50"})))),
        (
            "/messages contact, after (random), limit 50",
            Box::new(move |r| {
                let after = first + r.below(last - first - 50);
                ("/messages", json!({"contact_id": c3, "after": after.to_string(), "limit": "50"}))
            }),
        ),
        (
            "/messages all conversations, before (random), limit 50",
            Box::new(move |r| {
                let before = first + 50 + r.below(last - first - 50);
                ("/messages", json!({"before": before.to_string(), "limit": "50"}))
            }),
        ),
        ("/unread (100 unread)", Box::new(|_| ("/unread", Value::Null))),
    ];
    let mut rows = Vec::new();
    for (name, make) in cases.iter_mut() {
        // Warm-up: the first requests open reader connections and fill caches.
        for _ in 0..50 {
            let (route, data) = make(&mut rng);
            c.call(&ha, route, &data).await?;
        }
        let mut times = Vec::with_capacity(requests);
        let mut bytes = 0usize;
        for _ in 0..requests {
            let (route, data) = make(&mut rng);
            let t = Instant::now();
            let (status, body) = c.call(&ha, route, &data).await?;
            times.push(t.elapsed());
            if status != 200 {
                return Err(format!("{route} answered {status}: {}", String::from_utf8_lossy(&body)).into());
            }
            bytes += body.len();
        }
        times.sort();
        rows.push((
            name.to_owned(),
            percentile(&times, 0.5),
            percentile(&times, 0.99),
            times[times.len() - 1],
            bytes / requests,
        ));
    }
    // The store alone, no socket and no thread hop: what the index costs.
    let mut times = Vec::with_capacity(requests);
    for _ in 0..requests {
        let before = MessageId(first + 50 + rng.below(last - first - 50));
        let t = Instant::now();
        let page = store.messages(ua, Some(ub), babel_proto::Page::Before(before), 50)?;
        times.push(t.elapsed());
        if page.len() != 50 {
            return Err(format!("a page of {} messages", page.len()).into());
        }
    }
    times.sort();
    let store_row = (percentile(&times, 0.5), percentile(&times, 0.99), times[times.len() - 1]);
    let base = ms(rows[0].1);
    println!("{total} messages between two users; {requests} requests per route, one at a time on one connection\n");
    println!("| request | p50 ms | p99 ms | max ms | answer bytes | p50 / `/contacts` p50 |");
    println!("|---|---|---|---|---|---|");
    for (name, p50, p99, max, bytes) in rows {
        println!("| {name} | {:.3} | {:.3} | {:.3} | {bytes} | {:.2} |", ms(p50), ms(p99), ms(max), ms(p50) / base);
    }
    let (p50, p99, max) = store_row;
    println!(
        "| store only: `messages(before random, 50)` in-process | {:.3} | {:.3} | {:.3} | | {:.2} |",
        ms(p50),
        ms(p99),
        ms(max),
        ms(p50) / base
    );
    drop(server);
    Ok(())
}
