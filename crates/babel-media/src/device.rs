//! Real audio devices through cpal: list them, open one by name or the
//! system default, and adapt it to the engine's 48 kHz mono frames.
//!
//! Each stream lives on a thread of its own (cpal streams may not move
//! between threads) and is stopped and joined when its handle drops. The
//! audio callbacks only move samples through a lock-free ring buffer: no
//! lock, no allocation, no waiting on the audio thread. Resampling (rubato)
//! and channel mixing happen on the engine's side of the ring.

use std::sync::mpsc as std_mpsc;
use std::thread::JoinHandle;

use cpal::traits::{DeviceTrait, HostTrait, StreamTrait};
use cpal::{FromSample, Sample, SampleFormat, SizedSample};
use ringbuf::traits::{Consumer, Observer, Producer, Split};
use ringbuf::{HeapCons, HeapProd, HeapRb};
use rubato::{FftFixedIn, FftFixedOut, Resampler};

use crate::audio::{AudioInput, AudioOutput};
use crate::codec::SAMPLE_RATE;

/// A device problem.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// No device has that name.
    #[error("no audio {kind} device named `{name}` (see `babel devices`)")]
    NotFound {
        /// "input" or "output".
        kind: &'static str,
        /// The name asked for.
        name: String,
    },
    /// The system has no default device of that kind.
    #[error("no default audio {0} device")]
    NoDefault(&'static str),
    /// The audio system refused.
    #[error("audio device error: {0}")]
    Backend(String),
}

fn backend(e: impl std::fmt::Display) -> DeviceError {
    DeviceError::Backend(e.to_string())
}

/// A device as `babel devices` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    /// The name to pick it by.
    pub name: String,
    /// Whether it is the system default.
    pub is_default: bool,
    /// Its default sample rate.
    pub sample_rate: u32,
    /// Its default channel count.
    pub channels: u16,
}

fn describe(d: &cpal::Device, default: Option<&str>, input: bool) -> Option<DeviceInfo> {
    let name = d.name().ok()?;
    let cfg = if input { d.default_input_config() } else { d.default_output_config() }.ok()?;
    Some(DeviceInfo {
        is_default: default == Some(name.as_str()),
        name,
        sample_rate: cfg.sample_rate().0,
        channels: cfg.channels(),
    })
}

/// Input devices (microphones).
pub fn list_inputs() -> Result<Vec<DeviceInfo>, DeviceError> {
    let host = cpal::default_host();
    let default = host.default_input_device().and_then(|d| d.name().ok());
    Ok(host.input_devices().map_err(backend)?.filter_map(|d| describe(&d, default.as_deref(), true)).collect())
}

/// Output devices (speakers, headsets).
pub fn list_outputs() -> Result<Vec<DeviceInfo>, DeviceError> {
    let host = cpal::default_host();
    let default = host.default_output_device().and_then(|d| d.name().ok());
    Ok(host.output_devices().map_err(backend)?.filter_map(|d| describe(&d, default.as_deref(), false)).collect())
}

fn find(input: bool, name: Option<&str>) -> Result<cpal::Device, DeviceError> {
    let host = cpal::default_host();
    let kind = if input { "input" } else { "output" };
    match name {
        None => if input { host.default_input_device() } else { host.default_output_device() }
            .ok_or(DeviceError::NoDefault(kind)),
        Some(want) => {
            let mut devices = if input { host.input_devices() } else { host.output_devices() }.map_err(backend)?;
            devices
                .find(|d| d.name().is_ok_and(|n| n == want))
                .ok_or_else(|| DeviceError::NotFound { kind, name: want.to_owned() })
        }
    }
}

/// Keeps a stream's thread alive; dropping it stops the stream.
struct StreamThread {
    stop: Option<std_mpsc::Sender<()>>,
    join: Option<JoinHandle<()>>,
}

impl Drop for StreamThread {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(j) = self.join.take() {
            let _ = j.join();
        }
    }
}

