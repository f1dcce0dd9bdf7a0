//! Real audio devices through cpal: list them, open one by name or the
//! system default, and adapt it to the engine's 48 kHz mono frames.
//!
//! Each stream lives on a thread of its own (cpal streams may not move
//! between threads) and is stopped and joined when its handle drops. The
//! audio callbacks only move samples through a lock-free ring buffer: no
//! lock, no allocation, no waiting on the audio thread. Resampling (rubato)
//! and channel mixing happen on the engine's side of the ring.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc as std_mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

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
    gone: Arc<AtomicBool>,
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
    gone: Arc<AtomicBool>,
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
            move |e| {
                if matches!(e, cpal::StreamError::DeviceNotAvailable) {
                    gone.store(true, Ordering::Relaxed);
                }
                tracing::debug!(error = %e, "audio output error");
            },
            None,
        )
        .map_err(backend)
}

impl DeviceOutput {
    /// Opens a loudspeaker by name, or the default one.
    pub fn open(name: Option<&str>, frame_samples: usize) -> Result<DeviceOutput, DeviceError> {
        let name = name.map(str::to_owned);
        let (info_tx, info_rx) = std_mpsc::channel();
        let gone = Arc::new(AtomicBool::new(false));
        let flag = gone.clone();
        let thread = stream_thread(move || {
            let device = find(false, name.as_deref())?;
            let supported = device.default_output_config().map_err(backend)?;
            let rate = supported.sample_rate().0;
            let (prod, cons) = HeapRb::<f32>::new(ring_len(rate)).split();
            let _ = info_tx.send((rate, prod));
            let config = supported.config();
            match supported.sample_format() {
                SampleFormat::F32 => output_stream::<f32>(&device, &config, cons, flag),
                SampleFormat::I16 => output_stream::<i16>(&device, &config, cons, flag),
                SampleFormat::U16 => output_stream::<u16>(&device, &config, cons, flag),
                other => Err(DeviceError::Backend(format!("unsupported sample format {other}"))),
            }
        })?;
        let (rate, prod) = info_rx.recv().map_err(backend)?;
        let resampler = (rate != SAMPLE_RATE)
            .then(|| FftFixedIn::<f32>::new(SAMPLE_RATE as usize, rate as usize, frame_samples, 2, 1))
            .transpose()
            .map_err(backend)?;
        Ok(DeviceOutput { prod, resampler, gone, _thread: thread })
    }
}

impl AudioOutput for DeviceOutput {
    fn is_alive(&self) -> bool {
        !self.gone.load(Ordering::Relaxed)
    }

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

/// Opens a loudspeaker (or anything else frames can go to).
pub type OpenOutput = Box<dyn FnMut() -> Result<Box<dyn AudioOutput>, DeviceError> + Send>;

/// An opening attempt's result, with the opener back.
type Attempt = (OpenOutput, Result<Box<dyn AudioOutput>, DeviceError>);

/// What a [`FallbackOutput`] has to say, once per change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutputNotice {
    /// There is no loudspeaker (or it went away): the sound is discarded
    /// until one can be opened again.
    Lost(String),
    /// A loudspeaker is playing again.
    Found,
}

/// A loudspeaker that never ends a call: when none can be opened, or the
/// one playing goes away, frames are discarded, the owner is told once, and
/// a device is looked for again every [`FallbackOutput::RETRY`] on a thread
/// of its own (opening a device can take a while; the engine's clock must
/// not wait for it).
pub struct FallbackOutput {
    opener: Option<OpenOutput>,
    current: Option<Box<dyn AudioOutput>>,
    attempt: Option<std_mpsc::Receiver<Attempt>>,
    next_try: Instant,
    retry: Duration,
    lost: bool,
    notify: Box<dyn FnMut(OutputNotice) + Send>,
}

impl std::fmt::Debug for FallbackOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FallbackOutput").field("playing", &self.current.is_some()).finish_non_exhaustive()
    }
}

impl FallbackOutput {
    /// How often a missing loudspeaker is looked for.
    pub const RETRY: Duration = Duration::from_secs(2);

    /// Opens the loudspeaker by name (or the default) now, falling back
    /// to discarding when there is none.
    pub fn device(name: Option<&str>, frame_samples: usize, notify: Box<dyn FnMut(OutputNotice) + Send>) -> Self {
        let name = name.map(str::to_owned);
        Self::new(
            Box::new(move || {
                DeviceOutput::open(name.as_deref(), frame_samples).map(|d| Box::new(d) as Box<dyn AudioOutput>)
            }),
            Self::RETRY,
            notify,
        )
    }

    /// With any opener (tests inject one that fails), trying it once now.
    pub fn new(mut opener: OpenOutput, retry: Duration, mut notify: Box<dyn FnMut(OutputNotice) + Send>) -> Self {
        let (current, lost) = match opener() {
            Ok(d) => (Some(d), false),
            Err(e) => {
                notify(OutputNotice::Lost(e.to_string()));
                (None, true)
            }
        };
        FallbackOutput {
            opener: Some(opener),
            current,
            attempt: None,
            next_try: Instant::now() + retry,
            retry,
            lost,
            notify,
        }
    }

    /// Whether frames reach a loudspeaker now.
    pub fn playing(&self) -> bool {
        self.current.is_some()
    }

