//! The E-model (ITU-T G.107, and its wideband version G.107.1): quality
//! and delay judged together, as a transmission rating R and the MOS-CQ
//! (conversational quality) it maps to. Pure arithmetic, no IO.
//!
//! **Which model.** Babel's voice is wideband or wider (Opus at 48 kHz), so
//! the rating is on G.107.1's wideband scale: `R_WB = Ro,WB − Is,WB −
//! Id,WB − Ie,eff,WB + A`, with `Ro,WB = 129` and `Is,WB = 0` (G.107.1's
//! defaults: a wideband connection without impairments rates 129), `A = 0`.
//! MOS-CQ comes from G.107's Annex B mapping of `R_WB / 1.29` (G.107.1
//! Annex A: the wideband scale is the narrowband one stretched by 1.29).
//! [`Rating::r_nb`] is that narrowband-equivalent R, the scale on which
//! "R ≥ 80" is usually read.
//!
//! **Delay, Id.** G.107 clause 7.4 (talker echo Idte, listener echo Idle,
//! absolute delay Idd) with G.107's default echo and sidetone values (TELR
//! 65 dB, WEPL 110 dB, T = Ta, Tr = 2T): an echo-free terminal, so only
//! Idd counts in practice, from 100 ms mouth to ear. Taken over unchanged
//! onto the wideband scale (our reading of G.107.1's delay impairment).
//!
//! **Codec and loss, Ie,eff.**
//! `Ie,eff = Ie + (95 − Ie) · Ppl / (Ppl / BurstR + Bpl)`
//! (G.107 clause 7.5, the same form in G.107.1), with Ppl the
//! residual loss in percent (frames the listener heard concealed, after
//! FEC and copies repaired what they could), `BurstR = 1`. Opus's Ie,WB and
//! Bpl are those derived with WB-PESQ (ITU-T P.834.1's method) by Alahmadi,
//! Pocta and Melvin, "An Adaptive Bitrate Switching Algorithm for Speech
//! Applications in Context of WebRTC", ACM TOMM 17(4), article 133, 2021,
//! for super-wideband CBR Opus ([`OPUS_SWB_CBR`]), interpolated in the
//! bitrate; random-loss Bpl for random loss, bursty-loss Bpl for bursty.

/// Opus super-wideband CBR, from Alahmadi, Pocta and Melvin (2021): kbit/s,
/// Ie,WB, Bpl under random loss, Bpl under bursty loss.
pub const OPUS_SWB_CBR: [(f64, f64, f64, f64); 9] = [
    (16.0, 36.88, 13.30, 10.80),
    (19.0, 29.58, 10.74, 8.93),
    (22.0, 23.38, 10.01, 8.46),
    (25.0, 22.64, 10.57, 8.74),
    (28.0, 23.65, 11.67, 9.98),
    (31.0, 21.74, 11.51, 9.58),
    (34.0, 20.62, 11.78, 9.69),
    (37.0, 16.23, 10.62, 8.99),
    (40.0, 15.90, 11.35, 9.37),
];

/// G.107.1's wideband rating of an unimpaired connection.
pub const RO_WB: f64 = 129.0;

/// Ie,WB and Bpl for Opus at `kbps` (clamped to the table's range, linear
/// between its rows); `bursty` picks the bursty-loss Bpl.
pub fn opus_ie_bpl(kbps: f64, bursty: bool) -> (f64, f64) {
    let t = &OPUS_SWB_CBR;
    let pick = |r: &(f64, f64, f64, f64)| (r.1, if bursty { r.3 } else { r.2 });
    if kbps <= t[0].0 {
        return pick(&t[0]);
    }
    for w in t.windows(2) {
        let (a, b) = (&w[0], &w[1]);
        if kbps <= b.0 {
            let f = (kbps - a.0) / (b.0 - a.0);
            let (ia, ba) = pick(a);
            let (ib, bb) = pick(b);
            return (ia + f * (ib - ia), ba + f * (bb - ba));
        }
    }
    pick(&t[t.len() - 1])
}

/// G.107 (clause 7.5) effective equipment impairment: `ie` the codec's,
/// `ppl` the loss in percent, `bpl` the codec's robustness, `burst_r` the
/// burst ratio (1 for random loss).
pub fn ie_eff(ie: f64, ppl: f64, bpl: f64, burst_r: f64) -> f64 {
    let ppl = ppl.max(0.0);
    ie + (95.0 - ie) * ppl / (ppl / burst_r.max(1.0) + bpl)
}

