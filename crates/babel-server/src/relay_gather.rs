//! When a relay worker lets its next batch gather: the rule alone, without
//! IO or clocks (the worker in [`crate::relay_io`] feeds it times).
//!
//! Every `recvmmsg` that blocks costs a wake-up, and a wake-up costs more
//! than forwarding a datagram. At 25 000 datagrams/s a worker that takes
//! datagrams as they come wakes for almost every one. So after a batch, a
//! worker that is receiving fast pauses before its next `recvmmsg`, long
//! enough for about [`TARGET_BATCH`] datagrams to queue but never longer
//! than the configured most (`relay_gather_us`, default
//! [`crate::relay_io::GATHER_US`]): one wake-up (the pause's timer) then
//! serves the whole batch, and a datagram waits at most that long more.
//!
//! The rate is measured over windows of at least the longest pause, so
//! that two datagrams that happen to come close together on a quiet relay
//! do not look like a busy one. A worker pauses only when the rate would
//! fill a pause with at least [`MIN_GAIN`] datagrams (2 000/s at the default
//! 1 ms), never after a full batch (more may be waiting), and never on an
//! idle relay: a datagram that comes after a quiet spell is taken by a
//! blocking `recvmmsg` and forwarded at once.

use std::time::Duration;

/// Datagrams a pause aims to gather (it is capped by the longest pause).
pub const TARGET_BATCH: usize = 48;
/// A worker pauses only if the pause would gather at least this many
/// datagrams at the measured rate.
pub const MIN_GAIN: f64 = 2.0;

/// One worker's gathering rule.
#[derive(Debug, Clone)]
pub struct Gather {
    /// The longest pause (0: never pause).
    max: Duration,
    /// Most datagrams one receive takes.
    batch: usize,
    /// Where the current rate window started.
    window_start: Duration,
    /// Datagrams received in the current window.
    window_count: u64,
    /// Datagrams per second over the last finished window.
    rate: f64,
}

impl Gather {
    /// A rule that pauses at most `max` (0: never) for a worker taking up
    /// to `batch` datagrams per receive.
    pub fn new(max: Duration, batch: usize) -> Gather {
        Gather { max, batch: batch.max(1), window_start: Duration::ZERO, window_count: 0, rate: 0.0 }
    }

    /// The rate last measured, datagrams per second.
    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// A receive returned `n` datagrams at `now` (any monotonic clock, the
    /// same every call): how long to pause before the next receive.
    pub fn after_batch(&mut self, n: usize, now: Duration) -> Duration {
        self.window_count += n as u64;
        let elapsed = now.saturating_sub(self.window_start);
        if elapsed >= self.max.max(Duration::from_micros(1)) {
            self.rate = self.window_count as f64 / elapsed.as_secs_f64();
            self.window_start = now;
            self.window_count = 0;
        }
        if self.max.is_zero() || n == 0 || n >= self.batch {
            return Duration::ZERO;
        }
        let max = self.max.as_secs_f64();
        if self.rate * max < MIN_GAIN {
            return Duration::ZERO;
        }
        let want = TARGET_BATCH.min(self.batch) as f64 / self.rate;
        Duration::from_secs_f64(want.min(max))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);
    const BATCH: usize = 64;

    /// Feeds `g` batches as a worker under a steady `rate` (datagrams/s)
    /// would see them, pausing as told, for `secs`; answers the pauses.
    fn steady(g: &mut Gather, start: Duration, rate: f64, secs: f64) -> (Vec<Duration>, Duration) {
        // Handling a batch takes 2 µs per datagram.
        let per = Duration::from_micros(2);
        let mut now = start;
        let mut pauses = Vec::new();
        let mut pending = 1.0f64;
        while (now - start).as_secs_f64() < secs {
            let n = (pending.floor() as usize).clamp(1, BATCH);
            pending = (pending - n as f64).max(0.0);
            let p = g.after_batch(n, now);
            pauses.push(p);
            let spent = per * n as u32 + p;
            // A worker that paused for nothing blocks until the next datagram.
            let spent = spent.max(Duration::from_secs_f64(1.0 / rate));
            pending += rate * spent.as_secs_f64();
            now += spent;
        }
        (pauses, now)
    }

    #[test]
    fn an_idle_relay_never_pauses() {
        let mut g = Gather::new(MS, BATCH);
        // One datagram a second, then two close together after a quiet spell.
        for s in 1..=5u64 {
            assert_eq!(g.after_batch(1, Duration::from_secs(s)), Duration::ZERO);
        }
        assert_eq!(g.after_batch(1, Duration::from_secs(6)), Duration::ZERO);
        assert_eq!(g.after_batch(1, Duration::from_secs(6) + Duration::from_micros(50)), Duration::ZERO);
    }

    #[test]
    fn a_slow_call_does_not_pause() {
        // 100 datagrams/s (one call, both ways).
        let mut g = Gather::new(MS, BATCH);
        let (pauses, _) = steady(&mut g, Duration::from_secs(1), 100.0, 2.0);
        assert!(pauses.iter().all(|p| p.is_zero()), "{pauses:?}");
    }

    #[test]
    fn a_busy_worker_pauses_at_most_the_most() {
        let mut g = Gather::new(MS, BATCH);
        let (pauses, _) = steady(&mut g, Duration::from_secs(1), 25_000.0, 1.0);
        let paused = pauses.iter().filter(|p| !p.is_zero()).count();
        assert!(paused * 10 > pauses.len() * 9, "{paused} of {} batches paused", pauses.len());
        assert!(pauses.iter().all(|p| *p <= MS));
        // 25 000/s fills 1 ms with 25: the pause is the most.
        assert!(pauses[pauses.len() - 1] == MS, "{:?}", pauses.last());
        // Batches then hold about 25 datagrams: 25 000/s takes about 1 000 receives, not 25 000.
        assert!(pauses.len() < 2_000, "{} receives in a second", pauses.len());
    }

    #[test]
    fn a_faster_stream_pauses_less() {
        let mut g = Gather::new(MS, BATCH);
        let (pauses, _) = steady(&mut g, Duration::from_secs(1), 200_000.0, 0.5);
        let last = pauses[pauses.len() - 1];
        // 48 datagrams at 200 000/s: 240 µs.
        assert!(last > Duration::from_micros(150) && last < Duration::from_micros(400), "{last:?}");
    }

    #[test]
    fn after_a_burst_the_first_datagram_of_a_quiet_spell_is_not_held() {
        let mut g = Gather::new(MS, BATCH);
        let (_, end) = steady(&mut g, Duration::from_secs(1), 25_000.0, 0.2);
        assert!(g.rate() > 10_000.0);
        assert_eq!(g.after_batch(1, end + Duration::from_secs(2)), Duration::ZERO);
    }

    #[test]
    fn a_full_batch_or_a_zero_most_never_pauses() {
        let mut g = Gather::new(MS, BATCH);
        let (_, end) = steady(&mut g, Duration::from_secs(1), 25_000.0, 0.1);
        assert_eq!(g.after_batch(BATCH, end + Duration::from_micros(10)), Duration::ZERO);
        assert!(!g.after_batch(4, end + Duration::from_micros(20)).is_zero(), "busy: a batch short of full pauses");
        let mut off = Gather::new(Duration::ZERO, BATCH);
        let (pauses, _) = steady(&mut off, Duration::from_secs(1), 25_000.0, 0.1);
        assert!(pauses.iter().all(|p| p.is_zero()));
    }
}
