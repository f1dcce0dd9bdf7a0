//! Sender bitrate adaptation: when the path cannot carry the voice stream,
//! step the Opus bitrate down; when it can again, step back up.
//!
//! Pure and clock-free: the engine calls [`RateController::update`] twice a
//! second with what the other side reports (loss of my stream, the round
//! trip, the age of their last report) and applies the bitrate it answers.
//!
//! The main congestion signal is queueing delay, the round trip above the
//! smallest one seen lately: a bottleneck's queue fills before it drops, and
//! random loss (a lossy radio link) does not raise the delay. Loss counts as
//! congestion together with a grown delay, or when reports stop arriving
//! altogether (for 4 s: a lossy path loses two or three in a row every few
//! seconds). High loss without a delay to compare with (a bottleneck
//! that was full from the first packet) is tested: one step down, and if
//! the loss has not fallen three quarters of the way to what a bottleneck
//! would leave two seconds later it was random, the step is
//! taken back, and loss at that level is left to FEC for half a minute.
//! Down is one ladder step at a time, at most once a second (so the queue
//! can drain and the next report shows it); up is one step after a calm
//! spell (no queue; loss too, where a step down has shown the loss to come
//! from a bottleneck) that doubles each time an increase had to be taken
//! back (up to a minute), so a persistent bottleneck is probed rarely and a
//! lifted one is left at once. Every packet within a step has the same size
//! (the codec is CBR). A simulation over many seeds checks that random and
//! bursty loss keep the configured bitrate and the copies.

use std::time::Duration;

/// The bitrates a sender steps through, highest first (bits/s).
pub const LADDER: [u32; 7] = [64_000, 48_000, 32_000, 24_000, 16_000, 12_000, 8_000];

/// Queueing delay above which the path counts as congested, ms.
const CONGESTED_MS: u32 = 80;
/// Queueing delay that, with loss, counts as congestion, ms.
const LOSSY_QUEUE_MS: u32 = 50;
/// Queueing delay under which the path counts as calm, ms.
const CALM_MS: u32 = 30;
/// Loss that, with some extra delay, counts as congestion, %.
const LOSS_PCT: f32 = 5.0;
/// Loss at which a step down is tried even without a grown delay, %:
/// high, because a wrong guess costs the copies that repair random loss;
/// once a step down has shown a bottleneck, the next tries start at
/// [`LOSS_PCT`].
const PROBE_LOSS_PCT: f32 = 30.0;
/// How long high loss must last before that try (bursts of random loss
/// come and go; a bottleneck's loss stays), and once a bottleneck has been
/// seen; then how long the try waits for the loss to fall.
const PROBE_AFTER: Duration = Duration::from_secs(3);
const PROBE_AFTER_SEEN: Duration = Duration::from_secs(1);
const PROBE_WAIT: Duration = Duration::from_secs(2);
/// How long loss found to be random is left alone.
const RANDOM_FOR: Duration = Duration::from_secs(30);
/// A report older than this means the way back is choked: eight reports
/// lost in a row, which 20 % of random loss does once in 400 000 (two or
/// three in a row, which a lossy path does every few seconds, is not).
const SILENT_REPORTS: Duration = Duration::from_secs(4);
/// Least time between two steps down.
const DOWN_EVERY: Duration = Duration::from_secs(1);
/// First calm spell before a step up; doubles after each failed probe.
const UP_AFTER: Duration = Duration::from_secs(4);
/// The window whose smallest round trip shows the standing queue.
const RECENT: Duration = Duration::from_secs(3);
/// How long the smallest round trip seen stays the base.
const MIN_RTT_WINDOW: Duration = Duration::from_secs(30);
/// Longest calm spell asked for.
const UP_AFTER_MAX: Duration = Duration::from_secs(60);

/// What the other side reported, as the engine last saw it.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Feedback {
    /// Their loss of my stream, %.
    pub loss_pct: f32,
    /// The round trip, when known, ms.
    pub rtt_ms: Option<u32>,
    /// How long ago their last report arrived (`None`: none yet).
    pub report_age: Option<Duration>,
    /// Whether my datagrams carry copies of earlier frames now (which
    /// multiplies what I send).
    pub copies_in_use: bool,
}