/// G.107 (clause 7.4) delay impairment `Id = Idte + Idle + Idd` for a
/// mouth-to-ear delay of `ta_ms`, with the default echo parameters (T =
/// Ta, Tr = 2T, TELR 65 dB, WEPL 110 dB, Ro 94.77, sidetone STMR 15 dB).
pub fn id(ta_ms: f64) -> f64 {
    let (ta, t, tr) = (ta_ms.max(0.0), ta_ms.max(0.0), 2.0 * ta_ms.max(0.0));
    let (telr, wepl, ro, roe) = (65.0, 110.0, 94.77, 94.77);
    // Talker echo.
    let terv = telr - 40.0 * ((1.0 + t / 10.0) / (1.0 + t / 150.0)).log10() + 6.0 * (-0.3 * t * t).exp();
    let re = 80.0 + 2.5 * (terv - 14.0);
    let idte = ((roe - re) / 2.0 + ((roe - re).powi(2) / 4.0 + 100.0).sqrt() - 1.0) * (1.0 - (-t).exp());
    // Listener echo.
    let rle = 10.5 * (wepl + 7.0) * (tr + 1.0).powf(-0.25);
    let idle = (ro - rle) / 2.0 + ((ro - rle).powi(2) / 4.0 + 169.0).sqrt();
    // Absolute delay.
    let idd = if ta <= 100.0 {
        0.0
    } else {
        let x = (ta / 100.0).log10() / 2f64.log10();
        25.0 * ((1.0 + x.powi(6)).powf(1.0 / 6.0) - 3.0 * (1.0 + (x / 3.0).powi(6)).powf(1.0 / 6.0) + 2.0)
    };
    idte + idle + idd
}

/// G.107 Annex B: MOS-CQ for a (narrowband-scale) rating `r`.
pub fn mos_from_r(r: f64) -> f64 {
    if r <= 0.0 {
        1.0
    } else if r >= 100.0 {
        4.5
    } else {
        1.0 + 0.035 * r + r * (r - 60.0) * (100.0 - r) * 7e-6
    }
}

/// An E-model rating.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rating {
    /// R on G.107.1's wideband scale (0–129).
    pub r_wb: f64,
    /// MOS-CQ (1–4.5).
    pub mos_cq: f64,
}

impl Rating {
    /// The narrowband-equivalent R (`R_WB / 1.29`).
    pub fn r_nb(&self) -> f64 {
        self.r_wb / 1.29
    }
}

/// The rating of Opus at `kbps` with `ppl` percent of frames concealed,
/// `mouth_to_ear_ms` of delay, under random or bursty loss.
pub fn rate(kbps: f64, ppl: f64, mouth_to_ear_ms: f64, bursty: bool) -> Rating {
    let (ie, bpl) = opus_ie_bpl(kbps, bursty);
    let r_wb = RO_WB - id(mouth_to_ear_ms) - ie_eff(ie, ppl, bpl, 1.0);
    Rating { r_wb, mos_cq: mos_from_r(r_wb / 1.29) }
}

/// What the harness adds to its alignment delay to get mouth to ear, ms:
/// the latency probe's median on a clean path (54.4 ms, 20 ms frames,
/// BENCHMARKS.md) less the clean path's alignment delay in the same run
/// (20 ms). That is the microphone's frame (a device hands a frame over
/// once it is full: 20 ms) and the echo canceller's framing (8–10 ms), which
/// a file input does not go through, and the clock phase's share.
pub const MOUTH_TO_EAR_BEYOND_ALIGNMENT_MS: f64 = 34.4;

/// Frames every call conceals before the first packet has come (silence
/// at the start; the clean rows of the tables show exactly these): not a
/// loss anyone hears, so not in Ppl.
pub const CONCEALED_BEFORE_START: u64 = 5;

