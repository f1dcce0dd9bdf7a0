//! One direction of a datagram network path, as a pure state machine:
//! datagrams go in with [`Link::push`] at a time the caller gives, and come
//! out of [`Link::poll`] when they are due. No clock, no socket: the UDP
//! proxy drives it with real time, tests with simulated time.
//!
//! What happens to a datagram, in order (as a router and a long path would):
//!
//! 1. **Bursty loss** (Gilbert-Elliott): a two-state chain, stepped once per
//!    datagram, loses with `loss_in_bad` in the bad state and `loss_in_good`
//!    in the good one.
//! 2. **Random loss**: each datagram independently, with probability `loss`.
//! 3. **Duplication**: a copy follows the datagram with probability `duplicate`.
//! 4. **Bandwidth cap**: a bottleneck that sends `rate_bps` bits a second
//!    from a drop-tail queue of `queue_bytes`; what does not fit is dropped.
//! 5. **Delay and jitter**: each datagram then waits `delay` plus a uniform
//!    random extra in `[0, jitter]`, independently, so jitter larger than
//!    the spacing of datagrams reorders some of them (as `netem` does).
//! 6. **Reordering**: with probability `reorder` a datagram is held back a
//!    further `reorder_delay`, so that those sent after it overtake it.
//!
//! Every random choice draws from one seeded generator in a fixed order, so
//! a seed and a sequence of pushes always give the same result.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::time::Duration;

use serde::Serialize;

use crate::rng::Rng;

/// The Gilbert-Elliott bursty loss model.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct GilbertElliott {
    /// Probability of going from the good to the bad state, per datagram.
    pub p: f64,
    /// Probability of going from the bad to the good state, per datagram
    /// (the mean time spent in the bad state is `1 / r` datagrams).
    pub r: f64,
    /// Loss probability in the bad state (1 − h in the usual notation).
    pub loss_in_bad: f64,
    /// Loss probability in the good state (usually 0).
    pub loss_in_good: f64,
}

impl GilbertElliott {
    /// The simple Gilbert model with a given mean loss rate (0..1) and mean
    /// burst length (in datagrams, ≥ 1): every datagram in the bad state is
    /// lost, none in the good one.
    pub fn from_loss_and_burst(loss: f64, mean_burst: f64) -> GilbertElliott {
        let loss = loss.clamp(0.0, 0.99);
        let r = 1.0 / mean_burst.max(1.0);
        // Stationary P(bad) = p / (p + r) = loss.
        let p = loss * r / (1.0 - loss);
        GilbertElliott { p, r, loss_in_bad: 1.0, loss_in_good: 0.0 }
    }

    /// The long-run loss rate this model gives.
    pub fn mean_loss(&self) -> f64 {
        if self.p + self.r <= 0.0 {
            return self.loss_in_good;
        }
        let bad = self.p / (self.p + self.r);
        bad * self.loss_in_bad + (1.0 - bad) * self.loss_in_good
    }
}

/// What a [`Link`] does to datagrams. The default does nothing.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Impairment {
    /// Independent random loss probability (0..1).
    pub loss: f64,
    /// Bursty loss on top of it.
    pub burst: Option<GilbertElliott>,
    /// Fixed one-way delay.
    pub delay: Duration,
    /// Extra delay, uniform in `[0, jitter]` per datagram.
    pub jitter: Duration,
    /// Probability that a datagram is held back by `reorder_delay`.
    pub reorder: f64,
    /// How long a reordered datagram is held back.
    pub reorder_delay: Duration,
    /// Probability that a datagram is sent twice.
    pub duplicate: f64,
    /// Bottleneck rate in bits per second (`None`: unlimited).
    pub rate_bps: Option<u64>,
    /// The bottleneck's queue, in bytes (drop-tail).
    pub queue_bytes: usize,
}

impl Default for Impairment {
    fn default() -> Self {
        Self {
            loss: 0.0,
            burst: None,
            delay: Duration::ZERO,
            jitter: Duration::ZERO,
            reorder: 0.0,
            reorder_delay: Duration::from_millis(40),
            duplicate: 0.0,
            rate_bps: None,
            queue_bytes: 64 * 1024,
        }
    }
}

