//! Audio in and out, behind two small traits, at the engine's one format:
//! 48 kHz mono `f32` in -1..1, one frame at a time.
//!
//! The engine runs its own clock and calls [`AudioInput::read`] and
//! [`AudioOutput::write`] once per frame; a WAV file behind that clock is the
//! clock-paced virtual device tests and headless use need (ALSA's null
//! device here is not paced). Files in other rates or channel counts are
//! converted on the way in (rubato) and written at 48 kHz mono.

use std::path::{Path, PathBuf};

use rubato::{FftFixedInOut, Resampler};

use crate::codec::SAMPLE_RATE;

/// An audio failure.
#[derive(Debug, thiserror::Error)]
pub enum AudioError {
    /// A WAV file could not be read or written.
    #[error("{path}: {msg}")]
    Wav {
        /// The file.
        path: PathBuf,
        /// Why.
        msg: String,
    },
    /// Resampling failed.
    #[error("resampling: {0}")]
    Resample(String),
}

/// Where the engine's microphone frames come from.
pub trait AudioInput: Send {
    /// Fills `frame` with the next samples; answers false once the input
    /// has ended (a file ran out). A device never ends.
    fn read(&mut self, frame: &mut [f32]) -> bool;

    /// Whether this input hears the room the loudspeaker plays into (a
    /// microphone), so echo cancellation has something to do. A file or a
    /// generated signal does not: cancelling "echo" there could only duck
    /// the voice while both sides talk.
    fn hears_the_room(&self) -> bool {
        true
    }
}

/// Where the engine's loudspeaker frames go.
pub trait AudioOutput: Send {
    /// Plays (or records) one frame.
    fn write(&mut self, frame: &[f32]);
    /// Called once at the end of the call.
    fn finish(&mut self) -> Result<(), AudioError> {
        Ok(())
    }
    /// Whether frames still go somewhere: a sound card that was unplugged
    /// answers false (see [`crate::device::FallbackOutput`]).
    fn is_alive(&self) -> bool {
        true
    }
}

/// Converts mono samples from one rate to another.
pub fn resample(samples: &[f32], from: u32, to: u32) -> Result<Vec<f32>, AudioError> {
    if from == to || samples.is_empty() {
        return Ok(samples.to_vec());
    }
    let err = |e: &dyn std::fmt::Display| AudioError::Resample(e.to_string());
    let mut r = FftFixedInOut::<f32>::new(from as usize, to as usize, 1024, 1).map_err(|e| err(&e))?;
    let delay = r.output_delay();
    let mut out = Vec::with_capacity(samples.len() * to as usize / from as usize + 2048);
    let mut pos = 0;
    while samples.len() - pos >= r.input_frames_next() {
        let n = r.input_frames_next();
        let chunk = r.process(&[&samples[pos..pos + n]], None).map_err(|e| err(&e))?;
        out.extend_from_slice(&chunk[0]);
        pos += n;
    }
    // (rubato refuses an empty partial chunk: a length that is a whole
    // number of chunks has no tail.)
    if pos < samples.len() {
        let tail = r.process_partial(Some(&[&samples[pos..]]), None).map_err(|e| err(&e))?;
        out.extend_from_slice(&tail[0]);
    }
    let flush = r.process_partial::<&[f32]>(None, None).map_err(|e| err(&e))?;
    out.extend_from_slice(&flush[0]);
    let want = samples.len() * to as usize / from as usize;
    Ok(out.into_iter().skip(delay).take(want).collect())
}

/// Reads a WAV file as 48 kHz mono (channels averaged, rate converted).
pub fn read_wav(path: &Path) -> Result<Vec<f32>, AudioError> {
    let wav_err = |e: hound::Error| AudioError::Wav { path: path.to_owned(), msg: e.to_string() };
    let mut reader = hound::WavReader::open(path).map_err(wav_err)?;
    let spec = reader.spec();
    let channels = usize::from(spec.channels.max(1));
    let interleaved: Vec<f32> = match spec.sample_format {
        hound::SampleFormat::Float => reader.samples::<f32>().collect::<Result<_, _>>().map_err(wav_err)?,
        hound::SampleFormat::Int => {
            let scale = 1.0 / (1u64 << (spec.bits_per_sample.clamp(1, 32) - 1)) as f32;
            reader.samples::<i32>().map(|s| s.map(|v| v as f32 * scale)).collect::<Result<_, _>>().map_err(wav_err)?
        }
    };
    let mono: Vec<f32> = interleaved.chunks(channels).map(|c| c.iter().sum::<f32>() / c.len() as f32).collect();
    resample(&mono, spec.sample_rate, SAMPLE_RATE)
}

/// Writes 48 kHz mono samples as a 16-bit WAV file.
pub fn write_wav(path: &Path, samples: &[f32]) -> Result<(), AudioError> {
    let wav_err = |e: hound::Error| AudioError::Wav { path: path.to_owned(), msg: e.to_string() };
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: SAMPLE_RATE,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec).map_err(wav_err)?;
    for s in samples {
        w.write_sample((s.clamp(-1.0, 1.0) * 32767.0) as i16).map_err(wav_err)?;
    }
    w.finalize().map_err(wav_err)
}

/// Plays samples from memory (a WAV file read up front), then ends.
#[derive(Debug)]
pub struct BufferInput {
    samples: Vec<f32>,
    pos: usize,
}

impl BufferInput {
    /// From samples at 48 kHz mono.
    pub fn new(samples: Vec<f32>) -> Self {
        Self { samples, pos: 0 }
    }

