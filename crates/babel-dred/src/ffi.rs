//! The FFI itself (only with the `dred` feature). See the crate docs.

use std::ffi::{CStr, c_int};
use std::ptr::NonNull;

use opusic_sys as sys;

use crate::{Error, SAMPLE_RATE, is_frame_length};

/// The longest packet [`Encoder::encode`] makes, bytes (DRED adds up to a
/// few hundred to a packet; libopus caps a packet at 1275 per frame).
const MAX_PACKET: usize = 1500;
/// The longest packet handed to the decoder or the DRED parser (a UDP
/// datagram cannot be longer; the check keeps `len` in `i32`).
const MAX_INPUT: usize = 65_536;
/// The longest redundancy libopus keeps: DRED_NUM_REDUNDANCY_FRAMES (52)
/// 10 ms frames.
const MAX_DRED_SAMPLES: u32 = 52 * 480;

fn check(code: c_int) -> Result<c_int, Error> {
    if code >= 0 {
        return Ok(code);
    }
    // SAFETY: `opus_strerror` takes any integer and returns a pointer to a
    // static, NUL-terminated string (never NULL, "unknown error" for codes
    // it does not know).
    let message = unsafe { CStr::from_ptr(sys::opus_strerror(code)) }.to_string_lossy().into_owned();
    Err(Error::Opus { code, message })
}

/// libopus's version string ("libopus 1.6.1").
pub fn version() -> String {
    // SAFETY: returns a pointer to a static NUL-terminated string.
    unsafe { CStr::from_ptr(sys::opus_get_version_string()) }.to_string_lossy().into_owned()
}

fn frame_len(n: usize) -> Result<c_int, Error> {
    if !is_frame_length(n) {
        return Err(Error::Input(format!("{n} samples is not an Opus frame at 48 kHz")));
    }
    Ok(n as c_int)
}

/// Whether `packet` carries SILK in-band FEC (LBRR) for the frame before
/// it (false for an empty or CELT-only packet, or one that does not parse).
pub fn has_lbrr(packet: &[u8]) -> bool {
    if packet.is_empty() || packet.len() > MAX_INPUT {
        return false;
    }
    // SAFETY: `packet` is readable for its length, at least one byte (the
    // TOC libopus reads before looking at the length).
    unsafe { sys::opus_packet_has_lbrr(packet.as_ptr(), packet.len() as i32) > 0 }
}

/// An Opus encoder (48 kHz mono, VOIP) whose DRED can be switched on.
#[derive(Debug)]
pub struct Encoder {
    st: NonNull<sys::OpusEncoder>,
    out: Vec<u8>,
}

// SAFETY: an OpusEncoder is a plain heap block with no thread affinity and
// no shared state; `&mut self` on every call keeps it to one thread at a
// time.
unsafe impl Send for Encoder {}

impl Drop for Encoder {
    fn drop(&mut self) {
        // SAFETY: `st` came from `opus_encoder_create` and is destroyed
        // exactly once, here.
        unsafe { sys::opus_encoder_destroy(self.st.as_ptr()) }
    }
}

impl Encoder {
    /// A mono 48 kHz encoder for voice (`OPUS_APPLICATION_VOIP`,
    /// `OPUS_SIGNAL_VOICE`), libopus's defaults otherwise.
    pub fn new() -> Result<Encoder, Error> {
        let mut err: c_int = 0;
        // SAFETY: valid rate, channel count and application; `err` is a
        // valid out-pointer for the call's duration.
        let st = unsafe { sys::opus_encoder_create(SAMPLE_RATE as i32, 1, sys::OPUS_APPLICATION_VOIP, &mut err) };
        check(err)?;
        let st = NonNull::new(st).ok_or_else(|| Error::Input("opus_encoder_create returned NULL".into()))?;
        let mut e = Encoder { st, out: vec![0; MAX_PACKET] };
        e.ctl(sys::OPUS_SET_SIGNAL_REQUEST, sys::OPUS_SIGNAL_VOICE)?;
        Ok(e)
    }

    /// One `OPUS_SET_*` request with an integer argument.
    fn ctl(&mut self, request: c_int, value: c_int) -> Result<(), Error> {
        // SAFETY: every request passed here (crate-internal) is a SET
        // request whose one variadic argument is an `opus_int32`, which
        // `c_int` is on every target libopus builds for.
        check(unsafe { sys::opus_encoder_ctl(self.st.as_ptr(), request, value) }).map(drop)
    }

