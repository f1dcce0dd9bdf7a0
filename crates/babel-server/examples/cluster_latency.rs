//! Cross-node event latency on a cluster (issue #18 item 2): an event
//! published on node A, seen on node B, against the same event seen on A.
//! And how soon a logout on A closes the session's event stream on B.
//!
//! `cargo run --release -p babel-server --example cluster_latency [-- EVENTS LOGOUTS]`
//!
//! Needs PostgreSQL and nats-server as the tests find them
//! (`scripts/engines.sh`; `BABEL_TEST_POSTGRES`, `BABEL_TEST_NATS`). Two
//! nodes run in this process on a scratch schema and a cluster name of their
//! own. Sam (on A) sends Rita messages one at a time; Rita has one event
//! connection on A and one on B, and each `/message` event is timed from
//! the moment Sam's request was written to its arrival on each connection.
//! The same event, in the same run: A's figures are the baseline, B's minus
//! A's is what crossing NATS costs. Then, LOGOUTS times: Rita logs in on A,
//! opens events on B, logs out on A; timed from the logout's request to the
//! end of B's stream, and counted whether B refused the token on the first
//! try right after the logout was answered.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use babel_proto::{Limits, RawRequest, decode_request, decode_response};
use babel_server::auth::PasswordCost;
use babel_server::cluster::ClusterConfig;
use babel_server::store::pg::scratch_for_tests;
use babel_server::{Config, RunningServer};
use bytes::BytesMut;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

type Res<T> = Result<T, Box<dyn std::error::Error>>;

struct Conn {
    stream: TcpStream,
    buf: BytesMut,
}

impl Conn {
    async fn open(addr: SocketAddr) -> Res<Conn> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Conn { stream, buf: BytesMut::new() })
    }

    async fn send(&mut self, header: &Value, route: &str, data: &Value) -> Res<()> {
        let section = |v: &Value| if v.is_null() { Ok(Vec::new()) } else { serde_json::to_vec(v) };
        let frame = RawRequest::new(section(header)?, route.to_owned(), section(data)?);
        self.stream.write_all(&frame.to_bytes()).await?;
        Ok(())
    }

    async fn answer(&mut self) -> Res<(i32, Value)> {
        let limits = Limits { max_data: 64 << 20, ..Limits::default() };
        loop {
            if let Some(r) = decode_response(&mut self.buf, &limits)? {
                let v = if r.data.is_empty() { Value::Null } else { serde_json::from_slice(&r.data)? };
                return Ok((r.status, v));
            }
            if self.stream.read_buf(&mut self.buf).await? == 0 {
                return Err("server closed the connection".into());
            }
        }
    }

    async fn call(&mut self, header: &Value, route: &str, data: &Value) -> Res<(i32, Value)> {
        self.send(header, route, data).await?;
        self.answer().await
    }

    /// The next event's route (pings skipped); `None` at the stream's end.
    async fn event(&mut self) -> Res<Option<String>> {
        loop {
            if let Some(f) = decode_request(&mut self.buf, &Limits::default())? {
                let route = f.route_str().unwrap_or_default().to_owned();
                if route == "/ping" {
                    continue;
                }
                return Ok(Some(route));
            }
            match self.stream.read_buf(&mut self.buf).await {
                Ok(0) | Err(_) => return Ok(None),
                Ok(_) => {}
            }
        }
    }
}

fn header(v: &Value) -> Value {
    json!({"id": v["id"], "token": v["token"]})
}

async fn events(addr: SocketAddr, who: &Value) -> Res<Conn> {
    let mut c = Conn::open(addr).await?;
    let (status, v) = c.call(&header(who), "/events", &Value::Null).await?;
    if status != 200 {
        return Err(format!("/events: {status} {v}").into());
    }
    Ok(c)
}

fn percentiles(mut v: Vec<Duration>) -> (f64, f64, f64) {
    v.sort();
    let at = |q: f64| v[((v.len() as f64 * q) as usize).min(v.len() - 1)].as_secs_f64() * 1e3;
    (at(0.5), at(0.99), v.last().map_or(0.0, |d| d.as_secs_f64() * 1e3))
}

