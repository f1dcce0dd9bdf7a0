//! One TCP connection through a bad network, as a pure state machine: bytes
//! go in with [`StreamLink::push`] and come out of [`StreamLink::poll`] when
//! the network lets them, in order and complete (TCP hides loss; what is
//! left for the application is delay, stalls, a rate limit and broken
//! connections).
//!
//! * **Delay**: every byte arrives `delay` after it was read.
//! * **Bandwidth cap**: each direction sends at most `rate_bps`.
//! * **Stalls**: now and then (exponential gaps of mean `stall_every`) the
//!   connection freezes both ways for `stall_for`, as a mobile link or a
//!   retransmission timeout does; what was sent meanwhile comes in a burst.
//! * **Cuts**: after an exponential time of mean `cut_after` the proxy
//!   closes the connection on both sides ([`StreamLink::cut_at`]).

use std::collections::VecDeque;
use std::time::Duration;

use serde::Serialize;

use crate::rng::Rng;

/// Largest piece handed out at once (a TCP segment's payload): the rate
/// limit works at this grain.
pub const SEGMENT: usize = 1448;

/// What happens to TCP connections. The default does nothing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct StreamImpairment {
    /// One-way delay.
    pub delay: Duration,
    /// Bits per second in each direction (`None`: unlimited).
    pub rate_bps: Option<u64>,
    /// Mean time between stalls (`None`: never).
    pub stall_every: Option<Duration>,
    /// How long a stall lasts.
    pub stall_for: Duration,
    /// Mean lifetime of a connection before it is cut (`None`: never).
    pub cut_after: Option<Duration>,
}

/// Which way bytes go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From the client that connected to the proxy towards the target.
    Up = 0,
    /// From the target back to the client.
    Down = 1,
}

/// What a [`StreamLink`] (or a proxy's links, summed) did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct StreamCounters {
    /// Connections.
    pub connections: u64,
    /// Bytes taken in.
    pub bytes_in: u64,
    /// Bytes handed out.
    pub bytes_out: u64,
    /// Stalls begun.
    pub stalls: u64,
    /// Connections cut.
    pub cuts: u64,
}

impl StreamCounters {
    /// Adds another's counts.
    pub fn add(&mut self, o: &StreamCounters) {
        self.connections += o.connections;
        self.bytes_in += o.bytes_in;
        self.bytes_out += o.bytes_out;
        self.stalls += o.stalls;
        self.cuts += o.cuts;
    }
}

#[derive(Debug, Default)]
struct Half {
    /// (time it may leave, bytes), at most [`SEGMENT`] each.
    pieces: VecDeque<(Duration, Vec<u8>)>,
    /// When the previous piece finished sending.
    free_at: Duration,
}

/// One connection, both directions. See the module docs.
#[derive(Debug)]
pub struct StreamLink {
    cfg: StreamImpairment,
    rng: Rng,
    halves: [Half; 2],
    next_stall: Option<Duration>,
    stall_until: Duration,
    cut_at: Option<Duration>,
    counters: StreamCounters,
}

fn exp_after(rng: &mut Rng, from: Duration, mean: Option<Duration>) -> Option<Duration> {
    mean.map(|m| from + Duration::from_secs_f64(rng.exponential(m.as_secs_f64())))
}

impl StreamLink {
    /// A connection opened at `now`.
    pub fn new(cfg: StreamImpairment, mut rng: Rng, now: Duration) -> StreamLink {
        let next_stall = exp_after(&mut rng, now, cfg.stall_every);
        let cut_at = exp_after(&mut rng, now, cfg.cut_after);
        StreamLink {
            cfg,
            rng,
            halves: [Half::default(), Half::default()],
            next_stall,
            stall_until: Duration::ZERO,
            cut_at,
            counters: StreamCounters { connections: 1, ..StreamCounters::default() },
        }
    }

    /// What it did so far.
    pub fn counters(&self) -> StreamCounters {
        self.counters
    }

    /// When the proxy must cut the connection, if ever.
    pub fn cut_at(&self) -> Option<Duration> {
        self.cut_at
    }