/// What a [`Link`] did, datagram by datagram.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct LinkCounters {
    /// Datagrams pushed in.
    pub received: u64,
    /// Bytes pushed in.
    pub bytes_in: u64,
    /// Datagrams handed out by `poll` (copies included).
    pub delivered: u64,
    /// Bytes handed out.
    pub bytes_out: u64,
    /// Lost to random loss.
    pub dropped_random: u64,
    /// Lost to bursty loss.
    pub dropped_burst: u64,
    /// Dropped by the bottleneck's full queue.
    pub dropped_queue: u64,
    /// Extra copies made.
    pub duplicated: u64,
    /// Held back to be overtaken.
    pub reordered: u64,
    /// Sent with some delay (fixed, jitter, queueing or reordering).
    pub delayed: u64,
}

impl LinkCounters {
    /// All datagrams lost, whatever the cause.
    pub fn dropped(&self) -> u64 {
        self.dropped_random + self.dropped_burst + self.dropped_queue
    }

    /// Adds another link's counts (for totals over flows).
    pub fn add(&mut self, o: &LinkCounters) {
        self.received += o.received;
        self.bytes_in += o.bytes_in;
        self.delivered += o.delivered;
        self.bytes_out += o.bytes_out;
        self.dropped_random += o.dropped_random;
        self.dropped_burst += o.dropped_burst;
        self.dropped_queue += o.dropped_queue;
        self.duplicated += o.duplicated;
        self.reordered += o.reordered;
        self.delayed += o.delayed;
    }
}

/// What happened to one pushed datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Lost to random loss.
    DroppedRandom,
    /// Lost to bursty loss.
    DroppedBurst,
    /// The bottleneck's queue was full.
    DroppedQueue,
    /// On its way: this many copies (1, or 2 when duplicated) are scheduled.
    Scheduled(u8),
}

/// A scheduled datagram: ordered by due time, then by push order.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Due {
    at: Duration,
    order: u64,
    data: Vec<u8>,
}

/// One direction of a path. See the module docs.
#[derive(Debug)]
pub struct Link {
    cfg: Impairment,
    rng: Rng,
    bad: bool,
    /// When the bottleneck finishes sending what it holds.
    free_at: Duration,
    /// (finish time, bytes) of datagrams in the bottleneck's queue.
    backlog: VecDeque<(Duration, usize)>,
    backlog_bytes: usize,
    heap: BinaryHeap<Reverse<Due>>,
    order: u64,
    counters: LinkCounters,
}

impl Link {
    /// A link applying `cfg`, its random choices drawn from `rng`.
    pub fn new(cfg: Impairment, rng: Rng) -> Link {
        Link {
            cfg,
            rng,
            bad: false,
            free_at: Duration::ZERO,
            backlog: VecDeque::new(),
            backlog_bytes: 0,
            heap: BinaryHeap::new(),
            order: 0,
            counters: LinkCounters::default(),
        }
    }

    /// The settings.
    pub fn impairment(&self) -> &Impairment {
        &self.cfg
    }

    /// What it did so far.
    pub fn counters(&self) -> LinkCounters {
        self.counters
    }

    /// Datagrams scheduled and not yet handed out.
    pub fn in_flight(&self) -> usize {
        self.heap.len()
    }

    /// When the next datagram is due, if any is scheduled.
    pub fn next_due(&self) -> Option<Duration> {
        self.heap.peek().map(|Reverse(d)| d.at)
    }

    /// A datagram enters the path at `now`.
    pub fn push(&mut self, now: Duration, data: Vec<u8>) -> Verdict {
        self.counters.received += 1;
        self.counters.bytes_in += data.len() as u64;
        // One draw per decision, always in this order, whatever is enabled.
        let burst_lost = match self.cfg.burst {
            Some(ge) => {
                let flip = self.rng.unit();
                self.bad = if self.bad { flip >= ge.r } else { flip < ge.p };
                self.rng.chance(if self.bad { ge.loss_in_bad } else { ge.loss_in_good })
            }
            None => false,
        };
        let random_lost = self.rng.chance(self.cfg.loss);
        let duplicate = self.rng.chance(self.cfg.duplicate);
        if burst_lost {
            self.counters.dropped_burst += 1;
            return Verdict::DroppedBurst;
        }
        if random_lost {
            self.counters.dropped_random += 1;
            return Verdict::DroppedRandom;
        }
        let copy = duplicate.then(|| data.clone());
        let mut scheduled = u8::from(self.schedule(now, data));
        if let Some(copy) = copy {
            if self.schedule(now, copy) {
                scheduled += 1;
                self.counters.duplicated += 1;
            }
        }
        if scheduled == 0 { Verdict::DroppedQueue } else { Verdict::Scheduled(scheduled) }
    }