/// Starts `build` on a thread of its own and keeps the stream it makes
/// playing until the handle drops.
fn stream_thread(
    build: impl FnOnce() -> Result<cpal::Stream, DeviceError> + Send + 'static,
) -> Result<StreamThread, DeviceError> {
    let (ready_tx, ready_rx) = std_mpsc::channel();
    let (stop_tx, stop_rx) = std_mpsc::channel::<()>();
    let join = std::thread::Builder::new()
        .name("babel-audio".into())
        .spawn(move || {
            let stream = match build().and_then(|s| s.play().map(|()| s).map_err(backend)) {
                Ok(s) => s,
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            let _ = ready_tx.send(Ok(()));
            // Parked until the handle is dropped (the sender goes away).
            let _ = stop_rx.recv();
            drop(stream);
        })
        .map_err(backend)?;
    ready_rx.recv().map_err(backend)??;
    Ok(StreamThread { stop: Some(stop_tx), join: Some(join) })
}

/// Ring size: a quarter second at 48 kHz, whatever the device rate.
fn ring_len(rate: u32) -> usize {
    (rate as usize / 4).max(4096)
}

/// A microphone as an [`AudioInput`].
pub struct DeviceInput {
    cons: HeapCons<f32>,
    resampler: Option<FftFixedOut<f32>>,
    scratch: Vec<f32>,
    _thread: StreamThread,
}

impl std::fmt::Debug for DeviceInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceInput").field("resampling", &self.resampler.is_some()).finish_non_exhaustive()
    }
}

fn input_stream<T: SizedSample>(
    device: &cpal::Device,
    config: &cpal::StreamConfig,
    mut prod: HeapProd<f32>,
) -> Result<cpal::Stream, DeviceError>
where
    f32: FromSample<T>,
{
    let channels = usize::from(config.channels.max(1));
    let mut mono = vec![0.0f32; 8192];
    device
        .build_input_stream(
            config,
            move |data: &[T], _: &cpal::InputCallbackInfo| {
                for chunk in data.chunks(mono.len() * channels) {
                    let n = chunk.len() / channels;
                    for (m, frame) in mono.iter_mut().zip(chunk.chunks(channels)) {
                        *m = frame.iter().map(|s| f32::from_sample(*s)).sum::<f32>() / channels as f32;
                    }
                    // A full ring drops the newest: the engine is behind anyway.
                    prod.push_slice(&mono[..n]);
                }
            },
            |e| tracing::warn!(error = %e, "audio input error"),
            None,
        )
        .map_err(backend)
}

impl DeviceInput {
    /// Opens a microphone by name, or the default one.
    pub fn open(name: Option<&str>, frame_samples: usize) -> Result<DeviceInput, DeviceError> {
        let name = name.map(str::to_owned);
        let (info_tx, info_rx) = std_mpsc::channel();
        let thread = stream_thread(move || {
            let device = find(true, name.as_deref())?;
            let supported = device.default_input_config().map_err(backend)?;
            let rate = supported.sample_rate().0;
            let (prod, cons) = HeapRb::<f32>::new(ring_len(rate)).split();
            let _ = info_tx.send((rate, cons));
            let config = supported.config();
            match supported.sample_format() {
                SampleFormat::F32 => input_stream::<f32>(&device, &config, prod),
                SampleFormat::I16 => input_stream::<i16>(&device, &config, prod),
                SampleFormat::U16 => input_stream::<u16>(&device, &config, prod),
                other => Err(DeviceError::Backend(format!("unsupported sample format {other}"))),
            }
        })?;
        let (rate, cons) = info_rx.recv().map_err(backend)?;
        let resampler = (rate != SAMPLE_RATE)
            .then(|| FftFixedOut::<f32>::new(rate as usize, SAMPLE_RATE as usize, frame_samples, 2, 1))
            .transpose()
            .map_err(backend)?;
        Ok(DeviceInput { cons, resampler, scratch: vec![0.0; 16_384], _thread: thread })
    }
}

impl AudioInput for DeviceInput {
    fn read(&mut self, frame: &mut [f32]) -> bool {
        let need = self.resampler.as_ref().map_or(frame.len(), |r| r.input_frames_next());
        // Keep latency bounded if the engine fell behind the device clock.
        let backlog = self.cons.occupied_len();
        if backlog > need * 4 {
            self.cons.skip(backlog - need * 2);
        }
        let buf = &mut self.scratch[..need.min(16_384)];
        let got = self.cons.pop_slice(buf);
        buf[got..].fill(0.0);
        match self.resampler.as_mut() {
            None => frame.copy_from_slice(&buf[..frame.len()]),
            Some(r) => match r.process(&[&buf[..]], None) {
                Ok(out) => {
                    let n = out[0].len().min(frame.len());
                    frame[..n].copy_from_slice(&out[0][..n]);
                    frame[n..].fill(0.0);
                }
                Err(_) => frame.fill(0.0),
            },
        }
        true
    }
}