    /// Bits per second (of everything in the packet, DRED included).
    pub fn set_bitrate(&mut self, bps: u32) -> Result<(), Error> {
        self.ctl(sys::OPUS_SET_BITRATE_REQUEST, bps.min(512_000) as c_int)
    }

    /// Variable bitrate (on) or constant (off). With DRED on and VBR off,
    /// libopus keeps every packet the same size and lets the DRED fill
    /// what the main coding leaves.
    pub fn set_vbr(&mut self, on: bool) -> Result<(), Error> {
        self.ctl(sys::OPUS_SET_VBR_REQUEST, c_int::from(on))
    }

    /// SILK's in-band FEC (LBRR) on or off.
    pub fn set_inband_fec(&mut self, on: bool) -> Result<(), Error> {
        self.ctl(sys::OPUS_SET_INBAND_FEC_REQUEST, c_int::from(on))
    }

    /// The loss to protect against, percent (0–100): FEC's and DRED's share
    /// of the bitrate grow with it.
    pub fn set_expected_loss(&mut self, percent: u8) -> Result<(), Error> {
        self.ctl(sys::OPUS_SET_PACKET_LOSS_PERC_REQUEST, c_int::from(percent.min(100)))
    }

    /// Encoder complexity, 0–10.
    pub fn set_complexity(&mut self, c: u8) -> Result<(), Error> {
        self.ctl(sys::OPUS_SET_COMPLEXITY_REQUEST, c_int::from(c.min(10)))
    }

    /// How much speech each packet's DRED covers, in 10 ms units (0: off;
    /// libopus keeps at most 104, about a second).
    pub fn set_dred_duration(&mut self, tens_of_ms: u8) -> Result<(), Error> {
        self.ctl(sys::OPUS_SET_DRED_DURATION_REQUEST, c_int::from(tens_of_ms.min(104)))
    }

    /// Encodes one frame (an Opus frame length of samples in −1..1).
    pub fn encode(&mut self, pcm: &[f32]) -> Result<Vec<u8>, Error> {
        let n = frame_len(pcm.len())?;
        // SAFETY: `pcm` holds `n` samples (one channel); `out` is writable
        // for `out.len()` bytes, the maximum passed.
        let len = unsafe {
            sys::opus_encode_float(self.st.as_ptr(), pcm.as_ptr(), n, self.out.as_mut_ptr(), self.out.len() as i32)
        };
        let len = check(len)? as usize;
        Ok(self.out[..len.min(self.out.len())].to_vec())
    }
}

/// An Opus decoder (48 kHz mono) with FEC, concealment (classic or deep
/// PLC) and DRED recovery.
#[derive(Debug)]
pub struct Decoder {
    st: NonNull<sys::OpusDecoder>,
    frame: usize,
}

// SAFETY: as for `Encoder`: a plain heap block, used through `&mut self`.
unsafe impl Send for Decoder {}

impl Drop for Decoder {
    fn drop(&mut self) {
        // SAFETY: `st` came from `opus_decoder_create`; destroyed once.
        unsafe { sys::opus_decoder_destroy(self.st.as_ptr()) }
    }
}

impl Decoder {
    /// A decoder that plays `frame` samples per call (an Opus frame length).
    pub fn new(frame: usize) -> Result<Decoder, Error> {
        frame_len(frame)?;
        let mut err: c_int = 0;
        // SAFETY: valid rate and channel count; `err` is a valid out-pointer.
        let st = unsafe { sys::opus_decoder_create(SAMPLE_RATE as i32, 1, &mut err) };
        check(err)?;
        let st = NonNull::new(st).ok_or_else(|| Error::Input("opus_decoder_create returned NULL".into()))?;
        Ok(Decoder { st, frame })
    }

    /// Decoder complexity, 0–10. At 5 and above libopus 1.5+ conceals a
    /// lost frame with its neural PLC (when built with it, as DRED builds
    /// it); below, with the classic concealment. 0 is libopus's default.
    pub fn set_complexity(&mut self, c: u8) -> Result<(), Error> {
        // SAFETY: a SET request with one `opus_int32` argument.
        check(unsafe {
            sys::opus_decoder_ctl(self.st.as_ptr(), sys::OPUS_SET_COMPLEXITY_REQUEST, c_int::from(c.min(10)))
        })
        .map(drop)
    }