/// Copies of earlier frames a voice datagram carries when they are on.
pub const COPIES: u32 = 2;

/// The sender's bitrate state.
#[derive(Debug, Clone)]
pub struct RateController {
    /// The ladder from the configured bitrate down: bitrate, and whether
    /// copies of earlier frames may ride along (only on the top rung: the
    /// first step down under congestion drops them).
    ladder: Vec<(u32, bool)>,
    /// What headers add to the bitrate on the wire, bits/s.
    overhead_bps: u32,
    step: usize,
    /// The smallest round trip lately, and when it was seen.
    min_rtt: Option<(u32, Duration)>,
    /// The round trips of the last couple of seconds: their smallest is
    /// the standing queue's delay (jitter makes single samples wander).
    recent: std::collections::VecDeque<(Duration, u32)>,
    last_down: Option<Duration>,
    calm_since: Option<Duration>,
    up_after: Duration,
    /// When the last step up happened (a step down soon after means the
    /// probe failed).
    last_up: Option<Duration>,
    /// Since when the loss has been high without a grown delay.
    lossy_since: Option<Duration>,
    /// A step down being tried against high loss.
    probe: Option<LossProbe>,
    /// Loss found to be random: its level, and until when it is left alone.
    random_loss: Option<(f32, Duration)>,
    /// A step down made the loss fall as a bottleneck's would.
    bottleneck_seen: bool,
}

/// A step down tried against high loss.
#[derive(Debug, Clone, Copy)]
struct LossProbe {
    at: Duration,
    loss_before: f32,
    step_before: usize,
    copies_in_use: bool,
}

impl RateController {
    /// Starts at `max` (the configured bitrate), which is also the ceiling;
    /// `overhead_bps` is what packet headers add on the wire (IP, UDP and
    /// the voice datagram's own, times packets a second).
    pub fn new(max: u32, overhead_bps: u32) -> RateController {
        let mut ladder = vec![(max, true), (max, false)];
        ladder.extend(LADDER.iter().copied().filter(|&b| b < max).map(|b| (b, false)));
        RateController {
            ladder,
            overhead_bps,
            step: 0,
            min_rtt: None,
            recent: std::collections::VecDeque::new(),
            last_down: None,
            calm_since: None,
            up_after: UP_AFTER,
            last_up: None,
            lossy_since: None,
            probe: None,
            random_loss: None,
            bottleneck_seen: false,
        }
    }

    /// The bitrate to send at now.
    pub fn bitrate(&self) -> u32 {
        self.ladder[self.step].0
    }

    /// Whether copies of earlier frames may be added (under loss).
    pub fn copies_allowed(&self) -> bool {
        self.ladder[self.step].1
    }

    /// A rung's rate on the wire, with the packets' headers, and the copies
    /// when they ride along.
    fn wire(&self, step: usize, copies_in_use: bool) -> f32 {
        let (bitrate, copies) = self.ladder[step];
        let factor = if copies && copies_in_use { 1 + COPIES } else { 1 };
        (bitrate * factor + self.overhead_bps) as f32
    }

    /// Taking back a recent increase: wait longer before the next.
    fn back_off_if_recently_up(&mut self, now: Duration) {
        if self.last_up.is_some_and(|t| now.saturating_sub(t) < self.up_after) {
            self.up_after = (self.up_after * 2).min(UP_AFTER_MAX);
        }
    }

    /// The next rung down that changes what is sent.
    fn down(&self, copies_in_use: bool) -> usize {
        let next = self.step + 1;
        // Dropping copies that are not being sent changes nothing.
        if self.step == 0 && !copies_in_use && next + 1 < self.ladder.len() { next + 1 } else { next }
    }

