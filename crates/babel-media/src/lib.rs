//! Babel's voice pipeline: microphone to speaker, direct or relayed,
//! encrypted end to end.
//!
//! * [`audio`]: the input/output traits, WAV files, resampling, levels.
//! * [`device`]: real devices through cpal.
//! * [`process`]: noise suppression, gain, mute, mixing.
//! * [`codec`]: Opus in constant-bitrate mode with in-band FEC.
//! * [`jitter`]: the adaptive jitter buffer (pure, time passed in).
//! * [`call`]: a call's media as a pure state machine, time passed in
//!   (the call core): paths (direct UDP, relay, call channel), reports,
//!   group keys, jitter buffers, codecs, rate control, statistics.
//! * [`engine`]: the call core's driver: the UDP socket, the frame clock,
//!   the devices and the call channel.
//! * [`channel`]: the call channel as the engine sees it (a trait, so the
//!   engine does not depend on how the channel is carried).
//! * [`sim`]: call cores over `babel-netem` links in simulated time (the
//!   harness of `tests/sim.rs` and of `babel-quality --simulated`).
//!
//! The signalling around a call (ringing, answering, the key exchange,
//! the call channel over `babel-client`) is `babel-call`'s, a floor above:
//! this crate knows no server.
//! * [`keys`] and [`packet`] (re-exported from `babel-proto`): end-to-end
//!   keys and the sealed voice datagram.

pub mod audio;
pub mod call;
pub mod channel;
pub mod codec;
pub mod denoise;
pub mod device;
pub mod echo;
pub mod engine;
pub mod jitter;
pub mod ns_stage;
pub mod process;
pub mod rate;
pub mod sim;
pub mod snr;
pub mod spectral;

// The voice datagram and the keys are wire format: they live in babel-proto.
pub use babel_proto::{keys, voice as packet};