/// The rating of one call of the harness: Ppl from its concealed frames
/// (less [`CONCEALED_BEFORE_START`]) over the frames of speech, mouth to ear from its alignment delay plus
/// [`MOUTH_TO_EAR_BEYOND_ALIGNMENT_MS`], at the report's bitrate, with the
/// Bpl of the row's kind of loss.
pub fn of_call(report: &super::Report, row: &super::Row, call: &super::Scored) -> Rating {
    let frames = (report.speech_secs * 1000.0 / f64::from(report.frame_ms.max(1))).max(1.0);
    let ppl = 100.0 * call.concealed.saturating_sub(CONCEALED_BEFORE_START) as f64 / frames;
    rate(f64::from(report.bitrate) / 1000.0, ppl, call.delay_ms + MOUTH_TO_EAR_BEYOND_ALIGNMENT_MS, row.network.bursty)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn g107_default_connection_rates_93_2_and_mos_4_41() {
        // G.107's worked default: Ro 94.77, Is 1.41, Id 0.15 (all from
        // listener echo at T = 0), Ie 0: R = 93.2, MOS 4.41.
        let d = id(0.0);
        assert!((d - 0.15).abs() < 0.01, "{d}");
        let r = 94.77 - 1.41 - d;
        assert!((r - 93.2).abs() < 0.02, "{r}");
        assert!((mos_from_r(93.2) - 4.41).abs() < 0.005, "{}", mos_from_r(93.2));
        assert_eq!(mos_from_r(-3.0), 1.0);
        assert_eq!(mos_from_r(120.0), 4.5);
        // Annex B's shape: R 50 → 2.58, R 80 → 4.02 (G.107 Figure B.1).
        assert!((mos_from_r(50.0) - 2.58).abs() < 0.01 && (mos_from_r(80.0) - 4.02).abs() < 0.01);
    }

    #[test]
    fn absolute_delay_costs_nothing_to_100_ms_then_grows() {
        // Idd at Ta = 200 ms: X = 1, 25 (2^(1/6) − 3 (1 + 1/729)^(1/6) + 2).
        let idd200 = 25.0 * (2f64.powf(1.0 / 6.0) - 3.0 * (1.0 + 1.0 / 729.0f64).powf(1.0 / 6.0) + 2.0);
        assert!((idd200 - 3.04).abs() < 0.01, "{idd200}");
        let (d100, d200) = (id(100.0), id(200.0));
        // The default echo losses (TELR 65 dB, WEPL 110 dB) cost a little,
        // more as the delay grows: at 100 ms Idte 1.96 + Idle 0.72, at 200
        // ms Idte 3.59 + Idle 0.93 + Idd 3.04 (worked by hand from clause 7.4).
        assert!((d100 - 2.68).abs() < 0.05, "{d100}");
        assert!((d200 - 7.56).abs() < 0.05, "{d200}");
        assert!(id(400.0) > id(300.0) + 5.0);
    }

    #[test]
    fn loss_impairs_as_g113_says() {
        // G.711 with concealment (Ie 0, Bpl 25.1, G.113 Appendix I): 2 %
        // random loss gives Ie,eff = 95 · 2 / 27.1 = 7.01.
        assert!((ie_eff(0.0, 2.0, 25.1, 1.0) - 7.01).abs() < 0.01);
        assert_eq!(ie_eff(20.0, 0.0, 10.0, 1.0), 20.0);
        // Bursty loss (BurstR > 1) hurts more than random.
        assert!(ie_eff(0.0, 5.0, 10.0, 2.0) > ie_eff(0.0, 5.0, 10.0, 1.0));
    }

    #[test]
    fn opus_factors_come_from_the_table() {
        assert_eq!(opus_ie_bpl(31.0, false), (21.74, 11.51));
        assert_eq!(opus_ie_bpl(34.0, true), (20.62, 9.69));
        let (ie, bpl) = opus_ie_bpl(32.0, false);
        assert!((ie - (21.74 + (20.62 - 21.74) / 3.0)).abs() < 1e-9 && (bpl - 11.6).abs() < 1e-9);
        assert_eq!(opus_ie_bpl(8.0, false), (36.88, 13.30));
        assert_eq!(opus_ie_bpl(64.0, false), (15.90, 11.35));
    }

    #[test]
    fn delay_and_loss_both_lower_the_rating() {
        let clean = rate(32.0, 0.0, 55.0, false);
        // 129 − Ie 21.37 − Id 1.69 (talker and listener echo at 55 ms):
        // 105.9 (82 narrowband).
        assert!((clean.r_wb - 105.9).abs() < 0.1, "{clean:?}");
        assert!(rate(32.0, 1.0, 55.0, false).r_wb < clean.r_wb - 5.0);
        assert!(rate(32.0, 0.0, 270.0, false).r_wb < clean.r_wb - 5.0);
        assert!(clean.mos_cq > 4.0 && clean.mos_cq <= 4.5, "{clean:?}");
        assert!((clean.r_nb() - clean.r_wb / 1.29).abs() < 1e-12);
    }
}
