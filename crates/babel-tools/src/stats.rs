//! Latency summaries from a sorted vector of samples (exact percentiles;
//! a run holds a few hundred thousand samples at most).

use serde::Serialize;

/// The nearest-rank percentile `p` (0–100) of ascending `sorted` samples:
/// the smallest sample with at least `p` % of samples at or below it.
pub fn percentile(sorted: &[u64], p: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let n = sorted.len();
    let p = if p.is_nan() { 100.0 } else { p.clamp(0.0, 100.0) };
    // The epsilon keeps 99.9 % of 1000 at rank 999 despite rounding.
    let rank = ((p / 100.0) * n as f64 - 1e-9).ceil() as usize;
    sorted.get(rank.clamp(1, n) - 1).copied()
}

/// `d` in nanoseconds, the unit of [`Latency::from_ns`]'s samples
/// (saturating: 584 years and more count as `u64::MAX`).
pub fn ns(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Latency percentiles, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Latency {
    /// Samples.
    pub count: u64,
    /// Median.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// Largest.
    pub max_ms: f64,
}

impl Latency {
    /// Summarises samples in nanoseconds (sorts them).
    pub fn from_ns(samples: &mut [u64]) -> Latency {
        samples.sort_unstable();
        let ms = |p: f64| percentile(samples, p).map_or(0.0, |ns| ns as f64 / 1e6);
        Latency {
            count: samples.len() as u64,
            p50_ms: ms(50.0),
            p99_ms: ms(99.0),
            p999_ms: ms(99.9),
            max_ms: ms(100.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nanoseconds_saturate() {
        assert_eq!(ns(std::time::Duration::from_millis(3)), 3_000_000);
        assert_eq!(ns(std::time::Duration::MAX), u64::MAX);
    }

    #[test]
    fn nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), Some(50));
        assert_eq!(percentile(&v, 99.0), Some(99));
        assert_eq!(percentile(&v, 99.9), Some(100));
        assert_eq!(percentile(&v, 100.0), Some(100));
        assert_eq!(percentile(&v, 0.0), Some(1));
        assert_eq!(percentile(&[], 50.0), None);
        assert_eq!(percentile(&[7], 99.9), Some(7));
        let thousand: Vec<u64> = (1..=1000).collect();
        assert_eq!(percentile(&thousand, 99.9), Some(999));
    }

    #[test]
    fn summary_in_ms() {
        let mut v: Vec<u64> = (1..=1000).rev().map(|i| i * 1_000_000).collect();
        let l = Latency::from_ns(&mut v);
        assert_eq!(l.count, 1000);
        assert_eq!(l.p50_ms, 500.0);
        assert_eq!(l.p99_ms, 990.0);
        assert_eq!(l.p999_ms, 999.0);
        assert_eq!(l.max_ms, 1000.0);
        assert_eq!(Latency::from_ns(&mut []), Latency::default());
    }
}