    /// A new ceiling (the user changed the bitrate): start over from it.
    pub fn set_max(&mut self, max: u32) {
        *self = RateController {
            min_rtt: self.min_rtt,
            recent: std::mem::take(&mut self.recent),
            ..RateController::new(max, self.overhead_bps)
        };
    }

    /// The path changed (direct, relay, channel): its round trip is learnt
    /// afresh, so a longer path is not mistaken for a queue.
    pub fn path_changed(&mut self) {
        self.min_rtt = None;
        self.recent.clear();
        self.calm_since = None;
    }

    /// Takes the latest feedback at time `now` (since the call started);
    /// answers the new bitrate when the rung changes (dropping or
    /// allowing copies counts: see [`RateController::copies_allowed`]).
    pub fn update(&mut self, now: Duration, fb: Feedback) -> Option<u32> {
        // The base round trip is the smallest of the last half minute (a
        // route that got longer for good is learnt again).
        if let Some(rtt) = fb.rtt_ms
            && self.min_rtt.is_none_or(|(m, at)| rtt <= m || now.saturating_sub(at) > MIN_RTT_WINDOW)
        {
            self.min_rtt = Some((rtt, now));
        }
        if let Some(rtt) = fb.rtt_ms {
            self.recent.push_back((now, rtt));
        }
        while self.recent.front().is_some_and(|&(t, _)| now.saturating_sub(t) > RECENT) {
            self.recent.pop_front();
        }
        let standing = self.recent.iter().map(|&(_, r)| r).min();
        let queued = match (standing, self.min_rtt) {
            (Some(r), Some((m, _))) => r.saturating_sub(m),
            _ => 0,
        };
        let silent = fb.report_age.is_some_and(|a| a >= SILENT_REPORTS);
        let congested = silent || queued >= CONGESTED_MS || (fb.loss_pct >= LOSS_PCT && queued >= LOSSY_QUEUE_MS);
        let can_step_down =
            self.last_down.is_none_or(|t| now.saturating_sub(t) >= DOWN_EVERY) && self.step + 1 < self.ladder.len();
        if let Some(p) = self.probe {
            if now.saturating_sub(p.at) >= PROBE_WAIT {
                self.probe = None;
                // Through a bottleneck, the share that gets through grows as
                // the stream shrinks; random loss stays where it was. Is the
                // loss now near what a bottleneck would leave? Not halfway:
                // the probe starts at a loud moment of the loss (the level
                // that set it off is a peak), and bursty loss measured over
                // a second wanders by ±10 %, so halfway took one bursty
                // call in six at 30 % for a bottleneck (and dropped its
                // copies); a quarter of the way from the bottleneck's
                // figure is what a real one reaches.
                let before = self.wire(p.step_before, p.copies_in_use);
                let after = self.wire(self.step, fb.copies_in_use);
                let if_bottleneck = (100.0 - (100.0 - p.loss_before) * before / after).max(0.0);
                if fb.loss_pct <= if_bottleneck + (p.loss_before - if_bottleneck) / 4.0 {
                    self.bottleneck_seen = true;
                } else {
                    // Stepping down did not help: the loss is random. Undo.
                    self.bottleneck_seen = false;
                    self.random_loss = Some((p.loss_before, now + RANDOM_FOR));
                    self.step = p.step_before;
                    self.calm_since = None;
                    return Some(self.bitrate());
                }
            } else if !congested {
                return None;
            }
        }
        let known_random = self.random_loss.is_some_and(|(level, until)| now < until && fb.loss_pct < level + 10.0);
        let probe_at = if self.bottleneck_seen { LOSS_PCT } else { PROBE_LOSS_PCT };
        if !congested && fb.loss_pct >= probe_at && !known_random {
            self.calm_since = None;
            let since = *self.lossy_since.get_or_insert(now);
            let after = if self.bottleneck_seen { PROBE_AFTER_SEEN } else { PROBE_AFTER };
            if now.saturating_sub(since) >= after && can_step_down && self.probe.is_none() {
                self.back_off_if_recently_up(now);
                self.probe = Some(LossProbe {
                    at: now,
                    loss_before: fb.loss_pct,
                    step_before: self.step,
                    copies_in_use: fb.copies_in_use,
                });
                self.lossy_since = None;
                self.step = self.down(fb.copies_in_use);
                self.last_down = Some(now);
                return Some(self.bitrate());
            }
            return None;
        }
        self.lossy_since = None;
        if congested {
            self.calm_since = None;
            if !can_step_down {
                return None;
            }
            self.back_off_if_recently_up(now);
            self.step = self.down(fb.copies_in_use);
            self.last_down = Some(now);
            return Some(self.bitrate());
        }
        // Loss keeps the path from counting as calm only where a step down
        // has shown it to come from a bottleneck: random loss (a radio
        // link) does not stop a climb back after a queue or a silence.
        let lossy = fb.loss_pct >= LOSS_PCT && self.bottleneck_seen && !known_random;
        let calm = queued < CALM_MS && !lossy && fb.report_age.is_some();
        if !calm {
            self.calm_since = None;
            return None;
        }
        let since = *self.calm_since.get_or_insert(now);
        if self.step == 0 || now.saturating_sub(since) < self.up_after {
            return None;
        }
        // A long calm after the last failed probe: the bottleneck may be
        // gone for good, so probe again at the first pace next time.
        if self.last_up.is_some_and(|t| now.saturating_sub(t) >= UP_AFTER_MAX) {
            self.up_after = UP_AFTER;
        }
        self.step -= 1;
        self.last_up = Some(now);
        self.calm_since = Some(now);
        if self.step == 0 {
            self.bottleneck_seen = false;
        }
        Some(self.bitrate())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 60 bytes of headers per 20 ms packet.
    const OVERHEAD: u32 = 60 * 8 * 50;

    fn fb(loss_pct: f32, rtt_ms: u32) -> Feedback {
        Feedback { loss_pct, rtt_ms: Some(rtt_ms), report_age: Some(Duration::from_millis(200)), copies_in_use: false }
    }

    /// Feeds `f` every half second from `from` for `secs`; answers the
    /// bitrate after each update.
    fn run(rc: &mut RateController, from: f32, secs: f32, f: impl Fn(u32) -> Feedback) -> Vec<u32> {
        let n = (secs * 2.0) as usize;
        (0..n)
            .map(|i| {
                let t = Duration::from_secs_f32(from + i as f32 * 0.5);
                rc.update(t, f(rc.bitrate()));
                rc.bitrate()
            })
            .collect()
    }

    /// A bottleneck of `cap` bits/s: above it, the queue (and the round
    /// trip) grows and packets drop; under it, all is calm.
    fn bottleneck(cap: u32) -> impl Fn(u32) -> Feedback {
        move |rate| {
            // Voice on the wire: the bitrate plus about 60 bytes of headers
            // per 20 ms packet.
            let wire = rate + 60 * 8 * 50;
            if wire > cap { fb(15.0, 40 + 250) } else { fb(0.0, 40) }
        }
    }

    #[test]
    fn a_clean_path_keeps_the_configured_bitrate() {
        let mut rc = RateController::new(32_000, OVERHEAD);
        assert!(run(&mut rc, 0.0, 60.0, |_| fb(0.0, 40)).iter().all(|&b| b == 32_000));
    }

    #[test]
    fn random_loss_without_queueing_is_not_congestion() {
        // Moderate loss is left to FEC.
        let mut rc = RateController::new(32_000, OVERHEAD);
        assert!(run(&mut rc, 0.0, 60.0, |_| fb(8.0, 40)).iter().all(|&b| b == 32_000));
        // Heavy loss is tested with one step down, which is taken back when
        // it does not help, and not tried again for half a minute.
        let mut rc = RateController::new(32_000, OVERHEAD);
        let rates = run(&mut rc, 0.0, 60.0, |_| fb(20.0, 40));
        let lower = rates.iter().filter(|&&b| b < 32_000).count();
        assert!(lower <= 2 * 5, "{lower} half-seconds below the configured bitrate: {rates:?}");
        assert!(rates.iter().all(|&b| b >= 24_000), "{rates:?}");
        assert_eq!(*rates.last().unwrap(), 32_000);
        // Jittery round trips around a steady level are not either.
        let mut rc = RateController::new(32_000, OVERHEAD);
        let k = std::cell::Cell::new(0u32);
        let wobble = |_| {
            k.set(k.get().wrapping_mul(1_103_515_245).wrapping_add(12_345));
            fb(2.0, 40 + (k.get() >> 16) % 25)
        };
        assert!(run(&mut rc, 0.0, 30.0, wobble).iter().all(|&b| b == 32_000));
    }

    #[test]
    fn steps_down_under_a_cap_one_step_a_second_and_settles_below_it() {
        let mut rc = RateController::new(32_000, OVERHEAD);
        run(&mut rc, 0.0, 2.0, |_| fb(0.0, 40)); // learn the base round trip
        let cap = 40_000;
        let rates = run(&mut rc, 2.0, 30.0, bottleneck(cap));
        // Never more than one step down per second.
        let downs: Vec<usize> = (1..rates.len()).filter(|&i| rates[i] < rates[i - 1]).collect();
        assert!(downs.windows(2).all(|w| w[1] - w[0] >= 2), "{rates:?}");
        let last = *rates.last().unwrap();
        assert!(last + 60 * 8 * 50 <= cap, "settled at {last} with a cap of {cap}: {rates:?}");
        // It does not collapse to the floor either: the highest step that fits.
        assert_eq!(last, 16_000, "{rates:?}");
        // Probes upward become rare while the cap stays.
        let later = run(&mut rc, 32.0, 120.0, bottleneck(cap));
        let probes = later.windows(2).filter(|w| w[1] > w[0]).count();
        assert!(probes <= 4, "{probes} probes in 2 minutes: {later:?}");
    }

    #[test]
    fn climbs_back_when_the_cap_lifts() {
        let mut rc = RateController::new(32_000, OVERHEAD);
        run(&mut rc, 0.0, 2.0, |_| fb(0.0, 40));
        run(&mut rc, 2.0, 60.0, bottleneck(40_000));
        assert!(rc.bitrate() < 32_000);
        let after = run(&mut rc, 62.0, 90.0, |_| fb(0.0, 40));
        let reached = after.iter().position(|&b| b == 32_000).expect("back to the configured bitrate");
        assert!(reached <= 2 * 60, "took {} s", reached / 2);
        assert!(after.iter().all(|&b| b <= 32_000), "never above the configured bitrate");
    }

    /// The engine's side: it adds copies (tripling the stream) while the
    /// loss is 1 % or more and the controller allows them. A bottleneck of
    /// `cap` is full from the first packet (no calm round trip to compare
    /// with), on top of `random` loss.
    fn sim(rc: &mut RateController, secs: f32, cap: Option<f64>, random: f32) -> Vec<(u32, bool)> {
        {
            let mut copies = false;
            let mut trace = Vec::new();
            for i in 0..(secs * 2.0) as usize {
                let factor = if copies { 3 } else { 1 };
                let wire = f64::from(rc.bitrate() * factor + OVERHEAD);
                let choke = cap.map_or(0.0, |c| (100.0 * (1.0 - c / wire)).max(0.0)) as f32;
                let loss = choke.max(random);
                let rtt = if choke > 0.0 { 290 } else { 40 };
                let f = Feedback { copies_in_use: copies, ..fb(loss, rtt) };
                rc.update(Duration::from_millis(500 * i as u64), f);
                copies = rc.copies_allowed() && loss >= 1.0;
                trace.push((rc.bitrate(), copies));
            }
            trace
        }
    }

    #[test]
    fn a_bottleneck_full_from_the_start_is_found_through_its_loss() {
        let mut rc = RateController::new(32_000, OVERHEAD);
        let trace = sim(&mut rc, 40.0, Some(40_000.0), 0.0);
        assert_eq!(*trace.last().unwrap(), (16_000, false), "{trace:?}");
    }

    #[test]
    fn copies_are_dropped_first_under_a_bottleneck_and_kept_under_random_loss() {
        let mut rc = RateController::new(32_000, OVERHEAD);
        let trace = sim(&mut rc, 40.0, Some(60_000.0), 0.0);
        // 32 kbit/s fits under 60 (56 on the wire) but not with copies:
        // the copies go and the bitrate stays.
        let last = *trace.last().unwrap();
        assert_eq!(last, (32_000, false), "{trace:?}");
        // Random loss: copies stay on (after, at most, a short test).
        let mut rc = RateController::new(32_000, OVERHEAD);
        let trace = sim(&mut rc, 40.0, None, 20.0);
        let with_copies = trace.iter().filter(|t| t.1).count();
        assert!(with_copies >= trace.len() * 3 / 4, "{trace:?}");
        assert_eq!(*trace.last().unwrap(), (32_000, true));
    }

    /// A lossy path without a bottleneck, the way the engine sees it: 25
    /// voice datagrams each way per half second, lost by a Gilbert-Elliott
    /// chain (`burst` packets on average; 1 is random loss) at `loss`; the
    /// other side's report (the interval's loss, smoothed like the engine's)
    /// rides among its datagrams and is lost like them; each way has 20 ms
    /// of delay and up to 30 ms of jitter. Answers the share of half-seconds
    /// the controller kept the configured bitrate with copies allowed, and
    /// whether it ever took the loss for a bottleneck's.
    fn lossy_path(seed: u64, loss: f64, burst: f64, secs: usize) -> (f64, bool) {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut rand = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 11) as f64 / (1u64 << 53) as f64
        };
        // Stationary P(bad) = p / (p + r) = loss; always lost when bad.
        let r = 1.0 / burst;
        let p = loss * r / (1.0 - loss);
        let step = |bad: &mut bool, rand: &mut dyn FnMut() -> f64| {
            *bad = if *bad { rand() >= r } else { rand() < p };
            *bad
        };
        let (mut fwd, mut rev) = (false, false);
        let mut rc = RateController::new(32_000, OVERHEAD);
        let mut smoothed = 0.0f32;
        let mut report: Option<(f32, u32, f64)> = None; // loss, rtt, arrival
        let mut kept = 0;
        let mut mistaken = false;
        let ticks = secs * 2;
        for i in 0..ticks {
            let now = i as f64 * 0.5;
            let lost = (0..25).filter(|_| step(&mut fwd, &mut rand)).count();
            smoothed = 0.5 * smoothed + 0.5 * (100.0 * lost as f32 / 25.0);
            // Their report, sent a quarter second before my tick.
            let mut report_lost = false;
            for k in 0..25 {
                let l = step(&mut rev, &mut rand);
                if k == 12 {
                    report_lost = l;
                }
            }
            let (j1, j2) = (rand() * 30.0, rand() * 30.0);
            if !report_lost {
                report = Some((smoothed, (40.0 + j1 + j2) as u32, now - 0.25 + (20.0 + j2) / 1000.0));
            }
            let fb = Feedback {
                loss_pct: report.map_or(0.0, |r| r.0),
                rtt_ms: report.map(|r| r.1),
                report_age: report.map(|r| Duration::from_secs_f64((now - r.2).max(0.0))),
                copies_in_use: rc.copies_allowed() && smoothed >= 1.0,
            };
            rc.update(Duration::from_secs_f64(now), fb);
            if rc.step == 0 {
                kept += 1;
            }
            mistaken |= rc.bottleneck_seen;
        }
        (f64::from(kept) / ticks as f64, mistaken)
    }

    #[test]
    fn random_and_bursty_loss_keep_the_bitrate_and_the_copies() {
        // Many seeds: a rare run of lost reports or a loud burst must not
        // take the copies away, which are what repairs this loss.
        for (loss, burst) in [(0.05, 1.0), (0.10, 1.0), (0.20, 1.0), (0.10, 3.0), (0.20, 3.0), (0.30, 3.0)] {
            let runs: Vec<(f64, bool)> = (1..=40).map(|seed| lossy_path(seed, loss, burst, 60)).collect();
            let shares: Vec<f64> = runs.iter().map(|r| r.0).collect();
            let mean = shares.iter().sum::<f64>() / shares.len() as f64;
            let worst = shares.iter().copied().fold(1.0, f64::min);
            let mistaken = runs.iter().filter(|r| r.1).count();
            eprintln!(
                "loss {loss}, bursts of {burst}: kept {mean:.3}, worst {worst:.3}, {mistaken} of 40 runs took it for a bottleneck"
            );
            // 30 % is where the loss probe starts: a short test is allowed.
            let (want_mean, want_worst) = if loss < 0.3 { (0.98, 0.9) } else { (0.85, 0.5) };
            // Nor may a loud moment be taken for a bottleneck (which also
            // takes the copies away): halfway did so in 7 runs of 40 at 30 %
            // bursty loss.
            let may_mistake = if loss < 0.3 { 0 } else { 2 };
            assert!(mistaken <= may_mistake, "loss {loss}, bursts of {burst}: {mistaken} of 40 runs saw a bottleneck");
            assert!(
                mean >= want_mean && worst >= want_worst,
                "loss {loss}, bursts of {burst}: kept {mean:.3} of the time on average, {worst:.3} in the worst run"
            );
        }
    }

    #[test]
    fn silence_from_the_other_side_counts_as_congestion() {
        let mut rc = RateController::new(32_000, OVERHEAD);
        let choked = |_| Feedback { report_age: Some(Duration::from_secs(5)), ..Feedback::default() };
        let rates = run(&mut rc, 0.0, 10.0, choked);
        assert_eq!(*rates.last().unwrap(), 8_000);
        // But no report yet at all (the call is starting) is not.
        let mut rc = RateController::new(32_000, OVERHEAD);
        let none = |_| Feedback::default();
        assert!(run(&mut rc, 0.0, 10.0, none).iter().all(|&b| b == 32_000));
    }

    #[test]
    fn a_longer_path_is_not_a_queue() {
        let mut rc = RateController::new(32_000, OVERHEAD);
        run(&mut rc, 0.0, 5.0, |_| fb(0.0, 20));
        rc.path_changed();
        assert!(run(&mut rc, 5.0, 30.0, |_| fb(0.0, 150)).iter().all(|&b| b == 32_000));
        // Without being told, the new base is learnt within the window.
        let mut rc = RateController::new(32_000, OVERHEAD);
        run(&mut rc, 0.0, 5.0, |_| fb(0.0, 20));
        let rates = run(&mut rc, 5.0, 120.0, |_| fb(0.0, 150));
        assert_eq!(*rates.last().unwrap(), 32_000, "{rates:?}");
    }

    #[test]
    fn jitter_with_random_loss_is_not_a_queue() {
        // 30 ms of jitter each way makes single round trips wander by up to
        // 60 ms; with 10 % random loss that must not read as congestion.
        let mut rc = RateController::new(32_000, OVERHEAD);
        let k = std::cell::Cell::new(7u32);
        let jittery = |_| {
            k.set(k.get().wrapping_mul(1_103_515_245).wrapping_add(12_345));
            fb(8.0, 40 + (k.get() >> 16) % 60)
        };
        let rates = run(&mut rc, 0.0, 60.0, jittery);
        assert!(rates.iter().all(|&b| b == 32_000), "{rates:?}");
    }

    #[test]
    fn a_new_ceiling_starts_over() {
        let mut rc = RateController::new(32_000, OVERHEAD);
        rc.set_max(20_000);
        assert_eq!(rc.bitrate(), 20_000);
        let rates: Vec<u32> = rc.ladder.iter().map(|r| r.0).collect();
        assert_eq!(rates, vec![20_000, 20_000, 16_000, 12_000, 8_000]);
        rc.set_max(64_000);
        assert_eq!(rc.bitrate(), 64_000);
    }
}