/// A loudspeaker as an [`AudioOutput`].
pub struct DeviceOutput {
    prod: HeapProd<f32>,
    resampler: Option<FftFixedIn<f32>>,
    _thread: StreamThread,
}

impl std::fmt::Debug for DeviceOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceOutput").field("resampling", &self.resampler.is_some()).finish_non_exhaustive()
    }
}

fn output_stream<T: SizedSample + FromSample<f32>>(
    device: &cpal::Device,
    config: &cpal::StreamConfig,
    mut cons: HeapCons<f32>,
) -> Result<cpal::Stream, DeviceError> {
    let channels = usize::from(config.channels.max(1));
    device
        .build_output_stream(
            config,
            move |data: &mut [T], _: &cpal::OutputCallbackInfo| {
                for frame in data.chunks_mut(channels) {
                    // An empty ring plays silence rather than waiting.
                    let s = cons.try_pop().unwrap_or(0.0);
                    frame.fill(T::from_sample(s));
                }
            },
            |e| tracing::warn!(error = %e, "audio output error"),
            None,
        )
        .map_err(backend)
}

impl DeviceOutput {
    /// Opens a loudspeaker by name, or the default one.
    pub fn open(name: Option<&str>, frame_samples: usize) -> Result<DeviceOutput, DeviceError> {
        let name = name.map(str::to_owned);
        let (info_tx, info_rx) = std_mpsc::channel();
        let thread = stream_thread(move || {
            let device = find(false, name.as_deref())?;
            let supported = device.default_output_config().map_err(backend)?;
            let rate = supported.sample_rate().0;
            let (prod, cons) = HeapRb::<f32>::new(ring_len(rate)).split();
            let _ = info_tx.send((rate, prod));
            let config = supported.config();
            match supported.sample_format() {
                SampleFormat::F32 => output_stream::<f32>(&device, &config, cons),
                SampleFormat::I16 => output_stream::<i16>(&device, &config, cons),
                SampleFormat::U16 => output_stream::<u16>(&device, &config, cons),
                other => Err(DeviceError::Backend(format!("unsupported sample format {other}"))),
            }
        })?;
        let (rate, prod) = info_rx.recv().map_err(backend)?;
        let resampler = (rate != SAMPLE_RATE)
            .then(|| FftFixedIn::<f32>::new(SAMPLE_RATE as usize, rate as usize, frame_samples, 2, 1))
            .transpose()
            .map_err(backend)?;
        Ok(DeviceOutput { prod, resampler, _thread: thread })
    }
}

impl AudioOutput for DeviceOutput {
    fn write(&mut self, frame: &[f32]) {
        match self.resampler.as_mut() {
            None => {
                self.prod.push_slice(frame);
            }
            Some(r) => {
                if let Ok(out) = r.process(&[frame], None) {
                    self.prod.push_slice(&out[0]);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listing_devices_never_fails_hard() {
        // This machine may have no sound card (ALSA's null device only):
        // listing answers a list or a clear error, and never panics.
        match (list_inputs(), list_outputs()) {
            (Ok(i), Ok(o)) => {
                assert!(i.iter().chain(&o).all(|d| !d.name.is_empty() && d.sample_rate > 0));
            }
            (a, b) => {
                let e = a.err().or(b.err()).map(|e| e.to_string()).unwrap_or_default();
                assert!(e.starts_with("audio device error"), "{e}");
            }
        }
    }

    #[test]
    fn an_unknown_device_name_is_a_clear_error() {
        let e = DeviceInput::open(Some("no such microphone"), 960).unwrap_err().to_string();
        assert!(e.contains("no such microphone") || e.starts_with("audio device error"), "{e}");
        let e = DeviceOutput::open(Some("no such speaker"), 960).unwrap_err().to_string();
        assert!(e.contains("no such speaker") || e.starts_with("audio device error"), "{e}");
    }
}
