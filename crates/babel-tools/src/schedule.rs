//! Open-loop send schedules.
//!
//! A total rate `R` spread over `C` connections gives each connection one
//! request every `C / R` seconds. Connection `i` starts `i / C` of that
//! interval late, so that the whole fleet sends evenly rather than in bursts.
//! Times are nanoseconds after a common start. Because a send's time is a
//! pure function of its index, the reader of a connection knows when the
//! `k`-th answered request was *due*, whatever the writer managed, and
//! measures latency from there (no coordinated omission).

/// One connection's schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    /// When the first request is due, in ns after the start.
    pub offset_ns: u64,
    /// Time between two requests, in ns (at least 1).
    pub interval_ns: u64,
}

impl Schedule {
    /// The schedule of connection `index` of `connections` sharing a total
    /// of `rate` requests per second.
    pub fn for_connection(index: usize, connections: usize, rate: f64) -> Schedule {
        let connections = connections.max(1);
        let rate = if rate.is_finite() && rate > 0.0 { rate } else { 1.0 };
        let interval = (connections as f64 / rate * 1e9).round().max(1.0);
        let interval_ns = interval as u64;
        let offset_ns = ((index % connections) as u128 * interval_ns as u128 / connections as u128) as u64;
        Schedule { offset_ns, interval_ns }
    }

    /// When request `k` is due.
    pub fn at(&self, k: u64) -> u64 {
        self.offset_ns.saturating_add(k.saturating_mul(self.interval_ns))
    }

    /// How many requests are due strictly before `t_ns`.
    pub fn count_before(&self, t_ns: u64) -> u64 {
        if t_ns <= self.offset_ns { 0 } else { (t_ns - self.offset_ns).div_ceil(self.interval_ns) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn twenty_thousand_over_a_thousand() {
        let s = Schedule::for_connection(0, 1000, 20_000.0);
        assert_eq!(s.interval_ns, 50_000_000);
        assert_eq!(s.offset_ns, 0);
        let last = Schedule::for_connection(999, 1000, 20_000.0);
        assert_eq!(last.offset_ns, 49_950_000);
        assert_eq!(last.at(2), 149_950_000);
    }

    #[test]
    fn fleet_sends_evenly() {
        // Over one interval every connection sends exactly once, one every
        // interval / C.
        let c = 8;
        let mut times: Vec<u64> = (0..c).map(|i| Schedule::for_connection(i, c, 800.0).at(0)).collect();
        times.sort_unstable();
        let gaps: Vec<u64> = times.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(gaps.iter().all(|&g| g == 1_250_000), "{gaps:?}");
    }

    #[test]
    fn count_before_matches_at() {
        let s = Schedule { offset_ns: 7, interval_ns: 10 };
        assert_eq!(s.count_before(0), 0);
        assert_eq!(s.count_before(7), 0);
        assert_eq!(s.count_before(8), 1);
        assert_eq!(s.count_before(17), 1);
        assert_eq!(s.count_before(18), 2);
        for t in 0..200 {
            let n = s.count_before(t);
            assert!(n == 0 || s.at(n - 1) < t);
            assert!(s.at(n) >= t);
        }
    }

    #[test]
    fn silly_inputs_do_not_panic() {
        let s = Schedule::for_connection(3, 0, 0.0);
        assert!(s.interval_ns >= 1);
        let s = Schedule::for_connection(0, 1, f64::INFINITY);
        assert!(s.interval_ns >= 1);
        assert_eq!(s.at(u64::MAX), u64::MAX);
    }
}