    /// Samples per frame.
    pub fn frame(&self) -> usize {
        self.frame
    }

    fn run(&mut self, packet: &[u8], fec: bool) -> Result<Vec<f32>, Error> {
        if packet.len() > MAX_INPUT {
            return Err(Error::Input(format!("a packet of {} bytes", packet.len())));
        }
        let mut pcm = vec![0.0f32; self.frame];
        // An empty packet is passed as NULL: libopus conceals.
        let data = if packet.is_empty() { std::ptr::null() } else { packet.as_ptr() };
        // SAFETY: `data` is NULL with length 0, or `packet` with its length;
        // `pcm` is writable for `frame` samples (one channel), the
        // `frame_size` passed, which libopus never writes beyond.
        let n = unsafe {
            sys::opus_decode_float(
                self.st.as_ptr(),
                data,
                packet.len() as i32,
                pcm.as_mut_ptr(),
                self.frame as c_int,
                c_int::from(fec),
            )
        };
        let n = check(n)? as usize;
        pcm.truncate(n);
        pcm.resize(self.frame, 0.0);
        Ok(pcm)
    }

    /// Decodes a packet.
    pub fn decode(&mut self, packet: &[u8]) -> Result<Vec<f32>, Error> {
        self.run(packet, false)
    }

    /// Rebuilds the frame before `next` from `next`'s in-band FEC.
    pub fn decode_fec(&mut self, next: &[u8]) -> Result<Vec<f32>, Error> {
        self.run(next, true)
    }

    /// Conceals a lost frame (deep PLC at complexity ≥ 5).
    pub fn conceal(&mut self) -> Result<Vec<f32>, Error> {
        self.run(&[], false)
    }

    /// Rebuilds the frame that ends `offset` samples before the start of
    /// the packet `dred` last parsed, from that packet's redundancy.
    /// `offset` is a positive multiple of the frame whose frame the parse
    /// found covered, at least in part ([`DredReader::available`]; libopus
    /// conceals the rest of it).
    pub fn recover(&mut self, dred: &DredReader, offset: u32) -> Result<Vec<f32>, Error> {
        // libopus conceals the part of a frame the redundancy does not
        // reach (it checks each feature's index against what was parsed),
        // so a frame the redundancy covers only in part may be asked for.
        let covered = dred.available > 0 && (offset as usize) < dred.available as usize + self.frame;
        if offset == 0 || offset as usize % self.frame != 0 || !covered {
            return Err(Error::Input(format!(
                "offset {offset}: the redundancy covers {} samples in frames of {}",
                dred.available, self.frame
            )));
        }
        let mut pcm = vec![0.0f32; self.frame];
        // SAFETY: `dred` was filled by `opus_dred_parse` (processed, not
        // deferred) and is borrowed for the call; `pcm` is writable for
        // `frame` samples, the `frame_size` passed.
        let n = unsafe {
            sys::opus_decoder_dred_decode_float(
                self.st.as_ptr(),
                dred.dred.as_ptr(),
                offset as i32,
                pcm.as_mut_ptr(),
                self.frame as i32,
            )
        };
        let n = check(n)? as usize;
        pcm.truncate(n);
        pcm.resize(self.frame, 0.0);
        Ok(pcm)
    }
}

/// Reads the DRED of a packet: the DRED decoder (its neural model) and the
/// redundancy of the last packet parsed.
#[derive(Debug)]
pub struct DredReader {
    dec: NonNull<sys::OpusDREDDecoder>,
    dred: NonNull<sys::OpusDRED>,
    /// Samples of speech before the packet its redundancy covers (0: none,
    /// or nothing parsed yet).
    available: u32,
}

// SAFETY: both are plain heap blocks, used through `&mut self` (or `&self`
// for reading the parsed redundancy while decoding).
unsafe impl Send for DredReader {}

impl Drop for DredReader {
    fn drop(&mut self) {
        // SAFETY: each came from its create/alloc and is freed once, here.
        unsafe {
            sys::opus_dred_free(self.dred.as_ptr());
            sys::opus_dred_decoder_destroy(self.dec.as_ptr());
        }
    }
}