    /// Whether the connection is cut at `now` (counted once).
    pub fn cut_due(&mut self, now: Duration) -> bool {
        if self.cut_at.is_some_and(|t| t <= now) {
            if self.counters.cuts == 0 {
                self.counters.cuts = 1;
            }
            return true;
        }
        false
    }

    /// Bytes read from one side at `now`.
    pub fn push(&mut self, now: Duration, dir: Direction, data: &[u8]) {
        self.counters.bytes_in += data.len() as u64;
        let ready = now + self.cfg.delay;
        let half = &mut self.halves[dir as usize];
        for piece in data.chunks(SEGMENT) {
            half.pieces.push_back((ready, piece.to_vec()));
        }
    }

    /// Starts the stalls due by `now`.
    fn update_stalls(&mut self, now: Duration) {
        while let Some(at) = self.next_stall.filter(|&t| t <= now) {
            self.counters.stalls += 1;
            self.stall_until = self.stall_until.max(at + self.cfg.stall_for);
            self.next_stall = exp_after(&mut self.rng, self.stall_until, self.cfg.stall_every);
        }
    }

    /// When the front piece of `dir` finishes arriving, stalls known so far
    /// taken into account.
    fn front_due(&self, dir: Direction) -> Option<Duration> {
        let half = &self.halves[dir as usize];
        let (ready, piece) = half.pieces.front()?;
        let start = (*ready).max(half.free_at).max(self.stall_until);
        let send = match self.cfg.rate_bps.filter(|&r| r > 0) {
            Some(rate) => Duration::from_nanos((piece.len() as u64 * 8).saturating_mul(1_000_000_000) / rate),
            None => Duration::ZERO,
        };
        Some(start + send)
    }

    /// The bytes of `dir` that have arrived by `now`, if any.
    pub fn poll(&mut self, now: Duration, dir: Direction) -> Option<Vec<u8>> {
        self.update_stalls(now);
        if now < self.stall_until {
            return None;
        }
        let due = self.front_due(dir).filter(|&t| t <= now)?;
        let half = &mut self.halves[dir as usize];
        let (_, piece) = half.pieces.pop_front()?;
        half.free_at = due;
        self.counters.bytes_out += piece.len() as u64;
        Some(piece)
    }

    /// When something next happens (a piece is due, a stall starts or
    /// ends, the cut), for the proxy's timer.
    pub fn next_event(&self) -> Option<Duration> {
        [self.front_due(Direction::Up), self.front_due(Direction::Down), self.next_stall, self.cut_at]
            .into_iter()
            .flatten()
            .min()
    }