#[tokio::main]
async fn main() -> Res<()> {
    let mut args = std::env::args().skip(1);
    let n_events: usize = args.next().map_or(Ok(2000), |a| a.parse())?;
    let n_logouts: usize = args.next().map_or(Ok(200), |a| a.parse())?;
    let schema = scratch_for_tests()?;
    let nats = std::env::var("BABEL_TEST_NATS").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    let mut r = [0u8; 4];
    getrandom::fill(&mut r).map_err(|e| e.to_string())?;
    let cluster = ClusterConfig { name: format!("bench_{}", u32::from_le_bytes(r)), ..ClusterConfig::default() };
    let config = |node: &str| {
        let mut c = Config {
            listen: "127.0.0.1:0".parse().expect("address"),
            db: schema.url().into(),
            nats: Some(nats.clone()),
            node: Some(node.into()),
            cluster: cluster.clone(),
            password: PasswordCost::CHEAP,
            ..Config::default()
        };
        c.abuse.messages_per_account = usize::MAX;
        c
    };
    let a = RunningServer::start(&config("a")).await?;
    let b = RunningServer::start(&config("b")).await?;
    let mut on_a = Conn::open(a.addr()).await?;
    let pass = "password123";
    let (_, sam) = on_a.call(&Value::Null, "/create", &json!({"user_mail": "sam@example.org", "pass": pass})).await?;
    let (_, rita) = on_a.call(&Value::Null, "/create", &json!({"user_mail": "rita@example.org", "pass": pass})).await?;
    on_a.call(&header(&sam), "/add_contact", &json!({"contact_email": "rita@example.org"})).await?;
    on_a.call(&header(&rita), "/accept_contact", &json!({"contact_id": sam["id"]})).await?;
    let mut here = events(a.addr(), &rita).await?;
    let mut there = events(b.addr(), &rita).await?;
    // Let the contact events and presence settle (the loop skips them).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut sender = Conn::open(a.addr()).await?;
    let (mut same, mut cross, mut extra) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..n_events + 50 {
        let t0 = Instant::now();
        sender.send(&header(&sam), "/send_message", &json!({"contact_id": rita["id"], "text": "x"})).await?;
        let (mut ta, mut tb) = (None, None);
        tokio::join!(
            async {
                while here.event().await.ok().flatten().is_some_and(|r| r != "/message") {}
                ta = Some(t0.elapsed());
            },
            async {
                while there.event().await.ok().flatten().is_some_and(|r| r != "/message") {}
                tb = Some(t0.elapsed());
            }
        );
        let (status, v) = sender.answer().await?;
        if status != 200 {
            return Err(format!("/send_message: {status} {v}").into());
        }
        if i >= 50 {
            let (ta, tb) = (ta.ok_or("no event on A")?, tb.ok_or("no event on B")?);
            same.push(ta);
            cross.push(tb);
            extra.push(tb.saturating_sub(ta));
        }
    }
    let (s50, s99, smax) = percentiles(same);
    let (c50, c99, cmax) = percentiles(cross);
    let (e50, e99, emax) = percentiles(extra);
    println!("events: {n_events} /message events, sent on node A, timed from the request's write");
    println!("  same node (A):  p50 {s50:.3} ms  p99 {s99:.3} ms  max {smax:.3} ms");
    println!("  other node (B): p50 {c50:.3} ms  p99 {c99:.3} ms  max {cmax:.3} ms");
    println!("  B after A:      p50 {e50:.3} ms  p99 {e99:.3} ms  max {emax:.3} ms");
    println!("  ratio B/A p50:  {:.2}", c50 / s50);

    let mut closes = Vec::new();
    let mut refused_at_once = 0;
    for _ in 0..n_logouts {
        let mut c = Conn::open(a.addr()).await?;
        let (_, s) = c.call(&Value::Null, "/login", &json!({"user_mail": "rita@example.org", "pass": pass})).await?;
        let mut stream = events(b.addr(), &s).await?;
        let t0 = Instant::now();
        let (status, v) = c.call(&header(&s), "/logout", &Value::Null).await?;
        if status != 200 {
            return Err(format!("/logout: {status} {v}").into());
        }
        let (check, _) = Conn::open(b.addr()).await?.call(&header(&s), "/contacts", &Value::Null).await?;
        if check == 401 {
            refused_at_once += 1;
        }
        while stream.event().await?.is_some() {}
        closes.push(t0.elapsed());
    }
    let (l50, l99, lmax) = percentiles(closes);
    println!("logouts: {n_logouts} logouts on A of a session with an event stream on B");
    println!(
        "  B's stream closed after: p50 {l50:.3} ms  p99 {l99:.3} ms  max {lmax:.3} ms (from the request's write)"
    );
    println!("  token refused on B on the first try after the logout's answer: {refused_at_once} of {n_logouts}");
    a.shutdown().await;
    b.shutdown().await;
    Ok(())
}