impl DredReader {
    /// A DRED decoder with libopus's built-in model.
    pub fn new() -> Result<DredReader, Error> {
        let mut err: c_int = 0;
        // SAFETY: `err` is a valid out-pointer.
        let dec = unsafe { sys::opus_dred_decoder_create(&mut err) };
        check(err)?;
        let dec = NonNull::new(dec).ok_or_else(|| Error::Input("opus_dred_decoder_create returned NULL".into()))?;
        let mut err: c_int = 0;
        // SAFETY: `err` is a valid out-pointer.
        let dred = unsafe { sys::opus_dred_alloc(&mut err) };
        let dred = match (check(err), NonNull::new(dred)) {
            (Ok(_), Some(d)) => d,
            (e, d) => {
                // SAFETY: `dec` was created above and is not used again;
                // `d`, if libopus allocated it despite an error, likewise.
                unsafe {
                    if let Some(d) = d {
                        sys::opus_dred_free(d.as_ptr());
                    }
                    sys::opus_dred_decoder_destroy(dec.as_ptr());
                }
                e?;
                return Err(Error::Input("opus_dred_alloc returned NULL".into()));
            }
        };
        Ok(DredReader { dec, dred, available: 0 })
    }

    /// Parses `packet`'s DRED, decoding up to `max_samples` of it (the
    /// neural decoding is the costly part: ask only for the gap to fill).
    /// Answers how many samples before the packet it covers (0: no DRED).
    pub fn parse(&mut self, packet: &[u8], max_samples: u32) -> Result<u32, Error> {
        self.available = 0;
        if packet.is_empty() || packet.len() > MAX_INPUT {
            return Err(Error::Input(format!("a packet of {} bytes", packet.len())));
        }
        let mut end: c_int = 0;
        // SAFETY: `dec` and `dred` are live states owned by `self`;
        // `packet` is readable for its length; `end` is a valid
        // out-pointer; processing is not deferred.
        let r = unsafe {
            sys::opus_dred_parse(
                self.dec.as_ptr(),
                self.dred.as_ptr(),
                packet.as_ptr(),
                packet.len() as i32,
                max_samples.min(MAX_DRED_SAMPLES) as i32,
                SAMPLE_RATE as i32,
                &mut end,
                0,
            )
        };
        self.available = check(r)? as u32;
        Ok(self.available)
    }

