//! Pure signal helpers for the quality harness: time alignment of what was
//! heard against what was said, the latency probe (a chirp) and its onset.

/// RMS envelope: one value per `hop` samples.
fn envelope(x: &[f32], hop: usize) -> Vec<f32> {
    x.chunks(hop.max(1)).map(|c| (c.iter().map(|s| s * s).sum::<f32>() / c.len() as f32).sqrt()).collect()
}

/// Normalised correlation of `a` with `b` shifted by `lag` (b[lag..]).
fn ncc(a: &[f32], b: &[f32], lag: usize) -> f32 {
    let n = a.len().min(b.len().saturating_sub(lag));
    if n < 10 {
        return 0.0;
    }
    let (x, y) = (&a[..n], &b[lag..lag + n]);
    let (mut xy, mut xx, mut yy) = (0.0f64, 0.0f64, 0.0f64);
    for (p, q) in x.iter().zip(y) {
        xy += f64::from(*p) * f64::from(*q);
        xx += f64::from(*p) * f64::from(*p);
        yy += f64::from(*q) * f64::from(*q);
    }
    if xx <= 0.0 || yy <= 0.0 { 0.0 } else { (xy / (xx.sqrt() * yy.sqrt())) as f32 }
}

/// How many samples `degraded` lags `reference` (0..=`max_lag`): first on
/// 1 ms envelopes, then refined on the samples around the best envelope lag.
pub fn find_delay(reference: &[f32], degraded: &[f32], rate: u32, max_lag: usize) -> usize {
    let hop = (rate / 1000).max(1) as usize;
    let (ea, eb) = (envelope(reference, hop), envelope(degraded, hop));
    let mean = |v: &[f32]| v.iter().sum::<f32>() / v.len().max(1) as f32;
    let (ma, mb) = (mean(&ea), mean(&eb));
    let ea: Vec<f32> = ea.iter().map(|v| v - ma).collect();
    let eb: Vec<f32> = eb.iter().map(|v| v - mb).collect();
    let mut best = (0usize, f32::MIN);
    for lag in 0..=(max_lag / hop).min(eb.len()) {
        let c = ncc(&ea, &eb, lag);
        if c > best.1 {
            best = (lag, c);
        }
    }
    let coarse = best.0 * hop;
    // Refine on the waveform within ±2 envelope frames.
    let lo = coarse.saturating_sub(2 * hop);
    let hi = (coarse + 2 * hop).min(max_lag);
    let mut fine = (coarse, f32::MIN);
    for lag in lo..=hi {
        let c = ncc(reference, degraded, lag);
        if c > fine.1 {
            fine = (lag, c);
        }
    }
    fine.0
}

/// `degraded` moved earlier by `delay` samples and cut or padded to
/// `len` samples, ready to compare with the reference sample by sample.
pub fn shift(degraded: &[f32], delay: usize, len: usize) -> Vec<f32> {
    let mut v: Vec<f32> = degraded.iter().skip(delay).take(len).copied().collect();
    v.resize(len, 0.0);
    v
}

/// The latency probe: a 10 ms linear chirp from 500 Hz to 4 kHz at 48 kHz,
/// with 1 ms ramps. Sharp onset, and it survives a speech codec.
pub fn chirp() -> Vec<f32> {
    let n = 480;
    let (f0, f1) = (500.0f32, 4000.0f32);
    let dur = n as f32 / 48_000.0;
    (0..n)
        .map(|i| {
            let t = i as f32 / 48_000.0;
            let phase = 2.0 * std::f32::consts::PI * (f0 * t + (f1 - f0) * t * t / (2.0 * dur));
            let ramp = (i.min(n - 1 - i) as f32 / 48.0).min(1.0);
            0.8 * ramp * phase.sin()
        })
        .collect()
}

/// Onsets in `x`: the first sample above `threshold` after at least
/// `quiet` samples at or below it.
pub fn onsets(x: &[f32], threshold: f32, quiet: usize) -> Vec<usize> {
    let mut out = Vec::new();
    let mut quiet_for = quiet;
    for (i, s) in x.iter().enumerate() {
        if s.abs() > threshold {
            if quiet_for >= quiet {
                out.push(i);
            }
            quiet_for = 0;
        } else {
            quiet_for += 1;
        }
    }
    out
}

/// Median of a list (NaN-free); `None` when empty.
pub fn median(v: &[f64]) -> Option<f64> {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn speechy(n: usize, rate: u32) -> Vec<f32> {
        (0..n)
            .map(|i| {
                let t = i as f32 / rate as f32;
                let syll = (t * 4.0) as u32;
                if syll.wrapping_mul(2_654_435_761) >> 29 == 0 {
                    return 0.0;
                }
                let env = (std::f32::consts::PI * (t * 4.0).fract()).sin();
                0.3 * env * (2.0 * std::f32::consts::PI * (140.0 + 30.0 * t.sin()) * t).sin()
            })
            .collect()
    }

    #[test]
    fn finds_the_delay_to_the_sample() {
        let a = speechy(16_000 * 4, 16_000);
        for delay in [0usize, 1, 37, 800, 5_123] {
            let mut b = vec![0.0; delay];
            b.extend(a.iter().map(|s| s * 0.5));
            assert_eq!(find_delay(&a, &b, 16_000, 16_000), delay, "delay {delay}");
            let back = shift(&b, delay, a.len());
            assert_eq!(back.len(), a.len());
            assert!((back[1000] - a[1000] * 0.5).abs() < 1e-6);
        }
    }

    #[test]
    fn chirp_onsets() {
        let c = chirp();
        assert_eq!(c.len(), 480);
        let mut x = vec![0.0; 10_000];
        x.extend(&c);
        x.extend(vec![0.0; 30_000]);
        x.extend(&c);
        let o = onsets(&x, 0.2, 20_000);
        assert_eq!(o.len(), 2);
        assert!((10_000..10_050).contains(&o[0]), "{o:?}");
        assert!((40_480..40_530).contains(&o[1]), "{o:?}");
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[]), None);
    }
}