    /// Bytes waiting in one direction.
    pub fn pending(&self, dir: Direction) -> usize {
        self.halves[dir as usize].pieces.iter().map(|(_, p)| p.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// Feeds `chunk` bytes every `every` into Up for `secs`, polling every
    /// 100 µs; answers (arrival time, bytes) of what came out.
    fn run(
        cfg: StreamImpairment,
        seed: u64,
        chunk: usize,
        every: Duration,
        secs: u64,
    ) -> (Vec<(Duration, Vec<u8>)>, StreamLink) {
        let mut link = StreamLink::new(cfg, Rng::new(seed), Duration::ZERO);
        let mut out = Vec::new();
        let step = Duration::from_micros(100);
        let end = Duration::from_secs(secs);
        let mut now = Duration::ZERO;
        let mut next_send = Duration::ZERO;
        let mut counter = 0u8;
        while now < end + Duration::from_secs(60) {
            if now < end && now >= next_send {
                let data: Vec<u8> = (0..chunk)
                    .map(|_| {
                        counter = counter.wrapping_add(1);
                        counter
                    })
                    .collect();
                link.push(now, Direction::Up, &data);
                next_send += every;
            }
            while let Some(p) = link.poll(now, Direction::Up) {
                out.push((now, p));
            }
            if now >= end && link.pending(Direction::Up) == 0 {
                break;
            }
            now += step;
        }
        (out, link)
    }

    fn in_order(out: &[(Duration, Vec<u8>)]) -> bool {
        let mut expect = 1u8;
        out.iter().flat_map(|(_, p)| p.iter()).all(|&b| {
            let ok = b == expect;
            expect = expect.wrapping_add(1);
            ok
        })
    }

    #[test]
    fn delay_is_exact_and_bytes_stay_in_order() {
        let cfg = StreamImpairment { delay: 40 * MS, ..StreamImpairment::default() };
        let (out, link) = run(cfg, 1, 500, 10 * MS, 5);
        assert!(in_order(&out));
        assert_eq!(link.counters().bytes_out, 500 * 500);
        assert_eq!(link.counters().bytes_in, link.counters().bytes_out);
        // Chunk k was sent at k·10 ms and arrives at k·10 + 40 ms.
        for (k, (t, _)) in out.iter().enumerate() {
            assert_eq!(*t, Duration::from_millis(k as u64 * 10 + 40), "chunk {k}");
        }
    }

    #[test]
    fn the_rate_cap_holds() {
        // 400 kbit/s offered into 100 kbit/s.
        let cfg = StreamImpairment { rate_bps: Some(100_000), ..StreamImpairment::default() };
        let (out, link) = run(cfg, 1, 1000, 20 * MS, 10);
        assert!(in_order(&out));
        assert_eq!(link.counters().bytes_out, 500 * 1000, "TCP loses nothing");
        let secs = (out.last().unwrap().0 - out.first().unwrap().0).as_secs_f64();
        let rate = (link.counters().bytes_out as f64 - out[0].1.len() as f64) * 8.0 / secs;
        assert!((rate - 100_000.0).abs() < 1_000.0, "{rate}");
    }

    #[test]
    fn stalls_come_at_their_rate_and_freeze_the_connection() {
        let cfg = StreamImpairment {
            stall_every: Some(Duration::from_secs(2)),
            stall_for: 500 * MS,
            ..StreamImpairment::default()
        };
        let (out, link) = run(cfg, 3, 100, 10 * MS, 1000);
        assert!(in_order(&out));
        // One stall per 2.5 s on average (2 s gap + 0.5 s stall): 400 in 1000 s.
        let stalls = link.counters().stalls as f64;
        assert!((stalls - 400.0).abs() < 400.0 * 0.12, "{stalls}");
        // While stalled nothing arrives: the gaps between arrivals show them.
        let long_gaps = out.windows(2).filter(|w| w[1].0 - w[0].0 >= 400 * MS).count() as f64;
        assert!((long_gaps - stalls).abs() <= stalls * 0.1, "{long_gaps} gaps for {stalls} stalls");
        // The fraction of time frozen: 0.5 / 2.5.
        let frozen =
            out.windows(2).map(|w| w[1].0 - w[0].0).filter(|g| *g > 20 * MS).map(|g| g.as_secs_f64()).sum::<f64>();
        assert!((frozen / 1000.0 - 0.2).abs() < 0.03, "{}", frozen / 1000.0);
    }

    #[test]
    fn cuts_come_after_their_mean_lifetime() {
        let cfg = StreamImpairment { cut_after: Some(Duration::from_secs(30)), ..StreamImpairment::default() };
        let n = 10_000;
        let mean = (0..n)
            .map(|i| StreamLink::new(cfg, Rng::with_stream(9, i), Duration::ZERO).cut_at().unwrap().as_secs_f64())
            .sum::<f64>()
            / n as f64;
        assert!((mean - 30.0).abs() < 1.0, "{mean}");
        let mut link = StreamLink::new(cfg, Rng::new(1), Duration::ZERO);
        let at = link.cut_at().unwrap();
        assert!(!link.cut_due(at - MS));
        assert!(link.cut_due(at));
        assert!(link.cut_due(at + MS));
        assert_eq!(link.counters().cuts, 1);
        assert_eq!(StreamLink::new(StreamImpairment::default(), Rng::new(1), Duration::ZERO).cut_at(), None);
    }
}