    /// From a WAV file.
    pub fn from_wav(path: &Path) -> Result<Self, AudioError> {
        Ok(Self::new(read_wav(path)?))
    }
}

impl AudioInput for BufferInput {
    fn hears_the_room(&self) -> bool {
        false
    }

    fn read(&mut self, frame: &mut [f32]) -> bool {
        if self.pos >= self.samples.len() {
            frame.fill(0.0);
            return false;
        }
        let n = frame.len().min(self.samples.len() - self.pos);
        frame[..n].copy_from_slice(&self.samples[self.pos..self.pos + n]);
        frame[n..].fill(0.0);
        self.pos += n;
        true
    }
}

/// Silence forever (a muted or missing microphone).
#[derive(Debug, Default)]
pub struct SilentInput;

impl AudioInput for SilentInput {
    fn hears_the_room(&self) -> bool {
        false
    }

    fn read(&mut self, frame: &mut [f32]) -> bool {
        frame.fill(0.0);
        true
    }
}

/// Records what is played, to memory and (optionally) a WAV file at the end.
#[derive(Debug, Default)]
pub struct RecordingOutput {
    /// Everything written so far.
    pub samples: Vec<f32>,
    path: Option<PathBuf>,
}

impl RecordingOutput {
    /// Records to memory only.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records and writes a WAV file when the call ends.
    pub fn to_wav(path: impl Into<PathBuf>) -> Self {
        Self { samples: Vec::new(), path: Some(path.into()) }
    }
}

impl AudioOutput for RecordingOutput {
    fn write(&mut self, frame: &[f32]) {
        self.samples.extend_from_slice(frame);
    }

    fn finish(&mut self) -> Result<(), AudioError> {
        match &self.path {
            Some(p) => write_wav(p, &self.samples),
            None => Ok(()),
        }
    }
}

/// Root-mean-square level of a frame, in dBFS (-100 for silence): the
/// level meters a UI shows.
pub fn level_db(frame: &[f32]) -> f32 {
    if frame.is_empty() {
        return -100.0;
    }
    let rms = (frame.iter().map(|s| s * s).sum::<f32>() / frame.len() as f32).sqrt();
    if rms <= 1e-5 { -100.0 } else { 20.0 * rms.log10() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(rate: u32, secs: f32, hz: f32) -> Vec<f32> {
        (0..(rate as f32 * secs) as usize)
            .map(|i| 0.5 * (i as f32 * 2.0 * std::f32::consts::PI * hz / rate as f32).sin())
            .collect()
    }

    #[test]
    fn resampling_keeps_length_and_pitch() {
        let t = tone(22_050, 1.0, 440.0);
        let r = resample(&t, 22_050, 48_000).unwrap();
        assert_eq!(r.len(), 48_000);
        // Count zero crossings: 440 Hz is 880 crossings a second.
        let zc = r.windows(2).filter(|w| (w[0] < 0.0) != (w[1] < 0.0)).count();
        assert!((870..=890).contains(&zc), "{zc}");
    }

    #[test]
    fn lengths_that_are_whole_chunks_resample_too() {
        // The resampler's chunk is 1024 input frames at 16 kHz, 1026 at
        // 48 kHz, 1029 at 22.05 kHz: a recording of exactly that many (or a
        // multiple) has no partial tail.
        for (from, to, n) in
            [(16_000, 48_000, 1024), (16_000, 48_000, 4096), (48_000, 16_000, 2052), (22_050, 48_000, 1029)]
        {
            let r = resample(&vec![0.1; n], from, to).unwrap_or_else(|e| panic!("{n} at {from}: {e}"));
            assert_eq!(r.len(), n * to as usize / from as usize);
        }
    }

    #[test]
    fn wav_round_trip_and_conversion() {
        let dir = std::env::temp_dir().join(format!("babel-audio-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("t.wav");
        let t = tone(48_000, 0.5, 300.0);
        write_wav(&p, &t).unwrap();
        let back = read_wav(&p).unwrap();
        assert_eq!(back.len(), t.len());
        assert!(back.iter().zip(&t).all(|(a, b)| (a - b).abs() < 1e-3));
        // A stereo 16 kHz file comes out mono at 48 kHz.
        let p2 = dir.join("s.wav");
        let spec = hound::WavSpec {
            channels: 2,
            sample_rate: 16_000,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut w = hound::WavWriter::create(&p2, spec).unwrap();
        for s in tone(16_000, 0.25, 200.0) {
            w.write_sample((s * 32767.0) as i16).unwrap();
            w.write_sample((s * 32767.0) as i16).unwrap();
        }
        w.finalize().unwrap();
        assert_eq!(read_wav(&p2).unwrap().len(), 12_000);
        assert!(read_wav(&dir.join("missing.wav")).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn buffer_input_ends_and_pads() {
        let mut i = BufferInput::new(vec![1.0; 1500]);
        let mut f = [0.0; 960];
        assert!(i.read(&mut f));
        assert!(i.read(&mut f));
        assert_eq!(f[539], 1.0);
        assert_eq!(f[540], 0.0);
        assert!(!i.read(&mut f));
    }

    #[test]
    fn levels() {
        assert_eq!(level_db(&[0.0; 10]), -100.0);
        assert!((level_db(&[1.0; 10])).abs() < 0.01);
        assert!((level_db(&[0.1; 10]) + 20.0).abs() < 0.01);
    }
}