    /// Puts one datagram through the bottleneck and the delays; false when
    /// the queue was full.
    fn schedule(&mut self, now: Duration, data: Vec<u8>) -> bool {
        let mut at = now;
        if let Some(rate) = self.cfg.rate_bps.filter(|&r| r > 0) {
            while self.backlog.front().is_some_and(|&(t, _)| t <= now) {
                if let Some((_, n)) = self.backlog.pop_front() {
                    self.backlog_bytes -= n;
                }
            }
            if self.backlog_bytes + data.len() > self.cfg.queue_bytes {
                self.counters.dropped_queue += 1;
                return false;
            }
            let start = self.free_at.max(now);
            let send_time = Duration::from_nanos((data.len() as u64 * 8).saturating_mul(1_000_000_000) / rate);
            self.free_at = start + send_time;
            self.backlog.push_back((self.free_at, data.len()));
            self.backlog_bytes += data.len();
            at = self.free_at;
        }
        let jitter_us = u64::try_from(self.cfg.jitter.as_micros()).unwrap_or(u64::MAX);
        at += self.cfg.delay + Duration::from_micros(self.rng.uniform_us(jitter_us));
        if self.rng.chance(self.cfg.reorder) {
            at += self.cfg.reorder_delay;
            self.counters.reordered += 1;
        }
        if at > now {
            self.counters.delayed += 1;
        }
        self.order += 1;
        self.heap.push(Reverse(Due { at, order: self.order, data }));
        true
    }