    /// Samples of speech before the last packet parsed that its DRED covers.
    pub fn available(&self) -> u32 {
        self.available
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FRAME: usize = 960;

    /// Voice-like test signal: a 150 Hz buzz with harmonics, its loudness
    /// and pitch moving like syllables (DRED's model is trained on speech;
    /// a pure tone is not what it codes well).
    fn voice(n: usize, start: usize) -> Vec<f32> {
        (start..start + n)
            .map(|i| {
                let t = i as f32 / 48_000.0;
                let env = 0.5 + 0.5 * (2.0 * std::f32::consts::PI * 3.0 * t).sin();
                let f0 = 140.0 + 30.0 * (2.0 * std::f32::consts::PI * 0.7 * t).sin();
                let ph = 2.0 * std::f32::consts::PI * f0 * t;
                env * (0.3 * ph.sin() + 0.15 * (2.0 * ph).sin() + 0.08 * (3.0 * ph).sin() + 0.04 * (5.0 * ph).sin())
            })
            .collect()
    }

    fn energy(x: &[f32]) -> f32 {
        x.iter().map(|s| s * s).sum()
    }

    fn dred_encoder() -> Encoder {
        let mut e = Encoder::new().expect("encoder");
        e.set_bitrate(32_000).expect("bitrate");
        e.set_expected_loss(20).expect("loss");
        e.set_dred_duration(20).expect("dred");
        e
    }

    #[test]
    fn the_version_is_one_point_five_or_later() {
        let v = version();
        assert!(v.starts_with("libopus 1."), "{v}");
        let minor: u32 = v["libopus 1.".len()..].split('.').next().and_then(|m| m.parse().ok()).unwrap_or(0);
        assert!(minor >= 5, "{v}");
    }

    #[test]
    fn a_round_trip_keeps_the_voice_and_its_timing() {
        let mut e = Encoder::new().expect("encoder");
        e.set_bitrate(32_000).expect("bitrate");
        e.set_vbr(false).expect("cbr");
        let mut d = Decoder::new(FRAME).expect("decoder");
        let mut input = Vec::new();
        let mut output = Vec::new();
        for k in 0..50 {
            let pcm = voice(FRAME, k * FRAME);
            let p = e.encode(&pcm).expect("encode");
            assert_eq!(p.len(), 80, "32 kbit/s CBR: 80 bytes per 20 ms");
            input.extend(pcm);
            output.extend(d.decode(&p).expect("decode"));
        }
        // Opus delays by 6.5 ms (312 samples at 48 kHz): the output is
        // the input, most alike at that shift (speech coding keeps the
        // waveform's shape, not every sample).
        let a = &input[FRAME * 10..FRAME * 45];
        let corr = |lag: usize| {
            let b = &output[FRAME * 10 + lag..FRAME * 45 + lag];
            a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>() / (energy(a) * energy(b)).sqrt().max(1e-9)
        };
        let best = (0..1000).max_by(|&x, &y| corr(x).total_cmp(&corr(y))).unwrap_or(0);
        assert!(best.abs_diff(312) <= 24, "the output is most like the input {best} samples later");
        assert!(corr(best) > 0.4, "correlation {:.2}", corr(best));
    }

    #[test]
    fn packets_carry_dred_that_covers_the_frames_before_them() {
        let mut e = dred_encoder();
        let mut r = DredReader::new().expect("reader");
        let mut covered = Vec::new();
        for k in 0..40 {
            let p = e.encode(&voice(FRAME, k * FRAME)).expect("encode");
            if k >= 20 {
                covered.push(r.parse(&p, 10 * FRAME as u32).expect("parse"));
            }
        }
        // After the encoder's start-up, each packet covers well over a
        // frame of the speech before it.
        assert!(covered.iter().all(|&c| c >= 2 * FRAME as u32), "{covered:?}");
        // Without DRED asked for, packets carry none.
        let mut plain = Encoder::new().expect("encoder");
        plain.set_bitrate(32_000).expect("bitrate");
        for k in 0..30 {
            let p = plain.encode(&voice(FRAME, k * FRAME)).expect("encode");
            if k >= 20 {
                assert_eq!(r.parse(&p, 10 * FRAME as u32).expect("parse"), 0);
            }
        }
    }

    /// Frames 0..40 decoded, frames `lost` replaced by `repair`; answers the
    /// error energy of the lost frames against the clean decoding.
    fn error_of_lost(lost: &[usize], mut repair: impl FnMut(&mut Decoder, &[Vec<u8>], usize) -> Vec<f32>) -> f32 {
        let mut e = dred_encoder();
        let packets: Vec<Vec<u8>> = (0..40).map(|k| e.encode(&voice(FRAME, k * FRAME)).expect("encode")).collect();
        let mut clean = Decoder::new(FRAME).expect("decoder");
        let reference: Vec<Vec<f32>> = packets.iter().map(|p| clean.decode(p).expect("decode")).collect();
        let mut d = Decoder::new(FRAME).expect("decoder");
        let mut err = 0.0;
        for (k, p) in packets.iter().enumerate() {
            if lost.contains(&k) {
                let out = repair(&mut d, &packets, k);
                err += reference[k].iter().zip(&out).map(|(x, y)| (x - y).powi(2)).sum::<f32>();
            } else {
                d.decode(p).expect("decode");
            }
        }
        err
    }

    #[test]
    fn dred_in_a_later_packet_rebuilds_lost_frames_better_than_concealment() {
        // Frames 25, 26, 27 lost; packet 28 came and carries DRED for them.
        let lost = [25, 26, 27];
        let concealed = error_of_lost(&lost, |d, _, _| d.conceal().expect("conceal"));
        let mut reader = DredReader::new().expect("reader");
        let recovered = error_of_lost(&lost, |d, packets, k| {
            let back = (28 - k) as u32 * FRAME as u32;
            let got = reader.parse(&packets[28], back + 2 * FRAME as u32).expect("parse");
            assert!(got >= back, "packet 28 covers {got} samples, {back} needed");
            d.recover(&reader, back).expect("recover")
        });
        assert!(recovered < 0.5 * concealed, "DRED error {recovered:.2} against concealment {concealed:.2}");
    }

    #[test]
    fn packets_carry_lbrr_only_with_fec_on() {
        for fec in [true, false] {
            let mut e = Encoder::new().expect("encoder");
            e.set_bitrate(32_000).expect("bitrate");
            e.set_expected_loss(10).expect("loss");
            e.set_inband_fec(fec).expect("fec");
            let with: usize =
                (0..30).map(|k| e.encode(&voice(FRAME, k * FRAME)).expect("encode")).filter(|p| has_lbrr(p)).count();
            if fec {
                assert!(with > 20, "{with} of 30 packets with LBRR");
            } else {
                assert_eq!(with, 0);
            }
        }
    }

    #[test]
    fn offsets_outside_the_redundancy_are_refused() {
        let mut e = dred_encoder();
        let mut reader = DredReader::new().expect("reader");
        let mut d = Decoder::new(FRAME).expect("decoder");
        // Nothing parsed yet: nothing covered.
        assert!(matches!(d.recover(&reader, FRAME as u32), Err(Error::Input(_))));
        let mut last = Vec::new();
        for k in 0..30 {
            last = e.encode(&voice(FRAME, k * FRAME)).expect("encode");
        }
        let got = reader.parse(&last, 4 * FRAME as u32).expect("parse");
        assert!(got >= FRAME as u32);
        assert!(d.recover(&reader, FRAME as u32).is_ok());
        for bad in [0, 100, got + FRAME as u32, u32::MAX] {
            assert!(matches!(d.recover(&reader, bad), Err(Error::Input(_))), "{bad}");
        }
        assert!(matches!(e.encode(&[0.0; 1000]), Err(Error::Input(_))));
        assert!(matches!(Decoder::new(1000), Err(Error::Input(_))));
    }

    #[test]
    fn deep_plc_conceals_at_complexity_five() {
        // The same loss concealed at complexity 0 (classic) and 5 (deep
        // PLC): both make a frame; they differ, so the setting reaches
        // libopus.
        let lost = [25, 26];
        let mut outs = Vec::new();
        for c in [0u8, 5] {
            let mut out = Vec::new();
            error_of_lost(&lost, |d, _, k| {
                if k == lost[0] {
                    d.set_complexity(c).expect("complexity");
                }
                let f = d.conceal().expect("conceal");
                assert_eq!(f.len(), FRAME);
                out.extend_from_slice(&f);
                f
            });
            outs.push(out);
        }
        let diff: f32 = outs[0].iter().zip(&outs[1]).map(|(a, b)| (a - b).powi(2)).sum();
        assert!(diff > 1e-3, "classic and deep PLC made the same frames");
    }

    #[test]
    fn garbage_is_an_error_or_noise_never_ub() {
        // A fixed pseudo-random stream of packets of every length up to
        // 400 bytes, and packets that start like real ones then go wrong.
        let mut x: u32 = 0x1234_5678;
        let mut byte = move || {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 24) as u8
        };
        let mut e = dred_encoder();
        let real = (0..25).map(|k| e.encode(&voice(FRAME, k * FRAME)).expect("encode")).last().unwrap_or_default();
        let mut d = Decoder::new(FRAME).expect("decoder");
        let mut r = DredReader::new().expect("reader");
        for len in 1..400 {
            let mut p: Vec<u8> = (0..len).map(|_| byte()).collect();
            if len % 3 == 0 {
                let keep = len.min(real.len());
                p[..keep].copy_from_slice(&real[..keep]);
                let k = usize::from(byte()) % keep.max(1);
                p[k] ^= 0x5a;
            }
            let _ = d.decode(&p);
            let _ = d.decode_fec(&p);
            let _ = has_lbrr(&p);
            if let Ok(n) = r.parse(&p, 20 * FRAME as u32)
                && n >= FRAME as u32
            {
                let out = d.recover(&r, FRAME as u32).expect("in range");
                assert!(out.iter().all(|s| s.is_finite()));
            }
        }
        assert!(r.parse(&[], 960).is_err());
        assert!(!has_lbrr(&[]));
        assert!(d.decode(&vec![0u8; MAX_INPUT + 1]).is_err());
    }
}