    fn poll_attempt(&mut self) {
        let Some(rx) = &self.attempt else { return };
        match rx.try_recv() {
            Ok((opener, result)) => {
                self.attempt = None;
                self.opener = Some(opener);
                self.next_try = Instant::now() + self.retry;
                if let Ok(d) = result {
                    self.current = Some(d);
                    if self.lost {
                        self.lost = false;
                        (self.notify)(OutputNotice::Found);
                    }
                }
            }
            Err(std_mpsc::TryRecvError::Empty) => {}
            // The opening thread died (a panic in a driver): try again later.
            Err(std_mpsc::TryRecvError::Disconnected) => {
                self.attempt = None;
            }
        }
    }

    fn start_attempt(&mut self) {
        if self.attempt.is_some() || Instant::now() < self.next_try {
            return;
        }
        let Some(mut opener) = self.opener.take() else { return };
        let (tx, rx) = std_mpsc::channel();
        let spawned = std::thread::Builder::new().name("babel-audio-open".into()).spawn(move || {
            let r = opener();
            let _ = tx.send((opener, r));
        });
        if spawned.is_ok() {
            self.attempt = Some(rx);
        } else {
            self.next_try = Instant::now() + self.retry;
        }
    }
}

impl AudioOutput for FallbackOutput {
    fn write(&mut self, frame: &[f32]) {
        if self.current.as_ref().is_some_and(|d| !d.is_alive()) {
            self.current = None;
            self.next_try = Instant::now() + self.retry;
            if !self.lost {
                self.lost = true;
                (self.notify)(OutputNotice::Lost("the loudspeaker went away".into()));
            }
        }
        match self.current.as_mut() {
            Some(d) => d.write(frame),
            None => {
                self.poll_attempt();
                self.start_attempt();
            }
        }
    }

    fn finish(&mut self) -> Result<(), crate::audio::AudioError> {
        match self.current.as_mut() {
            Some(d) => d.finish(),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// A loudspeaker that records, and can be unplugged.
    struct Fake {
        heard: Arc<Mutex<Vec<f32>>>,
        unplugged: Arc<AtomicBool>,
    }

    impl AudioOutput for Fake {
        fn write(&mut self, frame: &[f32]) {
            self.heard.lock().unwrap().extend_from_slice(frame);
        }
        fn is_alive(&self) -> bool {
            !self.unplugged.load(Ordering::SeqCst)
        }
    }

    fn wait_until(mut f: impl FnMut() -> bool) {
        let end = Instant::now() + Duration::from_secs(10);
        while !f() {
            assert!(Instant::now() < end, "not within 10 s");
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    #[test]
    fn a_missing_or_vanished_loudspeaker_is_discarded_said_once_and_picked_up_again() {
        let heard = Arc::new(Mutex::new(Vec::new()));
        let unplugged = Arc::new(AtomicBool::new(false));
        let plugged_in = Arc::new(AtomicBool::new(false));
        let opens = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let (h, u, p, n) = (heard.clone(), unplugged.clone(), plugged_in.clone(), opens.clone());
        let opener: OpenOutput = Box::new(move || {
            n.fetch_add(1, Ordering::SeqCst);
            if p.load(Ordering::SeqCst) {
                u.store(false, Ordering::SeqCst);
                Ok(Box::new(Fake { heard: h.clone(), unplugged: u.clone() }) as Box<dyn AudioOutput>)
            } else {
                Err(DeviceError::Backend("The requested device is no longer available".into()))
            }
        });
        let notices = Arc::new(Mutex::new(Vec::new()));
        let told = notices.clone();
        let mut out =
            FallbackOutput::new(opener, Duration::from_millis(5), Box::new(move |n| told.lock().unwrap().push(n)));
        // No device: frames go nowhere, and that is said once however many
        // times it is looked for.
        assert!(!out.playing());
        for _ in 0..50 {
            out.write(&[0.5; 960]);
            std::thread::sleep(Duration::from_millis(1));
        }
        wait_until(|| {
            out.write(&[0.5; 960]);
            opens.load(Ordering::SeqCst) >= 3
        });
        assert_eq!(notices.lock().unwrap().len(), 1, "{:?}", notices.lock().unwrap());
        assert!(matches!(&notices.lock().unwrap()[0], OutputNotice::Lost(e) if e.contains("no longer available")));
        assert!(heard.lock().unwrap().is_empty());
        // A device appears: it is picked up, said once, and plays.
        plugged_in.store(true, Ordering::SeqCst);
        wait_until(|| {
            out.write(&[0.25; 960]);
            out.playing()
        });
        out.write(&[0.25; 960]);
        assert_eq!(notices.lock().unwrap()[1..], [OutputNotice::Found]);
        assert!(heard.lock().unwrap().iter().all(|&s| s == 0.25) && !heard.lock().unwrap().is_empty());
        // It is unplugged mid-call: the call goes on, said once, and the
        // next one is picked up.
        plugged_in.store(false, Ordering::SeqCst);
        unplugged.store(true, Ordering::SeqCst);
        let before = heard.lock().unwrap().len();
        for _ in 0..20 {
            out.write(&[0.75; 960]);
        }
        assert_eq!(heard.lock().unwrap().len(), before, "nothing reaches a device that is gone");
        assert!(matches!(&notices.lock().unwrap()[2], OutputNotice::Lost(_)));
        plugged_in.store(true, Ordering::SeqCst);
        wait_until(|| {
            out.write(&[0.75; 960]);
            out.playing()
        });
        assert_eq!(notices.lock().unwrap().len(), 4);
        assert_eq!(notices.lock().unwrap()[3], OutputNotice::Found);
        assert!(out.finish().is_ok());
    }

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