    /// The next datagram due at or before `now`, if any.
    pub fn poll(&mut self, now: Duration) -> Option<Vec<u8>> {
        if self.heap.peek().is_none_or(|Reverse(d)| d.at > now) {
            return None;
        }
        let Reverse(d) = self.heap.pop()?;
        self.counters.delivered += 1;
        self.counters.bytes_out += d.data.len() as u64;
        Some(d.data)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const MS: Duration = Duration::from_millis(1);
    const N: u64 = 100_000;

    /// Pushes `n` datagrams of `size` bytes every `every`, polling as time
    /// goes; answers each datagram's (number, send time, delivery time).
    fn run(cfg: Impairment, seed: u64, n: u64, size: usize, every: Duration) -> (Vec<(u64, Duration, Duration)>, Link) {
        let mut link = Link::new(cfg, Rng::new(seed));
        let mut out = Vec::new();
        let mut sent_at = Vec::new();
        let step = Duration::from_micros(100);
        let mut now = Duration::ZERO;
        let mut next = 0u64;
        let end = every * u32::try_from(n).unwrap() + Duration::from_secs(10);
        while now <= end {
            while next < n && every * u32::try_from(next).unwrap() <= now {
                let mut d = next.to_be_bytes().to_vec();
                d.resize(size.max(8), 0);
                sent_at.push(now);
                link.push(now, d);
                next += 1;
            }
            while let Some(d) = link.poll(now) {
                let k = u64::from_be_bytes(d[..8].try_into().unwrap());
                out.push((k, sent_at[k as usize], now));
            }
            now += step;
            if next >= n && link.in_flight() == 0 {
                break;
            }
        }
        (out, link)
    }

    fn received(out: &[(u64, Duration, Duration)], n: u64) -> Vec<bool> {
        let mut got = vec![false; n as usize];
        for &(k, _, _) in out {
            got[k as usize] = true;
        }
        got
    }

    #[test]
    fn nothing_happens_by_default() {
        let (out, link) = run(Impairment::default(), 1, 1000, 100, 20 * MS);
        assert_eq!(out.len(), 1000);
        assert!(out.iter().enumerate().all(|(i, &(k, s, d))| k == i as u64 && s == d));
        let c = link.counters();
        assert_eq!((c.received, c.delivered, c.dropped(), c.delayed), (1000, 1000, 0, 0));
        assert_eq!(c.bytes_in, 100_000);
    }

    #[test]
    fn random_loss_matches_its_rate_and_is_independent() {
        for pct in [1.0, 5.0, 10.0, 20.0] {
            let cfg = Impairment { loss: pct / 100.0, ..Impairment::default() };
            let mut link = Link::new(cfg, Rng::new(42));
            let lost: Vec<bool> =
                (0..N).map(|_| link.push(Duration::ZERO, vec![0; 10]) != Verdict::Scheduled(1)).collect();
            let rate = lost.iter().filter(|&&l| l).count() as f64 / N as f64;
            assert!((rate - pct / 100.0).abs() < 0.004, "{pct} %: {rate}");
            assert_eq!(link.counters().dropped_random, lost.iter().filter(|&&l| l).count() as u64);
            // Independent: loss after a loss is as likely as loss overall.
            let after: Vec<bool> = lost.windows(2).filter(|w| w[0]).map(|w| w[1]).collect();
            let cond = after.iter().filter(|&&l| l).count() as f64 / after.len() as f64;
            assert!((cond - pct / 100.0).abs() < 0.015, "{pct} %: P(loss | loss) {cond}");
        }
    }

    /// Lengths of runs of consecutive losses.
    fn bursts(lost: &[bool]) -> Vec<usize> {
        let mut v = Vec::new();
        let mut run = 0;
        for &l in lost {
            if l {
                run += 1;
            } else if run > 0 {
                v.push(run);
                run = 0;
            }
        }
        v
    }

    #[test]
    fn gilbert_elliott_gives_its_mean_loss_and_burst_length() {
        for (loss, burst) in [(0.10, 3.0), (0.20, 3.0), (0.05, 2.0), (0.20, 5.0)] {
            let ge = GilbertElliott::from_loss_and_burst(loss, burst);
            assert!((ge.mean_loss() - loss).abs() < 1e-9);
            let cfg = Impairment { burst: Some(ge), ..Impairment::default() };
            let mut link = Link::new(cfg, Rng::new(7));
            let lost: Vec<bool> =
                (0..N * 3).map(|_| link.push(Duration::ZERO, vec![0; 10]) == Verdict::DroppedBurst).collect();
            let rate = lost.iter().filter(|&&l| l).count() as f64 / lost.len() as f64;
            assert!((rate - loss).abs() < 0.01, "{loss}/{burst}: loss {rate}");
            let b = bursts(&lost);
            let mean = b.iter().sum::<usize>() as f64 / b.len() as f64;
            // With loss_in_bad = 1, a burst is a stay in the bad state: 1 / r.
            assert!((mean - burst).abs() < burst * 0.05, "{loss}/{burst}: mean burst {mean}");
            // Bursty, unlike random loss: P(loss | loss) is 1 - r.
            let after: Vec<bool> = lost.windows(2).filter(|w| w[0]).map(|w| w[1]).collect();
            let cond = after.iter().filter(|&&l| l).count() as f64 / after.len() as f64;
            assert!((cond - (1.0 - 1.0 / burst)).abs() < 0.02, "P(loss | loss) {cond}");
            assert_eq!(link.counters().dropped_burst, lost.iter().filter(|&&l| l).count() as u64);
        }
        // Partial loss in the bad state, some in the good one.
        let ge = GilbertElliott { p: 0.05, r: 0.25, loss_in_bad: 0.5, loss_in_good: 0.01 };
        let mut link = Link::new(Impairment { burst: Some(ge), ..Impairment::default() }, Rng::new(3));
        let lost = (0..N * 3).filter(|_| link.push(Duration::ZERO, vec![0; 10]) == Verdict::DroppedBurst).count();
        let rate = lost as f64 / (N * 3) as f64;
        assert!((rate - ge.mean_loss()).abs() < 0.005, "{rate} vs {}", ge.mean_loss());
    }

    #[test]
    fn fixed_delay_is_exact() {
        let cfg = Impairment { delay: 50 * MS, ..Impairment::default() };
        let (out, link) = run(cfg, 1, 1000, 100, 20 * MS);
        assert_eq!(out.len(), 1000);
        assert!(out.iter().all(|&(_, s, d)| d - s >= 50 * MS && d - s < 50 * MS + Duration::from_micros(100)));
        assert!(out.windows(2).all(|w| w[0].0 < w[1].0), "a fixed delay keeps the order");
        assert_eq!(link.counters().delayed, 1000);
    }

    #[test]
    fn jitter_spreads_delays_uniformly_and_reorders_some() {
        let cfg = Impairment { delay: 10 * MS, jitter: 30 * MS, ..Impairment::default() };
        let (out, _) = run(cfg, 9, N / 4, 100, 20 * MS);
        let delays: Vec<f64> = out.iter().map(|&(_, s, d)| (d - s).as_secs_f64() * 1000.0).collect();
        let min = delays.iter().copied().fold(f64::MAX, f64::min);
        let max = delays.iter().copied().fold(0.0, f64::max);
        let mean = delays.iter().sum::<f64>() / delays.len() as f64;
        assert!((10.0..10.5).contains(&min), "{min}");
        assert!(max > 39.5 && max <= 40.2, "{max}");
        assert!((mean - 25.0).abs() < 0.3, "uniform in 10..40 ms: mean {mean}");
        let sd = (delays.iter().map(|d| (d - mean).powi(2)).sum::<f64>() / delays.len() as f64).sqrt();
        assert!((sd - 30.0 / 12f64.sqrt()).abs() < 0.3, "sd {sd}");
        // Two datagrams 20 ms apart swap when the first draws 20 ms more
        // than the second: (10/30)^2 / 2 = 5.6 % of neighbours.
        let swapped = out.windows(2).filter(|w| w[0].0 > w[1].0).count() as f64 / out.len() as f64;
        assert!((swapped - 0.056).abs() < 0.01, "{swapped}");
    }

    #[test]
    fn reordering_holds_back_the_chosen_datagrams() {
        let cfg = Impairment { reorder: 0.05, reorder_delay: 50 * MS, ..Impairment::default() };
        let (out, link) = run(cfg, 5, N / 4, 100, 20 * MS);
        assert_eq!(out.len() as u64, N / 4, "nothing lost");
        let held = out.iter().filter(|&&(_, s, d)| d - s >= 50 * MS).count() as f64 / out.len() as f64;
        assert!((held - 0.05).abs() < 0.005, "{held}");
        assert_eq!(link.counters().reordered, out.iter().filter(|&&(_, s, d)| d - s >= 50 * MS).count() as u64);
        // A held-back datagram arrives after the next two or three.
        let out_of_order = out.windows(2).filter(|w| w[0].0 > w[1].0).count();
        assert!(out_of_order as u64 >= link.counters().reordered * 9 / 10, "{out_of_order}");
    }

    #[test]
    fn duplication_matches_its_rate() {
        let cfg = Impairment { duplicate: 0.02, ..Impairment::default() };
        let (out, link) = run(cfg, 11, N, 20, 100 * Duration::from_micros(1));
        let dups = out.len() as u64 - N;
        assert_eq!(dups, link.counters().duplicated);
        let rate = dups as f64 / N as f64;
        assert!((rate - 0.02).abs() < 0.002, "{rate}");
        assert!(received(&out, N).iter().all(|&g| g));
    }

    #[test]
    fn the_bandwidth_cap_limits_throughput_and_drops_from_a_full_queue() {
        // 200 kbit/s offered (1000 B every 40 ms) into a 100 kbit/s cap.
        let cfg = Impairment { rate_bps: Some(100_000), queue_bytes: 10_000, ..Impairment::default() };
        let (out, link) = run(cfg, 1, 2_000, 1000, 40 * MS);
        let first = out.first().unwrap().2;
        let last = out.last().unwrap().2;
        let bits = (out.len() as f64 - 1.0) * 8000.0;
        let rate = bits / (last - first).as_secs_f64();
        assert!((rate - 100_000.0).abs() < 1_000.0, "throughput {rate}");
        let c = link.counters();
        let dropped = c.dropped_queue as f64 / c.received as f64;
        assert!((dropped - 0.5).abs() < 0.02, "half is dropped: {dropped}");
        // The queue bounds the delay: 10 000 B at 100 kbit/s is 0.8 s.
        let worst = out.iter().map(|&(_, s, d)| d - s).max().unwrap();
        assert!(worst <= Duration::from_millis(810), "{worst:?}");
        assert!(out.windows(2).all(|w| w[0].0 < w[1].0), "a queue keeps the order");

        // Under the cap: nothing dropped, each datagram delayed by its own
        // sending time only (1000 B at 1 Mbit/s: 8 ms).
        let cfg = Impairment { rate_bps: Some(1_000_000), ..Impairment::default() };
        let (out, link) = run(cfg, 1, 500, 1000, 40 * MS);
        assert_eq!(out.len(), 500);
        assert_eq!(link.counters().dropped_queue, 0);
        assert!(out.iter().all(|&(_, s, d)| (d - s).abs_diff(8 * MS) < Duration::from_micros(200)));
    }

    #[test]
    fn the_same_seed_gives_the_same_run() {
        let cfg = Impairment {
            loss: 0.1,
            burst: Some(GilbertElliott::from_loss_and_burst(0.1, 3.0)),
            jitter: 30 * MS,
            reorder: 0.02,
            duplicate: 0.01,
            ..Impairment::default()
        };
        let a = run(cfg, 123, 5000, 100, 20 * MS);
        let b = run(cfg, 123, 5000, 100, 20 * MS);
        let c = run(cfg, 124, 5000, 100, 20 * MS);
        assert_eq!(a.0, b.0);
        assert_eq!(a.1.counters(), b.1.counters());
        assert_ne!(a.0, c.0);
    }
}
